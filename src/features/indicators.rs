//! Indicator features (indices 75–111): TA-Lib over completed candles, then
//! the transforms of docs/features.md.
//!
//! Each candle yields the [`NUM_RAW`] raw TA-Lib outputs in the order of
//! [`RAW`]; [`transform`] turns them into the 37 features. The streaming
//! path gets the raw values from the `talib` streams ([`IndicatorStreams`]);
//! the batch path from the `talib` batch functions over the whole candle
//! series ([`raw_batch`]). TA-Lib's batch functions are the fold of their
//! streams, so both give the same raw bits, and the same [`transform`]
//! makes the same features, as long as both start from the same first
//! candle of the segment (they do: the segment's first completed candle).
//!
//! Transforms where docs/features.md leaves a detail open: `obv_flow_14` is
//! undefined until `OBV_{n−14}` exists (15 candles); `adosc`'s "mean volume
//! over the last 10 candles" is undefined before 10 candles; `bb_percent_b`
//! is 0.5 when `upper = lower` exactly.

use super::book_features::bps;
use super::talib::{self as ta, Result as TaResult};

/// Raw TA-Lib outputs per candle.
pub const NUM_RAW: usize = 37;

/// The raw outputs, in order.
pub const RAW: [&str; NUM_RAW] = [
    "RSI6",
    "RSI14",
    "RSI24",
    "MACD",
    "MACD.signal",
    "MACD.hist",
    "BB.upper",
    "BB.middle",
    "BB.lower",
    "NATR14",
    "ADX14",
    "PLUS_DI14",
    "MINUS_DI14",
    "STOCH.slowk",
    "STOCH.slowd",
    "CCI20",
    "WILLR14",
    "MFI14",
    "OBV",
    "ROC10",
    "ROC30",
    "MOM10",
    "EMA9",
    "EMA21",
    "EMA50",
    "SMA20",
    "SMA50",
    "SMA200",
    "TRIX15",
    "ULTOSC",
    "AROONOSC14",
    "CMO14",
    "PPO",
    "STOCHRSI.fastk",
    "ADOSC",
    "LINEARREG_SLOPE14",
    "STDDEV20",
];

/// Extra inputs of [`transform`] that come from the candle window.
#[derive(Debug, Clone, Copy)]
pub struct TransformInputs {
    /// The last close.
    pub close: f64,
    /// `OBV` 14 candles ago (NaN if none).
    pub obv_14_ago: f64,
    /// Σ volume over the last 14 candles (NaN if fewer).
    pub volume_sum_14: f64,
    /// Mean volume over the last 10 candles (NaN if fewer).
    pub volume_mean_10: f64,
}

impl TransformInputs {
    /// From the volumes of the window (current candle last).
    pub fn new(close: f64, obv_14_ago: f64, volumes: &[f64]) -> TransformInputs {
        let sum_last = |k: usize| {
            if volumes.len() >= k {
                volumes[volumes.len() - k..].iter().sum::<f64>()
            } else {
                f64::NAN
            }
        };
        TransformInputs { close, obv_14_ago, volume_sum_14: sum_last(14), volume_mean_10: sum_last(10) / 10.0 }
    }
}

/// Fills `out[0..37]` (features 75–111) from a candle's raw outputs.
pub fn transform(raw: &[f64; NUM_RAW], x: &TransformInputs, out: &mut [f64]) {
    let c = x.close;
    let ratio = |v: f64| bps(v / c - 1.0);
    let norm = |v: f64| bps(v / c);
    out[0] = raw[0];
    out[1] = raw[1];
    out[2] = raw[2];
    out[3] = norm(raw[3]);
    out[4] = norm(raw[4]);
    out[5] = norm(raw[5]);
    let (up, mid, lo) = (raw[6], raw[7], raw[8]);
    out[6] = if up == lo { 0.5 } else { (c - lo) / (up - lo) };
    out[7] = (up - lo) / mid;
    // BBANDS undefined: both NaN (the `up == lo` test is false for NaN).
    if up.is_nan() {
        out[6] = f64::NAN;
    }
    out[8] = raw[9];
    out[9] = raw[10];
    out[10] = raw[11];
    out[11] = raw[12];
    out[12] = raw[13];
    out[13] = raw[14];
    out[14] = raw[15];
    out[15] = raw[16];
    out[16] = raw[17];
    out[17] = if x.volume_sum_14.is_nan() || x.obv_14_ago.is_nan() {
        f64::NAN
    } else if x.volume_sum_14 == 0.0 {
        0.0
    } else {
        (raw[18] - x.obv_14_ago) / x.volume_sum_14
    };
    out[18] = raw[19];
    out[19] = raw[20];
    out[20] = norm(raw[21]);
    out[21] = ratio(raw[22]);
    out[22] = ratio(raw[23]);
    out[23] = ratio(raw[24]);
    out[24] = ratio(raw[25]);
    out[25] = ratio(raw[26]);
    out[26] = ratio(raw[27]);
    out[27] = bps(raw[22] / raw[23] - 1.0);
    out[28] = raw[28];
    out[29] = raw[29];
    out[30] = raw[30];
    out[31] = raw[31];
    out[32] = raw[32];
    out[33] = raw[33];
    out[34] = if x.volume_mean_10.is_nan() || raw[34].is_nan() {
        f64::NAN
    } else if x.volume_mean_10 == 0.0 {
        0.0
    } else {
        raw[34] / x.volume_mean_10
    };
    out[35] = norm(raw[35]);
    out[36] = norm(raw[36]);
}

/// The TA-Lib streams of every indicator, fed one candle at a time.
#[derive(Debug, Clone)]
pub struct IndicatorStreams {
    rsi6: ta::RsiStream,
    rsi14: ta::RsiStream,
    rsi24: ta::RsiStream,
    macd: ta::MacdStream,
    bb: ta::BbandsStream,
    natr: ta::NatrStream,
    adx: ta::AdxStream,
    pdi: ta::PlusDiStream,
    mdi: ta::MinusDiStream,
    stoch: ta::StochStream,
    cci: ta::CciStream,
    willr: ta::WillrStream,
    mfi: ta::MfiStream,
    obv: ta::ObvStream,
    roc10: ta::RocStream,
    roc30: ta::RocStream,
    mom10: ta::MomStream,
    ema9: ta::EmaStream,
    ema21: ta::EmaStream,
    ema50: ta::EmaStream,
    sma20: ta::SmaStream,
    sma50: ta::SmaStream,
    sma200: ta::SmaStream,
    trix: ta::TrixStream,
    ultosc: ta::UltOscStream,
    aroonosc: ta::AroonOscStream,
    cmo: ta::CmoStream,
    ppo: ta::PpoStream,
    stochrsi: ta::StochRsiStream,
    adosc: ta::AdOscStream,
    linreg: ta::LinearRegSlopeStream,
    stddev: ta::StddevStream,
}

impl IndicatorStreams {
    pub fn new() -> IndicatorStreams {
        Self::try_new().expect("the feature table's TA-Lib parameters are valid")
    }

    fn try_new() -> TaResult<IndicatorStreams> {
        Ok(IndicatorStreams {
            rsi6: ta::RsiStream::new(6)?,
            rsi14: ta::RsiStream::new(14)?,
            rsi24: ta::RsiStream::new(24)?,
            macd: ta::MacdStream::new(12, 26, 9)?,
            bb: ta::BbandsStream::new(20, 2.0, 2.0)?,
            natr: ta::NatrStream::new(14)?,
            adx: ta::AdxStream::new(14)?,
            pdi: ta::PlusDiStream::new(14)?,
            mdi: ta::MinusDiStream::new(14)?,
            stoch: ta::StochStream::new(14, 3, 3)?,
            cci: ta::CciStream::new(20)?,
            willr: ta::WillrStream::new(14)?,
            mfi: ta::MfiStream::new(14)?,
            obv: ta::ObvStream::new(),
            roc10: ta::RocStream::new(10)?,
            roc30: ta::RocStream::new(30)?,
            mom10: ta::MomStream::new(10)?,
            ema9: ta::EmaStream::new(9)?,
            ema21: ta::EmaStream::new(21)?,
            ema50: ta::EmaStream::new(50)?,
            sma20: ta::SmaStream::new(20)?,
            sma50: ta::SmaStream::new(50)?,
            sma200: ta::SmaStream::new(200)?,
            trix: ta::TrixStream::new(15)?,
            ultosc: ta::UltOscStream::new(7, 14, 28)?,
            aroonosc: ta::AroonOscStream::new(14)?,
            cmo: ta::CmoStream::new(14)?,
            ppo: ta::PpoStream::new(12, 26)?,
            stochrsi: ta::StochRsiStream::new(14, 5, 3)?,
            adosc: ta::AdOscStream::new(3, 10)?,
            linreg: ta::LinearRegSlopeStream::new(14)?,
            stddev: ta::StddevStream::new(20, 1.0)?,
        })
    }

    /// Feeds one candle; returns its raw outputs.
    pub fn update(&mut self, h: f64, l: f64, c: f64, v: f64) -> [f64; NUM_RAW] {
        let m = self.macd.update(c);
        let bb = self.bb.update(c);
        let st = self.stoch.update(h, l, c);
        [
            self.rsi6.update(c),
            self.rsi14.update(c),
            self.rsi24.update(c),
            m.macd,
            m.signal,
            m.hist,
            bb.upper,
            bb.middle,
            bb.lower,
            self.natr.update(h, l, c),
            self.adx.update(h, l, c),
            self.pdi.update(h, l, c),
            self.mdi.update(h, l, c),
            st.slowk,
            st.slowd,
            self.cci.update(h, l, c),
            self.willr.update(h, l, c),
            self.mfi.update(h, l, c, v),
            self.obv.update(c, v),
            self.roc10.update(c),
            self.roc30.update(c),
            self.mom10.update(c),
            self.ema9.update(c),
            self.ema21.update(c),
            self.ema50.update(c),
            self.sma20.update(c),
            self.sma50.update(c),
            self.sma200.update(c),
            self.trix.update(c),
            self.ultosc.update(h, l, c),
            self.aroonosc.update(h, l),
            self.cmo.update(c),
            self.ppo.update(c),
            self.stochrsi.update(c).fastk,
            self.adosc.update(h, l, c, v),
            self.linreg.update(c),
            self.stddev.update(c),
        ]
    }
}

impl Default for IndicatorStreams {
    fn default() -> Self {
        Self::new()
    }
}

/// The raw outputs of every indicator over a whole candle series, by the
/// `talib` batch functions: `out[j][n]` is raw output `j` at candle `n`.
pub fn raw_batch(high: &[f64], low: &[f64], close: &[f64], volume: &[f64]) -> TaResult<Vec<Vec<f64>>> {
    let (h, l, c, v) = (high, low, close, volume);
    let m = ta::macd(c, 12, 26, 9)?;
    let bb = ta::bbands(c, 20, 2.0, 2.0)?;
    let st = ta::stoch(h, l, c, 14, 3, 3)?;
    Ok(vec![
        ta::rsi(c, 6)?,
        ta::rsi(c, 14)?,
        ta::rsi(c, 24)?,
        m.macd,
        m.signal,
        m.hist,
        bb.upper,
        bb.middle,
        bb.lower,
        ta::natr(h, l, c, 14)?,
        ta::adx(h, l, c, 14)?,
        ta::plus_di(h, l, c, 14)?,
        ta::minus_di(h, l, c, 14)?,
        st.slowk,
        st.slowd,
        ta::cci(h, l, c, 20)?,
        ta::willr(h, l, c, 14)?,
        ta::mfi(h, l, c, v, 14)?,
        ta::obv(c, v)?,
        ta::roc(c, 10)?,
        ta::roc(c, 30)?,
        ta::mom(c, 10)?,
        ta::ema(c, 9)?,
        ta::ema(c, 21)?,
        ta::ema(c, 50)?,
        ta::sma(c, 20)?,
        ta::sma(c, 50)?,
        ta::sma(c, 200)?,
        ta::trix(c, 15)?,
        ta::ultosc(h, l, c, 7, 14, 28)?,
        ta::aroonosc(h, l, 14)?,
        ta::cmo(c, 14)?,
        ta::ppo(c, 12, 26)?,
        ta::stochrsi(c, 14, 5, 3)?.fastk,
        ta::adosc(h, l, c, v, 3, 10)?,
        ta::linearreg_slope(c, 14)?,
        ta::stddev(c, 20, 1.0)?,
    ])
}
