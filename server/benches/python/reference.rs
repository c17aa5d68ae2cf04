//! The reference for the python backend: the same entry script's `run()`
//! called in a plain Python loop (`reference.py`), in as many processes in
//! parallel as the server runs workers, on one prepared batch or body.
//! Whatever ferroserve loses against it is serving overhead: HTTP, queueing,
//! batching, the framed protocol to the worker and the copies.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;

use crate::bundle::{PyBundle, Style};
use crate::cpu::{CpuMeter, CpuUse};

const SCRIPT: &str = include_str!("reference.py");

/// What each `run()` call gets.
pub enum Payload {
    /// A batch of `rows` rows of the bundle's inputs (the bytes the server
    /// is sent, from [`PyBundle::input_data`]).
    Tensor { rows: usize },
    /// One request body.
    Raw { body: Bytes },
}

pub struct Outcome {
    pub processes: usize,
    /// `run()` calls per second of each process over its measured window.
    pub per_process: Vec<f64>,
    /// The sum over the processes.
    pub calls_per_second: f64,
    pub calls: u64,
    /// CPU used meanwhile; the reference processes are "other processes".
    pub cpu: CpuUse,
}

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn read_line(&mut self, what: &str) -> Result<String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line)?;
        if n == 0 {
            let status = self.child.wait().ok();
            let stderr = self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            bail!("the Python reference exited ({status:?}) before {what}; its stderr:\n{stderr}");
        }
        Ok(line.trim().to_string())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `processes` reference loops in parallel, started together, each for
/// `warmup` unmeasured and then `measure` measured.
pub fn run(
    python: &Path,
    bundle: &PyBundle,
    payload: &Payload,
    processes: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Outcome> {
    let files = tempfile::Builder::new()
        .prefix("ferroserve-python-bench")
        .tempdir()?;
    let mut config = json!({
        "script": bundle.script,
        "warmup_s": warmup.as_secs_f64(),
        "measure_s": measure.as_secs_f64(),
    });
    match (payload, bundle.style) {
        (Payload::Tensor { rows }, Style::Tensor) => {
            let mut inputs = Vec::new();
            for (i, input) in bundle.inputs.iter().enumerate() {
                let file = files.path().join(format!("input{i}.bin"));
                std::fs::write(&file, bundle.input_data(i, *rows))?;
                inputs.push(json!({
                    "name": input.name,
                    "dtype": "<f4",
                    "shape": bundle.shape(i, *rows),
                    "file": file,
                }));
            }
            config["style"] = json!("tensor");
            config["inputs"] = json!(inputs);
        }
        (Payload::Raw { body }, Style::Raw) => {
            let file = files.path().join("body.json");
            std::fs::write(&file, body)?;
            config["style"] = json!("raw");
            config["body"] = json!(file);
        }
        _ => bail!(
            "{}: the payload does not match the script's style",
            bundle.name
        ),
    }
    let config = config.to_string();

    let mut running = Vec::with_capacity(processes);
    for _ in 0..processes {
        // The environment the server's worker harness gives a script.
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&config)
            .current_dir(&bundle.dir)
            .env("AZUREML_MODEL_DIR", &bundle.dir)
            .env("FERROSERVE_MODEL_DIR", &bundle.dir)
            .envs(super::BLAS_THREADS)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the Python reference with {}", python.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        running.push(Running {
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
        });
    }
    for r in &mut running {
        let line = r.read_line("it was ready")?;
        if line != "ready" {
            bail!("the Python reference said {line:?} instead of \"ready\"");
        }
    }
    let meter = CpuMeter::start(None);
    for r in &mut running {
        let mut stdin = r.stdin.take().context("stdin is piped")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    let mut per_process = Vec::with_capacity(processes);
    let mut calls = 0;
    for r in &mut running {
        let line = r.read_line("it reported")?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the Python reference reported {line:?}"))?;
        let n = v["calls"].as_u64().context("calls")?;
        let seconds = v["seconds"].as_f64().context("seconds")?;
        calls += n;
        per_process.push(if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        });
    }
    let cpu = meter.stop();
    Ok(Outcome {
        processes,
        calls_per_second: per_process.iter().sum(),
        per_process,
        calls,
        cpu,
    })
}
