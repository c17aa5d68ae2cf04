//! The routing table: endpoint name -> deployments and weights, behind an
//! `ArcSwap` so every request reads it without a lock and a change (a hot
//! swap, new weights) replaces it in one store.
//!
//! Weights are spread over 100 slots in smooth weighted round-robin order
//! (nginx's), walked by an atomic counter: over any 100 consecutive
//! unpinned requests each deployment gets exactly its weight, with no
//! random number on the request path and no long runs of one deployment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ferroserve_backend_core::Tensor;

use super::capture;
use super::mirror::MirrorPool;
use super::stats::DeploymentStats;
use ferroserve_runtime::infer::{InferError, InferOutput};
use ferroserve_runtime::Model;

/// Header naming the deployment a request must reach (as Azure ML's
/// `azureml-model-deployment`), and the deployment that answered.
pub const DEPLOYMENT_HEADER: &str = "x-ferroserve-deployment";

/// One deployment as it runs now: a loaded model version.
pub struct Deployment {
    pub endpoint: String,
    pub name: String,
    /// `name` as the answer header that names the deployment, built once
    /// rather than on every request; `None` if the name is not a valid
    /// header value.
    pub header: Option<hyper::header::HeaderValue>,
    pub model: Arc<Model>,
    pub stats: Arc<DeploymentStats>,
    /// The bundle's `[capture]`, running.
    pub capture: Option<ferroserve_monitoring::capture::Capture>,
    /// Drift against the version's training baseline, if it has one.
    pub drift: Option<Arc<ferroserve_monitoring::drift::Monitor>>,
    /// Whether the request path feeds `drift` (else the capture writer
    /// does, with the captured requests).
    pub drift_inline: bool,
}

/// One endpoint as it runs now.
pub struct Endpoint {
    pub name: String,
    /// In the order of the endpoint's specification.
    pub deployments: Vec<Arc<Deployment>>,
    /// The weight of each of `deployments`, summing to 100 (renormalised
    /// over the deployments that are loaded).
    pub weights: Vec<u32>,
    /// Indices into `deployments`, the highest weight first (ties in
    /// specification order): pinning by version and metadata pick by it.
    by_weight: Vec<usize>,
    slots: Vec<u8>,
    counter: AtomicU64,
    /// `(index into deployments, percent)`.
    mirror: Option<(usize, u32)>,
    mirror_counter: AtomicU64,
    /// Made for a registered model without an explicit endpoint.
    pub implicit: bool,
}

impl Endpoint {
    /// `weights` need not sum to 100: they are scaled to it (all zero: an
    /// equal share each), since a deployment that failed to load drops out
    /// and the others take its share.
    pub fn new(
        name: String,
        deployments: Vec<Arc<Deployment>>,
        weights: Vec<u32>,
        mirror: Option<(usize, u32)>,
        implicit: bool,
    ) -> Endpoint {
        assert_eq!(deployments.len(), weights.len());
        assert!(!deployments.is_empty(), "an endpoint has a deployment");
        let weights = apportion(&weights, 100);
        let mut by_weight: Vec<usize> = (0..deployments.len()).collect();
        by_weight.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
        Endpoint {
            name,
            by_weight,
            slots: smooth_slots(&weights),
            deployments,
            weights,
            counter: AtomicU64::new(0),
            mirror,
            mirror_counter: AtomicU64::new(0),
            implicit,
        }
    }

    /// The deployment serving `version`, the highest weight first.
    pub fn by_version(&self, version: &str) -> Option<&Arc<Deployment>> {
        self.by_weight
            .iter()
            .map(|&i| &self.deployments[i])
            .find(|d| d.model.has_version(version))
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.name == name)
    }

    /// The deployment with the most traffic: what metadata describes.
    pub fn primary(&self) -> &Arc<Deployment> {
        &self.deployments[self.by_weight[0]]
    }

    /// The versions served, ascending, without repeats.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<u64> = self.deployments.iter().map(|d| d.model.version).collect();
        v.sort_unstable();
        v.dedup();
        v.into_iter().map(|v| v.to_string()).collect()
    }

    fn next_weighted(&self) -> &Arc<Deployment> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        &self.deployments[self.slots[(n % self.slots.len() as u64) as usize] as usize]
    }

    /// Whether this request is one of the mirrored share (exact over every
    /// 100 requests).
    fn mirror_for(&self, answering: &Arc<Deployment>) -> Option<Arc<Deployment>> {
        let (i, percent) = self.mirror?;
        let shadow = &self.deployments[i];
        if Arc::ptr_eq(shadow, answering) {
            return None;
        }
        let n = self.mirror_counter.fetch_add(1, Ordering::Relaxed);
        let p = u64::from(percent);
        ((n + 1) * p / 100 != n * p / 100).then(|| Arc::clone(shadow))
    }

    pub fn mirror(&self) -> Option<(&Arc<Deployment>, u32)> {
        self.mirror.map(|(i, p)| (&self.deployments[i], p))
    }
}

/// Scales `weights` to whole numbers summing to `total`, in proportion
/// (all zero: equal shares); the largest remainders get the rounding.
/// Shared by routing (weights of the deployments that loaded) and rollouts
/// (the other deployments' share of a step).
pub fn apportion(weights: &[u32], total: u32) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u32 = weights.iter().sum();
    let raw: Vec<f64> = weights
        .iter()
        .map(|&w| {
            if sum == 0 {
                f64::from(total) / weights.len() as f64
            } else {
                f64::from(total) * f64::from(w) / f64::from(sum)
            }
        })
        .collect();
    let mut out: Vec<u32> = raw.iter().map(|r| r.floor() as u32).collect();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        (raw[b] - raw[b].floor())
            .partial_cmp(&(raw[a] - raw[a].floor()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let missing = total.saturating_sub(out.iter().sum::<u32>());
    for &i in order.iter().cycle().take(missing as usize) {
        out[i] += 1;
    }
    out
}

/// 100 slots, each a deployment index, in smooth weighted round-robin order.
fn smooth_slots(weights: &[u32]) -> Vec<u8> {
    let mut current = vec![0i64; weights.len()];
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    (0..total)
        .map(|_| {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..weights.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .expect("weights are not empty");
            current[best] -= total;
            best as u8
        })
        .collect()
}

/// Where one request goes.
pub struct Routed {
    pub endpoint: Arc<Endpoint>,
    pub deployment: Arc<Deployment>,
    mirror: Option<Arc<Deployment>>,
    pool: Arc<MirrorPool>,
}

impl Routed {
    pub fn model(&self) -> &Arc<Model> {
        &self.deployment.model
    }

    /// Runs the request on its deployment (recording the deployment's own
    /// statistics and offering it to the deployment's capture), and hands a
    /// copy to the mirror, if any, without waiting for it. Tensors share
    /// their buffers, so the copies cost no bytes. `id` is the request's
    /// own id, by which it is sampled.
    pub async fn infer(
        &self,
        named: Vec<(String, Tensor)>,
        timeout: Option<Duration>,
        id: Option<&str>,
    ) -> Result<InferOutput, InferError> {
        if let Some(shadow) = &self.mirror {
            self.pool.send(shadow, named.clone(), timeout);
        }
        let capture = self.deployment.capture.as_ref();
        let pending = capture.and_then(|c| capture::begin(c, id, &named));
        let drift = self
            .deployment
            .drift
            .as_ref()
            .filter(|_| self.deployment.drift_inline);
        let watched_inputs = drift.map(|_| named.clone());
        let started = Instant::now();
        let result = self.deployment.model.infer(named, timeout).await;
        self.deployment.stats.record(&result, started.elapsed());
        if let (Some(d), Some(inputs), Ok(out)) = (drift, &watched_inputs, &result) {
            d.observe(inputs, &out.outputs, std::time::SystemTime::now());
        }
        if let (Some(c), Some(p)) = (capture, pending) {
            let names = self
                .model()
                .signature
                .outputs
                .iter()
                .map(|o| o.name.clone());
            capture::finish(c, p, &result, names);
        }
        result
    }
}

/// Every endpoint served now.
pub struct RoutingTable {
    inner: ArcSwap<HashMap<String, Arc<Endpoint>>>,
    pool: Arc<MirrorPool>,
}

/// An endpoint and the model that describes it (see [`RoutingTable::served`]).
pub struct Served {
    pub endpoint: Arc<Endpoint>,
    pub model: Arc<Model>,
}

impl RoutingTable {
    pub fn new(pool: Arc<MirrorPool>) -> RoutingTable {
        RoutingTable {
            inner: ArcSwap::from_pointee(HashMap::new()),
            pool,
        }
    }

    pub fn mirror_pool(&self) -> &Arc<MirrorPool> {
        &self.pool
    }

    /// Replaces the whole table in one atomic store.
    pub fn store(&self, endpoints: Vec<Arc<Endpoint>>) {
        let map = endpoints.into_iter().map(|e| (e.name.clone(), e)).collect();
        self.inner.store(Arc::new(map));
    }

    pub fn endpoint(&self, name: &str) -> Result<Arc<Endpoint>, InferError> {
        let map = self.inner.load();
        map.get(name).cloned().ok_or_else(|| {
            let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
            names.sort_unstable();
            InferError::NotFound(format!(
                "unknown model {name:?}; served models are {names:?}"
            ))
        })
    }

    /// The model that answers for `name` (and `version`, when the URL names
    /// one) in metadata, configuration and statistics: the version's
    /// deployment, else the endpoint's primary.
    pub fn served(&self, name: &str, version: Option<&str>) -> Result<Served, InferError> {
        let endpoint = self.endpoint(name)?;
        let d = match version {
            Some(v) => endpoint.by_version(v).cloned().ok_or_else(|| {
                InferError::NotFound(format!(
                    "model {name:?} has no version {v:?} loaded; the served versions are {:?}",
                    endpoint.versions()
                ))
            })?,
            None => Arc::clone(endpoint.primary()),
        };
        Ok(Served {
            model: Arc::clone(&d.model),
            endpoint,
        })
    }

    /// Picks the deployment for one request: the one named by `pin` (the
    /// deployment header), else the one serving the URL's `version`, else
    /// by weight.
    pub fn route(
        &self,
        name: &str,
        version: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Routed, InferError> {
        let endpoint = self.endpoint(name)?;
        let deployment = match (pin, version) {
            (Some(p), _) => {
                let d = endpoint.by_name(p).ok_or_else(|| {
                    InferError::NotFound(format!(
                        "model {name:?} has no deployment {p:?} ({DEPLOYMENT_HEADER}); its deployments are {:?}",
                        endpoint.deployments.iter().map(|d| &d.name).collect::<Vec<_>>()
                    ))
                })?;
                if let Some(v) = version.filter(|v| !d.model.has_version(v)) {
                    return Err(InferError::NotFound(format!(
                        "deployment {p:?} of model {name:?} serves version {:?}, not {v:?}",
                        d.model.version_label
                    )));
                }
                Arc::clone(d)
            }
            (None, Some(v)) => Arc::clone(endpoint.by_version(v).ok_or_else(|| {
                InferError::NotFound(format!(
                    "model {name:?} has no version {v:?} loaded; the served versions are {:?}",
                    endpoint.versions()
                ))
            })?),
            (None, None) => Arc::clone(endpoint.next_weighted()),
        };
        let mirror = endpoint.mirror_for(&deployment);
        Ok(Routed {
            endpoint,
            deployment,
            mirror,
            pool: Arc::clone(&self.pool),
        })
    }

    /// Every endpoint, by name.
    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        let mut v: Vec<Arc<Endpoint>> = self.inner.load().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every distinct model version served (a version deployed twice with
    /// different settings counts twice).
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.all()
            .iter()
            .flat_map(|e| e.deployments.iter().map(|d| Arc::clone(&d.model)))
            .collect()
    }

    /// Whether any deployment serves `model` version `version` now.
    pub fn serves(&self, model: &str, version: u64) -> Vec<String> {
        self.all()
            .iter()
            .flat_map(|e| e.deployments.iter())
            .filter(|d| d.model.name == model && d.model.version == version)
            .map(|d| format!("{}/{}", d.endpoint, d.name))
            .collect()
    }

    /// Drops the table's references: each model's threads exit once the
    /// last request holding it has finished.
    pub fn clear(&self) {
        self.inner.store(Arc::new(HashMap::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_give_each_weight_exactly_and_interleave() {
        let slots = smooth_slots(&[90, 10]);
        assert_eq!(slots.len(), 100);
        assert_eq!(slots.iter().filter(|&&s| s == 1).count(), 10);
        // Never two of the small one in a row, nor a run of more than 9 of
        // the large one.
        let runs = slots.split(|&s| s == 1).map(<[u8]>::len).max().unwrap();
        assert!(runs <= 10, "{slots:?}");
        let slots = smooth_slots(&[34, 33, 33]);
        for i in 0..3u8 {
            let n = slots.iter().filter(|&&s| s == i).count() as u32;
            assert_eq!(n, [34, 33, 33][i as usize]);
        }
        assert_eq!(smooth_slots(&[100, 0]), vec![0u8; 100]);
    }

    #[test]
    fn weights_are_scaled_to_100() {
        assert_eq!(apportion(&[90, 10], 100), [90, 10]);
        assert_eq!(apportion(&[30, 0], 100), [100, 0]);
        assert_eq!(apportion(&[0, 0, 0], 100), [34, 33, 33]);
        assert_eq!(apportion(&[1, 1, 1], 100).iter().sum::<u32>(), 100);
    }
}
