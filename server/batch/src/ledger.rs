//! The output folder's record of finished files (`_ferroserve_batch.json`):
//! per input, its SHA-256, its row counts and its output's SHA-256. A run
//! skips a file whose input, model and format match an entry and whose
//! output is still the one recorded, so a killed run restarted redoes only
//! what it had not finished. Rewritten whole (temporary name, rename)
//! after each file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use ferroserve_registry::hashing::sha256_file;

use crate::sink::write_whole;
use crate::BatchError;

pub const FILE_NAME: &str = "_ferroserve_batch.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub input_sha256: String,
    /// The model version that scored it (`name:version`) and the format.
    pub model: String,
    pub format: String,
    pub rows: u64,
    pub scored: u64,
    pub errors: u64,
    /// Relative to the output folder.
    pub output: String,
    pub output_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub files: BTreeMap<String, Entry>,
    #[serde(skip)]
    path: PathBuf,
}

impl Ledger {
    /// The output folder's ledger, or an empty one.
    pub fn open(out: &Path) -> Result<Ledger, BatchError> {
        let path = out.join(FILE_NAME);
        let mut ledger = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Ledger>(&text).map_err(|e| BatchError::Write {
                path: path.clone(),
                message: format!("not a batch ledger ({e}); remove it to start over"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(e) => {
                return Err(BatchError::Write {
                    path,
                    message: e.to_string(),
                })
            }
        };
        ledger.path = path;
        Ok(ledger)
    }

    /// The entry that lets `name` be skipped: same input, model and
    /// format, and the recorded output still there unchanged.
    pub fn finished(
        &self,
        name: &str,
        input_sha256: &str,
        model: &str,
        format: &str,
        out: &Path,
    ) -> Option<&Entry> {
        let e = self.files.get(name)?;
        if e.input_sha256 != input_sha256 || e.model != model || e.format != format {
            return None;
        }
        let (hash, _) = sha256_file(&out.join(&e.output)).ok()?;
        (hash == e.output_sha256).then_some(e)
    }

    pub fn record(&mut self, name: &str, entry: Entry) -> Result<(), BatchError> {
        self.files.insert(name.to_string(), entry);
        let text = serde_json::to_string_pretty(&*self).expect("a ledger serialises");
        write_whole(&self.path, &[text])
    }
}
