//! The `deploy`, `undeploy`, `traffic` and `endpoints` subcommands: they
//! change (or show) the registry's desired state; a running `serve` on the
//! same repository picks a change up at its next registry poll
//! (`--poll-interval-ms`) and hot-swaps.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use ferroserve_registry::deployments::{
    self, DeploymentSpec, EndpointSpec, Mirror, Settings, Target,
};
use ferroserve_registry::register::user_or_default;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The endpoint (the name clients call); created if new.
    pub endpoint: String,
    /// The deployment within it (a-z, 0-9, '_', '-'), e.g. blue, green.
    pub deployment: String,
    /// Model repository folder (holding registry.db).
    #[arg(long)]
    pub repo: PathBuf,
    /// The registered model it serves.
    #[arg(long)]
    pub model: String,
    /// Serve exactly this version (default: the newest, following new registrations).
    #[arg(long, conflicts_with = "alias")]
    pub version: Option<u64>,
    /// Serve the version this alias points to, following it when it moves.
    #[arg(long)]
    pub alias: Option<String>,
    /// Its traffic weight (default: 100 for an endpoint's first deployment,
    /// else unchanged, 0 when new); the endpoint's weights must sum to 100.
    #[arg(long)]
    pub weight: Option<u32>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub max_batch_size: Option<usize>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub max_queue_delay_us: Option<u64>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub max_queue_size: Option<usize>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub timeout_ms: Option<u64>,
    /// Instance (session) count.
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub instances: Option<usize>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub intra_op_threads: Option<usize>,
    #[arg(long, help_heading = "Settings over the bundle's manifest")]
    pub device: Option<String>,
    /// A key of the bundle's [capture] for this deployment, e.g.
    /// sample_rate=0.1, sink=/data/capture, keep=inputs,request_id, or
    /// enabled=false to capture nothing (repeat for several keys).
    #[arg(
        long,
        value_name = "KEY=VALUE",
        help_heading = "Settings over the bundle's manifest"
    )]
    pub capture: Vec<String>,
    /// A key of the bundle's [drift] for this deployment, e.g.
    /// window_rows=5000, observe=all, thresholds.psi=0.3,
    /// features.age.method=ks, enabled=false (repeat for several keys).
    #[arg(
        long,
        value_name = "KEY=VALUE",
        help_heading = "Settings over the bundle's manifest"
    )]
    pub drift: Vec<String>,
    /// Who changes it (default: $USER).
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    pub endpoint: String,
    pub deployment: String,
    #[arg(long)]
    pub repo: PathBuf,
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct TrafficArgs {
    pub endpoint: String,
    /// DEPLOYMENT=WEIGHT for each deployment that gets traffic (the others
    /// get 0); the weights must sum to 100.
    #[arg(value_name = "DEPLOYMENT=WEIGHT", required = true, value_parser = parse_weight)]
    pub weights: Vec<(String, u32)>,
    #[arg(long)]
    pub repo: PathBuf,
    /// Copy PERCENT of the live requests to DEPLOYMENT (answers discarded).
    #[arg(long, value_name = "DEPLOYMENT=PERCENT", value_parser = parse_weight, conflicts_with = "no_mirror")]
    pub mirror: Option<(String, u32)>,
    /// Stop mirroring.
    #[arg(long)]
    pub no_mirror: bool,
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint in the registry: deployments, targets, weights, mirror.
    List {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One endpoint.
    Show {
        endpoint: String,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `KEY=VALUE` pairs as one TOML table read into a section's override:
/// a value that is not TOML (`sink=/data/cap`) is taken as a string, and
/// `keep` may be a comma-separated list.
fn section_override<T: serde::de::DeserializeOwned>(
    pairs: &[String],
    section: &str,
) -> Result<Option<T>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut doc = String::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--{section} {pair:?}: expected KEY=VALUE");
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            bail!("--{section} {pair:?}: expected a key of [{section}] before '=', got {key:?}");
        }
        let line = format!("{key} = {value}\n");
        let line = if key == "keep" && !value.starts_with('[') {
            let list: Vec<toml::Value> = value
                .split(',')
                .map(|v| toml::Value::String(v.trim().to_string()))
                .collect();
            format!("{key} = {}\n", toml::Value::Array(list))
        } else if line.parse::<toml::Table>().is_ok() {
            line
        } else {
            format!("{key} = {}\n", toml::Value::String(value.to_string()))
        };
        doc.push_str(&line);
    }
    toml::from_str(&doc)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--{section}: {}", e.message().trim()))
}

fn parse_weight(s: &str) -> Result<(String, u32), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=NUMBER, got {s:?}"))?;
    let v = v
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number after '=', got {v:?}"))?;
    Ok((k.trim().to_string(), v))
}

pub fn deploy(a: DeployArgs) -> Result<()> {
    let target = match (a.version, a.alias) {
        (Some(v), _) => Target::Version(v),
        (None, Some(al)) => Target::Alias(al),
        (None, None) => Target::Latest,
    };
    let spec = DeploymentSpec {
        name: a.deployment,
        model: a.model,
        target,
        weight: 0,
        settings: Settings {
            max_batch_size: a.max_batch_size,
            max_queue_delay_us: a.max_queue_delay_us,
            max_queue_size: a.max_queue_size,
            timeout_ms: a.timeout_ms,
            instances: a.instances,
            intra_op_threads: a.intra_op_threads,
            device: a.device,
            capture: section_override(&a.capture, "capture")?,
            drift: section_override(&a.drift, "drift")?,
        },
    };
    let e = deployments::put_deployment(
        &a.repo,
        &a.endpoint,
        spec,
        a.weight,
        &user_or_default(a.user),
    )?;
    print_endpoint(&e);
    Ok(())
}

pub fn undeploy(a: UndeployArgs) -> Result<()> {
    match deployments::remove_deployment(
        &a.repo,
        &a.endpoint,
        &a.deployment,
        &user_or_default(a.user),
    )? {
        Some(e) => print_endpoint(&e),
        None => println!(
            "endpoint {} removed (it had no other deployment)",
            a.endpoint
        ),
    }
    Ok(())
}

pub fn traffic(a: TrafficArgs) -> Result<()> {
    let mut weights = BTreeMap::new();
    for (k, v) in a.weights {
        if weights.insert(k.clone(), v).is_some() {
            bail!("deployment {k:?} is given twice");
        }
    }
    let mirror = match (a.mirror, a.no_mirror) {
        (Some((deployment, percent)), _) => Some(Some(Mirror {
            deployment,
            percent,
        })),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let e = deployments::set_traffic(
        &a.repo,
        &a.endpoint,
        &weights,
        mirror,
        &user_or_default(a.user),
    )?;
    print_endpoint(&e);
    Ok(())
}

pub fn endpoints(c: EndpointsCommand) -> Result<()> {
    let (list, json) = match c {
        EndpointsCommand::List { repo, json } => (deployments::list(&repo)?, json),
        EndpointsCommand::Show {
            endpoint,
            repo,
            json,
        } => (vec![deployments::get(&repo, &endpoint)?], json),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no endpoints (every registered model is served as an endpoint of its own name)");
    } else {
        for e in &list {
            print_endpoint(e);
        }
    }
    Ok(())
}

fn print_endpoint(e: &EndpointSpec) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "endpoint {}", e.name);
    let _ = writeln!(
        out,
        "  {:<16} {:<16} {:<20} {:>6}  settings",
        "DEPLOYMENT", "MODEL", "TARGET", "WEIGHT"
    );
    for d in &e.deployments {
        let settings = if d.settings.is_empty() {
            "-".to_string()
        } else {
            serde_json::to_string(&d.settings).unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<16} {:<20} {:>5}%  {settings}",
            d.name,
            d.model,
            d.target.to_string(),
            d.weight
        );
    }
    if let Some(m) = &e.mirror {
        let _ = writeln!(out, "  mirror: {}% to {}", m.percent, m.deployment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("blue=90").unwrap(), ("blue".into(), 90));
        assert!(parse_weight("blue").is_err());
    }
}
