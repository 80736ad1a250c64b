//! LINEARREG_SLOPE.

use super::ring::Ring;
use super::{check_period, Result};

/// Slope of the least-squares line through the last `period` values (x in
/// bars), computed as TA-Lib does: `Σy` and `Σxy` over the window each bar
/// (O(period), constant memory), with its closed forms for `Σx`, `Σx²`.
#[derive(Debug, Clone)]
pub struct LinearRegSlopeStream {
    period: usize,
    window: Ring,
    sum_x: f64,
    divisor: f64,
}

impl LinearRegSlopeStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        let p = period as f64;
        let sum_x = p * (p - 1.0) * 0.5;
        // Exact in integers (p ≤ 100000 keeps it far below 2^53).
        let sum_x_sqr = (period as u64 * (period as u64 - 1) * (2 * period as u64 - 1) / 6) as f64;
        Ok(Self {
            period,
            window: Ring::new(period),
            sum_x,
            divisor: sum_x * sum_x - p * sum_x_sqr,
        })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Feeds one value.
    pub fn update(&mut self, x: f64) -> f64 {
        self.window.push(x);
        if self.window.len() < self.period {
            return f64::NAN;
        }
        let mut sum_xy = 0.0;
        let mut sum_y = 0.0;
        // Oldest first; TA-Lib's x runs from period − 1 (oldest) down to 0.
        for j in 0..self.period {
            let y = self.window.get(j);
            sum_y += y;
            sum_xy += (self.period - 1 - j) as f64 * y;
        }
        (self.period as f64 * sum_xy - self.sum_x * sum_y) / self.divisor
    }
}

/// LINEARREG_SLOPE(`period`) of `x`.
pub fn linearreg_slope(x: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = LinearRegSlopeStream::new(period)?;
    Ok(x.iter().map(|&v| s.update(v)).collect())
}
