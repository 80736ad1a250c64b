//! A seeded synthetic market (docs/data.md, "Synthetic market").
//!
//! Every tick (100 ms by default) the simulator moves an exact book of
//! `depth` (≥ 20) levels a side on a price grid, emits the Binance diff-depth
//! event that turns the previous book into the new one (`U`, `u`, `b`, `a`),
//! the aggregate trades of the tick, and the top-20 snapshot of its own
//! [`OrderBook`] after applying that event. So the same stream can later be
//! served by a loopback exchange, with [`MarketSimulator::rest_snapshot`] for
//! the REST depth snapshot.
//!
//! The model:
//! - a latent order-flow pressure `f` follows an AR(1) with `ρ = 0.98`
//!   (memory of ~50 ticks) and unit variance;
//! - `f` is visible, noisily: the top five levels' quantities are scaled by
//!   `exp(±0.6 f)` (bids up, asks down when `f > 0`), and trade aggressors are
//!   buyers with probability `sigmoid(f)`;
//! - the best bid moves by 1–3 ticks with a regime's probability; the move is
//!   up with probability `0.5 + 0.5 · clamp(signal_strength · 0.5 · f, ±0.9)`.
//!   With `signal_strength = 0` the mid is a martingale (a pure random walk):
//!   the book and the trades still show `f`, but it predicts nothing. At 1 the
//!   drift over 10–50 ticks is comparable to the noise;
//! - volatility regimes (calm, normal, busy) switch at random about every ten
//!   minutes and set the move probability and the trade rate;
//! - moves sweep the levels they cross with aggressive trades; other trades
//!   take part of the best level.
//!
//! Determinism: the generator is ChaCha8 (`rand_chacha`, whose output is
//! fixed for a given seed across versions and platforms, unlike `StdRng`),
//! seeded from the `u64` seed by our own SplitMix64 expansion (so no library's
//! `seed_from_u64` can change it), and `exp`/`ln` come from the pure-Rust
//! `libm` crate, not the platform's libm. The same seed gives the same bits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::binance::{AggTrade, DepthSnapshot, DepthUpdate, PriceLevel};
use super::book::{BookError, DiffOutcome, OrderBook};
use super::decimal::Fixed;
use super::store::{SnapshotWriter, StoreError, TradeWriter};
use super::types::{is_exchange_symbol, Snapshot, EXCHANGE_SYMBOL_RULE, NUM_LEVELS};

/// Latent flow persistence per tick.
const FLOW_RHO: f64 = 0.98;
/// Drift coefficient of the latent flow at `signal_strength = 1`.
const DRIFT_BETA: f64 = 0.5;
/// Visibility of the flow in the top-of-book quantities.
const BOOK_KAPPA: f64 = 0.6;
/// Levels whose quantities carry the flow.
const FLOW_LEVELS: usize = 5;
/// Log-normal noise of level quantities.
const QTY_SIGMA: f64 = 0.6;
/// Mean ticks between regime switches (10 minutes at 100 ms).
const REGIME_MEAN_TICKS: f64 = 6000.0;

/// A volatility regime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regime {
    pub name: &'static str,
    /// Probability that the price moves in a tick.
    pub move_prob: f64,
    /// Mean number of non-sweeping trades per tick.
    pub trade_rate: f64,
}

pub const REGIMES: [Regime; 3] = [
    Regime { name: "calm", move_prob: 0.04, trade_rate: 0.5 },
    Regime { name: "normal", move_prob: 0.10, trade_rate: 1.2 },
    Regime { name: "busy", move_prob: 0.25, trade_rate: 3.0 },
];

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub symbol: String,
    pub seed: u64,
    /// 0 = a pure random walk; ~1 = strongly predictable at 10–50 ticks. At most 2.
    pub signal_strength: f64,
    /// Exchange time of the initial book (ms since the epoch).
    pub start_ms: i64,
    /// Tick interval (ms). Tick `i` (0 = the initial book) is at `start_ms + i · interval_ms`.
    pub interval_ms: i64,
    /// Levels kept per side (≥ 20).
    pub depth: usize,
    pub tick_size: Fixed,
    pub lot_size: Fixed,
    pub initial_price: Fixed,
    /// Mean quantity of the best level, in lots.
    pub base_lots: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            symbol: "SIMUSDT".into(),
            seed: 42,
            signal_strength: 1.0,
            // 2026-01-01T00:00:00Z
            start_ms: 1_767_225_600_000,
            interval_ms: 100,
            depth: 25,
            // 100.00 with a 0.01 tick: one tick is 1 bp, so a day's moves are
            // a few percent and the 20 levels span ~20 bp.
            tick_size: Fixed::from_units(1_000_000),
            lot_size: Fixed::from_units(1_000_000),
            initial_price: Fixed::from_units(10_000_000_000),
            // 10 units at the best level on average.
            base_lots: 1_000.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("simulator produced an event its own book refused (a bug): {0}")]
    Book(#[from] BookError),
    #[error("simulator internal error (a bug): {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn cfg_err(field: &'static str, reason: impl Into<String>) -> SimError {
    SimError::Config { field, reason: reason.into() }
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimError> {
        if !(self.signal_strength.is_finite() && (0.0..=2.0).contains(&self.signal_strength)) {
            return Err(cfg_err("signal_strength", format!("{} is not in [0, 2]", self.signal_strength)));
        }
        if self.interval_ms <= 0 {
            return Err(cfg_err("interval_ms", "must be positive"));
        }
        if !(NUM_LEVELS..=1000).contains(&self.depth) {
            return Err(cfg_err("depth", format!("{} is not in [{NUM_LEVELS}, 1000]", self.depth)));
        }
        if self.tick_size.units() <= 0 {
            return Err(cfg_err("tick_size", "must be positive"));
        }
        if self.lot_size.units() <= 0 {
            return Err(cfg_err("lot_size", "must be positive"));
        }
        if !(self.base_lots.is_finite() && self.base_lots >= 1.0 && self.base_lots <= 1e9) {
            return Err(cfg_err("base_lots", "must be in [1, 1e9]"));
        }
        let ticks = self.initial_price.units() / self.tick_size.units();
        if self.initial_price.units() % self.tick_size.units() != 0 {
            return Err(cfg_err("initial_price", "must be a multiple of tick_size"));
        }
        if ticks < 100 * self.depth as i64 {
            return Err(cfg_err("initial_price", "must be at least 100 × depth ticks"));
        }
        if ticks.checked_mul(4).and_then(|t| t.checked_mul(self.tick_size.units())).is_none() {
            return Err(cfg_err("initial_price", "too large"));
        }
        if !is_exchange_symbol(&self.symbol) {
            return Err(cfg_err("symbol", EXCHANGE_SYMBOL_RULE));
        }
        Ok(())
    }
}

/// What one tick produced (borrowed from the simulator until the next step).
#[derive(Debug, Clone, Copy)]
pub struct TickView<'a> {
    pub snapshot: &'a Snapshot,
    /// The diff event of the tick (`None` if nothing changed).
    pub depth_update: Option<&'a DepthUpdate>,
    pub trades: &'a [AggTrade],
}

/// The seeded market.
pub struct MarketSimulator {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    tick: u64,
    /// Best bid in ticks; the best ask is one tick above.
    best_bid: i64,
    /// Quantities in lots, index 0 = best.
    bid_q: Vec<i64>,
    ask_q: Vec<i64>,
    old_bid_q: Vec<i64>,
    old_ask_q: Vec<i64>,
    flow: f64,
    regime: usize,
    update_id: u64,
    agg_id: u64,
    trade_id: u64,
    book: OrderBook,
    event: DepthUpdate,
    has_event: bool,
    trades: Vec<AggTrade>,
    snapshot: Snapshot,
    /// `(price ticks, lots, buyer is maker)` of the tick's trades.
    fills: Vec<(i64, i64, bool)>,
    /// Largest level quantity in lots (keeps units far from overflow).
    max_lots: i64,
}

/// SplitMix64, to expand a `u64` seed into ChaCha's 32-byte key.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl MarketSimulator {
    pub fn new(cfg: SimConfig) -> Result<MarketSimulator, SimError> {
        cfg.validate()?;
        let mut seed = [0u8; 32];
        let mut st = cfg.seed;
        for chunk in seed.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut st).to_le_bytes());
        }
        let d = cfg.depth;
        let mut sim = MarketSimulator {
            rng: ChaCha8Rng::from_seed(seed),
            tick: 0,
            best_bid: cfg.initial_price.units() / cfg.tick_size.units(),
            bid_q: vec![0; d],
            ask_q: vec![0; d],
            old_bid_q: vec![0; d],
            old_ask_q: vec![0; d],
            flow: 0.0,
            regime: 1,
            update_id: 1_000_000,
            agg_id: 0,
            trade_id: 0,
            book: OrderBook::new(cfg.symbol.clone()),
            event: DepthUpdate {
                event_time_ms: 0,
                symbol: cfg.symbol.clone(),
                first_update_id: 0,
                final_update_id: 0,
                bids: Vec::with_capacity(4 * d),
                asks: Vec::with_capacity(4 * d),
            },
            has_event: false,
            trades: Vec::with_capacity(64),
            snapshot: Snapshot::empty(cfg.start_ms, cfg.start_ms * 1_000_000, 0),
            fills: Vec::with_capacity(64),
            max_lots: (i64::MAX / 64 / cfg.lot_size.units()).max(1),
            cfg,
        };
        sim.flow = sim.normal();
        for i in 0..d {
            sim.bid_q[i] = sim.sample_lots(i, true);
            sim.ask_q[i] = sim.sample_lots(i, false);
        }
        let snap = sim.levels_snapshot();
        sim.book.apply_snapshot(&snap)?;
        sim.snapshot = sim.book.snapshot(sim.cfg.start_ms, sim.cfg.start_ms * 1_000_000 + 1_000_000)?;
        Ok(sim)
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Ticks simulated so far.
    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// The current regime.
    pub fn regime(&self) -> Regime {
        REGIMES[self.regime]
    }

    /// The latent order-flow pressure (for diagnostics and tests).
    pub fn latent_flow(&self) -> f64 {
        self.flow
    }

    /// The exact book the simulator maintains.
    pub fn book(&self) -> &OrderBook {
        &self.book
    }

    /// The REST depth snapshot of the current book (top `limit` levels a side).
    pub fn rest_snapshot(&self, limit: usize) -> DepthSnapshot {
        self.book.to_depth_snapshot(limit)
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    // ---- random numbers ----

    #[inline]
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Marsaglia's polar method).
    fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * libm::log(s) / s).sqrt();
            }
        }
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        // Knuth's method; lambda is small.
        let l = libm::exp(-lambda);
        let mut k = 0;
        let mut p = self.uniform();
        while p > l && k < 64 {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    /// A fresh quantity for level `i` of a side, in lots (≥ 1).
    fn sample_lots(&mut self, i: usize, bid: bool) -> i64 {
        let mut mean = self.cfg.base_lots * (1.0 + 0.15 * i as f64);
        if i < FLOW_LEVELS {
            let k = if bid { BOOK_KAPPA } else { -BOOK_KAPPA };
            mean *= libm::exp(k * self.flow);
        }
        let z = self.normal();
        let q = mean * libm::exp(QTY_SIGMA * z - 0.5 * QTY_SIGMA * QTY_SIGMA);
        (q.round() as i64).clamp(1, self.max_lots)
    }

    fn levels_snapshot(&self) -> DepthSnapshot {
        let t = self.cfg.tick_size.units();
        let l = self.cfg.lot_size.units();
        let lv = |p: i64, q: i64| PriceLevel::new(Fixed::from_units(p * t), Fixed::from_units(q * l));
        DepthSnapshot {
            last_update_id: self.update_id,
            bids: (0..self.cfg.depth).map(|i| lv(self.best_bid - i as i64, self.bid_q[i])).collect(),
            asks: (0..self.cfg.depth).map(|i| lv(self.best_bid + 1 + i as i64, self.ask_q[i])).collect(),
        }
    }

    /// Advances one tick.
    pub fn step(&mut self) -> Result<TickView<'_>, SimError> {
        self.tick += 1;
        let d = self.cfg.depth;
        let ts = self.cfg.start_ms + self.tick as i64 * self.cfg.interval_ms;
        self.old_bid_q.copy_from_slice(&self.bid_q);
        self.old_ask_q.copy_from_slice(&self.ask_q);
        let old_best = self.best_bid;
        self.fills.clear();

        // Regime and latent flow.
        if self.uniform() < 1.0 / REGIME_MEAN_TICKS {
            let shift = 1 + (self.uniform() * 2.0) as usize;
            self.regime = (self.regime + shift.min(2)) % REGIMES.len();
        }
        let regime = REGIMES[self.regime];
        let eps = self.normal();
        self.flow = FLOW_RHO * self.flow + (1.0 - FLOW_RHO * FLOW_RHO).sqrt() * eps;

        // Price move: sweep the levels crossed.
        if self.uniform() < regime.move_prob {
            let u = self.uniform();
            let size: i64 = if u < 0.8 {
                1
            } else if u < 0.95 {
                2
            } else {
                3
            };
            let tilt = (self.cfg.signal_strength * DRIFT_BETA * self.flow).clamp(-0.9, 0.9);
            let up = self.uniform() < 0.5 + 0.5 * tilt;
            // Keep the deepest bid above zero.
            let up = up || self.best_bid - size - d as i64 <= 1;
            if up {
                self.shift_up(size as usize);
            } else {
                self.shift_down(size as usize);
            }
        }

        // Quantity refreshes (arrivals and cancels).
        for i in 0..d {
            let p = if i < FLOW_LEVELS { 0.25 } else { 0.08 };
            if self.uniform() < p {
                self.bid_q[i] = self.sample_lots(i, true);
            }
            if self.uniform() < p {
                self.ask_q[i] = self.sample_lots(i, false);
            }
        }

        // Trades that take part of the best level.
        let n = self.poisson(regime.trade_rate);
        let buy_prob = 1.0 / (1.0 + libm::exp(-self.flow));
        for _ in 0..n {
            let buy = self.uniform() < buy_prob;
            let z = self.normal();
            let want = (0.3 * self.cfg.base_lots * libm::exp(0.8 * z)).round().max(1.0) as i64;
            let top = if buy { self.ask_q[0] } else { self.bid_q[0] };
            let qty = want.min(top - 1);
            if qty < 1 {
                continue;
            }
            if buy {
                self.ask_q[0] -= qty;
                self.fills.push((self.best_bid + 1, qty, false));
            } else {
                self.bid_q[0] -= qty;
                self.fills.push((self.best_bid, qty, true));
            }
        }

        self.build_event(old_best, ts);
        self.build_trades(ts);
        if self.has_event {
            let outcome = self.book.apply_diff(&self.event)?;
            if outcome != DiffOutcome::Applied {
                return Err(SimError::Internal(format!(
                    "own diff event U = {}, u = {} was {outcome:?}, not applied",
                    self.event.first_update_id, self.event.final_update_id
                )));
            }
        }
        let latency_ns = 1_000_000 + (self.uniform() * 4_000_000.0) as i64;
        self.snapshot.ts_exchange_ms = ts;
        self.snapshot.ts_local_ns = ts * 1_000_000 + latency_ns;
        self.book.snapshot_into(&mut self.snapshot)?;
        Ok(TickView {
            snapshot: &self.snapshot,
            depth_update: self.has_event.then_some(&self.event),
            trades: &self.trades,
        })
    }

    /// The price rises by `k` ticks: asks `0..k` are swept by buyers; `k` new
    /// bid levels appear above the old best bid.
    fn shift_up(&mut self, k: usize) {
        let d = self.cfg.depth;
        for i in 0..k.min(d) {
            self.fills.push((self.best_bid + 1 + i as i64, self.ask_q[i], false));
        }
        self.ask_q.rotate_left(k.min(d));
        for i in d.saturating_sub(k)..d {
            self.ask_q[i] = self.sample_lots(i, false);
        }
        self.bid_q.rotate_right(k.min(d));
        for i in 0..k.min(d) {
            self.bid_q[i] = self.sample_lots(i, true);
        }
        self.best_bid += k as i64;
    }

    /// The price falls by `k` ticks: bids `0..k` are swept by sellers.
    fn shift_down(&mut self, k: usize) {
        let d = self.cfg.depth;
        for i in 0..k.min(d) {
            self.fills.push((self.best_bid - i as i64, self.bid_q[i], true));
        }
        self.bid_q.rotate_left(k.min(d));
        for i in d.saturating_sub(k)..d {
            self.bid_q[i] = self.sample_lots(i, true);
        }
        self.ask_q.rotate_right(k.min(d));
        for i in 0..k.min(d) {
            self.ask_q[i] = self.sample_lots(i, false);
        }
        self.best_bid -= k as i64;
    }

    /// The diff between the old and the new book, as one depthUpdate.
    fn build_event(&mut self, old_best: i64, ts: i64) {
        let d = self.cfg.depth as i64;
        let t = self.cfg.tick_size.units();
        let l = self.cfg.lot_size.units();
        let new_best = self.best_bid;
        self.event.bids.clear();
        self.event.asks.clear();
        // Bids: prices from the highest best down to the lowest bottom.
        let hi = old_best.max(new_best);
        let lo = old_best.min(new_best) - (d - 1);
        let mut p = hi;
        while p >= lo {
            let old = side_qty(&self.old_bid_q, old_best - p);
            let new = side_qty(&self.bid_q, new_best - p);
            if old != new {
                self.event.bids.push(PriceLevel::new(Fixed::from_units(p * t), Fixed::from_units(new * l)));
            }
            p -= 1;
        }
        // Asks: best ask = best bid + 1.
        let (oa, na) = (old_best + 1, new_best + 1);
        let lo = oa.min(na);
        let hi = oa.max(na) + (d - 1);
        for p in lo..=hi {
            let old = side_qty(&self.old_ask_q, p - oa);
            let new = side_qty(&self.ask_q, p - na);
            if old != new {
                self.event.asks.push(PriceLevel::new(Fixed::from_units(p * t), Fixed::from_units(new * l)));
            }
        }
        let changes = (self.event.bids.len() + self.event.asks.len()) as u64;
        self.has_event = changes > 0;
        if self.has_event {
            self.event.event_time_ms = ts;
            self.event.first_update_id = self.update_id + 1;
            self.event.final_update_id = self.update_id + changes;
            self.update_id += changes;
        }
    }

    fn build_trades(&mut self, ts: i64) {
        self.trades.clear();
        let n = self.fills.len() as i64;
        let t = self.cfg.tick_size.units();
        let l = self.cfg.lot_size.units();
        let iv = self.cfg.interval_ms;
        for (j, &(p, q, maker)) in self.fills.iter().enumerate() {
            self.agg_id += 1;
            let trades_in = 1 + (q % 3) as u64;
            let first = self.trade_id + 1;
            self.trade_id += trades_in;
            let tt = ts - iv + ((j as i64 + 1) * iv) / (n + 1);
            self.trades.push(AggTrade {
                event_time_ms: tt,
                symbol: self.cfg.symbol.clone(),
                agg_trade_id: self.agg_id,
                price: Fixed::from_units(p * t),
                quantity: Fixed::from_units(q * l),
                first_trade_id: first,
                last_trade_id: self.trade_id,
                trade_time_ms: tt,
                is_buyer_maker: maker,
            });
        }
    }
}

#[inline]
fn side_qty(q: &[i64], idx: i64) -> i64 {
    if idx >= 0 && (idx as usize) < q.len() {
        q[idx as usize]
    } else {
        0
    }
}

/// Parses a CLI duration: a whole number with a unit, `ms`, `s`, `m`, `h` or
/// `d` (`"500ms"`, `"90s"`, `"15m"`, `"2h"`, `"1d"`).
pub fn parse_duration(text: &str) -> Result<Duration, SimError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || cfg_err("duration", format!("{text:?} is not a number followed by ms, s, m, h or d"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per).map(Duration::from_millis).ok_or_else(bad)
}

/// What [`simulate_to_parquet`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSummary {
    pub ticks: u64,
    pub trades: u64,
    pub depth_events: u64,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub last_update_id: u64,
    pub snapshot_files: Vec<PathBuf>,
    pub trade_files: Vec<PathBuf>,
    /// Temporary files of an earlier run killed mid-write, removed before
    /// this one started (`store::remove_stale_temp_files`, as the collector).
    pub stale_removed: Vec<PathBuf>,
}

/// Runs the simulator for `duration` (rounded down to whole ticks) and writes
/// its snapshots and trades under `out_dir/<symbol>/<YYYY-MM-DD>/`. The first
/// snapshot is the initial book at `start_ms`; trades of a tick fall in the
/// interval that ends at its snapshot.
/// `progress(done, total)` is called every 10,000 ticks and at the end.
/// A run killed mid-write leaves hidden temporary files; the next run removes
/// them first, as the collector does (`summary.stale_removed`).
pub fn simulate_to_parquet(
    config: &SimConfig,
    out_dir: &Path,
    duration: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<SimSummary, SimError> {
    config.validate()?;
    let total = (duration.as_millis() / config.interval_ms as u128) as u64;
    let mut sim = MarketSimulator::new(config.clone())?;
    let stale_removed = super::store::remove_stale_temp_files(out_dir, &config.symbol)?;
    let mut snaps = SnapshotWriter::new(out_dir, &config.symbol)?;
    let mut trades = TradeWriter::new(out_dir, &config.symbol)?;
    let mut summary = SimSummary {
        ticks: 0,
        trades: 0,
        depth_events: 0,
        first_ts_ms: 0,
        last_ts_ms: 0,
        last_update_id: 0,
        snapshot_files: Vec::new(),
        trade_files: Vec::new(),
        stale_removed,
    };
    // Tick 0 is the initial book at `start_ms`; each step adds one interval,
    // so `total` ticks cover [start, start + duration) and a day from midnight
    // stays in one day.
    if total > 0 {
        let first = *sim.snapshot();
        summary.first_ts_ms = first.ts_exchange_ms;
        summary.last_ts_ms = first.ts_exchange_ms;
        summary.last_update_id = first.last_update_id;
        snaps.push(&first)?;
        summary.ticks = 1;
    }
    while summary.ticks < total {
        let tick = sim.step()?;
        summary.last_ts_ms = tick.snapshot.ts_exchange_ms;
        summary.last_update_id = tick.snapshot.last_update_id;
        summary.depth_events += u64::from(tick.depth_update.is_some());
        snaps.push(tick.snapshot)?;
        for t in tick.trades {
            trades.push(&t.to_trade())?;
        }
        summary.trades += tick.trades.len() as u64;
        summary.ticks += 1;
        if summary.ticks.is_multiple_of(10_000) {
            progress(summary.ticks, total);
        }
    }
    summary.snapshot_files = snaps.finish()?;
    summary.trade_files = trades.finish()?;
    progress(summary.ticks, total);
    Ok(summary)
}
