//! The `ferroserve` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferroserve::http::{AppState, HttpLimits};
use ferroserve::metrics::Metrics;
use ferroserve::model::Model;
use ferroserve::models::ModelTable;
use ferroserve::{repository, runtime};

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
    /// Load the newest version of every bundle in a repository and serve them over HTTP.
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
        let addr: SocketAddr = format!("{}:{}", args.host, args.http_port)
            .parse()
            .with_context(|| {
                format!(
                    "--host {:?} and --http-port do not form an address",
                    args.host
                )
            })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        state.ready.store(true, Ordering::Release);
        tracing::info!("HTTP server listening on {local}");
        let grace = Duration::from_secs(args.shutdown_grace_s);
        ferroserve::http::serve(
            listener,
            Arc::clone(&state),
            shutdown_signal(Arc::clone(&state)),
            grace,
        )
        .await?;
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
