//! The model repository extension's index: `POST /v2/repository/index`
//! and gRPC `RepositoryIndex` (management calls), every model version of
//! the repository with its state, as Triton lists them.
//!
//! Names are what clients call: a version served by an endpoint is READY
//! under the endpoint's name (UNAVAILABLE, with the reason, if it is loaded
//! but cannot answer, like a Python script whose `init()` failed). A
//! registered version that is not served under its own model name is
//! UNAVAILABLE, and the reason says why: the error of the deployment that
//! failed to load it, where it serves instead, or which version is served.
//! A deployment that failed without any registered version to name (a
//! missing alias, say) is listed under its endpoint, without a version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use crate::endpoints::RoutingTable;
use crate::state::AppState;
use ferroserve_protocol::grpc::proto::repository_index_response::ModelIndex;
use ferroserve_protocol::grpc::proto::RepositoryIndexResponse;
use ferroserve_registry::events::DeploymentFailure;
use ferroserve_runtime::infer::InferError;

pub const READY: &str = "READY";
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// One deployment as the index sees it.
#[derive(Debug, Clone)]
pub struct ServedVersion {
    pub endpoint: String,
    pub model: String,
    pub version: u64,
    /// Why it cannot answer; `None` when it can.
    pub not_ready: Option<String>,
}

/// Every deployment in the routing table.
pub fn served(routes: &RoutingTable) -> Vec<ServedVersion> {
    routes
        .all()
        .iter()
        .flat_map(|e| e.deployments.iter())
        .map(|d| ServedVersion {
            endpoint: d.endpoint.clone(),
            model: d.model.name.clone(),
            version: d.model.version,
            not_ready: d.model.not_ready(),
        })
        .collect()
}

/// Every `(model, version)` of the repository: its registry's rows, or
/// without a registry its `NAME/VERSION` folders. Blocking.
pub fn registered(repo: &Path) -> Result<BTreeSet<(String, u64)>, String> {
    if ferroserve_registry::Store::exists(repo) {
        return ferroserve_registry::deployments::snapshot(repo)
            .map(|s| s.versions)
            .map_err(|e| e.to_string());
    }
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))
    };
    let mut out = BTreeSet::new();
    for model in read(repo)?.flatten() {
        let name = model.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !model.path().is_dir() {
            continue;
        }
        for v in read(&model.path())?.flatten() {
            if let Some(v) = v
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0 && v.path().is_dir())
            {
                out.insert((name.clone(), v));
            }
        }
    }
    Ok(out)
}

fn list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The index, sorted by name then version; `ready`: only READY entries.
pub fn entries(
    served: &[ServedVersion],
    registered: &BTreeSet<(String, u64)>,
    failures: &[DeploymentFailure],
    ready: bool,
) -> Vec<ModelIndex> {
    // (name, version) -> (state, reason)
    let mut index: BTreeMap<(String, Option<u64>), (&str, String)> = BTreeMap::new();
    for s in served {
        let key = (s.endpoint.clone(), Some(s.version));
        let entry = match &s.not_ready {
            None => (READY, String::new()),
            Some(why) => (UNAVAILABLE, format!("loaded but not ready: {why}")),
        };
        match index.get(&key) {
            Some((READY, _)) => {}
            _ => {
                index.insert(key, entry);
            }
        }
    }
    for (model, version) in registered {
        let key = (model.clone(), Some(*version));
        if index.contains_key(&key) {
            continue;
        }
        let failed = failures
            .iter()
            .find(|f| &f.model == model && f.version == Some(*version));
        let elsewhere: Vec<String> = served
            .iter()
            .filter(|s| &s.model == model && s.version == *version)
            .map(|s| s.endpoint.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let own: Vec<String> = served
            .iter()
            .filter(|s| &s.endpoint == model)
            .map(|s| s.version)
            .collect::<BTreeSet<_>>()
            .iter()
            .map(u64::to_string)
            .collect();
        let reason = if let Some(f) = failed {
            format!(
                "deployment {}/{} failed to load it: {}",
                f.endpoint, f.deployment, f.error
            )
        } else if !elsewhere.is_empty() {
            format!(
                "not served as {model:?}; served by endpoint {}",
                list(&elsewhere)
            )
        } else if !own.is_empty() {
            format!("not served: {model:?} serves version {}", own.join(", "))
        } else {
            "not deployed".to_string()
        };
        index.insert(key, (UNAVAILABLE, reason));
    }
    for f in failures {
        let key = (f.endpoint.clone(), f.version);
        index.entry(key).or_insert_with(|| {
            (
                UNAVAILABLE,
                format!(
                    "deployment {}/{} failed: {}",
                    f.endpoint, f.deployment, f.error
                ),
            )
        });
    }
    index
        .into_iter()
        .filter(|(_, (state, _))| !ready || *state == READY)
        .map(|((name, version), (state, reason))| ModelIndex {
            name,
            version: version.map(|v| v.to_string()).unwrap_or_default(),
            state: state.to_string(),
            reason,
        })
        .collect()
}

/// The index of the repository `state` serves (`ready`: only READY).
pub async fn collect(state: &AppState, ready: bool) -> Result<RepositoryIndexResponse, InferError> {
    let registered = match &state.repo {
        Some(repo) => {
            let repo = repo.clone();
            tokio::task::spawn_blocking(move || registered(&repo))
                .await
                .map_err(|e| InferError::Backend(format!("repository reader panicked: {e}")))?
                .map_err(|e| {
                    InferError::Unavailable(format!("cannot read the model repository: {e}"))
                })?
        }
        None => BTreeSet::new(),
    };
    let failures = state.events.deployment_failures();
    Ok(RepositoryIndexResponse {
        models: entries(&served(&state.routes), &registered, &failures, ready),
    })
}

/// `r` as Triton's HTTP JSON: an array of `{"name", "version", "state",
/// "reason"}`, leaving out an empty version or reason, as Triton does.
pub fn to_json(r: &RepositoryIndexResponse) -> Value {
    Value::Array(
        r.models
            .iter()
            .map(|m| {
                let mut o = json!({"name": m.name, "state": m.state});
                if !m.version.is_empty() {
                    o["version"] = json!(m.version);
                }
                if !m.reason.is_empty() {
                    o["reason"] = json!(m.reason);
                }
                o
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(endpoint: &str, model: &str, version: u64) -> ServedVersion {
        ServedVersion {
            endpoint: endpoint.into(),
            model: model.into(),
            version,
            not_ready: None,
        }
    }

    fn row(m: &ModelIndex) -> (&str, &str, &str) {
        (&m.name, &m.version, &m.state)
    }

    #[test]
    fn every_version_with_its_state_and_reason() {
        let live = vec![
            served("mlp", "mlp", 2),
            served("prod", "conv", 1),
            served("prod", "conv", 3),
            ServedVersion {
                not_ready: Some("init() raised".into()),
                ..served("iris", "iris", 1)
            },
        ];
        let registered: BTreeSet<(String, u64)> = [
            ("mlp", 1),
            ("mlp", 2),
            ("mlp", 3),
            ("conv", 1),
            ("conv", 3),
            ("iris", 1),
            ("seq", 1),
        ]
        .iter()
        .map(|(m, v)| (m.to_string(), *v))
        .collect();
        let failures = vec![
            DeploymentFailure {
                endpoint: "mlp".into(),
                deployment: "default".into(),
                model: "mlp".into(),
                version: Some(3),
                error: "model \"mlp\" version 3 does not load: boom".into(),
            },
            DeploymentFailure {
                endpoint: "canary".into(),
                deployment: "a".into(),
                model: "mlp".into(),
                version: None,
                error: "no version at alias x".into(),
            },
        ];
        let all = entries(&live, &registered, &failures, false);
        let rows: Vec<_> = all.iter().map(row).collect();
        assert_eq!(
            rows,
            [
                ("canary", "", UNAVAILABLE),
                ("conv", "1", UNAVAILABLE),
                ("conv", "3", UNAVAILABLE),
                ("iris", "1", UNAVAILABLE),
                ("mlp", "1", UNAVAILABLE),
                ("mlp", "2", READY),
                ("mlp", "3", UNAVAILABLE),
                ("prod", "1", READY),
                ("prod", "3", READY),
                ("seq", "1", UNAVAILABLE),
            ]
        );
        let reason = |name: &str, v: &str| {
            all.iter()
                .find(|m| m.name == name && m.version == v)
                .unwrap()
                .reason
                .clone()
        };
        assert!(reason("canary", "").contains("no version at alias x"));
        assert_eq!(
            reason("conv", "1"),
            "not served as \"conv\"; served by endpoint \"prod\""
        );
        assert!(reason("iris", "1").contains("init() raised"));
        assert_eq!(reason("mlp", "1"), "not served: \"mlp\" serves version 2");
        assert!(
            reason("mlp", "3").contains("mlp/default failed to load it")
                && reason("mlp", "3").contains("boom")
        );
        assert_eq!(reason("seq", "1"), "not deployed");
        assert_eq!(reason("mlp", "2"), "");
        let ready: Vec<_> = entries(&live, &registered, &failures, true)
            .iter()
            .map(|m| (m.name.clone(), m.version.clone()))
            .collect();
        assert_eq!(
            ready,
            [
                ("mlp".to_string(), "2".to_string()),
                ("prod".into(), "1".into()),
                ("prod".into(), "3".into())
            ]
        );
        let canary = reason("canary", "");
        let j = to_json(&RepositoryIndexResponse { models: all });
        assert_eq!(
            j[0],
            json!({"name": "canary", "state": "UNAVAILABLE", "reason": canary})
        );
        assert_eq!(
            j[5],
            json!({"name": "mlp", "version": "2", "state": "READY"})
        );
    }
}
