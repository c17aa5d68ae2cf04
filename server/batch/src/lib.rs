//! Batch scoring: a loaded model over files of rows, in-process, through
//! the same batcher and backends as serving (`ferroserve batch`).
//!
//! - [`files`]: the `--input` patterns expanded, each file's name under
//!   its pattern's root, `--shard K/N`'s share.
//! - [`read`]: a file a record batch at a time (Parquet, CSV, JSON Lines).
//! - [`tensors`]: rows checked one by one, then the good ones as tensors;
//!   [`direct`]: the same straight from numeric Arrow arrays.
//! - [`score`]: one file through the model, reading, converting, scoring
//!   and writing at once with bounded queues between them; failed batches
//!   retried, then split to find the rows that fail.
//! - [`outputs`] and [`sink`]: answers as columns, files written under a
//!   temporary name and renamed when whole.
//! - [`ledger`]: the output folder's record of finished files, so that a
//!   restarted run skips them.

pub mod direct;
pub mod files;
pub mod ledger;
pub mod options;
pub mod outputs;
pub mod read;
pub mod run;
pub mod score;
pub mod sink;
pub mod tensors;

use std::path::PathBuf;

pub use files::Shard;
pub use options::{Options, Progress};
pub use run::{plan, run, Summary};
pub use sink::Format;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A bad command-line argument: the run does not start.
    #[error("{argument}: {message}")]
    Argument {
        argument: &'static str,
        message: String,
    },
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: cannot write: {message}")]
    Write { path: PathBuf, message: String },
    /// The file cannot be scored at all (its columns do not fit the model).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("stopped: {errors} rows in error, over --error-threshold {threshold}")]
    Threshold { errors: u64, threshold: u64 },
}
