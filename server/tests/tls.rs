//! TLS on both ports: a test CA and server certificate made at test time,
//! HTTPS over HTTP/1.1 and h2 (ALPN), gRPC over TLS with tonic, plain-text
//! clients refused cleanly, and start-up errors for bad TLS flags.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve_loadtest::grpc_client::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_protocol::grpc::proto::model_infer_request::InferInputTensor;
use ferroserve_protocol::grpc::proto::{ModelInferRequest, ServerLiveRequest};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::json;
use support::{examples_repo, f32_bytes, metric_value, start_failure_with_args, Server};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
struct Pki {
    _dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ferroserve test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    // The chain, leaf first.
    std::fs::write(&cert, format!("{}{}", leaf_cert.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Pki {
        _dir: dir,
        ca: ca_cert.der().clone(),
        cert,
        key,
    }
}

fn start_tls(pki: &Pki) -> Server {
    Server::start(
        &examples_repo(),
        &[
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    )
}

fn client_config(pki: &Pki, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(client_config(pki, alpn))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the test CA")
}

fn mlp_json() -> Bytes {
    Bytes::from(
        json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                           "data": vec![0.5f32; 128]}]})
        .to_string(),
    )
}

/// One request over HTTP/1.1 or h2 on an established TLS stream; returns
/// the status, the HTTP version and the body.
async fn send(
    io: TlsStream<TcpStream>,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> (u16, hyper::Version, Bytes) {
    let io = TokioIo::new(io);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, body)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn infer_request() -> Request<Full<Bytes>> {
    Request::post("https://localhost/v2/models/mlp/infer")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(mlp_json()))
        .unwrap()
}

/// gRPC over TLS: tonic with a connector that does the TLS handshake (ALPN
/// h2) with the test CA.
async fn grpc_tls_client(
    pki: &Pki,
    addr: SocketAddr,
) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let config = client_config(pki, &[b"h2"]);
    let connector = tower::service_fn(move |_uri: hyper::Uri| {
        let config = Arc::clone(&config);
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let tls = TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .expect("gRPC over TLS connects");
    GrpcInferenceServiceClient::new(channel)
}

/// A plain-text HTTP/1.1 request to a TLS port: the server must close the
/// connection (no hang, no HTTP answer).
fn plain_text_request_is_refused(addr: SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "plain-text client was not disconnected: {e} after {:?}",
            started.elapsed()
        ),
    }
    assert!(!got.starts_with(b"HTTP/"), "answered in plain text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http1_h2_and_grpc_over_tls() {
    let pki = make_pki();
    let server = start_tls(&pki);
    let (http, grpc) = (server.addr, server.grpc_addr);

    // A client that connects and never starts the handshake is dropped by
    // the handshake timeout; it runs beside the rest of the test.
    let silent = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    });

    // HTTP/1.1, negotiated by ALPN.
    let io = tls_connect(&pki, http, &[b"http/1.1"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, version, _) = send(io, false, get("/v2/health/ready")).await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_11));
    let io = tls_connect(&pki, http, &[b"http/1.1"]).await;
    let (status, _, body) = send(io, false, infer_request()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 10]));

    // h2, negotiated by ALPN.
    let io = tls_connect(&pki, http, &[b"h2", b"http/1.1"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, version, body) = send(io, true, infer_request()).await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    let h2_answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h2_answer["outputs"], answer["outputs"]);

    // gRPC over TLS.
    let mut client = grpc_tls_client(&pki, grpc).await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let out = client
        .model_infer(ModelInferRequest {
            model_name: "mlp".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 64],
                ..Default::default()
            }],
            raw_input_contents: vec![f32_bytes(&[0.5; 64]).into()],
            ..Default::default()
        })
        .await
        .expect("ModelInfer over TLS")
        .into_inner();
    assert_eq!(out.outputs[0].shape, vec![1, 10]);

    // Plain-text clients on the TLS ports fail cleanly...
    plain_text_request_is_refused(http);
    plain_text_request_is_refused(grpc);
    let plain = tokio::time::timeout(
        Duration::from_secs(20),
        GrpcInferenceServiceClient::connect(format!("http://{grpc}")),
    )
    .await
    .expect("a plain-text gRPC client must not hang");
    if let Ok(mut c) = plain {
        let r = tokio::time::timeout(Duration::from_secs(20), c.server_live(ServerLiveRequest {}))
            .await
            .expect("a plain-text gRPC call must not hang");
        assert!(r.is_err(), "plain-text gRPC answered on a TLS port");
    }

    // ...and TLS clients are still served afterwards.
    assert!(client.server_live(ServerLiveRequest {}).await.is_ok());
    let read = silent.join().unwrap();
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent client must be dropped by the handshake timeout"
    );
    let io = tls_connect(&pki, http, &[b"h2"]).await;
    let (status, _, metrics) = send(io, true, get("/metrics")).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    let rejected = |reason: &str| {
        metric_value(
            &metrics,
            "ferroserve_connections_rejected_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap()
    };
    assert!(rejected("tls_handshake_failed") >= 2.0, "{metrics}");
    assert_eq!(rejected("tls_handshake_timeout"), 1.0, "{metrics}");
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_tls_configuration_stops_startup() {
    let pki = make_pki();
    let repo = examples_repo();
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();

    let (status, log) = start_failure_with_args(&repo, &["--tls-cert", cert], &[]);
    assert!(!status.success());
    assert!(log.contains("--tls-key"), "{log}");
    let (status, log) = start_failure_with_args(&repo, &["--tls-key", key], &[]);
    assert!(!status.success());
    assert!(log.contains("--tls-cert"), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.crt");
    let missing = missing.to_str().unwrap();
    let (status, log) =
        start_failure_with_args(&repo, &["--tls-cert", missing, "--tls-key", key], &[]);
    assert!(!status.success());
    assert!(
        log.contains(missing) && log.contains("certificate"),
        "{log}"
    );

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let (status, log) =
        start_failure_with_args(&repo, &["--tls-cert", garbage, "--tls-key", key], &[]);
    assert!(!status.success());
    assert!(
        log.contains(garbage) && log.contains("holds no certificate"),
        "{log}"
    );

    // A key file with a broken key: the error names the file, never its
    // content.
    let broken = dir.path().join("broken.key");
    std::fs::write(
        &broken,
        "-----BEGIN PRIVATE KEY-----\nSECRETMATERIAL!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let broken = broken.to_str().unwrap();
    let (status, log) =
        start_failure_with_args(&repo, &["--tls-cert", cert, "--tls-key", broken], &[]);
    assert!(!status.success());
    assert!(log.contains(broken), "{log}");
    assert!(!log.contains("SECRETMATERIAL"), "{log}");

    // A key that belongs to another certificate.
    let other = make_pki();
    let (status, log) = start_failure_with_args(
        &repo,
        &["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
        &[],
    );
    assert!(!status.success());
    assert!(log.contains("cannot be used together"), "{log}");
}
