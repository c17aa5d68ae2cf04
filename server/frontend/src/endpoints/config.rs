//! `ferroserve serve --config deploy.toml`: endpoints declared in a file.
//!
//! ```toml
//! [[endpoint]]
//! name = "mlp"
//! mirror = { deployment = "shadow", percent = 10 }   # optional
//!
//! [[endpoint.deployment]]
//! name = "blue"
//! model = "mlp"
//! version = 1            # or alias = "production"; neither: the newest
//! weight = 90
//! max_batch_size = 16    # optional settings over the bundle's manifest:
//! instances = 2          # max_queue_delay_us, max_queue_size, timeout_ms,
//!                        # intra_op_threads, device
//! capture = { sample_rate = 0.1 }          # keys of [capture] and [drift]
//! drift = { window_rows = 5000, thresholds = { psi = 0.3 } }
//! ```
//!
//! Each endpoint of the file replaces the registry's endpoint of that name
//! at start-up; the registry then holds the running state, so later
//! changes (API, CLI) survive a restart without the file.

use std::path::Path;

use serde::Deserialize;

use ferroserve_registry::deployments::{DeploymentSpec, EndpointSpec, Mirror, Settings, Target};
use ferroserve_runtime::manifest::{CaptureOverride, DriftOverride};

#[derive(Debug, thiserror::Error)]
#[error("deployment configuration {file}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    #[serde(default)]
    mirror: Option<Mirror>,
    #[serde(default)]
    deployment: Vec<RawDeployment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    model: String,
    version: Option<u64>,
    alias: Option<String>,
    weight: Option<u32>,
    max_batch_size: Option<usize>,
    max_queue_delay_us: Option<u64>,
    max_queue_size: Option<usize>,
    timeout_ms: Option<u64>,
    instances: Option<usize>,
    intra_op_threads: Option<usize>,
    device: Option<String>,
    capture: Option<CaptureOverride>,
    drift: Option<DriftOverride>,
}

/// Reads and validates the file.
pub fn load(path: &Path) -> Result<Vec<EndpointSpec>, ConfigError> {
    let err = |problem: String| ConfigError {
        file: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse(&text).map_err(err)
}

pub fn parse(text: &str) -> Result<Vec<EndpointSpec>, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
    let mut out: Vec<EndpointSpec> = Vec::new();
    for (i, e) in raw.endpoint.into_iter().enumerate() {
        if out.iter().any(|x| x.name == e.name) {
            return Err(format!("endpoint[{i}]: {:?} is declared twice", e.name));
        }
        let single = e.deployment.len() == 1;
        let mut deployments = Vec::new();
        for (j, d) in e.deployment.into_iter().enumerate() {
            let target = match (d.version, d.alias) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "endpoint[{i}].deployment[{j}] ({:?}): give version or alias, not both",
                        d.name
                    ))
                }
                (Some(0), None) => {
                    return Err(format!(
                        "endpoint[{i}].deployment[{j}].version: versions start at 1, got 0"
                    ))
                }
                (Some(v), None) => Target::Version(v),
                (None, Some(a)) => Target::Alias(a),
                (None, None) => Target::Latest,
            };
            let weight = match (d.weight, single) {
                (Some(w), _) => w,
                (None, true) => 100,
                (None, false) => {
                    return Err(format!(
                        "endpoint[{i}].deployment[{j}].weight: required when an endpoint has several deployments"
                    ))
                }
            };
            deployments.push(DeploymentSpec {
                name: d.name,
                model: d.model,
                target,
                weight,
                settings: Settings {
                    max_batch_size: d.max_batch_size,
                    max_queue_delay_us: d.max_queue_delay_us,
                    max_queue_size: d.max_queue_size,
                    timeout_ms: d.timeout_ms,
                    instances: d.instances,
                    intra_op_threads: d.intra_op_threads,
                    device: d.device,
                    capture: d.capture,
                    drift: d.drift,
                },
            });
        }
        let spec = EndpointSpec {
            name: e.name,
            deployments,
            mirror: e.mirror,
        };
        spec.validate()
            .map_err(|err| format!("endpoint[{i}]: {err}"))?;
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_deployments_settings_and_mirror() {
        let specs = parse(
            r#"
            [[endpoint]]
            name = "mlp"
            mirror = { deployment = "shadow", percent = 10 }
            [[endpoint.deployment]]
            name = "blue"
            model = "mlp"
            version = 1
            weight = 90
            max_batch_size = 16
            instances = 2
            [[endpoint.deployment]]
            name = "green"
            model = "mlp"
            alias = "candidate"
            weight = 10
            [[endpoint.deployment]]
            name = "shadow"
            model = "flaky"
            weight = 0
            "#,
        )
        .unwrap();
        let e = &specs[0];
        assert_eq!(e.deployments[0].target, Target::Version(1));
        assert_eq!(e.deployments[0].settings.instances, Some(2));
        assert_eq!(e.deployments[1].target, Target::Alias("candidate".into()));
        assert_eq!(e.deployments[2].target, Target::Latest);
        assert_eq!(e.mirror.as_ref().unwrap().percent, 10);
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("[[endpoint]]\nname = \"m\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"m\"\nweight = 50\n").unwrap_err();
        assert!(e.contains("sum to 100, got 50"), "{e}");
        let e = parse("[[endpoint]]\nname = \"m\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"m\"\nbatch = 3\n").unwrap_err();
        assert!(e.contains("unknown field `batch`"), "{e}");
        let e = parse("[[endpoint]]\nname = \"m\"\n[[endpoint.deployment]]\nname = \"a\"\nmodel = \"m\"\nversion = 1\nalias = \"x\"\n").unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }
}
