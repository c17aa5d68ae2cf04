//! Generates the tonic service stub of `inference.GRPCInferenceService` (the
//! server side only) with protox, so building needs no system `protoc`. The
//! messages it speaks are `ferroserve-protocol`'s, not generated again.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../protocol/proto/grpc_service.proto",
        "../protocol/proto/model_config.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["../protocol/proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".inference", "::ferroserve_protocol::grpc::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
