//! `ferroserve loadtest`: the load generator of `ferroserve-loadtest` on
//! the command line, over HTTP (JSON or the binary extension) or gRPC,
//! closed loop (`--concurrency`) or open loop (`--rate`, latencies from the
//! intended send time, so a stalled server is not hidden).

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    Caller, ClosedLoop, Connection, Counted, ErrorKind, HttpCaller, OpenLoop, Progress, Report,
    RequestSpec, Stop,
};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::duration::parse_duration;
use crate::grpc_connection::{self, GrpcClient};
use crate::inputs;
use ferroserve_protocol::grpc::proto::ModelInferRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Http,
    Grpc,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("load").required(true).args(["concurrency", "rate"]))]
#[command(group = clap::ArgGroup::new("length").required(true).args(["duration", "requests"]))]
pub struct LoadtestArgs {
    /// The server: http://HOST:PORT (its HTTP port for --protocol http, its
    /// gRPC port for grpc).
    #[arg(long)]
    pub url: String,
    /// The model (endpoint) to call.
    #[arg(long)]
    pub model: String,
    /// A version to pin (/versions/V); default: whatever the endpoint routes to.
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: Protocol,
    /// HTTP: send tensors with the binary tensor data extension instead of JSON.
    #[arg(long)]
    pub binary: bool,
    /// Closed loop: this many connections, each sending its next request when
    /// the previous answer is in.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, sent on schedule whatever the server does.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: connections available to carry the scheduled requests.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measure for this long (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measure exactly this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load sent before measuring (e.g. 2s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// A request with no answer after this long counts as a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A JSON file of one v2 inference request or a list of them, sent in
    /// turn; default: random inputs shaped from the model's metadata.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print the result as JSON (for scripts) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Bearer token (default: $FERROSERVE_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
}

/// What went wrong before any load was sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadtestError(String);

fn err(s: impl Into<String>) -> LoadtestError {
    LoadtestError(s.into())
}

/// The result of a run, as printed with `--json`.
pub fn report_json(r: &Report, args: &LoadtestArgs) -> serde_json::Value {
    let l = r.latencies();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "model": args.model,
        "protocol": match args.protocol { Protocol::Http => if args.binary { "http-binary" } else { "http-json" }, Protocol::Grpc => "grpc" },
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "concurrency": args.concurrency,
        "rate": args.rate,
        "requests": r.requests,
        "ok": r.ok,
        "errors": r.errors.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "elapsed_s": r.elapsed.as_secs_f64(),
        "throughput": r.throughput(),
        "ok_per_second": r.ok_per_second(),
        "latency_ms": {"p50": ms(l.p50), "p90": ms(l.p90), "p99": ms(l.p99), "p999": ms(l.p999), "max": ms(l.max)},
    })
}

pub fn address(url: &str) -> Result<SocketAddr, LoadtestError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err(format!("--url {url:?}: expected http://HOST:PORT")))?;
    let host = rest.trim_end_matches('/');
    host.to_socket_addrs()
        .map_err(|e| err(format!("--url {url:?}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("--url {url:?}: no address")))
}

/// One gRPC client slot: its own HTTP/2 connection, one call at a time,
/// sending the run's requests in turn.
struct GrpcCaller {
    addr: SocketAddr,
    /// `None` until a connect succeeds, and again after the connection
    /// broke (the next call reconnects).
    client: Option<GrpcClient>,
    requests: Arc<[ModelInferRequest]>,
    token: Option<Arc<str>>,
}

impl Caller for GrpcCaller {
    async fn call(&mut self, ticket: u64) -> Result<(), ErrorKind> {
        use std::error::Error as _;
        let client = match &mut self.client {
            Some(c) => c,
            None => match grpc_connection::connect(self.addr).await {
                Ok(c) => self.client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err(ErrorKind::Connect);
                }
            },
        };
        let msg = self.requests[(ticket % self.requests.len() as u64) as usize].clone();
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
        }
        match client.model_infer(req).await {
            Ok(_) => Ok(()),
            Err(status) if status.source().is_some() => {
                self.client = None;
                Err(ErrorKind::Io)
            }
            Err(status) => Err(ErrorKind::GrpcStatus(status.code() as i32)),
        }
    }
}

/// Runs the load test; prints the summary (or JSON) on stdout and a live
/// progress line on stderr when it is a terminal.
pub fn run(args: LoadtestArgs) -> Result<Report, LoadtestError> {
    let addr = address(&args.url)?;
    let token: Option<String> = args.token.clone().or_else(|| {
        std::env::var("FERROSERVE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let stop = match (args.duration, args.requests) {
        (Some(d), _) => Stop::Duration(d),
        (None, Some(n)) => Stop::Requests(n),
        (None, None) => return Err(err("give --duration or --requests")),
    };
    // One thread, as wrk's default: on a small machine every core the
    // generator takes is taken from the server it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start the runtime: {e}")))?;
    let versioned = match &args.version {
        Some(v) => format!("/v2/models/{}/versions/{v}", args.model),
        None => format!("/v2/models/{}", args.model),
    };
    let with_auth = |spec: RequestSpec| -> Result<RequestSpec, LoadtestError> {
        match &token {
            Some(t) => spec
                .header("authorization", format!("Bearer {t}"))
                .map_err(|e| err(e.to_string())),
            None => Ok(spec),
        }
    };
    let inputs = match &args.input {
        Some(path) => inputs::from_file(path).map_err(err)?,
        None => {
            if args.protocol == Protocol::Grpc {
                return Err(err(
                    "--protocol grpc needs --input (random inputs are shaped from the HTTP metadata route)",
                ));
            }
            let meta = rt.block_on(async {
                let mut c = Connection::connect(addr)
                    .await
                    .map_err(|e| err(format!("cannot connect to {}: {e}", args.url)))?;
                let answer = c
                    .send(&with_auth(RequestSpec::get(versioned.clone()))?)
                    .await
                    .map_err(|e| err(format!("GET {versioned}: {e}")))?;
                if !answer.status.is_success() {
                    return Err(err(format!(
                        "GET {versioned}: {} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )));
                }
                serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .map_err(|e| err(format!("GET {versioned}: not JSON: {e}")))
            })?;
            inputs::random(&meta, 16).map_err(err)?
        }
    };
    let progress = Arc::new(Progress::default());
    let show = std::io::stderr().is_terminal();
    let started = Instant::now();
    let ticker = show.then(|| {
        let p = Arc::clone(&progress);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            while rx.recv_timeout(Duration::from_millis(500)).is_err() {
                let (ok, errors) = p.counts();
                let secs = started.elapsed().as_secs_f64();
                eprint!(
                    "\r{secs:6.1} s  ok {ok}  errors {errors}  {:.0} req/s   ",
                    (ok + errors) as f64 / secs.max(1e-9)
                );
            }
            eprintln!();
        });
        (tx, handle)
    });
    let report = match args.protocol {
        Protocol::Http => {
            let path = format!("{versioned}/infer");
            let specs: Vec<RequestSpec> = inputs
                .iter()
                .map(|i| {
                    let spec = if args.binary {
                        let (body, n) = inputs::http_binary(i);
                        RequestSpec::post(path.clone(), body)
                            .header("inference-header-content-length", n.to_string())
                            .and_then(|s| s.header("content-type", "application/octet-stream"))
                            .map_err(|e| err(e.to_string()))?
                    } else {
                        RequestSpec::post(path.clone(), inputs::http_json(i))
                            .header("content-type", "application/json")
                            .map_err(|e| err(e.to_string()))?
                    };
                    with_auth(spec)
                })
                .collect::<Result<_, _>>()?;
            let specs: Arc<[RequestSpec]> = specs.into();
            let connect = |_| {
                let specs = Arc::clone(&specs);
                let p = Arc::clone(&progress);
                async move { Counted::new(HttpCaller::connect(addr, specs).await, p) }
            };
            rt.block_on(run_loop(&args, addr, stop, connect))
        }
        Protocol::Grpc => {
            let version = args.version.clone().unwrap_or_default();
            let requests: Arc<[ModelInferRequest]> = inputs
                .iter()
                .map(|i| inputs::grpc_request(&args.model, &version, i))
                .collect::<Vec<_>>()
                .into();
            let token: Option<Arc<str>> = token.as_deref().map(Arc::from);
            let connect = |_| {
                let (requests, token) = (Arc::clone(&requests), token.clone());
                let p = Arc::clone(&progress);
                async move {
                    let client = grpc_connection::connect(addr).await.ok();
                    Counted::new(
                        GrpcCaller {
                            addr,
                            client,
                            requests,
                            token,
                        },
                        p,
                    )
                }
            };
            rt.block_on(run_loop(&args, addr, stop, connect))
        }
    };
    if let Some((tx, handle)) = ticker {
        let _ = tx.send(());
        let _ = handle.join();
    }
    let report = report.map_err(|e| err(e.to_string()))?;
    if args.json {
        println!("{}", report_json(&report, &args));
    } else {
        let mode = match (args.concurrency, args.rate) {
            (_, Some(r)) => format!(
                "open loop at {r} req/s over {} connections",
                args.connections
            ),
            (Some(c), None) => format!("closed loop, concurrency {c}"),
            _ => String::new(),
        };
        println!("{} {} ({mode})", args.model, args.url);
        println!("{report}");
    }
    Ok(report)
}

async fn run_loop<C, F, Fut>(
    args: &LoadtestArgs,
    addr: SocketAddr,
    stop: Stop,
    connect: F,
) -> Result<Report, crate::LoadError>
where
    C: Caller,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = C>,
{
    match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            OpenLoop::new(addr, rate, args.connections, stop)
                .warmup(args.warmup)
                .timeout(args.timeout)
                .run_with(connect)
                .await
        }
        (None, c) => {
            ClosedLoop::new(addr, c.unwrap_or(1), stop)
                .warmup(args.warmup)
                .timeout(args.timeout)
                .run_with(connect)
                .await
        }
    }
}
