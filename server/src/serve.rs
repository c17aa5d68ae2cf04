//! `ferroserve serve`: the composition root of the server. It reads the
//! configuration (tokens, TLS, the registry, `--config`), builds what the
//! request handlers share, loads and warms every deployment, then serves
//! HTTP and gRPC until SIGTERM or SIGINT, and drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferroserve_frontend::auth::{
    AuthPolicy, TokenSet, INFERENCE_TOKENS_ENV, MANAGEMENT_TOKENS_ENV,
};
use ferroserve_frontend::endpoints::mirror::MirrorPool;
use ferroserve_frontend::endpoints::{Deployer, RoutingTable};
use ferroserve_frontend::events::webhook::{self, RetryPolicy};
use ferroserve_frontend::grpc::GrpcLimits;
use ferroserve_frontend::listener::{self, ConnLimits, ConnOptions};
use ferroserve_frontend::metrics::Metrics;
use ferroserve_frontend::state::{AppState, HttpLimits};
use ferroserve_registry as registry;
use ferroserve_registry::events::{BusConfig, EventBus};
use hyper_util::service::TowerToHyperService;

use crate::model_dir;
use crate::python::PythonArgs;
use crate::webhook_args::WebhookArgs;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Model repository folder (REPO/NAME/VERSION/bundle.toml, or a Triton
    /// model repository).
    #[arg(long)]
    pub repo: PathBuf,
    /// Serve, for each model that has this registry alias, the aliased version
    /// instead of the newest (models without it: the newest).
    #[arg(long, value_name = "ALIAS")]
    pub alias: Option<String>,
    /// Endpoints and deployments to serve (TOML, see the README): each one
    /// replaces the registry's endpoint of that name at start-up; the
    /// registry keeps the running state across restarts.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How often the registry is read for changes made outside this server
    /// (the CLI's deploy, traffic, alias, register), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    pub poll_interval_ms: u64,
    /// Mirrored (shadow) requests in flight at once; beyond it copies are
    /// dropped and counted in ferroserve_mirror_dropped_total.
    #[arg(long, default_value_t = 64)]
    pub mirror_max_inflight: usize,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// HTTP port; 0 picks a free port (the ready log line names it).
    #[arg(long, default_value_t = 8000)]
    pub http_port: u16,
    /// gRPC port (inference.GRPCInferenceService); 0 picks a free port.
    #[arg(long, default_value_t = 8001)]
    pub grpc_port: u16,
    /// A port serving GET /metrics alone (Triton's 8002), for scrapers a
    /// network policy keeps off the inference ports; /metrics stays on the
    /// HTTP port too. It has 64 connections of its own, beyond
    /// --max-connections. Unset: no such port.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// The name to serve a KServe model directory's model under (KServe's
    /// runtimes take the InferenceService name so): --repo may then be a
    /// bare model.onnx (or a folder holding one), one bundle folder, a
    /// Triton model folder, or a repository of one model, each served as
    /// /v2/models/NAME; a repository of several models must hold NAME.
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// Largest gRPC message accepted or sent, in bytes; a larger request
    /// message gets RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64 << 20, help_heading = "Limits")]
    pub max_grpc_message_bytes: usize,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 64 << 20, help_heading = "Limits")]
    pub max_body_bytes: usize,
    /// Largest bundle upload to POST /v2/admin/models/NAME/versions, in
    /// bytes, compressed and once extracted alike; larger gets 413.
    #[arg(long, default_value_t = 256 << 20, help_heading = "Limits")]
    pub max_upload_bytes: usize,
    /// Seconds a client has to send a request body once its headers have
    /// arrived; a slower body gets 408 and the connection is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub body_read_timeout_s: u64,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT (and
    /// after --shutdown-delay-s).
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_s: u64,
    /// Seconds to go on accepting and serving after SIGTERM/SIGINT, already
    /// unready, before the drain starts: the time load balancers (a
    /// Kubernetes Service's endpoints) take to stop sending. A second
    /// signal cuts it short.
    #[arg(long, default_value_t = 0)]
    pub shutdown_delay_s: u64,

    /// Seconds an HTTP/1 client has to send a complete request head (also
    /// bounds the wait for the next request on a keep-alive connection).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub header_read_timeout_s: u64,
    /// Seconds after which a connection with no request in flight and no
    /// activity is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub idle_timeout_s: u64,
    /// Connections open at once, over the HTTP and gRPC ports together;
    /// beyond it a new connection is closed at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_connections: u64,
    /// Concurrent HTTP/2 streams (requests) per connection.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    http2_max_streams: u32,

    /// PEM certificate chain (leaf first) to serve HTTP and gRPC over TLS;
    /// needs --tls-key.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_key",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
    /// File of bearer tokens accepted on inference routes (/v2, /v2/models/...,
    /// every gRPC method): one per line, blank lines and # comments ignored.
    /// Also read: FERROSERVE_INFERENCE_TOKENS (comma-separated). Neither set:
    /// inference routes are open.
    #[arg(long, value_name = "PATH", help_heading = "Security")]
    pub inference_token_file: Option<PathBuf>,
    /// File of bearer tokens accepted on management routes (/v2/repository/...,
    /// /v2/admin/...), same format. Also read: FERROSERVE_MANAGEMENT_TOKENS.
    /// Neither set: management routes are open.
    #[arg(long, value_name = "PATH", help_heading = "Security")]
    pub management_token_file: Option<PathBuf>,

    // Boxed: it would make `Serve` much the largest variant of `Command`.
    #[command(flatten)]
    pub webhook: Box<WebhookArgs>,
    /// Seconds one webhook delivery attempt may take.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    pub webhook_timeout_s: u64,
    /// Retries of a failed webhook delivery before the event is given up
    /// (logged and counted in ferroserve_webhook_failures_total).
    #[arg(long, default_value_t = 5, help_heading = "Events")]
    pub webhook_retries: u32,
    /// Wait before the first retry, in milliseconds; doubles each retry, at
    /// most 10 s.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    pub webhook_backoff_ms: u64,
    /// Events queued per webhook; beyond it new events are dropped (counted).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    pub webhook_queue: u64,
    /// Seconds between keep-alive comments on /v2/admin/events.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    pub events_keepalive_s: u64,
    #[command(flatten)]
    pub python: PythonArgs,
}

pub fn run(mut args: ServeArgs) -> Result<()> {
    // Configuration errors first: a bad token file or certificate should not
    // wait for the models to load.
    let auth = AuthPolicy::from_config(
        args.inference_token_file.as_deref(),
        args.management_token_file.as_deref(),
    )?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ferroserve_frontend::tls::acceptor(cert, key)?),
        (None, None) => None,
        // clap's `requires` makes these unreachable; kept for a clear message.
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
    };
    let webhooks = args.webhook.webhooks()?;
    let webhook_client = args
        .webhook
        .client(&webhooks, Duration::from_secs(args.webhook_timeout_s))?;
    for h in &webhooks {
        if h.is_signed() {
            tracing::info!(url = %h.name(), "webhook: deliveries signed (Standard Webhooks)");
        } else {
            tracing::warn!(url = %h.name(), "webhook: deliveries unsigned (--webhook-unsigned)");
        }
    }
    log_security(&auth, tls.is_some());
    warn_if_few_file_descriptors(args.max_connections);
    // KServe's layouts (a bare model, one bundle) become a repository
    // staged under the temporary folder; `_staged` removes it at exit.
    let _staged = model_dir::resolve(&args.repo, args.model_name.as_deref())?;
    if let Some(staged) = &_staged {
        tracing::info!(from = %args.repo.display(), repository = %staged.repo().display(), "serving a model directory through a staged repository");
        args.repo = staged.repo().to_path_buf();
    }
    let lib = ferroserve_runtime::onnxruntime::init()?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    args.python.configure()?;
    // A repository folder without a registry gets one on first use, with a
    // row for every version already there. Serving reads the folders either
    // way, so a registry that cannot be written (a read-only mount) is
    // reported and serving goes on.
    let registry_ok = match registry::import::ensure(&args.repo) {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(
                versions = n,
                "registry created from the existing version folders"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "model registry unavailable; serving from the folders alone");
            false
        }
    };
    if let Some(config) = &args.config {
        let endpoints = ferroserve_frontend::endpoints::config::load(config)?;
        if !registry_ok {
            anyhow::bail!(
                "--config {}: the registry of {} cannot be written, and deployments live there",
                config.display(),
                args.repo.display()
            );
        }
        registry::deployments::apply_config(
            &args.repo,
            &endpoints,
            &format!(
                "ferroserve serve --config ({})",
                registry::register::default_user()
            ),
        )?;
        tracing::info!(config = %config.display(), endpoints = endpoints.len(), "deployment configuration applied");
    }
    let metrics = Arc::new(Metrics::new());
    let (events, webhook_queues) = EventBus::new(
        BusConfig {
            webhooks: webhooks.len(),
            webhook_queue: usize::try_from(args.webhook_queue).unwrap_or(usize::MAX),
            audit_repo: Some(args.repo.clone()),
            actor: format!("ferroserve serve ({})", registry::register::default_user()),
            ..BusConfig::default()
        },
        &metrics.events,
    );
    if !registry::Store::exists(&args.repo) {
        // Nothing registered and nothing to import: say what is missing.
        registry::repository::newest_versions(&args.repo)?;
    }
    if registry_ok {
        // Only for its warnings: a newest version folder without a registry
        // row (an interrupted registration, a hand-made folder) is not
        // served; the newest registered version is.
        if let Ok(mut bundles) = registry::repository::newest_versions(&args.repo) {
            registry::models::recorded_only(&args.repo, &mut bundles)?;
        }
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("ferroserve-io")
        .enable_all()
        .build()?;
    let routes = Arc::new(RoutingTable::new(Arc::new(MirrorPool::new(
        args.mirror_max_inflight,
        &metrics,
    ))));
    let deployer = Arc::new(Deployer::new(
        args.repo.clone(),
        Arc::clone(&metrics),
        events.clone(),
        Arc::clone(&routes),
        args.alias.clone(),
        registry_ok,
    ));
    // SIGTERM/SIGINT handlers go in before any model loads: an OpenCL
    // driver may bring LLVM, which installs its own handlers for these
    // signals. Installed after it, ours would chain to LLVM's, which
    // restores the default action and re-raises: the process would die
    // instead of draining. Installed before, LLVM chains to ours.
    let signals = rt.block_on(async { ShutdownSignals::install() })?;
    // Every endpoint loads and warms up before the ports open; a
    // deployment that fails stops start-up, as a broken bundle stops
    // Triton's (later changes that fail leave the old version serving).
    rt.block_on(deployer.reconcile("startup", true))
        .context("starting the deployments")?;
    if routes.all().is_empty() {
        anyhow::bail!(
            "nothing to serve in {}: no registered model and no endpoint (register a bundle first)",
            args.repo.display()
        );
    }
    let state = Arc::new(AppState {
        routes,
        deployer: Some(Arc::clone(&deployer)),
        rollouts: Arc::default(),
        metrics,
        limits: HttpLimits {
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: Duration::from_secs(args.body_read_timeout_s),
        },
        ready: AtomicBool::new(false),
        events,
        events_keepalive: Duration::from_secs(args.events_keepalive_s),
        repo: Some(args.repo.clone()),
        max_upload_bytes: args.max_upload_bytes,
    });
    // One set of options for both ports: they share the connection budget.
    let conn_opts = ConnOptions::new(
        ConnLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_s),
            idle_timeout: Duration::from_secs(args.idle_timeout_s),
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            http2_max_concurrent_streams: args.http2_max_streams,
            ..ConnLimits::default()
        },
        tls,
        auth,
        &state.metrics,
    );
    rt.block_on(async {
        let bind = |port: u16, flag: &'static str| {
            let host = args.host.clone();
            async move {
                let addr: SocketAddr = format!("{host}:{port}").parse().with_context(|| {
                    format!("--host {host:?} and {flag} {port} do not form an address")
                })?;
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} ({flag})"))
            }
        };
        let http = bind(args.http_port, "--http-port").await?;
        let grpc = bind(args.grpc_port, "--grpc-port").await?;
        let metrics_port = match args.metrics_port {
            Some(port) => Some(bind(port, "--metrics-port").await?),
            None => None,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        webhook::spawn(
            &state.events,
            webhook_client,
            webhooks,
            webhook_queues,
            RetryPolicy {
                timeout: Duration::from_secs(args.webhook_timeout_s),
                retries: args.webhook_retries,
                backoff: Duration::from_millis(args.webhook_backoff_ms),
                ..RetryPolicy::default()
            },
        );
        state.ready.store(true, Ordering::Release);
        deployer.watch(Duration::from_millis(args.poll_interval_ms));
        tracing::info!("HTTP server listening on {}", http.local_addr()?);
        tracing::info!("gRPC server listening on {}", grpc.local_addr()?);
        if let Some(m) = &metrics_port {
            tracing::info!("metrics server listening on {}", m.local_addr()?);
        }
        let grace = Duration::from_secs(args.shutdown_grace_s);
        let grpc_service = ferroserve_frontend::grpc::service(
            Arc::clone(&state),
            &GrpcLimits {
                max_message_bytes: args.max_grpc_message_bytes,
            },
        );
        let signal = shutdown_signal(
            signals,
            Arc::clone(&state),
            Duration::from_secs(args.shutdown_delay_s),
        );
        let state_for_signal = Arc::clone(&state);
        tokio::join!(
            ferroserve_frontend::http::serve(
                http,
                Arc::clone(&state),
                &conn_opts,
                stopped(),
                grace
            ),
            listener::serve(
                grpc,
                TowerToHyperService::new(grpc_service),
                &conn_opts,
                stopped(),
                grace
            ),
            async {
                if let Some(m) = metrics_port {
                    ferroserve_frontend::http::serve_metrics(
                        m,
                        Arc::clone(&state),
                        &conn_opts.with_own_connection_limit(METRICS_CONNECTIONS),
                        stopped(),
                        grace,
                    )
                    .await;
                }
            },
            async move {
                signal.await;
                // Ends event streams first: an open one would otherwise
                // hold the drain up for the whole grace period.
                state_for_signal.events.close();
                let _ = stop_tx.send(true);
            }
        );
        anyhow::Ok(())
    })?;
    state.events.flush_audit(Duration::from_secs(2));
    // Every accepted capture sample reaches a closed file before exit.
    rt.block_on(deployer.close_captures());
    state.routes.clear();
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Says what is protected, never with what: token counts only.
fn log_security(auth: &AuthPolicy, tls: bool) {
    let describe = |set: &Option<TokenSet>| match set {
        Some(s) => format!("bearer token required ({} accepted)", s.len()),
        None => "open".to_string(),
    };
    tracing::info!(
        tls,
        inference = %describe(&auth.inference),
        management = %describe(&auth.management),
        "security settings"
    );
    if auth.inference.is_some() && auth.management.is_none() {
        tracing::warn!(
            "inference routes need a token but management routes are open: \
             set --management-token-file or {MANAGEMENT_TOKENS_ENV}"
        );
    }
    if auth.inference.is_none() && auth.management.is_some() {
        tracing::info!(
            "inference routes are open (set --inference-token-file or {INFERENCE_TOKENS_ENV} to protect them)"
        );
    }
}

/// Past the open-file limit, accept() fails (counted as `accept_failed`)
/// before --max-connections can turn connections away cleanly.
fn warn_if_few_file_descriptors(max_connections: u64) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    // Models, logs and listeners need descriptors too.
    const SPARE: u64 = 256;
    if let Some(soft) = soft.filter(|&s| s < max_connections.saturating_add(SPARE)) {
        tracing::warn!(
            open_file_limit = soft,
            max_connections,
            "the open-file limit is below --max-connections plus {SPARE} spare: \
             raise it (ulimit -n) or lower --max-connections"
        );
    }
}

/// Connections the metrics port takes, apart from --max-connections:
/// enough for a few Prometheus replicas and a human with curl.
const METRICS_CONNECTIONS: usize = 64;

/// The SIGTERM and SIGINT streams, registered once at start-up.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
        })
    }
}

/// Resolves once the drain should start: on SIGTERM or SIGINT the server
/// turns unready at once, then goes on serving for `delay` (cut short by a
/// second signal), as Kubernetes needs while it takes the pod out of its
/// Services' endpoints.
async fn shutdown_signal(mut signals: ShutdownSignals, state: Arc<AppState>, delay: Duration) {
    tokio::select! {
        _ = signals.term.recv() => {},
        _ = signals.int.recv() => {},
    }
    state.ready.store(false, Ordering::Release);
    if delay.is_zero() {
        tracing::info!("shutdown signal received: no longer ready, draining in-flight requests");
        return;
    }
    tracing::info!(
        delay_s = delay.as_secs_f64(),
        "shutdown signal received: no longer ready; serving on until the delay ends, then draining"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {},
        _ = signals.term.recv() => tracing::info!("second signal: draining now"),
        _ = signals.int.recv() => tracing::info!("second signal: draining now"),
    }
    tracing::info!("shutdown delay over: no longer accepting, draining in-flight requests");
}
