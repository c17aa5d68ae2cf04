//! `ferroserve loadtest` against the real server: counts are exact (sent =
//! answered + errors, and the server saw exactly what was sent), errors are
//! classified by kind, over HTTP JSON, HTTP binary and gRPC, closed and open
//! loop.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{copy_example, metric_value, workspace_root, Server};

fn loadtest(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .arg("loadtest")
        .args(args)
        .args(["--json", "--warmup", "0s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Requests the server counted for mlp, all outcomes.
fn served(server: &Server) -> f64 {
    let m = server.metrics();
    m.lines()
        .filter(|l| l.starts_with("ferroserve_requests_total{") && l.contains(r#"model="mlp""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn counts_are_exact_and_errors_classified_over_http_and_grpc() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let server = Server::start(repo.path(), &[]);
    let url = format!("http://{}", server.addr);
    let grpc = format!("http://{}", server.grpc_addr);

    // Random inputs from the metadata, closed loop, JSON.
    let before = served(&server);
    let r = loadtest(&[
        "--url",
        &url,
        "--model",
        "mlp",
        "--concurrency",
        "4",
        "--requests",
        "300",
    ]);
    assert_eq!(
        (r["requests"].as_u64(), r["ok"].as_u64()),
        (Some(300), Some(300)),
        "{r}"
    );
    assert_eq!(r["errors"], serde_json::json!({}));
    assert_eq!(
        served(&server) - before,
        300.0,
        "the server saw exactly what was sent"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // A mix of three good requests and one with a wrong input name: the
    // requests are sent in turn, so exactly a quarter fail, as 400s.
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(support::examples_repo().join("mlp/1/sample.json")).unwrap();
    let bad = good.replacen("\"input\"", "\"inptu\"", 1);
    assert_ne!(good, bad);
    let mix = dir.path().join("mix.json");
    std::fs::write(&mix, format!("[{good},{good},{bad},{good}]")).unwrap();
    let mix = mix.to_str().unwrap();
    for (proto, addr, kind) in [
        ("http", url.as_str(), "status 400"),
        ("grpc", grpc.as_str(), "grpc invalid_argument (3)"),
    ] {
        let r = loadtest(&[
            "--url",
            addr,
            "--model",
            "mlp",
            "--protocol",
            proto,
            "--input",
            mix,
            "--concurrency",
            "3",
            "--requests",
            "400",
        ]);
        assert_eq!(r["requests"], 400, "{proto}: {r}");
        assert_eq!(r["ok"], 300, "{proto}: {r}");
        assert_eq!(r["errors"][kind], 100, "{proto}: {r}");
    }

    // Binary tensors, open loop: the schedule is kept, so the run cannot
    // end before its last request was due.
    let r = loadtest(&[
        "--url",
        &url,
        "--model",
        "mlp",
        "--binary",
        "--rate",
        "400",
        "--requests",
        "200",
        "--connections",
        "8",
    ]);
    assert_eq!(
        (r["requests"].as_u64(), r["ok"].as_u64()),
        (Some(200), Some(200)),
        "{r}"
    );
    assert_eq!(r["mode"], "open");
    assert!(r["elapsed_s"].as_f64().unwrap() >= 199.0 / 400.0, "{r}");
    eprintln!(
        "open loop asked 400 req/s, got {:.1} req/s",
        r["throughput"].as_f64().unwrap()
    );

    // A model that does not exist: a clear error, not a run of 404s.
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "loadtest",
            "--url",
            &url,
            "--model",
            "nope",
            "--concurrency",
            "1",
            "--requests",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("/v2/models/nope") && e.contains("404"), "{e}");
    assert!(metric_value(&server.metrics(), "ferroserve_open_connections", "").is_some());
}

/// A raw-style Python model that sleeps half a second on every 100th call:
/// a server that stalls on purpose.
fn stalling_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let b = repo.path().join("stall/1");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("score.py"),
        "import time\nN = [0]\ndef run(raw):\n    N[0] += 1\n    if N[0] % 100 == 50:\n        time.sleep(0.5)\n    return N[0]\n",
    )
    .unwrap();
    std::fs::write(
        b.join("bundle.toml"),
        "name = \"stall\"\nbackend = \"python\"\nmodel = \"score.py\"\n[python]\nstyle = \"raw\"\n[batching]\nmax_batch_size = 0\n[instances]\ncount = 1\n",
    )
    .unwrap();
    repo
}

/// Coordinated omission: against a server that stalls, a closed loop sends
/// nothing while it waits, so only the stalled requests look slow; the open
/// loop keeps sending on schedule and counts each request's latency from
/// when it was due, so every request that arrived during a stall shows it.
#[test]
fn the_open_loop_shows_a_stall_that_the_closed_loop_hides() {
    let repo = stalling_repo();
    let python = workspace_root().join(".venv/bin/python");
    let server = Server::start(repo.path(), &["--python", python.to_str().unwrap()]);
    let url = format!("http://{}", server.addr);
    let closed = loadtest(&[
        "--url",
        &url,
        "--model",
        "stall",
        "--concurrency",
        "1",
        "--requests",
        "300",
    ]);
    let open = loadtest(&[
        "--url",
        &url,
        "--model",
        "stall",
        "--rate",
        "100",
        "--requests",
        "300",
        "--connections",
        "1",
    ]);
    for r in [&closed, &open] {
        assert_eq!(
            (r["requests"].as_u64(), r["ok"].as_u64()),
            (Some(300), Some(300)),
            "{r}"
        );
    }
    let p90 = |r: &Value| r["latency_ms"]["p90"].as_f64().unwrap();
    // Three stalls of 500 ms in 300 requests: 1% of a closed loop's
    // requests, about half of an open loop's at 100 requests per second.
    assert!(p90(&closed) < 100.0, "closed loop: {closed}");
    assert!(p90(&open) >= 100.0, "open loop: {open}");
    assert!(
        open["latency_ms"]["max"].as_f64().unwrap() >= 500.0,
        "{open}"
    );
    eprintln!(
        "p90: closed loop {:.1} ms, open loop {:.1} ms",
        p90(&closed),
        p90(&open)
    );
}

/// On a model that takes real time per request, the open loop still sends
/// at the asked rate.
#[test]
fn the_open_loop_holds_its_rate_on_a_slow_model() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("conv", repo.path());
    let server = Server::start(repo.path(), &[]);
    let url = format!("http://{}", server.addr);
    let r = loadtest(&[
        "--url",
        &url,
        "--model",
        "conv",
        "--binary",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--connections",
        "16",
    ]);
    let got = r["throughput"].as_f64().unwrap();
    eprintln!("asked 200 req/s, got {got:.1} ({r})");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert!((got - 200.0).abs() / 200.0 < 0.05, "{r}");
}
