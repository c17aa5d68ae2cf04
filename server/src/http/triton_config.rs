//! Triton's model configuration extension over HTTP
//! (`GET /v2/models/{m}[/versions/{v}]/config`): the served model's
//! settings in Triton's `ModelConfig` form, so tools that read Triton's
//! configuration work. Dims leave out the batch dimension when the model
//! batches, as Triton's do.

use serde_json::{json, Value};

use crate::manifest::BackendKind;
use crate::model::Model;

fn triton_type(dtype: ferroserve_backend_core::DataType) -> String {
    use ferroserve_backend_core::DataType as D;
    match dtype {
        D::Bytes => "TYPE_STRING".into(),
        D::Fp16 => "TYPE_FP16".into(),
        D::Fp32 => "TYPE_FP32".into(),
        D::Fp64 => "TYPE_FP64".into(),
        other => format!("TYPE_{}", other.as_str()),
    }
}

/// The configuration of `model` as served by endpoint `name`.
pub fn config(name: &str, model: &Model) -> Value {
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
    let inputs: Vec<Value> = model
        .signature
        .inputs
        .iter()
        .map(|t| {
            json!({"name": t.name, "data_type": triton_type(t.dtype), "format": "FORMAT_NONE",
                   "dims": dims(&t.shape), "is_shape_tensor": false, "allow_ragged_batch": false,
                   "optional": false})
        })
        .collect();
    let outputs: Vec<Value> = model
        .signature
        .outputs
        .iter()
        .map(|t| {
            let mut o = json!({"name": t.name, "data_type": triton_type(t.dtype),
                               "dims": dims(&t.shape), "is_shape_tensor": false});
            if let Some(file) = m.label_files.get(&t.name) {
                o["label_filename"] = json!(file);
            }
            o
        })
        .collect();
    let (platform, backend) = match m.backend {
        BackendKind::Onnx => ("onnxruntime_onnx", "onnxruntime"),
        BackendKind::Python => ("", "python"),
        BackendKind::Opencl => ("", "opencl"),
    };
    let mut c = json!({
        "name": name,
        "platform": platform,
        "backend": backend,
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": b.max_batch_size,
        "input": inputs,
        "output": outputs,
        "instance_group": [{"name": format!("{name}_0"), "kind": "KIND_CPU",
                            "count": m.instances.count, "gpus": []}],
        "default_model_filename": m.model_path.file_name().map(|f| f.to_string_lossy().into_owned()),
        "parameters": {},
    });
    if batched {
        c["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_sizes,
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "preserve_ordering": false,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": b.timeout_ms * 1000,
                "allow_timeout_override": true,
                "max_queue_size": b.max_queue_size,
            },
        });
    }
    c
}
