//! The gRPC front end: `inference.GRPCInferenceService` with tonic, served
//! on its own port and sharing the models, batchers and metrics with HTTP.

mod service;

/// The protocol's messages (`ferroserve_protocol::grpc::proto`) with the
/// service stub generated for this server beside them.
pub mod proto {
    pub use ferroserve_protocol::grpc::proto::*;
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

pub use service::{service, GrpcLimits};
