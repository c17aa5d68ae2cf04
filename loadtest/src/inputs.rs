//! What `ferroserve loadtest` sends: inputs read from a file of v2
//! requests or made up from the model's metadata, encoded once per request
//! as JSON, as the binary tensor extension, or as a gRPC message.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use ferroserve_backend_core::{DataType, Tensor};
use serde_json::{json, Value};

use ferroserve_protocol::grpc::proto::model_infer_request::InferInputTensor;
use ferroserve_protocol::grpc::proto::ModelInferRequest;

pub use ferroserve_protocol::samples::{read as from_file, Inputs};

/// A small deterministic generator (xorshift): inputs are reproducible run
/// to run, and the generator costs nothing next to a request.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `count` requests of random inputs shaped as the model's metadata says
/// (`GET /v2/models/{m}`): free dims are 1, numbers are uniform in [0, 1)
/// (integers in 0..10), strings are short words.
pub fn random(metadata: &Value, count: usize) -> Result<Vec<Inputs>, String> {
    let specs = metadata["inputs"]
        .as_array()
        .ok_or_else(|| format!("model metadata has no inputs list: {metadata}"))?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..count.max(1))
        .map(|_| {
            specs
                .iter()
                .map(|s| {
                    let name = s["name"].as_str().ok_or("an input without a name")?;
                    let dtype: DataType = s["datatype"]
                        .as_str()
                        .ok_or("an input without a datatype")?
                        .parse()
                        .map_err(|e| format!("input {name:?}: {e}"))?;
                    let shape: Vec<i64> = s["shape"]
                        .as_array()
                        .ok_or("an input without a shape")?
                        .iter()
                        .map(|d| d.as_i64().unwrap_or(-1).max(1))
                        .collect();
                    let n: usize = shape.iter().map(|&d| d as usize).product();
                    let t = match dtype {
                        DataType::Bytes => {
                            let words: Vec<String> =
                                (0..n).map(|_| format!("w{}", rng.next() % 1000)).collect();
                            Tensor::from_strings(shape, &words)
                        }
                        dt => {
                            let mut buf = BytesMut::new();
                            for _ in 0..n {
                                let x = rng.unit();
                                let i = (rng.next() % 10) as i64;
                                match dt {
                                    DataType::Bool => buf.extend_from_slice(&[(i % 2) as u8]),
                                    DataType::Uint8 => buf.extend_from_slice(&[i as u8]),
                                    DataType::Int8 => buf.extend_from_slice(&[i as u8]),
                                    DataType::Uint16 | DataType::Int16 => {
                                        buf.extend_from_slice(&(i as u16).to_le_bytes())
                                    }
                                    DataType::Uint32 | DataType::Int32 => {
                                        buf.extend_from_slice(&(i as u32).to_le_bytes())
                                    }
                                    DataType::Uint64 | DataType::Int64 => {
                                        buf.extend_from_slice(&(i as u64).to_le_bytes())
                                    }
                                    DataType::Fp16 => buf.extend_from_slice(
                                        &half::f16::from_f64(x).to_bits().to_le_bytes(),
                                    ),
                                    DataType::Fp32 => {
                                        buf.extend_from_slice(&(x as f32).to_le_bytes())
                                    }
                                    DataType::Fp64 => buf.extend_from_slice(&x.to_le_bytes()),
                                    DataType::Bytes => unreachable!("handled above"),
                                }
                            }
                            Tensor::new(dt, shape, buf.freeze())
                        }
                    }
                    .map_err(|e| format!("input {name:?}: {e}"))?;
                    Ok((name.to_string(), t))
                })
                .collect::<Result<Inputs, String>>()
        })
        .collect()
}

/// The tensor's elements as JSON values (the v2 JSON `data` field).
fn json_data(t: &Tensor) -> Vec<Value> {
    let d = &t.data[..];
    match t.dtype {
        DataType::Bytes => t
            .string_elements()
            .iter()
            .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
            .collect(),
        DataType::Bool => d.iter().map(|&b| json!(b != 0)).collect(),
        DataType::Uint8 => d.iter().map(|&b| json!(b)).collect(),
        DataType::Int8 => d.iter().map(|&b| json!(b as i8)).collect(),
        DataType::Uint16 => d
            .chunks_exact(2)
            .map(|c| json!(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Int16 => d
            .chunks_exact(2)
            .map(|c| json!(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Fp16 => d
            .chunks_exact(2)
            .map(|c| json!(half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()))
            .collect(),
        DataType::Uint32 => d
            .chunks_exact(4)
            .map(|c| json!(u32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        DataType::Int32 => d
            .chunks_exact(4)
            .map(|c| json!(i32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        DataType::Fp32 => d
            .chunks_exact(4)
            .map(|c| json!(f32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        DataType::Uint64 => d
            .chunks_exact(8)
            .map(|c| json!(u64::from_le_bytes(c.try_into().expect("8"))))
            .collect(),
        DataType::Int64 => d
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes(c.try_into().expect("8"))))
            .collect(),
        DataType::Fp64 => d
            .chunks_exact(8)
            .map(|c| json!(f64::from_le_bytes(c.try_into().expect("8"))))
            .collect(),
    }
}

/// A v2 JSON request body.
pub fn http_json(inputs: &Inputs) -> Bytes {
    let tensors: Vec<Value> = inputs
        .iter()
        .map(|(name, t)| {
            json!({"name": name, "datatype": t.dtype.as_str(), "shape": t.shape, "data": json_data(t)})
        })
        .collect();
    Bytes::from(serde_json::to_vec(&json!({ "inputs": tensors })).expect("JSON serializes"))
}

/// A binary tensor extension body and the length of its JSON header.
pub fn http_binary(inputs: &Inputs) -> (Bytes, usize) {
    let tensors: Vec<Value> = inputs
        .iter()
        .map(|(name, t)| {
            json!({"name": name, "datatype": t.dtype.as_str(), "shape": t.shape,
                   "parameters": {"binary_data_size": t.data.len()}})
        })
        .collect();
    let header = serde_json::to_vec(&json!({ "inputs": tensors })).expect("JSON serializes");
    let mut body = BytesMut::from(&header[..]);
    for (_, t) in inputs {
        body.extend_from_slice(&t.data);
    }
    (body.freeze(), header.len())
}

/// A gRPC `ModelInfer` request with the tensors in `raw_input_contents`.
pub fn grpc_request(model: &str, version: &str, inputs: &Inputs) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        inputs: inputs
            .iter()
            .map(|(name, t)| InferInputTensor {
                name: name.clone(),
                datatype: t.dtype.as_str().to_string(),
                shape: t.shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, t)| t.data.clone()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_inputs_follow_the_metadata_and_encode_back() {
        let meta = json!({"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "s", "datatype": "BYTES", "shape": [-1]},
            {"name": "i", "datatype": "INT64", "shape": [2]}
        ]});
        let reqs = random(&meta, 3).unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0][0].1.shape, [1, 4]);
        assert_eq!(reqs[0][2].1.shape, [2]);
        assert_ne!(reqs[0][0].1.data, reqs[1][0].1.data, "requests differ");
        // JSON round trip through the server's own decoder.
        let back = ferroserve_protocol::json::decode_request(http_json(&reqs[0]), None).unwrap();
        assert_eq!(back.inputs[0].1.data, reqs[0][0].1.data);
        assert_eq!(back.inputs[1].1.data, reqs[0][1].1.data);
        let (body, n) = http_binary(&reqs[0]);
        let back = ferroserve_protocol::json::decode_request(body, Some(n)).unwrap();
        assert_eq!(back.inputs[2].1.data, reqs[0][2].1.data);
    }
}
