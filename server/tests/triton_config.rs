//! Triton's model configuration extension for a model served from a Triton
//! repository: what its `config.pbtxt` says that ferroserve does not apply
//! but Triton echoes (an input's `format`) is echoed over HTTP and gRPC.

mod support;

use ferroserve_loadtest::grpc_client::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_protocol::grpc::proto::model_input::Format;
use ferroserve_protocol::grpc::proto::ModelConfigRequest;
use support::{examples_repo, Server};

const CONFIG: &str = r#"
name: "conv"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "image" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 32, 32 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_format_is_echoed_over_http_and_grpc() {
    let repo = tempfile::tempdir().unwrap();
    let model = repo.path().join("conv");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::copy(
        examples_repo().join("conv/1/model.onnx"),
        model.join("1/model.onnx"),
    )
    .unwrap();
    std::fs::write(model.join("config.pbtxt"), CONFIG).unwrap();
    let server = Server::start(repo.path(), &[]);

    let r = server.request("GET", "/v2/models/conv/config", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let input = &j["input"][0];
    assert_eq!(input["name"], "image");
    assert_eq!(input["format"], "FORMAT_NCHW", "{j}");
    assert_eq!(input["dims"], serde_json::json!([3, 32, 32]), "{j}");
    assert_eq!(
        j["output"][0]["format"],
        serde_json::Value::Null,
        "outputs have none"
    );

    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .unwrap();
    let config = client
        .model_config(ModelConfigRequest {
            name: "conv".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .expect("a config");
    assert_eq!(config.input[0].format(), Format::Nchw);
    assert_eq!(config.input[0].dims, [3, 32, 32]);
    // The warning that it is not applied is still logged.
    assert!(
        server
            .log_text()
            .contains("Triton setting input[0].format ignored"),
        "{}",
        server.log_text()
    );
}
