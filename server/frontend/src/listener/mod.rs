//! The accept loop every front end shares: HTTP/1.1 and h2 on one port
//! through hyper-util's auto builder, optionally behind TLS, with graceful
//! shutdown. Keeping one loop means the connection limit, TLS, timeouts and
//! authentication apply to HTTP and gRPC alike.
//!
//! What a connection may cost the server is bounded:
//!
//! - at most `max_connections` are open over all listeners; beyond that a
//!   new connection is accepted and closed at once;
//! - a TLS handshake must finish within `tls_handshake_timeout`;
//! - an HTTP/1 request head must arrive within `header_read_timeout` (hyper
//!   starts that clock whenever it waits for a head, so it also bounds the
//!   wait for the next request on a keep-alive connection);
//! - a connection with no request in flight is closed after `idle_timeout`
//!   without activity (for HTTP/1, arriving bytes count as activity; for
//!   HTTP/2 they don't, since PINGs and window updates are not requests);
//! - HTTP/2 connections get a cap on concurrent streams and on the header
//!   list size, and a PING after `http2_keep_alive_interval` without a frame
//!   from the peer, which must be answered within `http2_keep_alive_timeout`,
//!   so dead peers are dropped even while a long stream is open.
//!
//! Each hit is counted in `ferroserve_connections_rejected_total` or
//! `ferroserve_connections_closed_total`, by reason.

mod activity;
mod front;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::AuthPolicy;
use crate::metrics::Metrics;
use activity::{Activity, TrackedIo};
use front::{Front, FrontShared};

/// Per-connection limits, shared by all listeners.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// An HTTP/1 client that has not sent a complete request head within
    /// this time is disconnected (slow-loris).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no activity for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Connections open at once over all listeners; more are closed at once.
    pub max_connections: usize,
    /// A TLS handshake must complete within this time.
    pub tls_handshake_timeout: Duration,
    /// Concurrent HTTP/2 streams (requests) per connection.
    pub http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list (decoded), in bytes.
    pub http2_max_header_list_bytes: u32,
    /// An HTTP/2 connection that sent no frame for this long is PINGed...
    pub http2_keep_alive_interval: Duration,
    /// ...and closed when a PING is not answered within this time.
    pub http2_keep_alive_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            http2_max_concurrent_streams: 256,
            http2_max_header_list_bytes: 64 << 10,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// The counters a listener updates, resolved once (which also makes every
/// series visible at zero from the start).
struct ConnCounters {
    accept_failed: IntCounter,
    max_connections: IntCounter,
    tls_handshake_failed: IntCounter,
    tls_handshake_timeout: IntCounter,
    header_timeout: IntCounter,
    idle_timeout: IntCounter,
    ping_timeout: IntCounter,
    open: IntGauge,
}

/// What every connection of every listener shares. Cloning shares the
/// connection budget: give the same options to the HTTP and the gRPC
/// listener and `max_connections` bounds both together.
#[derive(Clone)]
pub struct ConnOptions {
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    counters: Arc<ConnCounters>,
    front: Arc<FrontShared>,
}

impl ConnOptions {
    /// The same options with a connection budget of their own: the metrics
    /// port must stay reachable to scrapers when inference traffic has
    /// used up the shared one.
    pub fn with_own_connection_limit(&self, max_connections: usize) -> ConnOptions {
        ConnOptions {
            connections: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            ..self.clone()
        }
    }

    pub fn new(
        limits: ConnLimits,
        tls: Option<TlsAcceptor>,
        auth: AuthPolicy,
        metrics: &Metrics,
    ) -> ConnOptions {
        let rejected = |r: &str| metrics.connections_rejected.with_label_values(&[r]);
        let closed = |r: &str| metrics.connections_closed.with_label_values(&[r]);
        let refused = |r: &str| metrics.rejected.with_label_values(&[r]);
        // Resolved here so the series exist (at zero) from the start.
        refused("body_too_large");
        refused("body_read_timeout");
        ConnOptions {
            connections: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            limits,
            tls,
            counters: Arc::new(ConnCounters {
                accept_failed: rejected("accept_failed"),
                max_connections: rejected("max_connections"),
                tls_handshake_failed: rejected("tls_handshake_failed"),
                tls_handshake_timeout: rejected("tls_handshake_timeout"),
                header_timeout: closed("header_timeout"),
                idle_timeout: closed("idle_timeout"),
                ping_timeout: closed("ping_timeout"),
                open: metrics.open_connections.clone(),
            }),
            front: Arc::new(FrontShared {
                auth,
                unauthorized: refused("unauthorized"),
                grpc_too_large: refused("grpc_message_too_large"),
            }),
        }
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let l = &self.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.http2_max_concurrent_streams)
            .max_header_list_size(l.http2_max_header_list_bytes)
            .keep_alive_interval(l.http2_keep_alive_interval)
            .keep_alive_timeout(l.http2_keep_alive_timeout);
        builder
    }
}

/// Holds a place in the connection budget and the open-connections gauge
/// for as long as the connection's task runs.
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What a connection task needs, shared by all of one listener's tasks.
struct Ctx {
    builder: auto::Builder<TokioExecutor>,
    opts: ConnOptions,
}

/// Accepts connections until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to `grace`) and returns.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    opts: &ConnOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ctx = Arc::new(Ctx {
        builder: opts.builder(),
        opts: opts.clone(),
    });
    // Every connection task holds a receiver: `drain.send` asks them to
    // close gracefully, `drain.closed()` resolves when the last has ended.
    let (drain, draining) = watch::channel(false);
    let mut last_accept_warning: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Running out of file descriptors must not kill the
                    // server, nor flood its log: one warning a minute.
                    opts.counters.accept_failed.inc();
                    if last_accept_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "accept failed (counted in ferroserve_connections_rejected_total{{reason=\"accept_failed\"}})");
                        last_accept_warning = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&opts.connections).try_acquire_owned() else {
            opts.counters.max_connections.inc();
            tracing::debug!(%peer, "connection closed at once: --max-connections reached");
            drop(stream);
            continue;
        };
        opts.counters.open.inc();
        let open = OpenConnection {
            _permit: permit,
            gauge: opts.counters.open.clone(),
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let ctx = Arc::clone(&ctx);
        let draining = draining.clone();
        tokio::spawn(async move {
            let _open = open;
            let Some(tls) = &ctx.opts.tls else {
                return run_connection(stream, false, service, &ctx, draining, peer).await;
            };
            let counters = &ctx.opts.counters;
            let handshake = tls.accept(stream);
            match tokio::time::timeout(ctx.opts.limits.tls_handshake_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    run_connection(stream, h2, service, &ctx, draining, peer).await;
                }
                Ok(Err(e)) => {
                    counters.tls_handshake_failed.inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed; closing");
                }
                Err(_) => {
                    counters.tls_handshake_timeout.inc();
                    tracing::debug!(%peer, "TLS handshake timed out; closing");
                }
            }
        });
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(true);
    if tokio::time::timeout(grace, drain.closed()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "connections still open after the grace period; closing them"
        );
    }
}

/// How long an idle connection may take to close gracefully (HTTP/2 GOAWAY,
/// or a request that raced the decision finishing) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Why a connection is being closed by the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    Idle,
    Shutdown,
}

/// Serves one connection until it ends; closes it gracefully (HTTP/2 GOAWAY,
/// HTTP/1 `Connection: close` or an immediate close when between requests)
/// when it has been idle too long or the server shuts down.
async fn run_connection<I, S, B>(
    io: I,
    h2: bool,
    service: S,
    ctx: &Ctx,
    mut draining: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new(h2));
    let io = TokioIo::new(TrackedIo::new(io, Arc::clone(&activity)));
    let front = Front::new(service, Arc::clone(&ctx.opts.front), Arc::clone(&activity));
    let conn = ctx.builder.serve_connection(io, front);
    tokio::pin!(conn);
    let idle = ctx.opts.limits.idle_timeout;
    let counters = &ctx.opts.counters;
    let mut closing = None;
    let result = loop {
        let wait = match (closing, activity.idle_for()) {
            (Some(Closing::Idle), _) => IDLE_CLOSE_GRACE,
            // Bounded by the caller's grace period.
            (Some(Closing::Shutdown), _) => Duration::MAX,
            (None, None) => idle,
            (None, Some(d)) => idle.saturating_sub(d),
        };
        tokio::select! {
            result = conn.as_mut() => break Some(result),
            () = tokio::time::sleep(wait) => match closing {
                Some(_) => break None,
                None if activity.idle_for().is_some_and(|d| d >= idle) => {
                    counters.idle_timeout.inc();
                    tracing::debug!(%peer, idle_s = idle.as_secs_f64(), "closing an idle connection");
                    closing = Some(Closing::Idle);
                    conn.as_mut().graceful_shutdown();
                }
                None => {}
            },
            changed = draining.changed(), if closing.is_none() => {
                // An error means the listener is gone: drain as well.
                let _ = changed;
                closing = Some(Closing::Shutdown);
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    let error = match result {
        Some(Err(e)) if closing.is_none() => e,
        Some(_) => return,
        None => {
            tracing::debug!(%peer, "connection did not close gracefully in time; dropped");
            return;
        }
    };
    let timed_out = error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    if !timed_out {
        tracing::debug!(%peer, error = %error, "connection ended with an error");
    } else if activity.is_h2() {
        counters.ping_timeout.inc();
        tracing::debug!(%peer, "HTTP/2 keep-alive PING not answered; connection closed");
    } else if activity.partial_request_pending() {
        counters.header_timeout.inc();
        tracing::debug!(%peer, "request head not received in time; connection closed");
    } else {
        // hyper's header clock also runs while a keep-alive connection
        // waits for its next request; with no byte of one, that is idleness.
        counters.idle_timeout.inc();
        tracing::debug!(%peer, "keep-alive connection idle past the header read timeout; closed");
    }
}
