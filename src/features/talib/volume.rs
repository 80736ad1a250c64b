//! OBV, ADOSC.

use super::{check_lengths, check_period, per_to_k, Result};

/// On-balance volume, TA-Lib's: starts at the first bar's volume, then adds
/// (subtracts) the volume of each bar whose close rose (fell).
#[derive(Debug, Clone)]
pub struct ObvStream {
    started: bool,
    prev_close: f64,
    obv: f64,
}

impl ObvStream {
    /// OBV has no parameter.
    pub fn new() -> Self {
        Self { started: false, prev_close: 0.0, obv: 0.0 }
    }

    /// Number of leading NaN outputs: 0.
    pub fn lookback(&self) -> usize {
        0
    }

    /// Feeds one bar.
    pub fn update(&mut self, close: f64, volume: f64) -> f64 {
        if !self.started {
            self.started = true;
            self.prev_close = close;
            self.obv = volume;
            return self.obv;
        }
        if close > self.prev_close {
            self.obv += volume;
        } else if close < self.prev_close {
            self.obv -= volume;
        }
        self.prev_close = close;
        self.obv
    }
}

impl Default for ObvStream {
    fn default() -> Self {
        Self::new()
    }
}

/// OBV of closes and volumes.
pub fn obv(close: &[f64], volume: &[f64]) -> Result<Vec<f64>> {
    check_lengths(&[("close", close), ("volume", volume)])?;
    let mut s = ObvStream::new();
    Ok((0..close.len()).map(|i| s.update(close[i], volume[i])).collect())
}

/// Chaikin A/D oscillator, TA-Lib's: the A/D line (a bar with `h = l` adds
/// nothing) through a fast and a slow EMA, both seeded with the first A/D
/// value (not an SMA); output `fast − slow` from bar `max(fast, slow) − 1`.
/// The periods are not swapped (TA-Lib does not).
#[derive(Debug, Clone)]
pub struct AdOscStream {
    lookback: usize,
    bars: usize,
    ad: f64,
    fast_k: f64,
    fast_1mk: f64,
    slow_k: f64,
    slow_1mk: f64,
    fast: f64,
    slow: f64,
}

impl AdOscStream {
    /// `fast`, `slow` in 2..=100000.
    pub fn new(fast: usize, slow: usize) -> Result<Self> {
        check_period("fastperiod", fast, 2)?;
        check_period("slowperiod", slow, 2)?;
        let fast_k = per_to_k(fast);
        let slow_k = per_to_k(slow);
        Ok(Self {
            lookback: fast.max(slow) - 1,
            bars: 0,
            ad: 0.0,
            fast_k,
            fast_1mk: 1.0 - fast_k,
            slow_k,
            slow_1mk: 1.0 - slow_k,
            fast: 0.0,
            slow: 0.0,
        })
    }

    /// Number of leading NaN outputs: `max(fast, slow) − 1`.
    pub fn lookback(&self) -> usize {
        self.lookback
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> f64 {
        let range = high - low;
        if range > 0.0 {
            self.ad += (((close - low) - (high - close)) / range) * volume;
        }
        if self.bars == 0 {
            self.fast = self.ad;
            self.slow = self.ad;
        } else {
            // TA-Lib 0.8 fuses this step: fma(1 − k, ema, k · ad).
            self.fast = self.fast_1mk.mul_add(self.fast, self.fast_k * self.ad);
            self.slow = self.slow_1mk.mul_add(self.slow, self.slow_k * self.ad);
        }
        if self.bars < self.lookback {
            self.bars += 1;
            return f64::NAN;
        }
        self.bars = self.lookback + 1;
        self.fast - self.slow
    }
}

/// ADOSC(`fast`, `slow`) of a bar series with volume.
pub fn adosc(high: &[f64], low: &[f64], close: &[f64], volume: &[f64], fast: usize, slow: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close), ("volume", volume)])?;
    let mut s = AdOscStream::new(fast, slow)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i], volume[i])).collect())
}
