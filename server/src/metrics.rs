//! Prometheus metrics. Label sets are small and fixed (model, version,
//! endpoint, deployment, outcome) so that cardinality stays bounded
//! whatever clients send: every label value comes from the registry, never
//! from a request.

use prometheus::{
    exponential_buckets, CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_duration: HistogramVec,
    pub compute_duration: HistogramVec,
    pub batch_rows: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub inflight: IntGaugeVec,
    /// Requests refused before they reached a model (body too large,
    /// unauthorized, gRPC message too large), by reason.
    pub rejected: IntCounterVec,
    /// Connections refused before a request was read (connection limit,
    /// failed or timed-out TLS handshake), by reason.
    pub connections_rejected: IntCounterVec,
    /// Connections the server closed on its own (idle, slow request head,
    /// unanswered HTTP/2 ping), by reason.
    pub connections_closed: IntCounterVec,
    /// Connections open now, over all listeners.
    pub open_connections: IntGauge,
    /// Lifecycle events emitted, by CloudEvent type.
    pub events_emitted: IntCounterVec,
    /// Events some consumer lost, by reason (`webhook_queue_full`,
    /// `subscriber_lagged`, `audit_queue_full`, `audit_failed`).
    pub events_dropped: IntCounterVec,
    /// Webhook delivery attempts, by outcome (`success`, `http_error`,
    /// `timeout`, `connect_error`, `tls_error`: the TLS handshake failed,
    /// e.g. the receiver's certificate is not trusted).
    pub webhook_deliveries: IntCounterVec,
    /// Events a webhook never received (retries exhausted or refused).
    pub webhook_failures: prometheus::IntCounter,
    /// Server-sent-event subscribers connected now.
    pub event_subscribers: IntGauge,
    /// Mirrored copies answered by a shadow deployment, by outcome.
    pub mirror_requests: IntCounterVec,
    /// Mirrored copies dropped because too many were in flight.
    pub mirror_dropped: IntCounterVec,
    /// Device time per kernel, from the backend's profiling events (OpenCL).
    pub device_kernel_seconds: CounterVec,
    /// Kernel launches, from the same events.
    pub device_kernel_launches: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
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
        let rejected = IntCounterVec::new(
            Opts::new(
                "ferroserve_rejected_requests_total",
                "Requests refused before reaching a model",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "ferroserve_connections_rejected_total",
                "Connections refused before any request was read",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "ferroserve_connections_closed_total",
                "Connections the server closed because a limit was hit",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let open_connections = IntGauge::new(
            "ferroserve_open_connections",
            "Client connections open now, over all listeners",
        )
        .expect("valid metric");
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let events_emitted = counter_vec(
            "ferroserve_events_emitted_total",
            "Lifecycle events emitted, by CloudEvent type",
            "type",
        );
        let events_dropped = counter_vec(
            "ferroserve_events_dropped_total",
            "Lifecycle events a consumer lost, by reason",
            "reason",
        );
        let webhook_deliveries = counter_vec(
            "ferroserve_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome",
            "outcome",
        );
        let webhook_failures = prometheus::IntCounter::new(
            "ferroserve_webhook_failures_total",
            "Events given up on by a webhook after its retries",
        )
        .expect("valid metric");
        let event_subscribers = IntGauge::new(
            "ferroserve_event_subscribers",
            "Server-sent-event subscribers connected now",
        )
        .expect("valid metric");
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "ferroserve_mirror_requests_total",
                "Mirrored copies of live requests answered by a shadow deployment, by outcome",
            ),
            &["endpoint", "deployment", "outcome"],
        )
        .expect("valid metric");
        let mirror_dropped = IntCounterVec::new(
            Opts::new(
                "ferroserve_mirror_dropped_total",
                "Mirrored copies dropped because too many were in flight",
            ),
            &["endpoint", "deployment"],
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(device_kernel_seconds.clone()),
            Box::new(device_kernel_launches.clone()),
            Box::new(request_duration.clone()),
            Box::new(queue_duration.clone()),
            Box::new(compute_duration.clone()),
            Box::new(batch_rows.clone()),
            Box::new(queue_depth.clone()),
            Box::new(inflight.clone()),
            Box::new(rejected.clone()),
            Box::new(connections_rejected.clone()),
            Box::new(connections_closed.clone()),
            Box::new(open_connections.clone()),
            Box::new(events_emitted.clone()),
            Box::new(events_dropped.clone()),
            Box::new(webhook_deliveries.clone()),
            Box::new(webhook_failures.clone()),
            Box::new(event_subscribers.clone()),
            Box::new(mirror_requests.clone()),
            Box::new(mirror_dropped.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            queue_duration,
            compute_duration,
            batch_rows,
            queue_depth,
            inflight,
            rejected,
            connections_rejected,
            connections_closed,
            open_connections,
            events_emitted,
            events_dropped,
            webhook_deliveries,
            webhook_failures,
            event_subscribers,
            mirror_requests,
            mirror_dropped,
            device_kernel_seconds,
            device_kernel_launches,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
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

impl Metrics {
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
