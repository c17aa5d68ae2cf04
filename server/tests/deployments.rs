//! Endpoints and deployments through the command line, the configuration
//! file and the management API, against the real binary: what the
//! registry keeps, what a running server picks up, and the refusals.
//! (Traffic under swaps, weights, warm-up failures, rollouts and mirrors
//! are exercised under load by `tests/python/test_deployments.py`.)

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{workspace_root, Server};

fn ferroserve(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(args)
        .arg("--repo")
        .arg(repo)
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn ok(args: &[&str], repo: &Path) -> String {
    let out = ferroserve(args, repo);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], repo: &Path) -> String {
    let out = ferroserve(args, repo);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository with mlp versions 1 and 2 (different weights) and flaky 1.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ex = workspace_root().join("examples");
    let reg = |src: &Path, name: &str| {
        ok(
            &["register", src.to_str().unwrap(), "--name", name],
            dir.path(),
        )
    };
    assert_eq!(reg(&ex.join("models/mlp/1"), "mlp").trim(), "1");
    assert_eq!(reg(&ex.join("bundles/mlp-v2"), "mlp").trim(), "2");
    assert_eq!(reg(&ex.join("bundles/flaky"), "flaky").trim(), "1");
    dir
}

fn infer_body() -> Vec<u8> {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.1f32; 64]}]})
        .to_string()
        .into_bytes()
}

/// `(deployment header, model_version)` of one unpinned request.
fn who_answers(server: &Server, endpoint: &str) -> (String, String) {
    let r = server.request(
        "POST",
        &format!("/v2/models/{endpoint}/infer"),
        &[],
        &infer_body(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    (
        r.header("x-ferroserve-deployment").unwrap().to_string(),
        r.json()["model_version"].as_str().unwrap().to_string(),
    )
}

/// Polls `f` until it returns `Some` (a hang guard, not a speed check).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cli_changes_reach_a_running_server_and_survive_a_restart() {
    let dir = repo();
    let r = dir.path();
    let server = Server::start(r, &["--poll-interval-ms", "100"]);
    // Implicit endpoints: each model, its newest version.
    assert_eq!(who_answers(&server, "mlp"), ("default".into(), "2".into()));

    let out = ok(
        &["deploy", "ep", "blue", "--model", "mlp", "--version", "1"],
        r,
    );
    assert!(out.contains("blue") && out.contains("100%"), "{out}");
    ok(
        &[
            "deploy",
            "ep",
            "green",
            "--model",
            "mlp",
            "--version",
            "2",
            "--max-batch-size",
            "4",
        ],
        r,
    );
    eventually("endpoint ep", || {
        let r = server.request("GET", "/v2/models/ep", &[], b"");
        (r.status == 200 && r.json()["versions"] == json!(["1", "2"])).then_some(())
    });
    assert_eq!(who_answers(&server, "ep"), ("blue".into(), "1".into()));

    ok(&["traffic", "ep", "green=100"], r);
    eventually("traffic on green", || {
        (who_answers(&server, "ep").0 == "green").then_some(())
    });
    for _ in 0..20 {
        assert_eq!(who_answers(&server, "ep"), ("green".into(), "2".into()));
    }
    let listed: Value = serde_json::from_str(&ok(&["endpoints", "list", "--json"], r)).unwrap();
    assert_eq!(listed[0]["name"], "ep");
    assert_eq!(listed[0]["deployments"][1]["settings"]["max_batch_size"], 4);
    drop(server);

    // The registry holds the running state: a restart without any
    // configuration serves the same.
    let server = Server::start(r, &[]);
    for _ in 0..10 {
        assert_eq!(who_answers(&server, "ep"), ("green".into(), "2".into()));
    }
    let view = server
        .request("GET", "/v2/admin/endpoints/ep", &[], b"")
        .json();
    let weights: Vec<(String, u64)> = view["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().into(),
                d["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(weights, [("blue".into(), 0), ("green".into(), 100)]);
    // Every change is in the audit log.
    let db = rusqlite::Connection::open(r.join("registry.db")).unwrap();
    let ops: Vec<String> = db
        .prepare("SELECT json_extract(detail, '$.op') FROM audit_log WHERE action = 'io.ferroserve.endpoint.changed' ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ops, ["deploy", "deploy", "traffic"]);
}

#[test]
fn a_version_used_by_a_deployment_cannot_be_deleted_even_with_force() {
    let dir = repo();
    let r = dir.path();
    ok(
        &["deploy", "ep", "blue", "--model", "mlp", "--version", "1"],
        r,
    );
    for args in [
        &["models", "delete", "mlp:1"][..],
        &["models", "delete", "mlp:1", "--force"],
    ] {
        let e = fails(args, r);
        assert!(
            e.contains("ep/blue") && e.contains("--force does not override"),
            "{e}"
        );
    }
    // A deployment tracking the newest version holds the newest.
    ok(&["deploy", "ep", "green", "--model", "mlp"], r);
    let e = fails(&["models", "delete", "mlp:2"], r);
    assert!(e.contains("ep/green"), "{e}");
    // Once nothing uses it, it goes.
    ok(&["undeploy", "ep", "green"], r);
    ok(
        &["deploy", "ep", "blue", "--model", "mlp", "--version", "2"],
        r,
    );
    ok(&["models", "delete", "mlp:1"], r);
    assert!(!r.join("mlp/1").exists());

    // Over HTTP too, with 409.
    let server = Server::start(r, &[]);
    let d = server.request("DELETE", "/v2/admin/models/mlp/versions/2", &[], b"");
    assert_eq!(d.status, 409, "{}", d.text());
    assert!(d.text().contains("ep/blue"), "{}", d.text());
}

#[test]
fn the_configuration_file_declares_endpoints_and_bad_ones_are_refused() {
    let dir = repo();
    let r = dir.path();
    let config = r.join("deploy.toml");
    std::fs::write(
        &config,
        r#"
[[endpoint]]
name = "scores"
mirror = { deployment = "shadow", percent = 50 }

[[endpoint.deployment]]
name = "blue"
model = "mlp"
version = 1
weight = 75
instances = 2

[[endpoint.deployment]]
name = "green"
model = "mlp"
version = 2
weight = 25

[[endpoint.deployment]]
name = "shadow"
model = "flaky"
weight = 0
"#,
    )
    .unwrap();
    let server = Server::start(r, &["--config", config.to_str().unwrap()]);
    let mut blue = 0;
    for _ in 0..100 {
        let (d, v) = who_answers(&server, "scores");
        match d.as_str() {
            "blue" => {
                blue += 1;
                assert_eq!(v, "1");
            }
            "green" => assert_eq!(v, "2"),
            other => panic!("the shadow answered a live request: {other}"),
        }
    }
    // Smooth weighted round-robin: exactly the weight over 100 requests.
    assert_eq!(blue, 75);
    let view = server
        .request("GET", "/v2/admin/endpoints/scores", &[], b"")
        .json();
    assert_eq!(
        view["mirror"],
        json!({"deployment": "shadow", "percent": 50})
    );
    let m = server.metrics();
    assert!(
        m.contains(r#"deployment="blue",endpoint="scores",model="mlp""#),
        "metrics lack the deployment labels"
    );
    drop(server);

    // Invalid files stop start-up with the reason.
    for (text, needle) in [
        (
            "[[endpoint]]\nname = \"e\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"mlp\"\nweight = 60\n",
            "sum to 100, got 60",
        ),
        (
            "[[endpoint]]\nname = \"e\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"mlp\"\nweights = 100\n",
            "unknown field `weights`",
        ),
        (
            "[[endpoint]]\nname = \"e\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"nope\"\n",
            "model \"nope\" has no registered version",
        ),
        (
            "[[endpoint]]\nname = \"e\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"mlp\"\nversion = 9\n",
            "has no registered version at version 9",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let (status, stderr) =
            support::start_failure_with_args(r, &["--config", config.to_str().unwrap()], &[]);
        assert!(!status.success(), "{text}");
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

#[test]
fn api_changes_are_validated_and_a_failed_deployment_changes_nothing() {
    let dir = repo();
    let server = Server::start(dir.path(), &[]);
    let put =
        |path: &str, body: Value| server.request("PUT", path, &[], body.to_string().as_bytes());
    let r = put(
        "/v2/admin/endpoints/ep/deployments/blue",
        json!({"model": "mlp", "version": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deployments"][0]["version"], 1);
    assert_eq!(who_answers(&server, "ep"), ("blue".into(), "1".into()));

    // Weights that do not sum to 100, an unknown deployment, a bad body.
    let r = put(
        "/v2/admin/endpoints/ep/traffic",
        json!({"weights": {"blue": 50}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("sum to 100, got 50"), "{}", r.text());
    let r = put(
        "/v2/admin/endpoints/ep/traffic",
        json!({"weights": {"red": 100}}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("red"), "{}", r.text());
    let r = put(
        "/v2/admin/endpoints/ep/deployments/green",
        json!({"model": "mlp", "version": 2, "alias": "x"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = put(
        "/v2/admin/endpoints/ep/deployments/Green",
        json!({"model": "mlp"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("[a-z0-9_-]+"), "{}", r.text());

    // A version that does not exist: 422, and the registry is as before.
    for _ in 0..2 {
        // Twice: a target that already failed is refused again, not
        // silently accepted.
        let r = put(
            "/v2/admin/endpoints/ep/deployments/blue",
            json!({"model": "mlp", "version": 7}),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(
            r.text().contains("nothing changed for clients"),
            "{}",
            r.text()
        );
    }
    let view = server
        .request("GET", "/v2/admin/endpoints/ep", &[], b"")
        .json();
    assert_eq!(
        view["desired"]["deployments"][0]["target"],
        json!({"version": 1})
    );
    assert_eq!(who_answers(&server, "ep"), ("blue".into(), "1".into()));

    // Pinning: by header and by version; an unknown pin names the choices.
    let r = put(
        "/v2/admin/endpoints/ep/deployments/green",
        json!({"model": "mlp", "version": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let pinned = server.request(
        "POST",
        "/v2/models/ep/infer",
        &[("x-ferroserve-deployment", "green".to_string())],
        &infer_body(),
    );
    assert_eq!(pinned.header("x-ferroserve-deployment"), Some("green"));
    assert_eq!(pinned.json()["model_version"], "2");
    let r = server.request("POST", "/v2/models/ep/versions/2/infer", &[], &infer_body());
    assert_eq!(r.header("x-ferroserve-deployment"), Some("green"));
    let r = server.request(
        "POST",
        "/v2/models/ep/infer",
        &[("x-ferroserve-deployment", "red".to_string())],
        &infer_body(),
    );
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("blue") && r.text().contains("green"),
        "{}",
        r.text()
    );

    // A deployment with traffic cannot be removed; one without can.
    let r = server.request(
        "DELETE",
        "/v2/admin/endpoints/ep/deployments/blue",
        &[],
        b"",
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = server.request(
        "DELETE",
        "/v2/admin/endpoints/ep/deployments/green",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.request("POST", "/v2/models/ep/versions/2/infer", &[], &infer_body());
    assert_eq!(r.status, 404, "{}", r.text());
}
