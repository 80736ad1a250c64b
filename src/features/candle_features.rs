//! Candle features (indices 50–74) over completed 1-second candles.
//!
//! [`candle_features`] computes all 25 from a [`CandleWindow`]: the last
//! `L ≤ HISTORY` candles of a segment as contiguous slices, the current
//! candle last. The batch builder passes sub-slices of the whole candle
//! series; the streaming engine keeps the last candles in [`Sliding`]
//! arrays and passes their tails. The same function on the same numbers:
//! the two paths agree bit for bit. Windows are recomputed each candle
//! (two-pass moments: O(60) per candle, a constant, once a second), which
//! keeps them exact instead of drifting like running sums would.
//!
//! Definitions where docs/features.md is silent:
//! - a feature is *undefined* (NaN, so the vector is not emitted) until its
//!   window is full: `ret_n` needs `n + 1` candles, window features over `w`
//!   candles need `w` candles, and those over `w` values of `ret_1` need
//!   `w + 1` candles (`ret_1` of a segment's first candle does not exist).
//!   The warm-up of 200 candles (SMA 200) covers all of them.
//! - "std = 0" is tested exactly as "all values in the window are equal"
//!   (the two-pass std of equal values can come out as 1e-17, not 0):
//!   `volume_z60` is then 0, `skew_60` is 0, `rv_*` is 0.
//! - `skew_60` = `m3 / m2^1.5` with population central moments.
//! - `autocorr_60` is 0 when either of `x[1..]`, `x[..−1]` is constant.

use super::book_features::bps;

/// Candles a window holds: `ret_60` needs 61 closes.
pub const HISTORY: usize = 61;

/// The last `L` candles of a segment, oldest first, the current one last.
/// Every slice has the same length `L` (1 ≤ L ≤ [`HISTORY`]); `ret1[i]` is
/// `bps(ln(close[i] / close[i − 1]))`, NaN for a segment's first candle.
#[derive(Debug, Clone, Copy)]
pub struct CandleWindow<'a> {
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub volume: &'a [f64],
    pub buy_volume: &'a [f64],
    pub trades: &'a [f64],
    pub ret1: &'a [f64],
}

/// `bps(ln(close / prev_close))`.
#[inline]
pub fn ret_1(prev_close: f64, close: f64) -> f64 {
    bps((close / prev_close).ln())
}

/// The last `k` values, if there are that many.
#[inline]
fn tail(x: &[f64], k: usize) -> Option<&[f64]> {
    x.len().checked_sub(k).map(|s| &x[s..])
}

#[inline]
fn all_equal(x: &[f64]) -> bool {
    x.iter().all(|&v| v == x[0])
}

#[inline]
fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Population standard deviation; exactly 0 when all values are equal.
pub(crate) fn pop_std(x: &[f64]) -> f64 {
    if all_equal(x) {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|&v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Sample skewness with population moments, `m3 / m2^1.5`; 0 when constant.
pub fn skewness(x: &[f64]) -> f64 {
    if all_equal(x) {
        return 0.0;
    }
    let m = mean(x);
    let n = x.len() as f64;
    let (mut m2, mut m3) = (0.0, 0.0);
    for &v in x {
        let d = v - m;
        m2 += d * d;
        m3 += d * d * d;
    }
    m2 /= n;
    m3 /= n;
    m3 / (m2 * m2.sqrt())
}

/// Lag-1 autocorrelation: Pearson of `x[1..]` against `x[..−1]`; 0 when
/// either is constant or there are fewer than 2 pairs.
pub fn autocorr_lag1(x: &[f64]) -> f64 {
    if x.len() < 3 {
        return 0.0;
    }
    let (a, b) = (&x[1..], &x[..x.len() - 1]);
    if all_equal(a) || all_equal(b) {
        return 0.0;
    }
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&u, &v) in a.iter().zip(b) {
        let (du, dv) = (u - ma, v - mb);
        sab += du * dv;
        saa += du * du;
        sbb += dv * dv;
    }
    let d = (saa * sbb).sqrt();
    if d == 0.0 {
        0.0
    } else {
        sab / d
    }
}

/// Fills `out[0..25]` (features 50–74) from a window; NaN where undefined.
pub fn candle_features(w: &CandleWindow, out: &mut [f64]) {
    let l = w.close.len();
    let n = l - 1;
    let (o, h, lo, c, v) = (w.open[n], w.high[n], w.low[n], w.close[n], w.volume[n]);
    let ret = |k: usize| if l > k { bps((c / w.close[n - k]).ln()) } else { f64::NAN };
    out[0] = if l > 1 { w.ret1[n] } else { f64::NAN };
    out[1] = ret(5);
    out[2] = ret(15);
    out[3] = ret(60);
    out[4] = bps((h - lo) / c);
    out[5] = bps((c - o) / o);
    out[6] = bps((h - o.max(c)) / c);
    out[7] = bps((o.min(c) - lo) / c);
    out[8] = if h == lo { 0.5 } else { (c - lo) / (h - lo) };
    out[9] = v.ln_1p();
    out[10] = match tail(w.volume, 60) {
        None => f64::NAN,
        Some(vs) => {
            let sd = pop_std(vs);
            if sd == 0.0 {
                0.0
            } else {
                (v - mean(vs)) / sd
            }
        }
    };
    out[11] = if v == 0.0 { 0.5 } else { w.buy_volume[n] / v };
    out[12] = w.trades[n].ln_1p();
    out[13] = match (tail(w.high, 60), tail(w.low, 60), tail(w.close, 60), tail(w.volume, 60)) {
        (Some(hs), Some(ls), Some(cs), Some(vs)) => {
            let mut pv = 0.0;
            let mut sv = 0.0;
            for i in 0..60 {
                pv += (hs[i] + ls[i] + cs[i]) / 3.0 * vs[i];
                sv += vs[i];
            }
            if sv == 0.0 {
                0.0
            } else {
                bps(c / (pv / sv) - 1.0)
            }
        }
        _ => f64::NAN,
    };
    let rets = |k: usize| if l > k { tail(w.ret1, k) } else { None };
    out[14] = rets(10).map_or(f64::NAN, pop_std);
    out[15] = rets(60).map_or(f64::NAN, pop_std);
    out[16] = match (tail(w.high, 20), tail(w.low, 20)) {
        (Some(hs), Some(ls)) => {
            let s: f64 = hs.iter().zip(ls).map(|(&a, &b)| (a / b).ln().powi(2)).sum();
            bps((s / 20.0 / (4.0 * std::f64::consts::LN_2)).sqrt())
        }
        _ => f64::NAN,
    };
    match (tail(w.high, 60), tail(w.low, 60)) {
        (Some(hs), Some(ls)) => {
            let mh = hs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ml = ls.iter().copied().fold(f64::INFINITY, f64::min);
            out[17] = bps((mh - ml) / c);
            out[18] = if mh == ml { 0.5 } else { (c - ml) / (mh - ml) };
        }
        _ => {
            out[17] = f64::NAN;
            out[18] = f64::NAN;
        }
    }
    out[19] = rets(60).map_or(f64::NAN, skewness);
    out[20] = rets(60).map_or(f64::NAN, autocorr_lag1);
    out[21] = match (rets(10), tail(w.volume, 10)) {
        (Some(rs), Some(vs)) => {
            let sv: f64 = vs.iter().sum();
            if sv == 0.0 {
                0.0
            } else {
                rs.iter().zip(vs).map(|(&r, &v)| v * r).sum::<f64>() / sv
            }
        }
        _ => f64::NAN,
    };
    out[22] = match (tail(w.buy_volume, 10), tail(w.volume, 10)) {
        (Some(bs), Some(vs)) => {
            let sv: f64 = vs.iter().sum();
            if sv == 0.0 {
                0.5
            } else {
                bs.iter().sum::<f64>() / sv
            }
        }
        _ => f64::NAN,
    };
    out[23] = tail(w.volume, 60).map_or(f64::NAN, |vs| vs.iter().sum::<f64>().ln_1p());
    out[24] = tail(w.trades, 10).map_or(f64::NAN, |ts| ts.iter().filter(|&&t| t == 0.0).count() as f64);
}

/// A sliding array: the last `n` values pushed, always contiguous. Storage
/// is `2n`; when full, the last `n − 1` values move to the front (O(1)
/// amortized per push, constant memory).
#[derive(Debug, Clone)]
pub struct Sliding {
    buf: Vec<f64>,
    n: usize,
}

impl Sliding {
    pub fn new(n: usize) -> Sliding {
        Sliding { buf: Vec::with_capacity(2 * n), n }
    }

    pub fn push(&mut self, x: f64) {
        if self.buf.len() == 2 * self.n {
            self.buf.copy_within(self.n + 1.., 0);
            self.buf.truncate(self.n - 1);
        }
        self.buf.push(x);
    }

    /// The last `min(pushed, n)` values, oldest first.
    pub fn view(&self) -> &[f64] {
        &self.buf[self.buf.len().saturating_sub(self.n)..]
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}
