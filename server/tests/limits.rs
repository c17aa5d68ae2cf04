//! Abuse limits over real sockets: slow-loris request heads, idle
//! connections, the connection cap, oversized bodies and gRPC messages.
//! Every limit is hit beside a well-behaved client that must still be
//! served, and every hit must show in /metrics. Durations in these tests
//! are hang guards, not speed assertions.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve_loadtest::grpc_client::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_protocol::grpc::proto::model_infer_request::InferInputTensor;
use ferroserve_protocol::grpc::proto::ModelInferRequest;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::{examples_repo, f32_bytes, metric_value, Server};

/// How long a test waits for the server to act before calling it a hang.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn counter(metrics: &str, name: &str, reason: &str) -> f64 {
    metric_value(metrics, name, &format!("reason=\"{reason}\""))
        .unwrap_or_else(|| panic!("{name}{{reason={reason:?}}} missing:\n{metrics}"))
}

fn closed(metrics: &str, reason: &str) -> f64 {
    counter(metrics, "ferroserve_connections_closed_total", reason)
}

fn mlp_json(rows: usize) -> Vec<u8> {
    json!({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32",
                       "data": vec![0.125f32; rows * 64]}]})
    .to_string()
    .into_bytes()
}

fn good_infer(server: &Server) {
    let r = server.request("POST", "/v2/models/mlp/infer", &[], &mlp_json(1));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Waits until the peer closes the connection; returns false on a hang.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// An HTTP/1.1 keep-alive connection that sends one request at a time.
struct KeepAlive(TcpStream);

impl KeepAlive {
    fn connect(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(HANG_GUARD)).unwrap();
        KeepAlive(s)
    }

    /// GET `path`; the status and body, or the I/O error (a closed
    /// connection reads as `UnexpectedEof`).
    fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
                }
            }
            let n = self.0.read(&mut chunk)?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn slow_loris_is_cut_off_while_others_are_served() {
    let server = Server::start(&examples_repo(), &["--header-read-timeout-s", "2"]);
    let addr = server.addr;
    let loris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // Each read waits 500 ms for the server to close, then one more
        // byte of a request head that never ends goes out.
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let head = b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let started = Instant::now();
        let mut sent = 0usize;
        let mut buf = [0u8; 256];
        while started.elapsed() < HANG_GUARD {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if s.write_all(&[byte]).is_err() {
                return Some(sent);
            }
            sent += 1;
            match s.read(&mut buf) {
                Ok(0) => return Some(sent),
                Ok(_) => panic!("the server answered an incomplete request head"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(sent),
            }
        }
        None
    });
    // A well-behaved client beside it is served throughout.
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..3 {
        good_infer(&server);
        let r = server.request("GET", "/v2/health/ready", &[], b"");
        assert_eq!(r.status, 200);
    }
    let sent = loris
        .join()
        .unwrap()
        .expect("the slow-loris client was never disconnected");
    assert!(
        sent >= 2,
        "disconnected after {sent} bytes: too early to be the timeout"
    );
    good_infer(&server);
    let m = server.metrics();
    assert_eq!(closed(&m, "header_timeout"), 1.0, "{m}");
    assert_eq!(closed(&m, "idle_timeout"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let server = Server::start(&examples_repo(), &["--idle-timeout-s", "2"]);
    let addr = server.addr;

    // HTTP/1.1 keep-alive, idle after one request.
    let h1 = std::thread::spawn(move || {
        let mut c = KeepAlive::connect(addr);
        assert_eq!(c.get("/v2/health/live").unwrap().0, 200);
        closed_by_server(&mut c.0)
    });
    // A connection that never sends a byte.
    let silent = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        closed_by_server(&mut s)
    });
    // h2c, idle after one request: the client's connection task ends when
    // the server closes.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{addr}/v2/health/live"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    tokio::time::timeout(HANG_GUARD, conn)
        .await
        .expect("idle h2 connection was not closed")
        .unwrap()
        .ok();

    assert!(
        h1.join().unwrap(),
        "idle HTTP/1.1 connection was not closed"
    );
    assert!(silent.join().unwrap(), "silent connection was not closed");
    good_infer(&server);
    let m = server.metrics();
    assert_eq!(closed(&m, "idle_timeout"), 3.0, "{m}");
    assert_eq!(closed(&m, "header_timeout"), 0.0, "{m}");
}

#[test]
fn connections_beyond_the_cap_are_closed_and_counted() {
    let server = Server::start(&examples_repo(), &["--max-connections", "4"]);
    let mut held: Vec<KeepAlive> = (0..4)
        .map(|_| {
            let mut c = KeepAlive::connect(server.addr);
            assert_eq!(c.get("/v2/health/live").unwrap().0, 200);
            c
        })
        .collect();

    // The fifth is accepted and closed without an answer.
    let mut fifth = TcpStream::connect(server.addr).unwrap();
    let _ = fifth.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n");
    fifth.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut got = Vec::new();
    match fifth.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }

    // The four still work.
    for c in &mut held {
        assert_eq!(c.get("/v2/health/ready").unwrap().0, 200);
    }

    // Closing one frees its place (once the server has seen it close).
    drop(held.pop());
    let started = Instant::now();
    let metrics = loop {
        let mut c = KeepAlive::connect(server.addr);
        match c.get("/metrics") {
            Ok((200, body)) => break String::from_utf8(body).unwrap(),
            Ok((status, _)) => panic!("/metrics answered {status}"),
            Err(_) => {
                assert!(started.elapsed() < HANG_GUARD, "no place freed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let rejected = counter(
        &metrics,
        "ferroserve_connections_rejected_total",
        "max_connections",
    );
    assert!(rejected >= 1.0, "{metrics}");
    assert_eq!(
        metric_value(&metrics, "ferroserve_open_connections", ""),
        Some(4.0),
        "{metrics}"
    );
    for c in &mut held {
        assert_eq!(c.get("/v2/health/live").unwrap().0, 200);
    }
}

#[test]
fn oversized_body_gets_413_beside_a_good_client() {
    let server = Server::start(&examples_repo(), &["--max-body-bytes", "2048"]);
    let addr = server.addr;
    let big = mlp_json(8);
    assert!(big.len() > 2048);
    let good = std::thread::spawn(move || {
        for _ in 0..3 {
            let r = support::request(addr, "POST", "/v2/models/mlp/infer", &[], &mlp_json(1));
            assert_eq!(r.status, 200, "{}", r.text());
        }
    });
    let r = server.request("POST", "/v2/models/mlp/infer", &[], &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("2048"));
    good.join().unwrap();
    good_infer(&server);
    let m = server.metrics();
    assert_eq!(
        counter(&m, "ferroserve_rejected_requests_total", "body_too_large"),
        1.0
    );
}

fn grpc_infer(rows: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(&vec![0.125; rows * 64]).into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_grpc_message_is_resource_exhausted() {
    let server = Server::start(&examples_repo(), &["--max-grpc-message-bytes", "1024"]);
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .unwrap();
    let status = client
        .model_infer(grpc_infer(16))
        .await
        .expect_err("a 4 KiB message over a 1 KiB limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The next request on the same channel works.
    let out = client
        .model_infer(grpc_infer(1))
        .await
        .expect("a small message after the refused one")
        .into_inner();
    assert_eq!(out.outputs[0].shape, vec![1, 10]);
    let m = server.metrics();
    assert_eq!(
        counter(
            &m,
            "ferroserve_rejected_requests_total",
            "grpc_message_too_large"
        ),
        1.0,
        "{m}"
    );
}

/// A client that sends its headers promptly but trickles the body is cut off
/// by the body read timeout (408, counted), while a good client is served.
#[test]
fn slow_body_gets_408_while_others_are_served() {
    let server = Server::start(&examples_repo(), &["--body-read-timeout-s", "2"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let body = mlp_json(1);
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let started = Instant::now();
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        for &byte in body.iter().take(body.len() - 1) {
            if started.elapsed() > HANG_GUARD {
                break;
            }
            if s.write_all(&[byte]).is_err() {
                break;
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                // Read whatever else of the answer is there, then stop.
                let _ = s.read_to_end(&mut raw);
                break;
            }
        }
        raw
    });
    std::thread::sleep(Duration::from_millis(500));
    good_infer(&server);
    let raw = slow.join().unwrap();
    let reply = support::parse_response(&raw);
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(
        reply.text().contains("did not arrive within 2 s"),
        "{}",
        reply.text()
    );
    good_infer(&server);
    let m = server.metrics();
    assert_eq!(
        counter(
            &m,
            "ferroserve_rejected_requests_total",
            "body_read_timeout"
        ),
        1.0,
        "{m}"
    );
}
