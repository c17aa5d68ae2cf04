//! The execution plan for one set of input shapes: every value's shape and
//! buffer, and the kernel launches in order with their arguments.
//!
//! Plans are pure host arithmetic, built once per distinct input shape (in
//! practice once per batch size) and cached by the session, so a request
//! pays only for setting arguments and enqueueing kernels.

use std::collections::{HashMap, HashSet};

use crate::graph::{Graph, ValueId};
use crate::kernels::Kernel;
use crate::ops::{self, Op, Unary};
use crate::values::{HostData, Kind};

/// Where a value's data lives during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// An uploaded constant (a weight), by value id.
    Weight(ValueId),
    /// A per-session activation buffer.
    Slot(usize),
    /// An INT64 value kept on the host.
    Host,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// The buffer holding a value.
    Value(ValueId),
    /// A scratch buffer of the plan (im2col's matrix), by slot.
    Scratch(usize),
    /// A small integer table uploaded with the plan, by index.
    Table(usize),
    I32(i32),
    F32(f32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub kernel: Kernel,
    pub args: Vec<Arg>,
    pub global: Vec<usize>,
    pub local: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub shapes: Vec<Option<Vec<usize>>>,
    pub storage: Vec<Storage>,
    /// Bytes each slot needs.
    pub slot_bytes: Vec<usize>,
    pub tables: Vec<Vec<i32>>,
    pub launches: Vec<Launch>,
}

impl Plan {
    /// A launch over `n` work-items in one dimension (every element-wise,
    /// layout and reduction kernel; each ignores items past `n`).
    ///
    /// The work-group size is fixed rather than left to the driver: PoCL
    /// compiles a kernel variant for every work-group size it is given, so
    /// a size that follows the batch size would compile anew, for hundreds
    /// of milliseconds, the first time each batch size arrives.
    fn launch_1d(&mut self, kernel: Kernel, n: usize, args: Vec<Arg>) {
        self.launches.push(Launch {
            kernel,
            args,
            global: vec![n.next_multiple_of(GROUP_1D)],
            local: Some(vec![GROUP_1D]),
        });
    }
}

/// Work-group size of one-dimensional launches.
const GROUP_1D: usize = 64;

/// Elements of a shape, saturating: a model may declare any dims, and an
/// overflow must become a refusal (see `MAX_ELEMENTS`), not a panic.
fn count(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// A window attribute as a kernel argument. Shapes are checked against
/// `MAX_ELEMENTS`; attributes such as a stride are the model's own and may
/// be larger, which saturates: every kernel bounds-checks its reads
/// against the real sizes, so a saturated value cannot reach outside a
/// buffer.
fn sat(v: usize) -> i32 {
    v.min(MAX_ELEMENTS) as i32
}

/// The kernels index with 32-bit integers.
const MAX_ELEMENTS: usize = i32::MAX as usize;

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} ({v}) exceeds the kernels' 32-bit indexing"))
}

/// Which Relu nodes fold into the Gemm/MatMul/Conv before them: those that
/// are the only reader of a value that is not a graph output.
fn fused_relus(graph: &Graph) -> HashSet<usize> {
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            readers.entry(*v).or_default().push(i);
        }
    }
    let outputs: HashSet<ValueId> = graph.outputs.iter().map(|(v, _)| *v).collect();
    let mut fused = HashSet::new();
    for n in &graph.nodes {
        if !matches!(n.op, Op::Gemm { .. } | Op::MatMul | Op::Conv { .. }) {
            continue;
        }
        let out = n.outputs[0];
        if outputs.contains(&out) {
            continue;
        }
        if let Some([r]) = readers.get(&out).map(|r| r.as_slice()) {
            if matches!(graph.nodes[*r].op, Op::Unary(Unary::Relu, _)) {
                fused.insert(*r);
            }
        }
    }
    fused
}

/// Builds the plan for inputs of `input_shapes` (in `graph.inputs` order);
/// `host_inputs` holds the values of INT64 inputs.
pub fn build(
    graph: &Graph,
    input_shapes: &[Vec<usize>],
    host_inputs: &HashMap<ValueId, Vec<i64>>,
) -> Result<Plan, String> {
    let n_values = graph.names.len();
    let mut p = Plan {
        shapes: vec![None; n_values],
        storage: vec![Storage::Host; n_values],
        slot_bytes: Vec::new(),
        tables: Vec::new(),
        launches: Vec::new(),
    };
    let mut host: HashMap<ValueId, Vec<i64>> = host_inputs.clone();
    for (&id, c) in &graph.constants {
        p.shapes[id] = Some(c.shape.clone());
        match &c.data {
            HostData::F32(_) => p.storage[id] = Storage::Weight(id),
            HostData::I64(v) => {
                host.insert(id, v.clone());
            }
        }
    }
    for ((id, spec), shape) in graph.inputs.iter().zip(input_shapes) {
        if count(shape) > MAX_ELEMENTS {
            return Err(format!(
                "input {:?} of shape {shape:?} has more elements than the kernels' 32-bit indexing allows",
                spec.name
            ));
        }
        p.shapes[*id] = Some(shape.clone());
        if graph.kinds[*id] == Kind::F32 {
            p.storage[*id] = Storage::Slot(p.slot_bytes.len());
            p.slot_bytes.push(4 * count(shape));
        } else if !host.contains_key(id) {
            return Err(format!("input {:?} has no values", spec.name));
        }
    }
    let fused = fused_relus(graph);
    for (index, node) in graph.nodes.iter().enumerate() {
        let err = |problem: String| format!("node {:?} ({}): {problem}", node.name, node.op.name());
        let shape = |slot: usize| -> Result<&Vec<usize>, String> {
            let v = node
                .inputs
                .get(slot)
                .copied()
                .flatten()
                .ok_or_else(|| err(format!("input {slot} is missing")))?;
            p.shapes[v]
                .as_ref()
                .ok_or_else(|| err(format!("input {slot} has no shape yet")))
        };
        let input = |slot: usize| node.inputs.get(slot).copied().flatten();
        let out = node.outputs[0];
        // 1 when the Relu reading this output is folded into this launch.
        let act = fused.iter().any(|&r| graph.nodes[r].inputs[0] == Some(out)) as i32;
        let mut alias: Option<ValueId> = None;
        let out_shape: Vec<usize> = match &node.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let a = shape(0)?.clone();
                let b = shape(1)?.clone();
                if a.len() != 2 || b.len() != 2 {
                    return Err(err(format!("A {a:?} and B {b:?} must be 2-D")));
                }
                let (m, k) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
                let (kb, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
                if k != kb {
                    return Err(err(format!("A {a:?} and B {b:?} do not share the inner dimension (transA={trans_a}, transB={trans_b})")));
                }
                let (a_rs, a_cs) = if *trans_a { (1, m) } else { (k, 1) };
                let (b_rs, b_cs) = if *trans_b { (1, k) } else { (n, 1) };
                let (c_arg, c_rs, c_cs, has_c) = match input(2) {
                    Some(c) => {
                        let cs = shape(2)?.clone();
                        if cs.len() > 2 || ops::broadcast(&cs, &[m, n]).ok() != Some(vec![m, n]) {
                            return Err(err(format!("C {cs:?} does not broadcast to [{m}, {n}]")));
                        }
                        let s = ops::broadcast_strides(&cs, 2);
                        (c, s[0], s[1], 1)
                    }
                    None => (input(0).expect("A"), 0, 0, 0),
                };
                let t = p.tables.len();
                p.tables.push(vec![0, 0, 0, 0]);
                gemm_launch(
                    &mut p,
                    Arg::Value(input(0).expect("A")),
                    Arg::Value(input(1).expect("B")),
                    Arg::Value(c_arg),
                    Arg::Value(out),
                    [m, n, k],
                    [a_rs, a_cs, b_rs, b_cs, c_rs, c_cs],
                    has_c,
                    *alpha,
                    *beta,
                    act,
                    t,
                    1,
                )
                .map_err(&err)?;
                vec![m, n]
            }
            Op::MatMul => {
                let a = shape(0)?.clone();
                let b = shape(1)?.clone();
                if a.is_empty() || b.is_empty() {
                    return Err(err(
                        "MatMul operands must have at least one dimension".into()
                    ));
                }
                let a2 = if a.len() == 1 {
                    vec![1, a[0]]
                } else {
                    a.clone()
                };
                let b2 = if b.len() == 1 {
                    vec![b[0], 1]
                } else {
                    b.clone()
                };
                let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
                let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
                if k != kb {
                    return Err(err(format!(
                        "A {a:?} and B {b:?} do not share the inner dimension"
                    )));
                }
                let ab = &a2[..a2.len() - 2];
                let bb = &b2[..b2.len() - 2];
                let batch = ops::broadcast(ab, bb).map_err(&err)?;
                let nb = count(&batch);
                let sa = ops::broadcast_strides(ab, batch.len());
                let sb = ops::broadcast_strides(bb, batch.len());
                let mut table = Vec::with_capacity(3 * nb);
                for bt in 0..nb {
                    let (mut rem, mut ia, mut ib) = (bt, 0, 0);
                    for d in (0..batch.len()).rev() {
                        let i = rem % batch[d];
                        rem /= batch[d];
                        ia += i * sa[d];
                        ib += i * sb[d];
                    }
                    table.push(int(ia * m * k, "A offset").map_err(&err)?);
                    table.push(int(ib * k * n, "B offset").map_err(&err)?);
                    table.push(int(bt * m * n, "Y offset").map_err(&err)?);
                    table.push(0);
                }
                let t = p.tables.len();
                p.tables.push(table);
                let a_id = input(0).expect("A");
                gemm_launch(
                    &mut p,
                    Arg::Value(a_id),
                    Arg::Value(input(1).expect("B")),
                    Arg::Value(a_id),
                    Arg::Value(out),
                    [m, n, k],
                    [k, 1, n, 1, 0, 0],
                    0,
                    1.0,
                    0.0,
                    act,
                    t,
                    nb,
                )
                .map_err(&err)?;
                let mut s = batch.clone();
                if a.len() > 1 {
                    s.push(m);
                }
                if b.len() > 1 {
                    s.push(n);
                }
                s
            }
            Op::Binary(op) => {
                let a = shape(0)?.clone();
                let b = shape(1)?.clone();
                let o = ops::broadcast(&a, &b).map_err(&err)?;
                let n = count(&o);
                let (ia, ib) = (input(0).expect("A"), input(1).expect("B"));
                if n > 0 {
                    // Both kernels start with the same arguments; the
                    // broadcasting one adds the dimension table.
                    let mut args = vec![
                        Arg::Value(ia),
                        Arg::Value(ib),
                        Arg::Value(out),
                        Arg::I32(*op as i32),
                        Arg::I32(int(n, "elements").map_err(&err)?),
                    ];
                    if a == o && b == o {
                        p.launch_1d(Kernel::BinarySame, n, args);
                    } else {
                        let sa = ops::broadcast_strides(&a, o.len());
                        let sb = ops::broadcast_strides(&b, o.len());
                        let mut table = Vec::with_capacity(3 * o.len().max(1));
                        for d in 0..o.len() {
                            table.extend([o[d] as i32, sa[d] as i32, sb[d] as i32]);
                        }
                        if o.is_empty() {
                            table.extend([1, 0, 0]);
                        }
                        let t = p.tables.len();
                        p.tables.push(table);
                        args.extend([Arg::I32(o.len().max(1) as i32), Arg::Table(t)]);
                        p.launch_1d(Kernel::BinaryBroadcast, n, args);
                    }
                }
                o
            }
            Op::Unary(op, alpha) => {
                let x = shape(0)?.clone();
                if fused.contains(&index) {
                    alias = input(0);
                } else {
                    let n = count(&x);
                    if n > 0 {
                        p.launch_1d(
                            Kernel::Unary,
                            n,
                            vec![
                                Arg::Value(input(0).expect("X")),
                                Arg::Value(out),
                                Arg::I32(*op as i32),
                                Arg::F32(*alpha),
                                Arg::I32(int(n, "elements").map_err(&err)?),
                            ],
                        );
                    }
                }
                x
            }
            Op::Softmax { axis, coerce_2d } => {
                let x = shape(0)?.clone();
                let r = x.len();
                let a = ops::axis(*axis, r, r.max(1)).map_err(&err)?;
                let outer: usize = count(&x[..a]);
                let (len, inner) = if *coerce_2d {
                    (count(&x[a..]), 1)
                } else {
                    (x.get(a).copied().unwrap_or(1), count(&x[(a + 1).min(r)..]))
                };
                if outer * inner * len > 0 {
                    p.launch_1d(
                        Kernel::Softmax,
                        outer * inner,
                        vec![
                            Arg::Value(input(0).expect("X")),
                            Arg::Value(out),
                            Arg::I32(int(outer, "rows").map_err(&err)?),
                            Arg::I32(int(len, "axis length").map_err(&err)?),
                            Arg::I32(int(inner, "inner size").map_err(&err)?),
                        ],
                    );
                }
                x
            }
            Op::Conv { window, group } => {
                let x = shape(0)?.clone();
                let w = shape(1)?.clone();
                if x.len() != 4 || w.len() != 4 {
                    return Err(err(format!("only 2-D convolution is supported: X {x:?} and W {w:?} must be 4-D (N, C, H, W)")));
                }
                let (nb, c, m) = (x[0], x[1], w[0]);
                if c % group != 0 || m % group != 0 || w[1] * group != c {
                    return Err(err(format!("X has {c} channels and W is {w:?}: with group = {group}, W's dim 1 must be {}", c / group.max(&1))));
                }
                if let Some(b) = input(2) {
                    let bs = p.shapes[b].clone().unwrap_or_default();
                    if bs != [m] {
                        return Err(err(format!("bias B is {bs:?}, expected [{m}]")));
                    }
                }
                let r = window.resolve(&x[2..], Some(&w[2..])).map_err(&err)?;
                let (oh, ow) = (r.output[0], r.output[1]);
                let o = vec![nb, m, oh, ow];
                if count(&o) > 0 {
                    int(count(&o).max(count(&x)), "elements").map_err(&err)?;
                    let i = |v: usize| Arg::I32(sat(v));
                    let xi = input(0).expect("X");
                    let wi = input(1).expect("W");
                    let (cg, mg) = (c / group, m / group);
                    // Stride, padding at the start, dilation: both kernels
                    // take them in this order.
                    let geometry = [
                        r.strides[0],
                        r.strides[1],
                        r.pad_begin[0],
                        r.pad_begin[1],
                        r.dilations[0],
                        r.dilations[1],
                    ]
                    .map(i);
                    if cg == 1 && mg == 1 {
                        // Depthwise: one channel per group; the direct kernel.
                        p.launches.push(Launch {
                            kernel: Kernel::Conv2d,
                            args: [
                                vec![
                                    Arg::Value(xi),
                                    Arg::Value(wi),
                                    Arg::Value(input(2).unwrap_or(xi)),
                                    Arg::I32(input(2).is_some() as i32),
                                    Arg::Value(out),
                                ],
                                [c, x[2], x[3], m, oh, ow, w[2], w[3]].map(i).to_vec(),
                                geometry.to_vec(),
                                vec![i(*group), Arg::I32(act)],
                            ]
                            .concat(),
                            // Fixed work-group size; see `launch_1d`.
                            global: vec![(oh * ow).next_multiple_of(16), m.div_ceil(4), nb],
                            local: Some(vec![16, 1, 1]),
                        });
                    } else {
                        let kd = cg * w[2] * w[3];
                        let pixels = oh * ow;
                        // A 1x1, stride-1, unpadded convolution's matrix is its input.
                        let pointwise = w[2] == 1
                            && w[3] == 1
                            && r.strides == [1, 1]
                            && r.pad_begin == [0, 0]
                            && (oh, ow) == (x[2], x[3]);
                        let matrix = if pointwise {
                            Arg::Value(xi)
                        } else {
                            let elems = nb * group * kd * pixels;
                            int(elems, "im2col elements").map_err(&err)?;
                            let slot = p.slot_bytes.len();
                            p.slot_bytes.push(4 * elems);
                            p.launch_1d(
                                Kernel::Im2col,
                                nb * group * kd,
                                [
                                    vec![Arg::Value(xi), Arg::Scratch(slot)],
                                    [c, x[2], x[3], w[2], w[3]].map(i).to_vec(),
                                    geometry.to_vec(),
                                    [oh, ow, *group, nb * group * kd].map(i).to_vec(),
                                ]
                                .concat(),
                            );
                            Arg::Scratch(slot)
                        };
                        let mut table = Vec::with_capacity(4 * nb * group);
                        for img in 0..nb {
                            for g in 0..*group {
                                table.extend(
                                    [
                                        g * mg * kd,
                                        (img * group + g) * kd * pixels,
                                        (img * m + g * mg) * pixels,
                                        g * mg,
                                    ]
                                    .map(sat),
                                );
                            }
                        }
                        let t = p.tables.len();
                        p.tables.push(table);
                        let bias = input(2);
                        gemm_launch(
                            &mut p,
                            Arg::Value(wi),
                            matrix,
                            Arg::Value(bias.unwrap_or(wi)),
                            Arg::Value(out),
                            [mg, pixels, kd],
                            [kd, 1, pixels, 1, 1, 0],
                            bias.is_some() as i32,
                            1.0,
                            1.0,
                            act,
                            t,
                            nb * group,
                        )
                        .map_err(&err)?;
                    }
                }
                o
            }
            Op::MaxPool(window) | Op::AveragePool { window, .. } => {
                let x = shape(0)?.clone();
                if !(3..=5).contains(&x.len()) {
                    return Err(err(format!(
                        "input {x:?} must have 1 to 3 spatial dimensions (rank 3 to 5)"
                    )));
                }
                let spatial = &x[2..];
                let r = window.resolve(spatial, None).map_err(&err)?;
                let mode = match &node.op {
                    Op::MaxPool(_) => 0,
                    Op::AveragePool {
                        count_include_pad: false,
                        ..
                    } => 1,
                    _ => 2,
                };
                let s = spatial.len();
                let mut table = Vec::with_capacity(21);
                for a in 0..3 {
                    if a < 3 - s {
                        table.extend([1, 1, 1, 1, 1, 0, 0]);
                    } else {
                        let d = a - (3 - s);
                        table.extend(
                            [
                                spatial[d],
                                r.output[d],
                                r.kernel[d],
                                r.strides[d],
                                r.dilations[d],
                                r.pad_begin[d],
                                r.pad_end[d],
                            ]
                            .map(sat),
                        );
                    }
                }
                let mut o = x[..2].to_vec();
                o.extend(&r.output);
                let n = count(&o);
                if n > 0 {
                    let t = p.tables.len();
                    p.tables.push(table);
                    p.launch_1d(
                        Kernel::Pool,
                        n,
                        vec![
                            Arg::Value(input(0).expect("X")),
                            Arg::Value(out),
                            Arg::I32(mode),
                            Arg::I32(int(n, "elements").map_err(&err)?),
                            Arg::Table(t),
                        ],
                    );
                }
                o
            }
            Op::GlobalAveragePool => {
                let x = shape(0)?.clone();
                if x.len() < 3 {
                    return Err(err(format!(
                        "input {x:?} must be at least 3-D (N, C, spatial...)"
                    )));
                }
                let channels = x[0] * x[1];
                let spatial: usize = count(&x[2..]);
                if channels > 0 {
                    p.launch_1d(
                        Kernel::GlobalAveragePool,
                        channels,
                        vec![
                            Arg::Value(input(0).expect("X")),
                            Arg::Value(out),
                            Arg::I32(int(channels, "channels").map_err(&err)?),
                            Arg::I32(int(spatial, "spatial size").map_err(&err)?),
                        ],
                    );
                }
                let mut o = x[..2].to_vec();
                o.extend(std::iter::repeat_n(1, x.len() - 2));
                o
            }
            Op::BatchNormalization { epsilon } => {
                let x = shape(0)?.clone();
                if x.len() < 2 {
                    return Err(err(format!("input {x:?} must be at least 2-D (N, C, ...)")));
                }
                for slot in 1..5 {
                    let s = shape(slot)?;
                    if s[..] != [x[1]] {
                        return Err(err(format!(
                            "input {slot} is {s:?}, expected [{}] (one value per channel)",
                            x[1]
                        )));
                    }
                }
                let n = count(&x);
                if n > 0 {
                    let inner: usize = count(&x[2..]);
                    let mut args: Vec<Arg> = vec![Arg::Value(input(0).expect("X"))];
                    for slot in 1..5 {
                        args.push(Arg::Value(input(slot).expect("checked")));
                    }
                    args.extend([
                        Arg::Value(out),
                        Arg::F32(*epsilon),
                        Arg::I32(x[1] as i32),
                        Arg::I32(int(inner, "elements").map_err(&err)?),
                        Arg::I32(int(n, "elements").map_err(&err)?),
                    ]);
                    p.launch_1d(Kernel::BatchNorm, n, args);
                }
                x
            }
            Op::Flatten { axis } => {
                let x = shape(0)?.clone();
                let a = ops::axis(*axis, x.len(), x.len() + 1).map_err(&err)?;
                alias = input(0);
                vec![count(&x[..a]), count(&x[a..])]
            }
            Op::Reshape { allow_zero } => {
                let x = shape(0)?.clone();
                let target = input(1).and_then(|v| host.get(&v)).ok_or_else(|| {
                    err("the target shape must be a constant or an INT64 input".into())
                })?;
                alias = input(0);
                ops::reshape(&x, target, *allow_zero).map_err(&err)?
            }
            Op::Transpose { perm } => {
                let x = shape(0)?.clone();
                let r = x.len();
                let perm: Vec<usize> = match perm {
                    None => (0..r).rev().collect(),
                    Some(pm) => {
                        let mut seen = vec![false; r];
                        let mut out = Vec::with_capacity(r);
                        for &d in pm {
                            let d = ops::axis(d, r, r).map_err(&err)?;
                            if seen[d] {
                                return Err(err(format!("perm {pm:?} repeats axis {d}")));
                            }
                            seen[d] = true;
                            out.push(d);
                        }
                        if out.len() != r {
                            return Err(err(format!(
                                "perm {pm:?} has {} entries for an input of rank {r}",
                                out.len()
                            )));
                        }
                        out
                    }
                };
                let mut in_strides = vec![1usize; r];
                for d in (0..r.saturating_sub(1)).rev() {
                    in_strides[d] = in_strides[d + 1] * x[d + 1];
                }
                let o: Vec<usize> = perm.iter().map(|&d| x[d]).collect();
                let n = count(&o);
                if n > 0 {
                    let mut table = Vec::with_capacity(2 * r.max(1));
                    for (i, &d) in perm.iter().enumerate() {
                        table.extend([o[i] as i32, in_strides[d] as i32]);
                    }
                    if r == 0 {
                        table.extend([1, 0]);
                    }
                    let t = p.tables.len();
                    p.tables.push(table);
                    p.launch_1d(
                        Kernel::Transpose,
                        n,
                        vec![
                            Arg::Value(input(0).expect("X")),
                            Arg::Value(out),
                            Arg::I32(int(n, "elements").map_err(&err)?),
                            Arg::I32(r.max(1) as i32),
                            Arg::Table(t),
                        ],
                    );
                }
                o
            }
            Op::Concat { axis } => {
                let first = shape(0)?.clone();
                let r = first.len();
                let a = ops::axis(*axis, r, r).map_err(&err)?;
                let mut o = first.clone();
                o[a] = 0;
                for slot in 0..node.inputs.len() {
                    let s = shape(slot)?;
                    if s.len() != r || (0..r).any(|d| d != a && s[d] != first[d]) {
                        return Err(err(format!("input {slot} is {s:?}; every input must match {first:?} except along axis {a}")));
                    }
                    o[a] += s[a];
                }
                let inner: usize = count(&first[a + 1..]);
                let dst_row = o[a] * inner;
                let mut offset = 0;
                let shapes = (0..node.inputs.len())
                    .map(|slot| shape(slot).cloned())
                    .collect::<Result<Vec<_>, _>>()?;
                for (slot, s) in shapes.iter().enumerate() {
                    let n = count(s);
                    let src_row = s[a] * inner;
                    if n > 0 {
                        p.launch_1d(
                            Kernel::ConcatCopy,
                            n,
                            vec![
                                Arg::Value(input(slot).expect("checked")),
                                Arg::Value(out),
                                Arg::I32(src_row as i32),
                                Arg::I32(int(dst_row, "row").map_err(&err)?),
                                Arg::I32(offset as i32),
                                Arg::I32(int(n, "elements").map_err(&err)?),
                            ],
                        );
                    }
                    offset += src_row;
                }
                o
            }
            Op::Identity => {
                let x = shape(0)?.clone();
                alias = input(0);
                if let Some(v) = input(0).and_then(|v| host.get(&v).cloned()) {
                    host.insert(out, v);
                }
                x
            }
        };
        if count(&out_shape) > MAX_ELEMENTS {
            return Err(err(format!(
                "output shape {out_shape:?} has more elements than the kernels' 32-bit indexing allows"
            )));
        }
        p.shapes[out] = Some(out_shape.clone());
        match alias {
            Some(src) => p.storage[out] = p.storage[src],
            None if graph.kinds[out] == Kind::I64 => p.storage[out] = Storage::Host,
            None => {
                p.storage[out] = Storage::Slot(p.slot_bytes.len());
                p.slot_bytes.push(4 * count(&out_shape));
            }
        }
    }
    for (id, spec) in &graph.outputs {
        if p.shapes[*id].is_none() {
            return Err(format!("output {:?} was not computed", spec.name));
        }
    }
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn gemm_launch(
    p: &mut Plan,
    a: Arg,
    b: Arg,
    c: Arg,
    y: Arg,
    [m, n, k]: [usize; 3],
    [a_rs, a_cs, b_rs, b_cs, c_rs, c_cs]: [usize; 6],
    has_c: i32,
    alpha: f32,
    beta: f32,
    act: i32,
    table: usize,
    batches: usize,
) -> Result<(), String> {
    if m * n * batches == 0 {
        return Ok(());
    }
    let i = |v: usize, w: &str| int(v, w).map(Arg::I32);
    p.launches.push(Launch {
        kernel: Kernel::Gemm,
        args: vec![
            i(m, "M")?,
            i(n, "N")?,
            i(k, "K")?,
            a,
            i(a_rs, "stride")?,
            i(a_cs, "stride")?,
            b,
            i(b_rs, "stride")?,
            i(b_cs, "stride")?,
            c,
            i(c_rs, "stride")?,
            i(c_cs, "stride")?,
            Arg::I32(has_c),
            y,
            Arg::F32(alpha),
            Arg::F32(beta),
            Arg::I32(act),
            Arg::Table(table),
        ],
        global: gemm_global(m, n, batches),
        local: Some(vec![16, 1, 1]),
    });
    Ok(())
}

/// kernels/opencl/gemm.cl: items of 16 columns x 8 rows, in groups of 16.
fn gemm_global(m: usize, n: usize, batches: usize) -> Vec<usize> {
    vec![n.div_ceil(16).next_multiple_of(16), m.div_ceil(8), batches]
}
