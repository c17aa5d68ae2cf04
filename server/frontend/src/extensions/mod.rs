//! Triton's extensions of the protocol that both front ends answer: model
//! configuration ([`config`]), statistics ([`statistics`]) and the model
//! repository's index ([`index`]). Each builds the protobuf message that
//! gRPC sends, and HTTP's JSON is derived from that same message, so the two
//! protocols cannot disagree.

pub mod config;
pub mod index;
pub mod statistics;

/// The extensions of the protocol this server implements, as listed by `/v2`
/// and gRPC's `ServerMetadata` (the list is shared: each is answered over
/// both protocols). Of Triton's `model_repository` only the index is
/// implemented (`POST /v2/repository/index`), not load and unload, so it is
/// not listed.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "parameters",
    "statistics",
];
