//! BBANDS, STDDEV, NATR.

use super::ring::Ring;
use super::{check_lengths, check_period, check_real, is_zero, is_zero_or_neg, true_range, Result};

/// TA-Lib's running mean and population variance (`TA_INT_VAR`): running
/// sums of `x` and `x²`; add the new value, take `Σx/n` and `Σx²/n`, then
/// subtract the oldest value; `var = Σx²/n − (Σx/n)²`.
#[derive(Debug, Clone)]
struct RollingVar {
    period: usize,
    window: Ring,
    sum: f64,
    sum_sq: f64,
}

impl RollingVar {
    fn new(period: usize) -> Self {
        Self {
            period,
            window: Ring::new(period),
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// `Some((mean, variance))` once `period` values are in.
    fn update(&mut self, x: f64) -> Option<(f64, f64)> {
        self.sum += x;
        self.sum_sq += x * x;
        self.window.push(x);
        if self.window.len() < self.period {
            return None;
        }
        let p = self.period as f64;
        let mean = self.sum / p;
        let mean_sq = self.sum_sq / p;
        if let Some(old) = self.window.pop() {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        Some((mean, mean_sq - mean * mean))
    }
}

/// Standard deviation (population) times `nbdev`, TA-Lib's: 0 when the
/// variance is below TA-Lib's epsilon.
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
        Ok(Self {
            var: RollingVar::new(period),
            nbdev,
        })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.var.period - 1
    }

    /// Feeds one value.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.var.update(x) {
            None => f64::NAN,
            Some((_, var)) => {
                if !is_zero_or_neg(var) {
                    var.sqrt() * self.nbdev
                } else {
                    0.0
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

/// Bollinger bands over an SMA (TA-Lib's `TA_BBANDS`, matype SMA), σ the
/// population standard deviation over the same window (0 below TA-Lib's
/// epsilon).
#[derive(Debug, Clone)]
pub struct BbandsStream {
    var: RollingVar,
    up: f64,
    dn: f64,
}

impl BbandsStream {
    /// `period` in 2..=100000, `nbdevup`, `nbdevdn` in ±3e37.
    pub fn new(period: usize, nbdevup: f64, nbdevdn: f64) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        check_real("nbdevup", nbdevup)?;
        check_real("nbdevdn", nbdevdn)?;
        Ok(Self {
            var: RollingVar::new(period),
            up: nbdevup,
            dn: nbdevdn,
        })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.var.period - 1
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> BandsPoint {
        match self.var.update(x) {
            None => BandsPoint {
                upper: f64::NAN,
                middle: f64::NAN,
                lower: f64::NAN,
            },
            Some((mean, var)) => {
                let sd = if !is_zero_or_neg(var) { var.sqrt() } else { 0.0 };
                BandsPoint {
                    upper: mean + sd * self.up,
                    middle: mean,
                    lower: mean - sd * self.dn,
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
}

impl NatrStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            period,
            bars: 0,
            prev_close: 0.0,
            atr: 0.0,
        })
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
            self.atr *= p - 1.0;
            self.atr += tr;
            self.atr /= p;
        }
        if !is_zero(close) {
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
    Ok((0..close.len())
        .map(|i| s.update(high[i], low[i], close[i]))
        .collect())
}
