//! The `deploy`, `undeploy`, `traffic`, `endpoints` and `rollout`
//! subcommands. The first four change the registry's desired state; a
//! running `serve` on the same repository picks the change up at its next
//! registry poll (`--poll-interval-ms`) and hot-swaps. `rollout` needs the
//! running server's measurements, so it drives the server's management
//! API (`--url`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::registry::deployments::{self, DeploymentSpec, EndpointSpec, Mirror, Settings, Target};
use crate::registry::register::default_user;

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

#[derive(Debug, Args)]
pub struct RolloutArgs {
    pub endpoint: String,
    /// The deployment to move traffic to.
    #[arg(long)]
    pub to: String,
    /// Its weight at each step.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    pub steps: Vec<u32>,
    /// How long each step runs and is measured (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Largest error rate on its own traffic (e.g. 1% or 0.01).
    #[arg(long, default_value = "1%", value_parser = parse_rate)]
    pub max_error_rate: f64,
    /// Largest p99 latency on its own traffic (e.g. 50ms).
    #[arg(long, value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fewest requests of a step before it is judged.
    #[arg(long, default_value_t = 1)]
    pub min_requests: u64,
    /// The running server (its HTTP port).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Management bearer token (default: $FERROSERVE_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
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

/// `30s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("expected a duration such as 30s or 500ms, got {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: expected ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `1%` or `0.01`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("expected a rate such as 1% or 0.01, got {s:?}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("expected a rate from 0% to 100%, got {s:?}"));
    }
    Ok(v)
}

fn user(u: Option<String>) -> String {
    u.filter(|u| !u.trim().is_empty())
        .unwrap_or_else(default_user)
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
        },
    };
    let e = deployments::put_deployment(&a.repo, &a.endpoint, spec, a.weight, &user(a.user))?;
    print_endpoint(&e);
    Ok(())
}

pub fn undeploy(a: UndeployArgs) -> Result<()> {
    match deployments::remove_deployment(&a.repo, &a.endpoint, &a.deployment, &user(a.user))? {
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
    let e = deployments::set_traffic(&a.repo, &a.endpoint, &weights, mirror, &user(a.user))?;
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

/// One call to the management API with the load generator's HTTP/1.1
/// connection (a POST of `body`, else a GET); returns the status and the
/// body.
fn call(url: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Result<(u16, String)> {
    use ferroserve_loadtest::{Connection, RequestSpec};
    let addr = crate::loadgen::address(url)?;
    let mut spec = match body {
        Some(b) => {
            RequestSpec::post(path, b.to_string()).header("content-type", "application/json")?
        }
        None => RequestSpec::get(path),
    };
    if let Some(t) = token {
        spec = spec.header("authorization", format!("Bearer {t}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Connection::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let answer = c
            .send(&spec)
            .await
            .with_context(|| format!("{url}{path}"))?;
        Ok((
            answer.status.as_u16(),
            String::from_utf8_lossy(&answer.body).into_owned(),
        ))
    })
}

/// Starts the rollout on the server and follows it; `Ok(true)` when every
/// step passed, `Ok(false)` when it was rolled back.
pub fn rollout(a: RolloutArgs) -> Result<bool> {
    let req = serde_json::json!({
        "to": a.to,
        "steps": a.steps,
        "interval_ms": a.interval.as_millis() as u64,
        "max_error_rate": a.max_error_rate,
        "max_p99_ms": a.max_p99.map(|d| d.as_secs_f64() * 1e3),
        "min_requests": a.min_requests,
    });
    let token = a.token.clone().or_else(|| {
        std::env::var("FERROSERVE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let a = RolloutArgs { token, ..a };
    let path = format!("/v2/admin/endpoints/{}/rollout", a.endpoint);
    let (status, body) = call(&a.url, &path, Some(&req.to_string()), a.token.as_deref())?;
    if status != 202 {
        bail!("the server refused the rollout ({status}): {body}");
    }
    let mut last_step = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (status, body) = call(&a.url, &path, None, a.token.as_deref())?;
        if status != 200 {
            bail!("cannot read the rollout's status ({status}): {body}");
        }
        let s: serde_json::Value = serde_json::from_str(&body)?;
        let step = s["step"].as_u64().unwrap_or(0) as usize;
        if step != last_step {
            eprintln!(
                "step {}/{}: {} at {}%",
                step + 1,
                a.steps.len(),
                a.to,
                a.steps.get(step).copied().unwrap_or(0)
            );
            last_step = step;
        }
        match s["state"].as_str() {
            Some("running") => continue,
            Some("completed") => {
                println!("rollout of {} to {} completed: {}", a.endpoint, a.to, s);
                return Ok(true);
            }
            _ => {
                println!(
                    "rollout of {} to {} rolled back: {}",
                    a.endpoint, a.to, s["reason"]
                );
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(parse_rate("1%").unwrap(), 0.01);
        assert_eq!(parse_rate("0.05").unwrap(), 0.05);
        assert!(parse_rate("150%").is_err());
        assert_eq!(parse_weight("blue=90").unwrap(), ("blue".into(), 90));
        assert!(parse_weight("blue").is_err());
    }
}
