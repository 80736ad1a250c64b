//! STOCH, WILLR, CCI, ULTOSC, AROONOSC, MFI.

use super::ma::SmaStream;
use super::ring::{Extreme, Ring};
use super::{check_lengths, check_period, is_zero_scaled, true_range, Result};

/// TA-Lib's fast %K: `(c − lowest) / (highest − lowest) · 100` over the
/// last `period` bars, 0 when the range is zero relative to the extremes
/// (`|h − l| ≤ 1e-14 · (|h| + |l|)`, TA-Lib 0.8's scaled dead-zone).
#[derive(Debug, Clone)]
pub(crate) struct FastK {
    period: usize,
    t: u64,
    high: Extreme,
    low: Extreme,
}

impl FastK {
    pub(crate) fn new(period: usize) -> Self {
        Self { period, t: 0, high: Extreme::new(period, true), low: Extreme::new(period, false) }
    }

    pub(crate) fn lookback(&self) -> usize {
        self.period - 1
    }

    pub(crate) fn update(&mut self, h: f64, l: f64, c: f64) -> Option<f64> {
        let t = self.t;
        self.t += 1;
        let (highest, _) = self.high.push(t, h);
        let (lowest, _) = self.low.push(t, l);
        if t < self.lookback() as u64 {
            return None;
        }
        let range = highest - lowest;
        Some(if !is_zero_scaled(range, highest.abs() + lowest.abs()) { (c - lowest) / range * 100.0 } else { 0.0 })
    }
}

/// The two STOCH series.
#[derive(Debug, Clone, PartialEq)]
pub struct Stoch {
    /// SMA(`slowk`) of fast %K.
    pub slowk: Vec<f64>,
    /// SMA(`slowd`) of `slowk`.
    pub slowd: Vec<f64>,
}

/// One bar of STOCH.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochPoint {
    /// SMA(`slowk`) of fast %K.
    pub slowk: f64,
    /// SMA(`slowd`) of `slowk`.
    pub slowd: f64,
}

/// Slow stochastic with SMA smoothing (TA-Lib's `TA_STOCH`, both matypes
/// SMA); both outputs start together.
#[derive(Debug, Clone)]
pub struct StochStream {
    k: FastK,
    slowk: SmaStream,
    slowd: SmaStream,
}

impl StochStream {
    /// `fastk`, `slowk`, `slowd` in 1..=100000.
    pub fn new(fastk: usize, slowk: usize, slowd: usize) -> Result<Self> {
        check_period("fastk_period", fastk, 1)?;
        check_period("slowk_period", slowk, 1)?;
        check_period("slowd_period", slowd, 1)?;
        Ok(Self { k: FastK::new(fastk), slowk: SmaStream::unchecked(slowk), slowd: SmaStream::unchecked(slowd) })
    }

    /// Number of leading NaN outputs: `(fastk − 1) + (slowk − 1) + (slowd − 1)`.
    pub fn lookback(&self) -> usize {
        self.k.lookback() + self.slowk.lookback() + self.slowd.lookback()
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> StochPoint {
        const NAN: StochPoint = StochPoint { slowk: f64::NAN, slowd: f64::NAN };
        let Some(k) = self.k.update(high, low, close) else {
            return NAN;
        };
        let slowk = self.slowk.update(k);
        if !self.slowk.ready() {
            return NAN;
        }
        let slowd = self.slowd.update(slowk);
        if !self.slowd.ready() {
            return NAN;
        }
        StochPoint { slowk, slowd }
    }
}

/// STOCH(`fastk`, `slowk`, SMA, `slowd`, SMA) of a bar series.
pub fn stoch(high: &[f64], low: &[f64], close: &[f64], fastk: usize, slowk: usize, slowd: usize) -> Result<Stoch> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = StochStream::new(fastk, slowk, slowd)?;
    let mut out = Stoch { slowk: Vec::with_capacity(close.len()), slowd: Vec::with_capacity(close.len()) };
    for i in 0..close.len() {
        let p = s.update(high[i], low[i], close[i]);
        out.slowk.push(p.slowk);
        out.slowd.push(p.slowd);
    }
    Ok(out)
}

/// Williams %R, TA-Lib 0.8's: `(highest − c) / (highest − lowest) · −100`
/// over the last `period` bars, clamped to [−100, 0]; 0 when the range is
/// zero relative to the extremes (scaled dead-zone).
#[derive(Debug, Clone)]
pub struct WillrStream {
    period: usize,
    t: u64,
    high: Extreme,
    low: Extreme,
}

impl WillrStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { period, t: 0, high: Extreme::new(period, true), low: Extreme::new(period, false) })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let t = self.t;
        self.t += 1;
        let (highest, _) = self.high.push(t, high);
        let (lowest, _) = self.low.push(t, low);
        if t < self.lookback() as u64 {
            return f64::NAN;
        }
        let range = highest - lowest;
        if is_zero_scaled(range, highest.abs() + lowest.abs()) {
            return 0.0;
        }
        // Clamped to [-100, 0] as in TA-Lib (NaN stays NaN).
        (((highest - close) / range) * -100.0).clamp(-100.0, 0.0)
    }
}

/// WILLR(`period`) of a bar series.
pub fn willr(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = WillrStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}

/// Commodity channel index, TA-Lib's: typical price `(h + l + c) / 3`,
/// `(tp − mean) / (0.015 · mean |tp − mean|)` over `period` bars, 0 when
/// either term is zero relative to `|mean|` (TA-Lib 0.8's scaled dead-zone). Like TA-Lib it recomputes the window's mean and mean
/// deviation each bar (O(period), constant memory), summing in TA-Lib's
/// circular-buffer order.
#[derive(Debug, Clone)]
pub struct CciStream {
    period: usize,
    buf: Box<[f64]>,
    pos: usize,
    seen: usize,
}

impl CciStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { period, buf: vec![0.0; period].into_boxed_slice(), pos: 0, seen: 0 })
    }

    /// Number of leading NaN outputs: `period − 1`.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let last = (high + low + close) / 3.0;
        self.buf[self.pos] = last;
        self.pos = (self.pos + 1) % self.period;
        if self.seen < self.period {
            self.seen += 1;
            if self.seen < self.period {
                return f64::NAN;
            }
        }
        let p = self.period as f64;
        let mut mean = 0.0;
        for &v in self.buf.iter() {
            mean += v;
        }
        mean /= p;
        let mut dev = 0.0;
        for &v in self.buf.iter() {
            dev += (v - mean).abs();
        }
        dev /= p;
        let num = last - mean;
        let scale = mean.abs();
        if !is_zero_scaled(num, scale) && !is_zero_scaled(dev, scale) {
            num / (0.015 * dev)
        } else {
            0.0
        }
    }
}

/// CCI(`period`) of a bar series.
pub fn cci(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = CciStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}

/// Ultimate oscillator (TA-Lib's `TA_ULTOSC`): the periods are sorted, the
/// shortest weighted 4, the middle 2, the longest 1; each average is
/// `Σ (c − true low) / Σ true range` over its period, skipped unless the
/// range sum is positive; output `100 · weighted sum / 7`. As in TA-Lib 0.8,
/// a run of bars with zero range and zero `c − true low` as long as a window
/// resets that window's sums to exactly 0 (dropping rounding residue).
#[derive(Debug, Clone)]
pub struct UltOscStream {
    periods: [usize; 3],
    bars: usize,
    prev_close: f64,
    a: Ring,
    b: Ring,
    a_tot: [f64; 3],
    b_tot: [f64; 3],
    null_run: usize,
}

impl UltOscStream {
    /// `period1`, `period2`, `period3` in 1..=100000, in any order.
    pub fn new(period1: usize, period2: usize, period3: usize) -> Result<Self> {
        check_period("timeperiod1", period1, 1)?;
        check_period("timeperiod2", period2, 1)?;
        check_period("timeperiod3", period3, 1)?;
        let mut periods = [period1, period2, period3];
        periods.sort_unstable();
        let longest = periods[2];
        Ok(Self {
            periods,
            bars: 0,
            prev_close: 0.0,
            a: Ring::new(longest),
            b: Ring::new(longest),
            a_tot: [0.0; 3],
            b_tot: [0.0; 3],
            null_run: 0,
        })
    }

    /// Number of leading NaN outputs: the longest period.
    pub fn lookback(&self) -> usize {
        self.periods[2]
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let t = self.bars;
        if self.bars <= self.lookback() {
            self.bars += 1;
        }
        if t == 0 {
            self.prev_close = close;
            return f64::NAN;
        }
        let true_low = if low < self.prev_close { low } else { self.prev_close };
        let a = close - true_low;
        let b = true_range(high, low, self.prev_close);
        self.prev_close = close;
        self.a.push(a);
        self.b.push(b);
        let longest = self.lookback();
        for k in 0..3 {
            // TA-Lib starts each running sum `period` bars before the first
            // output.
            if t + self.periods[k] > longest {
                self.a_tot[k] += a;
                self.b_tot[k] += b;
            }
        }
        if b == 0.0 && a == 0.0 {
            self.null_run += 1;
        } else {
            self.null_run = 0;
        }
        if t < longest {
            return f64::NAN;
        }
        for k in 0..3 {
            if self.null_run >= self.periods[k] {
                self.a_tot[k] = 0.0;
                self.b_tot[k] = 0.0;
            }
        }
        if self.null_run > longest {
            self.null_run = longest;
        }
        let mut out = 0.0;
        if self.b_tot[0] > 0.0 {
            out += 4.0 * (self.a_tot[0] / self.b_tot[0]);
        }
        if self.b_tot[1] > 0.0 {
            out += 2.0 * (self.a_tot[1] / self.b_tot[1]);
        }
        if self.b_tot[2] > 0.0 {
            out += self.a_tot[2] / self.b_tot[2];
        }
        let len = self.a.len();
        for k in 0..3 {
            let i = len - self.periods[k];
            self.a_tot[k] -= self.a.get(i);
            self.b_tot[k] -= self.b.get(i);
        }
        100.0 * (out / 7.0)
    }
}

/// ULTOSC(`period1`, `period2`, `period3`) of a bar series.
pub fn ultosc(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period1: usize,
    period2: usize,
    period3: usize,
) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = UltOscStream::new(period1, period2, period3)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}

/// Aroon oscillator: `100 / period · (bar of the highest high − bar of the
/// lowest low)` over the last `period + 1` bars, the latest bar winning a tie
/// (TA-Lib's `>=`/`<=` scans). A monotonic deque per side: O(1) amortized.
#[derive(Debug, Clone)]
pub struct AroonOscStream {
    period: usize,
    t: u64,
    high: Extreme,
    low: Extreme,
}

impl AroonOscStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { period, t: 0, high: Extreme::new(period + 1, true), low: Extreme::new(period + 1, false) })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.period
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64) -> f64 {
        let t = self.t;
        self.t += 1;
        let (_, hi) = self.high.push(t, high);
        let (_, lo) = self.low.push(t, low);
        if t < self.period as u64 {
            return f64::NAN;
        }
        let factor = 100.0 / self.period as f64;
        factor * (hi as f64 - lo as f64)
    }
}

/// AROONOSC(`period`) of highs and lows.
pub fn aroonosc(high: &[f64], low: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low)])?;
    let mut s = AroonOscStream::new(period)?;
    Ok((0..high.len()).map(|i| s.update(high[i], low[i])).collect())
}

/// Money flow index, TA-Lib 0.8's: typical price `(h + l + c) / 3` times
/// volume, positive or negative by the typical price's change (neither when
/// the change is within the scaled dead-zone of the two prices), summed over
/// `period` bars; `100 · pos / (pos + neg)` with `pos` clamped to
/// `[0, pos + neg]`, 0 when `pos + neg ≤ 0`. A whole window of bars without
/// money flow resets the sums to exactly 0.
#[derive(Debug, Clone)]
pub struct MfiStream {
    period: usize,
    started: bool,
    prev_tp: f64,
    pos: Ring,
    neg: Ring,
    pos_sum: f64,
    neg_sum: f64,
    null_run: usize,
}

impl MfiStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self {
            period,
            started: false,
            prev_tp: 0.0,
            pos: Ring::new(period),
            neg: Ring::new(period),
            pos_sum: 0.0,
            neg_sum: 0.0,
            null_run: 0,
        })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.period
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> f64 {
        let tp = (high + low + close) / 3.0;
        if !self.started {
            self.started = true;
            self.prev_tp = tp;
            return f64::NAN;
        }
        if self.pos.len() == self.period {
            self.pos_sum -= self.pos.pop().unwrap_or(0.0);
            self.neg_sum -= self.neg.pop().unwrap_or(0.0);
        }
        let diff = tp - self.prev_tp;
        let scale = tp.abs() + self.prev_tp.abs();
        self.prev_tp = tp;
        let flow = if is_zero_scaled(diff, scale) { 0.0 } else { tp * volume };
        let (pos, neg) = if diff < 0.0 { (0.0, flow) } else { (flow, 0.0) };
        self.pos.push(pos);
        self.neg.push(neg);
        self.pos_sum += pos;
        self.neg_sum += neg;
        if flow == 0.0 {
            self.null_run += 1;
        } else {
            self.null_run = 0;
        }
        if self.null_run >= self.period {
            self.null_run = self.period;
            self.pos_sum = 0.0;
            self.neg_sum = 0.0;
        }
        if self.pos.len() < self.period {
            return f64::NAN;
        }
        let total = self.pos_sum + self.neg_sum;
        let pos = if self.pos_sum < 0.0 {
            0.0
        } else if self.pos_sum > total {
            total
        } else {
            self.pos_sum
        };
        if total <= 0.0 {
            0.0
        } else {
            100.0 * (pos / total)
        }
    }
}

/// MFI(`period`) of a bar series with volume.
pub fn mfi(high: &[f64], low: &[f64], close: &[f64], volume: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close), ("volume", volume)])?;
    let mut s = MfiStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i], volume[i])).collect())
}
