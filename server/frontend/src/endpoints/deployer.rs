//! The reconciler: makes the routing table match the registry's desired
//! state (endpoints, deployments, weights, aliases, newest versions).
//!
//! Every change goes the same way, whatever asked for it (the management
//! API, the CLI writing the registry, an alias moving, a new version being
//! registered for a deployment that tracks the latest): read a snapshot of
//! the registry; for each deployment whose model version or settings
//! changed, load the new version and warm it up off the request path, with
//! the old one still serving; then store the whole new table in one atomic
//! swap. Requests already routed keep their `Arc` of the old version, so it
//! drains them and is freed when the last one finishes. A version that
//! fails to load or warm up never enters the table: the old one keeps
//! serving, and a `deployment.failed` event says why.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::routing::{Deployment, Endpoint, RoutingTable};
use super::stats::DeploymentStats;
use super::warmup;
use crate::metrics::Metrics;
use ferroserve_registry::deployments::{
    self, DeploymentSpec, EndpointSpec, Settings, Snapshot, Target,
};
use ferroserve_registry::{events::EventBus, lifecycle as types};
use ferroserve_runtime::manifest::Manifest;
use ferroserve_runtime::{LoadSettings, Model};

/// Why a reconciliation could not even start.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Registry(#[from] ferroserve_registry::RegistryError),
    #[error("{0}")]
    Failed(String),
}

type Key = (String, String);

/// What a deployment runs: changing any of it means loading anew.
#[derive(Debug, Clone, PartialEq)]
struct LoadKey {
    model: String,
    version: u64,
    settings: Settings,
}

struct Running {
    load: LoadKey,
    deployment: Arc<Deployment>,
}

#[derive(Default)]
struct State {
    running: HashMap<Key, Running>,
    /// The last target that failed, per deployment, and why: not retried
    /// until the desired state names something else.
    failed: HashMap<Key, (LoadKey, String)>,
    stats: HashMap<Key, Arc<DeploymentStats>>,
    /// Weights and mirror per endpoint, as last stored.
    traffic: HashMap<String, serde_json::Value>,
    last: Option<Snapshot>,
}

/// What one reconciliation did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// `endpoint/deployment -> version` newly loaded.
    pub loaded: BTreeMap<String, u64>,
    /// `endpoint/deployment -> why` that failed.
    pub failed: BTreeMap<String, String>,
}

pub struct Deployer {
    repo: PathBuf,
    metrics: Arc<Metrics>,
    events: EventBus,
    routes: Arc<RoutingTable>,
    /// `serve --alias`: implicit endpoints follow this alias where their
    /// model has it.
    alias: Option<String>,
    /// Whether the registry can be read; without it the folders' newest
    /// versions are served as implicit endpoints and nothing is watched.
    registry: bool,
    state: tokio::sync::Mutex<State>,
}

impl Deployer {
    pub fn new(
        repo: PathBuf,
        metrics: Arc<Metrics>,
        events: EventBus,
        routes: Arc<RoutingTable>,
        alias: Option<String>,
        registry: bool,
    ) -> Deployer {
        Deployer {
            repo,
            metrics,
            events,
            routes,
            alias,
            registry,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn routes(&self) -> &Arc<RoutingTable> {
        &self.routes
    }

    pub fn repo(&self) -> &std::path::Path {
        &self.repo
    }

    async fn snapshot(&self) -> Result<Snapshot, DeployError> {
        let repo = self.repo.clone();
        let registry = self.registry;
        let previous = self
            .state
            .lock()
            .await
            .last
            .as_ref()
            .map(|last| last.policies.clone())
            .unwrap_or_default();
        // Reading the registry and the configs is file I/O: off the async
        // threads, all of it.
        tokio::task::spawn_blocking(move || {
            let mut snap = if registry {
                deployments::snapshot(&repo)?
            } else {
                folder_snapshot(&repo)?
            };
            // A Triton config that does not read now (being edited, say)
            // keeps the version policy it had: the versions it served stay
            // served.
            for (model, policy) in previous {
                if snap.newest.contains_key(&model)
                    && !snap.policies.contains_key(&model)
                    && repo
                        .join(&model)
                        .join(ferroserve_runtime::manifest::pbtxt::CONFIG_FILE)
                        .is_file()
                {
                    snap.policies.insert(model, policy);
                }
            }
            Ok(snap)
        })
        .await
        .map_err(|e| DeployError::Failed(format!("registry reader panicked: {e}")))?
    }

    /// Reconciles with the registry as it is now. `strict` (start-up):
    /// any deployment that fails makes it an error, as a broken bundle
    /// stops Triton's start-up.
    pub async fn reconcile(&self, reason: &str, strict: bool) -> Result<Report, DeployError> {
        let snap = self.snapshot().await?;
        let report = self.apply(snap, reason).await;
        if strict && !report.failed.is_empty() {
            let why: Vec<String> = report
                .failed
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            return Err(DeployError::Failed(why.join("; ")));
        }
        Ok(report)
    }

    /// Reconciles only if the registry changed since the last time.
    pub async fn reconcile_if_changed(&self) -> Result<Option<Report>, DeployError> {
        let snap = self.snapshot().await?;
        if self.state.lock().await.last.as_ref() == Some(&snap) {
            return Ok(None);
        }
        Ok(Some(self.apply(snap, "registry changed").await))
    }

    /// Polls the registry every `interval` and reconciles on change, until
    /// the runtime shuts down. Changes made through the API reconcile at
    /// once; this catches the CLI, which writes the registry directly.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        if !self.registry {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = me.reconcile_if_changed().await {
                    tracing::warn!(error = %e, "cannot read the registry to reconcile deployments");
                }
            }
        });
    }

    /// Every endpoint the snapshot asks for, with whether it is implicit.
    fn desired(&self, snap: &Snapshot) -> Vec<(EndpointSpec, bool)> {
        let mut out: Vec<(EndpointSpec, bool)> =
            snap.endpoints.iter().map(|e| (e.clone(), false)).collect();
        for model in snap.newest.keys() {
            if snap.endpoints.iter().any(|e| &e.name == model) {
                continue;
            }
            let target = match &self.alias {
                Some(a) if snap.aliases.contains_key(&(model.clone(), a.clone())) => {
                    Target::Alias(a.clone())
                }
                _ => Target::Latest,
            };
            let deployments = match (&target, snap.policies.get(model)) {
                // A Triton model: the versions its version_policy selects
                // (`serve --alias` wins where the model has the alias).
                (Target::Latest, Some(policy)) => {
                    let available: Vec<u64> = snap
                        .versions
                        .iter()
                        .filter(|(m, _)| m == model)
                        .map(|(_, v)| *v)
                        .collect();
                    ferroserve_registry::deployments::version_policy::deployments(
                        model, policy, &available,
                    )
                }
                _ => vec![DeploymentSpec {
                    name: "default".into(),
                    model: model.clone(),
                    target,
                    weight: 100,
                    settings: Settings::default(),
                }],
            };
            out.push((
                EndpointSpec {
                    name: model.clone(),
                    deployments,
                    mirror: None,
                },
                true,
            ));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    async fn apply(&self, snap: Snapshot, reason: &str) -> Report {
        let mut st = self.state.lock().await;
        let mut report = Report::default();
        let mut endpoints = Vec::new();
        let mut next: HashMap<Key, Running> = HashMap::new();
        // (event type, subject, data), emitted once the new table is live.
        let mut events: Vec<(&str, String, serde_json::Value)> = Vec::new();
        for (spec, implicit) in self.desired(&snap) {
            let mut deps = Vec::new();
            let mut weights = Vec::new();
            let mut mirror = None;
            for d in &spec.deployments {
                let key: Key = (spec.name.clone(), d.name.clone());
                let label = format!("{}/{}", key.0, key.1);
                let old = st.running.remove(&key);
                let Some(version) = snap.resolve(&d.model, &d.target) else {
                    let why = format!(
                        "model {:?} has no registered version at {}",
                        d.model, d.target
                    );
                    let load = LoadKey {
                        model: d.model.clone(),
                        version: 0,
                        settings: d.settings.clone(),
                    };
                    if st.failed.get(&key).map(|f| &f.0) != Some(&load) {
                        events.push(failed_event(&spec.name, d, None, &why, old.as_ref()));
                        st.failed.insert(key.clone(), (load, why.clone()));
                    }
                    report.failed.insert(label, why);
                    if let Some(old) = old {
                        next.insert(key, old);
                    }
                    continue;
                };
                let load = LoadKey {
                    model: d.model.clone(),
                    version,
                    settings: d.settings.clone(),
                };
                let known_failure = st
                    .failed
                    .get(&key)
                    .filter(|f| f.0 == load)
                    .map(|f| f.1.clone());
                let running = match old {
                    Some(old) if old.load == load => Some(old),
                    old if known_failure.is_some() => {
                        report.failed.insert(label, known_failure.expect("checked"));
                        old
                    }
                    old => {
                        let stats = Arc::clone(st.stats.entry(key.clone()).or_default());
                        let started = Instant::now();
                        match self
                            .load(&spec.name, d, version, stats, old.is_some())
                            .await
                        {
                            Ok(deployment) => {
                                st.failed.remove(&key);
                                report.loaded.insert(label, version);
                                let mut data = json!({
                                    "endpoint": spec.name,
                                    "deployment": d.name,
                                    "model": d.model,
                                    "version": version,
                                    "target": d.target.to_string(),
                                    "settings": d.settings,
                                    "backend": deployment.model.manifest.backend.to_string(),
                                    "instances": deployment.model.manifest.instances.count,
                                    "reason": reason,
                                    "load_ms": started.elapsed().as_millis() as u64,
                                });
                                let ty = match &old {
                                    Some(o) => {
                                        data["from_version"] = json!(o.load.version);
                                        types::DEPLOYMENT_UPDATED
                                    }
                                    None => types::DEPLOYMENT_CREATED,
                                };
                                events.push((ty, format!("{}/{}", spec.name, d.name), data));
                                Some(Running { load, deployment })
                            }
                            Err(why) => {
                                tracing::warn!(deployment = %label, model = %d.model, version, error = %why, "deployment failed; nothing changes for clients");
                                events.push(failed_event(
                                    &spec.name,
                                    d,
                                    Some(version),
                                    &why,
                                    old.as_ref(),
                                ));
                                st.failed.insert(key.clone(), (load, why.clone()));
                                report.failed.insert(label, why);
                                old
                            }
                        }
                    }
                };
                if let Some(r) = running {
                    if spec.mirror.as_ref().is_some_and(|m| m.deployment == d.name) {
                        mirror = Some((deps.len(), spec.mirror.as_ref().expect("checked").percent));
                    }
                    deps.push(Arc::clone(&r.deployment));
                    weights.push(d.weight);
                    next.insert(key, r);
                }
            }
            if deps.is_empty() {
                // Nothing of the new state loads: whatever served this name
                // keeps serving it (an explicit endpoint replacing an
                // implicit one, say), rather than the name going away.
                if let Ok(old) = self.routes.endpoint(&spec.name) {
                    for d in &old.deployments {
                        let key = (spec.name.clone(), d.name.clone());
                        if let Some(r) = st.running.remove(&key) {
                            next.insert(key, r);
                        }
                    }
                    endpoints.push(old);
                }
                continue;
            }
            let traffic = json!({
                "weights": deps.iter().zip(&weights).map(|(d, w)| (d.name.clone(), json!(w))).collect::<serde_json::Map<_, _>>(),
                "mirror": mirror.map(|(i, p)| json!({"deployment": deps[i].name, "percent": p})),
            });
            let endpoint = Endpoint::new(spec.name.clone(), deps, weights, mirror, implicit);
            let effective = json!({
                "weights": endpoint.deployments.iter().zip(&endpoint.weights).map(|(d, w)| (d.name.clone(), json!(w))).collect::<serde_json::Map<_, _>>(),
                "mirror": traffic["mirror"],
            });
            if let Some(before) = st.traffic.get(&spec.name) {
                if before != &effective {
                    events.push((
                        types::TRAFFIC_CHANGED,
                        spec.name.clone(),
                        json!({"endpoint": spec.name, "from": before, "to": effective, "reason": reason}),
                    ));
                }
            }
            st.traffic.insert(spec.name.clone(), effective);
            endpoints.push(Arc::new(endpoint));
        }
        // What is no longer desired goes away with this swap.
        for (key, gone) in st.running.drain() {
            events.push((
                types::DEPLOYMENT_DELETED,
                format!("{}/{}", key.0, key.1),
                json!({"endpoint": key.0, "deployment": key.1, "model": gone.load.model, "version": gone.load.version, "reason": reason}),
            ));
        }
        let live: std::collections::HashSet<&String> = endpoints.iter().map(|e| &e.name).collect();
        st.traffic.retain(|name, _| live.contains(name));
        st.stats.retain(|k, _| next.contains_key(k));
        self.routes.store(endpoints);
        st.running = next;
        st.last = Some(snap);
        drop(st);
        for (ty, subject, data) in events {
            self.events.emit(self.events.event(ty, &subject, data));
        }
        report
    }

    /// Loads and warms up one deployment's model version, off the async
    /// threads for the blocking part.
    async fn load(
        &self,
        endpoint: &str,
        d: &DeploymentSpec,
        version: u64,
        stats: Arc<DeploymentStats>,
        replacing: bool,
    ) -> Result<Arc<Deployment>, String> {
        let dir = self.repo.join(&d.model).join(version.to_string());
        let metrics = Arc::clone(&self.metrics);
        let (endpoint_s, name, model_name, settings) = (
            endpoint.to_string(),
            d.name.clone(),
            d.model.clone(),
            d.settings.clone(),
        );
        let (repo, registry) = (self.repo.clone(), self.registry);
        let (model, baseline) = tokio::task::spawn_blocking(move || {
            let mut manifest = Manifest::load(&dir).map_err(|e| e.to_string())?;
            if manifest.name != model_name {
                return Err(format!(
                    "{}: the manifest names model {:?}, but it is registered as {:?}",
                    manifest.file.display(),
                    manifest.name,
                    model_name
                ));
            }
            apply_settings(&mut manifest, &settings)?;
            let baseline = if registry && manifest.drift.enabled {
                super::drift::load_baseline(&repo, &model_name, version)?
            } else {
                None
            };
            let model = Model::from_manifest(
                manifest,
                &LoadSettings {
                    version: Some(version),
                    endpoint: Some(endpoint_s),
                    deployment: Some(name),
                    series: metrics.models.clone(),
                },
            )
            .map_err(|e| format!("model {model_name:?} version {version} does not load: {e}"))?;
            Ok::<_, String>((model, baseline))
        })
        .await
        .map_err(|e| format!("loader panicked: {e}"))??;
        match model.not_ready() {
            // A version that cannot answer never replaces one that can.
            Some(why) if replacing => return Err(format!("the new version is not ready: {why}")),
            // Nothing served this deployment before: it goes live not
            // ready, so its status (and the traceback) can be seen.
            Some(why) => {
                tracing::error!(endpoint, deployment = %d.name, model = %d.model, version, "deployed but not ready: {why}");
            }
            None => {
                warmup::run(&model).await?;
            }
        }
        if model.not_ready().is_none() {
            tracing::info!(
                endpoint,
                deployment = %d.name,
                model = %model.name,
                version,
                instances = model.manifest.instances.count,
                max_batch_size = model.manifest.batching.max_batch_size,
                "deployment loaded and warmed up"
            );
        }
        let drift = match baseline {
            None => None,
            Some(b) => Some(Arc::new(
                super::drift::start(
                    b,
                    &model,
                    endpoint,
                    &d.name,
                    self.metrics.drift.clone(),
                    self.events.clone(),
                )
                .map_err(|e| format!("model {:?} version {version}: {e}", d.model))?,
            )),
        };
        let drift_inline = drift
            .as_ref()
            .is_some_and(|m| m.settings().observed == ferroserve_monitoring::drift::Observed::All);
        let capture = match &model.manifest.capture {
            None => None,
            Some(config) => Some(
                start_capture(
                    config,
                    endpoint,
                    &d.name,
                    &model,
                    &self.metrics,
                    drift.clone().filter(|_| !drift_inline),
                )
                .map_err(|e| format!("model {:?} version {version}: {e}", d.model))?,
            ),
        };
        if let Some(m) = &drift {
            super::drift::start_clock(m);
            tracing::info!(endpoint, deployment = %d.name, model = %d.model, version, baseline = %m.baseline().data.name, features = m.baseline().features.len(), outputs = m.baseline().outputs.len(), "drift monitor on");
        }
        Ok(Arc::new(Deployment {
            endpoint: endpoint.to_string(),
            name: d.name.clone(),
            header: hyper::header::HeaderValue::from_str(&d.name).ok(),
            model: Arc::new(model),
            stats,
            capture,
            drift,
            drift_inline,
        }))
    }

    /// Flushes and closes every running deployment's capture, waiting for
    /// the files to be closed: the last step of a graceful shutdown.
    pub async fn close_captures(&self) {
        let st = self.state.lock().await;
        let running: Vec<Arc<Deployment>> = st
            .running
            .values()
            .map(|r| Arc::clone(&r.deployment))
            .collect();
        drop(st);
        for d in running {
            if let Some(c) = &d.capture {
                c.close();
            }
        }
    }

    /// The deployment statistics of `endpoint/deployment`, if it runs.
    pub fn running(&self, endpoint: &str, deployment: &str) -> Option<Arc<Deployment>> {
        self.routes
            .endpoint(endpoint)
            .ok()?
            .by_name(deployment)
            .cloned()
    }
}

fn failed_event(
    endpoint: &str,
    d: &DeploymentSpec,
    version: Option<u64>,
    why: &str,
    old: Option<&Running>,
) -> (&'static str, String, serde_json::Value) {
    (
        types::DEPLOYMENT_FAILED,
        format!("{endpoint}/{}", d.name),
        json!({
            "endpoint": endpoint,
            "deployment": d.name,
            "model": d.model,
            "version": version,
            "target": d.target.to_string(),
            "error": why,
            "serving": old.map(|o| o.load.version),
        }),
    )
}

/// A deployment's settings over its bundle's manifest.
fn apply_settings(m: &mut Manifest, s: &Settings) -> Result<(), String> {
    let b = &mut m.batching;
    if let Some(n) = s.max_batch_size {
        if n > 0 {
            if let Some(t) = m
                .declared
                .inputs
                .iter()
                .chain(&m.declared.outputs)
                .find(|t| t.shape.first() != Some(&-1))
            {
                return Err(format!(
                    "setting max_batch_size = {n}: tensor {:?} of the bundle has shape {:?}, without a batch dimension",
                    t.name, t.shape
                ));
            }
        }
        b.max_batch_size = n;
        b.preferred_batch_sizes.retain(|&p| n > 0 && p <= n);
    }
    if let Some(v) = s.max_queue_delay_us {
        b.max_queue_delay_us = v;
    }
    if let Some(v) = s.max_queue_size {
        b.max_queue_size = v;
    }
    if let Some(v) = s.timeout_ms {
        b.timeout_ms = v;
    }
    if let Some(v) = s.instances {
        m.instances.count = v;
    }
    if let Some(v) = s.intra_op_threads {
        m.instances.intra_op_threads = v;
    }
    if let Some(v) = &s.device {
        m.instances.device = v.clone();
    }
    let setting = |(key, problem): (String, String)| format!("setting {key}: {problem}");
    if let Some(o) = &s.capture {
        m.capture = o.apply(m.capture.as_ref()).map_err(setting)?;
    }
    if let Some(o) = &s.drift {
        m.drift = o.apply(&m.drift).map_err(setting)?;
    }
    ferroserve_runtime::manifest::drift::check_source(&m.drift, m.capture.is_some())
        .map_err(setting)?;
    Ok(())
}

/// Without a readable registry: the newest version folder of each model
/// (every version folder of a Triton model, for its version policy).
fn folder_snapshot(repo: &std::path::Path) -> Result<Snapshot, DeployError> {
    let newest: BTreeMap<String, u64> = ferroserve_registry::repository::newest_versions(repo)
        .map_err(|e| DeployError::Failed(e.to_string()))?
        .into_iter()
        .map(|b| (b.name, b.version))
        .collect();
    let policies = ferroserve_registry::deployments::version_policy::policies(repo, newest.keys());
    let mut versions: std::collections::BTreeSet<(String, u64)> =
        newest.iter().map(|(m, v)| (m.clone(), *v)).collect();
    for model in policies.keys() {
        let dir = repo.join(model);
        for v in ferroserve_registry::folders::version_folders(&dir).unwrap_or_default() {
            if ferroserve_runtime::manifest::is_bundle_dir(&dir.join(v.to_string())) {
                versions.insert((model.clone(), v));
            }
        }
    }
    Ok(Snapshot {
        versions,
        newest,
        policies,
        ..Snapshot::default()
    })
}

/// Starts a deployment's capture from its bundle's `[capture]`: files under
/// the sink, named for this host, counted in the capture series.
fn start_capture(
    config: &ferroserve_runtime::manifest::CaptureConfig,
    endpoint: &str,
    deployment: &str,
    model: &Model,
    metrics: &Metrics,
    drift: Option<Arc<ferroserve_monitoring::drift::Monitor>>,
) -> Result<ferroserve_monitoring::capture::Capture, ferroserve_monitoring::capture::CaptureError> {
    use ferroserve_monitoring::capture::{Capture, CaptureSettings, Keep, Labels, Target};
    let keep = Keep {
        inputs: config.keeps("inputs"),
        outputs: config.keeps("outputs"),
        request_id: config.keeps("request_id"),
        endpoint: config.keeps("endpoint"),
        deployment: config.keeps("deployment"),
        model_version: config.keeps("model_version"),
        timestamp: config.keeps("timestamp"),
        latency: config.keeps("latency"),
        status: config.keeps("status"),
    };
    let settings = CaptureSettings {
        sample_rate: config.sample_rate,
        always_errors: config.always_errors,
        keep,
        sink: config.sink.clone(),
        max_file_bytes: config.max_file_bytes,
        max_file_age: config.max_file_age,
        queue: config.queue,
        feature_names: model
            .manifest
            .feature_names
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let target = Target {
        labels: Labels {
            endpoint: endpoint.to_string(),
            deployment: deployment.to_string(),
            model_version: model.version_label.clone(),
        },
        instance: instance_name(),
    };
    Capture::start(
        settings,
        target,
        &model.signature,
        model.manifest.batching.max_batch_size > 0,
        metrics.capture.for_deployment(endpoint, deployment),
        drift,
    )
}

/// This server among replicas sharing a capture sink: `$FERROSERVE_INSTANCE`,
/// else the host name (a pod's name in Kubernetes).
fn instance_name() -> String {
    std::env::var("FERROSERVE_INSTANCE")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ferroserve".into())
}
