//! A local L2 order book kept in sync with Binance's diff-depth stream.
//!
//! Prices and quantities are exact [`Fixed`] decimals. Each side is a vector
//! sorted so that the best level is at the end (bids by price, asks by negated
//! price): updates cluster at the top of the book, so inserting or removing
//! there moves few elements, and the top N is a reverse walk of a slice.
//!
//! Synchronisation follows Binance's documented procedure for spot:
//! 1. events that arrive before a REST snapshot are buffered;
//! 2. on a snapshot with `lastUpdateId`, buffered events with
//!    `u <= lastUpdateId` are dropped, and the first applied event must span
//!    `lastUpdateId + 1` (`U <= lastUpdateId + 1 <= u`), else
//!    [`BookError::SnapshotTooOld`] (fetch a newer snapshot; the buffer is kept);
//! 3. afterwards an event with `u <=` the book's id is stale and ignored, one
//!    with `U >` id + 1 is a gap: [`BookError::Gap`], the book is discarded and
//!    the caller resyncs from a new snapshot (the event is kept in the buffer);
//!    otherwise it is applied and the book's id becomes `u`. On a live stream
//!    that means `U == previous u + 1`.
//! 4. quantities are absolute; 0 removes the level (removing an absent level
//!    is normal).
//!
//! A book that is crossed when a snapshot is taken or loaded is rejected with
//! [`BookError::Crossed`] and counted in [`BookStats::rejected_books`].

use std::collections::VecDeque;

use super::binance::{DepthSnapshot, DepthUpdate, PriceLevel};
use super::decimal::{Fixed, SCALE};
use super::types::{Level, Snapshot, NUM_LEVELS};

/// Default number of diff events held while waiting for a snapshot.
pub const DEFAULT_BUFFER_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("book is not synchronized: apply a REST depth snapshot first")]
    NotSynced,
    #[error("sequence gap: the book is at update id {book_id}, so the next event must span {expected}, got U = {first}, u = {last}; resync from a new snapshot")]
    Gap { book_id: u64, expected: u64, first: u64, last: u64 },
    #[error("snapshot lastUpdateId = {snapshot_id} is older than the first buffered event (U = {first}); fetch a newer snapshot")]
    SnapshotTooOld { snapshot_id: u64, first: u64 },
    #[error("crossed book: best bid {bid} >= best ask {ask}")]
    Crossed { bid: Fixed, ask: Fixed },
    #[error("{field}: duplicate price level {price}")]
    DuplicateLevel { field: &'static str, price: Fixed },
    #[error("{field}: a price must be positive, got {price}")]
    NonPositivePrice { field: &'static str, price: Fixed },
    #[error("{field}: a quantity must be non-negative, got {quantity}")]
    NegativeQuantity { field: &'static str, quantity: Fixed },
    #[error("field s: event for symbol {got:?}, the book is {expected:?}")]
    SymbolMismatch { expected: String, got: String },
    #[error("depthUpdate: U = {first} is greater than u = {last}")]
    InvalidRange { first: u64, last: u64 },
}

/// Counters kept by a book over its life (not reset by [`OrderBook::clear`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookStats {
    pub events_applied: u64,
    pub events_stale: u64,
    pub events_buffered: u64,
    pub events_invalid: u64,
    pub snapshots_applied: u64,
    pub gaps: u64,
    pub snapshots_too_old: u64,
    pub rejected_books: u64,
    pub buffer_overflows: u64,
}

/// What [`OrderBook::apply_diff`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffOutcome {
    Applied,
    /// `u <=` the book's update id: already contained in the book.
    Stale,
    /// The book is not synchronized yet; the event waits for a snapshot.
    Buffered,
}

/// What [`OrderBook::apply_snapshot`] did with the buffered events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    pub applied: usize,
    pub dropped_stale: usize,
}

/// One side: `(key, quantity units)` sorted ascending by key, best at the end.
/// The key is the price in units for bids and its negation for asks.
type Side = Vec<(i64, i64)>;

#[derive(Debug, Clone)]
pub struct OrderBook {
    symbol: String,
    bids: Side,
    asks: Side,
    last_update_id: u64,
    synced: bool,
    buffer: VecDeque<DepthUpdate>,
    buffer_capacity: usize,
    stats: BookStats,
}

fn set_level(side: &mut Side, key: i64, qty: i64) {
    // Search from the top: most updates are near the best price.
    match side.binary_search_by(|probe| probe.0.cmp(&key)) {
        Ok(i) => {
            if qty == 0 {
                side.remove(i);
            } else {
                side[i].1 = qty;
            }
        }
        Err(i) => {
            if qty != 0 {
                side.insert(i, (key, qty));
            }
        }
    }
}

#[inline]
fn units_to_f64(u: i64) -> f64 {
    u as f64 / SCALE as f64
}

impl OrderBook {
    pub fn new(symbol: impl Into<String>) -> OrderBook {
        OrderBook::with_buffer_capacity(symbol, DEFAULT_BUFFER_CAPACITY)
    }

    /// A book that holds at most `capacity` events while unsynchronized (the
    /// oldest are dropped past that, counted in `buffer_overflows`).
    pub fn with_buffer_capacity(symbol: impl Into<String>, capacity: usize) -> OrderBook {
        OrderBook {
            symbol: symbol.into(),
            bids: Vec::with_capacity(1024),
            asks: Vec::with_capacity(1024),
            last_update_id: 0,
            synced: false,
            buffer: VecDeque::new(),
            buffer_capacity: capacity.max(1),
            stats: BookStats::default(),
        }
    }

    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The update id of the last snapshot or event applied.
    pub fn last_update_id(&self) -> u64 {
        self.last_update_id
    }

    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// Events waiting for a snapshot.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn bid_depth(&self) -> usize {
        self.bids.len()
    }

    pub fn ask_depth(&self) -> usize {
        self.asks.len()
    }

    /// Empties the book and its buffer and marks it unsynchronized. Counters stay.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.buffer.clear();
        self.synced = false;
        self.last_update_id = 0;
    }

    /// Discards the levels (not the buffer) after a gap or a too-old snapshot.
    fn desync(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.synced = false;
    }

    fn push_buffer(&mut self, ev: DepthUpdate) {
        if self.buffer.len() >= self.buffer_capacity {
            self.buffer.pop_front();
            self.stats.buffer_overflows += 1;
        }
        self.buffer.push_back(ev);
        self.stats.events_buffered += 1;
    }

    pub fn best_bid(&self) -> Option<PriceLevel> {
        self.bids.last().map(|&(k, q)| PriceLevel::new(Fixed::from_units(k), Fixed::from_units(q)))
    }

    pub fn best_ask(&self) -> Option<PriceLevel> {
        self.asks.last().map(|&(k, q)| PriceLevel::new(Fixed::from_units(-k), Fixed::from_units(q)))
    }

    /// Bids from the best down.
    pub fn bids(&self) -> impl Iterator<Item = PriceLevel> + '_ {
        self.bids.iter().rev().map(|&(k, q)| PriceLevel::new(Fixed::from_units(k), Fixed::from_units(q)))
    }

    /// Asks from the best up.
    pub fn asks(&self) -> impl Iterator<Item = PriceLevel> + '_ {
        self.asks.iter().rev().map(|&(k, q)| PriceLevel::new(Fixed::from_units(-k), Fixed::from_units(q)))
    }

    fn symbol_matches(&self, s: &str) -> bool {
        self.symbol.eq_ignore_ascii_case(s)
    }

    /// Loads a REST depth snapshot, then replays the buffered events by the
    /// procedure in the module docs. On [`BookError::SnapshotTooOld`] or
    /// [`BookError::Gap`] the book is left unsynchronized with the events it
    /// could not apply still buffered; fetch a newer snapshot.
    pub fn apply_snapshot(&mut self, snap: &DepthSnapshot) -> Result<SyncReport, BookError> {
        let sides =
            build_side(&snap.bids, false, "bids").and_then(|b| build_side(&snap.asks, true, "asks").map(|a| (b, a)));
        let (bids, asks) = match sides {
            Ok(s) => s,
            Err(e) => {
                self.stats.rejected_books += 1;
                return Err(e);
            }
        };
        if let (Some(&(b, _)), Some(&(a, _))) = (bids.last(), asks.last()) {
            if b >= -a {
                self.stats.rejected_books += 1;
                return Err(BookError::Crossed { bid: Fixed::from_units(b), ask: Fixed::from_units(-a) });
            }
        }
        self.bids = bids;
        self.asks = asks;
        self.last_update_id = snap.last_update_id;
        self.synced = true;
        self.stats.snapshots_applied += 1;

        let mut report = SyncReport::default();
        let mut pending = std::mem::take(&mut self.buffer);
        let mut first = true;
        while let Some(ev) = pending.pop_front() {
            if ev.final_update_id <= self.last_update_id {
                report.dropped_stale += 1;
                self.stats.events_stale += 1;
                continue;
            }
            if first && ev.first_update_id > self.last_update_id + 1 {
                self.stats.snapshots_too_old += 1;
                let err = BookError::SnapshotTooOld { snapshot_id: self.last_update_id, first: ev.first_update_id };
                self.desync();
                pending.push_front(ev);
                self.buffer = pending;
                return Err(err);
            }
            first = false;
            match self.apply_synced(&ev) {
                Ok(DiffOutcome::Applied) => report.applied += 1,
                Ok(_) => report.dropped_stale += 1,
                Err(e @ BookError::Gap { .. }) => {
                    self.desync();
                    pending.push_front(ev);
                    self.buffer = pending;
                    return Err(e);
                }
                Err(_) => {
                    // An invalid event (counted): skip it; a gap, if it made
                    // one, shows up at the next event.
                }
            }
        }
        Ok(report)
    }

    /// Applies a diff-depth event, or buffers it while unsynchronized.
    /// A gap discards the book (the event is buffered for the next snapshot)
    /// and returns [`BookError::Gap`]: the caller resyncs.
    pub fn apply_diff(&mut self, ev: &DepthUpdate) -> Result<DiffOutcome, BookError> {
        if !self.synced {
            self.check_event(ev)?;
            self.push_buffer(ev.clone());
            return Ok(DiffOutcome::Buffered);
        }
        match self.apply_synced(ev) {
            Err(e @ BookError::Gap { .. }) => {
                self.desync();
                self.buffer.clear();
                self.push_buffer(ev.clone());
                Err(e)
            }
            other => other,
        }
    }

    fn check_event(&mut self, ev: &DepthUpdate) -> Result<(), BookError> {
        if ev.first_update_id > ev.final_update_id {
            self.stats.events_invalid += 1;
            return Err(BookError::InvalidRange { first: ev.first_update_id, last: ev.final_update_id });
        }
        if !self.symbol_matches(&ev.symbol) {
            self.stats.events_invalid += 1;
            return Err(BookError::SymbolMismatch { expected: self.symbol.clone(), got: ev.symbol.clone() });
        }
        for l in ev.bids.iter().chain(ev.asks.iter()) {
            if l.price.units() <= 0 {
                self.stats.events_invalid += 1;
                return Err(BookError::NonPositivePrice { field: "price", price: l.price });
            }
            if l.quantity.units() < 0 {
                self.stats.events_invalid += 1;
                return Err(BookError::NegativeQuantity { field: "quantity", quantity: l.quantity });
            }
        }
        Ok(())
    }

    fn apply_synced(&mut self, ev: &DepthUpdate) -> Result<DiffOutcome, BookError> {
        self.check_event(ev)?;
        if ev.final_update_id <= self.last_update_id {
            self.stats.events_stale += 1;
            return Ok(DiffOutcome::Stale);
        }
        let expected = self.last_update_id + 1;
        if ev.first_update_id > expected {
            self.stats.gaps += 1;
            return Err(BookError::Gap {
                book_id: self.last_update_id,
                expected,
                first: ev.first_update_id,
                last: ev.final_update_id,
            });
        }
        for l in &ev.bids {
            set_level(&mut self.bids, l.price.units(), l.quantity.units());
        }
        for l in &ev.asks {
            set_level(&mut self.asks, -l.price.units(), l.quantity.units());
        }
        self.last_update_id = ev.final_update_id;
        self.stats.events_applied += 1;
        Ok(DiffOutcome::Applied)
    }

    /// The top [`NUM_LEVELS`] levels as a [`Snapshot`]. A crossed book is
    /// rejected (and counted); an empty side gives missing levels.
    pub fn snapshot(&mut self, ts_exchange_ms: i64, ts_local_ns: i64) -> Result<Snapshot, BookError> {
        let mut out = Snapshot::empty(ts_exchange_ms, ts_local_ns, self.last_update_id);
        self.snapshot_into(&mut out)?;
        Ok(out)
    }

    /// Fills `out`'s levels and `last_update_id` (timestamps are left as they are).
    pub fn snapshot_into(&mut self, out: &mut Snapshot) -> Result<(), BookError> {
        if !self.synced {
            return Err(BookError::NotSynced);
        }
        if let (Some(&(b, _)), Some(&(a, _))) = (self.bids.last(), self.asks.last()) {
            if b >= -a {
                self.stats.rejected_books += 1;
                return Err(BookError::Crossed { bid: Fixed::from_units(b), ask: Fixed::from_units(-a) });
            }
        }
        out.last_update_id = self.last_update_id;
        fill_levels(&self.bids, &mut out.bids, 1);
        fill_levels(&self.asks, &mut out.asks, -1);
        Ok(())
    }

    /// The top `limit` levels a side as a REST depth snapshot.
    pub fn to_depth_snapshot(&self, limit: usize) -> DepthSnapshot {
        DepthSnapshot {
            last_update_id: self.last_update_id,
            bids: self.bids().take(limit).collect(),
            asks: self.asks().take(limit).collect(),
        }
    }

    /// Checks the book's internal invariants (for tests): each side strictly
    /// sorted, positive prices, positive quantities, and not crossed when synced.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, side, sign) in [("bids", &self.bids, 1i64), ("asks", &self.asks, -1)] {
            for w in side.windows(2) {
                if w[0].0 >= w[1].0 {
                    return Err(format!("{name}: keys not strictly ascending: {w:?}"));
                }
            }
            for &(k, q) in side.iter() {
                if k * sign <= 0 {
                    return Err(format!("{name}: non-positive price {k}"));
                }
                if q <= 0 {
                    return Err(format!("{name}: non-positive quantity {q} at {k}"));
                }
            }
        }
        if !self.synced && (!self.bids.is_empty() || !self.asks.is_empty()) {
            return Err("unsynchronized book holds levels".into());
        }
        Ok(())
    }
}

fn fill_levels(side: &Side, out: &mut [Level; NUM_LEVELS], sign: i64) {
    let mut it = side.iter().rev();
    for slot in out.iter_mut() {
        *slot = match it.next() {
            Some(&(k, q)) => Level { price: units_to_f64(k * sign), quantity: units_to_f64(q) },
            None => Level::MISSING,
        };
    }
}

fn build_side(levels: &[PriceLevel], negate: bool, field: &'static str) -> Result<Side, BookError> {
    let mut side: Side = Vec::with_capacity(levels.len().max(64));
    for l in levels {
        if l.price.units() <= 0 {
            return Err(BookError::NonPositivePrice { field, price: l.price });
        }
        if l.quantity.units() < 0 {
            return Err(BookError::NegativeQuantity { field, quantity: l.quantity });
        }
        if l.quantity.units() == 0 {
            continue;
        }
        let key = if negate { -l.price.units() } else { l.price.units() };
        side.push((key, l.quantity.units()));
    }
    side.sort_unstable_by_key(|&(k, _)| k);
    for w in side.windows(2) {
        if w[0].0 == w[1].0 {
            let units = if negate { -w[0].0 } else { w[0].0 };
            return Err(BookError::DuplicateLevel { field, price: Fixed::from_units(units) });
        }
    }
    Ok(side)
}
