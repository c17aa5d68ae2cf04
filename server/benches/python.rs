//! Python entry-script benchmark: the real `ferroserve` binary serving the
//! python example bundles over HTTP, against the same scripts' `run()`
//! called in a plain Python loop on the same machine, so the figures are
//! ratios that mean something on any hardware.
//!
//! The reference is fair to the server's layout: a bundle with
//! `[instances] count = N` is served by N worker processes, so the
//! reference runs N Python processes in parallel (same interpreter, same
//! `AZUREML_MODEL_DIR`, `init()` called once), each looping `run()` on one
//! prepared batch, and reports their total rate.
//!
//! 1. text_stats (tensor style), rows/s, target ferroserve / reference ≥ 0.8:
//!    - (a) clients send 1-row requests (binary tensors), concurrency 64,
//!      and the dynamic batcher builds batches; the reference calls `run()`
//!      at the mean batch size the server formed (its own `/metrics`);
//!    - (b) clients send full batches (`max_batch_size` rows), concurrency
//!      2 × instances; the reference calls `run()` at that batch size.
//! 2. iris (raw style), requests/s: `POST /v2/models/iris/score` with the
//!    bundle's `sample.json`, concurrency 32, against `run(body)` calls/s
//!    (no target).
//!
//! It prints a table and, last, one JSON line. It asserts nothing about
//! speed. `FERROSERVE_BENCH_SECS` sets each measurement's length (default
//! 10 s); `FERROSERVE_PYTHON` the interpreter (default the workspace's
//! `.venv/bin/python`), used by the server and the reference alike.

// A bench target's root resolves modules beside itself, so the parts it
// shares with the serving benchmark, and its own, are pointed at explicitly.
#[path = "python/bundle.rs"]
mod bundle;
#[path = "serving/cpu.rs"]
mod cpu;
// Only part of the serving benchmark's helpers is used here.
#[allow(dead_code)]
#[path = "serving/process.rs"]
mod process;
#[path = "python/reference.rs"]
mod reference;
#[path = "serving/server_stats.rs"]
mod server_stats;
#[path = "serving/settings.rs"]
mod settings;
use settings::{heading, ratio, show};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use ferroserve_loadtest::{ClosedLoop, Report, RequestSpec, Stop};
use serde_json::json;

use bundle::{PyBundle, Style};
use cpu::{CpuMeter, CpuUse};
use process::{Listener, ServerProcess};
use reference::{Outcome, Payload};
use server_stats::{Snapshot, Window};
use settings::ms;

const TENSOR_MODEL: &str = "text_stats";
const RAW_MODEL: &str = "iris";
/// A tensor-style script whose run() costs milliseconds (examples/bundles/numpy-mlp).
const HEAVY_MODEL: &str = "numpy_mlp";
/// numpy's BLAS on one thread in every process, server workers and
/// reference alike: the comparison is of the serving path, not of how two
/// BLAS thread pools fight over two cores.
const BLAS_THREADS: [(&str, &str); 3] = [
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
];

const SINGLE_ROW_CONCURRENCY: usize = 64;
/// Full-batch clients per worker process.
const FULL_BATCH_CLIENTS_PER_INSTANCE: usize = 2;
const RAW_CONCURRENCY: usize = 32;

const TENSOR_TARGET: f64 = 0.8;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it and only learns how to start the real one.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "python benchmark skipped: run it with `cargo bench -p ferroserve --bench python`"
        );
        return Ok(());
    }
    Bench::new()?.run()
}

struct Bench {
    workspace: PathBuf,
    /// text_stats and iris from examples/models, numpy_mlp from
    /// examples/bundles: the repository the server serves.
    repo: PathBuf,
    _repo_dir: tempfile::TempDir,
    python: PathBuf,
    measure: Duration,
    warmup: Duration,
    /// The load generator runs on one thread (see the serving benchmark).
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn new() -> Result<Bench> {
        let workspace = settings::workspace()?;
        let (measure, warmup) = settings::measure_and_warmup()?;
        let python = settings::python(&workspace, "scripts/bench-python.sh")?;
        let repo_dir = tempfile::tempdir()?;
        let examples = workspace.join("examples");
        for (from, name) in [
            (
                examples.join("models").join(TENSOR_MODEL).join("1"),
                TENSOR_MODEL,
            ),
            (examples.join("models").join(RAW_MODEL).join("1"), RAW_MODEL),
            (examples.join("bundles").join("numpy-mlp"), HEAVY_MODEL),
        ] {
            let to = repo_dir.path().join(name).join("1");
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(&from)
                .with_context(|| format!("{}: run examples/generate.py", from.display()))?
            {
                let entry = entry?;
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(Bench {
            repo: repo_dir.path().to_path_buf(),
            _repo_dir: repo_dir,
            workspace,
            python,
            measure,
            warmup,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn run(&self) -> Result<()> {
        let text = PyBundle::read(&self.repo, TENSOR_MODEL)?;
        let iris = PyBundle::read(&self.repo, RAW_MODEL)?;
        if text.style != Style::Tensor || iris.style != Style::Raw {
            bail!("{TENSOR_MODEL} must be a tensor-style and {RAW_MODEL} a raw-style entry script");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "ferroserve python benchmark: {cores} cores, {:.0} s per measurement after {:.1} s warm-up",
            self.measure.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        println!("interpreter: {}", self.python.display());
        println!(
            "reference: the script's run() in a plain Python loop on one prepared batch, in as many \
             processes in parallel as the bundle's [instances] count (the server's worker \
             processes), started together; its rate is the total over them"
        );

        let server = self.start_ferroserve()?;
        println!(
            "\nferroserve pid {} on {} (serving {TENSOR_MODEL}, {RAW_MODEL} and {HEAVY_MODEL})",
            server.pid(),
            server.addr
        );

        // (1a) text_stats, 1-row requests, dynamic batching.
        heading(&format!(
            "(1a) ferroserve: {TENSOR_MODEL}, 1-row requests, concurrency {SINGLE_ROW_CONCURRENCY} \
             (dynamic batching, max_batch_size {}, {} workers)",
            text.max_batch_size, text.instances
        ));
        let spec = text.infer_request(1)?;
        self.check(server.addr, &spec)?;
        let single = self.closed(&server, TENSOR_MODEL, SINGLE_ROW_CONCURRENCY, &spec)?;
        single.print();
        let mean_batch = single.server.and_then(|w| w.mean_batch_rows);
        let single_batch = match mean_batch {
            Some(b) => (b.round() as usize).clamp(1, text.max_batch_size),
            None => {
                println!("  the server exported no batch sizes: the reference uses batch 1");
                1
            }
        };
        let single_ref = self.reference(&text, Payload::Tensor { rows: single_batch })?;

        // (1b) text_stats, full batches from the clients.
        let full_rows = text.max_batch_size;
        let full_concurrency = FULL_BATCH_CLIENTS_PER_INSTANCE * text.instances;
        heading(&format!(
            "(1b) ferroserve: {TENSOR_MODEL}, {full_rows}-row requests, concurrency {full_concurrency}"
        ));
        let spec = text.infer_request(full_rows)?;
        self.check(server.addr, &spec)?;
        let full = self.closed(&server, TENSOR_MODEL, full_concurrency, &spec)?;
        full.print();
        println!("  {:.1} rows/s", full.rows_per_second(full_rows));
        let full_ref = self.reference(&text, Payload::Tensor { rows: full_rows })?;

        // (1c) numpy_mlp: a run() that costs milliseconds, 1-row requests.
        let heavy = PyBundle::read(&self.repo, HEAVY_MODEL)?;
        heading(&format!(
            "(1c) ferroserve: {HEAVY_MODEL}, 1-row requests, concurrency {SINGLE_ROW_CONCURRENCY} \
             (dynamic batching, max_batch_size {}, {} workers)",
            heavy.max_batch_size, heavy.instances
        ));
        let spec = heavy.infer_request(1)?;
        self.check(server.addr, &spec)?;
        let heavy_run = self.closed(&server, HEAVY_MODEL, SINGLE_ROW_CONCURRENCY, &spec)?;
        heavy_run.print();
        let heavy_batch = heavy_run
            .server
            .and_then(|w| w.mean_batch_rows)
            .map_or(1, |b| (b.round() as usize).clamp(1, heavy.max_batch_size));
        let heavy_ref = self.reference(&heavy, Payload::Tensor { rows: heavy_batch })?;

        // (1d) numpy_mlp, full batches from the clients.
        let heavy_full_rows = heavy.max_batch_size;
        let heavy_full_concurrency = FULL_BATCH_CLIENTS_PER_INSTANCE * heavy.instances;
        heading(&format!(
            "(1d) ferroserve: {HEAVY_MODEL}, {heavy_full_rows}-row requests, concurrency {heavy_full_concurrency}"
        ));
        let spec = heavy.infer_request(heavy_full_rows)?;
        self.check(server.addr, &spec)?;
        let heavy_full = self.closed(&server, HEAVY_MODEL, heavy_full_concurrency, &spec)?;
        heavy_full.print();
        let heavy_full_ref = self.reference(
            &heavy,
            Payload::Tensor {
                rows: heavy_full_rows,
            },
        )?;

        // (2) iris, raw style.
        let sample_file = iris.dir.join("sample.json");
        let body = Bytes::from(
            std::fs::read(&sample_file)
                .with_context(|| format!("reading {}", sample_file.display()))?,
        );
        heading(&format!(
            "(2) ferroserve: {RAW_MODEL}, POST /v2/models/{RAW_MODEL}/score with sample.json \
             ({} bytes), concurrency {RAW_CONCURRENCY} ({} workers)",
            body.len(),
            iris.instances
        ));
        let spec = iris.score_request(body.clone())?;
        let answer = self.check(server.addr, &spec)?;
        println!("  answer: {}", String::from_utf8_lossy(&answer.body));
        let raw = self.closed(&server, RAW_MODEL, RAW_CONCURRENCY, &spec)?;
        raw.print();
        let raw_ref = self.reference(&iris, Payload::Raw { body })?;
        server.stop(Duration::from_secs(30))?;

        // Summary.
        let single_rows = single.rows_per_second(1);
        let single_ref_rows = single_ref.calls_per_second * single_batch as f64;
        let full_rows_s = full.rows_per_second(full_rows);
        let full_ref_rows = full_ref.calls_per_second * full_rows as f64;
        let raw_req = raw.report.ok_per_second();
        let single_ratio = ratio(single_rows, single_ref_rows);
        let full_ratio = ratio(full_rows_s, full_ref_rows);
        let raw_ratio = ratio(raw_req, raw_ref.calls_per_second);
        let heavy_rows = heavy_run.rows_per_second(1);
        let heavy_ref_rows = heavy_ref.calls_per_second * heavy_batch as f64;
        let heavy_ratio = ratio(heavy_rows, heavy_ref_rows);
        let heavy_full_rows_s = heavy_full.rows_per_second(heavy_full_rows);
        let heavy_full_ref_rows = heavy_full_ref.calls_per_second * heavy_full_rows as f64;
        let heavy_full_ratio = ratio(heavy_full_rows_s, heavy_full_ref_rows);

        let rule = |c: &str| println!("{}", c.repeat(108));
        println!();
        rule("=");
        println!(
            "{:<54} {:>12} {:>12} {:>8} {:>8}",
            "measurement", "ferroserve", "reference", "ratio", "target"
        );
        rule("-");
        let row = |what: &str, ours: f64, reference: f64, r: f64, target: Option<f64>| {
            let target = match target {
                Some(t) if r >= t => format!(">={t}"),
                Some(t) => format!("MISS {t}"),
                None => "-".to_string(),
            };
            println!("{what:<54} {ours:>12.1} {reference:>12.1} {r:>8.3} {target:>8}");
        };
        row(
            &format!(
                "{TENSOR_MODEL} rows/s, 1-row reqs c={SINGLE_ROW_CONCURRENCY} / run() batch {single_batch} x{}",
                single_ref.processes
            ),
            single_rows,
            single_ref_rows,
            single_ratio,
            Some(TENSOR_TARGET),
        );
        row(
            &format!(
                "{TENSOR_MODEL} rows/s, {full_rows}-row reqs c={full_concurrency} / run() batch {full_rows} x{}",
                full_ref.processes
            ),
            full_rows_s,
            full_ref_rows,
            full_ratio,
            Some(TENSOR_TARGET),
        );
        row(
            &format!(
                "{HEAVY_MODEL} rows/s, 1-row reqs c={SINGLE_ROW_CONCURRENCY} / run() batch {heavy_batch} x{}",
                heavy_ref.processes
            ),
            heavy_rows,
            heavy_ref_rows,
            heavy_ratio,
            Some(TENSOR_TARGET),
        );
        row(
            &format!(
                "{HEAVY_MODEL} rows/s, {heavy_full_rows}-row reqs c={heavy_full_concurrency} / run() batch {heavy_full_rows} x{}",
                heavy_full_ref.processes
            ),
            heavy_full_rows_s,
            heavy_full_ref_rows,
            heavy_full_ratio,
            Some(TENSOR_TARGET),
        );
        row(
            &format!(
                "{RAW_MODEL} req/s, /score c={RAW_CONCURRENCY} / run(body) calls/s x{}",
                raw_ref.processes
            ),
            raw_req,
            raw_ref.calls_per_second,
            raw_ratio,
            None,
        );
        rule("-");
        println!(
            "{:<44} {:>9} {:>9} {:>10} {:>12} {:>11} {:>6}",
            "ferroserve latency and batching",
            "p50 ms",
            "p99 ms",
            "mean batch",
            "ms per batch",
            "ref ms/call",
            "errors"
        );
        for (what, m, r) in [
            (
                format!("{TENSOR_MODEL} 1-row reqs c={SINGLE_ROW_CONCURRENCY}"),
                &single,
                &single_ref,
            ),
            (
                format!("{TENSOR_MODEL} {full_rows}-row reqs c={full_concurrency}"),
                &full,
                &full_ref,
            ),
            (
                format!("{HEAVY_MODEL} 1-row reqs c={SINGLE_ROW_CONCURRENCY}"),
                &heavy_run,
                &heavy_ref,
            ),
            (
                format!("{HEAVY_MODEL} {heavy_full_rows}-row reqs c={heavy_full_concurrency}"),
                &heavy_full,
                &heavy_full_ref,
            ),
            (
                format!("{RAW_MODEL} /score c={RAW_CONCURRENCY}"),
                &raw,
                &raw_ref,
            ),
        ] {
            let l = m.report.latencies();
            let w = m.server.unwrap_or_default();
            println!(
                "{what:<44} {:>9.3} {:>9.3} {:>10} {:>12} {:>11.4} {:>6}",
                ms(l.p50),
                ms(l.p99),
                w.mean_batch_rows
                    .map_or("?".to_string(), |b| format!("{b:.1}")),
                w.mean_compute_ms
                    .map_or("?".to_string(), |c| format!("{c:.4}")),
                r.ms_per_call(),
                m.report.error_count()
            );
        }
        println!(
            "(ms per batch: the server's compute time per batch, the worker round trip included; \
             ref ms/call: one bare run() call in the reference)"
        );
        let errors: u64 = [&single, &full, &heavy_run, &heavy_full, &raw]
            .iter()
            .map(|m| m.report.error_count())
            .sum();
        if errors > 0 {
            println!("WARNING: {errors} ferroserve requests failed; see the reports above");
        }
        rule("=");

        let summary = json!({
            "bench": "python",
            "cores": cores,
            "measure_s": self.measure.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "python": self.python,
            "tensor_heavy_single_row": {
                "model": HEAVY_MODEL,
                "concurrency": SINGLE_ROW_CONCURRENCY,
                "reference_batch": heavy_batch,
                "ferroserve_rows_per_s": heavy_rows,
                "reference_rows_per_s": heavy_ref_rows,
                "ratio": heavy_ratio,
                "target": TENSOR_TARGET,
            },
            "tensor_heavy_full_batch": {
                "model": HEAVY_MODEL,
                "rows_per_request": heavy_full_rows,
                "concurrency": heavy_full_concurrency,
                "ferroserve_rows_per_s": heavy_full_rows_s,
                "reference_rows_per_s": heavy_full_ref_rows,
                "ratio": heavy_full_ratio,
                "target": TENSOR_TARGET,
            },
            "tensor_single_row": {
                "model": TENSOR_MODEL,
                "rows_per_request": 1,
                "concurrency": SINGLE_ROW_CONCURRENCY,
                "mean_batch_rows": mean_batch,
                "reference_batch": single_batch,
                "ferroserve_rows_per_s": single_rows,
                "reference_rows_per_s": single_ref_rows,
                "ratio": single_ratio,
                "target": TENSOR_TARGET,
                "run": single.json(),
                "reference": single_ref.json(single_batch),
            },
            "tensor_full_batch": {
                "model": TENSOR_MODEL,
                "rows_per_request": full_rows,
                "concurrency": full_concurrency,
                "reference_batch": full_rows,
                "ferroserve_rows_per_s": full_rows_s,
                "reference_rows_per_s": full_ref_rows,
                "ratio": full_ratio,
                "target": TENSOR_TARGET,
                "run": full.json(),
                "reference": full_ref.json(full_rows),
            },
            "raw": {
                "model": RAW_MODEL,
                "concurrency": RAW_CONCURRENCY,
                "ferroserve_req_per_s": raw_req,
                "reference_calls_per_s": raw_ref.calls_per_second,
                "ratio": raw_ratio,
                "run": raw.json(),
                "reference": raw_ref.json(1),
            },
            "errors": errors,
        });
        println!("{summary}");
        Ok(())
    }

    /// The Python reference for `bundle`, in `instances` processes, printed.
    fn reference(&self, bundle: &PyBundle, payload: Payload) -> Result<Outcome> {
        let what = match &payload {
            Payload::Tensor { rows } => format!("run() on a {rows}-row batch"),
            Payload::Raw { body } => format!("run() on the {}-byte body", body.len()),
        };
        heading(&format!(
            "reference: {}, {what} in a plain Python loop, {} processes in parallel",
            bundle.name, bundle.instances
        ));
        let outcome = reference::run(
            &self.python,
            bundle,
            &payload,
            bundle.instances,
            self.warmup,
            self.measure,
        )?;
        let per: Vec<String> = outcome
            .per_process
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect();
        let rows = match payload {
            Payload::Tensor { rows } => rows,
            Payload::Raw { .. } => 1,
        };
        print!(
            "  {} calls: {:.1} calls/s in total (per process: {})",
            outcome.calls,
            outcome.calls_per_second,
            per.join(", ")
        );
        if rows > 1 {
            print!(", {:.1} rows/s", outcome.calls_per_second * rows as f64);
        }
        println!();
        println!(
            "  CPU cores used by the reference processes (and anything else): {}",
            show(outcome.cpu.other_cores)
        );
        Ok(outcome)
    }

    /// A closed-loop warm-up, then the measured run with the CPU used and
    /// the server's own counters over the measured run.
    fn closed(
        &self,
        server: &ServerProcess,
        model: &str,
        concurrency: usize,
        spec: &RequestSpec,
    ) -> Result<Measured> {
        let specs = std::slice::from_ref(spec);
        let run = |length| ClosedLoop::new(server.addr, concurrency, Stop::Duration(length));
        self.rt.block_on(run(self.warmup).run(specs))?;
        let before = self.server_stats(server.addr, model)?;
        let meter = CpuMeter::start(Some(server.pid()));
        let workers = WorkerCpu::start(server.pid());
        let report = self.rt.block_on(run(self.measure).run(specs))?;
        let worker_cores = workers.stop();
        let cpu = meter.stop();
        let window = self.server_stats(server.addr, model)?.since(&before);
        Ok(Measured {
            report,
            cpu,
            worker_cores,
            server: Some(window),
        })
    }

    fn server_stats(&self, addr: SocketAddr, model: &str) -> Result<Snapshot> {
        let answer = self.check(addr, &RequestSpec::get("/metrics"))?;
        Ok(Snapshot::parse(
            &String::from_utf8_lossy(&answer.body),
            model,
        ))
    }

    fn start_ferroserve(&self) -> Result<ServerProcess> {
        let mut cmd = settings::serve_command(&self.workspace, &self.repo);
        cmd.arg("--python").arg(&self.python).envs(BLAS_THREADS);
        let server = ServerProcess::start(
            "ferroserve",
            cmd,
            &[Listener::Http],
            Duration::from_secs(180),
        )?;
        for model in [TENSOR_MODEL, RAW_MODEL] {
            self.check(
                server.addr,
                &RequestSpec::get(format!("/v2/models/{model}/ready")),
            )
            .with_context(|| format!("ferroserve is listening but {model} is not ready"))?;
        }
        Ok(server)
    }

    fn check(&self, addr: SocketAddr, spec: &RequestSpec) -> Result<ferroserve_loadtest::Answer> {
        process::check(&self.rt, addr, spec)
    }
}

/// One measured run: what the clients saw, the CPU used and what the
/// server's own counters say about the same window.
struct Measured {
    report: Report,
    cpu: CpuUse,
    /// Cores used by the server's child processes (its Python workers),
    /// which the server's own figure does not include.
    worker_cores: Option<f64>,
    server: Option<Window>,
}

impl Measured {
    fn rows_per_second(&self, rows_per_request: usize) -> f64 {
        self.report.ok_per_second() * rows_per_request as f64
    }

    fn print(&self) {
        for line in self.report.to_string().lines() {
            println!("  {line}");
        }
        println!(
            "  {}; of the other processes, ferroserve's Python workers {}",
            self.cpu,
            show(self.worker_cores)
        );
        if let Some(window) = &self.server {
            println!("  {window}");
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut m = settings::run_json(&self.report, &self.cpu);
        m.insert("worker_cores".into(), json!(self.worker_cores));
        m.insert(
            "server".into(),
            self.server.map_or(json!(null), |w| w.json()),
        );
        serde_json::Value::Object(m)
    }
}

impl Outcome {
    /// The mean time of one `run()` call in one process.
    fn ms_per_call(&self) -> f64 {
        if self.calls_per_second > 0.0 {
            self.processes as f64 / self.calls_per_second * 1e3
        } else {
            0.0
        }
    }

    fn json(&self, rows_per_call: usize) -> serde_json::Value {
        json!({
            "processes": self.processes,
            "rows_per_call": rows_per_call,
            "calls": self.calls,
            "calls_per_s": self.calls_per_second,
            "rows_per_s": self.calls_per_second * rows_per_call as f64,
            "per_process_calls_per_s": self.per_process,
            "ms_per_call": self.ms_per_call(),
            "cores": self.cpu.other_cores,
        })
    }
}

/// CPU time of a process's direct children (ferroserve's Python workers),
/// which `/proc/PID/stat` of the parent does not count until they exit.
struct WorkerCpu {
    parent: u32,
    wall: Instant,
    before: HashMap<u32, f64>,
}

impl WorkerCpu {
    fn start(parent: u32) -> WorkerCpu {
        WorkerCpu {
            parent,
            wall: Instant::now(),
            before: children_cpu(parent),
        }
    }

    /// Average cores used since `start`; a worker started meanwhile counts
    /// from zero, one that exited meanwhile is lost.
    fn stop(self) -> Option<f64> {
        let wall = self.wall.elapsed().as_secs_f64();
        let after = children_cpu(self.parent);
        if after.is_empty() || wall <= 0.0 {
            return None;
        }
        let used: f64 = after
            .iter()
            .map(|(pid, cpu)| cpu - self.before.get(pid).copied().unwrap_or(0.0))
            .sum();
        Some(used.max(0.0) / wall)
    }
}

fn children_cpu(parent: u32) -> HashMap<u32, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .filter_map(|pid| Some((pid, cpu::process_cpu_seconds(pid)?)))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, then the parent's pid.
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}
