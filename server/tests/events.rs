//! Lifecycle events: webhooks, the audit log and `/v2/admin/events`, against
//! the real server and a real HTTP receiver on loopback.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use ferroserve_frontend::auth::AuthPolicy;
use ferroserve_frontend::endpoints::mirror::MirrorPool;
use ferroserve_frontend::endpoints::RoutingTable;
use ferroserve_frontend::listener::{ConnLimits, ConnOptions};
use ferroserve_frontend::metrics::Metrics;
use ferroserve_frontend::state::{AppState, HttpLimits};
use ferroserve_registry::events::{BusConfig, EventBus};
use ferroserve_registry::lifecycle as types;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{copy_example, metric_value, start_failure_with_args, Server};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    content_type: String,
    body: serde_json::Value,
    /// Every header, names lower-case.
    headers: Vec<(String, String)>,
    /// The body exactly as sent: what the signature covers.
    raw: Bytes,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1, answering every POST with `status`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    /// TLS handshakes that failed (the client refused our certificate).
    handshake_failures: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        Receiver::start_with(&[status], None)
    }

    /// Answers the n-th POST with `statuses[n]` (the last one from then
    /// on); over TLS with `tls`.
    fn start_with(statuses: &[u16], tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = Arc::clone(&got);
        let handshake_failures = Arc::new(AtomicUsize::new(0));
        let failures2 = Arc::clone(&handshake_failures);
        let statuses: Arc<[u16]> = statuses.into();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
                    let statuses = Arc::clone(&statuses);
                    let acceptor = acceptor.clone();
                    let failures = Arc::clone(&failures2);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let got = Arc::clone(&got);
                            let statuses = Arc::clone(&statuses);
                            async move {
                                let at = Instant::now();
                                let headers: Vec<(String, String)> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.as_str().to_string(), v.to_str().unwrap().to_string())
                                    })
                                    .collect();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                let raw = req.into_body().collect().await.unwrap().to_bytes();
                                let mut got = got.lock().unwrap();
                                let status = statuses[got.len().min(statuses.len() - 1)];
                                got.push(Received {
                                    at,
                                    content_type,
                                    body: serde_json::from_slice(&raw).unwrap(),
                                    headers,
                                    raw,
                                    status,
                                });
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(r)
                            }
                        });
                        let http1 = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            None => {
                                let _ = http1.serve_connection(TokioIo::new(stream), svc).await;
                            }
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => {
                                    let _ = http1.serve_connection(TokioIo::new(tls), svc).await;
                                }
                                Err(_) => {
                                    failures.fetch_add(1, Ordering::SeqCst);
                                }
                            },
                        }
                    });
                }
            });
        });
        Receiver {
            url: format!("{scheme}://{addr}/hook"),
            got,
            handshake_failures,
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
    let secret = secret_file(repo.path(), "hook.secret", 1);
    let server = Server::start(
        repo.path(),
        &[
            "--webhook",
            &hook.url,
            "--webhook-secret-file",
            path_str(&secret),
        ],
    );
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
    let failing_secret = secret_file(repo.path(), "failing.secret", 1);
    let dead_secret = secret_file(repo.path(), "dead.secret", 2);
    let server = Server::start(
        repo.path(),
        &[
            "--webhook",
            &failing.url,
            "--webhook-secret-file",
            path_str(&failing_secret),
            "--webhook",
            &dead,
            "--webhook-secret-file",
            path_str(&dead_secret),
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

/// A Standard Webhooks secret (`whsec_` + base64 of 32 bytes) made from
/// `seed`: random-looking, and the same on every run.
fn test_secret(seed: u8) -> String {
    let key = Sha256::digest([b'f', b'e', b'r', b'r', b'o', seed]);
    format!("whsec_{}", STANDARD.encode(key))
}

/// Writes [`test_secret`]`(seed)` to `dir/name`.
fn secret_file(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", test_secret(seed))).unwrap();
    p
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks `r`'s Standard Webhooks signature from first principles: one
/// of the space-separated signatures is `v1,` + base64(HMAC-SHA256(key,
/// "{webhook-id}.{webhook-timestamp}.{body}")).
fn check_signature(secret: &str, r: &Received) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = r.header("webhook-id").expect("a webhook-id header");
    let ts = r
        .header("webhook-timestamp")
        .expect("a webhook-timestamp header");
    let secs: u64 = ts.parse().expect("webhook-timestamp is Unix seconds");
    assert!(secs.abs_diff(unix_now()) < 300, "webhook-timestamp {ts}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.raw);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let sig = r
        .header("webhook-signature")
        .expect("a webhook-signature header");
    assert!(
        sig.split(' ').any(|s| s == want),
        "{sig:?} holds no {want:?}"
    );
}

/// Verifies `deliveries` with the reference implementation (the
/// `standardwebhooks` package from PyPI, run by support/verify_webhook.py
/// in the project's .venv) and returns the payload ids it verified. A
/// missing interpreter or package fails the test.
fn reference_verify(secret: &str, deliveries: &[Received]) -> Vec<String> {
    use std::process::{Command, Stdio};
    let python = support::workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Standard Webhooks reference check needs {} with the standardwebhooks \
         package of requirements-dev.txt: run scripts/setup-env.sh",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/verify_webhook.py");
    let input = json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|r| json!({
            "headers": r.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "body": std::str::from_utf8(&r.raw).unwrap(),
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference implementation refused: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A private CA (its certificate in `ca_file`) and a receiver's TLS
/// configuration for 127.0.0.1 signed by it.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ferroserve webhook test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name
        .push(DnType::CommonName, "webhook receiver");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                leaf_cert.der().clone(),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}

#[test]
fn an_https_webhook_is_signed_as_standard_webhooks_says_and_a_retry_keeps_its_id() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    copy_example("seq_sum", repo.path());
    let pki = make_pki();
    // The first delivery is answered 503 and retried.
    let https = Receiver::start_with(&[503, 200], Some(Arc::clone(&pki.server)));
    let plain = Receiver::start(200);
    // Mid-rotation: the new secret and the one the receiver may still hold.
    let secret = test_secret(3);
    let old_secret = test_secret(7);
    let secret_path = repo.path().join("https.secret");
    std::fs::write(
        &secret_path,
        format!("# the https receiver's, rotating\n{secret}\n\n{old_secret}\n"),
    )
    .unwrap();
    let server = Server::start_with_env(
        repo.path(),
        &[
            "--webhook",
            &https.url,
            "--webhook-secret-file",
            path_str(&secret_path),
            "--webhook",
            &plain.url,
            "--webhook-unsigned",
            "--webhook-ca-file",
            path_str(&pki.ca_file),
            "--webhook-backoff-ms",
            "100",
        ],
        // Debug logs too must not show the secret.
        &[("RUST_LOG", "debug")],
    );
    let within = Duration::from_secs(30);
    let got = https.wait_for(3, within);
    assert_eq!(got.len(), 3, "log:\n{}", server.log_text());
    let unsigned = plain.wait_for(2, within);
    assert_eq!(unsigned.len(), 2, "log:\n{}", server.log_text());

    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200, 200]
    );
    // The retry is the same event under the same webhook-id, signed anew.
    assert_eq!(got[1].raw, got[0].raw);
    assert_eq!(got[1].header("webhook-id"), got[0].header("webhook-id"));
    assert_ne!(got[2].header("webhook-id"), got[0].header("webhook-id"));
    for r in &got {
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert_eq!(
            r.header("webhook-id"),
            r.body["id"].as_str(),
            "webhook-id is the event id"
        );
        check_signature(&secret, r);
        check_signature(&old_secret, r);
        assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 2);
    }
    let want: Vec<String> = got
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reference_verify(&secret, &got), want);
    assert_eq!(reference_verify(&old_secret, &got), want);

    // The unsigned webhook gets the same events, with an id and a
    // timestamp but no signature.
    for r in &unsigned {
        assert_eq!(r.header("webhook-id"), r.body["id"].as_str());
        let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(ts.abs_diff(unix_now()) < 300);
        assert_eq!(r.header("webhook-signature"), None);
    }
    let mut a: Vec<&str> = got[1..]
        .iter()
        .map(|r| r.body["id"].as_str().unwrap())
        .collect();
    let mut b: Vec<&str> = unsigned
        .iter()
        .map(|r| r.body["id"].as_str().unwrap())
        .collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);

    assert_eq!(
        wait_metric(
            &server,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="success""#,
            4.0,
            within
        ),
        4.0
    );
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="http_error""#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "ferroserve_webhook_failures_total", "").unwrap_or(0.0),
        0.0
    );
    let log = server.log_text();
    for s in [&secret, &old_secret] {
        assert!(
            !log.contains(&s["whsec_".len()..]),
            "a secret is in the log"
        );
    }
    assert!(log.contains("deliveries signed"), "{log}");
    assert!(log.contains("deliveries unsigned"), "{log}");
    assert!(server.stop().success());
}

#[test]
fn an_untrusted_certificate_is_a_failed_delivery_and_serving_goes_on() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let pki = make_pki();
    let https = Receiver::start_with(&[200], Some(Arc::clone(&pki.server)));
    let secret = secret_file(repo.path(), "hook.secret", 6);
    // No --webhook-ca-file: the receiver's private CA is not trusted.
    let server = Server::start(
        repo.path(),
        &[
            "--webhook",
            &https.url,
            "--webhook-secret-file",
            path_str(&secret),
            "--webhook-retries",
            "1",
            "--webhook-backoff-ms",
            "100",
        ],
    );
    let r = server.request("POST", "/v2/models/mlp/infer", &[], &mlp_json());
    assert_eq!(r.status, 200, "{}", r.text());

    let within = Duration::from_secs(30);
    assert_eq!(
        wait_metric(
            &server,
            "ferroserve_webhook_failures_total",
            "",
            1.0,
            within
        ),
        1.0,
        "log:\n{}",
        server.log_text()
    );
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="tls_error""#
        ),
        Some(2.0),
        "one attempt and one retry; log:\n{}",
        server.log_text()
    );
    assert_eq!(
        metric_value(
            &m,
            "ferroserve_webhook_deliveries_total",
            r#"outcome="success""#
        ),
        None
    );
    // The handshakes reached the receiver, and were refused by the client.
    let deadline = Instant::now() + within;
    while https.handshake_failures.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(https.handshake_failures.load(Ordering::SeqCst), 2);
    assert!(https.got.lock().unwrap().is_empty());
    let log = server.log_text();
    assert_eq!(log.matches("webhook delivery failed").count(), 1, "{log}");
    assert!(log.contains("invalid peer certificate"), "{log}");
    // Serving went on.
    let r = server.request("POST", "/v2/models/mlp/infer", &[], &mlp_json());
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(server.stop().success());
}

#[test]
fn bad_webhook_configuration_is_one_error_naming_the_flag_before_any_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = secret_file(d, "good.secret", 4);
    let bare = test_secret(5)["whsec_".len()..].to_string();
    let unprefixed = write("unprefixed.secret", &format!("{bare}\n"));
    let not_base64 = write("not-base64.secret", "whsec_***not*base64***\n");
    let short = write(
        "short.secret",
        &format!("whsec_{}\n", STANDARD.encode([7u8; 16])),
    );
    let empty = write("empty.secret", "# to be filled in\n");
    let absent = d.join("absent.secret");
    let ca_text = write("ca.txt", "not a certificate\n");
    let ca_open = write("ca-open.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let ca_absent = d.join("absent-ca.pem");
    // Nothing is served from here: were a case accepted, start-up would
    // still stop, at the empty repository, after loading ONNX Runtime.
    let repo = d.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let hook = "http://127.0.0.1:9/hook";
    let with_secret = |path: &Path| vec![hook.to_string(), path_str(path).to_string()];

    struct Case {
        args: Vec<String>,
        code: i32,
        wants: Vec<String>,
    }
    let case = |args: &[&str], code: i32, wants: &[&str]| Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        wants: wants.iter().map(|s| s.to_string()).collect(),
    };
    let secret_case = |path: &Path, want: &str| {
        let [h, p] = <[String; 2]>::try_from(with_secret(path)).unwrap();
        case(
            &["--webhook", &h, "--webhook-secret-file", &p],
            1,
            &[
                &format!("--webhook-secret-file {p} (of --webhook {h}): "),
                want,
            ],
        )
    };
    let ca_case = |path: &Path, want: &str| {
        let p = path_str(path);
        case(
            &[
                "--webhook",
                hook,
                "--webhook-secret-file",
                path_str(&good),
                "--webhook-ca-file",
                p,
            ],
            1,
            &[&format!("--webhook-ca-file {p}: "), want],
        )
    };
    let cases = [
        // Malformed URLs: clap's usage error, exit 2.
        case(
            &["--webhook", "ftp://127.0.0.1/hook"],
            2,
            &[
                "--webhook <URL>",
                "ftp://127.0.0.1/hook",
                "http:// or https://",
            ],
        ),
        case(
            &["--webhook", "127.0.0.1:9/hook"],
            2,
            &["--webhook <URL>", "127.0.0.1:9/hook", "is not a URL"],
        ),
        // Pairing.
        case(
            &["--webhook", hook],
            1,
            &[
                &format!("--webhook {hook} has no --webhook-secret-file"),
                "--webhook-unsigned",
            ],
        ),
        case(
            &["--webhook-secret-file", path_str(&good), "--webhook", hook],
            1,
            &[&format!(
                "--webhook-secret-file {} comes before any --webhook",
                path_str(&good)
            )],
        ),
        case(
            &[
                "--webhook",
                hook,
                "--webhook-secret-file",
                path_str(&good),
                "--webhook-secret-file",
                path_str(&empty),
            ],
            1,
            &[&format!("--webhook {hook} is followed by two secret files")],
        ),
        // Secrets.
        secret_case(&absent, "cannot read it"),
        secret_case(
            &unprefixed,
            "line 1 is not a Standard Webhooks secret: it does not start with `whsec_`",
        ),
        secret_case(
            &not_base64,
            "line 1 is not a Standard Webhooks secret: the part after `whsec_` is not base64",
        ),
        secret_case(
            &short,
            "it decodes to 16 bytes; a secret is 24 to 64 random bytes",
        ),
        secret_case(&empty, "no secret in it"),
        // CA files.
        ca_case(&ca_absent, "cannot read it"),
        ca_case(&ca_text, "no certificate in it"),
        ca_case(&ca_open, "not valid PEM: a PEM block has no END line"),
    ];
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let (status, stderr) = start_failure_with_args(&repo, &args, &[]);
        assert_eq!(status.code(), Some(c.code), "{args:?}:\n{stderr}");
        for w in &c.wants {
            assert!(
                stderr.contains(w.as_str()),
                "{args:?}: no {w:?} in\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("ONNX Runtime loaded"),
            "{args:?}: checked too late:\n{stderr}"
        );
        if c.code == 1 {
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("error: ")).count(),
                1,
                "{args:?}:\n{stderr}"
            );
        }
        assert!(!stderr.contains(&bare), "{args:?}: a secret in\n{stderr}");
    }
}
