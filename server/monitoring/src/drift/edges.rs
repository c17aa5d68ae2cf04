//! Which bin a value falls in. A feature's 1000 fine edges are 8 KB, and a
//! row of the MLP's 74 features walks 600 KB of them with plain binary
//! searches: under `perf`, adding values to a window was the capture
//! writer's largest single cost in `scripts/bench-drift.sh`'s server.
//! [`EdgeIndex`] lays a uniform grid over the edges' range so that a lookup
//! reads a small table and one or two cache lines of edges (about 15% off
//! drift per 1-row request in `benches/drift.rs`).

/// The slot of `x` among `edges`: 0 below the first edge, `k` for bin
/// `[edges[k-1], edges[k])` (the last bin closed, as numpy's), and
/// `edges.len()` above the last edge.
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    let k = edges.partition_point(|&e| e <= x);
    close_last(edges, x, k)
}

#[inline]
fn close_last(edges: &[f64], x: f64, k: usize) -> usize {
    if k == edges.len() && k > 0 && x == edges[k - 1] {
        return k - 1;
    }
    k
}

/// Below this many edges a binary search stays in a cache line or two and
/// an index would only add a step.
const MIN_EDGES: usize = 64;
/// Edges per grid cell on average (quantile edges crowd where the data
/// does, so some cells hold many more).
const EDGES_PER_CELL: usize = 4;

/// A grid of equal cells over `[edges[0], edges[last]]`, each knowing the
/// edges at or below its lower end, built once per baseline feature. It
/// gives what [`bin_of`] gives, for every `x` (not NaN).
#[derive(Debug, Clone)]
pub struct EdgeIndex {
    lo: f64,
    hi: f64,
    /// Cells per unit of `x`.
    scale: f64,
    /// `starts[c]`: how many edges are at or below cell `c`'s lower end;
    /// one more entry than cells, for the last cell's upper end.
    starts: Vec<u32>,
}

impl EdgeIndex {
    /// `None` where a plain binary search is as good (few edges) or a grid
    /// cannot be laid (an empty or non-finite range).
    pub fn new(edges: &[f64]) -> Option<EdgeIndex> {
        if edges.len() < MIN_EDGES || edges.len() > u32::MAX as usize {
            return None;
        }
        let (lo, hi) = (edges[0], edges[edges.len() - 1]);
        let scale = (edges.len() / EDGES_PER_CELL) as f64 / (hi - lo);
        if !(lo.is_finite() && hi.is_finite() && hi > lo && scale.is_finite()) {
            return None;
        }
        let cells = edges.len() / EDGES_PER_CELL;
        let starts = (0..=cells)
            .map(|c| {
                let at = lo + c as f64 / scale;
                edges.partition_point(|&e| e <= at) as u32
            })
            .collect();
        Some(EdgeIndex {
            lo,
            hi,
            scale,
            starts,
        })
    }

    /// The slot of `x` among `edges` (the edges this index was built on).
    #[inline]
    pub fn slot(&self, edges: &[f64], x: f64) -> usize {
        if x < self.lo {
            return 0;
        }
        if x >= self.hi {
            return close_last(edges, x, edges.len());
        }
        let cell = (((x - self.lo) * self.scale) as usize).min(self.starts.len() - 2);
        let (a, b) = (self.starts[cell] as usize, self.starts[cell + 1] as usize);
        let k = a + edges[a..b].partition_point(|&e| e <= x);
        // Rounding in the cell's arithmetic can put x a hair outside the
        // cell it was given; the check costs two reads that are already in
        // cache and makes the answer exact whatever the rounding did.
        if (k == 0 || edges[k - 1] <= x) && (k == edges.len() || edges[k] > x) {
            close_last(edges, x, k)
        } else {
            bin_of(edges, x)
        }
    }
}

/// The slot of `x` by `index` when there is one, else by binary search.
#[inline]
pub fn slot(index: Option<&EdgeIndex>, edges: &[f64], x: f64) -> usize {
    match index {
        Some(i) => i.slot(edges, x),
        None => bin_of(edges, x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_half_open_but_the_last_is_closed() {
        let e = [0.0, 1.0, 2.0];
        assert_eq!(bin_of(&e, -0.5), 0);
        assert_eq!(bin_of(&e, 0.0), 1);
        assert_eq!(bin_of(&e, 0.999), 1);
        assert_eq!(bin_of(&e, 1.0), 2);
        assert_eq!(bin_of(&e, 2.0), 2);
        assert_eq!(bin_of(&e, 2.5), 3);
    }

    /// A small deterministic generator, so the test needs no crate.
    fn uniform(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    fn check(edges: &[f64], probes: &[f64]) {
        let index = EdgeIndex::new(edges).expect("enough edges for an index");
        for &x in probes {
            assert_eq!(index.slot(edges, x), bin_of(edges, x), "x = {x}");
        }
    }

    #[test]
    fn the_index_agrees_with_binary_search_everywhere() {
        let mut s = 7;
        // Skewed quantile-like edges (dense near 0), with duplicates as
        // discrete data gives, and a long tail.
        let mut edges: Vec<f64> = (0..1000)
            .map(|_| uniform(&mut s).powi(6) * 1e4 - 3.0)
            .collect();
        edges.extend([-3.0, -3.0, 0.5, 0.5, 0.5]);
        edges.sort_by(f64::total_cmp);
        let mut probes: Vec<f64> = edges.clone();
        for &e in &edges {
            probes.extend([e.next_down(), e.next_up()]);
        }
        probes.extend((0..20000).map(|_| uniform(&mut s) * 2e4 - 1e4));
        probes.extend([
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MAX,
            f64::MIN,
        ]);
        check(&edges, &probes);
    }

    #[test]
    fn the_last_edge_closes_the_last_bin() {
        let edges: Vec<f64> = (0..100).map(f64::from).collect();
        let index = EdgeIndex::new(&edges).unwrap();
        assert_eq!(index.slot(&edges, 99.0), 99);
        assert_eq!(index.slot(&edges, 99.5), 100);
        assert_eq!(index.slot(&edges, -1.0), 0);
        assert_eq!(index.slot(&edges, 0.0), 1);
    }

    #[test]
    fn few_or_degenerate_edges_get_no_index() {
        assert!(EdgeIndex::new(&[0.0, 1.0, 2.0]).is_none());
        assert!(EdgeIndex::new(&[5.0; 100]).is_none());
        let mut tail: Vec<f64> = (0..99).map(f64::from).collect();
        tail.push(f64::INFINITY);
        assert!(EdgeIndex::new(&tail).is_none());
    }
}
