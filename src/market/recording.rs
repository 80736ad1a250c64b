//! Recorded market-data frames, as other tools store them (docs/data.md,
//! "Recorded frames"): one frame per line, plain or gzip.
//!
//! - **hftbacktest**: `<local receive time, ns since the epoch> <raw JSON>`.
//!   A stream frame is the combined-stream envelope `{"stream": …, "data": …}`;
//!   a REST depth snapshot is a bare `{"lastUpdateId": …}` line (of the
//!   file's one symbol).
//! - **cryptofeed**: a WebSocket file starts with the URL it subscribed to
//!   (`wss://… <-> <unix seconds>`), then `<unix seconds>: <raw JSON>` per
//!   frame; a REST file holds `<url> -> <unix seconds>: <JSON body>` per
//!   request, the symbol in the URL's `symbol=` parameter.
//!
//! This module splits lines into a receive time and a JSON text (what the
//! JSON means is [`super::binance`]'s job, what to do with it the
//! importer's, [`super::import`]), and writes them: [`FrameRecorder`] is
//! `quorum collect --record-frames`, in hftbacktest's format.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::types::{is_exchange_symbol, EXCHANGE_SYMBOL_RULE};

/// The tool that wrote a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    Hftbacktest,
    Cryptofeed,
}

/// The longest line accepted. Binance's largest frames (a 5000-level REST
/// snapshot) are ~300 kB; anything past this is not a frame.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// One line of a recording, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedLine<'a> {
    /// A combined-stream frame received at `recv_ns`.
    Stream { recv_ns: i64, json: &'a str },
    /// A REST depth snapshot received at `recv_ns`; `symbol` when the
    /// recording names it (cryptofeed's URL), `None` for the file's own symbol.
    Snapshot { recv_ns: i64, symbol: Option<String>, json: &'a str },
    /// A line that carries no frame (cryptofeed's subscription URL, a blank line).
    Header,
}

/// Splits one line (without its newline). The error says what is wrong with it.
pub fn split_line(format: RecordFormat, line: &str) -> Result<RecordedLine<'_>, String> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(RecordedLine::Header);
    }
    match format {
        RecordFormat::Hftbacktest => {
            let (time, json) =
                line.split_once(' ').ok_or("expected `<receive time ns> <JSON>`: no space after the time")?;
            let recv_ns: i64 =
                time.parse().map_err(|_| format!("receive time {:?} is not an integer (ns)", clip(time)))?;
            let json = json.trim_start();
            if json.starts_with("{\"lastUpdateId\"") {
                Ok(RecordedLine::Snapshot { recv_ns, symbol: None, json })
            } else {
                Ok(RecordedLine::Stream { recv_ns, json })
            }
        }
        RecordFormat::Cryptofeed => {
            if line.contains(" <-> ") && !line.trim_start().starts_with('{') {
                return Ok(RecordedLine::Header);
            }
            if let Some((url, rest)) = line.split_once(" -> ") {
                let (time, json) = rest.split_once(": ").ok_or("expected `<url> -> <seconds>: <JSON>`")?;
                let symbol =
                    url_symbol(url).ok_or_else(|| format!("REST URL {:?} has no symbol= parameter", clip(url)))?;
                return Ok(RecordedLine::Snapshot { recv_ns: seconds_to_ns(time)?, symbol: Some(symbol), json });
            }
            let (time, json) = line.split_once(": ").ok_or("expected `<seconds>: <JSON>`")?;
            Ok(RecordedLine::Stream { recv_ns: seconds_to_ns(time)?, json })
        }
    }
}

/// The first 60 characters of a text, for error messages about hostile input.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// `1633998512.0633569` → ns since the epoch, exactly from the decimal digits
/// (a float would lose the last digits).
fn seconds_to_ns(text: &str) -> Result<i64, String> {
    let bad = || format!("receive time {:?} is not decimal seconds", clip(text));
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = whole.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos)).ok_or_else(bad)
}

/// The `symbol=` parameter of a URL, uppercase.
fn url_symbol(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("symbol="))
        .filter(|s| is_exchange_symbol(s))
        .map(|s| s.to_ascii_uppercase())
}

/// Opens a recording for reading line by line: gzip (by its magic bytes,
/// members concatenated as `gzip` appends them) or plain text.
pub fn open_recording(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic)?;
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (its newline removed).
    Line,
    /// The line was longer than [`MAX_LINE_BYTES`]; it was skipped to its end.
    TooLong,
    End,
}

/// Reads one line into `buf` (cleared first), never holding more than
/// [`MAX_LINE_BYTES`] of it: a file without newlines cannot exhaust memory.
pub fn read_line_bounded(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong,
                (true, false) => LineRead::Line,
            });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}

// ---- reading frames in order ---------------------------------------------------------

/// One input file, as read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub lines: u64,
    /// Lines that could not be used (each named in the problems).
    pub bad_lines: u64,
    /// The file ended in a read error (e.g. a truncated gzip): the rest of it is lost.
    pub truncated: bool,
}

/// What a recorded frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A combined-stream message.
    Stream,
    /// A REST depth snapshot of the symbol read.
    Snapshot,
}

/// One frame of a recording, in the order it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    pub recv_ns: i64,
    pub kind: FrameKind,
    pub json: String,
    /// Index of the file in [`FrameSource::files`] (cryptofeed's REST files included).
    pub file: usize,
    pub line: u64,
}

impl RecordedFrame {
    /// `path:line`, for messages.
    pub fn origin(&self, files: &[FileReport]) -> String {
        format!("{}:{}", files.get(self.file).map_or(Path::new("?"), |f| f.path.as_path()).display(), self.line)
    }
}

struct OpenReader {
    file: usize,
    reader: Box<dyn BufRead + Send>,
}

/// The frames of a recording, one at a time, in receive order: the stream
/// files in the order given (a later file may continue an earlier one), with
/// REST snapshots that sit in files of their own (cryptofeed's `.http`)
/// merged in by receive time, before a frame received at the same instant.
/// REST snapshots of other symbols are counted, not returned. Memory is one
/// line (at most [`MAX_LINE_BYTES`]) plus the separate REST snapshots.
///
/// Unusable lines are skipped and named through `problem`; a read error ends
/// that file and the next one goes on.
pub struct FrameSource {
    format: RecordFormat,
    symbol: String,
    files: Vec<FileReport>,
    stream_files: VecDeque<usize>,
    rest: VecDeque<RecordedFrame>,
    open: Option<OpenReader>,
    /// The stream's next frame, read ahead to merge the REST snapshots in.
    peeked: Option<RecordedFrame>,
    buf: Vec<u8>,
    other_symbols: BTreeMap<String, u64>,
}

impl FrameSource {
    /// Opens the recording of `symbol` in `paths`. REST-only files are read now.
    pub fn open(format: RecordFormat, symbol: &str, paths: &[PathBuf], problem: &mut dyn FnMut(String)) -> FrameSource {
        let mut src = FrameSource {
            format,
            symbol: symbol.to_ascii_uppercase(),
            files: paths.iter().map(|p| FileReport { path: p.clone(), ..Default::default() }).collect(),
            stream_files: VecDeque::new(),
            rest: VecDeque::new(),
            open: None,
            peeked: None,
            buf: Vec::with_capacity(1 << 16),
            other_symbols: BTreeMap::new(),
        };
        let mut rest = Vec::new();
        for i in 0..paths.len() {
            if src.is_rest_file(i) {
                while let Some(f) = src.next_line_frame(i, problem) {
                    match f {
                        LineFrame::Frame(frame) if frame.kind == FrameKind::Snapshot => rest.push(frame),
                        LineFrame::Frame(frame) => {
                            src.files[i].bad_lines += 1;
                            problem(format!(
                                "{}: a stream frame in a file of REST responses; skipped (give stream files separately)",
                                frame.origin(&src.files)
                            ));
                        }
                        LineFrame::Skipped => {}
                    }
                }
            } else {
                src.stream_files.push_back(i);
            }
        }
        rest.sort_by_key(|f| f.recv_ns);
        src.rest = rest.into();
        src
    }

    /// Every file, with what was read of it so far.
    pub fn files(&self) -> &[FileReport] {
        &self.files
    }

    /// REST snapshots of other symbols seen, by symbol.
    pub fn other_symbols(&self) -> &BTreeMap<String, u64> {
        &self.other_symbols
    }

    /// Counts a line the caller could not use (its problem said why).
    pub fn mark_bad(&mut self, file: usize) {
        if let Some(f) = self.files.get_mut(file) {
            f.bad_lines += 1;
        }
    }

    /// The next frame in receive order, or `None` at the end of the recording.
    pub fn next_frame(&mut self, problem: &mut dyn FnMut(String)) -> Option<RecordedFrame> {
        if self.peeked.is_none() {
            self.peeked = self.next_stream_frame(problem);
        }
        match (&self.peeked, self.rest.front()) {
            (Some(f), Some(r)) if r.recv_ns <= f.recv_ns => self.rest.pop_front(),
            (Some(_), _) => self.peeked.take(),
            (None, _) => self.rest.pop_front(),
        }
    }

    /// The next frame of the stream files, across files.
    fn next_stream_frame(&mut self, problem: &mut dyn FnMut(String)) -> Option<RecordedFrame> {
        loop {
            let file = match &self.open {
                Some(o) => o.file,
                None => *self.stream_files.front()?,
            };
            match self.next_line_frame(file, problem) {
                Some(LineFrame::Frame(frame)) => return Some(frame),
                Some(LineFrame::Skipped) => {}
                None => {
                    self.stream_files.pop_front();
                }
            }
        }
    }

    /// A cryptofeed file whose first line is a recorded REST response.
    fn is_rest_file(&mut self, i: usize) -> bool {
        if self.format != RecordFormat::Cryptofeed {
            return false;
        }
        let Ok(mut r) = open_recording(&self.files[i].path) else { return false };
        let mut buf = Vec::new();
        matches!(read_line_bounded(&mut *r, &mut buf), Ok(LineRead::Line))
            && matches!(
                std::str::from_utf8(&buf).map(|l| split_line(RecordFormat::Cryptofeed, l)),
                Ok(Ok(RecordedLine::Snapshot { .. }))
            )
    }

    /// Reads the next line of file `i` (opening it for REST-only files read
    /// whole by `open`); `None` at its end or on a read error.
    fn next_line_frame(&mut self, i: usize, problem: &mut dyn FnMut(String)) -> Option<LineFrame> {
        if self.open.as_ref().is_none_or(|o| o.file != i) {
            match open_recording(&self.files[i].path) {
                Ok(reader) => self.open = Some(OpenReader { file: i, reader }),
                Err(e) => {
                    self.files[i].truncated = true;
                    problem(format!("{}: cannot open: {e}; file skipped", self.files[i].path.display()));
                    return None;
                }
            }
        }
        let open = self.open.as_mut()?;
        let report = &mut self.files[i];
        let line_no = report.lines + 1;
        let at = |report: &FileReport| format!("{}:{line_no}", report.path.display());
        match read_line_bounded(&mut *open.reader, &mut self.buf) {
            Ok(LineRead::End) => {
                self.open = None;
                None
            }
            Err(e) => {
                report.truncated = true;
                problem(format!(
                    "{}: read error after {} lines ({e}): the rest of this file is lost",
                    at(report),
                    report.lines
                ));
                self.open = None;
                None
            }
            Ok(LineRead::TooLong) => {
                report.lines += 1;
                report.bad_lines += 1;
                problem(format!("{}: line longer than {MAX_LINE_BYTES} bytes; skipped", at(report)));
                Some(LineFrame::Skipped)
            }
            Ok(LineRead::Line) => {
                report.lines += 1;
                let split = match std::str::from_utf8(&self.buf) {
                    Ok(line) => split_line(self.format, line),
                    Err(_) => Err("not UTF-8 text".to_owned()),
                };
                let frame = |recv_ns, kind, json: &str| RecordedFrame {
                    recv_ns,
                    kind,
                    json: json.to_owned(),
                    file: i,
                    line: line_no,
                };
                match split {
                    Ok(RecordedLine::Header) => Some(LineFrame::Skipped),
                    Ok(RecordedLine::Stream { recv_ns, json }) => {
                        Some(LineFrame::Frame(frame(recv_ns, FrameKind::Stream, json)))
                    }
                    Ok(RecordedLine::Snapshot { recv_ns, symbol, json }) => match symbol {
                        Some(s) if s != self.symbol => {
                            *self.other_symbols.entry(s).or_default() += 1;
                            Some(LineFrame::Skipped)
                        }
                        _ => Some(LineFrame::Frame(frame(recv_ns, FrameKind::Snapshot, json))),
                    },
                    Err(e) => {
                        report.bad_lines += 1;
                        problem(format!("{}: {e}; line skipped", at(report)));
                        Some(LineFrame::Skipped)
                    }
                }
            }
        }
    }
}

enum LineFrame {
    Frame(RecordedFrame),
    Skipped,
}

// ---- recording ------------------------------------------------------------------

/// Frames queued for the writer thread before new ones are dropped (and
/// counted): the client's task never waits on the disk.
const RECORDER_QUEUE: usize = 65_536;
/// How often the open file is flushed through gzip and fsynced: a crash
/// loses at most this much of it.
pub const RECORDER_FLUSH_EVERY: Duration = Duration::from_secs(1);
const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// What a [`FrameRecorder`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderStats {
    pub frames: u64,
    /// Frames dropped because the writer fell behind (the update ids show the hole).
    pub dropped: u64,
    /// Every file written, in order (the last one was open until `finish`).
    pub files: Vec<PathBuf>,
}

/// Writes every frame as received, with its local receive time in ns, in
/// hftbacktest's line format (`<ns> <JSON>`; a REST snapshot is a bare line),
/// gzip, one file per UTC hour of receive time:
/// `<dir>/<SYMBOL>_<YYYY-MM-DD>T<HH>.gz` (`-<k>` appended if taken).
///
/// A writer thread owns the files. Every [`RECORDER_FLUSH_EVERY`] the open
/// file is sync-flushed through gzip and fsynced, so a crash loses at most
/// the last second of it, and what is on disk decodes up to there; a closed
/// file is a finished gzip, fsynced. Newlines inside a frame (only ever
/// insignificant JSON whitespace) are written as spaces: one frame, one line.
pub struct FrameRecorder {
    tx: Option<SyncSender<(i64, String)>>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<std::io::Result<RecorderStats>>>,
}

impl FrameRecorder {
    /// Creates `dir` and starts the writer thread. No file exists before the first frame.
    pub fn start(dir: &Path, symbol: &str) -> std::io::Result<FrameRecorder> {
        if !is_exchange_symbol(symbol) {
            return Err(std::io::Error::other(format!("symbol {symbol:?} {EXCHANGE_SYMBOL_RULE}")));
        }
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = sync_channel(RECORDER_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = HourlyWriter { dir: dir.to_owned(), symbol: symbol.to_ascii_uppercase(), open: None };
        let thread =
            std::thread::Builder::new().name("frame-recorder".into()).spawn(move || writer_loop(writer, rx))?;
        Ok(FrameRecorder { tx: Some(tx), dropped, thread: Some(thread) })
    }

    /// Queues one frame received at `recv_ns`. Never blocks.
    pub fn record(&self, recv_ns: i64, text: &str) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send((recv_ns, text.to_owned())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued, closes the open file and returns what was written.
    pub fn finish(mut self) -> std::io::Result<RecorderStats> {
        self.tx = None;
        let thread = self.thread.take().expect("finish runs once");
        let mut stats = thread.join().map_err(|_| std::io::Error::other("the frame recorder's thread panicked"))??;
        stats.dropped = self.dropped.load(Ordering::Relaxed);
        Ok(stats)
    }
}

impl std::fmt::Debug for FrameRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRecorder").field("dropped", &self.dropped.load(Ordering::Relaxed)).finish()
    }
}

impl Drop for FrameRecorder {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct OpenFrames {
    hour: i64,
    gz: flate2::write::GzEncoder<File>,
}

struct HourlyWriter {
    dir: PathBuf,
    symbol: String,
    open: Option<OpenFrames>,
}

impl HourlyWriter {
    fn write(&mut self, recv_ns: i64, text: &str, stats: &mut RecorderStats) -> std::io::Result<()> {
        let hour = recv_ns.div_euclid(NS_PER_HOUR);
        if self.open.as_ref().is_some_and(|f| f.hour != hour) {
            self.close()?;
        }
        if self.open.is_none() {
            let (path, file) = self.create(hour)?;
            stats.files.push(path);
            self.open =
                Some(OpenFrames { hour, gz: flate2::write::GzEncoder::new(file, flate2::Compression::default()) });
        }
        if let Some(f) = self.open.as_mut() {
            let line = if text.contains(['\n', '\r']) { text.replace(['\n', '\r'], " ") } else { text.to_owned() };
            writeln!(f.gz, "{recv_ns} {line}")?;
            stats.frames += 1;
        }
        Ok(())
    }

    fn create(&self, hour: i64) -> std::io::Result<(PathBuf, File)> {
        let ms = hour * (NS_PER_HOUR / 1_000_000);
        let base = format!("{}_{}T{:02}", self.symbol, super::store::utc_day(ms), hour.rem_euclid(24));
        for k in 0.. {
            let name = if k == 0 { format!("{base}.gz") } else { format!("{base}-{k}.gz") };
            let path = self.dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("some name is free")
    }

    /// Sync-flushes gzip and fsyncs: everything written so far survives a crash.
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.open.as_mut() {
            f.gz.flush()?;
            f.gz.get_ref().sync_data()?;
        }
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.open.take() {
            let file = f.gz.finish()?;
            file.sync_all()?;
        }
        Ok(())
    }
}

fn writer_loop(mut w: HourlyWriter, rx: Receiver<(i64, String)>) -> std::io::Result<RecorderStats> {
    let mut stats = RecorderStats::default();
    let mut last_flush = Instant::now();
    let mut dirty = false;
    loop {
        match rx.recv_timeout(RECORDER_FLUSH_EVERY / 4) {
            Ok((recv_ns, text)) => {
                w.write(recv_ns, &text, &mut stats)?;
                dirty = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if dirty && last_flush.elapsed() >= RECORDER_FLUSH_EVERY {
            w.flush()?;
            last_flush = Instant::now();
            dirty = false;
        }
    }
    w.close()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hftbacktest_lines_split_into_time_and_json() {
        let frame = r#"1723161253937085768 {"stream":"btcusdt@trade","data":{}}"#;
        assert_eq!(
            split_line(RecordFormat::Hftbacktest, frame).unwrap(),
            RecordedLine::Stream { recv_ns: 1723161253937085768, json: r#"{"stream":"btcusdt@trade","data":{}}"# }
        );
        let snap = r#"1723161254206652067 {"lastUpdateId":5,"bids":[],"asks":[]}"#;
        assert!(matches!(
            split_line(RecordFormat::Hftbacktest, snap).unwrap(),
            RecordedLine::Snapshot { recv_ns: 1723161254206652067, symbol: None, .. }
        ));
        let err = split_line(RecordFormat::Hftbacktest, "12x {}").unwrap_err();
        assert!(err.contains("not an integer"), "{err}");
        assert!(split_line(RecordFormat::Hftbacktest, "garbage").is_err());
    }

    #[test]
    fn cryptofeed_lines_keep_every_digit_of_the_time_and_the_rest_symbol() {
        let header = "wss://stream.binance.com:9443/stream?streams=a@depth <-> 1633998511.159679";
        assert_eq!(split_line(RecordFormat::Cryptofeed, header).unwrap(), RecordedLine::Header);
        let frame = r#"1633998512.0633569: {"stream":"x","data":{}}"#;
        assert_eq!(
            split_line(RecordFormat::Cryptofeed, frame).unwrap(),
            RecordedLine::Stream { recv_ns: 1_633_998_512_063_356_900, json: r#"{"stream":"x","data":{}}"# }
        );
        let rest = r#"https://api.binance.com/api/v3/depth?symbol=nknusdt&limit=1000 -> 1633998512.320639: {"lastUpdateId":1}"#;
        assert_eq!(
            split_line(RecordFormat::Cryptofeed, rest).unwrap(),
            RecordedLine::Snapshot {
                recv_ns: 1_633_998_512_320_639_000,
                symbol: Some("NKNUSDT".into()),
                json: r#"{"lastUpdateId":1}"#
            }
        );
        assert!(split_line(RecordFormat::Cryptofeed, "https://x/depth -> 1.0: {}").unwrap_err().contains("symbol="));
        assert!(split_line(RecordFormat::Cryptofeed, "-1.5: {}").is_err());
        assert!(split_line(RecordFormat::Cryptofeed, "99999999999999999999: {}").is_err());
    }

    #[test]
    fn a_line_longer_than_the_bound_is_skipped_whole_and_the_next_one_read() {
        let mut text = vec![b'x'; MAX_LINE_BYTES + 10];
        text.extend_from_slice(b"\nnext\n");
        let mut r: Box<dyn BufRead> = Box::new(BufReader::with_capacity(4096, &text[..]));
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::TooLong);
        assert!(buf.len() <= MAX_LINE_BYTES);
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"next");
        assert_eq!(read_line_bounded(&mut *r, &mut buf).unwrap(), LineRead::End);
    }

    fn read_all(path: &Path) -> (Vec<String>, bool) {
        let mut r = open_recording(path).unwrap();
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            match read_line_bounded(&mut *r, &mut buf) {
                Ok(LineRead::Line) => lines.push(String::from_utf8(buf.clone()).unwrap()),
                Ok(LineRead::End) => return (lines, false),
                Ok(LineRead::TooLong) => panic!("no long lines here"),
                Err(_) => return (lines, true),
            }
        }
    }

    #[test]
    fn the_recorder_rotates_by_utc_hour_and_its_files_read_back_line_for_line() {
        let dir = std::env::temp_dir().join(format!("quorum-recorder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rec = FrameRecorder::start(&dir, "btcusdt").unwrap();
        let hour = 1_723_161_600_000_000_000i64; // 2024-08-09T00:00 UTC
        rec.record(hour - 2, r#"{"stream":"a","data":{}}"#);
        rec.record(hour - 1, "{\"lastUpdateId\":1,\n\"bids\":[],\"asks\":[]}");
        rec.record(hour, r#"{"stream":"b","data":{}}"#);
        let stats = rec.finish().unwrap();
        assert_eq!(stats.frames, 3);
        assert_eq!(stats.dropped, 0);
        let names: Vec<String> =
            stats.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["BTCUSDT_2024-08-08T23.gz", "BTCUSDT_2024-08-09T00.gz"]);
        let (first, truncated) = read_all(&stats.files[0]);
        assert!(!truncated, "a closed file is a whole gzip");
        assert_eq!(first.len(), 2);
        assert_eq!(
            split_line(RecordFormat::Hftbacktest, &first[0]).unwrap(),
            RecordedLine::Stream { recv_ns: hour - 2, json: r#"{"stream":"a","data":{}}"# }
        );
        assert!(matches!(
            split_line(RecordFormat::Hftbacktest, &first[1]).unwrap(),
            RecordedLine::Snapshot { recv_ns, .. } if recv_ns == hour - 1
        ));
        // A second recorder in the same hour does not overwrite the first's file.
        let rec = FrameRecorder::start(&dir, "BTCUSDT").unwrap();
        rec.record(hour + 5, "{}");
        let again = rec.finish().unwrap();
        assert_eq!(again.files[0].file_name().unwrap(), "BTCUSDT_2024-08-09T00-1.gz");
        assert_eq!(read_all(&stats.files[1]).0.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_the_recorder_flushed_survives_a_crash_and_decodes() {
        let dir = std::env::temp_dir().join(format!("quorum-recorder-crash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rec = FrameRecorder::start(&dir, "X").unwrap();
        for i in 0..1000 {
            rec.record(1_000_000_000 + i, &format!("{{\"stream\":\"x\",\"data\":{{\"i\":{i}}}}}"));
        }
        std::thread::sleep(RECORDER_FLUSH_EVERY * 2);
        // The file as a crash now would leave it: open, no gzip trailer.
        let path = dir.join("X_1970-01-01T00.gz");
        let (lines, truncated) = read_all(&path);
        assert!(truncated, "an open file has no gzip trailer yet");
        assert_eq!(lines.len(), 1000, "every frame older than a second is readable");
        assert!(lines.iter().all(|l| split_line(RecordFormat::Hftbacktest, l).is_ok()));
        rec.finish().unwrap();
        assert!(!read_all(&path).1, "finished: a whole gzip");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
