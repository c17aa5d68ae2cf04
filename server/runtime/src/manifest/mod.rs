//! A bundle's manifest: what a bundle declares about itself, read from its
//! `bundle.toml` or, for a version folder of a Triton model, from the
//! model's `config.pbtxt` ([`pbtxt`]).
//!
//! Parsing is strict (unknown keys are errors) because a misspelt batching
//! key silently falling back to a default is the kind of mistake that only
//! shows up as bad latency in production.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferroserve_backend_core::{DataType, Signature, TensorSpec};
use serde::Deserialize;

pub mod capture;
pub mod drift;
pub mod pbtxt;
mod positions;

pub use capture::{CaptureConfig, CaptureOverride};
pub use drift::{DriftConfig, DriftObserve, DriftOverride};

pub const MANIFEST_FILE: &str = "bundle.toml";

/// An error in a bundle's manifest or in how it matches its model: always
/// names the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {problem}", file.display())]
pub struct ManifestError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Onnx,
    Opencl,
    Python,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Onnx => "onnx",
            BackendKind::Opencl => "opencl",
            BackendKind::Python => "python",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    description: String,
    backend: BackendKind,
    model: String,
    /// A JSON file in the bundle: one v2 inference request, or a list of
    /// them, run through a new version before it receives traffic.
    #[serde(default)]
    warmup: Option<String>,
    #[serde(default)]
    inputs: Vec<RawTensor>,
    #[serde(default)]
    outputs: Vec<RawTensor>,
    #[serde(default)]
    batching: Batching,
    #[serde(default)]
    instances: Instances,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    python: Option<RawPython>,
    #[serde(default)]
    opencl: Option<RawOpencl>,
    #[serde(default)]
    capture: Option<capture::RawCapture>,
    #[serde(default)]
    drift: Option<drift::RawDrift>,
}

/// `[opencl]`, for `backend = "opencl"` bundles: which device by name (when
/// `instances.device` is plain `"opencl"`), and precompiled program binaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpencl {
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    device: Option<String>,
    /// Device-name pattern -> program binary file in the bundle (an FPGA
    /// `.aocx`/`.xclbin`, or `ferroserve opencl build-binary` output).
    #[serde(default)]
    binaries: BTreeMap<String, String>,
}

/// `[python]`, for `backend = "python"` bundles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPython {
    style: String,
    #[serde(default)]
    requirements: Option<String>,
}

/// How a `python` bundle's entry script is called (see
/// `ferroserve_backend_python`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSettings {
    pub style: ferroserve_backend_python::Style,
    /// The requirements file, if the bundle has one.
    pub requirements: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    /// Outputs only: a file in the bundle folder with one class label per
    /// line (Triton's `label_filename`), used by the classification extension.
    #[serde(default)]
    labels: Option<String>,
    /// The names of the columns of a `[-1, k]` tensor, one per column: the
    /// capture's column names and the drift statistics' feature names.
    #[serde(default)]
    feature_names: Option<Vec<String>>,
}

/// Dynamic batching settings, named as Triton users know them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most rows in one batch; 0 means the model has no batch dimension and
    /// every request runs alone.
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
    pub preferred_batch_sizes: Vec<usize>,
    pub max_queue_size: usize,
    pub timeout_ms: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_size: 0,
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 1024,
            timeout_ms: 30_000,
        }
    }
}

impl Batching {
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_micros(self.max_queue_delay_us)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Instances {
    pub count: usize,
    pub device: String,
    /// ONNX Runtime intra-op threads per instance; 0 lets the server pick
    /// (the machine's cores divided among the instances).
    pub intra_op_threads: usize,
}

impl Default for Instances {
    fn default() -> Self {
        Instances {
            count: 1,
            device: "cpu".into(),
            intra_op_threads: 0,
        }
    }
}

/// Which versions of a model are served (Triton's `version_policy`). A
/// ferroserve bundle is always `Latest(1)`: its endpoints choose versions;
/// a Triton repository's `config.pbtxt` may ask for more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest N versions (Triton's default is 1).
    Latest(u32),
    /// Every version folder.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

/// A validated manifest. `declared` holds the signature the manifest states,
/// if it states one; [`Manifest::reconcile`] checks it against the model.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub dir: PathBuf,
    pub name: String,
    pub description: String,
    pub backend: BackendKind,
    pub model_path: PathBuf,
    /// The warm-up samples file, if the bundle has one.
    pub warmup: Option<PathBuf>,
    /// `backend = "python"` only.
    pub python: Option<PythonSettings>,
    /// `backend = "opencl"` only: the device and any program binaries.
    pub opencl: Option<ferroserve_backend_opencl::LoadSpec>,
    pub declared: Signature,
    pub batching: Batching,
    pub instances: Instances,
    pub tags: BTreeMap<String, String>,
    /// Class labels by output name, read once from the files named by
    /// `[[outputs]] labels`; line N labels class index N.
    pub labels: BTreeMap<String, Arc<Vec<String>>>,
    /// The file each output's labels came from, as the manifest names it
    /// (Triton's `label_filename`).
    pub label_files: BTreeMap<String, String>,
    /// Input name -> Triton's `format` of it (`FORMAT_NCHW`, ...), where a
    /// `config.pbtxt` gives one: echoed by the model configuration
    /// extension, not applied. Empty for bundles.
    pub input_formats: BTreeMap<String, String>,
    /// Which versions are served; `Latest(1)` for ferroserve bundles.
    pub version_policy: VersionPolicy,
    /// `[capture]`: sampled requests copied to Parquet files.
    pub capture: Option<CaptureConfig>,
    /// `[drift]`, or its defaults.
    pub drift: DriftConfig,
    /// Tensor name -> the names of its columns (`feature_names`).
    pub feature_names: BTreeMap<String, Vec<String>>,
}

/// Each tensor's `feature_names`, checked against its shape: `[-1, k]`
/// (or `[-1]` for one name), as many names as columns, none twice.
fn feature_names(raw: &RawManifest) -> Result<BTreeMap<String, Vec<String>>, (String, String)> {
    let mut out = BTreeMap::new();
    for (section, list) in [("inputs", &raw.inputs), ("outputs", &raw.outputs)] {
        for (i, t) in list.iter().enumerate() {
            let Some(names) = &t.feature_names else {
                continue;
            };
            let key = format!("{section}[{i}].feature_names");
            let columns = match t.shape[..] {
                [-1] => Some(1),
                [-1, k] => (k >= 0).then_some(k as usize),
                _ => {
                    return Err((
                        key,
                        format!(
                            "names the columns of a [-1, k] tensor; {:?} has shape {:?}",
                            t.name, t.shape
                        ),
                    ))
                }
            };
            if let Some(k) = columns {
                if names.len() != k {
                    return Err((
                        key,
                        format!(
                            "expected {k} names (one per column of shape {:?}), got {}",
                            t.shape,
                            names.len()
                        ),
                    ));
                }
            }
            for (j, n) in names.iter().enumerate() {
                if n.trim().is_empty() {
                    return Err((
                        format!("{key}[{j}]"),
                        "expected a name, got an empty one".into(),
                    ));
                }
                if names[..j].contains(n) {
                    return Err((format!("{key}[{j}]"), format!("{n:?} is listed twice")));
                }
            }
            out.insert(t.name.clone(), names.clone());
        }
    }
    Ok(out)
}

impl Manifest {
    /// Reads and validates `DIR/bundle.toml`, including that the model file exists.
    ///
    /// A Triton version folder (`DIR` without `bundle.toml`, with
    /// `DIR/../config.pbtxt`) is read from that config instead (see
    /// [`pbtxt`]); each setting it ignores is logged.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let file = dir.join(MANIFEST_FILE);
        if !file.exists() && pbtxt::config_of_version_dir(dir).is_some() {
            return pbtxt::load_version(dir);
        }
        let err = |key: &str, problem: String| ManifestError {
            file: file.clone(),
            key: key.to_string(),
            problem,
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| err("(file)", format!("cannot read: {e}")))?;
        let raw: RawManifest = toml::from_str(&text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            err(
                &format!("line {line} column {col}"),
                e.message().trim().to_string(),
            )
        })?;
        Manifest::validate(raw, file.clone(), dir)
    }

    fn validate(raw: RawManifest, file: PathBuf, dir: &Path) -> Result<Manifest, ManifestError> {
        let err = |key: String, problem: String| ManifestError {
            file: file.clone(),
            key,
            problem,
        };
        if raw.name.is_empty() || raw.name.contains(['/', ' ']) {
            return Err(err(
                "name".into(),
                format!(
                    "expected a non-empty name without '/' or spaces, got {:?}",
                    raw.name
                ),
            ));
        }
        let model_path = dir.join(&raw.model);
        if !model_path.is_file() {
            return Err(err(
                "model".into(),
                format!(
                    "model file {:?} not found at {}",
                    raw.model,
                    model_path.display()
                ),
            ));
        }
        let warmup = match &raw.warmup {
            None => None,
            Some(w) => {
                let path = dir.join(w);
                if !path.is_file() {
                    return Err(err(
                        "warmup".into(),
                        format!("warm-up samples file {w:?} not found at {}", path.display()),
                    ));
                }
                Some(path)
            }
        };
        let mut declared = Signature::default();
        for (section, list, out) in [
            ("inputs", &raw.inputs, &mut declared.inputs),
            ("outputs", &raw.outputs, &mut declared.outputs),
        ] {
            for (i, t) in list.iter().enumerate() {
                let dtype: DataType = t
                    .datatype
                    .parse()
                    .map_err(|e| err(format!("{section}[{i}].datatype"), format!("{e}")))?;
                if let Some(d) = t.shape.iter().find(|&&d| d < -1) {
                    return Err(err(
                        format!("{section}[{i}].shape"),
                        format!(
                            "dimension {d} in {:?}: expected -1 (any) or a size >= 0",
                            t.shape
                        ),
                    ));
                }
                if out.iter().any(|s: &TensorSpec| s.name == t.name) {
                    return Err(err(
                        format!("{section}[{i}].name"),
                        format!("{:?} is declared twice", t.name),
                    ));
                }
                out.push(TensorSpec {
                    name: t.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                });
            }
        }
        let mut labels = BTreeMap::new();
        let mut label_files = BTreeMap::new();
        if let Some(i) = raw.inputs.iter().position(|t| t.labels.is_some()) {
            return Err(err(
                format!("inputs[{i}].labels"),
                "labels belong on an [[outputs]] entry (the classification extension labels a model's output classes), not on an input".into(),
            ));
        }
        for (i, t) in raw.outputs.iter().enumerate() {
            let Some(file_name) = &t.labels else { continue };
            let key = format!("outputs[{i}].labels");
            let dtype = declared.outputs[i].dtype;
            if matches!(dtype, DataType::Bytes | DataType::Bool) {
                return Err(err(
                    key,
                    format!(
                        "output {:?} is {dtype}; classification labels need a numeric output",
                        t.name
                    ),
                ));
            }
            let list = read_labels(dir, file_name).map_err(|problem| err(key, problem))?;
            labels.insert(t.name.clone(), Arc::new(list));
            label_files.insert(t.name.clone(), file_name.clone());
        }
        let b = &raw.batching;
        for &p in &b.preferred_batch_sizes {
            if p == 0 || (b.max_batch_size > 0 && p > b.max_batch_size) || b.max_batch_size == 0 {
                return Err(err(
                    "batching.preferred_batch_sizes".into(),
                    format!(
                        "{p} is not between 1 and max_batch_size ({})",
                        b.max_batch_size
                    ),
                ));
            }
        }
        if b.max_queue_size == 0 {
            return Err(err(
                "batching.max_queue_size".into(),
                "expected at least 1, got 0".into(),
            ));
        }
        if b.timeout_ms == 0 {
            return Err(err(
                "batching.timeout_ms".into(),
                "expected at least 1, got 0".into(),
            ));
        }
        if b.max_batch_size > 0 {
            for (section, list) in [("inputs", &declared.inputs), ("outputs", &declared.outputs)] {
                for (i, t) in list.iter().enumerate() {
                    if t.shape.first() != Some(&-1) {
                        return Err(err(
                            format!("{section}[{i}].shape"),
                            format!(
                                "batching.max_batch_size is {} so dim 0 must be -1 (the batch), got {:?}",
                                b.max_batch_size, t.shape
                            ),
                        ));
                    }
                }
            }
        }
        if raw.instances.count == 0 {
            return Err(err(
                "instances.count".into(),
                "expected at least 1, got 0".into(),
            ));
        }
        let python = match (&raw.backend, &raw.python) {
            (BackendKind::Python, None) => {
                return Err(err(
                    "python".into(),
                    "a python bundle needs a [python] section with style = \"raw\" or \"tensor\""
                        .into(),
                ))
            }
            (BackendKind::Python, Some(p)) => {
                let style = match p.style.as_str() {
                    "raw" => ferroserve_backend_python::Style::Raw,
                    "tensor" => ferroserve_backend_python::Style::Tensor,
                    other => {
                        return Err(err(
                            "python.style".into(),
                            format!("expected \"raw\" or \"tensor\", got {other:?}"),
                        ))
                    }
                };
                let declared_any = !declared.inputs.is_empty() || !declared.outputs.is_empty();
                match style {
                    ferroserve_backend_python::Style::Raw if declared_any => {
                        return Err(err(
                            "inputs".into(),
                            "a raw-style script takes the request body as is: declare no [[inputs]] or [[outputs]] (it is served with a BYTES input \"raw\" and a BYTES output \"result\")".into(),
                        ))
                    }
                    ferroserve_backend_python::Style::Tensor
                        if declared.inputs.is_empty() || declared.outputs.is_empty() =>
                    {
                        return Err(err(
                            "inputs".into(),
                            "a tensor-style script needs its [[inputs]] and [[outputs]] declared (name, datatype, shape)".into(),
                        ))
                    }
                    _ => {}
                }
                let requirements = match &p.requirements {
                    None => None,
                    Some(r) => {
                        let path = dir.join(r);
                        if !path.is_file() {
                            return Err(err(
                                "python.requirements".into(),
                                format!("requirements file {r:?} not found at {}", path.display()),
                            ));
                        }
                        Some(path)
                    }
                };
                Some(PythonSettings {
                    style,
                    requirements,
                })
            }
            (_, Some(_)) => {
                return Err(err(
                    "python".into(),
                    format!(
                    "[python] only applies to backend = \"python\", this bundle's backend is {:?}",
                    raw.backend.to_string()
                ),
                ))
            }
            (_, None) => None,
        };
        let opencl = opencl_settings(&raw, &model_path, dir).map_err(|(k, p)| err(k, p))?;
        let capture = match raw.capture.clone() {
            None => None,
            Some(c) => Some(capture::validate(c).map_err(|(k, p)| err(k, p))?),
        };
        let drift = match raw.drift.clone() {
            None => DriftConfig::default(),
            Some(d) => drift::validate(d).map_err(|(k, p)| err(k, p))?,
        };
        drift::check_source(&drift, capture.is_some()).map_err(|(k, p)| err(k, p))?;
        let feature_names = feature_names(&raw).map_err(|(k, p)| err(k, p))?;
        if raw.backend != BackendKind::Opencl && raw.instances.device != "cpu" {
            return Err(err(
                "instances.device".into(),
                format!(
                    "expected \"cpu\" for a {} bundle, got {:?} (\"opencl:N\" needs backend = \"opencl\")",
                    raw.backend, raw.instances.device
                ),
            ));
        }
        Ok(Manifest {
            file: file.clone(),
            dir: dir.to_path_buf(),
            name: raw.name,
            description: raw.description,
            backend: raw.backend,
            model_path,
            warmup,
            python,
            opencl,
            declared,
            batching: raw.batching,
            instances: raw.instances,
            tags: raw.tags,
            labels,
            label_files,
            input_formats: BTreeMap::new(),
            version_policy: VersionPolicy::Latest(1),
            capture,
            drift,
            feature_names,
        })
    }

    /// Checks the declared signature against the one the model reports and
    /// returns the signature to serve: the declared one where given (it may
    /// pin dims the model leaves free), else the model's own.
    pub fn reconcile(&self, model: &Signature) -> Result<Signature, ManifestError> {
        let err = |key: String, problem: String| ManifestError {
            file: self.file.clone(),
            key,
            problem,
        };
        let mut served = Signature::default();
        for (section, declared, actual, out) in [
            (
                "inputs",
                &self.declared.inputs,
                &model.inputs,
                &mut served.inputs,
            ),
            (
                "outputs",
                &self.declared.outputs,
                &model.outputs,
                &mut served.outputs,
            ),
        ] {
            if declared.is_empty() {
                out.clone_from(actual);
                continue;
            }
            for (i, d) in declared.iter().enumerate() {
                let Some(m) = actual.iter().find(|m| m.name == d.name) else {
                    return Err(err(
                        format!("{section}[{i}].name"),
                        format!(
                            "the model has no {} named {:?}; it has {:?}",
                            &section[..section.len() - 1],
                            d.name,
                            actual.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
                        ),
                    ));
                };
                if d.dtype != m.dtype {
                    return Err(err(
                        format!("{section}[{i}].datatype"),
                        format!(
                            "the model's {:?} is {}, the manifest says {}",
                            d.name, m.dtype, d.dtype
                        ),
                    ));
                }
                let compatible = d.shape.len() == m.shape.len()
                    && d.shape
                        .iter()
                        .zip(&m.shape)
                        .all(|(&dd, &md)| md == -1 || dd == md);
                if !compatible {
                    return Err(err(
                        format!("{section}[{i}].shape"),
                        format!(
                            "the model's {:?} has shape {:?}, the manifest says {:?}",
                            d.name, m.shape, d.shape
                        ),
                    ));
                }
            }
            if section == "inputs" {
                if let Some(m) = actual
                    .iter()
                    .find(|m| !declared.iter().any(|d| d.name == m.name))
                {
                    return Err(err(
                        "inputs".into(),
                        format!(
                            "the model's input {:?} ({} {:?}) is not declared",
                            m.name, m.dtype, m.shape
                        ),
                    ));
                }
            }
            // Keep the model's order, which is the order backends use; an
            // output the manifest leaves out is served as the model reports it.
            for m in actual {
                out.push(
                    declared
                        .iter()
                        .find(|d| d.name == m.name)
                        .unwrap_or(m)
                        .clone(),
                );
            }
        }
        if self.batching.max_batch_size > 0 {
            for (section, list) in [("inputs", &served.inputs), ("outputs", &served.outputs)] {
                if let Some(t) = list.iter().find(|t| t.shape.first() != Some(&-1)) {
                    return Err(err(
                        "batching.max_batch_size".into(),
                        format!(
                            "is {} but the model's {} {:?} has shape {:?} with no free dim 0 to batch on",
                            self.batching.max_batch_size,
                            &section[..section.len() - 1],
                            t.name,
                            t.shape
                        ),
                    ));
                }
            }
        }
        Ok(served)
    }
}

/// Whether `dir` is a version folder [`Manifest::load`] reads: it has a
/// `bundle.toml`, or it is a version folder of a Triton model
/// (`dir/../config.pbtxt`).
pub fn is_bundle_dir(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
        || (dir.is_dir() && pbtxt::config_of_version_dir(dir).is_some())
}

/// Reads a labels file: one label per line, split as Triton splits it
/// (`std::getline`: a final newline does not add an empty label). A
/// trailing `\r` is dropped so files written on Windows work.
pub(crate) fn read_labels(dir: &Path, file_name: &str) -> Result<Vec<String>, String> {
    let path = dir.join(file_name);
    if !path.is_file() {
        return Err(format!(
            "labels file {file_name:?} not found at {}",
            path.display()
        ));
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read labels file {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "labels file {} is not valid UTF-8 (byte {}); expected UTF-8 text, one label per line",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.is_empty() {
        return Err(format!(
            "labels file {} is empty; expected one label per line",
            path.display()
        ));
    }
    let body = text.strip_suffix('\n').unwrap_or(&text);
    Ok(body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

/// Reads `instances.device` and `[opencl]` for an opencl bundle; refuses
/// `[opencl]` on any other.
fn opencl_settings(
    raw: &RawManifest,
    model_path: &Path,
    dir: &Path,
) -> Result<Option<ferroserve_backend_opencl::LoadSpec>, (String, String)> {
    use ferroserve_backend_opencl::{DeviceSelector, LoadSpec};
    if raw.backend != BackendKind::Opencl {
        return match raw.opencl {
            Some(_) => Err((
                "opencl".into(),
                format!(
                    "[opencl] only applies to backend = \"opencl\", this bundle's backend is {:?}",
                    raw.backend.to_string()
                ),
            )),
            None => Ok(None),
        };
    }
    let settings = raw.opencl.clone().unwrap_or(RawOpencl {
        platform: None,
        device: None,
        binaries: BTreeMap::new(),
    });
    let device = raw.instances.device.as_str();
    let by_name = settings.platform.is_some() || settings.device.is_some();
    let selector = match device.strip_prefix("opencl") {
        Some("") => DeviceSelector::Name {
            platform: settings.platform.clone(),
            device: settings.device.clone(),
        },
        Some(n) if by_name => {
            return Err((
                "instances.device".into(),
                format!(
                    "{device:?} picks a device by number, but [opencl] also names one by platform/device; use device = \"opencl\" with the names, or drop them (got {n:?})"
                ),
            ))
        }
        Some(n) => match n.strip_prefix(':').and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => DeviceSelector::Index(i),
            None => {
                return Err((
                    "instances.device".into(),
                    format!("expected \"opencl\" or \"opencl:N\" (N a device number from `ferroserve opencl devices`), got {device:?}"),
                ))
            }
        },
        None => {
            return Err((
                "instances.device".into(),
                format!("expected \"opencl\" or \"opencl:N\" for an opencl bundle, got {device:?}"),
            ))
        }
    };
    let mut binaries = Vec::new();
    for (pattern, file) in &settings.binaries {
        // A binary is part of the bundle: copied, hashed and versioned with
        // it. A path leaving the folder would be none of that.
        let inside = Path::new(file).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !inside {
            return Err((
                format!("opencl.binaries.{pattern:?}"),
                format!("expected a file inside the bundle folder, got {file:?}"),
            ));
        }
        let path = dir.join(file);
        if !path.is_file() {
            return Err((
                format!("opencl.binaries.{pattern:?}"),
                format!("program binary {file:?} not found at {}", path.display()),
            ));
        }
        binaries.push((pattern.clone(), path));
    }
    Ok(Some(LoadSpec {
        model: model_path.to_path_buf(),
        device: selector,
        binaries,
        // The ferroserve binary checks a program binary in a child process
        // (not a test harness that links this crate: it has no such command).
        binary_probe: std::env::current_exe()
            .ok()
            .filter(|p| p.file_stem().is_some_and(|s| s == "ferroserve")),
    }))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_split_into_lines_like_getline() {
        let dir = tempfile::tempdir().unwrap();
        let read = |content: &[u8]| {
            std::fs::write(dir.path().join("l.txt"), content).unwrap();
            read_labels(dir.path(), "l.txt")
        };
        assert_eq!(read(b"a\nb\n").unwrap(), vec!["a", "b"]);
        assert_eq!(read(b"a\nb").unwrap(), vec!["a", "b"]);
        assert_eq!(read(b"a\r\n\r\nc\r\n").unwrap(), vec!["a", "", "c"]);
        assert_eq!(read("ünï cødé\n".as_bytes()).unwrap(), vec!["ünï cødé"]);
        assert!(read(b"").unwrap_err().contains("is empty"));
        assert!(read(b"ok\n\xfe").unwrap_err().contains("not valid UTF-8"));
        let e = read_labels(dir.path(), "missing.txt").unwrap_err();
        assert!(
            e.contains("\"missing.txt\"") && e.contains("not found"),
            "{e}"
        );
    }

    fn onnx_manifest(extra: &str) -> Result<Manifest, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"not read here").unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            format!("name = \"m\"\nbackend = \"onnx\"\nmodel = \"model.onnx\"\n{extra}"),
        )
        .unwrap();
        Manifest::load(dir.path())
    }

    #[test]
    fn capture_settings_are_validated_naming_the_key() {
        let m = onnx_manifest("[capture]\nsink = \"cap\"\n").unwrap();
        let c = m.capture.unwrap();
        assert_eq!(c.sample_rate, 1.0);
        assert!(c.always_errors);
        assert_eq!(c.keep.len(), capture::KEEP_FIELDS.len());
        assert_eq!(c.sink, Path::new("cap"));
        assert_eq!(c.max_file_bytes, 64 << 20);
        let m = onnx_manifest(
            "[capture]\nsink = \"/c\"\nsample_rate = 0.25\nalways_errors = false\nkeep = [\"inputs\", \"request_id\"]\nmax_file_mb = 2\n",
        )
        .unwrap();
        let c = m.capture.unwrap();
        assert_eq!((c.sample_rate, c.always_errors), (0.25, false));
        assert!(c.keeps("inputs") && !c.keeps("outputs"));
        assert_eq!(c.max_file_bytes, 2 << 20);
        assert!(onnx_manifest("").unwrap().capture.is_none());
        for (extra, key, says) in [
            (
                "sample_rate = 1.5\nsink = \"c\"",
                "capture.sample_rate",
                "from 0 to 1, got 1.5",
            ),
            ("", "capture.sink", "got none"),
            (
                "sink = \"c\"\nkeep = [\"inputs\", \"body\"]",
                "capture.keep[1]",
                "got \"body\"",
            ),
            (
                "sink = \"c\"\nkeep = [\"inputs\", \"inputs\"]",
                "capture.keep[1]",
                "twice",
            ),
            ("sink = \"c\"\nqueue = 0", "capture.queue", "at least 1"),
        ] {
            let e = onnx_manifest(&format!("[capture]\n{extra}\n")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(says), "{e}");
        }
        let e = onnx_manifest("[capture]\nsink = \"c\"\nrate = 1\n").unwrap_err();
        assert!(e.problem.contains("rate"), "{e}");
    }

    fn opencl_manifest(extra: &str) -> Result<Manifest, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"not read here").unwrap();
        std::fs::write(dir.path().join("k.bin"), b"binary").unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            format!("name = \"m\"\nbackend = \"opencl\"\nmodel = \"model.onnx\"\n{extra}"),
        )
        .unwrap();
        Manifest::load(dir.path())
    }

    #[test]
    fn opencl_devices_by_number_or_by_name() {
        use ferroserve_backend_opencl::DeviceSelector;
        let m = opencl_manifest("[instances]\ndevice = \"opencl:1\"\n").unwrap();
        let spec = m.opencl.unwrap();
        assert_eq!(spec.device, DeviceSelector::Index(1));
        assert!(spec.binaries.is_empty());
        let m = opencl_manifest(
            "[instances]\ndevice = \"opencl\"\n[opencl]\nplatform = \"PoCL\"\ndevice = \"skylake\"\n[opencl.binaries]\n\"Agilex\" = \"k.bin\"\n",
        )
        .unwrap();
        let spec = m.opencl.unwrap();
        assert_eq!(
            spec.device,
            DeviceSelector::Name {
                platform: Some("PoCL".into()),
                device: Some("skylake".into())
            }
        );
        assert_eq!(spec.binaries.len(), 1);
        assert_eq!(spec.binaries[0].0, "Agilex");
        assert!(spec.binaries[0].1.ends_with("k.bin"));
    }

    #[test]
    fn opencl_settings_refused_by_name() {
        let cases = [
            (
                "",
                "instances.device",
                "expected \"opencl\" or \"opencl:N\"",
            ),
            (
                "[instances]\ndevice = \"opencl:x\"\n",
                "instances.device",
                "got \"opencl:x\"",
            ),
            (
                "[instances]\ndevice = \"opencl:0\"\n[opencl]\ndevice = \"gpu\"\n",
                "instances.device",
                "picks a device by number",
            ),
            (
                "[instances]\ndevice = \"opencl:0\"\n[opencl.binaries]\n\"x\" = \"missing.aocx\"\n",
                "opencl.binaries.\"x\"",
                "\"missing.aocx\" not found",
            ),
            (
                "[instances]\ndevice = \"opencl:0\"\n[opencl.binaries]\n\"x\" = \"../k.bin\"\n",
                "opencl.binaries.\"x\"",
                "inside the bundle folder, got \"../k.bin\"",
            ),
            (
                "[instances]\ndevice = \"opencl:0\"\n[opencl.binaries]\n\"x\" = \"/etc/passwd\"\n",
                "opencl.binaries.\"x\"",
                "inside the bundle folder",
            ),
            (
                "[instances]\ndevice = \"opencl:0\"\n[opencl]\nboard = \"x\"\n",
                "line",
                "unknown field `board`",
            ),
        ];
        for (extra, key, text) in cases {
            let e = opencl_manifest(extra).unwrap_err();
            assert!(e.key.starts_with(key), "{extra:?}: {e}");
            assert!(e.problem.contains(text), "{extra:?}: {e}");
        }
    }

    #[test]
    fn opencl_section_only_on_opencl_bundles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "name = \"m\"\nbackend = \"onnx\"\nmodel = \"model.onnx\"\n[opencl]\ndevice = \"x\"\n",
        )
        .unwrap();
        let e = Manifest::load(dir.path()).unwrap_err();
        assert_eq!(e.key, "opencl");
        assert!(
            e.problem.contains("only applies to backend = \"opencl\""),
            "{e}"
        );
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "name = \"m\"\nbackend = \"onnx\"\nmodel = \"model.onnx\"\n[instances]\ndevice = \"opencl:0\"\n",
        )
        .unwrap();
        let e = Manifest::load(dir.path()).unwrap_err();
        assert_eq!(e.key, "instances.device");
        assert!(e.problem.contains("needs backend = \"opencl\""), "{e}");
    }
}
