//! Every candidate's call at every decision time.
//!
//! The models' calls are their own predictions in the engine's decision
//! (direction = argmax; they trade whenever it is not NEUTRAL). The five
//! consensus strategies each run their own [`EnsembleConsensus`], started
//! from the engine's ensemble config, on those same predictions; each is told
//! the outcome of a decision once its primary-horizon label is known (k ticks
//! later), as a client calling `/outcome` would, so the adaptive strategy's
//! weights evolve during the period exactly as they would live. The
//! baselines are fit on the fit period only: the logistic regression on
//! order flow (train's baseline), the majority class, and always-neutral.
//!
//! A decision where a loaded model gave no prediction is dropped for every
//! candidate (and counted), so all candidates answer the same decisions.

use std::collections::VecDeque;

use serde::Serialize;

use super::replay::Replayed;
use super::{EvaluateError, EvaluateOptions};
use crate::ensemble::{ConsensusStrategy, Direction, EnsembleConfig, EnsembleConsensus, ModelPrediction, ModelType};
use crate::features::NUM_FEATURES;
use crate::server::engine::Engine;
use crate::train::baseline::LogisticRegression;
use crate::train::dataset::{auto_alpha, run_starts, HorizonLabels, Normalizer};

/// One candidate decision-maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Candidate {
    Model(ModelType),
    Consensus(ConsensusStrategy),
    LogisticRegression,
    MajorityClass,
    AlwaysNeutral,
}

impl Candidate {
    /// The name in `decisions.parquet` and `report.json`.
    pub fn name(self) -> &'static str {
        match self {
            Candidate::Model(m) => m.as_str(),
            Candidate::Consensus(s) => s.as_str(),
            Candidate::LogisticRegression => "logistic_regression",
            Candidate::MajorityClass => "majority_class",
            Candidate::AlwaysNeutral => "always_neutral",
        }
    }

    /// What kind of candidate: `model`, `consensus` or `baseline`.
    pub fn group(self) -> &'static str {
        match self {
            Candidate::Model(_) => "model",
            Candidate::Consensus(_) => "consensus",
            _ => "baseline",
        }
    }
}

impl Serialize for Candidate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What one candidate does at one decision time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CandidateCall {
    pub direction: Direction,
    /// The confidence it states (a model's top probability, the consensus's confidence).
    pub confidence: f64,
    /// Whether it would open a position (the consensus's `should_trade`; otherwise not NEUTRAL).
    pub should_trade: bool,
}

/// The labels of the evaluated ticks at each horizon, with the α of each.
#[derive(Debug, Clone)]
pub struct Labels {
    pub horizons: Vec<usize>,
    pub alpha: Vec<f64>,
    /// Per horizon, over [`Replayed::eval`].
    pub eval: Vec<HorizonLabels>,
}

impl Labels {
    /// The class of evaluated tick `t` at horizon number `h`, if it has a label.
    pub fn class(&self, h: usize, t: usize) -> Option<Direction> {
        let r = self.eval[h].r[t];
        (!r.is_nan()).then(|| {
            let a = self.alpha[h];
            if r > a {
                Direction::Up
            } else if r < -a {
                Direction::Down
            } else {
                Direction::Neutral
            }
        })
    }
}

/// The adaptive strategy's contributions at one decision (sampled for the report).
#[derive(Debug, Clone, Serialize)]
pub struct WeightPoint {
    pub ts_ms: i64,
    pub contributions: Vec<(ModelType, f64)>,
}

/// Every candidate's call at every kept decision.
#[derive(Debug, Clone)]
pub struct Calls {
    pub candidates: Vec<Candidate>,
    /// Indices into [`Replayed::calls`] that every candidate answered.
    pub decisions: Vec<usize>,
    /// `calls[d][c]`: decision `d`, candidate `c`.
    pub calls: Vec<Vec<CandidateCall>>,
    pub labels: Labels,
    /// The fit period's class shares at the primary horizon `[DOWN, NEUTRAL, UP]`.
    pub fit_class_shares: [f64; 3],
    pub fit_labelled_ticks: usize,
    pub baseline: LogisticRegression,
    /// Engine decisions dropped because a loaded model gave no prediction.
    pub dropped: u64,
    /// Outcomes told to the consensus strategies (each strategy the same ones).
    pub outcomes_told: u64,
    pub adaptive_weights: Vec<WeightPoint>,
    /// The strategy of the engine's ensemble config: "the ensemble" of the comparisons.
    pub engine_strategy: ConsensusStrategy,
}

/// The report keeps at most this many points of the adaptive weights.
const WEIGHT_POINTS: usize = 500;

fn labels_of(ts: &[i64], mid: &[f64], interval_ms: i64, k: usize) -> HorizonLabels {
    HorizonLabels::compute(mid, &run_starts(ts, interval_ms), k)
}

pub fn calls(engine: &Engine, replayed: &Replayed, opts: &EvaluateOptions) -> Result<Calls, EvaluateError> {
    let fit = &replayed.fit;
    // α per horizon, fit on the fit period as training fits it on a fold's training rows.
    let mut alpha = Vec::new();
    let mut fit_labels = Vec::new();
    for &k in &opts.horizons {
        let l = labels_of(&fit.ts_ms, &fit.mid, opts.interval_ms, k);
        let a = match opts.alpha {
            Some(a) => a,
            None => auto_alpha(&l, 0..fit.len()).map_err(|_| {
                EvaluateError::Data(format!(
                    "the fit period (before --from) has no labelled tick at horizon {k}: put --from later, or give --alpha"
                ))
            })?,
        };
        alpha.push(a);
        fit_labels.push(l);
    }
    let eval = opts
        .horizons
        .iter()
        .map(|&k| labels_of(&replayed.eval.ts_ms, &replayed.eval.mid, opts.interval_ms, k))
        .collect();
    let labels = Labels { horizons: opts.horizons.clone(), alpha, eval };

    // The fit period's classes at the primary horizon: the majority class and the baseline's targets.
    let primary = &fit_labels[0];
    let mut shares = [0u64; 3];
    for t in 0..fit.len() {
        if let Some(c) = primary.class(t, labels.alpha[0]) {
            shares[c.class_id()] += 1;
        }
    }
    let fit_labelled: u64 = shares.iter().sum();
    if fit_labelled == 0 {
        return Err(EvaluateError::Data(
            "the fit period (before --from) has no labelled tick: put --from later".into(),
        ));
    }
    let fit_class_shares = shares.map(|n| n as f64 / fit_labelled as f64);
    let majority = (0..3).max_by_key(|&c| (shares[c], std::cmp::Reverse(c))).unwrap_or(1);
    let majority = Direction::from_index(majority).unwrap_or(Direction::Neutral);

    let mut rows: Vec<&[f32]> = Vec::new();
    let mut y = Vec::new();
    for (i, &t) in replayed.fit_feature_ticks.iter().enumerate() {
        if let Some(c) = primary.class(t, labels.alpha[0]) {
            rows.push(&replayed.fit_features[i * NUM_FEATURES..(i + 1) * NUM_FEATURES]);
            y.push(c.class_id() as u8);
        }
    }
    if rows.is_empty() {
        return Err(EvaluateError::Data(
            "the fit period (before --from) has no labelled tick with a feature vector for the logistic baseline: \
             put --from later (the features need 200 one-second candles of warm-up)"
                .into(),
        ));
    }
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let norm = Normalizer::fit(&flat, NUM_FEATURES, 0..rows.len());
    let baseline = LogisticRegression::fit_rows(&norm, &rows, &y);

    let models = engine.loaded_models();
    let mut candidates: Vec<Candidate> = models.iter().map(|&m| Candidate::Model(m)).collect();
    candidates.extend(ConsensusStrategy::ALL.iter().map(|&s| Candidate::Consensus(s)));
    candidates.extend([Candidate::LogisticRegression, Candidate::MajorityClass, Candidate::AlwaysNeutral]);

    let base_config = engine.consensus().config();
    let strategies: Vec<EnsembleConsensus> = ConsensusStrategy::ALL
        .iter()
        .map(|&s| EnsembleConsensus::new(EnsembleConfig { strategy: s, ..base_config.clone() }))
        .collect::<Result<_, _>>()
        .map_err(|e| EvaluateError::Data(format!("the ensemble config: {e}")))?;
    let adaptive = ConsensusStrategy::ALL.iter().position(|&s| s == ConsensusStrategy::Adaptive).unwrap_or(0);

    let k0 = opts.horizons[0];
    let mut pending: VecDeque<(usize, Vec<u64>)> = VecDeque::new();
    let mut out = Calls {
        candidates,
        decisions: Vec::new(),
        calls: Vec::new(),
        labels,
        fit_class_shares,
        fit_labelled_ticks: fit_labelled as usize,
        baseline,
        dropped: 0,
        outcomes_told: 0,
        adaptive_weights: Vec::new(),
        engine_strategy: base_config.strategy,
    };
    let sample_every = replayed.calls.len().div_ceil(WEIGHT_POINTS).max(1);
    for (i, call) in replayed.calls.iter().enumerate() {
        // Outcomes known by now (their label's last tick is at or before this one).
        while pending.front().is_some_and(|(t, _)| t + k0 <= call.tick) {
            let Some((t, ids)) = pending.pop_front() else { break };
            let Some(class) = out.labels.class(0, t) else { continue };
            let realized = out.labels.eval[0].target_bps[t] / 10_000.0;
            for (consensus, &id) in strategies.iter().zip(&ids) {
                // An id is scored once and kept for 16,384 results; neither can fail here.
                let _ = consensus.record_outcome(id, class, realized);
            }
            out.outcomes_told += 1;
        }
        let mut predictions: Vec<ModelPrediction> = Vec::with_capacity(models.len());
        for &m in &models {
            if let Some(p) = call.decision.predictions.iter().find(|p| p.model_type == m) {
                predictions.push(*p);
            }
        }
        if predictions.len() != models.len() {
            out.dropped += 1;
            continue;
        }
        let now_s = predictions.iter().map(|p| p.timestamp).fold(f64::NEG_INFINITY, f64::max);
        let mut row: Vec<CandidateCall> = predictions
            .iter()
            .map(|p| CandidateCall {
                direction: p.direction,
                confidence: p.confidence,
                should_trade: p.direction != Direction::Neutral,
            })
            .collect();
        let mut ids = Vec::with_capacity(strategies.len());
        for (s, consensus) in strategies.iter().enumerate() {
            let r = consensus
                .predict_at(&predictions, now_s)
                .map_err(|e| EvaluateError::Data(format!("the {} consensus: {e}", ConsensusStrategy::ALL[s])))?;
            ids.push(r.id);
            row.push(CandidateCall { direction: r.direction, confidence: r.confidence, should_trade: r.should_trade });
            if s == adaptive && i.is_multiple_of(sample_every) {
                out.adaptive_weights.push(WeightPoint {
                    ts_ms: replayed.eval.ts_ms[call.tick],
                    contributions: r.model_contributions.clone(),
                });
            }
        }
        pending.push_back((call.tick, ids));
        let p = out.baseline.probabilities(&call.features);
        let c = (0..3).fold(0, |best, k| if p[k] > p[best] { k } else { best });
        let direction = Direction::from_index(c).unwrap_or(Direction::Neutral);
        row.push(CandidateCall { direction, confidence: p[c], should_trade: direction != Direction::Neutral });
        row.push(CandidateCall {
            direction: majority,
            confidence: fit_class_shares[majority.index()],
            should_trade: majority != Direction::Neutral,
        });
        row.push(CandidateCall {
            direction: Direction::Neutral,
            confidence: fit_class_shares[Direction::Neutral.index()],
            should_trade: false,
        });
        out.decisions.push(i);
        out.calls.push(row);
    }
    if out.decisions.is_empty() {
        return Err(EvaluateError::Data(format!(
            "every one of the {} engine decisions lacked a loaded model's prediction",
            replayed.calls.len()
        )));
    }
    Ok(out)
}
