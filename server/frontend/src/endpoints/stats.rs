//! What a deployment's own traffic looked like: outcome counts and a
//! lock-free latency histogram, read by safe rollouts as differences
//! between two snapshots (the requests of one step).
//!
//! Prometheus histograms have buckets a factor of 2 apart, too coarse for
//! a p99 budget; these are 10% apart from 10 µs to about an hour.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferroserve_runtime::infer::InferError;

const BUCKETS: usize = 210;
const GROWTH: f64 = 1.1;
const FIRST_US: f64 = 10.0;

/// Counters of one deployment, kept across hot swaps of its version.
pub struct DeploymentStats {
    ok: AtomicU64,
    /// Failures the deployment is answerable for (backend errors, timeouts,
    /// a full queue, unavailable); a client's bad input is not its fault.
    errors: AtomicU64,
    buckets: Box<[AtomicU64; BUCKETS]>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub ok: u64,
    pub errors: u64,
    buckets: Vec<u64>,
}

impl Default for DeploymentStats {
    fn default() -> Self {
        DeploymentStats {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    (((us / FIRST_US).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn bucket_limit(i: usize) -> Duration {
    Duration::from_secs_f64(FIRST_US * GROWTH.powi(i as i32) / 1e6)
}

impl DeploymentStats {
    /// Whether an error counts against the deployment.
    pub fn is_server_error(e: &InferError) -> bool {
        matches!(
            e,
            InferError::Backend(_)
                | InferError::Timeout(_)
                | InferError::QueueFull(_)
                | InferError::Unavailable(_)
        )
    }

    pub fn record<T>(&self, result: &Result<T, InferError>, took: Duration) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if Self::is_server_error(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => return,
        }
        self.buckets[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl StatsSnapshot {
    /// What happened between `earlier` and this one.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            ok: self.ok - earlier.ok,
            errors: self.errors - earlier.errors,
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    /// Errors over requests; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }

    /// The `q` quantile's bucket upper bound (at most 10% above the true
    /// value); `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_limit(i));
            }
        }
        Some(bucket_limit(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_ten_percent_above() {
        let s = DeploymentStats::default();
        for ms in 1..=100u64 {
            s.record::<()>(&Ok(()), Duration::from_millis(ms));
        }
        let snap = s.snapshot();
        let p99 = snap.quantile(0.99).unwrap();
        assert!(
            p99 >= Duration::from_millis(99) && p99 <= Duration::from_micros(99_000 * 11 / 10),
            "{p99:?}"
        );
        let p50 = snap.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(55),
            "{p50:?}"
        );
    }

    #[test]
    fn differences_count_one_step_and_client_errors_do_not_count() {
        let s = DeploymentStats::default();
        s.record::<()>(&Ok(()), Duration::from_millis(1));
        let before = s.snapshot();
        s.record::<()>(
            &Err(InferError::Backend("x".into())),
            Duration::from_millis(1),
        );
        s.record::<()>(
            &Err(InferError::InvalidInput("x".into())),
            Duration::from_millis(1),
        );
        s.record::<()>(&Ok(()), Duration::from_millis(1));
        let step = s.snapshot().since(&before);
        assert_eq!((step.ok, step.errors), (1, 1));
        assert_eq!(step.error_rate(), 0.5);
        assert_eq!(
            StatsSnapshot {
                ok: 0,
                errors: 0,
                buckets: vec![0; 3]
            }
            .quantile(0.99),
            None
        );
    }
}
