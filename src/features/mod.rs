//! Features: TA-Lib-exact indicators ([`talib`]) and the 112-feature
//! pipeline of docs/features.md, in two paths that agree bit for bit.
//!
//! - [`FeatureEngine`] (streaming, serving): push snapshots and trades in
//!   exchange-time order; each accepted snapshot answers the 112 features or
//!   "warming up". O(1) amortized per input, constant memory.
//! - [`BatchBuilder`] / [`build_features`] (batch, training): a whole history
//!   → a [`FeatureTable`], computed as array operations (TA-Lib batch
//!   functions over the candle series, window sums over arrays).
//!
//! Both share the input gate and candle aggregation ([`candles`]) and the
//! per-value formulas ([`book`], [`candle_features`], [`indicators`]); the
//! talib batch functions are the fold of their streams. The tests hold the
//! two paths to `1e-9 · (1 + |x|)`; by construction they are bit-identical.
//!
//! Modules: [`names`] (the 112 names), [`book`] (0–49), [`candles`]
//! (1-second candles, input gate, counts), [`candle_features`] (50–74),
//! [`indicators`] (75–111), [`engine`], [`batch`], [`table`] (on disk).
//!
//! Choices where docs/features.md is silent are documented in each module; in
//! short: rejected inputs are skipped entirely (they neither make a tick
//! nor move the clock); "previous tick" means previous accepted tick; a
//! snapshot needs 10 levels a side; partial windows are undefined (the
//! 200-candle warm-up covers them); a one-day jump restarts the pipeline.

pub mod batch;
pub mod book_features;
pub mod candle_features;
pub mod candles;
pub mod indicators;
pub mod names;
pub mod streaming;
pub mod table;
pub mod talib;

use std::path::PathBuf;

pub use batch::{build_features, build_from_store, BatchBuilder, FeatureTable, StoreBuild};
pub use candles::{merge_events, Candle, Event, InputStats, Reject};
pub use names::{feature_index, FEATURE_NAMES, NUM_FEATURES};
pub use streaming::{FeatureEngine, Update, WARMUP_CANDLES};
pub use table::{read_feature_table, write_feature_table, FeatureFile};

/// Errors of the feature pipeline.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("TA-Lib call refused its input: {0}")]
    Talib(#[from] talib::TalibError),
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
        source: parquet::errors::ParquetError,
    },
    #[error("reading the raw store: {0}")]
    Store(Box<crate::market::StoreError>),
    #[error("feature table {path}: {problem}")]
    Table { path: PathBuf, problem: String },
}
