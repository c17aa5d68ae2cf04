//! Compiles the Open Inference Protocol's gRPC service with protox, a pure
//! Rust protobuf compiler, so building needs no system `protoc`.
//! `grpc_service.proto` imports `model_config.proto` (Triton's model
//! configuration messages); both land in the one `inference` module.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_service.proto", "proto/model_config.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields decode as `bytes::Bytes`: raw tensor contents become
        // slices of the received message instead of copies.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
