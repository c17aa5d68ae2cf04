//! Endpoints and their deployments as kept in `registry.db`: the desired
//! state that `serve` reconciles its routing table with, so that it
//! survives a restart and can be changed by the CLI while a server runs.
//!
//! An endpoint is the name clients call. Each deployment serves one model
//! at a pinned version, at the version an alias points to, or at the
//! newest registered version, with its own batching and instance settings,
//! and a traffic weight; an endpoint's weights sum to 100. One deployment
//! may also receive a copy (mirror) of a percentage of the live traffic.

pub mod version_policy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::{check_model_name, RegistryError};
use crate::names::check_alias_name;
use crate::open_existing;
use crate::store::{self, db_err};
use ferroserve_runtime::manifest::{CaptureConfig, CaptureOverride, DriftConfig, DriftOverride};

/// Which version of its model a deployment serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Exactly this version.
    Version(u64),
    /// Whatever version the alias points to; follows it when it moves.
    Alias(String),
    /// The newest registered version; follows new registrations.
    Latest,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Version(v) => write!(f, "version {v}"),
            Target::Alias(a) => write!(f, "alias {a:?}"),
            Target::Latest => f.write_str("latest"),
        }
    }
}

/// A deployment's own backend settings, over its bundle's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Instance (session) count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// `cpu` (the only device of the ONNX Runtime backend in this build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Changes to the bundle's `[capture]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureOverride>,
    /// Changes to the bundle's `[drift]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftOverride>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        self == &Settings::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub name: String,
    pub model: String,
    pub target: Target,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub deployment: String,
    /// Share of live requests copied, 1..=100.
    pub percent: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    pub deployments: Vec<DeploymentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// Deployment and alias names: `[a-z0-9_-]+`, as they appear in URLs,
/// headers and metrics labels.
pub fn check_deployment_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(RegistryError::Invalid {
            what: format!("deployment name {name:?}"),
            problem: "expected [a-z0-9_-]+".into(),
        });
    }
    Ok(())
}

impl EndpointSpec {
    /// Names, weights (summing to 100), the mirror, and each deployment's
    /// settings.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let invalid = |problem: String| RegistryError::Invalid {
            what: format!("endpoint {:?}", self.name),
            problem,
        };
        check_model_name(&self.name)?;
        if self.deployments.is_empty() {
            return Err(invalid("has no deployments".into()));
        }
        let mut seen = BTreeSet::new();
        for d in &self.deployments {
            check_deployment_name(&d.name)?;
            check_model_name(&d.model)?;
            if let Target::Alias(a) = &d.target {
                check_alias_name(a)?;
            }
            if !seen.insert(d.name.as_str()) {
                return Err(invalid(format!("deployment {:?} appears twice", d.name)));
            }
            if d.weight > 100 {
                return Err(invalid(format!(
                    "deployment {:?} has weight {}; expected 0 to 100",
                    d.name, d.weight
                )));
            }
            d.settings.validate(&d.name)?;
        }
        let sum: u32 = self.deployments.iter().map(|d| d.weight).sum();
        if sum != 100 {
            let weights: Vec<String> = self
                .deployments
                .iter()
                .map(|d| format!("{}={}", d.name, d.weight))
                .collect();
            return Err(invalid(format!(
                "traffic weights must sum to 100, got {sum} ({})",
                weights.join(" ")
            )));
        }
        if let Some(m) = &self.mirror {
            if !seen.contains(m.deployment.as_str()) {
                return Err(invalid(format!(
                    "mirror deployment {:?} is not one of its deployments {:?}",
                    m.deployment, seen
                )));
            }
            if !(1..=100).contains(&m.percent) {
                return Err(invalid(format!(
                    "mirror percent must be 1 to 100, got {}",
                    m.percent
                )));
            }
        }
        Ok(())
    }

    pub fn deployment(&self, name: &str) -> Option<&DeploymentSpec> {
        self.deployments.iter().find(|d| d.name == name)
    }
}

impl Settings {
    fn validate(&self, deployment: &str) -> Result<(), RegistryError> {
        let invalid = |key: &str, problem: String| RegistryError::Invalid {
            what: format!("deployment {deployment:?} setting {key}"),
            problem,
        };
        for (key, v) in [
            ("instances", self.instances),
            ("max_queue_size", self.max_queue_size),
        ] {
            if v == Some(0) {
                return Err(invalid(key, "expected at least 1, got 0".into()));
            }
        }
        if self.timeout_ms == Some(0) {
            return Err(invalid("timeout_ms", "expected at least 1, got 0".into()));
        }
        // The values on their own (a fraction, a known method); whether the
        // bundle's sections make the result whole (a sink, a capture for
        // `observe = "captured"`) is checked when the deployment loads.
        if let Some(c) = &self.capture {
            let stand_in = CaptureConfig {
                sample_rate: 1.0,
                always_errors: true,
                keep: Vec::new(),
                sink: "capture".into(),
                max_file_bytes: 1 << 20,
                max_file_age: std::time::Duration::from_secs(1),
                queue: 1,
            };
            if let Err((key, problem)) = c.apply(Some(&stand_in)) {
                return Err(invalid(&key, problem));
            }
        }
        if let Some(d) = &self.drift {
            if let Err((key, problem)) = d.apply(&DriftConfig::default()) {
                return Err(invalid(&key, problem));
            }
        }
        if let Some(d) = self.device.as_deref().filter(|d| *d != "cpu") {
            return Err(invalid(
                "device",
                format!("expected \"cpu\" for the ONNX Runtime backend in this build, got {d:?}"),
            ));
        }
        Ok(())
    }
}

/// The audit action (and event type) of every change of an endpoint's
/// desired state. The server's own events (`deployment.created`,
/// `traffic.changed`, ...) say what it then did.
pub const ENDPOINT_CHANGED: &str = crate::lifecycle::ENDPOINT_CHANGED;

/// Every endpoint in the registry, by name.
pub fn list(repo: &Path) -> Result<Vec<EndpointSpec>, RegistryError> {
    let store = open_existing(repo)?;
    read_all(store.conn(), store.path())
}

/// One endpoint.
pub fn get(repo: &Path, endpoint: &str) -> Result<EndpointSpec, RegistryError> {
    let store = open_existing(repo)?;
    read_one(store.conn(), store.path(), endpoint)?.ok_or_else(|| RegistryError::NotFound {
        what: format!("endpoint {endpoint:?}"),
        problem: "no such endpoint in the registry".into(),
    })
}

fn read_all(conn: &Connection, db: &Path) -> Result<Vec<EndpointSpec>, RegistryError> {
    let names: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM endpoints ORDER BY name")
            .map_err(db_err(db, "cannot read endpoints"))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(db_err(db, "cannot read endpoints"))?;
        rows
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(e) = read_one(conn, db, &n)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn read_one(
    conn: &Connection,
    db: &Path,
    endpoint: &str,
) -> Result<Option<EndpointSpec>, RegistryError> {
    let row: Option<(Option<String>, i64)> = conn
        .query_row(
            "SELECT mirror_deployment, mirror_percent FROM endpoints WHERE name = ?1",
            [endpoint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err(db, format!("cannot read endpoint {endpoint:?}")))?;
    let Some((mirror_deployment, mirror_percent)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, model, version, alias, weight, settings FROM deployments
             WHERE endpoint = ?1 ORDER BY name",
        )
        .map_err(db_err(db, "cannot read deployments"))?;
    type Row = (String, String, Option<i64>, Option<String>, i64, String);
    let rows: Vec<Row> = stmt
        .query_map([endpoint], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(db_err(db, "cannot read deployments"))?;
    let mut deployments = Vec::new();
    for (name, model, version, alias, weight, settings) in rows {
        let target = match (version, alias) {
            (Some(v), _) => Target::Version(v as u64),
            (None, Some(a)) => Target::Alias(a),
            (None, None) => Target::Latest,
        };
        let settings: Settings =
            serde_json::from_str(&settings).map_err(|e| RegistryError::Invalid {
                what: format!(
                    "settings of deployment {endpoint}/{name} in {}",
                    db.display()
                ),
                problem: e.to_string(),
            })?;
        deployments.push(DeploymentSpec {
            name,
            model,
            target,
            weight: weight as u32,
            settings,
        });
    }
    Ok(Some(EndpointSpec {
        name: endpoint.to_string(),
        deployments,
        mirror: mirror_deployment.map(|deployment| Mirror {
            deployment,
            percent: mirror_percent as u32,
        }),
    }))
}

/// Replaces an endpoint's whole desired state (or deletes it, when
/// `spec` is `None`) in `tx`, after validating it.
fn write_endpoint(
    tx: &Transaction<'_>,
    db: &Path,
    name: &str,
    spec: Option<&EndpointSpec>,
    at: &str,
) -> Result<(), RegistryError> {
    tx.execute("DELETE FROM deployments WHERE endpoint = ?1", [name])
        .map_err(db_err(db, format!("cannot update endpoint {name:?}")))?;
    let Some(spec) = spec else {
        tx.execute("DELETE FROM endpoints WHERE name = ?1", [name])
            .map_err(db_err(db, format!("cannot delete endpoint {name:?}")))?;
        return Ok(());
    };
    spec.validate()?;
    tx.execute(
        "INSERT INTO endpoints (name, mirror_deployment, mirror_percent, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (name) DO UPDATE SET mirror_deployment = excluded.mirror_deployment,
             mirror_percent = excluded.mirror_percent, updated_at = excluded.updated_at",
        params![
            name,
            spec.mirror.as_ref().map(|m| m.deployment.as_str()),
            spec.mirror.as_ref().map_or(0, |m| m.percent as i64),
            at
        ],
    )
    .map_err(db_err(db, format!("cannot write endpoint {name:?}")))?;
    for d in &spec.deployments {
        let (version, alias) = match &d.target {
            Target::Version(v) => (Some(*v as i64), None),
            Target::Alias(a) => (None, Some(a.as_str())),
            Target::Latest => (None, None),
        };
        tx.execute(
            "INSERT INTO deployments (endpoint, name, model, version, alias, weight, settings, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                name,
                d.name,
                d.model,
                version,
                alias,
                d.weight as i64,
                serde_json::to_string(&d.settings).expect("settings serialize"),
                at
            ],
        )
        .map_err(db_err(db, format!("cannot write deployment {name}/{}", d.name)))?;
    }
    Ok(())
}

/// Reads endpoint `name`, lets `change` edit it (`None`: it does not exist
/// yet; returning `None` deletes it), validates and writes the result with
/// an `endpoint.changed` audit entry, in one transaction. Returns the new
/// state.
pub fn update(
    repo: &Path,
    name: &str,
    user: &str,
    op: &str,
    change: impl FnOnce(Option<EndpointSpec>) -> Result<Option<EndpointSpec>, RegistryError>,
) -> Result<Option<EndpointSpec>, RegistryError> {
    check_model_name(name)?;
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    let tx = store.write()?;
    let before = read_one(&tx, &db, name)?;
    let after = change(before.clone())?;
    if let Some(spec) = &after {
        if spec.name != name {
            return Err(RegistryError::Invalid {
                what: format!("endpoint {name:?}"),
                problem: format!("cannot be renamed to {:?}", spec.name),
            });
        }
    }
    let at = crate::now_rfc3339();
    write_endpoint(&tx, &db, name, after.as_ref(), &at)?;
    store::append_audit(
        &tx,
        &db,
        &at,
        user,
        ENDPOINT_CHANGED,
        name,
        &serde_json::json!({ "op": op, "before": before, "after": after }),
    )?;
    tx.commit()
        .map_err(db_err(&db, format!("cannot commit endpoint {name:?}")))?;
    Ok(after)
}

/// Creates or changes one deployment. A new endpoint's first deployment
/// takes all the traffic; a new deployment of an existing endpoint gets
/// `weight` (default 0) taken from nobody, so a weight other than 0 must
/// come with a traffic change (see [`set_traffic`]) unless the sum stays 100.
pub fn put_deployment(
    repo: &Path,
    endpoint: &str,
    mut d: DeploymentSpec,
    weight: Option<u32>,
    user: &str,
) -> Result<EndpointSpec, RegistryError> {
    let op = "deploy";
    update(repo, endpoint, user, op, |before| {
        let mut spec = before.unwrap_or_else(|| EndpointSpec {
            name: endpoint.to_string(),
            deployments: Vec::new(),
            mirror: None,
        });
        let existing = spec.deployments.iter().position(|x| x.name == d.name);
        d.weight = match (weight, existing) {
            (Some(w), _) => w,
            (None, Some(i)) => spec.deployments[i].weight,
            (None, None) if spec.deployments.is_empty() => 100,
            (None, None) => 0,
        };
        match existing {
            Some(i) => spec.deployments[i] = d,
            None => spec.deployments.push(d),
        }
        Ok(Some(spec))
    })
    .map(|s| s.expect("a deployment was put"))
}

/// Removes one deployment; refused while it has traffic or is the mirror
/// target. Removing the last one deletes the endpoint.
pub fn remove_deployment(
    repo: &Path,
    endpoint: &str,
    deployment: &str,
    user: &str,
) -> Result<Option<EndpointSpec>, RegistryError> {
    update(repo, endpoint, user, "undeploy", |before| {
        let mut spec = before.ok_or_else(|| RegistryError::NotFound {
            what: format!("endpoint {endpoint:?}"),
            problem: "no such endpoint in the registry".into(),
        })?;
        let Some(i) = spec.deployments.iter().position(|d| d.name == deployment) else {
            return Err(RegistryError::NotFound {
                what: format!("deployment {endpoint}/{deployment}"),
                problem: format!(
                    "the endpoint's deployments are {:?}",
                    spec.deployments.iter().map(|d| &d.name).collect::<Vec<_>>()
                ),
            });
        };
        if spec.deployments.len() == 1 {
            return Ok(None);
        }
        let conflict = |problem: String| RegistryError::Conflict {
            what: format!("deployment {endpoint}/{deployment}"),
            problem,
        };
        if spec.deployments[i].weight > 0 {
            return Err(conflict(format!(
                "it has {}% of the traffic; move it to other deployments first",
                spec.deployments[i].weight
            )));
        }
        if spec
            .mirror
            .as_ref()
            .is_some_and(|m| m.deployment == deployment)
        {
            return Err(conflict("it receives the endpoint's mirror traffic".into()));
        }
        spec.deployments.remove(i);
        Ok(Some(spec))
    })
}

/// Sets the traffic weights (deployments not named get 0) and, if given,
/// the mirror (`Some(None)` removes it).
pub fn set_traffic(
    repo: &Path,
    endpoint: &str,
    weights: &BTreeMap<String, u32>,
    mirror: Option<Option<Mirror>>,
    user: &str,
) -> Result<EndpointSpec, RegistryError> {
    update(repo, endpoint, user, "traffic", |before| {
        let mut spec = before.ok_or_else(|| RegistryError::NotFound {
            what: format!("endpoint {endpoint:?}"),
            problem: "no such endpoint in the registry".into(),
        })?;
        apply_weights(&mut spec, weights)?;
        if let Some(m) = mirror {
            spec.mirror = m;
        }
        Ok(Some(spec))
    })
    .map(|s| s.expect("traffic keeps the endpoint"))
}

/// Sets `weights` on `spec` (unnamed deployments get 0); every name must be
/// one of its deployments.
pub fn apply_weights(
    spec: &mut EndpointSpec,
    weights: &BTreeMap<String, u32>,
) -> Result<(), RegistryError> {
    for name in weights.keys() {
        if spec.deployment(name).is_none() {
            return Err(RegistryError::NotFound {
                what: format!("deployment {}/{name}", spec.name),
                problem: format!(
                    "the endpoint's deployments are {:?}",
                    spec.deployments.iter().map(|d| &d.name).collect::<Vec<_>>()
                ),
            });
        }
    }
    for d in &mut spec.deployments {
        d.weight = weights.get(&d.name).copied().unwrap_or(0);
    }
    spec.validate()
}

/// `serve --config`: each endpoint of the file replaces the registry's
/// endpoint of that name (others are left alone), in one transaction.
pub fn apply_config(
    repo: &Path,
    endpoints: &[EndpointSpec],
    user: &str,
) -> Result<(), RegistryError> {
    for e in endpoints {
        e.validate()?;
    }
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    let tx = store.write()?;
    let at = crate::now_rfc3339();
    for e in endpoints {
        let before = read_one(&tx, &db, &e.name)?;
        if before.as_ref() == Some(e) {
            continue;
        }
        write_endpoint(&tx, &db, &e.name, Some(e), &at)?;
        store::append_audit(
            &tx,
            &db,
            &at,
            user,
            ENDPOINT_CHANGED,
            &e.name,
            &serde_json::json!({ "op": "config", "before": before, "after": e }),
        )?;
    }
    tx.commit()
        .map_err(db_err(&db, "cannot commit the deployment configuration"))
}

/// What the registry says now: the endpoints, each model's newest version
/// and every alias, read in one transaction so they agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub endpoints: Vec<EndpointSpec>,
    pub newest: BTreeMap<String, u64>,
    /// Every registered `(model, version)`.
    pub versions: BTreeSet<(String, u64)>,
    /// `(model, alias) -> version`.
    pub aliases: BTreeMap<(String, String), u64>,
    /// The `version_policy` of each model that is a Triton model folder
    /// (`REPO/NAME/config.pbtxt`): its implicit endpoint serves the
    /// versions the policy selects (see [`version_policy`]).
    pub policies: BTreeMap<String, ferroserve_runtime::manifest::VersionPolicy>,
}

impl Snapshot {
    /// The version `model` at `target` resolves to, if any.
    pub fn resolve(&self, model: &str, target: &Target) -> Option<u64> {
        match target {
            Target::Version(v) => self
                .versions
                .contains(&(model.to_string(), *v))
                .then_some(*v),
            Target::Alias(a) => self.aliases.get(&(model.to_string(), a.clone())).copied(),
            Target::Latest => self.newest.get(model).copied(),
        }
    }
}

pub fn snapshot(repo: &Path) -> Result<Snapshot, RegistryError> {
    let mut store = open_existing(repo)?;
    let db = store.path().to_path_buf();
    // A read transaction: one consistent view of the three tables.
    let tx = store
        .conn_mut()
        .transaction()
        .map_err(db_err(&db, "cannot start a read transaction"))?;
    let endpoints = read_all(&tx, &db)?;
    let versions = {
        let mut stmt = tx
            .prepare("SELECT model, version FROM versions")
            .map_err(db_err(&db, "cannot read versions"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .and_then(|rows| rows.collect::<Result<BTreeSet<_>, _>>())
            .map_err(db_err(&db, "cannot read versions"))?;
        rows
    };
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for (m, v) in &versions {
        let n = newest.entry(m.clone()).or_default();
        *n = (*n).max(*v);
    }
    let aliases = {
        let mut stmt = tx
            .prepare("SELECT model, alias, version FROM aliases")
            .map_err(db_err(&db, "cannot read aliases"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .and_then(|rows| rows.collect::<Result<BTreeMap<_, _>, _>>())
            .map_err(db_err(&db, "cannot read aliases"))?;
        rows
    };
    drop(tx);
    let policies = version_policy::policies(repo, newest.keys());
    Ok(Snapshot {
        endpoints,
        newest,
        versions,
        aliases,
        policies,
    })
}

/// The deployments (`endpoint/deployment`) whose target resolves to
/// `model` version `version` now: such a version cannot be deleted.
pub fn users_of(
    conn: &Connection,
    db: &Path,
    model: &str,
    version: u64,
) -> Result<Vec<String>, RegistryError> {
    let mut users = Vec::new();
    for e in read_all(conn, db)? {
        for d in e.deployments.iter().filter(|d| d.model == model) {
            let resolved: Option<i64> = match &d.target {
                Target::Version(v) => Some(*v as i64),
                Target::Alias(a) => conn
                    .query_row(
                        "SELECT version FROM aliases WHERE model = ?1 AND alias = ?2",
                        params![model, a],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err(db, "cannot read aliases"))?,
                Target::Latest => conn
                    .query_row(
                        "SELECT MAX(version) FROM versions WHERE model = ?1",
                        [model],
                        |r| r.get(0),
                    )
                    .map_err(db_err(db, "cannot read versions"))?,
            };
            if resolved == Some(version as i64) {
                users.push(format!("{}/{}", e.name, d.name));
            }
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, weight: u32) -> DeploymentSpec {
        DeploymentSpec {
            name: name.into(),
            model: "mlp".into(),
            target: Target::Latest,
            weight,
            settings: Settings::default(),
        }
    }

    #[test]
    fn weights_must_sum_to_100_and_names_be_unique() {
        let mut e = EndpointSpec {
            name: "e".into(),
            deployments: vec![dep("blue", 90), dep("green", 10)],
            mirror: None,
        };
        e.validate().unwrap();
        e.deployments[1].weight = 20;
        let err = e.validate().unwrap_err().to_string();
        assert!(
            err.contains("sum to 100, got 110") && err.contains("blue=90 green=20"),
            "{err}"
        );
        e.deployments[1] = dep("blue", 10);
        assert!(e.validate().unwrap_err().to_string().contains("twice"));
        e.deployments[1] = dep("Green", 10);
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("[a-z0-9_-]+"));
    }

    #[test]
    fn mirror_must_name_a_deployment_and_a_percent() {
        let mut e = EndpointSpec {
            name: "e".into(),
            deployments: vec![dep("blue", 100), dep("shadow", 0)],
            mirror: Some(Mirror {
                deployment: "shadow".into(),
                percent: 10,
            }),
        };
        e.validate().unwrap();
        e.mirror.as_mut().unwrap().percent = 0;
        assert!(e.validate().unwrap_err().to_string().contains("1 to 100"));
        e.mirror = Some(Mirror {
            deployment: "nope".into(),
            percent: 5,
        });
        assert!(e.validate().unwrap_err().to_string().contains("\"nope\""));
    }

    #[test]
    fn weights_apply_by_name_and_unknown_names_are_refused() {
        let mut e = EndpointSpec {
            name: "e".into(),
            deployments: vec![dep("blue", 100), dep("green", 0)],
            mirror: None,
        };
        let w: BTreeMap<String, u32> = [("green".to_string(), 100)].into();
        apply_weights(&mut e, &w).unwrap();
        assert_eq!((e.deployments[0].weight, e.deployments[1].weight), (0, 100));
        let w: BTreeMap<String, u32> = [("red".to_string(), 100)].into();
        assert!(apply_weights(&mut e, &w)
            .unwrap_err()
            .to_string()
            .contains("red"));
    }
}
