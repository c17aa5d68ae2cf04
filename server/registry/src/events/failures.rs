//! The last failure of each deployment, kept from the lifecycle events as
//! the bus emits them, for the repository index (`POST /v2/repository/index`
//! and gRPC `RepositoryIndex`) to say why a model version is unavailable.
//!
//! A `deployment.failed` event records its deployment's failure; a later
//! `deployment.created`, `.updated` or `.deleted` of the same deployment
//! (it loaded, or it is gone) clears it. This mirrors the deployer's own
//! cache of failed targets, which it reports once each, by event.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{types, CloudEvent};

/// Why one deployment (`endpoint/deployment`) last failed to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFailure {
    pub endpoint: String,
    pub deployment: String,
    pub model: String,
    /// `None`: no registered version matched its target.
    pub version: Option<u64>,
    pub error: String,
}

/// Keyed by the events' subject, `endpoint/deployment`. Written only when
/// a deployment event is emitted, never on the request path.
#[derive(Default)]
pub(super) struct Failures(Mutex<BTreeMap<String, DeploymentFailure>>);

impl Failures {
    pub(super) fn observe(&self, e: &CloudEvent) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match e.ty.as_str() {
            types::DEPLOYMENT_FAILED => {
                let text = |k: &str| e.data[k].as_str().unwrap_or_default().to_string();
                map.insert(
                    e.subject.clone(),
                    DeploymentFailure {
                        endpoint: text("endpoint"),
                        deployment: text("deployment"),
                        model: text("model"),
                        version: e.data["version"].as_u64(),
                        error: text("error"),
                    },
                );
            }
            types::DEPLOYMENT_CREATED | types::DEPLOYMENT_UPDATED | types::DEPLOYMENT_DELETED => {
                map.remove(&e.subject);
            }
            _ => {}
        }
    }

    pub(super) fn list(&self) -> Vec<DeploymentFailure> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, subject: &str, data: serde_json::Value) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: "1".into(),
            source: "/t".into(),
            ty: ty.into(),
            subject: subject.into(),
            time: String::new(),
            datacontenttype: "application/json".into(),
            data,
        }
    }

    #[test]
    fn a_failure_stays_until_its_deployment_loads_or_goes() {
        let f = Failures::default();
        let failed =
            json!({"endpoint": "e", "deployment": "d", "model": "m", "version": 2, "error": "bad"});
        f.observe(&event(types::DEPLOYMENT_FAILED, "e/d", failed));
        f.observe(&event(types::MODEL_REGISTERED, "m", json!({})));
        f.observe(&event(types::DEPLOYMENT_CREATED, "e/other", json!({})));
        assert_eq!(
            f.list(),
            [DeploymentFailure {
                endpoint: "e".into(),
                deployment: "d".into(),
                model: "m".into(),
                version: Some(2),
                error: "bad".into()
            }]
        );
        f.observe(&event(types::DEPLOYMENT_UPDATED, "e/d", json!({})));
        assert!(f.list().is_empty());
        let no_version = json!({"endpoint": "e", "deployment": "d", "model": "m", "version": null, "error": "none"});
        f.observe(&event(types::DEPLOYMENT_FAILED, "e/d", no_version));
        assert_eq!(f.list()[0].version, None);
        f.observe(&event(types::DEPLOYMENT_DELETED, "e/d", json!({})));
        assert!(f.list().is_empty());
    }
}
