//! Open Inference Protocol request and response bodies: JSON tensors and the
//! binary tensor data extension (`Inference-Header-Content-Length`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferroserve_backend_core::{Signature, Tensor};
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use self::data::{write_data, Flatten, Sink};
use crate::request::{InferRequest, RequestedOutput};
use crate::{classification, declared, InferError};

mod data;

#[derive(Deserialize)]
struct RequestHeader<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputHeader>>,
}

#[derive(Deserialize)]
struct InputHeader<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn invalid(msg: String) -> InferError {
    InferError::InvalidInput(msg)
}

/// Decodes a request body. `header_len` is the `Inference-Header-Content-Length`
/// value when the client used the binary extension; binary tensors become
/// slices of `body`, not copies.
pub fn decode_request(body: Bytes, header_len: Option<usize>) -> Result<InferRequest, InferError> {
    let json_len = match header_len {
        Some(n) if n > body.len() => {
            return Err(invalid(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => n,
        None => body.len(),
    };
    let header: RequestHeader = serde_json::from_slice(&body[..json_len])
        .map_err(|e| invalid(format!("malformed request JSON: {e}")))?;
    let mut binary = body.slice(json_len..);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for input in &header.inputs {
        let ctx = |m: String| invalid(format!("input {:?}: {m}", input.name));
        let (dtype, count) = declared::declared(&input.datatype, &input.shape).map_err(ctx)?;
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ctx(format!(
                    "parameters.binary_data_size must be a non-negative integer, received {v}"
                ))
            })? as usize),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ctx(
                    "has both \"data\" and binary_data_size; expected one".into()
                ))
            }
            (None, None) => {
                return Err(ctx(
                    "has no \"data\" and no binary_data_size parameter".into()
                ))
            }
            (Some(size), None) => {
                if header_len.is_none() {
                    return Err(ctx(format!(
                        "binary_data_size is {size} but the request has no Inference-Header-Content-Length header"
                    )));
                }
                if size > binary.len() {
                    return Err(ctx(format!(
                        "binary_data_size is {size} but only {} bytes of binary data remain in the body",
                        binary.len()
                    )));
                }
                binary.split_to(size)
            }
            (None, Some(raw)) => {
                // Every JSON element takes at least two bytes ("1,"), so the
                // text bounds the allocation, not a shape the client made up.
                let hint = count
                    .min(raw.get().len() / 2 + 1)
                    .saturating_mul(dtype.element_size().unwrap_or(8));
                let mut sink = Sink::new(dtype, hint);
                let mut de = serde_json::Deserializer::from_str(raw.get());
                Flatten(&mut sink)
                    .deserialize(&mut de)
                    .map_err(|e| ctx(format!("data: {e}")))?;
                if sink.count != count {
                    return Err(ctx(format!(
                        "shape {:?} needs {count} elements, received {} in data",
                        input.shape, sink.count
                    )));
                }
                Bytes::from(sink.buf)
            }
        };
        let tensor =
            Tensor::new(dtype, input.shape.clone(), data).map_err(|e| ctx(format!("{e}")))?;
        inputs.push((input.name.clone(), tensor));
    }
    if !binary.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the JSON header but no input's binary_data_size accounts for them",
            binary.len()
        )));
    }
    let flag = |p: &Option<Map<String, Value>>, key: &str| {
        p.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool)
    };
    let binary_data_output = flag(&header.parameters, "binary_data_output").unwrap_or(false);
    let timeout = match header.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => None,
        Some(v) => Some(Duration::from_micros(v.as_u64().ok_or_else(|| {
            invalid(format!(
                "parameters.timeout must be a whole number of microseconds, received {v}"
            ))
        })?)),
    };
    let outputs = match header.outputs {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for o in list {
                let classification =
                    match o.parameters.as_ref().and_then(|p| p.get("classification")) {
                        None => None,
                        Some(v) => match v.as_u64() {
                            Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                            _ => {
                                return Err(invalid(format!(
                                    "output {:?}: parameters.classification must be a positive integer (the number of top classes to return), received {v}",
                                    o.name
                                )))
                            }
                        },
                    };
                let binary = flag(&o.parameters, "binary_data").unwrap_or(binary_data_output);
                out.push(RequestedOutput {
                    name: o.name,
                    binary,
                    classification,
                });
            }
            Some(out)
        }
    };
    Ok(InferRequest {
        id: header.id,
        inputs,
        outputs,
        binary_data_output,
        parameters: header.parameters,
        timeout,
    })
}

/// Resolves the requested outputs to indexes into the model's outputs, in
/// the order requested. An output asking for classification must be one
/// that can be classified; that is checked here, before inference runs.
pub fn select_outputs(
    signature: &Signature,
    requested: &Option<Vec<RequestedOutput>>,
    binary_default: bool,
) -> Result<Vec<(usize, bool)>, InferError> {
    match requested {
        None => Ok((0..signature.outputs.len())
            .map(|i| (i, binary_default))
            .collect()),
        Some(list) => list
            .iter()
            .map(|r| {
                let i = signature
                    .outputs
                    .iter()
                    .position(|s| s.name == r.name)
                    .ok_or_else(|| {
                        invalid(format!(
                            "unknown output {:?}: the model's outputs are {:?}",
                            r.name,
                            signature
                                .outputs
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                        ))
                    })?;
                if let Some(k) = r.classification {
                    classification::check(&r.name, signature.outputs[i].dtype, k)?;
                }
                Ok((i, r.binary))
            })
            .collect(),
    }
}

/// An encoded response body; `header_len` is set when binary outputs follow
/// the JSON header.
pub struct EncodedResponse {
    pub body: Bytes,
    pub header_len: Option<usize>,
}

pub struct ResponseParts<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub id: Option<&'a str>,
    pub parameters: Option<&'a Map<String, Value>>,
    pub signature: &'a Signature,
    pub outputs: &'a [Tensor],
    pub selected: &'a [(usize, bool)],
    /// Parallel to `selected` (or empty when no output asked for it): the
    /// classification tensor that replaces that output's values.
    pub classified: &'a [Option<Tensor>],
}

/// Writes the response by hand rather than through a serde tree: tensor data
/// goes straight from the output bytes into the body, and floats JSON cannot
/// spell (NaN, infinities) keep their values.
pub fn encode_response(p: ResponseParts<'_>) -> Result<EncodedResponse, InferError> {
    fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
        serde_json::to_writer(out, v).expect("writing to a Vec cannot fail");
    }
    let mut json = Vec::with_capacity(256);
    json.extend_from_slice(b"{\"model_name\":");
    put(&mut json, p.model_name);
    json.extend_from_slice(b",\"model_version\":");
    put(&mut json, p.model_version);
    if let Some(id) = p.id {
        json.extend_from_slice(b",\"id\":");
        put(&mut json, id);
    }
    if let Some(params) = p.parameters {
        json.extend_from_slice(b",\"parameters\":");
        put(&mut json, params);
    }
    json.extend_from_slice(b",\"outputs\":[");
    let mut binary_len = 0usize;
    let tensor = |n: usize, i: usize| match p.classified.get(n) {
        Some(Some(c)) => c,
        _ => &p.outputs[i],
    };
    for (n, &(i, binary)) in p.selected.iter().enumerate() {
        let t = tensor(n, i);
        let name = &p.signature.outputs[i].name;
        if n > 0 {
            json.push(b',');
        }
        json.extend_from_slice(b"{\"name\":");
        put(&mut json, name);
        json.extend_from_slice(b",\"datatype\":\"");
        json.extend_from_slice(t.dtype.as_str().as_bytes());
        json.extend_from_slice(b"\",\"shape\":");
        put(&mut json, &t.shape);
        if binary {
            binary_len += t.data.len();
            json.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            json.extend_from_slice(itoa::Buffer::new().format(t.data.len()).as_bytes());
            json.push(b'}');
        } else {
            json.extend_from_slice(b",\"data\":");
            write_data(t, &mut json)
                .map_err(|e| InferError::InvalidInput(format!("output {name:?}: {e}")))?;
        }
        json.push(b'}');
    }
    json.extend_from_slice(b"]}");
    if binary_len == 0 {
        return Ok(EncodedResponse {
            body: Bytes::from(json),
            header_len: None,
        });
    }
    let header_len = json.len();
    let mut body = BytesMut::with_capacity(header_len + binary_len);
    body.extend_from_slice(&json);
    for (n, &(i, binary)) in p.selected.iter().enumerate() {
        if binary {
            body.extend_from_slice(&tensor(n, i).data);
        }
    }
    Ok(EncodedResponse {
        body: body.freeze(),
        header_len: Some(header_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroserve_backend_core::DataType;

    fn msg(r: Result<InferRequest, InferError>) -> String {
        match r {
            Err(InferError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn json_request_decodes() {
        let body = br#"{"id":"r1","parameters":{"x":1},"inputs":[{"name":"a","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}],"outputs":[{"name":"o","parameters":{"binary_data":true}}]}"#;
        let r = decode_request(Bytes::from_static(body), None).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].1.shape, vec![2, 2]);
        assert_eq!(r.inputs[0].1.data.len(), 16);
        assert_eq!(
            r.outputs.unwrap()[0],
            RequestedOutput {
                name: "o".into(),
                binary: true,
                classification: None,
            }
        );
    }

    #[test]
    fn classification_parameter_is_a_positive_integer() {
        let body = |v: &str| {
            Bytes::from(format!(
                r#"{{"inputs":[],"outputs":[{{"name":"probs","parameters":{{"classification":{v}}}}}]}}"#
            ))
        };
        let r = decode_request(body("3"), None).unwrap();
        assert_eq!(r.outputs.unwrap()[0].classification, Some(3));
        for bad in ["0", "-1", "\"x\"", "2.5", "null", "true"] {
            let m = msg(decode_request(body(bad), None));
            assert!(
                m.contains("\"probs\"")
                    && m.contains("positive integer")
                    && m.contains(&format!("received {bad}")),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn classification_of_a_non_numeric_output_is_refused_before_inference() {
        use ferroserve_backend_core::TensorSpec;
        let signature = Signature {
            inputs: vec![],
            outputs: vec![
                TensorSpec {
                    name: "p".into(),
                    dtype: DataType::Fp32,
                    shape: vec![-1, 10],
                },
                TensorSpec {
                    name: "echo".into(),
                    dtype: DataType::Bytes,
                    shape: vec![-1, 1],
                },
            ],
        };
        let req = |name: &str| {
            Some(vec![RequestedOutput {
                name: name.into(),
                binary: false,
                classification: Some(2),
            }])
        };
        assert_eq!(
            select_outputs(&signature, &req("p"), false).unwrap(),
            vec![(0, false)]
        );
        let e = select_outputs(&signature, &req("echo"), false).unwrap_err();
        assert!(
            e.to_string().contains("\"echo\"") && e.to_string().contains("BYTES"),
            "{e}"
        );
    }

    #[test]
    fn binary_tensors_are_slices_of_the_body() {
        let header = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&2.5f32.to_le_bytes());
        let body = Bytes::from(body);
        let r = decode_request(body.clone(), Some(header.len())).unwrap();
        let data = &r.inputs[0].1.data;
        assert_eq!(data.as_ptr(), body[header.len()..].as_ptr(), "no copy");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let m = msg(decode_request(Bytes::from_static(b"{not json"), None));
        assert!(m.starts_with("malformed request JSON"), "{m}");
        let m = msg(decode_request(
            Bytes::from_static(
                br#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
            ),
            None,
        ));
        assert!(
            m.contains("\"a\"") && m.contains("needs 3 elements, received 2"),
            "{m}"
        );
        let m = msg(decode_request(
            Bytes::from_static(
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
            ),
            None,
        ));
        assert!(m.contains("\"FLOAT\""), "{m}");
        let header = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[0u8; 4]);
        let m = msg(decode_request(
            Bytes::from(body.clone()),
            Some(header.len()),
        ));
        assert!(m.contains("binary_data_size is 8 but only 4 bytes"), "{m}");
        let m = msg(decode_request(Bytes::from(body), Some(10_000)));
        assert!(
            m.contains("Inference-Header-Content-Length is 10000"),
            "{m}"
        );
    }
}
