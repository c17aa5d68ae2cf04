//! A whole run: the files planned (expanded, sharded), each finished file
//! of an earlier run skipped, the rest scored one after the other, their
//! errors files and ledger entries written, and the summary.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ferroserve_runtime::Model;
use serde::Serialize;

use crate::files::{self, InputFile};
use crate::ledger::{sha256_file, Entry, Ledger};
use crate::options::{Options, Progress};
use crate::score::{score_file, Scorer};
use crate::sink::{temporary, write_whole};
use crate::BatchError;

/// One file's part of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub input: String,
    /// `scored`, `skipped` (finished by an earlier run) or `failed`.
    pub status: &'static str,
    pub rows: u64,
    pub scored: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub files: usize,
    pub files_scored: usize,
    pub files_skipped: usize,
    pub files_failed: usize,
    pub rows: u64,
    pub rows_scored: u64,
    pub rows_in_error: u64,
    pub elapsed_s: f64,
    /// Rows scored by this run (not skipped files') per second.
    pub rows_per_second: f64,
    /// The process's peak resident memory (Linux's VmHWM), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Why the run stopped early (the error threshold), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub details: Vec<FileSummary>,
}

impl Summary {
    /// Everything that was asked for scored (rows in error are reported,
    /// not failures, unless they stopped the run).
    pub fn succeeded(&self) -> bool {
        self.files_failed == 0 && self.stopped.is_none()
    }
}

/// Checks what can be checked before a model loads: the output folder, the
/// input files, the shard. Returns the files this shard scores.
pub fn plan(opts: &Options) -> Result<Vec<InputFile>, BatchError> {
    if opts.output.exists() && !opts.output.is_dir() {
        return Err(BatchError::Argument {
            argument: "--output",
            message: format!("{} is a file, expected a folder", opts.output.display()),
        });
    }
    let all = files::expand(&opts.inputs)?;
    let extension = opts.format.extension();
    let mut outputs: HashMap<String, &str> = HashMap::new();
    for f in &all {
        let out = files::with_extension(&f.name, extension);
        if let Some(other) = outputs.insert(out.clone(), &f.name) {
            return Err(BatchError::Argument {
                argument: "--input",
                message: format!("{other:?} and {:?} would both write {out:?}", f.name),
            });
        }
    }
    Ok(match opts.shard {
        Some(s) => all.into_iter().filter(|f| s.takes(&f.name)).collect(),
        None => all,
    })
}

/// Scores the planned files with `model`, `instances` requests deep per
/// instance.
pub fn run(
    model: Arc<Model>,
    opts: &Options,
    planned: Vec<InputFile>,
    progress: &Progress,
) -> Result<Summary, BatchError> {
    let started = Instant::now();
    let manifest = &model.manifest;
    let batched = manifest.batching.max_batch_size > 0 && !model.capabilities().raw_body;
    let raw = model.capabilities().raw_body;
    if model.signature.inputs.is_empty() && !raw {
        return Err(BatchError::Argument {
            argument: "--model",
            message: format!("{} declares no inputs to feed", opts.model_label),
        });
    }
    if raw && !opts.map.is_empty() {
        return Err(BatchError::Argument {
            argument: "--map",
            message: format!(
                "{} is a raw-style entry script: each row goes to run() whole, as a JSON object",
                opts.model_label
            ),
        });
    }
    for input in opts.map.keys() {
        if !model.signature.inputs.iter().any(|s| &s.name == input) {
            let names: Vec<&str> = model
                .signature
                .inputs
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(BatchError::Argument {
                argument: "--map",
                message: format!("the model has no input {input:?} (its inputs: {names:?})"),
            });
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BatchError::Argument {
            argument: "--model",
            message: format!("cannot start the scoring runtime: {e}"),
        })?;
    let scorer = Scorer {
        batched,
        chunk: if batched && !raw {
            manifest.batching.max_batch_size.max(1)
        } else {
            1
        },
        depth: manifest.instances.count.max(1) * 4,
        feature_names: manifest
            .feature_names
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        raw,
        model,
        runtime,
    };
    if !opts.summary_only {
        std::fs::create_dir_all(&opts.output).map_err(|e| BatchError::Write {
            path: opts.output.clone(),
            message: e.to_string(),
        })?;
    }
    let mut ledger = if opts.summary_only {
        Ledger::default()
    } else {
        Ledger::open(&opts.output)?
    };
    progress
        .files_total
        .store(planned.len() as u64, Ordering::Relaxed);
    let format = opts.format.extension();
    let mut details = Vec::new();
    let mut stopped = None;
    for file in &planned {
        let out_name = files::with_extension(&file.name, format);
        let out_path = opts.output.join(&out_name);
        let errors_name = files::with_extension(&file.name, "errors.jsonl");
        let errors_path = opts.output.join(&errors_name);
        // Only for the ledger: a summary-only run keeps none.
        let input_hash = if opts.summary_only {
            String::new()
        } else {
            sha256_file(&file.path)
                .map(|(h, _)| h)
                .map_err(|e| BatchError::Read {
                    path: file.path.clone(),
                    message: e.to_string(),
                })?
        };
        if !opts.summary_only {
            if let Some(e) = ledger.finished(
                &file.name,
                &input_hash,
                &opts.model_label,
                format,
                &opts.output,
            ) {
                progress.rows.fetch_add(e.scored, Ordering::Relaxed);
                progress.errors.fetch_add(e.errors, Ordering::Relaxed);
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                details.push(FileSummary {
                    input: file.name.clone(),
                    status: "skipped",
                    rows: e.rows,
                    scored: e.scored,
                    errors: e.errors,
                    output: Some(out_name),
                    errors_file: (e.errors > 0).then_some(errors_name),
                    reason: None,
                });
                continue;
            }
        }
        match score_file(&scorer, opts, &file.path, &out_path, progress) {
            Ok(scored) => {
                let errors = scored.errors.len() as u64;
                if !opts.summary_only {
                    finish_errors(&errors_path, &scored.errors)?;
                    let (output_sha256, _) =
                        sha256_file(&out_path).map_err(|e| BatchError::Read {
                            path: out_path.clone(),
                            message: e.to_string(),
                        })?;
                    ledger.record(
                        &file.name,
                        Entry {
                            input_sha256: input_hash,
                            model: opts.model_label.clone(),
                            format: format.to_string(),
                            rows: scored.rows,
                            scored: scored.scored,
                            errors,
                            output: out_name.clone(),
                            output_sha256,
                        },
                    )?;
                }
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                details.push(FileSummary {
                    input: file.name.clone(),
                    status: "scored",
                    rows: scored.rows,
                    scored: scored.scored,
                    errors,
                    output: (!opts.summary_only).then_some(out_name),
                    errors_file: (errors > 0 && !opts.summary_only).then_some(errors_name),
                    reason: None,
                });
            }
            Err(e @ BatchError::Argument { .. }) => return Err(e),
            Err(e @ BatchError::Threshold { .. }) => {
                stopped = Some(e.to_string());
                details.push(failed(file, &e));
                break;
            }
            Err(e) => {
                let _ = std::fs::remove_file(temporary(&out_path));
                details.push(failed(file, &e));
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = |status: &str| details.iter().filter(|d| d.status == status).count();
    let rows_scored: u64 = details.iter().map(|d| d.scored).sum();
    // The rate of this run's work: files an earlier run finished are not in it.
    let scored_now: u64 = details
        .iter()
        .filter(|d| d.status == "scored")
        .map(|d| d.scored)
        .sum();
    Ok(Summary {
        model: opts.model_label.clone(),
        files: planned.len(),
        files_scored: count("scored"),
        files_skipped: count("skipped"),
        files_failed: count("failed"),
        rows: details.iter().map(|d| d.rows).sum(),
        rows_scored,
        rows_in_error: details.iter().map(|d| d.errors).sum(),
        elapsed_s: elapsed,
        rows_per_second: scored_now as f64 / elapsed.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        stopped,
        details,
    })
}

fn failed(file: &InputFile, e: &BatchError) -> FileSummary {
    FileSummary {
        input: file.name.clone(),
        status: "failed",
        rows: 0,
        scored: 0,
        errors: 0,
        output: None,
        errors_file: None,
        reason: Some(e.to_string()),
    }
}

/// Writes a file's errors (row and reason, one JSON object a line), or
/// removes an earlier run's when there are none.
fn finish_errors(path: &Path, errors: &[(u64, String)]) -> Result<(), BatchError> {
    if errors.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BatchError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        };
    }
    let lines: Vec<String> = errors
        .iter()
        .map(|(row, reason)| serde_json::json!({"row": row, "reason": reason}).to_string())
        .collect();
    write_whole(path, &lines)
}

/// VmHWM of /proc/self/status: the peak since this program started (unlike
/// getrusage's, which counts the parent's pages from before the exec).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
