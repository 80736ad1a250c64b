//! 1-second mid candles with trade volume, and the gate that decides which
//! inputs are used (shared by the streaming engine and the batch builder,
//! so both see the same accepted ticks and the same candles).
//!
//! Rules (docs/features.md "Clock and inputs", plus the choices it leaves open):
//! - bucket = `floor(ts_ms / 1000)` of exchange time; OHLC from the mids of
//!   the accepted snapshots in the bucket; volume, taker-buy volume (trades
//!   whose buyer was *not* the maker) and trade count from the accepted
//!   trades in it. Volume is base-asset quantity.
//! - Any accepted input (snapshot or trade) of a later bucket completes the
//!   current candle; buckets skipped in between become flat candles at the
//!   previous close with no volume. A bucket that had trades but no tick is
//!   flat at the previous close and keeps its volume. Before the first
//!   close ever (trades before the first snapshot of a segment) a bucket
//!   makes no candle and its trades are dropped.
//! - Order: inputs must come in exchange-time order. A snapshot older than
//!   the last accepted snapshot, or a trade older than the last accepted
//!   trade, or any input whose bucket is already complete, is out of order:
//!   counted, logged and skipped. Equal timestamps are fine. When a trade
//!   and a snapshot share a millisecond, [`merge_events`] puts the trade
//!   first (the snapshot is taken after it).
//! - A jump of more than [`MAX_GAP_CANDLES`] buckets between a snapshot and
//!   the previous accepted input *resets* the pipeline (a new segment: the
//!   candles, indicators and book state start over and warm up again) rather
//!   than replaying that many flat candles; a trade that jumps that far
//!   ahead is rejected (a trade alone does not restart the clock).

use crate::market::{Snapshot, Trade};

use super::book_features::{check_snapshot, mid_of, BookReject};

/// Milliseconds per candle.
pub const CANDLE_MS: i64 = 1_000;
/// The longest run of missing buckets filled with flat candles (one day);
/// a longer jump starts a new segment.
pub const MAX_GAP_CANDLES: i64 = 86_400;

/// The bucket of an exchange timestamp.
#[inline]
pub fn bucket_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(CANDLE_MS)
}

/// One completed 1-second candle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    /// `floor(ts_ms / 1000)`.
    pub bucket: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub buy_volume: f64,
    pub trades: u64,
    /// Ticks (accepted snapshots) in the bucket; 0 for a flat filled candle.
    pub ticks: u32,
}

/// Builds candles from ticks and trades of non-decreasing buckets.
#[derive(Debug, Clone, Default)]
pub struct CandleBuilder {
    cur: Option<i64>,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    ticks: u32,
    volume: f64,
    buy_volume: f64,
    trades: u64,
    prev_close: Option<f64>,
}

impl CandleBuilder {
    pub fn new() -> CandleBuilder {
        CandleBuilder::default()
    }

    /// The bucket in progress.
    pub fn current(&self) -> Option<i64> {
        self.cur
    }

    /// Moves to `bucket` (≥ the current one), handing every candle it
    /// completes to `emit`, oldest first.
    pub fn advance(&mut self, bucket: i64, emit: &mut impl FnMut(&Candle)) {
        let Some(cur) = self.cur else {
            self.cur = Some(bucket);
            return;
        };
        if bucket <= cur {
            return;
        }
        // Complete the bucket in progress.
        let done = if self.ticks > 0 {
            Some(Candle {
                bucket: cur,
                open: self.open,
                high: self.high,
                low: self.low,
                close: self.close,
                volume: self.volume,
                buy_volume: self.buy_volume,
                trades: self.trades,
                ticks: self.ticks,
            })
        } else {
            self.prev_close.map(|c| Candle {
                bucket: cur,
                open: c,
                high: c,
                low: c,
                close: c,
                volume: self.volume,
                buy_volume: self.buy_volume,
                trades: self.trades,
                ticks: 0,
            })
        };
        if let Some(c) = done {
            self.prev_close = Some(c.close);
            emit(&c);
            // Buckets with no input at all.
            for b in cur + 1..bucket {
                let f = Candle { bucket: b, open: c.close, high: c.close, low: c.close, close: c.close, ..ZERO };
                emit(&f);
            }
        }
        self.cur = Some(bucket);
        self.ticks = 0;
        self.volume = 0.0;
        self.buy_volume = 0.0;
        self.trades = 0;
    }

    /// A mid in the current bucket.
    pub fn tick(&mut self, mid: f64) {
        if self.ticks == 0 {
            self.open = mid;
            self.high = mid;
            self.low = mid;
        } else {
            if mid > self.high {
                self.high = mid;
            }
            if mid < self.low {
                self.low = mid;
            }
        }
        self.close = mid;
        self.ticks += 1;
    }

    /// A trade in the current bucket.
    pub fn trade(&mut self, t: &Trade) {
        self.volume += t.quantity;
        if !t.is_buyer_maker {
            self.buy_volume += t.quantity;
        }
        self.trades += 1;
    }
}

const ZERO: Candle =
    Candle { bucket: 0, open: 0.0, high: 0.0, low: 0.0, close: 0.0, volume: 0.0, buy_volume: 0.0, trades: 0, ticks: 0 };

/// Why an input was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error(transparent)]
    Book(#[from] BookReject),
    #[error("snapshot ts_exchange_ms = {ts} is before the last accepted input (ts {last}, bucket already complete or older snapshot)")]
    SnapshotOutOfOrder { ts: i64, last: i64 },
    #[error("trade ts_exchange_ms = {ts} is before the last accepted input (ts {last}, bucket already complete or older trade)")]
    TradeOutOfOrder { ts: i64, last: i64 },
    #[error("trade: {0}")]
    BadTrade(crate::market::SnapshotError),
    #[error(
        "trade ts_exchange_ms = {ts} jumps more than {MAX_GAP_CANDLES} s past the last accepted input (ts {last})"
    )]
    TradeJump { ts: i64, last: i64 },
}

/// Counts of what the pipeline took and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputStats {
    pub snapshots: u64,
    pub trades: u64,
    pub accepted_snapshots: u64,
    pub accepted_trades: u64,
    pub crossed: u64,
    pub empty_top: u64,
    /// Other invalid books (NaN or non-positive prices, negative quantities, …).
    pub invalid_book: u64,
    pub thin_book: u64,
    pub snapshots_out_of_order: u64,
    pub trades_out_of_order: u64,
    pub bad_trades: u64,
    pub trade_jumps: u64,
    /// Segments restarted by a long jump in time.
    pub resets: u64,
    /// Candles completed (flat ones included).
    pub candles: u64,
    /// Feature vectors emitted.
    pub emitted: u64,
    /// Accepted ticks that emitted nothing (warming up).
    pub warming_up: u64,
    /// Accepted ticks whose vector had a non-finite entry after warm-up
    /// (not emitted; should never happen with accepted input).
    pub non_finite: u64,
}

impl InputStats {
    /// Inputs refused, all reasons.
    pub fn rejected(&self) -> u64 {
        (self.snapshots - self.accepted_snapshots) + (self.trades - self.accepted_trades)
    }

    fn count(&mut self, r: &Reject) -> u64 {
        let c = match r {
            Reject::Book(b) if b.is_crossed() => &mut self.crossed,
            Reject::Book(BookReject::EmptyTop { .. }) => &mut self.empty_top,
            Reject::Book(BookReject::Thin { .. }) => &mut self.thin_book,
            Reject::Book(_) => &mut self.invalid_book,
            Reject::SnapshotOutOfOrder { .. } => &mut self.snapshots_out_of_order,
            Reject::TradeOutOfOrder { .. } => &mut self.trades_out_of_order,
            Reject::BadTrade(_) => &mut self.bad_trades,
            Reject::TradeJump { .. } => &mut self.trade_jumps,
        };
        *c += 1;
        *c
    }
}

/// Logs a refused input: the first 10 of each kind, then every 10 000th.
pub(crate) fn log_reject(n: u64, r: &Reject, quiet: bool) {
    if !quiet && (n <= 10 || n.is_multiple_of(10_000)) {
        tracing::warn!(count = n, "features skipped an input: {r}");
    }
}

/// What the gate did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Accepted {
    /// Use it; `reset` when it starts a new segment (the caller must reset
    /// its own state *before* handling the candles, none are emitted).
    Snapshot { mid: f64, reset: bool },
}

/// The shared front of both paths: checks and orders inputs, builds the
/// candles, counts everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ingest {
    pub(crate) candles: CandleBuilder,
    last_ts: Option<i64>,
    last_snapshot_ts: Option<i64>,
    last_trade_ts: Option<i64>,
    pub(crate) stats: InputStats,
    pub(crate) quiet: bool,
}

impl Ingest {
    fn refuse<T>(&mut self, r: Reject) -> Result<T, Reject> {
        let n = self.stats.count(&r);
        log_reject(n, &r, self.quiet);
        Err(r)
    }

    /// Checks a snapshot; on success moves the clock to its bucket (candles
    /// completed on the way go to `emit`) and adds its mid to the bucket.
    pub(crate) fn snapshot(&mut self, s: &Snapshot, emit: &mut impl FnMut(&Candle)) -> Result<Accepted, Reject> {
        self.stats.snapshots += 1;
        if let Err(e) = check_snapshot(s) {
            return self.refuse(e.into());
        }
        let ts = s.ts_exchange_ms;
        let b = bucket_of(ts);
        let stale = self.last_snapshot_ts.is_some_and(|l| ts < l) || self.candles.current().is_some_and(|c| b < c);
        if stale {
            let last = self.last_ts.unwrap_or(ts);
            return self.refuse(Reject::SnapshotOutOfOrder { ts, last });
        }
        let reset = self.candles.current().is_some_and(|c| b - c > MAX_GAP_CANDLES);
        if reset {
            self.stats.resets += 1;
            if !self.quiet {
                tracing::warn!(
                    ts_ms = ts,
                    last_ms = self.last_ts.unwrap_or(ts),
                    "snapshot more than {MAX_GAP_CANDLES} s after the last input: a new segment (warm-up again)"
                );
            }
            self.candles = CandleBuilder::new();
            self.last_trade_ts = None;
        }
        self.stats.accepted_snapshots += 1;
        let mut counted = |c: &Candle| {
            self.stats.candles += 1;
            emit(c);
        };
        self.candles.advance(b, &mut counted);
        let mid = mid_of(s);
        self.candles.tick(mid);
        self.last_ts = Some(ts);
        self.last_snapshot_ts = Some(ts);
        Ok(Accepted::Snapshot { mid, reset })
    }

    /// Checks a trade; on success moves the clock to its bucket and adds it.
    pub(crate) fn trade(&mut self, t: &Trade, emit: &mut impl FnMut(&Candle)) -> Result<(), Reject> {
        self.stats.trades += 1;
        if let Err(e) = t.validate() {
            return self.refuse(Reject::BadTrade(e));
        }
        let ts = t.ts_exchange_ms;
        let b = bucket_of(ts);
        let stale = self.last_trade_ts.is_some_and(|l| ts < l) || self.candles.current().is_some_and(|c| b < c);
        if stale {
            let last = self.last_ts.unwrap_or(ts);
            return self.refuse(Reject::TradeOutOfOrder { ts, last });
        }
        if self.candles.current().is_some_and(|c| b - c > MAX_GAP_CANDLES) {
            let last = self.last_ts.unwrap_or(ts);
            return self.refuse(Reject::TradeJump { ts, last });
        }
        self.stats.accepted_trades += 1;
        let mut counted = |c: &Candle| {
            self.stats.candles += 1;
            emit(c);
        };
        self.candles.advance(b, &mut counted);
        self.candles.trade(t);
        self.last_ts = Some(ts);
        self.last_trade_ts = Some(ts);
        Ok(())
    }
}

/// One input of the pipeline. (Unboxed on purpose: events are moved, not
/// stored, and boxing would allocate per snapshot.)
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Snapshot(Snapshot),
    Trade(Trade),
}

/// Merges a snapshot stream and a trade stream, each in time order, into
/// one stream in exchange-time order; on equal timestamps the trade comes
/// first. (Unsorted input is merged head by head and then refused by the
/// gate where it is out of order.)
pub fn merge_events<S, T>(snapshots: S, trades: T) -> Merge<S::IntoIter, T::IntoIter>
where
    S: IntoIterator<Item = Snapshot>,
    T: IntoIterator<Item = Trade>,
{
    let mut s = snapshots.into_iter();
    let mut t = trades.into_iter();
    Merge { ns: s.next(), nt: t.next(), s, t }
}

/// The iterator of [`merge_events`].
pub struct Merge<S: Iterator<Item = Snapshot>, T: Iterator<Item = Trade>> {
    s: S,
    t: T,
    ns: Option<Snapshot>,
    nt: Option<Trade>,
}

impl<S: Iterator<Item = Snapshot>, T: Iterator<Item = Trade>> Iterator for Merge<S, T> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let trade_first = match (&self.ns, &self.nt) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(t)) => t.ts_exchange_ms <= s.ts_exchange_ms,
        };
        if trade_first {
            let t = self.nt.take();
            self.nt = self.t.next();
            t.map(Event::Trade)
        } else {
            let s = self.ns.take();
            self.ns = self.s.next();
            s.map(Event::Snapshot)
        }
    }
}
