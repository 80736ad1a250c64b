//! The results of a run (docs/training.md, "Results"), as written to
//! `<checkpoint_dir>/<architecture>_results.json`.
//!
//! `best_val_loss` and `best_val_accuracy` are those of the returned model:
//! the last fold's best epoch (lowest validation loss). The per-fold figures
//! and their mean over folds are beside them.

use serde::{Deserialize, Serialize};

use crate::train::scores::Metrics;

/// One epoch of one fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochResult {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// The learning rate of the epoch's last optimizer step.
    pub learning_rate: f64,
    pub optimizer_steps: u64,
    /// Validation metrics on the primary horizon: accuracy, f1_macro, mcc,
    /// confusion, profit_factor, …
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One walk-forward fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// 1-based.
    pub fold: usize,
    /// Row ranges `[start, end)` of the training and validation parts.
    pub train_rows: [usize; 2],
    pub valid_rows: [usize; 2],
    pub train_samples: usize,
    pub valid_samples: usize,
    /// α per horizon (the fixed value, or fit on this fold's training part).
    pub alpha: Vec<f64>,
    pub epochs: Vec<EpochResult>,
    /// The epoch with the lowest validation loss (the fold's model).
    pub best_epoch: usize,
    /// `None` until the first epoch is validated.
    pub best_val_loss: Option<f64>,
    pub best_val_accuracy: f64,
    pub stopped_early: bool,
    /// Logistic regression on the order-flow features, same labels and samples.
    pub baseline: Metrics,
}

impl FoldResult {
    pub fn best(&self) -> Option<&EpochResult> {
        self.epochs.iter().find(|e| e.epoch == self.best_epoch)
    }
}

/// Means over the folds of each fold's best epoch (and of the baseline).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanResult {
    pub val_loss: f64,
    pub accuracy: f64,
    pub f1_macro: f64,
    pub mcc: f64,
    /// Over the folds where it is defined; `None` if none.
    pub profit_factor: Option<f64>,
    pub majority_class_rate: f64,
    pub baseline_accuracy: f64,
    pub baseline_f1_macro: f64,
    pub baseline_mcc: f64,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub architecture: String,
    pub symbol: String,
    pub backend: String,
    /// The primary label horizon (ticks).
    pub horizon: usize,
    pub horizons: Vec<usize>,
    pub best_val_accuracy: f64,
    /// `None` until the first epoch is validated.
    pub best_val_loss: Option<f64>,
    pub training_time_seconds: f64,
    pub model_path: String,
    pub completed: bool,
    pub folds: Vec<FoldResult>,
    pub mean: MeanResult,
    /// The training config (JSON) and the model config (JSON) of the run.
    pub config: serde_json::Value,
    pub model_config: serde_json::Value,
    /// Things the log said that change how to read the figures (e.g. use_amp ignored).
    pub notes: Vec<String>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

impl Results {
    /// Recomputes `mean` and the headline figures from `folds`.
    pub fn summarize(&mut self) {
        let bests: Vec<(&FoldResult, &EpochResult)> =
            self.folds.iter().filter_map(|f| f.best().map(|b| (f, b))).collect();
        let m = |g: &dyn Fn(&FoldResult, &EpochResult) -> f64| mean(bests.iter().map(|(f, b)| g(f, b))).unwrap_or(0.0);
        self.mean = MeanResult {
            val_loss: m(&|_, b| b.val_loss),
            accuracy: m(&|_, b| b.metrics.accuracy),
            f1_macro: m(&|_, b| b.metrics.f1_macro),
            mcc: m(&|_, b| b.metrics.mcc),
            profit_factor: mean(bests.iter().filter_map(|(_, b)| b.metrics.profit_factor)),
            majority_class_rate: m(&|_, b| b.metrics.majority_class_rate),
            baseline_accuracy: m(&|f, _| f.baseline.accuracy),
            baseline_f1_macro: m(&|f, _| f.baseline.f1_macro),
            baseline_mcc: m(&|f, _| f.baseline.mcc),
        };
        if let Some((f, _)) = bests.last() {
            self.best_val_loss = f.best_val_loss;
            self.best_val_accuracy = f.best_val_accuracy;
        }
    }
}
