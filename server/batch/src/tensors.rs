//! A table's rows as a model's input tensors. Each row is checked first
//! ([`row_problem`]), so one bad row is reported on its own and the rest
//! of its batch still runs; [`tensor_of`] then builds a tensor from the
//! rows that passed. `ferroserve baseline` uses the same conversion.

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor, TensorError, TensorSpec};
use ferroserve_monitoring::drift::baseline::Values;
use ferroserve_monitoring::drift::data::{Column, Table};
use ferroserve_monitoring::drift::mapping::{row_width, Mapped, TensorColumns};

/// How strict the conversion is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strictness {
    /// NaN is a value (some models take it for missing), not an error.
    pub allow_nan: bool,
}

/// A mapped input's columns found in a table once, not once per row (a
/// lookup by name for each of 64 columns of each row was most of the
/// conversion's cost).
pub struct Resolved<'a> {
    columns: Vec<(&'a str, Option<&'a Column>)>,
}

impl<'a> Resolved<'a> {
    pub fn new(m: &'a Mapped, table: &'a Table) -> Resolved<'a> {
        let names: Vec<&'a str> = match &m.columns {
            TensorColumns::Tabular(cols) => cols.iter().map(|(_, c)| c.as_str()).collect(),
            TensorColumns::List(c) => vec![c.as_str()],
        };
        Resolved {
            columns: names.into_iter().map(|n| (n, table.column(n))).collect(),
        }
    }
}

/// Why row `r` cannot feed input `m`, or `None` when it can.
pub fn row_problem(
    m: &Mapped,
    cols: &Resolved,
    r: usize,
    batched: bool,
    strict: Strictness,
) -> Option<String> {
    let spec = &m.spec;
    let number = |c: &str, x: Option<f64>| number_problem(spec, c, x, strict);
    match &m.columns {
        TensorColumns::Tabular(_) => {
            if spec.dtype == DataType::Bytes {
                return None;
            }
            for &(c, column) in &cols.columns {
                let problem = match column {
                    Some(Column::Scalar(Values::Numeric(v))) => number(c, v[r]),
                    Some(Column::Scalar(Values::Text(v))) => match v[r].as_deref() {
                        None => number(c, None),
                        Some(t) => match t.trim().parse::<f64>() {
                            Ok(x) => number(c, Some(x)),
                            Err(_) => Some(format!(
                                "column {c:?}: {t:?}, expected a number for input {:?}",
                                spec.name
                            )),
                        },
                    },
                    _ => Some(format!("column {c:?} is missing from this batch")),
                };
                if problem.is_some() {
                    return problem;
                }
            }
            None
        }
        TensorColumns::List(_) => {
            let (c, column) = cols.columns[0];
            let Some(Column::List(v)) = column else {
                return Some(format!("column {c:?} is not a list column in this batch"));
            };
            list_problem(
                spec,
                c,
                v[r].as_ref()
                    .map(|row| (row.len(), row.iter().any(|x| x.is_nan()))),
                batched,
                strict,
            )
        }
    }
}

/// Why value `x` of column `c` cannot feed `spec` (null, NaN, a fraction
/// for an integer input), or `None`.
pub(crate) fn number_problem(
    spec: &TensorSpec,
    c: &str,
    x: Option<f64>,
    strict: Strictness,
) -> Option<String> {
    let integer = !matches!(
        spec.dtype,
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 | DataType::Bytes
    );
    match x {
        None => Some(format!(
            "column {c:?}: null, expected a number for input {:?}",
            spec.name
        )),
        Some(x) if x.is_nan() && !strict.allow_nan => Some(format!(
            "column {c:?}: NaN, expected a number for input {:?} (--allow-nan accepts it)",
            spec.name
        )),
        Some(x) if integer && x.fract() != 0.0 && x.is_finite() => Some(format!(
            "column {c:?}: {x}, expected an integer for input {:?} ({})",
            spec.name,
            spec.dtype.as_str()
        )),
        _ => None,
    }
}

/// Why a row's list of column `c` cannot feed `spec`: `row` is its length
/// and whether it holds a NaN, `None` for a null list.
pub(crate) fn list_problem(
    spec: &TensorSpec,
    c: &str,
    row: Option<(usize, bool)>,
    batched: bool,
    strict: Strictness,
) -> Option<String> {
    let Some((len, has_nan)) = row else {
        return Some(format!(
            "column {c:?}: null, expected a list for input {:?}",
            spec.name
        ));
    };
    if let Some(w) = row_width(spec, batched) {
        if len != w {
            return Some(format!(
                "column {c:?}: {len} values, expected {w} for input {:?} of shape {:?}",
                spec.name, spec.shape
            ));
        }
    }
    if has_nan && !strict.allow_nan {
        return Some(format!(
            "column {c:?}: a NaN or null element, expected numbers for input {:?} (--allow-nan accepts NaN)",
            spec.name
        ));
    }
    None
}

/// The tensor of `rows` of the table for one mapped input. The rows have
/// passed [`row_problem`]; one that has not becomes a zero (numbers) or an
/// empty text.
pub fn tensor_of(
    m: &Mapped,
    cols: &Resolved,
    rows: &[usize],
    batched: bool,
) -> Result<Tensor, TensorError> {
    let n = rows.len();
    let spec = &m.spec;
    let mut shape = batch_shape(&spec.shape, n, batched);
    let width = cols.columns.len();
    match &m.columns {
        TensorColumns::Tabular(_) => {
            if spec.dtype == DataType::Bytes {
                let mut items: Vec<String> = Vec::with_capacity(n * width);
                for &r in rows {
                    for &(_, column) in &cols.columns {
                        items.push(match column {
                            Some(Column::Scalar(Values::Text(v))) => {
                                v[r].clone().unwrap_or_default()
                            }
                            Some(Column::Scalar(Values::Numeric(v))) => {
                                v[r].map(|x| x.to_string()).unwrap_or_default()
                            }
                            _ => String::new(),
                        });
                    }
                }
                fix_free_dims(&mut shape, n, width);
                return Tensor::from_strings(shape, &items);
            }
            let mut vals = Vec::with_capacity(n * width);
            for &r in rows {
                for &(_, column) in &cols.columns {
                    vals.push(
                        match column {
                            Some(Column::Scalar(Values::Numeric(v))) => v[r],
                            Some(Column::Scalar(Values::Text(v))) => {
                                v[r].as_deref().and_then(|s| s.trim().parse().ok())
                            }
                            _ => None,
                        }
                        .unwrap_or(0.0),
                    );
                }
            }
            fix_free_dims(&mut shape, n, width);
            encode(spec.dtype, shape, &vals)
        }
        TensorColumns::List(_) => {
            let mut vals = Vec::new();
            if let (_, Some(Column::List(v))) = cols.columns[0] {
                for &r in rows {
                    if let Some(row) = &v[r] {
                        vals.extend_from_slice(row);
                    }
                }
            }
            let per_row = vals.len() / n.max(1);
            fix_free_dims(&mut shape, n, per_row);
            encode(spec.dtype, shape, &vals)
        }
    }
}

/// The shape of `n` rows of an input of shape `shape`.
pub(crate) fn batch_shape(shape: &[i64], n: usize, batched: bool) -> Vec<i64> {
    if batched {
        std::iter::once(n as i64)
            .chain(shape[1..].iter().copied())
            .collect()
    } else {
        shape.to_vec()
    }
}

/// A free dimension after the batch takes what the rows hold.
pub(crate) fn fix_free_dims(shape: &mut [i64], rows: usize, per_row: usize) {
    let known: i64 = shape[1..].iter().filter(|&&d| d >= 0).product();
    let free = shape[1..].iter().filter(|&&d| d < 0).count();
    for d in shape[1..].iter_mut() {
        if *d < 0 {
            *d = if free == 1 {
                per_row as i64 / known.max(1)
            } else {
                1
            };
        }
    }
    if shape.first().is_some_and(|&d| d < 0) {
        shape[0] = rows as i64;
    }
}

/// Numbers as a tensor of `dtype`.
pub(crate) fn encode(
    dtype: DataType,
    shape: Vec<i64>,
    vals: &[f64],
) -> Result<Tensor, TensorError> {
    let mut out: Vec<u8> = Vec::with_capacity(vals.len() * dtype.element_size().unwrap_or(8));
    for &x in vals {
        match dtype {
            DataType::Fp32 => out.extend((x as f32).to_le_bytes()),
            DataType::Fp64 => out.extend(x.to_le_bytes()),
            DataType::Fp16 => out.extend(half::f16::from_f64(x).to_le_bytes()),
            DataType::Int64 => out.extend((x as i64).to_le_bytes()),
            DataType::Int32 => out.extend((x as i32).to_le_bytes()),
            DataType::Int16 => out.extend((x as i16).to_le_bytes()),
            DataType::Int8 => out.extend((x as i8).to_le_bytes()),
            DataType::Uint64 => out.extend((x as u64).to_le_bytes()),
            DataType::Uint32 => out.extend((x as u32).to_le_bytes()),
            DataType::Uint16 => out.extend((x as u16).to_le_bytes()),
            DataType::Uint8 => out.push(x as u8),
            DataType::Bool => out.push(u8::from(x != 0.0)),
            DataType::Bytes => unreachable!("BYTES tensors are built from texts"),
        }
    }
    Tensor::new(dtype, shape, Bytes::from(out))
}
