//! The `ferroserve` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferroserve::grpc::GrpcLimits;
use ferroserve::http::{AppState, HttpLimits};
use ferroserve::listener::{self, ConnOptions};
use ferroserve::metrics::Metrics;
use ferroserve::model::Model;
use ferroserve::models::ModelTable;
use ferroserve::{repository, runtime};
use hyper_util::service::TowerToHyperService;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ferroserve",
    version,
    about = "Serve ONNX models over the Open Inference Protocol (KServe v2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the newest version of every bundle in a repository and serve them over HTTP and gRPC.
    ///
    /// The repository is a folder laid out as REPO/NAME/VERSION/bundle.toml; each model
    /// is reachable as /v2/models/NAME (and /v2/models/NAME/versions/VERSION).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Model repository folder (REPO/NAME/VERSION/bundle.toml).
    #[arg(long)]
    repo: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// HTTP port; 0 picks a free port (the ready log line names it).
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// gRPC port (inference.GRPCInferenceService); 0 picks a free port.
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_grpc_message_bytes: usize,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_s: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let lib = runtime::init_onnxruntime()?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let metrics = Arc::new(Metrics::new());
    let mut models = Vec::new();
    for bundle in repository::newest_versions(&args.repo)? {
        let manifest = bundle.manifest()?;
        let model = Model::load(manifest, bundle.version, &metrics).with_context(|| {
            format!("loading model {:?} version {}", bundle.name, bundle.version)
        })?;
        tracing::info!(
            model = %model.name,
            version = model.version,
            instances = model.manifest.instances.count,
            max_batch_size = model.manifest.batching.max_batch_size,
            "model loaded"
        );
        models.push(model);
    }
    let state = Arc::new(AppState {
        models: Arc::new(ModelTable::new(models)),
        metrics,
        limits: HttpLimits {
            max_body_bytes: args.max_body_bytes,
            ..HttpLimits::default()
        },
        ready: AtomicBool::new(false),
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("ferroserve-io")
        .enable_all()
        .build()?;
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
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        state.ready.store(true, Ordering::Release);
        tracing::info!("HTTP server listening on {}", http.local_addr()?);
        tracing::info!("gRPC server listening on {}", grpc.local_addr()?);
        let grace = Duration::from_secs(args.shutdown_grace_s);
        let grpc_service = ferroserve::grpc::service(
            Arc::clone(&state),
            &GrpcLimits {
                max_message_bytes: args.max_grpc_message_bytes,
            },
        );
        let grpc_opts = ConnOptions::default();
        let signal = shutdown_signal(Arc::clone(&state));
        tokio::join!(
            ferroserve::http::serve(http, Arc::clone(&state), stopped(), grace),
            listener::serve(
                grpc,
                TowerToHyperService::new(grpc_service),
                &grpc_opts,
                stopped(),
                grace
            ),
            async move {
                signal.await;
                let _ = stop_tx.send(true);
            }
        );
        anyhow::Ok(())
    })?;
    state.models.clear();
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, after marking the server not ready.
async fn shutdown_signal(state: Arc<AppState>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    state.ready.store(false, Ordering::Release);
    tracing::info!("shutdown signal received: no longer ready, draining in-flight requests");
}
