//! What every benchmark target reads and writes the same way: the
//! workspace, how long to measure, and one run's figures as JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ferroserve_loadtest::Report;
use serde_json::{json, Map, Value};

use crate::cpu::CpuUse;

/// `ferroserve serve` of `repo` on ephemeral loopback ports, run from the
/// workspace; callers add their own flags and environment.
pub fn serve_command(workspace: &Path, repo: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    cmd.current_dir(workspace)
        .args(["serve", "--repo"])
        .arg(repo)
        .args([
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .env("RUST_LOG", "warn,ferroserve=info");
    cmd
}

/// `FERROSERVE_PYTHON`, else the workspace's `.venv/bin/python`; `script`
/// is the bench script that creates the environment, for the message.
#[allow(dead_code)] // not every benchmark runs Python
pub fn python(workspace: &Path, script: &str) -> Result<PathBuf> {
    let python = match std::env::var_os("FERROSERVE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace.join(".venv").join("bin").join("python"),
    };
    if !python.exists() {
        anyhow::bail!(
            "{} is missing: create the environment with scripts/setup-env.sh \
             ({script} does) or set FERROSERVE_PYTHON",
            python.display()
        );
    }
    Ok(python)
}

/// The `bundle.toml` of the newest version of `repo/name`, parsed, with
/// that version's folder.
pub fn newest_bundle_toml(repo: &Path, name: &str) -> Result<(PathBuf, toml::Value)> {
    let model_dir = repo.join(name);
    let entries = std::fs::read_dir(&model_dir).with_context(|| {
        format!(
            "{} is missing: generate the examples with `.venv/bin/python examples/generate.py` \
             (the scripts/bench*.sh scripts do)",
            model_dir.display()
        )
    })?;
    let dir = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, e.path())))
        .filter(|(_, p)| p.join("bundle.toml").is_file())
        .max()
        .map(|(_, p)| p)
        .with_context(|| {
            format!(
                "{} has no version folder with a bundle.toml",
                model_dir.display()
            )
        })?;
    let file = dir.join("bundle.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let doc = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok((dir, doc))
}

pub fn workspace() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the server crate lives in the workspace")?
        .to_path_buf())
}

/// `FERROSERVE_BENCH_SECS` (default 10 s) and the warm-up that goes with
/// it: a fifth of it, between 0.5 and 2 s.
pub fn measure_and_warmup() -> Result<(Duration, Duration)> {
    let secs: f64 = match std::env::var("FERROSERVE_BENCH_SECS") {
        Ok(v) => v
            .parse()
            .context("FERROSERVE_BENCH_SECS is a number of seconds")?,
        Err(_) => 10.0,
    };
    let measure = Duration::from_secs_f64(secs);
    let warmup = (measure / 5).clamp(Duration::from_millis(500), Duration::from_secs(2));
    Ok((measure, warmup))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A run's counts, latencies and CPU split; each benchmark adds its own
/// fields to it.
pub fn run_json(r: &Report, cpu: &CpuUse) -> Map<String, Value> {
    let l = r.latencies();
    let errors: Map<String, Value> = r
        .errors
        .iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    let Value::Object(map) = json!({
        "requests": r.requests,
        "ok": r.ok,
        "errors": errors,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "ok_per_s": r.ok_per_second(),
        "latency_ms": {
            "p50": ms(l.p50),
            "p90": ms(l.p90),
            "p99": ms(l.p99),
            "p999": ms(l.p999),
            "max": ms(l.max),
        },
        "load_generator_cores": cpu.client_cores,
        "server_cores": cpu.server_cores,
        "other_cores": cpu.other_cores,
        "steal_cores": cpu.steal_cores,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

/// A section of a benchmark's printout.
pub fn heading(text: &str) {
    println!("\n{text}");
}

/// ours / reference, 0 where the reference measured nothing.
pub fn ratio(ours: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        ours / reference
    } else {
        0.0
    }
}

/// A CPU figure that may be missing (`?`).
#[allow(dead_code)] // not every benchmark measures per-process CPU
pub fn show(c: Option<f64>) -> String {
    c.map_or("?".to_string(), |c| format!("{c:.2}"))
}
