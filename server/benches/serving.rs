//! End-to-end serving benchmark: the real `ferroserve` binary over HTTP
//! against references on the same machine, so the figures are ratios that
//! mean something on any hardware.
//!
//! 1. conv: rows/s over HTTP with binary tensors vs ONNX Runtime in-process
//!    at the same batch size and threads — (a) clients send full batches,
//!    (b) clients send single rows and the dynamic batcher builds batches.
//! 2. mlp: requests/s vs a minimal hyper server that only moves the same
//!    bytes — the cost of the serving path on a model that costs nothing.
//! 3. mlp latency at half that peak, open loop (coordinated-omission
//!    corrected), and ferroserve's idle resident memory.
//!
//! It prints a table and, last, one JSON line. It asserts nothing about
//! speed: timings belong in numbers people read, not in pass/fail.
//!
//! `FERROSERVE_BENCH_SECS` sets each measurement's length (default 10 s).

// A bench target's root resolves modules beside itself, so its parts,
// kept in a folder named after it, are pointed at explicitly.
#[path = "serving/cpu.rs"]
mod cpu;
#[path = "serving/inprocess.rs"]
mod inprocess;
#[path = "serving/minimal_server.rs"]
mod minimal_server;
#[path = "serving/model.rs"]
mod model;
#[path = "serving/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferroserve_loadtest::{ClosedLoop, Connection, OpenLoop, Report, RequestSpec, Stop};
use serde_json::json;

use cpu::{CpuMeter, CpuUse};
use model::Bundle;
use process::ServerProcess;

/// Set when the benchmark re-executes itself as a reference server.
const ROLE_ENV: &str = "FERROSERVE_BENCH_ROLE";
const MINIMAL_SERVER_ROLE: &str = "minimal-server";

const CONV_BATCHED_CONCURRENCY: usize = 2;
const CONV_SINGLE_ROW_CONCURRENCY: usize = 64;
const MLP_CONCURRENCY: usize = 32;
const OPEN_LOOP_CONNECTIONS: usize = 64;

const CONV_TARGET: f64 = 0.85;
const MLP_TARGET: f64 = 0.6;

fn main() -> Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok(MINIMAL_SERVER_ROLE) {
        return minimal_server::main();
    }
    // `cargo bench` passes `--bench`; a filter or `--list` has nothing to
    // select here, so arguments are ignored.
    let bench = Bench::new()?;
    bench.run()
}

struct Bench {
    workspace: PathBuf,
    repo: PathBuf,
    measure: Duration,
    warmup: Duration,
    /// The load generator runs on one thread: on a small machine every core
    /// it takes is taken from the server being measured, and one thread is
    /// the least that keeps 64 connections busy.
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn new() -> Result<Bench> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the server crate lives in the workspace")?
            .to_path_buf();
        let secs: f64 = match std::env::var("FERROSERVE_BENCH_SECS") {
            Ok(v) => v
                .parse()
                .context("FERROSERVE_BENCH_SECS is a number of seconds")?,
            Err(_) => 10.0,
        };
        let measure = Duration::from_secs_f64(secs);
        Ok(Bench {
            repo: workspace.join("examples").join("models"),
            workspace,
            measure,
            warmup: (measure / 5).clamp(Duration::from_millis(500), Duration::from_secs(2)),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn run(&self) -> Result<()> {
        let conv = Bundle::read(&self.repo, "conv")?;
        let mlp = Bundle::read(&self.repo, "mlp")?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "ferroserve serving benchmark: {cores} cores, {:.0} s per measurement after {:.1} s warm-up",
            self.measure.as_secs_f64(),
            self.warmup.as_secs_f64()
        );

        let server = self.start_ferroserve()?;
        // Before any request: what the server costs just for holding the models.
        let idle_rss = server.rss_bytes()?;
        println!(
            "\nferroserve pid {} on {}; idle VmRSS {:.1} MiB with all examples loaded",
            server.pid(),
            server.addr,
            mib(idle_rss)
        );

        // (1) conv: serving vs. ONNX Runtime in-process.
        let batch = conv.max_batch_size.max(1);
        heading(&format!(
            "ONNX Runtime in-process: conv, batch {batch}, intra-op threads {}",
            conv.intra_op_threads
        ));
        inprocess::init_runtime(&self.workspace)?;
        let meter = CpuMeter::start(None);
        let ort = inprocess::rows_per_second(&conv, batch, self.warmup, self.measure)?;
        let ort_cpu = meter.stop();
        println!(
            "  {} batches, {:.2} ms per batch: {:.1} rows/s",
            ort.batches, ort.mean_batch_ms, ort.rows_per_second
        );
        println!(
            "  CPU cores used by ONNX Runtime: {}",
            ort_cpu
                .client_cores
                .map_or("?".into(), |c| format!("{c:.2}"))
        );

        heading(&format!(
            "(1a) ferroserve: conv, {batch}-row requests, concurrency {CONV_BATCHED_CONCURRENCY}"
        ));
        let spec = conv.infer_request(batch)?;
        self.check(server.addr, &spec)?;
        let (batched, batched_cpu) = self.closed(&server, CONV_BATCHED_CONCURRENCY, &spec)?;
        let batched_rows = batched.ok_per_second() * batch as f64;
        print_report(&batched, Some(batched_rows), batched_cpu);

        heading(&format!(
            "(1b) ferroserve: conv, 1-row requests, concurrency {CONV_SINGLE_ROW_CONCURRENCY} (dynamic batching)"
        ));
        let spec = conv.infer_request(1)?;
        self.check(server.addr, &spec)?;
        self.warm(server.addr, CONV_SINGLE_ROW_CONCURRENCY, &spec)?;
        let before = self.batch_counters(server.addr, "conv")?;
        let (single, single_cpu) = self.measured(&server, CONV_SINGLE_ROW_CONCURRENCY, &spec)?;
        let after = self.batch_counters(server.addr, "conv")?;
        let single_rows = single.ok_per_second();
        let mean_batch = (after.1 > before.1).then(|| (after.0 - before.0) / (after.1 - before.1));
        print_report(&single, Some(single_rows), single_cpu);
        match mean_batch {
            Some(b) => println!("  mean batch formed by the server: {b:.1} rows"),
            None => println!(
                "  mean batch formed by the server: unknown (no ferroserve_batch_size samples)"
            ),
        }

        // (2) mlp: serving path vs. the bare HTTP stack.
        heading(&format!(
            "(2) ferroserve: mlp, 1-row requests, concurrency {MLP_CONCURRENCY}"
        ));
        let spec = mlp.infer_request(1)?;
        let sample = self.check(server.addr, &spec)?;
        let (mlp_report, mlp_cpu) = self.closed(&server, MLP_CONCURRENCY, &spec)?;
        print_report(&mlp_report, None, mlp_cpu);
        let peak = mlp_report.ok_per_second();

        // (3) latency at half the peak, open loop.
        let rate = (peak / 2.0).max(1.0);
        heading(&format!(
            "(3) ferroserve: mlp, open loop at {rate:.0} req/s (half the peak), pool of {OPEN_LOOP_CONNECTIONS} connections"
        ));
        let open_loop = |duration| {
            OpenLoop::new(
                server.addr,
                rate,
                OPEN_LOOP_CONNECTIONS,
                Stop::Duration(duration),
            )
        };
        self.rt
            .block_on(open_loop(self.warmup).run(std::slice::from_ref(&spec)))?;
        let meter = CpuMeter::start(Some(server.pid()));
        let open = self
            .rt
            .block_on(open_loop(self.measure).run(std::slice::from_ref(&spec)))?;
        let open_cpu = meter.stop();
        print_report(&open, None, open_cpu);
        server.stop(Duration::from_secs(30))?;

        heading(&format!(
            "(2) minimal hyper server: same request, {}-byte answers, concurrency {MLP_CONCURRENCY}",
            sample.body.len()
        ));
        let minimal = self.start_minimal_server(&sample)?;
        self.check(minimal.addr, &spec)?;
        let (minimal_report, minimal_cpu) = self.closed(&minimal, MLP_CONCURRENCY, &spec)?;
        print_report(&minimal_report, None, minimal_cpu);
        minimal.stop(Duration::from_secs(10))?;

        // Summary.
        let conv_a = ratio(batched_rows, ort.rows_per_second);
        let conv_b = ratio(single_rows, ort.rows_per_second);
        let mlp_ratio = ratio(peak, minimal_report.ok_per_second());
        let lat = open.latencies();
        println!("\n{}", "=".repeat(96));
        println!(
            "{:<46} {:>12} {:>12} {:>8} {:>8}",
            "measurement", "ferroserve", "reference", "ratio", "target"
        );
        println!("{}", "-".repeat(96));
        let row = |what: &str, ours: f64, reference: f64, r: f64, target: f64| {
            println!(
                "{what:<46} {ours:>12.1} {reference:>12.1} {r:>8.3} {:>8}",
                format!("{}{target}", if r >= target { ">=" } else { "MISS " })
            );
        };
        row(
            &format!("conv rows/s, {batch}-row reqs, c={CONV_BATCHED_CONCURRENCY} vs ORT b{batch}"),
            batched_rows,
            ort.rows_per_second,
            conv_a,
            CONV_TARGET,
        );
        row(
            &format!("conv rows/s, 1-row reqs, c={CONV_SINGLE_ROW_CONCURRENCY} vs ORT b{batch}"),
            single_rows,
            ort.rows_per_second,
            conv_b,
            CONV_TARGET,
        );
        row(
            &format!("mlp req/s, 1-row reqs, c={MLP_CONCURRENCY} vs minimal hyper"),
            peak,
            minimal_report.ok_per_second(),
            mlp_ratio,
            MLP_TARGET,
        );
        println!("{}", "-".repeat(96));
        if let Some(b) = mean_batch {
            println!("conv mean batch formed from 1-row requests: {b:.1} rows");
        }
        println!(
            "mlp open loop at {rate:.0} req/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} errors)",
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.p999),
            ms(lat.max),
            open.error_count()
        );
        println!("ferroserve idle VmRSS: {:.1} MiB", mib(idle_rss));
        let errors = batched.error_count()
            + single.error_count()
            + mlp_report.error_count()
            + open.error_count();
        if errors > 0 {
            println!("WARNING: {errors} ferroserve requests failed; see the reports above");
        }
        println!("{}", "=".repeat(96));

        let summary = json!({
            "bench": "serving",
            "cores": cores,
            "measure_s": self.measure.as_secs_f64(),
            "idle_rss_bytes": idle_rss,
            "conv_batched": {
                "rows_per_request": batch,
                "concurrency": CONV_BATCHED_CONCURRENCY,
                "ferroserve_rows_per_s": batched_rows,
                "ort_inprocess_rows_per_s": ort.rows_per_second,
                "ort_inprocess_cores": ort_cpu.client_cores,
                "cpu": cpu_json(batched_cpu),
                "ratio": conv_a,
                "target": CONV_TARGET,
                "p50_ms": ms(batched.latencies().p50),
                "p99_ms": ms(batched.latencies().p99),
                "errors": batched.error_count(),
            },
            "conv_single_row": {
                "rows_per_request": 1,
                "concurrency": CONV_SINGLE_ROW_CONCURRENCY,
                "ferroserve_rows_per_s": single_rows,
                "ort_inprocess_rows_per_s": ort.rows_per_second,
                "cpu": cpu_json(single_cpu),
                "ratio": conv_b,
                "target": CONV_TARGET,
                "mean_batch_rows": mean_batch,
                "p50_ms": ms(single.latencies().p50),
                "p99_ms": ms(single.latencies().p99),
                "errors": single.error_count(),
            },
            "mlp_overhead": {
                "concurrency": MLP_CONCURRENCY,
                "ferroserve_req_per_s": peak,
                "minimal_hyper_req_per_s": minimal_report.ok_per_second(),
                "response_bytes": sample.body.len(),
                "cpu": cpu_json(mlp_cpu),
                "minimal_hyper_cpu": cpu_json(minimal_cpu),
                "ratio": mlp_ratio,
                "target": MLP_TARGET,
                "errors": mlp_report.error_count(),
            },
            "mlp_latency": {
                "rate_req_per_s": rate,
                "connections": OPEN_LOOP_CONNECTIONS,
                "p50_ms": ms(lat.p50),
                "p90_ms": ms(lat.p90),
                "p99_ms": ms(lat.p99),
                "p999_ms": ms(lat.p999),
                "max_ms": ms(lat.max),
                "achieved_req_per_s": open.ok_per_second(),
                "cpu": cpu_json(open_cpu),
                "errors": open.error_count(),
            },
        });
        println!("{summary}");
        Ok(())
    }

    fn start_ferroserve(&self) -> Result<ServerProcess> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        cmd.current_dir(&self.workspace)
            .args(["serve", "--repo"])
            .arg(&self.repo)
            .args(["--host", "127.0.0.1", "--http-port", "0"])
            .env("RUST_LOG", "warn,ferroserve=info");
        let server = ServerProcess::start("ferroserve", cmd, Duration::from_secs(120))?;
        let ready = self.rt.block_on(async {
            let mut conn = Connection::connect(server.addr).await?;
            conn.send(&RequestSpec::get("/v2/health/ready")).await
        });
        match ready {
            Ok(a) if a.status.is_success() => Ok(server),
            Ok(a) => bail!("ferroserve is listening but not ready ({})", a.status),
            Err(e) => bail!("ferroserve is listening but did not answer: {e}"),
        }
    }

    fn start_minimal_server(&self, sample: &ferroserve_loadtest::Answer) -> Result<ServerProcess> {
        let header_len = sample
            .headers
            .get("inference-header-content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE_ENV, MINIMAL_SERVER_ROLE)
            .env(
                minimal_server::RESPONSE_BYTES_ENV,
                sample.body.len().to_string(),
            )
            .env(minimal_server::HEADER_LEN_ENV, header_len);
        ServerProcess::start("minimal server", cmd, Duration::from_secs(30))
    }

    /// Sends one request and insists on a 2xx: measuring a server that
    /// answers every request with an error would produce fine-looking,
    /// meaningless figures.
    fn check(&self, addr: SocketAddr, spec: &RequestSpec) -> Result<ferroserve_loadtest::Answer> {
        let answer = self.rt.block_on(async {
            let mut conn = Connection::connect(addr).await?;
            conn.send(spec).await
        })?;
        if !answer.status.is_success() {
            bail!(
                "{} {} answered {}: {}",
                spec.method,
                spec.path,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(answer)
    }

    /// A closed-loop warm-up, then the measured run.
    fn closed(
        &self,
        server: &ServerProcess,
        concurrency: usize,
        spec: &RequestSpec,
    ) -> Result<(Report, CpuUse)> {
        self.warm(server.addr, concurrency, spec)?;
        self.measured(server, concurrency, spec)
    }

    /// Load that is not measured: connections, caches, ONNX Runtime's lazy
    /// allocations and the allocator's pools settle before anything counts.
    fn warm(&self, addr: SocketAddr, concurrency: usize, spec: &RequestSpec) -> Result<Report> {
        Ok(self.rt.block_on(
            ClosedLoop::new(addr, concurrency, Stop::Duration(self.warmup))
                .run(std::slice::from_ref(spec)),
        )?)
    }

    /// The measured closed-loop run, with the CPU both sides used.
    fn measured(
        &self,
        server: &ServerProcess,
        concurrency: usize,
        spec: &RequestSpec,
    ) -> Result<(Report, CpuUse)> {
        let meter = CpuMeter::start(Some(server.pid()));
        let report = self.rt.block_on(
            ClosedLoop::new(server.addr, concurrency, Stop::Duration(self.measure))
                .run(std::slice::from_ref(spec)),
        )?;
        Ok((report, meter.stop()))
    }

    /// (sum, count) of the rows per batch the server ran for `model`.
    fn batch_counters(&self, addr: SocketAddr, model: &str) -> Result<(f64, f64)> {
        let answer = self.check(addr, &RequestSpec::get("/metrics"))?;
        let text = String::from_utf8_lossy(&answer.body);
        Ok((
            model::metric_sum(&text, "ferroserve_batch_size_sum", model).unwrap_or(0.0),
            model::metric_sum(&text, "ferroserve_batch_size_count", model).unwrap_or(0.0),
        ))
    }
}

fn heading(text: &str) {
    println!("\n{text}");
}

fn print_report(report: &Report, rows_per_second: Option<f64>, cpu: CpuUse) {
    for line in report.to_string().lines() {
        println!("  {line}");
    }
    if let Some(rows) = rows_per_second {
        println!("  {rows:.1} rows/s");
    }
    println!("  {cpu}");
}

fn cpu_json(cpu: CpuUse) -> serde_json::Value {
    json!({"load_generator_cores": cpu.client_cores, "server_cores": cpu.server_cores})
}

fn ratio(ours: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        ours / reference
    } else {
        0.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
