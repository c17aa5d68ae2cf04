//! `ferroserve batch`: a registered version over files of rows
//! (`ferroserve-batch` does the work); this module parses the arguments,
//! loads the model in-process, shows progress and prints the summary.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use ferroserve_batch::{Format, Options, Progress, Shard, Summary};
use ferroserve_registry::baselines;
use ferroserve_registry::models::{parse_ref, VersionRef};
use ferroserve_runtime::manifest::Manifest;

use crate::output::{print_json, print_table};
use crate::python::PythonArgs;

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Model repository folder (holding registry.db).
    #[arg(long)]
    repo: PathBuf,
    /// The version: NAME (the newest), NAME:VERSION or NAME@ALIAS.
    #[arg(long, value_name = "NAME[:VERSION|@ALIAS]", value_parser = parse_ref)]
    model: VersionRef,
    /// Files to score: a path or a glob pattern (quote it), of .parquet,
    /// .csv (with a header row) or .jsonl files; repeat for several.
    #[arg(long, required = true, value_name = "PATTERN")]
    input: Vec<String>,
    /// The output folder: one file per input, named after it (its path
    /// under the pattern's folder), with errors files and the ledger that
    /// lets a restarted run skip finished files.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value = "parquet", value_parser = ["parquet", "csv", "jsonl"])]
    format: String,
    /// A column that identifies each row, copied to the outputs (default:
    /// the row's number in its file, from 0, as `row`).
    #[arg(long, value_name = "COLUMN")]
    id_column: Option<String>,
    /// The columns of an input, in order (one list column for a
    /// non-tabular input); repeat for several inputs.
    #[arg(long, value_name = "INPUT=COL1,COL2,...")]
    map: Vec<String>,
    /// Stop after more than this many rows in error (default: never).
    #[arg(long, value_name = "N")]
    error_threshold: Option<u64>,
    /// Retries of a batch the backend failed, before it is split to find
    /// the failing rows.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// Score only this share of the files: K of N (0-based), by a hash of
    /// each file's name, so N copies split the files with no coordinator.
    /// Default: $JOB_COMPLETION_INDEX of $FERROSERVE_SHARDS when both are set.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Write no outputs, only the summary (Azure ML's summary_only).
    #[arg(long)]
    summary_only: bool,
    /// Accept NaN in inputs (by default a row with NaN is an error row).
    #[arg(long)]
    allow_nan: bool,
    /// Model instances (default: the bundle's).
    #[arg(long)]
    instances: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    python: PythonArgs,
}

pub fn run(a: BatchArgs) -> Result<bool> {
    let map = parse_map(&a.map)?;
    let shard = match a.shard {
        Some(s) => Some(s),
        None => shard_from_env()?,
    };
    let model_name = a.model.model().to_string();
    let version = baselines::resolve_version(&a.repo, &a.model)?;
    let label = format!("{model_name}:{version}");
    let opts = Options {
        inputs: a.input,
        output: a.output,
        format: a.format.parse::<Format>().map_err(anyhow::Error::msg)?,
        id_column: a.id_column,
        map,
        error_threshold: a.error_threshold,
        max_retries: a.max_retries,
        shard,
        summary_only: a.summary_only,
        allow_nan: a.allow_nan,
        model_label: label.clone(),
    };
    let planned = ferroserve_batch::plan(&opts)?;
    let dir = a.repo.join(&model_name).join(version.to_string());
    let mut manifest = Manifest::load(&dir)?;
    if let Some(n) = a.instances {
        if n == 0 {
            bail!("--instances: expected at least 1, got 0");
        }
        manifest.instances.count = n;
    }
    let model = crate::in_process::load(manifest, version, &label, &a.python)?;
    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start(progress.clone());
    let summary = ferroserve_batch::run(Arc::new(model), &opts, planned, &progress);
    reporter.stop();
    let summary = summary?;
    if a.json {
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    Ok(summary.succeeded())
}

fn parse_map(items: &[String]) -> Result<HashMap<String, Vec<String>>> {
    let mut map = HashMap::new();
    for item in items {
        let Some((input, cols)) = item.split_once('=') else {
            bail!("--map: expected INPUT=COL1,COL2,..., got {item:?}");
        };
        let cols: Vec<String> = cols
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if input.trim().is_empty() || cols.is_empty() {
            bail!("--map: expected INPUT=COL1,COL2,..., got {item:?}");
        }
        if map.insert(input.trim().to_string(), cols).is_some() {
            bail!("--map: input {:?} is mapped twice", input.trim());
        }
    }
    Ok(map)
}

/// A Kubernetes Indexed Job's pod: `JOB_COMPLETION_INDEX` of
/// `FERROSERVE_SHARDS` (the job's completions).
fn shard_from_env() -> Result<Option<Shard>> {
    match (
        std::env::var("JOB_COMPLETION_INDEX"),
        std::env::var("FERROSERVE_SHARDS"),
    ) {
        (Ok(k), Ok(n)) => format!("{k}/{n}")
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("JOB_COMPLETION_INDEX and FERROSERVE_SHARDS: {e}")),
        _ => Ok(None),
    }
}

/// Progress on stderr: a bar with rows/s and ETA on a terminal, a plain
/// line every 10 s otherwise.
struct Reporter {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    fn start(progress: Arc<Progress>) -> Reporter {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("batch-progress".into())
            .spawn(move || report(&progress, &flag))
            .ok();
        Reporter { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report(p: &Progress, stop: &std::sync::atomic::AtomicBool) {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} rows, {per_sec}, ETA {eta} {msg}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let started = Instant::now();
    let mut last_line = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let rows = p.rows.load(Ordering::Relaxed);
        let errors = p.errors.load(Ordering::Relaxed);
        let files = format!(
            "file {}/{}, {errors} in error",
            p.files_done.load(Ordering::Relaxed),
            p.files_total.load(Ordering::Relaxed)
        );
        match &bar {
            Some(bar) => {
                bar.set_length(p.expected.load(Ordering::Relaxed).max(rows));
                bar.set_position(rows);
                bar.set_message(files);
            }
            None if last_line.elapsed() >= Duration::from_secs(10) => {
                last_line = Instant::now();
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!("batch: {rows} rows scored ({rate:.0} rows/s), {files}");
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

fn print_summary(s: &Summary) {
    let rows: Vec<Vec<String>> = s
        .details
        .iter()
        .map(|d| {
            vec![
                d.input.clone(),
                d.status.to_string(),
                d.rows.to_string(),
                d.scored.to_string(),
                d.errors.to_string(),
                d.reason
                    .clone()
                    .or_else(|| d.output.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["input", "status", "rows", "scored", "errors", "output"],
        &rows,
    );
    println!(
        "{}: {} files ({} scored, {} skipped, {} failed), {} rows scored, {} in error, {:.1} s, {:.0} rows/s",
        s.model,
        s.files,
        s.files_scored,
        s.files_skipped,
        s.files_failed,
        s.rows_scored,
        s.rows_in_error,
        s.elapsed_s,
        s.rows_per_second
    );
    if let Some(mib) = s.peak_rss_mib {
        println!("peak memory {mib:.0} MiB");
    }
    if let Some(why) = &s.stopped {
        println!("{why}");
    }
}
