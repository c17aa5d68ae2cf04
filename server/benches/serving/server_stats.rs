//! Where the server's time went during a measurement, from its own
//! Prometheus counters: how full the batches were, how long requests queued
//! and how busy the backend was. A throughput ratio says *that* the server
//! falls short; these say whether it was computing, queueing or idle.

use std::time::{Duration, Instant};

/// The histogram names ferroserve exports (seconds, except batch rows).
const BATCH_ROWS: &str = "ferroserve_batch_size";
const REQUEST: &str = "ferroserve_request_duration_seconds";
const QUEUE: &str = "ferroserve_queue_duration_seconds";
const COMPUTE: &str = "ferroserve_compute_duration_seconds";

/// Histogram (sum, count) pairs for one model at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    batch_rows: (f64, f64),
    request: (f64, f64),
    queue: (f64, f64),
    compute: (f64, f64),
}

/// Means over the requests and batches between two snapshots; `None` where
/// the server exported no samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub mean_batch_rows: Option<f64>,
    pub batches_per_second: Option<f64>,
    pub mean_request_ms: Option<f64>,
    pub mean_queue_ms: Option<f64>,
    /// Backend time of the batch a request was in, averaged over requests.
    pub mean_compute_ms: Option<f64>,
    /// Share of the window the backend was running a batch (batches per
    /// second times compute per batch); approximate when batches differ.
    pub backend_busy: Option<f64>,
}

impl Snapshot {
    pub fn parse(exposition: &str, model: &str) -> Snapshot {
        let pair = |name: &str| {
            (
                metric_sum(exposition, &format!("{name}_sum"), model).unwrap_or(0.0),
                metric_sum(exposition, &format!("{name}_count"), model).unwrap_or(0.0),
            )
        };
        Snapshot {
            at: Instant::now(),
            batch_rows: pair(BATCH_ROWS),
            request: pair(REQUEST),
            queue: pair(QUEUE),
            compute: pair(COMPUTE),
        }
    }

    pub fn since(&self, before: &Snapshot) -> Window {
        let elapsed = self.at.saturating_duration_since(before.at);
        let mean = |after: (f64, f64), before: (f64, f64)| {
            let n = after.1 - before.1;
            (n > 0.0).then(|| (after.0 - before.0) / n)
        };
        let ms = |v: Option<f64>| v.map(|s| s * 1e3);
        let batches = self.batch_rows.1 - before.batch_rows.1;
        let batches_per_second =
            (batches > 0.0 && elapsed > Duration::ZERO).then(|| batches / elapsed.as_secs_f64());
        let compute = mean(self.compute, before.compute);
        Window {
            mean_batch_rows: mean(self.batch_rows, before.batch_rows),
            batches_per_second,
            mean_request_ms: ms(mean(self.request, before.request)),
            mean_queue_ms: ms(mean(self.queue, before.queue)),
            mean_compute_ms: ms(compute),
            backend_busy: batches_per_second.zip(compute).map(|(b, c)| b * c),
        }
    }
}

impl Window {
    /// The window as the benchmarks' JSON lines carry it.
    #[allow(dead_code)] // the swap benchmark reports no window
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mean_batch_rows": self.mean_batch_rows,
            "batches_per_s": self.batches_per_second,
            "mean_compute_ms": self.mean_compute_ms,
            "backend_busy": self.backend_busy,
            "mean_queue_ms": self.mean_queue_ms,
            "mean_request_ms": self.mean_request_ms,
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show =
            |v: Option<f64>, digits: usize| v.map_or("?".to_string(), |v| format!("{v:.digits$}"));
        write!(
            f,
            "server: mean batch {} rows, {} batches/s, compute {} ms per batch, \
             backend busy {}%, queue wait {} ms, request {} ms",
            show(self.mean_batch_rows, 1),
            show(self.batches_per_second, 0),
            show(self.mean_compute_ms, 3),
            show(self.backend_busy.map(|b| b * 100.0), 0),
            show(self.mean_queue_ms, 3),
            show(self.mean_request_ms, 3),
        )
    }
}

/// Sums a Prometheus sample over all versions of `model`, e.g.
/// `ferroserve_batch_size_sum{model="conv",version="1"} 1234`.
pub fn metric_sum(exposition: &str, metric: &str, model: &str) -> Option<f64> {
    let label = format!("model=\"{model}\"");
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !rest.starts_with('{') || !rest.contains(&label) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}
