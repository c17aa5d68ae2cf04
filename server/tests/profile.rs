//! `ferroserve profile` on a small example with a short budget: the report
//! validates against `profiles/report.schema.json`, the recommended memory
//! is at least the measured peak, the recommended settings met the SLO in
//! the profile's own measurements, and the HTML holds its charts.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{copy_example, workspace_root};

/// A small validator for the subset of JSON Schema the report's schema
/// uses: type (one or a list), required, properties, items, $ref to $defs,
/// minimum and const.
fn validate(schema: &Value, root: &Value, v: &Value, at: &str) -> Vec<String> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("local refs only");
            &root["$defs"][name]
        }
        None => schema,
    };
    let mut errors = Vec::new();
    let type_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    };
    match &schema["type"] {
        Value::String(t) if !type_ok(t) => errors.push(format!("{at}: expected {t}, got {v}")),
        Value::Array(ts) if !ts.iter().any(|t| type_ok(t.as_str().unwrap())) => {
            errors.push(format!("{at}: expected one of {ts:?}, got {v}"))
        }
        _ => {}
    }
    if v.is_null() {
        return errors;
    }
    if let (Some(min), Some(x)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if x < min {
            errors.push(format!("{at}: {x} is below the minimum {min}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{at}: expected {c}, got {v}"));
        }
    }
    if let Some(req) = schema["required"].as_array() {
        for k in req {
            if v.get(k.as_str().unwrap()).is_none() {
                errors.push(format!("{at}: missing {k}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, s) in props {
            if let Some(x) = obj.get(k) {
                errors.extend(validate(s, root, x, &format!("{at}.{k}")));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, x) in list.iter().enumerate() {
            errors.extend(validate(items, root, x, &format!("{at}[{i}]")));
        }
    }
    errors
}

#[test]
fn a_short_profile_reports_what_it_measured_and_recommends_within_it() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "profile",
            "--model",
            "mlp",
            "--budget",
            "8s",
            "--slo-p99",
            "200ms",
            "--emit",
            "k8s",
            "--repo",
        ])
        .arg(repo.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("[batching]") && stdout.contains("resources:"),
        "{stdout}"
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("profiles/report.schema.json")).unwrap(),
    )
    .unwrap();
    let errors = validate(&schema, &schema, &report, "$");
    assert!(errors.is_empty(), "{errors:#?}");

    let runs = report["runs"].as_array().unwrap();
    assert!(runs.len() >= 6, "{}", runs.len());
    let rec = &report["recommendation"];
    // The recommended settings are a measured run that met the SLO.
    let chosen = runs
        .iter()
        .find(|r| r["config"] == rec["config"] && r["concurrency"] == rec["concurrency"])
        .expect("the recommendation is one of the runs");
    assert_eq!(rec["slo_met"], true);
    assert!(chosen["p99_ms"].as_f64().unwrap() <= 200.0);
    assert_eq!(chosen["errors"], 0);
    // Nothing that met the SLO had more throughput.
    let best = runs
        .iter()
        .filter(|r| r["errors"] == 0 && r["p99_ms"].as_f64().unwrap() <= 200.0)
        .map(|r| r["throughput"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(rec["expected_throughput"].as_f64().unwrap(), best);
    // Memory: at least the peak measured over the whole profile.
    let peak = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rss_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(peak > 0);
    assert!(rec["memory_bytes"].as_u64().unwrap() >= peak, "{rec}");
    assert!(
        rec["cpu_millicores"].as_u64().unwrap() as f64
            >= chosen["cpu_cores_peak"].as_f64().unwrap() * 1000.0
    );

    // --emit k8s: the Deployment beside the report, sized as recommended
    // (tests/python/test_manifests.py validates such a file against the
    // Kubernetes schema).
    let manifest = out.path().join("k8s-deployment.yaml");
    assert!(
        stdout.contains(&format!("wrote {}", manifest.display())),
        "{stdout}"
    );
    let manifest = std::fs::read_to_string(&manifest).unwrap();
    assert!(manifest.contains("kind: Deployment"), "{manifest}");
    for key in ["cpu", "memory"] {
        // requests and limits of the server container (a whole number of
        // cores is a quoted string: '2').
        let want = format!("{key}: {}", rec[key].as_str().unwrap());
        let found = manifest
            .lines()
            .filter(|l| l.trim().replace(['\'', '"'], "") == want)
            .count();
        assert!(found >= 2, "{want} in\n{manifest}");
    }

    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    assert!(html.contains("Throughput against concurrency") && html.contains("Resident memory"));
    assert!(html.contains("<polyline"));
}

#[test]
fn a_running_server_is_profiled_as_it_is() {
    let repo = tempfile::tempdir().unwrap();
    copy_example("mlp", repo.path());
    let server = support::Server::start(repo.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["profile", "--model", "mlp", "--budget", "4s", "--url"])
        .arg(format!("http://{}", server.addr))
        .arg("--pid")
        .arg(server.child.id().to_string())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    // The server's own settings (mlp's manifest), never changed.
    let served = serde_json::json!({"instances": 1, "max_batch_size": 32, "max_queue_delay_us": 0});
    assert!(runs.iter().all(|r| r["config"] == served), "{runs:#?}");
    let concurrencies: std::collections::BTreeSet<u64> = runs
        .iter()
        .map(|r| r["concurrency"].as_u64().unwrap())
        .collect();
    assert!(concurrencies.len() >= 3, "{concurrencies:?}");
    assert!(report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["rss_bytes"].as_u64().unwrap() > 0));
    // Still served as before: nothing was deployed on it.
    let r = server.request("GET", "/v2/admin/endpoints/mlp", &[], b"");
    assert_eq!(r.json()["implicit"], true, "{}", r.text());
}
