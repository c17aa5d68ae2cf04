//! The operators this backend runs: their attributes, read and checked once at
//! load, and their output shapes, computed on the host for each input shape.

use crate::values::{Attrs, Constant, HostData, Kind};

/// Binary operator codes, as `kernels/opencl/elementwise.cl` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
}

/// Unary operator codes, as `kernels/opencl/elementwise.cl` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Relu = 0,
    LeakyRelu = 1,
    Sigmoid = 2,
    Tanh = 3,
    Exp = 4,
    Log = 5,
    Sqrt = 6,
    Erf = 7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Window settings shared by Conv and the pools, as written in the model;
/// unset lists are filled in once the input rank is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel_shape: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// A window resolved for one spatial input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub pad_end: Vec<usize>,
    pub output: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Binary(Binary),
    Unary(Unary, f32),
    Softmax {
        axis: i64,
        /// Before opset 13 Softmax flattened the input to 2-D at `axis`.
        coerce_2d: bool,
    },
    Conv {
        window: Window,
        group: usize,
    },
    MaxPool(Window),
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    BatchNormalization {
        epsilon: f32,
    },
    Flatten {
        axis: i64,
    },
    Reshape {
        allow_zero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    Identity,
}

impl Op {
    /// What each input slot holds: every slot is FP32 except Reshape's shape.
    pub fn input_kind(&self, slot: usize) -> Kind {
        match (self, slot) {
            (Op::Reshape { .. }, 1) => Kind::I64,
            _ => Kind::F32,
        }
    }

    /// The fewest and most inputs the operator takes.
    pub fn input_arity(&self) -> (usize, usize) {
        match self {
            Op::Gemm { .. } => (2, 3),
            Op::MatMul | Op::Binary(_) | Op::Reshape { .. } => (2, 2),
            Op::Conv { .. } => (2, 3),
            Op::BatchNormalization { .. } => (5, 5),
            Op::Concat { .. } => (1, usize::MAX),
            _ => (1, 1),
        }
    }

    /// The kernel-level name used in timings and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(Binary::Add) => "Add",
            Op::Binary(Binary::Sub) => "Sub",
            Op::Binary(Binary::Mul) => "Mul",
            Op::Binary(Binary::Div) => "Div",
            Op::Unary(Unary::Relu, _) => "Relu",
            Op::Unary(Unary::LeakyRelu, _) => "LeakyRelu",
            Op::Unary(Unary::Sigmoid, _) => "Sigmoid",
            Op::Unary(Unary::Tanh, _) => "Tanh",
            Op::Unary(Unary::Exp, _) => "Exp",
            Op::Unary(Unary::Log, _) => "Log",
            Op::Unary(Unary::Sqrt, _) => "Sqrt",
            Op::Unary(Unary::Erf, _) => "Erf",
            Op::Softmax { .. } => "Softmax",
            Op::Conv { .. } => "Conv",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Identity => "Identity",
        }
    }
}

/// Reads the attributes of operator `op_type` (already known to be supported).
pub fn parse(op_type: &str, a: &Attrs, opset: i64) -> Result<Op, String> {
    Ok(match op_type {
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        },
        "MatMul" => Op::MatMul,
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Relu" => Op::Unary(Unary::Relu, 0.0),
        "LeakyRelu" => Op::Unary(Unary::LeakyRelu, a.float("alpha", 0.01)?),
        "Sigmoid" => Op::Unary(Unary::Sigmoid, 0.0),
        "Tanh" => Op::Unary(Unary::Tanh, 0.0),
        "Exp" => Op::Unary(Unary::Exp, 0.0),
        "Log" => Op::Unary(Unary::Log, 0.0),
        "Sqrt" => Op::Unary(Unary::Sqrt, 0.0),
        "Erf" => Op::Unary(Unary::Erf, 0.0),
        "Softmax" => {
            let coerce_2d = opset < 13;
            Op::Softmax {
                axis: a.int("axis", if coerce_2d { 1 } else { -1 })?,
                coerce_2d,
            }
        }
        "Conv" => {
            let group = a.int("group", 1)?;
            if group < 1 {
                return Err(format!(
                    "attribute \"group\" must be at least 1, got {group}"
                ));
            }
            Op::Conv {
                window: window(a, false)?,
                group: group as usize,
            }
        }
        "MaxPool" => {
            // storage_order only changes the Indices output, which is refused.
            a.ignore("storage_order");
            Op::MaxPool(window(a, true)?)
        }
        "AveragePool" => Op::AveragePool {
            window: window(a, true)?,
            count_include_pad: a.int("count_include_pad", 0)? != 0,
        },
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "BatchNormalization" => {
            if a.int("training_mode", 0)? != 0 {
                return Err("attribute \"training_mode\" = 1 is not supported: the OpenCL backend runs inference-mode batch normalisation".into());
            }
            if a.int("spatial", 1)? != 1 {
                return Err("attribute \"spatial\" = 0 is not supported".into());
            }
            // Momentum only updates running statistics in training.
            a.ignore("momentum");
            Op::BatchNormalization {
                epsilon: a.float("epsilon", 1e-5)?,
            }
        }
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1)?,
        },
        "Reshape" => Op::Reshape {
            allow_zero: a.int("allowzero", 0)? != 0,
        },
        "Transpose" => Op::Transpose {
            perm: a.ints("perm")?,
        },
        "Concat" => match a.int("axis", i64::MIN)? {
            i64::MIN => return Err("attribute \"axis\" is required".into()),
            axis => Op::Concat { axis },
        },
        "Identity" => Op::Identity,
        other => unreachable!("{other} is checked against SUPPORTED_OPS first"),
    })
}

fn window(a: &Attrs, pool: bool) -> Result<Window, String> {
    let auto_pad = match a.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(other) => {
            return Err(format!(
            "attribute \"auto_pad\" is {other:?}, expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"
        ))
        }
    };
    let kernel_shape = a.ints("kernel_shape")?;
    if pool && kernel_shape.is_none() {
        return Err("attribute \"kernel_shape\" is required".into());
    }
    let ceil_mode = if pool {
        a.int("ceil_mode", 0)? != 0
    } else {
        false
    };
    let w = Window {
        kernel_shape,
        strides: a.ints("strides")?,
        pads: a.ints("pads")?,
        dilations: a.ints("dilations")?,
        auto_pad,
        ceil_mode,
    };
    for (name, list, min) in [
        ("kernel_shape", &w.kernel_shape, 1),
        ("strides", &w.strides, 1),
        ("dilations", &w.dilations, 1),
        ("pads", &w.pads, 0),
    ] {
        if let Some(v) = list.as_ref().and_then(|l| l.iter().find(|&&v| v < min)) {
            return Err(format!(
                "attribute {name:?} holds {v}, expected values of at least {min}"
            ));
        }
    }
    Ok(w)
}

/// Reads a `Constant` node's value.
pub fn constant(a: &Attrs) -> Result<Constant, String> {
    if let Some(t) = a.tensor("value")? {
        return crate::values::constant_from_proto(t)
            .map_err(|e| format!("attribute \"value\" {e}"));
    }
    if let Some(v) = a.floats("value_floats")? {
        return Ok(Constant {
            shape: vec![v.len()],
            data: HostData::F32(v),
        });
    }
    if let Some(v) = a.ints("value_ints")? {
        return Ok(Constant {
            shape: vec![v.len()],
            data: HostData::I64(v),
        });
    }
    // value_float and value_int have no list form: probe them by type.
    let f = a.float("value_float", f32::NAN)?;
    if !f.is_nan() {
        return Ok(Constant {
            shape: vec![],
            data: HostData::F32(vec![f]),
        });
    }
    let i = a.int("value_int", i64::MIN)?;
    if i != i64::MIN {
        return Ok(Constant {
            shape: vec![],
            data: HostData::I64(vec![i]),
        });
    }
    Err("expected a \"value\", \"value_float(s)\" or \"value_int(s)\" attribute (sparse and string constants are not supported)".into())
}

impl Window {
    /// Resolves the window for spatial input sizes `input`.
    pub fn resolve(
        &self,
        input: &[usize],
        kernel_from_weights: Option<&[usize]>,
    ) -> Result<Resolved, String> {
        let n = input.len();
        // `min` is the least value the attribute may take: 1 for sizes,
        // strides and dilations (0 would divide by zero or make an empty
        // window), 0 for pads. Anything less is the model's error.
        let list = |name: &str,
                    v: &Option<Vec<i64>>,
                    default: usize,
                    len: usize,
                    min: i64|
         -> Result<Vec<usize>, String> {
            match v {
                None => Ok(vec![default; len]),
                Some(v) if v.len() == len => v
                    .iter()
                    .map(|&x| {
                        if x < min {
                            Err(format!(
                                "attribute {name:?} is {v:?}: every value must be at least {min}"
                            ))
                        } else {
                            usize::try_from(x)
                                .map_err(|_| format!("attribute {name:?} value {x} is too large"))
                        }
                    })
                    .collect(),
                Some(v) => Err(format!(
                    "attribute {name:?} has {} values, expected {len} for {n} spatial dimensions",
                    v.len()
                )),
            }
        };
        let kernel = match (&self.kernel_shape, kernel_from_weights) {
            (Some(k), Some(w)) => {
                let k = list("kernel_shape", &Some(k.clone()), 1, n, 1)?;
                if k != w {
                    return Err(format!(
                        "attribute \"kernel_shape\" is {k:?} but the weights' kernel is {w:?}"
                    ));
                }
                k
            }
            (Some(k), None) => list("kernel_shape", &Some(k.clone()), 1, n, 1)?,
            (None, Some(w)) if w.contains(&0) => {
                return Err(format!(
                    "the weights' kernel is {w:?}: every spatial dimension must be at least 1"
                ))
            }
            (None, Some(w)) => w.to_vec(),
            (None, None) => return Err("attribute \"kernel_shape\" is required".into()),
        };
        let strides = list("strides", &self.strides, 1, n, 1)?;
        let dilations = list("dilations", &self.dilations, 1, n, 1)?;
        let pads = list("pads", &self.pads, 0, 2 * n, 0)?;
        let mut pad_begin = pads[..n].to_vec();
        let mut pad_end = pads[n..].to_vec();
        let mut output = vec![0; n];
        for d in 0..n {
            // Attributes are the model's: saturate rather than overflow.
            let span = (kernel[d] - 1)
                .saturating_mul(dilations[d])
                .saturating_add(1);
            match self.auto_pad {
                AutoPad::NotSet => {
                    let padded = input[d]
                        .saturating_add(pad_begin[d])
                        .saturating_add(pad_end[d]);
                    if padded < span {
                        return Err(format!(
                            "spatial dimension {d}: the window ({span}) is larger than the padded input ({padded})"
                        ));
                    }
                    let room = padded - span;
                    let mut out = if self.ceil_mode {
                        room.div_ceil(strides[d]) + 1
                    } else {
                        room / strides[d] + 1
                    };
                    // A last window that would start in the end padding is dropped.
                    if self.ceil_mode
                        && (out - 1) * strides[d] >= input[d].saturating_add(pad_begin[d])
                    {
                        out -= 1;
                    }
                    output[d] = out;
                }
                AutoPad::Valid => {
                    pad_begin[d] = 0;
                    pad_end[d] = 0;
                    if input[d] < span {
                        return Err(format!(
                            "spatial dimension {d}: the window ({span}) is larger than the input ({})",
                            input[d]
                        ));
                    }
                    let room = input[d] - span;
                    output[d] = if self.ceil_mode {
                        room.div_ceil(strides[d]) + 1
                    } else {
                        room / strides[d] + 1
                    };
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = input[d].div_ceil(strides[d]);
                    let total = (out - 1)
                        .saturating_mul(strides[d])
                        .saturating_add(span)
                        .saturating_sub(input[d]);
                    let (b, e) = if self.auto_pad == AutoPad::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pad_begin[d] = b;
                    pad_end[d] = e;
                    output[d] = out;
                }
            }
        }
        Ok(Resolved {
            kernel,
            strides,
            dilations,
            pad_begin,
            pad_end,
            output,
        })
    }
}

/// Normalises a possibly negative axis into `0..limit` (the rank, or the
/// rank + 1 for Flatten, whose axis may point past the last dimension).
pub fn axis(axis: i64, rank: usize, limit: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= limit as i64 {
        return Err(format!(
            "axis {axis} is out of range for an input of rank {rank}"
        ));
    }
    Ok(a as usize)
}

/// numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {a:?} and {b:?} cannot be broadcast together"
                ))
            }
        };
    }
    Ok(out)
}

/// Row-major strides of `shape`, with 0 for dimensions of size 1 so they
/// broadcast, aligned to the right of an `ndim`-dimensional output.
pub fn broadcast_strides(shape: &[usize], ndim: usize) -> Vec<usize> {
    let mut strides = vec![0; ndim];
    let mut s = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = ndim - shape.len() + i;
        strides[o] = if d == 1 { 0 } else { s };
        s *= d;
    }
    strides
}

/// Reshape's target shape, resolving 0 (copy, unless `allow_zero`) and -1.
pub fn reshape(input: &[usize], target: &[i64], allow_zero: bool) -> Result<Vec<usize>, String> {
    let prod = |s: &[usize]| s.iter().fold(1usize, |n, &d| n.saturating_mul(d));
    let total = prod(input);
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            -1 => return Err(format!("shape {target:?} has more than one -1")),
            0 if !allow_zero => out.push(*input.get(i).ok_or_else(|| {
                format!("shape {target:?} copies dimension {i} (0) but the input {input:?} has no such dimension")
            })?),
            t if t >= 0 => out.push(t as usize),
            t => return Err(format!("shape {target:?} has invalid dimension {t}")),
        }
    }
    let known = prod(&out);
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!(
                "cannot reshape {input:?} ({total} elements) to {target:?}"
            ));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {target:?} ({known} elements)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 3, 4], &[4]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        let e = broadcast(&[2, 3], &[4]).unwrap_err();
        assert!(e.contains("[2, 3]") && e.contains("[4]"), "{e}");
        assert_eq!(broadcast_strides(&[3, 1], 3), vec![0, 1, 0]);
    }

    #[test]
    fn reshape_resolves_zero_and_minus_one() {
        assert_eq!(reshape(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert_eq!(
            reshape(&[2, 3, 4], &[4, 0, 2], false).unwrap(),
            vec![4, 3, 2]
        );
        assert!(reshape(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape(&[2, 3], &[4, 2], false)
            .unwrap_err()
            .contains("6 elements"));
    }

    /// Found by `any_single_node_plans_or_errs`: a Conv whose weights have
    /// a 0-sized kernel underflowed, and a 0 stride would divide by zero.
    #[test]
    fn empty_kernels_and_zero_strides_are_errors_not_panics() {
        let w = |kernel: Option<Vec<i64>>, strides: Option<Vec<i64>>| Window {
            kernel_shape: kernel,
            strides,
            pads: None,
            dilations: None,
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let e = w(None, None).resolve(&[0, 0], Some(&[0, 0])).unwrap_err();
        assert!(e.contains("[0, 0]") && e.contains("at least 1"), "{e}");
        let e = w(Some(vec![0, 2]), None)
            .resolve(&[4, 4], None)
            .unwrap_err();
        assert!(
            e.contains("kernel_shape") && e.contains("at least 1"),
            "{e}"
        );
        let e = w(Some(vec![2, 2]), Some(vec![1, 0]))
            .resolve(&[4, 4], None)
            .unwrap_err();
        assert!(e.contains("strides") && e.contains("[1, 0]"), "{e}");
        let e = w(Some(vec![2, 2]), Some(vec![-1, 1]))
            .resolve(&[4, 4], None)
            .unwrap_err();
        assert!(e.contains("strides") && e.contains("at least 1"), "{e}");
        assert_eq!(
            w(Some(vec![2, 2]), None)
                .resolve(&[4, 4], None)
                .unwrap()
                .output,
            vec![3, 3]
        );
    }

    #[test]
    fn windows_pad_like_onnx() {
        let w = Window {
            kernel_shape: Some(vec![3, 3]),
            strides: Some(vec![2, 2]),
            pads: None,
            dilations: None,
            auto_pad: AutoPad::SameUpper,
            ceil_mode: false,
        };
        let r = w.resolve(&[5, 6], None).unwrap();
        assert_eq!(r.output, vec![3, 3]);
        assert_eq!(
            (r.pad_begin.clone(), r.pad_end.clone()),
            (vec![1, 0], vec![1, 1])
        );
        let ceil = Window {
            auto_pad: AutoPad::NotSet,
            ceil_mode: true,
            strides: Some(vec![2, 2]),
            ..w
        };
        // 4 + 0 pads, window 3, stride 2: floor gives 1, ceil gives 2.
        assert_eq!(ceil.resolve(&[4, 4], None).unwrap().output, vec![2, 2]);
    }
}
