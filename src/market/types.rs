//! Order-book snapshots and trades as stored and fed to the models
//! (docs/data.md, "Order-book snapshots").

/// Levels per side in a snapshot (and in the Parquet schema).
pub const NUM_LEVELS: usize = 20;

/// What [`is_exchange_symbol`] accepts, in words for error messages.
pub const EXCHANGE_SYMBOL_RULE: &str = "must be 1 to 32 ASCII letters and digits";

/// A symbol as the exchange spells it (`BTCUSDT`): 1 to 32 ASCII letters and
/// digits. Every place that puts a symbol into a URL, a stream name or a file
/// name checks it with this one rule, so none of them can be steered by it.
pub fn is_exchange_symbol(symbol: &str) -> bool {
    (1..=32).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One price level. A missing level is `NaN` in both fields.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub price: f64,
    pub quantity: f64,
}

impl Level {
    pub const MISSING: Level = Level { price: f64::NAN, quantity: f64::NAN };

    pub fn new(price: f64, quantity: f64) -> Level {
        Level { price, quantity }
    }

    pub fn is_missing(&self) -> bool {
        self.price.is_nan()
    }
}

/// The top [`NUM_LEVELS`] of a book at one instant. Bids descend from the
/// best, asks ascend from the best; missing levels are [`Level::MISSING`].
/// The symbol is kept outside the row (a file's metadata, the collector's config).
///
/// Equality compares the bits of every float, so two snapshots with `NaN` in
/// the same places are equal.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub ts_exchange_ms: i64,
    pub ts_local_ns: i64,
    pub last_update_id: u64,
    pub bids: [Level; NUM_LEVELS],
    pub asks: [Level; NUM_LEVELS],
}

/// Why a snapshot or a trade was rejected. Each message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("{field} = {value}: a price must be finite and positive")]
    BadPrice { field: String, value: f64 },
    #[error("{field} = {value}: a quantity must be finite and non-negative")]
    BadQuantity { field: String, value: f64 },
    #[error("{field} is present but the level before it is missing")]
    Hole { field: String },
    #[error("{field} = {value} is present while the level's price is missing")]
    OrphanQuantity { field: String, value: f64 },
    #[error("{field} is missing while its price is present")]
    MissingQuantity { field: String },
    #[error("{field} = {value} is out of order (bids must strictly descend, asks strictly ascend)")]
    Unordered { field: String, value: f64 },
    #[error("crossed book: bid_px_0 = {bid} >= ask_px_0 = {ask}")]
    Crossed { bid: f64, ask: f64 },
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        let lv = |a: &[Level; NUM_LEVELS], b: &[Level; NUM_LEVELS]| {
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.price.to_bits() == y.price.to_bits() && x.quantity.to_bits() == y.quantity.to_bits())
        };
        self.ts_exchange_ms == other.ts_exchange_ms
            && self.ts_local_ns == other.ts_local_ns
            && self.last_update_id == other.last_update_id
            && lv(&self.bids, &other.bids)
            && lv(&self.asks, &other.asks)
    }
}

impl Snapshot {
    /// A snapshot with every level missing.
    pub fn empty(ts_exchange_ms: i64, ts_local_ns: i64, last_update_id: u64) -> Snapshot {
        Snapshot {
            ts_exchange_ms,
            ts_local_ns,
            last_update_id,
            bids: [Level::MISSING; NUM_LEVELS],
            asks: [Level::MISSING; NUM_LEVELS],
        }
    }

    /// Number of leading present bid levels.
    pub fn bid_levels(&self) -> usize {
        self.bids.iter().take_while(|l| !l.is_missing()).count()
    }

    /// Number of leading present ask levels.
    pub fn ask_levels(&self) -> usize {
        self.asks.iter().take_while(|l| !l.is_missing()).count()
    }

    /// `(bid_px_0 + ask_px_0) / 2`, when both sides have a level.
    pub fn mid(&self) -> Option<f64> {
        let (b, a) = (self.bids[0].price, self.asks[0].price);
        if b.is_nan() || a.is_nan() {
            None
        } else {
            Some(0.5 * (b + a))
        }
    }

    /// Checks the rules of docs/data.md ("Book rules"): finite positive prices, finite
    /// non-negative quantities, no level after a missing one, bids strictly
    /// descending, asks strictly ascending, and not crossed
    /// (`bid_px_0 >= ask_px_0`).
    pub fn validate(&self) -> Result<(), SnapshotError> {
        validate_side(&self.bids, "bid", true)?;
        validate_side(&self.asks, "ask", false)?;
        let (b, a) = (self.bids[0].price, self.asks[0].price);
        if !b.is_nan() && !a.is_nan() && b >= a {
            return Err(SnapshotError::Crossed { bid: b, ask: a });
        }
        Ok(())
    }
}

fn validate_side(levels: &[Level; NUM_LEVELS], side: &str, descending: bool) -> Result<(), SnapshotError> {
    let mut missing_seen = false;
    let mut prev: Option<f64> = None;
    for (i, l) in levels.iter().enumerate() {
        if l.price.is_nan() {
            // A missing level: its quantity must be missing too.
            if !l.quantity.is_nan() {
                return Err(SnapshotError::OrphanQuantity { field: format!("{side}_qty_{i}"), value: l.quantity });
            }
            missing_seen = true;
            continue;
        }
        if missing_seen {
            return Err(SnapshotError::Hole { field: format!("{side}_px_{i}") });
        }
        if !l.price.is_finite() || l.price <= 0.0 {
            return Err(SnapshotError::BadPrice { field: format!("{side}_px_{i}"), value: l.price });
        }
        if l.quantity.is_nan() {
            return Err(SnapshotError::MissingQuantity { field: format!("{side}_qty_{i}") });
        }
        if !l.quantity.is_finite() || l.quantity < 0.0 {
            return Err(SnapshotError::BadQuantity { field: format!("{side}_qty_{i}"), value: l.quantity });
        }
        if let Some(p) = prev {
            let ordered = if descending { l.price < p } else { l.price > p };
            if !ordered {
                return Err(SnapshotError::Unordered { field: format!("{side}_px_{i}"), value: l.price });
            }
        }
        prev = Some(l.price);
    }
    Ok(())
}

/// One (aggregate) trade.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trade {
    pub ts_exchange_ms: i64,
    pub trade_id: u64,
    pub price: f64,
    pub quantity: f64,
    /// True when the buyer was the maker, i.e. the aggressor sold.
    pub is_buyer_maker: bool,
}

impl Trade {
    /// Finite positive price, finite non-negative quantity.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if !self.price.is_finite() || self.price <= 0.0 {
            return Err(SnapshotError::BadPrice { field: "price".into(), value: self.price });
        }
        if !self.quantity.is_finite() || self.quantity < 0.0 {
            return Err(SnapshotError::BadQuantity { field: "quantity".into(), value: self.quantity });
        }
        Ok(())
    }
}
