//! `RawLOBCollector`: samples the book the Binance client maintains every
//! `collection_interval` into a ring buffer, and appends the snapshots (and
//! the trades) to the Parquet store every `save_interval` snapshots and at
//! `stop()` (docs/data.md, "The collector").
//!
//! A stored snapshot's `last_update_id` is the book's update id when it was
//! sampled, `ts_exchange_ms` the exchange time (`E`) of the last diff event
//! applied to it, and `ts_local_ns` the local time that event arrived (so the
//! two times describe the same event; an unchanged book sampled twice gives
//! two rows with the same times). Samples are
//! taken only while the book is synchronized; a crossed or invalid book is
//! refused and counted.
//!
//! Each save is a separate set of files written through the store's atomic
//! writers (temporary name, fsync, rename): a crash loses at most the
//! snapshots since the last completed save.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{run_client, ClientError, ClientShared, ClientStats, ClientTuning, Endpoint};
use super::recording::{FrameRecorder, RecorderStats};
use super::sequence::RawLOBSequence;
use super::store::{write_snapshots, write_trades, StoreError};
use super::types::{is_exchange_symbol, Level, Snapshot, Trade, EXCHANGE_SYMBOL_RULE, NUM_LEVELS};

/// The collector's settings (docs/data.md, "The collector").
#[derive(Clone, Debug)]
pub struct RawLOBConfig {
    pub symbol: String,
    /// Levels a side kept in each snapshot (1..=20); deeper ones are stored as missing.
    pub num_levels: usize,
    /// Seconds between samples.
    pub collection_interval: f64,
    pub sequence_length: usize,
    pub buffer_size: usize,
    /// Snapshots between saves to Parquet.
    pub save_interval: usize,
    pub endpoint: Endpoint,
    pub out_dir: PathBuf,
    pub tuning: ClientTuning,
    /// Also write every frame as received to this folder (hftbacktest's
    /// format, gzip, hourly files: [`FrameRecorder`]).
    pub record_frames: Option<PathBuf>,
}

impl Default for RawLOBConfig {
    fn default() -> Self {
        RawLOBConfig {
            symbol: "BTCUSDT".into(),
            num_levels: NUM_LEVELS,
            collection_interval: 0.1,
            sequence_length: 100,
            buffer_size: 10_000,
            save_interval: 1_000,
            endpoint: Endpoint::default(),
            out_dir: PathBuf::from("data/raw_lob"),
            tuning: ClientTuning::default(),
            record_frames: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("collector config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("the collector is already running")]
    AlreadyRunning,
    #[error("start() needs a tokio runtime: {0}")]
    NoRuntime(String),
    #[error("saving to Parquet: {0}")]
    Store(#[from] StoreError),
    #[error("client: {0}")]
    Client(#[from] ClientError),
    #[error("collector task failed: {0}")]
    Task(String),
    #[error("recording frames under {path}: {source}")]
    Recorder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn cfg_err(field: &'static str, reason: impl Into<String>) -> CollectorError {
    CollectorError::Config { field, reason: reason.into() }
}

impl RawLOBConfig {
    pub fn validate(&self) -> Result<(), CollectorError> {
        if !is_exchange_symbol(&self.symbol) {
            return Err(cfg_err("symbol", EXCHANGE_SYMBOL_RULE));
        }
        if !(1..=NUM_LEVELS).contains(&self.num_levels) {
            return Err(cfg_err("num_levels", format!("{} is not in [1, {NUM_LEVELS}]", self.num_levels)));
        }
        if !(self.collection_interval.is_finite() && self.collection_interval >= 0.001) {
            return Err(cfg_err(
                "collection_interval",
                format!("{} s is not at least 0.001 s", self.collection_interval),
            ));
        }
        if self.sequence_length == 0 {
            return Err(cfg_err("sequence_length", "must be positive"));
        }
        if self.buffer_size < self.sequence_length {
            return Err(cfg_err("buffer_size", "must be at least sequence_length"));
        }
        if self.save_interval == 0 {
            return Err(cfg_err("save_interval", "must be positive"));
        }
        if self.tuning.stale_after.is_zero() {
            return Err(cfg_err("tuning.stale_after", "must be positive"));
        }
        for (field, url, schemes) in [
            ("endpoint.ws_url", &self.endpoint.ws_url, ["ws://", "wss://"]),
            ("endpoint.rest_url", &self.endpoint.rest_url, ["http://", "https://"]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(cfg_err(field, format!("{url:?} must start with {} or {}", schemes[0], schemes[1])));
            }
        }
        Ok(())
    }
}

/// Counters of the collector itself.
#[derive(Debug, Default)]
struct CollectorCounters {
    samples: AtomicU64,
    samples_unsynced: AtomicU64,
    rejected_books: AtomicU64,
    saved_snapshots: AtomicU64,
    saved_trades: AtomicU64,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
    save_errors: AtomicU64,
}

/// What the collector has done so far (client counters included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorStats {
    /// Snapshots taken into the ring buffer.
    pub samples: u64,
    /// Sampling instants skipped because the book was not synchronized.
    pub samples_unsynced: u64,
    /// Books refused at sampling (crossed or invalid), plus snapshots the client refused.
    pub rejected_books: u64,
    pub saved_snapshots: u64,
    pub saved_trades: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub save_errors: u64,
    pub client: ClientStats,
}

struct Running {
    stop_tx: watch::Sender<bool>,
    client: JoinHandle<Result<(), ClientError>>,
    sampler: JoinHandle<Result<(), CollectorError>>,
}

/// The collector (see the module docs).
pub struct RawLOBCollector {
    config: RawLOBConfig,
    shared: Arc<ClientShared>,
    ring: Arc<Mutex<VecDeque<Snapshot>>>,
    counters: Arc<CollectorCounters>,
    running: Option<Running>,
    recorded: Mutex<Option<RecorderStats>>,
}

impl RawLOBCollector {
    pub fn new(config: RawLOBConfig) -> Result<RawLOBCollector, CollectorError> {
        config.validate()?;
        Ok(RawLOBCollector {
            shared: Arc::new(ClientShared::new(&config.symbol)),
            ring: Arc::new(Mutex::new(VecDeque::with_capacity(config.buffer_size))),
            counters: Arc::new(CollectorCounters::default()),
            running: None,
            recorded: Mutex::new(None),
            config,
        })
    }

    pub fn config(&self) -> &RawLOBConfig {
        &self.config
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Connects and starts sampling. Needs a tokio runtime.
    pub async fn start(&mut self) -> Result<(), CollectorError> {
        if self.running.is_some() {
            return Err(CollectorError::AlreadyRunning);
        }
        tokio::runtime::Handle::try_current().map_err(|e| CollectorError::NoRuntime(e.to_string()))?;
        std::fs::create_dir_all(&self.config.out_dir)
            .map_err(|e| StoreError::Io { path: self.config.out_dir.clone(), source: e })?;
        // A collector killed mid-save leaves a hidden temporary file; readers skip it, but
        // it would stay forever.
        let stale = super::store::remove_stale_temp_files(&self.config.out_dir, &self.config.symbol)?;
        if !stale.is_empty() {
            tracing::info!(
                symbol = %self.config.symbol,
                files = stale.len(),
                "removed temporary files of a writer that no longer runs"
            );
        }
        if let Some(dir) = &self.config.record_frames {
            let recorder = FrameRecorder::start(dir, &self.config.symbol)
                .map_err(|source| CollectorError::Recorder { path: dir.clone(), source })?;
            *self.shared.recorder.lock() = Some(recorder);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let client = tokio::spawn(run_client(
            self.config.endpoint.clone(),
            self.config.tuning.clone(),
            self.shared.clone(),
            stop_rx.clone(),
        ));
        let sampler = tokio::spawn(sample_loop(
            self.config.clone(),
            self.shared.clone(),
            self.ring.clone(),
            self.counters.clone(),
            stop_rx,
        ));
        self.running = Some(Running { stop_tx, client, sampler });
        Ok(())
    }

    /// Stops the client and the sampler and writes every snapshot and trade
    /// not yet saved; returns once they are on disk.
    pub async fn stop(&mut self) -> Result<CollectorStats, CollectorError> {
        let Some(r) = self.running.take() else {
            return Ok(self.stats());
        };
        let _ = r.stop_tx.send(true);
        let client = r.client.await.map_err(|e| CollectorError::Task(e.to_string()))?;
        let sampler = r.sampler.await.map_err(|e| CollectorError::Task(e.to_string()))?;
        let recorder = self.shared.recorder.lock().take();
        if let Some(recorder) = recorder {
            let dir = self.config.record_frames.clone().unwrap_or_default();
            let stats = tokio::task::spawn_blocking(move || recorder.finish())
                .await
                .map_err(|e| CollectorError::Task(e.to_string()))?
                .map_err(|source| CollectorError::Recorder { path: dir, source })?;
            *self.recorded.lock() = Some(stats);
        }
        client?;
        sampler?;
        Ok(self.stats())
    }

    /// Whether the client has given up for good (a refusal retrying cannot
    /// cure): `stop()` then returns its error.
    pub fn client_failed(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.client.is_finished())
    }

    /// What the frame recorder wrote, once `stop()` has closed it.
    pub fn recorded_frames(&self) -> Option<RecorderStats> {
        self.recorded.lock().clone()
    }

    /// Snapshots in the ring buffer.
    pub fn get_buffer_size(&self) -> usize {
        self.ring.lock().len()
    }

    /// The last `sequence_length` snapshots, or `None` while there are fewer
    /// (or the last one has no mid price).
    pub fn get_latest_sequence(&self) -> Option<RawLOBSequence> {
        let ring = self.ring.lock();
        let n = self.config.sequence_length;
        if ring.len() < n {
            return None;
        }
        RawLOBSequence::new(ring.iter().skip(ring.len() - n).copied().collect()).ok()
    }

    /// A copy of the ring buffer, oldest first.
    pub fn buffer(&self) -> Vec<Snapshot> {
        self.ring.lock().iter().copied().collect()
    }

    /// Writes the ring buffer's snapshots under `dir/<symbol>/<day>/` (atomically).
    pub fn export_to_parquet(&self, dir: &Path) -> Result<Vec<PathBuf>, CollectorError> {
        let rows = self.buffer();
        Ok(write_snapshots(dir, &self.config.symbol, &rows)?)
    }

    pub fn stats(&self) -> CollectorStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        let client = self.shared.counters.stats();
        CollectorStats {
            samples: g(&c.samples),
            samples_unsynced: g(&c.samples_unsynced),
            rejected_books: g(&c.rejected_books) + client.rejected_books,
            saved_snapshots: g(&c.saved_snapshots),
            saved_trades: g(&c.saved_trades),
            files_written: g(&c.files_written),
            bytes_written: g(&c.bytes_written),
            save_errors: g(&c.save_errors),
            client,
        }
    }
}

/// One save: the snapshots and trades not yet written.
fn save(
    out_dir: &Path,
    symbol: &str,
    snaps: &[Snapshot],
    trades: &[Trade],
    counters: &CollectorCounters,
) -> Result<(), StoreError> {
    let mut files = Vec::new();
    if !snaps.is_empty() {
        files.extend(write_snapshots(out_dir, symbol, snaps)?);
        counters.saved_snapshots.fetch_add(snaps.len() as u64, Ordering::Relaxed);
    }
    if !trades.is_empty() {
        files.extend(write_trades(out_dir, symbol, trades)?);
        counters.saved_trades.fetch_add(trades.len() as u64, Ordering::Relaxed);
    }
    let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    counters.files_written.fetch_add(files.len() as u64, Ordering::Relaxed);
    counters.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

type SaveTask = JoinHandle<Result<(), StoreError>>;

async fn finish_save(task: Option<SaveTask>, counters: &CollectorCounters) -> Result<(), CollectorError> {
    let Some(t) = task else {
        return Ok(());
    };
    match t.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            counters.save_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "save failed");
            Err(e.into())
        }
        Err(e) => {
            counters.save_errors.fetch_add(1, Ordering::Relaxed);
            Err(CollectorError::Task(e.to_string()))
        }
    }
}

fn spawn_save(
    cfg: &RawLOBConfig,
    snaps: Vec<Snapshot>,
    trades: Vec<Trade>,
    counters: Arc<CollectorCounters>,
) -> SaveTask {
    let out = cfg.out_dir.clone();
    let symbol = cfg.symbol.clone();
    tokio::task::spawn_blocking(move || save(&out, &symbol, &snaps, &trades, &counters))
}

/// What sampling the shared book gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sample {
    Taken(Box<Snapshot>),
    /// The book is not synchronized (or no event has been applied yet).
    Unsynced,
    /// The book is crossed.
    Crossed(String),
    /// A level is invalid (a non-finite or non-positive value).
    Invalid(String),
}

/// Samples the shared book: its top `num_levels` levels a side (deeper ones
/// missing), stamped with the exchange time and local receive time of the
/// last event applied. The collector and `quorum import` both sample here.
pub(crate) fn sample_book(shared: &ClientShared, num_levels: usize) -> Sample {
    let mut snap = Snapshot::empty(0, 0, 0);
    {
        let mut live = shared.live.lock();
        if !live.book.is_synced() || live.last_event_ms == 0 {
            return Sample::Unsynced;
        }
        if let Err(e) = live.book.snapshot_into(&mut snap) {
            return Sample::Crossed(e.to_string());
        }
        snap.ts_exchange_ms = live.last_event_ms;
        snap.ts_local_ns = live.last_recv_ns;
    }
    for i in num_levels..NUM_LEVELS {
        snap.bids[i] = Level::MISSING;
        snap.asks[i] = Level::MISSING;
    }
    if let Err(e) = snap.validate() {
        return Sample::Invalid(format!("refused book at update id {}: {e}", snap.last_update_id));
    }
    Sample::Taken(Box::new(snap))
}

/// Takes one sample of the shared book, if it is synchronized and valid.
fn take_sample(cfg: &RawLOBConfig, shared: &ClientShared, counters: &CollectorCounters) -> Option<Snapshot> {
    match sample_book(shared, cfg.num_levels) {
        Sample::Taken(snap) => Some(*snap),
        Sample::Unsynced => {
            counters.samples_unsynced.fetch_add(1, Ordering::Relaxed);
            None
        }
        Sample::Crossed(_) => {
            counters.rejected_books.fetch_add(1, Ordering::Relaxed);
            None
        }
        Sample::Invalid(reason) => {
            counters.rejected_books.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(symbol = %cfg.symbol, "book not stored: {reason}");
            None
        }
    }
}

async fn sample_loop(
    cfg: RawLOBConfig,
    shared: Arc<ClientShared>,
    ring: Arc<Mutex<VecDeque<Snapshot>>>,
    counters: Arc<CollectorCounters>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CollectorError> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(cfg.collection_interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut unsaved: Vec<Snapshot> = Vec::with_capacity(cfg.save_interval);
    let mut in_flight: Option<SaveTask> = None;
    let mut first_error: Option<CollectorError> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        let Some(snap) = take_sample(&cfg, &shared, &counters) else {
            continue;
        };
        {
            let mut r = ring.lock();
            if r.len() >= cfg.buffer_size {
                r.pop_front();
            }
            r.push_back(snap);
        }
        counters.samples.fetch_add(1, Ordering::Relaxed);
        unsaved.push(snap);
        if unsaved.len() >= cfg.save_interval {
            // One save at a time, in order.
            if let Err(e) = finish_save(in_flight.take(), &counters).await {
                first_error.get_or_insert(e);
            }
            let trades = std::mem::take(&mut *shared.trades.lock());
            in_flight = Some(spawn_save(&cfg, std::mem::take(&mut unsaved), trades, counters.clone()));
        }
    }
    if let Err(e) = finish_save(in_flight.take(), &counters).await {
        first_error.get_or_insert(e);
    }
    let trades = std::mem::take(&mut *shared.trades.lock());
    if !unsaved.is_empty() || !trades.is_empty() {
        if let Err(e) = finish_save(Some(spawn_save(&cfg, unsaved, trades, counters.clone())), &counters).await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
