//! Hot-swap benchmark: the real `ferroserve` binary serving an endpoint
//! whose deployment is switched between two versions of a model while
//! traffic flows, measured the way clients see it.
//!
//! Set-up: a temporary registry with `mlp` version 1 (`examples/models/mlp/1`)
//! and version 2 (`examples/bundles/mlp-v2`, other weights), served with
//! endpoint `ep`, deployment `d` at version 1.
//!
//! 1. Steady state: open-loop load (coordinated-omission corrected) on
//!    `ep` at half of a quick closed-loop peak (or `FERROSERVE_BENCH_SWAP_RATE`
//!    requests/s): latency quantiles and errors.
//! 2. During swaps: the same load while another thread moves `d` between
//!    versions 1 and 2 about once a second (`PUT
//!    /v2/admin/endpoints/ep/deployments/d`, which answers once the new
//!    version is loaded, warmed up and taking the traffic). Every answer is
//!    checked (200, `x-ferroserve-deployment: d`, a `model_version`); any
//!    failure is a bug and is printed loudly.
//! 3. Changeover: the same load and swaps, plus a prober sending one request
//!    at a time on its own connection. Per swap: how long the PUT took, and
//!    from the moment it was sent until the first answer by the new version
//!    and until the last answer by the old one was behind.
//!
//! It prints a table and, last, one JSON line. It asserts nothing about
//! speed. `FERROSERVE_BENCH_SECS` sets each phase's length (default 10 s).

// A bench target's root resolves modules beside itself, so the parts it
// shares with the serving benchmark, and its own, are pointed at explicitly.
#[path = "serving/cpu.rs"]
mod cpu;
// Only part of the serving benchmark's helpers is used here.
#[allow(dead_code)]
#[path = "serving/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "serving/process.rs"]
mod process;
#[path = "serving/settings.rs"]
mod settings;
use settings::heading;
#[path = "swap/traffic.rs"]
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferroserve_loadtest::{ClosedLoop, OpenLoop, Report, RequestSpec, Stop};
use serde_json::json;

use cpu::{CpuMeter, CpuUse};
use model::Bundle;
use process::{Listener, ServerProcess};
use settings::ms;
use traffic::{
    changeovers, put_deployment, spawn_prober, spawn_swapper, Changeover, CheckedCaller,
    ProbeOutcome, Swap, SwapPlan, Tally, DEPLOYMENT_HEADER,
};

const ENDPOINT: &str = "ep";
const DEPLOYMENT: &str = "d";
const MODEL: &str = "mlp";

const PEAK_CONCURRENCY: usize = 32;
const OPEN_LOOP_CONNECTIONS: usize = 64;
/// The offered load as a share of the measured closed-loop peak.
const LOAD_SHARE: f64 = 0.5;
const SWAP_INTERVAL: Duration = Duration::from_secs(1);
/// Swaps the changeover phase measures at least.
const MIN_PROBED_SWAPS: usize = 5;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it and only learns how to start the real one.
    if !std::env::args().any(|a| a == "--bench") {
        println!("swap benchmark skipped: run it with `cargo bench -p ferroserve --bench swap`");
        return Ok(());
    }
    Bench::new()?.run()
}

struct Bench {
    workspace: PathBuf,
    measure: Duration,
    warmup: Duration,
    /// The open-loop generator runs on this one thread (see the serving
    /// benchmark); the swapper and the prober have their own.
    rt: tokio::runtime::Runtime,
}

/// One open-loop phase: what the loadtest report says, what the answers
/// said, the swaps made during it and the CPU used.
struct Phase {
    report: Report,
    tally: Arc<Tally>,
    swaps: Vec<Swap>,
    /// The version the swapper left the deployment at.
    current: Option<u32>,
    /// What the prober saw, when one ran.
    probe: Option<ProbeOutcome>,
    cpu: CpuUse,
}

impl Bench {
    fn new() -> Result<Bench> {
        let workspace = settings::workspace()?;
        let (measure, warmup) = settings::measure_and_warmup()?;
        Ok(Bench {
            workspace,
            measure,
            warmup,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn run(&self) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "ferroserve hot-swap benchmark: {cores} cores, {:.0} s per phase after {:.1} s warm-up",
            self.measure.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        let repo = tempfile::Builder::new()
            .prefix("ferroserve-swap-bench")
            .tempdir()?;
        self.register(repo.path())?;
        let server = self.start_ferroserve(repo.path())?;
        println!("ferroserve pid {} on {}", server.pid(), server.addr);

        let mut bundle = Bundle::read(&self.workspace.join("examples").join("models"), MODEL)?;
        bundle.name = ENDPOINT.to_string();
        let spec = bundle.infer_request(1)?;

        let t = std::time::Instant::now();
        self.check(server.addr, &put_deployment(ENDPOINT, DEPLOYMENT, MODEL, 1))?;
        let first_put = t.elapsed();
        let answer = self.check(server.addr, &spec)?;
        let version = traffic::model_version(&answer.body);
        let deployment = answer.headers.get(DEPLOYMENT_HEADER);
        if version != Some(1) || deployment.is_none_or(|d| d != DEPLOYMENT) {
            bail!("{ENDPOINT} answers with version {version:?} from deployment {deployment:?}, expected 1 from {DEPLOYMENT:?}");
        }
        println!(
            "endpoint {ENDPOINT}, deployment {DEPLOYMENT} -> {MODEL} v1 (PUT took {:.1} ms)",
            ms(first_put)
        );

        // The offered load.
        let rate = match std::env::var("FERROSERVE_BENCH_SWAP_RATE") {
            Ok(v) => v
                .parse()
                .context("FERROSERVE_BENCH_SWAP_RATE is requests per second")?,
            Err(_) => {
                let length = (self.measure / 2).max(Duration::from_secs(2));
                heading(&format!(
                    "closed-loop peak: {MODEL} via {ENDPOINT}, 1-row requests, concurrency {PEAK_CONCURRENCY}, {:.1} s",
                    length.as_secs_f64()
                ));
                let specs = std::slice::from_ref(&spec);
                let run = |d| ClosedLoop::new(server.addr, PEAK_CONCURRENCY, Stop::Duration(d));
                self.rt.block_on(run(self.warmup).run(specs))?;
                let peak = self.rt.block_on(run(length).run(specs))?;
                print_indented(&peak.to_string());
                if peak.error_count() > 0 {
                    loud(&format!(
                        "{} requests failed at peak load before any swap",
                        peak.error_count()
                    ));
                }
                (peak.ok_per_second() * LOAD_SHARE).max(1.0)
            }
        };
        let spec = Arc::new(spec);

        heading(&format!(
            "(1) steady state: open loop at {rate:.0} req/s, pool of {OPEN_LOOP_CONNECTIONS} connections, no swaps"
        ));
        let steady = self.phase(&server, &spec, rate, None, false)?;
        steady.print();

        heading(&format!(
            "(2) during swaps: the same load, {DEPLOYMENT} swapped between v1 and v2 every {:.1} s",
            SWAP_INTERVAL.as_secs_f64()
        ));
        let plan = SwapPlan {
            addr: server.addr,
            endpoint: ENDPOINT.to_string(),
            deployment: DEPLOYMENT.to_string(),
            model: MODEL.to_string(),
            current: 1,
            interval: SWAP_INTERVAL,
            delay: self.warmup,
            at_least: 0,
        };
        let swapping = self.phase(&server, &spec, rate, Some(plan.clone()), false)?;
        swapping.print();

        heading(&format!(
            "(3) changeover: the same load and swaps (at least {MIN_PROBED_SWAPS}), plus a prober sending one request at a time"
        ));
        let plan = SwapPlan {
            current: swapping.current.unwrap_or(plan.current),
            at_least: MIN_PROBED_SWAPS,
            ..plan
        };
        let probed = self.phase(&server, &spec, rate, Some(plan), true)?;
        probed.print();
        let probe = probed
            .probe
            .as_ref()
            .context("the changeover phase ran a prober")?;
        let changes = changeovers(&probed.swaps, &probe.probes);
        let probe_ok = probe.probes.iter().filter(|p| p.version.is_some()).count();
        println!(
            "  prober: {} requests ({} failed)",
            probe.probes.len(),
            probe.failure_count
        );
        for (i, (s, c)) in probed.swaps.iter().zip(&changes).enumerate() {
            match (c, &s.failure) {
                (Some(c), _) => println!(
                    "  swap {:>2}: v{} -> v{}  PUT {:>8.1} ms  first new {:>8}  all new {:>8}  probes {:>5}  stale after PUT {}",
                    i + 1,
                    s.from,
                    s.to,
                    ms(s.put),
                    opt_ms(c.first_new),
                    opt_ms(c.all_new),
                    c.probes,
                    c.stale_after_put
                ),
                (None, Some(f)) => println!(
                    "  swap {:>2}: v{} -> v{}  FAILED after {:.1} ms: {f}",
                    i + 1,
                    s.from,
                    s.to,
                    ms(s.put)
                ),
                (None, None) => {}
            }
        }
        server.stop(Duration::from_secs(30))?;

        // Summary.
        let p99_ratio = ratio(swapping.report.quantile(0.99), steady.report.quantile(0.99));
        let probed_swaps = &probed.swaps;
        let put_ms: Vec<f64> = [&swapping.swaps, probed_swaps]
            .into_iter()
            .flatten()
            .filter(|s| s.failure.is_none())
            .map(|s| ms(s.put))
            .collect();
        let measured: Vec<&Changeover> = changes.iter().flatten().collect();
        let first_new: Vec<f64> = measured
            .iter()
            .filter_map(|c| c.first_new)
            .map(ms)
            .collect();
        let all_new: Vec<f64> = measured.iter().filter_map(|c| c.all_new).map(ms).collect();
        let unseen = measured.iter().filter(|c| c.all_new.is_none()).count();
        let stale: u64 = measured.iter().map(|c| c.stale_after_put).sum();
        let failed_swaps = [&swapping.swaps, probed_swaps]
            .into_iter()
            .flatten()
            .filter(|s| s.failure.is_some())
            .count();
        let errors = steady.errors() + swapping.errors() + probed.errors();

        let rule = |c: &str| println!("{}", c.repeat(100));
        println!();
        rule("=");
        println!(
            "{:<36} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "open loop", "requests", "errors", "swaps", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        rule("-");
        for (what, p) in [
            (format!("(1) steady, {rate:.0} req/s"), &steady),
            (format!("(2) swapping, {rate:.0} req/s"), &swapping),
            (format!("(3) swapping + prober, {rate:.0} req/s"), &probed),
        ] {
            let l = p.report.latencies();
            println!(
                "{what:<36} {:>9} {:>7} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                p.report.requests,
                p.errors(),
                p.swaps.len(),
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            );
        }
        rule("-");
        println!("p99 during swaps / p99 steady: {p99_ratio:.2}");
        println!(
            "{:<36} {:>9} {:>10} {:>10} {:>10}",
            "swap timings (ms)", "swaps", "min", "median", "max"
        );
        let stats_row = |what: &str, v: &[f64]| {
            let s = Stats::of(v);
            println!(
                "{what:<36} {:>9} {:>10} {:>10} {:>10}",
                v.len(),
                opt(s.map(|s| s.min)),
                opt(s.map(|s| s.median)),
                opt(s.map(|s| s.max))
            );
        };
        stats_row("PUT latency (load+warm-up+swap)", &put_ms);
        stats_row("t0 -> first new-version answer", &first_new);
        stats_row("t0 -> all traffic on new version", &all_new);
        if unseen > 0 {
            println!("{unseen} swap(s) had no new-version probe answer before the next swap");
        }
        if stale > 0 {
            loud(&format!(
                "{stale} probe(s) sent after a PUT had answered were answered by the old version"
            ));
        }
        if failed_swaps > 0 {
            loud(&format!("{failed_swaps} swap PUT(s) failed; see above"));
        }
        if errors > 0 {
            loud(&format!(
                "{errors} inference requests failed; see the phases above"
            ));
        } else {
            println!("inference errors: 0 in all phases");
        }
        rule("=");

        let summary = json!({
            "bench": "swap",
            "cores": cores,
            "measure_s": self.measure.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "rate_req_per_s": rate,
            "connections": OPEN_LOOP_CONNECTIONS,
            "swap_interval_s": SWAP_INTERVAL.as_secs_f64(),
            "steady": steady.json(),
            "swapping": swapping.json(),
            "swapping_probed": probed.json(),
            "p99_ratio_swapping_to_steady": p99_ratio,
            "errors": errors,
            "failed_swaps": failed_swaps,
            "put_ms": Stats::json(&put_ms),
            "first_new_ms": Stats::json(&first_new),
            "all_new_ms": Stats::json(&all_new),
            "probed_swaps": measured.len(),
            "swaps_without_new_answer": unseen,
            "stale_after_put": stale,
            "prober": {
                "requests": probe.probes.len(),
                "ok": probe_ok,
                "failed": probe.failure_count,
                "failures": probe.failures,
            },
        });
        println!("{summary}");
        Ok(())
    }

    /// Registers `mlp` v1 and v2 in a fresh registry at `repo`.
    fn register(&self, repo: &Path) -> Result<()> {
        let examples = self.workspace.join("examples");
        for (src, expected) in [
            (examples.join("models").join(MODEL).join("1"), "1"),
            (examples.join("bundles").join("mlp-v2"), "2"),
        ] {
            if !src.join("bundle.toml").is_file() {
                bail!(
                    "{} is missing: generate the examples with `.venv/bin/python examples/generate.py` \
                     (scripts/bench-swap.sh does)",
                    src.display()
                );
            }
            let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
                .current_dir(&self.workspace)
                .arg("register")
                .arg(&src)
                .arg("--repo")
                .arg(repo)
                .args(["--name", MODEL])
                .output()
                .context("running ferroserve register")?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || stdout.trim() != expected {
                bail!(
                    "ferroserve register {} answered {:?} ({}), expected version {expected}: {}",
                    src.display(),
                    stdout.trim(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    fn start_ferroserve(&self, repo: &Path) -> Result<ServerProcess> {
        let cmd = settings::serve_command(&self.workspace, repo);
        let server = ServerProcess::start(
            "ferroserve",
            cmd,
            &[Listener::Http],
            Duration::from_secs(120),
        )?;
        self.check(server.addr, &RequestSpec::get("/v2/health/ready"))
            .context("ferroserve is listening but not ready")?;
        Ok(server)
    }

    /// An open-loop warm-up and measured run at `rate`. A swapper, when
    /// given, and a prober, when asked for, run alongside and are stopped
    /// when the load ends.
    fn phase(
        &self,
        server: &ServerProcess,
        spec: &Arc<RequestSpec>,
        rate: f64,
        swapper: Option<SwapPlan>,
        probe: bool,
    ) -> Result<Phase> {
        let tally = Arc::new(Tally::default());
        let warm_n = (rate * self.warmup.as_secs_f64()).ceil() as u64;
        let load = OpenLoop::new(
            server.addr,
            rate,
            OPEN_LOOP_CONNECTIONS,
            Stop::Duration(self.measure),
        )
        .warmup(self.warmup);
        let deployment: Arc<str> = DEPLOYMENT.into();
        let load_done = Arc::new(AtomicBool::new(false));
        let probe_done = Arc::new(AtomicBool::new(false));
        let swapper = swapper.map(|plan| spawn_swapper(plan, Arc::clone(&load_done)));
        let prober = probe.then(|| {
            spawn_prober(
                server.addr,
                RequestSpec::clone(spec),
                Arc::clone(&probe_done),
            )
        });
        let meter = CpuMeter::start(Some(server.pid()));
        let report = self.rt.block_on(load.run_with(|_| {
            CheckedCaller::connect(
                server.addr,
                Arc::clone(spec),
                Arc::clone(&deployment),
                warm_n,
                Arc::clone(&tally),
            )
        }));
        // The swapper finishes the swaps it still owes, with the prober
        // still watching, before the prober stops.
        load_done.store(true, Ordering::Relaxed);
        let swapped = swapper.map(|h| h.join().expect("the swapper panicked"));
        probe_done.store(true, Ordering::Relaxed);
        let probe = match prober {
            Some(h) => Some(h.join().expect("the prober panicked")?),
            None => None,
        };
        let (swaps, current) = match swapped {
            Some(outcome) => {
                let outcome = outcome?;
                (outcome.swaps, Some(outcome.current))
            }
            None => (Vec::new(), None),
        };
        let cpu = meter.stop();
        Ok(Phase {
            report: report?,
            tally,
            swaps,
            current,
            probe,
            cpu,
        })
    }

    fn check(&self, addr: SocketAddr, spec: &RequestSpec) -> Result<ferroserve_loadtest::Answer> {
        process::check(&self.rt, addr, spec)
    }
}

impl Phase {
    fn errors(&self) -> u64 {
        self.report.error_count()
    }

    fn print(&self) {
        print_indented(&self.report.to_string());
        let [v1, v2, other] = self.tally.versions();
        println!("  answers by version (measured): v1 {v1}, v2 {v2}, other {other}");
        if !self.swaps.is_empty() {
            let failed = self.swaps.iter().filter(|s| s.failure.is_some()).count();
            let put: Vec<f64> = self
                .swaps
                .iter()
                .filter(|s| s.failure.is_none())
                .map(|s| ms(s.put))
                .collect();
            let s = Stats::of(&put);
            println!(
                "  swaps: {} ({} failed); PUT ms min {} median {} max {}",
                self.swaps.len(),
                failed,
                opt(s.map(|s| s.min)),
                opt(s.map(|s| s.median)),
                opt(s.map(|s| s.max))
            );
            for s in &self.swaps {
                if let Some(f) = &s.failure {
                    loud(&format!("swap v{} -> v{} failed: {f}", s.from, s.to));
                }
            }
        }
        println!("  {}", self.cpu);
        let failures = self.tally.failures.load(Ordering::Relaxed);
        if failures > 0 || self.errors() > 0 {
            loud(&format!(
                "{} inference request(s) failed in this phase ({} counted by the report); the first ones:",
                failures,
                self.errors()
            ));
            for f in self.tally.samples() {
                println!("    {f}");
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let [v1, v2, other] = self.tally.versions();
        let put: Vec<f64> = self
            .swaps
            .iter()
            .filter(|s| s.failure.is_none())
            .map(|s| ms(s.put))
            .collect();
        let mut m = settings::run_json(&self.report, &self.cpu);
        for (k, v) in [
            ("error_samples", json!(self.tally.samples())),
            (
                "answers_by_version",
                json!({"1": v1, "2": v2, "other": other}),
            ),
            ("swaps", json!(self.swaps.len())),
            (
                "failed_swaps",
                json!(self.swaps.iter().filter(|s| s.failure.is_some()).count()),
            ),
            ("put_ms", Stats::json(&put)),
        ] {
            m.insert(k.into(), v);
        }
        serde_json::Value::Object(m)
    }
}

/// min / median / max of a sample.
#[derive(Debug, Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }

    fn json(values: &[f64]) -> serde_json::Value {
        match Stats::of(values) {
            Some(s) => json!({"n": values.len(), "min": s.min, "median": s.median, "max": s.max}),
            None => json!({"n": 0}),
        }
    }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("  {line}");
    }
}

/// A failure that is a bug to report, impossible to miss in the output.
fn loud(text: &str) {
    println!("  !!!!! BUG: {text}");
    eprintln!("swap benchmark: BUG: {text}");
}

fn ratio(ours: Duration, reference: Duration) -> f64 {
    settings::ratio(ours.as_secs_f64(), reference.as_secs_f64())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.1} ms", ms(d)))
}
