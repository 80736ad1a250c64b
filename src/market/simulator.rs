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
//! Planted effects (`SimConfig`'s `depth_effect`, `slow_effect`,
//! `feature_effect`, strengths in [0, 2], and `regime_switching`; all off by
//! default). Each adds `strength · 0.5 · x` to the tilt above (before the
//! clamp), `x` a unit-scale latent:
//! - depth: `x = w`, an AR(1) (ρ = 0.995) shown only as *where* the largest
//!   quantity of levels 11–20 sits (bids at `round(4.5 − 3w)`, asks at
//!   `round(4.5 + 3w)` of that block): a permutation of those levels, so the
//!   sizes of levels 1–10 and every total the engineered features read are
//!   unchanged;
//! - slow: `x = (u_t − u_{t−300}) / sd`, the 30-second change of a slow AR(1)
//!   `u` (memory 60 s) that shows only in the trade aggressors
//!   (`sigmoid(f + u)` buyers);
//! - features: `x = clamp((sma − c) / 4 ticks, ±2)`, the pull of the last
//!   completed 1 s candle's close toward the SMA of the last 50 closes (the
//!   `sma_50` feature), a mean reversion that a 10 s window cannot see;
//! - regime switching: only one enabled effect (flow included) drives the
//!   tilt; which one switches about every 3 minutes.
//!
//! The effects draw from their own ChaCha8 stream (the next four SplitMix64
//! words of the seed) and only when on, so with all of them off the ticks are
//! today's to the bit. [`MarketSimulator::latent`] and
//! [`MarketSimulator::forecast`] are what the oracle of `train::oracle` knows.
//!
//! Determinism: the generator is ChaCha8 (`rand_chacha`, whose output is
//! fixed for a given seed across versions and platforms, unlike `StdRng`),
//! seeded from the `u64` seed by our own SplitMix64 expansion (so no library's
//! `seed_from_u64` can change it), and `exp`/`ln` come from the pure-Rust
//! `libm` crate, not the platform's libm. The same seed gives the same bits.

use std::collections::VecDeque;
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

// ---- planted effects (all off by default; see the module docs) ----

/// Persistence of the depth effect's latent wall `w` per tick (memory ~20 s).
const WALL_RHO: f64 = 0.995;
/// First (0-based) level of the block the wall moves in: levels 11–20, which
/// no engineered feature sees one by one (docs/features.md reads sizes of
/// levels 1–10 and only totals beyond).
const WALL_FIRST: usize = 10;
/// Levels in the wall's block.
const WALL_SPAN: usize = 10;
/// Persistence of the slow latent `u` per tick (memory ~60 s).
const SLOW_RHO: f64 = 1.0 - 1.0 / 600.0;
/// The slow effect's drift reads `u` now against `u` this many ticks ago (30 s).
const SLOW_LAG: usize = 300;
/// Visibility of `u` in the trade aggressors (`sigmoid(f + SLOW_VIS · u)`).
const SLOW_VIS: f64 = 1.0;
/// Completed 1-second candles in the feature effect's moving average (the
/// `sma_50` feature's window).
const FEATURE_CANDLES: usize = 50;
/// Ticks of deviation from the moving average that give a unit pull.
const FEATURE_SCALE: f64 = 4.0;
/// Mean ticks between switches of the live effect (3 minutes at 100 ms).
const LIVE_MEAN_TICKS: f64 = 1800.0;

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
    /// Planted effect in levels 11–20 only (a wall whose position predicts
    /// the drift); 0 = off, at most 2.
    pub depth_effect: f64,
    /// Planted effect over tens of seconds (drift from the change of a slow
    /// latent over the last 30 s); 0 = off, at most 2.
    pub slow_effect: f64,
    /// Planted effect seen through the candle features (mean reversion toward
    /// the 50-candle SMA of 1 s closes); 0 = off, at most 2.
    pub feature_effect: f64,
    /// Only one of the enabled effects (flow, depth, slow, feature) drives
    /// the drift at a time; the live one switches about every 3 minutes.
    pub regime_switching: bool,
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
            depth_effect: 0.0,
            slow_effect: 0.0,
            feature_effect: 0.0,
            regime_switching: false,
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
        for (field, v) in [
            ("signal_strength", self.signal_strength),
            ("depth_effect", self.depth_effect),
            ("slow_effect", self.slow_effect),
            ("feature_effect", self.feature_effect),
        ] {
            if !(v.is_finite() && (0.0..=2.0).contains(&v)) {
                return Err(cfg_err(field, format!("{v} is not in [0, 2]")));
            }
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

/// One source of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The latent order-flow pressure `f` (`signal_strength`).
    Flow,
    /// The wall in levels 11–20 (`depth_effect`).
    Depth,
    /// The 30-second change of the slow latent `u` (`slow_effect`).
    Slow,
    /// The pull toward the 50-candle SMA (`feature_effect`).
    Feature,
}

/// The latent state an oracle knows (after the latest step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latent {
    /// Order-flow pressure `f`.
    pub flow: f64,
    /// The depth effect's wall latent `w` (0 while off).
    pub wall: f64,
    /// The slow latent `u` now (0 while off).
    pub slow: f64,
    /// `u` 300 ticks ago (0 while off).
    pub slow_lagged: f64,
    /// The feature effect's pull `clamp((sma − c) / 4 ticks, ±2)` (0 while off or warming up).
    pub pull: f64,
    /// The effect that drives the drift under `regime_switching`; `None` without it.
    pub live: Option<Effect>,
    /// Probability that the price moves in a tick (the volatility regime's).
    pub move_prob: f64,
}

/// An oracle's view of the next `horizon` ticks: the law of
/// `mean(mid[t+1..=t+k]) − mid[t]` given the latent state, as a point mass at
/// 0 (no move at all) and otherwise a normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Probability of no price move in the horizon.
    pub p_still: f64,
    /// Mean, in ticks.
    pub mean_ticks: f64,
    /// Standard deviation, in ticks.
    pub sd_ticks: f64,
}

/// The planted effects' state: its own ChaCha8 stream, so that turning an
/// effect on never shifts the draws of the base market.
struct Effects {
    rng: ChaCha8Rng,
    /// Whether any effect or `regime_switching` is on; false = today's market.
    active: bool,
    depth_on: bool,
    slow_on: bool,
    feature_on: bool,
    wall: f64,
    slow: f64,
    slow_lagged: f64,
    /// `u` of the last `SLOW_LAG` ticks; `slow_hist[slow_pos]` the oldest.
    slow_hist: Vec<f64>,
    slow_pos: usize,
    /// Closes (mid, in ticks) of the last `FEATURE_CANDLES` completed 1 s candles.
    closes: VecDeque<f64>,
    pull: f64,
    enabled: Vec<Effect>,
    live: usize,
}

impl Effects {
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

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
}

/// Scale of the slow effect's `u_t − u_{t−300}` to unit variance.
fn slow_norm() -> f64 {
    1.0 / (2.0 * (1.0 - libm::pow(SLOW_RHO, SLOW_LAG as f64))).sqrt()
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
    fx: Effects,
    /// The book as shown when the depth effect is on (levels 11–20 permuted).
    show_bid: Vec<i64>,
    show_ask: Vec<i64>,
    old_show_bid: Vec<i64>,
    old_show_ask: Vec<i64>,
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
        // The effects' stream: the next four SplitMix64 words of the same seed.
        let mut fx_seed = [0u8; 32];
        for chunk in fx_seed.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut st).to_le_bytes());
        }
        let d = cfg.depth;
        let mut enabled = Vec::new();
        for (on, e) in [
            (cfg.signal_strength > 0.0, Effect::Flow),
            (cfg.depth_effect > 0.0, Effect::Depth),
            (cfg.slow_effect > 0.0, Effect::Slow),
            (cfg.feature_effect > 0.0, Effect::Feature),
        ] {
            if on {
                enabled.push(e);
            }
        }
        let fx = Effects {
            rng: ChaCha8Rng::from_seed(fx_seed),
            active: cfg.depth_effect > 0.0 || cfg.slow_effect > 0.0 || cfg.feature_effect > 0.0 || cfg.regime_switching,
            depth_on: cfg.depth_effect > 0.0,
            slow_on: cfg.slow_effect > 0.0,
            feature_on: cfg.feature_effect > 0.0,
            wall: 0.0,
            slow: 0.0,
            slow_lagged: 0.0,
            slow_hist: vec![0.0; SLOW_LAG],
            slow_pos: 0,
            closes: VecDeque::with_capacity(FEATURE_CANDLES + 1),
            pull: 0.0,
            enabled,
            live: 0,
        };
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
            fx,
            show_bid: vec![0; d],
            show_ask: vec![0; d],
            old_show_bid: vec![0; d],
            old_show_ask: vec![0; d],
            cfg,
        };
        sim.flow = sim.normal();
        for i in 0..d {
            sim.bid_q[i] = sim.sample_lots(i, true);
            sim.ask_q[i] = sim.sample_lots(i, false);
        }
        sim.init_effects();
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

    /// The latent state of the planted effects (what an oracle knows).
    pub fn latent(&self) -> Latent {
        let fx = &self.fx;
        Latent {
            flow: self.flow,
            wall: fx.wall,
            slow: fx.slow,
            slow_lagged: fx.slow_lagged,
            pull: fx.pull,
            live: self.cfg.regime_switching.then(|| fx.enabled.get(fx.live).copied()).flatten(),
            move_prob: REGIMES[self.regime].move_prob,
        }
    }

    /// The oracle's forecast of `mean(mid[t+1..=t+k]) − mid[t]` (ticks),
    /// `k = horizon`, from the latent state after the latest step: each
    /// future tick moves with the regime's probability, by 1.25 ticks on
    /// average (1.85 ticks² in square), up minus down with the expected tilt
    /// of the drift formula (latents decay at their AR(1) rates, the slow
    /// effect's lagged values are known, the feature pull and the live effect
    /// stay as they are).
    pub fn forecast(&self, horizon: usize) -> Forecast {
        let mp = REGIMES[self.regime].move_prob;
        let k = horizon.max(1) as f64;
        let (mut mean, mut var) = (0.0, 0.0);
        for j in 1..=horizon.max(1) {
            let w = (k - j as f64 + 1.0) / k;
            let tilt = self.expected_tilt(j).clamp(-0.9, 0.9);
            mean += w * mp * 1.25 * tilt;
            var += w * w * mp * 1.85;
        }
        let p_still = libm::pow(1.0 - mp, k);
        let moved = (1.0 - p_still).max(1e-12);
        Forecast { p_still, mean_ticks: mean / moved, sd_ticks: (var / moved).sqrt() }
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
        let (bq, aq) = if self.fx.depth_on { (&self.show_bid, &self.show_ask) } else { (&self.bid_q, &self.ask_q) };
        DepthSnapshot {
            last_update_id: self.update_id,
            bids: (0..self.cfg.depth).map(|i| lv(self.best_bid - i as i64, bq[i])).collect(),
            asks: (0..self.cfg.depth).map(|i| lv(self.best_bid + 1 + i as i64, aq[i])).collect(),
        }
    }

    // ---- planted effects (own stream; nothing here runs while all are off) ----

    fn init_effects(&mut self) {
        let switching = self.cfg.regime_switching && self.fx.enabled.len() >= 2;
        let fx = &mut self.fx;
        if switching {
            fx.live = ((fx.uniform() * fx.enabled.len() as f64) as usize).min(fx.enabled.len() - 1);
        }
        if fx.depth_on {
            fx.wall = fx.normal();
        }
        if fx.slow_on {
            // Start stationary, with 30 s of history.
            let c = (1.0 - SLOW_RHO * SLOW_RHO).sqrt();
            let mut u = fx.normal();
            for i in 0..SLOW_LAG {
                fx.slow_hist[i] = u;
                u = SLOW_RHO * u + c * fx.normal();
            }
            fx.slow = u;
            fx.slow_lagged = fx.slow_hist[0];
        }
        if self.fx.depth_on {
            self.update_show();
        }
    }

    /// Moves the effects' latents to tick `ts` (before this tick's price move).
    fn advance_effects(&mut self, ts: i64) {
        let switching = self.cfg.regime_switching && self.fx.enabled.len() >= 2;
        let mid_before = self.best_bid as f64 + 0.5;
        let iv = self.cfg.interval_ms;
        let fx = &mut self.fx;
        if switching && fx.uniform() < 1.0 / LIVE_MEAN_TICKS {
            let n = fx.enabled.len();
            let shift = 1 + ((fx.uniform() * (n - 1) as f64) as usize).min(n - 2);
            fx.live = (fx.live + shift) % n;
        }
        if fx.depth_on {
            let e = fx.normal();
            fx.wall = WALL_RHO * fx.wall + (1.0 - WALL_RHO * WALL_RHO).sqrt() * e;
        }
        if fx.slow_on {
            let e = fx.normal();
            fx.slow_lagged = fx.slow_hist[fx.slow_pos];
            fx.slow = SLOW_RHO * fx.slow + (1.0 - SLOW_RHO * SLOW_RHO).sqrt() * e;
            fx.slow_hist[fx.slow_pos] = fx.slow;
            fx.slow_pos = (fx.slow_pos + 1) % SLOW_LAG;
        }
        if fx.feature_on {
            // The previous tick's mid closes every 1 s bucket this tick leaves.
            let crossed = (ts.div_euclid(1000) - (ts - iv).div_euclid(1000)).clamp(0, FEATURE_CANDLES as i64);
            for _ in 0..crossed {
                fx.closes.push_back(mid_before);
                if fx.closes.len() > FEATURE_CANDLES {
                    fx.closes.pop_front();
                }
            }
            if crossed > 0 && fx.closes.len() == FEATURE_CANDLES {
                let sma = fx.closes.iter().sum::<f64>() / FEATURE_CANDLES as f64;
                fx.pull = ((sma - mid_before) / FEATURE_SCALE).clamp(-2.0, 2.0);
            }
        }
    }

    /// The drift's tilt expected `j` ticks ahead (`j = 0`: this tick's).
    fn expected_tilt(&self, j: usize) -> f64 {
        let fx = &self.fx;
        let c = &self.cfg;
        let jf = j as f64;
        let term = |e: Effect| match e {
            Effect::Flow => c.signal_strength * DRIFT_BETA * self.flow * libm::pow(FLOW_RHO, jf),
            Effect::Depth => c.depth_effect * DRIFT_BETA * fx.wall * libm::pow(WALL_RHO, jf),
            Effect::Slow => {
                let lagged = if j == 0 { fx.slow_lagged } else { fx.slow_hist[(fx.slow_pos + j - 1) % SLOW_LAG] };
                c.slow_effect * DRIFT_BETA * slow_norm() * (fx.slow * libm::pow(SLOW_RHO, jf) - lagged)
            }
            Effect::Feature => c.feature_effect * DRIFT_BETA * fx.pull,
        };
        if c.regime_switching {
            fx.enabled.get(fx.live).map(|&e| term(e)).unwrap_or(0.0)
        } else {
            fx.enabled.iter().map(|&e| term(e)).sum()
        }
    }

    /// The shown book: the largest of levels 11–20 a side sits where the
    /// wall latent puts it (bids near the top and asks far when `w > 0`).
    fn update_show(&mut self) {
        let w = self.fx.wall;
        let jb = (4.5 - 3.0 * w).round().clamp(0.0, (WALL_SPAN - 1) as f64) as usize;
        let ja = (4.5 + 3.0 * w).round().clamp(0.0, (WALL_SPAN - 1) as f64) as usize;
        place_wall(&self.bid_q, &mut self.show_bid, jb);
        place_wall(&self.ask_q, &mut self.show_ask, ja);
    }

    /// Advances one tick.
    pub fn step(&mut self) -> Result<TickView<'_>, SimError> {
        self.tick += 1;
        let d = self.cfg.depth;
        let ts = self.cfg.start_ms + self.tick as i64 * self.cfg.interval_ms;
        self.old_bid_q.copy_from_slice(&self.bid_q);
        self.old_ask_q.copy_from_slice(&self.ask_q);
        if self.fx.depth_on {
            self.old_show_bid.copy_from_slice(&self.show_bid);
            self.old_show_ask.copy_from_slice(&self.show_ask);
        }
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
        // The planted effects draw from their own stream, and only when on:
        // with all of them off this is today's market to the bit.
        let fx_tilt = if self.fx.active {
            self.advance_effects(ts);
            Some(self.expected_tilt(0))
        } else {
            None
        };

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
            let tilt = match fx_tilt {
                Some(t) => t.clamp(-0.9, 0.9),
                None => (self.cfg.signal_strength * DRIFT_BETA * self.flow).clamp(-0.9, 0.9),
            };
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
        let buy_prob = if self.fx.slow_on {
            1.0 / (1.0 + libm::exp(-(self.flow + SLOW_VIS * self.fx.slow)))
        } else {
            1.0 / (1.0 + libm::exp(-self.flow))
        };
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

        if self.fx.depth_on {
            self.update_show();
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
        let (old_bid_q, bid_q, old_ask_q, ask_q) = if self.fx.depth_on {
            (&self.old_show_bid, &self.show_bid, &self.old_show_ask, &self.show_ask)
        } else {
            (&self.old_bid_q, &self.bid_q, &self.old_ask_q, &self.ask_q)
        };
        // Bids: prices from the highest best down to the lowest bottom.
        let hi = old_best.max(new_best);
        let lo = old_best.min(new_best) - (d - 1);
        let mut p = hi;
        while p >= lo {
            let old = side_qty(old_bid_q, old_best - p);
            let new = side_qty(bid_q, new_best - p);
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
            let old = side_qty(old_ask_q, p - oa);
            let new = side_qty(ask_q, p - na);
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

/// `show` = `q` with the largest of the wall block swapped to block index `j`.
fn place_wall(q: &[i64], show: &mut [i64], j: usize) {
    show.copy_from_slice(q);
    let block = &mut show[WALL_FIRST..WALL_FIRST + WALL_SPAN];
    let mut m = 0;
    for i in 1..WALL_SPAN {
        if block[i] > block[m] {
            m = i;
        }
    }
    block.swap(m, j);
}

impl Forecast {
    /// `[P(DOWN), P(NEUTRAL), P(UP)]` for a threshold of `alpha_ticks`
    /// (α · mid / tick): no move is NEUTRAL, otherwise the normal's tails.
    pub fn probabilities(&self, alpha_ticks: f64) -> [f64; 3] {
        let cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let sd = self.sd_ticks.max(1e-12);
        let up = 1.0 - cdf((alpha_ticks - self.mean_ticks) / sd);
        let down = cdf((-alpha_ticks - self.mean_ticks) / sd);
        let moved = 1.0 - self.p_still;
        [moved * down, self.p_still + moved * (1.0 - up - down).max(0.0), moved * up]
    }

    /// The most probable class, 0 = DOWN, 1 = NEUTRAL, 2 = UP (ties go to NEUTRAL).
    pub fn predict(&self, alpha_ticks: f64) -> usize {
        let p = self.probabilities(alpha_ticks);
        let mut best = 1;
        for c in [0, 2] {
            if p[c] > p[best] {
                best = c;
            }
        }
        best
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

/// Parses a duration as every command takes one (`--duration`, `+30m`
/// bounds): `humantime`'s syntax (`"500ms"`, `"90s"`, `"15m"`, `"2h"`,
/// `"1h 30m"`, `"1d"`), or a bare whole number of seconds (`"60"`).
pub fn parse_duration(text: &str) -> Result<Duration, SimError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| cfg_err("duration", format!("{text:?} is too many seconds")));
    }
    humantime::parse_duration(t).map_err(|e| {
        cfg_err("duration", format!("{text:?}: {e}; write a number with a unit (500ms, 90s, 15m, 2h, 1h 30m, 1d)"))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The depth effect only permutes levels 11–20 of the shown book: every
    /// tick, the shown levels 1–10 are the underlying ones and levels 11–20
    /// hold the same quantities (so the same total) in another order.
    #[test]
    fn the_wall_moves_no_quantity_between_blocks() {
        let cfg = SimConfig { depth_effect: 1.0, signal_strength: 0.0, seed: 5, ..SimConfig::default() };
        let mut sim = MarketSimulator::new(cfg).unwrap();
        let mut moved = 0;
        for _ in 0..5_000 {
            sim.step().unwrap();
            for (shown, under) in [(&sim.show_bid, &sim.bid_q), (&sim.show_ask, &sim.ask_q)] {
                assert_eq!(shown[..WALL_FIRST], under[..WALL_FIRST]);
                assert_eq!(shown[WALL_FIRST + WALL_SPAN..], under[WALL_FIRST + WALL_SPAN..]);
                let (mut a, mut b) = (
                    shown[WALL_FIRST..WALL_FIRST + WALL_SPAN].to_vec(),
                    under[WALL_FIRST..WALL_FIRST + WALL_SPAN].to_vec(),
                );
                moved += usize::from(a != b);
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b);
            }
            // The book the events built is the shown one.
            let snap = sim.snapshot();
            for i in 0..NUM_LEVELS {
                let want = Fixed::from_units(sim.show_bid[i] * sim.cfg.lot_size.units()).to_f64();
                assert!((snap.bids[i].quantity - want).abs() < 1e-9, "level {i}");
            }
        }
        assert!(moved > 1_000, "the wall never moved ({moved})");
    }
}
