//! A recording replayed as a market (`quorum simulate --serve ADDR --replay
//! FILE...`): the loopback exchange serves it over Binance's protocol
//! instead of the simulator (docs/data.md, "Replaying a recording").
//!
//! The replay keeps its own full-depth book of the recording by the book's
//! rules (a snapshot, then the diffs), so it can answer a REST depth request
//! at any moment with the book as it stands, and log the true top of book
//! at every update id for tests. Frames are served at their recorded pace
//! (receive-time differences divided by `speed`):
//! - a diff is served once the replay's book is in sync (earlier diffs only
//!   feed the book), as recorded; a diff that opens a gap in the recording
//!   is not served, and nothing is until the recording's next snapshot, so
//!   the exchange never serves a book it does not know;
//! - a `trade` frame is served as an `aggTrade` of that one trade (the
//!   stream the collector reads; the ids, price, quantity, times and side are
//!   the trade's), an `aggTrade` frame as recorded;
//! - other symbols and other streams are skipped.

use std::path::PathBuf;
use std::time::Duration;

use super::binance::{parse_combined, parse_depth_snapshot, AggTrade, DepthSnapshot, StreamEvent};
use super::book::{BookError, DiffOutcome, OrderBook};
use super::recording::{FrameKind, FrameSource, RecordFormat};
use super::types::{is_exchange_symbol, Snapshot};

/// Levels a side kept for REST answers (Binance's largest `limit`).
const REST_LEVELS: usize = 5000;
/// A diff may wait this long (at most) before the next is served, whatever the recording says.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// One step of a market served by the loopback exchange.
#[derive(Debug, Default)]
pub struct FeedStep {
    /// Wall time to wait before serving it.
    pub wait: Duration,
    /// The true top of book after it (its update id is the key of the truth log).
    pub truth: Option<Snapshot>,
    /// The full book a REST request gets after it.
    pub rest: Option<DepthSnapshot>,
    /// The diff's raw-stream payload and its final update id.
    pub depth: Option<(String, u64)>,
    /// aggTrade payloads.
    pub trades: Vec<String>,
    /// Exchange time of the step (ms).
    pub event_ms: i64,
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--speed {0}: must be a positive, finite number")]
    Speed(f64),
    #[error("--symbol {0:?}: must be 1 to 32 ASCII letters and digits")]
    Symbol(String),
    #[error("no recording given")]
    NoFiles,
}

/// What was replayed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub diffs_served: u64,
    pub trades_served: u64,
    pub snapshots_loaded: u64,
    pub gaps: u64,
    pub problems: u64,
}

/// A recording as a sequence of [`FeedStep`]s.
pub struct ReplayFeed {
    source: FrameSource,
    symbol: String,
    speed: f64,
    book: OrderBook,
    last_served_ns: Option<i64>,
    counts: ReplayCounts,
}

impl ReplayFeed {
    /// Opens the recording of `symbol` (uppercase or not) in `files`.
    pub fn open(format: RecordFormat, symbol: &str, files: &[PathBuf], speed: f64) -> Result<ReplayFeed, ReplayError> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(ReplayError::Speed(speed));
        }
        if !is_exchange_symbol(symbol) {
            return Err(ReplayError::Symbol(symbol.to_owned()));
        }
        if files.is_empty() {
            return Err(ReplayError::NoFiles);
        }
        let symbol = symbol.to_ascii_uppercase();
        let mut problems = 0;
        let source = FrameSource::open(format, &symbol, files, &mut |p| {
            problems += 1;
            tracing::warn!("replay: {p}");
        });
        Ok(ReplayFeed {
            source,
            book: OrderBook::new(&symbol),
            symbol,
            speed,
            last_served_ns: None,
            counts: ReplayCounts { problems, ..Default::default() },
        })
    }

    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    pub fn counts(&self) -> ReplayCounts {
        self.counts
    }

    /// The next step to serve, or `None` at the end of the recording.
    pub fn next_step(&mut self) -> Option<FeedStep> {
        loop {
            let mut problems = 0;
            let frame = self.source.next_frame(&mut |p| {
                problems += 1;
                tracing::warn!("replay: {p}");
            });
            self.counts.problems += problems;
            let frame = frame?;
            let step = match frame.kind {
                FrameKind::Snapshot => self.on_snapshot(&frame.json),
                FrameKind::Stream => self.on_stream(&frame.json),
            };
            let Some(mut step) = step else { continue };
            let since = self.last_served_ns.map_or(0, |t| frame.recv_ns.saturating_sub(t).max(0));
            step.wait = Duration::from_nanos((since as f64 / self.speed) as u64).min(MAX_WAIT);
            self.last_served_ns = Some(frame.recv_ns);
            return Some(step);
        }
    }

    fn on_snapshot(&mut self, json: &str) -> Option<FeedStep> {
        if self.book.is_synced() {
            return None;
        }
        let snap = parse_depth_snapshot(json).ok()?;
        match self.book.apply_snapshot(&snap) {
            Ok(_) => {
                self.counts.snapshots_loaded += 1;
                Some(self.book_step(None, 0))
            }
            Err(e) => {
                tracing::warn!(last_update_id = snap.last_update_id, error = %e, "replay: snapshot not usable");
                None
            }
        }
    }

    fn on_stream(&mut self, json: &str) -> Option<FeedStep> {
        let msg = parse_combined(json).ok()?;
        match msg.event {
            StreamEvent::Depth(d) if d.symbol.eq_ignore_ascii_case(&self.symbol) => {
                let was_synced = self.book.is_synced();
                match self.book.apply_diff(&d) {
                    Ok(DiffOutcome::Applied) => {
                        self.counts.diffs_served += 1;
                        Some(self.book_step(Some((d.to_json(), d.final_update_id)), d.event_time_ms))
                    }
                    // Served as recorded: a client drops it by the same rule.
                    Ok(DiffOutcome::Stale) if was_synced => {
                        self.counts.diffs_served += 1;
                        let id = self.book.last_update_id();
                        Some(FeedStep {
                            depth: Some((d.to_json(), id)),
                            event_ms: d.event_time_ms,
                            ..Default::default()
                        })
                    }
                    Ok(_) => None,
                    Err(e @ BookError::Gap { .. }) => {
                        self.counts.gaps += 1;
                        tracing::warn!("replay: the recording has a {e}: nothing is served until its next snapshot");
                        None
                    }
                    Err(e) => {
                        self.counts.problems += 1;
                        tracing::warn!(error = %e, "replay: diff refused");
                        None
                    }
                }
            }
            StreamEvent::Trade(t) if t.symbol.eq_ignore_ascii_case(&self.symbol) => {
                self.counts.trades_served += 1;
                let agg = AggTrade {
                    event_time_ms: t.event_time_ms,
                    symbol: t.symbol.clone(),
                    agg_trade_id: t.trade_id,
                    price: t.price,
                    quantity: t.quantity,
                    first_trade_id: t.trade_id,
                    last_trade_id: t.trade_id,
                    trade_time_ms: t.trade_time_ms,
                    is_buyer_maker: t.is_buyer_maker,
                };
                Some(FeedStep { trades: vec![agg.to_json()], event_ms: t.event_time_ms, ..Default::default() })
            }
            StreamEvent::AggTrade(t) if t.symbol.eq_ignore_ascii_case(&self.symbol) => {
                self.counts.trades_served += 1;
                Some(FeedStep { trades: vec![t.to_json()], event_ms: t.event_time_ms, ..Default::default() })
            }
            _ => None,
        }
    }

    /// A step after the book changed: its truth and its REST book.
    fn book_step(&mut self, depth: Option<(String, u64)>, event_ms: i64) -> FeedStep {
        let truth = self.book.snapshot(event_ms, 0).ok();
        FeedStep { truth, rest: Some(self.book.to_depth_snapshot(REST_LEVELS)), depth, event_ms, ..Default::default() }
    }
}
