//! BBANDS, STDDEV, NATR.

use super::ma::SmaStream;
use super::ring::Ring;
use super::{check_lengths, check_period, check_real, true_range, Result};

/// TA-Lib 0.8's population variance (its `var.c` as shipped in the 0.8.2
/// wheel, reproduced bit for bit): running sums of deviations from a shift
/// (the first value, later the window mean), so that `Σd²/n − (Σd/n)²` does
/// not cancel. The window is rebuilt with a two-pass sum when the variance
/// falls below 1e-6 of the mean square of the remaining deviations, when the
/// value leaving the window dominates the sum of squares (1e6×), or every
/// `32 · period` bars; after a rebuild a variance under 1e-12 of the mean
/// square is exactly 0, so a flat window gives exactly 0. A rebuild is
/// O(period), rare on moving prices.
#[derive(Debug, Clone)]
struct RollingVar {
    period: usize,
    inv: f64,
    window: Ring,
    started: bool,
    full: bool,
    shift: f64,
    total1: f64,
    total2: f64,
    until_rebuild: i64,
}

impl RollingVar {
    fn new(period: usize) -> Self {
        Self {
            period,
            inv: 1.0 / period as f64,
            window: Ring::new(period),
            started: false,
            full: false,
            shift: 0.0,
            total1: 0.0,
            total2: 0.0,
            until_rebuild: 0,
        }
    }

    /// The variance once `period` values are in.
    fn update(&mut self, x: f64) -> Option<f64> {
        if !self.started {
            self.started = true;
            self.shift = x;
        }
        self.window.push(x);
        let d = x - self.shift;
        self.total1 += d;
        self.total2 += d * d;
        if !self.full {
            if self.window.len() < self.period {
                return None;
            }
            self.full = true;
            self.until_rebuild = 32 * self.period as i64;
        }
        let inv = self.inv;
        let mean1 = self.total1 * inv;
        let mut var = self.total2 * inv - mean1 * mean1;
        let oldest = self.window.get(0);
        let d = oldest - self.shift;
        self.total1 -= d;
        let d2 = d * d;
        self.total2 -= d2;
        self.until_rebuild -= 1;
        if var < 0.000001 * (self.total2 * inv) || d2 > 1000000.0 * self.total2 || self.until_rebuild <= 0 {
            self.until_rebuild = 32 * self.period as i64;
            let n = self.window.len();
            let mut sum = 0.0;
            for j in 0..n {
                sum += self.window.get(j);
            }
            self.shift = sum * inv;
            let (mut t1, mut t2) = (0.0, 0.0);
            for j in 0..n {
                let d = self.window.get(j) - self.shift;
                t1 += d;
                t2 += d * d;
            }
            let m = t1 * inv;
            var = t2 * inv - m * m;
            if var < 0.000000000001 * (t2 * inv) {
                var = 0.0;
            }
            let d = oldest - self.shift;
            self.total1 = t1 - d;
            self.total2 = t2 - d * d;
        }
        self.window.pop();
        Some(var)
    }
}

/// Standard deviation (population) times `nbdev`, TA-Lib 0.8's:
/// `sqrt(var) · nbdev` over its cancellation-free variance.
#[derive(Debug, Clone)]
pub struct StddevStream {
    var: RollingVar,
    nbdev: f64,
}

impl StddevStream {
    /// `period` in 2..=100000, `nbdev` in ±3e37.
    pub fn new(period: usize, nbdev: f64) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        check_real("nbdev", nbdev)?;
        Ok(Self { var: RollingVar::new(period), nbdev })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.var.period - 1
    }

    /// Feeds one value.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.var.update(x) {
            None => f64::NAN,
            Some(var) => {
                if self.nbdev != 1.0 {
                    var.sqrt() * self.nbdev
                } else {
                    var.sqrt()
                }
            }
        }
    }
}

/// STDDEV(`period`, `nbdev`) of `x`.
pub fn stddev(x: &[f64], period: usize, nbdev: f64) -> Result<Vec<f64>> {
    let mut s = StddevStream::new(period, nbdev)?;
    Ok(x.iter().map(|&v| s.update(v)).collect())
}

/// The three Bollinger bands.
#[derive(Debug, Clone, PartialEq)]
pub struct Bands {
    /// `middle + nbdevup · σ`.
    pub upper: Vec<f64>,
    /// SMA(`period`).
    pub middle: Vec<f64>,
    /// `middle − nbdevdn · σ`.
    pub lower: Vec<f64>,
}

/// One bar of Bollinger bands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandsPoint {
    /// `middle + nbdevup · σ`.
    pub upper: f64,
    /// SMA(`period`).
    pub middle: f64,
    /// `middle − nbdevdn · σ`.
    pub lower: f64,
}

/// Bollinger bands over an SMA (TA-Lib's `TA_BBANDS`, matype SMA): the SMA's
/// running sum for the middle band and σ from TA-Lib 0.8's variance (as in
/// STDDEV) over the same window.
#[derive(Debug, Clone)]
pub struct BbandsStream {
    var: RollingVar,
    ma: SmaStream,
    up: f64,
    dn: f64,
}

impl BbandsStream {
    /// `period` in 2..=100000, `nbdevup`, `nbdevdn` in ±3e37.
    pub fn new(period: usize, nbdevup: f64, nbdevdn: f64) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        check_real("nbdevup", nbdevup)?;
        check_real("nbdevdn", nbdevdn)?;
        Ok(Self { var: RollingVar::new(period), ma: SmaStream::unchecked(period), up: nbdevup, dn: nbdevdn })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.var.period - 1
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> BandsPoint {
        let mean = self.ma.update(x);
        match self.var.update(x) {
            None => BandsPoint { upper: f64::NAN, middle: f64::NAN, lower: f64::NAN },
            Some(var) => {
                let sd = var.sqrt();
                if self.up == self.dn {
                    let width = sd * self.up;
                    BandsPoint { upper: mean + width, middle: mean, lower: mean - width }
                } else {
                    // TA-Lib's build contracts the upper band's `mid + sd · nbdevup`
                    // into a fused multiply-add when the multipliers differ (and
                    // leaves the lower band unfused): reproduced as measured.
                    BandsPoint { upper: sd.mul_add(self.up, mean), middle: mean, lower: mean - sd * self.dn }
                }
            }
        }
    }
}

/// BBANDS(`period`, `nbdevup`, `nbdevdn`, SMA) of `close`.
pub fn bbands(close: &[f64], period: usize, nbdevup: f64, nbdevdn: f64) -> Result<Bands> {
    let mut s = BbandsStream::new(period, nbdevup, nbdevdn)?;
    let mut out = Bands {
        upper: Vec::with_capacity(close.len()),
        middle: Vec::with_capacity(close.len()),
        lower: Vec::with_capacity(close.len()),
    };
    for &x in close {
        let p = s.update(x);
        out.upper.push(p.upper);
        out.middle.push(p.middle);
        out.lower.push(p.lower);
    }
    Ok(out)
}

/// Normalized ATR, TA-Lib's: ATR seeded with the mean of the first `period`
/// true ranges, then Wilder smoothing; `ATR / close · 100`, 0 when the close
/// is zero. With period 1 TA-Lib returns the raw true range; so does this.
#[derive(Debug, Clone)]
pub struct NatrStream {
    period: usize,
    /// Bars seen, saturating at `period + 1`.
    bars: usize,
    prev_close: f64,
    atr: f64,
    /// Wilder weights: `beta = (period − 1) / period`, `alpha = 1 − beta`.
    alpha: f64,
    beta: f64,
}

impl NatrStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        let beta = (period - 1) as f64 / period as f64;
        Ok(Self { period, bars: 0, prev_close: 0.0, atr: 0.0, alpha: 1.0 - beta, beta })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.period
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        if self.bars == 0 {
            self.bars = 1;
            self.prev_close = close;
            return f64::NAN;
        }
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        if self.period == 1 {
            return tr;
        }
        let p = self.period as f64;
        if self.bars <= self.period {
            self.atr += tr;
            self.bars += 1;
            if self.bars <= self.period {
                return f64::NAN;
            }
            self.atr /= p;
        } else {
            // TA-Lib 0.8's two-coefficient Wilder step, fused as its build
            // fuses it: fma(beta, atr, alpha · tr).
            self.atr = self.beta.mul_add(self.atr, self.alpha * tr);
        }
        // An exact test in TA-Lib 0.8 (a close carries the quote unit).
        if close != 0.0 {
            (self.atr / close) * 100.0
        } else {
            0.0
        }
    }
}

/// NATR(`period`) of a bar series.
pub fn natr(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = NatrStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}
