//! SMA and EMA (TA-Lib `TA_SMA`, `TA_EMA`).

use super::ring::Ring;
use super::{check_period, per_to_k, Result};

/// Simple moving average, TA-Lib's running sum: add the new value, take the
/// mean, then subtract the oldest value of the window.
#[derive(Debug, Clone)]
pub struct SmaStream {
    period: usize,
    window: Ring,
    sum: f64,
    ready: bool,
}

impl SmaStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self::unchecked(period))
    }

    pub(crate) fn unchecked(period: usize) -> Self {
        Self { period, window: Ring::new(period), sum: 0.0, ready: false }
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Whether the last update produced a value.
    pub(crate) fn ready(&self) -> bool {
        self.ready
    }

    /// Feeds one value; NaN until `period` values have been seen.
    pub fn update(&mut self, x: f64) -> f64 {
        self.sum += x;
        self.window.push(x);
        if self.window.len() < self.period {
            return f64::NAN;
        }
        self.ready = true;
        let out = self.sum / self.period as f64;
        if let Some(old) = self.window.pop() {
            self.sum -= old;
        }
        out
    }
}

/// SMA(`period`) of `x`.
pub fn sma(x: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = SmaStream::new(period)?;
    Ok(x.iter().map(|&v| s.update(v)).collect())
}

/// Exponential moving average with TA-Lib's default seed: the SMA of the
/// first `period` values, then `ema = fma(k, x − ema, ema)`,
/// `k = 2 / (period + 1)` — TA-Lib 0.8 fuses this step (in EMA, MACD and
/// TRIX alike); `f64::mul_add` is correctly rounded on every target, so this
/// is bit-exact everywhere.
#[derive(Debug, Clone)]
pub struct EmaStream {
    period: usize,
    k: f64,
    seen: usize,
    value: f64,
}

impl EmaStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self::unchecked(period))
    }

    pub(crate) fn unchecked(period: usize) -> Self {
        Self { period, k: per_to_k(period), seen: 0, value: 0.0 }
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Whether the last update produced a value.
    pub(crate) fn ready(&self) -> bool {
        self.seen >= self.period
    }

    /// Feeds one value; NaN until `period` values have been seen.
    pub fn update(&mut self, x: f64) -> f64 {
        if self.seen < self.period {
            self.seen += 1;
            self.value += x;
            if self.seen < self.period {
                return f64::NAN;
            }
            self.value /= self.period as f64;
            return self.value;
        }
        self.value = self.k.mul_add(x - self.value, self.value);
        self.value
    }
}

/// EMA(`period`) of `x`.
pub fn ema(x: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = EmaStream::new(period)?;
    Ok(x.iter().map(|&v| s.update(v)).collect())
}
