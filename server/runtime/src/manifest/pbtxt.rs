//! Triton's `config.pbtxt` (its `ModelConfig` in protobuf text format) read
//! into what a ferroserve [`Manifest`] holds, for ONNX Runtime models.
//!
//! [`SETTINGS`] is the one table of what happens to each setting: read and
//! mapped onto the manifest, ignored with a warning (harmless to leave
//! out: it changes speed or bookkeeping, never an answer), or refused
//! (serving without it would answer differently from Triton, or not at
//! all). A setting that is not in the table is refused as unknown. Refusals
//! and warnings name the setting by its path in the config
//! (`input[0].reshape`, `optimization.execution_accelerators.gpu_execution_accelerator[0]`).
//!
//! A version folder `DIR/NAME/N/` is served with the configuration of
//! `DIR/NAME/config.pbtxt`, its model file `DIR/NAME/N/<default_model_filename>`
//! and its label files read from `DIR/NAME/`, as Triton reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferroserve_backend_core::{DataType, Signature, TensorSpec};

use super::textproto::{self, Located, Message, Value};
use crate::manifest::{
    read_labels, BackendKind, Batching, Instances, Manifest, ManifestError, VersionPolicy,
};

/// The configuration file of a Triton model folder.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// Triton's default model file name for ONNX Runtime models.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// What ferroserve does with one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Read and mapped onto the manifest; the text says how (and which
    /// values are refused).
    Supported(&'static str),
    /// Accepted and not applied: a warning names it and says why that is
    /// harmless. Silent when it holds only default values (`false`, `0`,
    /// `""`, `*_DEFAULT`, empty).
    Ignored(&'static str),
    /// The model is refused, naming the setting and why.
    Refused(&'static str),
}

use Rule::{Ignored, Refused, Supported};

/// Every setting of Triton's `ModelConfig` and what ferroserve does with it.
/// Paths leave out indices; `[]` marks a repeated field (or a map).
pub const SETTINGS: &[(&str, Rule)] = &[
    ("name", Supported("must be the model's folder name (the folder name when absent)")),
    ("platform", Supported("\"onnxruntime_onnx\"; any other platform is refused")),
    ("backend", Supported("\"onnxruntime\"; any other backend is refused")),
    ("runtime", Supported("empty only: ONNX Runtime's own backend")),
    ("version_policy", Supported("which version folders are served")),
    ("version_policy.latest", Supported("the newest num_versions versions")),
    ("version_policy.latest.num_versions", Supported("at least 1")),
    ("version_policy.all", Supported("every version")),
    ("version_policy.specific", Supported("exactly these versions")),
    ("version_policy.specific.versions[]", Supported("version numbers")),
    ("max_batch_size", Supported("batching.max_batch_size; above 0, a batch dimension -1 goes before dims")),
    ("input[]", Supported("[[inputs]]")),
    ("input[].name", Supported("name")),
    ("input[].data_type", Supported("TYPE_BOOL .. TYPE_FP64 as datatype, TYPE_STRING as BYTES; TYPE_BF16 is refused")),
    ("input[].format", Supported("FORMAT_NONE; an image format is ignored with a warning (ONNX models do not use it)")),
    ("input[].dims[]", Supported("shape (after the batch dimension)")),
    ("input[].reshape", Refused("ferroserve hands a tensor to the model in the shape the request gives; reshaping between the request and the model is not implemented")),
    ("input[].is_shape_tensor", Supported("false only (shape tensors are a TensorRT feature)")),
    ("input[].allow_ragged_batch", Supported("false only (ragged batches are not implemented)")),
    ("input[].optional", Supported("false only (every input must be given)")),
    ("output[]", Supported("[[outputs]]")),
    ("output[].name", Supported("name")),
    ("output[].data_type", Supported("as for inputs")),
    ("output[].dims[]", Supported("shape (after the batch dimension)")),
    ("output[].reshape", Refused("ferroserve answers an output in the shape the model produces; reshaping it is not implemented")),
    ("output[].label_filename", Supported("labels, read from the model folder (the classification extension)")),
    ("output[].is_shape_tensor", Supported("false only")),
    ("batch_input[]", Refused("batch inputs (tensors the batcher makes up) are not implemented")),
    ("batch_output[]", Refused("batch outputs are not implemented")),
    ("optimization", Supported("its settings below")),
    ("optimization.priority", Supported("PRIORITY_DEFAULT; another priority is ignored with a warning (ferroserve does not rank models)")),
    ("optimization.graph", Ignored("ferroserve always runs ONNX Runtime with every graph optimisation on")),
    ("optimization.cuda", Ignored("CUDA settings; this build runs models on the CPU")),
    ("optimization.execution_accelerators", Supported("its accelerators below")),
    ("optimization.execution_accelerators.gpu_execution_accelerator[]", Refused("GPU execution providers (TensorRT, CUDA) are not available: this build runs ONNX Runtime on the CPU")),
    ("optimization.execution_accelerators.cpu_execution_accelerator[]", Refused("CPU execution providers other than ONNX Runtime's own (OpenVINO) are not available")),
    ("optimization.input_pinned_memory", Ignored("pinned host memory only speeds up GPU transfers")),
    ("optimization.output_pinned_memory", Ignored("pinned host memory only speeds up GPU transfers")),
    ("optimization.gather_kernel_buffer_threshold", Ignored("a GPU transfer setting")),
    ("optimization.eager_batching", Ignored("ferroserve's batcher already sends a batch as soon as an instance is free and the delay is over")),
    ("dynamic_batching", Supported("[batching] (without it: no delay, see the README)")),
    ("dynamic_batching.preferred_batch_size[]", Supported("batching.preferred_batch_sizes")),
    ("dynamic_batching.max_queue_delay_microseconds", Supported("batching.max_queue_delay_us")),
    ("dynamic_batching.preserve_ordering", Supported("always so: a gRPC stream answers in the order of its requests")),
    ("dynamic_batching.priority_levels", Supported("0 only (priority queues are not implemented)")),
    ("dynamic_batching.default_priority_level", Supported("0 only")),
    ("dynamic_batching.default_queue_policy", Supported("its settings below")),
    ("dynamic_batching.default_queue_policy.timeout_action", Supported("REJECT; DELAY is refused")),
    ("dynamic_batching.default_queue_policy.default_timeout_microseconds", Supported("batching.timeout_ms, rounded up; 0 (no timeout) keeps ferroserve's 30 s")),
    ("dynamic_batching.default_queue_policy.allow_timeout_override", Supported("true; false is ignored with a warning (a request may still ask for a shorter timeout)")),
    ("dynamic_batching.default_queue_policy.max_queue_size", Supported("batching.max_queue_size; 0 (unbounded) keeps ferroserve's 1024")),
    ("dynamic_batching.priority_queue_policy[]", Refused("priority queues are not implemented")),
    ("sequence_batching", Refused("stateful (sequence) models are not implemented")),
    ("ensemble_scheduling", Refused("ensembles are not implemented")),
    ("instance_group[]", Supported("[instances]: the counts of every group add up")),
    ("instance_group[].name", Supported("not used")),
    ("instance_group[].kind", Supported("KIND_CPU, KIND_AUTO (the CPU); KIND_GPU and KIND_MODEL are refused")),
    ("instance_group[].count", Supported("instances.count (default 1)")),
    ("instance_group[].gpus[]", Refused("GPU instances are not available: this build runs ONNX Runtime on the CPU")),
    ("instance_group[].secondary_devices[]", Refused("secondary devices are not available")),
    ("instance_group[].profile[]", Ignored("TensorRT optimisation profiles; this build runs models on the CPU")),
    ("instance_group[].passive", Supported("false only")),
    ("instance_group[].host_policy", Ignored("host policies (NUMA placement) are not implemented")),
    ("instance_group[].rate_limiter", Ignored("ferroserve has no rate limiter: an instance runs whenever it is free")),
    ("default_model_filename", Supported("model (default model.onnx)")),
    ("cc_model_filenames[]", Ignored("model files per GPU architecture; on the CPU Triton uses default_model_filename too")),
    ("metric_tags[]", Ignored("ferroserve's metrics are labelled by model, version, endpoint and deployment")),
    ("parameters[]", Supported("ONNX Runtime parameters: see PARAMETERS")),
    ("parameters[].key", Supported("the parameter's name")),
    ("parameters[].value", Supported("the parameter's value")),
    ("parameters[].value.string_value", Supported("the parameter's value")),
    ("model_warmup[]", Ignored("ferroserve warms every new version up (one request of zeros) before it gets traffic")),
    ("model_operations", Refused("custom operator libraries are not loaded")),
    ("model_transaction_policy", Supported("its setting below")),
    ("model_transaction_policy.decoupled", Supported("false only (decoupled models are not implemented)")),
    ("model_repository_agents", Refused("repository agents (checksums, decryption) are not run")),
    ("response_cache", Supported("its setting below")),
    ("response_cache.enable", Supported("false; true is ignored with a warning (ferroserve has no response cache: every request is computed, with the same answer)")),
];

/// `parameters` keys of Triton's ONNX Runtime backend. Any other key is
/// refused (ferroserve cannot tell what it was meant to change).
pub const PARAMETERS: &[(&str, Rule)] = &[
    (
        "intra_op_thread_count",
        Supported("instances.intra_op_threads (0: the cores divided among the instances)"),
    ),
    (
        "inter_op_thread_count",
        Ignored("ferroserve runs each session's graph sequentially, without an inter-op pool"),
    ),
    (
        "execution_mode",
        Ignored("ferroserve runs each session's graph sequentially"),
    ),
    ("enable_mem_arena", Ignored("a memory allocation setting")),
    ("enable_mem_pattern", Ignored("a memory allocation setting")),
    (
        "memory.enable_memory_arena_shrinkage",
        Ignored("a memory allocation setting"),
    ),
    (
        "arena_extend_strategy",
        Ignored("a memory allocation setting"),
    ),
    (
        "gpu_mem_limit",
        Ignored("a GPU setting; this build runs models on the CPU"),
    ),
    (
        "cudnn_conv_algo_search",
        Ignored("a GPU setting; this build runs models on the CPU"),
    ),
    (
        "cudnn_conv_use_max_workspace",
        Ignored("a GPU setting; this build runs models on the CPU"),
    ),
    (
        "do_copy_in_default_stream",
        Ignored("a GPU setting; this build runs models on the CPU"),
    ),
];

/// A setting that was ignored, and why that is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredSetting {
    pub path: String,
    pub why: String,
}

/// A `config.pbtxt` read and checked: what every version's manifest takes
/// from it.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub file: PathBuf,
    /// `DIR/NAME`, where label files are.
    pub model_dir: PathBuf,
    pub name: String,
    pub declared: Signature,
    /// Output name -> label file name (relative to `model_dir`).
    pub label_files: BTreeMap<String, String>,
    pub batching: Batching,
    /// Whether the config has `dynamic_batching` (without it, requests are
    /// never held back to wait for company).
    pub dynamic_batching: bool,
    pub instances: Instances,
    pub default_model_filename: String,
    pub version_policy: VersionPolicy,
    pub ignored: Vec<IgnoredSetting>,
}

/// The config file of the Triton model whose version folder is `version_dir`,
/// if there is one (`version_dir/../config.pbtxt`).
pub fn config_of_version_dir(version_dir: &Path) -> Option<PathBuf> {
    let file = version_dir.parent()?.join(CONFIG_FILE);
    file.is_file().then_some(file)
}

/// Reads `model_dir/config.pbtxt`. The model is named after its folder.
pub fn read(model_dir: &Path) -> Result<ModelConfig, ManifestError> {
    let file = model_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| ManifestError {
        file: file.clone(),
        key: "(file)".into(),
        problem: format!("cannot read: {e}"),
    })?;
    let folder = model_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    parse_config(&text, &file, &folder)
}

/// The manifest of one version folder of a Triton model: its config, with
/// a warning logged for each setting ignored.
pub fn load_version(version_dir: &Path) -> Result<Manifest, ManifestError> {
    let model_dir = version_dir.parent().unwrap_or(Path::new("."));
    let config = read(model_dir)?;
    config.warn_ignored();
    config.manifest(version_dir)
}

/// The version policy of a Triton model folder, if it has a config that
/// reads; `None` otherwise (a broken config is reported when a version loads).
pub fn version_policy(model_dir: &Path) -> Option<VersionPolicy> {
    if !model_dir.join(CONFIG_FILE).is_file() {
        return None;
    }
    read(model_dir).ok().map(|c| c.version_policy)
}

impl ModelConfig {
    /// Logs one warning per ignored setting, once per process and config
    /// file (every version of a model, and every reload, reads the config).
    pub fn warn_ignored(&self) {
        static WARNED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        for i in &self.ignored {
            let key = (self.file.clone(), i.path.clone());
            if warned.contains(&key) {
                continue;
            }
            warned.push(key);
            tracing::warn!(
                config = %self.file.display(),
                setting = %i.path,
                "Triton setting {} ignored: {}",
                i.path,
                i.why
            );
        }
    }

    /// The manifest of version folder `version_dir`: its model file must be
    /// there, and the label files in the model folder.
    pub fn manifest(&self, version_dir: &Path) -> Result<Manifest, ManifestError> {
        let err = |key: &str, problem: String| ManifestError {
            file: self.file.clone(),
            key: key.to_string(),
            problem,
        };
        let model_path = version_dir.join(&self.default_model_filename);
        if !model_path.is_file() {
            return Err(err(
                "default_model_filename",
                format!(
                    "model file {:?} not found at {}",
                    self.default_model_filename,
                    model_path.display()
                ),
            ));
        }
        let mut labels = BTreeMap::new();
        for (i, o) in self.declared.outputs.iter().enumerate() {
            let Some(name) = self.label_files.get(&o.name) else {
                continue;
            };
            let list = read_labels(&self.model_dir, name)
                .map_err(|p| err(&format!("output[{i}].label_filename"), p))?;
            labels.insert(o.name.clone(), Arc::new(list));
        }
        Ok(Manifest {
            file: self.file.clone(),
            dir: version_dir.to_path_buf(),
            name: self.name.clone(),
            description: String::new(),
            backend: BackendKind::Onnx,
            model_path,
            warmup: None,
            python: None,
            opencl: None,
            declared: self.declared.clone(),
            batching: self.batching.clone(),
            instances: self.instances.clone(),
            tags: BTreeMap::new(),
            labels,
            label_files: self.label_files.clone(),
            version_policy: self.version_policy.clone(),
        })
    }
}

/// Reads the text of a config file; `folder` is the model's folder name.
pub fn parse_config(text: &str, file: &Path, folder: &str) -> Result<ModelConfig, ManifestError> {
    let tree = textproto::parse(text).map_err(|e| ManifestError {
        file: file.to_path_buf(),
        key: e.pos.to_string(),
        problem: e.message,
    })?;
    let mut r = Reader {
        file,
        ignored: Vec::new(),
    };
    r.check(&tree, "", "")?;
    r.convert(&tree, folder)
}

/// Where a setting is, for messages: ` (line N)`.
fn at(l: &Located) -> String {
    format!(" (line {})", l.pos.line)
}

/// Whether a value holds only defaults: `false`, zero, `""`, a `*_DEFAULT`
/// enum value, or a message of such values.
fn is_default(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.parse::<f64>().is_ok_and(|f| f == 0.0),
        Value::Str(s) => s.is_empty(),
        Value::Ident(i) => i == "false" || i.ends_with("_DEFAULT"),
        Value::Message(m) => m
            .fields()
            .all(|(_, vs)| vs.iter().all(|l| is_default(&l.value))),
    }
}

struct Reader<'a> {
    file: &'a Path,
    ignored: Vec<IgnoredSetting>,
}

fn rule(table: &[(&'static str, Rule)], path: &str) -> Option<Rule> {
    table.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

impl Reader<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn ignore(&mut self, path: String, why: &str) {
        self.ignored.push(IgnoredSetting {
            path,
            why: why.to_string(),
        });
    }

    /// Walks the tree against [`SETTINGS`]: refuses what is refused or
    /// unknown, records what is ignored. `generic` is the table path of
    /// `msg`, `actual` its path with indices.
    fn check(&mut self, msg: &Message, generic: &str, actual: &str) -> Result<(), ManifestError> {
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                format!("{a}.{b}")
            }
        };
        for (name, values) in msg.fields() {
            let g = join(generic, name);
            let (repeated, rule) = match rule(SETTINGS, &format!("{g}[]")) {
                Some(r) => (true, r),
                None => match rule(SETTINGS, &g) {
                    Some(r) => (false, r),
                    None => {
                        let path = join(actual, name);
                        let line = values.first().map(at).unwrap_or_default();
                        return Err(self.err(
                            path,
                            format!(
                                "unknown setting{line}: it is not a field of Triton's ModelConfig that ferroserve knows"
                            ),
                        ));
                    }
                },
            };
            if !repeated && values.len() > 1 {
                return Err(self.err(
                    join(actual, name),
                    format!(
                        "is given {} times{}; it takes one value",
                        values.len(),
                        at(&values[1])
                    ),
                ));
            }
            for (i, l) in values.iter().enumerate() {
                let path = if repeated {
                    format!("{}[{i}]", join(actual, name))
                } else {
                    join(actual, name)
                };
                match rule {
                    Refused(why) => {
                        return Err(self.err(path, format!("not supported{}: {why}", at(l))))
                    }
                    Ignored(why) => {
                        if !is_default(&l.value) {
                            self.ignore(path, why);
                        }
                    }
                    Supported(_) => {
                        if let Value::Message(m) = &l.value {
                            let child = if repeated {
                                format!("{g}[]")
                            } else {
                                g.clone()
                            };
                            self.check(m, &child, &path)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The one value of a singular field, if given.
    fn one<'m>(&self, msg: &'m Message, name: &str) -> Option<&'m Located> {
        msg.get(name).first()
    }

    fn typed<T>(
        &self,
        path: &str,
        l: &Located,
        f: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<T, ManifestError> {
        f(&l.value).map_err(|p| self.err(path, format!("{p}{}", at(l))))
    }

    fn convert(mut self, tree: &Message, folder: &str) -> Result<ModelConfig, ManifestError> {
        // Platform and backend.
        let platform = match self.one(tree, "platform") {
            Some(l) => Some(self.typed("platform", l, |v| v.as_str().map(str::to_string))?),
            None => None,
        };
        let backend = match self.one(tree, "backend") {
            Some(l) => Some(self.typed("backend", l, |v| v.as_str().map(str::to_string))?),
            None => None,
        };
        const SERVES: &str = "ferroserve serves Triton models of ONNX Runtime (platform \"onnxruntime_onnx\" or backend \"onnxruntime\")";
        if let Some(p) = platform.as_deref().filter(|p| !p.is_empty()) {
            if p != "onnxruntime_onnx" {
                return Err(self.err("platform", format!("{p:?} is not supported: {SERVES}")));
            }
        }
        if let Some(b) = backend.as_deref().filter(|b| !b.is_empty()) {
            if b != "onnxruntime" {
                return Err(self.err("backend", format!("{b:?} is not supported: {SERVES}")));
            }
        }
        if let Some(l) = self.one(tree, "runtime") {
            let r = self.typed("runtime", l, |v| v.as_str().map(str::to_string))?;
            if !r.is_empty() {
                return Err(self.err(
                    "runtime",
                    format!("{r:?} is not supported: ferroserve runs ONNX models with its own ONNX Runtime backend, not a backend library"),
                ));
            }
        }

        // Name.
        let name = match self.one(tree, "name") {
            Some(l) => self.typed("name", l, |v| v.as_str().map(str::to_string))?,
            None => folder.to_string(),
        };
        if name != folder {
            return Err(self.err(
                "name",
                format!("is {name:?} but the model lives in folder {folder:?}; they must be the same (as Triton requires)"),
            ));
        }
        if name.is_empty() || name.contains(['/', ' ']) {
            return Err(self.err(
                "name",
                format!("expected a non-empty name without '/' or spaces, got {name:?}"),
            ));
        }

        // Batching dimension.
        let max_batch_size = match self.one(tree, "max_batch_size") {
            Some(l) => {
                let v = self.typed("max_batch_size", l, Value::as_i64)?;
                usize::try_from(v).map_err(|_| {
                    self.err(
                        "max_batch_size",
                        format!("expected 0 (no batching) or more, got {v}{}", at(l)),
                    )
                })?
            }
            None => 0,
        };

        // Inputs and outputs.
        let mut declared = Signature::default();
        let mut label_files = BTreeMap::new();
        for (section, out) in [
            ("input", &mut declared.inputs),
            ("output", &mut declared.outputs),
        ] {
            for (i, l) in tree.get(section).iter().enumerate() {
                let path = format!("{section}[{i}]");
                let m = self.typed(&path, l, |v| v.as_message().cloned())?;
                let tname = match self.one(&m, "name") {
                    Some(n) => self.typed(&format!("{path}.name"), n, |v| {
                        v.as_str().map(str::to_string)
                    })?,
                    None => return Err(self.err(format!("{path}.name"), "is missing")),
                };
                if tname.is_empty() {
                    return Err(self.err(format!("{path}.name"), "is empty"));
                }
                if out.iter().any(|t: &TensorSpec| t.name == tname) {
                    return Err(self.err(
                        format!("{path}.name"),
                        format!("{tname:?} is declared twice"),
                    ));
                }
                let dtype = match self.one(&m, "data_type") {
                    Some(d) => {
                        let key = format!("{path}.data_type");
                        let t = self.typed(&key, d, |v| v.as_enum().map(str::to_string))?;
                        self.data_type(&key, &t, d)?
                    }
                    None => return Err(self.err(format!("{path}.data_type"), "is missing")),
                };
                let mut shape = Vec::new();
                if max_batch_size > 0 {
                    shape.push(-1);
                }
                for (j, d) in m.get("dims").iter().enumerate() {
                    let key = format!("{path}.dims[{j}]");
                    let v = self.typed(&key, d, Value::as_i64)?;
                    if v < -1 {
                        return Err(self.err(
                            key,
                            format!("is {v}: expected -1 (any size) or a size >= 0{}", at(d)),
                        ));
                    }
                    shape.push(v);
                }
                if m.get("dims").is_empty() && !m.fields().any(|(n, _)| n == "dims") {
                    return Err(self.err(format!("{path}.dims"), "is missing"));
                }
                for flag in ["is_shape_tensor", "allow_ragged_batch", "optional"] {
                    if let Some(f) = self.one(&m, flag) {
                        let key = format!("{path}.{flag}");
                        if self.typed(&key, f, Value::as_bool)? {
                            let why = match rule(SETTINGS, &format!("{section}[].{flag}")) {
                                Some(Supported(why)) => why,
                                _ => "not supported",
                            };
                            return Err(
                                self.err(key, format!("true is not supported{}: {why}", at(f)))
                            );
                        }
                    }
                }
                if let Some(f) = self.one(&m, "format") {
                    let key = format!("{path}.format");
                    let v = self.typed(&key, f, |v| v.as_enum().map(str::to_string))?;
                    if v != "FORMAT_NONE" {
                        self.ignore(
                            key,
                            "an image layout tells Triton's image clients how to lay pixels out; the ONNX model's own input shape is what is served",
                        );
                    }
                }
                if let Some(f) = self.one(&m, "label_filename") {
                    let key = format!("{path}.label_filename");
                    let file = self.typed(&key, f, |v| v.as_str().map(str::to_string))?;
                    if !file.is_empty() {
                        if matches!(dtype, DataType::Bytes | DataType::Bool) {
                            return Err(self.err(
                                key,
                                format!("output {tname:?} is {dtype}; classification labels need a numeric output"),
                            ));
                        }
                        if !inside(&file) {
                            return Err(self.err(
                                key,
                                format!("expected a file in the model folder, got {file:?}"),
                            ));
                        }
                        label_files.insert(tname.clone(), file);
                    }
                }
                out.push(TensorSpec {
                    name: tname,
                    dtype,
                    shape,
                });
            }
        }

        // Batching and the queue.
        let mut batching = Batching {
            max_batch_size,
            ..Batching::default()
        };
        let dynamic = self.one(tree, "dynamic_batching");
        if let Some(l) = dynamic {
            let db = self.typed("dynamic_batching", l, |v| v.as_message().cloned())?;
            for (j, p) in db.get("preferred_batch_size").iter().enumerate() {
                let key = format!("dynamic_batching.preferred_batch_size[{j}]");
                let v = self.typed(&key, p, Value::as_i64)?;
                if v < 1 || max_batch_size == 0 || v as usize > max_batch_size {
                    return Err(self.err(
                        key,
                        format!(
                            "is {v}: a preferred batch size must be between 1 and max_batch_size ({max_batch_size}){}",
                            at(p)
                        ),
                    ));
                }
                batching.preferred_batch_sizes.push(v as usize);
            }
            if let Some(d) = self.one(&db, "max_queue_delay_microseconds") {
                batching.max_queue_delay_us = self.typed(
                    "dynamic_batching.max_queue_delay_microseconds",
                    d,
                    Value::as_u64,
                )?;
            }
            for key in ["priority_levels", "default_priority_level"] {
                if let Some(p) = self.one(&db, key) {
                    let path = format!("dynamic_batching.{key}");
                    let v = self.typed(&path, p, Value::as_u64)?;
                    if v != 0 {
                        return Err(self.err(
                            path,
                            format!("is {v}: not supported{}: priority queues are not implemented (0 only)", at(p)),
                        ));
                    }
                }
            }
            if let Some(p) = self.one(&db, "preserve_ordering") {
                self.typed("dynamic_batching.preserve_ordering", p, Value::as_bool)?;
            }
            if let Some(q) = self.one(&db, "default_queue_policy") {
                let base = "dynamic_batching.default_queue_policy";
                let qp = self.typed(base, q, |v| v.as_message().cloned())?;
                if let Some(a) = self.one(&qp, "timeout_action") {
                    let key = format!("{base}.timeout_action");
                    let action = self.typed(&key, a, |v| v.as_enum().map(str::to_string))?;
                    match action.as_str() {
                        "REJECT" => {}
                        "DELAY" => {
                            return Err(self.err(
                                key,
                                format!("DELAY is not supported{}: a request past its timeout is answered 504 (REJECT); it is never run late", at(a)),
                            ))
                        }
                        other => {
                            return Err(self.err(
                                key,
                                format!("expected REJECT or DELAY, got {other}{}", at(a)),
                            ))
                        }
                    }
                }
                if let Some(t) = self.one(&qp, "default_timeout_microseconds") {
                    let key = format!("{base}.default_timeout_microseconds");
                    let us = self.typed(&key, t, Value::as_u64)?;
                    if us > 0 {
                        batching.timeout_ms = us.div_ceil(1000);
                    }
                }
                if let Some(o) = self.one(&qp, "allow_timeout_override") {
                    let key = format!("{base}.allow_timeout_override");
                    if !self.typed(&key, o, Value::as_bool)? {
                        self.ignore(
                            key,
                            "a request may still ask for a timeout shorter than default_timeout_microseconds (never a longer one)",
                        );
                    }
                }
                if let Some(s) = self.one(&qp, "max_queue_size") {
                    let key = format!("{base}.max_queue_size");
                    let n = self.typed(&key, s, Value::as_u64)?;
                    if n > 0 {
                        batching.max_queue_size = usize::try_from(n).unwrap_or(usize::MAX);
                    }
                }
            }
        }

        // Instances.
        let mut instances = Instances::default();
        let groups = tree.get("instance_group");
        if !groups.is_empty() {
            let mut count = 0usize;
            for (i, l) in groups.iter().enumerate() {
                let path = format!("instance_group[{i}]");
                let g = self.typed(&path, l, |v| v.as_message().cloned())?;
                if let Some(k) = self.one(&g, "kind") {
                    let key = format!("{path}.kind");
                    let kind = self.typed(&key, k, |v| v.as_enum().map(str::to_string))?;
                    match kind.as_str() {
                        "KIND_CPU" | "KIND_AUTO" => {}
                        "KIND_GPU" => {
                            return Err(self.err(
                                key,
                                format!("KIND_GPU is not supported{}: this build runs ONNX Runtime on the CPU only (no CUDA execution provider), and serving a GPU model on the CPU would be far slower than its configuration promises; use KIND_CPU (or KIND_AUTO) to serve it on the CPU", at(k)),
                            ))
                        }
                        "KIND_MODEL" => {
                            return Err(self.err(
                                key,
                                format!("KIND_MODEL is not supported{}: the model does not place itself; use KIND_CPU", at(k)),
                            ))
                        }
                        other => {
                            return Err(self.err(
                                key,
                                format!("expected KIND_CPU, KIND_AUTO or KIND_GPU, got {other}{}", at(k)),
                            ))
                        }
                    }
                }
                let n = match self.one(&g, "count") {
                    Some(c) => {
                        let key = format!("{path}.count");
                        let n = self.typed(&key, c, Value::as_i64)?;
                        if n < 1 {
                            return Err(
                                self.err(key, format!("expected at least 1, got {n}{}", at(c)))
                            );
                        }
                        n as usize
                    }
                    None => 1,
                };
                if let Some(p) = self.one(&g, "passive") {
                    let key = format!("{path}.passive");
                    if self.typed(&key, p, Value::as_bool)? {
                        return Err(self.err(
                            key,
                            format!("true is not supported{}: every instance ferroserve starts takes requests", at(p)),
                        ));
                    }
                }
                if let Some(n) = self.one(&g, "name") {
                    self.typed(&format!("{path}.name"), n, |v| v.as_str().map(drop))?;
                }
                count = count.saturating_add(n);
            }
            instances.count = count;
        }

        // Parameters.
        for (i, l) in tree.get("parameters").iter().enumerate() {
            let path = format!("parameters[{i}]");
            let p = self.typed(&path, l, |v| v.as_message().cloned())?;
            let key = match self.one(&p, "key") {
                Some(k) => self.typed(&format!("{path}.key"), k, |v| {
                    v.as_str().map(str::to_string)
                })?,
                None => return Err(self.err(format!("{path}.key"), "is missing")),
            };
            let named = format!("parameters[{key:?}]");
            let value = match self.one(&p, "value") {
                Some(v) => {
                    let vm =
                        self.typed(&format!("{named}.value"), v, |v| v.as_message().cloned())?;
                    match self.one(&vm, "string_value") {
                        Some(s) => self.typed(&format!("{named}.value.string_value"), s, |v| {
                            v.as_str().map(str::to_string)
                        })?,
                        None => String::new(),
                    }
                }
                None => String::new(),
            };
            match rule(PARAMETERS, &key) {
                Some(Supported(_)) => {
                    // intra_op_thread_count, the one parameter read.
                    let n: usize = value.trim().parse().map_err(|_| {
                        self.err(
                            format!("{named}.value.string_value"),
                            format!(
                                "expected a thread count (a whole number >= 0), got {value:?}{}",
                                at(l)
                            ),
                        )
                    })?;
                    instances.intra_op_threads = n;
                }
                Some(Ignored(why)) => self.ignore(named, why),
                Some(Refused(why)) => {
                    return Err(self.err(named, format!("not supported{}: {why}", at(l))))
                }
                None => {
                    let known: Vec<&str> = PARAMETERS.iter().map(|(k, _)| *k).collect();
                    return Err(self.err(
                        named,
                        format!(
                            "not supported{}: not a parameter of Triton's ONNX Runtime backend that ferroserve knows ({}); remove it if it is only informational",
                            at(l),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }

        // Model file.
        let default_model_filename = match self.one(tree, "default_model_filename") {
            Some(l) => {
                let f = self.typed("default_model_filename", l, |v| {
                    v.as_str().map(str::to_string)
                })?;
                if f.is_empty() {
                    DEFAULT_MODEL_FILENAME.to_string()
                } else if !inside(&f) {
                    return Err(self.err(
                        "default_model_filename",
                        format!("expected a file in the version folder, got {f:?}{}", at(l)),
                    ));
                } else {
                    f
                }
            }
            None => DEFAULT_MODEL_FILENAME.to_string(),
        };

        // Version policy.
        let version_policy = match self.one(tree, "version_policy") {
            None => VersionPolicy::Latest(1),
            Some(l) => self.version_policy(l)?,
        };

        // Settings whose value decides.
        if let Some(o) = self.one(tree, "optimization") {
            let om = self.typed("optimization", o, |v| v.as_message().cloned())?;
            if let Some(p) = self.one(&om, "priority") {
                let v = self.typed("optimization.priority", p, |v| {
                    v.as_enum().map(str::to_string)
                })?;
                if v != "PRIORITY_DEFAULT" {
                    self.ignore(
                        "optimization.priority".into(),
                        "ferroserve does not rank models: every model's requests are scheduled alike",
                    );
                }
            }
        }
        if let Some(t) = self.one(tree, "model_transaction_policy") {
            let tm = self.typed("model_transaction_policy", t, |v| v.as_message().cloned())?;
            if let Some(d) = self.one(&tm, "decoupled") {
                let key = "model_transaction_policy.decoupled";
                if self.typed(key, d, Value::as_bool)? {
                    return Err(self.err(
                        key,
                        format!("true is not supported{}: decoupled models (any number of responses per request) are not implemented", at(d)),
                    ));
                }
            }
        }
        if let Some(c) = self.one(tree, "response_cache") {
            let cm = self.typed("response_cache", c, |v| v.as_message().cloned())?;
            if let Some(e) = self.one(&cm, "enable") {
                if self.typed("response_cache.enable", e, Value::as_bool)? {
                    self.ignore(
                        "response_cache.enable".into(),
                        "ferroserve has no response cache: every request is computed, with the same answer",
                    );
                }
            }
        }

        Ok(ModelConfig {
            file: self.file.to_path_buf(),
            model_dir: self
                .file
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf),
            name,
            declared,
            label_files,
            batching,
            dynamic_batching: dynamic.is_some(),
            instances,
            default_model_filename,
            version_policy,
            ignored: self.ignored,
        })
    }

    fn data_type(&self, key: &str, t: &str, l: &Located) -> Result<DataType, ManifestError> {
        let ferro = match t {
            "TYPE_STRING" => Some(DataType::Bytes),
            other => other
                .strip_prefix("TYPE_")
                .and_then(|s| s.parse::<DataType>().ok())
                .filter(|d| *d != DataType::Bytes),
        };
        ferro.ok_or_else(|| {
            let problem = match t {
                "TYPE_BF16" => format!("TYPE_BF16 is not supported{}: ferroserve has no bfloat16 tensors", at(l)),
                "TYPE_INVALID" => format!("TYPE_INVALID is not a data type{}", at(l)),
                other => format!(
                    "expected TYPE_BOOL, TYPE_UINT8 .. TYPE_UINT64, TYPE_INT8 .. TYPE_INT64, TYPE_FP16, TYPE_FP32, TYPE_FP64 or TYPE_STRING, got {other}{}",
                    at(l)
                ),
            };
            self.err(key, problem)
        })
    }

    fn version_policy(&self, l: &Located) -> Result<VersionPolicy, ManifestError> {
        let base = "version_policy";
        let m = self.typed(base, l, |v| v.as_message().cloned())?;
        let chosen: Vec<&str> = m.fields().map(|(n, _)| n).collect();
        if chosen.len() != 1 {
            return Err(self.err(
                base,
                format!(
                    "expected exactly one of latest, all or specific, got {}{}",
                    if chosen.is_empty() {
                        "none".to_string()
                    } else {
                        chosen.join(", ")
                    },
                    at(l)
                ),
            ));
        }
        let (name, values) = m.fields().next().expect("one field");
        let Some(v) = values.first() else {
            return Err(self.err(format!("{base}.{name}"), "has no value"));
        };
        let key = format!("{base}.{name}");
        let inner = self.typed(&key, v, |v| v.as_message().cloned())?;
        Ok(match name {
            "latest" => {
                let n = match self.one(&inner, "num_versions") {
                    Some(n) => self.typed(&format!("{key}.num_versions"), n, Value::as_u64)?,
                    None => 0,
                };
                if n == 0 {
                    return Err(self.err(
                        format!("{key}.num_versions"),
                        format!("expected at least 1{}", at(v)),
                    ));
                }
                VersionPolicy::Latest(u32::try_from(n).unwrap_or(u32::MAX))
            }
            "all" => VersionPolicy::All,
            "specific" => {
                let mut vs = Vec::new();
                for (j, x) in inner.get("versions").iter().enumerate() {
                    let k = format!("{key}.versions[{j}]");
                    let n = self.typed(&k, x, Value::as_i64)?;
                    if n < 1 {
                        return Err(self.err(
                            k,
                            format!("expected a version number >= 1, got {n}{}", at(x)),
                        ));
                    }
                    vs.push(n as u64);
                }
                if vs.is_empty() {
                    return Err(self.err(
                        format!("{key}.versions"),
                        format!("lists no version, so nothing would be served{}", at(v)),
                    ));
                }
                vs.sort_unstable();
                vs.dedup();
                VersionPolicy::Specific(vs)
            }
            other => unreachable!("the table admits only latest, all, specific: {other}"),
        })
    }
}

/// A relative path that stays inside its folder.
fn inside(file: &str) -> bool {
    !file.is_empty()
        && Path::new(file).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, ManifestError> {
        parse_config(text, Path::new("/r/m/config.pbtxt"), "m")
    }

    fn refused(text: &str) -> ManifestError {
        parse(text).expect_err(text)
    }

    const BASE: &str = r#"
        name: "m"
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
    "#;

    fn with(extra: &str) -> String {
        format!("{BASE}\n{extra}")
    }

    #[test]
    fn table_paths_are_unique_and_reachable() {
        let mut seen = std::collections::BTreeSet::new();
        for (p, _) in SETTINGS {
            assert!(seen.insert(p.trim_end_matches("[]")), "{p} twice");
            // Every nested path's parent is in the table as Supported.
            if let Some((parent, _)) = p.rsplit_once('.') {
                let r = rule(SETTINGS, parent).or_else(|| rule(SETTINGS, &format!("{parent}[]")));
                assert!(
                    matches!(r, Some(Supported(_))),
                    "{p}: parent {parent} not supported"
                );
            }
        }
    }

    #[test]
    fn a_plain_config_maps_onto_the_manifest() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.batching.max_batch_size, 8);
        assert_eq!(c.declared.inputs[0].shape, [-1, 4]);
        assert_eq!(c.declared.inputs[0].dtype, DataType::Fp32);
        assert_eq!(c.declared.outputs[0].shape, [-1, 2]);
        assert!(!c.dynamic_batching);
        // No dynamic_batching: no delay, ferroserve's queue defaults.
        assert_eq!(c.batching.max_queue_delay_us, 0);
        assert!(c.batching.preferred_batch_sizes.is_empty());
        assert_eq!(c.batching.max_queue_size, 1024);
        assert_eq!(c.batching.timeout_ms, 30_000);
        assert_eq!(c.instances.count, 1);
        assert_eq!(c.instances.device, "cpu");
        assert_eq!(c.default_model_filename, "model.onnx");
        assert_eq!(c.version_policy, VersionPolicy::Latest(1));
        assert!(c.ignored.is_empty());
    }

    #[test]
    fn no_batching_keeps_dims_as_given() {
        let c = parse(
            r#"backend: "onnxruntime"
               input { name: "x" data_type: TYPE_INT64 dims: [ -1, 3 ] }
               input { name: "s" data_type: TYPE_STRING dims: [ 1 ] }
               output { name: "y" data_type: TYPE_UINT8 dims: [ ] }"#,
        )
        .unwrap();
        assert_eq!(c.name, "m", "named after the folder");
        assert_eq!(c.batching.max_batch_size, 0);
        assert_eq!(c.declared.inputs[0].shape, [-1, 3]);
        assert_eq!(c.declared.inputs[0].dtype, DataType::Int64);
        assert_eq!(c.declared.inputs[1].dtype, DataType::Bytes);
        assert_eq!(c.declared.outputs[0].shape, Vec::<i64>::new());
        assert_eq!(c.declared.outputs[0].dtype, DataType::Uint8);
    }

    #[test]
    fn inputs_and_outputs_may_be_left_to_the_model() {
        let c = parse("platform: \"onnxruntime_onnx\" max_batch_size: 4").unwrap();
        assert!(c.declared.inputs.is_empty() && c.declared.outputs.is_empty());
        // Neither platform nor backend: ONNX Runtime is assumed.
        parse("max_batch_size: 4").unwrap();
    }

    #[test]
    fn every_data_type() {
        for (t, d) in [
            ("TYPE_BOOL", DataType::Bool),
            ("TYPE_UINT8", DataType::Uint8),
            ("TYPE_UINT16", DataType::Uint16),
            ("TYPE_UINT32", DataType::Uint32),
            ("TYPE_UINT64", DataType::Uint64),
            ("TYPE_INT8", DataType::Int8),
            ("TYPE_INT16", DataType::Int16),
            ("TYPE_INT32", DataType::Int32),
            ("TYPE_INT64", DataType::Int64),
            ("TYPE_FP16", DataType::Fp16),
            ("TYPE_FP32", DataType::Fp32),
            ("TYPE_FP64", DataType::Fp64),
            ("TYPE_STRING", DataType::Bytes),
        ] {
            let c = parse(&format!("input {{ name: \"x\" data_type: {t} dims: 1 }}")).unwrap();
            assert_eq!(c.declared.inputs[0].dtype, d, "{t}");
        }
        for (t, text) in [
            ("TYPE_BF16", "TYPE_BF16 is not supported"),
            ("TYPE_BYTES", "expected TYPE_BOOL"),
            ("TYPE_INVALID", "not a data type"),
            ("FP32", "got FP32"),
        ] {
            let e = refused(&format!("input {{ name: \"x\" data_type: {t} dims: 1 }}"));
            assert_eq!(e.key, "input[0].data_type");
            assert!(e.problem.contains(text), "{t}: {e}");
        }
    }

    #[test]
    fn dynamic_batching_and_queue_policy() {
        let c = parse(&with(
            r#"dynamic_batching {
                 preferred_batch_size: [ 2, 4 ]
                 max_queue_delay_microseconds: 500
                 preserve_ordering: true
                 default_queue_policy {
                   timeout_action: REJECT
                   default_timeout_microseconds: 2500
                   allow_timeout_override: true
                   max_queue_size: 16
                 }
               }"#,
        ))
        .unwrap();
        assert!(c.dynamic_batching);
        assert_eq!(c.batching.preferred_batch_sizes, [2, 4]);
        assert_eq!(c.batching.max_queue_delay_us, 500);
        assert_eq!(c.batching.timeout_ms, 3, "rounded up");
        assert_eq!(c.batching.max_queue_size, 16);
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        // Triton's 0s mean "none": ferroserve keeps its bounds.
        let c = parse(&with(
            "dynamic_batching { default_queue_policy { default_timeout_microseconds: 0 max_queue_size: 0 } }",
        ))
        .unwrap();
        assert_eq!(c.batching.timeout_ms, 30_000);
        assert_eq!(c.batching.max_queue_size, 1024);
        let c = parse(&with(
            "dynamic_batching { default_queue_policy { allow_timeout_override: false } }",
        ))
        .unwrap();
        assert_eq!(
            c.ignored[0].path,
            "dynamic_batching.default_queue_policy.allow_timeout_override"
        );
    }

    #[test]
    fn dynamic_batching_refusals() {
        let cases = [
            (
                "dynamic_batching { default_queue_policy { timeout_action: DELAY } }",
                "dynamic_batching.default_queue_policy.timeout_action",
                "DELAY is not supported",
            ),
            (
                "dynamic_batching { preferred_batch_size: 16 }",
                "dynamic_batching.preferred_batch_size[0]",
                "between 1 and max_batch_size (8)",
            ),
            (
                "dynamic_batching { preferred_batch_size: [ 2, 0 ] }",
                "dynamic_batching.preferred_batch_size[1]",
                "is 0",
            ),
            (
                "dynamic_batching { priority_levels: 2 }",
                "dynamic_batching.priority_levels",
                "priority queues",
            ),
            (
                "dynamic_batching { priority_queue_policy { key: 1 value { max_queue_size: 3 } } }",
                "dynamic_batching.priority_queue_policy[0]",
                "priority queues",
            ),
            (
                "dynamic_batching { max_queue_delay_microseconds: -1 }",
                "dynamic_batching.max_queue_delay_microseconds",
                "expected an integer >= 0",
            ),
            (
                "dynamic_batching { max_queue_delay: 5 }",
                "dynamic_batching.max_queue_delay",
                "unknown setting",
            ),
        ];
        for (extra, key, text) in cases {
            let e = refused(&with(extra));
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.problem.contains(text), "{extra}: {e}");
        }
        let e = refused("max_batch_size: 0 dynamic_batching { preferred_batch_size: 2 }");
        assert!(e.problem.contains("max_batch_size (0)"), "{e}");
    }

    #[test]
    fn instance_groups_add_up() {
        let c = parse(&with(
            "instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_AUTO }, { name: \"x\" count: 3 } ]",
        ))
        .unwrap();
        assert_eq!(c.instances.count, 6);
        let cases = [
            (
                "instance_group { kind: KIND_GPU }",
                "instance_group[0].kind",
                "KIND_GPU is not supported",
            ),
            (
                "instance_group [ {}, { kind: KIND_MODEL } ]",
                "instance_group[1].kind",
                "KIND_MODEL",
            ),
            (
                "instance_group { count: 0 }",
                "instance_group[0].count",
                "at least 1",
            ),
            (
                "instance_group { gpus: [ 0 ] }",
                "instance_group[0].gpus[0]",
                "GPU instances",
            ),
            (
                "instance_group { passive: true }",
                "instance_group[0].passive",
                "true is not supported",
            ),
            (
                "instance_group { kind: KIND_TPU }",
                "instance_group[0].kind",
                "got KIND_TPU",
            ),
        ];
        for (extra, key, text) in cases {
            let e = refused(&with(extra));
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.problem.contains(text), "{extra}: {e}");
        }
        // Empty GPU lists are harmless.
        parse(&with("instance_group { kind: KIND_CPU gpus: [] }")).unwrap();
        let c = parse(&with(
            "instance_group { rate_limiter { resources { name: \"r\" count: 1 } } }",
        ))
        .unwrap();
        assert_eq!(c.ignored[0].path, "instance_group[0].rate_limiter");
    }

    #[test]
    fn version_policies() {
        let p = |s: &str| parse(&with(s)).map(|c| c.version_policy);
        assert_eq!(p("").unwrap(), VersionPolicy::Latest(1));
        assert_eq!(
            p("version_policy: { latest: { num_versions: 2 } }").unwrap(),
            VersionPolicy::Latest(2)
        );
        assert_eq!(p("version_policy { all { } }").unwrap(), VersionPolicy::All);
        assert_eq!(
            p("version_policy { specific { versions: [ 3, 1, 3 ] } }").unwrap(),
            VersionPolicy::Specific(vec![1, 3])
        );
        for (extra, key, text) in [
            (
                "version_policy { latest { num_versions: 0 } }",
                "version_policy.latest.num_versions",
                "at least 1",
            ),
            (
                "version_policy { latest {} }",
                "version_policy.latest.num_versions",
                "at least 1",
            ),
            (
                "version_policy { specific { } }",
                "version_policy.specific.versions",
                "lists no version",
            ),
            (
                "version_policy { specific { versions: 0 } }",
                "version_policy.specific.versions[0]",
                ">= 1",
            ),
            (
                "version_policy { all {} latest { num_versions: 1 } }",
                "version_policy",
                "exactly one",
            ),
            ("version_policy { }", "version_policy", "got none"),
            (
                "version_policy { newest {} }",
                "version_policy.newest",
                "unknown setting",
            ),
        ] {
            let e = refused(&with(extra));
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.problem.contains(text), "{extra}: {e}");
        }
    }

    #[test]
    fn unsupported_settings_are_refused_by_path() {
        let cases = [
            ("sequence_batching { }", "sequence_batching"),
            ("ensemble_scheduling { step [ ] }", "ensemble_scheduling"),
            ("batch_input [ { kind: BATCH_ELEMENT_COUNT } ]", "batch_input[0]"),
            ("model_operations { op_library_filename: \"x.so\" }", "model_operations"),
            ("model_repository_agents { agents [ { name: \"checksum\" } ] }", "model_repository_agents"),
            (
                "optimization { execution_accelerators { gpu_execution_accelerator : [ { name : \"tensorrt\" } ] } }",
                "optimization.execution_accelerators.gpu_execution_accelerator[0]",
            ),
            (
                "optimization { execution_accelerators { cpu_execution_accelerator { name: \"openvino\" } } }",
                "optimization.execution_accelerators.cpu_execution_accelerator[0]",
            ),
            ("model_transaction_policy { decoupled: true }", "model_transaction_policy.decoupled"),
            ("max_batch_sise: 4", "max_batch_sise"),
        ];
        for (extra, key) in cases {
            let e = refused(&with(extra));
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(
                e.problem.contains("not supported") || e.problem.contains("unknown setting"),
                "{extra}: {e}"
            );
            assert!(e.problem.contains("(line "), "{extra}: {e}");
        }
    }

    #[test]
    fn tensor_settings() {
        let e = refused(
            r#"input [ { name: "a" data_type: TYPE_FP32 dims: 1 },
                       { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]"#,
        );
        assert_eq!(e.key, "input[1].reshape");
        assert!(e.problem.contains("not supported"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("/r/m/config.pbtxt: input[1].reshape: {}", e.problem)
        );
        let e =
            refused(r#"output { name: "y" data_type: TYPE_FP32 dims: 1 reshape { shape: [] } }"#);
        assert_eq!(e.key, "output[0].reshape");
        for (t, key) in [
            (
                r#"input { name: "x" data_type: TYPE_INT64 dims: 1 is_shape_tensor: true }"#,
                "input[0].is_shape_tensor",
            ),
            (
                r#"input { name: "x" data_type: TYPE_INT64 dims: 1 allow_ragged_batch: true }"#,
                "input[0].allow_ragged_batch",
            ),
            (
                r#"input { name: "x" data_type: TYPE_INT64 dims: 1 optional: true }"#,
                "input[0].optional",
            ),
            (
                r#"input { data_type: TYPE_INT64 dims: 1 }"#,
                "input[0].name",
            ),
            (r#"input { name: "x" dims: 1 }"#, "input[0].data_type"),
            (
                r#"input { name: "x" data_type: TYPE_INT64 }"#,
                "input[0].dims",
            ),
            (
                r#"input { name: "x" data_type: TYPE_INT64 dims: -2 }"#,
                "input[0].dims[0]",
            ),
            (
                r#"input [ { name: "x" data_type: TYPE_INT64 dims: 1 }, { name: "x" data_type: TYPE_INT64 dims: 1 } ]"#,
                "input[1].name",
            ),
            (
                r#"output { name: "y" data_type: TYPE_STRING dims: 1 label_filename: "l.txt" }"#,
                "output[0].label_filename",
            ),
            (
                r#"output { name: "y" data_type: TYPE_FP32 dims: 1 label_filename: "../l.txt" }"#,
                "output[0].label_filename",
            ),
            (
                r#"input { name: "x" data_type: TYPE_INT64 dims: 1 label_filename: "l.txt" }"#,
                "input[0].label_filename",
            ),
            (
                r#"input { name: 5 data_type: TYPE_INT64 dims: 1 }"#,
                "input[0].name",
            ),
            (
                r#"input { name: "x" name: "z" data_type: TYPE_INT64 dims: 1 }"#,
                "input[0].name",
            ),
        ] {
            let e = refused(t);
            assert_eq!(e.key, key, "{t}: {e}");
        }
        let c = parse(r#"input { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 8, 8 ] }
                          output { name: "y" data_type: TYPE_FP32 dims: 10 label_filename: "labels.txt" }"#)
        .unwrap();
        assert_eq!(c.ignored[0].path, "input[0].format");
        assert_eq!(c.label_files["y"], "labels.txt");
    }

    #[test]
    fn platforms_backends_and_names() {
        for (text, key, problem) in [
            (
                "platform: \"tensorrt_plan\"",
                "platform",
                "\"tensorrt_plan\" is not supported",
            ),
            ("platform: \"ensemble\"", "platform", "is not supported"),
            (
                "backend: \"python\"",
                "backend",
                "\"python\" is not supported",
            ),
            (
                "runtime: \"libtriton_onnxruntime.so\"",
                "runtime",
                "is not supported",
            ),
            ("name: \"other\"", "name", "folder \"m\""),
            (
                "platform: onnxruntime_onnx",
                "platform",
                "expected a quoted string",
            ),
            ("max_batch_size: -1", "max_batch_size", "expected 0"),
            (
                "max_batch_size: 1 max_batch_size: 2",
                "max_batch_size",
                "is given 2 times",
            ),
            (
                "default_model_filename: \"../x.onnx\"",
                "default_model_filename",
                "in the version folder",
            ),
            ("name: \"m\" {", "line 1 column 11", "expected"),
        ] {
            let e = refused(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.problem.contains(problem), "{text}: {e}");
        }
        let c = parse("platform: \"onnxruntime_onnx\" backend: \"onnxruntime\" runtime: \"\" default_model_filename: \"net.onnx\"").unwrap();
        assert_eq!(c.default_model_filename, "net.onnx");
    }

    #[test]
    fn harmless_settings_are_ignored_with_their_path() {
        let c = parse(&with(
            r#"optimization { graph { level: 1 } priority: PRIORITY_MAX input_pinned_memory { enable: true } }
               model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: 4 zero_data: true } } } ]
               metric_tags { key: "team" value: "vision" }
               cc_model_filenames { key: "7.5" value: "model_t4.onnx" }
               response_cache { enable: true }
               instance_group { count: 1 kind: KIND_CPU host_policy: "numa0" profile: [ "0" ] }
               parameters { key: "inter_op_thread_count" value { string_value: "2" } }
               parameters [ { key: "intra_op_thread_count" value: { string_value: "3" } } ]"#,
        ))
        .unwrap();
        let paths: Vec<&str> = c.ignored.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "optimization.graph",
                "optimization.input_pinned_memory",
                "model_warmup[0]",
                "metric_tags[0]",
                "cc_model_filenames[0]",
                "instance_group[0].host_policy",
                "instance_group[0].profile[0]",
                "parameters[\"inter_op_thread_count\"]",
                "optimization.priority",
                "response_cache.enable",
            ]
        );
        assert!(c.ignored.iter().all(|i| !i.why.is_empty()));
        assert_eq!(c.instances.intra_op_threads, 3);
        // Defaults are silent.
        let c = parse(&with(
            r#"optimization { graph { level: 0 } priority: PRIORITY_DEFAULT }
               model_warmup [ ] metric_tags { } response_cache { enable: false }
               model_transaction_policy { decoupled: false } batch_input [ ] batch_output [ ]"#,
        ))
        .unwrap();
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    }

    #[test]
    fn parameters_outside_the_list_are_refused() {
        let e = refused(&with(
            "parameters { key: \"custom_thing\" value { string_value: \"1\" } }",
        ));
        assert_eq!(e.key, "parameters[\"custom_thing\"]");
        assert!(e.problem.contains("intra_op_thread_count"), "{e}");
        let e = refused(&with(
            "parameters { key: \"intra_op_thread_count\" value { string_value: \"many\" } }",
        ));
        assert_eq!(
            e.key,
            "parameters[\"intra_op_thread_count\"].value.string_value"
        );
    }

    #[test]
    fn manifests_per_version_folder() {
        let repo = tempfile::tempdir().unwrap();
        let m = repo.path().join("m");
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::create_dir_all(m.join("2")).unwrap();
        std::fs::write(m.join("1/model.onnx"), b"x").unwrap();
        std::fs::write(m.join("labels.txt"), "a\nb\n").unwrap();
        std::fs::write(
            m.join(CONFIG_FILE),
            with(r#"output [ { name: "z" data_type: TYPE_FP32 dims: 2 label_filename: "labels.txt" } ]
                    version_policy { latest { num_versions: 2 } }"#),
        )
        .unwrap();
        assert_eq!(
            config_of_version_dir(&m.join("1")),
            Some(m.join(CONFIG_FILE))
        );
        let man = Manifest::load(&m.join("1")).unwrap();
        assert_eq!(man.name, "m");
        assert_eq!(man.backend, BackendKind::Onnx);
        assert_eq!(man.model_path, m.join("1/model.onnx"));
        assert_eq!(man.file, m.join(CONFIG_FILE));
        assert_eq!(man.labels["z"].as_slice(), ["a", "b"]);
        assert_eq!(man.label_files["z"], "labels.txt");
        assert_eq!(man.version_policy, VersionPolicy::Latest(2));
        assert_eq!(version_policy(&m), Some(VersionPolicy::Latest(2)));
        // Version 2 has no model file.
        let e = Manifest::load(&m.join("2")).unwrap_err();
        assert_eq!(e.key, "default_model_filename");
        assert!(e.problem.contains("not found"), "{e}");
        // A missing label file names the setting.
        std::fs::remove_file(m.join("labels.txt")).unwrap();
        let e = Manifest::load(&m.join("1")).unwrap_err();
        assert_eq!(e.key, "output[1].label_filename");
        assert_eq!(version_policy(&repo.path().join("none")), None);
    }
}
