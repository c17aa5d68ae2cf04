//! The classification extension of the Open Inference Protocol, as Triton
//! implements it: instead of an output's raw values, the client asks for its
//! top K classes, and gets a BYTES tensor of `"score:index[:label]"` strings.
//!
//! Protocol-neutral: the HTTP and gRPC front ends parse the requested count
//! their own way and call [`Classifier::selected`] (or [`classify`]) on the
//! model's answer.
//!
//! Triton's rules, matched here (triton-inference-server/server
//! `src/classification.cc` and the HTTP/gRPC response code that calls it):
//!
//! - Classes are the elements of one batch row (every dim after the batch
//!   dim, flattened), or of the whole tensor for a model without a batch
//!   dimension. The result has shape `[B, min(K, classes)]` (batched) or
//!   `[min(K, classes)]`: a K larger than the number of classes is clamped,
//!   not an error.
//! - Classes are ranked by value, compared in the output's own datatype,
//!   highest first. Triton uses `std::sort` with `>`, whose order for equal
//!   values is unspecified in general (stable for the ≤ 16 classes where
//!   libstdc++ sorts by insertion); here equal values always keep their index
//!   order, lowest index first. NaN, which `>` cannot order, ranks below
//!   every number.
//! - The score is C++ `std::to_string` of the value: integers in decimal,
//!   floats as `printf("%f")` (six decimals, correctly rounded, `inf`,
//!   `-inf`, `nan`, `-nan`). The index is decimal. The label (line `index`
//!   of the output's labels file) is appended after a `:` when it exists and
//!   is not empty.
//! - Triton refuses FP16 outputs ("class result not available for output due
//!   to unsupported type"); ferroserve classifies them too, widening the
//!   value to a float before formatting. BOOL and BYTES are refused.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use ferroserve_backend_core::{DataType, Signature, Tensor};
use half::f16;

use crate::request::RequestedOutput;
use crate::InferError;

/// Checks, before inference, that `name` (of datatype `dtype`) can be
/// classified into `k` classes: `k` at least 1 and a numeric datatype.
pub fn check(name: &str, dtype: DataType, k: usize) -> Result<(), InferError> {
    if k == 0 {
        return Err(InferError::InvalidInput(format!(
            "output {name:?}: classification must be a positive integer (the number of top classes to return), received 0"
        )));
    }
    if matches!(dtype, DataType::Bool | DataType::Bytes) {
        return Err(InferError::InvalidInput(format!(
            "output {name:?}: classification needs a numeric output \
             (UINT8..UINT64, INT8..INT64, FP16, FP32, FP64); this output is {dtype}"
        )));
    }
    Ok(())
}

/// What classifying a model's answer needs to know of the model: the
/// signature it served, whether dim 0 is a batch, and the class labels of
/// its outputs (from the bundle's label files).
pub struct Classifier<'a> {
    pub signature: &'a Signature,
    pub batched: bool,
    pub labels: &'a BTreeMap<String, Arc<Vec<String>>>,
}

impl Classifier<'_> {
    /// Classifies output `index` (in the served signature's order).
    pub fn output(&self, index: usize, output: &Tensor, k: usize) -> Result<Tensor, InferError> {
        let name = &self.signature.outputs[index].name;
        classify(
            name,
            output,
            k,
            self.batched,
            self.labels.get(name).map(|l| l.as_slice()),
        )
    }

    /// The classification extension: for each selected output that asked
    /// for it, the BYTES tensor of its top classes, parallel to `selected`.
    /// Empty (no allocation) when no output asked.
    pub fn selected(
        &self,
        requested: Option<&[RequestedOutput]>,
        selected: &[(usize, bool)],
        outputs: &[Tensor],
    ) -> Result<Vec<Option<Tensor>>, InferError> {
        // `selected` follows `requested` one to one when outputs were named.
        let Some(requested) = requested.filter(|r| r.iter().any(|o| o.classification.is_some()))
        else {
            return Ok(Vec::new());
        };
        requested
            .iter()
            .zip(selected)
            .map(|(r, &(i, _))| {
                r.classification
                    .map(|k| self.output(i, &outputs[i], k))
                    .transpose()
            })
            .collect()
    }
}

/// The top `k` classes of each batch row of `output` (named `name` in error
/// messages) as a BYTES tensor of `"score:index[:label]"`; see the module
/// documentation for the exact rules.
pub fn classify(
    name: &str,
    output: &Tensor,
    k: usize,
    batched: bool,
    labels: Option<&[String]>,
) -> Result<Tensor, InferError> {
    check(name, output.dtype, k)?;
    // Like Triton: a batched model's dim 0 is the batch; a scalar output
    // has no batch dim to split on and is one row of one class.
    let (rows, classes) = match output.shape.split_first() {
        Some((&b, rest)) if batched => (b as usize, dims_product(rest)),
        _ => (1, dims_product(&output.shape)),
    };
    let top = k.min(classes);
    let mut shape = Vec::with_capacity(2);
    if batched && !output.shape.is_empty() {
        shape.push(rows as i64);
    }
    shape.push(top as i64);
    let mut w = Writer {
        out: Vec::with_capacity(rows * top * 32),
        order: Vec::with_capacity(classes),
        labels,
    };
    let data = &output.data[..];
    match output.dtype {
        DataType::Uint8 => w.rows(data, rows, classes, top, |c: [u8; 1]| c[0]),
        DataType::Uint16 => w.rows(data, rows, classes, top, u16::from_le_bytes),
        DataType::Uint32 => w.rows(data, rows, classes, top, u32::from_le_bytes),
        DataType::Uint64 => w.rows(data, rows, classes, top, u64::from_le_bytes),
        DataType::Int8 => w.rows(data, rows, classes, top, i8::from_le_bytes),
        DataType::Int16 => w.rows(data, rows, classes, top, i16::from_le_bytes),
        DataType::Int32 => w.rows(data, rows, classes, top, i32::from_le_bytes),
        DataType::Int64 => w.rows(data, rows, classes, top, i64::from_le_bytes),
        DataType::Fp16 => w.rows(data, rows, classes, top, |c| {
            Float(f16::from_le_bytes(c).to_f64())
        }),
        DataType::Fp32 => w.rows(data, rows, classes, top, |c| {
            Float(f32::from_le_bytes(c) as f64)
        }),
        DataType::Fp64 => w.rows(data, rows, classes, top, |c| Float(f64::from_le_bytes(c))),
        DataType::Bool | DataType::Bytes => unreachable!("refused by check()"),
    }
    Tensor::new(DataType::Bytes, shape, w.out.into())
        .map_err(|e| InferError::Backend(format!("output {name:?}: classification: {e}")))
}

fn dims_product(dims: &[i64]) -> usize {
    dims.iter().map(|&d| d.max(0) as usize).product()
}

/// A value that can be ranked and printed the way Triton does.
trait Score: Copy {
    /// Descending rank: `Less` means `self` comes first.
    fn rank(self, other: Self) -> Ordering;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! int_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            fn rank(self, other: Self) -> Ordering {
                other.cmp(&self)
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(self).as_bytes());
            }
        }
    )*};
}
int_score!(u8, u16, u32, u64, i8, i16, i32, i64);

/// A floating-point value, widened to f64 exactly (as C++ does when
/// `std::to_string(float)` calls `printf`).
#[derive(Clone, Copy)]
struct Float(f64);

impl Score for Float {
    fn rank(self, other: Self) -> Ordering {
        match (self.0.is_nan(), other.0.is_nan()) {
            (false, false) => other.0.partial_cmp(&self.0).expect("not NaN"),
            (a, b) => a.cmp(&b), // NaN last
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        let v = self.0;
        if v.is_nan() {
            // glibc prints the sign bit of a NaN.
            out.extend_from_slice(if v.is_sign_negative() {
                b"-nan"
            } else {
                b"nan"
            });
        } else {
            // Rust's fixed precision formatting rounds the exact binary value
            // half-to-even, like glibc's `%f`; infinities print as `inf`.
            write!(out, "{v:.6}").expect("writing to a Vec cannot fail");
        }
    }
}

/// Builds the BYTES data of the result, reusing one index buffer for every row.
struct Writer<'l> {
    out: Vec<u8>,
    order: Vec<usize>,
    labels: Option<&'l [String]>,
}

impl Writer<'_> {
    fn rows<const N: usize, T: Score>(
        &mut self,
        data: &[u8],
        rows: usize,
        classes: usize,
        top: usize,
        read: impl Fn([u8; N]) -> T,
    ) {
        let value = |row: &[u8], i: usize| read(row[i * N..][..N].try_into().expect("N bytes"));
        for r in 0..rows {
            let row = &data[r * classes * N..][..classes * N];
            self.order.clear();
            self.order.extend(0..classes);
            // Value descending, then index ascending: a total order, so the
            // partial selection gives the same answer as a stable full sort.
            let cmp = |&a: &usize, &b: &usize| value(row, a).rank(value(row, b)).then(a.cmp(&b));
            if top < classes {
                self.order.select_nth_unstable_by(top, cmp);
                self.order.truncate(top);
            }
            self.order.sort_unstable_by(cmp);
            for &i in &self.order {
                element(&mut self.out, self.labels, value(row, i), i);
            }
        }
    }
}

/// Appends one length-prefixed `score:index[:label]` BYTES element.
fn element(out: &mut Vec<u8>, labels: Option<&[String]>, score: impl Score, index: usize) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    score.write(out);
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    if let Some(label) = labels.and_then(|l| l.get(index)) {
        if !label.is_empty() {
            out.push(b':');
            out.extend_from_slice(label.as_bytes());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tensor<T: Copy, const N: usize>(
        dtype: DataType,
        shape: Vec<i64>,
        v: &[T],
        le: fn(T) -> [u8; N],
    ) -> Tensor {
        let data: Vec<u8> = v.iter().flat_map(|&x| le(x)).collect();
        Tensor::new(dtype, shape, Bytes::from(data)).unwrap()
    }

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor {
        tensor(DataType::Fp32, shape, v, f32::to_le_bytes)
    }

    fn strings(t: &Tensor) -> Vec<String> {
        assert_eq!(t.dtype, DataType::Bytes);
        t.string_elements()
            .into_iter()
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class{i}")).collect()
    }

    fn err(r: Result<Tensor, InferError>) -> String {
        match r {
            Err(InferError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn top_k_per_row_in_value_order_with_labels() {
        let t = f32s(vec![2, 4], &[0.1, 0.7, 0.05, 0.15, 3.0, -1.0, 2.5, 0.0]);
        let l = labels(4);
        let c = classify("probs", &t, 2, true, Some(&l)).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(
            strings(&c),
            vec![
                "0.700000:1:class1",
                "0.150000:3:class3",
                "3.000000:0:class0",
                "2.500000:2:class2"
            ]
        );
    }

    #[test]
    fn without_labels_or_past_the_label_list() {
        let t = f32s(vec![1, 3], &[0.2, 0.5, 0.3]);
        let c = classify("p", &t, 3, true, None).unwrap();
        assert_eq!(strings(&c), vec!["0.500000:1", "0.300000:2", "0.200000:0"]);
        // Triton appends a label only where the file has a non-empty line.
        let l = vec!["zero".to_string(), String::new()];
        let c = classify("p", &t, 3, true, Some(&l)).unwrap();
        assert_eq!(
            strings(&c),
            vec!["0.500000:1", "0.300000:2", "0.200000:0:zero"]
        );
    }

    #[test]
    fn unbatched_flattens_every_dim() {
        let t = f32s(vec![2, 2], &[1.0, 4.0, 3.0, 2.0]);
        let c = classify("p", &t, 3, false, None).unwrap();
        assert_eq!(c.shape, vec![3]);
        assert_eq!(strings(&c), vec!["4.000000:1", "3.000000:2", "2.000000:3"]);
        // Batched, the non-batch dims are flattened into one row's classes.
        let t = f32s(vec![1, 2, 2], &[1.0, 4.0, 3.0, 2.0]);
        let c = classify("p", &t, 1, true, None).unwrap();
        assert_eq!(c.shape, vec![1, 1]);
        assert_eq!(strings(&c), vec!["4.000000:1"]);
    }

    #[test]
    fn k_larger_than_the_classes_is_clamped() {
        let t = f32s(vec![2, 3], &[1.0, 2.0, 3.0, 6.0, 5.0, 4.0]);
        let c = classify("p", &t, 100, true, None).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(strings(&c).len(), 6);
        let c = classify("p", &t, usize::MAX, false, None).unwrap();
        assert_eq!(c.shape, vec![6]);
        assert_eq!(strings(&c)[0], "6.000000:3");
        // zero rows: an empty [0, K] tensor
        let empty = f32s(vec![0, 3], &[]);
        let c = classify("p", &empty, 2, true, None).unwrap();
        assert_eq!(c.shape, vec![0, 2]);
        assert!(c.data.is_empty());
    }

    #[test]
    fn ties_keep_index_order_and_nan_ranks_last() {
        let t = f32s(vec![1, 6], &[0.5, f32::NAN, 0.5, 1.0, -0.0, 0.0]);
        let c = classify("p", &t, 6, true, None).unwrap();
        assert_eq!(
            strings(&c),
            vec![
                "1.000000:3",
                "0.500000:0",
                "0.500000:2",
                "-0.000000:4",
                "0.000000:5",
                "nan:1"
            ]
        );
        // The partial selection (k < classes) agrees with the full order,
        // also on many equal values.
        let v: Vec<f32> = (0..40).map(|i| (i % 3) as f32).collect();
        let t = f32s(vec![40], &v);
        let all = strings(&classify("p", &t, 40, false, None).unwrap());
        for k in 1..40 {
            let some = strings(&classify("p", &t, k, false, None).unwrap());
            assert_eq!(some, all[..k], "k = {k}");
        }
        assert_eq!(all[0], "2.000000:2");
        assert_eq!(all[1], "2.000000:5");
    }

    #[test]
    fn floats_print_like_printf_percent_f() {
        let t = tensor(
            DataType::Fp64,
            vec![7],
            &[
                1e30,
                0.0078125, // a tie at the 7th decimal: half-to-even, as glibc
                1.0 / 3.0,
                -2.5e-7,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -f64::NAN,
            ],
            f64::to_le_bytes,
        );
        let c = classify("p", &t, 7, false, None).unwrap();
        assert_eq!(
            strings(&c),
            vec![
                "inf:4",
                "1000000000000000019884624838656.000000:0",
                "0.333333:2",
                "0.007812:1",
                "-0.000000:3",
                "-inf:5",
                "-nan:6"
            ]
        );
        // FP32 values are printed after widening, as C++ promotes a float.
        let c = classify("p", &f32s(vec![1], &[0.1]), 1, false, None).unwrap();
        assert_eq!(strings(&c), vec!["0.100000:0"]);
    }

    #[test]
    fn fp16_and_integer_outputs() {
        let t = tensor(
            DataType::Fp16,
            vec![1, 3],
            &[
                f16::from_f32(0.25),
                f16::from_f32(-2.0),
                f16::from_f32(65504.0),
            ],
            f16::to_le_bytes,
        );
        let c = classify("h", &t, 2, true, Some(&labels(3))).unwrap();
        assert_eq!(
            strings(&c),
            vec!["65504.000000:2:class2", "0.250000:0:class0"]
        );
        let t = tensor(
            DataType::Int8,
            vec![4],
            &[-128i8, 127, 0, -1],
            i8::to_le_bytes,
        );
        let c = classify("i", &t, 4, false, None).unwrap();
        assert_eq!(strings(&c), vec!["127:1", "0:2", "-1:3", "-128:0"]);
        let t = tensor(
            DataType::Uint64,
            vec![2, 2],
            &[u64::MAX, u64::MAX - 1, 7, 9],
            u64::to_le_bytes,
        );
        let c = classify("u", &t, 1, true, None).unwrap();
        assert_eq!(strings(&c), vec!["18446744073709551615:0", "9:1"]);
        let t = tensor(
            DataType::Int64,
            vec![3],
            // exact comparison in the output's type: these differ by 1 but
            // are the same f64
            &[i64::MAX - 1, i64::MAX, 0],
            i64::to_le_bytes,
        );
        let c = classify("l", &t, 1, false, None).unwrap();
        assert_eq!(strings(&c), vec!["9223372036854775807:1"]);
        for (dtype, t) in [
            (
                DataType::Uint8,
                tensor(DataType::Uint8, vec![2], &[3u8, 200], u8::to_le_bytes),
            ),
            (
                DataType::Uint16,
                tensor(DataType::Uint16, vec![2], &[3u16, 200], u16::to_le_bytes),
            ),
            (
                DataType::Uint32,
                tensor(DataType::Uint32, vec![2], &[3u32, 200], u32::to_le_bytes),
            ),
            (
                DataType::Int16,
                tensor(DataType::Int16, vec![2], &[3i16, 200], i16::to_le_bytes),
            ),
            (
                DataType::Int32,
                tensor(DataType::Int32, vec![2], &[3i32, 200], i32::to_le_bytes),
            ),
        ] {
            let c = classify("x", &t, 2, false, None).unwrap();
            assert_eq!(strings(&c), vec!["200:1", "3:0"], "{dtype}");
        }
    }

    #[test]
    fn errors_name_the_output() {
        let t = f32s(vec![1, 2], &[0.0, 1.0]);
        let m = err(classify("probs", &t, 0, true, None));
        assert!(
            m.contains("\"probs\"") && m.contains("positive integer") && m.contains("received 0"),
            "{m}"
        );
        let t = Tensor::from_strings(vec![1, 1], &["a"]).unwrap();
        let m = err(classify("echo", &t, 1, true, None));
        assert!(m.contains("\"echo\"") && m.contains("BYTES"), "{m}");
        let t = tensor(DataType::Bool, vec![2], &[1u8, 0], u8::to_le_bytes);
        let m = err(classify("flag", &t, 1, false, None));
        assert!(m.contains("\"flag\"") && m.contains("BOOL"), "{m}");
    }

    #[test]
    fn result_is_a_valid_bytes_tensor_that_splits_by_row() {
        let t = f32s(vec![3, 2], &[1.0, 2.0, 4.0, 3.0, 5.0, 6.0]);
        let c = classify("p", &t, 2, true, Some(&labels(2))).unwrap();
        let parts = c.split(&[1, 2]).unwrap();
        assert_eq!(
            strings(&parts[1]),
            vec![
                "4.000000:0:class0",
                "3.000000:1:class1",
                "6.000000:1:class1",
                "5.000000:0:class0"
            ]
        );
    }
}
