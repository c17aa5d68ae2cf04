//! The HTTP front end: hyper 1 serving HTTP/1.1 (keep-alive) and h2 (h2c, or
//! negotiated by ALPN under TLS) on one port, with graceful shutdown.
//! Connection limits, TLS and authentication come from the shared accept
//! loop in [`crate::listener`].

mod endpoints_api;
mod management;
mod reply;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::listener::{self, ConnOptions};
use crate::state::AppState;

/// Serves the HTTP front end on `listener` until `shutdown` resolves, then
/// drains in-flight requests for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    opts: &ConnOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let service = service_fn(move |req| routes::handle_any(Arc::clone(&state), req));
    listener::serve(listener, service, opts, shutdown, grace).await;
}

/// Serves `GET /metrics` alone on its own port (Triton's 8002), until
/// `shutdown` resolves. Shares the connection limits and accept loop of the
/// other ports.
pub async fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    opts: &ConnOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let service = service_fn(move |req| routes::handle_metrics_only(Arc::clone(&state), req));
    listener::serve(listener, service, opts, shutdown, grace).await;
}
