//! The streaming path: [`FeatureEngine`], fed one snapshot or trade at a
//! time, in exchange-time order.
//!
//! Work per input is O(1) amortized and memory is constant: the book state
//! keeps the previous top and 10 OFI values; the candle history keeps the
//! last [`HISTORY`] candles in [`Sliding`] arrays; the indicators are the
//! `talib` streams. The candle and indicator features (50–111) change only
//! when a candle completes, so they are computed then and cached; a tick
//! computes the 50 book features and copies the cache.
//!
//! The recursive indicators (EMA, Wilder smoothing, OBV, ADOSC, …) depend
//! on where they started: a live engine reproduces the training table's
//! values only when it is fed from the same first input as the batch run
//! (or from far enough back that the seeds have washed out). To serve
//! with the training table's exact numbers, replay the stored history into
//! the engine before switching it to the live feed.

use crate::market::{Snapshot, Trade};

use super::book_features::BookState;
use super::candle_features::{candle_features, ret_1, CandleWindow, Sliding, HISTORY};
use super::candles::{Accepted, Candle, Ingest, InputStats, Reject};
use super::indicators::{transform, IndicatorStreams, TransformInputs};
use super::names::{CANDLE_START, INDICATOR_START, NUM_BOOK, NUM_FEATURES};

/// Completed candles (of the current segment) needed before a vector is
/// emitted: the longest lookback, SMA 200.
pub const WARMUP_CANDLES: u64 = 200;

/// Features 50–111: what a completed candle determines.
pub(crate) const NUM_SLOW: usize = NUM_FEATURES - NUM_BOOK;

/// The last candles of a segment as sliding arrays, plus OBV history.
#[derive(Debug, Clone)]
struct History {
    open: Sliding,
    high: Sliding,
    low: Sliding,
    close: Sliding,
    volume: Sliding,
    buy: Sliding,
    trades: Sliding,
    ret1: Sliding,
    obv: Sliding,
}

impl History {
    fn new() -> History {
        let s = || Sliding::new(HISTORY);
        History {
            open: s(),
            high: s(),
            low: s(),
            close: s(),
            volume: s(),
            buy: s(),
            trades: s(),
            ret1: s(),
            obv: Sliding::new(15),
        }
    }
}

/// Candle-driven state: history, indicator streams, cached features.
#[derive(Debug, Clone)]
struct Slow {
    hist: History,
    ind: IndicatorStreams,
    candles: u64,
    feats: [f64; NUM_SLOW],
}

impl Slow {
    fn new() -> Slow {
        Slow { hist: History::new(), ind: IndicatorStreams::new(), candles: 0, feats: [f64::NAN; NUM_SLOW] }
    }

    fn push(&mut self, c: &Candle) {
        let h = &mut self.hist;
        let ret = match h.close.view().last() {
            Some(&prev) => ret_1(prev, c.close),
            None => f64::NAN,
        };
        h.open.push(c.open);
        h.high.push(c.high);
        h.low.push(c.low);
        h.close.push(c.close);
        h.volume.push(c.volume);
        h.buy.push(c.buy_volume);
        h.trades.push(c.trades as f64);
        h.ret1.push(ret);
        let raw = self.ind.update(c.high, c.low, c.close, c.volume);
        let obv_hist = h.obv.view();
        let obv_14_ago = if obv_hist.len() >= 14 { obv_hist[obv_hist.len() - 14] } else { f64::NAN };
        h.obv.push(raw[18]);
        self.candles += 1;
        // Features of candles before the warm-up are never emitted: skip them.
        if self.candles < WARMUP_CANDLES {
            return;
        }
        let w = CandleWindow {
            open: h.open.view(),
            high: h.high.view(),
            low: h.low.view(),
            close: h.close.view(),
            volume: h.volume.view(),
            buy_volume: h.buy.view(),
            trades: h.trades.view(),
            ret1: h.ret1.view(),
        };
        let (cf, inf) = self.feats.split_at_mut(INDICATOR_START - CANDLE_START);
        candle_features(&w, cf);
        transform(&raw, &TransformInputs::new(c.close, obv_14_ago, w.volume), inf);
    }
}

/// What a snapshot produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Update<'a> {
    /// The 112 features at this tick.
    Ready(&'a [f64; NUM_FEATURES]),
    /// Accepted, but not every feature is defined yet.
    WarmingUp { completed_candles: u64 },
    /// Accepted after the warm-up, but an entry came out non-finite (only
    /// possible with absurd input magnitudes); counted, not emitted.
    Undefined { feature: usize },
    /// Refused (counted and logged).
    Rejected(Reject),
}

/// The live feature pipeline (see the module docs of [`super`]).
#[derive(Debug, Clone)]
pub struct FeatureEngine {
    ingest: Ingest,
    book: BookState,
    slow: Box<Slow>,
    out: [f64; NUM_FEATURES],
}

impl Default for FeatureEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureEngine {
    pub fn new() -> FeatureEngine {
        FeatureEngine {
            ingest: Ingest::default(),
            book: BookState::new(),
            slow: Box::new(Slow::new()),
            out: [f64::NAN; NUM_FEATURES],
        }
    }

    /// No log lines for refused inputs (they are still counted).
    pub fn quiet(mut self) -> FeatureEngine {
        self.ingest.quiet = true;
        self
    }

    /// What was taken, refused and emitted so far.
    pub fn stats(&self) -> &InputStats {
        &self.ingest.stats
    }

    /// Completed candles in the current segment.
    pub fn completed_candles(&self) -> u64 {
        self.slow.candles
    }

    /// Feeds a trade.
    pub fn push_trade(&mut self, t: &Trade) -> Result<(), Reject> {
        let slow = &mut self.slow;
        self.ingest.trade(t, &mut |c: &Candle| slow.push(c))
    }

    /// Feeds a snapshot: the features at its tick, or why there are none.
    pub fn push_snapshot(&mut self, s: &Snapshot) -> Update<'_> {
        let slow = &mut self.slow;
        let accepted = self.ingest.snapshot(s, &mut |c: &Candle| slow.push(c));
        match accepted {
            Err(r) => Update::Rejected(r),
            Ok(Accepted::Snapshot { reset, .. }) => {
                if reset {
                    self.book = BookState::new();
                    *self.slow = Slow::new();
                }
                self.book.update(s, &mut self.out[..NUM_BOOK]);
                let stats = &mut self.ingest.stats;
                if self.slow.candles < WARMUP_CANDLES {
                    stats.warming_up += 1;
                    return Update::WarmingUp { completed_candles: self.slow.candles };
                }
                self.out[NUM_BOOK..].copy_from_slice(&self.slow.feats);
                if let Some(feature) = self.out.iter().position(|v| !v.is_finite()) {
                    stats.non_finite += 1;
                    if !self.ingest.quiet && stats.non_finite <= 10 {
                        tracing::warn!(
                            ts_ms = s.ts_exchange_ms,
                            feature = super::names::FEATURE_NAMES[feature],
                            "feature not finite; no vector for this tick"
                        );
                    }
                    return Update::Undefined { feature };
                }
                stats.emitted += 1;
                Update::Ready(&self.out)
            }
        }
    }

    /// Feeds either kind of input; `None` for a trade.
    pub fn push(&mut self, e: &super::candles::Event) -> Option<Update<'_>> {
        match e {
            super::candles::Event::Snapshot(s) => Some(self.push_snapshot(s)),
            super::candles::Event::Trade(t) => {
                let _ = self.push_trade(t);
                None
            }
        }
    }
}
