//! A window's state for one feature: counts on the baseline's bins (and
//! two more, below and above the reference's range), so its size is fixed
//! whatever the traffic, and two windows merge by adding counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::baseline::{CategoricalStats, CategoryValue, NumericStats};
use super::edges::{self, bin_of, EdgeIndex};

/// Counts of a numeric feature's values in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericCounts {
    /// Slots as [`bin_of`](super::edges::bin_of) numbers them on the coarse edges.
    pub coarse: Vec<u64>,
    /// The same on the fine edges.
    pub fine: Vec<u64>,
    /// Values seen (nulls and NaN not included).
    pub n: u64,
    pub nulls: u64,
    pub nan: u64,
    pub min: f64,
    pub max: f64,
}

impl NumericCounts {
    pub fn new(reference: &NumericStats) -> NumericCounts {
        NumericCounts {
            coarse: vec![0; reference.edges.len() + 1],
            fine: vec![0; reference.fine_edges.len() + 1],
            n: 0,
            nulls: 0,
            nan: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds one value; `fine` is the index of `reference.fine_edges`
    /// where it has one.
    #[inline]
    pub fn add(&mut self, reference: &NumericStats, fine: Option<&EdgeIndex>, x: Option<f64>) {
        let Some(x) = x else {
            self.nulls += 1;
            return;
        };
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        self.coarse[bin_of(&reference.edges, x)] += 1;
        self.fine[edges::slot(fine, &reference.fine_edges, x)] += 1;
        self.n += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Values outside the reference's range.
    pub fn out_of_range(&self) -> u64 {
        self.coarse[0] + self.coarse[self.coarse.len() - 1]
    }

    pub fn merge(&mut self, other: &NumericCounts) {
        add_counts(&mut self.coarse, &other.coarse);
        add_counts(&mut self.fine, &other.fine);
        self.n += other.n;
        self.nulls += other.nulls;
        self.nan += other.nan;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Counts of a categorical feature's values in one window: one per
/// reference category, and a last one for values the reference never saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalCounts {
    pub counts: Vec<u64>,
    pub nulls: u64,
}

impl CategoricalCounts {
    pub fn new(reference: &CategoricalStats) -> CategoricalCounts {
        CategoricalCounts {
            counts: vec![0; reference.values.len() + 1],
            nulls: 0,
        }
    }

    pub fn n(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn unseen(&self) -> u64 {
        self.counts[self.counts.len() - 1]
    }

    pub fn merge(&mut self, other: &CategoricalCounts) {
        add_counts(&mut self.counts, &other.counts);
        self.nulls += other.nulls;
    }
}

fn add_counts(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Finds a value's category: numbers by binary search over the sorted
/// numeric categories, texts in a map. Built once per baseline feature.
#[derive(Debug, Clone)]
pub struct CategoryIndex {
    /// (value, slot) sorted by value.
    numbers: Vec<(f64, usize)>,
    texts: HashMap<String, usize>,
    unseen: usize,
}

impl CategoryIndex {
    pub fn new(reference: &CategoricalStats) -> CategoryIndex {
        let mut numbers = Vec::new();
        let mut texts = HashMap::new();
        for (slot, c) in reference.values.iter().enumerate() {
            match &c.value {
                CategoryValue::Number(x) => numbers.push((*x, slot)),
                CategoryValue::Text(s) => {
                    texts.insert(s.clone(), slot);
                }
            }
        }
        numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
        CategoryIndex {
            numbers,
            texts,
            unseen: reference.values.len(),
        }
    }

    #[inline]
    pub fn slot_of_number(&self, x: f64) -> usize {
        match self.numbers.binary_search_by(|(v, _)| v.total_cmp(&x)) {
            Ok(i) => self.numbers[i].1,
            // A text category given as a number ("3" for 3.0) still counts.
            Err(_) => self.slot_of_text(&format_number(x)),
        }
    }

    #[inline]
    pub fn slot_of_text(&self, s: &str) -> usize {
        if let Some(&slot) = self.texts.get(s) {
            return slot;
        }
        if self.numbers.is_empty() {
            return self.unseen;
        }
        match s.trim().parse::<f64>() {
            Ok(x) => match self.numbers.binary_search_by(|(v, _)| v.total_cmp(&x)) {
                Ok(i) => self.numbers[i].1,
                Err(_) => self.unseen,
            },
            Err(_) => self.unseen,
        }
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}
