//! One HTTP/2 connection for the gRPC client stub, without tonic's
//! `Channel`.
//!
//! Why: a `Channel` puts a `tower::buffer` in front of the connection, so
//! every call is handed to a buffer task over a queue and its answer handed
//! back, two task switches and a few allocations per call on top of
//! hyper's own. On a small machine the generator's CPU is taken from the
//! server it measures (the gRPC generator cost three times the HTTP one per
//! request), so the calls here go straight to hyper's `SendRequest`. Like
//! the HTTP generator's [`Connection`](crate::Connection), one value is one
//! socket: it does not reconnect by itself.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::grpc_client::grpc_inference_service_client::GrpcInferenceServiceClient;

/// As tonic's endpoint had it: a server that never accepts fails the
/// connect instead of hanging the caller.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The stub over one direct connection.
pub type GrpcClient = GrpcInferenceServiceClient<GrpcConnection>;

/// A `tower::Service` over one HTTP/2 connection, for tonic's generated
/// clients.
#[derive(Clone)]
pub struct GrpcConnection {
    sender: SendRequest<tonic::body::Body>,
}

/// Opens the connection (with `TCP_NODELAY`, as the HTTP generator) and
/// returns the stub over it; the connection's own task runs on the current
/// runtime until the stub and its clones are dropped.
pub async fn connect(addr: SocketAddr) -> std::io::Result<GrpcClient> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let origin = format!("http://{addr}")
        .parse()
        .map_err(std::io::Error::other)?;
    Ok(GrpcInferenceServiceClient::with_origin(
        GrpcConnection { sender },
        origin,
    ))
}

impl tower::Service<hyper::Request<tonic::body::Body>> for GrpcConnection {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}
