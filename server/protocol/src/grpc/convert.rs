//! Between protobuf messages and the protocol-neutral request types.
//!
//! Raw contents (`raw_input_contents`) are already the in-memory form of a
//! tensor and are used as they are (slices of the received message). Typed
//! contents are packed once into little-endian bytes, with every element
//! range-checked against the tensor's datatype.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferroserve_backend_core::{DataType, Tensor};

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest};
use crate::request::{InferRequest, RequestedOutput};
use crate::{declared, InferError};

fn invalid(m: String) -> InferError {
    InferError::InvalidInput(m)
}

/// A decoded gRPC inference request.
pub struct GrpcRequest {
    pub request: InferRequest,
    /// Echoed back as they came, keeping their protobuf types.
    pub parameters: HashMap<String, InferParameter>,
}

pub fn decode_request(msg: ModelInferRequest) -> Result<GrpcRequest, InferError> {
    let ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = msg;
    if !raw_input_contents.is_empty() && raw_input_contents.len() != inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents has {} entries but the request has {} inputs; expected one entry per input",
            raw_input_contents.len(),
            inputs.len()
        )));
    }
    let mut raw = raw_input_contents.into_iter();
    let mut named = Vec::with_capacity(inputs.len());
    for input in inputs {
        let raw_data = raw.next();
        let tensor = decode_input(&input, raw_data)?;
        named.push((input.name, tensor));
    }
    let timeout = match parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => None,
        Some(ParameterChoice::Int64Param(v)) if *v >= 0 => Some(Duration::from_micros(*v as u64)),
        Some(ParameterChoice::Uint64Param(v)) => Some(Duration::from_micros(*v)),
        Some(other) => {
            return Err(invalid(format!(
            "parameters.timeout must be a non-negative integer of microseconds, received {other:?}"
        )))
        }
    };
    let outputs = if outputs.is_empty() {
        None
    } else {
        let mut list = Vec::with_capacity(outputs.len());
        for o in outputs {
            let classification = match o
                .parameters
                .get("classification")
                .and_then(|p| p.parameter_choice.as_ref())
            {
                None => None,
                Some(ParameterChoice::Int64Param(k)) if *k > 0 => Some(*k as usize),
                Some(ParameterChoice::Uint64Param(k)) if *k > 0 => Some(*k as usize),
                Some(other) => {
                    return Err(invalid(format!(
                        "output {:?}: parameters.classification must be a positive integer (the number of top classes), received {other:?}",
                        o.name
                    )))
                }
            };
            list.push(RequestedOutput {
                name: o.name,
                binary: true,
                classification,
            });
        }
        Some(list)
    };
    Ok(GrpcRequest {
        request: InferRequest {
            id: (!id.is_empty()).then_some(id),
            inputs: named,
            outputs,
            binary_data_output: true,
            parameters: None,
            timeout,
        },
        parameters,
    })
}

fn decode_input(input: &InferInputTensor, raw: Option<Bytes>) -> Result<Tensor, InferError> {
    let ctx = |m: String| invalid(format!("input {:?}: {m}", input.name));
    let (dtype, count) = declared::declared(&input.datatype, &input.shape).map_err(ctx)?;
    let data = match (raw, &input.contents) {
        (Some(_), Some(c)) if !is_empty(c) => {
            return Err(ctx(
                "has both typed contents and raw_input_contents; expected one".into(),
            ))
        }
        (Some(raw), _) => raw,
        (None, None) => return Err(ctx("has no contents and no raw_input_contents".into())),
        (None, Some(c)) => pack_contents(dtype, c, count).map_err(ctx)?,
    };
    Tensor::new(dtype, input.shape.clone(), data).map_err(|e| ctx(format!("{e}")))
}

fn is_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// The typed field a datatype travels in, as the protocol assigns them.
fn field_for(dtype: DataType) -> Option<&'static str> {
    Some(match dtype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => return None,
    })
}

fn pack_contents(dtype: DataType, c: &InferTensorContents, count: usize) -> Result<Bytes, String> {
    let Some(field) = field_for(dtype) else {
        return Err(format!(
            "{dtype} has no typed contents field in the protocol; send it in raw_input_contents"
        ));
    };
    let lens = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    if let Some((other, _)) = lens.iter().find(|(f, n)| *n > 0 && *f != field) {
        return Err(format!(
            "contents.{other} is set but datatype {dtype} travels in contents.{field}"
        ));
    }
    let received = lens
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(0, |(_, n)| *n);
    if received != count {
        return Err(format!(
            "shape needs {count} elements, received {received} in contents.{field}"
        ));
    }
    /// Narrows 32-bit contents to the tensor's type, refusing values out of
    /// its range, and appends them little-endian with no allocation per
    /// element.
    fn narrow<S: Copy + Into<i64>, T: TryFrom<i64> + Copy>(
        v: &[S],
        dtype: DataType,
        out: &mut BytesMut,
        put: impl Fn(&mut BytesMut, T),
    ) -> Result<(), String> {
        for (i, &x) in v.iter().enumerate() {
            let x: i64 = x.into();
            let y = T::try_from(x)
                .map_err(|_| format!("element {i}: {x} is out of range for {dtype}"))?;
            put(out, y);
        }
        Ok(())
    }
    let mut out = BytesMut::with_capacity(count * dtype.element_size().unwrap_or(8));
    let (ints, uints) = (&c.int_contents, &c.uint_contents);
    match dtype {
        DataType::Bool => out.extend(c.bool_contents.iter().map(|&b| b as u8)),
        DataType::Int8 => narrow(ints, dtype, &mut out, |o, x: i8| o.put_i8(x))?,
        DataType::Int16 => narrow(ints, dtype, &mut out, |o, x: i16| o.put_i16_le(x))?,
        DataType::Int32 => narrow(ints, dtype, &mut out, |o, x: i32| o.put_i32_le(x))?,
        DataType::Uint8 => narrow(uints, dtype, &mut out, |o, x: u8| o.put_u8(x))?,
        DataType::Uint16 => narrow(uints, dtype, &mut out, |o, x: u16| o.put_u16_le(x))?,
        DataType::Uint32 => narrow(uints, dtype, &mut out, |o, x: u32| o.put_u32_le(x))?,
        DataType::Int64 => c
            .int64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        DataType::Uint64 => c
            .uint64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        DataType::Fp32 => c
            .fp32_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        DataType::Fp64 => c
            .fp64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        DataType::Bytes => {
            for s in &c.bytes_contents {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
        }
        DataType::Fp16 => unreachable!("FP16 has no typed field"),
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dtype: &str, shape: Vec<i64>, contents: InferTensorContents) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: dtype.into(),
            shape,
            parameters: HashMap::new(),
            contents: Some(contents),
        }
    }

    #[test]
    fn typed_contents_pack_little_endian() {
        let t = decode_input(
            &input(
                "INT16",
                vec![2],
                InferTensorContents {
                    int_contents: vec![-2, 300],
                    ..Default::default()
                },
            ),
            None,
        )
        .unwrap();
        assert_eq!(&t.data[..], &[0xfe, 0xff, 0x2c, 0x01]);
    }

    #[test]
    fn typed_contents_errors_name_field_and_values() {
        let err = |i: InferInputTensor| match decode_input(&i, None) {
            Err(InferError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = err(input(
            "UINT8",
            vec![1],
            InferTensorContents {
                uint_contents: vec![256],
                ..Default::default()
            },
        ));
        assert!(m.contains("256") && m.contains("UINT8"), "{m}");
        let m = err(input(
            "FP32",
            vec![3],
            InferTensorContents {
                fp32_contents: vec![1.0],
                ..Default::default()
            },
        ));
        assert!(
            m.contains("needs 3 elements, received 1 in contents.fp32_contents"),
            "{m}"
        );
        let m = err(input(
            "FP32",
            vec![1],
            InferTensorContents {
                fp64_contents: vec![1.0],
                ..Default::default()
            },
        ));
        assert!(
            m.contains("contents.fp64_contents is set") && m.contains("FP32"),
            "{m}"
        );
        let m = err(input("FP16", vec![1], InferTensorContents::default()));
        assert!(m.contains("raw_input_contents"), "{m}");
    }

    #[test]
    fn raw_contents_are_used_in_place() {
        let raw = Bytes::from(vec![0u8; 8]);
        let i = InferInputTensor {
            contents: None,
            ..input("FP32", vec![2], InferTensorContents::default())
        };
        let t = decode_input(&i, Some(raw.clone())).unwrap();
        assert_eq!(t.data.as_ptr(), raw.as_ptr());
    }
}
