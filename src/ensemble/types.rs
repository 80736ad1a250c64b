//! The consensus's own types and their JSON form (docs/consensus.md, "Types").

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{check_model, check_value, non_negative_rule, unit_rule, EnsembleError};

/// The most models one ensemble can hold. The consensus keeps per-model
/// scratch on the stack and packs a result's per-model votes into one `u64`
/// (2 bits a model), which is what bounds it; nothing else assumes a count.
pub const MAX_MODELS: usize = 32;

/// A price direction: `DOWN = 0`, `NEUTRAL = 1`, `UP = 2` (the class ids of
/// the models' direction heads). JSON: `"down" | "neutral" | "up"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Direction {
    Down = 0,
    Neutral = 1,
    Up = 2,
}

impl Direction {
    pub const ALL: [Direction; 3] = [Direction::Down, Direction::Neutral, Direction::Up];

    /// The class id (the index into a probability vector).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The direction of a class id, `None` above 2.
    pub fn from_index(i: usize) -> Option<Direction> {
        Direction::ALL.get(i).copied()
    }

    /// The sign of a position taken in this direction: +1 UP, −1 DOWN, 0 NEUTRAL.
    pub fn sign(self) -> f64 {
        match self {
            Direction::Down => -1.0,
            Direction::Neutral => 0.0,
            Direction::Up => 1.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Down => "down",
            Direction::Neutral => "neutral",
            Direction::Up => "up",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member model of the ensemble. JSON: `"cnn_lstm" | "mpd_transformer" |
/// "tlob"`. More members (e.g. Stockformer or DGT) would be new
/// variants; the consensus works over however many the config lists. The
/// declaration order is the canonical order in which the consensus sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    CnnLstm,
    MpdTransformer,
    Tlob,
}

impl ModelType {
    /// Every model type, in canonical order.
    pub const ALL: &'static [ModelType] = &[ModelType::CnnLstm, ModelType::MpdTransformer, ModelType::Tlob];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::CnnLstm => "cnn_lstm",
            ModelType::MpdTransformer => "mpd_transformer",
            ModelType::Tlob => "tlob",
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the predictions are combined (docs/consensus.md, steps 3 and 5).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusStrategy {
    #[default]
    WeightedVoting,
    Unanimous,
    Majority,
    ConfidenceBased,
    Adaptive,
}

impl ConsensusStrategy {
    pub const ALL: [ConsensusStrategy; 5] = [
        ConsensusStrategy::WeightedVoting,
        ConsensusStrategy::Unanimous,
        ConsensusStrategy::Majority,
        ConsensusStrategy::ConfidenceBased,
        ConsensusStrategy::Adaptive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusStrategy::WeightedVoting => "weighted_voting",
            ConsensusStrategy::Unanimous => "unanimous",
            ConsensusStrategy::Majority => "majority",
            ConsensusStrategy::ConfidenceBased => "confidence_based",
            ConsensusStrategy::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for ConsensusStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model's prediction. `probabilities` is `[p_down, p_neutral, p_up]`;
/// `expected_return` a plain fraction (0.002 = 20 bps); `timestamp` seconds
/// since the Unix epoch. Unknown JSON fields are ignored (a client may send
/// more than the consensus reads).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelPrediction {
    pub model_type: ModelType,
    pub direction: Direction,
    #[serde(serialize_with = "finite::one")]
    pub confidence: f64,
    #[serde(serialize_with = "finite::three")]
    pub probabilities: [f64; 3],
    #[serde(serialize_with = "finite::one")]
    pub expected_return: f64,
    #[serde(serialize_with = "finite::one")]
    pub timestamp: f64,
}

/// One model's place in the config. In JSON, `enabled` defaults to `true` and
/// `min_confidence` to `0` (as `create_ensemble_consensus` sets them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelWeight {
    pub model_type: ModelType,
    pub weight: f64,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub min_confidence: f64,
}

fn default_true() -> bool {
    true
}

impl ModelWeight {
    /// Enabled, with `min_confidence` 0.
    pub fn new(model_type: ModelType, weight: f64) -> Self {
        ModelWeight { model_type, weight, enabled: true, min_confidence: 0.0 }
    }

    pub(crate) fn validate(&self) -> Result<(), EnsembleError> {
        check_model(self.model_type, "weight", self.weight, non_negative_rule(self.weight))?;
        check_model(self.model_type, "min_confidence", self.min_confidence, unit_rule(self.min_confidence))
    }
}

/// The ensemble's configuration. Every field has a default (docs/consensus.md,
/// "Types"), so a JSON file need only name what it changes; unknown fields are
/// an error (a misspelt key must not be silently ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleConfig {
    pub strategy: ConsensusStrategy,
    pub model_weights: Vec<ModelWeight>,
    pub min_agreement: f64,
    pub confidence_threshold: f64,
    pub neutral_threshold: f64,
    /// `None` (JSON `null` or absent): predictions never go stale.
    pub max_prediction_age_s: Option<f64>,
    /// λ of the performance blend `x ← (1 − λ)·x + λ·new`.
    pub performance_decay: f64,
}

impl Default for EnsembleConfig {
    /// The worked example's config: weighted voting; cnn_lstm 0.4 (min_confidence 0.6),
    /// mpd_transformer 0.35 (0.55), tlob 0.25 (0.5); min_agreement 0.6,
    /// confidence_threshold 0.5, neutral_threshold 0.1; no age limit;
    /// performance_decay 0.1.
    fn default() -> Self {
        let mw = |model_type, weight, min_confidence| ModelWeight { model_type, weight, enabled: true, min_confidence };
        EnsembleConfig {
            strategy: ConsensusStrategy::WeightedVoting,
            model_weights: vec![
                mw(ModelType::CnnLstm, 0.4, 0.6),
                mw(ModelType::MpdTransformer, 0.35, 0.55),
                mw(ModelType::Tlob, 0.25, 0.5),
            ],
            min_agreement: 0.6,
            confidence_threshold: 0.5,
            neutral_threshold: 0.1,
            max_prediction_age_s: None,
            performance_decay: 0.1,
        }
    }
}

impl EnsembleConfig {
    /// Checks every rule of docs/consensus.md's "Validation" that concerns a config.
    /// Also (docs/consensus.md, "Validation"): `performance_decay` must be in [0, 1],
    /// `max_prediction_age_s` finite and ≥ 0, and at most [`MAX_MODELS`]
    /// models. An empty `model_weights` is allowed (every prediction is then
    /// an unknown model, and an empty call gives `no_eligible_predictions`).
    pub fn validate(&self) -> Result<(), EnsembleError> {
        if self.model_weights.len() > MAX_MODELS {
            return Err(EnsembleError::TooManyModels { count: self.model_weights.len(), max: MAX_MODELS });
        }
        for (i, mw) in self.model_weights.iter().enumerate() {
            if self.model_weights[..i].iter().any(|o| o.model_type == mw.model_type) {
                return Err(EnsembleError::DuplicateModel { model: mw.model_type });
            }
            mw.validate()?;
        }
        check_value("min_agreement", self.min_agreement, unit_rule(self.min_agreement))?;
        check_value("confidence_threshold", self.confidence_threshold, unit_rule(self.confidence_threshold))?;
        check_value("neutral_threshold", self.neutral_threshold, unit_rule(self.neutral_threshold))?;
        check_value("performance_decay", self.performance_decay, unit_rule(self.performance_decay))?;
        if let Some(age) = self.max_prediction_age_s {
            check_value("max_prediction_age_s", age, non_negative_rule(age))?;
        }
        Ok(())
    }

    /// Parses and validates a JSON config; absent fields keep the defaults.
    pub fn from_json_str(json: &str) -> Result<Self, EnsembleError> {
        let config: EnsembleConfig =
            serde_json::from_str(json).map_err(|e| EnsembleError::ConfigJson(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a JSON config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, EnsembleError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| EnsembleError::ConfigFile { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_json_str(&text).map_err(|e| match e {
            EnsembleError::ConfigJson(message) => {
                EnsembleError::ConfigFile { path: path.display().to_string(), message }
            }
            other => other,
        })
    }

    /// The weight entry of `model`, if the config has it.
    pub fn model(&self, model: ModelType) -> Option<&ModelWeight> {
        self.model_weights.iter().find(|m| m.model_type == model)
    }
}

/// Why a prediction was left out of E (docs/consensus.md step 1). When several
/// apply, the first in this order is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    Disabled,
    ZeroWeight,
    LowConfidence,
    Stale,
}

/// Why a result does not trade. `None` in a result (JSON `null`) when it
/// trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    /// E is empty (step 2).
    NoEligiblePredictions,
    /// Every effective weight is 0 (step 3).
    ZeroTotalWeight,
    /// `majority`: no direction has more than half of the votes.
    NoMajority,
    /// `unanimous`: an enabled model has no eligible prediction, or the
    /// eligible ones disagree.
    NotUnanimous,
    /// The direction is NEUTRAL (step 11's first test).
    Neutral,
    /// `confidence < confidence_threshold`.
    LowConfidence,
    /// `agreement_score < min_agreement`.
    LowAgreement,
}

/// The consensus's decision. JSON:
/// ```json
/// {"id": 7, "timestamp": 1764000000.0, "strategy": "weighted_voting",
///  "direction": "up", "confidence": 0.6005, "meta_confidence": 0.82475,
///  "agreement_score": 0.667, "weighted_agreement": 0.75,
///  "expected_return": 0.001455, "should_trade": true, "reason": null,
///  "probabilities": [0.132, 0.2675, 0.6005],
///  "model_contributions": {"cnn_lstm": 0.4996, "mpd_transformer": 0.3963, "tlob": 0.1041},
///  "eligible_models": ["cnn_lstm", "mpd_transformer", "tlob"],
///  "excluded_models": {}}
/// ```
/// Maps and lists are in canonical model order.
#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnsembleResult {
    /// Unique within one ensemble, increasing from 1; the key for
    /// `record_outcome`.
    pub id: u64,
    /// When the consensus was computed (the `now` of step 1), Unix seconds.
    #[serde(serialize_with = "finite::one")]
    pub timestamp: f64,
    pub strategy: ConsensusStrategy,
    pub direction: Direction,
    /// `P[d]`.
    #[serde(serialize_with = "finite::one")]
    pub confidence: f64,
    #[serde(serialize_with = "finite::one")]
    pub meta_confidence: f64,
    #[serde(serialize_with = "finite::one")]
    pub agreement_score: f64,
    #[serde(serialize_with = "finite::one")]
    pub weighted_agreement: f64,
    /// The weighted mean of the eligible returns; always within their
    /// range, so finite (the consensus computes it so that it cannot overflow).
    #[serde(serialize_with = "finite::one")]
    pub expected_return: f64,
    pub should_trade: bool,
    /// Why it does not trade; `None` when `should_trade`.
    pub reason: Option<DecisionReason>,
    /// The combined distribution `P = [p_down, p_neutral, p_up]`;
    /// `[0, 0, 0]` when E is empty or the total weight is 0.
    #[serde(serialize_with = "finite::three")]
    pub probabilities: [f64; 3],
    #[serde(serialize_with = "finite::pairs", deserialize_with = "pairs_as_map::deserialize")]
    #[schema(value_type = std::collections::BTreeMap<ModelType, f64>)]
    pub model_contributions: Vec<(ModelType, f64)>,
    pub eligible_models: Vec<ModelType>,
    #[serde(with = "pairs_as_map")]
    #[schema(value_type = std::collections::BTreeMap<ModelType, ExclusionReason>)]
    pub excluded_models: Vec<(ModelType, ExclusionReason)>,
}

impl Clone for EnsembleResult {
    fn clone(&self) -> Self {
        let mut r = EnsembleResult::empty(0);
        r.clone_from(self);
        r
    }

    /// Field-wise, reusing this result's buffers: the ensemble keeps its
    /// `last_prediction` this way without allocating once warm.
    fn clone_from(&mut self, src: &Self) {
        self.id = src.id;
        self.timestamp = src.timestamp;
        self.strategy = src.strategy;
        self.direction = src.direction;
        self.confidence = src.confidence;
        self.meta_confidence = src.meta_confidence;
        self.agreement_score = src.agreement_score;
        self.weighted_agreement = src.weighted_agreement;
        self.expected_return = src.expected_return;
        self.should_trade = src.should_trade;
        self.reason = src.reason;
        self.probabilities = src.probabilities;
        self.model_contributions.clone_from(&src.model_contributions);
        self.eligible_models.clone_from(&src.eligible_models);
        self.excluded_models.clone_from(&src.excluded_models);
    }
}

impl EnsembleResult {
    /// An empty NEUTRAL result whose lists can hold `capacity` models without
    /// growing (for [`super::EnsembleConsensus::predict_into`]).
    pub fn empty(capacity: usize) -> Self {
        EnsembleResult {
            id: 0,
            timestamp: 0.0,
            strategy: ConsensusStrategy::WeightedVoting,
            direction: Direction::Neutral,
            confidence: 0.0,
            meta_confidence: 0.0,
            agreement_score: 0.0,
            weighted_agreement: 0.0,
            expected_return: 0.0,
            should_trade: false,
            reason: Some(DecisionReason::NoEligiblePredictions),
            probabilities: [0.0; 3],
            model_contributions: Vec::with_capacity(capacity),
            eligible_models: Vec::with_capacity(capacity),
            excluded_models: Vec::with_capacity(capacity),
        }
    }

    /// The contribution of `model`, `None` when it was not in E.
    pub fn contribution(&self, model: ModelType) -> Option<f64> {
        self.model_contributions.iter().find(|(m, _)| *m == model).map(|&(_, c)| c)
    }

    /// Why `model`'s prediction was excluded, `None` when it was not.
    pub fn exclusion(&self, model: ModelType) -> Option<ExclusionReason> {
        self.excluded_models.iter().find(|(m, _)| *m == model).map(|&(_, r)| r)
    }
}

/// Serializers of the numbers of a decision: a non-finite one is a
/// serialization error (the server answers 500, the live feed drops the
/// decision and counts it), never serde_json's silent `null` beside a
/// `should_trade` that relied on it.
mod finite {
    use serde::ser::{Error, SerializeMap};
    use serde::Serializer;

    use super::ModelType;

    fn check<E: Error>(v: f64) -> Result<f64, E> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(E::custom(format_args!("a decision holds the non-finite number {v}, which JSON cannot carry")))
        }
    }

    pub fn one<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(check(*v)?)
    }

    pub fn three<S: Serializer>(v: &[f64; 3], s: S) -> Result<S::Ok, S::Error> {
        for &x in v {
            check::<S::Error>(x)?;
        }
        serde::Serialize::serialize(v, s)
    }

    /// As `pairs_as_map`, each value checked.
    pub fn pairs<S: Serializer>(pairs: &[(ModelType, f64)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, &check::<S::Error>(*v)?)?;
        }
        map.end()
    }
}

/// Serializes `Vec<(ModelType, V)>` as a JSON object keyed by model.
mod pairs_as_map {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ModelType;

    pub fn serialize<V: Serialize, S: Serializer>(pairs: &[(ModelType, V)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Vec<(ModelType, V)>, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Vec<(ModelType, V)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by model type")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(ModelType, V)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<ModelType, V>()? {
                    if out.iter().any(|(m, _)| *m == k) {
                        return Err(serde::de::Error::custom(format_args!("duplicate model {k}")));
                    }
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// A model's line in the status JSON. `accuracy` and `profit_factor` are
/// `null` until the model has a performance report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelStatus {
    pub enabled: bool,
    pub weight: f64,
    pub min_confidence: f64,
    pub accuracy: Option<f64>,
    pub profit_factor: Option<f64>,
    pub performance_reports: u64,
}

/// `get_status()`: docs/consensus.md's status JSON, key for key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnsembleStatus {
    pub strategy: ConsensusStrategy,
    pub total_models: usize,
    pub enabled_models: usize,
    pub models: std::collections::BTreeMap<ModelType, ModelStatus>,
    /// The result with the highest id issued so far, `null` before the first.
    pub last_prediction: Option<EnsembleResult>,
}
