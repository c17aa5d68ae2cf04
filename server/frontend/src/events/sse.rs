//! `GET /v2/admin/events`: the bus as a server-sent-event stream.
//!
//! Each event is `id: <id>\nevent: <type>\ndata: <CloudEvent JSON>\n\n`.
//! The stream opens with the comment `: subscribed`, sends `: keep-alive`
//! comments every `keepalive`, tells a subscriber that fell behind with an
//! `event: lagged` / `data: {"missed": N}` message (counted in
//! `ferroserve_events_dropped_total{reason="subscriber_lagged"}`), and ends
//! cleanly when the bus is closed at shutdown. `Last-Event-ID` resumption
//! is not supported: events are not stored for replay.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use ferroserve_registry::events::{CloudEvent, EventBus};

pub type SseBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// Formats one event as an SSE message.
pub fn format_event(e: &CloudEvent) -> String {
    format!("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.ty, e.to_json())
}

/// A body streaming the bus's events until the client goes away or the bus
/// is closed.
pub fn stream(bus: &EventBus, keepalive: Duration) -> SseBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut events = bus.subscribe();
    let closed = bus.closed();
    let already_closed = bus.is_closed();
    let counters = bus.counters().clone();
    tokio::spawn(async move {
        if already_closed {
            return;
        }
        counters.subscribers.inc();
        let _gauge = GaugeGuard(counters.subscribers.clone());
        tokio::pin!(closed);
        let send = |s: String| tx.send(Ok(Frame::data(Bytes::from(s))));
        if send(": subscribed\n\n".into()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            let msg = tokio::select! {
                () = &mut closed => return,
                () = tx.closed() => return,
                _ = tick.tick() => ": keep-alive\n\n".to_string(),
                r = events.recv() => match r {
                    Ok(e) => format_event(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        counters.drop_event("subscriber_lagged", n);
                        format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if send(msg).await.is_err() {
                return;
            }
        }
    });
    StreamBody::new(ReceiverStream::new(rx))
}

struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
