//! OpenCL backend benchmark: the real `ferroserve` binary serving the same
//! models on ONNX Runtime (CPU) and on the OpenCL backend, under the same
//! load in the same run, and the OpenCL GEMM kernel against the machine's
//! FP32 peak. Honest numbers, no targets: on PoCL (OpenCL on the CPU) the
//! OpenCL backend competes with ONNX Runtime for the same cores.
//!
//! 1. Serving: one server, a scratch repository holding `mlp` and `conv`
//!    (examples/models, backend onnx) and `mlp_opencl` and `conv_opencl`
//!    (examples/bundles/*-opencl: the same model.onnx files on opencl:0).
//!    For each pair, the same closed-loop load on both over HTTP with
//!    binary tensors: (a) 32-row requests, concurrency 4; (b) 1-row
//!    requests, concurrency 32 (dynamic batching). rows/s, p50 and p99 per
//!    backend and the OpenCL/ORT ratios; for each OpenCL run, the share of
//!    device time per kernel from `ferroserve_device_kernel_seconds_total`
//!    (a delta of `/metrics` before and after the run).
//! 2. GEMM: a one-node ONNX model `Gemm(A[M,K], B[K,N] initializer)`,
//!    M = N = K = 1024 and 256, loaded in-process with the OpenCL backend
//!    and run back to back: GFLOP/s over the kernel's device time (OpenCL
//!    profiling events) and over wall time (transfers included), against
//!    numpy's `np.matmul` (OpenBLAS, as many threads as cores) at the same
//!    sizes — the practical peak — and the theoretical peak from
//!    /proc/cpuinfo (cores × MHz × FLOP/cycle by the SIMD flags).
//!
//! It prints a table and, last, one JSON line; it asserts nothing about
//! speed. `FERROSERVE_BENCH_SECS` sets each measurement's length (default
//! 10 s); `FERROSERVE_PYTHON` the interpreter that writes the GEMM models
//! and times numpy (default the workspace's `.venv/bin/python`). Without an
//! OpenCL device it says why and exits successfully.

// A bench target's root resolves modules beside itself, so the parts it
// shares with the serving benchmark, and its own, are pointed at explicitly.
#[path = "serving/cpu.rs"]
mod cpu;
#[path = "opencl/device_time.rs"]
mod device_time;
#[path = "opencl/gemm.rs"]
mod gemm;
// Only part of the serving benchmark's helpers is used here.
#[allow(dead_code)]
#[path = "serving/model.rs"]
mod model;
#[path = "opencl/peak.rs"]
mod peak;
#[allow(dead_code)]
#[path = "serving/process.rs"]
mod process;
#[path = "serving/server_stats.rs"]
mod server_stats;
#[path = "serving/settings.rs"]
mod settings;
use settings::{heading, ratio, show};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferroserve_loadtest::{ClosedLoop, Report, RequestSpec, Stop};
use serde_json::json;

use cpu::{CpuMeter, CpuUse};
use device_time::{KernelTotals, KernelWindow};
use gemm::{GemmModel, GemmRun};
use model::Bundle;
use peak::{NumpyReference, TheoreticalPeak};
use process::{Listener, ServerProcess};
use server_stats::{Snapshot, Window};
use settings::ms;

/// (ONNX Runtime model, its source; OpenCL model, its source), sources
/// relative to examples/.
const PAIRS: [Pair; 2] = [
    Pair {
        ort: "mlp",
        ort_dir: "models/mlp/1",
        opencl: "mlp_opencl",
        opencl_dir: "bundles/mlp-opencl",
    },
    Pair {
        ort: "conv",
        ort_dir: "models/conv/1",
        opencl: "conv_opencl",
        opencl_dir: "bundles/conv-opencl",
    },
];

const LOADS: [Load; 2] = [
    Load {
        key: "batched",
        rows: 32,
        concurrency: 4,
    },
    Load {
        key: "single_row",
        rows: 1,
        concurrency: 32,
    },
];

const GEMM_SIZES: [usize; 2] = [1024, 256];

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it and only learns how to start the real one.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "opencl benchmark skipped: run it with `cargo bench -p ferroserve --bench opencl` \
             (scripts/bench-opencl.sh)"
        );
        return Ok(());
    }
    let device = match ferroserve_backend_opencl::opencl_available() {
        Ok(d) => d,
        Err(why) => {
            println!(
                "opencl benchmark skipped: no OpenCL device ({why}); scripts/setup-opencl.sh \
                 installs PoCL"
            );
            return Ok(());
        }
    };
    Bench::new(device)?.run()
}

struct Pair {
    ort: &'static str,
    ort_dir: &'static str,
    opencl: &'static str,
    opencl_dir: &'static str,
}

#[derive(Clone, Copy)]
struct Load {
    key: &'static str,
    rows: usize,
    concurrency: usize,
}

impl Load {
    fn label(&self) -> String {
        format!("{}-row reqs c={}", self.rows, self.concurrency)
    }
}

struct Bench {
    workspace: PathBuf,
    device: String,
    cores: usize,
    /// The four models the server serves.
    repo: PathBuf,
    _repo_dir: tempfile::TempDir,
    /// The GEMM models, written at start.
    gemm_models: Vec<GemmModel>,
    _gemm_dir: tempfile::TempDir,
    python: PathBuf,
    measure: Duration,
    warmup: Duration,
    /// The load generator runs on one thread (see the serving benchmark).
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn new(device: String) -> Result<Bench> {
        let workspace = settings::workspace()?;
        let (measure, warmup) = settings::measure_and_warmup()?;
        let python = settings::python(&workspace, "scripts/bench-opencl.sh")?;
        let gemm_dir = tempfile::tempdir()?;
        let gemm_models = GEMM_SIZES
            .iter()
            .map(|&s| GemmModel::write(&python, gemm_dir.path(), s))
            .collect::<Result<Vec<_>>>()?;
        let repo_dir = tempfile::tempdir()?;
        let examples = workspace.join("examples");
        for pair in &PAIRS {
            for (dir, name) in [(pair.ort_dir, pair.ort), (pair.opencl_dir, pair.opencl)] {
                register(&workspace, &examples.join(dir), repo_dir.path(), name)?;
            }
        }
        Ok(Bench {
            workspace,
            device,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            repo: repo_dir.path().to_path_buf(),
            _repo_dir: repo_dir,
            gemm_models,
            _gemm_dir: gemm_dir,
            python,
            measure,
            warmup,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn run(&self) -> Result<()> {
        println!(
            "ferroserve opencl benchmark: {} cores, {:.0} s per measurement after {:.1} s warm-up",
            self.cores,
            self.measure.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        println!("OpenCL device: {}", self.device);
        println!(
            "no targets: the figures are what this machine gives; on PoCL the OpenCL device is \
             the same CPU ONNX Runtime runs on"
        );

        // (1) Serving, ORT and OpenCL in turn under each load.
        let server = self.start_ferroserve()?;
        println!(
            "\nferroserve pid {} on {} (serving {})",
            server.pid(),
            server.addr,
            PAIRS
                .iter()
                .flat_map(|p| [p.ort, p.opencl])
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut comparisons = Vec::new();
        for (i, pair) in PAIRS.iter().enumerate() {
            let ort_bundle = Bundle::read(&self.repo, pair.ort)?;
            let ocl_bundle = Bundle::read(&self.repo, pair.opencl)?;
            for (j, load) in LOADS.iter().enumerate() {
                let step = format!("1{}{}", ['a', 'b'][i], ['1', '2'][j]);
                let ort = self.serve(&server, &ort_bundle, load, &step, "ONNX Runtime", false)?;
                let ocl = self.serve(&server, &ocl_bundle, load, &step, "OpenCL", true)?;
                let c = Comparison {
                    model: pair.ort,
                    load: *load,
                    ort,
                    ocl,
                };
                println!(
                    "  OpenCL/ORT: rows/s {:.3}, p99 {:.3}",
                    c.rows_ratio(),
                    c.p99_ratio()
                );
                comparisons.push(c);
            }
        }
        server.stop(Duration::from_secs(30))?;

        // (2) The GEMM kernel against the machine's peak.
        let mut gemm_runs = Vec::new();
        for g in &self.gemm_models {
            heading(&format!(
                "(2) OpenCL GEMM kernel in-process: M=N=K={}, {:.2} GFLOP per run",
                g.size,
                g.flop_per_run() / 1e9
            ));
            let meter = CpuMeter::start(None);
            let run = gemm::measure(g, self.warmup, self.measure)?;
            let cpu = meter.stop();
            run.print();
            println!(
                "  CPU cores used: this process (the OpenCL driver's threads) {}, other processes {}",
                show(cpu.client_cores),
                show(cpu.other_cores)
            );
            gemm_runs.push((run, cpu));
        }
        heading(&format!(
            "(2) reference: numpy np.matmul float32 in {}, OPENBLAS_NUM_THREADS={}",
            self.python.display(),
            self.cores
        ));
        let meter = CpuMeter::start(None);
        let numpy = peak::numpy_gemm(
            &self.python,
            &GEMM_SIZES,
            self.cores,
            self.warmup,
            self.measure,
        )?;
        let numpy_cpu = meter.stop();
        println!(
            "  numpy {}, BLAS {}, thread pools {}",
            numpy.numpy,
            numpy.blas.as_deref().unwrap_or("?"),
            numpy
                .threadpools
                .as_ref()
                .map_or("? (no threadpoolctl)".to_string(), |p| {
                    p.iter()
                        .map(|(lib, n)| format!("{lib} x{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
        );
        for r in &numpy.results {
            println!(
                "  {0}x{0}: {1} calls in {2:.2} s, {3:.3} ms per call: {4:.2} GFLOP/s",
                r.size,
                r.calls,
                r.seconds,
                r.seconds / r.calls.max(1) as f64 * 1e3,
                r.gflops
            );
        }
        println!(
            "  CPU cores used by the numpy process (and anything else) {}",
            show(numpy_cpu.other_cores)
        );
        let theoretical = TheoreticalPeak::read(self.cores);
        match &theoretical {
            Ok(t) => println!("  {}", t.describe()),
            Err(e) => println!("  no theoretical peak: {e:#}"),
        }
        let theoretical = theoretical.ok();

        self.summary(&comparisons, &gemm_runs, &numpy, theoretical.as_ref());
        Ok(())
    }

    fn summary(
        &self,
        comparisons: &[Comparison],
        gemm_runs: &[(GemmRun, CpuUse)],
        numpy: &NumpyReference,
        theoretical: Option<&TheoreticalPeak>,
    ) {
        let rule = |c: &str| println!("{}", c.repeat(118));
        println!();
        rule("=");
        println!(
            "{:<28} {:>11} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "serving, same load",
            "ORT rows/s",
            "OCL rows/s",
            "OCL/ORT",
            "ORT p50",
            "OCL p50",
            "ORT p99",
            "OCL p99",
            "p99 O/O",
            "errors"
        );
        rule("-");
        for c in comparisons {
            let (o, l) = (c.ort.report.latencies(), c.ocl.report.latencies());
            println!(
                "{:<28} {:>11.1} {:>11.1} {:>8.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8.3} {:>9}",
                c.label(),
                c.ort_rows(),
                c.ocl_rows(),
                c.rows_ratio(),
                ms(o.p50),
                ms(l.p50),
                ms(o.p99),
                ms(l.p99),
                c.p99_ratio(),
                format!(
                    "{}/{}",
                    c.ort.report.error_count(),
                    c.ocl.report.error_count()
                )
            );
        }
        println!(
            "(latencies in ms; OCL/ORT and p99 O/O: OpenCL over ONNX Runtime; errors ORT/OCL)"
        );
        rule("-");
        println!(
            "OpenCL device time per kernel (share of the run's device time), mean batch ORT/OCL"
        );
        for c in comparisons {
            let kernels = c.ocl.kernels.clone().unwrap_or_default();
            let batch = |w: &Option<Window>| {
                w.and_then(|w| w.mean_batch_rows)
                    .map_or("?".to_string(), |b| format!("{b:.1}"))
            };
            println!(
                "{:<28} busy {:>4}  batch {:>11}  {}",
                c.label(),
                kernels
                    .device_busy()
                    .map_or("?".to_string(), |b| format!("{:.0}%", b * 100.0)),
                format!("{}/{}", batch(&c.ort.server), batch(&c.ocl.server)),
                kernels.shares()
            );
        }
        rule("-");
        println!(
            "{:<28} {:>11} {:>11} {:>11} {:>11} {:>12} {:>12} {:>11}",
            "GEMM FP32 (GFLOP/s)",
            "OCL kernel",
            "OCL wall",
            "numpy",
            "theoretical",
            "kernel/numpy",
            "kernel/theor",
            "wall/numpy"
        );
        let theo = theoretical.map(|t| t.gflops);
        for (run, _) in gemm_runs {
            let np = numpy.at(run.size).map(|r| r.gflops);
            let frac = |a: f64, b: Option<f64>| {
                b.filter(|b| *b > 0.0)
                    .map_or("?".to_string(), |b| format!("{:.3}", a / b))
            };
            println!(
                "{:<28} {:>11.2} {:>11.2} {:>11} {:>11} {:>12} {:>12} {:>11}",
                format!("M=N=K={}", run.size),
                run.kernel_gflops(),
                run.wall_gflops(),
                np.map_or("?".to_string(), |g| format!("{g:.2}")),
                theo.map_or("?".to_string(), |g| format!("{g:.1}")),
                frac(run.kernel_gflops(), np),
                frac(run.kernel_gflops(), theo),
                frac(run.wall_gflops(), np),
            );
        }
        match theoretical {
            Some(t) => println!(
                "(theoretical: {} cores x {:.0} MHz x {} FLOP/cycle, {}; numpy: {} threads)",
                t.cores, t.mhz, t.flop_per_cycle, t.isa, numpy.threads
            ),
            None => println!(
                "(theoretical peak unknown here; numpy: {} threads)",
                numpy.threads
            ),
        }
        let errors: u64 = comparisons
            .iter()
            .map(|c| c.ort.report.error_count() + c.ocl.report.error_count())
            .sum();
        if errors > 0 {
            println!("WARNING: {errors} ferroserve requests failed; see the reports above");
        }
        rule("=");

        let summary = json!({
            "bench": "opencl",
            "cores": self.cores,
            "measure_s": self.measure.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "opencl_device": self.device,
            "serving": comparisons
                .iter()
                .map(|c| (format!("{}_{}", c.model, c.load.key), c.json()))
                .collect::<serde_json::Map<_, _>>(),
            "gemm": gemm_runs
                .iter()
                .map(|(run, cpu)| {
                    let np = numpy.at(run.size).map(|r| r.gflops);
                    let mut v = run.json();
                    v["cores_used"] = json!(cpu.client_cores);
                    v["numpy_gflops"] = json!(np);
                    v["kernel_over_numpy"] = json!(np.map(|n| run.kernel_gflops() / n));
                    v["wall_over_numpy"] = json!(np.map(|n| run.wall_gflops() / n));
                    v["kernel_over_theoretical"] = json!(theo.map(|t| run.kernel_gflops() / t));
                    (run.size.to_string(), v)
                })
                .collect::<serde_json::Map<_, _>>(),
            "numpy": {
                "version": numpy.numpy,
                "blas": numpy.blas,
                "threads": numpy.threads,
                "threadpools": numpy.threadpools,
                "results": numpy.results.iter().map(|r| json!({
                    "size": r.size, "calls": r.calls, "seconds": r.seconds, "gflops": r.gflops,
                })).collect::<Vec<_>>(),
            },
            "theoretical_peak": theoretical.map(TheoreticalPeak::json),
            "errors": errors,
        });
        println!("{summary}");
    }

    /// One backend under one load: warm-up, then the measured run with the
    /// CPU used and the server's own counters over it (and, for an OpenCL
    /// model, its per-kernel device time).
    fn serve(
        &self,
        server: &ServerProcess,
        bundle: &Bundle,
        load: &Load,
        step: &str,
        backend: &str,
        kernels: bool,
    ) -> Result<Measured> {
        heading(&format!(
            "({step}) {backend}: {}, {} (max_batch_size {})",
            bundle.name,
            load.label(),
            bundle.max_batch_size
        ));
        let spec = bundle.infer_request(load.rows)?;
        let answer = self.check(server.addr, &spec)?;
        let want = bundle.output_row_bytes * load.rows;
        if answer.body.len() < want {
            bail!(
                "{} answered {} bytes, fewer than the {want} bytes of its output",
                bundle.name,
                answer.body.len()
            );
        }
        let specs = std::slice::from_ref(&spec);
        let run = |length| ClosedLoop::new(server.addr, load.concurrency, Stop::Duration(length));
        self.rt.block_on(run(self.warmup).run(specs))?;
        // Each scrape is parsed at once: a snapshot is stamped when parsed.
        let scrape = || -> Result<(Snapshot, Option<KernelTotals>)> {
            let text = self.metrics(server.addr)?;
            Ok((
                Snapshot::parse(&text, &bundle.name),
                kernels.then(|| KernelTotals::parse(&text, &bundle.name)),
            ))
        };
        let before = scrape()?;
        let meter = CpuMeter::start(Some(server.pid()));
        let report = self.rt.block_on(run(self.measure).run(specs))?;
        let cpu = meter.stop();
        let after = scrape()?;
        let window = after.0.since(&before.0);
        let kernels = after.1.zip(before.1).map(|(a, b)| a.since(&b));
        let measured = Measured {
            report,
            cpu,
            server: Some(window),
            kernels,
        };
        measured.print(load.rows);
        Ok(measured)
    }

    fn metrics(&self, addr: SocketAddr) -> Result<String> {
        let answer = self.check(addr, &RequestSpec::get("/metrics"))?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    fn start_ferroserve(&self) -> Result<ServerProcess> {
        let cmd = settings::serve_command(&self.workspace, &self.repo);
        // The OpenCL models compile their kernels for the device at load.
        let server = ServerProcess::start(
            "ferroserve",
            cmd,
            &[Listener::Http],
            Duration::from_secs(300),
        )?;
        for model in PAIRS.iter().flat_map(|p| [p.ort, p.opencl]) {
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

/// `ferroserve register DIR --repo REPO --name NAME`.
fn register(workspace: &Path, dir: &Path, repo: &Path, name: &str) -> Result<()> {
    if !dir.join("bundle.toml").is_file() {
        bail!(
            "{} has no bundle.toml: generate the examples with `.venv/bin/python \
             examples/generate.py` (scripts/bench-opencl.sh does)",
            dir.display()
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .current_dir(workspace)
        .arg("register")
        .arg(dir)
        .arg("--repo")
        .arg(repo)
        .args(["--name", name, "--message", "opencl benchmark"])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .context("starting ferroserve register")?;
    if !output.status.success() {
        bail!(
            "ferroserve register {} --name {name} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One measured run: what the clients saw, the CPU used, the server's own
/// counters over the same window and, for OpenCL, its device time.
struct Measured {
    report: Report,
    cpu: CpuUse,
    server: Option<Window>,
    kernels: Option<KernelWindow>,
}

impl Measured {
    fn rows_per_second(&self, rows_per_request: usize) -> f64 {
        self.report.ok_per_second() * rows_per_request as f64
    }

    fn print(&self, rows_per_request: usize) {
        for line in self.report.to_string().lines() {
            println!("  {line}");
        }
        println!("  {:.1} rows/s", self.rows_per_second(rows_per_request));
        println!("  {}", self.cpu);
        if let Some(window) = &self.server {
            println!("  {window}");
        }
        if let Some(k) = &self.kernels {
            k.print();
        }
    }

    fn json(&self, rows_per_request: usize) -> serde_json::Value {
        let mut m = settings::run_json(&self.report, &self.cpu);
        m.insert(
            "rows_per_s".into(),
            json!(self.rows_per_second(rows_per_request)),
        );
        m.insert(
            "server".into(),
            self.server.map_or(json!(null), |w| w.json()),
        );
        if let Some(k) = &self.kernels {
            m.insert("device_time".into(), k.json());
        }
        serde_json::Value::Object(m)
    }
}

/// The same load on the ONNX Runtime and the OpenCL model of one pair.
struct Comparison {
    model: &'static str,
    load: Load,
    ort: Measured,
    ocl: Measured,
}

impl Comparison {
    fn label(&self) -> String {
        format!("{} {}", self.model, self.load.label())
    }

    fn ort_rows(&self) -> f64 {
        self.ort.rows_per_second(self.load.rows)
    }

    fn ocl_rows(&self) -> f64 {
        self.ocl.rows_per_second(self.load.rows)
    }

    fn rows_ratio(&self) -> f64 {
        ratio(self.ocl_rows(), self.ort_rows())
    }

    fn p99_ratio(&self) -> f64 {
        ratio(
            ms(self.ocl.report.quantile(0.99)),
            ms(self.ort.report.quantile(0.99)),
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "rows_per_request": self.load.rows,
            "concurrency": self.load.concurrency,
            "ort_rows_per_s": self.ort_rows(),
            "opencl_rows_per_s": self.ocl_rows(),
            "rows_ratio": self.rows_ratio(),
            "ort_p50_ms": ms(self.ort.report.quantile(0.5)),
            "opencl_p50_ms": ms(self.ocl.report.quantile(0.5)),
            "ort_p99_ms": ms(self.ort.report.quantile(0.99)),
            "opencl_p99_ms": ms(self.ocl.report.quantile(0.99)),
            "p99_ratio": self.p99_ratio(),
            "ort": self.ort.json(self.load.rows),
            "opencl": self.ocl.json(self.load.rows),
        })
    }
}
