//! The values an ONNX graph holds on the host, and the node attributes its
//! operators read: shared by the graph reader and the operators, which each
//! need them without the other.

use std::collections::HashMap;

use crate::onnx::{self, attribute_type, data_type};

/// Constant data the host keeps: initializers and `Constant` outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// Element types a value may have: FP32 values live on the device; INT64
/// values (Reshape's target shape) live on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F32,
    I64,
}

/// Reads an initializer or a `Constant` value.
pub fn constant_from_proto(t: &onnx::TensorProto) -> Result<Constant, String> {
    if t.data_location == 1 {
        return Err("data stored in an external file is not supported; save the model with its weights inside".into());
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("negative dimension in {:?}", t.dims));
        }
        shape.push(d as usize);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has too many elements", t.dims))?;
    let data = match t.data_type {
        data_type::FLOAT => {
            let v: Vec<f32> = if !t.raw_data.is_empty() {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            if v.len() != count {
                return Err(format!(
                    "shape {:?} needs {count} floats, the tensor holds {}",
                    t.dims,
                    v.len()
                ));
            }
            HostData::F32(v)
        }
        data_type::INT64 | data_type::INT32 => {
            let v: Vec<i64> = if !t.raw_data.is_empty() {
                if t.data_type == data_type::INT64 {
                    t.raw_data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect()
                } else {
                    t.raw_data
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                        .collect()
                }
            } else if t.data_type == data_type::INT64 {
                t.int64_data.clone()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            if v.len() != count {
                return Err(format!(
                    "shape {:?} needs {count} integers, the tensor holds {}",
                    t.dims,
                    v.len()
                ));
            }
            HostData::I64(v)
        }
        other => {
            return Err(format!(
                "is {}; the OpenCL backend supports FLOAT tensors (and INT64 shapes)",
                data_type::name(other)
            ))
        }
    };
    Ok(Constant { shape, data })
}

/// A node's attributes by name, remembering which ones an operator read so
/// that an attribute it ignores is refused by name instead of silently
/// changing the result.
pub struct Attrs<'a> {
    by_name: HashMap<&'a str, &'a onnx::AttributeProto>,
    used: std::cell::RefCell<Vec<&'a str>>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(list: &'a [onnx::AttributeProto]) -> Result<Attrs<'a>, String> {
        let mut by_name = HashMap::new();
        for a in list {
            if !a.ref_attr_name.is_empty() {
                return Err(format!(
                    "attribute {:?} refers to a function attribute; functions are not supported",
                    a.name
                ));
            }
            by_name.insert(a.name.as_str(), a);
        }
        Ok(Attrs {
            by_name,
            used: Default::default(),
        })
    }

    fn get(
        &self,
        name: &'static str,
        want: i32,
    ) -> Result<Option<&'a onnx::AttributeProto>, String> {
        self.used.borrow_mut().push(name);
        match self.by_name.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == want || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute {name:?} has type {}, expected {}",
                a.r#type, want
            )),
        }
    }

    pub fn int(&self, name: &'static str, default: i64) -> Result<i64, String> {
        Ok(self
            .get(name, attribute_type::INT)?
            .map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &'static str, default: f32) -> Result<f32, String> {
        Ok(self
            .get(name, attribute_type::FLOAT)?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &'static str) -> Result<Option<Vec<i64>>, String> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &'static str) -> Result<Option<Vec<f32>>, String> {
        Ok(self
            .get(name, attribute_type::FLOATS)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &'static str) -> Result<Option<String>, String> {
        Ok(self
            .get(name, attribute_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn tensor(&self, name: &'static str) -> Result<Option<&'a onnx::TensorProto>, String> {
        Ok(self
            .get(name, attribute_type::TENSOR)?
            .and_then(|a| a.t.as_ref()))
    }

    /// Marks an attribute as accepted without reading it: one whose value
    /// cannot change an inference result (BatchNormalization's momentum).
    pub fn ignore(&self, name: &'static str) {
        self.used.borrow_mut().push(name);
    }

    pub(crate) fn check_all_used(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let mut unknown: Vec<&str> = self
            .by_name
            .keys()
            .filter(|k| !used.contains(k))
            .copied()
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(a) => Err(format!("attribute {a:?} is not supported")),
        }
    }
}
