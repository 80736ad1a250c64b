//! `load_data(features_path, lob_path, symbol)`: the trainer's input, as a
//! [`Dataset`] (timestamps, mids, the 112 features, and the snapshots when
//! TLOB needs them).
//!
//! Where the rows come from:
//! - With the raw snapshot store (`lob_path`, the collector's / simulator's
//!   `<root>/<SYMBOL>/<day>/*.parquet`): the batch feature path runs over it
//!   (`build_from_store`), which gives every row its exact mid (the labels
//!   need it; the feature table on disk has none) and its snapshot. If a
//!   feature table exists too, it must hold the same rows (same timestamps,
//!   same values as f32): a stale table is an error that says to rebuild it,
//!   never silently mixed with newer raw data.
//! - With only the feature table: mids are rebuilt from the `mid_return`
//!   column (`bps(ln(mid_t / mid_{t−1}))`), up to a constant factor, which the
//!   labels do not see (they are ratios of mids). Exact except where the
//!   feature builder dropped a non-finite row (counted in its log): the mid
//!   after such a row misses one step. TLOB cannot train this way.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::features::{build_from_store, feature_index, read_feature_table, FeatureFile, NUM_FEATURES};
use crate::market::store::{list_files, SNAPSHOT_PREFIX};
use crate::train::dataset::{Dataset, DEFAULT_INTERVAL_MS};

/// Where the data of a run was read from (for the log and the results).
#[derive(Clone, Debug, PartialEq)]
pub struct DataSource {
    pub features: Option<PathBuf>,
    pub lob: Option<PathBuf>,
    pub symbol: String,
    pub rows: usize,
    /// Whether every row's snapshot is kept (TLOB).
    pub snapshots: bool,
}

/// The feature table of `symbol` at `path`: the file itself, or
/// `<path>/<SYMBOL>.parquet` when `path` is a folder.
pub fn feature_table_path(path: &Path, symbol: &str) -> PathBuf {
    if path.is_dir() {
        path.join(format!("{symbol}.parquet"))
    } else {
        path.to_path_buf()
    }
}

/// The raw store and the feature folder of a data folder laid out as
/// `quorum simulate` / `collect` / `features` write it: the raw store is
/// `<data>/raw_lob` (or `<data>` itself when it holds `<data>/<SYMBOL>/`),
/// the features `<data>/features`. `None` for the raw store when neither exists.
pub fn data_folder(data: &Path, symbol: &str) -> Result<(Option<PathBuf>, PathBuf)> {
    if !data.is_dir() {
        return Err(input_err(data, "no such data folder"));
    }
    let store = raw_store_of(data);
    // `<data>` itself counts when it holds a symbol's folder (loading names
    // the others in its "not found").
    let raw = (store != data || data.join(symbol).is_dir() || !crate::market::store::list_symbols(data).is_empty())
        .then_some(store);
    Ok((raw, data.join("features")))
}

/// `--symbol` when given, else the one symbol the data folder's raw store
/// (`<data>/raw_lob` or `<data>`) holds ([`crate::market::store::sole_symbol`]).
pub fn symbol_or_sole(data: &Path, given: Option<&str>) -> Result<String> {
    if let Some(s) = given {
        return Ok(s.to_owned());
    }
    crate::market::store::sole_symbol(&raw_store_of(data)).map_err(|reason| Error::input("--symbol", reason))
}

/// Where a data folder's raw store is: `<data>/raw_lob` when it exists, else `<data>` itself.
fn raw_store_of(data: &Path) -> PathBuf {
    if data.join("raw_lob").is_dir() {
        data.join("raw_lob")
    } else {
        data.to_path_buf()
    }
}

fn input_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::input(path.display().to_string(), reason)
}

/// Reads the data of `symbol` (see the module docs). `keep_snapshots` keeps
/// each row's snapshot (TLOB); it needs `lob_path`.
pub fn load_data(
    features_path: Option<&Path>,
    lob_path: Option<&Path>,
    symbol: &str,
    keep_snapshots: bool,
) -> Result<(Dataset, DataSource)> {
    if symbol.is_empty() {
        return Err(Error::config("symbol", "must not be empty"));
    }
    let table_path = features_path.map(|p| feature_table_path(p, symbol));
    let table_path = table_path.filter(|p| p.exists());
    if keep_snapshots && lob_path.is_none() {
        return Err(Error::config(
            "lob_path",
            "TLOB trains on the raw order-book snapshots: give the raw LOB folder (the collector's store)",
        ));
    }
    let mut source = DataSource {
        features: table_path.clone(),
        lob: lob_path.map(Path::to_path_buf),
        symbol: symbol.to_owned(),
        rows: 0,
        snapshots: keep_snapshots,
    };
    let ds = match lob_path {
        Some(lob) => {
            if !lob.is_dir() {
                return Err(input_err(lob, "the raw LOB folder does not exist"));
            }
            let files = list_files(lob, symbol, SNAPSHOT_PREFIX).map_err(|e| input_err(lob, e.to_string()))?;
            if files.is_empty() {
                return Err(input_err(
                    &lob.join(symbol),
                    format!(
                        "no snapshot files for {symbol} (expected <root>/{symbol}/<YYYY-MM-DD>/snapshots_*.parquet); {}",
                        crate::market::store::symbols_hint(lob)
                    ),
                ));
            }
            let built = build_from_store(lob, symbol, keep_snapshots, |_| {})
                .map_err(|e| input_err(lob, format!("building the features of {symbol}: {e}")))?;
            if let Some(tp) = &table_path {
                let file = read_feature_table(tp).map_err(|e| input_err(tp, e.to_string()))?;
                check_same_rows(tp, &file, &built.table.ts_ms, &built.table.rows)?;
            }
            Dataset::from_table(&built.table, &built.snapshots, DEFAULT_INTERVAL_MS)
                .map_err(|e| input_err(lob, e.to_string()))?
        }
        None => {
            let Some(tp) = table_path else {
                let p = features_path.map(|p| feature_table_path(p, symbol)).unwrap_or_default();
                return Err(input_err(&p, "no feature table and no raw LOB folder: nothing to train on"));
            };
            let file = read_feature_table(&tp).map_err(|e| input_err(&tp, e.to_string()))?;
            if !file.is_empty() && file.symbol != symbol {
                return Err(input_err(&tp, format!("holds symbol {:?}, not {symbol:?}", file.symbol)));
            }
            let mid = mids_from_returns(&file);
            Dataset::new(file.ts_ms, mid, file.values, Vec::new(), DEFAULT_INTERVAL_MS)
                .map_err(|e| input_err(&tp, e.to_string()))?
        }
    };
    if ds.is_empty() {
        let p = lob_path.map(|l| l.join(symbol)).or(source.features.clone()).unwrap_or_default();
        return Err(input_err(&p, "no feature rows (is the history shorter than the 200-candle warm-up?)"));
    }
    source.rows = ds.len();
    Ok((ds, source))
}

/// Mids (relative, starting at 1) from the `mid_return` column.
fn mids_from_returns(file: &FeatureFile) -> Vec<f64> {
    let col = feature_index("mid_return").expect("mid_return is a feature");
    let mut mid = Vec::with_capacity(file.len());
    let mut m = 1.0f64;
    for i in 0..file.len() {
        if i > 0 {
            m *= (f64::from(file.row(i)[col]) / 10_000.0).exp();
        }
        mid.push(m);
    }
    mid
}

fn check_same_rows(path: &Path, file: &FeatureFile, ts: &[i64], rows: &[[f64; NUM_FEATURES]]) -> Result<()> {
    let stale = |what: String| {
        input_err(
            path,
            format!("does not match the raw store ({what}); rebuild it with `quorum features`, or leave it out"),
        )
    };
    if file.len() != ts.len() {
        return Err(stale(format!("{} rows, the raw store gives {}", file.len(), ts.len())));
    }
    for (i, (&t, row)) in ts.iter().zip(rows).enumerate() {
        if file.ts_ms[i] != t {
            return Err(stale(format!("row {i} is at {} ms, the raw store's at {t} ms", file.ts_ms[i])));
        }
        if let Some(j) = (0..NUM_FEATURES).find(|&j| file.row(i)[j].to_bits() != (row[j] as f32).to_bits()) {
            return Err(stale(format!("row {i} feature {j} is {}, the raw store gives {}", file.row(i)[j], row[j])));
        }
    }
    Ok(())
}
