//! A training run's progress, shared between the trainer (which writes it),
//! the terminal (a progress line) and the server's training-status endpoint
//! (which reads it): docs/training.md, "Progress". Also carries the stop request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// The figures of docs/training.md's Progress, as the status endpoint serves them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub is_training: bool,
    pub architecture: String,
    /// 1-based; 0 before the first epoch starts.
    pub current_epoch: usize,
    pub total_epochs: usize,
    /// The mean training loss of the epoch so far.
    pub current_loss: Option<f64>,
    /// The best validation loss of the current fold so far.
    pub best_loss: Option<f64>,
    pub progress_percent: f64,
    /// 1-based fold being trained; 0 before the first.
    pub fold: usize,
    pub folds: usize,
    pub samples_per_second: f64,
    pub eta_seconds: Option<f64>,
    /// Once a job is over: what it produced (the "last job's result" of the
    /// status endpoint), or why it failed.
    pub result: Option<JobResult>,
    pub error: Option<String>,
}

/// A finished (or stopped) job's outcome, enough to promote its model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobResult {
    /// The weights file of the last fold's best epoch, with its normalizer.
    pub model_path: String,
    /// Next to it: the results JSON of docs/training.md.
    pub results_path: String,
    pub best_val_accuracy: f64,
    pub best_val_loss: Option<f64>,
    pub training_time_seconds: f64,
    /// False when a stop request ended the run (a checkpoint was saved).
    pub completed: bool,
    /// The version it was published as in the server's model repository
    /// (`POST /api/ensemble/models/load` with `version`); `None` for a
    /// stopped run, which is not published.
    pub version: Option<u64>,
    /// The published weights file.
    pub published_path: Option<String>,
}

/// A cheap handle to one run's progress and stop flag; clones share them.
#[derive(Clone, Debug, Default)]
pub struct ProgressHandle {
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
}

impl ProgressHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current figures.
    pub fn snapshot(&self) -> Progress {
        self.progress.lock().clone()
    }

    /// Changes the figures under the lock.
    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock());
    }

    /// Asks the run to stop; it saves a checkpoint first (docs/training.md).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
