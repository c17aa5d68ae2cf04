//! An ONNX model read into the graph this backend runs, with every node
//! checked at load time.
//!
//! Checking here, not when a request arrives, is the point: a model with an
//! operator or attribute we cannot run is refused at `register`/load with the
//! node named, instead of failing its first request in production.

use std::collections::HashMap;

use ferroserve_backend_core::{DataType, TensorSpec};
use prost::Message;

use crate::onnx::{self, data_type};
use crate::ops::{self, Op};
use crate::values::{constant_from_proto, Attrs, Constant, HostData, Kind};

/// Index of a value (a tensor name) in [`Graph::names`].
pub type ValueId = usize;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub names: Vec<String>,
    pub kinds: Vec<Kind>,
    pub constants: HashMap<ValueId, Constant>,
    /// Inputs a caller provides (graph inputs that are not initializers).
    pub inputs: Vec<(ValueId, TensorSpec)>,
    pub outputs: Vec<(ValueId, TensorSpec)>,
    pub nodes: Vec<Node>,
}

/// Why a model cannot be run by this backend. Messages name the node, the
/// operator and what was expected, so the author knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error("unsupported operator {op:?} (node {node:?}); the OpenCL backend supports {}", crate::SUPPORTED_OPS.join(", "))]
    UnsupportedOp { op: String, node: String },
    #[error("node {node:?} ({op}): {problem}")]
    Node {
        node: String,
        op: String,
        problem: String,
    },
    #[error("{0}")]
    Model(String),
}

impl Graph {
    pub fn decode(bytes: &[u8]) -> Result<Graph, GraphError> {
        let model =
            onnx::ModelProto::decode(bytes).map_err(|e| GraphError::Decode(e.to_string()))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        let graph = model
            .graph
            .ok_or_else(|| GraphError::Decode("the model has no graph".into()))?;
        Builder::default().build(graph, opset)
    }

    pub fn value(&self, id: ValueId) -> &str {
        &self.names[id]
    }
}

#[derive(Default)]
struct Builder {
    names: Vec<String>,
    kinds: Vec<Kind>,
    ids: HashMap<String, ValueId>,
    constants: HashMap<ValueId, Constant>,
}

impl Builder {
    fn id(&mut self, name: &str, kind: Kind) -> ValueId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_string());
        self.kinds.push(kind);
        self.ids.insert(name.to_string(), id);
        id
    }

    fn build(mut self, graph: onnx::GraphProto, opset: i64) -> Result<Graph, GraphError> {
        // Operators first: a model with an operator we lack cannot be fixed
        // by changing its dtypes, so that is what its author should hear.
        for (index, n) in graph.node.iter().enumerate() {
            let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
            if !default_domain || !crate::SUPPORTED_OPS.contains(&n.op_type.as_str()) {
                return Err(GraphError::UnsupportedOp {
                    op: if default_domain {
                        n.op_type.clone()
                    } else {
                        format!("{}.{}", n.domain, n.op_type)
                    },
                    node: node_name(n, index),
                });
            }
        }
        for t in &graph.initializer {
            let c = constant_from_proto(t)
                .map_err(|p| GraphError::Model(format!("initializer {:?}: {p}", t.name)))?;
            let kind = match c.data {
                HostData::F32(_) => Kind::F32,
                HostData::I64(_) => Kind::I64,
            };
            let id = self.id(&t.name, kind);
            self.constants.insert(id, c);
        }
        let mut inputs = Vec::new();
        for vi in &graph.input {
            if self.ids.contains_key(&vi.name) {
                continue; // an initializer that is also listed as an input
            }
            let spec = tensor_spec(vi, "input")?;
            let kind = match spec.dtype {
                DataType::Fp32 => Kind::F32,
                DataType::Int64 => Kind::I64,
                other => unreachable!("tensor_spec admits FP32 and INT64 only, got {other}"),
            };
            let id = self.id(&vi.name, kind);
            inputs.push((id, spec));
        }
        let mut nodes = Vec::new();
        for (index, n) in graph.node.iter().enumerate() {
            let name = node_name(n, index);
            let node_err = |problem: String| GraphError::Node {
                node: name.clone(),
                op: n.op_type.clone(),
                problem,
            };
            let attrs = Attrs::new(&n.attribute).map_err(&node_err)?;
            if n.op_type == "Constant" {
                let c = ops::constant(&attrs).map_err(&node_err)?;
                let out = n
                    .output
                    .first()
                    .ok_or_else(|| node_err("has no output".into()))?;
                let kind = match c.data {
                    HostData::F32(_) => Kind::F32,
                    HostData::I64(_) => Kind::I64,
                };
                let id = self.id(out, kind);
                self.constants.insert(id, c);
                continue;
            }
            let op = ops::parse(&n.op_type, &attrs, opset).map_err(&node_err)?;
            attrs.check_all_used().map_err(&node_err)?;
            let mut ins = Vec::with_capacity(n.input.len());
            for (slot, input) in n.input.iter().enumerate() {
                if input.is_empty() {
                    ins.push(None);
                    continue;
                }
                let Some(&id) = self.ids.get(input) else {
                    return Err(node_err(format!(
                        "input {input:?} is neither a graph input, an initializer nor the output of an earlier node"
                    )));
                };
                let want = op.input_kind(slot);
                if self.kinds[id] != want && !(matches!(op, Op::Identity)) {
                    return Err(node_err(format!(
                        "input {slot} ({input:?}) is {}, expected {}",
                        kind_name(self.kinds[id]),
                        kind_name(want)
                    )));
                }
                ins.push(Some(id));
            }
            let (min, max) = op.input_arity();
            let given = ins.iter().rposition(|i| i.is_some()).map_or(0, |p| p + 1);
            if given < min || given > max || ins[..min].iter().any(|i| i.is_none()) {
                return Err(node_err(format!(
                    "expected {} inputs, got {given}",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("{min} to {max}")
                    }
                )));
            }
            let outputs_used: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
            if outputs_used.len() != 1 || n.output[0].is_empty() {
                return Err(node_err(format!(
                    "expected exactly one output, got {} ({}); optional outputs such as MaxPool's Indices or training-mode BatchNormalization's statistics are not supported",
                    outputs_used.len(),
                    outputs_used
                        .iter()
                        .map(|o| format!("{o:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let out_kind = match op {
                Op::Identity => ins[0].map_or(Kind::F32, |i| self.kinds[i]),
                _ => Kind::F32,
            };
            let out = self.id(&n.output[0], out_kind);
            nodes.push(Node {
                name,
                op,
                inputs: ins,
                outputs: vec![out],
            });
        }
        let mut outputs = Vec::new();
        for vi in &graph.output {
            let Some(&id) = self.ids.get(&vi.name) else {
                return Err(GraphError::Model(format!(
                    "output {:?} is produced by no node",
                    vi.name
                )));
            };
            let spec = tensor_spec(vi, "output")?;
            if spec.dtype != DataType::Fp32 {
                return Err(GraphError::Model(format!(
                    "output {:?} is {}; the OpenCL backend computes in FP32",
                    vi.name, spec.dtype
                )));
            }
            if self.kinds[id] != Kind::F32 {
                return Err(GraphError::Model(format!(
                    "output {:?} is an INT64 value; the OpenCL backend returns FP32 only",
                    vi.name
                )));
            }
            outputs.push((id, spec));
        }
        Ok(Graph {
            names: self.names,
            kinds: self.kinds,
            constants: self.constants,
            inputs,
            outputs,
            nodes,
        })
    }
}

fn node_name(n: &onnx::NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("#{index}")
    } else {
        n.name.clone()
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::F32 => "FP32",
        Kind::I64 => "INT64",
    }
}

fn tensor_spec(vi: &onnx::ValueInfoProto, what: &str) -> Result<TensorSpec, GraphError> {
    let t = vi
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| {
            GraphError::Model(format!(
                "{what} {:?} is not a tensor (sequences, maps and optionals are not supported)",
                vi.name
            ))
        })?;
    let dtype = match t.elem_type {
        data_type::FLOAT => DataType::Fp32,
        data_type::INT64 => DataType::Int64,
        other => {
            return Err(GraphError::Model(format!(
                "{what} {:?} is {}; the OpenCL backend computes in FP32 (INT64 only as a Reshape shape)",
                vi.name,
                data_type::name(other)
            )))
        }
    };
    let shape = t.shape.as_ref().map_or_else(Vec::new, |s| {
        s.dim
            .iter()
            .map(|d| match d.dim_value {
                Some(v) if v >= 0 && d.dim_param.is_none() => v,
                _ => -1,
            })
            .collect()
    });
    Ok(TensorSpec {
        name: vi.name.clone(),
        dtype,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::*;

    fn value(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                dim_value: (d >= 0).then_some(d),
                                dim_param: (d < 0).then(|| "batch".to_string()),
                            })
                            .collect(),
                    }),
                }),
            }),
        }
    }

    fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            op_type: op.into(),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, input_type: i32) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: nodes,
                name: "g".into(),
                initializer: vec![],
                input: vec![value("x", input_type, &[-1, 4])],
                output: vec![value("y", data_type::FLOAT, &[-1, 4])],
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn unsupported_operator_is_named_before_anything_else() {
        // The input is INT32 too, but the operator is what to fix first.
        let bytes = model(
            vec![
                node("Relu", "r", &["x"], &["a"]),
                node("Sign", "sign1", &["a"], &["y"]),
            ],
            data_type::INT32,
        );
        let e = Graph::decode(&bytes).unwrap_err().to_string();
        assert!(
            e.starts_with("unsupported operator \"Sign\" (node \"sign1\"); the OpenCL backend supports Add, AveragePool"),
            "{e}"
        );
        let custom = NodeProto {
            domain: "com.microsoft".into(),
            ..node("Gelu", "", &["x"], &["y"])
        };
        let e = Graph::decode(&model(vec![custom], data_type::FLOAT))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"com.microsoft.Gelu\" (node \"#0\")"), "{e}");
    }

    #[test]
    fn dtypes_attributes_and_outputs_are_checked() {
        let e = Graph::decode(&model(vec![node("Relu", "r", &["x"], &["y"])], 10))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input \"x\" is FP16; the OpenCL backend computes in FP32"),
            "{e}"
        );
        let mut relu = node("Relu", "r", &["x"], &["y"]);
        relu.attribute.push(AttributeProto {
            name: "alpha".into(),
            r#type: attribute_type::FLOAT,
            f: 0.5,
            ..Default::default()
        });
        let e = Graph::decode(&model(vec![relu], data_type::FLOAT))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "node \"r\" (Relu): attribute \"alpha\" is not supported");
        let mut pool = node("MaxPool", "p", &["x"], &["y", "idx"]);
        pool.attribute.push(AttributeProto {
            name: "kernel_shape".into(),
            r#type: attribute_type::INTS,
            ints: vec![2],
            ..Default::default()
        });
        let e = Graph::decode(&model(vec![pool], data_type::FLOAT))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected exactly one output, got 2"), "{e}");
        let e = Graph::decode(b"\xff\xff not protobuf")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("not a valid ONNX model"), "{e}");
    }

    #[test]
    fn a_supported_graph_plans_with_relu_fused() {
        let mut g = model(vec![], data_type::FLOAT);
        let mut m = ModelProto::decode(&g[..]).unwrap();
        let graph = m.graph.as_mut().unwrap();
        graph.initializer.push(TensorProto {
            dims: vec![4, 4],
            data_type: data_type::FLOAT,
            float_data: vec![0.5; 16],
            name: "w".into(),
            ..Default::default()
        });
        graph.node = vec![
            node("MatMul", "mm", &["x", "w"], &["h"]),
            node("Relu", "relu", &["h"], &["y"]),
        ];
        g = m.encode_to_vec();
        let graph = Graph::decode(&g).unwrap();
        let plan = crate::plan::build(&graph, &[vec![3, 4]], &HashMap::new()).unwrap();
        // One GEMM launch with the activation flag set; no separate Relu.
        assert_eq!(plan.launches.len(), 1);
        assert_eq!(plan.launches[0].kernel, crate::kernels::Kernel::Gemm);
        assert_eq!(plan.launches[0].args[16], crate::plan::Arg::I32(1));
        let y = graph.outputs[0].0;
        assert_eq!(plan.shapes[y], Some(vec![3, 4]));
    }

    #[test]
    fn shapes_past_32_bit_indexing_are_refused_not_overflowed() {
        let mut m = ModelProto::decode(&model(vec![], data_type::FLOAT)[..]).unwrap();
        let graph = m.graph.as_mut().unwrap();
        graph.input = vec![value("x", data_type::FLOAT, &[1 << 40, 1 << 40])];
        graph.node = vec![node("Relu", "relu", &["x"], &["y"])];
        let graph = Graph::decode(&m.encode_to_vec()).unwrap();
        let e = crate::plan::build(&graph, &[vec![1 << 40, 1 << 40]], &HashMap::new()).unwrap_err();
        assert!(e.contains("32-bit indexing"), "{e}");
        // A Reshape target whose dims overflow when multiplied.
        let e = crate::ops::reshape(&[4], &[1 << 40, 1 << 40, 0], true).unwrap_err();
        assert!(e.contains("cannot reshape"), "{e}");
    }

    proptest::proptest! {
        /// A model file is user input: whatever its bytes, decoding and
        /// planning answer with a graph or an error, never a panic.
        #[test]
        fn any_bytes_decode_or_err(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(g) = Graph::decode(&bytes) {
                let shapes: Vec<Vec<usize>> = g
                    .inputs
                    .iter()
                    .map(|(_, s)| s.shape.iter().map(|&d| d.clamp(0, 1 << 20) as usize).collect())
                    .collect();
                let _ = crate::plan::build(&g, &shapes, &HashMap::new());
            }
        }
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: attribute_type::INT,
            i: v,
            ..Default::default()
        }
    }

    fn ints_attr(name: &str, v: Vec<i64>) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: attribute_type::INTS,
            ints: v,
            ..Default::default()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// One node of any supported operator, with arbitrary (often
        /// nonsensical) shapes and attributes: loading and planning refuse
        /// what does not fit with an error, and never panic.
        #[test]
        fn any_single_node_plans_or_errs(
            op in proptest::sample::select(crate::SUPPORTED_OPS.iter().copied().filter(|o| *o != "Constant").collect::<Vec<_>>()),
            shapes in proptest::collection::vec(proptest::collection::vec(0usize..5, 0..6), 1..4),
            attrs in proptest::collection::vec((0usize..12, proptest::collection::vec(proptest::prop_oneof![-3i64..8, 0i64..1 << 40], 0..6)), 0..2),
        ) {
            let names = ["axis", "perm", "kernel_shape", "strides", "pads", "dilations", "group", "transA", "transB", "allowzero", "ceil_mode", "count_include_pad"];
            let mut n = node(op, "n", &[], &["y"]);
            let mut inputs = Vec::new();
            for (i, sh) in shapes.iter().enumerate() {
                let name = format!("x{i}");
                n.input.push(name.clone());
                inputs.push(value(&name, data_type::FLOAT, &sh.iter().map(|&d| d as i64).collect::<Vec<_>>()));
            }
            let mut seen = std::collections::HashSet::new();
            for (k, v) in attrs {
                if !seen.insert(k) { continue; }
                let name = names[k];
                let single = matches!(name, "axis" | "group" | "transA" | "transB" | "allowzero" | "ceil_mode" | "count_include_pad");
                n.attribute.push(if single { int_attr(name, v.first().copied().unwrap_or(0)) } else { ints_attr(name, v) });
            }
            let m = ModelProto {
                ir_version: 8,
                opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
                graph: Some(GraphProto {
                    node: vec![n],
                    name: "g".into(),
                    initializer: vec![],
                    input: inputs,
                    output: vec![value("y", data_type::FLOAT, &[])],
                }),
            };
            if let Ok(g) = Graph::decode(&m.encode_to_vec()) {
                let concrete: Vec<Vec<usize>> = shapes.clone();
                let _ = crate::plan::build(&g, &concrete, &HashMap::new());
            }
        }
    }
}
