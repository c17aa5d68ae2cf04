//! The reference for HTTP overhead: the least a server can do per request on
//! the same stack (tokio + hyper, same connection settings and worker count
//! as ferroserve): read the whole body, answer a body of the same size with
//! the same headers. ferroserve's requests/s divided by this one's is the
//! share of the HTTP stack's speed that survives decoding, validation,
//! batching, inference and encoding.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

/// Body size of each answer, in bytes.
pub const RESPONSE_BYTES_ENV: &str = "FERROSERVE_BENCH_RESPONSE_BYTES";
/// Value of the `Inference-Header-Content-Length` answer header.
pub const HEADER_LEN_ENV: &str = "FERROSERVE_BENCH_HEADER_LEN";

struct Reply {
    body: Bytes,
    header_len: HeaderValue,
}

/// Runs until killed; prints `HTTP server listening on ADDR` when ready, as
/// ferroserve does.
pub fn main() -> Result<()> {
    let size: usize = env_number(RESPONSE_BYTES_ENV)?;
    let header_len: usize = env_number(HEADER_LEN_ENV)?;
    let reply = Arc::new(Reply {
        body: Bytes::from(vec![b' '; size]),
        header_len: HeaderValue::from(header_len),
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("HTTP server listening on {}", listener.local_addr()?);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true).timer(TokioTimer::new());
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let builder = Arc::clone(&builder);
            let reply = Arc::clone(&reply);
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(Arc::clone(&reply), req));
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    reply: Arc<Reply>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read to the end, as ferroserve must before it can decode.
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(reply.body.clone()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("inference-header-content-length", reply.header_len.clone());
    Ok(response)
}

fn env_number(name: &str) -> Result<usize> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set"))?
        .parse()
        .with_context(|| format!("{name} is not a byte count"))
}
