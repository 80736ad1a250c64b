//! The ensemble's error type.
//!
//! Every error names what is wrong: the model (when there is one) and the
//! field, so that the server can answer `{"error": {"code", "message",
//! "field"}}` (docs/api.md) straight from [`EnsembleError::code`],
//! `to_string()` and [`EnsembleError::field`]. An error is always returned
//! before anything changes: a call that fails leaves the ensemble as it was.

use std::fmt;

use thiserror::Error;

use super::types::ModelType;

/// Which range rule a number broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// NaN or ±∞.
    NotFinite,
    /// Outside the closed interval [0, 1].
    OutsideUnit,
    /// Below 0 where only values ≥ 0 are allowed.
    Negative,
    /// ≤ 0 where only values > 0 are allowed.
    NotPositive,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NotFinite => "is not finite",
            Rule::OutsideUnit => "is outside [0, 1]",
            Rule::Negative => "is negative",
            Rule::NotPositive => "is not > 0",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum EnsembleError {
    /// A number tied to one model (a prediction's field, its weight or
    /// min_confidence, a performance figure) is not finite or out of range.
    /// Display: `tlob: confidence 1.3 is outside [0, 1]`.
    #[error("{model}: {field} {value} {rule}")]
    ModelValue { model: ModelType, field: &'static str, value: f64, rule: Rule },

    /// A number of the ensemble as a whole (a config field, `now`, a realized
    /// return) is not finite or out of range.
    #[error("{field} {value} {rule}")]
    Value { field: &'static str, value: f64, rule: Rule },

    /// A prediction's probabilities do not sum to 1 within 1e-3.
    #[error("{model}: probabilities sum to {sum}, not 1 (tolerance 1e-3)")]
    ProbabilitySum { model: ModelType, sum: f64 },

    /// A prediction, or a call, names a model the config does not have.
    #[error("{model}: model_type is not in the ensemble's config")]
    UnknownModel { model: ModelType },

    /// One `predict` call holds two predictions of the same model.
    #[error("{model}: model_type has two predictions in one call")]
    DuplicatePrediction { model: ModelType },

    /// A config names the same model twice.
    #[error("{model}: model_type is named twice in model_weights")]
    DuplicateModel { model: ModelType },

    /// A config names more models than the consensus supports.
    #[error("model_weights: {count} models, at most {max} are supported")]
    TooManyModels { count: usize, max: usize },

    /// `record_outcome` with an id this ensemble never issued, or one that has
    /// left its bounded history.
    #[error("result_id {id}: unknown (never issued, or older than the last {capacity} results)")]
    UnknownResult { id: u64, capacity: usize },

    /// `record_outcome` twice for the same result.
    #[error("result_id {id}: its outcome was already recorded")]
    AlreadyScored { id: u64 },

    /// A config file could not be read.
    #[error("{path}: {message}")]
    ConfigFile { path: String, message: String },

    /// A config's JSON is malformed, has a wrong type, or an unknown field.
    #[error("ensemble config JSON: {0}")]
    ConfigJson(String),
}

impl EnsembleError {
    /// The model the error is about, if any.
    pub fn model(&self) -> Option<ModelType> {
        match self {
            EnsembleError::ModelValue { model, .. }
            | EnsembleError::ProbabilitySum { model, .. }
            | EnsembleError::UnknownModel { model }
            | EnsembleError::DuplicatePrediction { model }
            | EnsembleError::DuplicateModel { model } => Some(*model),
            _ => None,
        }
    }

    /// The field the error is about, if any (`confidence`, `probabilities[2]`,
    /// `weight`, `min_agreement`, `model_type`, `result_id`, ...).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            EnsembleError::ModelValue { field, .. } | EnsembleError::Value { field, .. } => Some(field),
            EnsembleError::ProbabilitySum { .. } => Some("probabilities"),
            EnsembleError::UnknownModel { .. }
            | EnsembleError::DuplicatePrediction { .. }
            | EnsembleError::DuplicateModel { .. } => Some("model_type"),
            EnsembleError::TooManyModels { .. } => Some("model_weights"),
            EnsembleError::UnknownResult { .. } | EnsembleError::AlreadyScored { .. } => Some("result_id"),
            EnsembleError::ConfigFile { .. } | EnsembleError::ConfigJson(_) => None,
        }
    }

    /// A short machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            EnsembleError::ModelValue { .. } | EnsembleError::Value { .. } => "invalid_value",
            EnsembleError::ProbabilitySum { .. } => "invalid_probabilities",
            EnsembleError::UnknownModel { .. } => "unknown_model",
            EnsembleError::DuplicatePrediction { .. } => "duplicate_prediction",
            EnsembleError::DuplicateModel { .. } => "duplicate_model",
            EnsembleError::TooManyModels { .. } => "too_many_models",
            EnsembleError::UnknownResult { .. } => "unknown_result",
            EnsembleError::AlreadyScored { .. } => "already_scored",
            EnsembleError::ConfigFile { .. } => "config_file",
            EnsembleError::ConfigJson(_) => "invalid_json",
        }
    }
}

/// The rule `v` breaks for "finite and in [0, 1]", if any.
pub(crate) fn unit_rule(v: f64) -> Option<Rule> {
    if !v.is_finite() {
        Some(Rule::NotFinite)
    } else if !(0.0..=1.0).contains(&v) {
        Some(Rule::OutsideUnit)
    } else {
        None
    }
}

/// The rule `v` breaks for "finite and ≥ 0", if any.
pub(crate) fn non_negative_rule(v: f64) -> Option<Rule> {
    if !v.is_finite() {
        Some(Rule::NotFinite)
    } else if v < 0.0 {
        Some(Rule::Negative)
    } else {
        None
    }
}

/// The rule `v` breaks for "finite", if any.
pub(crate) fn finite_rule(v: f64) -> Option<Rule> {
    if v.is_finite() {
        None
    } else {
        Some(Rule::NotFinite)
    }
}

/// `Err(ModelValue)` when `rule` is `Some`.
pub(crate) fn check_model(
    model: ModelType,
    field: &'static str,
    value: f64,
    rule: Option<Rule>,
) -> Result<(), EnsembleError> {
    match rule {
        Some(rule) => Err(EnsembleError::ModelValue { model, field, value, rule }),
        None => Ok(()),
    }
}

/// `Err(Value)` when `rule` is `Some`.
pub(crate) fn check_value(field: &'static str, value: f64, rule: Option<Rule>) -> Result<(), EnsembleError> {
    match rule {
        Some(rule) => Err(EnsembleError::Value { field, value, rule }),
        None => Ok(()),
    }
}
