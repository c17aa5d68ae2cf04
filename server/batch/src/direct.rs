//! The fast path from a record batch to tensors: numeric columns read
//! from their Arrow arrays (cast once per batch, vectorised) and list
//! values copied from the list's one values buffer, without the
//! per-value `Option<f64>` table [`crate::tensors`] works on. It applies
//! when every mapped column is numbers or a list of numbers feeding a
//! numeric input; anything else (texts to parse, BYTES inputs) takes the
//! table path, with the same checks and the same messages.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow_schema::{DataType as ArrowType, Field};
use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor, TensorError};
use ferroserve_monitoring::drift::mapping::{Mapped, TensorColumns};

use crate::tensors::{
    batch_shape, encode, fix_free_dims, list_problem, number_problem, Strictness,
};

/// One input's columns, ready to read.
enum Source {
    /// One column per element, as f64 (what the checks and the integer
    /// inputs need; FP32 values convert back exactly).
    Tabular(Vec<(String, Float64Array)>),
    /// A list column: each row's values in `values[offsets[r]..offsets[r + 1]]`.
    List {
        column: String,
        nulls: Option<arrow_buffer::NullBuffer>,
        offsets: Vec<usize>,
        values: Values,
    },
}

enum Values {
    F32(Float32Array),
    F64(Float64Array),
}

/// A batch's inputs on the fast path.
pub struct Direct<'a> {
    inputs: Vec<(&'a Mapped, Source)>,
}

impl<'a> Direct<'a> {
    /// `None` when some input needs the table path.
    pub fn new(batch: &RecordBatch, mapped: &'a [Mapped]) -> Option<Direct<'a>> {
        let mut inputs = Vec::with_capacity(mapped.len());
        for m in mapped {
            if m.spec.dtype == DataType::Bytes {
                return None;
            }
            let source = match &m.columns {
                TensorColumns::Tabular(cols) => {
                    let mut arrays = Vec::with_capacity(cols.len());
                    for (_, c) in cols {
                        let array = batch.column_by_name(c)?;
                        if !array.data_type().is_numeric() {
                            return None;
                        }
                        let f = arrow_cast::cast(array, &ArrowType::Float64).ok()?;
                        arrays.push((c.clone(), f.as_primitive::<Float64Type>().clone()));
                    }
                    Source::Tabular(arrays)
                }
                TensorColumns::List(c) => list_source(c, batch.column_by_name(c)?, m.spec.dtype)?,
            };
            inputs.push((m, source));
        }
        Some(Direct { inputs })
    }

    /// Why row `r` cannot be scored, or `None`.
    pub fn row_problem(&self, r: usize, batched: bool, strict: Strictness) -> Option<String> {
        for (m, source) in &self.inputs {
            let problem = match source {
                Source::Tabular(cols) => cols.iter().find_map(|(c, a)| {
                    let x = (!a.is_null(r)).then(|| a.value(r));
                    number_problem(&m.spec, c, x, strict)
                }),
                Source::List {
                    column,
                    nulls,
                    offsets,
                    values,
                } => {
                    let row = nulls.as_ref().is_none_or(|n| n.is_valid(r)).then(|| {
                        let (a, b) = (offsets[r], offsets[r + 1]);
                        let nan = match values {
                            Values::F32(v) => has_nan_or_null(v, a, b, |x| x.is_nan()),
                            Values::F64(v) => has_nan_or_null(v, a, b, |x| x.is_nan()),
                        };
                        (b - a, nan)
                    });
                    list_problem(&m.spec, column, row, batched, strict)
                }
            };
            if problem.is_some() {
                return problem;
            }
        }
        None
    }

    /// The inputs of `rows` (rows that passed [`Direct::row_problem`]).
    pub fn tensors(
        &self,
        rows: &[usize],
        batched: bool,
    ) -> Result<Vec<(String, Tensor)>, TensorError> {
        self.inputs
            .iter()
            .map(|(m, source)| {
                let spec = &m.spec;
                let n = rows.len();
                let mut shape = batch_shape(&spec.shape, n, batched);
                let tensor = match source {
                    Source::Tabular(cols) => {
                        let mut vals = Vec::with_capacity(n * cols.len());
                        for &r in rows {
                            vals.extend(cols.iter().map(|(_, a)| a.value(r)));
                        }
                        fix_free_dims(&mut shape, n, cols.len());
                        encode(spec.dtype, shape, &vals)?
                    }
                    Source::List {
                        offsets, values, ..
                    } => {
                        let per_row = rows.first().map_or(0, |&r| offsets[r + 1] - offsets[r]);
                        fix_free_dims(&mut shape, n, per_row);
                        match values {
                            // FP32 rows are copied as they are.
                            Values::F32(v) if spec.dtype == DataType::Fp32 => {
                                let mut out: Vec<u8> = Vec::with_capacity(n * per_row * 4);
                                for &r in rows {
                                    for x in &v.values()[offsets[r]..offsets[r + 1]] {
                                        out.extend_from_slice(&x.to_le_bytes());
                                    }
                                }
                                Tensor::new(DataType::Fp32, shape, Bytes::from(out))?
                            }
                            Values::F32(v) => {
                                let vals: Vec<f64> = rows
                                    .iter()
                                    .flat_map(|&r| &v.values()[offsets[r]..offsets[r + 1]])
                                    .map(|&x| f64::from(x))
                                    .collect();
                                encode(spec.dtype, shape, &vals)?
                            }
                            Values::F64(v) => {
                                let vals: Vec<f64> = rows
                                    .iter()
                                    .flat_map(|&r| {
                                        v.values()[offsets[r]..offsets[r + 1]].iter().copied()
                                    })
                                    .collect();
                                encode(spec.dtype, shape, &vals)?
                            }
                        }
                    }
                };
                Ok((spec.name.clone(), tensor))
            })
            .collect()
    }
}

/// Whether `values[a..b]` holds a NaN or a null element (the table path
/// reads a null element as NaN).
fn has_nan_or_null<T: arrow_array::ArrowPrimitiveType>(
    values: &arrow_array::PrimitiveArray<T>,
    a: usize,
    b: usize,
    nan: impl Fn(T::Native) -> bool,
) -> bool {
    if values.nulls().is_some_and(|n| (a..b).any(|i| n.is_null(i))) {
        return true;
    }
    values.values()[a..b].iter().any(|&x| nan(x))
}

/// A list column as offsets and one values array: FP32 values kept as
/// they are for an FP32 input, anything else as f64.
fn list_source(column: &str, array: &ArrayRef, dtype: DataType) -> Option<Source> {
    let element = match array.data_type() {
        ArrowType::List(f) | ArrowType::LargeList(f) | ArrowType::FixedSizeList(f, _) => {
            f.data_type().clone()
        }
        _ => return None,
    };
    if !element.is_numeric() {
        return None;
    }
    let target = if element == ArrowType::Float32 && dtype == DataType::Fp32 {
        ArrowType::Float32
    } else {
        ArrowType::Float64
    };
    let list_type = ArrowType::List(Arc::new(Field::new_list_field(target.clone(), true)));
    let list = arrow_cast::cast(array, &list_type).ok()?;
    let list = list.as_list::<i32>();
    let base = list.value_offsets()[0] as usize;
    let offsets: Vec<usize> = list
        .value_offsets()
        .iter()
        .map(|&o| o as usize - base)
        .collect();
    let end = offsets.last().copied().unwrap_or(0);
    let inner = list.values().slice(base, end);
    let values = match target {
        ArrowType::Float32 => Values::F32(inner.as_primitive::<Float32Type>().clone()),
        _ => Values::F64(inner.as_primitive::<Float64Type>().clone()),
    };
    Some(Source::List {
        column: column.to_string(),
        nulls: list.nulls().cloned(),
        offsets,
        values,
    })
}
