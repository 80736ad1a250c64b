//! The batch path: a whole history → the feature table.
//!
//! [`BatchBuilder`] takes the inputs in order (the one sequential step,
//! shared with the engine: the gate that accepts or refuses each input and
//! the candle aggregation) and records, per accepted tick, its static book
//! features and best levels, and the candle series. [`BatchBuilder::finish`]
//! then computes everything else as array operations over the recorded
//! series, one segment at a time: `mid_return` and `ofi_1` from consecutive
//! ticks, `ofi_10` as a window sum over the `ofi_1` array, the 37 indicators
//! by the `talib` batch functions over the whole candle series, the 25
//! candle features over sub-slices of the candle arrays, and finally the
//! rows of the ticks that have 200 completed candles behind them.
//!
//! It uses the same per-value functions as the engine (book formulas,
//! `candle_features`, `transform`), and TA-Lib's batch functions are the
//! fold of its streams, so batch and streaming agree bit for bit (the
//! tests hold them to `1e-9 · (1 + |x|)` as docs/features.md asks).
//! Memory: ≈ 0.5 KB per accepted tick while building, plus the table.

use std::ops::Range;

use crate::market::{Snapshot, Trade};

use super::book_features::{mid_return, ofi, static_book_features, sum_in_order, Top, OFI_WINDOW};
use super::candle_features::{candle_features, ret_1, CandleWindow, HISTORY};
use super::candles::{Accepted, Candle, Event, Ingest, InputStats, Reject};
use super::indicators::{raw_batch, transform, TransformInputs, NUM_RAW};
use super::names::{CANDLE_START, INDICATOR_START, NUM_BOOK, NUM_FEATURES};
use super::streaming::{NUM_SLOW, WARMUP_CANDLES};
use super::FeatureError;

/// The features of a history: one row per emitted tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureTable {
    /// Exchange time of each row's snapshot.
    pub ts_ms: Vec<i64>,
    /// The mid at each row (kept for labels; not written to disk).
    pub mid: Vec<f64>,
    /// Each row's snapshot as an index into the snapshots given to the
    /// builder (counting refused ones), to join the raw book (TLOB input).
    pub source: Vec<usize>,
    pub rows: Vec<[f64; NUM_FEATURES]>,
}

impl FeatureTable {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Segment {
    ticks: Range<usize>,
    candles: Range<usize>,
}

#[derive(Debug, Default)]
struct Candles {
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    buy: Vec<f64>,
    trades: Vec<f64>,
}

impl Candles {
    fn push(&mut self, c: &Candle) {
        self.open.push(c.open);
        self.high.push(c.high);
        self.low.push(c.low);
        self.close.push(c.close);
        self.volume.push(c.volume);
        self.buy.push(c.buy_volume);
        self.trades.push(c.trades as f64);
    }

    fn len(&self) -> usize {
        self.close.len()
    }
}

/// Builds the feature table of a history (see the module docs).
#[derive(Debug, Default)]
pub struct BatchBuilder {
    ingest: Ingest,
    snapshots_in: usize,
    segments: Vec<Segment>,
    ts: Vec<i64>,
    source: Vec<usize>,
    top: Vec<Top>,
    book: Vec<[f64; NUM_BOOK]>,
    /// Completed candles of the tick's segment when the tick arrived.
    done: Vec<u64>,
    candles: Candles,
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// No log lines for refused inputs (they are still counted).
    pub fn quiet(mut self) -> BatchBuilder {
        self.ingest.quiet = true;
        self
    }

    /// Counts so far (`emitted`, `warming_up`, `non_finite` are filled by
    /// [`BatchBuilder::finish`]).
    pub fn stats(&self) -> &InputStats {
        &self.ingest.stats
    }

    /// Accepted ticks so far.
    pub fn ticks(&self) -> usize {
        self.ts.len()
    }

    fn segment_candles_start(&self) -> usize {
        self.segments.last().map_or(0, |s| s.candles.start)
    }

    pub fn push_trade(&mut self, t: &Trade) -> Result<(), Reject> {
        if self.segments.is_empty() {
            self.segments.push(Segment { ticks: 0..0, candles: 0..0 });
        }
        let candles = &mut self.candles;
        self.ingest.trade(t, &mut |c: &Candle| candles.push(c))
    }

    pub fn push_snapshot(&mut self, s: &Snapshot) -> Result<(), Reject> {
        let index = self.snapshots_in;
        self.snapshots_in += 1;
        if self.segments.is_empty() {
            self.segments.push(Segment { ticks: 0..0, candles: 0..0 });
        }
        let candles = &mut self.candles;
        let Accepted::Snapshot { reset, .. } = self.ingest.snapshot(s, &mut |c: &Candle| candles.push(c))?;
        if reset {
            let (t, c) = (self.ts.len(), self.candles.len());
            self.segments.push(Segment { ticks: t..t, candles: c..c });
        }
        let mut f = [0.0; NUM_BOOK];
        static_book_features(s, &mut f);
        self.ts.push(s.ts_exchange_ms);
        self.source.push(index);
        self.top.push(Top::of(s));
        self.book.push(f);
        self.done.push((self.candles.len() - self.segment_candles_start()) as u64);
        Ok(())
    }

    pub fn push(&mut self, e: &Event) -> Result<(), Reject> {
        match e {
            Event::Snapshot(s) => self.push_snapshot(s),
            Event::Trade(t) => self.push_trade(t),
        }
    }

    /// Computes the table.
    pub fn finish(mut self) -> Result<(FeatureTable, InputStats), FeatureError> {
        // Each segment ends where the next begins, the last at the end.
        let ends: Vec<(usize, usize)> = (0..self.segments.len())
            .map(|i| match self.segments.get(i + 1) {
                Some(next) => (next.ticks.start, next.candles.start),
                None => (self.ts.len(), self.candles.len()),
            })
            .collect();
        for (seg, (t, c)) in self.segments.iter_mut().zip(ends) {
            seg.ticks.end = t;
            seg.candles.end = c;
        }
        let mut table = FeatureTable::default();
        let mut stats = self.ingest.stats;
        for seg in &self.segments {
            self.segment(seg, &mut table, &mut stats)?;
        }
        Ok((table, stats))
    }

    fn segment(&self, seg: &Segment, table: &mut FeatureTable, stats: &mut InputStats) -> Result<(), FeatureError> {
        let cs = &self.candles;
        let r = seg.candles.clone();
        let (open, high, low, close) =
            (&cs.open[r.clone()], &cs.high[r.clone()], &cs.low[r.clone()], &cs.close[r.clone()]);
        let (volume, buy, trades) = (&cs.volume[r.clone()], &cs.buy[r.clone()], &cs.trades[r.clone()]);
        let nc = close.len();

        // Candle + indicator features of every candle that can be emitted.
        let ret1: Vec<f64> = (0..nc).map(|n| if n == 0 { f64::NAN } else { ret_1(close[n - 1], close[n]) }).collect();
        let raw = raw_batch(high, low, close, volume)?;
        let first = (WARMUP_CANDLES as usize).saturating_sub(1);
        let mut slow: Vec<[f64; NUM_SLOW]> = Vec::with_capacity(nc.saturating_sub(first));
        let mut raw_n = [0.0; NUM_RAW];
        for n in first..nc {
            let s = (n + 1).saturating_sub(HISTORY);
            let e = n + 1;
            let w = CandleWindow {
                open: &open[s..e],
                high: &high[s..e],
                low: &low[s..e],
                close: &close[s..e],
                volume: &volume[s..e],
                buy_volume: &buy[s..e],
                trades: &trades[s..e],
                ret1: &ret1[s..e],
            };
            let mut f = [0.0; NUM_SLOW];
            let (cf, inf) = f.split_at_mut(INDICATOR_START - CANDLE_START);
            candle_features(&w, cf);
            for (j, col) in raw.iter().enumerate() {
                raw_n[j] = col[n];
            }
            let obv_14_ago = if n >= 14 { raw[18][n - 14] } else { f64::NAN };
            transform(&raw_n, &TransformInputs::new(close[n], obv_14_ago, w.volume), inf);
            slow.push(f);
        }

        // Book features: the dynamic ones as array operations.
        let t = seg.ticks.clone();
        let tops = &self.top[t.clone()];
        let ofi1: Vec<f64> = (0..tops.len()).map(|i| if i == 0 { 0.0 } else { ofi(&tops[i - 1], &tops[i]) }).collect();
        for (k, i) in t.clone().enumerate() {
            let done = self.done[i];
            if done < WARMUP_CANDLES {
                stats.warming_up += 1;
                continue;
            }
            let mut row = [0.0; NUM_FEATURES];
            row[..NUM_BOOK].copy_from_slice(&self.book[i]);
            row[41] = if k == 0 { 0.0 } else { mid_return(tops[k - 1].mid(), tops[k].mid()) };
            row[47] = ofi1[k];
            row[48] = sum_in_order(ofi1[(k + 1).saturating_sub(OFI_WINDOW)..=k].iter().copied());
            row[NUM_BOOK..].copy_from_slice(&slow[done as usize - 1 - first]);
            if let Some(feature) = row.iter().position(|v| !v.is_finite()) {
                stats.non_finite += 1;
                if !self.ingest.quiet && stats.non_finite <= 10 {
                    tracing::warn!(
                        ts_ms = self.ts[i],
                        feature = super::names::FEATURE_NAMES[feature],
                        "feature not finite; no vector for this tick"
                    );
                }
                continue;
            }
            stats.emitted += 1;
            table.ts_ms.push(self.ts[i]);
            table.mid.push(tops[k].mid());
            table.source.push(self.source[i]);
            table.rows.push(row);
        }
        Ok(())
    }
}

/// The feature table of a history given as two time-ordered streams
/// (merged by [`super::merge_events`]), with the input counts.
pub fn build_features(
    snapshots: impl IntoIterator<Item = Snapshot>,
    trades: impl IntoIterator<Item = Trade>,
) -> Result<(FeatureTable, InputStats), FeatureError> {
    let mut b = BatchBuilder::new();
    for e in super::merge_events(snapshots, trades) {
        let _ = b.push(&e);
    }
    b.finish()
}

/// What [`build_from_store`] read and built.
#[derive(Debug, Clone, Default)]
pub struct StoreBuild {
    pub table: FeatureTable,
    pub stats: InputStats,
    /// Every snapshot read, in order (so `table.source` indexes it), when
    /// asked for (`keep_snapshots`); else empty.
    pub snapshots: Vec<Snapshot>,
}

/// The batch path over a symbol's whole stored history (the collector's
/// store under `raw`): its snapshot and trade files merged in time order (a
/// trade first on a tie, as [`super::merge_events`]). `progress(n)` is
/// called every 100,000 snapshots.
pub fn build_from_store(
    raw: &std::path::Path,
    symbol: &str,
    keep_snapshots: bool,
    mut progress: impl FnMut(u64),
) -> Result<StoreBuild, FeatureError> {
    use crate::market::store::{read_snapshots, read_trades};
    let store = |e: crate::market::StoreError| FeatureError::Store(Box::new(e));
    let mut snaps = read_snapshots(raw, symbol).map_err(store)?.peekable();
    let mut trades = read_trades(raw, symbol).map_err(store)?.peekable();
    let mut b = BatchBuilder::new();
    let mut kept = Vec::new();
    let mut seen = 0u64;
    loop {
        let trade_first = match (snaps.peek(), trades.peek()) {
            (None, None) => break,
            (_, Some(Err(_))) | (None, Some(_)) => true,
            (Some(Err(_)), _) | (Some(_), None) => false,
            (Some(Ok(s)), Some(Ok(t))) => t.ts_exchange_ms <= s.ts_exchange_ms,
        };
        if trade_first {
            if let Some(t) = trades.next() {
                let _ = b.push_trade(&t.map_err(store)?);
            }
        } else if let Some(s) = snaps.next() {
            let s = s.map_err(store)?;
            let _ = b.push_snapshot(&s);
            if keep_snapshots {
                kept.push(s);
            }
            seen += 1;
            if seen.is_multiple_of(100_000) {
                progress(seen);
            }
        }
    }
    progress(seen);
    let (table, stats) = b.finish()?;
    Ok(StoreBuild { table, stats, snapshots: kept })
}
