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
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferroserve_backend_core::{DataType, Signature, TensorSpec};

use miette::Diagnostic;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::positions::{Positions, Spot};
use crate::manifest::{
    read_labels, BackendKind, Batching, Instances, Manifest, ManifestError, VersionPolicy,
};
use ferroserve_protocol::grpc::descriptors;
use ferroserve_protocol::grpc::proto;
use ferroserve_protocol::grpc::proto::model_config::SchedulingChoice;
use ferroserve_protocol::grpc::proto::model_input::Format;
use ferroserve_protocol::grpc::proto::model_instance_group::Kind as GroupKind;
use ferroserve_protocol::grpc::proto::model_queue_policy::TimeoutAction;
use ferroserve_protocol::grpc::proto::model_version_policy::PolicyChoice;

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
    /// Input name -> its `format` (`FORMAT_NHWC`, `FORMAT_NCHW`) where one
    /// is given: not applied (an ONNX model takes the layout its input
    /// shape says), but echoed by the model configuration extension, as
    /// Triton echoes it.
    pub input_formats: BTreeMap<String, String>,
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
            input_formats: self.input_formats.clone(),
            version_policy: self.version_policy.clone(),
            capture: None,
            drift: super::DriftConfig::default(),
            feature_names: BTreeMap::new(),
        })
    }
}

/// Reads the text of a config file; `folder` is the model's folder name.
///
/// `prost_reflect` parses the text against `inference.ModelConfig` (syntax,
/// field names, value types); the parsed message is then walked against
/// [`SETTINGS`] and read, as the generated `ModelConfig`, into what a
/// manifest holds. [`Positions`] finds the lines that messages name.
pub fn parse_config(text: &str, file: &Path, folder: &str) -> Result<ModelConfig, ManifestError> {
    let spots = Positions::scan(text);
    let mut r = Reader {
        file,
        text,
        spots: &spots,
        ignored: Vec::new(),
    };
    let with_colons = with_colons(&spots, text, 0..text.len());
    let parsed = DynamicMessage::parse_text_format(descriptors::model_config(), &with_colons)
        .map_err(|e| r.parse_error(&e))?;
    // Each stops at its first problem, in the order settings are written;
    // the one written first is the answer, as from one walk of the text.
    match (r.check(&parsed, "", ""), r.no_repeats()) {
        (Ok(()), Ok(())) => {}
        (Err(a), Err(b)) => {
            let at = |e: &ManifestError| spots.find(&e.key).map_or(usize::MAX, |s| s.name.start);
            return Err(if at(&b) < at(&a) { b } else { a });
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    }
    let config: proto::ModelConfig = parsed.transcode_to().map_err(|e| {
        r.err(
            "(file)",
            format!("does not convert to Triton's ModelConfig: {e}"),
        )
    })?;
    r.convert(&config, folder)
}

/// `text[range]` with a colon before each list of messages written without
/// one: protobuf's text format leaves it out at will (Triton's configs
/// mostly do: `input [ { ... } ]`), prost-reflect 0.16 requires it.
fn with_colons(spots: &Positions, text: &str, range: Range<usize>) -> String {
    let mut out = text[range.clone()].to_string();
    for &c in spots
        .missing_colons
        .iter()
        .rev()
        .filter(|c| range.contains(c))
    {
        out.insert(c - range.start, ':');
    }
    out
}

/// The offset in the text of `offset` in `with_colons` of all of it.
fn original(spots: &Positions, offset: usize) -> usize {
    let colons = spots.missing_colons.iter().enumerate();
    offset - colons.filter(|(k, &c)| c + k < offset).count()
}

/// Whether a value holds only defaults: `false`, zero, `""`, the first
/// enum value (`*_DEFAULT`), or messages, lists and maps of such values.
fn is_default(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::I32(n) | Value::EnumNumber(n) => *n == 0,
        Value::I64(n) => *n == 0,
        Value::U32(n) => *n == 0,
        Value::U64(n) => *n == 0,
        Value::F32(n) => *n == 0.0,
        Value::F64(n) => *n == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::Message(m) => m.fields().all(|(_, v)| is_default(v)),
        Value::List(l) => l.iter().all(is_default),
        Value::Map(m) => m
            .iter()
            .all(|(k, v)| is_default(&Value::from(k.clone())) && is_default(v)),
    }
}

fn rule(table: &[(&'static str, Rule)], path: &str) -> Option<Rule> {
    table.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

/// `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.join(""),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let (before, line_start) = (&text[..end], text[..end].rfind('\n').map_or(0, |i| i + 1));
    let column = before[line_start..].chars().count() + 1;
    (before.matches('\n').count() + 1, column)
}

/// A field's index in a path segment (`dims[2]`); none (or `[]`) is 0.
fn index(segment: &str) -> usize {
    segment
        .split_once('[')
        .and_then(|(_, i)| i.trim_end_matches(']').parse().ok())
        .unwrap_or(0)
}

/// A path of [`Positions`] (`input[1].reshape[0]`) as messages name it
/// (indices on repeated fields only: `input[1].reshape`), each segment's
/// [`SETTINGS`] path (`input[]`, `input[].reshape`), and the field at its
/// end where the schema has one.
fn describe(path: &str) -> (Vec<String>, Vec<String>, Option<FieldDescriptor>) {
    let (mut shown, mut generic) = (Vec::new(), Vec::new());
    let mut message = Some(descriptors::model_config());
    let mut field = None;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = (
            segment.split('[').next().unwrap_or_default(),
            index(segment),
        );
        field = message.as_ref().and_then(|m| m.get_field_by_name(name));
        let repeated = field.as_ref().is_some_and(|f| f.is_list() || f.is_map());
        shown.push(if repeated {
            format!("{name}[{index}]")
        } else {
            name.to_string()
        });
        let table = generic.last().map_or(String::new(), |g: &String| g.clone());
        generic.push(join(
            &table,
            &format!("{name}{}", if repeated { "[]" } else { "" }),
        ));
        message = field.as_ref().and_then(|f| f.kind().as_message().cloned());
    }
    (shown, generic, field)
}

/// What a prost-reflect error is about, from its message (the error's kind
/// is not public).
#[derive(Debug, PartialEq, Eq)]
enum ErrorKind {
    Syntax,
    UnknownField,
    Repeated,
    Oneof,
    UnknownEnumValue,
    OutOfRange,
    WrongType,
}

impl ErrorKind {
    fn of(message: &str) -> ErrorKind {
        // What `expected ..., but found '...'` expects when the value's
        // type is wrong, rather than the syntax.
        const VALUES: &[&str] = &[
            "a string",
            "an integer",
            "a number",
            "'true' or 'false'",
            "0 or 1",
            "an enum value",
            "'{' or '<'",
        ];
        if message.starts_with("field '") && message.contains("' not found for message '") {
            ErrorKind::UnknownField
        } else if message.starts_with('\'') && message.ends_with("' is already set") {
            ErrorKind::Repeated
        } else if message.starts_with("a value is already set for oneof") {
            ErrorKind::Oneof
        } else if message.starts_with("value '") && message.contains("' was not found for enum '") {
            ErrorKind::UnknownEnumValue
        } else if message.starts_with("expected value to be ") && message.ends_with("out of range")
        {
            ErrorKind::OutOfRange
        } else if message
            .strip_prefix("expected ")
            .and_then(|m| m.split_once(", but found '"))
            .is_some_and(|(want, _)| VALUES.contains(&want))
        {
            ErrorKind::WrongType
        } else {
            ErrorKind::Syntax
        }
    }
}

/// A token as messages show it.
fn show_token(token: &str) -> String {
    match token.chars().next() {
        Some('"' | '\'') => format!("the string {token}"),
        Some('{' | '<') => "a message { ... }".into(),
        Some('[') => "a list [ ... ]".into(),
        Some('-') => "a negative number".into(),
        Some(c) if c.is_ascii_digit() || c == '.' => format!("the number {token}"),
        Some(_) => format!("the identifier {token}"),
        None => "nothing".into(),
    }
}

/// What a field of this kind takes.
fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::String | Kind::Bytes => "a quoted string",
        Kind::Bool => "true or false",
        Kind::Float | Kind::Double => "a number",
        Kind::Message(_) => "a message { ... }",
        Kind::Enum(_) => "an enum value name",
        _ => "an integer",
    }
}

/// The problem with `got`, a name that is not a value of the enum of the
/// setting `generic`: settings whose values the reader checks say which it
/// accepts, others list the enum's values.
fn enum_problem(generic: &str, got: &str, field: Option<&FieldDescriptor>, at: &str) -> String {
    match generic {
        "input[].data_type" | "output[].data_type" => data_type_problem(got, at),
        "instance_group[].kind" => {
            format!("expected KIND_CPU, KIND_AUTO or KIND_GPU, got {got}{at}")
        }
        "dynamic_batching.default_queue_policy.timeout_action" => {
            format!("expected REJECT or DELAY, got {got}{at}")
        }
        _ => {
            let values: Vec<String> = match field.map(FieldDescriptor::kind) {
                Some(Kind::Enum(e)) => e.values().map(|v| v.name().to_string()).collect(),
                _ => Vec::new(),
            };
            format!("expected {}, got {got}{at}", or_list(&values))
        }
    }
}

/// Why a Triton data type (its enum value name, or number) is refused.
fn data_type_problem(t: &str, at: &str) -> String {
    match t {
        "TYPE_BF16" => format!("TYPE_BF16 is not supported{at}: ferroserve has no bfloat16 tensors"),
        "TYPE_INVALID" => format!("TYPE_INVALID is not a data type{at}"),
        other => format!(
            "expected TYPE_BOOL, TYPE_UINT8 .. TYPE_UINT64, TYPE_INT8 .. TYPE_INT64, TYPE_FP16, TYPE_FP32, TYPE_FP64 or TYPE_STRING, got {other}{at}"
        ),
    }
}

/// A tensor of `input` or `output`, as far as the reader tells them apart.
struct Tensor<'t> {
    name: &'t str,
    data_type: i32,
    dims: &'t [i64],
    /// The flags that must be false.
    flags: Vec<(&'static str, bool)>,
    format: i32,
    label_filename: &'t str,
}

struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    spots: &'a Positions,
    ignored: Vec<IgnoredSetting>,
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

    /// Where `spot`'s value is, for messages: ` (line N)`.
    fn line(&self, spot: &Spot) -> String {
        format!(" (line {})", line_col(self.text, spot.value.start).0)
    }

    /// Where the value at `path` is, for messages: ` (line N)`.
    fn at(&self, path: &str) -> String {
        self.spots
            .find(path)
            .map_or_else(String::new, |s| self.line(s))
    }

    /// A prost-reflect error as the setting it is about: a syntax error by
    /// line and column, anything else by the setting's path (or as the
    /// refusal of a setting written before it, as the walk would have
    /// found first).
    fn parse_error(&self, e: &prost_reflect::text_format::ParseError) -> ManifestError {
        let message = e.to_string();
        let span = e
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| original(self.spots, l.offset())..original(self.spots, l.offset() + l.len()));
        let syntax = |offset: usize| {
            let (line, col) = line_col(self.text, offset);
            self.err(format!("line {line} column {col}"), message.clone())
        };
        let Some(span) = span else {
            return syntax(self.text.len());
        };
        let kind = ErrorKind::of(&message);
        if kind == ErrorKind::Syntax {
            return syntax(span.start);
        }
        if let Some(refused) = self.refused_before(span.start) {
            return refused;
        }
        let token = self.text.get(span.clone()).unwrap_or_default();
        // A list where one value is expected: the list's first element.
        let first_of_list = || {
            let mut after = self
                .spots
                .spots
                .iter()
                .filter(|s| s.value.start > span.start);
            after.next().filter(|_| token == "[")
        };
        let Some(spot) = self.spots.at(span.start).or_else(first_of_list) else {
            return syntax(span.start);
        };
        let (shown, generic, field) = describe(&spot.path);
        let (shown, generic) = (shown.join("."), generic.last().cloned().unwrap_or_default());
        let at = self.line(spot);
        let problem = match kind {
            ErrorKind::UnknownField => format!(
                "unknown setting{at}: it is not a field of Triton's ModelConfig that ferroserve knows"
            ),
            ErrorKind::Repeated => format!(
                "is given {} times{at}; it takes one value",
                self.spots.count(spot)
            ),
            ErrorKind::Oneof => return self.oneof_error(spot, field.as_ref(), &shown, &at),
            ErrorKind::UnknownEnumValue => enum_problem(&generic, token, field.as_ref(), &at),
            ErrorKind::OutOfRange => {
                let kind = field.as_ref().map(FieldDescriptor::kind);
                let unsigned = matches!(
                    kind,
                    Some(Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64)
                );
                if unsigned && token.starts_with('-') {
                    format!("expected an integer >= 0, got {token}{at}")
                } else {
                    let bits = match kind {
                        Some(Kind::Int64 | Kind::Sint64 | Kind::Sfixed64)
                        | Some(Kind::Uint64 | Kind::Fixed64) => 64,
                        _ => 32,
                    };
                    let sign = if unsigned { "an unsigned" } else { "a signed" };
                    format!("expected {sign} {bits}-bit integer, got {token}, which is out of range{at}")
                }
            }
            // WrongType (syntax errors were answered above).
            _ => match &field {
                Some(f) => format!("expected {}, got {}{at}", expected(&f.kind()), show_token(token)),
                None => format!("{message}{at}"),
            },
        };
        self.err(shown, problem)
    }

    /// Two fields of one oneof (`version_policy { all {} latest {} }`).
    fn oneof_error(
        &self,
        spot: &Spot,
        field: Option<&FieldDescriptor>,
        shown: &str,
        at: &str,
    ) -> ManifestError {
        let parent = spot.path.rsplit_once('.').map_or("", |(p, _)| p);
        let parent = describe(parent).0.join(".");
        let members: Vec<String> = field
            .and_then(FieldDescriptor::containing_oneof)
            .map(|o| o.fields().map(|f| f.name().to_string()).collect())
            .unwrap_or_default();
        let mut given: Vec<(usize, &str)> = members
            .iter()
            .filter_map(|m| {
                let s = self.spots.find(&join(&parent, m))?;
                Some((s.name.start, m.as_str()))
            })
            .collect();
        given.sort_unstable();
        let given: Vec<&str> = given.into_iter().map(|(_, m)| m).collect();
        let key = if parent.is_empty() { shown } else { &parent };
        self.err(
            key,
            format!(
                "expected exactly one of {}, got {}{at}",
                or_list(&members),
                given.join(", ")
            ),
        )
    }

    /// The first setting written before byte `offset` (or around it) that
    /// [`SETTINGS`] refuses, where the walk would reach it: a parse error
    /// inside or after a refused setting is reported as that refusal, as
    /// when settings were checked in the order they are written.
    fn refused_before(&self, offset: usize) -> Option<ManifestError> {
        for spot in self.spots.spots.iter().filter(|s| s.name.start <= offset) {
            let (shown, generic, _) = describe(&spot.path);
            for (k, g) in generic.iter().enumerate() {
                match rule(SETTINGS, g) {
                    Some(Supported(_)) => continue,
                    Some(Refused(why)) => {
                        let path = shown[..=k].join(".");
                        return Some(self.err(
                            path.clone(),
                            format!("not supported{}: {why}", self.at(&path)),
                        ));
                    }
                    Some(Ignored(_)) | None => break,
                }
            }
        }
        None
    }

    /// The entries of map field `path` as written, in order (a parsed map
    /// keeps neither the order nor repeated keys): each is parsed again on
    /// its own, as the map's entry message.
    fn entries(&self, path: &str, entry: &MessageDescriptor) -> Vec<(String, DynamicMessage)> {
        (0..)
            .map_while(|i| {
                let p = format!("{path}[{i}]");
                self.spots.find(&p).map(|s| (p, s))
            })
            .map(|(p, s)| {
                let body = with_colons(self.spots, self.text, s.value.clone());
                let inner = body
                    .get(1..body.len().saturating_sub(1))
                    .unwrap_or_default();
                let m = DynamicMessage::parse_text_format(entry.clone(), inner)
                    .unwrap_or_else(|_| DynamicMessage::new(entry.clone()));
                (p, m)
            })
            .collect()
    }

    /// Walks the parsed message against [`SETTINGS`], in the order the
    /// settings are written: refuses what is refused or unknown, records
    /// what is ignored. Only set fields are seen, so defaults are silent.
    /// `generic` is the table path of `msg`, `actual` its path with indices.
    fn check(
        &mut self,
        msg: &DynamicMessage,
        generic: &str,
        actual: &str,
    ) -> Result<(), ManifestError> {
        let mut fields: Vec<(FieldDescriptor, &Value)> = msg.fields().collect();
        fields.sort_by_key(|(f, _)| {
            self.spots
                .find(&join(actual, f.name()))
                .map_or(usize::MAX, |s| s.name.start)
        });
        for (f, value) in fields {
            let g = join(generic, f.name());
            let repeated = f.is_list() || f.is_map();
            let table = if repeated {
                format!("{g}[]")
            } else {
                g.clone()
            };
            let path = join(actual, f.name());
            let Some(rule) = rule(SETTINGS, &table) else {
                return Err(self.err(
                    path.clone(),
                    format!(
                        "unknown setting{}: it is not a field of Triton's ModelConfig that ferroserve knows",
                        self.at(&path)
                    ),
                ));
            };
            let values: Vec<(String, Value)> = match (value, f.kind().as_message()) {
                (Value::Map(_), Some(entry)) => self
                    .entries(&path, entry)
                    .into_iter()
                    .map(|(p, m)| (p, Value::Message(m)))
                    .collect(),
                (Value::List(list), _) => list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}[{i}]"), v.clone()))
                    .collect(),
                (v, _) => vec![(path, v.clone())],
            };
            for (path, v) in values {
                match rule {
                    Refused(why) => {
                        return Err(self.err(
                            path.clone(),
                            format!("not supported{}: {why}", self.at(&path)),
                        ))
                    }
                    Ignored(why) => {
                        if !is_default(&v) {
                            self.ignore(path, why);
                        }
                    }
                    Supported(_) => {
                        if let Value::Message(m) = &v {
                            self.check(m, &table, &path)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A singular field written more than once. prost-reflect refuses that
    /// when the first value is not the default; this finds the rest.
    fn no_repeats(&self) -> Result<(), ManifestError> {
        for spot in &self.spots.spots {
            let (shown, _, field) = describe(&spot.path);
            let singular = field.is_some_and(|f| !f.is_list() && !f.is_map());
            let last = spot.path.rsplit('.').next().unwrap_or_default();
            if singular && index(last) > 0 {
                return Err(self.err(
                    shown.join("."),
                    format!(
                        "is given {} times{}; it takes one value",
                        self.spots.count(spot),
                        self.line(spot)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn convert(
        mut self,
        c: &proto::ModelConfig,
        folder: &str,
    ) -> Result<ModelConfig, ManifestError> {
        // Platform and backend.
        const SERVES: &str = "ferroserve serves Triton models of ONNX Runtime (platform \"onnxruntime_onnx\" or backend \"onnxruntime\")";
        if !c.platform.is_empty() && c.platform != "onnxruntime_onnx" {
            let p = &c.platform;
            return Err(self.err("platform", format!("{p:?} is not supported: {SERVES}")));
        }
        if !c.backend.is_empty() && c.backend != "onnxruntime" {
            let b = &c.backend;
            return Err(self.err("backend", format!("{b:?} is not supported: {SERVES}")));
        }
        if !c.runtime.is_empty() {
            return Err(self.err(
                "runtime",
                format!("{:?} is not supported: ferroserve runs ONNX models with its own ONNX Runtime backend, not a backend library", c.runtime),
            ));
        }

        // Name (`name: ""` is a name, and not the folder's).
        let name = if self.spots.mentioned("name") {
            c.name.clone()
        } else {
            folder.to_string()
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
        let max_batch_size = usize::try_from(c.max_batch_size).map_err(|_| {
            self.err(
                "max_batch_size",
                format!(
                    "expected 0 (no batching) or more, got {}{}",
                    c.max_batch_size,
                    self.at("max_batch_size")
                ),
            )
        })?;

        // Inputs and outputs.
        let inputs = c.input.iter().map(|t| Tensor {
            name: &t.name,
            data_type: t.data_type,
            dims: &t.dims,
            flags: vec![
                ("is_shape_tensor", t.is_shape_tensor),
                ("allow_ragged_batch", t.allow_ragged_batch),
                ("optional", t.optional),
            ],
            format: t.format,
            label_filename: "",
        });
        let outputs = c.output.iter().map(|t| Tensor {
            name: &t.name,
            data_type: t.data_type,
            dims: &t.dims,
            flags: vec![("is_shape_tensor", t.is_shape_tensor)],
            format: 0,
            label_filename: &t.label_filename,
        });
        let mut declared = Signature::default();
        let mut label_files = BTreeMap::new();
        let mut input_formats = BTreeMap::new();
        let sections: [(&str, Vec<Tensor>, &mut Vec<TensorSpec>); 2] = [
            ("input", inputs.collect(), &mut declared.inputs),
            ("output", outputs.collect(), &mut declared.outputs),
        ];
        for (section, tensors, out) in sections {
            for (i, t) in tensors.iter().enumerate() {
                let path = format!("{section}[{i}]");
                let key = |field: &str| format!("{path}.{field}");
                if t.name.is_empty() {
                    let problem = if self.spots.mentioned(&key("name")) {
                        "is empty"
                    } else {
                        "is missing"
                    };
                    return Err(self.err(key("name"), problem));
                }
                let tname = t.name.to_string();
                if out.iter().any(|s: &TensorSpec| s.name == tname) {
                    return Err(self.err(key("name"), format!("{tname:?} is declared twice")));
                }
                if !self.spots.mentioned(&key("data_type")) {
                    return Err(self.err(key("data_type"), "is missing"));
                }
                let type_name = proto::DataType::try_from(t.data_type)
                    .map_or_else(|_| t.data_type.to_string(), |d| d.as_str_name().to_string());
                let dtype = self.data_type(&key("data_type"), &type_name)?;
                let mut shape = Vec::new();
                if max_batch_size > 0 {
                    shape.push(-1);
                }
                if t.dims.is_empty() && !self.spots.mentioned(&key("dims")) {
                    return Err(self.err(key("dims"), "is missing"));
                }
                for (j, &v) in t.dims.iter().enumerate() {
                    if v < -1 {
                        let k = format!("{path}.dims[{j}]");
                        return Err(self.err(
                            k.clone(),
                            format!(
                                "is {v}: expected -1 (any size) or a size >= 0{}",
                                self.at(&k)
                            ),
                        ));
                    }
                    shape.push(v);
                }
                for &(flag, set) in &t.flags {
                    if set {
                        let why = match rule(SETTINGS, &format!("{section}[].{flag}")) {
                            Some(Supported(why)) => why,
                            _ => "not supported",
                        };
                        return Err(self.err(
                            key(flag),
                            format!("true is not supported{}: {why}", self.at(&key(flag))),
                        ));
                    }
                }
                if t.format != 0 {
                    self.ignore(
                        key("format"),
                        "an image layout tells Triton's image clients how to lay pixels out; the ONNX model's own input shape is what is served",
                    );
                    if let Ok(f) = Format::try_from(t.format) {
                        input_formats.insert(tname.clone(), f.as_str_name().to_string());
                    }
                }
                if !t.label_filename.is_empty() {
                    let file = t.label_filename;
                    if matches!(dtype, DataType::Bytes | DataType::Bool) {
                        return Err(self.err(
                            key("label_filename"),
                            format!("output {tname:?} is {dtype}; classification labels need a numeric output"),
                        ));
                    }
                    if !inside(file) {
                        return Err(self.err(
                            key("label_filename"),
                            format!("expected a file in the model folder, got {file:?}"),
                        ));
                    }
                    label_files.insert(tname.clone(), file.to_string());
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
        let dynamic = match &c.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(d)) => Some(d),
            _ => None,
        };
        if let Some(db) = dynamic {
            for (j, &v) in db.preferred_batch_size.iter().enumerate() {
                let key = format!("dynamic_batching.preferred_batch_size[{j}]");
                if v < 1 || max_batch_size == 0 || v as usize > max_batch_size {
                    return Err(self.err(
                        key.clone(),
                        format!(
                            "is {v}: a preferred batch size must be between 1 and max_batch_size ({max_batch_size}){}",
                            self.at(&key)
                        ),
                    ));
                }
                batching.preferred_batch_sizes.push(v as usize);
            }
            batching.max_queue_delay_us = db.max_queue_delay_microseconds;
            for (key, v) in [
                ("priority_levels", db.priority_levels),
                ("default_priority_level", db.default_priority_level),
            ] {
                if v != 0 {
                    let path = format!("dynamic_batching.{key}");
                    return Err(self.err(
                        path.clone(),
                        format!(
                            "is {v}: not supported{}: priority queues are not implemented (0 only)",
                            self.at(&path)
                        ),
                    ));
                }
            }
            if let Some(qp) = &db.default_queue_policy {
                let base = "dynamic_batching.default_queue_policy";
                let key = format!("{base}.timeout_action");
                match TimeoutAction::try_from(qp.timeout_action) {
                    Ok(TimeoutAction::Reject) => {}
                    Ok(TimeoutAction::Delay) => {
                        return Err(self.err(
                            key.clone(),
                            format!("DELAY is not supported{}: a request past its timeout is answered 504 (REJECT); it is never run late", self.at(&key)),
                        ))
                    }
                    Err(_) => {
                        return Err(self.err(
                            key.clone(),
                            format!("expected REJECT or DELAY, got {}{}", qp.timeout_action, self.at(&key)),
                        ))
                    }
                }
                if qp.default_timeout_microseconds > 0 {
                    batching.timeout_ms = qp.default_timeout_microseconds.div_ceil(1000);
                }
                let key = format!("{base}.allow_timeout_override");
                if !qp.allow_timeout_override && self.spots.mentioned(&key) {
                    self.ignore(
                        key,
                        "a request may still ask for a timeout shorter than default_timeout_microseconds (never a longer one)",
                    );
                }
                if qp.max_queue_size > 0 {
                    batching.max_queue_size =
                        usize::try_from(qp.max_queue_size).unwrap_or(usize::MAX);
                }
            }
        }

        // Instances.
        let mut instances = Instances::default();
        if !c.instance_group.is_empty() {
            let mut count = 0usize;
            for (i, g) in c.instance_group.iter().enumerate() {
                let path = format!("instance_group[{i}]");
                let key = format!("{path}.kind");
                match GroupKind::try_from(g.kind) {
                    Ok(GroupKind::Cpu | GroupKind::Auto) => {}
                    Ok(GroupKind::Gpu) => {
                        return Err(self.err(
                            key.clone(),
                            format!("KIND_GPU is not supported{}: this build runs ONNX Runtime on the CPU only (no CUDA execution provider), and serving a GPU model on the CPU would be far slower than its configuration promises; use KIND_CPU (or KIND_AUTO) to serve it on the CPU", self.at(&key)),
                        ))
                    }
                    Ok(GroupKind::Model) => {
                        return Err(self.err(
                            key.clone(),
                            format!("KIND_MODEL is not supported{}: the model does not place itself; use KIND_CPU", self.at(&key)),
                        ))
                    }
                    Err(_) => {
                        return Err(self.err(
                            key.clone(),
                            format!("expected KIND_CPU, KIND_AUTO or KIND_GPU, got {}{}", g.kind, self.at(&key)),
                        ))
                    }
                }
                let key = format!("{path}.count");
                let n = if self.spots.mentioned(&key) {
                    if g.count < 1 {
                        return Err(self.err(
                            key.clone(),
                            format!("expected at least 1, got {}{}", g.count, self.at(&key)),
                        ));
                    }
                    g.count as usize
                } else {
                    1
                };
                if g.passive {
                    let key = format!("{path}.passive");
                    return Err(self.err(
                        key.clone(),
                        format!("true is not supported{}: every instance ferroserve starts takes requests", self.at(&key)),
                    ));
                }
                count = count.saturating_add(n);
            }
            instances.count = count;
        }

        // Parameters, in the order written.
        let entry = descriptors::model_config()
            .get_field_by_name("parameters")
            .and_then(|f| f.kind().as_message().cloned())
            .expect("ModelConfig.parameters is a map");
        for (path, p) in self.entries("parameters", &entry) {
            if !self.spots.mentioned(&format!("{path}.key")) {
                return Err(self.err(format!("{path}.key"), "is missing"));
            }
            let key = p
                .get_field_by_name("key")
                .and_then(|k| k.as_str().map(str::to_string))
                .unwrap_or_default();
            let value = p
                .get_field_by_name("value")
                .and_then(|v| {
                    v.as_message()
                        .and_then(|m| m.get_field_by_name("string_value"))
                        .and_then(|s| s.as_str().map(str::to_string))
                })
                .unwrap_or_default();
            let named = format!("parameters[{key:?}]");
            let at = self.at(&path);
            match rule(PARAMETERS, &key) {
                Some(Supported(_)) => {
                    // intra_op_thread_count, the one parameter read.
                    let n: usize = value.trim().parse().map_err(|_| {
                        self.err(
                            format!("{named}.value.string_value"),
                            format!(
                                "expected a thread count (a whole number >= 0), got {value:?}{at}"
                            ),
                        )
                    })?;
                    instances.intra_op_threads = n;
                }
                Some(Ignored(why)) => self.ignore(named, why),
                Some(Refused(why)) => {
                    return Err(self.err(named, format!("not supported{at}: {why}")))
                }
                None => {
                    let known: Vec<&str> = PARAMETERS.iter().map(|(k, _)| *k).collect();
                    return Err(self.err(
                        named,
                        format!(
                            "not supported{at}: not a parameter of Triton's ONNX Runtime backend that ferroserve knows ({}); remove it if it is only informational",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }

        // Model file.
        let f = &c.default_model_filename;
        let default_model_filename = if f.is_empty() {
            DEFAULT_MODEL_FILENAME.to_string()
        } else if !inside(f) {
            return Err(self.err(
                "default_model_filename",
                format!(
                    "expected a file in the version folder, got {f:?}{}",
                    self.at("default_model_filename")
                ),
            ));
        } else {
            f.clone()
        };

        // Version policy.
        let version_policy = match &c.version_policy {
            None => VersionPolicy::Latest(1),
            Some(p) => self.version_policy(p)?,
        };

        // Settings whose value decides.
        if c.optimization.as_ref().is_some_and(|o| o.priority != 0) {
            self.ignore(
                "optimization.priority".into(),
                "ferroserve does not rank models: every model's requests are scheduled alike",
            );
        }
        if c.model_transaction_policy
            .as_ref()
            .is_some_and(|t| t.decoupled)
        {
            let key = "model_transaction_policy.decoupled";
            return Err(self.err(
                key,
                format!("true is not supported{}: decoupled models (any number of responses per request) are not implemented", self.at(key)),
            ));
        }
        if c.response_cache.as_ref().is_some_and(|r| r.enable) {
            self.ignore(
                "response_cache.enable".into(),
                "ferroserve has no response cache: every request is computed, with the same answer",
            );
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
            input_formats,
            batching,
            dynamic_batching: dynamic.is_some(),
            instances,
            default_model_filename,
            version_policy,
            ignored: self.ignored,
        })
    }

    fn data_type(&self, key: &str, t: &str) -> Result<DataType, ManifestError> {
        let ferro = match t {
            "TYPE_STRING" => Some(DataType::Bytes),
            other => other
                .strip_prefix("TYPE_")
                .and_then(|s| s.parse::<DataType>().ok())
                .filter(|d| *d != DataType::Bytes),
        };
        ferro.ok_or_else(|| self.err(key, data_type_problem(t, &self.at(key))))
    }

    fn version_policy(
        &self,
        p: &proto::ModelVersionPolicy,
    ) -> Result<VersionPolicy, ManifestError> {
        let base = "version_policy";
        Ok(match &p.policy_choice {
            None => {
                return Err(self.err(
                    base,
                    format!(
                        "expected exactly one of latest, all or specific, got none{}",
                        self.at(base)
                    ),
                ))
            }
            Some(PolicyChoice::Latest(l)) => {
                if l.num_versions == 0 {
                    return Err(self.err(
                        "version_policy.latest.num_versions",
                        format!("expected at least 1{}", self.at("version_policy.latest")),
                    ));
                }
                VersionPolicy::Latest(l.num_versions)
            }
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => {
                let mut vs = Vec::new();
                for (j, &n) in s.versions.iter().enumerate() {
                    let k = format!("version_policy.specific.versions[{j}]");
                    if n < 1 {
                        return Err(self.err(
                            k.clone(),
                            format!("expected a version number >= 1, got {n}{}", self.at(&k)),
                        ));
                    }
                    vs.push(n as u64);
                }
                if vs.is_empty() {
                    return Err(self.err(
                        "version_policy.specific.versions",
                        format!(
                            "lists no version, so nothing would be served{}",
                            self.at("version_policy.specific")
                        ),
                    ));
                }
                vs.sort_unstable();
                vs.dedup();
                VersionPolicy::Specific(vs)
            }
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

    /// Every row of [`SETTINGS`] is a field of the schema config.pbtxt is
    /// parsed against (`[]` exactly on repeated fields and maps), and every
    /// field of the schema that the walk can reach (below Supported
    /// settings) has a row: the table and the proto cannot drift apart.
    #[test]
    fn the_table_and_the_schema_agree() {
        for (path, _) in SETTINGS {
            let (_, generic, field) = describe(&path.replace("[]", "[0]"));
            assert!(field.is_some(), "{path} is not in proto/model_config.proto");
            assert_eq!(generic.last().map(String::as_str), Some(*path), "{path}");
        }
        fn walk(m: &MessageDescriptor, table: &str) {
            for f in m.fields() {
                let g = join(table, f.name());
                let g = if f.is_list() || f.is_map() {
                    format!("{g}[]")
                } else {
                    g
                };
                let r = rule(SETTINGS, &g);
                assert!(r.is_some(), "{g} (in the proto) has no row in SETTINGS");
                if let (Some(Supported(_)), Some(child)) = (r, f.kind().as_message()) {
                    walk(child, &g);
                }
            }
        }
        walk(&descriptors::model_config(), "");
    }

    /// Triton-style configs (`tests/fixtures/triton_configs`, written for
    /// this project, see its README) read as the hand-written parser this
    /// reader replaced read them: `expected.tsv` holds that parser's outcome
    /// for each, recorded before it was removed. The same values for those
    /// that read; the same key and problem for those refused.
    #[test]
    fn triton_example_configs_read_as_before() {
        fn summary(c: &ModelConfig) -> String {
            let tensors = |ts: &[TensorSpec]| {
                let t: Vec<String> = ts
                    .iter()
                    .map(|t| format!("{}:{}:{:?}", t.name, t.dtype, t.shape))
                    .collect();
                t.join(" ")
            };
            let b = &c.batching;
            let ignored: Vec<&str> = c.ignored.iter().map(|i| i.path.as_str()).collect();
            format!(
                "name={} inputs=[{}] outputs=[{}] labels={:?} max_batch_size={} max_queue_delay_us={} preferred_batch_sizes={:?} max_queue_size={} timeout_ms={} dynamic_batching={} instances={} intra_op_threads={} model={} version_policy={:?} ignored={:?}",
                c.name,
                tensors(&c.declared.inputs),
                tensors(&c.declared.outputs),
                c.label_files,
                b.max_batch_size,
                b.max_queue_delay_us,
                b.preferred_batch_sizes,
                b.max_queue_size,
                b.timeout_ms,
                c.dynamic_batching,
                c.instances.count,
                c.instances.intra_op_threads,
                c.default_model_filename,
                c.version_policy,
                ignored
            )
        }
        // Syntax errors are prost-reflect's own words now, and it may put
        // the column elsewhere on the line (the end of an unterminated
        // string rather than its start): for them, the line must agree.
        fn syntax_line(outcome: &str) -> &str {
            match outcome.strip_prefix("ERR\tline ") {
                Some(rest) => &outcome[..outcome.len() - rest.len() + rest.find(' ').unwrap()],
                None => outcome,
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/triton_configs");
        let expected = std::fs::read_to_string(root.join("expected.tsv")).unwrap();
        let (mut read, mut refused) = (0, 0);
        let mut wrong = Vec::new();
        for line in expected.lines().filter(|l| !l.starts_with('#')) {
            let (rel, want) = line.split_once('\t').unwrap();
            let file = root.join(rel);
            let folder = file
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let text = std::fs::read_to_string(&file).unwrap();
            let got = match parse_config(&text, &file, folder) {
                Ok(c) => {
                    read += 1;
                    format!("OK\t{}", summary(&c))
                }
                Err(e) => {
                    refused += 1;
                    format!("ERR\t{}\t{}", e.key, e.problem)
                }
            };
            if syntax_line(&got) != syntax_line(want) {
                wrong.push(format!("{rel}\n  read: {got}\n  want: {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // Every fixture is listed.
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| match p.extension() {
                    _ if p.is_dir() => count(&p),
                    Some(x) if x == "pbtxt" => 1,
                    _ => 0,
                })
                .sum()
        }
        assert_eq!(read + refused, count(&root));
        assert!(
            read >= 20 && refused >= 35,
            "{read} read, {refused} refused"
        );
    }

    #[test]
    fn colons_go_before_message_lists_only() {
        let text = "input [ { dims [] } ]\ndims: [ 1 ] output[{}] x [ 1 ]";
        let p = Positions::scan(text);
        let fixed = with_colons(&p, text, 0..text.len());
        assert_eq!(
            fixed,
            "input :[ { dims :[] } ]\ndims: [ 1 ] output:[{}] x [ 1 ]"
        );
        for needle in ["input", "dims", "[] }", "} ]", "output", "{}", "x ["] {
            let at = fixed.find(needle).unwrap();
            assert_eq!(original(&p, at), text.find(needle).unwrap(), "{needle}");
        }
        // Part of the text, for one map entry parsed again.
        let inner = p.find("input[0]").unwrap().value.clone();
        assert_eq!(with_colons(&p, text, inner), "{ dims :[] }");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        for (text, key, problem) in [
            (
                "name: \"m\"\nmax_batch_size 8\n",
                "line 2 column 16",
                "expected ':'",
            ),
            // After lists written without a colon, which are parsed with one.
            (
                "input [ { } ]\noutput [ ]\nmax_batch_size 8",
                "line 3 column 16",
                "expected ':'",
            ),
            (
                "input {\n  name: \"x\"\n",
                "line 3 column 1",
                "end of input",
            ),
            (
                "name: \"open\nmax_batch_size: 1",
                "line 1 column 12",
                "string",
            ),
            ("name: 'x", "line 1 column 9", "string terminator"),
            (
                "input { dims: [1, 2 }",
                "line 1 column 21",
                "expected ',' or ']'",
            ),
            ("name: \"\\q\"", "line 1 column 8", "escape"),
            ("max_batch_size: 12abc", "line 1 column 17", "whitespace"),
            ("}", "line 1 column 1", "expected a field name"),
            ("[ext.field]: 1", "line 1 column 1", "extension"),
            ("max_batch_size", "line 1 column 15", "end of input"),
            // Columns count characters, not bytes.
            ("name: 'é' }", "line 1 column 11", "expected a field name"),
        ] {
            let e = refused(text);
            assert_eq!(e.key, key, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
        }
    }

    #[test]
    fn value_errors_name_the_setting_and_line() {
        for (text, key, problem) in [
            (
                "input [ { name: \"x\" },\n { name: 5 } ]",
                "input[1].name",
                "expected a quoted string, got the number 5 (line 2)",
            ),
            (
                "max_batch_size: 99999999999",
                "max_batch_size",
                "expected a signed 32-bit integer, got 99999999999, which is out of range (line 1)",
            ),
            (
                "max_batch_size: 1.5",
                "max_batch_size",
                "expected an integer, got the number 1.5",
            ),
            (
                "input { name: \"x\" data_type: TYPE_FP32 dims: 1 optional: maybe }",
                "input[0].optional",
                "expected true or false, got the identifier maybe",
            ),
            (
                "dynamic_batching: 5",
                "dynamic_batching",
                "expected a message { ... }, got the number 5",
            ),
            (
                "name: [ \"m\" ]",
                "name",
                "expected a quoted string, got a list [ ... ]",
            ),
            (
                "optimization { priority: PRIORITY_HIGH }",
                "optimization.priority",
                "expected PRIORITY_DEFAULT, PRIORITY_MAX or PRIORITY_MIN, got PRIORITY_HIGH",
            ),
            (
                "dynamic_batching { default_queue_policy { timeout_action: WAIT } }",
                "dynamic_batching.default_queue_policy.timeout_action",
                "expected REJECT or DELAY, got WAIT",
            ),
            (
                "version_policy { latest { num_versions: -1 } }",
                "version_policy.latest.num_versions",
                ">= 0",
            ),
            // A singular field written twice, the first time at its default
            // (which prost-reflect lets through).
            (
                "max_batch_size: 0\nmax_batch_size: 4",
                "max_batch_size",
                "is given 2 times (line 2)",
            ),
            (
                "max_batch_size: 0 max_batch_size: 0",
                "max_batch_size",
                "is given 2 times",
            ),
            (
                "version_policy { all {} latest { num_versions: 1 } }",
                "version_policy",
                "got all, latest (line 1)",
            ),
            // Settings ignored as a whole are still parsed against the schema.
            (
                "optimization { graph { levle: 1 } }",
                "optimization.graph.levle",
                "unknown setting (line 1)",
            ),
            // A parse error after a refused setting: the refusal, as when
            // settings are checked in the order they are written.
            (
                "sequence_batching { }\nmax_batch_size: \"8\"",
                "sequence_batching",
                "not supported (line 1)",
            ),
            (
                "ensemble_scheduling { step [ { model_name: \"a\" model_version: latest } ] }",
                "ensemble_scheduling",
                "not supported (line 1)",
            ),
        ] {
            let e = refused(text);
            assert_eq!(e.key, key, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
        }
    }

    #[test]
    fn text_format_spellings() {
        // Hexadecimal and octal numbers, an enum value by number, `False`
        // and `t`, `<>` messages, `;` separators, adjacent strings joined,
        // escapes, comments.
        let c = parse(
            "max_batch_size: 0x4 # four\n\
             input < name: \"x\"; data_type: 11; dims: [ 010, 0x10 ]; optional: False >\n\
             output [ { name: 'y' \"z\" data_type: TYPE_FP32 dims: 1 label_filename: \"l\\x61bels.txt\" } ]",
        )
        .unwrap();
        assert_eq!(c.batching.max_batch_size, 4);
        assert_eq!(c.declared.inputs[0].dtype, DataType::Fp32);
        assert_eq!(c.declared.inputs[0].shape, [-1, 8, 16]);
        assert_eq!(c.declared.outputs[0].name, "yz");
        assert_eq!(c.label_files["yz"], "labels.txt");
        let e = refused("input { name: \"x\" data_type: TYPE_FP32 dims: 1 is_shape_tensor: t }");
        assert_eq!(e.key, "input[0].is_shape_tensor");
        // `name: ""` is a name (not the folder's).
        assert_eq!(refused("name: \"\"").key, "name");
    }

    #[test]
    fn input_formats_are_carried_for_the_configuration_answer() {
        let c = parse(&with(
            r#"input [ { name: "img" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 8, 8 ] },
                       { name: "raw" data_type: TYPE_FP32 format: FORMAT_NONE dims: 1 } ]"#,
        ))
        .unwrap();
        assert_eq!(
            c.input_formats,
            BTreeMap::from([("img".to_string(), "FORMAT_NCHW".to_string())])
        );
        let paths: Vec<&str> = c.ignored.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["input[1].format"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        let m = c.manifest(dir.path()).unwrap();
        assert_eq!(m.input_formats["img"], "FORMAT_NCHW");
    }

    proptest::proptest! {
        /// A config.pbtxt is user input: whatever its bytes, reading it
        /// answers with a config or an error, never a panic.
        #[test]
        fn any_text_reads_or_errs_without_panicking(text in "[ -~\\n\\té{}\\[\\]<>:;,\"'#-]{0,200}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(!e.problem.is_empty() && !e.key.is_empty());
            }
        }

        /// Lists of messages read the same with or without the colon.
        #[test]
        fn lists_read_the_same_with_or_without_colons(colon in proptest::bool::ANY, n in 1usize..4) {
            let inputs: Vec<String> = (0..n)
                .map(|i| format!("{{ name: \"i{i}\" data_type: TYPE_INT64 dims: [ {i} ] }}"))
                .collect();
            let text = format!("input{} [ {} ]", if colon { ":" } else { "" }, inputs.join(", "));
            let c = parse(&text).unwrap();
            proptest::prop_assert_eq!(c.declared.inputs.len(), n);
        }
    }
}
