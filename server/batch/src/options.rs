//! What a run was asked for, and the counters it updates as it goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use crate::files::Shard;
use crate::sink::Format;

/// What `ferroserve batch` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub inputs: Vec<String>,
    pub output: PathBuf,
    pub format: Format,
    pub id_column: Option<String>,
    /// `--map input=col1,col2,...`.
    pub map: HashMap<String, Vec<String>>,
    /// Stop after more than this many rows in error.
    pub error_threshold: Option<u64>,
    pub max_retries: u32,
    pub shard: Option<Shard>,
    pub summary_only: bool,
    pub allow_nan: bool,
    /// `name:version`, recorded in the ledger: another version's outputs
    /// are not this one's.
    pub model_label: String,
}

/// Counters the run updates as it goes, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub errors: AtomicU64,
    /// Rows of the files being scored where their format says (Parquet).
    pub expected: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
}
