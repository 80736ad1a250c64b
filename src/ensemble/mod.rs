//! Ensemble consensus (docs/consensus.md): one prediction per model in, one
//! trading decision out.
//!
//! This room uses nothing but its own types. [`EnsembleConsensus`] is the
//! thread-safe engine; [`EnsembleConfig`] its serde config (defaults: the
//! worked example's config); [`PredictionAdapter`] turns a model's raw head outputs
//! into a [`ModelPrediction`].
//!
//! Where docs/consensus.md is silent, the choices are documented where they are
//! made: [`consensus`] (canonical order, weight normalization, locking,
//! contributions when no model gives the chosen direction any probability),
//! [`performance`] (how an outcome scores a model), [`types`] (JSON shapes,
//! defaults, extra validation), [`adapter`] (ties in a model's argmax).
//!
//! ```
//! use quorum::ensemble::*;
//! let ensemble = EnsembleConsensus::new(EnsembleConfig::default()).unwrap();
//! let p = |model_type, direction, confidence, probabilities, expected_return| ModelPrediction {
//!     model_type, direction, confidence, probabilities, expected_return, timestamp: 0.0,
//! };
//! let result = ensemble.predict_at(&[
//!     p(ModelType::CnnLstm, Direction::Up, 0.75, [0.1, 0.15, 0.75], 0.002),
//!     p(ModelType::MpdTransformer, Direction::Up, 0.68, [0.12, 0.2, 0.68], 0.0018),
//!     p(ModelType::Tlob, Direction::Neutral, 0.55, [0.2, 0.55, 0.25], 0.0001),
//! ], 0.0).unwrap();
//! assert_eq!(result.direction, Direction::Up);
//! assert!(result.should_trade);
//! ```

pub mod adapter;
pub mod consensus;
pub mod error;
pub mod performance;
pub mod types;

pub use adapter::{PredictionAdapter, RawModelOutput, DEFAULT_RETURN_SCALE};
pub use consensus::{create_ensemble_consensus, unix_now_s, EnsembleConsensus};
pub use error::{EnsembleError, Rule};
pub use performance::{HISTORY_CAPACITY, MIN_OUTCOMES, OUTCOME_PF_CAP, OUTCOME_WINDOW};
pub use types::{
    ConsensusStrategy, DecisionReason, Direction, EnsembleConfig, EnsembleResult, EnsembleStatus, ExclusionReason,
    ModelPrediction, ModelStatus, ModelType, ModelWeight, MAX_MODELS,
};
