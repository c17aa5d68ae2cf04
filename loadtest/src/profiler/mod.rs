//! `ferroserve profile`: serve one model on a loopback port, sweep its
//! batching and instance settings and the offered concurrency within a time
//! budget, sample the server's CPU and memory from `/proc`, and recommend
//! the settings, cores and memory that give the most throughput within a
//! p99 SLO.
//!
//! The model runs in a child `ferroserve serve` on a scratch copy of its
//! bundle; each configuration is applied as a deployment change through
//! the management API (a hot swap), so the sweep measures the real serving
//! path and never touches the user's registry.

pub mod device;
pub mod emit;
pub mod recommend;
pub mod report;
pub mod sampler;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ClosedLoop, Connection, HttpCaller, RequestSpec, Stop};
use clap::Args;

use crate::duration::parse_duration;
use recommend::{Config, Run};
use report::Report;

const CATALOG: &str = include_str!("../../../profiles/catalog.json");
const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["repo", "url", "report"]))]
pub struct ProfileArgs {
    /// Model repository holding the model: it is served from a scratch copy
    /// on a loopback port, and every configuration is tried.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Profile a running server instead (its HTTP port, http://HOST:PORT):
    /// its configuration is not changed, so only the concurrency is swept.
    #[arg(long, requires = "pid")]
    pub url: Option<String>,
    /// The running server's process id, for its CPU and memory (with --url).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The model to profile (its newest registered version).
    #[arg(long, required_unless_present = "report")]
    pub model: Option<String>,
    /// A JSON file of one v2 request or a list; default: random inputs
    /// shaped from the model's metadata.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The p99 latency the recommended settings must meet (e.g. 50ms).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub slo_p99: Duration,
    /// The whole sweep's length (e.g. 2m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub budget: Duration,
    /// Where the report goes (default: profiles/reports/MODEL-TIMESTAMP).
    #[arg(long, conflicts_with = "report")]
    pub out: Option<PathBuf>,
    /// Also write, beside the report, manifests filled with the
    /// recommendation: `k8s` writes k8s-deployment.yaml, the project's
    /// Kubernetes Deployment (docker/k8s/deployment.yaml) with the server
    /// container's resources set to the recommended CPU and memory.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub emit: Vec<emit::Emit>,
    /// Do not profile: read a saved report (its folder or its report.json),
    /// print its summary and write what --emit asks for beside it.
    #[arg(long, value_name = "DIR|report.json")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(String);

fn err(s: impl Into<String>) -> ProfileError {
    ProfileError(s.into())
}

/// The server under test, stopped on drop.
struct ServerUnderTest {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(repo: &Path) -> Result<ServerUnderTest, ProfileError> {
    let exe = std::env::current_exe().map_err(|e| err(format!("cannot find myself: {e}")))?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .args(["--poll-interval-ms", "600000", "--repo"])
        .arg(repo)
        .env("RUST_LOG", "warn,ferroserve=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot start the server: {e}")))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("HTTP server listening on ") {
                if let (Some(tx), Ok(a)) = (tx.take(), line[i + 25..].trim().parse::<SocketAddr>())
                {
                    let _ = tx.send(Ok(a));
                }
            }
            tail.push(line);
            if tail.len() > 30 {
                tail.remove(0);
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(tail.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(addr)) => Ok(ServerUnderTest { child, addr }),
        Ok(Err(log)) => Err(err(format!("the server did not start:\n{log}"))),
        Err(_) => Err(err("the server did not start within 300 s")),
    }
}

async fn http(addr: SocketAddr, spec: &RequestSpec) -> Result<(u16, bytes::Bytes), ProfileError> {
    let mut c = Connection::connect(addr)
        .await
        .map_err(|e| err(format!("cannot connect to the server: {e}")))?;
    let a = c
        .send(spec)
        .await
        .map_err(|e| err(format!("{} {}: {e}", spec.method, spec.path)))?;
    Ok((a.status.as_u16(), a.body))
}

/// The configurations to try: instance counts, batch sizes and queue delays
/// around the bundle's own.
fn grid(manifest: &ferroserve_runtime::manifest::Manifest, cores: usize) -> Vec<Config> {
    let mut instances = vec![1];
    if cores > 1 {
        instances.push(2.min(cores));
    }
    let b = &manifest.batching;
    let (sizes, delays) = if b.max_batch_size == 0 {
        (vec![0], vec![0])
    } else {
        let mut s = vec![1, 8.min(b.max_batch_size), b.max_batch_size];
        s.dedup();
        let mut d = vec![0, 1000];
        if b.max_queue_delay_us > 0 && !d.contains(&b.max_queue_delay_us) {
            d.push(b.max_queue_delay_us);
        }
        (s, d)
    };
    let mut out = Vec::new();
    for &i in &instances {
        for &s in &sizes {
            for &d in &delays {
                // A queue delay does nothing for batches of one.
                if s <= 1 && d > 0 {
                    continue;
                }
                out.push(Config {
                    instances: i,
                    max_batch_size: s,
                    max_queue_delay_us: d,
                });
            }
        }
    }
    out
}

/// Copies the model's newest registered version (the folders' newest where
/// there is no registry) into a scratch repository.
fn scratch_copy(
    repo: &Path,
    model: &str,
) -> Result<
    (
        tempfile::TempDir,
        u64,
        ferroserve_runtime::manifest::Manifest,
    ),
    ProfileError,
> {
    let version = match ferroserve_registry::deployments::snapshot(repo) {
        Ok(s) => s.newest.get(model).copied(),
        Err(_) => None,
    }
    .or_else(|| {
        ferroserve_registry::repository::newest_versions(repo)
            .ok()?
            .into_iter()
            .find(|b| b.name == model)
            .map(|b| b.version)
    })
    .ok_or_else(|| err(format!("model {model:?} not found in {}", repo.display())))?;
    let bundle = repo.join(model).join(version.to_string());
    let manifest =
        ferroserve_runtime::manifest::Manifest::load(&bundle).map_err(|e| err(e.to_string()))?;
    let scratch = tempfile::tempdir().map_err(|e| err(format!("scratch folder: {e}")))?;
    let model_dir = scratch.path().join(model);
    std::fs::create_dir_all(&model_dir)
        .map_err(|e| err(format!("{}: {e}", model_dir.display())))?;
    let dst = model_dir.join("1");
    if ferroserve_runtime::manifest::pbtxt::config_of_version_dir(&bundle).is_some()
        && !bundle
            .join(ferroserve_runtime::manifest::MANIFEST_FILE)
            .is_file()
    {
        // A Triton version folder: the copy is a bundle saying what its
        // config.pbtxt says (the config and labels live a folder up).
        let config = ferroserve_runtime::manifest::pbtxt::read(&repo.join(model))
            .map_err(|e| err(e.to_string()))?;
        ferroserve_registry::triton_import::stage_version(&config, &bundle, &dst, repo)
            .map_err(|e| err(e.to_string()))?;
    } else {
        ferroserve_registry::fsutil::copy_tree_durably(&bundle, &dst)
            .map_err(|e| err(e.to_string()))?;
    }
    Ok((scratch, version, manifest))
}

/// A running server's version of `model` and the settings its main
/// deployment runs with, from its management API.
async fn served_config(addr: SocketAddr, model: &str) -> Result<(u64, Config), ProfileError> {
    let (status, body) = http(
        addr,
        &RequestSpec::get(format!("/v2/admin/endpoints/{model}")),
    )
    .await?;
    if status != 200 {
        return Err(err(format!(
            "GET /v2/admin/endpoints/{model}: {status} {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let view: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| err(format!("endpoint view: {e}")))?;
    let main = view["deployments"]
        .as_array()
        .and_then(|ds| ds.iter().max_by_key(|d| d["weight"].as_u64().unwrap_or(0)))
        .ok_or_else(|| err(format!("endpoint {model:?} has no live deployment")))?;
    let e = &main["effective"];
    let n = |k: &str| {
        e[k].as_u64()
            .ok_or_else(|| err(format!("endpoint view: no {k}")))
    };
    Ok((
        main["version"].as_u64().unwrap_or(0),
        Config {
            instances: n("instances")? as usize,
            max_batch_size: n("max_batch_size")? as usize,
            max_queue_delay_us: n("max_queue_delay_us")?,
        },
    ))
}

/// Runs the profile (or reads a saved one, with `--report`) and writes what
/// `--emit` asks for; returns the report (also written out) and its folder.
pub fn run(args: ProfileArgs) -> Result<(Report, PathBuf), ProfileError> {
    let (mut report, out) = match &args.report {
        Some(path) => {
            let (report, dir) = emit::read_report(path).map_err(err)?;
            if let Some(m) = args.model.as_deref().filter(|m| *m != report.model) {
                return Err(err(format!(
                    "--model {m}: the report {} is the profile of {}",
                    path.display(),
                    report.model
                )));
            }
            (report, dir)
        }
        None => profile(&args)?,
    };
    for &what in &args.emit {
        let path = emit::write(what, &report, &out).map_err(err)?;
        report.emitted.push(path);
    }
    Ok((report, out))
}

fn profile(args: &ProfileArgs) -> Result<(Report, PathBuf), ProfileError> {
    let model = args
        .model
        .as_deref()
        .ok_or_else(|| err("--model is required to profile"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    // Either a server of our own on a scratch copy (every configuration is
    // tried), or the running one (only the concurrency is swept: its
    // configuration is left as it is).
    let (_scratch, server, addr, pid, version, mut configs) = match (&args.repo, &args.url) {
        (Some(repo), _) => {
            let (scratch, version, manifest) = scratch_copy(repo, model)?;
            let server = start_server(scratch.path())?;
            let (addr, pid) = (server.addr, server.child.id());
            let configs = grid(&manifest, cores);
            (Some(scratch), Some(server), addr, pid, version, configs)
        }
        (None, Some(url)) => {
            let addr = crate::command::address(url).map_err(|e| err(e.to_string()))?;
            let pid = args.pid.ok_or_else(|| err("--url needs --pid"))?;
            let (version, config) = rt.block_on(served_config(addr, model))?;
            (None, None, addr, pid, version, vec![config])
        }
        (None, None) => return Err(err("give --repo or --url")),
    };
    // Runs shorter than this measure noise: a short budget tries fewer
    // configurations (the queue-delay variants go first) and fewer
    // concurrencies rather than shorter runs.
    const MIN_RUN_S: f64 = 0.3;
    let affordable = (args.budget.as_secs_f64() * 0.85 / MIN_RUN_S) as usize;
    let mut concurrency: Vec<usize> = CONCURRENCY.to_vec();
    if configs.len() * concurrency.len() + 2 > affordable {
        configs.retain(|c| c.max_queue_delay_us == 0);
    }
    if configs.len() * concurrency.len() + 2 > affordable {
        concurrency = vec![4, 64];
    }
    let planned = configs.len() * concurrency.len() + 2;
    // Each configuration change costs a load and a warm-up; the rest of the
    // budget is split between the runs.
    let per_run = (args.budget.as_secs_f64() * 0.85 / planned as f64).max(MIN_RUN_S);
    let per_run = Duration::from_secs_f64(per_run);
    let warmup = (per_run / 5).min(Duration::from_millis(500));

    let kernel_totals = |rt: &tokio::runtime::Runtime| -> device::Totals {
        match rt.block_on(http(addr, &RequestSpec::get("/metrics".to_string()))) {
            Ok((200, body)) => device::Totals::parse(&String::from_utf8_lossy(&body), model),
            _ => device::Totals::default(),
        }
    };
    let origin = Instant::now();
    let profile_start = kernel_totals(&rt);
    let sampler = sampler::Sampler::start(pid, origin, Duration::from_millis(100));
    let own_server = server.is_some();
    let model = model.to_string();
    let inputs = match &args.input {
        Some(p) => ferroserve_protocol::samples::read(p).map_err(err)?,
        None => {
            let (status, body) =
                rt.block_on(http(addr, &RequestSpec::get(format!("/v2/models/{model}"))))?;
            if status != 200 {
                return Err(err(format!(
                    "model metadata: {status} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            let meta: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| err(format!("model metadata: {e}")))?;
            crate::inputs::random(&meta, 16).map_err(err)?
        }
    };
    let specs: Arc<[RequestSpec]> = inputs
        .iter()
        .map(|i| {
            RequestSpec::post(
                format!("/v2/models/{model}/infer"),
                crate::inputs::http_json(i),
            )
            .header("content-type", "application/json")
            .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into();

    let apply = |c: &Config| -> Result<(), ProfileError> {
        let body = serde_json::json!({"model": model, "settings": {
            "instances": c.instances, "max_batch_size": c.max_batch_size,
            "max_queue_delay_us": c.max_queue_delay_us}});
        let spec = RequestSpec::put(
            format!("/v2/admin/endpoints/{model}/deployments/default"),
            body.to_string(),
        )
        .header("content-type", "application/json")
        .map_err(|e| err(e.to_string()))?;
        let (status, body) = rt.block_on(http(addr, &spec))?;
        if status != 200 {
            return Err(err(format!(
                "applying {c:?}: {status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    };
    let measure = |c: &Config, concurrency: usize| -> Result<Run, ProfileError> {
        let kernels_before = kernel_totals(&rt);
        let started = origin.elapsed().as_secs_f64();
        let specs = Arc::clone(&specs);
        let report = rt
            .block_on(
                ClosedLoop::new(addr, concurrency, Stop::Duration(per_run))
                    .warmup(warmup)
                    .timeout(Duration::from_secs(30))
                    .run_with(move |_| HttpCaller::connect(addr, Arc::clone(&specs))),
            )
            .map_err(|e| err(e.to_string()))?;
        let ended = origin.elapsed().as_secs_f64();
        let device_seconds = kernel_totals(&rt).seconds_since(&kernels_before);
        let window: Vec<sampler::Sample> = sampler
            .samples()
            .into_iter()
            .filter(|s| s.t_s >= started + warmup.as_secs_f64() && s.t_s <= ended)
            .collect();
        let avg = window.iter().map(|s| s.cpu_cores).sum::<f64>() / window.len().max(1) as f64;
        let peak = window.iter().map(|s| s.cpu_cores).fold(0.0, f64::max);
        let rss = window.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
        let l = report.latencies();
        let run = Run {
            config: *c,
            concurrency,
            requests: report.requests,
            ok: report.ok,
            errors: report.error_count(),
            throughput: report.ok_per_second(),
            p50_ms: l.p50.as_secs_f64() * 1e3,
            p99_ms: l.p99.as_secs_f64() * 1e3,
            cpu_cores_avg: avg,
            cpu_cores_peak: peak,
            rss_peak_bytes: rss,
            started_s: started,
            duration_s: ended - started,
            device_seconds,
        };
        eprintln!(
            "  instances {} batch {:>3} delay {:>5} µs  c={:<3} {:>9.1} req/s  p99 {:>8.3} ms  {:.2} cores  {:.0} MiB{}",
            c.instances, c.max_batch_size, c.max_queue_delay_us, concurrency, run.throughput, run.p99_ms,
            run.cpu_cores_avg, rss as f64 / 1048576.0,
            if run.errors > 0 { format!("  {} errors", run.errors) } else { String::new() }
        );
        Ok(run)
    };

    eprintln!(
        "profiling {model} version {version}: {} configurations x {} concurrencies, {:.1} s each",
        configs.len(),
        concurrency.len(),
        per_run.as_secs_f64()
    );
    let mut runs = Vec::new();
    for c in &configs {
        if own_server {
            apply(c)?;
        }
        for &n in &concurrency {
            runs.push(measure(c, n)?);
        }
    }
    // Refinement: concurrencies half-way to the best run's neighbours.
    if let Some(best) = recommend::best(&runs, args.slo_p99.as_secs_f64() * 1e3).cloned() {
        let i = CONCURRENCY
            .iter()
            .position(|&c| c == best.concurrency)
            .unwrap_or(0);
        let mut extra = Vec::new();
        if i > 0 {
            extra.push((CONCURRENCY[i - 1] + best.concurrency) / 2);
        }
        if i + 1 < CONCURRENCY.len() {
            extra.push((best.concurrency + CONCURRENCY[i + 1]) / 2);
        }
        extra.retain(|c| !CONCURRENCY.contains(c));
        if !extra.is_empty() {
            if own_server {
                apply(&best.config)?;
            }
            for n in extra {
                runs.push(measure(&best.config, n)?);
            }
        }
    }
    let device = kernel_totals(&rt).profile_since(&profile_start);
    let timeline: Vec<report::TimelinePoint> =
        sampler.samples().into_iter().map(Into::into).collect();
    drop(sampler);
    drop(server);
    let slo_ms = args.slo_p99.as_secs_f64() * 1e3;
    let peak_rss = timeline.iter().map(|p| p.rss_bytes).max().unwrap_or(0);
    let recommendation = match recommend::best(&runs, slo_ms) {
        Some(b) => Some(recommend::recommend(b, slo_ms, peak_rss, CATALOG).map_err(err)?),
        None => None,
    };
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        model: model.clone(),
        version,
        slo_p99_ms: slo_ms,
        budget_s: args.budget.as_secs_f64(),
        cores,
        runs,
        timeline,
        recommendation,
        device,
        emitted: Vec::new(),
    };
    let out = match &args.out {
        Some(o) => o.clone(),
        None => PathBuf::from("profiles/reports").join(format!(
            "{}-{}",
            model,
            ferroserve_registry::now_rfc3339().replace(':', "")
        )),
    };
    std::fs::create_dir_all(&out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&report).expect("the report serializes"),
    )
    .map_err(|e| err(format!("{}: {e}", out.display())))?;
    std::fs::write(out.join("report.html"), report::html(&report))
        .map_err(|e| err(format!("{}: {e}", out.display())))?;
    Ok((report, out))
}

/// The terminal summary.
pub fn print(report: &Report, out: &Path) {
    println!(
        "profile of {} version {} ({} runs)",
        report.model,
        report.version,
        report.runs.len()
    );
    match &report.recommendation {
        Some(r) => {
            println!(
                "recommended: instances {}, max_batch_size {}, max_queue_delay_us {} at concurrency {}",
                r.config.instances, r.config.max_batch_size, r.config.max_queue_delay_us, r.concurrency
            );
            println!(
                "expect {:.1} req/s with p99 {:.2} ms (SLO {} ms {})",
                r.expected_throughput,
                r.expected_p99_ms,
                report.slo_p99_ms,
                if r.slo_met {
                    "met"
                } else {
                    "NOT met by any run"
                }
            );
            println!(
                "cpu {} (peak {:.2} cores + 25%), memory {} (peak {:.1} MiB + 25%); kubernetes size {}, cloud: {}",
                r.cpu,
                r.measured_peak_cpu_cores,
                r.memory,
                r.measured_peak_rss_bytes as f64 / 1048576.0,
                r.sizes.kubernetes.as_deref().unwrap_or("none fits"),
                r.sizes.cloud.join(", ")
            );
            println!("\n{}\n{}", r.bundle_toml, r.kubernetes_resources);
        }
        None => println!("no run succeeded without errors: nothing to recommend"),
    }
    let html = out.join("report.html");
    if html.is_file() {
        println!(
            "report: {} and {}",
            out.join("report.json").display(),
            html.display()
        );
    } else {
        // A saved report (--report) whose page was not kept.
        println!("report: {}", out.join("report.json").display());
    }
    for path in &report.emitted {
        println!("wrote {}", path.display());
    }
}
