//! Generates the tonic client stub of `inference.GRPCInferenceService` with
//! protox (no system `protoc`), over `ferroserve-protocol`'s messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../server/protocol/proto/grpc_service.proto",
        "../server/protocol/proto/model_config.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["../server/protocol/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".inference", "::ferroserve_protocol::grpc::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
