//! Triton's model configuration extension: the served model's settings as
//! a `ModelConfig` message. gRPC's `ModelConfig` answers the message; HTTP's
//! `GET /v2/models/{m}[/versions/{v}]/config` answers [`to_json`] of the
//! same message (protobuf's JSON mapping, through `prost_reflect`), so the
//! two cannot disagree and every field of the message is in both. Dims
//! leave out the batch dimension when the model batches, as Triton's do.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::endpoints::routing::Served;
use ferroserve_protocol::grpc::descriptors;
use ferroserve_protocol::grpc::proto::model_config::SchedulingChoice;
use ferroserve_protocol::grpc::proto::model_input::Format;
use ferroserve_protocol::grpc::proto::model_instance_group::Kind;
use ferroserve_protocol::grpc::proto::model_queue_policy::TimeoutAction;
use ferroserve_protocol::grpc::proto::model_version_policy::{self as policy, PolicyChoice};
use ferroserve_protocol::grpc::proto::{
    DataType as TritonType, ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup,
    ModelOutput, ModelQueuePolicy, ModelVersionPolicy,
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
            // What a config.pbtxt says, echoed (as Triton does) though an
            // ONNX model takes the layout of its input's shape.
            format: m
                .input_formats
                .get(&t.name)
                .and_then(|f| Format::from_str_name(f))
                .unwrap_or(Format::None)
                .into(),
            dims: dims(&t.shape),
            ..Default::default()
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
            label_filename: m.label_files.get(&t.name).cloned().unwrap_or_default(),
            ..Default::default()
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
        ..Default::default()
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
            ..Default::default()
        }],
        default_model_filename: m
            .model_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        parameters: HashMap::new(),
        ..Default::default()
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

/// `config` in Triton's JSON form: protobuf's JSON mapping with the proto
/// field names and every field without presence printed even when it holds
/// its default (scalars, lists, maps), as Triton prints configurations;
/// 64-bit integers are JSON numbers, as Triton writes them; unset messages
/// are left out.
pub fn to_json(c: &ModelConfig) -> Value {
    let mut message = DynamicMessage::new(descriptors::model_config());
    message
        .transcode_from(c)
        .expect("the generated ModelConfig and its descriptor come from the same proto");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializing into a serde_json::Value does not fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroserve_protocol::grpc::proto::ModelTensorReshape;
    use prost::Message;
    use serde_json::json;

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
                ..Default::default()
            })),
            instance_group: vec![ModelInstanceGroup {
                name: "m_0".into(),
                kind: Kind::Cpu.into(),
                count: 2,
                gpus: vec![],
                ..Default::default()
            }],
            default_model_filename: "model.onnx".into(),
            parameters: HashMap::new(),
            ..Default::default()
        }
    }

    /// Paths of `after` that `before` does not have; panics where a value
    /// of `before` differs in `after`.
    fn added(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
        match (before, after) {
            (Value::Object(b), Value::Object(a)) => {
                for (k, v) in a {
                    let p = format!("{path}.{k}");
                    match b.get(k) {
                        Some(bv) => added(bv, v, &p, out),
                        None => out.push(p),
                    }
                }
                assert!(
                    b.keys().all(|k| a.contains_key(k)),
                    "{path}: {b:?} -> {a:?}"
                );
            }
            (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
                for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                    added(bv, av, &format!("{path}[{i}]"), out);
                }
            }
            _ => assert_eq!(before, after, "{path}"),
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
        assert_eq!(j["dynamic_batching"]["preferred_batch_size"], json!([4, 8]));
        assert!(j["dynamic_batching"].get("default_queue_policy").is_none());
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

    /// What the JSON written by hand before prost-reflect's serde answered
    /// for this configuration is all still there, unchanged; what is added
    /// are fields of the message at their defaults, as Triton prints them.
    #[test]
    fn json_keeps_every_answer_of_the_hand_written_form() {
        let mut c = sample();
        if let Some(SchedulingChoice::DynamicBatching(d)) = &mut c.scheduling_choice {
            d.default_queue_policy = Some(ModelQueuePolicy {
                timeout_action: TimeoutAction::Reject.into(),
                default_timeout_microseconds: 30_000_000,
                allow_timeout_override: true,
                max_queue_size: 1024,
            });
        }
        c.input[0].format = Format::Nchw.into();
        let before = json!({
            "name": "m", "platform": "onnxruntime_onnx", "backend": "onnxruntime",
            "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                       "dims": [-1, 4], "is_shape_tensor": false, "allow_ragged_batch": false,
                       "optional": false, "reshape": {"shape": [4]}}],
            "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": [1],
                        "label_filename": "", "is_shape_tensor": false}],
            "instance_group": [{"name": "m_0", "kind": "KIND_CPU", "count": 2, "gpus": []}],
            "default_model_filename": "model.onnx",
            "parameters": {},
            "version_policy": {"specific": {"versions": [1, 3]}},
            "dynamic_batching": {
                "preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100,
                "preserve_ordering": false,
                "default_queue_policy": {"timeout_action": "REJECT",
                    "default_timeout_microseconds": 30_000_000u64,
                    "allow_timeout_override": true, "max_queue_size": 1024}
            }
        });
        let after = to_json(&c);
        let mut new = Vec::new();
        added(&before, &after, "", &mut new);
        new.sort();
        assert_eq!(
            new,
            [
                ".batch_input",
                ".batch_output",
                ".cc_model_filenames",
                ".dynamic_batching.default_priority_level",
                ".dynamic_batching.priority_levels",
                ".dynamic_batching.priority_queue_policy",
                ".instance_group[0].host_policy",
                ".instance_group[0].passive",
                ".instance_group[0].profile",
                ".instance_group[0].secondary_devices",
                ".metric_tags",
                ".model_warmup",
                ".runtime",
            ]
        );
        for p in &new {
            let mut v = &after;
            for part in p.trim_start_matches('.').split('.') {
                v = match part.split_once('[') {
                    Some((k, _)) => &v[k][0],
                    None => &v[part],
                };
            }
            assert!(
                matches!(v, Value::Array(a) if a.is_empty())
                    || matches!(v, Value::Object(o) if o.is_empty())
                    || v == &json!("")
                    || v == &json!(false)
                    || v == &json!(0),
                "{p}: {v}"
            );
        }
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
