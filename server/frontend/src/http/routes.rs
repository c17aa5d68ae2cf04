//! Routing and the handlers of the Open Inference Protocol's HTTP surface.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::reply::{self, Body};
use crate::endpoints::routing::Served;
use crate::endpoints::{drift, Routed, DEPLOYMENT_HEADER};
use crate::extensions::EXTENSIONS;
use crate::extensions::{config, index, statistics};
use crate::state::AppState;
use ferroserve_protocol::json::{self as codec, ResponseParts};
use ferroserve_runtime::infer::InferError;

const HEADER_LENGTH: &str = "inference-header-content-length";

/// The one streaming route's body beside everyone else's buffered one.
pub type AnyBody = http_body_util::Either<Body, crate::events::sse::SseBody>;

/// [`handle`], plus `GET /v2/admin/events`, the lifecycle event stream
/// (server-sent events; management auth applies by its path).
pub async fn handle_any(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<AnyBody>, Infallible> {
    use http_body_util::Either;
    if req.uri().path().trim_end_matches('/') == "/v2/admin/events" {
        if req.method() != Method::GET {
            return Ok(method_not_allowed(req.method(), req.uri().path()).map(Either::Left));
        }
        let body = crate::events::sse::stream(&state.events, state.events_keepalive);
        let mut r = Response::new(Either::Right(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        return Ok(r);
    }
    handle(state, req).await.map(|r| r.map(Either::Left))
}

/// The metrics port's whole surface: `GET /metrics` and nothing else, so a
/// scraper (or a network policy that lets only scrapers in) sees no model.
pub async fn handle_metrics_only(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    Ok(match (path.trim_end_matches('/'), req.method()) {
        ("/metrics", &Method::GET) => metrics(&state),
        ("/metrics", method) => method_not_allowed(method, path),
        _ => reply::error(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}: this port serves GET /metrics only"),
        ),
    })
}

pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    let response = match (segments.as_slice(), &method) {
        (["v2"], &Method::GET) => server_metadata(),
        (["v2", "health", "live"], &Method::GET) => reply::empty(StatusCode::OK),
        (["v2", "health", "ready"], &Method::GET) => ready_status(state.is_ready()),
        (["metrics"], &Method::GET) => metrics(&state),
        (["v2", "admin", "models", rest @ ..], _) => {
            super::management::handle(&state, rest, req).await
        }
        (["v2", "admin", "endpoints", rest @ ..], _) => {
            super::endpoints_api::handle(&state, rest, req).await
        }
        (["v2", "models", "stats"], &Method::GET) => stats_reply(&state, None, None),
        (["v2", "repository", "index"], &Method::POST) => repository_index(&state, req).await,
        (["v2", "models", "stats"] | ["v2", "repository", "index"], _) => {
            method_not_allowed(&method, &path)
        }
        (["v2", "models", rest @ ..], m) => match model_route(rest) {
            Some((name, version, action)) => match (action, m) {
                ("", &Method::GET) => with_model(&state, name, version, |m| {
                    model_metadata(name, version, &m)
                }),
                ("ready", &Method::GET) => with_model(&state, name, version, |s| {
                    match s.model.not_ready() {
                        Some(why) => reply::error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!("model {name:?} is not ready: {why}"),
                        ),
                        None => ready_status(state.is_ready()),
                    }
                }),
                ("config", &Method::GET) => with_model(&state, name, version, |s| {
                    let policy = config::served_policy(&s);
                    reply::json(
                        StatusCode::OK,
                        &config::to_json(&config::build(name, &s.model, &policy)),
                    )
                }),
                ("stats", &Method::GET) => stats_reply(&state, Some(name), version),
                ("drift", &Method::GET) => with_model(&state, name, version, |s| {
                    drift_reply(&s, name, version)
                }),
                ("infer", &Method::POST) => infer(&state, name, version, req).await,
                ("score", &Method::POST) => score(&state, name, version, req).await,
                ("" | "ready" | "infer" | "score" | "config" | "stats" | "drift", _) => {
                    method_not_allowed(&method, &path)
                }
                _ => not_found(&path),
            },
            None => not_found(&path),
        },
        (["v2"] | ["v2", "health", "live" | "ready"] | ["metrics"], _) => {
            method_not_allowed(&method, &path)
        }
        // Triton clients call these; say plainly that the extension is absent
        // rather than answer as if the route were mistyped.
        (["v2", ext @ ("systemsharedmemory" | "cudasharedmemory"), ..], _) => reply::error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("the {ext} extension is not supported by this server; send tensors in the request body"),
        ),
        _ => not_found(&path),
    };
    Ok(response)
}

/// Splits `NAME[/versions/V][/ready|/infer]` into its parts.
fn model_route<'a>(rest: &[&'a str]) -> Option<(&'a str, Option<&'a str>, &'a str)> {
    match rest {
        [name] => Some((name, None, "")),
        [name, action] => Some((name, None, action)),
        [name, "versions", v] => Some((name, Some(v), "")),
        [name, "versions", v, action] => Some((name, Some(v), action)),
        _ => None,
    }
}

/// Runs `f` on the endpoint's deployment serving `version` (any version:
/// the one with the most traffic).
fn with_model(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    f: impl FnOnce(Served) -> Response<Body>,
) -> Response<Body> {
    match state.routes.served(name, version) {
        Ok(s) => f(s),
        Err(e) => reply::infer_error(&e),
    }
}

/// Triton's statistics extension: every model, one model, or one version.
fn stats_reply(state: &AppState, name: Option<&str>, version: Option<&str>) -> Response<Body> {
    match statistics::collect(&state.routes, name, version) {
        Ok(r) => reply::json(StatusCode::OK, &statistics::to_json(&r)),
        Err(e) => reply::infer_error(&e),
    }
}

/// `GET /v2/models/{m}[/versions/{v}]/drift`: each deployment's drift
/// report (the one with the most traffic first, also at the top level).
fn drift_reply(s: &Served, name: &str, version: Option<&str>) -> Response<Body> {
    let mut reports: Vec<serde_json::Value> = s
        .endpoint
        .deployments
        .iter()
        .filter(|d| version.is_none_or(|v| d.model.version_label == v))
        .filter_map(|d| {
            let m = d.drift.as_ref()?;
            Some(drift::to_json(m, &m.snapshot()))
        })
        .collect();
    if reports.is_empty() {
        let v = version.map_or(String::new(), |v| format!(" version {v}"));
        return reply::error(
            StatusCode::NOT_FOUND,
            &format!("model {name:?}{v} has no drift monitor: no training baseline is recorded for its served version (record one with `ferroserve baseline --data FILE --repo R --model {name}:VERSION`)"),
        );
    }
    let mut top = reports[0].clone();
    top["model"] = json!(name);
    if reports.len() > 1 {
        top["deployments"] = serde_json::Value::Array(std::mem::take(&mut reports));
    }
    reply::json(StatusCode::OK, &top)
}

/// `POST /v2/repository/index`, body empty or `{"ready": bool}`.
async fn repository_index(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let result = async {
        let body = read_body(state, req, None).await?;
        let ready = if body.iter().all(u8::is_ascii_whitespace) {
            false
        } else {
            let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                InferError::InvalidInput(format!(
                    "request body: expected JSON {{\"ready\": true|false}} or nothing, could not parse it: {e}"
                ))
            })?;
            let serde_json::Value::Object(fields) = &doc else {
                return Err(InferError::InvalidInput(format!(
                    "request body: expected a JSON object {{\"ready\": true|false}}, received {doc}"
                )));
            };
            match fields.get("ready") {
                None => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(InferError::InvalidInput(format!(
                        "request body: \"ready\" must be true or false, received {other}"
                    )))
                }
            }
        };
        index::collect(state, ready).await
    }
    .await;
    match result {
        Ok(r) => reply::json(StatusCode::OK, &index::to_json(&r)),
        Err(e) => reply::infer_error(&e),
    }
}

fn server_metadata() -> Response<Body> {
    reply::json(
        StatusCode::OK,
        &json!({
            "name": "ferroserve",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": EXTENSIONS,
        }),
    )
}

fn ready_status(ready: bool) -> Response<Body> {
    reply::empty(if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    })
}

fn model_metadata(name: &str, version: Option<&str>, s: &Served) -> Response<Body> {
    let model = &s.model;
    let tensors = |list: &[ferroserve_backend_core::TensorSpec]| {
        list.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.dtype.as_str(), "shape": t.shape }))
            .collect::<Vec<_>>()
    };
    reply::json(
        StatusCode::OK,
        &json!({
            "name": name,
            "versions": match version {
                Some(_) => vec![model.version_label.clone()],
                None => s.endpoint.versions(),
            },
            "platform": model.platform(),
            "inputs": tensors(&model.signature.inputs),
            "outputs": tensors(&model.signature.outputs),
        }),
    )
}

fn metrics(state: &AppState) -> Response<Body> {
    for m in state.routes.models() {
        m.metrics.queue_depth.set(m.queue_depth() as i64);
        if let Some(t) = &m.device_timings {
            m.metrics.export_device_timings(t);
        }
    }
    let mut r = Response::new(Body::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn not_found(path: &str) -> Response<Body> {
    reply::error(StatusCode::NOT_FOUND, &format!("no route for {path}"))
}

fn method_not_allowed(method: &Method, path: &str) -> Response<Body> {
    reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not allowed on {path}"),
    )
}

/// Decrements the in-flight gauge however the request ends, including when
/// the client disconnects and the handler future is dropped.
struct InflightGuard<'a>(&'a prometheus::IntGauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let pin = match req.headers().get(DEPLOYMENT_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.trim().to_string()),
        Some(Err(_)) => {
            return reply::infer_error(&InferError::InvalidInput(format!(
                "header {DEPLOYMENT_HEADER} must be a deployment name in ASCII"
            )))
        }
    };
    let routed = match state.routes.route(name, version, pin.as_deref()) {
        Ok(r) => r,
        Err(e) => return reply::infer_error(&e),
    };
    let model = Arc::clone(routed.model());
    let m = &model.metrics;
    m.inflight.inc();
    let _guard = InflightGuard(&m.inflight);
    let result = run_infer(state, name, &routed, req).await;
    model.record(&result, started);
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, InferError::Backend(_)) {
                tracing::warn!(model = %model.name, error = %e, "inference failed");
            }
            reply::infer_error(&e)
        }
    };
    if let Some(v) = &routed.deployment.header {
        response.headers_mut().insert(DEPLOYMENT_HEADER, v.clone());
    }
    response
}

async fn run_infer(
    state: &AppState,
    endpoint: &str,
    routed: &Routed,
    req: Request<Incoming>,
) -> Result<Response<Body>, InferError> {
    let model = routed.model();
    let header_len = match req.headers().get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    InferError::InvalidInput(format!(
                        "Inference-Header-Content-Length must be a byte count, received {v:?}"
                    ))
                })?,
        ),
    };
    let header_id = request_id_header(&req);
    let body = read_body(state, req, header_len).await?;
    let request = codec::decode_request(body, header_len)?;
    let selected = codec::select_outputs(
        &model.signature,
        &request.outputs,
        request.binary_data_output,
    )?;
    let id = request.id.as_deref().or(header_id.as_deref());
    let output = routed.infer(request.inputs, request.timeout, id).await?;
    let classified =
        model
            .classifier()
            .selected(request.outputs.as_deref(), &selected, &output.outputs)?;
    let encoded = codec::encode_response(ResponseParts {
        model_name: endpoint,
        model_version: &model.version_label,
        id: request.id.as_deref(),
        parameters: request.parameters.as_ref(),
        signature: &model.signature,
        outputs: &output.outputs,
        selected: &selected,
        classified: &classified,
    })?;
    let mut r = Response::new(Body::new(encoded.body));
    let headers = r.headers_mut();
    match encoded.header_len {
        Some(n) => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(r)
}

/// `POST /v2/models/{m}/score`: Azure ML's scoring call for raw-style
/// entry scripts. The body goes to `run(raw_data)` as it is; the answer is
/// what `run()` returned, as JSON.
async fn score(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let pin = req
        .headers()
        .get(DEPLOYMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let routed = match state.routes.route(name, version, pin.as_deref()) {
        Ok(r) => r,
        Err(e) => return reply::infer_error(&e),
    };
    let model = Arc::clone(routed.model());
    if !model.capabilities().raw_body {
        return reply::error(
            StatusCode::NOT_FOUND,
            &format!(
                "model {name:?} is not a raw-style entry script ([python] style = \"raw\"); \
                 send v2 inference requests to /v2/models/{name}/infer"
            ),
        );
    }
    let m = &model.metrics;
    m.inflight.inc();
    let _guard = InflightGuard(&m.inflight);
    let header_id = request_id_header(&req);
    let result = async {
        let body = read_body(state, req, None).await?;
        if let Err(e) = std::str::from_utf8(&body) {
            return Err(InferError::InvalidInput(format!(
                "request body: expected UTF-8 text (run() receives a str), received invalid UTF-8 at byte {}",
                e.valid_up_to()
            )));
        }
        let raw = ferroserve_backend_core::Tensor::from_strings(vec![1], &[&body[..]])
            .map_err(|e| InferError::InvalidInput(e.to_string()))?;
        let output = routed
            .infer(vec![("raw".to_string(), raw)], None, header_id.as_deref())
            .await?;
        let answer = output
            .outputs
            .first()
            .and_then(|t| {
                t.string_elements()
                    .first()
                    .map(|b| Bytes::copy_from_slice(b))
            })
            .ok_or_else(|| InferError::Backend("the script returned no answer".into()))?;
        Ok::<Bytes, InferError>(answer)
    }
    .await;
    model.record(&result, started);
    let mut response = match result {
        Ok(json) => {
            let mut r = Response::new(Body::new(json));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            if matches!(e, InferError::Backend(_)) {
                tracing::warn!(model = %model.name, error = %e, "scoring failed");
            }
            reply::infer_error(&e)
        }
    };
    if let Some(v) = &routed.deployment.header {
        response.headers_mut().insert(DEPLOYMENT_HEADER, v.clone());
    }
    response
}

/// The `x-request-id` header (as load balancers and Azure ML's clients
/// set it): the id a request without a v2 `id` is captured under.
fn request_id_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Reads the whole body, within the size limit and the body read timeout.
/// `align_at` is where binary tensor data starts (the JSON header's length):
/// the buffer is laid out so that offset is 64-byte aligned, which lets the
/// backend read the first binary tensor in place instead of copying it.
async fn read_body(
    state: &AppState,
    req: Request<Incoming>,
    align_at: Option<usize>,
) -> Result<Bytes, InferError> {
    let limit = state.limits.max_body_bytes;
    let too_large = |what: String| {
        state
            .metrics
            .rejected
            .with_label_values(&["body_too_large"])
            .inc();
        InferError::PayloadTooLarge(format!(
            "request body {what} exceeds the limit of {limit} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok());
    if let Some(len) = declared {
        if len > limit {
            return Err(too_large(format!("of {len} bytes (Content-Length)")));
        }
    }
    let body = Limited::new(req.into_body(), limit);
    let read = async {
        match (declared, align_at) {
            (Some(len), Some(at)) => collect_aligned(body, len, at).await,
            _ => body.collect().await.map(|c| c.to_bytes()),
        }
    };
    let Ok(read) = tokio::time::timeout(state.limits.body_read_timeout, read).await else {
        state
            .metrics
            .rejected
            .with_label_values(&["body_read_timeout"])
            .inc();
        return Err(InferError::ClientTimeout(format!(
            "the request body did not arrive within {} s",
            state.limits.body_read_timeout.as_secs()
        )));
    };
    match read {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large("(chunked)".into())),
        Err(e) => Err(InferError::InvalidInput(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Collects a body of `len` bytes (as Content-Length declared) into one
/// buffer whose offset `at` falls on a 64-byte boundary.
async fn collect_aligned<B>(mut body: B, len: usize, at: usize) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    const ALIGN: usize = 64;
    let mut buf: Vec<u8> = Vec::with_capacity(len + ALIGN);
    let pad = (ALIGN - (buf.as_ptr() as usize).wrapping_add(at) % ALIGN) % ALIGN;
    buf.resize(pad, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            // A body longer than declared is hyper's error, not ours; if it
            // happens the buffer grows and only the alignment is lost.
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf).slice(pad..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    #[tokio::test]
    async fn binary_data_lands_aligned_for_the_backend() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for at in [0, 1, 13, 63, 64, 999] {
            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
                .chunks(97)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let stream = StreamBody::new(tokio_stream::iter(frames));
            let got = collect_aligned(stream, body.len(), at).await.unwrap();
            assert_eq!(&got[..], &body[..]);
            assert_eq!((got.as_ptr() as usize + at) % 64, 0, "offset {at}");
        }
    }
}
