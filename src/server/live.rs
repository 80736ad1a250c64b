//! Live mode: exchange feeds turned into a decision per symbol on every tick.
//!
//! For each followed symbol, the Binance protocol client
//! (`market::client::run_client`, the same one the collector uses) keeps its
//! order book. One sampler thread, every `sample_interval`, takes a snapshot
//! of each book exactly as the collector does (synchronized books only),
//! feeds the symbol's trades and snapshot to its streaming
//! [`FeatureEngine`], and keeps that symbol's two windows: the last feature
//! vectors (60 × 112) and the last snapshots (100, normalized with
//! `to_normalized_tensor`). Every symbol whose windows a loaded model needs
//! are full ("warm") is then decided, all of them together
//! ([`decide_together`]: one forward per model, batch = symbols), and each
//! decision is published to its symbol's [`LiveHub`]: the latest, a bounded
//! history, and a broadcast that the server streams as server-sent events.
//! Decision ids are the consensus's, so `/outcome` scores them.
//!
//! Windows hold only consecutive ticks (docs/training.md, "Samples"): a resync of the
//! client, a feature-engine reset or an undefined feature vector empties them
//! and the pipeline warms up again.
//!
//! The sampler is a plain thread: the models are CPU work and must not sit on
//! the async runtime that serves HTTP and the WebSocket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::features::{FeatureEngine, Update, NUM_FEATURES};
use crate::market::client::{run_client, ClientShared};
use crate::market::sequence::FEATURES_PER_LEVEL;
use crate::market::{
    is_exchange_symbol, ClientTuning, Endpoint, Level, RawLOBSequence, Snapshot, Trade, EXCHANGE_SYMBOL_RULE,
    NUM_LEVELS,
};
use crate::server::engine::{Decision, Engine, EngineError, EngineInputs, InputLayout, LobNormalization};

/// One market of live mode: a symbol and the exchange that serves it.
#[derive(Clone, Debug)]
pub struct LiveMarket {
    pub symbol: String,
    pub endpoint: Endpoint,
}

/// Live mode's settings.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// The symbols followed (one exchange connection each); every tick, all
    /// of them are decided together, one forward per model.
    pub markets: Vec<LiveMarket>,
    pub tuning: ClientTuning,
    /// Wall-clock time between samples of the book (the collector's 100 ms).
    pub sample_interval: Duration,
    /// Decisions kept for `/live/history`, per symbol.
    pub history: usize,
}

/// The most symbols one live pipeline follows: each is an exchange
/// connection, and a tick's batch grows with them (the README's "Many
/// symbols" says what a tick costs at 1 to 64: `quorum bench --symbols`).
pub const MAX_LIVE_SYMBOLS: usize = 128;

impl LiveConfig {
    /// Live mode on `symbols`, all from one exchange.
    pub fn on(symbols: &[String], endpoint: &Endpoint) -> LiveConfig {
        let markets = symbols.iter().map(|s| LiveMarket { symbol: s.clone(), endpoint: endpoint.clone() }).collect();
        LiveConfig { markets, ..LiveConfig::default() }
    }

    /// Refuses what cannot run, naming the field.
    pub fn validate(&self) -> Result<(), LiveError> {
        let field = |field, reason: String| Err(LiveError::Config { field, reason });
        if self.sample_interval.is_zero() {
            return field("sample_interval", "must be positive".into());
        }
        if self.markets.is_empty() || self.markets.len() > MAX_LIVE_SYMBOLS {
            return field("symbols", format!("1 to {MAX_LIVE_SYMBOLS} symbols, got {}", self.markets.len()));
        }
        for (i, m) in self.markets.iter().enumerate() {
            if !is_exchange_symbol(&m.symbol) {
                return field("symbol", format!("{:?}: {EXCHANGE_SYMBOL_RULE}", m.symbol));
            }
            if self.markets[..i].iter().any(|o| o.symbol == m.symbol) {
                return field("symbols", format!("{} is named twice", m.symbol));
            }
        }
        Ok(())
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            markets: vec![LiveMarket { symbol: "BTCUSDT".into(), endpoint: Endpoint::default() }],
            tuning: ClientTuning::default(),
            sample_interval: Duration::from_millis(100),
            history: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("live config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("live mode needs a tokio runtime: {0}")]
    NoRuntime(String),
    #[error("starting the sampler thread: {0}")]
    Thread(String),
}

/// Told of every live decision (the server's metrics).
pub trait LiveObserver: Send + Sync {
    fn decision(&self, decision: &Decision, tick_to_decision_us: f64);
}

/// The tick a decision was made on.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct TickInfo {
    pub ts_exchange_ms: i64,
    pub last_update_id: u64,
    pub mid: f64,
}

/// One published decision: its JSON is built once and shared by every reader.
#[derive(Debug)]
pub struct LiveEntry {
    /// The consensus result id (for `/outcome`).
    pub id: u64,
    /// The tick number (1-based count of samples taken).
    pub seq: u64,
    pub json: Arc<str>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Record<'a> {
    id: u64,
    seq: u64,
    symbol: &'a str,
    tick: TickInfo,
    tick_to_decision_us: f64,
    decision: &'a Decision,
}

/// Counters of the live pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LiveCounters {
    /// Samples taken (the book was synchronized).
    pub ticks: u64,
    /// Ticks once warm that made a decision.
    pub decisions: u64,
    /// Ticks once warm that made none (an engine error; logged).
    pub failed_ticks: u64,
    /// Times the windows were emptied (resync, reset, undefined features).
    pub window_breaks: u64,
    pub resyncs: u64,
    pub reconnects: u64,
}

/// Several symbols' counters added up (the server's metrics, the end-of-run line).
impl std::iter::Sum for LiveCounters {
    fn sum<I: Iterator<Item = LiveCounters>>(iter: I) -> LiveCounters {
        iter.fold(LiveCounters::default(), |a, c| LiveCounters {
            ticks: a.ticks + c.ticks,
            decisions: a.decisions + c.decisions,
            failed_ticks: a.failed_ticks + c.failed_ticks,
            window_breaks: a.window_breaks + c.window_breaks,
            resyncs: a.resyncs + c.resyncs,
            reconnects: a.reconnects + c.reconnects,
        })
    }
}

/// `GET /api/ensemble/live/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveStatus {
    pub symbol: String,
    pub warm: bool,
    /// Feature vectors and snapshots in the windows, and how many are needed.
    pub feature_window: (usize, usize),
    pub lob_window: (usize, usize),
    pub completed_candles: u64,
    #[serde(flatten)]
    pub counters: LiveCounters,
}

/// `(feature window, needed)`, `(lob window, needed)`, completed candles.
type Windows = ((usize, usize), (usize, usize), u64);

/// Where live decisions are published; the server reads it.
pub struct LiveHub {
    symbol: String,
    latest: RwLock<Option<Arc<LiveEntry>>>,
    history: Mutex<VecDeque<Arc<LiveEntry>>>,
    capacity: usize,
    tx: broadcast::Sender<Arc<LiveEntry>>,
    ticks: AtomicU64,
    decisions: AtomicU64,
    failed: AtomicU64,
    breaks: AtomicU64,
    warm: AtomicBool,
    windows: Mutex<Windows>,
    client: Mutex<Option<Arc<ClientShared>>>,
}

impl LiveHub {
    pub fn new(symbol: &str, history: usize) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            symbol: symbol.to_owned(),
            latest: RwLock::new(None),
            history: Mutex::new(VecDeque::with_capacity(history.min(1 << 16))),
            capacity: history.max(1),
            tx: broadcast::channel(1024).0,
            ticks: AtomicU64::new(0),
            decisions: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            breaks: AtomicU64::new(0),
            warm: AtomicBool::new(false),
            windows: Mutex::new(((0, 0), (0, 0), 0)),
            client: Mutex::new(None),
        })
    }

    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    pub fn latest(&self) -> Option<Arc<LiveEntry>> {
        self.latest.read().clone()
    }

    /// The last `limit` decisions, oldest first.
    pub fn history(&self, limit: usize) -> Vec<Arc<LiveEntry>> {
        let h = self.history.lock();
        h.iter().skip(h.len().saturating_sub(limit)).cloned().collect()
    }

    /// Every decision published from now on. A subscriber that falls more
    /// than 1024 behind loses the oldest (and is told so).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEntry>> {
        self.tx.subscribe()
    }

    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> LiveCounters {
        let client = self.client.lock().as_ref().map(|c| c.counters.stats()).unwrap_or_default();
        LiveCounters {
            ticks: self.ticks.load(Ordering::Relaxed),
            decisions: self.decisions.load(Ordering::Relaxed),
            failed_ticks: self.failed.load(Ordering::Relaxed),
            window_breaks: self.breaks.load(Ordering::Relaxed),
            resyncs: client.resyncs,
            reconnects: client.reconnects,
        }
    }

    pub fn status(&self) -> LiveStatus {
        let (feature_window, lob_window, completed_candles) = *self.windows.lock();
        LiveStatus {
            symbol: self.symbol.clone(),
            warm: self.is_warm(),
            feature_window,
            lob_window,
            completed_candles,
            counters: self.counters(),
        }
    }

    fn publish(&self, entry: Arc<LiveEntry>) {
        {
            let mut h = self.history.lock();
            if h.len() >= self.capacity {
                h.pop_front();
            }
            h.push_back(entry.clone());
        }
        *self.latest.write() = Some(entry.clone());
        // No subscriber is not an error.
        let _ = self.tx.send(entry);
    }
}

/// The per-tick work of live mode, without the network: feed it samples and
/// trades in exchange-time order (benchmarks and tests drive it directly).
pub struct LiveState {
    engine: Arc<Engine>,
    hub: Arc<LiveHub>,
    observer: Option<Arc<dyn LiveObserver>>,
    features: FeatureEngine,
    feature_win: VecDeque<[f32; NUM_FEATURES]>,
    lob_win: VecDeque<Snapshot>,
    /// Trades received after the last sample's exchange time: they belong to the next tick.
    pending: Vec<Trade>,
    seq: u64,
    /// The loaded models' inputs and the window lengths they need, as of the last [`LiveState::advance`].
    layout: InputLayout,
    needs: (usize, usize),
}

/// What one tick did to the windows, before any decision.
#[derive(Debug, Clone, Copy)]
pub struct Advanced {
    /// Every window a loaded model needs is full: [`LiveState::decide`] can run.
    pub warm: bool,
    /// The feature vector this tick produced (none while warming up, or when undefined).
    pub features: Option<[f32; NUM_FEATURES]>,
}

/// Windows kept at least this long (the defaults of docs/training.md, "Samples"), longer if a loaded config asks.
const MIN_FEATURE_WINDOW: usize = 60;
const MIN_LOB_WINDOW: usize = 100;

impl LiveState {
    pub fn new(engine: Arc<Engine>, hub: Arc<LiveHub>, observer: Option<Arc<dyn LiveObserver>>) -> LiveState {
        LiveState {
            engine,
            hub,
            observer,
            features: FeatureEngine::new().quiet(),
            feature_win: VecDeque::new(),
            lob_win: VecDeque::new(),
            pending: Vec::new(),
            seq: 0,
            layout: InputLayout::default(),
            needs: (0, 0),
        }
    }

    /// Empties the windows: what follows is not consecutive with what was in them.
    pub fn break_windows(&mut self) {
        if !self.feature_win.is_empty() || !self.lob_win.is_empty() {
            self.hub.breaks.fetch_add(1, Ordering::Relaxed);
        }
        self.feature_win.clear();
        self.lob_win.clear();
        self.hub.warm.store(false, Ordering::Relaxed);
    }

    /// The windows the loaded models need: `(features, lob)` lengths, 0 when
    /// no loaded model reads that input (or its shape is not the live feed's).
    fn needs(layout: &InputLayout) -> (usize, usize) {
        let f = layout.features.filter(|&[_, n]| n == NUM_FEATURES).map_or(0, |[t, _]| t);
        let l = layout.lob.filter(|&[_, n, k]| n == NUM_LEVELS && k == FEATURES_PER_LEVEL).map_or(0, |[t, _, _]| t);
        (f, l)
    }

    /// One tick: `trades` received since the last call, then the sampled
    /// book. Returns the decision published, if the pipeline is warm.
    pub fn on_sample(&mut self, trades: &[Trade], snap: &Snapshot, sampled_at: Instant) -> Option<Arc<LiveEntry>> {
        if !self.advance(trades, snap).warm {
            return None;
        }
        self.decide(snap, sampled_at).map(|(entry, _)| entry)
    }

    /// The first half of a tick: the trades and the snapshot into the
    /// feature engine and the windows. `quorum evaluate` calls it on every
    /// stored tick and [`LiveState::decide`] only on those it scores.
    pub fn advance(&mut self, trades: &[Trade], snap: &Snapshot) -> Advanced {
        self.seq += 1;
        self.hub.ticks.fetch_add(1, Ordering::Relaxed);
        // Trades up to the snapshot's time go before it; later ones wait for the next tick.
        self.pending.extend_from_slice(trades);
        self.pending.sort_by_key(|t| (t.ts_exchange_ms, t.trade_id));
        let cut = self.pending.partition_point(|t| t.ts_exchange_ms <= snap.ts_exchange_ms);
        for t in self.pending.drain(..cut) {
            // A refused trade is counted by the engine; the tick goes on.
            let _ = self.features.push_trade(&t);
        }
        let layout = self.engine.input_layout();
        let (need_f, need_l) = Self::needs(&layout);
        let keep_f = need_f.max(MIN_FEATURE_WINDOW);
        // One more than the window: the `snapshot` normalization's first row
        // takes its price reference from the snapshot before it.
        let keep_l = need_l.max(MIN_LOB_WINDOW) + 1;
        let mut features = None;
        match self.features.push_snapshot(snap) {
            Update::Rejected(_) => return Advanced { warm: false, features: None },
            Update::Ready(v) => {
                let mut row = [0f32; NUM_FEATURES];
                for (o, &x) in row.iter_mut().zip(v.iter()) {
                    *o = x as f32;
                }
                if self.feature_win.len() >= keep_f {
                    self.feature_win.pop_front();
                }
                self.feature_win.push_back(row);
                features = Some(row);
            }
            Update::WarmingUp { .. } | Update::Undefined { .. } => {
                if !self.feature_win.is_empty() {
                    self.hub.breaks.fetch_add(1, Ordering::Relaxed);
                }
                self.feature_win.clear();
            }
        }
        while self.lob_win.len() >= keep_l {
            self.lob_win.pop_front();
        }
        self.lob_win.push_back(*snap);
        // The window held, without the snapshot kept before it.
        let held_l = self.lob_win.len().min(keep_l - 1);
        *self.hub.windows.lock() =
            ((self.feature_win.len(), need_f), (held_l, need_l), self.features.completed_candles());

        let loaded = need_f > 0 || need_l > 0;
        // A TLOB that reads aux waits for a feature vector too: run without
        // it, a model trained with aux would answer something else.
        let need_aux = need_l > 0 && layout.aux == Some(NUM_FEATURES);
        let warm = loaded
            && self.feature_win.len() >= need_f
            && self.lob_win.len() >= need_l
            && (!need_aux || !self.feature_win.is_empty());
        self.hub.warm.store(warm, Ordering::Relaxed);
        self.layout = layout;
        self.needs = (need_f, need_l);
        Advanced { warm, features }
    }

    /// The second half of a tick, once [`LiveState::advance`] said warm: the
    /// engine's decision on the windows, published to the hub. Returns the
    /// published entry and the decision itself.
    pub fn decide(&mut self, snap: &Snapshot, sampled_at: Instant) -> Option<(Arc<LiveEntry>, Decision)> {
        decide_together(&mut [(self, snap, sampled_at)]).pop().flatten()
    }

    /// Publishes the engine's answer on this tick's windows to the hub.
    fn publish(
        &mut self,
        decision: Result<Decision, EngineError>,
        snap: &Snapshot,
        sampled_at: Instant,
    ) -> Option<(Arc<LiveEntry>, Decision)> {
        let tick = TickInfo {
            ts_exchange_ms: snap.ts_exchange_ms,
            last_update_id: snap.last_update_id,
            mid: snap.mid().unwrap_or(f64::NAN),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                let n = self.hub.failed.fetch_add(1, Ordering::Relaxed);
                if n < 10 {
                    tracing::warn!(symbol = %self.hub.symbol, tick = self.seq, error = %e, "no decision");
                }
                return None;
            }
        };
        let tick_to_decision_us = sampled_at.elapsed().as_secs_f64() * 1e6;
        let record = Record {
            id: decision.result.id,
            seq: self.seq,
            symbol: &self.hub.symbol,
            tick,
            tick_to_decision_us,
            decision: &decision,
        };
        let json: Arc<str> = match serde_json::to_string(&record) {
            Ok(s) => s.into(),
            Err(e) => {
                // Only a non-finite number can fail here (the mid of a book without one).
                self.hub.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(symbol = %self.hub.symbol, tick = self.seq, error = %e, "decision not serializable");
                return None;
            }
        };
        let entry = Arc::new(LiveEntry { id: decision.result.id, seq: self.seq, json });
        // Counted before it is published: whoever has seen a decision finds
        // it in the counters and the metrics too.
        self.hub.decisions.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.decision(&decision, sampled_at.elapsed().as_secs_f64() * 1e6);
        }
        self.hub.publish(entry.clone());
        Some((entry, decision))
    }

    fn inputs(&self, layout: &InputLayout, need_f: usize, need_l: usize) -> EngineInputs {
        let features = (need_f > 0).then(|| {
            let mut v = Vec::with_capacity(need_f * NUM_FEATURES);
            for row in self.feature_win.iter().skip(self.feature_win.len() - need_f) {
                v.extend_from_slice(row);
            }
            v
        });
        let lob = (need_l > 0).then(|| {
            let first = self.lob_win.len() - need_l;
            let snaps: Vec<Snapshot> = self.lob_win.iter().skip(first).copied().collect();
            let before = first.checked_sub(1).and_then(|i| self.lob_win.get(i));
            // A snapshot in the window always has a mid (the book was valid and synced).
            let seq = RawLOBSequence::new(snaps);
            match layout.lob_normalization {
                LobNormalization::Window => seq.map(|s| s.to_normalized_tensor()),
                LobNormalization::Snapshot => seq.map(|s| s.to_snapshot_tensor(before)),
            }
            .unwrap_or_default()
        });
        // aux is the feature vector at the tick (docs/training.md, "Samples"): only once one exists.
        let aux =
            layout.aux.filter(|&a| a == NUM_FEATURES).and_then(|_| self.feature_win.back()).map(|row| row.to_vec());
        EngineInputs { features, lob, aux }
    }
}

/// The second half of a tick for several symbols at once, each state warm
/// ([`LiveState::advance`]): every symbol's windows go into one engine call,
/// so each model runs once over all of them (batch = symbols, see
/// [`Engine::predict_many`]), and each decision is published to its own
/// symbol's hub, stamped with its own sample time. The states must share one
/// engine (the first one's runs). Returns, per state, what it published.
pub fn decide_together(ticks: &mut [(&mut LiveState, &Snapshot, Instant)]) -> Vec<Option<(Arc<LiveEntry>, Decision)>> {
    let Some(engine) = ticks.first().map(|(s, _, _)| s.engine.clone()) else { return Vec::new() };
    debug_assert!(ticks.iter().all(|(s, _, _)| Arc::ptr_eq(&s.engine, &engine)), "one engine for every symbol");
    let inputs = ticks.iter().map(|(s, _, _)| s.inputs(&s.layout, s.needs.0, s.needs.1)).collect();
    let decisions = engine.predict_many(inputs);
    ticks.iter_mut().zip(decisions).map(|((state, snap, at), d)| state.publish(d, snap, *at)).collect()
}

/// A running live pipeline; dropping it stops it.
pub struct LiveRunner {
    hubs: Vec<Arc<LiveHub>>,
    stop_tx: watch::Sender<bool>,
    stop_flag: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Result<(), crate::market::ClientError>>>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl LiveRunner {
    /// Connects to every market of `cfg` and starts sampling them. Needs a tokio runtime.
    pub fn start(
        cfg: LiveConfig,
        engine: Arc<Engine>,
        observer: Option<Arc<dyn LiveObserver>>,
    ) -> Result<LiveRunner, LiveError> {
        cfg.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|e| LiveError::NoRuntime(e.to_string()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut feeds = Vec::with_capacity(cfg.markets.len());
        let mut clients = Vec::with_capacity(cfg.markets.len());
        for m in &cfg.markets {
            let hub = LiveHub::new(&m.symbol, cfg.history);
            let shared = Arc::new(ClientShared::new(&m.symbol));
            *hub.client.lock() = Some(shared.clone());
            clients.push(rt.spawn(run_client(m.endpoint.clone(), cfg.tuning.clone(), shared.clone(), stop_rx.clone())));
            feeds.push(Feed::new(LiveState::new(engine.clone(), hub, observer.clone()), shared));
        }
        let hubs = feeds.iter().map(|f| f.state.hub.clone()).collect();
        let stop_flag = Arc::new(AtomicBool::new(false));
        let flag = stop_flag.clone();
        let interval = cfg.sample_interval;
        let name = match &cfg.markets[..] {
            [one] => format!("live-{}", one.symbol),
            more => format!("live-{}-symbols", more.len()),
        };
        let sampler = std::thread::Builder::new()
            .name(name)
            .spawn(move || sample_loop(&mut feeds, interval, &flag))
            .map_err(|e| LiveError::Thread(e.to_string()))?;
        Ok(LiveRunner { hubs, stop_tx, stop_flag, clients, sampler: Some(sampler) })
    }

    /// Each symbol's hub, in the order of the config's markets.
    pub fn hubs(&self) -> Vec<Arc<LiveHub>> {
        self.hubs.clone()
    }

    /// Every symbol's counters added up.
    pub fn counters(&self) -> LiveCounters {
        self.hubs.iter().map(|h| h.counters()).sum()
    }

    /// Stops the clients and the sampler and waits for them.
    pub async fn stop(mut self) {
        self.signal();
        for c in std::mem::take(&mut self.clients) {
            let _ = c.await;
        }
        if let Some(s) = self.sampler.take() {
            let _ = tokio::task::spawn_blocking(move || s.join()).await;
        }
    }

    fn signal(&self) {
        let _ = self.stop_tx.send(true);
        self.stop_flag.store(true, Ordering::SeqCst);
    }
}

impl Drop for LiveRunner {
    fn drop(&mut self) {
        self.signal();
        for c in &self.clients {
            c.abort();
        }
    }
}

/// One symbol in the sampler: its pipeline, its client's book, and this tick's sample.
struct Feed {
    state: LiveState,
    shared: Arc<ClientShared>,
    resyncs: u64,
    snap: Snapshot,
    /// When this tick's sample was taken, if it left the pipeline warm.
    warm_at: Option<Instant>,
}

impl Feed {
    fn new(state: LiveState, shared: Arc<ClientShared>) -> Feed {
        let mut snap = Snapshot::empty(0, 0, 0);
        for lvl in 0..NUM_LEVELS {
            snap.bids[lvl] = Level::MISSING;
            snap.asks[lvl] = Level::MISSING;
        }
        let resyncs = shared.counters.resyncs.load(Ordering::Relaxed);
        Feed { state, shared, resyncs, snap, warm_at: None }
    }

    /// Samples the book and advances the windows; true when warm.
    fn sample(&mut self) -> bool {
        self.warm_at = None;
        let r = self.shared.counters.resyncs.load(Ordering::Relaxed);
        if r != self.resyncs {
            self.resyncs = r;
            self.state.break_windows();
        }
        let sampled_at = Instant::now();
        if !take_sample(&self.shared, &mut self.snap) {
            return false;
        }
        let trades = std::mem::take(&mut *self.shared.trades.lock());
        if self.state.advance(&trades, &self.snap).warm {
            self.warm_at = Some(sampled_at);
        }
        self.warm_at.is_some()
    }
}

/// Takes one sample of the shared book as the collector does: only when it
/// is synchronized and valid, stamped with its last event's times.
fn take_sample(shared: &ClientShared, out: &mut Snapshot) -> bool {
    {
        let mut live = shared.live.lock();
        if !live.book.is_synced() || live.last_event_ms == 0 || live.book.snapshot_into(out).is_err() {
            return false;
        }
        out.ts_exchange_ms = live.last_event_ms;
        out.ts_local_ns = live.last_recv_ns;
    }
    out.validate().is_ok()
}

/// Every `interval`: a sample of each symbol's book, then one decision for
/// all the warm ones together ([`decide_together`]).
fn sample_loop(feeds: &mut [Feed], interval: Duration, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (a slow tick): skip the missed samples rather than burst.
            next = now;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut warm = 0;
        for f in feeds.iter_mut() {
            warm += usize::from(f.sample());
        }
        if warm == 0 {
            continue;
        }
        let mut ticks: Vec<(&mut LiveState, &Snapshot, Instant)> = Vec::with_capacity(warm);
        for f in feeds.iter_mut() {
            if let Some(at) = f.warm_at {
                ticks.push((&mut f.state, &f.snap, at));
            }
        }
        decide_together(&mut ticks);
    }
}
