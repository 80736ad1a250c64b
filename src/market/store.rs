//! The Parquet store (docs/data.md, "Parquet schema").
//!
//! Layout: `<root>/<symbol>/<YYYY-MM-DD>/snapshots_<first_ms>_<last_ms>.parquet`
//! and `trades_<first_ms>_<last_ms>.parquet` (UTC days of `ts_exchange_ms`,
//! timestamps zero-padded to 13 digits, `-<k>` appended if a name is taken).
//! Files are written under a hidden temporary name (`.<name>.tmp-<pid>`), fsynced,
//! renamed, and the directory fsynced: a reader never sees a half-written file.
//! Compression is zstd; the symbol, the level count and the kind of rows are
//! in each file's key-value metadata (`symbol`, `num_levels`, `quorum.kind`).
//! Nothing in a file depends on the clock or on hash order, so the same rows
//! give the same bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::types::{Level, Snapshot, Trade, NUM_LEVELS};
use crate::fsutil::TempFile;

/// zstd level used for every file.
pub const ZSTD_LEVEL: i32 = 3;
/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// Rows per row group.
const ROW_GROUP_ROWS: usize = 131_072;
const MS_PER_DAY: i64 = 86_400_000;

pub const SNAPSHOT_PREFIX: &str = "snapshots";
pub const TRADE_PREFIX: &str = "trades";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("building a record batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("{path}: missing column {column}")]
    MissingColumn { path: PathBuf, column: String },
    #[error("{path}: column {column} has type {found}, expected {expected}")]
    ColumnType { path: PathBuf, column: String, found: String, expected: String },
    #[error("{path}: column {column} has nulls")]
    Nulls { path: PathBuf, column: String },
    #[error("{path}: key-value metadata {key}: {problem}")]
    Metadata { path: PathBuf, key: &'static str, problem: String },
    #[error("invalid symbol {0:?}: use ASCII letters, digits, '-' or '_'")]
    BadSymbol(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

fn pq_err(path: &Path) -> impl FnOnce(ParquetError) -> StoreError + '_ {
    move |source| StoreError::Parquet { path: path.to_path_buf(), source }
}

/// A store's folder name: wider than [`super::types::is_exchange_symbol`]
/// (`-` and `_` for names such as `BTC-PERP`), still no path separators or dots.
fn check_symbol(symbol: &str) -> Result<(), StoreError> {
    let ok = !symbol.is_empty()
        && symbol.len() <= 64
        && symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadSymbol(symbol.to_owned()))
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The UTC day of a millisecond timestamp as `YYYY-MM-DD`.
pub fn utc_day(ts_ms: i64) -> String {
    let (y, m, d) = civil_from_days(ts_ms.div_euclid(MS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

fn px_names(side: &str, what: &str) -> Vec<String> {
    (0..NUM_LEVELS).map(|i| format!("{side}_{what}_{i}")).collect()
}

/// The snapshot schema: `ts_exchange_ms` i64, `ts_local_ns` i64,
/// `last_update_id` u64, then `bid_px_0..19`, `bid_qty_0..19`, `ask_px_0..19`,
/// `ask_qty_0..19` f64 (NaN for missing levels). No column is nullable.
pub fn snapshot_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("ts_exchange_ms", DataType::Int64, false),
        Field::new("ts_local_ns", DataType::Int64, false),
        Field::new("last_update_id", DataType::UInt64, false),
    ];
    for (side, what) in [("bid", "px"), ("bid", "qty"), ("ask", "px"), ("ask", "qty")] {
        for name in px_names(side, what) {
            fields.push(Field::new(name, DataType::Float64, false));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The trade schema: `ts_exchange_ms` i64, `trade_id` u64, `price` f64,
/// `quantity` f64, `is_buyer_maker` bool.
pub fn trade_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts_exchange_ms", DataType::Int64, false),
        Field::new("trade_id", DataType::UInt64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("quantity", DataType::Float64, false),
        Field::new("is_buyer_maker", DataType::Boolean, false),
    ]))
}

// ---- column buffers ----------------------------------------------------------

/// Rows of one kind, buffered column by column.
pub trait Rows: Default {
    type Row;
    const PREFIX: &'static str;
    fn schema() -> SchemaRef;
    fn ts_ms(row: &Self::Row) -> i64;
    fn push(&mut self, row: &Self::Row);
    fn row_count(&self) -> usize;
    /// Moves the buffered rows into a record batch.
    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError>;
    fn extra_metadata() -> Vec<KeyValue>;
}

/// Column buffers for snapshots.
#[derive(Default)]
pub struct SnapshotRows {
    ts_exchange_ms: Vec<i64>,
    ts_local_ns: Vec<i64>,
    last_update_id: Vec<u64>,
    /// `[bid_px × 20, bid_qty × 20, ask_px × 20, ask_qty × 20]`
    levels: Vec<Vec<f64>>,
}

impl Rows for SnapshotRows {
    type Row = Snapshot;
    const PREFIX: &'static str = SNAPSHOT_PREFIX;

    fn schema() -> SchemaRef {
        snapshot_schema()
    }

    fn ts_ms(row: &Snapshot) -> i64 {
        row.ts_exchange_ms
    }

    fn push(&mut self, s: &Snapshot) {
        if self.levels.is_empty() {
            self.levels = (0..4 * NUM_LEVELS).map(|_| Vec::with_capacity(BATCH_ROWS)).collect();
        }
        self.ts_exchange_ms.push(s.ts_exchange_ms);
        self.ts_local_ns.push(s.ts_local_ns);
        self.last_update_id.push(s.last_update_id);
        let (bp, rest) = self.levels.split_at_mut(NUM_LEVELS);
        let (bq, rest) = rest.split_at_mut(NUM_LEVELS);
        let (ap, aq) = rest.split_at_mut(NUM_LEVELS);
        for i in 0..NUM_LEVELS {
            bp[i].push(s.bids[i].price);
            bq[i].push(s.bids[i].quantity);
            ap[i].push(s.asks[i].price);
            aq[i].push(s.asks[i].quantity);
        }
    }

    fn row_count(&self) -> usize {
        self.ts_exchange_ms.len()
    }

    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(3 + 4 * NUM_LEVELS);
        cols.push(Arc::new(Int64Array::from(std::mem::take(&mut self.ts_exchange_ms))));
        cols.push(Arc::new(Int64Array::from(std::mem::take(&mut self.ts_local_ns))));
        cols.push(Arc::new(UInt64Array::from(std::mem::take(&mut self.last_update_id))));
        for col in self.levels.iter_mut() {
            let v = std::mem::replace(col, Vec::with_capacity(BATCH_ROWS));
            cols.push(Arc::new(Float64Array::from(v)));
        }
        if self.levels.is_empty() {
            for _ in 0..4 * NUM_LEVELS {
                cols.push(Arc::new(Float64Array::from(Vec::<f64>::new())));
            }
        }
        RecordBatch::try_new(schema.clone(), cols)
    }

    fn extra_metadata() -> Vec<KeyValue> {
        vec![KeyValue::new("num_levels".to_string(), NUM_LEVELS.to_string())]
    }
}

/// Column buffers for trades.
#[derive(Default)]
pub struct TradeRows {
    ts: Vec<i64>,
    id: Vec<u64>,
    price: Vec<f64>,
    qty: Vec<f64>,
    maker: Vec<bool>,
}

impl Rows for TradeRows {
    type Row = Trade;
    const PREFIX: &'static str = TRADE_PREFIX;

    fn schema() -> SchemaRef {
        trade_schema()
    }

    fn ts_ms(row: &Trade) -> i64 {
        row.ts_exchange_ms
    }

    fn push(&mut self, t: &Trade) {
        self.ts.push(t.ts_exchange_ms);
        self.id.push(t.trade_id);
        self.price.push(t.price);
        self.qty.push(t.quantity);
        self.maker.push(t.is_buyer_maker);
    }

    fn row_count(&self) -> usize {
        self.ts.len()
    }

    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.ts))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.id))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.price))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.qty))),
            Arc::new(BooleanArray::from(std::mem::take(&mut self.maker))),
        ];
        RecordBatch::try_new(schema.clone(), cols)
    }

    fn extra_metadata() -> Vec<KeyValue> {
        Vec::new()
    }
}

// ---- writing -----------------------------------------------------------------

struct OpenFile {
    day: i64,
    dir: PathBuf,
    /// Removed if the file is never published (an error, or the writer dropped).
    tmp: TempFile,
    first_ts: i64,
    last_ts: i64,
    writer: ArrowWriter<File>,
}

/// Writes rows of one kind for one symbol, one file per UTC day, each
/// published atomically by [`PartitionedWriter::finish`] (or when the day
/// changes). Dropping the writer without `finish` removes its temporary file.
pub struct PartitionedWriter<R: Rows> {
    root: PathBuf,
    symbol: String,
    schema: SchemaRef,
    props: WriterProperties,
    rows: R,
    open: Option<OpenFile>,
    written: Vec<PathBuf>,
    rows_written: u64,
}

pub type SnapshotWriter = PartitionedWriter<SnapshotRows>;
pub type TradeWriter = PartitionedWriter<TradeRows>;

impl<R: Rows> PartitionedWriter<R> {
    /// A writer under `root/<symbol>/`. Nothing is created before the first row.
    pub fn new(root: impl Into<PathBuf>, symbol: &str) -> Result<Self, StoreError> {
        check_symbol(symbol)?;
        let mut kv = vec![
            KeyValue::new("symbol".to_string(), symbol.to_string()),
            KeyValue::new("quorum.kind".to_string(), R::PREFIX.to_string()),
        ];
        kv.extend(R::extra_metadata());
        let props = writer_properties(kv, ROW_GROUP_ROWS)?;
        Ok(PartitionedWriter {
            root: root.into(),
            symbol: symbol.to_owned(),
            schema: R::schema(),
            props,
            rows: R::default(),
            open: None,
            written: Vec::new(),
            rows_written: 0,
        })
    }

    /// Row groups of at most `rows` rows (default 131,072). The writer holds
    /// a row group in memory until it is complete: a streaming writer of an
    /// unbounded input (`quorum import`) keeps its memory flat with small ones.
    pub fn with_row_group_rows(mut self, rows: usize) -> Result<Self, StoreError> {
        let kv = self.props.key_value_metadata().cloned().unwrap_or_default();
        self.props = writer_properties(kv, rows.max(1))?;
        Ok(self)
    }

    /// Appends one row. A row on a new UTC day closes the current file.
    pub fn push(&mut self, row: &R::Row) -> Result<(), StoreError> {
        let ts = R::ts_ms(row);
        let day = ts.div_euclid(MS_PER_DAY);
        if self.open.as_ref().is_some_and(|f| f.day != day) {
            self.close_current()?;
        }
        if self.open.is_none() {
            self.open = Some(self.create(day, ts)?);
        }
        if let Some(f) = self.open.as_mut() {
            f.last_ts = ts;
        }
        self.rows.push(row);
        if self.rows.row_count() >= BATCH_ROWS {
            self.flush_rows()?;
        }
        Ok(())
    }

    pub fn push_all<'a>(&mut self, rows: impl IntoIterator<Item = &'a R::Row>) -> Result<(), StoreError>
    where
        R::Row: 'a,
    {
        for r in rows {
            self.push(r)?;
        }
        Ok(())
    }

    /// Rows accepted so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written + self.rows.row_count() as u64
    }

    /// Publishes the open file and returns every file written, in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, StoreError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.written))
    }

    fn create(&self, day: i64, first_ts: i64) -> Result<OpenFile, StoreError> {
        let dir = self.root.join(&self.symbol).join(utc_day(day * MS_PER_DAY));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let (tmp, file) =
            TempFile::create(&dir, &format!("{}_{first_ts:013}.parquet", R::PREFIX)).map_err(io_err(&dir))?;
        let writer =
            ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())).map_err(pq_err(tmp.path()))?;
        Ok(OpenFile { day, dir, tmp, first_ts, last_ts: first_ts, writer })
    }

    fn flush_rows(&mut self) -> Result<(), StoreError> {
        if self.rows.row_count() == 0 {
            return Ok(());
        }
        let n = self.rows.row_count() as u64;
        let batch = self.rows.take_batch(&self.schema)?;
        if let Some(f) = self.open.as_mut() {
            f.writer.write(&batch).map_err(pq_err(f.tmp.path()))?;
        }
        self.rows_written += n;
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), StoreError> {
        self.flush_rows()?;
        let Some(f) = self.open.take() else {
            return Ok(());
        };
        let file = f.writer.into_inner().map_err(pq_err(f.tmp.path()))?;
        let base = format!("{}_{:013}_{:013}", R::PREFIX, f.first_ts, f.last_ts);
        let mut dest = f.dir.join(format!("{base}.parquet"));
        let mut k = 1;
        while dest.exists() {
            dest = f.dir.join(format!("{base}-{k}.parquet"));
            k += 1;
        }
        f.tmp.persist(file, &dest).map_err(io_err(&dest))?;
        self.written.push(dest);
        Ok(())
    }
}

fn writer_properties(kv: Vec<KeyValue>, row_group_rows: usize) -> Result<WriterProperties, StoreError> {
    let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(pq_err(Path::new("<writer properties>")))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_key_value_metadata(Some(kv))
        .build())
}

/// Writes snapshots (any number of days) and returns the files written.
pub fn write_snapshots(root: &Path, symbol: &str, snapshots: &[Snapshot]) -> Result<Vec<PathBuf>, StoreError> {
    let mut w = SnapshotWriter::new(root, symbol)?;
    w.push_all(snapshots)?;
    w.finish()
}

/// Writes trades (any number of days) and returns the files written.
pub fn write_trades(root: &Path, symbol: &str, trades: &[Trade]) -> Result<Vec<PathBuf>, StoreError> {
    let mut w = TradeWriter::new(root, symbol)?;
    w.push_all(trades)?;
    w.finish()
}

// ---- listing -------------------------------------------------------------------

/// The symbol's day directories (`YYYY-MM-DD`), oldest first.
pub fn list_days(root: &Path, symbol: &str) -> Result<Vec<String>, StoreError> {
    check_symbol(symbol)?;
    let dir = root.join(symbol);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut days = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let b = name.as_bytes();
        let is_day = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if is_day && e.path().is_dir() {
            days.push(name);
        }
    }
    days.sort();
    Ok(days)
}

/// The symbols under `root` that hold at least one snapshot file, sorted:
/// what a "not found" names so the user can pick one.
pub fn list_symbols(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|s| check_symbol(s).is_ok())
        .filter(|s| list_files(root, s, SNAPSHOT_PREFIX).is_ok_and(|f| !f.is_empty()))
        .collect();
    out.sort();
    out
}

/// "it holds A, B (pass --symbol A)" or how to make data, for "not found" messages.
pub fn symbols_hint(root: &Path) -> String {
    match list_symbols(root).as_slice() {
        [] => format!(
            "{} holds no snapshots of any symbol: write some with `quorum simulate --out DIR`, `quorum collect` or `quorum import`",
            root.display()
        ),
        found => format!("{} holds {} (pass --symbol {})", root.display(), found.join(", "), found[0]),
    }
}

/// The symbol a command reads when it is given none: the one symbol `root`
/// holds. Several, or none, is an error that names them (or says how to
/// make data), so `simulate → features → train → evaluate` chain without
/// repeating the simulator's symbol.
pub fn sole_symbol(root: &Path) -> Result<String, String> {
    match list_symbols(root).as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(symbols_hint(root)),
        many => Err(format!("{} holds {}: pass --symbol with one of them", root.display(), many.join(", "))),
    }
}

/// `<prefix>_<first>_<last>[-k].parquet` → (first, last, k).
fn parse_file_name(name: &str, prefix: &str) -> Option<(i64, i64, u64)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('_')?.strip_suffix(".parquet")?;
    let (first, rest) = rest.split_once('_')?;
    let (last, k) = match rest.split_once('-') {
        Some((l, k)) => (l, k.parse().ok()?),
        None => (rest, 0),
    };
    Some((first.parse().ok()?, last.parse().ok()?, k))
}

/// The symbol's published files of one kind (`SNAPSHOT_PREFIX` or
/// `TRADE_PREFIX`) in time order: by day, then first and last timestamp.
/// Temporary files are skipped.
pub fn list_files(root: &Path, symbol: &str, prefix: &str) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for day in list_days(root, symbol)? {
        let dir = root.join(symbol).join(&day);
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = parse_file_name(&name, prefix) {
                files.push((key, e.path()));
            }
        }
        files.sort();
        out.extend(files.into_iter().map(|(_, p)| p));
    }
    Ok(out)
}

/// Removes the temporary files a killed writer left under `<root>/<symbol>/`:
/// `.<name>.tmp-<pid>-<n>` of a day file whose process no longer runs (through
/// [`crate::fsutil::remove_dead_writers_temp_files`]). Files of this process
/// or of a live one are kept; where liveness cannot be checked (no `/proc`),
/// nothing is removed. The collector and `simulate_to_parquet` call it when
/// they start. Returns the removed paths.
pub fn remove_stale_temp_files(root: &Path, symbol: &str) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    for day in list_days(root, symbol)? {
        let dir = root.join(symbol).join(&day);
        removed.extend(crate::fsutil::remove_dead_writers_temp_files(&dir, is_day_file_name).map_err(io_err(&dir))?);
    }
    Ok(removed)
}

/// Whether `name` is a day file's (`<prefix>_<first>.parquet`).
fn is_day_file_name(name: &str) -> bool {
    (name.starts_with(SNAPSHOT_PREFIX) || name.starts_with(TRADE_PREFIX)) && name.ends_with(".parquet")
}

// ---- reading -------------------------------------------------------------------

/// What a file's key-value metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub symbol: String,
    pub num_levels: Option<usize>,
    pub rows: i64,
}

fn open_reader(path: &Path) -> Result<(ParquetRecordBatchReader, FileInfo), StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err(path))?;
    let md = builder.metadata().file_metadata();
    let kv = md.key_value_metadata();
    let get = |key: &str| kv.and_then(|v| v.iter().find(|k| k.key == key)).and_then(|k| k.value.clone());
    let symbol = get("symbol").ok_or_else(|| StoreError::Metadata {
        path: path.to_path_buf(),
        key: "symbol",
        problem: "missing".into(),
    })?;
    let num_levels = match get("num_levels") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| StoreError::Metadata {
            path: path.to_path_buf(),
            key: "num_levels",
            problem: format!("not a number: {v:?}"),
        })?),
    };
    let info = FileInfo { symbol, num_levels, rows: md.num_rows() };
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(pq_err(path))?;
    Ok((reader, info))
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    path: &Path,
    name: &str,
    expected: DataType,
) -> Result<&'a T, StoreError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| StoreError::MissingColumn { path: path.to_path_buf(), column: name.to_owned() })?;
    if col.data_type() != &expected {
        return Err(StoreError::ColumnType {
            path: path.to_path_buf(),
            column: name.to_owned(),
            found: col.data_type().to_string(),
            expected: expected.to_string(),
        });
    }
    if col.null_count() > 0 {
        return Err(StoreError::Nulls { path: path.to_path_buf(), column: name.to_owned() });
    }
    col.as_any().downcast_ref::<T>().ok_or_else(|| StoreError::ColumnType {
        path: path.to_path_buf(),
        column: name.to_owned(),
        found: col.data_type().to_string(),
        expected: expected.to_string(),
    })
}

fn snapshots_from_batch(batch: &RecordBatch, path: &Path, out: &mut VecDeque<Snapshot>) -> Result<(), StoreError> {
    let ts_ex = column::<Int64Array>(batch, path, "ts_exchange_ms", DataType::Int64)?;
    let ts_lo = column::<Int64Array>(batch, path, "ts_local_ns", DataType::Int64)?;
    let uid = column::<UInt64Array>(batch, path, "last_update_id", DataType::UInt64)?;
    let mut lv: Vec<&Float64Array> = Vec::with_capacity(4 * NUM_LEVELS);
    for (side, what) in [("bid", "px"), ("bid", "qty"), ("ask", "px"), ("ask", "qty")] {
        for name in px_names(side, what) {
            lv.push(column::<Float64Array>(batch, path, &name, DataType::Float64)?);
        }
    }
    let vals: Vec<&[f64]> = lv.iter().map(|a| a.values().as_ref()).collect();
    let (bp, rest) = vals.split_at(NUM_LEVELS);
    let (bq, rest) = rest.split_at(NUM_LEVELS);
    let (ap, aq) = rest.split_at(NUM_LEVELS);
    for r in 0..batch.num_rows() {
        let mut s = Snapshot::empty(ts_ex.value(r), ts_lo.value(r), uid.value(r));
        for (i, (b, a)) in s.bids.iter_mut().zip(s.asks.iter_mut()).enumerate() {
            *b = Level::new(bp[i][r], bq[i][r]);
            *a = Level::new(ap[i][r], aq[i][r]);
        }
        out.push_back(s);
    }
    Ok(())
}

fn trades_from_batch(batch: &RecordBatch, path: &Path, out: &mut VecDeque<Trade>) -> Result<(), StoreError> {
    let ts = column::<Int64Array>(batch, path, "ts_exchange_ms", DataType::Int64)?;
    let id = column::<UInt64Array>(batch, path, "trade_id", DataType::UInt64)?;
    let px = column::<Float64Array>(batch, path, "price", DataType::Float64)?;
    let qty = column::<Float64Array>(batch, path, "quantity", DataType::Float64)?;
    let m = column::<BooleanArray>(batch, path, "is_buyer_maker", DataType::Boolean)?;
    for r in 0..batch.num_rows() {
        out.push_back(Trade {
            ts_exchange_ms: ts.value(r),
            trade_id: id.value(r),
            price: px.value(r),
            quantity: qty.value(r),
            is_buyer_maker: m.value(r),
        });
    }
    Ok(())
}

type Decode<T> = fn(&RecordBatch, &Path, &mut VecDeque<T>) -> Result<(), StoreError>;

/// Streams a symbol's rows of one kind, file by file in time order, a batch
/// in memory at a time. It checks each file's symbol (and level count for
/// snapshots) and stops after the first error.
pub struct RowReader<T> {
    symbol: String,
    files: VecDeque<PathBuf>,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    pending: VecDeque<T>,
    decode: Decode<T>,
    check_levels: bool,
    failed: bool,
}

pub type SnapshotReader = RowReader<Snapshot>;
pub type TradeReader = RowReader<Trade>;

impl<T> RowReader<T> {
    /// The files this reader will read (what is left of them).
    pub fn remaining_files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.iter()
    }

    fn next_row(&mut self) -> Result<Option<T>, StoreError> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            if let Some((path, reader)) = self.current.as_mut() {
                match reader.next() {
                    Some(batch) => {
                        let batch = batch.map_err(StoreError::Arrow)?;
                        (self.decode)(&batch, path, &mut self.pending)?;
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let Some(path) = self.files.pop_front() else {
                return Ok(None);
            };
            let (reader, info) = open_reader(&path)?;
            if info.symbol != self.symbol {
                return Err(StoreError::Metadata {
                    path,
                    key: "symbol",
                    problem: format!("file is for {:?}, expected {:?}", info.symbol, self.symbol),
                });
            }
            if self.check_levels && info.num_levels != Some(NUM_LEVELS) {
                return Err(StoreError::Metadata {
                    path,
                    key: "num_levels",
                    problem: format!("{:?}, expected {NUM_LEVELS}", info.num_levels),
                });
            }
            self.current = Some((path, reader));
        }
    }
}

impl<T> Iterator for RowReader<T> {
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_row() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn reader<T>(files: Vec<PathBuf>, symbol: &str, decode: Decode<T>, check_levels: bool) -> RowReader<T> {
    RowReader {
        symbol: symbol.to_owned(),
        files: files.into(),
        current: None,
        pending: VecDeque::new(),
        decode,
        check_levels,
        failed: false,
    }
}

/// Streams all of a symbol's snapshots, days in time order.
pub fn read_snapshots(root: &Path, symbol: &str) -> Result<SnapshotReader, StoreError> {
    let files = list_files(root, symbol, SNAPSHOT_PREFIX)?;
    Ok(reader(files, symbol, snapshots_from_batch, true))
}

/// Streams all of a symbol's trades, days in time order.
pub fn read_trades(root: &Path, symbol: &str) -> Result<TradeReader, StoreError> {
    let files = list_files(root, symbol, TRADE_PREFIX)?;
    Ok(reader(files, symbol, trades_from_batch, false))
}

/// Reads one snapshot file whole, with its metadata.
pub fn read_snapshot_file(path: &Path) -> Result<(FileInfo, Vec<Snapshot>), StoreError> {
    let (reader, info) = open_reader(path)?;
    let mut rows = VecDeque::new();
    for batch in reader {
        snapshots_from_batch(&batch?, path, &mut rows)?;
    }
    Ok((info, rows.into()))
}

/// Reads one trade file whole, with its metadata.
pub fn read_trade_file(path: &Path) -> Result<(FileInfo, Vec<Trade>), StoreError> {
    let (reader, info) = open_reader(path)?;
    let mut rows = VecDeque::new();
    for batch in reader {
        trades_from_batch(&batch?, path, &mut rows)?;
    }
    Ok((info, rows.into()))
}
