//! Triton's model configuration extension: the served model's settings as
//! a `ModelConfig` message. gRPC's `ModelConfig` answers the message; HTTP's
//! `GET /v2/models/{m}[/versions/{v}]/config` answers [`to_json`] of the
//! same message, so the two cannot disagree. Dims leave out the batch
//! dimension when the model batches, as Triton's do.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::endpoints::routing::Served;
use ferroserve_protocol::grpc::proto::model_config::SchedulingChoice;
use ferroserve_protocol::grpc::proto::model_input::Format;
use ferroserve_protocol::grpc::proto::model_instance_group::Kind;
use ferroserve_protocol::grpc::proto::model_queue_policy::TimeoutAction;
use ferroserve_protocol::grpc::proto::model_version_policy::{self as policy, PolicyChoice};
use ferroserve_protocol::grpc::proto::{
    DataType as TritonType, ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup,
    ModelOutput, ModelQueuePolicy, ModelTensorReshape, ModelVersionPolicy,
};
use ferroserve_runtime::manifest::{BackendKind, VersionPolicy};
use ferroserve_runtime::Model;

fn triton_type(dtype: ferroserve_backend_core::DataType) -> TritonType {
    use ferroserve_backend_core::DataType as D;
    match dtype {
        D::Bool => TritonType::TypeBool,
        D::Uint8 => TritonType::TypeUint8,
        D::Uint16 => TritonType::TypeUint16,
        D::Uint32 => TritonType::TypeUint32,
        D::Uint64 => TritonType::TypeUint64,
        D::Int8 => TritonType::TypeInt8,
        D::Int16 => TritonType::TypeInt16,
        D::Int32 => TritonType::TypeInt32,
        D::Int64 => TritonType::TypeInt64,
        D::Fp16 => TritonType::TypeFp16,
        D::Fp32 => TritonType::TypeFp32,
        D::Fp64 => TritonType::TypeFp64,
        D::Bytes => TritonType::TypeString,
    }
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The version policy an endpoint serves by: a model that an implicit
/// endpoint serves under its own name follows its manifest's policy (a
/// ferroserve bundle's is `latest 1`, the newest registered version; a
/// Triton repository's model states its own); an explicit endpoint serves
/// exactly the versions its deployments name.
pub fn served_policy(served: &Served) -> VersionPolicy {
    if served.endpoint.implicit {
        served.model.manifest.version_policy.clone()
    } else {
        let mut v: Vec<u64> = served
            .endpoint
            .deployments
            .iter()
            .map(|d| d.model.version)
            .collect();
        v.sort_unstable();
        v.dedup();
        VersionPolicy::Specific(v)
    }
}

/// The configuration of `model` as served under `name` with `policy`.
pub fn build(name: &str, model: &Model, policy: &VersionPolicy) -> ModelConfig {
    let m = &model.manifest;
    let b = &m.batching;
    let batched = b.max_batch_size > 0;
    let dims = |shape: &[i64]| -> Vec<i64> {
        if batched {
            shape.iter().skip(1).copied().collect()
        } else {
            shape.to_vec()
        }
    };
    let input = model
        .signature
        .inputs
        .iter()
        .map(|t| ModelInput {
            name: t.name.clone(),
            data_type: triton_type(t.dtype).into(),
            format: Format::None.into(),
            dims: dims(&t.shape),
            reshape: None,
            is_shape_tensor: false,
            allow_ragged_batch: false,
            optional: false,
        })
        .collect();
    let output = model
        .signature
        .outputs
        .iter()
        .map(|t| ModelOutput {
            name: t.name.clone(),
            data_type: triton_type(t.dtype).into(),
            dims: dims(&t.shape),
            reshape: None,
            label_filename: m.label_files.get(&t.name).cloned().unwrap_or_default(),
            is_shape_tensor: false,
        })
        .collect();
    let (platform, backend) = match m.backend {
        BackendKind::Onnx => ("onnxruntime_onnx", "onnxruntime"),
        BackendKind::Python => ("", "python"),
        BackendKind::Opencl => ("", "opencl"),
    };
    // ONNX and Python instances run on the CPU; an OpenCL model's device
    // is chosen by the backend (`instances.device`), a CUDA one by index.
    let device = m.instances.device.as_str();
    let (kind, gpus) = match device.strip_prefix("cuda:").map(str::parse::<i32>) {
        Some(Ok(n)) => (Kind::Gpu, vec![n]),
        _ if device == "cpu" => (Kind::Cpu, Vec::new()),
        _ => (Kind::Model, Vec::new()),
    };
    let dynamic_batching = batched.then(|| ModelDynamicBatching {
        preferred_batch_size: b
            .preferred_batch_sizes
            .iter()
            .map(|&n| clamp_i32(n))
            .collect(),
        max_queue_delay_microseconds: b.max_queue_delay_us,
        preserve_ordering: false,
        default_queue_policy: Some(ModelQueuePolicy {
            timeout_action: TimeoutAction::Reject.into(),
            default_timeout_microseconds: b.timeout_ms.saturating_mul(1000),
            // A request's own timeout applies when shorter.
            allow_timeout_override: true,
            max_queue_size: u32::try_from(b.max_queue_size).unwrap_or(u32::MAX),
        }),
    });
    ModelConfig {
        name: name.to_string(),
        platform: platform.into(),
        backend: backend.into(),
        version_policy: Some(version_policy(policy)),
        max_batch_size: clamp_i32(b.max_batch_size),
        input,
        output,
        scheduling_choice: dynamic_batching.map(SchedulingChoice::DynamicBatching),
        instance_group: vec![ModelInstanceGroup {
            name: format!("{name}_0"),
            kind: kind.into(),
            count: clamp_i32(m.instances.count),
            gpus,
        }],
        default_model_filename: m
            .model_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        parameters: HashMap::new(),
    }
}

fn version_policy(p: &VersionPolicy) -> ModelVersionPolicy {
    let choice = match p {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(policy::Latest { num_versions: *n }),
        VersionPolicy::All => PolicyChoice::All(policy::All {}),
        VersionPolicy::Specific(v) => PolicyChoice::Specific(policy::Specific {
            versions: v
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    ModelVersionPolicy {
        policy_choice: Some(choice),
    }
}

/// The enum's name, as protobuf's JSON mapping writes enums; an unknown
/// number as the number.
fn enum_name<E: TryFrom<i32>>(n: i32, name: fn(&E) -> &'static str) -> Value {
    E::try_from(n).map_or(json!(n), |e| json!(name(&e)))
}

fn reshape_json(obj: &mut Map<String, Value>, r: &Option<ModelTensorReshape>) {
    if let Some(r) = r {
        obj.insert("reshape".into(), json!({ "shape": r.shape }));
    }
}

/// `config` in Triton's JSON form: protobuf's JSON mapping with the
/// proto field names and every scalar and list printed even when empty
/// (as Triton prints configurations), except that 64-bit integers are JSON
/// numbers, as Triton writes them, and unset messages are left out.
pub fn to_json(c: &ModelConfig) -> Value {
    let inputs: Vec<Value> = c
        .input
        .iter()
        .map(|i| {
            let mut o = json!({
                "name": i.name,
                "data_type": enum_name(i.data_type, TritonType::as_str_name),
                "format": enum_name(i.format, Format::as_str_name),
                "dims": i.dims,
                "is_shape_tensor": i.is_shape_tensor,
                "allow_ragged_batch": i.allow_ragged_batch,
                "optional": i.optional,
            });
            reshape_json(o.as_object_mut().expect("an object"), &i.reshape);
            o
        })
        .collect();
    let outputs: Vec<Value> = c
        .output
        .iter()
        .map(|t| {
            let mut o = json!({
                "name": t.name,
                "data_type": enum_name(t.data_type, TritonType::as_str_name),
                "dims": t.dims,
                "label_filename": t.label_filename,
                "is_shape_tensor": t.is_shape_tensor,
            });
            reshape_json(o.as_object_mut().expect("an object"), &t.reshape);
            o
        })
        .collect();
    let groups: Vec<Value> = c
        .instance_group
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "kind": enum_name(g.kind, Kind::as_str_name),
                "count": g.count,
                "gpus": g.gpus,
            })
        })
        .collect();
    let parameters: Map<String, Value> = c
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "string_value": v.string_value })))
        .collect();
    let mut out = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": inputs,
        "output": outputs,
        "instance_group": groups,
        "default_model_filename": c.default_model_filename,
        "parameters": parameters,
    });
    let obj = out.as_object_mut().expect("an object");
    if let Some(p) = c
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        let p = match p {
            PolicyChoice::Latest(l) => json!({"latest": {"num_versions": l.num_versions}}),
            PolicyChoice::All(_) => json!({"all": {}}),
            PolicyChoice::Specific(s) => json!({"specific": {"versions": s.versions}}),
        };
        obj.insert("version_policy".into(), p);
    }
    if let Some(SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        let mut batching = json!({
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
            "preserve_ordering": d.preserve_ordering,
        });
        if let Some(q) = &d.default_queue_policy {
            batching["default_queue_policy"] = json!({
                "timeout_action": enum_name(q.timeout_action, TimeoutAction::as_str_name),
                "default_timeout_microseconds": q.default_timeout_microseconds,
                "allow_timeout_override": q.allow_timeout_override,
                "max_queue_size": q.max_queue_size,
            });
        }
        obj.insert("dynamic_batching".into(), batching);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> ModelConfig {
        ModelConfig {
            name: "m".into(),
            platform: "onnxruntime_onnx".into(),
            backend: "onnxruntime".into(),
            version_policy: Some(version_policy(&VersionPolicy::Specific(vec![1, 3]))),
            max_batch_size: 8,
            input: vec![ModelInput {
                name: "x".into(),
                data_type: TritonType::TypeFp32.into(),
                dims: vec![-1, 4],
                reshape: Some(ModelTensorReshape { shape: vec![4] }),
                ..Default::default()
            }],
            output: vec![ModelOutput {
                name: "y".into(),
                data_type: TritonType::TypeString.into(),
                dims: vec![1],
                ..Default::default()
            }],
            scheduling_choice: Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                preferred_batch_size: vec![4, 8],
                max_queue_delay_microseconds: 100,
                preserve_ordering: false,
                default_queue_policy: None,
            })),
            instance_group: vec![ModelInstanceGroup {
                name: "m_0".into(),
                kind: Kind::Cpu.into(),
                count: 2,
                gpus: vec![],
            }],
            default_model_filename: "model.onnx".into(),
            parameters: HashMap::new(),
        }
    }

    #[test]
    fn json_follows_the_message_with_triton_names() {
        let j = to_json(&sample());
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["input"][0]["format"], "FORMAT_NONE");
        assert_eq!(j["input"][0]["dims"], json!([-1, 4]));
        assert_eq!(j["input"][0]["reshape"], json!({"shape": [4]}));
        assert_eq!(j["output"][0]["data_type"], "TYPE_STRING");
        assert_eq!(j["output"][0]["label_filename"], "");
        assert!(j["output"][0].get("reshape").is_none());
        assert_eq!(
            j["version_policy"],
            json!({"specific": {"versions": [1, 3]}})
        );
        assert_eq!(
            j["dynamic_batching"],
            json!({"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100, "preserve_ordering": false})
        );
        assert_eq!(j["instance_group"][0]["kind"], "KIND_CPU");
        assert_eq!(j["parameters"], json!({}));
        let mut unbatched = sample();
        unbatched.scheduling_choice = None;
        unbatched.version_policy = Some(version_policy(&VersionPolicy::Latest(2)));
        let j = to_json(&unbatched);
        assert!(j.get("dynamic_batching").is_none());
        assert_eq!(j["version_policy"], json!({"latest": {"num_versions": 2}}));
        unbatched.version_policy = Some(version_policy(&VersionPolicy::All));
        assert_eq!(to_json(&unbatched)["version_policy"], json!({"all": {}}));
    }

    /// The wire form uses the extension's field numbers: a few bytes
    /// checked by hand (field number << 3 | wire type).
    #[test]
    fn wire_tags_are_the_extensions() {
        let c = ModelConfig {
            max_batch_size: 3,
            backend: "b".into(),
            ..Default::default()
        };
        let bytes = c.encode_to_vec();
        // max_batch_size = 4 (varint: 4 << 3 = 0x20); backend = 17
        // (length-delimited: 17 << 3 | 2 = 138, the varint 0x8a 0x01).
        assert_eq!(bytes, vec![0x20, 0x03, 0x8a, 0x01, 0x01, b'b']);
    }
}
