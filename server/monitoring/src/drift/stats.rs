//! The drift statistics, on histograms that share their bins: what
//! Evidently and Azure ML compute on raw samples, computed here on counts so
//! that a window is a fixed-size state and windows of several replicas
//! merge by adding.
//!
//! Population Stability Index, Jensen–Shannon distance and chi-square are
//! exact on the bins they are given (the same numbers scipy gives for the
//! same counts). Kolmogorov–Smirnov and Wasserstein are exact at the bin
//! edges and bounded in between: each returns the bound on its error next
//! to its value (see [`ks`] and [`wasserstein`]).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// What Evidently puts in an empty bin before taking logarithms, so that a
/// bin one side never saw counts instead of making PSI infinite.
pub const PSI_EMPTY_BIN: f64 = 0.0001;

/// Shares of `counts`, summing to 1 (all zero for an empty histogram).
pub fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// Population Stability Index of `current` against `reference` (shares per
/// bin): Σ (c − r)·ln(c / r), an empty bin counted as [`PSI_EMPTY_BIN`].
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = if r == 0.0 { PSI_EMPTY_BIN } else { r };
            let c = if c == 0.0 { PSI_EMPTY_BIN } else { c };
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (the square root of the divergence, natural
/// logarithm), as `scipy.spatial.distance.jensenshannon` computes it:
/// both distributions are normalised first.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp == 0.0 || sq == 0.0 {
        return 0.0;
    }
    let kl_to_mean = |a: f64, m: f64| if a > 0.0 { a * (a / m).ln() } else { 0.0 };
    let mut divergence = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        divergence += kl_to_mean(a, m) + kl_to_mean(b, m);
    }
    (divergence / 2.0).max(0.0).sqrt()
}

/// Pearson's chi-square test of `observed` counts against the shares
/// `expected` (scaled to the observed total), as `scipy.stats.chisquare`:
/// `(statistic, p-value)` with `k − 1` degrees of freedom. Categories the
/// reference never saw are left out (their expected count is 0); `None`
/// when fewer than two categories remain or nothing was observed.
pub fn chi_square(observed: &[u64], expected: &[f64]) -> Option<(f64, f64)> {
    let total: u64 = observed.iter().sum();
    let kept: Vec<(f64, f64)> = observed
        .iter()
        .zip(expected)
        .filter(|(_, &e)| e > 0.0)
        .map(|(&o, &e)| (o as f64, e))
        .collect();
    if total == 0 || kept.len() < 2 {
        return None;
    }
    let observed_total: f64 = kept.iter().map(|(o, _)| o).sum();
    let share_total: f64 = kept.iter().map(|(_, e)| e).sum();
    let statistic: f64 = kept
        .iter()
        .map(|&(o, e)| {
            let e = e / share_total * observed_total;
            (o - e) * (o - e) / e
        })
        .sum();
    let dof = (kept.len() - 1) as f64;
    let p = ChiSquared::new(dof).ok()?.sf(statistic);
    Some((statistic, p))
}

/// A two-sample Kolmogorov–Smirnov test from two histograms on the same
/// bins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ks {
    /// The largest gap between the two empirical CDFs at the bin edges.
    pub statistic: f64,
    /// The asymptotic two-sided p-value of `statistic` (Smirnov's limit,
    /// `scipy.stats.kstwobign.sf(D·√(nm/(n+m)))`).
    pub p_value: f64,
    /// How far the statistic on the raw samples can lie above `statistic`:
    /// the largest share either sample has in one bin.
    pub error_bound: f64,
}

/// [`Ks`] of two histograms on the same bins (`None` if either is empty).
pub fn ks(reference: &[u64], current: &[u64]) -> Option<Ks> {
    let (n, m): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    if n == 0 || m == 0 {
        return None;
    }
    let (mut fr, mut fc, mut statistic, mut error_bound) = (0u64, 0u64, 0.0f64, 0.0f64);
    for (&r, &c) in reference.iter().zip(current) {
        let (pr, pc) = (r as f64 / n as f64, c as f64 / m as f64);
        error_bound = error_bound.max(pr + pc);
        fr += r;
        fc += c;
        statistic = statistic.max((fr as f64 / n as f64 - fc as f64 / m as f64).abs());
    }
    let en = (n as f64 * m as f64) / (n + m) as f64;
    Some(Ks {
        statistic,
        p_value: kolmogorov_sf(statistic * en.sqrt()),
        error_bound,
    })
}

/// The survival function of the Kolmogorov distribution, P(K > x): the
/// alternating series for large x and the Jacobi-theta form for small x,
/// each where it converges in a few terms.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // 1 − √(2π)/x · Σ exp(−(2k−1)²π²/(8x²))
        let t = -std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        let sum: f64 = (1..=20)
            .map(|k| {
                let j = (2 * k - 1) as f64;
                (j * j * t).exp()
            })
            .sum();
        return (1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * sum).clamp(0.0, 1.0);
    }
    // 2 Σ (−1)^(k−1) exp(−2k²x²)
    let sum: f64 = (1..=100)
        .map(|k| {
            let k = k as f64;
            let sign = if k as u64 % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * k * k * x * x).exp()
        })
        .sum();
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Wasserstein-1 distance of two histograms on the same bins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wasserstein {
    pub distance: f64,
    /// How far the distance on the raw samples can lie from `distance`:
    /// Σ width·(reference share + current share) over the bins, since in a
    /// bin each CDF stays within its share of the straight line assumed.
    pub error_bound: f64,
}

/// [`Wasserstein`] of two histograms whose bins have the `bounds` given
/// (`bounds.len() == counts.len() + 1`): the area between the two CDFs,
/// each taken as linear inside a bin.
pub fn wasserstein(bounds: &[f64], reference: &[u64], current: &[u64]) -> Option<Wasserstein> {
    let (n, m): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    if n == 0 || m == 0 || bounds.len() != reference.len() + 1 {
        return None;
    }
    let (mut fr, mut fc) = (0.0f64, 0.0f64);
    let (mut distance, mut error_bound) = (0.0, 0.0);
    for i in 0..reference.len() {
        let width = bounds[i + 1] - bounds[i];
        let (pr, pc) = (reference[i] as f64 / n as f64, current[i] as f64 / m as f64);
        let d0 = fr - fc;
        fr += pr;
        fc += pc;
        let d1 = fr - fc;
        distance += width * area_of_linear(d0, d1);
        error_bound += width * (pr + pc);
    }
    Some(Wasserstein {
        distance,
        error_bound,
    })
}

/// ∫₀¹ |d0 + (d1 − d0)·t| dt.
fn area_of_linear(d0: f64, d1: f64) -> f64 {
    if d0 * d1 >= 0.0 {
        (d0.abs() + d1.abs()) / 2.0
    } else {
        (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_histograms_have_no_distance() {
        let c = [5, 10, 20, 10, 5];
        let s = shares(&c);
        assert!(psi(&s, &s).abs() < 1e-12);
        assert!(jensen_shannon(&s, &s) < 1e-12);
        let k = ks(&c, &c).unwrap();
        assert_eq!(k.statistic, 0.0);
        assert!((k.p_value - 1.0).abs() < 1e-12);
        let w = wasserstein(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &c, &c).unwrap();
        assert_eq!(w.distance, 0.0);
    }

    #[test]
    fn psi_matches_the_formula_by_hand() {
        // (0.4−0.5)ln(0.4/0.5) + (0.6−0.5)ln(0.6/0.5)
        let want = -0.1 * (0.8f64).ln() + 0.1 * (1.2f64).ln();
        assert!((psi(&[0.5, 0.5], &[0.4, 0.6]) - want).abs() < 1e-15);
        // An empty bin counts as 0.0001, not as infinity.
        assert!(psi(&[0.5, 0.5], &[1.0, 0.0]).is_finite());
    }

    #[test]
    fn a_point_mass_moved_by_one_bin_is_one_width_away() {
        // All of the reference in [0,1), all of the current in [1,2):
        // linear CDFs inside the bins, so the area is exactly 1.
        let w = wasserstein(&[0.0, 1.0, 2.0], &[10, 0], &[0, 10]).unwrap();
        assert!((w.distance - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kolmogorov_series_agree_where_they_meet() {
        // Both forms near x = 1, and known values of scipy.stats.kstwobign.sf.
        assert!((kolmogorov_sf(0.999_999) - kolmogorov_sf(1.000_001)).abs() < 1e-5);
        assert!((kolmogorov_sf(1.0) - 0.269_999_671_677_354_56).abs() < 1e-9);
        assert!((kolmogorov_sf(0.5) - 0.963_945_243_664_875_1).abs() < 1e-9);
        assert!((kolmogorov_sf(1.36) - 0.049_485_876_755_377_876).abs() < 1e-9);
    }

    #[test]
    fn chi_square_leaves_out_categories_never_expected() {
        let (stat, p) = chi_square(&[10, 20, 5], &[0.5, 0.5, 0.0]).unwrap();
        // Expected 15 and 15 of the 30 observed in the two kept categories.
        assert!((stat - (25.0 / 15.0 + 25.0 / 15.0)).abs() < 1e-12);
        assert!(p > 0.0 && p < 1.0);
        assert!(chi_square(&[3], &[1.0]).is_none());
    }
}
