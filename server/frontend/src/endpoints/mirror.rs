//! Mirrored (shadow) traffic: a copy of some live requests sent to a
//! shadow deployment whose answers are thrown away. The live request never
//! waits for it: copies run as their own tasks, at most `capacity` at
//! once, and a copy that finds no room is dropped and counted. The
//! shadow's own queue refuses rather than blocks when full, so a slow or
//! failing shadow costs the live path one failed `try_acquire` at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve_backend_core::Tensor;
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

use super::routing::Deployment;

pub struct MirrorPool {
    permits: Arc<Semaphore>,
    capacity: usize,
    /// `{endpoint, deployment, outcome}`: the shadow's answers.
    requests: IntCounterVec,
    /// `{endpoint, deployment}`: copies dropped because the pool was full.
    dropped: IntCounterVec,
}

impl MirrorPool {
    pub fn new(capacity: usize, metrics: &crate::metrics::Metrics) -> MirrorPool {
        MirrorPool {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            requests: metrics.mirror_requests.clone(),
            dropped: metrics.mirror_dropped.clone(),
        }
    }

    /// Copies in flight now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Starts a copy of one request on `shadow`, or drops it (counted)
    /// when `capacity` copies are already running.
    pub fn send(
        &self,
        shadow: &Arc<Deployment>,
        named: Vec<(String, Tensor)>,
        timeout: Option<Duration>,
    ) {
        let labels = [shadow.endpoint.as_str(), shadow.name.as_str()];
        let (Ok(permit), Ok(rt)) = (
            Arc::clone(&self.permits).try_acquire_owned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            self.dropped.with_label_values(&labels).inc();
            return;
        };
        let shadow = Arc::clone(shadow);
        let requests = self.requests.clone();
        rt.spawn(async move {
            let started = Instant::now();
            let result = shadow.model.infer(named, timeout).await;
            shadow.stats.record(&result, started.elapsed());
            shadow.model.record(&result, started);
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.outcome(),
            };
            requests
                .with_label_values(&[shadow.endpoint.as_str(), shadow.name.as_str(), outcome])
                .inc();
            drop(permit);
        });
    }
}
