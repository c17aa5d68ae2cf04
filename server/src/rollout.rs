//! `ferroserve rollout`: a safe rollout needs the running server's own
//! measurements of the new deployment, so this command drives the server's
//! management API (`--url`) and follows the rollout until it completes or is
//! rolled back.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferroserve_loadtest::duration::parse_duration;

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

/// One call to the management API with the load generator's HTTP/1.1
/// connection (a POST of `body`, else a GET); returns the status and the
/// body.
fn call(url: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Result<(u16, String)> {
    use ferroserve_loadtest::{Connection, RequestSpec};
    let addr = ferroserve_loadtest::command::address(url)?;
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
    fn rates_parse() {
        assert_eq!(parse_rate("1%").unwrap(), 0.01);
        assert_eq!(parse_rate("0.05").unwrap(), 0.05);
        assert!(parse_rate("150%").is_err());
    }
}
