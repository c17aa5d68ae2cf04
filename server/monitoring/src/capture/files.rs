//! Capture files on disk: the partition folders
//! (`{sink}/{endpoint}/{deployment}/{yyyy}/{MM}/{dd}/{HH}`), and one open
//! Parquet file written under a hidden temporary name and renamed to
//! `{instance}-{seq}.parquet` only once it is complete, so every file under
//! a final name is whole, whatever happens to the process.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::{CaptureError, Labels};

/// Rows per Parquet row group: what the writer holds in memory before it
/// writes to the temporary file.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Fails, naming the folder, unless files can be created in `sink`.
pub fn check_writable(sink: &Path) -> Result<(), CaptureError> {
    let fail = |why: String| CaptureError::Sink {
        path: sink.to_path_buf(),
        why,
    };
    std::fs::create_dir_all(sink).map_err(|e| fail(format!("cannot create the folder: {e}")))?;
    let probe = sink.join(format!(".ferroserve-write-check-{}", std::process::id()));
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(|e| fail(format!("cannot write in the folder: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The hour a timestamp falls in, as hours since the epoch (the partition
/// key).
pub fn hour_of(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() / 3600) as i64,
        Err(_) => 0,
    }
}

/// `{sink}/{endpoint}/{deployment}/{yyyy}/{MM}/{dd}/{HH}` for the hour
/// `hour` (UTC).
pub fn partition(sink: &Path, labels: &Labels, hour: i64) -> PathBuf {
    let at = chrono::DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default();
    sink.join(component(&labels.endpoint))
        .join(component(&labels.deployment))
        .join(at.format("%Y").to_string())
        .join(at.format("%m").to_string())
        .join(at.format("%d").to_string())
        .join(at.format("%H").to_string())
}

/// A name made safe as one path component.
fn component(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "_".into()
    } else {
        safe
    }
}

/// The file being written.
pub struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    dir: PathBuf,
    instance: String,
    pub opened: Instant,
    pub hour: i64,
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: ParquetError },
}

impl OpenFile {
    /// Creates the partition folder and a temporary file in it.
    pub fn create(
        sink: &Path,
        labels: &Labels,
        instance: &str,
        hour: i64,
        schema: &SchemaRef,
    ) -> Result<OpenFile, FileError> {
        let dir = partition(sink, labels, hour);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FileError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let instance = component(instance);
        let tmp = dir.join(format!(".{instance}-{nanos}.parquet.tmp"));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        // Tensor values are mostly distinct: a dictionary only costs a hash
        // per value (and then falls back), so only the label columns, each
        // one value per file, keep one. Statistics per row group, not per
        // page, are what readers filter by.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::Chunk);
        for label in ["endpoint", "deployment", "model_version", "error"] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(label), true);
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
            FileError::Parquet {
                path: tmp.clone(),
                source,
            }
        })?;
        Ok(OpenFile {
            writer,
            tmp,
            dir,
            instance,
            opened: Instant::now(),
            hour,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), FileError> {
        self.writer
            .write(batch)
            .map_err(|source| FileError::Parquet {
                path: self.tmp.clone(),
                source,
            })
    }

    /// Bytes written so far plus those buffered for the next row group.
    pub fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Finishes the file, makes it durable, and gives it the first free
    /// final name; returns that name and the file's size.
    pub fn close(self) -> Result<(PathBuf, u64), FileError> {
        let OpenFile {
            writer,
            tmp,
            dir,
            instance,
            ..
        } = self;
        let file = writer.into_inner().map_err(|source| FileError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FileError::Io { path, source }
        };
        file.sync_all().map_err(io(&tmp))?;
        let size = file.metadata().map_err(io(&tmp))?.len();
        drop(file);
        let mut seq = next_seq(&dir, &instance);
        let path = loop {
            let path = dir.join(format!("{instance}-{seq}.parquet"));
            // A hard link never replaces an existing file: two writers that
            // picked the same number cannot overwrite each other.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq += 1,
                Err(e) => return Err(FileError::Io { path, source: e }),
            }
        };
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok((path, size))
    }

    /// Drops the file after a write error; its samples are counted lost.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// One past the highest `{instance}-{n}.parquet` already in `dir`.
fn next_seq(dir: &Path, instance: &str) -> u64 {
    let prefix = format!("{instance}-");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?
                .strip_suffix(".parquet")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours_under_safe_names() {
        let labels = Labels {
            endpoint: "fraud/../x".into(),
            deployment: "blue".into(),
            model_version: "3".into(),
        };
        // 2026-12-07T13:00:00Z
        let hour = 1_796_648_400 / 3600;
        let p = partition(Path::new("/s"), &labels, hour);
        assert_eq!(p, Path::new("/s/fraud_.._x/blue/2026/12/07/13"));
        assert_eq!(component(".."), "_");
        assert_eq!(
            hour_of(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7201)),
            2
        );
    }

    #[test]
    fn a_sink_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = check_writable(&blocker.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&blocker.join("sub").display().to_string()),
            "{err}"
        );
        check_writable(&dir.path().join("fresh")).unwrap();
    }
}
