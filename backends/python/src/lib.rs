//! The `python` backend: Azure-ML-style entry scripts (`score.py` with
//! `init()` and `run()`) run in worker processes, one per instance, fed
//! whole batches by the scheduler like any other backend.
//!
//! The worker harness (`harness.py`) is compiled into the binary and written
//! out at start; users install nothing of ferroserve into their Python. The
//! server and a worker speak a framed binary protocol over the worker's
//! stdin/stdout ([`protocol`]), so tensors travel as raw bytes. A worker
//! that crashes, exits or hangs is killed and restarted with backoff
//! ([`worker`]); only the batch it held fails. A bundle's `requirements.txt`
//! gets a virtual environment of its own, shared by every bundle with the
//! same requirements ([`env`]).
//!
//! Two call styles:
//! - `raw` (Azure ML's): `run(raw_data: str)` gets a request body and
//!   returns anything JSON-serialisable. The backend's signature is one
//!   BYTES input `raw` and one BYTES output `result` (the JSON text); a
//!   batch of N bodies is N calls in the worker.
//! - `tensor`: `run(inputs: dict[str, numpy.ndarray]) -> dict[str,
//!   numpy.ndarray]` gets whole batches; the signature is the manifest's.
//!
//! This crate knows Python worker processes and `backends/core` only: not the
//! protocol, the scheduler, the registry or the server (the raw style says so
//! through `Capabilities::raw_body`, readiness through `Health`).

pub mod env;
pub mod frames;
pub mod protocol;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferroserve_backend_core::{
    Backend, BackendError, Capabilities, DataType, Health, Signature, Tensor, TensorSpec,
};

pub use env::PipOptions;
pub use worker::PoolStatus;
use worker::{Worker, WorkerError, WorkerSpec};

/// The harness, as compiled into the binary.
pub const HARNESS: &str = include_str!("harness.py");

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("Python environment: {0}")]
    Env(String),
    #[error("cannot write the worker harness: {0}")]
    Harness(String),
}

/// Server-wide settings of the Python backend.
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// Interpreter for bundles without requirements, and the base of every
    /// virtual environment.
    pub python: PathBuf,
    /// Where environments (and the harness) are kept.
    pub envs_root: PathBuf,
    pub pip: PipOptions,
    /// How long a worker's import and `init()` may take.
    pub init_timeout: Duration,
}

impl Default for PythonConfig {
    fn default() -> Self {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        PythonConfig {
            python: PathBuf::from("python3"),
            envs_root: cache.join("ferroserve").join("python-envs"),
            pip: PipOptions::default(),
            init_timeout: Duration::from_secs(300),
        }
    }
}

static CONFIG: OnceLock<(PythonConfig, PathBuf)> = OnceLock::new();

/// Sets the configuration and writes the harness out; the first call wins.
/// Returns the harness's path.
pub fn configure(config: PythonConfig) -> Result<PathBuf, PythonError> {
    static CONFIGURING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CONFIGURING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, harness)) = CONFIG.get() {
        return Ok(harness.clone());
    }
    let harness = write_harness(&config.envs_root)?;
    let _ = CONFIG.set((config, harness.clone()));
    Ok(CONFIG.get().expect("set above").1.clone())
}

fn configured() -> Result<&'static (PythonConfig, PathBuf), PythonError> {
    if CONFIG.get().is_none() {
        configure(PythonConfig::default())?;
    }
    Ok(CONFIG.get().expect("configured above"))
}

/// Writes `harness-HASH.py` into `root` (atomically, once per content).
fn write_harness(root: &Path) -> Result<PathBuf, PythonError> {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(HARNESS.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(root)
        .map_err(|e| PythonError::Harness(format!("{}: {e}", root.display())))?;
    let path = root.join(format!("harness-{hash}.py"));
    if std::fs::read(&path).is_ok_and(|b| b == HARNESS.as_bytes()) {
        return Ok(path);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = root.join(format!(".harness-{hash}-{}-{nanos}.py", std::process::id()));
    std::fs::write(&tmp, HARNESS)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| PythonError::Harness(format!("{}: {e}", path.display())))?;
    Ok(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Raw,
    Tensor,
}

impl Style {
    fn as_str(self) -> &'static str {
        match self {
            Style::Raw => "raw",
            Style::Tensor => "tensor",
        }
    }
}

/// The raw style's fixed signature: request bodies in, JSON texts out.
pub fn raw_signature(batched: bool) -> Signature {
    let shape = vec![if batched { -1 } else { 1 }];
    Signature {
        inputs: vec![TensorSpec {
            name: "raw".into(),
            dtype: DataType::Bytes,
            shape: shape.clone(),
        }],
        outputs: vec![TensorSpec {
            name: "result".into(),
            dtype: DataType::Bytes,
            shape,
        }],
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub script: PathBuf,
    pub bundle_dir: PathBuf,
    pub style: Style,
    pub requirements: Option<PathBuf>,
    /// `model:version`, for log lines.
    pub label: String,
    pub instances: usize,
    /// Tensor style: the manifest's; raw style: [`raw_signature`].
    pub signature: Signature,
    /// How long one batch may take before its worker is killed.
    pub run_timeout: Duration,
}

/// Builds the environment (if the bundle has requirements) and starts one
/// worker per instance. Workers whose `init()` fails do not make this
/// fail: `status` then says why the model is not ready.
pub fn load(spec: &LoadSpec) -> Result<(Vec<PythonBackend>, Arc<PoolStatus>), PythonError> {
    let (config, harness) = configured()?;
    let python = match &spec.requirements {
        Some(r) => env::ensure(r, &config.python, &config.envs_root, &config.pip)?,
        None => config.python.clone(),
    };
    let status = Arc::new(PoolStatus::default());
    let backends = (0..spec.instances)
        .map(|index| {
            let worker = Worker::start(
                WorkerSpec {
                    python: python.clone(),
                    harness: harness.clone(),
                    script: spec.script.clone(),
                    bundle_dir: spec.bundle_dir.clone(),
                    style: spec.style.as_str(),
                    label: spec.label.clone(),
                    index,
                    init_timeout: config.init_timeout,
                },
                Arc::clone(&status),
            );
            PythonBackend {
                worker,
                signature: spec.signature.clone(),
                run_timeout: spec.run_timeout,
                style: spec.style,
                status: Arc::clone(&status),
            }
        })
        .collect();
    Ok((backends, status))
}

/// One instance: one worker process.
pub struct PythonBackend {
    worker: Worker,
    signature: Signature,
    run_timeout: Duration,
    style: Style,
    status: Arc<PoolStatus>,
}

impl Backend for PythonBackend {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            raw_body: self.style == Style::Raw,
        }
    }

    fn health(&self) -> Option<Arc<dyn Health>> {
        Some(Arc::clone(&self.status) as Arc<dyn Health>)
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let named: Vec<(&str, &Tensor)> = self
            .signature
            .inputs
            .iter()
            .map(|s| s.name.as_str())
            .zip(inputs.iter())
            .collect();
        let rows = inputs.first().and_then(|t| t.shape.first().copied());
        let mut out = self
            .worker
            .run(&named, self.run_timeout)
            .map_err(|e| match e {
                WorkerError::Init(why) => {
                    BackendError::Run(format!("the model is not ready: {why}"))
                }
                WorkerError::Lost(why) | WorkerError::Raised(why) => BackendError::Run(why),
            })?;
        let returned: Vec<String> = out.iter().map(|(n, _)| n.clone()).collect();
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let i = out
                    .iter()
                    .position(|(n, _)| n == &spec.name)
                    .ok_or_else(|| {
                        BackendError::Run(format!(
                            "run() returned no output {:?} (it returned {returned:?})",
                            spec.name
                        ))
                    })?;
                let (_, t) = out.swap_remove(i);
                if t.dtype != spec.dtype {
                    return Err(BackendError::Run(format!(
                        "run() returned output {:?} as {}, expected {}",
                        spec.name, t.dtype, spec.dtype
                    )));
                }
                if spec.shape.first() == Some(&-1) && t.shape.first().copied() != rows {
                    return Err(BackendError::Run(format!(
                        "run() returned {:?} rows of output {:?} for a batch of {:?} rows",
                        t.shape.first(),
                        spec.name,
                        rows
                    )));
                }
                Ok(t)
            })
            .collect()
    }
}
