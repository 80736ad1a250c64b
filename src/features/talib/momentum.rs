//! RSI, CMO, MOM, ROC, MACD, PPO, TRIX, STOCHRSI.

use super::ma::{EmaStream, SmaStream};
use super::oscillators::FastK;
use super::ring::Ring;
use super::{check_period, is_zero, Result};

/// Wilder-smoothed average gain and loss, as TA-Lib 0.8's RSI and CMO keep
/// them: the first `period` differences are averaged, then
/// `avg = (avg · (period − 1) + new) / period`. The two functions round
/// differently and each is reproduced bit for bit: CMO divides by the period
/// and accumulates gains and losses by branch; RSI multiplies by
/// `1 / period` and takes the loss as `max(d, 0) − d`.
#[derive(Debug, Clone)]
struct GainLoss {
    period: usize,
    /// Values seen, saturating at `period + 1`.
    seen: usize,
    prev: f64,
    gain: f64,
    loss: f64,
    /// RSI's arithmetic (`· (1/period)`); CMO's (`/ period`) otherwise.
    rsi: bool,
    inv: f64,
}

impl GainLoss {
    fn new(period: usize, rsi: bool) -> Self {
        Self { period, seen: 0, prev: 0.0, gain: 0.0, loss: 0.0, rsi, inv: 1.0 / period as f64 }
    }

    fn ready(&self) -> bool {
        self.seen > self.period
    }

    /// Feeds one value; `Some((gain, loss))` once `period` differences are in.
    fn update(&mut self, x: f64) -> Option<(f64, f64)> {
        if self.seen == 0 {
            self.prev = x;
            self.seen = 1;
            return None;
        }
        let diff = x - self.prev;
        self.prev = x;
        let p = self.period as f64;
        let up = if diff > 0.0 { diff } else { 0.0 };
        let seeding = self.seen <= self.period;
        if seeding {
            if self.rsi {
                self.gain += up;
                self.loss += up - diff;
            } else if diff < 0.0 {
                self.loss -= diff;
            } else {
                self.gain += diff;
            }
            self.seen += 1;
            if self.seen <= self.period {
                return None;
            }
            if self.rsi {
                self.loss *= self.inv;
                self.gain *= self.inv;
            } else {
                self.loss /= p;
                self.gain /= p;
            }
        } else if self.rsi {
            self.gain = (self.gain * (p - 1.0) + up) * self.inv;
            self.loss = (self.loss * (p - 1.0) + (up - diff)) * self.inv;
        } else {
            self.loss *= p - 1.0;
            self.gain *= p - 1.0;
            if diff < 0.0 {
                self.loss -= diff;
            } else {
                self.gain += diff;
            }
            self.loss /= p;
            self.gain /= p;
        }
        Some((self.gain, self.loss))
    }
}

/// RSI (Wilder), TA-Lib's: `100 · gain / (gain + loss)`, 0 when
/// `gain + loss` is zero (a flat series gives 0).
#[derive(Debug, Clone)]
pub struct RsiStream {
    core: GainLoss,
}

impl RsiStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { core: GainLoss::new(period, true) })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.core.period
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.core.update(x) {
            None => f64::NAN,
            Some((gain, loss)) => {
                // Sums of non-negative magnitudes: zero only when every
                // change was exactly zero; TA-Lib 0.8 tests it exactly.
                let total = gain + loss;
                if total > 0.0 {
                    100.0 * (gain / total)
                } else {
                    0.0
                }
            }
        }
    }
}

/// RSI(`period`) of `close`.
pub fn rsi(close: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = RsiStream::new(period)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// Chande momentum oscillator, TA-Lib's: Wilder-smoothed gains and losses
/// like RSI, `100 · (gain − loss) / (gain + loss)`, 0 when the sum is zero.
#[derive(Debug, Clone)]
pub struct CmoStream {
    core: GainLoss,
}

impl CmoStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { core: GainLoss::new(period, false) })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.core.period
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.core.update(x) {
            None => f64::NAN,
            Some((gain, loss)) => {
                // Sums of non-negative magnitudes: zero only when every
                // change was exactly zero; TA-Lib 0.8 tests it exactly.
                let total = gain + loss;
                if total > 0.0 {
                    100.0 * ((gain - loss) / total)
                } else {
                    0.0
                }
            }
        }
    }
}

/// CMO(`period`) of `close`.
pub fn cmo(close: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = CmoStream::new(period)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// Momentum: `x − x[period ago]`.
#[derive(Debug, Clone)]
pub struct MomStream {
    period: usize,
    past: Ring,
}

impl MomStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self { period, past: Ring::new(period) })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.period
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.past.push(x) {
            Some(old) => x - old,
            None => f64::NAN,
        }
    }
}

/// MOM(`period`) of `close`.
pub fn mom(close: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = MomStream::new(period)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// Rate of change in percent: `(x / x[period ago] − 1) · 100`, 0 when the
/// old value is 0.
#[derive(Debug, Clone)]
pub struct RocStream {
    period: usize,
    past: Ring,
}

impl RocStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self { period, past: Ring::new(period) })
    }

    /// Number of leading NaN outputs: `period`.
    pub fn lookback(&self) -> usize {
        self.period
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        match self.past.push(x) {
            Some(old) => roc_of(x, old),
            None => f64::NAN,
        }
    }
}

#[inline]
fn roc_of(x: f64, old: f64) -> f64 {
    if old != 0.0 {
        ((x / old) - 1.0) * 100.0
    } else {
        0.0
    }
}

/// ROC(`period`) of `close`.
pub fn roc(close: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = RocStream::new(period)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// The three MACD series.
#[derive(Debug, Clone, PartialEq)]
pub struct Macd {
    /// Fast EMA − slow EMA.
    pub macd: Vec<f64>,
    /// EMA(`signal`) of `macd`.
    pub signal: Vec<f64>,
    /// `macd − signal`.
    pub hist: Vec<f64>,
}

/// One bar of MACD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdPoint {
    /// Fast EMA − slow EMA.
    pub macd: f64,
    /// EMA(`signal`) of `macd`.
    pub signal: f64,
    /// `macd − signal`.
    pub hist: f64,
}

impl MacdPoint {
    const NAN: Self = Self { macd: f64::NAN, signal: f64::NAN, hist: f64::NAN };
}

/// MACD with EMAs (TA-Lib's `TA_MACD`): the periods are swapped when
/// `slow < fast`; the fast EMA is seeded on the `fast` values that end on the
/// slow EMA's first bar, so both lines start together; all three outputs
/// start once the signal EMA has its `signal` values.
#[derive(Debug, Clone)]
pub struct MacdStream {
    skip_fast: usize,
    seen: usize,
    fast: EmaStream,
    slow: EmaStream,
    signal: EmaStream,
}

impl MacdStream {
    /// `fast`, `slow` in 2..=100000, `signal` in 1..=100000.
    pub fn new(fast: usize, slow: usize, signal: usize) -> Result<Self> {
        check_period("fastperiod", fast, 2)?;
        check_period("slowperiod", slow, 2)?;
        check_period("signalperiod", signal, 1)?;
        let (fast, slow) = if slow < fast { (slow, fast) } else { (fast, slow) };
        Ok(Self {
            skip_fast: slow - fast,
            seen: 0,
            fast: EmaStream::unchecked(fast),
            slow: EmaStream::unchecked(slow),
            signal: EmaStream::unchecked(signal),
        })
    }

    /// Number of leading NaN outputs: `(slow − 1) + (signal − 1)`.
    pub fn lookback(&self) -> usize {
        self.slow.lookback() + self.signal.lookback()
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> MacdPoint {
        let slow = self.slow.update(x);
        if self.seen < self.skip_fast {
            self.seen += 1;
            return MacdPoint::NAN;
        }
        let fast = self.fast.update(x);
        // The fast EMA was started late so that it is ready on this same bar.
        if !self.slow.ready() {
            return MacdPoint::NAN;
        }
        let macd = fast - slow;
        let signal = self.signal.update(macd);
        if !self.signal.ready() {
            return MacdPoint::NAN;
        }
        MacdPoint { macd, signal, hist: macd - signal }
    }
}

/// MACD(`fast`, `slow`, `signal`) of `close`.
pub fn macd(close: &[f64], fast: usize, slow: usize, signal: usize) -> Result<Macd> {
    let mut s = MacdStream::new(fast, slow, signal)?;
    let mut out = Macd {
        macd: Vec::with_capacity(close.len()),
        signal: Vec::with_capacity(close.len()),
        hist: Vec::with_capacity(close.len()),
    };
    for &x in close {
        let p = s.update(x);
        out.macd.push(p.macd);
        out.signal.push(p.signal);
        out.hist.push(p.hist);
    }
    Ok(out)
}

/// Percentage price oscillator with SMAs (TA-Lib's `TA_PPO`, matype SMA):
/// `(fast − slow) / slow · 100`, 0 when the slow SMA is zero; periods are
/// swapped when `slow < fast`. TA-Lib 0.8 runs the fast SMA's running sum
/// from the first bar (unlike MACD's late-seeded fast EMA), and so does this.
#[derive(Debug, Clone)]
pub struct PpoStream {
    fast: SmaStream,
    slow: SmaStream,
}

impl PpoStream {
    /// `fast`, `slow` in 2..=100000.
    pub fn new(fast: usize, slow: usize) -> Result<Self> {
        check_period("fastperiod", fast, 2)?;
        check_period("slowperiod", slow, 2)?;
        let (fast, slow) = if slow < fast { (slow, fast) } else { (fast, slow) };
        Ok(Self { fast: SmaStream::unchecked(fast), slow: SmaStream::unchecked(slow) })
    }

    /// Number of leading NaN outputs: `max(fast, slow) − 1`.
    pub fn lookback(&self) -> usize {
        self.slow.lookback()
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        let slow = self.slow.update(x);
        let fast = self.fast.update(x);
        if !self.slow.ready() {
            return f64::NAN;
        }
        if !is_zero(slow) {
            ((fast - slow) / slow) * 100.0
        } else {
            0.0
        }
    }
}

/// PPO(`fast`, `slow`, SMA) of `close`.
pub fn ppo(close: &[f64], fast: usize, slow: usize) -> Result<Vec<f64>> {
    let mut s = PpoStream::new(fast, slow)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// TRIX: the 1-bar rate of change (percent) of a triple EMA, each EMA seeded
/// by the SMA of its first `period` inputs.
#[derive(Debug, Clone)]
pub struct TrixStream {
    e1: EmaStream,
    e2: EmaStream,
    e3: EmaStream,
    prev: f64,
    has_prev: bool,
}

impl TrixStream {
    /// `period` in 1..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            e1: EmaStream::unchecked(period),
            e2: EmaStream::unchecked(period),
            e3: EmaStream::unchecked(period),
            prev: 0.0,
            has_prev: false,
        })
    }

    /// Number of leading NaN outputs: `3 · (period − 1) + 1`.
    pub fn lookback(&self) -> usize {
        3 * self.e1.lookback() + 1
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> f64 {
        let a = self.e1.update(x);
        if !self.e1.ready() {
            return f64::NAN;
        }
        let b = self.e2.update(a);
        if !self.e2.ready() {
            return f64::NAN;
        }
        let c = self.e3.update(b);
        if !self.e3.ready() {
            return f64::NAN;
        }
        if !self.has_prev {
            self.has_prev = true;
            self.prev = c;
            return f64::NAN;
        }
        let out = roc_of(c, self.prev);
        self.prev = c;
        out
    }
}

/// TRIX(`period`) of `close`.
pub fn trix(close: &[f64], period: usize) -> Result<Vec<f64>> {
    let mut s = TrixStream::new(period)?;
    Ok(close.iter().map(|&v| s.update(v)).collect())
}

/// The two STOCHRSI series.
#[derive(Debug, Clone, PartialEq)]
pub struct StochRsi {
    /// Fast %K of RSI.
    pub fastk: Vec<f64>,
    /// SMA(`fastd`) of `fastk`.
    pub fastd: Vec<f64>,
}

/// One bar of STOCHRSI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochRsiPoint {
    /// Fast %K of RSI.
    pub fastk: f64,
    /// SMA(`fastd`) of `fastk`.
    pub fastd: f64,
}

/// Stochastic RSI (TA-Lib's `TA_STOCHRSI` with an SMA fast %D): STOCHF over
/// RSI(`period`) with `fastk` and `fastd`; both outputs start together.
#[derive(Debug, Clone)]
pub struct StochRsiStream {
    rsi: RsiStream,
    k: FastK,
    d: SmaStream,
}

impl StochRsiStream {
    /// `period` in 2..=100000, `fastk`, `fastd` in 1..=100000.
    pub fn new(period: usize, fastk: usize, fastd: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        check_period("fastk_period", fastk, 1)?;
        check_period("fastd_period", fastd, 1)?;
        Ok(Self { rsi: RsiStream::new(period)?, k: FastK::new(fastk), d: SmaStream::unchecked(fastd) })
    }

    /// Number of leading NaN outputs: `period + (fastk − 1) + (fastd − 1)`.
    pub fn lookback(&self) -> usize {
        self.rsi.lookback() + self.k.lookback() + self.d.lookback()
    }

    /// Feeds one close.
    pub fn update(&mut self, x: f64) -> StochRsiPoint {
        const NAN: StochRsiPoint = StochRsiPoint { fastk: f64::NAN, fastd: f64::NAN };
        let r = self.rsi.update(x);
        if !self.rsi.core.ready() {
            return NAN;
        }
        let Some(k) = self.k.update(r, r, r) else {
            return NAN;
        };
        let d = self.d.update(k);
        if !self.d.ready() {
            return NAN;
        }
        StochRsiPoint { fastk: k, fastd: d }
    }
}

/// STOCHRSI(`period`, `fastk`, `fastd`, SMA) of `close`.
pub fn stochrsi(close: &[f64], period: usize, fastk: usize, fastd: usize) -> Result<StochRsi> {
    let mut s = StochRsiStream::new(period, fastk, fastd)?;
    let mut out = StochRsi { fastk: Vec::with_capacity(close.len()), fastd: Vec::with_capacity(close.len()) };
    for &x in close {
        let p = s.update(x);
        out.fastk.push(p.fastk);
        out.fastd.push(p.fastd);
    }
    Ok(out)
}
