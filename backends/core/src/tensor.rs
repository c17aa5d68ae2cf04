use bytes::{Bytes, BytesMut};

use crate::DataType;

/// A dense tensor whose data is shared, not owned: binary request bodies are
/// sliced into tensors and batch outputs are sliced back into answers without
/// copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: DataType,
    pub shape: Vec<i64>,
    /// Little-endian elements in row-major order; for BYTES, each element is a
    /// u32 little-endian length and then its bytes.
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has a negative dimension")]
    NegativeDim { shape: Vec<i64> },
    #[error("shape {shape:?} of {dtype} needs {expected} bytes of data, got {received}")]
    ByteLength {
        dtype: DataType,
        shape: Vec<i64>,
        expected: usize,
        received: usize,
    },
    #[error("shape {shape:?} needs {expected} BYTES elements, got {received}")]
    ElementCount {
        shape: Vec<i64>,
        expected: usize,
        received: usize,
    },
    #[error("BYTES element {index} declares {declared} bytes but only {remaining} remain")]
    Truncated {
        index: usize,
        declared: usize,
        remaining: usize,
    },
    #[error("cannot split along dim 0: {0}")]
    Split(String),
    #[error("cannot concatenate: {0}")]
    Concat(String),
}

impl Tensor {
    /// Builds a tensor after checking that `data` holds exactly the elements
    /// `shape` calls for, so later code can index without checks.
    pub fn new(dtype: DataType, shape: Vec<i64>, data: Bytes) -> Result<Tensor, TensorError> {
        let count = element_count(&shape)?;
        match dtype.element_size() {
            Some(size) => {
                // A shape too large to address can never match the data.
                let expected = count.saturating_mul(size);
                if data.len() != expected {
                    return Err(TensorError::ByteLength {
                        dtype,
                        shape,
                        expected,
                        received: data.len(),
                    });
                }
            }
            None => {
                let received = count_bytes_elements(&data)?;
                if received != count {
                    return Err(TensorError::ElementCount {
                        shape,
                        expected: count,
                        received,
                    });
                }
            }
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Builds a BYTES tensor from its elements.
    pub fn from_strings<S: AsRef<[u8]>>(
        shape: Vec<i64>,
        items: &[S],
    ) -> Result<Tensor, TensorError> {
        let mut buf = BytesMut::with_capacity(items.iter().map(|s| 4 + s.as_ref().len()).sum());
        for s in items {
            let s = s.as_ref();
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s);
        }
        Tensor::new(DataType::Bytes, shape, buf.freeze())
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// The size of dim 0, the batch dimension of a batched request.
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |&d| d as usize)
    }

    /// The elements of a BYTES tensor, borrowed from its data.
    pub fn string_elements(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.element_count());
        let mut rest = &self.data[..];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            out.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        out
    }

    /// Concatenates tensors along dim 0 with one copy. A single tensor is
    /// returned as is. All parts must share dtype and the dims after the first.
    pub fn concat(mut parts: Vec<Tensor>) -> Result<Tensor, TensorError> {
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        let first = parts
            .first()
            .ok_or_else(|| TensorError::Concat("no tensors".into()))?;
        let dtype = first.dtype;
        let inner: Vec<i64> = first.shape.get(1..).unwrap_or_default().to_vec();
        if first.shape.is_empty() {
            return Err(TensorError::Concat("scalar tensors have no dim 0".into()));
        }
        let mut rows = 0i64;
        let mut len = 0usize;
        for p in &parts {
            if p.dtype != dtype || p.shape.len() != inner.len() + 1 || p.shape[1..] != inner[..] {
                return Err(TensorError::Concat(format!(
                    "{} {:?} does not match {} [-1{}]",
                    p.dtype,
                    p.shape,
                    dtype,
                    inner.iter().map(|d| format!(", {d}")).collect::<String>()
                )));
            }
            rows += p.shape[0];
            len += p.data.len();
        }
        let mut buf = BytesMut::with_capacity(len);
        for p in &parts {
            buf.extend_from_slice(&p.data);
        }
        let mut shape = Vec::with_capacity(inner.len() + 1);
        shape.push(rows);
        shape.extend_from_slice(&inner);
        Ok(Tensor {
            dtype,
            shape,
            data: buf.freeze(),
        })
    }

    /// Splits along dim 0 into parts of the given row counts. Fixed-size types
    /// are sliced without copying.
    pub fn split(&self, rows: &[usize]) -> Result<Vec<Tensor>, TensorError> {
        let total: usize = rows.iter().sum();
        if self.shape.is_empty() || self.shape[0] as usize != total {
            return Err(TensorError::Split(format!(
                "output shape {:?} has no dim 0 of {total} rows",
                self.shape
            )));
        }
        if rows.len() == 1 {
            return Ok(vec![self.clone()]);
        }
        let row_elems: usize = self.shape[1..].iter().map(|&d| d as usize).product();
        let mut out = Vec::with_capacity(rows.len());
        let mut offset = 0usize;
        // For BYTES, walk the length prefixes once to find each part's end.
        let string_ends = if self.dtype == DataType::Bytes {
            Some(element_ends(&self.data))
        } else {
            None
        };
        let mut elem = 0usize;
        for &r in rows {
            let mut shape = self.shape.clone();
            shape[0] = r as i64;
            let end = match (&string_ends, self.dtype.element_size()) {
                (_, Some(size)) => offset + r * row_elems * size,
                (Some(ends), None) => {
                    elem += r * row_elems;
                    if elem == 0 {
                        0
                    } else {
                        ends[elem - 1]
                    }
                }
                (None, None) => unreachable!("BYTES always has element ends"),
            };
            out.push(Tensor {
                dtype: self.dtype,
                shape,
                data: self.data.slice(offset..end),
            });
            offset = end;
        }
        Ok(out)
    }
}

fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    let mut n = 1usize;
    for &d in shape {
        if d < 0 {
            return Err(TensorError::NegativeDim {
                shape: shape.to_vec(),
            });
        }
        n = n.saturating_mul(d as usize);
    }
    Ok(n)
}

fn count_bytes_elements(data: &[u8]) -> Result<usize, TensorError> {
    let mut rest = data;
    let mut index = 0usize;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(TensorError::Truncated {
                index,
                declared: 4,
                remaining: rest.len(),
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            return Err(TensorError::Truncated {
                index,
                declared: len,
                remaining: rest.len() - 4,
            });
        }
        rest = &rest[4 + len..];
        index += 1;
    }
    Ok(index)
}

/// End offset of every element of a (validated) BYTES buffer.
fn element_ends(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        pos += 4 + len;
        ends.push(pos);
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor {
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::new(DataType::Fp32, shape, Bytes::from(data)).unwrap()
    }

    #[test]
    fn new_rejects_wrong_length() {
        let err = Tensor::new(DataType::Fp32, vec![2, 3], Bytes::from(vec![0u8; 20])).unwrap_err();
        assert_eq!(
            err,
            TensorError::ByteLength {
                dtype: DataType::Fp32,
                shape: vec![2, 3],
                expected: 24,
                received: 20
            }
        );
        assert!(Tensor::new(DataType::Fp32, vec![-1, 3], Bytes::new()).is_err());
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let c = Tensor::concat(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(c.shape, vec![3, 2]);
        assert_eq!(c, f32s(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(c.split(&[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn concat_refuses_mismatched_inner_dims() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![1, 3], &[3.0, 4.0, 5.0]);
        assert!(matches!(
            Tensor::concat(vec![a, b]),
            Err(TensorError::Concat(_))
        ));
    }

    #[test]
    fn bytes_tensors_split_by_element() {
        let t = Tensor::from_strings(vec![3, 1], &["a", "bcd", ""]).unwrap();
        let parts = t.split(&[2, 1]).unwrap();
        assert_eq!(parts[0].string_elements(), vec![&b"a"[..], &b"bcd"[..]]);
        assert_eq!(parts[1].string_elements(), vec![&b""[..]]);
        let joined = Tensor::concat(parts).unwrap();
        assert_eq!(joined, t);
    }

    #[test]
    fn bytes_validation_names_the_element() {
        let mut raw = 5u32.to_le_bytes().to_vec();
        raw.extend_from_slice(b"ab");
        let err = Tensor::new(DataType::Bytes, vec![1], Bytes::from(raw)).unwrap_err();
        assert_eq!(
            err,
            TensorError::Truncated {
                index: 0,
                declared: 5,
                remaining: 2
            }
        );
        let err = Tensor::from_strings(vec![2], &["x"]).unwrap_err();
        assert!(matches!(
            err,
            TensorError::ElementCount {
                expected: 2,
                received: 1,
                ..
            }
        ));
    }

    #[test]
    fn split_checks_row_total() {
        let t = f32s(vec![2, 1], &[1.0, 2.0]);
        assert!(t.split(&[1, 2]).is_err());
    }
}
