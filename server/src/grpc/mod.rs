//! The gRPC front end: `inference.GRPCInferenceService` with tonic, served
//! on its own port and sharing the models, batchers and metrics with HTTP.

mod convert;
mod service;

/// Types and stubs generated from `proto/grpc_service.proto`.
pub mod proto {
    tonic::include_proto!("inference");
}

pub use convert::{decode_request, GrpcRequest};
pub use service::{service, GrpcLimits};
