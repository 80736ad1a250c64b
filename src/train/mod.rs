//! Training (docs/training.md), labels and samples included: labels, sample
//! windows, walk-forward splits, the normalizer, the trainable models and the
//! trainer.

pub mod baseline;
pub mod batches;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dataset;
pub mod memory;
pub mod net;
pub mod optim;
pub mod oracle;
pub mod progress;
pub mod report;
pub mod scores;
pub mod trainer;

pub use config::TrainingConfig;
pub use dataset::{
    auto_alpha, gap_starts, purge_ticks, resolve_alpha, run_starts, walk_forward, Alpha, Dataset, DatasetError,
    Direction, Fold, HorizonLabels, Normalizer, TlobInput, FEATURE_WINDOW, TLOB_WINDOW,
};
pub use net::{HeadTargets, LossOut, LossWeights, Param, TrainBatch, TrainNet};
pub use progress::{JobResult, Progress, ProgressHandle};
pub use trainer::{MultiModelTrainer, Net};
