//! Triton's statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats`
//! and gRPC `ModelStatistics`, one entry per model version served.
//!
//! A model here is what clients name in their requests: an endpoint. The
//! deployments of one endpoint that serve the same version (the same
//! version with other settings, a mirror) are summed into that version's
//! entry; another endpoint serving the same model version has its own
//! entries under its own name. A loaded version's statistics start at zero
//! when it loads (a hot swap, new settings), as Triton's do on reload.

use serde_json::{json, Value};

use crate::endpoints::routing::Endpoint;
use crate::endpoints::RoutingTable;
use ferroserve_protocol::grpc::proto::{
    InferBatchStatistics, InferStatistics, ModelStatistics, ModelStatisticsResponse,
    StatisticDuration,
};
use ferroserve_runtime::infer::InferError;
use ferroserve_runtime::infer_stats::{DurationTotal, StatsSnapshot};

fn duration(t: DurationTotal) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: t.count,
        ns: t.ns,
    })
}

fn message(name: &str, version: u64, s: &StatsSnapshot) -> ModelStatistics {
    ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(s.compute_input),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(s.compute_output),
            // ferroserve has no response cache.
            cache_hit: duration(DurationTotal::default()),
            cache_miss: duration(DurationTotal::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(size, [input, infer, output])| InferBatchStatistics {
                batch_size: *size,
                compute_input: duration(*input),
                compute_infer: duration(*infer),
                compute_output: duration(*output),
            })
            .collect(),
    }
}

/// The entries of one endpoint: each version it serves (or only
/// `version`), ascending.
fn endpoint_stats(e: &Endpoint, version: Option<&str>) -> Vec<ModelStatistics> {
    let mut by_version: std::collections::BTreeMap<u64, StatsSnapshot> = Default::default();
    for d in &e.deployments {
        if version.is_some_and(|v| !d.model.has_version(v)) {
            continue;
        }
        by_version
            .entry(d.model.version)
            .or_default()
            .merge(&d.model.stats.snapshot());
    }
    by_version
        .iter()
        .map(|(v, s)| message(&e.name, *v, s))
        .collect()
}

/// The statistics asked for: every model (`name` `None`), one model's
/// versions, or one version. An unknown model or version is `NotFound`.
pub fn collect(
    routes: &RoutingTable,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<ModelStatisticsResponse, InferError> {
    let model_stats = match name {
        None => routes
            .all()
            .iter()
            .flat_map(|e| endpoint_stats(e, None))
            .collect(),
        Some(name) => {
            let e = routes.endpoint(name)?;
            let found = endpoint_stats(&e, version);
            if let (Some(v), true) = (version, found.is_empty()) {
                return Err(InferError::NotFound(format!(
                    "model {name:?} has no version {v:?} loaded; the served versions are {:?}",
                    e.versions()
                )));
            }
            found
        }
    };
    Ok(ModelStatisticsResponse { model_stats })
}

fn duration_json(d: &Option<StatisticDuration>) -> Value {
    let d = d.unwrap_or_default();
    json!({"count": d.count, "ns": d.ns})
}

/// `r` as Triton's HTTP statistics JSON: the message's fields under their
/// proto names, 64-bit counts as JSON numbers.
pub fn to_json(r: &ModelStatisticsResponse) -> Value {
    let stats: Vec<Value> = r
        .model_stats
        .iter()
        .map(|m| {
            let i = m.inference_stats.unwrap_or_default();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": duration_json(&i.success),
                    "fail": duration_json(&i.fail),
                    "queue": duration_json(&i.queue),
                    "compute_input": duration_json(&i.compute_input),
                    "compute_infer": duration_json(&i.compute_infer),
                    "compute_output": duration_json(&i.compute_output),
                    "cache_hit": duration_json(&i.cache_hit),
                    "cache_miss": duration_json(&i.cache_miss),
                },
                "batch_stats": m.batch_stats.iter().map(|b| json!({
                    "batch_size": b.batch_size,
                    "compute_input": duration_json(&b.compute_input),
                    "compute_infer": duration_json(&b.compute_infer),
                    "compute_output": duration_json(&b.compute_output),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "model_stats": stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroserve_runtime::infer_stats::{BatchTimes, InferStats};
    use std::time::Duration;

    #[test]
    fn json_has_triton_names_and_numbers() {
        let s = InferStats::new(4);
        let t = BatchTimes {
            input: Duration::from_nanos(10),
            infer: Duration::from_nanos(20),
            output: Duration::from_nanos(30),
        };
        s.batch(2, &t);
        s.success(Duration::from_nanos(100), Duration::from_nanos(5), &t);
        s.success(Duration::from_nanos(100), Duration::from_nanos(5), &t);
        let r = ModelStatisticsResponse {
            model_stats: vec![message("m", 3, &s.snapshot())],
        };
        let j = to_json(&r);
        let m = &j["model_stats"][0];
        assert_eq!(
            (m["name"].as_str(), m["version"].as_str()),
            (Some("m"), Some("3"))
        );
        assert_eq!(m["inference_count"], 2);
        assert_eq!(m["execution_count"], 1);
        assert_eq!(
            m["inference_stats"]["success"],
            json!({"count": 2, "ns": 200})
        );
        assert_eq!(
            m["inference_stats"]["compute_output"],
            json!({"count": 2, "ns": 60})
        );
        assert_eq!(
            m["inference_stats"]["cache_hit"],
            json!({"count": 0, "ns": 0})
        );
        assert_eq!(
            m["batch_stats"],
            json!([{"batch_size": 2, "compute_input": {"count": 1, "ns": 10},
                    "compute_infer": {"count": 1, "ns": 20}, "compute_output": {"count": 1, "ns": 30}}])
        );
        assert!(m["last_inference"].as_u64().unwrap() > 0);
    }
}
