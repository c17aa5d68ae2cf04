//! A loaded model version: its manifest, the signature it serves and the
//! scheduler that runs it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve_backend_core::{Backend, Capabilities, Health, Signature, Tensor};
use ferroserve_backend_ort::{OrtBackend, OrtOptions};
use ferroserve_backend_python::{LoadSpec as PyLoadSpec, Style as PyStyle};
use ferroserve_protocol::classification::Classifier;
use tokio::sync::oneshot;

use crate::infer::{InferError, InferOutput};
use crate::infer_stats::InferStats;
use crate::manifest::{BackendKind, Manifest, ManifestError};
use crate::metrics::{ModelMetrics, ModelSeries};
use crate::scheduler::{BatchPolicy, Job, Scheduler};
use crate::validate;

/// How a model version is loaded: the names its metrics carry and the
/// families they are recorded in.
#[derive(Clone, Default)]
pub struct LoadSettings {
    /// The version number it answers as (`model_version`). `None`: the
    /// bundle folder's name when it is a number, else 1.
    pub version: Option<u64>,
    /// The endpoint and deployment that label its metrics. `None`: the
    /// model's own name and `default`, as for a model served outside any
    /// endpoint configuration.
    pub endpoint: Option<String>,
    pub deployment: Option<String>,
    /// Where its metrics go: the server passes the families its `/metrics`
    /// renders; by default a private set nobody scrapes.
    pub series: ModelSeries,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Backend(#[from] ferroserve_backend_core::BackendError),
    #[error("cannot start threads for model {name:?}: {source}")]
    Threads {
        name: String,
        source: std::io::Error,
    },
}

pub struct Model {
    pub name: String,
    pub version: u64,
    /// `version` as a string, kept for metrics labels and URLs.
    pub version_label: String,
    pub manifest: Manifest,
    pub signature: Signature,
    pub metrics: ModelMetrics,
    /// Triton's statistics extension: what this loaded version has done.
    pub stats: Arc<InferStats>,
    scheduler: Scheduler,
    /// What the backend offers beyond running batches (raw bodies).
    capabilities: Capabilities,
    /// Whether the backend can answer now (a Python script whose `init()`
    /// failed cannot); `None` for backends that are ready once loaded.
    health: Option<Arc<dyn Health>>,
    /// Per-kernel device time, for backends that measure it (OpenCL).
    pub device_timings: Option<Arc<ferroserve_backend_core::DeviceTimings>>,
}

impl Model {
    /// Loads the bundle in `dir` (its `bundle.toml`, or the `config.pbtxt`
    /// of the Triton model it is a version folder of): `count` sessions of
    /// its model, checked against the manifest, behind a started scheduler.
    /// Blocking: call it off the async runtime. ONNX models need ONNX
    /// Runtime loaded first ([`crate::onnxruntime::init`]).
    pub fn load(dir: &Path, settings: &LoadSettings) -> Result<Model, LoadError> {
        let manifest = Manifest::load(dir)?;
        let version = settings.version.or_else(|| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
        });
        Model::from_manifest(
            manifest,
            &LoadSettings {
                version: Some(version.unwrap_or(1)),
                ..settings.clone()
            },
        )
    }

    /// [`Model::load`] of a manifest already read.
    pub fn from_manifest(manifest: Manifest, settings: &LoadSettings) -> Result<Model, LoadError> {
        let version = settings.version.unwrap_or(1);
        let endpoint = settings.endpoint.as_deref().unwrap_or(&manifest.name);
        let deployment = settings.deployment.as_deref().unwrap_or("default");
        let threads = match manifest.instances.intra_op_threads {
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / manifest.instances.count).max(1)
            }
            n => n,
        };
        let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(manifest.instances.count);
        match manifest.backend {
            BackendKind::Onnx => {
                for _ in 0..manifest.instances.count {
                    backends.push(Box::new(OrtBackend::load(
                        &manifest.model_path,
                        &OrtOptions {
                            intra_op_threads: threads,
                            inter_op_threads: 0,
                        },
                    )?));
                }
            }
            BackendKind::Python => {
                let settings = manifest
                    .python
                    .as_ref()
                    .expect("manifest validation requires [python] for python bundles");
                let signature = match settings.style {
                    PyStyle::Raw => ferroserve_backend_python::raw_signature(
                        manifest.batching.max_batch_size > 0,
                    ),
                    PyStyle::Tensor => manifest.declared.clone(),
                };
                // Workers run in the bundle folder: paths must not depend
                // on the server's current directory.
                let absolute = |p: &std::path::Path| {
                    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
                };
                let (workers, _status) = ferroserve_backend_python::load(&PyLoadSpec {
                    script: absolute(&manifest.model_path),
                    bundle_dir: absolute(&manifest.dir),
                    style: settings.style,
                    requirements: settings.requirements.clone(),
                    label: format!("{}:{version}", manifest.name),
                    instances: manifest.instances.count,
                    signature,
                    run_timeout: manifest.batching.timeout(),
                })
                .map_err(|e| {
                    LoadError::Backend(ferroserve_backend_core::BackendError::Load(e.to_string()))
                })?;
                backends.extend(workers.into_iter().map(|w| Box::new(w) as Box<dyn Backend>));
            }
            BackendKind::Opencl => {
                let spec = manifest
                    .opencl
                    .as_ref()
                    .expect("manifest validation fills [opencl] for opencl bundles");
                // One load compiles (or fetches) the program and uploads the
                // weights; each instance gets its own queue and buffers.
                let model = ferroserve_backend_opencl::OpenClModel::load(spec)?;
                tracing::info!(
                    model = %manifest.name,
                    version,
                    device = model.device_name(),
                    program = %model.program_origin,
                    "OpenCL model loaded"
                );
                for _ in 0..manifest.instances.count {
                    backends.push(Box::new(model.session()?));
                }
            }
        }
        let signature = manifest.reconcile(backends[0].signature())?;
        let device_timings = backends[0].device_timings();
        let capabilities = backends[0].capabilities();
        let health = backends[0].health();
        let version_label = version.to_string();
        let model_metrics =
            settings
                .series
                .for_deployment(&manifest.name, &version_label, endpoint, deployment);
        let b = &manifest.batching;
        let stats = Arc::new(InferStats::new(b.max_batch_size));
        let scheduler = Scheduler::start(
            &manifest.name,
            backends,
            BatchPolicy {
                max_batch_size: b.max_batch_size,
                max_queue_delay: b.max_queue_delay(),
                preferred_batch_sizes: b.preferred_batch_sizes.clone(),
            },
            b.max_queue_size,
            model_metrics.batch_rows.clone(),
            Arc::clone(&stats),
        )
        .map_err(|source| LoadError::Threads {
            name: manifest.name.clone(),
            source,
        })?;
        Ok(Model {
            name: manifest.name.clone(),
            version,
            version_label,
            signature,
            manifest,
            metrics: model_metrics,
            stats,
            scheduler,
            capabilities,
            health,
            device_timings,
        })
    }

    /// Checks that the model can answer and that the inputs fit its
    /// signature: what a request must pass to reach the model.
    fn accept(&self, named: Vec<(String, Tensor)>) -> Result<(Vec<Tensor>, usize), InferError> {
        if let Some(why) = self.not_ready() {
            return Err(InferError::Unavailable(format!(
                "model {:?} version {} is not ready: {why}",
                self.name, self.version
            )));
        }
        validate::inputs(
            &self.signature,
            self.manifest.batching.max_batch_size,
            named,
        )
    }

    /// Queues accepted inputs and waits for the answer, at most until the
    /// request's deadline.
    async fn queue_and_wait(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        timeout: Option<Duration>,
        counted: bool,
    ) -> Result<InferOutput, InferError> {
        let limit = timeout.map_or(self.manifest.batching.timeout(), |t| {
            t.min(self.manifest.batching.timeout())
        });
        let now = Instant::now();
        let deadline = now + limit;
        let (reply, rx) = oneshot::channel();
        self.scheduler.submit(Job {
            inputs,
            rows,
            enqueued: now,
            deadline,
            reply,
            counted,
        })?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferError::Backend(
                "the model's worker stopped before answering".into(),
            )),
            Err(_) => Err(InferError::Timeout(format!(
                "request timed out after {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// Runs one request through the batcher and waits for its answer, at
    /// most until its deadline. Shared by every front end, so queue and
    /// compute time are recorded the same way whichever protocol asked:
    /// in the metrics, and in the statistics extension (see
    /// [`crate::infer_stats`] for what counts).
    pub async fn infer(
        &self,
        named: Vec<(String, Tensor)>,
        timeout: Option<Duration>,
    ) -> Result<InferOutput, InferError> {
        self.run(named, timeout, true).await
    }

    /// [`Model::infer`] left out of the statistics extension: warm-up
    /// requests, which no client sent.
    pub async fn infer_uncounted(
        &self,
        named: Vec<(String, Tensor)>,
        timeout: Option<Duration>,
    ) -> Result<InferOutput, InferError> {
        self.run(named, timeout, false).await
    }

    async fn run(
        &self,
        named: Vec<(String, Tensor)>,
        timeout: Option<Duration>,
        counted: bool,
    ) -> Result<InferOutput, InferError> {
        let started = Instant::now();
        // Refused here, the request never reached the model: not counted.
        let (inputs, rows) = self.accept(named)?;
        let result = self.queue_and_wait(inputs, rows, timeout, counted).await;
        if counted {
            match &result {
                Ok(out) => self
                    .stats
                    .success(started.elapsed(), out.queue_time, &out.batch),
                Err(_) => self.stats.failure(started.elapsed()),
            }
        }
        let output = result?;
        self.metrics
            .queue_duration
            .observe(output.queue_time.as_secs_f64());
        self.metrics
            .compute_duration
            .observe(output.compute_time.as_secs_f64());
        Ok(output)
    }

    /// Counts a finished request by outcome and records its total time.
    pub fn record<T>(&self, result: &Result<T, InferError>, started: Instant) {
        match result {
            Ok(_) => self.metrics.success.inc(),
            Err(e) => self.metrics.failure(e.outcome()),
        }
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn queue_depth(&self) -> usize {
        self.scheduler.queue_depth()
    }

    /// The model's platform as Triton names it in model metadata.
    pub fn platform(&self) -> &'static str {
        match self.manifest.backend {
            BackendKind::Onnx => "onnxruntime_onnx",
            BackendKind::Python => "python",
            BackendKind::Opencl => "opencl",
        }
    }

    /// Why the model cannot answer (a Python script whose `init()`
    /// failed, with its traceback); `None` when it can.
    pub fn not_ready(&self) -> Option<String> {
        self.health.as_ref().and_then(|h| h.failure())
    }

    /// What the backend offers beyond running batches: whether it takes
    /// raw request bodies (`/score`).
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Whether `v` (from a URL) names this model's version.
    pub fn has_version(&self, v: &str) -> bool {
        v == self.version_label
    }

    /// The class labels of output `output` (from its manifest's `labels`
    /// file), for the classification extension.
    pub fn labels(&self, output: &str) -> Option<&[String]> {
        self.manifest.labels.get(output).map(|l| l.as_slice())
    }

    /// What the classification extension needs of this model.
    pub fn classifier(&self) -> Classifier<'_> {
        Classifier {
            signature: &self.signature,
            batched: self.manifest.batching.max_batch_size > 0,
            labels: &self.manifest.labels,
        }
    }
}
