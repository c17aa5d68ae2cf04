//! Lifecycle events as [CloudEvents 1.0](https://github.com/cloudevents/spec)
//! in structured JSON mode, and the [`EventBus`] that fans them out.
//!
//! An event looks like this (`io.ferroserve.deployment.created`, emitted once
//! per model when `serve` starts serving it):
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "id": "18c6a1f0e2b3c4d5-4242-1",
//!   "source": "/ferroserve/myhost",
//!   "type": "io.ferroserve.deployment.created",
//!   "subject": "mlp:1",
//!   "time": "2026-11-29T06:08:00Z",
//!   "datacontenttype": "application/json",
//!   "data": {"model": "mlp", "version": 1, "backend": "onnx", "instances": 1, "reason": "startup"}
//! }
//! ```
//!
//! `id` is unique per `source` (process start time, process id and a
//! counter); `subject` is `model` or `model:version`; `time` is RFC 3339 UTC.
//! The registry routes of the server (`/v2/admin/models`) emit the
//! registered / alias moved / version deleted types; the others in [`types`]
//! are reserved for deployments and drift detection, which will emit
//! through the same bus.
//!
//! [`EventBus::emit`] never blocks: it sends to a tokio broadcast channel
//! (server-sent-event subscribers; a lagging one loses events and is told),
//! `try_send`s into one bounded queue per webhook (full: dropped and counted)
//! and into a bounded queue to the audit-log writer thread.

mod audit;
mod failures;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

pub use failures::DeploymentFailure;

use crate::lifecycle as types;

/// Event types whose audit row the registry writes itself (see
/// `registry::models` and `registry::register`); the bus
/// does not append them to the audit log again.
pub const REGISTRY_AUDITED: &[&str] = &[
    types::MODEL_REGISTERED,
    types::ALIAS_MOVED,
    types::VERSION_DELETED,
    types::ENDPOINT_CHANGED,
];

/// One CloudEvent, structured mode: this serializes to exactly the JSON
/// documented above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: String,
    pub time: String,
    pub datacontenttype: String,
    pub data: serde_json::Value,
}

impl CloudEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event serializes")
    }
}

/// Queue sizes and where the audit log lives.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `/ferroserve/<host>` unless set.
    pub source: String,
    /// Events a slow server-sent-event subscriber may fall behind by before
    /// it loses some.
    pub subscriber_buffer: usize,
    /// Events queued per webhook before new ones are dropped.
    pub webhook_queue: usize,
    /// How many webhooks (each gets its own queue and delivery task).
    pub webhooks: usize,
    /// Repository whose `registry.db` receives every event as an audit
    /// entry; `None` (or no registry.db there) skips the audit log.
    pub audit_repo: Option<std::path::PathBuf>,
    /// Actor recorded in the audit log.
    pub actor: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            source: default_source(),
            subscriber_buffer: 256,
            webhook_queue: 1024,
            webhooks: 0,
            audit_repo: None,
            actor: "ferroserve".into(),
        }
    }
}

/// `/ferroserve/<hostname>`.
pub fn default_source() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("/ferroserve/{host}")
}

/// What the bus and its consumers did, as Prometheus counters: the server
/// registers them in its `/metrics`; a bus made elsewhere (tests) counts
/// into its own. Cheap to clone: clones share the counters.
#[derive(Clone)]
pub struct EventCounters {
    /// Lifecycle events emitted, by CloudEvent type.
    pub emitted: IntCounterVec,
    /// Events some consumer lost, by reason (`webhook_queue_full`,
    /// `subscriber_lagged`, `audit_queue_full`, `audit_failed`).
    pub dropped: IntCounterVec,
    /// Webhook delivery attempts, by outcome (`success`, `http_error`,
    /// `timeout`, `connect_error`, `tls_error`: the TLS handshake failed,
    /// e.g. the receiver's certificate is not trusted).
    pub webhook_deliveries: IntCounterVec,
    /// Events a webhook never received (retries exhausted or refused).
    pub webhook_failures: IntCounter,
    /// Server-sent-event subscribers connected now.
    pub subscribers: IntGauge,
}

impl Default for EventCounters {
    fn default() -> Self {
        EventCounters::new()
    }
}

impl EventCounters {
    pub fn new() -> Self {
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        EventCounters {
            emitted: counter_vec(
                "ferroserve_events_emitted_total",
                "Lifecycle events emitted, by CloudEvent type",
                "type",
            ),
            dropped: counter_vec(
                "ferroserve_events_dropped_total",
                "Lifecycle events a consumer lost, by reason",
                "reason",
            ),
            webhook_deliveries: counter_vec(
                "ferroserve_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome",
                "outcome",
            ),
            webhook_failures: IntCounter::new(
                "ferroserve_webhook_failures_total",
                "Events given up on by a webhook after its retries",
            )
            .expect("valid metric"),
            subscribers: IntGauge::new(
                "ferroserve_event_subscribers",
                "Server-sent-event subscribers connected now",
            )
            .expect("valid metric"),
        }
    }

    /// Every counter, for registering in a Prometheus registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.emitted.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.webhook_deliveries.clone()),
            Box::new(self.webhook_failures.clone()),
            Box::new(self.subscribers.clone()),
        ]
    }

    pub fn drop_event(&self, reason: &str, n: u64) {
        self.dropped.with_label_values(&[reason]).inc_by(n);
    }
}

struct Inner {
    source: String,
    start: String,
    seq: AtomicU64,
    sse: broadcast::Sender<Arc<CloudEvent>>,
    webhooks: Vec<mpsc::Sender<Arc<CloudEvent>>>,
    audit: Option<audit::AuditWriter>,
    closed: watch::Sender<bool>,
    counters: EventCounters,
    failures: failures::Failures,
}

/// Cheap to clone; every clone feeds the same subscribers and queues.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl EventBus {
    /// A bus and, for each of `cfg.webhooks`, the receiving end of its queue
    /// (the server's webhook delivery reads them).
    pub fn new(
        cfg: BusConfig,
        counters: &EventCounters,
    ) -> (EventBus, Vec<mpsc::Receiver<Arc<CloudEvent>>>) {
        let (sse, _) = broadcast::channel(cfg.subscriber_buffer.max(1));
        let (webhooks, receivers): (Vec<_>, Vec<_>) = (0..cfg.webhooks)
            .map(|_| mpsc::channel(cfg.webhook_queue.max(1)))
            .unzip();
        let counters = counters.clone();
        let audit = cfg
            .audit_repo
            .as_deref()
            .and_then(|repo| audit::AuditWriter::start(repo, cfg.actor.clone(), counters.clone()));
        let start = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let bus = EventBus {
            inner: Arc::new(Inner {
                source: cfg.source,
                start: format!("{:x}-{}", start, std::process::id()),
                seq: AtomicU64::new(0),
                sse,
                webhooks,
                audit,
                closed: watch::channel(false).0,
                counters,
                failures: failures::Failures::default(),
            }),
        };
        (bus, receivers)
    }

    /// Builds an event of type `ty` about `subject`, from this server, now.
    pub fn event(&self, ty: &str, subject: &str, data: serde_json::Value) -> CloudEvent {
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        CloudEvent {
            specversion: "1.0".into(),
            id: format!("{}-{n}", self.inner.start),
            source: self.inner.source.clone(),
            ty: ty.into(),
            subject: subject.into(),
            time: crate::now_rfc3339(),
            datacontenttype: "application/json".into(),
            data,
        }
    }

    /// Hands the event to every subscriber, webhook queue and the audit
    /// log. Never blocks or fails: what cannot be queued is dropped and
    /// counted in `ferroserve_events_dropped_total`.
    pub fn emit(&self, event: CloudEvent) {
        let i = &self.inner;
        i.counters.emitted.with_label_values(&[&event.ty]).inc();
        tracing::info!(r#type = %event.ty, subject = %event.subject, id = %event.id, "event");
        i.failures.observe(&event);
        let event = Arc::new(event);
        // An error only means nobody is subscribed.
        let _ = i.sse.send(Arc::clone(&event));
        for q in &i.webhooks {
            if q.try_send(Arc::clone(&event)).is_err() {
                i.counters.drop_event("webhook_queue_full", 1);
                tracing::warn!(id = %event.id, "webhook queue full; event dropped for that webhook");
            }
        }
        // The registry writes its own audit row for these, in the same
        // transaction as the change (with the requesting user); a second
        // row from the bus would only duplicate it.
        if let Some(a) = &i.audit {
            if !REGISTRY_AUDITED.contains(&event.ty.as_str()) {
                a.append(event);
            }
        }
    }

    /// The last failure of every deployment that has not loaded since
    /// (from the `deployment.*` events emitted so far).
    pub fn deployment_failures(&self) -> Vec<DeploymentFailure> {
        self.inner.failures.list()
    }

    /// A new server-sent-event subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CloudEvent>> {
        self.inner.sse.subscribe()
    }

    /// Resolves once [`EventBus::close`] has been called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Shutdown: ends every event stream (so open streams do not hold up a
    /// graceful shutdown) and stops the webhook tasks (events still queued
    /// for a webhook are not delivered). Never blocks.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Waits, at most `timeout`, until every event emitted so far is in the
    /// audit log. Blocks: call it outside async code (at exit).
    pub fn flush_audit(&self, timeout: std::time::Duration) {
        if let Some(a) = &self.inner.audit {
            a.flush(timeout);
        }
    }

    /// The counters the bus and its consumers (webhooks, subscribers) add to.
    pub fn counters(&self) -> &EventCounters {
        &self.inner.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_structured_cloudevents() {
        let m = EventCounters::new();
        let (bus, _) = EventBus::new(BusConfig::default(), &m);
        let a = bus.event(
            types::DEPLOYMENT_CREATED,
            "mlp:1",
            serde_json::json!({"model": "mlp"}),
        );
        let b = bus.event(types::DEPLOYMENT_CREATED, "mlp:1", serde_json::json!({}));
        assert_ne!(a.id, b.id);
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "data",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.ferroserve.deployment.created");
        assert!(v["source"].as_str().unwrap().starts_with("/ferroserve/"));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_loses_events_but_emit_never_blocks() {
        let m = EventCounters::new();
        let cfg = BusConfig {
            subscriber_buffer: 2,
            webhooks: 1,
            webhook_queue: 2,
            ..BusConfig::default()
        };
        let (bus, _queues) = EventBus::new(cfg, &m);
        let mut rx = bus.subscribe();
        for _ in 0..5 {
            bus.emit(bus.event(types::DRIFT_DETECTED, "m", serde_json::json!({})));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(
            m.dropped.with_label_values(&["webhook_queue_full"]).get(),
            3
        );
    }
}
