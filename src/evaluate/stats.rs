//! Is a difference real? Paired tests on two candidates' per-decision series.
//!
//! - [`block_bootstrap`]: the moving-block bootstrap of the mean of a paired
//!   difference. Labels at horizon k overlap (a decision's label uses the
//!   next k mids, as do its k neighbours'), and a model's calls and the
//!   market's volatility persist far longer, so single decisions are not
//!   independent; resampling blocks of consecutive decisions keeps that
//!   dependence inside each block. The interval is the 2.5 % and 97.5 %
//!   percentiles of the resampled means.
//! - [`comparison_block_length`]: how long those blocks are: at least `2k`
//!   (the label overlap, and 10), longer where the series' own
//!   autocorrelation asks for it ([`automatic_block_length`], Politis and
//!   White 2004 with Patton, Politis and White's 2009 correction), at most
//!   half the series. tests/evaluate_calibration.rs measures the coverage
//!   of both, and of single-decision resampling, on nulls shaped like ours.
//! - [`mcnemar`]: McNemar's exact test on paired right/wrong outcomes (a
//!   two-sided binomial test on the discordant pairs). It assumes independent
//!   pairs, which overlapping labels are not, so it is optimistic: the report
//!   decides on the bootstrap interval and shows McNemar beside it.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// An estimate with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether the interval excludes zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }

    pub fn scaled(self, k: f64) -> Interval {
        let (a, b) = (self.low * k, self.high * k);
        Interval { estimate: self.estimate * k, low: a.min(b), high: a.max(b) }
    }
}

/// The shortest block for labels `horizon` ticks long over `n` decisions:
/// `2k` (and at least 10), at most half the series.
pub fn block_length(horizon: usize, n: usize) -> usize {
    (2 * horizon).max(10).min((n / 2).max(1))
}

/// The block length for the paired difference `a − b` at `horizon`: the
/// label overlap's [`block_length`] or the difference's
/// [`automatic_block_length`], whichever is longer, at most half the series.
pub fn comparison_block_length(a: &[f64], b: &[f64], horizon: usize) -> usize {
    assert_eq!(a.len(), b.len(), "paired series");
    let n = a.len();
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    block_length(horizon, n).max(automatic_block_length(&d)).min((n / 2).max(1))
}

/// The block length that minimises the bootstrap variance estimate's error
/// for the mean of `x` (Politis and White 2004, corrected by Patton, Politis
/// and White 2009; the circular/moving-block constant): from the
/// autocovariances up to the lag where the autocorrelation stops being
/// distinguishable from zero, weighted by a flat-top window,
/// `b = (2·G² / D)^(1/3) · n^(1/3)` with `G = Σ λ(k/M)·|k|·R(k)` and
/// `D = 4/3 · (Σ λ(k/M)·R(k))²`, capped at `min(3√n, n/3)`. A series
/// without variance, or too short to say, gets 1.
pub fn automatic_block_length(x: &[f64]) -> usize {
    let n = x.len();
    if n < 8 {
        return 1;
    }
    let nf = n as f64;
    let mean = x.iter().sum::<f64>() / nf;
    let e: Vec<f64> = x.iter().map(|v| v - mean).collect();
    // Lags considered: up to √n plus the run of small correlations looked for.
    let kn = 5usize.max(nf.log10().ceil() as usize);
    let m_max = ((nf.sqrt().ceil() as usize) + kn).min(n - 1);
    let acv: Vec<f64> = (0..=m_max).map(|k| e[k..].iter().zip(&e).map(|(a, b)| a * b).sum::<f64>() / nf).collect();
    if acv[0].is_nan() || acv[0] <= 0.0 {
        return 1;
    }
    // m̂: the first lag after which kn autocorrelations in a row are all
    // within the band of zero; M = 2m̂ (at least 1, at most m_max).
    let band = 2.0 * (nf.log10() / nf).sqrt();
    let small = |k: usize| (acv[k] / acv[0]).abs() < band;
    let m_hat = (0..=m_max.saturating_sub(kn)).find(|&m| (m + 1..=m + kn).all(small)).unwrap_or(m_max);
    let big_m = (2 * m_hat).clamp(1, m_max);
    let flat_top = |t: f64| {
        let t = t.abs();
        if t <= 0.5 {
            1.0
        } else if t <= 1.0 {
            2.0 * (1.0 - t)
        } else {
            0.0
        }
    };
    let (mut g, mut g0) = (0.0, acv[0]);
    for (k, &r) in acv.iter().enumerate().take(big_m + 1).skip(1) {
        let w = flat_top(k as f64 / big_m as f64);
        g += 2.0 * w * k as f64 * r;
        g0 += 2.0 * w * r;
    }
    let d = 4.0 / 3.0 * g0 * g0;
    let cap = (3.0 * nf.sqrt()).min(nf / 3.0);
    if d.is_nan() || d <= 0.0 {
        return cap.floor().max(1.0) as usize;
    }
    let b = (2.0 * g * g / d).cbrt() * nf.cbrt();
    b.clamp(1.0, cap).ceil() as usize
}

/// The mean of `a[i] − b[i]` with its moving-block bootstrap 95 % interval
/// (`resamples` resamples, blocks of `block` decisions, seeded).
pub fn block_bootstrap(a: &[f64], b: &[f64], block: usize, resamples: usize, seed: u64) -> Interval {
    assert_eq!(a.len(), b.len(), "paired series");
    let n = a.len();
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let estimate = mean(&d);
    if n < 2 {
        return Interval { estimate, low: estimate, high: estimate };
    }
    let block = block.clamp(1, n);
    // Prefix sums make each block's sum O(1).
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + d[i];
    }
    let starts = n - block + 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let mut sum = 0.0;
        let mut taken = 0;
        while taken < n {
            let s = (rng.next_u64() % starts as u64) as usize;
            let len = block.min(n - taken);
            sum += prefix[s + len] - prefix[s];
            taken += len;
        }
        means.push(sum / n as f64);
    }
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Interval { estimate, low: at(0.025), high: at(0.975) }
}

/// McNemar's exact test on paired right/wrong outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct McNemar {
    /// Decisions the first candidate got right and the second wrong.
    pub first_only: u64,
    /// Decisions the second got right and the first wrong.
    pub second_only: u64,
    /// Two-sided p-value of "both are right equally often".
    pub p_value: f64,
}

pub fn mcnemar(first: &[bool], second: &[bool]) -> McNemar {
    assert_eq!(first.len(), second.len(), "paired series");
    let first_only = first.iter().zip(second).filter(|(a, b)| **a && !**b).count() as u64;
    let second_only = first.iter().zip(second).filter(|(a, b)| !**a && **b).count() as u64;
    McNemar {
        first_only,
        second_only,
        p_value: binomial_two_sided(first_only.min(second_only), first_only + second_only),
    }
}

/// `min(1, 2·P(X ≤ k))` for `X ~ Binomial(n, 1/2)`, summed in log space.
fn binomial_two_sided(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose - ln2n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_the_exact_binomial() {
        // 10 discordant pairs split 1 : 9: 2·(1 + 10) / 1024.
        let a = [true, false, false, false, false, false, false, false, false, false, true];
        let b = [false, true, true, true, true, true, true, true, true, true, true];
        let m = mcnemar(&a, &b);
        assert_eq!((m.first_only, m.second_only), (1, 9));
        assert!((m.p_value - 22.0 / 1024.0).abs() < 1e-12, "{}", m.p_value);
        // A tie is p = 1; no discordant pair is p = 1.
        assert_eq!(mcnemar(&[true, false], &[false, true]).p_value, 1.0);
        assert_eq!(mcnemar(&[true, true], &[true, true]).p_value, 1.0);
    }

    #[test]
    fn large_counts_stay_finite() {
        let p = binomial_two_sided(4_900, 10_000);
        // z = 2, two-sided normal ≈ 0.0455 (continuity makes the exact one a bit larger).
        assert!((0.04..0.05).contains(&p), "{p}");
    }

    #[test]
    fn bootstrap_of_a_constant_shift_is_the_shift() {
        let a: Vec<f64> = (0..500).map(|i| (i % 7) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x - 0.25).collect();
        let i = block_bootstrap(&a, &b, 20, 500, 1);
        assert!((i.estimate - 0.25).abs() < 1e-12 && (i.low - 0.25).abs() < 1e-9 && (i.high - 0.25).abs() < 1e-9);
    }

    #[test]
    fn bootstrap_interval_covers_zero_for_noise_and_not_for_a_real_edge() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f64> = (0..4000).map(|_| (rng.next_u64() % 1000) as f64 / 1000.0 - 0.5).collect();
        let zero = vec![0.0; noise.len()];
        let i = block_bootstrap(&noise, &zero, 20, 1000, 5);
        assert!(!i.excludes_zero(), "{i:?}");
        let edge: Vec<f64> = noise.iter().map(|x| x + 0.1).collect();
        let j = block_bootstrap(&edge, &zero, 20, 1000, 5);
        assert!(j.excludes_zero() && j.low > 0.05, "{j:?}");
    }

    #[test]
    fn automatic_block_length_grows_with_the_memory_of_the_series() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut unit = || (rng.next_u64() % 10_000) as f64 / 10_000.0 - 0.5;
        let noise: Vec<f64> = (0..10_000).map(|_| unit()).collect();
        let (mut x, mut slow) = (0.0, Vec::with_capacity(10_000));
        for e in &noise {
            x = 0.95 * x + e;
            slow.push(x);
        }
        let (b_noise, b_slow) = (automatic_block_length(&noise), automatic_block_length(&slow));
        // AR(1) at 0.95: G/g(0) = 2ρ/(1−ρ²), so b = (1.5·(2ρ/(1−ρ²))²)^(1/3)·n^(1/3) ≈ 180 for
        // n = 10 000 (a little less here: the lags are cut at √n).
        assert!(b_noise <= 5, "white noise: {b_noise}");
        assert!((70..=300).contains(&b_slow), "AR(1) 0.95: {b_slow}");
        assert_eq!(automatic_block_length(&[3.0; 100]), 1, "no variance");
        assert_eq!(automatic_block_length(&[1.0, 2.0]), 1, "too short to say");
        // Never below the label overlap, never above half the series.
        let zeros = vec![0.0; noise.len()];
        assert_eq!(comparison_block_length(&noise, &zeros, 30), 60);
        assert_eq!(comparison_block_length(&slow[..200], &zeros[..200], 300), 100);
    }

    #[test]
    fn block_length_follows_the_horizon_within_bounds() {
        assert_eq!(block_length(30, 10_000), 60);
        assert_eq!(block_length(1, 10_000), 10);
        assert_eq!(block_length(300, 100), 50);
    }
}
