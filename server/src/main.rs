//! The `ferroserve` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferroserve::auth::{AuthPolicy, INFERENCE_TOKENS_ENV, MANAGEMENT_TOKENS_ENV};
use ferroserve::endpoints::cli as ecli;
use ferroserve::endpoints::mirror::MirrorPool;
use ferroserve::endpoints::{Deployer, RoutingTable};
use ferroserve::events::signature::Signer;
use ferroserve::events::webhook::{self, RetryPolicy};
use ferroserve::events::{BusConfig, EventBus};
use ferroserve::grpc::GrpcLimits;
use ferroserve::http::{AppState, HttpLimits};
use ferroserve::listener::{self, ConnLimits, ConnOptions};
use ferroserve::metrics::Metrics;
use ferroserve::{registry, runtime};
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
    /// Serve a repository's endpoints over HTTP and gRPC.
    ///
    /// The repository is a folder laid out as REPO/NAME/VERSION/bundle.toml with its
    /// registry, REPO/registry.db; Triton's layout (REPO/NAME/config.pbtxt with
    /// REPO/NAME/N/model.onnx, each model serving the versions its version_policy
    /// selects) is served as it is, alone or mixed with bundles. Each endpoint of the registry (see `deploy`,
    /// `traffic`, --config) is reachable as /v2/models/ENDPOINT; every other registered
    /// model as /v2/models/NAME, serving its newest version. Changes to the registry are
    /// applied while serving, with hot swaps that fail no request.
    Serve(ServeArgs),
    /// Register a bundle folder as the next version of a model in a repository.
    ///
    /// Checks the bundle (its manifest, its name, that the model loads), copies it
    /// atomically to REPO/NAME/<next version>/ and records in REPO/registry.db who
    /// registered it, when, why, the SHA-256 of every file and, when DIR is inside a
    /// git checkout, the repository, branch, commit and whether the tree was dirty.
    /// Prints the new version number.
    Register(RegisterArgs),
    /// Register every model of a Triton model repository as ferroserve bundles,
    /// keeping version numbers.
    ///
    /// DIR is laid out as Triton's: DIR/NAME/config.pbtxt and DIR/NAME/N/model.onnx.
    /// Each version folder N becomes version N of NAME in --repo: its files, the
    /// config's label files and a bundle.toml saying what config.pbtxt says, checked
    /// (the model must load) and registered atomically like `register`. A
    /// version_policy serving more than the newest version becomes an endpoint NAME
    /// with those versions. A model whose config asks for what ferroserve does not
    /// support is reported, naming the setting, and skipped; running it again reports
    /// the versions already imported. Exits 1 if any model or version was not imported.
    ImportTriton(ImportTritonArgs),
    /// Registered models: aliases, list, show, search, delete.
    Models {
        #[command(subcommand)]
        command: registry::cli::ModelsCommand,
    },
    /// The repository as a whole: `repo check` verifies it against the registry.
    Repo {
        #[command(subcommand)]
        command: registry::cli::RepoCommand,
    },
    /// Create or change a deployment of an endpoint (in the registry; a
    /// running server hot-swaps to it at its next poll).
    Deploy(ecli::DeployArgs),
    /// Remove a deployment without traffic from its endpoint.
    Undeploy(ecli::UndeployArgs),
    /// Set an endpoint's traffic weights: `traffic mlp blue=90 green=10`.
    Traffic(ecli::TrafficArgs),
    /// Endpoints in the registry: list, show.
    Endpoints {
        #[command(subcommand)]
        command: ecli::EndpointsCommand,
    },
    /// Shift traffic to a deployment step by step on a running server,
    /// rolling back when its error rate or p99 breaks the budget.
    Rollout(ecli::RolloutArgs),
    /// Send load to a model on a running server and report throughput,
    /// latency quantiles and errors by kind.
    ///
    /// Closed loop (--concurrency N) or open loop (--rate R, latencies from
    /// each request's intended send time, so a stall is not hidden), for a
    /// --duration or a number of --requests, over HTTP (JSON or --binary) or
    /// gRPC. Inputs from --input (v2 requests) or random from the model's
    /// metadata.
    Loadtest(ferroserve::loadgen::LoadtestArgs),
    /// Find the settings, cores and memory a model needs: sweeps batching,
    /// instances and concurrency on a loopback server within --budget,
    /// samples CPU and memory, and writes a JSON and an HTML report.
    Profile(ferroserve::profiler::ProfileArgs),
    /// OpenCL devices and kernels: list devices, build a program binary for
    /// a bundle, or write the kernel source for an FPGA offline compiler.
    Opencl {
        #[command(subcommand)]
        command: ferroserve::opencl_cli::OpenclCommand,
    },
}

/// The Python backend's settings (entry-script bundles), for `serve` and
/// `register` alike.
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Python entry scripts")]
struct PythonArgs {
    /// Interpreter for python bundles (and the base of their virtual
    /// environments). Default: $FERROSERVE_PYTHON, else the project's
    /// .venv/bin/python when there is one, else python3.
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Where the virtual environments of bundles with a requirements.txt
    /// are built and shared (default: ~/.cache/ferroserve/python-envs).
    #[arg(long, value_name = "DIR")]
    python_envs: Option<PathBuf>,
    /// pip --index-url for building environments.
    #[arg(long, value_name = "URL")]
    pip_index_url: Option<String>,
    /// pip --find-links (repeatable).
    #[arg(long, value_name = "PATH_OR_URL")]
    pip_find_links: Vec<String>,
    /// pip --no-index: install only from --pip-find-links and pip's cache.
    #[arg(long)]
    pip_offline: bool,
    /// Seconds a worker's import and init() may take.
    #[arg(long, default_value_t = 300)]
    python_init_timeout_s: u64,
}

impl PythonArgs {
    fn configure(&self) -> Result<()> {
        let mut c = ferroserve_backend_python::PythonConfig::default();
        c.python = match (&self.python, std::env::var_os("FERROSERVE_PYTHON")) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => PathBuf::from(p),
            (None, None) => {
                let exe = std::env::current_exe().ok();
                runtime::search_roots(exe.as_deref())
                    .into_iter()
                    .map(|r| r.join(".venv/bin/python"))
                    .find(|p| p.is_file())
                    .unwrap_or(c.python)
            }
        };
        if let Some(r) = &self.python_envs {
            c.envs_root = r.clone();
        }
        c.pip = ferroserve_backend_python::PipOptions {
            index_url: self.pip_index_url.clone(),
            find_links: self.pip_find_links.clone(),
            offline: self.pip_offline,
        };
        c.init_timeout = Duration::from_secs(self.python_init_timeout_s);
        // Workers start in their bundle's folder: a relative path given
        // here means relative to where the command was run. A bare name
        // (`python3`) is left for PATH lookup.
        if c.python.components().count() > 1 {
            c.python = std::path::absolute(&c.python)?;
        }
        c.envs_root = std::path::absolute(&c.envs_root)?;
        let harness = ferroserve_backend_python::configure(c.clone())?;
        tracing::debug!(python = %c.python.display(), envs = %c.envs_root.display(), harness = %harness.display(), "Python backend configured");
        Ok(())
    }
}

#[derive(clap::Args)]
struct RegisterArgs {
    /// The bundle folder (holding bundle.toml).
    dir: PathBuf,
    /// Model repository folder (created if absent).
    #[arg(long)]
    repo: PathBuf,
    /// Model name; must equal the manifest's `name`.
    #[arg(long)]
    name: String,
    /// A tag KEY=VALUE, recorded over the manifest's [tags]; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = registry::register::parse_tag)]
    tags: Vec<(String, String)>,
    /// Description of this version (default: the manifest's).
    #[arg(long)]
    description: Option<String>,
    /// Why this version is registered.
    #[arg(long)]
    message: Option<String>,
    /// Who registers it (default: $USER, else $LOGNAME, else "unknown").
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    python: PythonArgs,
}

#[derive(clap::Args)]
struct ImportTritonArgs {
    /// The Triton model repository (DIR/NAME/config.pbtxt, DIR/NAME/N/).
    dir: PathBuf,
    /// The ferroserve repository to register into (created if absent).
    #[arg(long)]
    repo: PathBuf,
    /// Who registers the versions (default: $USER, else $LOGNAME, else "unknown").
    #[arg(long)]
    user: Option<String>,
    /// Why (default: "imported from Triton model repository DIR").
    #[arg(long)]
    message: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Model repository folder (REPO/NAME/VERSION/bundle.toml, or a Triton
    /// model repository).
    #[arg(long)]
    repo: PathBuf,
    /// Serve, for each model that has this registry alias, the aliased version
    /// instead of the newest (models without it: the newest).
    #[arg(long, value_name = "ALIAS")]
    alias: Option<String>,
    /// Endpoints and deployments to serve (TOML, see the README): each one
    /// replaces the registry's endpoint of that name at start-up; the
    /// registry keeps the running state across restarts.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// How often the registry is read for changes made outside this server
    /// (the CLI's deploy, traffic, alias, register), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    poll_interval_ms: u64,
    /// Mirrored (shadow) requests in flight at once; beyond it copies are
    /// dropped and counted in ferroserve_mirror_dropped_total.
    #[arg(long, default_value_t = 64)]
    mirror_max_inflight: usize,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// HTTP port; 0 picks a free port (the ready log line names it).
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// gRPC port (inference.GRPCInferenceService); 0 picks a free port.
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
    /// Largest gRPC message accepted or sent, in bytes; a larger request
    /// message gets RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64 << 20, help_heading = "Limits")]
    max_grpc_message_bytes: usize,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 64 << 20, help_heading = "Limits")]
    max_body_bytes: usize,
    /// Largest bundle upload to POST /v2/admin/models/NAME/versions, in
    /// bytes, compressed and once extracted alike; larger gets 413.
    #[arg(long, default_value_t = 256 << 20, help_heading = "Limits")]
    max_upload_bytes: usize,
    /// Seconds a client has to send a request body once its headers have
    /// arrived; a slower body gets 408 and the connection is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    body_read_timeout_s: u64,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_s: u64,

    /// Seconds an HTTP/1 client has to send a complete request head (also
    /// bounds the wait for the next request on a keep-alive connection).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    header_read_timeout_s: u64,
    /// Seconds after which a connection with no request in flight and no
    /// activity is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    idle_timeout_s: u64,
    /// Connections open at once, over the HTTP and gRPC ports together;
    /// beyond it a new connection is closed at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    max_connections: u64,
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
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    tls_key: Option<PathBuf>,
    /// File of bearer tokens accepted on inference routes (/v2, /v2/models/...,
    /// every gRPC method): one per line, blank lines and # comments ignored.
    /// Also read: FERROSERVE_INFERENCE_TOKENS (comma-separated). Neither set:
    /// inference routes are open.
    #[arg(long, value_name = "PATH", help_heading = "Security")]
    inference_token_file: Option<PathBuf>,
    /// File of bearer tokens accepted on management routes (/v2/repository/...,
    /// /v2/admin/...), same format. Also read: FERROSERVE_MANAGEMENT_TOKENS.
    /// Neither set: management routes are open.
    #[arg(long, value_name = "PATH", help_heading = "Security")]
    management_token_file: Option<PathBuf>,

    // Boxed: it would make `Serve` much the largest variant of `Command`.
    #[command(flatten)]
    webhook: Box<WebhookArgs>,
    /// Seconds one webhook delivery attempt may take.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    webhook_timeout_s: u64,
    /// Retries of a failed webhook delivery before the event is given up
    /// (logged and counted in ferroserve_webhook_failures_total).
    #[arg(long, default_value_t = 5, help_heading = "Events")]
    webhook_retries: u32,
    /// Wait before the first retry, in milliseconds; doubles each retry, at
    /// most 10 s.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    webhook_backoff_ms: u64,
    /// Events queued per webhook; beyond it new events are dropped (counted).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    webhook_queue: u64,
    /// Seconds between keep-alive comments on /v2/admin/events.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Events")]
    events_keepalive_s: u64,
    #[command(flatten)]
    python: PythonArgs,
}

/// Where webhooks go and how they are signed. Each `--webhook` takes the
/// `--webhook-secret-file` written after it (before the next `--webhook`),
/// so a command line reads as one line per subscription; the positions
/// clap saw are kept for that pairing (see [`WebhookArgs::webhooks`]).
#[derive(clap::Args)]
struct WebhookFlags {
    /// POST every lifecycle event (CloudEvents 1.0 JSON) to this http:// or
    /// https:// URL; repeatable. Each delivery carries the Standard Webhooks
    /// headers webhook-id (the event id, the same on retries), webhook-timestamp
    /// and webhook-signature, made with the --webhook-secret-file that follows
    /// this --webhook (required unless --webhook-unsigned).
    #[arg(long = "webhook", value_name = "URL", value_parser = webhook::parse_url, help_heading = "Events")]
    webhooks: Vec<webhook::Url>,
    /// Signing secret of the --webhook written just before it: a file holding
    /// `whsec_` + base64 of 24 to 64 random bytes (e.g. `echo "whsec_$(openssl
    /// rand -base64 32)"`), the receiver holding the same. Several lines (blank
    /// lines and # comments ignored) sign with each, for rotating a secret.
    /// Kept in a file, not on the command line or in the environment, where
    /// other processes (the python backend's workers among them) could read it.
    #[arg(long, value_name = "PATH", help_heading = "Events")]
    webhook_secret_file: Vec<PathBuf>,
    /// Send the webhooks that have no --webhook-secret-file without a
    /// webhook-signature instead of refusing to start. Anyone who can reach
    /// their receivers can then forge events.
    #[arg(long, help_heading = "Events")]
    webhook_unsigned: bool,
    /// PEM file of CA certificates trusted for https:// webhooks besides the
    /// system's (for a private CA).
    #[arg(long, value_name = "PATH", help_heading = "Events")]
    webhook_ca_file: Option<PathBuf>,
}

/// [`WebhookFlags`] and where on the command line each `--webhook` and
/// `--webhook-secret-file` stood, which derive alone does not keep.
struct WebhookArgs {
    flags: WebhookFlags,
    url_at: Vec<usize>,
    secret_at: Vec<usize>,
}

impl clap::FromArgMatches for WebhookArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let at = |id: &str| m.indices_of(id).map(Iterator::collect).unwrap_or_default();
        Ok(WebhookArgs {
            url_at: at("webhooks"),
            secret_at: at("webhook_secret_file"),
            flags: WebhookFlags::from_arg_matches(m)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = WebhookArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for WebhookArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        WebhookFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        WebhookFlags::augment_args_for_update(cmd)
    }
}

impl WebhookArgs {
    /// Pairs each `--webhook` with the `--webhook-secret-file` after it and
    /// reads the secrets. A webhook with none is refused unless
    /// `--webhook-unsigned` says so: receivers that check signatures would
    /// reject its deliveries anyway, and one that does not check would accept
    /// forged ones, so a silent default either way would mislead.
    fn webhooks(&self) -> Result<Vec<webhook::Webhook>> {
        let f = &self.flags;
        let mut secret_of: Vec<Option<&PathBuf>> = vec![None; f.webhooks.len()];
        for (path, &at) in f.webhook_secret_file.iter().zip(&self.secret_at) {
            let Some(i) = self.url_at.iter().rposition(|&u| u < at) else {
                anyhow::bail!(
                    "--webhook-secret-file {} comes before any --webhook: write it after the --webhook URL it signs",
                    path.display()
                );
            };
            if let Some(first) = secret_of[i].replace(path) {
                anyhow::bail!(
                    "--webhook {} is followed by two secret files, --webhook-secret-file {} and {}: \
                     give one per webhook (one file may hold several secrets, one per line)",
                    f.webhooks[i],
                    first.display(),
                    path.display()
                );
            }
        }
        f.webhooks
            .iter()
            .zip(secret_of)
            .map(|(url, secret)| {
                let signer = match secret {
                    Some(path) => Some(Signer::from_file(path).map_err(|e| {
                        anyhow::anyhow!(
                            "--webhook-secret-file {} (of --webhook {url}): {e}",
                            path.display()
                        )
                    })?),
                    None if f.webhook_unsigned => None,
                    None => anyhow::bail!(
                        "--webhook {url} has no --webhook-secret-file: write `--webhook-secret-file PATH` \
                         after it (PATH holding a `whsec_` secret, see --help), or pass --webhook-unsigned \
                         to send its events unsigned"
                    ),
                };
                Ok(webhook::Webhook::new(url.clone(), signer))
            })
            .collect()
    }

    /// The shared delivery client, trusting `--webhook-ca-file` too.
    fn client(&self, hooks: &[webhook::Webhook], timeout: Duration) -> Result<reqwest::Client> {
        let extra = match &self.flags.webhook_ca_file {
            Some(path) => webhook::read_ca_file(path)
                .map_err(|e| anyhow::anyhow!("--webhook-ca-file {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        let https = hooks.iter().filter(|h| h.url().scheme() == "https").count();
        webhook::client(&extra, timeout, https).context("building the webhook client")
    }
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
        Command::Register(args) => register(args),
        Command::ImportTriton(args) => {
            if import_triton(args)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Models { command } => registry::cli::run_models(command),
        Command::Deploy(a) => ecli::deploy(a),
        Command::Undeploy(a) => ecli::undeploy(a),
        Command::Traffic(a) => ecli::traffic(a),
        Command::Endpoints { command } => ecli::endpoints(command),
        Command::Rollout(a) => {
            if ecli::rollout(a)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Profile(a) => {
            let (report, out) = ferroserve::profiler::run(a)?;
            ferroserve::profiler::print(&report, &out);
            Ok(())
        }
        Command::Loadtest(a) => {
            ferroserve::loadgen::run(a)?;
            Ok(())
        }
        Command::Opencl { command } => {
            ferroserve::opencl_cli::run(command)?;
            Ok(())
        }
        Command::Repo { command } => {
            if registry::cli::run_repo(command)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

fn register(args: RegisterArgs) -> Result<()> {
    args.python.configure()?;
    let done = registry::register(&registry::RegisterRequest {
        source: args.dir,
        repo: args.repo,
        name: args.name,
        tags: args.tags.into_iter().collect(),
        description: args.description,
        message: args.message,
        user: args.user,
        check_loads: true,
        record_git: true,
    })?;
    tracing::info!(
        model = %done.name,
        version = done.version,
        dir = %done.dir.display(),
        files = done.files.len(),
        registered_by = %done.registered_by,
        "registered"
    );
    println!("{}", done.version);
    Ok(())
}

/// Returns whether everything was imported (or was already there).
fn import_triton(args: ImportTritonArgs) -> Result<bool> {
    let report = ferroserve::triton::import::import(&ferroserve::triton::import::ImportRequest {
        source: args.dir,
        repo: args.repo,
        user: args.user,
        message: args.message,
        check_loads: true,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok())
}

fn serve(args: ServeArgs) -> Result<()> {
    // Configuration errors first: a bad token file or certificate should not
    // wait for the models to load.
    let auth = AuthPolicy::from_config(
        args.inference_token_file.as_deref(),
        args.management_token_file.as_deref(),
    )?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ferroserve::tls::acceptor(cert, key)?),
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
    let lib = runtime::init_onnxruntime()?;
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
        let endpoints = ferroserve::endpoints::config::load(config)?;
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
        &metrics,
    );
    if !registry::Store::exists(&args.repo) {
        // Nothing registered and nothing to import: say what is missing.
        ferroserve::repository::newest_versions(&args.repo)?;
    }
    if registry_ok {
        // Only for its warnings: a newest version folder without a registry
        // row (an interrupted registration, a hand-made folder) is not
        // served; the newest registered version is.
        if let Ok(mut bundles) = ferroserve::repository::newest_versions(&args.repo) {
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
        let grace = Duration::from_secs(args.shutdown_grace_s);
        let grpc_service = ferroserve::grpc::service(
            Arc::clone(&state),
            &GrpcLimits {
                max_message_bytes: args.max_grpc_message_bytes,
            },
        );
        let signal = shutdown_signal(signals, Arc::clone(&state));
        let state_for_signal = Arc::clone(&state);
        tokio::join!(
            ferroserve::http::serve(http, Arc::clone(&state), &conn_opts, stopped(), grace),
            listener::serve(
                grpc,
                TowerToHyperService::new(grpc_service),
                &conn_opts,
                stopped(),
                grace
            ),
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
    state.routes.clear();
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Says what is protected, never with what: token counts only.
fn log_security(auth: &AuthPolicy, tls: bool) {
    let describe = |set: &Option<ferroserve::auth::TokenSet>| match set {
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

/// Resolves on SIGTERM or SIGINT, after marking the server not ready.
async fn shutdown_signal(mut signals: ShutdownSignals, state: Arc<AppState>) {
    tokio::select! {
        _ = signals.term.recv() => {},
        _ = signals.int.recv() => {},
    }
    state.ready.store(false, Ordering::Release);
    tracing::info!("shutdown signal received: no longer ready, draining in-flight requests");
}
