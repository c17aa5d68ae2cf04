//! Lifecycle events: webhooks, the audit log and `/v2/admin/events`, against
//! the real server and a real HTTP receiver on loopback.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve_frontend::auth::AuthPolicy;
use ferroserve_frontend::endpoints::mirror::MirrorPool;
use ferroserve_frontend::endpoints::RoutingTable;
use ferroserve_frontend::listener::{ConnLimits, ConnOptions};
use ferroserve_frontend::metrics::Metrics;
use ferroserve_frontend::state::{AppState, HttpLimits};
use ferroserve_registry::events::{BusConfig, EventBus};
use ferroserve_registry::lifecycle as types;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{copy_example, metric_value, Server};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    content_type: String,
    body: serde_json::Value,
}

/// A webhook receiver on 127.0.0.1, answering every POST with `status`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = Arc::clone(&got);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let got = Arc::clone(&got2);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let got = Arc::clone(&got);
                            async move {
                                let at = Instant::now();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                got.lock().unwrap().push(Received {
                                    at,
                                    content_type,
                                    body: serde_json::from_slice(&body).unwrap(),
                                });
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(r)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
        }
    }

    fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback address nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook")
}

fn mlp_json() -> Vec<u8> {
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                       "data": vec![0.25f32; 64]}]})
    .to_string()
    .into_bytes()
}

fn wait_metric(server: &Server, name: &str, labels: &str, want: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric_value(&server.metrics(), name, labels).unwrap_or(0.0);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_webhook_receives_each_startup_event_as_documented() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    copy_example("seq_sum", repo.path());
    let hook = Receiver::start(200);
    let server = Server::start(repo.path(), &["--webhook", &hook.url]);
    let got = hook.wait_for(2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "log:\n{}", server.log_text());
    let mut subjects = Vec::new();
    for r in &got {
        assert_eq!(r.content_type, "application/cloudevents+json");
        let e = r.body.as_object().unwrap();
        let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "data",
                "datacontenttype",
                "id",
                "source",
                "specversion",
                "subject",
                "time",
                "type"
            ]
        );
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "io.ferroserve.deployment.created");
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(e["source"].as_str().unwrap().starts_with("/ferroserve/"));
        let t = e["time"].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
        assert!(!e["id"].as_str().unwrap().is_empty());
        let model = e["data"]["model"].as_str().unwrap().to_string();
        assert_eq!(e["subject"], format!("{model}/default").as_str());
        assert_eq!(e["data"]["endpoint"], model.as_str());
        assert_eq!(e["data"]["deployment"], "default");
        assert_eq!(e["data"]["version"], 1);
        assert_eq!(e["data"]["backend"], "onnx");
        assert_eq!(e["data"]["reason"], "startup");
        assert!(e["data"]["instances"].as_u64().unwrap() >= 1);
        subjects.push(e["subject"].as_str().unwrap().to_string());
    }
    subjects.sort();
    assert_eq!(subjects, ["mlp/default", "seq_sum/default"]);
    assert_ne!(got[0].body["id"], got[1].body["id"]);
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="success""#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_events_emitted_total",
            r#"type="io.ferroserve.deployment.created""#
        ),
        Some(2.0)
    );
    // Nothing more arrives: each event exactly once.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.got.lock().unwrap().len(), 2);
    assert!(server.stop().success());

    // The same events, in the registry's audit log.
    let db = rusqlite::Connection::open(repo.path().join("registry.db")).unwrap();
    let mut q = db
        .prepare("SELECT action, subject, detail FROM audit_log WHERE action LIKE 'io.ferroserve.%' ORDER BY id")
        .unwrap();
    let rows: Vec<(String, String, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (action, subject, detail) in rows {
        assert_eq!(action, "io.ferroserve.deployment.created");
        let d: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(d["subject"], subject.as_str());
        assert!(
            got.iter().any(|r| r.body == d),
            "audited {d} was not delivered"
        );
    }
}

#[test]
fn a_failing_webhook_is_retried_with_backoff_then_counted_and_serving_goes_on() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let failing = Receiver::start(500);
    let dead = dead_url();
    let server = Server::start(
        repo.path(),
        &[
            "--webhook",
            &failing.url,
            "--webhook",
            &dead,
            "--webhook-retries",
            "3",
            "--webhook-backoff-ms",
            "300",
        ],
    );
    // Serving is unaffected while the webhooks are being retried.
    let started = Instant::now();
    let r = server.request("POST", "/v2/models/mlp/infer", &[], &mlp_json());
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // 1 attempt + 3 retries, 300, 600, 1200 ms apart.
    let got = failing.wait_for(4, Duration::from_secs(20));
    assert_eq!(got.len(), 4, "log:\n{}", server.log_text());
    assert!(
        answered < got[3].at,
        "the inference was answered during the retries"
    );
    for (i, want_ms) in [300u64, 600, 1200].into_iter().enumerate() {
        let gap = got[i + 1].at - got[i].at;
        assert!(
            gap >= Duration::from_millis(want_ms - 20)
                && gap < Duration::from_millis(want_ms + 1500),
            "retry {} came after {gap:?}",
            i + 1
        );
        assert_eq!(got[i + 1].body, got[0].body, "a retry sends the same event");
    }
    let within = Duration::from_secs(20);
    assert_eq!(
        wait_metric(
            &server,
            "ferroserve_webhook_failures_total",
            "",
            2.0,
            within
        ),
        2.0
    );
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="http_error""#
        ),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="connect_error""#
        ),
        Some(4.0)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        failing.got.lock().unwrap().len(),
        4,
        "no more than the retries"
    );
    let log = server.log_text();
    assert_eq!(log.matches("webhook delivery failed").count(), 2, "{log}");
    assert!(log.contains("answered 500"), "{log}");
    assert!(server.stop().success());
}

/// Reads from `s` until `needle` has arrived (or the stream ends).
fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(buf).contains(needle) {
            return true;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn open_stream(addr: SocketAddr, token: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /v2/admin/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    )
    .unwrap();
    s
}

#[test]
fn the_event_stream_needs_the_management_token_keeps_alive_and_ends_on_shutdown() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let tokens = repo.path().join("mgmt.tokens");
    std::fs::write(&tokens, "mgmt-Ev3nts7k\n").unwrap();
    let server = Server::start(
        repo.path(),
        &[
            "--management-token-file",
            tokens.to_str().unwrap(),
            "--events-keepalive-s",
            "1",
            "--shutdown-grace-s",
            "30",
        ],
    );
    let r = server.request("GET", "/v2/admin/events", &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());

    let mut s = open_stream(server.addr, Some("mgmt-Ev3nts7k"));
    let mut buf = Vec::new();
    assert!(read_until(&mut s, &mut buf, ": subscribed\n\n"));
    let head = String::from_utf8_lossy(&buf).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(read_until(&mut s, &mut buf, ": keep-alive\n\n"));
    assert_eq!(
        metric_value(&server.metrics(), "ferroserve_event_subscribers", ""),
        Some(1.0)
    );

    // SIGTERM with the stream open: the stream ends cleanly (the chunked
    // terminator) and the server exits well within its 30 s grace.
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let ended = read_until(&mut s, &mut buf, "0\r\n\r\n");
        (ended, String::from_utf8_lossy(&buf).to_string())
    });
    let status = server.stop();
    let took = started.elapsed();
    assert!(status.success());
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let (ended, text) = reader.join().unwrap();
    assert!(
        ended,
        "stream did not end with the chunked terminator: {text}"
    );
}

/// The stream delivers events emitted while a subscriber is connected. The
/// server emits only start-up events today (before anyone can subscribe),
/// so this runs the real HTTP front end in-process on a loopback socket and
/// emits through its bus, as later management routes will.
#[test]
fn a_subscriber_receives_events_emitted_while_connected() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let (bus, _) = EventBus::new(BusConfig::default(), &metrics.events);
    let state = Arc::new(AppState {
        routes: Arc::new(RoutingTable::new(Arc::new(MirrorPool::new(8, &metrics)))),
        deployer: None,
        rollouts: Arc::default(),
        metrics: Arc::clone(&metrics),
        limits: HttpLimits::default(),
        ready: AtomicBool::new(true),
        events: bus.clone(),
        events_keepalive: Duration::from_secs(15),
        repo: None,
        max_upload_bytes: 256 << 20,
    });
    let opts = ConnOptions::new(ConnLimits::default(), None, AuthPolicy::open(), &metrics);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let served = rt.spawn(async move {
        let stop = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        ferroserve_frontend::http::serve(listener, state, &opts, stop, Duration::from_secs(30))
            .await;
    });

    let mut s = open_stream(addr, None);
    let mut buf = Vec::new();
    assert!(read_until(&mut s, &mut buf, ": subscribed\n\n"));
    let event = bus.event(
        types::ALIAS_MOVED,
        "mlp",
        json!({"model": "mlp", "alias": "production", "from": 1, "to": 2}),
    );
    bus.emit(event.clone());
    let want = format!(
        "id: {}\nevent: io.ferroserve.alias.moved\ndata: {}\n\n",
        event.id,
        event.to_json()
    );
    assert!(
        read_until(&mut s, &mut buf, &want),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let data_line = want.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
    let parsed: ferroserve_registry::events::CloudEvent = serde_json::from_str(data_line).unwrap();
    assert_eq!(parsed, event);

    // Shutdown: close the bus, stop the listener; the stream ends at once.
    let started = Instant::now();
    bus.close();
    stop_tx.send(true).unwrap();
    assert!(read_until(&mut s, &mut buf, "0\r\n\r\n"));
    rt.block_on(served).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
