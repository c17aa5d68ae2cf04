//! A tiny hyper server on a loopback port, so the generator's counting is
//! tested over real sockets rather than against a mock.
//!
//! Routes: `/ok` (200), `/status/N` (N), `/sleep/MS` (200 after MS ms),
//! `/hang` (never answers), `/close` (200 with `Connection: close`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    counters: Arc<Counters>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&c), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            counters,
            accept,
        }
    }

    pub(crate) fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn bytes_received(&self) -> u64 {
        self.counters.bytes.load(Ordering::SeqCst)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn handle(
    c: Arc<Counters>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    c.requests.fetch_add(1, Ordering::SeqCst);
    c.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    let mut response = Response::new(Full::new(Bytes::from_static(b"answer")));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["ok"] => {}
        ["status", code] => {
            *response.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap()
        }
        ["sleep", ms] => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
        ["hang"] => tokio::time::sleep(Duration::from_secs(3600)).await,
        ["close"] => {
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, "close".parse().unwrap());
        }
        _ => *response.status_mut() = StatusCode::NOT_FOUND,
    }
    Ok(response)
}
