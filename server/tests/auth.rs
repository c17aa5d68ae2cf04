//! Bearer-token authentication over real sockets: inference and management
//! tokens from files and from environment variables, HTTP and gRPC, open
//! health and metrics routes, and tokens kept out of the log.

mod support;

use std::path::Path;

use ferroserve_loadtest::grpc_client::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_protocol::grpc::proto::model_infer_request::InferInputTensor;
use ferroserve_protocol::grpc::proto::{
    ModelInferRequest, ModelMetadataRequest, RepositoryIndexRequest, ServerLiveRequest,
};
use serde_json::json;
use support::{examples_repo, f32_bytes, metric_value, start_failure_with_args, Reply, Server};
use tonic::transport::Channel;

const INFERENCE_A: &str = "inf-A7f3kQ9zL2";
const INFERENCE_B: &str = "inf-B0x5wR8mN4";
const MANAGEMENT: &str = "mgmt-C3p6tY1vH8";

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

fn mlp_json() -> Vec<u8> {
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                       "data": vec![0.25f32; 64]}]})
    .to_string()
    .into_bytes()
}

fn infer(server: &Server, token: Option<&str>) -> Reply {
    let headers: Vec<_> = token.map(bearer).into_iter().collect();
    server.request("POST", "/v2/models/mlp/infer", &headers, &mlp_json())
}

fn assert_unauthorized(r: &Reply) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // No detail: the client learns nothing about what was wrong.
    assert_eq!(r.json(), json!({"error": "unauthorized"}));
}

fn grpc_infer_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&[0.25; 64]).into()],
        ..Default::default()
    }
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn grpc_client(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .expect("gRPC connect")
}

fn assert_unauthenticated<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) {
    let status = r.expect_err("expected UNAUTHENTICATED");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "unauthorized");
}

fn unauthorized_count(server: &Server) -> f64 {
    metric_value(
        &server.metrics(),
        "ferroserve_rejected_requests_total",
        r#"reason="unauthorized""#,
    )
    .expect("the unauthorized series is exported")
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tokens_guard_inference_and_management_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let inference_file = write(
        &dir.path().join("inference.tokens"),
        &format!("# inference clients\n\n{INFERENCE_A}\n  {INFERENCE_B}  \n# retired: old-token\n"),
    );
    let management_file = write(
        &dir.path().join("management.tokens"),
        &format!("{MANAGEMENT}\n"),
    );
    // Debug logging on: tokens must stay out of even the most verbose log.
    let server = Server::start_with_env(
        &examples_repo(),
        &[
            "--inference-token-file",
            &inference_file,
            "--management-token-file",
            &management_file,
        ],
        &[("RUST_LOG", "debug")],
    );
    let mut refused = 0.0;

    // Inference routes: missing, wrong and other-class tokens are refused.
    for token in [
        None,
        Some("wrong-token"),
        Some(MANAGEMENT),
        Some("inf-A7f3kQ9zL"),
    ] {
        assert_unauthorized(&infer(&server, token));
        refused += 1.0;
    }
    let r = server.request(
        "POST",
        "/v2/models/mlp/infer",
        &[("Authorization", format!("Basic {INFERENCE_A}"))],
        &mlp_json(),
    );
    assert_unauthorized(&r);
    refused += 1.0;
    for path in ["/v2/models/mlp", "/v2/models/mlp/ready", "/v2"] {
        assert_unauthorized(&server.request("GET", path, &[], b""));
        refused += 1.0;
    }
    // Both tokens of the file work, and so does a lower-case scheme.
    for token in [INFERENCE_A, INFERENCE_B] {
        let r = infer(&server, Some(token));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["outputs"][0]["shape"], json!([1, 10]));
    }
    let r = server.request(
        "GET",
        "/v2/models/mlp",
        &[("authorization", format!("bearer {INFERENCE_B}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Health and metrics stay open for load balancers and Prometheus.
    for path in ["/v2/health/live", "/v2/health/ready", "/metrics"] {
        let r = server.request("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }

    // Management routes take the management token, not an inference one.
    for token in [None, Some(INFERENCE_A), Some("wrong-token")] {
        let headers: Vec<_> = token.map(bearer).into_iter().collect();
        let r = server.request("POST", "/v2/repository/index", &headers, b"{}");
        assert_unauthorized(&r);
        refused += 1.0;
    }
    let r = server.request("POST", "/v2/repository/index", &[bearer(MANAGEMENT)], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json().as_array().is_some_and(|a| !a.is_empty()),
        "{}",
        r.text()
    );

    // gRPC: every method is an inference route but RepositoryIndex, which
    // is management as over HTTP.
    let mut client = grpc_client(&server).await;
    assert_unauthenticated(
        client
            .server_live(with_token(ServerLiveRequest {}, None))
            .await,
    );
    assert_unauthenticated(
        client
            .server_live(with_token(ServerLiveRequest {}, Some(MANAGEMENT)))
            .await,
    );
    assert_unauthenticated(
        client
            .model_infer(with_token(grpc_infer_request(), Some("wrong-token")))
            .await,
    );
    refused += 3.0;
    let live = client
        .server_live(with_token(ServerLiveRequest {}, Some(INFERENCE_A)))
        .await
        .expect("authorized ServerLive");
    assert!(live.into_inner().live);
    let meta = client
        .model_metadata(with_token(
            ModelMetadataRequest {
                name: "mlp".into(),
                version: String::new(),
            },
            Some(INFERENCE_B),
        ))
        .await
        .expect("authorized ModelMetadata")
        .into_inner();
    assert_eq!(meta.name, "mlp");
    let out = client
        .model_infer(with_token(grpc_infer_request(), Some(INFERENCE_A)))
        .await
        .expect("authorized ModelInfer")
        .into_inner();
    assert_eq!(out.outputs[0].shape, vec![1, 10]);
    assert_eq!(out.raw_output_contents[0].len(), 40);
    for token in [None, Some(INFERENCE_A)] {
        assert_unauthenticated(
            client
                .repository_index(with_token(RepositoryIndexRequest::default(), token))
                .await,
        );
        refused += 1.0;
    }
    let index = client
        .repository_index(with_token(
            RepositoryIndexRequest::default(),
            Some(MANAGEMENT),
        ))
        .await
        .expect("authorized RepositoryIndex")
        .into_inner();
    assert!(index
        .models
        .iter()
        .any(|m| m.name == "mlp" && m.state == "READY"));
    // The refused calls did not break the connection.
    assert_unauthenticated(
        client
            .server_live(with_token(ServerLiveRequest {}, None))
            .await,
    );
    refused += 1.0;

    assert_eq!(unauthorized_count(&server), refused);

    let log = server.log_text();
    assert!(
        log.contains("request refused"),
        "debug log of refusals missing"
    );
    assert!(log.contains("security settings"), "{log}");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    for token in [INFERENCE_A, INFERENCE_B, MANAGEMENT] {
        assert!(!log.contains(token), "a token appears in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_tokens_guard_each_class() {
    let server = Server::start_with_env(
        &examples_repo(),
        &[],
        &[
            ("FERROSERVE_INFERENCE_TOKENS", "env-inf-1, env-inf-2"),
            ("FERROSERVE_MANAGEMENT_TOKENS", "env-mgmt-1"),
        ],
    );
    assert_unauthorized(&infer(&server, None));
    assert_unauthorized(&infer(&server, Some("env-mgmt-1")));
    let r = infer(&server, Some("env-inf-2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.request("POST", "/v2/repository/index", &[bearer("env-inf-1")], b"");
    assert_unauthorized(&r);
    let r = server.request("POST", "/v2/repository/index", &[bearer("env-mgmt-1")], b"");
    assert_eq!(r.status, 200, "{}", r.text());

    let mut client = grpc_client(&server).await;
    assert_unauthenticated(
        client
            .model_infer(with_token(grpc_infer_request(), None))
            .await,
    );
    let out = client
        .model_infer(with_token(grpc_infer_request(), Some("env-inf-1")))
        .await
        .expect("authorized ModelInfer");
    assert_eq!(out.into_inner().model_name, "mlp");
    assert_eq!(unauthorized_count(&server), 4.0);
    let log = server.log_text();
    assert!(!log.contains("env-inf-1") && !log.contains("env-mgmt-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_without_tokens_stays_open() {
    // Only management is guarded: inference needs nothing.
    let server = Server::start_with_env(
        &examples_repo(),
        &[],
        &[("FERROSERVE_MANAGEMENT_TOKENS", "only-mgmt")],
    );
    let r = infer(&server, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut client = grpc_client(&server).await;
    client
        .server_live(with_token(ServerLiveRequest {}, None))
        .await
        .expect("open gRPC");
    assert_unauthorized(&server.request("GET", "/v2/repository/index", &[], b""));
    let r = server.request("GET", "/v2/admin/anything", &[bearer("only-mgmt")], b"");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn unusable_token_configuration_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = examples_repo();
    let missing = dir.path().join("missing.tokens");
    let missing = missing.to_str().unwrap();
    let (status, log) = start_failure_with_args(&repo, &["--inference-token-file", missing], &[]);
    assert!(!status.success());
    assert!(
        log.contains(missing) && log.contains("inference token file"),
        "{log}"
    );

    let empty = write(&dir.path().join("empty.tokens"), "# none yet\n\n");
    let (status, log) = start_failure_with_args(&repo, &["--management-token-file", &empty], &[]);
    assert!(!status.success());
    assert!(
        log.contains(&empty) && log.contains("holds no token"),
        "{log}"
    );

    let bad = write(
        &dir.path().join("bad.tokens"),
        "good-token\nsecret with spaces\n",
    );
    let (status, log) = start_failure_with_args(&repo, &["--inference-token-file", &bad], &[]);
    assert!(!status.success());
    assert!(log.contains(&bad) && log.contains("line 2"), "{log}");
    assert!(
        !log.contains("secret with spaces") && !log.contains("good-token"),
        "{log}"
    );

    let (status, log) =
        start_failure_with_args(&repo, &[], &[("FERROSERVE_INFERENCE_TOKENS", " , ,")]);
    assert!(!status.success());
    assert!(log.contains("FERROSERVE_INFERENCE_TOKENS"), "{log}");
}
