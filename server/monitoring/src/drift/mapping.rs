//! Which columns of a data file are which model tensor: the bundle's
//! `feature_names` first, then the capture's own column names
//! (`{tensor}_{j}`), then a column named as the tensor, and for a model
//! with one tabular input, the file's columns in order.

use std::collections::HashMap;

use ferroserve_backend_core::{DataType, TensorSpec};

use super::baseline::{Source, Values};
use super::data::{Column, Table};

/// Capture's metadata columns: never features.
pub const METADATA_COLUMNS: &[&str] = &[
    "request_id",
    "row",
    "endpoint",
    "deployment",
    "model_version",
    "timestamp",
    "latency_us",
    "status",
    "error",
];

/// Where one input tensor's rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorColumns {
    /// `[-1, k]` (or `[-1]`): one scalar column per element, with the
    /// feature name each gets.
    Tabular(Vec<(String, String)>),
    /// Any other shape: one list column holding each row flattened.
    List(String),
}

/// An input tensor and its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub spec: TensorSpec,
    pub columns: TensorColumns,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model input {tensor:?} (shape {shape:?}) {problem}; the data's columns are {columns:?}")]
pub struct MappingError {
    pub tensor: String,
    pub shape: Vec<i64>,
    pub problem: String,
    pub columns: Vec<String>,
}

/// The elements per row of a tensor of this shape, if fixed.
pub fn row_width(spec: &TensorSpec, batched: bool) -> Option<usize> {
    let dims = if batched {
        spec.shape.get(1..).unwrap_or(&[])
    } else {
        &spec.shape[..]
    };
    dims.iter()
        .try_fold(1usize, |acc, &d| usize::try_from(d).ok().map(|d| acc * d))
}

/// Maps the model's `inputs` onto `table`'s columns.
pub fn map_inputs(
    table: &Table,
    inputs: &[TensorSpec],
    batched: bool,
    feature_names: &HashMap<String, Vec<String>>,
) -> Result<Vec<Mapped>, MappingError> {
    let all: Vec<String> = table.names().iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    for spec in inputs {
        let err = |problem: String| MappingError {
            tensor: spec.name.clone(),
            shape: spec.shape.clone(),
            problem,
            columns: all.clone(),
        };
        let tabular = batched && spec.shape.len() <= 2;
        let width = row_width(spec, batched);
        let is_scalar = |name: &str| matches!(table.column(name), Some(Column::Scalar(_)));
        let columns = if let Some(names) = feature_names.get(&spec.name) {
            let missing: Vec<&String> = names.iter().filter(|n| !is_scalar(n)).collect();
            if !missing.is_empty() {
                return Err(err(format!(
                    "is read from the columns its feature_names list, and these are missing: {missing:?}"
                )));
            }
            TensorColumns::Tabular(names.iter().map(|n| (n.clone(), n.clone())).collect())
        } else if let (true, Some(k)) = (tabular, width) {
            let captured: Vec<String> = (0..k).map(|j| format!("{}_{j}", spec.name)).collect();
            if k > 1 && captured.iter().all(|c| is_scalar(c)) {
                TensorColumns::Tabular(captured.into_iter().map(|c| (c.clone(), c)).collect())
            } else if k == 1 && is_scalar(&spec.name) {
                TensorColumns::Tabular(vec![(spec.name.clone(), spec.name.clone())])
            } else if inputs.len() == 1 {
                let features: Vec<&str> = table
                    .names()
                    .into_iter()
                    .filter(|n| is_scalar(n) && !METADATA_COLUMNS.contains(n))
                    .collect();
                if features.len() != k {
                    return Err(err(format!(
                        "takes {k} values per row, but the data has {} feature columns; name them in the bundle's feature_names, or as {}_0..{}_{}",
                        features.len(),
                        spec.name,
                        spec.name,
                        k - 1
                    )));
                }
                TensorColumns::Tabular(
                    features
                        .into_iter()
                        .map(|n| (n.to_string(), n.to_string()))
                        .collect(),
                )
            } else {
                return Err(err(format!(
                    "needs {k} columns named {}_0..{}_{} or listed in the bundle's feature_names",
                    spec.name,
                    spec.name,
                    k - 1
                )));
            }
        } else {
            match table.column(&spec.name) {
                Some(Column::List(_)) => TensorColumns::List(spec.name.clone()),
                _ => {
                    return Err(err(format!(
                        "is not tabular: it needs a list column named {:?}",
                        spec.name
                    )))
                }
            }
        };
        if let (TensorColumns::Tabular(cols), Some(k)) = (&columns, width) {
            if cols.len() != k {
                return Err(err(format!(
                    "takes {k} values per row, but its feature_names lists {}",
                    cols.len()
                )));
            }
        }
        if spec.dtype == DataType::Bytes {
            if let TensorColumns::List(c) = &columns {
                return Err(err(format!("is BYTES: list column {c:?} cannot feed it")));
            }
        }
        out.push(Mapped {
            spec: spec.clone(),
            columns,
        });
    }
    Ok(out)
}

/// The baseline features of mapped inputs: each scalar column, with its
/// tensor and position. List-fed tensors have none (images and sequences
/// are watched through the model's outputs).
pub fn input_features<'a>(
    table: &'a Table,
    mapped: &'a [Mapped],
) -> impl Iterator<Item = (String, Source, &'a Values)> + 'a {
    mapped.iter().flat_map(move |m| {
        let cols: &[(String, String)] = match &m.columns {
            TensorColumns::Tabular(c) => c,
            TensorColumns::List(_) => &[],
        };
        cols.iter().enumerate().filter_map(move |(j, (name, col))| {
            let Some(Column::Scalar(values)) = table.column(col) else {
                return None;
            };
            Some((
                name.clone(),
                Source {
                    tensor: m.spec.name.clone(),
                    column: j,
                },
                values,
            ))
        })
    })
}

/// The feature names of a tabular output: its `feature_names`, else
/// `{tensor}_{j}` (the capture's column names), or the tensor's own name
/// for one value per row.
pub fn output_feature_names(
    spec: &TensorSpec,
    batched: bool,
    feature_names: &HashMap<String, Vec<String>>,
) -> Vec<String> {
    if let Some(names) = feature_names.get(&spec.name) {
        return names.clone();
    }
    match row_width(spec, batched) {
        Some(1) => vec![spec.name.clone()],
        Some(k) if spec.shape.len() <= 2 => (0..k).map(|j| format!("{}_{j}", spec.name)).collect(),
        _ => Vec::new(),
    }
}
