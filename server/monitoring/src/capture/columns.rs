//! How captured requests become Arrow columns: one row per row of the
//! request (dim 0 of its inputs), one column per feature of a tabular
//! tensor (`[-1, k]`, numeric) and a list column per other tensor, so that
//! pandas and pyarrow read the files as a table without unpacking.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, ListBuilder, PrimitiveBuilder, StringBuilder,
    TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use ferroserve_backend_core::{DataType, Signature, Tensor, TensorSpec};

use super::{Keep, Sample};

/// Which of a sample's tensor lists a column reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

/// How one tensor's row is laid out in columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Element `j` of a row of `width` elements, as a scalar column.
    Feature { j: usize, width: usize },
    /// The whole row, flattened, as a list column.
    Row,
}

#[derive(Debug, Clone)]
struct TensorColumn {
    side: Side,
    /// The tensor's name in the signature.
    tensor: String,
    dtype: DataType,
    layout: Layout,
}

/// The columns every file of one deployment's capture has.
#[derive(Debug, Clone)]
pub struct Columns {
    schema: SchemaRef,
    keep: Keep,
    /// Whether dim 0 of the inputs is the batch: rows per request.
    batched: bool,
    tensors: Vec<TensorColumn>,
}

/// Sample metadata kept beside the tensors.
#[derive(Debug, Clone)]
pub struct Labels {
    pub endpoint: String,
    pub deployment: String,
    pub model_version: String,
}

impl Columns {
    /// The layout for a model with this signature. `batched`: the model
    /// has a batch dimension, so each row of a request is a row here.
    /// `feature_names` names the columns of tabular tensors, by tensor.
    pub fn new(
        signature: &Signature,
        batched: bool,
        keep: Keep,
        feature_names: &std::collections::HashMap<String, Vec<String>>,
    ) -> Columns {
        let mut fields = Vec::new();
        let push = |fields: &mut Vec<Field>, name: String, ty: ArrowType, nullable: bool| {
            fields.push(Field::new(name, ty, nullable));
        };
        if keep.request_id {
            push(&mut fields, "request_id".into(), ArrowType::Utf8, false);
        }
        if batched {
            push(&mut fields, "row".into(), ArrowType::UInt32, false);
        }
        if keep.endpoint {
            push(&mut fields, "endpoint".into(), ArrowType::Utf8, false);
        }
        if keep.deployment {
            push(&mut fields, "deployment".into(), ArrowType::Utf8, false);
        }
        if keep.model_version {
            push(&mut fields, "model_version".into(), ArrowType::Utf8, false);
        }
        if keep.timestamp {
            let ts = ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            push(&mut fields, "timestamp".into(), ts, false);
        }
        if keep.latency {
            push(&mut fields, "latency_us".into(), ArrowType::UInt64, false);
        }
        if keep.status {
            push(&mut fields, "status".into(), ArrowType::UInt16, false);
            push(&mut fields, "error".into(), ArrowType::Utf8, true);
        }
        let mut tensors = Vec::new();
        let sides = [
            (Side::Input, keep.inputs, &signature.inputs, "input"),
            (Side::Output, keep.outputs, &signature.outputs, "output"),
        ];
        for (side, kept, specs, prefix) in sides {
            if !kept {
                continue;
            }
            for spec in specs.iter() {
                let names = feature_names.get(&spec.name);
                for (layout, name) in layouts(spec, batched, names) {
                    // A name already taken (an output named as an input, or
                    // as a metadata column) gets its side as a prefix.
                    let name = if fields.iter().any(|f| f.name() == &name) {
                        format!("{prefix}.{name}")
                    } else {
                        name
                    };
                    let element = arrow_type(spec.dtype);
                    let ty = match layout {
                        Layout::Feature { .. } => element,
                        Layout::Row => {
                            ArrowType::List(Arc::new(Field::new_list_field(element, true)))
                        }
                    };
                    // Nullable: a failed request has no outputs, and inputs
                    // that did not fit the signature are not kept.
                    push(&mut fields, name, ty, true);
                    tensors.push(TensorColumn {
                        side,
                        tensor: spec.name.clone(),
                        dtype: spec.dtype,
                        layout,
                    });
                }
            }
        }
        Columns {
            schema: Arc::new(Schema::new(fields)),
            keep,
            batched,
            tensors,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows a sample adds: its inputs' dim 0 when batched, else one.
    pub fn rows_of(&self, sample: &Sample) -> usize {
        if !self.batched {
            return 1;
        }
        sample
            .inputs
            .first()
            .and_then(|(_, t)| t.shape.first())
            .map_or(1, |&d| usize::try_from(d).unwrap_or(0).max(1))
    }

    /// One record batch of `samples`, in order.
    pub fn batch(&self, samples: &[Sample], labels: &Labels) -> Result<RecordBatch, ArrowError> {
        let rows: Vec<usize> = samples.iter().map(|s| self.rows_of(s)).collect();
        let total: usize = rows.iter().sum();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let each_row = || {
            samples
                .iter()
                .zip(&rows)
                .flat_map(|(s, &n)| (0..n).map(move |r| (s, r)))
        };
        let constant = |value: &str| -> ArrayRef {
            let mut b = StringBuilder::with_capacity(total, total * value.len());
            for _ in 0..total {
                b.append_value(value);
            }
            Arc::new(b.finish())
        };
        if self.keep.request_id {
            let mut b = StringBuilder::new();
            for (s, _) in each_row() {
                b.append_value(&s.request_id);
            }
            arrays.push(Arc::new(b.finish()));
        }
        if self.batched {
            let mut b = UInt32Builder::with_capacity(total);
            for (_, r) in each_row() {
                b.append_value(r as u32);
            }
            arrays.push(Arc::new(b.finish()));
        }
        if self.keep.endpoint {
            arrays.push(constant(&labels.endpoint));
        }
        if self.keep.deployment {
            arrays.push(constant(&labels.deployment));
        }
        if self.keep.model_version {
            arrays.push(constant(&labels.model_version));
        }
        if self.keep.timestamp {
            let mut b = TimestampMicrosecondBuilder::with_capacity(total).with_timezone("UTC");
            for (s, _) in each_row() {
                b.append_value(s.unix_micros());
            }
            arrays.push(Arc::new(b.finish()));
        }
        if self.keep.latency {
            let mut b = UInt64Builder::with_capacity(total);
            for (s, _) in each_row() {
                b.append_value(u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX));
            }
            arrays.push(Arc::new(b.finish()));
        }
        if self.keep.status {
            let mut b = UInt16Builder::with_capacity(total);
            let mut e = StringBuilder::new();
            for (s, _) in each_row() {
                b.append_value(s.status);
                e.append_option(s.error.as_deref());
            }
            arrays.push(Arc::new(b.finish()));
            arrays.push(Arc::new(e.finish()));
        }
        for column in &self.tensors {
            let mut sink = sink(column);
            for (s, &n) in samples.iter().zip(&rows) {
                let named = match column.side {
                    Side::Input => &s.inputs,
                    Side::Output => &s.outputs,
                };
                let tensor = named
                    .iter()
                    .find(|(n, _)| n == &column.tensor)
                    .map(|(_, t)| t);
                match tensor.and_then(|t| Rows::of(t, column.dtype, n, self.batched)) {
                    Some(cut) => (0..n).for_each(|r| sink.push(Some(cut.row(r)))),
                    None => (0..n).for_each(|_| sink.push(None)),
                }
            }
            arrays.push(sink.finish());
        }
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
    }
}

/// The columns of one tensor and their names.
fn layouts(spec: &TensorSpec, batched: bool, names: Option<&Vec<String>>) -> Vec<(Layout, String)> {
    let row_dims = if batched {
        spec.shape.get(1..).unwrap_or(&[])
    } else {
        &spec.shape[..]
    };
    let tabular =
        spec.dtype != DataType::Bytes && row_dims.len() <= 1 && row_dims.iter().all(|&d| d > 0);
    if !tabular {
        return vec![(Layout::Row, spec.name.clone())];
    }
    let width = row_dims.first().map_or(1, |&d| d as usize);
    (0..width)
        .map(|j| {
            let name = match names.and_then(|n| n.get(j)) {
                Some(n) => n.clone(),
                None if width == 1 => spec.name.clone(),
                None => format!("{}_{j}", spec.name),
            };
            (Layout::Feature { j, width }, name)
        })
        .collect()
}

fn arrow_type(dtype: DataType) -> ArrowType {
    match dtype {
        DataType::Bool => ArrowType::Boolean,
        DataType::Uint8 => ArrowType::UInt8,
        DataType::Uint16 => ArrowType::UInt16,
        DataType::Uint32 => ArrowType::UInt32,
        DataType::Uint64 => ArrowType::UInt64,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        // pandas has no half floats to speak of: widened, exactly.
        DataType::Fp16 | DataType::Fp32 => ArrowType::Float32,
        DataType::Fp64 => ArrowType::Float64,
        DataType::Bytes => ArrowType::Binary,
    }
}

/// One row's elements: fixed-size bytes, or BYTES elements.
#[derive(Clone, Copy)]
enum Row<'a> {
    Fixed(&'a [u8]),
    Strings(&'a [&'a [u8]]),
}

/// A tensor cut into rows.
enum Rows<'a> {
    Fixed {
        data: &'a [u8],
        per_row: usize,
    },
    Strings {
        elements: Vec<&'a [u8]>,
        per_row: usize,
    },
}

impl<'a> Rows<'a> {
    /// `None` when the tensor does not have `rows` rows of the column's
    /// dtype (inputs that failed validation): its cells are then null.
    fn of(t: &'a Tensor, dtype: DataType, rows: usize, batched: bool) -> Option<Rows<'a>> {
        if t.dtype != dtype || (batched && t.shape.first().copied() != Some(rows as i64)) {
            return None;
        }
        match dtype.element_size() {
            Some(size) => {
                let per_row = t.data.len() / rows;
                (per_row * rows == t.data.len() && per_row.is_multiple_of(size)).then_some(
                    Rows::Fixed {
                        data: &t.data,
                        per_row,
                    },
                )
            }
            None => {
                let elements = t.string_elements();
                let per_row = elements.len() / rows;
                (per_row * rows == elements.len()).then_some(Rows::Strings { elements, per_row })
            }
        }
    }

    fn row(&self, r: usize) -> Row<'_> {
        match self {
            Rows::Fixed { data, per_row } => Row::Fixed(&data[r * per_row..(r + 1) * per_row]),
            Rows::Strings { elements, per_row } => {
                Row::Strings(&elements[r * per_row..(r + 1) * per_row])
            }
        }
    }
}

/// Builds one column from rows (or nulls).
trait Sink {
    fn push(&mut self, row: Option<Row<'_>>);
    fn finish(&mut self) -> ArrayRef;
}

struct Feature<T: ArrowPrimitiveType, F> {
    b: PrimitiveBuilder<T>,
    j: usize,
    width: usize,
    size: usize,
    decode: F,
}

impl<T: ArrowPrimitiveType, F: Fn(&[u8]) -> T::Native> Sink for Feature<T, F> {
    fn push(&mut self, row: Option<Row<'_>>) {
        match row {
            Some(Row::Fixed(b)) if b.len() == self.width * self.size => {
                let at = self.j * self.size;
                self.b.append_value((self.decode)(&b[at..at + self.size]));
            }
            _ => self.b.append_null(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.b.finish())
    }
}

struct List<T: ArrowPrimitiveType, F> {
    b: ListBuilder<PrimitiveBuilder<T>>,
    size: usize,
    decode: F,
}

impl<T: ArrowPrimitiveType, F: Fn(&[u8]) -> T::Native> Sink for List<T, F> {
    fn push(&mut self, row: Option<Row<'_>>) {
        match row {
            Some(Row::Fixed(b)) => {
                for e in b.chunks_exact(self.size) {
                    self.b.values().append_value((self.decode)(e));
                }
                self.b.append(true);
            }
            _ => self.b.append_null(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.b.finish())
    }
}

struct BoolFeature {
    b: BooleanBuilder,
    j: usize,
    width: usize,
}

impl Sink for BoolFeature {
    fn push(&mut self, row: Option<Row<'_>>) {
        match row {
            Some(Row::Fixed(b)) if b.len() == self.width => self.b.append_value(b[self.j] != 0),
            _ => self.b.append_null(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.b.finish())
    }
}

struct BoolList(ListBuilder<BooleanBuilder>);

impl Sink for BoolList {
    fn push(&mut self, row: Option<Row<'_>>) {
        match row {
            Some(Row::Fixed(b)) => {
                for &e in b {
                    self.0.values().append_value(e != 0);
                }
                self.0.append(true);
            }
            _ => self.0.append_null(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

struct BytesList(ListBuilder<BinaryBuilder>);

impl Sink for BytesList {
    fn push(&mut self, row: Option<Row<'_>>) {
        match row {
            Some(Row::Strings(elements)) => {
                for e in elements {
                    self.0.values().append_value(e);
                }
                self.0.append(true);
            }
            _ => self.0.append_null(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

fn primitive<T, F>(layout: Layout, size: usize, decode: F) -> Box<dyn Sink>
where
    T: ArrowPrimitiveType,
    F: Fn(&[u8]) -> T::Native + 'static,
{
    match layout {
        Layout::Feature { j, width } => Box::new(Feature {
            b: PrimitiveBuilder::<T>::new(),
            j,
            width,
            size,
            decode,
        }),
        Layout::Row => Box::new(List {
            b: ListBuilder::new(PrimitiveBuilder::<T>::new()),
            size,
            decode,
        }),
    }
}

/// The builder for a column, by element type and layout. Elements are
/// little-endian, as [`Tensor`] keeps them.
fn sink(column: &TensorColumn) -> Box<dyn Sink> {
    macro_rules! le {
        ($t:ty, $n:literal) => {
            |b: &[u8]| <$t>::from_le_bytes(b.try_into().expect(concat!($n, " bytes")))
        };
    }
    let layout = column.layout;
    match column.dtype {
        DataType::Bool => match layout {
            Layout::Feature { j, width } => Box::new(BoolFeature {
                b: BooleanBuilder::new(),
                j,
                width,
            }),
            Layout::Row => Box::new(BoolList(ListBuilder::new(BooleanBuilder::new()))),
        },
        DataType::Bytes => Box::new(BytesList(ListBuilder::new(BinaryBuilder::new()))),
        DataType::Uint8 => primitive::<UInt8Type, _>(layout, 1, |b: &[u8]| b[0]),
        DataType::Int8 => primitive::<Int8Type, _>(layout, 1, |b: &[u8]| b[0] as i8),
        DataType::Uint16 => primitive::<UInt16Type, _>(layout, 2, le!(u16, "2")),
        DataType::Int16 => primitive::<Int16Type, _>(layout, 2, le!(i16, "2")),
        DataType::Uint32 => primitive::<UInt32Type, _>(layout, 4, le!(u32, "4")),
        DataType::Int32 => primitive::<Int32Type, _>(layout, 4, le!(i32, "4")),
        DataType::Uint64 => primitive::<UInt64Type, _>(layout, 8, le!(u64, "8")),
        DataType::Int64 => primitive::<Int64Type, _>(layout, 8, le!(i64, "8")),
        DataType::Fp16 => primitive::<Float32Type, _>(layout, 2, |b: &[u8]| {
            half::f16::from_le_bytes([b[0], b[1]]).to_f32()
        }),
        DataType::Fp32 => primitive::<Float32Type, _>(layout, 4, le!(f32, "4")),
        DataType::Fp64 => primitive::<Float64Type, _>(layout, 8, le!(f64, "8")),
    }
}
