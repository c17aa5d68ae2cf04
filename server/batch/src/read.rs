//! Reading an input file a record batch at a time, by its extension:
//! Parquet, CSV with a header row, and JSON Lines (one object per line),
//! so memory holds a few batches whatever the file's size.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use crate::files::extension_of;
use crate::BatchError;

/// The batches of one file, in order.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

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
        "jsonl" | "json" | "ndjson" => {
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
        other => Err(failed(format!(
            "cannot read files of extension {other:?} (expected .parquet, .csv, .jsonl)"
        ))),
    }
}
