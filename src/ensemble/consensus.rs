//! [`EnsembleConsensus`]: docs/consensus.md's decision, step by step, behind a
//! thread-safe handle.
//!
//! # Determinism
//!
//! The consensus sums over models in one canonical order, the config's, which
//! is sorted by [`ModelType`] at construction; so the order of the
//! predictions in a call never changes a result, bit for bit. Effective
//! weights are divided by their largest value before anything is summed
//! (`u_m = w_m / max w`, mathematically the same ratios), which keeps every
//! sum finite for any finite weights; scaling every weight by a power of two
//! then leaves a result bit-identical, and any other positive constant
//! changes it by rounding only.
//!
//! # Concurrency
//!
//! The config and the tracked performance sit behind one `parking_lot`
//! `RwLock`: `predict` holds the read lock for the arithmetic only (no
//! allocation, no I/O), so every result is the decision of one consistent
//! state, and predictions run in parallel. Writers (`update_weight`,
//! `set_strategy`, `record_outcome`, ...) validate before they lock and hold
//! the write lock for a few stores (a `record_outcome` re-sums at most
//! [`super::performance::OUTCOME_WINDOW`] numbers per model), so a reader
//! never waits long; `parking_lot`'s lock is eventually fair, so a stream of
//! readers cannot starve a writer either. The history of issued results (ids,
//! votes for scoring, the latest result) is a separate `Mutex` taken after the
//! read lock is released, for a few stores and a buffer-reusing copy. An
//! `ArcSwap` of the config would make reads lock-free but every write a full
//! copy, and it would still need a lock for the performance updates; the
//! RwLock keeps one simple story.
//!
//! # Allocation
//!
//! `predict_at` allocates the result's three lists, each exactly once and at
//! its final size, and nothing else once the ensemble is warm
//! (`last_prediction` reuses its buffers). `predict_into` reuses a caller's
//! result and allocates nothing once that result has held as many models.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::error::{check_model, check_value, finite_rule, non_negative_rule, unit_rule};
use super::performance::{pack_vote, unpack_vote, History, ModelPerformance, Votes};
use super::types::{
    ConsensusStrategy, DecisionReason, Direction, EnsembleConfig, EnsembleResult, EnsembleStatus, ExclusionReason,
    ModelPrediction, ModelStatus, ModelType, ModelWeight, MAX_MODELS,
};
use super::EnsembleError;

const PROBABILITY_FIELDS: [&str; 3] = ["probabilities[0]", "probabilities[1]", "probabilities[2]"];

/// The tolerance on a prediction's probability sum.
pub const PROBABILITY_SUM_TOLERANCE: f64 = 1e-3;

struct State {
    /// Validated; `model_weights` sorted by model type (the canonical order).
    config: EnsembleConfig,
    /// One per entry of `config.model_weights`, same order.
    perf: Vec<ModelPerformance>,
}

impl State {
    fn slot(&self, model: ModelType) -> Result<usize, EnsembleError> {
        self.config
            .model_weights
            .iter()
            .position(|m| m.model_type == model)
            .ok_or(EnsembleError::UnknownModel { model })
    }

    fn model_status(&self, slot: usize) -> ModelStatus {
        let mw = &self.config.model_weights[slot];
        let perf = &self.perf[slot];
        ModelStatus {
            enabled: mw.enabled,
            weight: mw.weight,
            min_confidence: mw.min_confidence,
            accuracy: perf.tracked.map(|t| t.accuracy),
            profit_factor: perf.tracked.map(|t| t.profit_factor),
            performance_reports: perf.reports,
        }
    }
}

/// The ensemble consensus. `Send + Sync`; every method takes `&self`, so one
/// instance (e.g. in an `Arc`) serves every thread of the server.
pub struct EnsembleConsensus {
    state: RwLock<State>,
    history: Mutex<History>,
}

/// Seconds since the Unix epoch, as `predict` uses for `now`.
pub fn unix_now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl EnsembleConsensus {
    /// An ensemble of a validated config (see [`EnsembleConfig::validate`]).
    /// The models are kept in canonical order ([`ModelType`]'s), whatever the
    /// config's order; [`EnsembleConsensus::config`] returns them so.
    pub fn new(mut config: EnsembleConfig) -> Result<Self, EnsembleError> {
        config.validate()?;
        config.model_weights.sort_by_key(|m| m.model_type);
        let perf = config.model_weights.iter().map(|_| ModelPerformance::new()).collect();
        Ok(EnsembleConsensus { state: RwLock::new(State { config, perf }), history: Mutex::new(History::new()) })
    }

    /// The consensus of `predictions` now (the system clock).
    pub fn predict(&self, predictions: &[ModelPrediction]) -> Result<EnsembleResult, EnsembleError> {
        self.predict_at(predictions, unix_now_s())
    }

    /// The consensus of `predictions` at `now_s` (Unix seconds: the clock the
    /// staleness test uses, and the result's timestamp).
    pub fn predict_at(&self, predictions: &[ModelPrediction], now_s: f64) -> Result<EnsembleResult, EnsembleError> {
        let mut result = EnsembleResult::empty(0);
        self.predict_into(predictions, now_s, &mut result)?;
        Ok(result)
    }

    /// As [`EnsembleConsensus::predict_at`], writing into `result` and reusing
    /// its buffers. On an error `result` is left as it was.
    pub fn predict_into(
        &self,
        predictions: &[ModelPrediction],
        now_s: f64,
        result: &mut EnsembleResult,
    ) -> Result<(), EnsembleError> {
        let votes = {
            let state = self.state.read();
            decide(&state, predictions, now_s, result)?
        };
        self.history.lock().insert(votes, result);
        Ok(())
    }

    /// Reports a model's measured accuracy (in [0, 1]) and profit factor
    /// (finite, ≥ 0): taken as is when first, else blended with
    /// `performance_decay`. Returns the model's new status.
    pub fn update_model_performance(
        &self,
        model: ModelType,
        accuracy: f64,
        profit_factor: f64,
    ) -> Result<ModelStatus, EnsembleError> {
        check_model(model, "accuracy", accuracy, unit_rule(accuracy))?;
        check_model(model, "profit_factor", profit_factor, non_negative_rule(profit_factor))?;
        let mut state = self.state.write();
        let slot = state.slot(model)?;
        let decay = state.config.performance_decay;
        state.perf[slot].report(accuracy, profit_factor, decay);
        Ok(state.model_status(slot))
    }

    /// Scores result `result_id` against what happened; see
    /// [`super::performance`] for exactly how. An unknown id (never issued, or
    /// older than the last [`super::performance::HISTORY_CAPACITY`] results),
    /// an already scored one, or a non-finite return is an error and changes
    /// nothing.
    pub fn record_outcome(
        &self,
        result_id: u64,
        realized_direction: Direction,
        realized_return: f64,
    ) -> Result<(), EnsembleError> {
        check_value("realized_return", realized_return, finite_rule(realized_return))?;
        let votes = self.history.lock().take_for_scoring(result_id)?;
        let mut state = self.state.write();
        let state = &mut *state;
        let decay = state.config.performance_decay;
        for (slot, perf) in state.perf.iter_mut().enumerate() {
            if let Some(direction) = unpack_vote(votes, slot) {
                let hit = direction == realized_direction;
                perf.record(hit, realized_return * direction.sign(), decay);
            }
        }
        Ok(())
    }

    /// Sets a model's weight (finite, ≥ 0). Returns the model's new status.
    pub fn update_weight(&self, model: ModelType, weight: f64) -> Result<ModelStatus, EnsembleError> {
        check_model(model, "weight", weight, non_negative_rule(weight))?;
        let mut state = self.state.write();
        let slot = state.slot(model)?;
        state.config.model_weights[slot].weight = weight;
        Ok(state.model_status(slot))
    }

    /// Sets a model's `min_confidence` (in [0, 1]). Returns its new status.
    pub fn update_min_confidence(&self, model: ModelType, min_confidence: f64) -> Result<ModelStatus, EnsembleError> {
        check_model(model, "min_confidence", min_confidence, unit_rule(min_confidence))?;
        let mut state = self.state.write();
        let slot = state.slot(model)?;
        state.config.model_weights[slot].min_confidence = min_confidence;
        Ok(state.model_status(slot))
    }

    pub fn enable_model(&self, model: ModelType) -> Result<ModelStatus, EnsembleError> {
        self.set_enabled(model, true)
    }

    pub fn disable_model(&self, model: ModelType) -> Result<ModelStatus, EnsembleError> {
        self.set_enabled(model, false)
    }

    /// Enables or disables a model. Returns its new status.
    pub fn set_enabled(&self, model: ModelType, enabled: bool) -> Result<ModelStatus, EnsembleError> {
        let mut state = self.state.write();
        let slot = state.slot(model)?;
        state.config.model_weights[slot].enabled = enabled;
        Ok(state.model_status(slot))
    }

    pub fn set_strategy(&self, strategy: ConsensusStrategy) {
        self.state.write().config.strategy = strategy;
    }

    pub fn strategy(&self) -> ConsensusStrategy {
        self.state.read().config.strategy
    }

    /// The current config (models in canonical order).
    pub fn config(&self) -> EnsembleConfig {
        self.state.read().config.clone()
    }

    /// One model's line of the status.
    pub fn model_status(&self, model: ModelType) -> Result<ModelStatus, EnsembleError> {
        let state = self.state.read();
        Ok(state.model_status(state.slot(model)?))
    }

    /// docs/consensus.md's status JSON.
    pub fn get_status(&self) -> EnsembleStatus {
        let (strategy, total_models, enabled_models, models) = {
            let state = self.state.read();
            let mws = &state.config.model_weights;
            let models: BTreeMap<ModelType, ModelStatus> =
                mws.iter().enumerate().map(|(slot, mw)| (mw.model_type, state.model_status(slot))).collect();
            (state.config.strategy, mws.len(), mws.iter().filter(|m| m.enabled).count(), models)
        };
        let last_prediction = self.history.lock().last().cloned();
        EnsembleStatus { strategy, total_models, enabled_models, models, last_prediction }
    }
}

/// `create_ensemble_consensus(strategy, {model: weight})` (docs/consensus.md): every
/// model enabled with `min_confidence` 0, every other field at its default.
/// A model named twice is an error.
pub fn create_ensemble_consensus(
    strategy: ConsensusStrategy,
    model_weights: impl IntoIterator<Item = (ModelType, f64)>,
) -> Result<EnsembleConsensus, EnsembleError> {
    let config = EnsembleConfig {
        strategy,
        model_weights: model_weights.into_iter().map(|(m, w)| ModelWeight::new(m, w)).collect(),
        ..EnsembleConfig::default()
    };
    EnsembleConsensus::new(config)
}

const NO_PREDICTION: usize = usize::MAX;

/// docs/consensus.md's steps 1–11 on one state, into `out` (untouched on an error).
/// Returns the votes of E for the history.
fn decide(
    state: &State,
    predictions: &[ModelPrediction],
    now: f64,
    out: &mut EnsembleResult,
) -> Result<Votes, EnsembleError> {
    let config = &state.config;
    let mws = &config.model_weights;
    let n = mws.len();
    check_value("now", now, finite_rule(now))?;

    // Validation. Map each prediction to its config slot first, so that the
    // error reported for a bad call does not depend on the input order either.
    let mut index_of = [NO_PREDICTION; MAX_MODELS];
    let mut unknown: Option<ModelType> = None;
    let mut duplicate: Option<usize> = None;
    for (i, p) in predictions.iter().enumerate() {
        match mws.iter().position(|m| m.model_type == p.model_type) {
            None => unknown = Some(unknown.map_or(p.model_type, |u| u.min(p.model_type))),
            Some(slot) if index_of[slot] != NO_PREDICTION => duplicate = Some(duplicate.map_or(slot, |d| d.min(slot))),
            Some(slot) => index_of[slot] = i,
        }
    }
    if let Some(model) = unknown {
        return Err(EnsembleError::UnknownModel { model });
    }
    if let Some(slot) = duplicate {
        return Err(EnsembleError::DuplicatePrediction { model: mws[slot].model_type });
    }
    let mut probs = [[0.0f64; 3]; MAX_MODELS];
    for slot in 0..n {
        if index_of[slot] == NO_PREDICTION {
            continue;
        }
        let p = &predictions[index_of[slot]];
        let m = p.model_type;
        check_model(m, "confidence", p.confidence, unit_rule(p.confidence))?;
        for (k, &pk) in p.probabilities.iter().enumerate() {
            check_model(m, PROBABILITY_FIELDS[k], pk, non_negative_rule(pk))?;
        }
        let [a, b, c] = p.probabilities;
        let sum = a + b + c;
        if (sum - 1.0).abs() > PROBABILITY_SUM_TOLERANCE {
            return Err(EnsembleError::ProbabilitySum { model: m, sum });
        }
        probs[slot] = if sum == 1.0 { p.probabilities } else { [a / sum, b / sum, c / sum] };
        check_model(m, "expected_return", p.expected_return, finite_rule(p.expected_return))?;
        check_model(m, "timestamp", p.timestamp, finite_rule(p.timestamp))?;
    }

    // Step 1: eligibility.
    let strategy = config.strategy;
    let mut eligible = [false; MAX_MODELS];
    let mut excluded: [Option<ExclusionReason>; MAX_MODELS] = [None; MAX_MODELS];
    let (mut n_eligible, mut n_excluded) = (0usize, 0usize);
    for slot in 0..n {
        if index_of[slot] == NO_PREDICTION {
            continue;
        }
        let p = &predictions[index_of[slot]];
        let mw = &mws[slot];
        let reason = if !mw.enabled {
            Some(ExclusionReason::Disabled)
        } else if mw.weight <= 0.0 {
            Some(ExclusionReason::ZeroWeight)
        } else if p.confidence < mw.min_confidence {
            Some(ExclusionReason::LowConfidence)
        } else if config.max_prediction_age_s.is_some_and(|age| now - p.timestamp > age) {
            Some(ExclusionReason::Stale)
        } else {
            None
        };
        excluded[slot] = reason;
        eligible[slot] = reason.is_none();
        n_eligible += reason.is_none() as usize;
        n_excluded += reason.is_some() as usize;
    }

    // Validation is over: from here on `out` is written.
    out.timestamp = now;
    out.strategy = strategy;
    out.eligible_models.clear();
    out.eligible_models.reserve_exact(n_eligible);
    out.excluded_models.clear();
    out.excluded_models.reserve_exact(n_excluded);
    out.model_contributions.clear();
    // Every model present is scored by the result's outcome, eligible or
    // excluded (docs/consensus.md): a model excluded for low confidence can
    // earn its way back.
    let mut votes: Votes = 0;
    for slot in 0..n {
        if index_of[slot] != NO_PREDICTION {
            pack_vote(&mut votes, slot, predictions[index_of[slot]].direction);
        }
        if eligible[slot] {
            out.eligible_models.push(mws[slot].model_type);
        } else if let Some(reason) = excluded[slot] {
            out.excluded_models.push((mws[slot].model_type, reason));
        }
    }

    // Step 3: effective weights, divided by the largest.
    let mut w = [0.0f64; MAX_MODELS];
    let mut w_max = 0.0f64;
    for slot in 0..n {
        if eligible[slot] {
            let p = &predictions[index_of[slot]];
            let weight = mws[slot].weight;
            w[slot] = match strategy {
                ConsensusStrategy::WeightedVoting | ConsensusStrategy::Unanimous => weight,
                ConsensusStrategy::Majority => 1.0,
                ConsensusStrategy::ConfidenceBased => weight * p.confidence,
                ConsensusStrategy::Adaptive => weight * state.perf[slot].score(),
            };
            w_max = w_max.max(w[slot]);
        }
    }
    // Step 2 (and step 3's zero total weight).
    if n_eligible == 0 || w_max <= 0.0 {
        let reason =
            if n_eligible == 0 { DecisionReason::NoEligiblePredictions } else { DecisionReason::ZeroTotalWeight };
        out.direction = Direction::Neutral;
        out.confidence = 0.0;
        out.meta_confidence = 0.0;
        out.agreement_score = 0.0;
        out.weighted_agreement = 0.0;
        out.expected_return = 0.0;
        out.should_trade = false;
        out.reason = Some(reason);
        out.probabilities = [0.0; 3];
        return Ok(votes);
    }
    let mut w_sum = 0.0;
    for slot in 0..n {
        if eligible[slot] {
            w[slot] /= w_max;
            w_sum += w[slot];
        }
    }

    // Step 4: P.
    let mut acc = [0.0f64; 3];
    for slot in 0..n {
        if eligible[slot] {
            for (a, &pk) in acc.iter_mut().zip(&probs[slot]) {
                *a += w[slot] * pk;
            }
        }
    }
    let p_comb = [acc[0] / w_sum, acc[1] / w_sum, acc[2] / w_sum];

    // Step 5: the direction, and a strategy's own reason not to trade.
    let [p_down, _, p_up] = p_comb;
    let mut strategy_reason = None;
    let direction = match strategy {
        ConsensusStrategy::WeightedVoting | ConsensusStrategy::ConfidenceBased | ConsensusStrategy::Adaptive => {
            let d = argmax_ties_neutral(&p_comb);
            if d != Direction::Neutral && (p_up - p_down).abs() < config.neutral_threshold {
                Direction::Neutral
            } else {
                d
            }
        }
        ConsensusStrategy::Majority => {
            let mut counts = [0usize; 3];
            for slot in 0..n {
                if eligible[slot] {
                    counts[predictions[index_of[slot]].direction.index()] += 1;
                }
            }
            match Direction::ALL.into_iter().find(|d| 2 * counts[d.index()] > n_eligible) {
                Some(d) => d,
                None => {
                    strategy_reason = Some(DecisionReason::NoMajority);
                    Direction::Neutral
                }
            }
        }
        ConsensusStrategy::Unanimous => {
            let every_enabled_eligible = (0..n).all(|slot| !mws[slot].enabled || eligible[slot]);
            let mut common: Option<Direction> = None;
            let mut agree = true;
            for slot in 0..n {
                if eligible[slot] {
                    let d = predictions[index_of[slot]].direction;
                    agree &= common.is_none_or(|c| c == d);
                    common = Some(d);
                }
            }
            match common {
                Some(d) if agree && every_enabled_eligible => d,
                _ => {
                    strategy_reason = Some(DecisionReason::NotUnanimous);
                    Direction::Neutral
                }
            }
        }
    };
    let di = direction.index();

    // Steps 6–10.
    let confidence = p_comb[di].min(1.0);
    let (mut agreeing, mut w_agreeing, mut w_tv, mut w_pd) = (0usize, 0.0, 0.0, 0.0);
    // E[r] as Σ (w_m / Σw) · r_m: every term is at most |r_m| (never the
    // Σ w·r that overflows for returns near f64::MAX), and the weighted mean
    // lies in [min r, max r], which the clamp keeps exact under rounding.
    // So any finite returns give a finite E[r].
    let (mut ret, mut r_min, mut r_max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for slot in 0..n {
        if eligible[slot] {
            let p = &predictions[index_of[slot]];
            let pm = &probs[slot];
            if p.direction == direction {
                agreeing += 1;
                w_agreeing += w[slot];
            }
            let tv = 0.5 * ((pm[0] - p_comb[0]).abs() + (pm[1] - p_comb[1]).abs() + (pm[2] - p_comb[2]).abs());
            w_tv += w[slot] * tv;
            ret += (w[slot] / w_sum) * p.expected_return;
            r_min = r_min.min(p.expected_return);
            r_max = r_max.max(p.expected_return);
            w_pd += w[slot] * pm[di];
        }
    }
    let agreement_score = agreeing as f64 / n_eligible as f64;
    let weighted_agreement = w_agreeing / w_sum;
    // TV and the weight shares are in [0, 1]; the clamp only absorbs rounding.
    let meta_confidence = (1.0 - w_tv / w_sum).clamp(0.0, 1.0);
    let expected_return = ret.clamp(r_min, r_max);
    out.model_contributions.reserve_exact(n_eligible);
    for slot in 0..n {
        if eligible[slot] {
            // When no model gives the chosen direction any probability (a
            // NEUTRAL forced by a vote), the shares of Σw stand in.
            let c = if w_pd > 0.0 { w[slot] * probs[slot][di] / w_pd } else { w[slot] / w_sum };
            out.model_contributions.push((mws[slot].model_type, c));
        }
    }

    // Step 11.
    let (should_trade, reason) = if let Some(r) = strategy_reason {
        (false, Some(r))
    } else if direction == Direction::Neutral {
        (false, Some(DecisionReason::Neutral))
    } else if confidence < config.confidence_threshold {
        (false, Some(DecisionReason::LowConfidence))
    } else if agreement_score < config.min_agreement {
        (false, Some(DecisionReason::LowAgreement))
    } else {
        (true, None)
    };

    out.direction = direction;
    out.confidence = confidence;
    out.meta_confidence = meta_confidence;
    out.agreement_score = agreement_score;
    out.weighted_agreement = weighted_agreement;
    out.expected_return = expected_return;
    out.should_trade = should_trade;
    out.reason = reason;
    out.probabilities = p_comb;
    Ok(votes)
}

/// `argmax P`, any tie at the top resolving to NEUTRAL.
fn argmax_ties_neutral(p: &[f64; 3]) -> Direction {
    let [down, neutral, up] = *p;
    if up > down && up > neutral {
        Direction::Up
    } else if down > up && down > neutral {
        Direction::Down
    } else {
        Direction::Neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_resolves_every_tie_to_neutral() {
        assert_eq!(argmax_ties_neutral(&[0.2, 0.3, 0.5]), Direction::Up);
        assert_eq!(argmax_ties_neutral(&[0.5, 0.3, 0.2]), Direction::Down);
        assert_eq!(argmax_ties_neutral(&[0.2, 0.6, 0.2]), Direction::Neutral);
        assert_eq!(argmax_ties_neutral(&[0.45, 0.1, 0.45]), Direction::Neutral);
        assert_eq!(argmax_ties_neutral(&[0.1, 0.45, 0.45]), Direction::Neutral);
        assert_eq!(argmax_ties_neutral(&[0.45, 0.45, 0.1]), Direction::Neutral);
    }

    #[test]
    fn returns_near_the_largest_f64_give_a_finite_expected_return() {
        let e = create_ensemble_consensus(
            ConsensusStrategy::WeightedVoting,
            [(ModelType::CnnLstm, 0.4), (ModelType::Tlob, 0.25), (ModelType::MpdTransformer, 1e-300)],
        )
        .unwrap();
        let p = |model_type, expected_return| ModelPrediction {
            model_type,
            direction: Direction::Up,
            confidence: 0.9,
            probabilities: [0.05, 0.05, 0.9],
            expected_return,
            timestamp: 0.0,
        };
        for (a, b) in [(1.7e308, 1.7e308), (f64::MAX, f64::MAX), (-f64::MAX, -f64::MAX), (f64::MAX, -f64::MAX)] {
            let preds = [p(ModelType::CnnLstm, a), p(ModelType::Tlob, b), p(ModelType::MpdTransformer, a)];
            let r = e.predict_at(&preds, 0.0).unwrap();
            assert!(r.expected_return.is_finite(), "{a} and {b} gave {}", r.expected_return);
            assert!((a.min(b)..=a.max(b)).contains(&r.expected_return), "{} is outside [{a}, {b}]", r.expected_return);
            assert!(serde_json::to_value(&r).unwrap()["expected_return"].is_f64());
        }
        // Equal returns: their mean, exactly.
        let r = e.predict_at(&[p(ModelType::CnnLstm, 1.7e308), p(ModelType::Tlob, 1.7e308)], 0.0).unwrap();
        assert_eq!(r.expected_return, 1.7e308);
    }

    #[test]
    fn a_non_finite_number_in_a_decision_fails_to_serialize_instead_of_becoming_null() {
        let mut r = EnsembleResult::empty(1);
        assert!(serde_json::to_string(&r).is_ok());
        r.expected_return = f64::INFINITY;
        let err = serde_json::to_string(&r).unwrap_err().to_string();
        assert!(err.contains("non-finite"), "{err}");
        r.expected_return = 0.0;
        r.probabilities[1] = f64::NAN;
        assert!(serde_json::to_string(&r).is_err());
        r.probabilities[1] = 0.0;
        r.model_contributions.push((ModelType::Tlob, f64::NAN));
        assert!(serde_json::to_string(&r).is_err());
        let p = ModelPrediction {
            model_type: ModelType::Tlob,
            direction: Direction::Up,
            confidence: 0.5,
            probabilities: [0.2, 0.3, 0.5],
            expected_return: f64::NEG_INFINITY,
            timestamp: 0.0,
        };
        assert!(serde_json::to_string(&p).is_err());
        assert!(serde_json::to_string(&ModelPrediction { expected_return: 0.1, ..p }).is_ok());
    }

    #[test]
    fn ensemble_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<EnsembleConsensus>();
    }
}
