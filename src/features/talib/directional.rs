//! ADX, PLUS_DI, MINUS_DI (Wilder's directional movement, TA-Lib's way).

use super::{check_lengths, check_period, is_zero, true_range, Result};

/// Wilder sums of +DM, −DM and true range: seeded with the first
/// `period − 1` bars after the first, then `sum = sum − sum / period + new`.
#[derive(Debug, Clone)]
struct DmCore {
    period: usize,
    /// Bars seen, saturating at `period`.
    bars: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    plus: f64,
    minus: f64,
    tr: f64,
}

/// One bar's raw directional movements and true range.
struct RawDm {
    plus: f64,
    minus: f64,
    tr: f64,
}

impl DmCore {
    fn new(period: usize) -> Self {
        Self { period, bars: 0, prev_high: 0.0, prev_low: 0.0, prev_close: 0.0, plus: 0.0, minus: 0.0, tr: 0.0 }
    }

    /// Feeds one bar; returns this bar's raw movements (None on the first
    /// bar) and whether the Wilder sums are complete.
    fn update(&mut self, high: f64, low: f64, close: f64) -> (Option<RawDm>, bool) {
        if self.bars == 0 {
            self.bars = 1;
            self.prev_high = high;
            self.prev_low = low;
            self.prev_close = close;
            return (None, false);
        }
        let diff_p = high - self.prev_high;
        let diff_m = self.prev_low - low;
        self.prev_high = high;
        self.prev_low = low;
        let plus = if diff_p > 0.0 && diff_p > diff_m { diff_p } else { 0.0 };
        let minus = if diff_m > 0.0 && diff_m > diff_p { diff_m } else { 0.0 };
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        let p = self.period as f64;
        let ready = self.bars >= self.period;
        if ready {
            self.plus -= self.plus / p;
            self.minus -= self.minus / p;
            if plus != 0.0 {
                self.plus += plus;
            }
            if minus != 0.0 {
                self.minus += minus;
            }
            self.tr = self.tr - (self.tr / p) + tr;
        } else {
            if plus != 0.0 {
                self.plus += plus;
            }
            if minus != 0.0 {
                self.minus += minus;
            }
            self.tr += tr;
            self.bars += 1;
        }
        (Some(RawDm { plus, minus, tr }), ready)
    }

    /// `(+DI, −DI)` from the current sums, `None` when the TR sum is zero.
    /// TA-Lib 0.8 tests that sum of non-negative ranges exactly (`> 0`), not
    /// against a fixed band.
    fn di(&self) -> Option<(f64, f64)> {
        if self.tr > 0.0 {
            Some((100.0 * (self.plus / self.tr), 100.0 * (self.minus / self.tr)))
        } else {
            None
        }
    }
}

/// Which directional index a DI stream gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectionalKind {
    /// +DI.
    Plus,
    /// −DI.
    Minus,
}

/// +DI or −DI, TA-Lib's: `100 · DM sum / TR sum`, 0 when the TR sum is zero.
/// With period 1, TA-Lib returns `DM1 / TR1` (a fraction, not a percentage);
/// so does this.
#[derive(Debug, Clone)]
struct DiStream {
    core: DmCore,
    kind: DirectionalKind,
}

impl DiStream {
    fn new(period: usize, kind: DirectionalKind) -> Result<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self { core: DmCore::new(period), kind })
    }

    fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let (raw, ready) = self.core.update(high, low, close);
        let Some(raw) = raw else {
            return f64::NAN;
        };
        if self.core.period == 1 {
            // TA-Lib's unsmoothed case: DM1 / TR1, without the factor 100.
            let dm = match self.kind {
                DirectionalKind::Plus => raw.plus,
                DirectionalKind::Minus => raw.minus,
            };
            return if dm == 0.0 || raw.tr <= 0.0 { 0.0 } else { dm / raw.tr };
        }
        if !ready {
            return f64::NAN;
        }
        match (self.core.di(), self.kind) {
            (None, _) => 0.0,
            (Some((p, _)), DirectionalKind::Plus) => p,
            (Some((_, m)), DirectionalKind::Minus) => m,
        }
    }
}

macro_rules! di_stream {
    ($name:ident, $kind:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(DiStream);

        impl $name {
            /// `period` in 1..=100000.
            pub fn new(period: usize) -> Result<Self> {
                Ok(Self(DiStream::new(period, $kind)?))
            }

            /// Number of leading NaN outputs: `period`.
            pub fn lookback(&self) -> usize {
                self.0.core.period
            }

            /// Feeds one bar.
            pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
                self.0.update(high, low, close)
            }
        }
    };
}

di_stream!(
    PlusDiStream,
    DirectionalKind::Plus,
    "+DI (TA-Lib's `TA_PLUS_DI`); 0 when the TR sum is zero; `+DM1 / TR1` (no factor 100) with period 1."
);
di_stream!(
    MinusDiStream,
    DirectionalKind::Minus,
    "−DI (TA-Lib's `TA_MINUS_DI`); 0 when the TR sum is zero; `−DM1 / TR1` (no factor 100) with period 1."
);

/// PLUS_DI(`period`) of a bar series.
pub fn plus_di(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = PlusDiStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}

/// MINUS_DI(`period`) of a bar series.
pub fn minus_di(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = MinusDiStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}

/// Average directional index, TA-Lib's: DX = `100 · |+DI − −DI| / (+DI + −DI)`;
/// the first ADX is the mean of `period` DX values, then Wilder smoothing.
/// A bar whose DX is undefined (zero TR sum or zero DI sum) leaves the ADX
/// unchanged, as in TA-Lib.
#[derive(Debug, Clone)]
pub struct AdxStream {
    core: DmCore,
    /// DX values summed so far (saturates at `period`).
    dx_count: usize,
    sum_dx: f64,
    adx: f64,
}

impl AdxStream {
    /// `period` in 2..=100000.
    pub fn new(period: usize) -> Result<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self { core: DmCore::new(period), dx_count: 0, sum_dx: 0.0, adx: 0.0 })
    }

    /// Number of leading NaN outputs: `2 · period − 1`.
    pub fn lookback(&self) -> usize {
        2 * self.core.period - 1
    }

    fn dx(&self) -> Option<f64> {
        let (plus, minus) = self.core.di()?;
        let sum = minus + plus;
        if is_zero(sum) {
            None
        } else {
            Some(100.0 * ((minus - plus).abs() / sum))
        }
    }

    /// Feeds one bar.
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let (_, ready) = self.core.update(high, low, close);
        if !ready {
            return f64::NAN;
        }
        let p = self.core.period;
        let dx = self.dx();
        if self.dx_count < p {
            if let Some(dx) = dx {
                self.sum_dx += dx;
            }
            self.dx_count += 1;
            if self.dx_count < p {
                return f64::NAN;
            }
            self.adx = self.sum_dx / p as f64;
            return self.adx;
        }
        if let Some(dx) = dx {
            let pf = p as f64;
            self.adx = ((self.adx * (pf - 1.0)) + dx) / pf;
        }
        self.adx
    }
}

/// ADX(`period`) of a bar series.
pub fn adx(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Result<Vec<f64>> {
    check_lengths(&[("high", high), ("low", low), ("close", close)])?;
    let mut s = AdxStream::new(period)?;
    Ok((0..close.len()).map(|i| s.update(high[i], low[i], close[i])).collect())
}
