//! The Prometheus series of loaded models: requests by outcome, latency,
//! queue and compute time, batch sizes, queue depth, in-flight requests and
//! device kernel time. Label sets are small and fixed (model, version,
//! endpoint, deployment, outcome) so that cardinality stays bounded whatever
//! clients send: every label value comes from the registry, never from a
//! request.
//!
//! The families live here, beside the model that writes them, and not in the
//! server: a model loaded by a plain program (or by `register`, to check that
//! a bundle loads) records into families nobody scrapes; the server
//! registers the same families in the registry its `/metrics` renders.

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};

/// The metric families of every model version of a process. Cheap to
/// clone: clones share the same series.
#[derive(Clone)]
pub struct ModelSeries {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_duration: HistogramVec,
    pub compute_duration: HistogramVec,
    pub batch_rows: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub inflight: IntGaugeVec,
    /// Device time per kernel, from the backend's profiling events (OpenCL).
    pub device_kernel_seconds: CounterVec,
    /// Kernel launches, from the same events.
    pub device_kernel_launches: IntCounterVec,
}

impl ModelSeries {
    pub fn new() -> ModelSeries {
        let mv = &["model", "version", "endpoint", "deployment"];
        let latency_buckets = exponential_buckets(50e-6, 2.0, 18).expect("valid buckets");
        let requests = IntCounterVec::new(
            Opts::new(
                "ferroserve_requests_total",
                "Inference requests by model, version and outcome",
            ),
            &["model", "version", "endpoint", "deployment", "outcome"],
        )
        .expect("valid metric");
        let hist = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(latency_buckets.clone()),
                mv,
            )
            .expect("valid metric")
        };
        let request_duration = hist(
            "ferroserve_request_duration_seconds",
            "Time from a request's arrival to its answer",
        );
        let queue_duration = hist(
            "ferroserve_queue_duration_seconds",
            "Time a request waited in the queue before its batch ran",
        );
        let compute_duration = hist(
            "ferroserve_compute_duration_seconds",
            "Time the backend spent on the batch that held the request",
        );
        let batch_rows = HistogramVec::new(
            HistogramOpts::new(
                "ferroserve_batch_size",
                "Rows per batch handed to a backend",
            )
            .buckets(exponential_buckets(1.0, 2.0, 11).expect("valid buckets")),
            mv,
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "ferroserve_queue_depth",
                "Requests waiting in a model's queue",
            ),
            mv,
        )
        .expect("valid metric");
        let inflight = IntGaugeVec::new(
            Opts::new("ferroserve_inflight_requests", "Requests being handled"),
            mv,
        )
        .expect("valid metric");
        let kernel_labels = &[
            "model",
            "version",
            "endpoint",
            "deployment",
            "device",
            "kernel",
        ];
        let device_kernel_seconds = CounterVec::new(
            Opts::new(
                "ferroserve_device_kernel_seconds_total",
                "Device time per kernel as the device's profiling events measured it (OpenCL); upload and download are the input and output transfers",
            ),
            kernel_labels,
        )
        .expect("valid metric");
        let device_kernel_launches = IntCounterVec::new(
            Opts::new(
                "ferroserve_device_kernel_launches_total",
                "Kernel launches (and transfers) per kernel, from the device's profiling events",
            ),
            kernel_labels,
        )
        .expect("valid metric");
        ModelSeries {
            requests,
            request_duration,
            queue_duration,
            compute_duration,
            batch_rows,
            queue_depth,
            inflight,
            device_kernel_seconds,
            device_kernel_launches,
        }
    }

    /// Every family, for registering in a Prometheus registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.device_kernel_seconds.clone()),
            Box::new(self.device_kernel_launches.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.queue_duration.clone()),
            Box::new(self.compute_duration.clone()),
            Box::new(self.batch_rows.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.inflight.clone()),
        ]
    }

    /// A model served outside any endpoint configuration: its implicit
    /// endpoint of the same name, deployment `default`.
    pub fn for_model(&self, model: &str, version: &str) -> ModelMetrics {
        self.for_deployment(model, version, model, "default")
    }

    pub fn for_deployment(
        &self,
        model: &str,
        version: &str,
        endpoint: &str,
        deployment: &str,
    ) -> ModelMetrics {
        let mv = [model, version, endpoint, deployment];
        ModelMetrics {
            success: self
                .requests
                .with_label_values(&[model, version, endpoint, deployment, "success"]),
            request_duration: self.request_duration.with_label_values(&mv),
            queue_duration: self.queue_duration.with_label_values(&mv),
            compute_duration: self.compute_duration.with_label_values(&mv),
            batch_rows: self.batch_rows.with_label_values(&mv),
            queue_depth: self.queue_depth.with_label_values(&mv),
            inflight: self.inflight.with_label_values(&mv),
            requests: self.requests.clone(),
            kernel_seconds: self.device_kernel_seconds.clone(),
            kernel_launches: self.device_kernel_launches.clone(),
            kernels_exported: Default::default(),
            labels: mv.map(str::to_string),
        }
    }
}

impl Default for ModelSeries {
    fn default() -> Self {
        ModelSeries::new()
    }
}

/// One model version's series, resolved once at load time so the request
/// path does no label hashing or registry locking.
pub struct ModelMetrics {
    pub success: prometheus::IntCounter,
    pub request_duration: prometheus::Histogram,
    pub queue_duration: prometheus::Histogram,
    pub compute_duration: prometheus::Histogram,
    pub batch_rows: prometheus::Histogram,
    pub queue_depth: prometheus::IntGauge,
    pub inflight: prometheus::IntGauge,
    /// For the rare failure outcomes, looked up when they happen.
    requests: IntCounterVec,
    kernel_seconds: CounterVec,
    kernel_launches: IntCounterVec,
    /// What this model's backend had reached at the last export, per
    /// kernel: a reloaded deployment has the same labels but restarts its
    /// totals from zero, so deltas are taken against this, not the counter.
    kernels_exported: std::sync::Mutex<std::collections::HashMap<&'static str, (u64, u64)>>,
    labels: [String; 4],
}

impl ModelMetrics {
    /// Brings the kernel-time counters up to the backend's running totals.
    /// Called when `/metrics` is scraped: the backend sums in its own
    /// structure, so the batch path never touches the Prometheus registry.
    pub fn export_device_timings(&self, timings: &ferroserve_backend_core::DeviceTimings) {
        let [m, v, e, d] = &self.labels;
        let mut exported = self
            .kernels_exported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (kernel, stat) in timings.snapshot() {
            let labels = [
                m.as_str(),
                v.as_str(),
                e.as_str(),
                d.as_str(),
                timings.device(),
                kernel,
            ];
            let last = exported.entry(kernel).or_default();
            let nanos = stat.nanos.saturating_sub(last.1);
            if nanos > 0 {
                self.kernel_seconds
                    .with_label_values(&labels)
                    .inc_by(nanos as f64 / 1e9);
            }
            self.kernel_launches
                .with_label_values(&labels)
                .inc_by(stat.launches.saturating_sub(last.0));
            *last = (stat.launches, stat.nanos);
        }
    }

    pub fn failure(&self, outcome: &str) {
        let [m, v, e, d] = &self.labels;
        self.requests
            .with_label_values(&[m.as_str(), v.as_str(), e.as_str(), d.as_str(), outcome])
            .inc();
    }
}
