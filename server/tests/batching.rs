//! The dynamic batcher under concurrent load: every answer belongs to its own
//! request, rows of different inner shapes are never stacked together, and
//! batches of more than one request do form.

mod support;

use std::sync::Arc;

use support::{examples_repo, f32_bytes, Server};

fn metric_sum_count(metrics: &str, name: &str, model: &str) -> (f64, f64) {
    let find = |suffix: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}_{suffix}{{"))
                    && l.contains(&format!("model=\"{model}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    (find("sum"), find("count"))
}

/// `seq_sum` sums each row of a [-1, -1] input: rows of different lengths
/// cannot share a batch, and a mixed-up batch would give wrong sums.
#[test]
fn requests_with_different_inner_dims_are_never_mixed() {
    let server = Arc::new(Server::start(&examples_repo(), &[]));
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                for i in 0..30 {
                    let rows = 1 + (t + i) % 3;
                    let len = 1 + (t * 7 + i) % 5;
                    let values: Vec<f32> = (0..rows * len).map(|k| (t * 1000 + i * 10 + k) as f32).collect();
                    let header = format!(
                        r#"{{"inputs":[{{"name":"tokens","shape":[{rows},{len}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}]}}"#,
                        values.len() * 4
                    );
                    let mut body = header.clone().into_bytes();
                    body.extend_from_slice(&f32_bytes(&values));
                    let reply = server.request(
                        "POST",
                        "/v2/models/seq_sum/infer",
                        &[("Inference-Header-Content-Length", header.len().to_string())],
                        &body,
                    );
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    let out = reply.json();
                    let got: Vec<f64> = out["outputs"][0]["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect();
                    let want: Vec<f64> = values.chunks(len).map(|r| r.iter().map(|&x| x as f64).sum()).collect();
                    assert_eq!(got, want, "rows={rows} len={len}");
                    assert_eq!(out["outputs"][0]["shape"], serde_json::json!([rows, 1]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let metrics = server.request("GET", "/metrics", &[], b"").text();
    let (rows, batches) = metric_sum_count(&metrics, "ferroserve_batch_size", "seq_sum");
    let (_, requests) =
        metric_sum_count(&metrics, "ferroserve_request_duration_seconds", "seq_sum");
    assert_eq!(requests, 360.0);
    assert!(
        batches > 0.0 && batches < requests,
        "no batch held more than one request: {batches} batches"
    );
    assert!(rows >= requests, "{rows} rows over {requests} requests");
}
