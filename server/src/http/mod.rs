//! The HTTP front end: hyper 1 serving HTTP/1.1 (keep-alive) and h2c on one
//! port, with graceful shutdown.

mod codec;
mod json_data;
mod reply;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::models::ModelTable;

pub use codec::{decode_request, InferRequest};

/// Limits applied to every HTTP request.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Bodies larger than this are refused with 413 before being read.
    pub max_body_bytes: usize,
    /// A client that has not sent its request headers within this time is
    /// disconnected, so slow clients cannot hold connections forever.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 64 << 20,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// What request handlers share: a handful of `Arc`s, no god object.
pub struct AppState {
    pub models: Arc<ModelTable>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpLimits,
    /// Goes false the moment shutdown starts, so load balancers stop sending.
    pub ready: AtomicBool,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to `grace`) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Running out of file descriptors must not kill the server.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = service_fn(move |req| routes::handle(Arc::clone(&state), req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    state.ready.store(false, Ordering::Release);
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "connections still open after the grace period; closing them"
        );
    }
    Ok(())
}
