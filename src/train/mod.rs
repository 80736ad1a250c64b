//! Training data: labels, sample windows, walk-forward splits, the
//! normalizer (spec/data.md). The trainer itself is another issue.

pub mod dataset;

pub use dataset::{
    auto_alpha, gap_starts, purge_ticks, resolve_alpha, run_starts, walk_forward, Alpha, Dataset, DatasetError,
    Direction, Fold, HorizonLabels, Normalizer, TlobInput, FEATURE_WINDOW, TLOB_WINDOW,
};
