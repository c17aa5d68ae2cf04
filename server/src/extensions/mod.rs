//! Triton's extensions of the protocol that both front ends answer: model
//! configuration ([`config`]), statistics ([`statistics`]) and the model
//! repository's index ([`index`]). Each builds the protobuf message that
//! gRPC sends, and HTTP's JSON is derived from that same message, so the two
//! protocols cannot disagree.

pub mod config;
pub mod index;
pub mod statistics;
