//! One window of production values, feature by feature, and how a
//! request's tensors feed it: the [`Plan`] finds each baseline feature's
//! tensor and column once, so a request costs two bin lookups per numeric
//! value and no allocation.

use std::sync::Arc;
use std::time::SystemTime;

use ferroserve_backend_core::{DataType, Signature, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, Feature, FeatureStats, Values};
use super::edges::EdgeIndex;
use super::histogram::{CategoricalCounts, CategoryIndex, NumericCounts};
use super::report::WindowInfo;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Counts {
    Numeric(NumericCounts),
    Categorical(CategoricalCounts),
}

impl Counts {
    fn new(f: &Feature) -> Counts {
        match &f.stats {
            FeatureStats::Numeric(s) => Counts::Numeric(NumericCounts::new(s)),
            FeatureStats::Categorical(s) => Counts::Categorical(CategoricalCounts::new(s)),
        }
    }

    fn merge(&mut self, other: &Counts) {
        match (self, other) {
            (Counts::Numeric(a), Counts::Numeric(b)) => a.merge(b),
            (Counts::Categorical(a), Counts::Categorical(b)) => a.merge(b),
            _ => {}
        }
    }
}

/// A baseline with what looking up its categories and fine bins needs,
/// built once.
#[derive(Debug)]
pub struct Prepared {
    pub baseline: Arc<Baseline>,
    /// Per feature, inputs then outputs.
    indexes: Vec<Lookup>,
}

/// How one feature's values find their slots.
#[derive(Debug)]
struct Lookup {
    categories: Option<CategoryIndex>,
    fine: Option<EdgeIndex>,
}

impl Prepared {
    pub fn new(baseline: Arc<Baseline>) -> Prepared {
        let indexes = baseline
            .features
            .iter()
            .chain(&baseline.outputs)
            .map(|f| match &f.stats {
                FeatureStats::Categorical(c) => Lookup {
                    categories: Some(CategoryIndex::new(c)),
                    fine: None,
                },
                FeatureStats::Numeric(s) => Lookup {
                    categories: None,
                    fine: EdgeIndex::new(&s.fine_edges),
                },
            })
            .collect();
        Prepared { baseline, indexes }
    }

    fn feature(&self, side: Side, i: usize) -> (&Feature, &Lookup) {
        let b = &self.baseline;
        match side {
            Side::Input => (&b.features[i], &self.indexes[i]),
            Side::Output => (&b.outputs[i], &self.indexes[b.features.len() + i]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// The counts of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub features: Vec<Counts>,
    pub outputs: Vec<Counts>,
    /// Rows observed.
    pub rows: u64,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
}

impl Window {
    pub fn new(baseline: &Baseline) -> Window {
        Window {
            features: baseline.features.iter().map(Counts::new).collect(),
            outputs: baseline.outputs.iter().map(Counts::new).collect(),
            rows: 0,
            from: None,
            to: None,
        }
    }

    /// Adds `values` of feature `i` on `side` (a column of a data file).
    pub fn add_values(&mut self, p: &Prepared, side: Side, i: usize, values: &Values) {
        let (f, lookup) = p.feature(side, i);
        let fine = lookup.fine.as_ref();
        let counts = match side {
            Side::Input => &mut self.features[i],
            Side::Output => &mut self.outputs[i],
        };
        match (counts, &f.stats, values) {
            (Counts::Numeric(c), FeatureStats::Numeric(s), Values::Numeric(v)) => {
                for &x in v {
                    c.add(s, fine, x);
                }
            }
            (Counts::Numeric(c), FeatureStats::Numeric(s), Values::Text(v)) => {
                for x in v {
                    c.add(
                        s,
                        fine,
                        x.as_deref().map(|t| t.trim().parse().unwrap_or(f64::NAN)),
                    );
                }
            }
            (Counts::Categorical(c), _, values) => {
                let index = lookup
                    .categories
                    .as_ref()
                    .expect("a categorical feature has an index");
                match values {
                    Values::Numeric(v) => {
                        for x in v {
                            match x {
                                Some(x) if !x.is_nan() => c.counts[index.slot_of_number(*x)] += 1,
                                _ => c.nulls += 1,
                            }
                        }
                    }
                    Values::Text(v) => {
                        for x in v {
                            match x {
                                Some(s) => c.counts[index.slot_of_text(s)] += 1,
                                None => c.nulls += 1,
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Records that `rows` rows arrived at `at`.
    pub fn count_rows(&mut self, rows: u64, at: SystemTime) {
        self.rows += rows;
        if self.from.is_none_or(|f| at < f) {
            self.from = Some(at);
        }
        if self.to.is_none_or(|t| at > t) {
            self.to = Some(at);
        }
    }

    /// Adds another window's counts (another replica's, another file's).
    pub fn merge(&mut self, other: &Window) {
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
        for (a, b) in self.outputs.iter_mut().zip(&other.outputs) {
            a.merge(b);
        }
        self.rows += other.rows;
        self.from = match (self.from, other.from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.to = match (self.to, other.to) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn info(&self) -> WindowInfo {
        let rfc = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
        let seconds = match (self.from, self.to) {
            (Some(a), Some(b)) => b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()),
            _ => 0.0,
        };
        WindowInfo {
            rows: self.rows,
            from: self.from.map(rfc),
            to: self.to.map(rfc),
            seconds,
        }
    }
}

/// Where one baseline feature is in a request's tensors.
#[derive(Debug, Clone)]
struct Slot {
    side: Side,
    /// Index into the baseline's features (or outputs).
    feature: usize,
    /// The tensor's name (inputs are found by name) and its index in the
    /// signature's outputs (outputs come in signature order).
    tensor: String,
    output: usize,
    column: usize,
}

/// How a model's request tensors map onto a baseline's features.
#[derive(Debug, Clone)]
pub struct Plan {
    slots: Vec<Slot>,
    batched: bool,
}

/// A baseline feature the model does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "baseline feature {feature:?} reads {side} tensor {tensor:?}, column {column}, which {problem}"
)]
pub struct PlanError {
    pub feature: String,
    pub side: &'static str,
    pub tensor: String,
    pub column: usize,
    pub problem: String,
}

impl Plan {
    pub fn new(
        baseline: &Baseline,
        signature: &Signature,
        batched: bool,
    ) -> Result<Plan, PlanError> {
        let mut slots = Vec::new();
        for (side, features, specs, side_name) in [
            (Side::Input, &baseline.features, &signature.inputs, "input"),
            (
                Side::Output,
                &baseline.outputs,
                &signature.outputs,
                "output",
            ),
        ] {
            for (i, f) in features.iter().enumerate() {
                let err = |problem: String| PlanError {
                    feature: f.name.clone(),
                    side: side_name,
                    tensor: f.source.tensor.clone(),
                    column: f.source.column,
                    problem,
                };
                let Some(pos) = specs.iter().position(|s| s.name == f.source.tensor) else {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    return Err(err(format!(
                        "the model does not have (its {side_name}s: {names:?})"
                    )));
                };
                let spec = &specs[pos];
                let dims = if batched {
                    &spec.shape[1..]
                } else {
                    &spec.shape[..]
                };
                if dims.iter().all(|&d| d >= 0) {
                    let width: i64 = dims.iter().product();
                    if f.source.column as i64 >= width {
                        return Err(err(format!(
                            "is out of range: each row of shape {:?} has {width} elements",
                            spec.shape
                        )));
                    }
                }
                slots.push(Slot {
                    side,
                    feature: i,
                    tensor: spec.name.clone(),
                    output: pos,
                    column: f.source.column,
                });
            }
        }
        Ok(Plan { slots, batched })
    }

    /// Adds one answered request: its named inputs and its outputs in
    /// signature order. Tensors too small for a feature's column add a
    /// null for it.
    pub fn observe(
        &self,
        p: &Prepared,
        window: &mut Window,
        inputs: &[(String, Tensor)],
        outputs: &[Tensor],
        at: SystemTime,
    ) {
        let mut rows = 0;
        for slot in &self.slots {
            let tensor = match slot.side {
                Side::Input => inputs
                    .iter()
                    .find(|(n, _)| *n == slot.tensor)
                    .map(|(_, t)| t),
                Side::Output => outputs.get(slot.output),
            };
            let Some(t) = tensor else { continue };
            let n = if self.batched { t.rows() } else { 1 };
            rows = rows.max(n);
            let width = t.element_count().checked_div(n).unwrap_or(0);
            let (f, lookup) = p.feature(slot.side, slot.feature);
            let fine = lookup.fine.as_ref();
            let counts = match slot.side {
                Side::Input => &mut window.features[slot.feature],
                Side::Output => &mut window.outputs[slot.feature],
            };
            match (counts, &f.stats) {
                (Counts::Numeric(c), FeatureStats::Numeric(s)) => {
                    for r in 0..n {
                        let x = (slot.column < width)
                            .then(|| number_at(t, r * width + slot.column))
                            .flatten();
                        c.add(s, fine, x);
                    }
                }
                (Counts::Categorical(c), _) => {
                    let index = lookup
                        .categories
                        .as_ref()
                        .expect("a categorical feature has an index");
                    if t.dtype == DataType::Bytes {
                        let items = t.string_elements();
                        for r in 0..n {
                            match items.get(r * width + slot.column) {
                                Some(b) if slot.column < width => {
                                    c.counts[index.slot_of_text(&String::from_utf8_lossy(b))] += 1
                                }
                                _ => c.nulls += 1,
                            }
                        }
                    } else {
                        for r in 0..n {
                            match (slot.column < width)
                                .then(|| number_at(t, r * width + slot.column))
                                .flatten()
                            {
                                Some(x) if !x.is_nan() => c.counts[index.slot_of_number(x)] += 1,
                                _ => c.nulls += 1,
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        window.count_rows(rows as u64, at);
    }
}

/// Element `i` of a numeric tensor as f64 (`None` for BYTES).
#[inline]
pub fn number_at(t: &Tensor, i: usize) -> Option<f64> {
    let size = t.dtype.element_size()?;
    let b = t.data.get(i * size..(i + 1) * size)?;
    let x = match t.dtype {
        DataType::Bool | DataType::Uint8 => f64::from(b[0]),
        DataType::Int8 => f64::from(b[0] as i8),
        DataType::Uint16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Fp16 => f64::from(f16::from_le_bytes([b[0], b[1]])),
        DataType::Uint32 => f64::from(u32::from_le_bytes(b.try_into().ok()?)),
        DataType::Int32 => f64::from(i32::from_le_bytes(b.try_into().ok()?)),
        DataType::Fp32 => f64::from(f32::from_le_bytes(b.try_into().ok()?)),
        DataType::Uint64 => u64::from_le_bytes(b.try_into().ok()?) as f64,
        DataType::Int64 => i64::from_le_bytes(b.try_into().ok()?) as f64,
        DataType::Fp64 => f64::from_le_bytes(b.try_into().ok()?),
        DataType::Bytes => return None,
    };
    Some(x)
}
