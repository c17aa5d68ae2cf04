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
//! 4. gRPC against HTTP binary: the closed-loop loads of 1a, 1b and 2 again
//!    over gRPC (`raw_input_contents`, one HTTP/2 connection per caller),
//!    each right after its HTTP twin on the same server: rows/s and p99 of
//!    both protocols side by side.
//!
//! It prints a table and, last, one JSON line. It asserts nothing about
//! speed: timings belong in numbers people read, not in pass/fail.
//!
//! `FERROSERVE_BENCH_SECS` sets each measurement's length (default 10 s).

// A bench target's root resolves modules beside itself, so its parts,
// kept in a folder named after it, are pointed at explicitly.
#[path = "serving/cpu.rs"]
mod cpu;
#[path = "serving/grpc_load.rs"]
mod grpc_load;
#[path = "serving/inprocess.rs"]
mod inprocess;
#[path = "serving/minimal_server.rs"]
mod minimal_server;
#[path = "serving/model.rs"]
mod model;
#[path = "serving/process.rs"]
mod process;
#[path = "serving/server_stats.rs"]
mod server_stats;
#[path = "serving/settings.rs"]
mod settings;
use settings::{heading, ratio};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferroserve_loadtest::{ClosedLoop, Connection, OpenLoop, Report, RequestSpec, Stop};
use serde_json::json;

use cpu::{CpuMeter, CpuUse};
use grpc_load::GrpcInfer;
use model::Bundle;
use process::{Listener, ServerProcess};
use server_stats::{Snapshot, Window};
use settings::ms;

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
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it, and a minute of load on every test run helps no
    // one, so that run only says how to start the real one. Filters have
    // nothing to select here and are ignored.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "serving benchmark skipped: run it with `cargo bench -p ferroserve --bench serving`"
        );
        return Ok(());
    }
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
        let workspace = settings::workspace()?;
        let (measure, warmup) = settings::measure_and_warmup()?;
        Ok(Bench {
            repo: workspace.join("examples").join("models"),
            workspace,
            measure,
            warmup,
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
        let show = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.2}"));
        println!(
            "  {} batches, {:.3} ms per batch: {:.1} rows/s",
            ort.batches, ort.mean_batch_ms, ort.rows_per_second
        );
        println!(
            "  CPU cores used: ONNX Runtime (this process) {}, other processes {}",
            show(ort_cpu.client_cores),
            show(ort_cpu.other_cores)
        );

        heading(&format!(
            "(1a) ferroserve: conv, {batch}-row requests, concurrency {CONV_BATCHED_CONCURRENCY}"
        ));
        let spec = conv.infer_request(batch)?;
        self.check(server.addr, &spec)?;
        let batched = self.closed(&server, Some("conv"), CONV_BATCHED_CONCURRENCY, &spec)?;
        batched.print(batch);
        let batched_grpc = self.grpc_twin(&server, &conv, batch, CONV_BATCHED_CONCURRENCY, "1a")?;

        heading(&format!(
            "(1b) ferroserve: conv, 1-row requests, concurrency {CONV_SINGLE_ROW_CONCURRENCY} (dynamic batching)"
        ));
        let spec = conv.infer_request(1)?;
        self.check(server.addr, &spec)?;
        let single = self.closed(&server, Some("conv"), CONV_SINGLE_ROW_CONCURRENCY, &spec)?;
        single.print(1);
        let single_grpc = self.grpc_twin(&server, &conv, 1, CONV_SINGLE_ROW_CONCURRENCY, "1b")?;

        // (2) mlp: the serving path vs. the bare HTTP stack.
        heading(&format!(
            "(2) ferroserve: mlp, 1-row requests, concurrency {MLP_CONCURRENCY}"
        ));
        let spec = mlp.infer_request(1)?;
        let sample = self.check(server.addr, &spec)?;
        let mlp_peak = self.closed(&server, Some("mlp"), MLP_CONCURRENCY, &spec)?;
        mlp_peak.print(1);
        let mlp_grpc = self.grpc_twin(&server, &mlp, 1, MLP_CONCURRENCY, "2")?;

        // (3) latency at half the peak, open loop.
        let rate = (mlp_peak.report.ok_per_second() / 2.0).max(1.0);
        heading(&format!(
            "(3) ferroserve: mlp, open loop at {rate:.0} req/s (half the peak), pool of {OPEN_LOOP_CONNECTIONS} connections"
        ));
        let open = self.open(&server, "mlp", rate, &spec)?;
        open.print(1);
        server.stop(Duration::from_secs(30))?;

        heading(&format!(
            "(2) minimal hyper server: same request, {}-byte answers, concurrency {MLP_CONCURRENCY}",
            sample.body.len()
        ));
        let minimal_server = self.start_minimal_server(&sample)?;
        self.check(minimal_server.addr, &spec)?;
        let minimal = self.closed(&minimal_server, None, MLP_CONCURRENCY, &spec)?;
        minimal.print(1);
        minimal_server.stop(Duration::from_secs(10))?;

        // Summary.
        let batched_rows = batched.rows_per_second(batch);
        let single_rows = single.rows_per_second(1);
        let conv_a = ratio(batched_rows, ort.rows_per_second);
        let conv_b = ratio(single_rows, ort.rows_per_second);
        let mlp_ratio = ratio(
            mlp_peak.report.ok_per_second(),
            minimal.report.ok_per_second(),
        );
        let mean_batch = single.server.and_then(|w| w.mean_batch_rows);
        let lat = open.report.latencies();
        let rule = |c: &str| println!("{}", c.repeat(98));
        println!();
        rule("=");
        println!(
            "{:<48} {:>12} {:>12} {:>8} {:>8}",
            "measurement", "ferroserve", "reference", "ratio", "target"
        );
        rule("-");
        let row = |what: &str, ours: f64, reference: f64, r: f64, target: f64| {
            let verdict = if r >= target { ">=" } else { "MISS " };
            println!("{what:<48} {ours:>12.1} {reference:>12.1} {r:>8.3} {verdict:>5}{target}");
        };
        row(
            &format!(
                "conv rows/s, {batch}-row reqs, c={CONV_BATCHED_CONCURRENCY} / ORT batch {batch}"
            ),
            batched_rows,
            ort.rows_per_second,
            conv_a,
            CONV_TARGET,
        );
        row(
            &format!(
                "conv rows/s, 1-row reqs, c={CONV_SINGLE_ROW_CONCURRENCY} / ORT batch {batch}"
            ),
            single_rows,
            ort.rows_per_second,
            conv_b,
            CONV_TARGET,
        );
        row(
            &format!("mlp req/s, 1-row reqs, c={MLP_CONCURRENCY} / minimal hyper"),
            mlp_peak.report.ok_per_second(),
            minimal.report.ok_per_second(),
            mlp_ratio,
            MLP_TARGET,
        );
        rule("-");
        if let Some(b) = mean_batch {
            println!("conv mean batch formed from 1-row requests: {b:.1} rows");
        }
        println!(
            "mlp open loop at {rate:.0} req/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} errors)",
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.p999),
            ms(lat.max),
            open.report.error_count()
        );
        println!("ferroserve idle VmRSS: {:.1} MiB", mib(idle_rss));

        // gRPC against HTTP binary, same models and loads.
        let twins = [
            Twin {
                key: "conv_batched",
                model: "conv",
                rows: batch,
                concurrency: CONV_BATCHED_CONCURRENCY,
                http: &batched,
                grpc: &batched_grpc,
            },
            Twin {
                key: "conv_single_row",
                model: "conv",
                rows: 1,
                concurrency: CONV_SINGLE_ROW_CONCURRENCY,
                http: &single,
                grpc: &single_grpc,
            },
            Twin {
                key: "mlp",
                model: "mlp",
                rows: 1,
                concurrency: MLP_CONCURRENCY,
                http: &mlp_peak,
                grpc: &mlp_grpc,
            },
        ];
        rule("-");
        println!(
            "{:<26} {:>12} {:>12} {:>9} {:>11} {:>11} {:>11}",
            "gRPC vs HTTP binary",
            "HTTP rows/s",
            "gRPC rows/s",
            "gRPC/HTTP",
            "HTTP p99",
            "gRPC p99",
            "errors H/G"
        );
        for t in &twins {
            println!(
                "{:<26} {:>12.1} {:>12.1} {:>9.3} {:>8.3} ms {:>8.3} ms {:>11}",
                t.label(),
                t.http_rows(),
                t.grpc_rows(),
                t.ratio(),
                ms(t.http.report.quantile(0.99)),
                ms(t.grpc.report.quantile(0.99)),
                format!(
                    "{}/{}",
                    t.http.report.error_count(),
                    t.grpc.report.error_count()
                ),
            );
        }
        let errors: u64 = [
            &batched,
            &single,
            &mlp_peak,
            &open,
            &batched_grpc,
            &single_grpc,
            &mlp_grpc,
        ]
        .iter()
        .map(|m| m.report.error_count())
        .sum();
        if errors > 0 {
            println!("WARNING: {errors} ferroserve requests failed; see the reports above");
        }
        rule("=");

        let summary = json!({
            "bench": "serving",
            "cores": cores,
            "measure_s": self.measure.as_secs_f64(),
            "idle_rss_bytes": idle_rss,
            "ort_inprocess": {
                "batch": batch,
                "intra_op_threads": conv.intra_op_threads,
                "rows_per_s": ort.rows_per_second,
                "ms_per_batch": ort.mean_batch_ms,
                "cores": ort_cpu.client_cores,
                "other_cores": ort_cpu.other_cores,
            },
            "conv_batched": {
                "rows_per_request": batch,
                "concurrency": CONV_BATCHED_CONCURRENCY,
                "ferroserve_rows_per_s": batched_rows,
                "ort_inprocess_rows_per_s": ort.rows_per_second,
                "ratio": conv_a,
                "target": CONV_TARGET,
                "run": batched.json(),
            },
            "conv_single_row": {
                "rows_per_request": 1,
                "concurrency": CONV_SINGLE_ROW_CONCURRENCY,
                "ferroserve_rows_per_s": single_rows,
                "ort_inprocess_rows_per_s": ort.rows_per_second,
                "ratio": conv_b,
                "target": CONV_TARGET,
                "mean_batch_rows": mean_batch,
                "run": single.json(),
            },
            "mlp_overhead": {
                "concurrency": MLP_CONCURRENCY,
                "response_bytes": sample.body.len(),
                "ferroserve_req_per_s": mlp_peak.report.ok_per_second(),
                "minimal_hyper_req_per_s": minimal.report.ok_per_second(),
                "ratio": mlp_ratio,
                "target": MLP_TARGET,
                "run": mlp_peak.json(),
                "minimal_run": minimal.json(),
            },
            "mlp_latency": {
                "rate_req_per_s": rate,
                "connections": OPEN_LOOP_CONNECTIONS,
                "p50_ms": ms(lat.p50),
                "p99_ms": ms(lat.p99),
                "run": open.json(),
            },
            "grpc_vs_http": twins
                .iter()
                .map(|t| (t.key.to_string(), t.json()))
                .collect::<serde_json::Map<_, _>>(),
        });
        println!("{summary}");
        Ok(())
    }

    /// A closed-loop warm-up, then the measured run with the CPU both sides
    /// used and, for ferroserve, its own counters over the measured run.
    fn closed(
        &self,
        server: &ServerProcess,
        model: Option<&str>,
        concurrency: usize,
        spec: &RequestSpec,
    ) -> Result<Measured> {
        let specs = std::slice::from_ref(spec);
        let run = |length| ClosedLoop::new(server.addr, concurrency, Stop::Duration(length));
        // Not measured: connections, caches, ONNX Runtime's lazy allocations
        // and the allocator's pools settle before anything counts.
        self.rt.block_on(run(self.warmup).run(specs))?;
        self.measure_run(server, model, run(self.measure).run(specs))
    }

    /// An open-loop warm-up at the same rate, then the measured run.
    fn open(
        &self,
        server: &ServerProcess,
        model: &str,
        rate: f64,
        spec: &RequestSpec,
    ) -> Result<Measured> {
        let specs = std::slice::from_ref(spec);
        let run = |length| {
            OpenLoop::new(
                server.addr,
                rate,
                OPEN_LOOP_CONNECTIONS,
                Stop::Duration(length),
            )
        };
        self.rt.block_on(run(self.warmup).run(specs))?;
        self.measure_run(server, Some(model), run(self.measure).run(specs))
    }

    /// The gRPC twin of a closed-loop HTTP run: the same model, rows per
    /// request and concurrency, `raw_input_contents` over one HTTP/2
    /// connection per caller, timed by the same loop. Runs right after the
    /// HTTP one so both meet the machine in the same state.
    fn grpc_twin(
        &self,
        server: &ServerProcess,
        bundle: &Bundle,
        rows: usize,
        concurrency: usize,
        label: &str,
    ) -> Result<Measured> {
        heading(&format!(
            "({label}) ferroserve over gRPC: {}, {rows}-row requests, concurrency {concurrency} \
             (raw_input_contents, one HTTP/2 connection per caller)",
            bundle.name
        ));
        let addr = server
            .grpc_addr
            .context("ferroserve did not announce its gRPC listener")?;
        let infer = GrpcInfer::new(addr, bundle, rows)?;
        self.rt.block_on(infer.check())?;
        // As in `closed`: a warm-up on its own connections, then the
        // measured run on fresh ones.
        let run = |length| ClosedLoop::new(addr, concurrency, Stop::Duration(length));
        self.rt
            .block_on(run(self.warmup).run_with(|_| infer.connect()))?;
        let measured = self.measure_run(
            server,
            Some(&bundle.name),
            run(self.measure).run_with(|_| infer.connect()),
        )?;
        measured.print(rows);
        Ok(measured)
    }

    fn measure_run(
        &self,
        server: &ServerProcess,
        model: Option<&str>,
        load: impl std::future::Future<Output = Result<Report, ferroserve_loadtest::LoadError>>,
    ) -> Result<Measured> {
        let before = model
            .map(|m| self.server_stats(server.addr, m))
            .transpose()?;
        let meter = CpuMeter::start(Some(server.pid()));
        let report = self.rt.block_on(load)?;
        let cpu = meter.stop();
        let window = match (model, before) {
            (Some(m), Some(before)) => Some(self.server_stats(server.addr, m)?.since(&before)),
            _ => None,
        };
        Ok(Measured {
            report,
            cpu,
            server: window,
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
        let cmd = settings::serve_command(&self.workspace, &self.repo);
        let server = ServerProcess::start(
            "ferroserve",
            cmd,
            &[Listener::Http, Listener::Grpc],
            Duration::from_secs(120),
        )?;
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
        ServerProcess::start(
            "minimal server",
            cmd,
            &[Listener::Http],
            Duration::from_secs(30),
        )
    }

    fn check(&self, addr: SocketAddr, spec: &RequestSpec) -> Result<ferroserve_loadtest::Answer> {
        process::check(&self.rt, addr, spec)
    }
}

/// One measured run: what the clients saw, the CPU both sides used and,
/// for ferroserve, what its own counters say about the same window.
struct Measured {
    report: Report,
    cpu: CpuUse,
    server: Option<Window>,
}

impl Measured {
    fn rows_per_second(&self, rows_per_request: usize) -> f64 {
        self.report.ok_per_second() * rows_per_request as f64
    }

    fn print(&self, rows_per_request: usize) {
        for line in self.report.to_string().lines() {
            println!("  {line}");
        }
        if rows_per_request > 1 {
            println!("  {:.1} rows/s", self.rows_per_second(rows_per_request));
        }
        println!("  {}", self.cpu);
        if let Some(window) = &self.server {
            println!("  {window}");
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut m = settings::run_json(&self.report, &self.cpu);
        m.insert(
            "server".into(),
            self.server.map_or(json!(null), |w| w.json()),
        );
        serde_json::Value::Object(m)
    }
}

/// A closed-loop load run over HTTP and over gRPC.
struct Twin<'a> {
    key: &'static str,
    model: &'static str,
    rows: usize,
    concurrency: usize,
    http: &'a Measured,
    grpc: &'a Measured,
}

impl Twin<'_> {
    fn label(&self) -> String {
        format!(
            "{} {}-row reqs, c={}",
            self.model, self.rows, self.concurrency
        )
    }

    fn http_rows(&self) -> f64 {
        self.http.rows_per_second(self.rows)
    }

    fn grpc_rows(&self) -> f64 {
        self.grpc.rows_per_second(self.rows)
    }

    fn ratio(&self) -> f64 {
        ratio(self.grpc_rows(), self.http_rows())
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "rows_per_request": self.rows,
            "concurrency": self.concurrency,
            "http_rows_per_s": self.http_rows(),
            "grpc_rows_per_s": self.grpc_rows(),
            "ratio": self.ratio(),
            "http_p99_ms": ms(self.http.report.quantile(0.99)),
            "grpc_p99_ms": ms(self.grpc.report.quantile(0.99)),
            "http_errors": self.http.report.error_count(),
            "grpc_errors": self.grpc.report.error_count(),
            "grpc_run": self.grpc.json(),
        })
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
