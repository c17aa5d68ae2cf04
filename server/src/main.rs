//! The `ferroserve` command line: this file parses the arguments and hands
//! each subcommand to its module; what the commands do lives in the library
//! crates (`ferroserve-frontend`, `-registry`, `-runtime`, `-loadtest`).
//!
//! Errors end here: a command that fails prints `error: ...` and its causes,
//! one per line, and exits 1 (clap's usage errors exit 2), never with a
//! backtrace, whatever `RUST_BACKTRACE` says. A panic is a bug and still
//! prints its message (and a backtrace when asked).

mod baseline;
mod batch;
mod drift;
mod drift_html;
mod endpoints;
mod health;
mod import_triton;
mod in_process;
mod model_dir;
mod models;
mod opencl;
mod output;
mod package;
mod python;
mod register;
mod repo;
mod rollout;
mod serve;
mod webhook_args;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

// Built with mimalloc's `no_thp`: otherwise it asks for transparent huge
// pages on its arenas, and the few bytes touched in each 2 MiB region at
// start-up make the whole region resident (20 of the idle server's 63 MiB).
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
    Serve(serve::ServeArgs),
    /// Register a bundle folder as the next version of a model in a repository.
    ///
    /// Checks the bundle (its manifest, its name, that the model loads), copies it
    /// atomically to REPO/NAME/<next version>/ and records in REPO/registry.db who
    /// registered it, when, why, the SHA-256 of every file and, when DIR is inside a
    /// git checkout, the repository, branch, commit and whether the tree was dirty.
    /// Prints the new version number.
    Register(register::RegisterArgs),
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
    ImportTriton(import_triton::ImportTritonArgs),
    /// Registered models: aliases, list, show, search, delete.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// The repository as a whole: `repo check` verifies it against the registry.
    Repo {
        #[command(subcommand)]
        command: repo::RepoCommand,
    },
    /// Create or change a deployment of an endpoint (in the registry; a
    /// running server hot-swaps to it at its next poll).
    Deploy(endpoints::DeployArgs),
    /// Remove a deployment without traffic from its endpoint.
    Undeploy(endpoints::UndeployArgs),
    /// Set an endpoint's traffic weights: `traffic mlp blue=90 green=10`.
    Traffic(endpoints::TrafficArgs),
    /// Endpoints in the registry: list, show.
    Endpoints {
        #[command(subcommand)]
        command: endpoints::EndpointsCommand,
    },
    /// Shift traffic to a deployment step by step on a running server,
    /// rolling back when its error rate or p99 breaks the budget.
    Rollout(rollout::RolloutArgs),
    /// Send load to a model on a running server and report throughput,
    /// latency quantiles and errors by kind.
    ///
    /// Closed loop (--concurrency N) or open loop (--rate R, latencies from
    /// each request's intended send time, so a stall is not hidden), for a
    /// --duration or a number of --requests, over HTTP (JSON or --binary) or
    /// gRPC. Inputs from --input (v2 requests) or random from the model's
    /// metadata.
    Loadtest(ferroserve_loadtest::command::LoadtestArgs),
    /// Find the settings, cores and memory a model needs: sweeps batching,
    /// instances and concurrency on a loopback server within --budget,
    /// samples CPU and memory, and writes a JSON and an HTML report.
    Profile(ferroserve_loadtest::profiler::ProfileArgs),
    /// Record a registered version's training baseline: per-feature
    /// reference statistics of the training data (Parquet or CSV), for drift.
    ///
    /// Numeric features get quantile bins (Sturges' rule, and 1000 finer
    /// ones), counts, mean, std, min, max, null rate and a reservoir sample;
    /// features with at most 20 distinct values, and texts, their category
    /// frequencies. Columns map to the model's inputs by the bundle's
    /// feature_names, else by INPUT_j names, else in order for a model with
    /// one tabular input. The model runs over the data for its outputs'
    /// statistics (prediction drift). Stored in the registry with the file's
    /// name, row count and SHA-256; a server serving the version watches
    /// drift against it.
    Baseline(baseline::BaselineArgs),
    /// Drift of captured traffic against a version's training baseline,
    /// offline: every Parquet file under --capture (of one or many
    /// replicas) in one window, as a table, --json, or an --html page of
    /// histograms. Exits 1 when a feature drifted.
    Drift(drift::DriftArgs),
    /// Score files with a registered version, in-process: Parquet, CSV or
    /// JSON Lines in, one output file per input (with its row ids, in
    /// input order), bad rows to an errors file, resumable (finished files
    /// are skipped) and shardable (--shard K/N). Exits 1 when a file
    /// failed or --error-threshold stopped the run.
    Batch(batch::BatchArgs),
    /// Write an OCI image archive of this binary, its runtime libraries and
    /// chosen model versions, without a container engine.
    ///
    /// Layers are deterministic gzip'd tars (sorted, fixed timestamps from
    /// SOURCE_DATE_EPOCH or 1970, fixed owners), so the same inputs give
    /// the same digest. The image runs `ferroserve serve --repo /models` as
    /// user 1000 on ports 8000 (HTTP), 8001 (gRPC) and 8002 (metrics), and
    /// is labelled with the models, their versions and content hashes.
    Package(package::PackageArgs),
    /// Ask a running server whether it is ready (GET /v2/health/ready) or,
    /// with --live, live: exits 0 on 200, 1 otherwise. For a container's
    /// HEALTHCHECK, where no curl is installed.
    Health(health::HealthArgs),
    /// OpenCL devices and kernels: list devices, build a program binary for
    /// a bundle, or write the kernel source for an FPGA offline compiler.
    Opencl {
        #[command(subcommand)]
        command: opencl::OpenclCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let command = Cli::parse().command;
    match run(command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprint!("{}", error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand; `Ok(false)` when it ran but reports a failure of
/// what it checked (a rollout rolled back, a repository check with
/// problems, an import that skipped models): exit 1 without an error line.
fn run(command: Command) -> Result<bool> {
    match command {
        Command::Serve(args) => serve::run(args).map(|()| true),
        Command::Register(args) => register::run(args).map(|()| true),
        Command::ImportTriton(args) => import_triton::run(args),
        Command::Models { command } => models::run(command).map(|()| true),
        Command::Repo { command } => repo::run(command),
        Command::Deploy(a) => endpoints::deploy(a).map(|()| true),
        Command::Undeploy(a) => endpoints::undeploy(a).map(|()| true),
        Command::Traffic(a) => endpoints::traffic(a).map(|()| true),
        Command::Endpoints { command } => endpoints::endpoints(command).map(|()| true),
        Command::Rollout(a) => rollout::rollout(a),
        Command::Loadtest(a) => {
            ferroserve_loadtest::command::run(a)?;
            Ok(true)
        }
        Command::Profile(a) => {
            let (report, out) = ferroserve_loadtest::profiler::run(a)?;
            ferroserve_loadtest::profiler::print(&report, &out);
            Ok(true)
        }
        Command::Baseline(a) => baseline::run(a).map(|()| true),
        Command::Drift(a) => drift::run(a),
        Command::Batch(a) => batch::run(a),
        Command::Health(a) => health::run(a),
        Command::Package(a) => package::run(a).map(|()| true),
        Command::Opencl { command } => {
            opencl::run(command)?;
            Ok(true)
        }
    }
}

/// `error: <what failed>` and, when it has causes that the message does not
/// already say, a `Caused by:` list in cargo's manner: one line per cause,
/// outermost first. Never a backtrace: a user error is not a bug.
fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}\n");
    let mut said = e.to_string();
    let mut causes = Vec::new();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        // Library errors often spell their source out in their own message
        // ("cannot read x: no such file"); repeating it adds nothing.
        if !said.contains(&text) {
            causes.push(text.clone());
        }
        said = text;
    }
    if !causes.is_empty() {
        out.push_str("\nCaused by:\n");
        for c in causes {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line_with_its_causes_below() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("cannot read x.toml");
        assert_eq!(
            error_report(&e),
            "error: cannot read x.toml\n\nCaused by:\n  no such file\n"
        );
        assert_eq!(error_report(&anyhow::anyhow!("plain")), "error: plain\n");
    }
}
