//! Labels, sample windows, walk-forward splits and the normalizer of
//! docs/training.md — a data layer: plain structs and index lists for the
//! trainer, no training code.
//!
//! Ticks are the rows of a [`Dataset`] (in practice the emitted rows of a
//! [`FeatureTable`], with their mids and, for TLOB, their snapshots).
//!
//! Choices where the contract was silent or loose (now written into
//! docs/training.md):
//! - **Gaps** are consecutive timestamps more than `3 × interval_ms` apart.
//!   A *run* is a maximal gap-free stretch of rows. Windows and labels both
//!   stay inside one run: a label at `t` for horizon `k` needs `t + k` in
//!   the same run as `t` (its future may not span a gap either), so every
//!   sample — window plus label — is built from consecutive ticks.
//! - **auto α** is the 1/3 quantile of `|r|` over the training rows (lower
//!   order statistic, no interpolation): NEUTRAL (`|r| ≤ α`) gets about a
//!   third, UP and DOWN share the other two thirds, each about a third when
//!   `r` is roughly symmetric. Fit on the training part's labelled rows
//!   only.
//! - **Walk-forward**: the timeline is the rows `0..n`. With `S ≥ 2` it is
//!   cut into `S + 1` blocks at `⌊b·n/(S+1)⌋`; fold `i` (1-based) validates
//!   on block `i` and trains on rows `0..start_i − purge`. With `S = 1` the
//!   validation part is the last `⌈v·n⌉` rows. A sample at `t` belongs to a
//!   part when `t` is in its row range; the purge (max horizon + window
//!   length) makes every training label end before any validation window
//!   starts.
//! - The **normalizer** uses population std, and std 0 (or non-finite)
//!   becomes 1.

use std::ops::Range;

use crate::features::{FeatureTable, NUM_FEATURES};
use crate::market::{RawLOBSequence, SequenceError, Snapshot};
use crate::model::LobNormalization;

/// Feature vectors per MPD / CNN-LSTM window.
pub const FEATURE_WINDOW: usize = 60;
/// Snapshots per TLOB window.
pub const TLOB_WINDOW: usize = 100;
/// The collector's interval.
pub const DEFAULT_INTERVAL_MS: i64 = 100;

/// Errors of the data layer; each names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset field {field} has {len} rows but ts_ms has {expected}")]
    Length { field: &'static str, len: usize, expected: usize },
    #[error("dataset field ts_ms is not non-decreasing at row {row}")]
    Unordered { row: usize },
    #[error("dataset field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("auto alpha for horizon {horizon}: no labelled row in the training part")]
    NoTrainingLabels { horizon: usize },
    #[error("TLOB window ending at row {row}: {source}")]
    Sequence {
        row: usize,
        #[source]
        source: SequenceError,
    },
}

/// The class of a label: the models' order `[DOWN, NEUTRAL, UP]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    Down = 0,
    Neutral = 1,
    Up = 2,
}

impl Direction {
    /// `UP` if `r > α`, `DOWN` if `r < −α`, else `NEUTRAL`.
    pub fn classify(r: f64, alpha: f64) -> Direction {
        if r > alpha {
            Direction::Up
        } else if r < -alpha {
            Direction::Down
        } else {
            Direction::Neutral
        }
    }

    pub fn class_id(self) -> usize {
        self as usize
    }
}

/// α per horizon: fixed, or fit on the training part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Alpha {
    Fixed(f64),
    Auto,
}

/// Indices where a gap starts: rows `i` with `ts[i] − ts[i−1] > 3 · interval`.
pub fn gap_starts(ts_ms: &[i64], interval_ms: i64) -> Vec<usize> {
    (1..ts_ms.len()).filter(|&i| ts_ms[i] - ts_ms[i - 1] > 3 * interval_ms).collect()
}

/// For each row, the first row of its run (gap-free stretch).
pub fn run_starts(ts_ms: &[i64], interval_ms: i64) -> Vec<usize> {
    let mut out = Vec::with_capacity(ts_ms.len());
    let mut start = 0;
    for i in 0..ts_ms.len() {
        if i > 0 && ts_ms[i] - ts_ms[i - 1] > 3 * interval_ms {
            start = i;
        }
        out.push(start);
    }
    out
}

/// The raw labels of one horizon: `r` and the return target per row, NaN
/// where the row has no `k` future ticks in its run.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonLabels {
    pub horizon: usize,
    /// `(mean(mid[t+1..=t+k]) − mid[t]) / mid[t]`.
    pub r: Vec<f64>,
    /// `bps(ln(mid[t+k] / mid[t]))`.
    pub target_bps: Vec<f64>,
}

impl HorizonLabels {
    /// Labels of horizon `k` (≥ 1) over `mid`, runs given by `run_start`.
    /// Uses a running sum over the run (exact enough: mids of one run).
    pub fn compute(mid: &[f64], run_start: &[usize], k: usize) -> HorizonLabels {
        let n = mid.len();
        let mut r = vec![f64::NAN; n];
        let mut target = vec![f64::NAN; n];
        for t in 0..n {
            let e = t + k;
            if k == 0 || e >= n || run_start[e] != run_start[t] {
                continue;
            }
            let m: f64 = mid[t + 1..=e].iter().sum::<f64>() / k as f64;
            r[t] = (m - mid[t]) / mid[t];
            target[t] = (mid[e] / mid[t]).ln() * 10_000.0;
        }
        HorizonLabels { horizon: k, r, target_bps: target }
    }

    /// Whether row `t` has a label.
    pub fn has(&self, t: usize) -> bool {
        !self.r[t].is_nan()
    }

    /// The class of row `t` under `alpha`.
    pub fn class(&self, t: usize, alpha: f64) -> Option<Direction> {
        self.has(t).then(|| Direction::classify(self.r[t], alpha))
    }
}

/// The auto α over the labelled rows in `rows` (see the module docs).
pub fn auto_alpha(labels: &HorizonLabels, rows: Range<usize>) -> Result<f64, DatasetError> {
    let mut a: Vec<f64> = labels.r[rows].iter().filter(|v| !v.is_nan()).map(|v| v.abs()).collect();
    if a.is_empty() {
        return Err(DatasetError::NoTrainingLabels { horizon: labels.horizon });
    }
    a.sort_by(f64::total_cmp);
    let idx = ((a.len() as f64 / 3.0).floor() as usize).min(a.len() - 1);
    Ok(a[idx])
}

/// Resolves α for a fold: the fixed value, or [`auto_alpha`] on `train`.
pub fn resolve_alpha(alpha: Alpha, labels: &HorizonLabels, train: Range<usize>) -> Result<f64, DatasetError> {
    match alpha {
        Alpha::Fixed(a) if a.is_finite() && a >= 0.0 => Ok(a),
        Alpha::Fixed(a) => Err(DatasetError::Config { field: "alpha", reason: format!("{a} is not finite and ≥ 0") }),
        Alpha::Auto => auto_alpha(labels, train),
    }
}

/// Aligned rows: timestamps, mids, feature vectors (f32, row-major) and,
/// optionally, the snapshots (for TLOB).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub ts_ms: Vec<i64>,
    pub mid: Vec<f64>,
    /// `len × NUM_FEATURES`, row-major.
    pub features: Vec<f32>,
    /// Empty, or one snapshot per row.
    pub snapshots: Vec<Snapshot>,
    pub interval_ms: i64,
    run_start: Vec<usize>,
}

impl Dataset {
    pub fn new(
        ts_ms: Vec<i64>,
        mid: Vec<f64>,
        features: Vec<f32>,
        snapshots: Vec<Snapshot>,
        interval_ms: i64,
    ) -> Result<Dataset, DatasetError> {
        let n = ts_ms.len();
        if mid.len() != n {
            return Err(DatasetError::Length { field: "mid", len: mid.len(), expected: n });
        }
        if features.len() != n * NUM_FEATURES {
            return Err(DatasetError::Length { field: "features", len: features.len() / NUM_FEATURES, expected: n });
        }
        if !snapshots.is_empty() && snapshots.len() != n {
            return Err(DatasetError::Length { field: "snapshots", len: snapshots.len(), expected: n });
        }
        if interval_ms <= 0 {
            return Err(DatasetError::Config { field: "interval_ms", reason: "must be positive".into() });
        }
        if let Some(row) = (1..n).find(|&i| ts_ms[i] < ts_ms[i - 1]) {
            return Err(DatasetError::Unordered { row });
        }
        let run_start = run_starts(&ts_ms, interval_ms);
        Ok(Dataset { ts_ms, mid, features, snapshots, interval_ms, run_start })
    }

    /// From a batch feature table; `snapshots` are the snapshots that were
    /// given to the builder (joined by `table.source`), or empty.
    pub fn from_table(table: &FeatureTable, snapshots: &[Snapshot], interval_ms: i64) -> Result<Dataset, DatasetError> {
        let features = table.rows.iter().flat_map(|r| r.iter().map(|&v| v as f32)).collect();
        let snaps = if snapshots.is_empty() {
            Vec::new()
        } else {
            let mut v = Vec::with_capacity(table.len());
            for &i in &table.source {
                let s = snapshots.get(i).ok_or(DatasetError::Length {
                    field: "snapshots",
                    len: snapshots.len(),
                    expected: i + 1,
                })?;
                v.push(*s);
            }
            v
        };
        Dataset::new(table.ts_ms.clone(), table.mid.clone(), features, snaps, interval_ms)
    }

    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    /// The first row of each row's run.
    pub fn run_starts(&self) -> &[usize] {
        &self.run_start
    }

    /// Labels of horizon `k`.
    pub fn labels(&self, k: usize) -> HorizonLabels {
        HorizonLabels::compute(&self.mid, &self.run_start, k)
    }

    /// Whether the `window` rows ending at `t` are one gap-free run.
    pub fn window_fits(&self, t: usize, window: usize) -> bool {
        window >= 1 && t < self.len() && t + 1 >= window && self.run_start[t] <= t + 1 - window
    }

    /// Rows `t` whose window of `window` rows fits and that have a label at
    /// every horizon: the candidate samples, in time order.
    pub fn sample_ends(&self, window: usize, labels: &[HorizonLabels]) -> Vec<usize> {
        (0..self.len()).filter(|&t| self.window_fits(t, window) && labels.iter().all(|l| l.has(t))).collect()
    }

    /// The feature vector of row `t`.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.features[t * NUM_FEATURES..(t + 1) * NUM_FEATURES]
    }

    /// The `window × 112` features ending at `t` (MPD / CNN-LSTM input),
    /// `None` if the window does not fit in one run.
    pub fn feature_window(&self, t: usize, window: usize) -> Option<&[f32]> {
        self.window_fits(t, window).then(|| &self.features[(t + 1 - window) * NUM_FEATURES..(t + 1) * NUM_FEATURES])
    }

    /// The TLOB input ending at `t` under the window normalization: the
    /// [`TLOB_WINDOW`] snapshots through `RawLOBSequence::to_normalized_tensor`
    /// (`100 × 20 × 4`), and the feature vector at `t` as `aux`. `None` if
    /// the window does not fit or no snapshots are kept.
    pub fn tlob_input(&self, t: usize) -> Result<Option<TlobInput<'_>>, DatasetError> {
        self.tlob_input_as(t, LobNormalization::Window)
    }

    /// As `tlob_input`, under `norm` (docs/data.md). Under
    /// `snapshot` the first snapshot's price reference is the snapshot
    /// before the window when it is in the same run (as in a live stream).
    pub fn tlob_input_as(&self, t: usize, norm: LobNormalization) -> Result<Option<TlobInput<'_>>, DatasetError> {
        if self.snapshots.is_empty() || !self.window_fits(t, TLOB_WINDOW) {
            return Ok(None);
        }
        let seq = RawLOBSequence::new(self.snapshots[t + 1 - TLOB_WINDOW..=t].to_vec())
            .map_err(|source| DatasetError::Sequence { row: t, source })?;
        let before = self.window_fits(t, TLOB_WINDOW + 1).then(|| &self.snapshots[t - TLOB_WINDOW]);
        let lob = match norm {
            LobNormalization::Window => seq.to_normalized_tensor(),
            LobNormalization::Snapshot => seq.to_snapshot_tensor(before),
        };
        Ok(Some(TlobInput { lob, aux: self.row(t) }))
    }
}

/// A TLOB sample's inputs (its labels come from [`HorizonLabels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TlobInput<'a> {
    /// `100 × 20 × 4`, row-major, under the model's `lob_normalization`.
    pub lob: Vec<f32>,
    /// The feature vector at the window's last tick.
    pub aux: &'a [f32],
}

/// One walk-forward fold: row ranges of its training and validation parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// 1-based.
    pub index: usize,
    pub train: Range<usize>,
    pub valid: Range<usize>,
}

impl Fold {
    /// The samples of `ends` whose row is in the training part.
    pub fn train_samples(&self, ends: &[usize]) -> Vec<usize> {
        ends.iter().copied().filter(|t| self.train.contains(t)).collect()
    }

    /// The samples of `ends` whose row is in the validation part.
    pub fn valid_samples(&self, ends: &[usize]) -> Vec<usize> {
        ends.iter().copied().filter(|t| self.valid.contains(t)).collect()
    }
}

/// The purge between training and validation: max horizon + window length.
pub fn purge_ticks(horizons: &[usize], window: usize) -> usize {
    horizons.iter().copied().max().unwrap_or(0) + window
}

/// Purged expanding walk-forward folds over rows `0..n` (see module docs).
/// `valid_fraction` is used only when `splits == 1`.
pub fn walk_forward(n: usize, splits: usize, valid_fraction: f64, purge: usize) -> Result<Vec<Fold>, DatasetError> {
    if splits == 0 {
        return Err(DatasetError::Config { field: "walk_forward_splits", reason: "must be at least 1".into() });
    }
    let mut folds = Vec::with_capacity(splits);
    if splits == 1 {
        if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
            return Err(DatasetError::Config {
                field: "validation_fraction",
                reason: format!("{valid_fraction} is not in (0, 1)"),
            });
        }
        let nv = ((valid_fraction * n as f64).ceil() as usize).min(n);
        let start = n - nv;
        folds.push(Fold { index: 1, train: 0..start.saturating_sub(purge), valid: start..n });
    } else {
        let b = |i: usize| i * n / (splits + 1);
        for i in 1..=splits {
            folds.push(Fold { index: i, train: 0..b(i).saturating_sub(purge), valid: b(i)..b(i + 1) });
        }
    }
    if let Some(f) = folds.iter().find(|f| f.train.is_empty() || f.valid.is_empty()) {
        return Err(DatasetError::Config {
            field: "walk_forward_splits",
            reason: format!(
                "fold {} is empty after the purge of {purge} rows ({n} rows, train {:?}, valid {:?})",
                f.index, f.train, f.valid
            ),
        });
    }
    Ok(folds)
}

/// Per-feature mean and std, fit on training rows only.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalizer {
    /// Fits over the given rows of a row-major `features` array of `width`
    /// columns. With no rows, mean 0 and std 1.
    pub fn fit(features: &[f32], width: usize, rows: impl IntoIterator<Item = usize>) -> Normalizer {
        let rows: Vec<usize> = rows.into_iter().collect();
        let mut mean = vec![0.0; width];
        let mut std = vec![1.0; width];
        if rows.is_empty() {
            return Normalizer { mean, std };
        }
        let n = rows.len() as f64;
        for &r in &rows {
            for (m, &x) in mean.iter_mut().zip(&features[r * width..(r + 1) * width]) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; width];
        for &r in &rows {
            for ((v, &m), &x) in var.iter_mut().zip(&mean).zip(&features[r * width..(r + 1) * width]) {
                *v += (x as f64 - m) * (x as f64 - m);
            }
        }
        for (s, v) in std.iter_mut().zip(var) {
            let sd = (v / n).sqrt();
            *s = if sd > 0.0 && sd.is_finite() { sd } else { 1.0 };
        }
        Normalizer { mean, std }
    }

    /// Fits on the training part of a fold.
    pub fn fit_fold(ds: &Dataset, fold: &Fold) -> Normalizer {
        Normalizer::fit(&ds.features, NUM_FEATURES, fold.train.clone())
    }

    /// `(x − mean) / std` in place, for one row.
    pub fn apply(&self, row: &mut [f32]) {
        for ((x, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *x = ((*x as f64 - m) / s) as f32;
        }
    }
}
