//! gRPC load for the benchmark: a [`Caller`] for the load generator's loops
//! that sends `ModelInfer` with the tensor in `raw_input_contents`, the way a
//! performance-minded gRPC client (Triton's) does, so that the same closed
//! loop times HTTP and gRPC and their figures compare.
//!
//! Each caller owns one HTTP/2 connection carrying one call at a time (the
//! load generator's direct connection, not tonic's buffered `Channel`): the
//! gRPC twin of the HTTP generator's one keep-alive connection per caller.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferroserve_loadtest::grpc_connection::{self, GrpcClient};
use ferroserve_loadtest::{Caller, ErrorKind};
use ferroserve_protocol::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_protocol::grpc::proto::{ModelInferRequest, ModelInferResponse};

use crate::model::Bundle;

/// As the HTTP generator: after a failed connect, wait before the next try
/// so a server that is down is not hammered by a tight loop of connects.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// One infer call, prepared once and sent by every caller of a run.
pub struct GrpcInfer {
    addr: SocketAddr,
    /// Cloned per call; the tensor is `Bytes`, so a clone shares it and
    /// costs a few small allocations for the names and shape.
    request: ModelInferRequest,
    output: String,
    /// The byte length of the one raw output a correct answer carries.
    output_bytes: usize,
}

impl GrpcInfer {
    /// `rows` rows of `bundle`'s benchmark input, the same data the HTTP
    /// requests carry, asking for its one output.
    pub fn new(addr: SocketAddr, bundle: &Bundle, rows: usize) -> Result<Arc<GrpcInfer>> {
        let request = ModelInferRequest {
            model_name: bundle.name.clone(),
            inputs: vec![InferInputTensor {
                name: bundle.input.clone(),
                datatype: "FP32".into(),
                shape: bundle.shape(rows),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: bundle.output.clone(),
                ..Default::default()
            }],
            raw_input_contents: vec![bundle.input_data(rows)],
            ..Default::default()
        };
        Ok(Arc::new(GrpcInfer {
            addr,
            request,
            output: bundle.output.clone(),
            output_bytes: rows * bundle.output_row_bytes,
        }))
    }

    /// A caller with its connection open, for `ClosedLoop::run_with`. A
    /// failed connect is left for its first call to meet and count.
    pub async fn connect(self: &Arc<Self>) -> GrpcCaller {
        GrpcCaller {
            infer: Arc::clone(self),
            client: grpc_connection::connect(self.addr).await.ok(),
        }
    }

    /// One call, insisting on a correct answer: a server that fails every
    /// call would otherwise produce fine-looking, meaningless figures.
    pub async fn check(&self) -> Result<()> {
        let mut client = grpc_connection::connect(self.addr)
            .await
            .with_context(|| format!("connecting to gRPC at {}", self.addr))?;
        let answer = client
            .model_infer(self.request.clone())
            .await
            .with_context(|| format!("gRPC ModelInfer {}", self.request.model_name))?;
        if let Err(problem) = self.verify(answer.get_ref()) {
            bail!(
                "gRPC ModelInfer {} answered OK but {problem}",
                self.request.model_name
            );
        }
        Ok(())
    }

    /// What is wrong with an OK answer, if anything.
    fn verify(&self, answer: &ModelInferResponse) -> Result<(), String> {
        match (
            answer.outputs.as_slice(),
            answer.raw_output_contents.as_slice(),
        ) {
            ([tensor], [raw]) if tensor.name == self.output && raw.len() == self.output_bytes => {
                Ok(())
            }
            ([tensor], [raw]) => Err(format!(
                "its output is {:?} with {} raw bytes; expected {:?} with {}",
                tensor.name,
                raw.len(),
                self.output,
                self.output_bytes
            )),
            (tensors, raws) => Err(format!(
                "it has {} outputs and {} raw output contents; expected one of each",
                tensors.len(),
                raws.len()
            )),
        }
    }
}

/// One client slot of a gRPC run.
pub struct GrpcCaller {
    infer: Arc<GrpcInfer>,
    /// `None` until a connect succeeds, and again after the connection
    /// broke: the call in flight fails and counts, the next reconnects.
    client: Option<GrpcClient>,
}

impl Caller for GrpcCaller {
    async fn call(&mut self, _ticket: u64) -> Result<(), ErrorKind> {
        let client = match &mut self.client {
            Some(client) => client,
            None => match grpc_connection::connect(self.infer.addr).await {
                Ok(client) => self.client.insert(client),
                Err(_) => {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                    return Err(ErrorKind::Connect);
                }
            },
        };
        match client.model_infer(self.infer.request.clone()).await {
            Ok(answer) => self
                .infer
                .verify(answer.get_ref())
                .map_err(|_| ErrorKind::BadAnswer),
            // tonic gives a status a source only when it made the status up
            // from a transport failure; statuses the server sent have none.
            Err(status) if status.source().is_some() => {
                self.client = None;
                Err(ErrorKind::Io)
            }
            Err(status) => Err(ErrorKind::GrpcStatus(status.code() as i32)),
        }
    }
    // `abandon` keeps the default: dropping a timed-out call resets its
    // HTTP/2 stream alone, and the connection stays usable.
}
