//! `TrainingConfig`: every field of docs/training.md's table ("Optimizer and
//! loop"), including what the original design left implicit (seed, label horizon and α,
//! return scale, an optional model config override for small runs).
//!
//! Deserializes from the JSON of `/api/ensemble/training/start` and from the
//! CLI; unknown fields are rejected so a typo is an error, not a default.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelKind};

/// Upper bounds of the training config's sizes, far above docs/training.md's
/// defaults (listed in docs/security.md, "Limits"); a config beyond them is
/// refused naming the field. Whether a job within them fits is then the
/// server's training memory budget's call ([`crate::train::memory`]).
/// Compile-time constants: change them here.
pub mod limits {
    /// `batch_size` (default 32).
    pub const MAX_BATCH_SIZE: usize = 4096;
    /// `sequence_length` (default 60), as the models' own bound.
    pub const MAX_SEQUENCE_LENGTH: usize = crate::model::config::limits::MAX_SEQUENCE_LENGTH;
    /// `epochs` and `early_stopping_patience` (defaults 100 and 10).
    pub const MAX_EPOCHS: usize = 100_000;
    /// `walk_forward_splits` (default 5).
    pub const MAX_WALK_FORWARD_SPLITS: usize = 1000;
    /// `gradient_accumulation_steps` (default 4).
    pub const MAX_GRADIENT_ACCUMULATION_STEPS: usize = 1024;
    /// `horizon`, in ticks (default 30).
    pub const MAX_HORIZON: usize = crate::model::config::limits::MAX_HORIZON;
    /// `checkpoint_dir`, in bytes (default `"checkpoints/"`).
    pub const MAX_CHECKPOINT_DIR_BYTES: usize = crate::fsutil::MAX_REQUEST_PATH_BYTES;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    pub architecture: ModelKind,
    /// The feature window of MPD and CNN-LSTM (docs/training.md, "Samples": 60).
    pub sequence_length: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    pub early_stopping_patience: usize,
    pub direction_weight: f64,
    pub confidence_weight: f64,
    pub return_weight: f64,
    pub validation_split: f64,
    pub walk_forward_splits: usize,
    pub gradient_accumulation_steps: usize,
    pub max_grad_norm: f64,
    pub use_amp: bool,
    pub save_best_only: bool,
    pub checkpoint_dir: String,
    /// Same seed, same data, same backend → bit-identical weights.
    pub seed: u64,
    /// The label horizon (ticks) of MPD's and CNN-LSTM's primary outputs;
    /// TLOB uses its config's `horizons` and `primary_horizon`.
    pub horizon: usize,
    /// α of the labels (docs/training.md, "Labels"): a fixed return threshold, or `None` for
    /// `auto` (fit on each fold's training part).
    pub alpha: Option<f64>,
    /// The heads predict `bps / return_scale` (docs/training.md).
    pub return_scale: f64,
    /// The model to train; `None` takes docs/models.md's defaults for `architecture`.
    /// Set from code (tests, the demo's small models), not from JSON.
    #[serde(skip)]
    pub model: Option<ModelConfig>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            architecture: ModelKind::MpdTransformer,
            sequence_length: 60,
            batch_size: 32,
            learning_rate: 1e-4,
            weight_decay: 1e-5,
            epochs: 100,
            early_stopping_patience: 10,
            direction_weight: 1.0,
            confidence_weight: 0.5,
            return_weight: 0.3,
            validation_split: 0.2,
            walk_forward_splits: 5,
            gradient_accumulation_steps: 4,
            max_grad_norm: 1.0,
            use_amp: true,
            save_best_only: true,
            checkpoint_dir: "checkpoints/".into(),
            seed: 42,
            horizon: 30,
            alpha: None,
            return_scale: 10.0,
            model: None,
        }
    }
}

impl TrainingConfig {
    /// The model config this run trains: the override, or the defaults.
    pub fn model_config(&self) -> ModelConfig {
        self.model.clone().unwrap_or_else(|| ModelConfig::default_for(self.architecture))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("sequence_length", self.sequence_length),
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("walk_forward_splits", self.walk_forward_splits),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps),
            ("horizon", self.horizon),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(field, "must be > 0"));
            }
        }
        let bounded = [
            ("sequence_length", self.sequence_length, limits::MAX_SEQUENCE_LENGTH),
            ("batch_size", self.batch_size, limits::MAX_BATCH_SIZE),
            ("epochs", self.epochs, limits::MAX_EPOCHS),
            ("early_stopping_patience", self.early_stopping_patience, limits::MAX_EPOCHS),
            ("walk_forward_splits", self.walk_forward_splits, limits::MAX_WALK_FORWARD_SPLITS),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps, limits::MAX_GRADIENT_ACCUMULATION_STEPS),
            ("horizon", self.horizon, limits::MAX_HORIZON),
            ("checkpoint_dir", self.checkpoint_dir.len(), limits::MAX_CHECKPOINT_DIR_BYTES),
        ];
        for (field, v, max) in bounded {
            if v > max {
                let unit = if field == "checkpoint_dir" { " bytes long" } else { "" };
                return Err(Error::config(field, format!("must be at most {max}{unit}, got {v}")));
            }
        }
        let finite_positive = [
            ("learning_rate", self.learning_rate),
            ("max_grad_norm", self.max_grad_norm),
            ("return_scale", self.return_scale),
        ];
        for (field, v) in finite_positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(field, format!("must be a finite number > 0, got {v}")));
            }
        }
        let finite_non_negative = [
            ("weight_decay", self.weight_decay),
            ("direction_weight", self.direction_weight),
            ("confidence_weight", self.confidence_weight),
            ("return_weight", self.return_weight),
        ];
        for (field, v) in finite_non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(field, format!("must be a finite number ≥ 0, got {v}")));
            }
        }
        if self.direction_weight + self.confidence_weight + self.return_weight == 0.0 {
            return Err(Error::config("direction_weight", "the three loss weights are all 0: nothing to learn"));
        }
        if !(self.validation_split > 0.0 && self.validation_split < 1.0) {
            return Err(Error::config("validation_split", format!("must be in (0, 1), got {}", self.validation_split)));
        }
        if let Some(a) = self.alpha {
            if !(a.is_finite() && a >= 0.0) {
                return Err(Error::config("alpha", format!("must be a finite number ≥ 0 (or null for auto), got {a}")));
            }
        }
        if self.checkpoint_dir.is_empty() {
            return Err(Error::config("checkpoint_dir", "must not be empty"));
        }
        let model = self.model_config();
        if model.kind() != self.architecture {
            return Err(Error::config(
                "model",
                format!("is a {} config but architecture is {}", model.kind(), self.architecture),
            ));
        }
        model.validate()?;
        let window = match &model {
            ModelConfig::Mpd(c) => c.sequence_length,
            ModelConfig::CnnLstm(c) => c.sequence_length,
            ModelConfig::Tlob(_) => self.sequence_length,
        };
        if window != self.sequence_length {
            return Err(Error::config(
                "sequence_length",
                format!("is {} but the model's config says {window}", self.sequence_length),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_and_valid() {
        let c = TrainingConfig::default();
        assert_eq!((c.batch_size, c.epochs, c.gradient_accumulation_steps), (32, 100, 4));
        assert_eq!((c.direction_weight, c.confidence_weight, c.return_weight), (1.0, 0.5, 0.3));
        c.validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        type Breaker = fn(&mut TrainingConfig);
        let cases: [(&str, Breaker); 5] = [
            ("batch_size", |c| c.batch_size = 0),
            ("learning_rate", |c| c.learning_rate = -1e-3),
            ("validation_split", |c| c.validation_split = 1.0),
            ("weight_decay", |c| c.weight_decay = f64::NAN),
            ("sequence_length", |c| c.sequence_length = 50),
        ];
        for (field, break_it) in cases {
            let mut c = TrainingConfig::default();
            break_it(&mut c);
            match c.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_size_has_an_upper_bound_named_in_the_error() {
        type Breaker = fn(&mut TrainingConfig);
        let cases: [(&str, Breaker); 8] = [
            ("batch_size", |c| c.batch_size = limits::MAX_BATCH_SIZE + 1),
            ("sequence_length", |c| c.sequence_length = usize::MAX),
            ("epochs", |c| c.epochs = limits::MAX_EPOCHS + 1),
            ("early_stopping_patience", |c| c.early_stopping_patience = usize::MAX),
            ("walk_forward_splits", |c| c.walk_forward_splits = 1_000_000),
            ("gradient_accumulation_steps", |c| c.gradient_accumulation_steps = 1 << 40),
            ("horizon", |c| c.horizon = 1 << 50),
            ("checkpoint_dir", |c| c.checkpoint_dir = "d/".repeat(600)),
        ];
        for (field, break_it) in cases {
            let mut c = TrainingConfig::default();
            break_it(&mut c);
            match c.validate() {
                Err(Error::Config { field: f, reason }) => {
                    assert_eq!(f, field);
                    assert!(reason.contains("at most"), "{field}: {reason}");
                }
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
        let mut at_bounds = TrainingConfig { batch_size: limits::MAX_BATCH_SIZE, ..TrainingConfig::default() };
        at_bounds.epochs = limits::MAX_EPOCHS;
        at_bounds.validate().unwrap();
    }

    #[test]
    fn the_seeds_request_body_parses_and_typos_do_not() {
        let ok: TrainingConfig =
            serde_json::from_str(r#"{"architecture": "tlob", "epochs": 3, "batch_size": 16}"#).unwrap();
        assert_eq!((ok.architecture, ok.epochs, ok.batch_size, ok.seed), (ModelKind::Tlob, 3, 16, 42));
        let typo = serde_json::from_str::<TrainingConfig>(r#"{"architecture": "tlob", "epoch": 3}"#);
        assert!(typo.unwrap_err().to_string().contains("epoch"));
    }
}
