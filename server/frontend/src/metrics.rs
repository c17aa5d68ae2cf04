//! The server's Prometheus registry: the models' series (from the runtime,
//! [`ModelSeries`]) and the server's own (refused requests and connections,
//! events and webhooks, mirrored traffic). Label sets are small and fixed so
//! that cardinality stays bounded whatever clients send: every label value
//! comes from the registry or the code, never from a request.

use ferroserve_registry::events::EventCounters;
use ferroserve_runtime::metrics::ModelSeries;
use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// The models' own series (requests, latency, batches, queue depth,
    /// device time), which the runtime writes.
    pub models: ModelSeries,
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
    /// What the event bus and its consumers did (emitted, dropped,
    /// webhook deliveries, subscribers).
    pub events: EventCounters,
    /// Mirrored copies answered by a shadow deployment, by outcome.
    pub mirror_requests: IntCounterVec,
    /// Mirrored copies dropped because too many were in flight.
    pub mirror_dropped: IntCounterVec,
    /// What the deployments' captures wrote and dropped.
    pub capture: ferroserve_monitoring::capture::CaptureSeries,
    /// The deployments' drift scores, by feature and method.
    pub drift: ferroserve_monitoring::drift::DriftSeries,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
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
        let events = EventCounters::new();
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
        let models = ModelSeries::new();
        let capture = ferroserve_monitoring::capture::CaptureSeries::new();
        let drift = ferroserve_monitoring::drift::DriftSeries::new();
        for c in models
            .collectors()
            .into_iter()
            .chain(events.collectors())
            .chain(capture.collectors())
            .chain(drift.collectors())
            .chain([
                Box::new(rejected.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(connections_rejected.clone()),
                Box::new(connections_closed.clone()),
                Box::new(open_connections.clone()),
                Box::new(mirror_requests.clone()),
                Box::new(mirror_dropped.clone()),
                Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            ])
        {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            models,
            rejected,
            connections_rejected,
            connections_closed,
            open_connections,
            events,
            mirror_requests,
            mirror_dropped,
            capture,
            drift,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
