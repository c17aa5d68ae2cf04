//! One output file being written: Parquet, CSV or JSON Lines, under a
//! hidden temporary name in the output folder, renamed to its final name
//! only when complete, so a name in the output folder is always a whole
//! file (a killed run leaves at most a temporary one, which the next run
//! overwrites).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::BatchError;

/// The output files' format (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::Jsonl),
            other => Err(format!("expected parquet, csv or jsonl, got {other:?}")),
        }
    }
}

enum Writer {
    Parquet(ArrowWriter<File>),
    // Boxed: the CSV writer's options are twice the size of the others.
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Jsonl(arrow_json::LineDelimitedWriter<BufWriter<File>>),
}

/// An output file in progress.
pub struct Sink {
    writer: Writer,
    tmp: PathBuf,
    path: PathBuf,
}

/// The hidden temporary name of `path`, in the same folder (so the rename
/// is atomic).
pub fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

impl Sink {
    pub fn create(path: &Path, format: Format, schema: &SchemaRef) -> Result<Sink, BatchError> {
        let failed = |e: &dyn std::fmt::Display| BatchError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
        }
        let tmp = temporary(path);
        let file = File::create(&tmp).map_err(|e| failed(&e))?;
        let writer = match format {
            Format::Parquet => {
                // Row groups of 64 Ki rows: the writer holds one in memory,
                // so a larger one would make memory grow with the file.
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_size(64 * 1024)
                    .build();
                Writer::Parquet(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| failed(&e))?,
                )
            }
            Format::Csv => Writer::Csv(Box::new(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::new(file)),
            )),
            Format::Jsonl => {
                Writer::Jsonl(arrow_json::LineDelimitedWriter::new(BufWriter::new(file)))
            }
        };
        Ok(Sink {
            writer,
            tmp,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), BatchError> {
        let result = match &mut self.writer {
            Writer::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Jsonl(w) => w.write(batch).map_err(|e| e.to_string()),
        };
        result.map_err(|message| BatchError::Write {
            path: self.tmp.clone(),
            message,
        })
    }

    /// Drops the unfinished file.
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self.writer);
        let _ = std::fs::remove_file(tmp);
    }

    /// Finishes the file, syncs it and gives it its final name.
    pub fn finish(self) -> Result<PathBuf, BatchError> {
        let failed = |message: String| BatchError::Write {
            path: self.tmp.clone(),
            message,
        };
        let file = match self.writer {
            Writer::Parquet(w) => w.into_inner().map_err(|e| failed(e.to_string()))?,
            Writer::Csv(w) => w
                .into_inner()
                .into_inner()
                .map_err(|e| failed(e.to_string()))?,
            Writer::Jsonl(mut w) => {
                w.finish().map_err(|e| failed(e.to_string()))?;
                w.into_inner()
                    .into_inner()
                    .map_err(|e| failed(e.to_string()))?
            }
        };
        file.sync_all().map_err(|e| failed(e.to_string()))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| failed(e.to_string()))?;
        Ok(self.path)
    }
}

/// Writes `lines` to `path` whole: a temporary name, then a rename.
pub fn write_whole(path: &Path, lines: &[String]) -> Result<(), BatchError> {
    let failed = |e: std::io::Error| BatchError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let tmp = temporary(path);
    let mut f = BufWriter::new(File::create(&tmp).map_err(failed)?);
    for line in lines {
        f.write_all(line.as_bytes()).map_err(failed)?;
        f.write_all(b"\n").map_err(failed)?;
    }
    let f = f.into_inner().map_err(|e| failed(e.into_error()))?;
    f.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}
