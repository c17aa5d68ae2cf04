//! Checks a request's tensors against the served signature before they are
//! queued, so a bad request fails alone with a message naming the input,
//! instead of failing a whole batch inside the backend.

use ferroserve_backend_core::{Signature, Tensor};

use ferroserve_protocol::InferError;

/// Orders `inputs` as the backend expects them and returns them with the
/// request's row count (dim 0, or 1 for a model without batching).
pub fn inputs(
    signature: &Signature,
    max_batch_size: usize,
    mut named: Vec<(String, Tensor)>,
) -> Result<(Vec<Tensor>, usize), InferError> {
    let bad = |m: String| Err(InferError::InvalidInput(m));
    if let Some((name, _)) = named
        .iter()
        .find(|(n, _)| !signature.inputs.iter().any(|s| &s.name == n))
    {
        return bad(format!(
            "unknown input {name:?}: the model's inputs are {:?}",
            signature
                .inputs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
        ));
    }
    let mut ordered = Vec::with_capacity(signature.inputs.len());
    let mut rows: Option<usize> = None;
    for spec in &signature.inputs {
        let Some(pos) = named.iter().position(|(n, _)| n == &spec.name) else {
            return bad(format!(
                "missing input {:?}: expected {} with shape {:?}",
                spec.name, spec.dtype, spec.shape
            ));
        };
        let (_, tensor) = named.swap_remove(pos);
        if named.iter().any(|(n, _)| n == &spec.name) {
            return bad(format!("input {:?} is given more than once", spec.name));
        }
        if tensor.dtype != spec.dtype {
            return bad(format!(
                "input {:?}: expected datatype {}, received {}",
                spec.name, spec.dtype, tensor.dtype
            ));
        }
        let fits = tensor.shape.len() == spec.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, &want)| want == -1 || got == want);
        if !fits {
            return bad(format!(
                "input {:?}: expected shape {:?}, received {:?}",
                spec.name, spec.shape, tensor.shape
            ));
        }
        if max_batch_size > 0 {
            let r = tensor.shape[0] as usize;
            if r == 0 || r > max_batch_size {
                return bad(format!(
                    "input {:?}: batch dimension must be between 1 and max_batch_size {}, received {r} (shape {:?})",
                    spec.name, max_batch_size, tensor.shape
                ));
            }
            match rows {
                Some(prev) if prev != r => {
                    return bad(format!(
                        "input {:?}: batch dimension {r} differs from the other inputs' {prev}",
                        spec.name
                    ))
                }
                _ => rows = Some(r),
            }
        }
        ordered.push(tensor);
    }
    Ok((ordered, rows.unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferroserve_backend_core::{DataType, TensorSpec};

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "a".into(),
                    dtype: DataType::Fp32,
                    shape: vec![-1, 2],
                },
                TensorSpec {
                    name: "b".into(),
                    dtype: DataType::Int64,
                    shape: vec![-1, 1],
                },
            ],
            outputs: vec![],
        }
    }

    fn t(dtype: DataType, shape: Vec<i64>) -> Tensor {
        let n: i64 = shape.iter().product();
        Tensor::new(
            dtype,
            shape,
            Bytes::from(vec![0u8; n as usize * dtype.element_size().unwrap()]),
        )
        .unwrap()
    }

    #[test]
    fn orders_inputs_and_counts_rows() {
        let (ordered, rows) = inputs(
            &sig(),
            8,
            vec![
                ("b".into(), t(DataType::Int64, vec![3, 1])),
                ("a".into(), t(DataType::Fp32, vec![3, 2])),
            ],
        )
        .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(ordered[0].dtype, DataType::Fp32);
        assert_eq!(ordered[1].dtype, DataType::Int64);
    }

    #[test]
    fn errors_name_input_expected_and_received() {
        let msg = |r: Result<(Vec<Tensor>, usize), InferError>| match r {
            Err(InferError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        };
        let m = msg(inputs(
            &sig(),
            8,
            vec![("a".into(), t(DataType::Fp32, vec![1, 2]))],
        ));
        assert!(
            m.contains("missing input \"b\"") && m.contains("INT64"),
            "{m}"
        );
        let m = msg(inputs(
            &sig(),
            8,
            vec![
                ("a".into(), t(DataType::Fp64, vec![1, 2])),
                ("b".into(), t(DataType::Int64, vec![1, 1])),
            ],
        ));
        assert!(
            m.contains("\"a\"") && m.contains("FP32") && m.contains("FP64"),
            "{m}"
        );
        let m = msg(inputs(
            &sig(),
            8,
            vec![
                ("a".into(), t(DataType::Fp32, vec![1, 3])),
                ("b".into(), t(DataType::Int64, vec![1, 1])),
            ],
        ));
        assert!(m.contains("[-1, 2]") && m.contains("[1, 3]"), "{m}");
        let m = msg(inputs(
            &sig(),
            2,
            vec![
                ("a".into(), t(DataType::Fp32, vec![3, 2])),
                ("b".into(), t(DataType::Int64, vec![3, 1])),
            ],
        ));
        assert!(
            m.contains("max_batch_size 2") && m.contains("received 3"),
            "{m}"
        );
        let m = msg(inputs(
            &sig(),
            8,
            vec![
                ("a".into(), t(DataType::Fp32, vec![2, 2])),
                ("b".into(), t(DataType::Int64, vec![1, 1])),
            ],
        ));
        assert!(m.contains("differs"), "{m}");
        let m = msg(inputs(
            &sig(),
            8,
            vec![("zzz".into(), t(DataType::Fp32, vec![1, 2]))],
        ));
        assert!(m.contains("unknown input \"zzz\""), "{m}");
    }
}
