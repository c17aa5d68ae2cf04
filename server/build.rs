//! Compiles the Open Inference Protocol's gRPC service with protox, a pure
//! Rust protobuf compiler, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields decode as `bytes::Bytes`: raw tensor contents become
        // slices of the received message instead of copies.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
