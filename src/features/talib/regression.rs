//! LINEARREG_SLOPE.

use super::ring::Ring;
use super::{check_period, Result};

/// Slope of the least-squares line through the last `period` values (x in
/// bars), computed as TA-Lib 0.8 does: `m = (n·Σxy − Σx·Σy) / (Σx² − n·Σx²ᵢ)`
/// with x the age of a value (oldest `period − 1`, newest 0), the closed
/// forms for `Σx` and `Σx²`, and running sums for `Σy` and `Σxy` that slide
/// in O(1) (every retained value ages by one: `Σxy += Σy − n·y_out`). Like
/// TA-Lib it rebuilds both sums from the window (O(period)) every
/// `32 · period` bars, and on the bar a departing value outweighs 100× the
/// window's `Σ|y|`.
#[derive(Debug, Clone)]
pub struct LinearRegSlopeStream {
    period: usize,
    window: Ring,
    sum_x: f64,
    divisor: f64,
    sum_y: f64,
    sum_xy: f64,
    sum_abs: f64,
    primed: bool,
    until_rebuild: i64,
}

impl LinearRegSlopeStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        let p = period as f64;
        let sum_x = p * (p - 1.0) * 0.5;
        let sum_x_sqr = p * (p - 1.0) * (2.0 * p - 1.0) / 6.0;
        Ok(Self {
            period,
            window: Ring::new(period),
            sum_x,
            divisor: sum_x * sum_x - p * sum_x_sqr,
            sum_y: 0.0,
            sum_xy: 0.0,
            sum_abs: 0.0,
            primed: false,
            until_rebuild: 0,
        })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Both sums from the window, oldest first, weights counting down.
    fn rebuild(&mut self) {
        let (a, b) = self.window.as_slices();
        let (mut sy, mut sxy, mut sabs) = (0.0, 0.0, 0.0);
        let mut w = (self.period - 1) as f64;
        for &y in a.iter().chain(b) {
            sy += y;
            sxy += w * y;
            sabs += y.abs();
            w -= 1.0;
        }
        self.sum_y = sy;
        self.sum_xy = sxy;
        self.sum_abs = sabs;
    }

    /// Feeds one value.
    pub fn update(&mut self, x: f64) -> f64 {
        let departed = self.window.push(x);
        if self.window.len() < self.period {
            return f64::NAN;
        }
        let p = self.period as f64;
        match departed {
            Some(out) if self.primed => {
                let weighted = p * out;
                self.sum_xy = self.sum_xy + self.sum_y - weighted;
                self.sum_y = self.sum_y - out + x;
                self.sum_abs = self.sum_abs - out.abs() + x.abs();
                self.until_rebuild -= 1;
                if self.until_rebuild <= 0 || weighted.abs() > 100.0 * self.sum_abs {
                    self.until_rebuild = 32 * self.period as i64;
                    self.rebuild();
                }
            }
            _ => {
                self.primed = true;
                self.until_rebuild = 32 * self.period as i64;
                self.rebuild();
            }
        }
        (p * self.sum_xy - self.sum_x * self.sum_y) / self.divisor
    }
}

/// LINEARREG_SLOPE(`period`) of `x`.
pub fn linearreg_slope(x: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = LinearRegSlopeStream::new(period)?;
    Ok(x.iter().map(|&v| s.update(v)).collect())
}
