//! Reading an input file a record batch at a time, by its extension:
//! Parquet, CSV with a header row, JSON Lines (one object per line) and
//! NumPy `.npy` arrays, so memory holds a few batches whatever the file's
//! size.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::ArrowError;

use crate::files::extension_of;
use crate::BatchError;

/// The batches of one file, in order.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// Whether `path` is JSON Lines by its extension.
pub fn is_json_lines(path: &Path) -> bool {
    matches!(extension_of(path).as_str(), "jsonl" | "json" | "ndjson")
}

/// Opens `path` for reading `batch_rows` rows at a time; also returns its
/// row count where the format records it (Parquet), for progress.
pub fn open(path: &Path, batch_rows: usize) -> Result<(Batches, Option<u64>), BatchError> {
    let failed = |message: String| BatchError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| failed(e.to_string()))?;
    match extension_of(path).as_str() {
        "parquet" => {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| failed(e.to_string()))?;
            let rows = builder.metadata().file_metadata().num_rows() as u64;
            let reader = builder
                .with_batch_size(batch_rows)
                .build()
                .map_err(|e| failed(e.to_string()))?;
            Ok((Box::new(reader), Some(rows)))
        }
        "csv" => {
            let format = arrow_csv::reader::Format::default().with_header(true);
            let mut file = file;
            // Every row decides the types: a column that is numbers for a
            // thousand rows and then text is text.
            let (schema, _) = format
                .infer_schema(&mut file, None)
                .map_err(|e| failed(e.to_string()))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| failed(e.to_string()))?;
            let reader = arrow_csv::ReaderBuilder::new(Arc::new(schema))
                .with_format(format)
                .with_batch_size(batch_rows)
                .build(file)
                .map_err(|e| failed(e.to_string()))?;
            Ok((Box::new(reader), None))
        }
        _ if is_json_lines(path) => {
            let mut reader = BufReader::new(file);
            let (schema, _) =
                arrow_json::reader::infer_json_schema_from_seekable(&mut reader, None)
                    .map_err(|e| failed(e.to_string()))?;
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| failed(e.to_string()))?;
            let reader = arrow_json::ReaderBuilder::new(Arc::new(schema))
                .with_batch_size(batch_rows)
                .build(reader)
                .map_err(|e| failed(e.to_string()))?;
            Ok((Box::new(reader), None))
        }
        "npy" => {
            let npy =
                npyz::NpyFile::new(BufReader::new(file)).map_err(|e| failed(e.to_string()))?;
            npy_batches(npy, batch_rows).map_err(failed)
        }
        other => Err(failed(format!(
            "cannot read files of extension {other:?} (expected .parquet, .csv, .jsonl, .npy)"
        ))),
    }
}

/// A `.npy` array's rows as batches: a 2-D `(rows, k)` array as columns
/// `x_0`..`x_{k-1}` (a model with one tabular input takes them in order), a
/// 1-D one as column `x`, and any other shape as one list column `x` of
/// each row flattened (`--map INPUT=x` names its input).
fn npy_batches(
    npy: npyz::NpyFile<BufReader<File>>,
    batch_rows: usize,
) -> Result<(Batches, Option<u64>), String> {
    if npy.order() == npyz::Order::Fortran {
        return Err("a Fortran-ordered array: save it in C order (np.ascontiguousarray)".into());
    }
    let shape = npy.shape().to_vec();
    let rows = *shape.first().ok_or("a 0-dimensional array has no rows")?;
    let width: u64 = shape[1..].iter().product();
    let layout = match shape.len() {
        1 => NpyLayout::Column,
        2 => NpyLayout::Columns(width as usize),
        _ => NpyLayout::List(width as usize),
    };
    let dtype = npy.dtype().descr();
    let npy = match npy.try_data::<f32>() {
        Ok(r) => return Ok((npy_stream(r, layout, batch_rows, rows), Some(rows))),
        Err(n) => n,
    };
    let npy = match npy.try_data::<f64>() {
        Ok(r) => return Ok((npy_stream(r, layout, batch_rows, rows), Some(rows))),
        Err(n) => n,
    };
    let npy = match npy.try_data::<i64>() {
        Ok(r) => return Ok((npy_stream(r, layout, batch_rows, rows), Some(rows))),
        Err(n) => n,
    };
    match npy.try_data::<i32>() {
        Ok(r) => Ok((npy_stream(r, layout, batch_rows, rows), Some(rows))),
        Err(_) => Err(format!(
            "array dtype {dtype} is not one of float32, float64, int64, int32"
        )),
    }
}

#[derive(Debug, Clone, Copy)]
enum NpyLayout {
    Column,
    Columns(usize),
    List(usize),
}

/// Values a `.npy` holds, as Arrow arrays of their own type.
trait NpyValue: npyz::Deserialize<TypeReader: Send> + Copy + Send + 'static {
    type Arrow: arrow_array::types::ArrowPrimitiveType<Native = Self>;
}
impl NpyValue for f32 {
    type Arrow = arrow_array::types::Float32Type;
}
impl NpyValue for f64 {
    type Arrow = arrow_array::types::Float64Type;
}
impl NpyValue for i64 {
    type Arrow = arrow_array::types::Int64Type;
}
impl NpyValue for i32 {
    type Arrow = arrow_array::types::Int32Type;
}

fn npy_stream<T: NpyValue>(
    mut reader: npyz::NpyReader<T, BufReader<File>>,
    layout: NpyLayout,
    batch_rows: usize,
    rows: u64,
) -> Batches {
    use arrow_array::{ArrayRef, PrimitiveArray};
    use arrow_schema::{Field, Schema};
    let mut left = rows;
    Box::new(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = (batch_rows as u64).min(left) as usize;
        left -= n as u64;
        let width = match layout {
            NpyLayout::Column => 1,
            NpyLayout::Columns(k) | NpyLayout::List(k) => k,
        };
        let mut values: Vec<T> = Vec::with_capacity(n * width);
        for _ in 0..n * width {
            match reader.next() {
                Some(Ok(v)) => values.push(v),
                Some(Err(e)) => return Some(Err(ArrowError::IoError(e.to_string(), e))),
                None => {
                    return Some(Err(ArrowError::ParseError(
                        "the array ends before its shape says".into(),
                    )))
                }
            }
        }
        let element = <T::Arrow as arrow_array::types::ArrowPrimitiveType>::DATA_TYPE;
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = match layout {
            NpyLayout::Column => (
                vec![Field::new("x", element, false)],
                vec![Arc::new(PrimitiveArray::<T::Arrow>::from_iter_values(
                    values,
                ))],
            ),
            NpyLayout::Columns(k) => (0..k)
                .map(|j| {
                    let col: ArrayRef = Arc::new(PrimitiveArray::<T::Arrow>::from_iter_values(
                        values.iter().skip(j).step_by(k).copied(),
                    ));
                    (Field::new(format!("x_{j}"), element.clone(), false), col)
                })
                .unzip(),
            NpyLayout::List(k) => {
                let item = Arc::new(Field::new_list_field(element.clone(), false));
                let list = arrow_array::FixedSizeListArray::try_new(
                    item.clone(),
                    k as i32,
                    Arc::new(PrimitiveArray::<T::Arrow>::from_iter_values(values)),
                    None,
                );
                let list = match list {
                    Ok(l) => l,
                    Err(e) => return Some(Err(e)),
                };
                (
                    vec![Field::new("x", list.data_type().clone(), false)],
                    vec![Arc::new(list) as ArrayRef],
                )
            }
        };
        Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns))
    }))
}

/// A JSON Lines file's lines as they are, one text column `line` (blank
/// lines skipped): each is a request body for a raw-style entry script.
pub fn open_lines(path: &Path, batch_rows: usize) -> Result<Batches, BatchError> {
    use std::io::BufRead;
    let file = File::open(path).map_err(|e| BatchError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut lines = BufReader::new(file).lines();
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "line",
        arrow_schema::DataType::Utf8,
        false,
    )]));
    Ok(Box::new(std::iter::from_fn(move || {
        let mut batch: Vec<String> = Vec::new();
        while batch.len() < batch_rows {
            match lines.next() {
                None => break,
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => batch.push(line),
                Some(Err(e)) => return Some(Err(ArrowError::IoError(e.to_string(), e))),
            }
        }
        if batch.is_empty() {
            return None;
        }
        let column: arrow_array::ArrayRef = Arc::new(arrow_array::StringArray::from(batch));
        Some(RecordBatch::try_new(schema.clone(), vec![column]))
    })))
}
