//! Transport-level behaviour the Python protocol tests cannot reach: h2c,
//! HTTP/1.1 keep-alive and version-pinned URLs.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{examples_repo, f32_bytes, Server};

fn mlp_binary_request(rows: usize, seed: f32) -> (Vec<u8>, usize) {
    let header = format!(
        r#"{{"inputs":[{{"name":"input","shape":[{rows},64],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"probabilities","parameters":{{"binary_data":true}}}}]}}"#,
        rows * 64 * 4
    );
    let values: Vec<f32> = (0..rows * 64)
        .map(|i| ((i as f32) * 0.37 + seed).sin())
        .collect();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&f32_bytes(&values));
    (body, header.len())
}

fn probabilities(body: &[u8], header_len: usize) -> Vec<f32> {
    body[header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_give_the_same_answer() {
    let server = Server::start(&examples_repo(), &[]);
    let (body, header_len) = mlp_binary_request(2, 0.5);

    let http1 = server.request(
        "POST",
        "/v2/models/mlp/infer",
        &[("Inference-Header-Content-Length", header_len.to_string())],
        &body,
    );
    assert_eq!(http1.status, 200, "{}", http1.text());
    let h1_len: usize = http1
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let expected = probabilities(&http1.body, h1_len);
    assert_eq!(expected.len(), 20);
    for row in expected.chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax row sums to {sum}");
    }

    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c prior-knowledge handshake");
    tokio::spawn(conn);
    let req = Request::post(format!("http://{}/v2/models/mlp/infer", server.addr))
        .header("inference-header-content-length", header_len.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let h2_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(probabilities(&bytes, h2_len), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(&examples_repo(), &[]);
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for i in 0..5 {
        let (body, header_len) = mlp_binary_request(1, i as f32);
        let req = Request::post("/v2/models/mlp/versions/1/infer")
            .header("host", server.addr.to_string())
            .header("inference-header-content-length", header_len.to_string())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        sender
            .ready()
            .await
            .expect("connection stays open between requests");
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let n: usize = resp.headers()["inference-header-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        answers.push(probabilities(&bytes, n));
    }
    // Distinct inputs give distinct answers: nothing was cached or mixed up.
    for i in 1..answers.len() {
        assert_ne!(answers[i - 1], answers[i]);
    }
}

#[test]
fn version_pinned_urls() {
    let server = Server::start(&examples_repo(), &[]);
    let ok = server.request("GET", "/v2/models/mlp/versions/1", &[], b"");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["versions"], serde_json::json!(["1"]));
    let missing = server.request("GET", "/v2/models/mlp/versions/2/ready", &[], b"");
    assert_eq!(missing.status, 404);
    let msg = missing.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("\"2\"") && msg.contains("\"1\""), "{msg}");
    let wrong_method = server.request("GET", "/v2/models/mlp/infer", &[], b"");
    assert_eq!(wrong_method.status, 405);
    // The server still serves after the errors.
    assert_eq!(
        server.request("GET", "/v2/health/ready", &[], b"").status,
        200
    );
}

#[test]
fn sigterm_exits_cleanly_and_metrics_are_exposed() {
    let server = Server::start(&examples_repo(), &[]);
    let m = server.request("GET", "/metrics", &[], b"").text();
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "ferroserve_queue_depth",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
}
