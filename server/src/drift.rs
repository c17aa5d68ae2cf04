//! `ferroserve drift`: the drift statistics over captured files, offline.
//! Every file's rows go into one window (counts add, so files of several
//! replicas combine), scored against the version's baseline with the
//! bundle's `[drift]` rules, and printed as a table, JSON, or an HTML page
//! of histograms.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use ferroserve_frontend::endpoints::drift::{load_baseline, settings};
use ferroserve_monitoring::drift::baseline::{Feature, Values};
use ferroserve_monitoring::drift::data::{read_table, Column, Table};
use ferroserve_monitoring::drift::report::{evaluate, FeatureReport, Report};
use ferroserve_monitoring::drift::window::{Prepared, Side, Window};
use ferroserve_registry::baselines;
use ferroserve_registry::models::{parse_ref, VersionRef};
use ferroserve_runtime::manifest::Manifest;

use crate::drift_html;
use crate::output::{print_json, print_table};

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Model repository folder (holding registry.db).
    #[arg(long)]
    repo: PathBuf,
    /// The version whose baseline to compare with: NAME (the newest),
    /// NAME:VERSION or NAME@ALIAS.
    #[arg(long, value_name = "NAME[:VERSION|@ALIAS]", value_parser = parse_ref)]
    model: VersionRef,
    /// A capture folder (a sink, or one endpoint's or deployment's part of
    /// it): every Parquet file under it is read.
    #[arg(long)]
    capture: PathBuf,
    /// Only rows captured at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only rows captured before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML page with each feature's histograms.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// `Ok(false)` (exit 1) when a feature drifted, as a check in CI would want.
pub fn run(a: DriftArgs) -> Result<bool> {
    let model = a.model.model().to_string();
    let version = baselines::resolve_version(&a.repo, &a.model)?;
    let manifest = Manifest::load(&a.repo.join(&model).join(version.to_string()))?;
    let Some(baseline) = load_baseline(&a.repo, &model, version).map_err(anyhow::Error::msg)?
    else {
        bail!("{model}:{version} has no training baseline; record one with `ferroserve baseline --data FILE --repo {} --model {model}:{version}`", a.repo.display());
    };
    let from = a.from.as_deref().map(|t| micros("--from", t)).transpose()?;
    let to = a.to.as_deref().map(|t| micros("--to", t)).transpose()?;
    let files = parquet_files(&a.capture)?;
    if files.is_empty() {
        bail!("no capture files (*.parquet) under {}", a.capture.display());
    }
    let prepared = Prepared::new(std::sync::Arc::new(baseline));
    let b = &prepared.baseline;
    let mut window = Window::new(b);
    for file in &files {
        let table = read_table(file)?;
        let keep = rows_kept(&table, from, to);
        let rows = keep.iter().filter(|&&k| k).count() as u64;
        if rows == 0 {
            continue;
        }
        for (side, features) in [(Side::Input, &b.features), (Side::Output, &b.outputs)] {
            for (i, f) in features.iter().enumerate() {
                let Some(col) = column_of(&table, f, side) else {
                    continue;
                };
                window.add_values(&prepared, side, i, &filtered(col, &keep));
            }
        }
        if let Some(Column::Scalar(Values::Numeric(ts))) = table.column("timestamp") {
            for (t, _) in ts.iter().zip(&keep).filter(|(_, &k)| k) {
                if let Some(t) = t {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(*t as u64);
                    window.count_rows(0, at);
                }
            }
        }
        window.rows += rows;
    }
    let missing: Vec<&str> = b
        .features
        .iter()
        .chain(&b.outputs)
        .zip(window.features.iter().chain(&window.outputs))
        .filter(|(_, c)| counts_rows(c) == 0)
        .map(|(f, _)| f.name.as_str())
        .collect();
    if window.rows == 0 {
        bail!(
            "no captured rows in {} files under {} (between --from and --to)",
            files.len(),
            a.capture.display()
        );
    }
    let rules = settings(&manifest.drift, false).rules;
    let report = evaluate(b, &window, &rules);
    if let Some(path) = &a.html {
        let title = format!("Drift of {model}:{version}");
        std::fs::write(path, drift_html::page(&title, &report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["model"] = serde_json::json!(model);
        doc["version"] = serde_json::json!(version);
        doc["files"] = serde_json::json!(files.len());
        doc["features_without_values"] = serde_json::json!(missing);
        print_json(&doc)?;
    } else {
        print_summary(&model, version, files.len(), &report);
        if !missing.is_empty() {
            println!("no values in the capture for: {}", missing.join(", "));
        }
    }
    Ok(!report.drifted)
}

fn counts_rows(c: &ferroserve_monitoring::drift::window::Counts) -> u64 {
    use ferroserve_monitoring::drift::window::Counts;
    match c {
        Counts::Numeric(n) => n.n + n.nan + n.nulls,
        Counts::Categorical(c) => c.n() + c.nulls,
    }
}

fn micros(flag: &str, t: &str) -> Result<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(t).with_context(|| {
        format!("{flag}: expected an RFC 3339 time such as 2026-12-07T10:00:00Z, got {t:?}")
    })?;
    Ok(at.timestamp_micros() as f64)
}

/// Rows that answered (status 200) within the times asked.
fn rows_kept(table: &Table, from: Option<f64>, to: Option<f64>) -> Vec<bool> {
    let mut keep = vec![true; table.rows];
    if let Some(Column::Scalar(Values::Numeric(status))) = table.column("status") {
        for (k, s) in keep.iter_mut().zip(status) {
            *k &= *s == Some(200.0);
        }
    }
    if from.is_some() || to.is_some() {
        if let Some(Column::Scalar(Values::Numeric(ts))) = table.column("timestamp") {
            for (k, t) in keep.iter_mut().zip(ts) {
                let t = t.unwrap_or(f64::NAN);
                *k &= from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e);
            }
        }
    }
    keep
}

/// The capture's column for a baseline feature: its name, else the
/// capture's `{tensor}_{j}` name (outputs may carry an `output.` prefix).
fn column_of<'a>(table: &'a Table, f: &Feature, side: Side) -> Option<&'a Values> {
    let by_position = format!("{}_{}", f.source.tensor, f.source.column);
    let mut names = vec![f.name.clone(), by_position.clone()];
    if f.source.column == 0 {
        names.push(f.source.tensor.clone());
    }
    if side == Side::Output {
        names.push(format!("output.{}", f.name));
        names.push(format!("output.{by_position}"));
    }
    names.iter().find_map(|n| match table.column(n) {
        Some(Column::Scalar(v)) => Some(v),
        _ => None,
    })
}

fn filtered(values: &Values, keep: &[bool]) -> Values {
    match values {
        Values::Numeric(v) => Values::Numeric(
            v.iter()
                .zip(keep)
                .filter(|(_, &k)| k)
                .map(|(x, _)| *x)
                .collect(),
        ),
        Values::Text(v) => Values::Text(
            v.iter()
                .zip(keep)
                .filter(|(_, &k)| k)
                .map(|(x, _)| x.clone())
                .collect(),
        ),
    }
}

/// Every `*.parquet` under `dir`, skipping the writer's hidden temporaries.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for e in entries {
            let p = e?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn print_summary(model: &str, version: u64, files: usize, r: &Report) {
    println!(
        "{model}:{version}: {} rows from {files} files ({} to {}) against baseline {} ({} rows)",
        r.window.rows,
        r.window.from.as_deref().unwrap_or("?"),
        r.window.to.as_deref().unwrap_or("?"),
        r.baseline.data,
        r.baseline.rows
    );
    let row = |side: &str, f: &FeatureReport| {
        let others: Vec<String> = f
            .scores
            .iter()
            .filter(|s| s.method != f.method)
            .map(|s| format!("{} {:.4}", s.method, s.value))
            .collect();
        vec![
            side.to_string(),
            f.name.clone(),
            f.kind.clone(),
            f.method.to_string(),
            f.score.map_or("-".into(), |s| format!("{s:.4}")),
            format!("{}", f.threshold),
            if f.drifted {
                "DRIFT".into()
            } else {
                "ok".into()
            },
            others.join(", "),
        ]
    };
    let rows: Vec<Vec<String>> = r
        .features
        .iter()
        .map(|f| row("input", f))
        .chain(r.outputs.iter().map(|f| row("output", f)))
        .collect();
    print_table(
        &[
            "side",
            "feature",
            "kind",
            "method",
            "score",
            "threshold",
            "drift",
            "other scores",
        ],
        &rows,
    );
    let drifted = r
        .features
        .iter()
        .chain(&r.outputs)
        .filter(|f| f.drifted)
        .count();
    println!(
        "{drifted} of {} features drifted",
        r.features.len() + r.outputs.len()
    );
}
