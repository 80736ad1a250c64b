//! `quorum import`: recorded Binance frames (hftbacktest, cryptofeed) into
//! the raw store, exactly as `quorum collect` writes it (docs/data.md,
//! "Importing recorded frames").
//!
//! One code path with the live client: every frame of the symbol goes
//! through [`client::handle_event`] and every REST snapshot through
//! [`client::load_snapshot`], so the book's sequence rules, its buffering
//! before a snapshot and its resync after a gap are the collector's own; the
//! rows are taken by the collector's [`sample_book`]. What differs is only
//! the clock: the collector samples every interval of local time, the
//! importer every interval of *exchange* time. The row for grid time `t`
//! holds the book after every diff with `E <= t`, stamped (as the
//! collector stamps it) with the `E` and receive time of the last diff
//! applied.
//!
//! What the live client would do by fetching a new snapshot (after a gap,
//! a refused event, or a snapshot older than the stream) the importer can
//! only do with a later snapshot in the recording: until one comes, the
//! segment has ended and no row is written. A gap is never papered over.
//!
//! Work is streaming: lines are read one at a time (bounded), rows go to the
//! store's writers as they are made, and the book, the diff buffer and the
//! statistics are bounded, so memory does not grow with the file's length.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use serde::Serialize;

use super::binance::{parse_combined, parse_depth_snapshot, BookTicker, PriceLevel, StreamEvent};
use super::book::BookError;
use super::client::{handle_event, load_snapshot, ClientShared, MessageAction};
use super::collector::{sample_book, Sample};
pub use super::recording::FileReport;
use super::recording::{FrameKind, FrameSource, RecordFormat};
use super::store::{SnapshotWriter, StoreError, TradeWriter};
use super::types::{is_exchange_symbol, EXCHANGE_SYMBOL_RULE, NUM_LEVELS};

/// What to import and how to sample it.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub format: RecordFormat,
    /// The one symbol imported (a recording may interleave several).
    pub symbol: String,
    /// The store's root (`<out>/<symbol>/<day>/…`).
    pub out_dir: PathBuf,
    /// Exchange-time milliseconds between stored snapshots (the collector's `--interval-ms`).
    pub interval_ms: i64,
    /// Levels a side kept (1..=20); deeper ones are stored as missing.
    pub num_levels: usize,
    /// A silence of the stream longer than this (exchange time, between two
    /// diffs of a synced book) is not filled with repeated rows.
    pub max_fill_ms: i64,
}

impl ImportOptions {
    pub fn new(format: RecordFormat, symbol: &str, out_dir: impl Into<PathBuf>) -> ImportOptions {
        ImportOptions {
            format,
            symbol: symbol.to_ascii_uppercase(),
            out_dir: out_dir.into(),
            interval_ms: 100,
            num_levels: NUM_LEVELS,
            max_fill_ms: 60_000,
        }
    }
}

/// Why an import could not run at all. Problems with single lines or files
/// are not errors: they are listed in [`ImportReport::problems`].
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import option {field}: {reason}")]
    Option { field: &'static str, reason: String },
    #[error("no input file given")]
    NoFiles,
    #[error("writing the store: {0}")]
    Store(#[from] StoreError),
}

/// Rows per Parquet row group of an import: the writer holds one row group
/// in memory, so small ones keep memory flat however long the recording (the
/// collector's saves of 1,000 snapshots make row groups no larger).
const IMPORT_ROW_GROUP_ROWS: usize = 8192;
/// Largest number of problems kept word for word (the rest are counted).
const MAX_PROBLEMS: usize = 100;
/// Largest number of bookTicker frames held while the book has not reached their update id.
const MAX_PENDING_TICKERS: usize = 4096;
/// Tops of book remembered after each applied diff, for bookTicker frames that arrive late.
const TOPS_REMEMBERED: usize = 256;
/// The clock-offset histogram covers ±this many ms (1 ms buckets; beyond is clamped).
const OFFSET_RANGE_MS: i64 = 60_000;

/// A run of stored rows from one sync to the next gap (or the end).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Segment {
    /// The snapshot's `lastUpdateId` the segment started from.
    pub snapshot_update_id: u64,
    pub first_update_id: u64,
    pub last_update_id: u64,
    pub first_exchange_ms: i64,
    pub last_exchange_ms: i64,
    pub rows: u64,
    /// Why the segment ended: `end of input`, or the gap or refusal that ended it.
    pub ended_by: String,
}

/// The top of the rebuilt book against Binance's own `bookTicker` stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickerCheck {
    /// bookTicker frames of the symbol.
    pub frames: u64,
    /// Frames whose update id is one the rebuilt book passed through (the
    /// last id of an applied diff): only those can be compared.
    pub compared: u64,
    pub equal: u64,
    /// The first mismatches, word for word.
    pub mismatches: Vec<String>,
}

/// `local receive time − exchange event time E` over the symbol's diffs, in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClockOffset {
    pub count: u64,
    pub min_ms: i64,
    pub median_ms: i64,
    pub max_ms: i64,
}

/// Everything the import saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub symbol: String,
    pub files: Vec<FileReport>,
    /// Frames of the symbol by kind (`depthUpdate`, `trade`, `aggTrade`,
    /// `bookTicker`, `snapshot`, or the unknown stream's kind).
    pub frames_by_kind: BTreeMap<String, u64>,
    /// Frames of other symbols on the same connection, by symbol (skipped).
    pub other_symbols: BTreeMap<String, u64>,
    pub diffs_applied: u64,
    /// Diffs dropped because the snapshot they were buffered for already held them.
    pub diffs_older_than_snapshot: u64,
    /// Diffs received while the book waited for a snapshot and never applied.
    pub diffs_never_synced: u64,
    /// The most levels one diff touched.
    pub largest_diff_levels: usize,
    pub snapshots_loaded: u64,
    /// Snapshots older than the first buffered diff (unusable: a later one is waited for).
    pub snapshots_too_old: u64,
    pub gaps: u64,
    /// Books refused when sampled (crossed or invalid).
    pub crossed_books: u64,
    /// Stream silences longer than `max_fill_ms` not filled with rows.
    pub unfilled_silences: u64,
    pub segments: Vec<Segment>,
    pub snapshots_written: u64,
    pub trades_written: u64,
    pub book_ticker: TickerCheck,
    pub clock_offset: ClockOffset,
    /// `file:line: what` for every line or file that could not be used, first [`MAX_PROBLEMS`].
    pub problems: Vec<String>,
    pub problems_not_listed: u64,
    pub files_written: Vec<PathBuf>,
}

impl ImportReport {
    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        } else {
            self.problems_not_listed += 1;
        }
    }

    fn count(map: &mut BTreeMap<String, u64>, key: &str) {
        *map.entry(key.to_owned()).or_default() += 1;
    }
}

/// The state of one import: the shared book the live client would keep,
/// the sampling clock, and the checks.
struct Importer<'a> {
    opts: &'a ImportOptions,
    shared: ClientShared,
    synced_once: bool,
    /// The next grid time (exchange ms) a row is due at; `None` while unsynced.
    next_row_ms: Option<i64>,
    snapshots: SnapshotWriter,
    trades: TradeWriter,
    report: ImportReport,
    segment: Option<Segment>,
    /// `(update id, best bid, best ask)` after each of the last applied diffs.
    tops: VecDeque<(u64, Option<PriceLevel>, Option<PriceLevel>)>,
    pending_tickers: VecDeque<BookTicker>,
    offset_histogram: Vec<u64>,
    /// Where the book began waiting for a snapshot (`file:line`), while it waits.
    waiting_since: Option<String>,
}

/// Imports `files` (in time order) into the store under `opts.out_dir`.
/// `progress` is called as each file is finished and every million frames.
pub fn import_files(
    opts: &ImportOptions,
    files: &[PathBuf],
    progress: &mut dyn FnMut(&str),
) -> Result<ImportReport, ImportError> {
    check_options(opts)?;
    if files.is_empty() {
        return Err(ImportError::NoFiles);
    }
    let mut imp = Importer {
        opts,
        shared: ClientShared::new(&opts.symbol),
        synced_once: false,
        next_row_ms: None,
        snapshots: SnapshotWriter::new(&opts.out_dir, &opts.symbol)?.with_row_group_rows(IMPORT_ROW_GROUP_ROWS)?,
        trades: TradeWriter::new(&opts.out_dir, &opts.symbol)?.with_row_group_rows(IMPORT_ROW_GROUP_ROWS)?,
        report: ImportReport { symbol: opts.symbol.clone(), ..Default::default() },
        segment: None,
        tops: VecDeque::with_capacity(TOPS_REMEMBERED),
        pending_tickers: VecDeque::new(),
        offset_histogram: vec![0; (2 * OFFSET_RANGE_MS + 1) as usize],
        waiting_since: None,
    };
    let mut problems = Vec::new();
    let mut source = FrameSource::open(opts.format, &opts.symbol, files, &mut |p| problems.push(p));
    let mut frames = 0u64;
    let mut last_file = None;
    loop {
        let frame = source.next_frame(&mut |p| problems.push(p));
        for p in problems.drain(..) {
            imp.report.problem(p);
        }
        let Some(frame) = frame else { break };
        if last_file.is_some_and(|f| f != frame.file) {
            progress(&imp.progress_line(&source, last_file));
        }
        last_file = Some(frame.file);
        frames += 1;
        if frames.is_multiple_of(1_000_000) {
            progress(&format!("{}: {frames} frames", frame.origin(source.files())));
        }
        let origin = || frame.origin(source.files());
        match frame.kind {
            FrameKind::Snapshot => imp.on_snapshot(&frame.json, &origin()),
            FrameKind::Stream => match imp.on_frame(&frame.json, frame.recv_ns, &origin) {
                Ok(()) => {}
                Err(FrameError::Line(e)) => {
                    imp.report.problem(format!("{}: {e}; line skipped", origin()));
                    source.mark_bad(frame.file);
                }
                Err(FrameError::Store(e)) => return Err(e.into()),
            },
        }
    }
    progress(&imp.progress_line(&source, last_file));
    imp.report.files = source.files().to_vec();
    for (symbol, n) in source.other_symbols() {
        *imp.report.other_symbols.entry(symbol.clone()).or_default() += n;
    }
    imp.finish()
}

fn check_options(opts: &ImportOptions) -> Result<(), ImportError> {
    let bad = |field, reason: String| Err(ImportError::Option { field, reason });
    if !is_exchange_symbol(&opts.symbol) {
        return bad("symbol", format!("{:?} {EXCHANGE_SYMBOL_RULE}", opts.symbol));
    }
    if !(1..=60_000).contains(&opts.interval_ms) {
        return bad("interval_ms", format!("{} is not in [1, 60000]", opts.interval_ms));
    }
    if !(1..=NUM_LEVELS).contains(&opts.num_levels) {
        return bad("num_levels", format!("{} is not in [1, {NUM_LEVELS}]", opts.num_levels));
    }
    if opts.max_fill_ms < opts.interval_ms {
        return bad("max_fill_ms", format!("{} is shorter than interval_ms = {}", opts.max_fill_ms, opts.interval_ms));
    }
    Ok(())
}

/// The smallest multiple of `step` that is `>= x`.
fn grid_ceil(x: i64, step: i64) -> i64 {
    x.div_euclid(step) * step + if x.rem_euclid(step) == 0 { 0 } else { step }
}

impl Importer<'_> {
    fn progress_line(&self, source: &FrameSource, file: Option<usize>) -> String {
        let name = file.and_then(|f| source.files().get(f)).map_or("?".into(), |f| f.path.display().to_string());
        format!(
            "{name}: done; {} snapshots and {} trades so far",
            self.snapshots.rows_written(),
            self.trades.rows_written()
        )
    }

    fn on_snapshot(&mut self, json: &str, origin: &str) {
        let snap = match parse_depth_snapshot(json) {
            Ok(s) => s,
            Err(e) => {
                self.report.problem(format!("{origin}: REST depth snapshot: {e}; snapshot skipped"));
                return;
            }
        };
        ImportReport::count(&mut self.report.frames_by_kind, "snapshot");
        if self.shared.live.lock().book.is_synced() {
            // The live client fetches a snapshot only to sync; a recorded one
            // arriving while the book is in sync adds nothing (the diffs keep it exact).
            return;
        }
        match load_snapshot(&self.shared, &snap, &mut self.synced_once) {
            Ok(sync) => {
                self.report.snapshots_loaded += 1;
                self.report.diffs_older_than_snapshot += sync.dropped_stale as u64;
                self.report.diffs_applied += sync.applied as u64;
                self.waiting_since = None;
                let live = self.shared.live.lock();
                self.segment = Some(Segment {
                    snapshot_update_id: snap.last_update_id,
                    first_update_id: live.book.last_update_id(),
                    ..Default::default()
                });
            }
            Err(e) => {
                if matches!(e, BookError::SnapshotTooOld { .. }) {
                    self.report.snapshots_too_old += 1;
                }
                self.report.problem(format!("{origin}: snapshot lastUpdateId {} not usable: {e}", snap.last_update_id));
            }
        }
        self.after_book_change();
    }

    fn on_frame(&mut self, json: &str, recv_ns: i64, origin: &dyn Fn() -> String) -> Result<(), FrameError> {
        let msg = parse_combined(json).map_err(|e| FrameError::Line(e.to_string()))?;
        let symbol = match &msg.event {
            StreamEvent::Depth(d) => Some(d.symbol.as_str()),
            StreamEvent::AggTrade(t) => Some(t.symbol.as_str()),
            StreamEvent::Trade(t) => Some(t.symbol.as_str()),
            StreamEvent::BookTicker(t) => Some(t.symbol.as_str()),
            StreamEvent::Other => None,
        };
        let Some(symbol) = symbol else {
            // A stream quorum does not read (kline, ticker…): said once per kind.
            let (stream_symbol, kind) = msg.stream.split_once('@').unwrap_or(("", msg.stream.as_str()));
            if !stream_symbol.is_empty() && !stream_symbol.eq_ignore_ascii_case(&self.opts.symbol) {
                ImportReport::count(&mut self.report.other_symbols, &stream_symbol.to_ascii_uppercase());
                return Ok(());
            }
            let kind = kind.to_owned();
            let key = format!("unknown:{kind}");
            if !self.report.frames_by_kind.contains_key(&key) {
                self.report.problem(format!(
                    "{}: stream {:?} is not one quorum reads (depth@100ms, trade, aggTrade, bookTicker): its frames are skipped",
                    origin(),
                    msg.stream
                ));
            }
            ImportReport::count(&mut self.report.frames_by_kind, &key);
            return Ok(());
        };
        if !symbol.eq_ignore_ascii_case(&self.opts.symbol) {
            ImportReport::count(&mut self.report.other_symbols, &symbol.to_ascii_uppercase());
            return Ok(());
        }
        match msg.event {
            StreamEvent::Depth(d) => {
                ImportReport::count(&mut self.report.frames_by_kind, "depthUpdate");
                self.report.largest_diff_levels = self.report.largest_diff_levels.max(d.bids.len() + d.asks.len());
                self.record_offset(recv_ns / 1_000_000 - d.event_time_ms);
                self.rows_due_before(d.event_time_ms).map_err(FrameError::Store)?;
                let before = self.shared.counters.events_applied.load(std::sync::atomic::Ordering::Relaxed);
                let was_synced = self.shared.live.lock().book.is_synced();
                let action = handle_event(&self.shared, StreamEvent::Depth(d), recv_ns);
                let after = self.shared.counters.events_applied.load(std::sync::atomic::Ordering::Relaxed);
                self.report.diffs_applied += after - before;
                self.on_action(action, was_synced, origin);
                self.after_book_change();
                if after > before {
                    self.remember_top();
                }
            }
            StreamEvent::BookTicker(t) => {
                ImportReport::count(&mut self.report.frames_by_kind, "bookTicker");
                self.report.book_ticker.frames += 1;
                self.check_ticker(t);
            }
            event @ (StreamEvent::Trade(_) | StreamEvent::AggTrade(_)) => {
                let kind = if matches!(event, StreamEvent::Trade(_)) { "trade" } else { "aggTrade" };
                ImportReport::count(&mut self.report.frames_by_kind, kind);
                handle_event(&self.shared, event, recv_ns);
                let trades = std::mem::take(&mut *self.shared.trades.lock());
                self.trades.push_all(&trades).map_err(FrameError::Store)?;
            }
            StreamEvent::Other => {}
        }
        Ok(())
    }

    /// What the live client's connection would do with the action; the
    /// importer's "fetch a snapshot" is to wait for the next recorded one.
    fn on_action(&mut self, action: MessageAction, was_synced: bool, origin: &dyn Fn() -> String) {
        match action {
            MessageAction::Continue | MessageAction::ServerShutdown => {}
            MessageAction::NeedSnapshot => {
                if self.waiting_since.is_none() {
                    self.waiting_since = Some(origin());
                }
            }
            MessageAction::Gap(reason) => {
                self.report.gaps += 1;
                self.end_segment(format!("{}: {reason}", origin()));
                self.waiting_since = Some(origin());
                self.report.problem(format!("{}: {reason}; no rows until a later snapshot in the recording", origin()));
            }
            MessageAction::Resync(reason) => {
                // The live client clears the book and resyncs from a new snapshot.
                self.shared.live.lock().book.clear();
                if was_synced {
                    self.end_segment(format!("{}: {reason}", origin()));
                }
                self.waiting_since = Some(origin());
                self.report.problem(format!("{}: {reason}; the book waits for a later snapshot", origin()));
            }
        }
    }

    /// Starts or stops the row clock after the book changed.
    fn after_book_change(&mut self) {
        let live = self.shared.live.lock();
        if !live.book.is_synced() {
            self.next_row_ms = None;
        } else if self.next_row_ms.is_none() && live.last_event_ms > 0 {
            self.next_row_ms = Some(grid_ceil(live.last_event_ms, self.opts.interval_ms));
        }
    }

    /// Writes the rows due at grid times before `event_ms` (the book as it is
    /// now holds every diff with `E` up to them).
    fn rows_due_before(&mut self, event_ms: i64) -> Result<(), StoreError> {
        let Some(mut t) = self.next_row_ms else { return Ok(()) };
        if event_ms - t > self.opts.max_fill_ms {
            // A long silence: one row for the book as it stood, then the clock jumps.
            self.report.unfilled_silences += 1;
            self.write_row()?;
            self.next_row_ms = Some(grid_ceil(event_ms, self.opts.interval_ms));
            return Ok(());
        }
        while t < event_ms {
            self.write_row()?;
            t += self.opts.interval_ms;
        }
        self.next_row_ms = Some(t);
        Ok(())
    }

    fn write_row(&mut self) -> Result<(), StoreError> {
        match sample_book(&self.shared, self.opts.num_levels) {
            Sample::Taken(snap) => {
                self.snapshots.push(&snap)?;
                if let Some(seg) = self.segment.as_mut() {
                    if seg.rows == 0 {
                        seg.first_exchange_ms = snap.ts_exchange_ms;
                    }
                    seg.rows += 1;
                    seg.last_update_id = snap.last_update_id;
                    seg.last_exchange_ms = snap.ts_exchange_ms;
                }
            }
            Sample::Unsynced => {}
            Sample::Crossed(reason) | Sample::Invalid(reason) => {
                self.report.crossed_books += 1;
                if self.report.crossed_books <= 10 {
                    self.report.problem(format!("book refused when sampled: {reason}"));
                }
            }
        }
        Ok(())
    }

    fn end_segment(&mut self, ended_by: String) {
        if let Some(mut seg) = self.segment.take() {
            seg.ended_by = ended_by;
            self.report.segments.push(seg);
        }
    }

    fn record_offset(&mut self, offset_ms: i64) {
        let i = (offset_ms.clamp(-OFFSET_RANGE_MS, OFFSET_RANGE_MS) + OFFSET_RANGE_MS) as usize;
        self.offset_histogram[i] += 1;
    }

    fn remember_top(&mut self) {
        let live = self.shared.live.lock();
        if self.tops.len() == TOPS_REMEMBERED {
            self.tops.pop_front();
        }
        let id = live.book.last_update_id();
        self.tops.push_back((id, live.book.best_bid(), live.book.best_ask()));
        drop(live);
        // bookTicker frames that arrived before the book reached them.
        while let Some(t) = self.pending_tickers.front() {
            if t.update_id > id {
                break;
            }
            if let Some(t) = self.pending_tickers.pop_front() {
                if t.update_id == id {
                    self.compare_ticker(&t, self.tops.back().cloned());
                }
            }
        }
    }

    fn check_ticker(&mut self, t: BookTicker) {
        let book_id = self.tops.back().map_or(0, |top| top.0);
        if t.update_id > book_id {
            if self.pending_tickers.len() == MAX_PENDING_TICKERS {
                self.pending_tickers.pop_front();
            }
            self.pending_tickers.push_back(t);
            return;
        }
        let top = self.tops.iter().rev().find(|top| top.0 == t.update_id).cloned();
        if top.is_some() {
            self.compare_ticker(&t, top);
        }
    }

    fn compare_ticker(&mut self, t: &BookTicker, top: Option<(u64, Option<PriceLevel>, Option<PriceLevel>)>) {
        let Some((_, bid, ask)) = top else { return };
        let check = &mut self.report.book_ticker;
        check.compared += 1;
        if bid == Some(t.bid) && ask == Some(t.ask) {
            check.equal += 1;
        } else if check.mismatches.len() < 10 {
            let show = |l: Option<PriceLevel>| l.map_or("none".to_owned(), |l| format!("{} x {}", l.price, l.quantity));
            check.mismatches.push(format!(
                "update id {}: book bid {} ask {}, bookTicker bid {} ask {}",
                t.update_id,
                show(bid),
                show(ask),
                show(Some(t.bid)),
                show(Some(t.ask))
            ));
        }
    }

    fn finish(mut self) -> Result<ImportReport, ImportError> {
        // The last row: the book after the last diff (no later diff can change it).
        if let Some(t) = self.next_row_ms {
            self.rows_due_before(t + 1)?;
        }
        self.end_segment("end of input".to_owned());
        let (stats, waiting) = {
            let live = self.shared.live.lock();
            (live.book.stats(), live.book.buffered() as u64)
        };
        self.report.diffs_never_synced = waiting + stats.buffer_overflows;
        if let Some(since) = self.waiting_since.take() {
            if waiting > 0 {
                self.report.problem(format!(
                    "{since}: from here on {waiting} diffs waited for a snapshot that never came: no rows for them"
                ));
            }
        }
        if self.report.frames_by_kind.get("depthUpdate").copied().unwrap_or(0) == 0 {
            let others: Vec<String> = self.report.other_symbols.iter().map(|(s, n)| format!("{s} ({n})")).collect();
            self.report.problem(format!(
                "no depth diffs of {} in the input{}",
                self.opts.symbol,
                if others.is_empty() { String::new() } else { format!("; it holds {}", others.join(", ")) }
            ));
        }
        self.report.clock_offset = offset_summary(&self.offset_histogram);
        self.report.snapshots_written = self.snapshots.rows_written();
        if self.report.snapshots_written == 0 {
            // Trades without a single book are no market to learn from: an
            // import that stored no snapshot writes nothing (the trade
            // writer's temporary file goes with it).
            let trades = self.trades.rows_written();
            if trades > 0 {
                self.report.problem(format!("no snapshot stored, so the {trades} trades are not written either"));
            }
            return Ok(self.report);
        }
        self.report.trades_written = self.trades.rows_written();
        let mut written = self.snapshots.finish()?;
        written.extend(self.trades.finish()?);
        self.report.files_written = written;
        Ok(self.report)
    }
}

enum FrameError {
    Line(String),
    Store(StoreError),
}

fn offset_summary(histogram: &[u64]) -> ClockOffset {
    let count: u64 = histogram.iter().sum();
    if count == 0 {
        return ClockOffset::default();
    }
    let at = |i: usize| i as i64 - OFFSET_RANGE_MS;
    let min = histogram.iter().position(|&n| n > 0).map_or(0, at);
    let max = histogram.iter().rposition(|&n| n > 0).map_or(0, at);
    let mut seen = 0;
    let mut median = 0;
    for (i, &n) in histogram.iter().enumerate() {
        seen += n;
        if seen * 2 >= count {
            median = at(i);
            break;
        }
    }
    ClockOffset { count, min_ms: min, median_ms: median, max_ms: max }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "import of {}:", self.symbol)?;
        for file in &self.files {
            writeln!(
                f,
                "  {}: {} lines, {} unusable{}",
                file.path.display(),
                file.lines,
                file.bad_lines,
                if file.truncated { ", TRUNCATED" } else { "" }
            )?;
        }
        let kinds: Vec<String> = self.frames_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "  frames: {}", kinds.join(", "))?;
        if !self.other_symbols.is_empty() {
            let others: Vec<String> = self.other_symbols.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(f, "  other symbols (skipped): {}", others.join(", "))?;
        }
        writeln!(
            f,
            "  diffs: {} applied, {} older than the snapshot (dropped), {} never synced; largest touched {} levels",
            self.diffs_applied, self.diffs_older_than_snapshot, self.diffs_never_synced, self.largest_diff_levels
        )?;
        writeln!(
            f,
            "  snapshots loaded {}, too old {}; gaps {}; crossed books {}; unfilled silences {}",
            self.snapshots_loaded, self.snapshots_too_old, self.gaps, self.crossed_books, self.unfilled_silences
        )?;
        for s in &self.segments {
            writeln!(
                f,
                "  segment from snapshot {}: update ids {}..={}, {} rows, exchange ms {}..={}, ended by {}",
                s.snapshot_update_id,
                s.first_update_id,
                s.last_update_id,
                s.rows,
                s.first_exchange_ms,
                s.last_exchange_ms,
                s.ended_by
            )?;
        }
        let t = &self.book_ticker;
        writeln!(
            f,
            "  bookTicker: {} frames, {} at an update id of the rebuilt book, {} equal",
            t.frames, t.compared, t.equal
        )?;
        for m in &t.mismatches {
            writeln!(f, "    MISMATCH {m}")?;
        }
        let c = &self.clock_offset;
        writeln!(
            f,
            "  clock: receive time - exchange time E over {} diffs: median {} ms (min {}, max {})",
            c.count, c.median_ms, c.min_ms, c.max_ms
        )?;
        writeln!(
            f,
            "  stored: {} snapshots, {} trades in {} files",
            self.snapshots_written,
            self.trades_written,
            self.files_written.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        if self.problems_not_listed > 0 {
            writeln!(f, "  … and {} more problems", self.problems_not_listed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_grid_rounds_up_to_the_interval() {
        assert_eq!(grid_ceil(1000, 100), 1000);
        assert_eq!(grid_ceil(1001, 100), 1100);
        assert_eq!(grid_ceil(-50, 100), 0);
    }

    #[test]
    fn the_offset_median_comes_from_the_histogram() {
        let mut h = vec![0u64; (2 * OFFSET_RANGE_MS + 1) as usize];
        for v in [-1300i64, -1270, -1270, -1200, 5] {
            h[(v + OFFSET_RANGE_MS) as usize] += 1;
        }
        let s = offset_summary(&h);
        assert_eq!((s.count, s.min_ms, s.median_ms, s.max_ms), (5, -1300, -1270, 5));
    }

    #[test]
    fn bad_options_name_the_field() {
        let mut o = ImportOptions::new(RecordFormat::Hftbacktest, "BTCUSDT", "/tmp/x");
        o.interval_ms = 0;
        let e = import_files(&o, &[PathBuf::from("x")], &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("interval_ms"), "{e}");
        let o = ImportOptions::new(RecordFormat::Hftbacktest, "BTC/USDT", "/tmp/x");
        assert!(import_files(&o, &[PathBuf::from("x")], &mut |_| {}).unwrap_err().to_string().contains("symbol"));
    }
}
