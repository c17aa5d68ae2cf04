//! A model's answers as the rows of an output file: the row id first,
//! then one column per value of a tabular output (`[-1, k]`, named by the
//! bundle's `feature_names`, else `{output}_{j}`, or the output's name for
//! one value), and a list column for any other shape. FP32 stays FP32, so
//! a score reads back exactly as the model gave it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType as ArrowType, Field, Schema, SchemaRef};
use ferroserve_backend_core::{DataType, Signature, Tensor};
use ferroserve_monitoring::drift::mapping::{output_feature_names, row_width};
use ferroserve_monitoring::drift::window::number_at;

/// How one output tensor becomes columns.
#[derive(Debug, Clone)]
enum Layout {
    /// A raw-style entry script's answer: the JSON text `run()` returned.
    Raw,
    /// Element `j` of each row in column `j`.
    Tabular(usize),
    /// Each row flattened into one list.
    List,
}

#[derive(Debug, Clone)]
struct Output {
    dtype: DataType,
    layout: Layout,
}

/// The output files' schema and how a batch of answers fills it.
#[derive(Debug, Clone)]
pub struct OutputColumns {
    schema: SchemaRef,
    outputs: Vec<Output>,
    batched: bool,
}

impl OutputColumns {
    /// `id` is the id column's field (its name and type).
    pub fn new(
        signature: &Signature,
        batched: bool,
        feature_names: &HashMap<String, Vec<String>>,
        id: Field,
    ) -> OutputColumns {
        let mut fields = vec![id];
        let mut outputs = Vec::new();
        for spec in &signature.outputs {
            let names = output_feature_names(spec, batched, feature_names);
            let tabular = batched
                && spec.shape.len() <= 2
                && !names.is_empty()
                && row_width(spec, batched) == Some(names.len());
            let element = element_type(spec.dtype);
            if tabular {
                fields.extend(names.iter().map(|n| Field::new(n, element.clone(), true)));
                outputs.push(Output {
                    dtype: spec.dtype,
                    layout: Layout::Tabular(names.len()),
                });
            } else {
                fields.push(Field::new(
                    &spec.name,
                    ArrowType::List(Arc::new(Field::new_list_field(element, true))),
                    true,
                ));
                outputs.push(Output {
                    dtype: spec.dtype,
                    layout: Layout::List,
                });
            }
        }
        OutputColumns {
            schema: Arc::new(Schema::new(fields)),
            outputs,
            batched,
        }
    }

    /// A raw-style entry script's outputs: the id and `result`, the JSON
    /// its `run()` returned for the row.
    pub fn raw(id: Field) -> OutputColumns {
        OutputColumns {
            schema: Arc::new(Schema::new(vec![
                id,
                Field::new("result", ArrowType::Utf8, true),
            ])),
            outputs: vec![Output {
                dtype: DataType::Bytes,
                layout: Layout::Raw,
            }],
            batched: false,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether every column is a scalar (what CSV can hold).
    pub fn all_scalar(&self) -> bool {
        self.outputs
            .iter()
            .all(|o| matches!(o.layout, Layout::Tabular(_) | Layout::Raw))
    }

    /// The list-column outputs' names (what CSV cannot hold).
    pub fn list_columns(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), ArrowType::List(_)))
            .map(|f| f.name().clone())
            .collect()
    }

    /// One record batch: `ids` (one per row) and the model's outputs for
    /// those rows, in signature order (for an unbatched model, one answer
    /// per row, each its own set of tensors).
    pub fn batch(&self, ids: ArrayRef, answers: &[Vec<Tensor>]) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![ids];
        for (i, out) in self.outputs.iter().enumerate() {
            let tensors: Vec<&Tensor> = answers.iter().filter_map(|a| a.get(i)).collect();
            match out.layout {
                Layout::Tabular(k) => {
                    for j in 0..k {
                        columns.push(scalar_column(out.dtype, &tensors, k, j, self.batched));
                    }
                }
                Layout::List => columns.push(list_column(out.dtype, &tensors, self.batched)),
                Layout::Raw => {
                    let mut b = StringBuilder::new();
                    for t in &tensors {
                        b.append_option(
                            t.string_elements()
                                .first()
                                .map(|s| String::from_utf8_lossy(s).into_owned()),
                        );
                    }
                    columns.push(Arc::new(b.finish()));
                }
            }
        }
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

fn element_type(dtype: DataType) -> ArrowType {
    match dtype {
        DataType::Fp32 | DataType::Fp16 => ArrowType::Float32,
        DataType::Fp64 => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::Bytes => ArrowType::Utf8,
        _ => ArrowType::Int64,
    }
}

fn rows_of(t: &Tensor, batched: bool) -> usize {
    if batched {
        t.rows()
    } else {
        1
    }
}

/// Column `j` of `k` of a tabular output over all the answers' rows.
fn scalar_column(
    dtype: DataType,
    tensors: &[&Tensor],
    k: usize,
    j: usize,
    batched: bool,
) -> ArrayRef {
    let rows: usize = tensors.iter().map(|t| rows_of(t, batched)).sum();
    let at = |t: &Tensor, r: usize| number_at(t, r * k + j);
    match element_type(dtype) {
        ArrowType::Float32 => scalars(
            Float32Builder::with_capacity(rows),
            tensors,
            batched,
            |b, t, r| b.append_option(at(t, r).map(|x| x as f32)),
        ),
        ArrowType::Float64 => scalars(
            Float64Builder::with_capacity(rows),
            tensors,
            batched,
            |b, t, r| b.append_option(at(t, r)),
        ),
        ArrowType::Boolean => scalars(
            BooleanBuilder::with_capacity(rows),
            tensors,
            batched,
            |b, t, r| b.append_option(at(t, r).map(|x| x != 0.0)),
        ),
        ArrowType::Utf8 => {
            let mut b = StringBuilder::with_capacity(rows, rows * 8);
            for t in tensors {
                let items = t.string_elements();
                for r in 0..rows_of(t, batched) {
                    b.append_option(
                        items
                            .get(r * k + j)
                            .map(|s| String::from_utf8_lossy(s).into_owned()),
                    );
                }
            }
            Arc::new(b.finish())
        }
        _ => scalars(
            Int64Builder::with_capacity(rows),
            tensors,
            batched,
            |b, t, r| b.append_option(int_at(t, r * k + j)),
        ),
    }
}

/// One value per row of every answer, by `push(builder, tensor, row)`.
fn scalars<B: ArrayBuilder>(
    mut b: B,
    tensors: &[&Tensor],
    batched: bool,
    mut push: impl FnMut(&mut B, &Tensor, usize),
) -> ArrayRef {
    for t in tensors {
        for r in 0..rows_of(t, batched) {
            push(&mut b, t, r);
        }
    }
    b.finish()
}

/// Integers read as integers (an INT64 beyond 2^53 survives).
fn int_at(t: &Tensor, i: usize) -> Option<i64> {
    let size = t.dtype.element_size()?;
    let b = t.data.get(i * size..(i + 1) * size)?;
    Some(match t.dtype {
        DataType::Int64 => i64::from_le_bytes(b.try_into().ok()?),
        DataType::Uint64 => u64::from_le_bytes(b.try_into().ok()?) as i64,
        _ => number_at(t, i)? as i64,
    })
}

/// Each row of each answer flattened into a list.
fn list_column(dtype: DataType, tensors: &[&Tensor], batched: bool) -> ArrayRef {
    match element_type(dtype) {
        ArrowType::Utf8 => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for t in tensors {
                let items = t.string_elements();
                let w = per_row(t, batched);
                for r in 0..rows_of(t, batched) {
                    for s in items.iter().skip(r * w).take(w) {
                        b.values().append_value(String::from_utf8_lossy(s));
                    }
                    b.append(true);
                }
            }
            Arc::new(b.finish())
        }
        ArrowType::Float32 => lists(Float32Builder::new(), tensors, batched, |b, t, e| {
            b.append_option(number_at(t, e).map(|x| x as f32))
        }),
        ArrowType::Boolean => lists(BooleanBuilder::new(), tensors, batched, |b, t, e| {
            b.append_option(number_at(t, e).map(|x| x != 0.0))
        }),
        ArrowType::Int64 => lists(Int64Builder::new(), tensors, batched, |b, t, e| {
            b.append_option(int_at(t, e))
        }),
        _ => lists(Float64Builder::new(), tensors, batched, |b, t, e| {
            b.append_option(number_at(t, e))
        }),
    }
}

fn per_row(t: &Tensor, batched: bool) -> usize {
    t.element_count() / rows_of(t, batched).max(1)
}

/// A list per row of every answer, its elements by `push(values, tensor,
/// element)`.
fn lists<B: ArrayBuilder>(
    values: B,
    tensors: &[&Tensor],
    batched: bool,
    mut push: impl FnMut(&mut B, &Tensor, usize),
) -> ArrayRef {
    let mut b = ListBuilder::new(values);
    for t in tensors {
        let w = per_row(t, batched);
        for r in 0..rows_of(t, batched) {
            for e in r * w..(r + 1) * w {
                push(b.values(), t, e);
            }
            b.append(true);
        }
    }
    Arc::new(b.finish())
}
