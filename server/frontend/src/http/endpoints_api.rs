//! Endpoints and deployments over HTTP: `/v2/admin/endpoints...`
//! (management routes; the management token applies by path).
//!
//! - `GET /v2/admin/endpoints`, `GET /v2/admin/endpoints/{e}`: what runs
//!   (deployments, versions, effective weights, mirror, each deployment's
//!   own request counts) beside what the registry asks for.
//! - `PUT /v2/admin/endpoints/{e}/deployments/{d}` `{"model": M,
//!   "version": N | "alias": A, "weight": W, "settings": {...}}`: create or
//!   change a deployment; answers once the version is loaded and warmed up
//!   and the traffic swapped. If it fails, the registry change is undone
//!   and the answer is 422 with why; clients saw nothing.
//! - `DELETE /v2/admin/endpoints/{e}/deployments/{d}`, `DELETE
//!   /v2/admin/endpoints/{e}`.
//! - `PUT /v2/admin/endpoints/{e}/traffic` `{"weights": {"blue": 90,
//!   "green": 10}, "mirror": {"deployment": "shadow", "percent": 10} | null}`.
//! - `POST /v2/admin/endpoints/{e}/rollout` (see
//!   [`crate::endpoints::rollout::RolloutRequest`]): 202, runs in the
//!   background; `GET` the same path for its status.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::management::{bad, blocking, read_json, repo, Failure, Reply, DEFAULT_USER};
use super::reply::{self, Body};
use crate::endpoints::rollout::RolloutRequest;
use crate::endpoints::Deployer;
use crate::state::AppState;
use ferroserve_registry::deployments::{
    self, DeploymentSpec, EndpointSpec, Mirror, Settings, Target,
};
use ferroserve_registry::lifecycle as types;

pub async fn handle(state: &AppState, rest: &[&str], req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match (rest, &method) {
        ([], &Method::GET) => list(state).await,
        ([e], &Method::GET) => show(state, e).await,
        ([e], &Method::DELETE) => delete_endpoint(state, e).await,
        ([e, "deployments", d], &Method::PUT) => put_deployment(state, e, d, req).await,
        ([e, "deployments", d], &Method::DELETE) => delete_deployment(state, e, d).await,
        ([e, "traffic"], &Method::PUT) => traffic(state, e, req).await,
        ([e, "rollout"], &Method::POST) => start_rollout(state, e, req).await,
        ([e, "rollout"], &Method::GET) => match state.rollouts.status(e) {
            Some(s) => Ok(reply::json(StatusCode::OK, &s)),
            None => Err(Failure(
                StatusCode::NOT_FOUND,
                format!("endpoint {e:?} has had no rollout on this server"),
            )),
        },
        ([] | [_] | [_, "deployments", _] | [_, "traffic"] | [_, "rollout"], _) => Err(Failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    };
    result.unwrap_or_else(|Failure(status, msg)| reply::error(status, &msg))
}

fn deployer(state: &AppState) -> Result<&Arc<Deployer>, Failure> {
    state.deployer.as_ref().ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server cannot change its deployments (no registry)".into(),
        )
    })
}

/// Reconciles after a registry change made through the API, so that the
/// answer reflects the new routing. Failures are events and log lines;
/// callers that must know look at the report themselves.
pub async fn reconcile(state: &AppState, reason: &str) {
    if let Some(d) = &state.deployer {
        if let Err(e) = d.reconcile(reason, false).await {
            tracing::warn!(error = %e, "cannot reconcile deployments with the registry");
        }
    }
}

/// The live view of one endpoint, with the registry's spec beside it.
fn describe(state: &AppState, name: &str, desired: Option<&EndpointSpec>) -> serde_json::Value {
    let live = state.routes.endpoint(name).ok();
    let deployments: Vec<serde_json::Value> = live
        .as_ref()
        .map(|e| {
            e.deployments
                .iter()
                .zip(&e.weights)
                .map(|(d, w)| {
                    let s = d.stats.snapshot();
                    json!({
                        "name": d.name,
                        "model": d.model.name,
                        "version": d.model.version,
                        "weight": w,
                        "requests_ok": s.ok,
                        "requests_failed": s.errors,
                        "effective": {
                            "instances": d.model.manifest.instances.count,
                            "max_batch_size": d.model.manifest.batching.max_batch_size,
                            "max_queue_delay_us": d.model.manifest.batching.max_queue_delay_us,
                        },
                        "status": match d.model.not_ready() {
                            None => "ready".to_string(),
                            Some(why) => format!("not ready: {why}"),
                        },
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": name,
        "implicit": live.as_ref().is_some_and(|e| e.implicit),
        "live": live.is_some(),
        "deployments": deployments,
        "mirror": live.as_ref().and_then(|e| e.mirror().map(|(d, p)| json!({"deployment": d.name, "percent": p}))),
        "desired": desired,
    })
}

async fn list(state: &AppState) -> Reply {
    let desired = match &state.repo {
        Some(r) => {
            let r = r.clone();
            blocking(move || Ok(deployments::list(&r)?)).await?
        }
        None => Vec::new(),
    };
    let mut names: Vec<String> = state.routes.all().iter().map(|e| e.name.clone()).collect();
    names.extend(desired.iter().map(|e| e.name.clone()));
    names.sort();
    names.dedup();
    let out: Vec<serde_json::Value> = names
        .iter()
        .map(|n| describe(state, n, desired.iter().find(|e| &e.name == n)))
        .collect();
    Ok(reply::json(StatusCode::OK, &json!({ "endpoints": out })))
}

async fn desired(state: &AppState, e: &str) -> Result<Option<EndpointSpec>, Failure> {
    let repo = repo(state)?;
    let e = e.to_string();
    blocking(move || match deployments::get(&repo, &e) {
        Ok(s) => Ok(Some(s)),
        Err(ferroserve_registry::RegistryError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    })
    .await
}

async fn show(state: &AppState, e: &str) -> Reply {
    let spec = desired(state, e).await?;
    if spec.is_none() && state.routes.endpoint(e).is_err() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no endpoint {e:?}")));
    }
    Ok(reply::json(
        StatusCode::OK,
        &describe(state, e, spec.as_ref()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutDeployment {
    model: String,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    settings: Settings,
}

/// Writes `spec` back as the endpoint's whole state (`None`: deletes it).
async fn restore(state: &AppState, e: &str, spec: Option<EndpointSpec>) -> Result<(), Failure> {
    let repo = repo(state)?;
    let e = e.to_string();
    blocking(move || {
        deployments::update(&repo, &e, DEFAULT_USER, "revert", |_| Ok(spec))?;
        Ok(())
    })
    .await
}

/// Applies a registry change, reconciles, and undoes the change when one of
/// `watch` (deployment names) failed to load.
async fn change_and_apply(
    state: &AppState,
    e: &str,
    watch: &[String],
    op: &'static str,
    change: impl FnOnce(&std::path::Path) -> Result<Option<EndpointSpec>, ferroserve_registry::RegistryError>
        + Send
        + 'static,
) -> Reply {
    let deployer = Arc::clone(deployer(state)?);
    let repo = repo(state)?;
    let before = desired(state, e).await?;
    let after = blocking(move || Ok(change(&repo)?)).await?;
    state.events.emit(state.events.event(
        types::ENDPOINT_CHANGED,
        e,
        json!({ "op": op, "before": before, "after": after }),
    ));
    let report = deployer
        .reconcile(op, false)
        .await
        .map_err(|err| Failure(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let failed: Vec<String> = watch
        .iter()
        .filter_map(|d| {
            report
                .failed
                .get(&format!("{e}/{d}"))
                .map(|why| format!("{e}/{d}: {why}"))
        })
        .collect();
    if !failed.is_empty() {
        restore(state, e, before).await?;
        let _ = deployer.reconcile("reverted a failed change", false).await;
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "deployment failed, nothing changed for clients: {}",
                failed.join("; ")
            ),
        ));
    }
    Ok(reply::json(
        StatusCode::OK,
        &describe(state, e, after.as_ref()),
    ))
}

async fn put_deployment(state: &AppState, e: &str, d: &str, req: Request<Incoming>) -> Reply {
    let body: PutDeployment = read_json(
        req,
        r#"{"model": NAME, "version": N | "alias": A, "weight": W, "settings": {...}}"#,
    )
    .await?;
    let target = match (body.version, body.alias) {
        (Some(_), Some(_)) => return Err(bad("version and alias: give one, not both")),
        (Some(0), None) => return Err(bad("version: expected a positive integer, received 0")),
        (Some(v), None) => Target::Version(v),
        (None, Some(a)) => Target::Alias(a),
        (None, None) => Target::Latest,
    };
    let spec = DeploymentSpec {
        name: d.to_string(),
        model: body.model,
        target,
        weight: 0,
        settings: body.settings,
    };
    let (e2, weight) = (e.to_string(), body.weight);
    change_and_apply(state, e, &[d.to_string()], "deploy", move |repo| {
        deployments::put_deployment(repo, &e2, spec, weight, DEFAULT_USER).map(Some)
    })
    .await
}

async fn delete_deployment(state: &AppState, e: &str, d: &str) -> Reply {
    let (e2, d2) = (e.to_string(), d.to_string());
    change_and_apply(state, e, &[], "undeploy", move |repo| {
        deployments::remove_deployment(repo, &e2, &d2, DEFAULT_USER)
    })
    .await
}

async fn delete_endpoint(state: &AppState, e: &str) -> Reply {
    if desired(state, e).await?.is_none() {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no endpoint {e:?} in the registry"),
        ));
    }
    let e2 = e.to_string();
    change_and_apply(state, e, &[], "delete", move |repo| {
        deployments::update(repo, &e2, DEFAULT_USER, "delete", |_| Ok(None))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Traffic {
    weights: BTreeMap<String, u32>,
    /// Absent: unchanged; `null`: removed.
    #[serde(default, deserialize_with = "some")]
    mirror: Option<Option<Mirror>>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Mirror>>, D::Error> {
    Option::<Mirror>::deserialize(d).map(Some)
}

async fn traffic(state: &AppState, e: &str, req: Request<Incoming>) -> Reply {
    let t: Traffic = read_json(
        req,
        r#"{"weights": {"DEPLOYMENT": WEIGHT, ...}, "mirror": {"deployment": D, "percent": P} | null}"#,
    )
    .await?;
    let e2 = e.to_string();
    change_and_apply(state, e, &[], "traffic", move |repo| {
        deployments::set_traffic(repo, &e2, &t.weights, t.mirror, DEFAULT_USER).map(Some)
    })
    .await
}

async fn start_rollout(state: &AppState, e: &str, req: Request<Incoming>) -> Reply {
    let deployer = Arc::clone(deployer(state)?);
    let body: RolloutRequest = read_json(
        req,
        r#"{"to": D, "steps": [10, 25, 50, 100], "interval_ms": N, "max_error_rate": 0.01, "max_p99_ms": 50}"#,
    )
    .await?;
    let status = state
        .rollouts
        .start(deployer, state.events.clone(), e.to_string(), body)
        .await
        .map_err(|(code, msg)| {
            Failure(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                msg,
            )
        })?;
    Ok(reply::json(StatusCode::ACCEPTED, &status))
}
