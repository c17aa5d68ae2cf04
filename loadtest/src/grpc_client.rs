//! The tonic client stub of `inference.GRPCInferenceService`, generated over
//! `ferroserve-protocol`'s messages: what `ferroserve loadtest --protocol
//! grpc` (and any Rust client or test) calls a server with.

include!(concat!(env!("OUT_DIR"), "/inference.rs"));
