//! The `inference.GRPCInferenceService` implementation.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

use super::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::*;
use crate::endpoints::DEPLOYMENT_HEADER;
use crate::extensions::EXTENSIONS;
use crate::extensions::{config, index, statistics};
use crate::state::AppState;
use ferroserve_protocol::grpc::{self as convert, GrpcRequest};
use ferroserve_protocol::json::select_outputs;
use ferroserve_runtime::infer::InferError;

/// Size limits of the gRPC front end.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// Largest message accepted or sent; a larger one is refused with
    /// RESOURCE_EXHAUSTED before it is decoded.
    pub max_message_bytes: usize,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_message_bytes: 64 << 20,
        }
    }
}

/// Requests of one stream that may be in flight at once; a client that sends
/// faster waits (HTTP/2 flow control) instead of growing the server's memory.
const STREAM_INFLIGHT: usize = 64;

#[derive(Clone)]
pub struct Grpc {
    state: Arc<AppState>,
}

pub fn service(state: Arc<AppState>, limits: &GrpcLimits) -> GrpcInferenceServiceServer<Grpc> {
    // Compressed requests are accepted (tritonclient's compression_algorithm);
    // the size limit applies to the decompressed message.
    GrpcInferenceServiceServer::new(Grpc { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes)
}

pub fn status_of(e: &InferError) -> Status {
    let msg = e.to_string();
    match e {
        InferError::NotFound(_) => Status::not_found(msg),
        InferError::InvalidInput(_) => Status::invalid_argument(msg),
        InferError::PayloadTooLarge(_) | InferError::QueueFull(_) => {
            Status::resource_exhausted(msg)
        }
        InferError::Timeout(_) | InferError::ClientTimeout(_) => Status::deadline_exceeded(msg),
        InferError::Backend(_) => Status::internal(msg),
        InferError::Unavailable(_) => Status::unavailable(msg),
    }
}

/// The client's deadline from the `grpc-timeout` header ("<digits><unit>").
fn grpc_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Grpc {
    /// Answers one request; also returns the deployment that answered.
    async fn infer(
        &self,
        msg: ModelInferRequest,
        deadline: Option<Duration>,
        pin: Option<&str>,
    ) -> Result<(ModelInferResponse, String), InferError> {
        let started = Instant::now();
        let endpoint = msg.model_name.clone();
        let routed = self
            .state
            .routes
            .route(&endpoint, non_empty(&msg.model_version), pin)?;
        let deployment = routed.deployment.name.clone();
        let model = Arc::clone(routed.model());
        let result = async {
            let GrpcRequest {
                request,
                parameters,
                ..
            } = convert::decode_request(msg)?;
            let selected = select_outputs(&model.signature, &request.outputs, true)?;
            let timeout = match (request.timeout, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let output = routed
                .infer(request.inputs, timeout, request.id.as_deref())
                .await?;
            let classified = model.classifier().selected(
                request.outputs.as_deref(),
                &selected,
                &output.outputs,
            )?;
            let mut outputs = Vec::with_capacity(selected.len());
            let mut raw = Vec::with_capacity(selected.len());
            for (n, &(i, _)) in selected.iter().enumerate() {
                let t = classified
                    .get(n)
                    .and_then(Option::as_ref)
                    .unwrap_or(&output.outputs[i]);
                outputs.push(InferOutputTensor {
                    name: model.signature.outputs[i].name.clone(),
                    datatype: t.dtype.as_str().to_string(),
                    shape: t.shape.clone(),
                    parameters: HashMap::new(),
                    contents: None,
                });
                raw.push(t.data.clone());
            }
            Ok(ModelInferResponse {
                model_name: endpoint,
                model_version: model.version_label.clone(),
                id: request.id.unwrap_or_default(),
                parameters,
                outputs,
                raw_output_contents: raw,
            })
        }
        .await;
        model.record(&result, started);
        result.map(|r| (r, deployment))
    }
}

/// The deployment a call pins, from the `x-ferroserve-deployment`
/// metadata (for a stream: every request of it).
fn pin_of(md: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
    match md.get(DEPLOYMENT_HEADER).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v.trim().to_string())),
        Some(Err(_)) => Err(Status::invalid_argument(format!(
            "metadata {DEPLOYMENT_HEADER} must be a deployment name in ASCII"
        ))),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// What the stream's writer waits on, in arrival order.
enum Pending {
    Task(tokio::task::JoinHandle<Result<ModelInferResponse, (InferError, ModelInferResponse)>>),
    /// The inbound stream failed: end the response stream with this status.
    End(Status),
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        // An unknown model or version is simply not ready, as Triton answers;
        // clients ask this to poll for a model that is still loading.
        let r = req.into_inner();
        let ready = self
            .state
            .routes
            .served(&r.name, non_empty(&r.version))
            .is_ok_and(|s| s.model.not_ready().is_none());
        Ok(Response::new(ModelReadyResponse {
            ready: ready && self.state.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "ferroserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let served = self
            .state
            .routes
            .served(&r.name, non_empty(&r.version))
            .map_err(|e| status_of(&e))?;
        let model = &served.model;
        let tensors = |list: &[ferroserve_backend_core::TensorSpec]| {
            list.iter()
                .map(|t| TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.dtype.as_str().into(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: r.name.clone(),
            versions: if r.version.is_empty() {
                served.endpoint.versions()
            } else {
                vec![model.version_label.clone()]
            },
            platform: model.platform().into(),
            inputs: tensors(&model.signature.inputs),
            outputs: tensors(&model.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = grpc_timeout(req.metadata());
        let pin = pin_of(req.metadata())?;
        let (answer, deployment) = self
            .infer(req.into_inner(), deadline, pin.as_deref())
            .await
            .map_err(|e| status_of(&e))?;
        let mut response = Response::new(answer);
        if let Ok(v) = deployment.parse() {
            response.metadata_mut().insert(DEPLOYMENT_HEADER, v);
        }
        Ok(response)
    }

    async fn model_config(
        &self,
        req: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let served = self
            .state
            .routes
            .served(&r.name, non_empty(&r.version))
            .map_err(|e| status_of(&e))?;
        let policy = config::served_policy(&served);
        Ok(Response::new(ModelConfigResponse {
            config: Some(config::build(&r.name, &served.model, &policy)),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() && !r.version.is_empty() {
            return Err(Status::invalid_argument(format!(
                "version {:?} given without a model name; name the model, or leave both empty for every model",
                r.version
            )));
        }
        statistics::collect(
            &self.state.routes,
            non_empty(&r.name),
            non_empty(&r.version),
        )
        .map(Response::new)
        .map_err(|e| status_of(&e))
    }

    /// A management call: `auth` classes it with the repository routes.
    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        index::collect(&self.state, r.ready)
            .await
            .map(Response::new)
            .map_err(|e| status_of(&e))
    }

    type ModelStreamInferStream = ResponseStream;

    /// Requests of a stream run concurrently (up to a bound) and are
    /// answered in the order they arrived; a failed request is answered with
    /// its error message and the stream goes on, as Triton does.
    async fn model_stream_infer(
        &self,
        req: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let deadline = grpc_timeout(req.metadata());
        let pin: Option<Arc<str>> = pin_of(req.metadata())?.map(Arc::from);
        let mut inbound = req.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel(STREAM_INFLIGHT);
        let (out_tx, out_rx) = mpsc::channel(STREAM_INFLIGHT);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(msg)) => {
                        let this = this.clone();
                        let pin = pin.clone();
                        // Kept so an error answer still names its request.
                        let echo = ModelInferResponse {
                            model_name: msg.model_name.clone(),
                            model_version: msg.model_version.clone(),
                            id: msg.id.clone(),
                            ..Default::default()
                        };
                        let task = tokio::spawn(async move {
                            this.infer(msg, deadline, pin.as_deref())
                                .await
                                .map(|(r, _)| r)
                                .map_err(|e| (e, echo))
                        });
                        if pending_tx.send(Pending::Task(task)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        // A message that cannot be read (too large, corrupt)
                        // ends the stream; the client is told why, after the
                        // answers to the requests before it.
                        tracing::debug!(%status, "inference stream ended with an error");
                        let status = if status.code() == tonic::Code::OutOfRange {
                            this.state
                                .metrics
                                .rejected
                                .with_label_values(&["grpc_message_too_large"])
                                .inc();
                            Status::resource_exhausted(status.message().to_owned())
                        } else {
                            status
                        };
                        let _ = pending_tx.send(Pending::End(status)).await;
                        return;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(pending) = pending_rx.recv().await {
                let task = match pending {
                    Pending::Task(task) => task,
                    Pending::End(status) => {
                        let _ = out_tx.send(Err(status)).await;
                        return;
                    }
                };
                let answer = match task.await {
                    Ok(Ok(response)) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(response),
                    },
                    Ok(Err((e, echo))) => ModelStreamInferResponse {
                        error_message: e.to_string(),
                        infer_response: Some(echo),
                    },
                    Err(_) => ModelStreamInferResponse {
                        error_message: "the request's task failed".into(),
                        infer_response: None,
                    },
                };
                if out_tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
