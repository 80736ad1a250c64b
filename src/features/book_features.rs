//! Order-book features (indices 0–49), per tick.
//!
//! A tick's features split into a *static* part, a pure function of the
//! snapshot ([`static_book_features`]: everything but `mid_return`, `ofi_1`
//! and `ofi_10`), and a *dynamic* part that needs the previous valid tick
//! ([`mid_return`], [`ofi`]) or the last ten `ofi_1` values (`ofi_10`). The
//! streaming engine ([`BookState`]) and the batch builder call the same
//! functions, and both sum `ofi_10` oldest first, so they agree bit for bit.
//!
//! Choices where docs/features.md is silent:
//! - "the previous tick" is the previous *accepted* tick of the same
//!   segment (rejected snapshots are skipped; a segment restarts after a
//!   reset, see [`super::candles`]), so `mid_return` and `ofi_1` are 0 on the
//!   first accepted tick of a segment;
//! - `ofi_10` sums the `ofi_1` values that exist when fewer than 10 ticks have
//!   been seen ("fewer at the start"), the first tick's 0 included;
//! - `microprice_offset` is 0 when `bid_qty[0] + ask_qty[0] = 0` (the
//!   microprice is then taken to be the mid).

use crate::market::{Snapshot, SnapshotError, NUM_LEVELS};

/// Levels per side that the offset, size and depth features use; a
/// snapshot with fewer on either side is rejected.
pub const BOOK_LEVELS: usize = 10;
/// Ticks summed by `ofi_10`.
pub const OFI_WINDOW: usize = 10;

/// `x · 10 000`.
#[inline]
pub fn bps(x: f64) -> f64 {
    x * 10_000.0
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BookReject {
    /// `bid_px_0` or `ask_px_0` missing.
    #[error("empty top of book: {field} is missing")]
    EmptyTop { field: &'static str },
    /// The book breaks a rule of docs/data.md, "Book rules" (crossed, NaN or non-positive
    /// price, negative quantity, …).
    #[error("invalid snapshot: {0}")]
    Invalid(#[from] SnapshotError),
    /// Fewer than [`BOOK_LEVELS`] levels on a side.
    #[error("thin book: {side} has {levels} levels, the features need {BOOK_LEVELS}")]
    Thin { side: &'static str, levels: usize },
}

impl BookReject {
    /// Whether this is a crossed book (counted apart).
    pub fn is_crossed(&self) -> bool {
        matches!(self, BookReject::Invalid(SnapshotError::Crossed { .. }))
    }
}

/// Checks a snapshot for the features: both tops present, the rules of
/// [`Snapshot::validate`], and at least [`BOOK_LEVELS`] levels a side.
pub fn check_snapshot(s: &Snapshot) -> Result<(), BookReject> {
    if s.bids[0].price.is_nan() {
        return Err(BookReject::EmptyTop { field: "bid_px_0" });
    }
    if s.asks[0].price.is_nan() {
        return Err(BookReject::EmptyTop { field: "ask_px_0" });
    }
    s.validate()?;
    let (b, a) = (s.bid_levels(), s.ask_levels());
    if b < BOOK_LEVELS {
        return Err(BookReject::Thin { side: "bids", levels: b });
    }
    if a < BOOK_LEVELS {
        return Err(BookReject::Thin { side: "asks", levels: a });
    }
    Ok(())
}

/// The best prices and sizes, what OFI compares between ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Top {
    pub bid: f64,
    pub bid_qty: f64,
    pub ask: f64,
    pub ask_qty: f64,
}

impl Top {
    pub fn of(s: &Snapshot) -> Top {
        Top { bid: s.bids[0].price, bid_qty: s.bids[0].quantity, ask: s.asks[0].price, ask_qty: s.asks[0].quantity }
    }

    /// `(bid_px[0] + ask_px[0]) / 2`.
    #[inline]
    pub fn mid(&self) -> f64 {
        (self.bid + self.ask) / 2.0
    }
}

/// `(bid_px[0] + ask_px[0]) / 2` of a snapshot (NaN when a side is empty).
#[inline]
pub fn mid_of(s: &Snapshot) -> f64 {
    (s.bids[0].price + s.asks[0].price) / 2.0
}

/// `(Σbid − Σask) / (Σbid + Σask)`, 0 if both are 0.
#[inline]
fn imbalance(bid: f64, ask: f64) -> f64 {
    let total = bid + ask;
    if total == 0.0 {
        0.0
    } else {
        (bid - ask) / total
    }
}

/// Fills `out[0..50]` with the features that depend on this snapshot alone;
/// `mid_return`, `ofi_1` and `ofi_10` (41, 47, 48) are set to 0. The
/// snapshot must have passed [`check_snapshot`].
pub fn static_book_features(s: &Snapshot, out: &mut [f64]) {
    let mid = mid_of(s);
    let mut bid_sum = 0.0;
    let mut ask_sum = 0.0;
    let mut imb5 = 0.0;
    for i in 0..BOOK_LEVELS {
        let (a, b) = (s.asks[i], s.bids[i]);
        out[i] = bps(a.price / mid - 1.0);
        out[10 + i] = bps(1.0 - b.price / mid);
        out[20 + i] = a.quantity.ln_1p();
        out[30 + i] = b.quantity.ln_1p();
        bid_sum += b.quantity;
        ask_sum += a.quantity;
        if i == 4 {
            imb5 = imbalance(bid_sum, ask_sum);
        }
    }
    let (bid10, ask10) = (bid_sum, ask_sum);
    for i in BOOK_LEVELS..NUM_LEVELS {
        if !s.bids[i].is_missing() {
            bid_sum += s.bids[i].quantity;
        }
        if !s.asks[i].is_missing() {
            ask_sum += s.asks[i].quantity;
        }
    }
    let t = Top::of(s);
    out[40] = bps((t.ask - t.bid) / mid);
    out[41] = 0.0;
    let q = t.bid_qty + t.ask_qty;
    out[42] = if q == 0.0 { 0.0 } else { bps(((t.ask * t.bid_qty + t.bid * t.ask_qty) / q) / mid - 1.0) };
    out[43] = imbalance(t.bid_qty, t.ask_qty);
    out[44] = imb5;
    out[45] = imbalance(bid10, ask10);
    out[46] = imbalance(bid_sum, ask_sum);
    out[47] = 0.0;
    out[48] = 0.0;
    out[49] = (bid10 + ask10).ln_1p();
}

/// `bps(ln(mid / prev_mid))`.
#[inline]
pub fn mid_return(prev_mid: f64, mid: f64) -> f64 {
    bps((mid / prev_mid).ln())
}

/// Order-flow imbalance at level 0 between two ticks (Cont, Kukanov,
/// Stoikov 2014), divided by the mean best size of the later tick (0 if
/// that is 0).
#[inline]
pub fn ofi(prev: &Top, cur: &Top) -> f64 {
    let mut e = 0.0;
    if cur.bid >= prev.bid {
        e += cur.bid_qty;
    }
    if cur.bid <= prev.bid {
        e -= prev.bid_qty;
    }
    if cur.ask <= prev.ask {
        e -= cur.ask_qty;
    }
    if cur.ask >= prev.ask {
        e += prev.ask_qty;
    }
    let depth = (cur.bid_qty + cur.ask_qty) / 2.0;
    if depth == 0.0 {
        0.0
    } else {
        e / depth
    }
}

/// Sums values oldest first: the one order both paths use for `ofi_10`.
#[inline]
pub(crate) fn sum_in_order(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(0.0, |acc, x| acc + x)
}

/// The streaming side of the dynamic book features: the previous tick and
/// the last [`OFI_WINDOW`] `ofi_1` values.
#[derive(Debug, Clone, Default)]
pub struct BookState {
    prev: Option<Top>,
    ofi: [f64; OFI_WINDOW],
    /// Index of the oldest value.
    head: usize,
    len: usize,
}

impl BookState {
    pub fn new() -> BookState {
        BookState::default()
    }

    /// Fills `out[0..50]` for an accepted snapshot and remembers it.
    pub fn update(&mut self, s: &Snapshot, out: &mut [f64]) {
        static_book_features(s, out);
        let top = Top::of(s);
        let (ret, o) = match &self.prev {
            Some(p) => (mid_return(p.mid(), top.mid()), ofi(p, &top)),
            None => (0.0, 0.0),
        };
        self.prev = Some(top);
        if self.len == OFI_WINDOW {
            self.ofi[self.head] = o;
            self.head = (self.head + 1) % OFI_WINDOW;
        } else {
            self.ofi[(self.head + self.len) % OFI_WINDOW] = o;
            self.len += 1;
        }
        out[41] = ret;
        out[47] = o;
        out[48] = sum_in_order((0..self.len).map(|i| self.ofi[(self.head + i) % OFI_WINDOW]));
    }
}
