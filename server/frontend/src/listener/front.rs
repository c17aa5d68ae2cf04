//! The per-request wrapper every listener puts around its service, so that
//! HTTP and gRPC get the same treatment from one place:
//!
//! - the bearer-token check of [`crate::auth`], before routing: a refused
//!   request never reaches a handler and is counted
//!   (`ferroserve_rejected_requests_total{reason="unauthorized"}`);
//! - in-flight tracking for the idle timeout: a request counts from the
//!   moment its head is parsed until its response body has been sent;
//! - gRPC messages over `--max-grpc-message-bytes`: tonic refuses them with
//!   OUT_OF_RANGE, which is answered as RESOURCE_EXHAUSTED instead (what the
//!   gRPC status-code table and the C++/Go/Java servers use, and what
//!   clients test for) and counted (`reason="grpc_message_too_large"`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::service::Service;
use hyper::{Request, Response};
use pin_project_lite::pin_project;

use super::activity::{Activity, InflightGuard};
use crate::auth::{self, AuthPolicy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The start of tonic's message when a request message exceeds
/// `max_decoding_message_size`.
const TONIC_DECODE_TOO_LARGE: &str = "Error, decoded message length too large";

/// What the wrappers of all connections share.
pub struct FrontShared {
    pub auth: AuthPolicy,
    pub unauthorized: prometheus::IntCounter,
    pub grpc_too_large: prometheus::IntCounter,
}

/// The wrapper around one connection's service.
pub struct Front<S> {
    inner: S,
    shared: Arc<FrontShared>,
    activity: Arc<Activity>,
}

impl<S> Front<S> {
    pub fn new(inner: S, shared: Arc<FrontShared>, activity: Arc<Activity>) -> Front<S> {
        Front {
            inner,
            shared,
            activity,
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Front<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    B: Body<Data = Bytes>,
{
    type Response = Response<FrontBody<B>>;
    type Error = S::Error;
    type Future = FrontFuture<S::Future, B>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.request_started();
        if self
            .shared
            .auth
            .check(req.uri().path(), req.headers())
            .is_err()
        {
            self.shared.unauthorized.inc();
            let grpc = auth::is_grpc(req.headers());
            // The path is logged, never the Authorization header.
            tracing::debug!(
                method = %req.method(),
                path = req.uri().path(),
                grpc,
                "request refused: missing or wrong bearer token"
            );
            let response = auth::unauthorized_response(grpc).map(|b| FrontBody {
                inner: Either::Right(b),
                _guard: guard,
            });
            return FrontFuture::Refused {
                response: Some(response),
            };
        }
        FrontFuture::Forwarded {
            fut: self.inner.call(req),
            guard: Some(guard),
            shared: Arc::clone(&self.shared),
        }
    }
}

pin_project! {
    #[project = FrontFutureProj]
    pub enum FrontFuture<F, B> {
        Forwarded {
            #[pin]
            fut: F,
            guard: Option<InflightGuard>,
            shared: Arc<FrontShared>,
        },
        Refused {
            response: Option<Response<FrontBody<B>>>,
        },
    }
}

impl<F, B, E> Future for FrontFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<FrontBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FrontFutureProj::Forwarded { fut, guard, shared } => {
                let mut response = ready!(fut.poll(cx))?;
                grpc_size_refusal(&mut response, &shared.grpc_too_large);
                let guard = guard.take().expect("FrontFuture polled after completion");
                Poll::Ready(Ok(response.map(|b| FrontBody {
                    inner: Either::Left(b),
                    _guard: guard,
                })))
            }
            FrontFutureProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("FrontFuture polled after completion"))),
        }
    }
}

/// Turns tonic's OUT_OF_RANGE for an oversized request message into
/// RESOURCE_EXHAUSTED and counts it. tonic answers it before reading the
/// message (trailers-only), with the `Status` in the response extensions.
fn grpc_size_refusal<B>(response: &mut Response<B>, counter: &prometheus::IntCounter) {
    let Some(status) = response.extensions().get::<tonic::Status>() else {
        return;
    };
    if status.code() != tonic::Code::OutOfRange
        || !status.message().starts_with(TONIC_DECODE_TOO_LARGE)
    {
        return;
    }
    let fixed = tonic::Status::resource_exhausted(status.message().to_owned());
    counter.inc();
    tracing::debug!(message = fixed.message(), "gRPC request message too large");
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static("8"));
    response.extensions_mut().insert(fixed);
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it
    /// has been sent or dropped.
    pub struct FrontBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        _guard: InflightGuard,
    }
}

impl<B> Body for FrontBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
