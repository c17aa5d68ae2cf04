//! Safe rollout: traffic moves to one deployment step by step; after each
//! step's interval the deployment's own traffic of that step is measured
//! (error rate, p99), and a broken budget puts every weight back as it was
//! before the rollout and emits `rollout.rolled_back`. Each step is a
//! registry traffic change like any other, so a restart mid-rollout keeps
//! the weights of the last step reached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Deployer;
use ferroserve_registry::deployments;
use ferroserve_registry::{events::EventBus, lifecycle as types};

/// `POST /v2/admin/endpoints/{e}/rollout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The deployment that receives the traffic.
    pub to: String,
    /// Its weight at each step, increasing, each 1..=100.
    pub steps: Vec<u32>,
    /// How long each step is measured.
    pub interval_ms: u64,
    /// Largest share of failed requests (0..1) on its own traffic.
    pub max_error_rate: f64,
    /// Largest p99 latency on its own traffic, if any.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// Fewest requests a step needs for its p99 to be judged (default 1);
    /// the error rate is judged as soon as this many have been seen.
    #[serde(default)]
    pub min_requests: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    pub endpoint: String,
    pub to: String,
    pub steps: Vec<u32>,
    /// `running`, `completed`, `rolled_back`, `failed`.
    pub state: &'static str,
    /// Index of the step running or last run.
    pub step: usize,
    /// The weights before the rollout (restored on rollback).
    pub original: BTreeMap<String, u32>,
    /// Measured on the last judged step.
    pub requests: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub reason: Option<String>,
}

/// The rollouts of this server, one at a time per endpoint.
#[derive(Default)]
pub struct Rollouts {
    by_endpoint: Mutex<HashMap<String, Arc<Mutex<RolloutStatus>>>>,
}

impl Rollouts {
    pub fn status(&self, endpoint: &str) -> Option<RolloutStatus> {
        let map = self.by_endpoint.lock().expect("rollouts lock");
        map.get(endpoint)
            .map(|s| s.lock().expect("rollout lock").clone())
    }

    /// Validates and starts a rollout in the background; returns its first
    /// status. Refused while another rollout of the endpoint runs.
    pub async fn start(
        self: &Arc<Self>,
        deployer: Arc<Deployer>,
        events: EventBus,
        endpoint: String,
        req: RolloutRequest,
    ) -> Result<RolloutStatus, (u16, String)> {
        let bad = |m: String| (400u16, m);
        if req.steps.is_empty() {
            return Err(bad("steps: expected at least one step, got []".into()));
        }
        if req.steps.windows(2).any(|w| w[0] >= w[1])
            || req.steps.iter().any(|&s| s == 0 || s > 100)
        {
            return Err(bad(format!(
                "steps: expected increasing weights from 1 to 100, got {:?}",
                req.steps
            )));
        }
        if !(0.0..=1.0).contains(&req.max_error_rate) {
            return Err(bad(format!(
                "max_error_rate: expected a fraction from 0 to 1, got {}",
                req.max_error_rate
            )));
        }
        if req.interval_ms == 0 {
            return Err(bad("interval_ms: expected at least 1, got 0".into()));
        }
        let repo = deployer.repo().to_path_buf();
        let name = endpoint.clone();
        let spec = tokio::task::spawn_blocking(move || deployments::get(&repo, &name))
            .await
            .map_err(|e| (500u16, e.to_string()))?
            .map_err(|e| (404u16, e.to_string()))?;
        if spec.deployment(&req.to).is_none() {
            return Err((
                404,
                format!(
                    "to: endpoint {endpoint:?} has no deployment {:?}; its deployments are {:?}",
                    req.to,
                    spec.deployments.iter().map(|d| &d.name).collect::<Vec<_>>()
                ),
            ));
        }
        if deployer.running(&endpoint, &req.to).is_none() {
            return Err((
                409,
                format!(
                    "deployment {endpoint}/{} is not loaded (see its deployment.failed event); nothing to roll out",
                    req.to
                ),
            ));
        }
        let original: BTreeMap<String, u32> = spec
            .deployments
            .iter()
            .map(|d| (d.name.clone(), d.weight))
            .collect();
        let status = Arc::new(Mutex::new(RolloutStatus {
            endpoint: endpoint.clone(),
            to: req.to.clone(),
            steps: req.steps.clone(),
            state: "running",
            step: 0,
            original,
            requests: 0,
            error_rate: 0.0,
            p99_ms: None,
            reason: None,
        }));
        {
            let mut map = self.by_endpoint.lock().expect("rollouts lock");
            if let Some(s) = map.get(&endpoint) {
                if s.lock().expect("rollout lock").state == "running" {
                    return Err((
                        409,
                        format!("a rollout of endpoint {endpoint:?} is already running"),
                    ));
                }
            }
            map.insert(endpoint.clone(), Arc::clone(&status));
        }
        let first = status.lock().expect("rollout lock").clone();
        tokio::spawn(run(deployer, events, status, req));
        Ok(first)
    }
}

/// Weights with `to` at `percent` and the others sharing the rest in
/// proportion to their original weights.
pub fn shifted(original: &BTreeMap<String, u32>, to: &str, percent: u32) -> BTreeMap<String, u32> {
    let others: Vec<(&String, u32)> = original
        .iter()
        .filter(|(n, _)| n.as_str() != to)
        .map(|(n, &w)| (n, w))
        .collect();
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    out.insert(to.to_string(), percent);
    let shares = super::routing::apportion(
        &others.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
        100 - percent,
    );
    for ((n, _), w) in others.iter().zip(shares) {
        out.insert((*n).clone(), w);
    }
    out
}

async fn set_weights(
    deployer: &Deployer,
    endpoint: &str,
    weights: BTreeMap<String, u32>,
    why: &str,
) -> Result<(), String> {
    let repo = deployer.repo().to_path_buf();
    let e = endpoint.to_string();
    tokio::task::spawn_blocking(move || {
        deployments::set_traffic(&repo, &e, &weights, None, "ferroserve rollout")
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    deployer
        .reconcile(why, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn run(
    deployer: Arc<Deployer>,
    events: EventBus,
    status: Arc<Mutex<RolloutStatus>>,
    req: RolloutRequest,
) {
    let (endpoint, original) = {
        let s = status.lock().expect("rollout lock");
        (s.endpoint.clone(), s.original.clone())
    };
    let min_requests = req.min_requests.unwrap_or(1).max(1);
    let interval = Duration::from_millis(req.interval_ms);
    let update = |f: &dyn Fn(&mut RolloutStatus)| f(&mut status.lock().expect("rollout lock"));
    let mut broken: Option<String> = None;
    'steps: for (i, &percent) in req.steps.iter().enumerate() {
        update(&|s| s.step = i);
        if let Err(e) = set_weights(
            &deployer,
            &endpoint,
            shifted(&original, &req.to, percent),
            "rollout step",
        )
        .await
        {
            broken = Some(format!(
                "step {i} ({percent}%): cannot set the weights: {e}"
            ));
            break;
        }
        let Some(target) = deployer.running(&endpoint, &req.to) else {
            broken = Some(format!(
                "step {i}: deployment {:?} is no longer loaded",
                req.to
            ));
            break;
        };
        let baseline = target.stats.snapshot();
        let started = Instant::now();
        loop {
            let left = interval.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
            let step = target.stats.snapshot().since(&baseline);
            let done = started.elapsed() >= interval;
            let p99 = step.quantile(0.99).map(|d| d.as_secs_f64() * 1e3);
            update(&|s| {
                s.requests = step.requests();
                s.error_rate = step.error_rate();
                s.p99_ms = p99;
            });
            if step.requests() >= min_requests && step.error_rate() > req.max_error_rate {
                broken = Some(format!(
                    "step {i} ({percent}%): error rate {:.2}% over {} requests exceeds {:.2}%",
                    step.error_rate() * 100.0,
                    step.requests(),
                    req.max_error_rate * 100.0
                ));
                break 'steps;
            }
            if done {
                if let (Some(max), Some(p99)) = (req.max_p99_ms, p99) {
                    if step.requests() >= min_requests && p99 > max {
                        broken = Some(format!(
                            "step {i} ({percent}%): p99 {p99:.2} ms over {} requests exceeds {max} ms",
                            step.requests()
                        ));
                        break 'steps;
                    }
                }
                break;
            }
        }
    }
    let snapshot = |s: &RolloutStatus| {
        json!({
            "endpoint": s.endpoint, "to": s.to, "steps": s.steps, "step": s.step,
            "requests": s.requests, "error_rate": s.error_rate, "p99_ms": s.p99_ms,
            "original": s.original, "reason": s.reason,
        })
    };
    match broken {
        None => {
            update(&|s| s.state = "completed");
            let data = snapshot(&status.lock().expect("rollout lock"));
            events.emit(events.event(types::ROLLOUT_COMPLETED, &endpoint, data));
        }
        Some(reason) => {
            tracing::warn!(endpoint, to = %req.to, %reason, "rollout rolled back");
            let restored = set_weights(
                &deployer,
                &endpoint,
                original.clone(),
                "rollout rolled back",
            )
            .await;
            let reason = match restored {
                Ok(()) => reason,
                Err(e) => format!("{reason}; restoring the weights failed too: {e}"),
            };
            update(&|s| {
                s.state = "rolled_back";
                s.reason = Some(reason.clone());
            });
            let data = snapshot(&status.lock().expect("rollout lock"));
            events.emit(events.event(types::ROLLOUT_ROLLED_BACK, &endpoint, data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_keeps_the_others_in_proportion() {
        let o: BTreeMap<String, u32> = [("blue".into(), 100), ("green".into(), 0)].into();
        assert_eq!(
            shifted(&o, "green", 10),
            [("blue".into(), 90), ("green".into(), 10)].into()
        );
        assert_eq!(
            shifted(&o, "green", 100),
            [("blue".into(), 0), ("green".into(), 100)].into()
        );
        let o: BTreeMap<String, u32> =
            [("a".into(), 60), ("b".into(), 30), ("c".into(), 10)].into();
        let s = shifted(&o, "c", 25);
        assert_eq!(s.values().sum::<u32>(), 100);
        assert_eq!(s["c"], 25);
        assert_eq!((s["a"], s["b"]), (50, 25));
    }
}
