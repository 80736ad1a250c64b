//! docs/consensus.md, checked: the worked example, every strategy's edge cases,
//! validation, performance tracking, the JSON forms and the adapter.

// Parallel arrays (P, expected P, probabilities) read best indexed.
#![allow(clippy::needless_range_loop)]

use quorum::ensemble::*;
use serde_json::json;

const NOW: f64 = 1_764_000_000.0;

// docs/consensus.md promises at least the last 10,000 results.
const _: () = assert!(HISTORY_CAPACITY >= 10_000);

fn pred(
    model_type: ModelType,
    direction: Direction,
    confidence: f64,
    probabilities: [f64; 3],
    expected_return: f64,
) -> ModelPrediction {
    ModelPrediction { model_type, direction, confidence, probabilities, expected_return, timestamp: NOW }
}

use Direction::{Down, Neutral, Up};
use ModelType::{CnnLstm, MpdTransformer, Tlob};

/// The worked example's three predictions (docs/consensus.md).
fn seed_predictions() -> Vec<ModelPrediction> {
    vec![
        pred(CnnLstm, Up, 0.75, [0.1, 0.15, 0.75], 0.002),
        pred(MpdTransformer, Up, 0.68, [0.12, 0.2, 0.68], 0.0018),
        pred(Tlob, Neutral, 0.55, [0.2, 0.55, 0.25], 0.0001),
    ]
}

fn seed_ensemble() -> EnsembleConsensus {
    EnsembleConsensus::new(EnsembleConfig::default()).unwrap()
}

/// An ensemble of the three models, enabled, min_confidence 0, with `strategy`.
fn plain(strategy: ConsensusStrategy, weights: [f64; 3]) -> EnsembleConsensus {
    create_ensemble_consensus(strategy, [(CnnLstm, weights[0]), (MpdTransformer, weights[1]), (Tlob, weights[2])])
        .unwrap()
}

fn with_config(f: impl FnOnce(&mut EnsembleConfig)) -> EnsembleConsensus {
    let mut config = EnsembleConfig::default();
    f(&mut config);
    EnsembleConsensus::new(config).unwrap()
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, tol: f64) {
    assert!(
        (actual - expected).abs() <= tol,
        "{actual} differs from {expected} by {} > {tol}",
        (actual - expected).abs()
    );
}

fn status_json(e: &EnsembleConsensus) -> String {
    serde_json::to_string(&e.get_status()).unwrap()
}

// ---------------------------------------------------------------------------
// The worked example.

#[test]
fn worked_example_reproduces_every_figure() {
    let r = seed_ensemble().predict_at(&seed_predictions(), NOW).unwrap();
    let expected_p = [0.132, 0.2675, 0.6005];
    for k in 0..3 {
        assert_close(r.probabilities[k], expected_p[k], 1e-9);
    }
    assert_eq!(r.direction, Up);
    assert_close(r.confidence, 0.6005, 1e-9);
    assert_close(r.agreement_score, 2.0 / 3.0, 1e-9);
    assert_close(r.weighted_agreement, 0.75, 1e-9);
    assert_close(r.meta_confidence, 0.82475, 1e-9);
    assert_close(r.expected_return, 0.001455, 1e-9);
    // docs/consensus.md prints the contributions rounded to 5 decimals; their exact
    // values are w·p_up / P_up: 0.3/0.6005, 0.238/0.6005, 0.0625/0.6005.
    let exact = [0.3 / 0.6005, 0.238 / 0.6005, 0.0625 / 0.6005];
    let printed = [0.49958, 0.39634, 0.10408];
    for (k, model) in [CnnLstm, MpdTransformer, Tlob].into_iter().enumerate() {
        let c = r.contribution(model).unwrap();
        assert_close(c, exact[k], 1e-9);
        assert_close(c, printed[k], 0.5e-5);
    }
    assert!(r.should_trade);
    assert_eq!(r.reason, None);
    assert_eq!(r.strategy, ConsensusStrategy::WeightedVoting);
    assert_eq!(r.eligible_models, vec![CnnLstm, MpdTransformer, Tlob]);
    assert!(r.excluded_models.is_empty());
    assert_eq!(r.timestamp, NOW);
    assert_eq!(r.id, 1);
}

#[test]
fn default_config_is_the_seeds_example() {
    let c = EnsembleConfig::default();
    assert_eq!(c.strategy, ConsensusStrategy::WeightedVoting);
    let got: Vec<_> = c.model_weights.iter().map(|m| (m.model_type, m.weight, m.min_confidence, m.enabled)).collect();
    assert_eq!(got, vec![(CnnLstm, 0.4, 0.6, true), (MpdTransformer, 0.35, 0.55, true), (Tlob, 0.25, 0.5, true)]);
    assert_eq!((c.min_agreement, c.confidence_threshold, c.neutral_threshold), (0.6, 0.5, 0.1));
    assert_eq!(c.max_prediction_age_s, None);
    assert_eq!(c.performance_decay, 0.1);
}

#[test]
fn create_ensemble_consensus_is_the_seeds_call() {
    let e = plain(ConsensusStrategy::WeightedVoting, [0.4, 0.35, 0.25]);
    let c = e.config();
    assert!(c.model_weights.iter().all(|m| m.enabled && m.min_confidence == 0.0));
    assert_eq!(c.min_agreement, 0.6);
    let r = e.predict_at(&seed_predictions(), NOW).unwrap();
    assert_close(r.confidence, 0.6005, 1e-9);
    assert!(matches!(
        create_ensemble_consensus(ConsensusStrategy::Majority, [(Tlob, 1.0), (Tlob, 2.0)]),
        Err(EnsembleError::DuplicateModel { model: Tlob })
    ));
}

#[test]
fn input_order_and_config_order_do_not_change_a_result() {
    let preds = seed_predictions();
    let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut reversed = EnsembleConfig::default();
    reversed.model_weights.reverse();
    for strategy in ConsensusStrategy::ALL {
        let reference = plain(strategy, [0.4, 0.35, 0.25]).predict_at(&preds, NOW).unwrap();
        for perm in perms {
            let e = plain(strategy, [0.4, 0.35, 0.25]);
            let permuted: Vec<_> = perm.iter().map(|&i| preds[i]).collect();
            assert_eq!(e.predict_at(&permuted, NOW).unwrap(), reference, "{strategy} {perm:?}");
        }
    }
    let a = seed_ensemble().predict_at(&preds, NOW).unwrap();
    let b = EnsembleConsensus::new(reversed).unwrap().predict_at(&preds, NOW).unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// Eligibility.

#[test]
fn each_exclusion_reason_is_reported() {
    let e = with_config(|c| {
        c.model_weights[0].enabled = false; // cnn_lstm
        c.model_weights[1].weight = 0.0; // mpd_transformer
        c.max_prediction_age_s = Some(5.0);
    });
    let mut preds = seed_predictions();
    preds[2].timestamp = NOW - 6.0; // tlob: stale
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(
        r.excluded_models,
        vec![
            (CnnLstm, ExclusionReason::Disabled),
            (MpdTransformer, ExclusionReason::ZeroWeight),
            (Tlob, ExclusionReason::Stale)
        ]
    );
    // Every model excluded: step 2.
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.reason, Some(DecisionReason::NoEligiblePredictions));
    assert_eq!(
        (r.confidence, r.meta_confidence, r.agreement_score, r.weighted_agreement, r.expected_return),
        (0.0, 0.0, 0.0, 0.0, 0.0)
    );
    assert!(!r.should_trade);
    assert!(r.model_contributions.is_empty());
    assert!(r.eligible_models.is_empty());

    // Low confidence, and the precedence disabled > low_confidence.
    let e = with_config(|c| c.model_weights[2].enabled = false);
    let mut preds = seed_predictions();
    preds[0].confidence = 0.59; // cnn_lstm below its 0.6
    preds[2].confidence = 0.1; // tlob: disabled and low
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.excluded_models, vec![(CnnLstm, ExclusionReason::LowConfidence), (Tlob, ExclusionReason::Disabled)]);
    assert_eq!(r.eligible_models, vec![MpdTransformer]);
}

#[test]
fn no_predictions_at_all_is_no_eligible_predictions() {
    let r = seed_ensemble().predict_at(&[], NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::NoEligiblePredictions));
    assert_eq!(r.probabilities, [0.0; 3]);
}

#[test]
fn staleness_boundary_is_inclusive_and_future_stamps_are_fresh() {
    let e = with_config(|c| c.max_prediction_age_s = Some(5.0));
    let mut preds = seed_predictions();
    preds[0].timestamp = NOW - 5.0; // exactly the limit: eligible
    preds[1].timestamp = NOW + 3.0; // from the future: eligible
    preds[2].timestamp = NOW - 5.5; // stale
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.eligible_models, vec![CnnLstm, MpdTransformer]);
    assert_eq!(r.excluded_models, vec![(Tlob, ExclusionReason::Stale)]);
    // Without a limit nothing is stale.
    let r = seed_ensemble().predict_at(&preds, NOW + 1e6).unwrap();
    assert_eq!(r.eligible_models.len(), 3);
}

#[test]
fn a_single_eligible_model_decides_alone() {
    for strategy in ConsensusStrategy::ALL {
        let e = with_config(|c| {
            c.strategy = strategy;
            c.model_weights[1].enabled = false;
            c.model_weights[2].enabled = false;
        });
        let preds = [pred(CnnLstm, Up, 0.75, [0.1, 0.15, 0.75], 0.002)];
        let r = e.predict_at(&preds, NOW).unwrap();
        assert_eq!(r.direction, Up, "{strategy}");
        assert_eq!(r.probabilities, [0.1, 0.15, 0.75], "{strategy}");
        assert_eq!(r.confidence, 0.75);
        assert_eq!(r.meta_confidence, 1.0);
        assert_eq!(r.agreement_score, 1.0);
        assert_eq!(r.weighted_agreement, 1.0);
        assert_eq!(r.expected_return, 0.002);
        assert_eq!(r.model_contributions, vec![(CnnLstm, 1.0)]);
        assert!(r.should_trade);
    }
}

// ---------------------------------------------------------------------------
// weighted_voting, confidence_based, adaptive: argmax, ties, neutral threshold.

#[test]
fn argmax_ties_resolve_to_neutral() {
    let e = plain(ConsensusStrategy::WeightedVoting, [1.0, 1.0, 1.0]);
    // Exact binary fractions, so the ties are exact.
    for p in [[0.375, 0.25, 0.375], [0.25, 0.375, 0.375], [0.375, 0.375, 0.25]] {
        let r = e.predict_at(&[pred(CnnLstm, Up, 0.9, p, 0.0)], NOW).unwrap();
        assert_eq!(r.direction, Neutral, "{p:?}");
        assert_eq!(r.confidence, p[1]);
        assert_eq!(r.reason, Some(DecisionReason::Neutral));
    }
    // Two models that cancel exactly: UP and DOWN tie.
    let r = e
        .predict_at(
            &[pred(CnnLstm, Up, 0.9, [0.25, 0.25, 0.5], 0.0), pred(Tlob, Down, 0.9, [0.5, 0.25, 0.25], 0.0)],
            NOW,
        )
        .unwrap();
    assert_eq!(r.probabilities, [0.375, 0.25, 0.375]);
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.agreement_score, 0.0);
}

#[test]
fn neutral_threshold_turns_a_narrow_lead_neutral_and_is_strict() {
    let p = [0.25, 0.3125, 0.4375]; // |P_up - P_down| = 0.1875 exactly
    let one = [pred(CnnLstm, Up, 0.9, p, 0.0)];
    for (threshold, expected) in [(0.1875, Up), (0.1875 + 1e-12, Neutral), (0.1, Up), (0.0, Up)] {
        let e = EnsembleConsensus::new(EnsembleConfig {
            neutral_threshold: threshold,
            confidence_threshold: 0.0,
            min_agreement: 0.0,
            model_weights: vec![ModelWeight::new(CnnLstm, 1.0)],
            ..EnsembleConfig::default()
        })
        .unwrap();
        let r = e.predict_at(&one, NOW).unwrap();
        assert_eq!(r.direction, expected, "threshold {threshold}");
        assert_eq!(r.should_trade, expected == Up);
        assert_eq!(r.reason, if expected == Up { None } else { Some(DecisionReason::Neutral) });
    }
    // The worked example with a threshold above its margin of 0.4685.
    let e = with_config(|c| c.neutral_threshold = 0.5);
    let r = e.predict_at(&seed_predictions(), NOW).unwrap();
    assert_eq!(r.direction, Neutral);
    assert_close(r.confidence, 0.2675, 1e-12);
    // agreement counts the models whose own direction is NEUTRAL: tlob.
    assert_close(r.agreement_score, 1.0 / 3.0, 1e-12);
    assert_close(r.weighted_agreement, 0.25, 1e-12);
    assert_eq!(r.reason, Some(DecisionReason::Neutral));
    // contributions now share P_neutral.
    assert_close(r.contribution(Tlob).unwrap(), 0.25 * 0.55 / 0.2675, 1e-12);
}

#[test]
fn all_neutral_is_neutral_for_every_strategy() {
    let preds = [
        pred(CnnLstm, Neutral, 0.8, [0.1, 0.8, 0.1], 0.0),
        pred(MpdTransformer, Neutral, 0.7, [0.2, 0.7, 0.1], 0.0),
        pred(Tlob, Neutral, 0.6, [0.1, 0.6, 0.3], 0.0),
    ];
    for strategy in ConsensusStrategy::ALL {
        let r = plain(strategy, [0.4, 0.35, 0.25]).predict_at(&preds, NOW).unwrap();
        assert_eq!(r.direction, Neutral, "{strategy}");
        assert_eq!(r.agreement_score, 1.0, "{strategy}");
        assert!(!r.should_trade);
        assert_eq!(r.reason, Some(DecisionReason::Neutral), "{strategy}");
        let sum: f64 = r.model_contributions.iter().map(|c| c.1).sum();
        assert_close(sum, 1.0, 1e-12);
    }
}

#[test]
fn should_trade_reports_the_first_failed_test() {
    let preds = seed_predictions();
    let r = with_config(|c| c.confidence_threshold = 0.7).predict_at(&preds, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::LowConfidence));
    let r = with_config(|c| c.min_agreement = 0.7).predict_at(&preds, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::LowAgreement));
    let r = with_config(|c| {
        c.min_agreement = 0.7;
        c.confidence_threshold = 0.7;
    })
    .predict_at(&preds, NOW)
    .unwrap();
    assert_eq!(r.reason, Some(DecisionReason::LowConfidence));
    assert_eq!(r.direction, Up);
    assert!(!r.should_trade);
    // At the thresholds exactly it trades (≥).
    let r = with_config(|c| c.min_agreement = 2.0 / 3.0).predict_at(&preds, NOW).unwrap();
    assert!(r.should_trade);
}

#[test]
fn confidence_based_weights_by_weight_times_confidence() {
    let preds = seed_predictions();
    let r = plain(ConsensusStrategy::ConfidenceBased, [0.4, 0.35, 0.25]).predict_at(&preds, NOW).unwrap();
    let w = [0.4 * 0.75, 0.35 * 0.68, 0.25 * 0.55];
    let sw: f64 = w.iter().sum();
    for k in 0..3 {
        let expected: f64 = (0..3).map(|m| w[m] * preds[m].probabilities[k]).sum::<f64>() / sw;
        assert_close(r.probabilities[k], expected, 1e-12);
    }
    assert_close(r.weighted_agreement, (w[0] + w[1]) / sw, 1e-12);
    assert_eq!(r.direction, Up);
    // Every confidence 0 (allowed by min_confidence 0): zero total weight.
    let zero: Vec<_> = preds.iter().map(|p| ModelPrediction { confidence: 0.0, ..*p }).collect();
    let r = plain(ConsensusStrategy::ConfidenceBased, [0.4, 0.35, 0.25]).predict_at(&zero, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::ZeroTotalWeight));
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.confidence, 0.0);
    assert!(r.model_contributions.is_empty());
    assert_eq!(r.eligible_models.len(), 3);
}

// ---------------------------------------------------------------------------
// majority.

#[test]
fn majority_needs_more_than_half_of_the_votes() {
    let e = plain(ConsensusStrategy::Majority, [0.4, 0.35, 0.25]);
    // 2 of 3 UP; weights do not matter: P is the plain mean.
    let r = e.predict_at(&seed_predictions(), NOW).unwrap();
    assert_eq!(r.direction, Up);
    assert_close(r.probabilities[2], (0.75 + 0.68 + 0.25) / 3.0, 1e-12);
    assert_close(r.weighted_agreement, 2.0 / 3.0, 1e-12);
    assert!(r.should_trade);
    // Majority follows the votes, not P: two weak UP votes beat one strong DOWN.
    let r = e
        .predict_at(
            &[
                pred(CnnLstm, Up, 0.5, [0.3, 0.3, 0.4], 0.0),
                pred(MpdTransformer, Up, 0.5, [0.3, 0.3, 0.4], 0.0),
                pred(Tlob, Down, 0.99, [0.98, 0.01, 0.01], 0.0),
            ],
            NOW,
        )
        .unwrap();
    assert_eq!(r.direction, Up);
    assert!(r.probabilities[0] > r.probabilities[2]);
    assert_eq!(r.reason, Some(DecisionReason::LowConfidence));
    // Three different votes: no majority.
    let split = [
        pred(CnnLstm, Up, 0.8, [0.1, 0.1, 0.8], 0.0),
        pred(MpdTransformer, Down, 0.8, [0.8, 0.1, 0.1], 0.0),
        pred(Tlob, Neutral, 0.8, [0.1, 0.8, 0.1], 0.0),
    ];
    let r = e.predict_at(&split, NOW).unwrap();
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.reason, Some(DecisionReason::NoMajority));
    // Exactly half is not more than half.
    let r = e.predict_at(&split[..2], NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::NoMajority));
    // A NEUTRAL majority is NEUTRAL for reason `neutral`.
    let r = e.predict_at(&[split[2], ModelPrediction { model_type: CnnLstm, ..split[2] }], NOW).unwrap();
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.reason, Some(DecisionReason::Neutral));
}

// ---------------------------------------------------------------------------
// unanimous.

fn three_up() -> Vec<ModelPrediction> {
    vec![
        pred(CnnLstm, Up, 0.75, [0.1, 0.15, 0.75], 0.002),
        pred(MpdTransformer, Up, 0.68, [0.12, 0.2, 0.68], 0.0018),
        pred(Tlob, Up, 0.6, [0.15, 0.25, 0.6], 0.001),
    ]
}

#[test]
fn unanimous_needs_every_enabled_model() {
    let e = plain(ConsensusStrategy::Unanimous, [0.4, 0.35, 0.25]);
    let r = e.predict_at(&three_up(), NOW).unwrap();
    assert_eq!(r.direction, Up);
    assert!(r.should_trade);
    // The weights are the config's, as in weighted voting.
    assert_close(r.probabilities[2], 0.4 * 0.75 + 0.35 * 0.68 + 0.25 * 0.6, 1e-12);

    // A missing enabled model breaks unanimity.
    let r = e.predict_at(&three_up()[..2], NOW).unwrap();
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.reason, Some(DecisionReason::NotUnanimous));
    assert!(!r.should_trade);
    // So does an enabled model whose prediction is not eligible.
    let e_strict = with_config(|c| c.strategy = ConsensusStrategy::Unanimous);
    let mut preds = three_up();
    preds[2].confidence = 0.4; // tlob below its 0.5
    let r = e_strict.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::NotUnanimous));
    // A disabled model is not needed.
    e.disable_model(Tlob).unwrap();
    let r = e.predict_at(&three_up()[..2], NOW).unwrap();
    assert_eq!(r.direction, Up);
    assert!(r.should_trade);
    e.enable_model(Tlob).unwrap();
    // Disagreement.
    let mut preds = three_up();
    preds[1].direction = Down;
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::NotUnanimous));
    // Unanimously NEUTRAL.
    let preds: Vec<_> = three_up().iter().map(|p| ModelPrediction { direction: Neutral, ..*p }).collect();
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.reason, Some(DecisionReason::Neutral));
}

#[test]
fn contributions_fall_back_to_weight_shares_when_the_direction_has_no_mass() {
    let e = plain(ConsensusStrategy::Unanimous, [0.5, 0.25, 0.25]);
    let r = e
        .predict_at(
            &[
                pred(CnnLstm, Up, 1.0, [0.0, 0.0, 1.0], 0.0),
                pred(MpdTransformer, Down, 1.0, [1.0, 0.0, 0.0], 0.0),
                pred(Tlob, Up, 1.0, [0.0, 0.0, 1.0], 0.0),
            ],
            NOW,
        )
        .unwrap();
    assert_eq!(r.direction, Neutral);
    assert_eq!(r.confidence, 0.0);
    assert_eq!(r.model_contributions, vec![(CnnLstm, 0.5), (MpdTransformer, 0.25), (Tlob, 0.25)]);
}

// ---------------------------------------------------------------------------
// adaptive and performance.

/// adaptive's score, written out from docs/consensus.md.
fn score(acc: f64, pf: f64) -> f64 {
    f64::max(0.05, (acc - 1.0 / 3.0) / (2.0 / 3.0)) * pf.min(3.0) / 3.0
}

fn expected_p(preds: &[ModelPrediction], w: &[f64]) -> [f64; 3] {
    let sw: f64 = w.iter().sum();
    let mut p = [0.0; 3];
    for (k, pk) in p.iter_mut().enumerate() {
        *pk = preds.iter().zip(w).map(|(pr, w)| w * pr.probabilities[k]).sum::<f64>() / sw;
    }
    p
}

#[test]
fn adaptive_without_records_is_weighted_voting() {
    let preds = seed_predictions();
    let a = plain(ConsensusStrategy::Adaptive, [0.4, 0.35, 0.25]).predict_at(&preds, NOW).unwrap();
    let b = plain(ConsensusStrategy::WeightedVoting, [0.4, 0.35, 0.25]).predict_at(&preds, NOW).unwrap();
    for k in 0..3 {
        assert_close(a.probabilities[k], b.probabilities[k], 1e-12);
    }
    assert_eq!(a.direction, b.direction);
    assert_eq!(a.strategy, ConsensusStrategy::Adaptive);
}

#[test]
fn adaptive_weights_follow_performance_updates() {
    let e = plain(ConsensusStrategy::Adaptive, [0.4, 0.35, 0.25]);
    let preds = seed_predictions();
    e.update_model_performance(CnnLstm, 0.9, 3.0).unwrap();
    e.update_model_performance(Tlob, 0.2, 0.5).unwrap();
    let w = [0.4 * score(0.9, 3.0), 0.35 * score(0.5, 1.0), 0.25 * score(0.2, 0.5)];
    assert_close(score(0.2, 0.5), 0.05 * 0.5 / 3.0, 1e-15); // the 0.05 floor
    let r = e.predict_at(&preds, NOW).unwrap();
    let p = expected_p(&preds, &w);
    for k in 0..3 {
        assert_close(r.probabilities[k], p[k], 1e-12);
    }
    let sw: f64 = w.iter().sum();
    assert_close(r.weighted_agreement, (w[0] + w[1]) / sw, 1e-12);

    // A second report blends with λ = 0.1.
    let s = e.update_model_performance(CnnLstm, 0.5, 1.0).unwrap();
    assert_close(s.accuracy.unwrap(), 0.9 * 0.9 + 0.1 * 0.5, 1e-15);
    assert_close(s.profit_factor.unwrap(), 0.9 * 3.0 + 0.1 * 1.0, 1e-15);
    assert_eq!(s.performance_reports, 2);
    let w0 = 0.4 * score(0.9 * 0.9 + 0.1 * 0.5, 0.9 * 3.0 + 0.1 * 1.0);
    let r = e.predict_at(&preds, NOW).unwrap();
    let p = expected_p(&preds, &[w0, w[1], w[2]]);
    for k in 0..3 {
        assert_close(r.probabilities[k], p[k], 1e-12);
    }

    // A profit factor of 0 everywhere: zero total weight.
    let z = with_config(|c| {
        c.strategy = ConsensusStrategy::Adaptive;
        c.performance_decay = 1.0;
    });
    for m in [CnnLstm, MpdTransformer, Tlob] {
        z.update_model_performance(m, 0.7, 2.0).unwrap();
        z.update_model_performance(m, 0.7, 0.0).unwrap();
    }
    let r = z.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.reason, Some(DecisionReason::ZeroTotalWeight));
}

/// cnn_lstm and mpd_transformer call DOWN, tlob UP.
fn split_predictions() -> Vec<ModelPrediction> {
    vec![
        pred(CnnLstm, Down, 0.7, [0.6, 0.2, 0.2], -0.001),
        pred(MpdTransformer, Down, 0.7, [0.6, 0.25, 0.15], -0.001),
        pred(Tlob, Up, 0.8, [0.1, 0.1, 0.8], 0.002),
    ]
}

#[test]
fn adaptive_learns_from_recorded_outcomes() {
    let e = plain(ConsensusStrategy::Adaptive, [0.4, 0.35, 0.25]);
    let preds = split_predictions();
    assert_eq!(e.predict_at(&preds, NOW).unwrap().direction, Down);
    // The market goes UP every time: tlob is right, the others wrong.
    for i in 0..MIN_OUTCOMES {
        let r = e.predict_at(&preds, NOW).unwrap();
        assert_eq!(r.direction, Down, "outcome {i}");
        e.record_outcome(r.id, Up, 0.01).unwrap();
        let reports = e.model_status(Tlob).unwrap().performance_reports;
        assert_eq!(reports, if i + 1 < MIN_OUTCOMES { 0 } else { 1 });
    }
    let status = e.get_status();
    let (cnn, tlob) = (&status.models[&CnnLstm], &status.models[&Tlob]);
    assert_eq!((cnn.accuracy, cnn.profit_factor), (Some(0.0), Some(0.0)));
    assert_eq!((tlob.accuracy, tlob.profit_factor), (Some(1.0), Some(OUTCOME_PF_CAP)));
    // cnn_lstm and mpd_transformer now weigh 0; tlob decides alone, though all
    // three stay eligible (and keep being scored).
    let r = e.predict_at(&preds, NOW).unwrap();
    assert_eq!(r.direction, Up);
    assert_eq!(r.probabilities, [0.1, 0.1, 0.8]);
    assert_eq!(r.eligible_models.len(), 3);
    assert_eq!(r.contribution(CnnLstm), Some(0.0));
    assert_eq!(r.contribution(Tlob), Some(1.0));
    assert_eq!(r.reason, Some(DecisionReason::LowAgreement)); // 1 of 3 agree
                                                              // Later outcomes blend into the figures.
    e.record_outcome(r.id, Down, -0.01).unwrap();
    let cnn = e.model_status(CnnLstm).unwrap();
    // window: 10 misses and 1 hit, gains 0.01 and losses 0.1.
    assert_close(cnn.accuracy.unwrap(), 0.1 * (1.0 / 11.0), 1e-15);
    assert_close(cnn.profit_factor.unwrap(), 0.1 * (0.01 / 0.1), 1e-15);
    assert_eq!(cnn.performance_reports, 2);
}

#[test]
fn outcomes_score_every_model_present_and_neutral_counts_as_a_class() {
    let e = plain(ConsensusStrategy::WeightedVoting, [0.4, 0.35, 0.25]);
    e.disable_model(MpdTransformer).unwrap();
    let preds = [
        pred(CnnLstm, Neutral, 0.7, [0.2, 0.6, 0.2], 0.0),
        pred(MpdTransformer, Up, 0.7, [0.2, 0.2, 0.6], 0.0),
        pred(Tlob, Up, 0.7, [0.2, 0.2, 0.6], 0.0),
    ];
    for _ in 0..MIN_OUTCOMES {
        let r = e.predict_at(&preds, NOW).unwrap();
        e.record_outcome(r.id, Neutral, 0.003).unwrap();
    }
    let s = e.get_status();
    // NEUTRAL call, NEUTRAL outcome: a hit, and no position: pf 1.
    assert_eq!(s.models[&CnnLstm].accuracy, Some(1.0));
    assert_eq!(s.models[&CnnLstm].profit_factor, Some(1.0));
    // UP call, NEUTRAL outcome: a miss, signed return +0.003: gains only.
    assert_eq!(s.models[&Tlob].accuracy, Some(0.0));
    assert_eq!(s.models[&Tlob].profit_factor, Some(OUTCOME_PF_CAP));
    // Disabled, so excluded from every decision, and still scored by each
    // outcome: UP call, NEUTRAL outcome, as tlob.
    assert!(s.models[&MpdTransformer].performance_reports >= 1);
    assert_eq!(s.models[&MpdTransformer].accuracy, Some(0.0));
    assert_eq!(s.models[&MpdTransformer].profit_factor, Some(OUTCOME_PF_CAP));
}

/// A model below its `min_confidence` is excluded from the decisions, yet
/// its outcomes are scored; right every time, its figures say so, and under
/// `adaptive` they are what will weigh it once it is confident again.
#[test]
fn a_model_excluded_for_low_confidence_earns_its_way_back() {
    let e = plain(ConsensusStrategy::Adaptive, [0.4, 0.35, 0.25]);
    e.update_min_confidence(Tlob, 0.9).unwrap();
    let preds = [
        pred(CnnLstm, Down, 0.7, [0.6, 0.2, 0.2], 0.0),
        pred(MpdTransformer, Down, 0.7, [0.6, 0.2, 0.2], 0.0),
        pred(Tlob, Up, 0.5, [0.1, 0.1, 0.8], 0.0),
    ];
    for _ in 0..MIN_OUTCOMES {
        let r = e.predict_at(&preds, NOW).unwrap();
        assert!(r.excluded_models.iter().any(|(m, _)| *m == Tlob), "tlob is excluded: {:?}", r.excluded_models);
        e.record_outcome(r.id, Up, 0.01).unwrap();
    }
    let tlob = e.model_status(Tlob).unwrap();
    assert_eq!((tlob.accuracy, tlob.profit_factor), (Some(1.0), Some(OUTCOME_PF_CAP)));
    assert_eq!(e.model_status(CnnLstm).unwrap().accuracy, Some(0.0));
    // Confident again: it is eligible, and adaptive follows its record.
    let confident = [preds[0], preds[1], pred(Tlob, Up, 0.95, [0.1, 0.1, 0.8], 0.0)];
    assert_eq!(e.predict_at(&confident, NOW).unwrap().direction, Up);
}

#[test]
fn a_zero_total_weight_result_still_scores_its_models() {
    let e = with_config(|c| {
        c.strategy = ConsensusStrategy::ConfidenceBased;
        for m in &mut c.model_weights {
            m.min_confidence = 0.0;
        }
    });
    let preds: Vec<_> = seed_predictions().iter().map(|p| ModelPrediction { confidence: 0.0, ..*p }).collect();
    for _ in 0..MIN_OUTCOMES {
        let r = e.predict_at(&preds, NOW).unwrap();
        assert_eq!(r.reason, Some(DecisionReason::ZeroTotalWeight));
        e.record_outcome(r.id, Up, 0.01).unwrap();
    }
    assert_eq!(e.model_status(CnnLstm).unwrap().accuracy, Some(1.0));
    assert_eq!(e.model_status(Tlob).unwrap().accuracy, Some(0.0));
}

#[test]
fn outcome_ids_are_checked() {
    let e = seed_ensemble();
    let r = e.predict_at(&seed_predictions(), NOW).unwrap();
    assert_eq!(
        e.record_outcome(r.id + 1, Up, 0.0),
        Err(EnsembleError::UnknownResult { id: r.id + 1, capacity: HISTORY_CAPACITY })
    );
    assert_eq!(e.record_outcome(0, Up, 0.0).unwrap_err().field(), Some("result_id"));
    let err = e.record_outcome(r.id, Up, f64::NAN).unwrap_err();
    assert_eq!(err.field(), Some("realized_return"));
    e.record_outcome(r.id, Up, 0.01).unwrap();
    assert_eq!(e.record_outcome(r.id, Up, 0.01), Err(EnsembleError::AlreadyScored { id: r.id }));
    // The history keeps the last HISTORY_CAPACITY results, no more.
    let first = e.predict_at(&seed_predictions(), NOW).unwrap().id;
    for _ in 0..HISTORY_CAPACITY - 1 {
        e.predict_at(&seed_predictions(), NOW).unwrap();
    }
    let keep = first + 1;
    e.predict_at(&seed_predictions(), NOW).unwrap(); // evicts `first`
    assert!(matches!(e.record_outcome(first, Up, 0.0), Err(EnsembleError::UnknownResult { .. })));
    e.record_outcome(keep, Up, 0.0).unwrap();
}

// ---------------------------------------------------------------------------
// Validation: a clear error naming model and field; nothing changes.

#[test]
fn invalid_predictions_are_rejected_and_change_nothing() {
    let e = seed_ensemble();
    let before = status_json(&e);
    type Edit = fn(&mut ModelPrediction);
    let cases: Vec<(Edit, &str)> = vec![
        (|p| p.confidence = 1.3, "tlob: confidence 1.3 is outside [0, 1]"),
        (|p| p.confidence = -0.1, "tlob: confidence -0.1 is outside [0, 1]"),
        (|p| p.confidence = f64::NAN, "tlob: confidence NaN is not finite"),
        (|p| p.probabilities = [-0.1, 0.55, 0.55], "tlob: probabilities[0] -0.1 is negative"),
        (|p| p.probabilities[2] = f64::INFINITY, "tlob: probabilities[2] inf is not finite"),
        (|p| p.expected_return = f64::NAN, "tlob: expected_return NaN is not finite"),
        (|p| p.timestamp = f64::NEG_INFINITY, "tlob: timestamp -inf is not finite"),
    ];
    for (edit, message) in cases {
        let mut preds = seed_predictions();
        edit(&mut preds[2]);
        let err = e.predict_at(&preds, NOW).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.model(), Some(Tlob));
    }
    let mut preds = seed_predictions();
    preds[1].probabilities = [0.12, 0.2, 0.682]; // sums to 1.002
    let err = e.predict_at(&preds, NOW).unwrap_err();
    assert!(matches!(err, EnsembleError::ProbabilitySum { model: MpdTransformer, .. }), "{err}");
    assert_eq!(err.field(), Some("probabilities"));
    assert_eq!(
        err.to_string(),
        format!("mpd_transformer: probabilities sum to {}, not 1 (tolerance 1e-3)", 0.12 + 0.2 + 0.682)
    );

    let mut preds = seed_predictions();
    preds.push(preds[0]);
    let err = e.predict_at(&preds, NOW).unwrap_err();
    assert_eq!(err, EnsembleError::DuplicatePrediction { model: CnnLstm });
    assert_eq!(err.to_string(), "cnn_lstm: model_type has two predictions in one call");

    let small = create_ensemble_consensus(ConsensusStrategy::WeightedVoting, [(CnnLstm, 1.0)]).unwrap();
    let err = small.predict_at(&seed_predictions(), NOW).unwrap_err();
    // The first unknown model in canonical order, whatever the input order.
    assert_eq!(err, EnsembleError::UnknownModel { model: MpdTransformer });
    let mut reversed = seed_predictions();
    reversed.reverse();
    assert_eq!(small.predict_at(&reversed, NOW).unwrap_err(), err);

    let err = e.predict_at(&seed_predictions(), f64::NAN).unwrap_err();
    assert_eq!(err.field(), Some("now"));

    assert_eq!(status_json(&e), before);
    // No id was spent on a failed call.
    assert_eq!(e.predict_at(&seed_predictions(), NOW).unwrap().id, 1);
}

#[test]
fn probabilities_within_tolerance_are_renormalized() {
    let e = create_ensemble_consensus(ConsensusStrategy::WeightedVoting, [(CnnLstm, 1.0)]).unwrap();
    let raw = [0.1, 0.15, 0.7505]; // sums to 1.0005
    let r = e.predict_at(&[pred(CnnLstm, Up, 0.75, raw, 0.0)], NOW).unwrap();
    let s = 1.0005;
    for k in 0..3 {
        assert_close(r.probabilities[k], raw[k] / s, 1e-15);
    }
    assert_close(r.probabilities.iter().sum::<f64>(), 1.0, 1e-15);
    // Within 1e-3 accepted; beyond, on either side, rejected.
    assert!(e.predict_at(&[pred(CnnLstm, Up, 0.75, [0.25, 0.25, 0.5009], 0.0)], NOW).is_ok());
    assert!(e.predict_at(&[pred(CnnLstm, Up, 0.75, [0.25, 0.25, 0.5011], 0.0)], NOW).is_err());
    assert!(e.predict_at(&[pred(CnnLstm, Up, 0.75, [0.25, 0.25, 0.4989], 0.0)], NOW).is_err());
}

#[test]
fn invalid_updates_are_rejected_and_change_nothing() {
    let e = seed_ensemble();
    e.predict_at(&seed_predictions(), NOW).unwrap();
    let before = status_json(&e);
    let msg = |r: Result<ModelStatus, EnsembleError>| r.unwrap_err().to_string();
    assert_eq!(msg(e.update_weight(Tlob, -0.5)), "tlob: weight -0.5 is negative");
    assert_eq!(msg(e.update_weight(Tlob, f64::INFINITY)), "tlob: weight inf is not finite");
    assert_eq!(msg(e.update_min_confidence(CnnLstm, 1.5)), "cnn_lstm: min_confidence 1.5 is outside [0, 1]");
    assert_eq!(msg(e.update_model_performance(CnnLstm, 1.2, 1.0)), "cnn_lstm: accuracy 1.2 is outside [0, 1]");
    assert_eq!(
        msg(e.update_model_performance(MpdTransformer, 0.6, -1.0)),
        "mpd_transformer: profit_factor -1 is negative"
    );
    assert_eq!(
        msg(e.update_model_performance(MpdTransformer, 0.6, f64::NAN)),
        "mpd_transformer: profit_factor NaN is not finite"
    );
    let small = create_ensemble_consensus(ConsensusStrategy::WeightedVoting, [(CnnLstm, 1.0)]).unwrap();
    let small_before = status_json(&small);
    for err in [
        small.update_weight(Tlob, 0.5).unwrap_err(),
        small.enable_model(Tlob).unwrap_err(),
        small.disable_model(Tlob).unwrap_err(),
        small.update_model_performance(Tlob, 0.5, 1.0).unwrap_err(),
    ] {
        assert_eq!(err, EnsembleError::UnknownModel { model: Tlob });
        assert_eq!((err.model(), err.field()), (Some(Tlob), Some("model_type")));
    }
    assert_eq!(status_json(&small), small_before);
    assert_eq!(status_json(&e), before);
}

#[test]
fn invalid_configs_are_rejected_with_the_field() {
    let bad = |f: fn(&mut EnsembleConfig)| {
        let mut c = EnsembleConfig::default();
        f(&mut c);
        EnsembleConsensus::new(c).err().expect("must be rejected").to_string()
    };
    assert_eq!(bad(|c| c.model_weights[2].weight = -1.0), "tlob: weight -1 is negative");
    assert_eq!(bad(|c| c.model_weights[0].weight = f64::NAN), "cnn_lstm: weight NaN is not finite");
    assert_eq!(bad(|c| c.model_weights[1].min_confidence = 2.0), "mpd_transformer: min_confidence 2 is outside [0, 1]");
    assert_eq!(bad(|c| c.min_agreement = 1.1), "min_agreement 1.1 is outside [0, 1]");
    assert_eq!(bad(|c| c.confidence_threshold = -0.1), "confidence_threshold -0.1 is outside [0, 1]");
    assert_eq!(bad(|c| c.neutral_threshold = f64::NAN), "neutral_threshold NaN is not finite");
    assert_eq!(bad(|c| c.performance_decay = 1.5), "performance_decay 1.5 is outside [0, 1]");
    assert_eq!(bad(|c| c.max_prediction_age_s = Some(-1.0)), "max_prediction_age_s -1 is negative");
    assert_eq!(
        bad(|c| c.model_weights[2].model_type = CnnLstm),
        "cnn_lstm: model_type is named twice in model_weights"
    );
    let many = EnsembleConfig {
        model_weights: vec![ModelWeight::new(Tlob, 1.0); MAX_MODELS + 1],
        ..EnsembleConfig::default()
    };
    assert!(matches!(EnsembleConsensus::new(many), Err(EnsembleError::TooManyModels { .. })));
}

// ---------------------------------------------------------------------------
// Mutators and status.

#[test]
fn status_json_is_the_specs() {
    let e = seed_ensemble();
    e.update_model_performance(CnnLstm, 0.72, 1.8).unwrap();
    let status = serde_json::to_value(e.get_status()).unwrap();
    assert_eq!(
        status,
        json!({"strategy": "weighted_voting", "total_models": 3, "enabled_models": 3,
            "models": {
                "cnn_lstm": {"enabled": true, "weight": 0.4, "min_confidence": 0.6,
                    "accuracy": 0.72, "profit_factor": 1.8, "performance_reports": 1},
                "mpd_transformer": {"enabled": true, "weight": 0.35, "min_confidence": 0.55,
                    "accuracy": null, "profit_factor": null, "performance_reports": 0},
                "tlob": {"enabled": true, "weight": 0.25, "min_confidence": 0.5,
                    "accuracy": null, "profit_factor": null, "performance_reports": 0}},
            "last_prediction": null})
    );
    e.disable_model(Tlob).unwrap();
    e.update_weight(CnnLstm, 0.5).unwrap();
    e.set_strategy(ConsensusStrategy::Majority);
    let first = e.predict_at(&seed_predictions(), NOW).unwrap();
    let second = e.predict_at(&seed_predictions()[..1], NOW + 1.0).unwrap();
    let s = e.get_status();
    assert_eq!(s.enabled_models, 2);
    assert_eq!(s.strategy, ConsensusStrategy::Majority);
    assert_eq!(s.models[&CnnLstm].weight, 0.5);
    assert!(!s.models[&Tlob].enabled);
    assert_eq!(s.last_prediction.as_ref(), Some(&second));
    assert_ne!(first, second);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["last_prediction"]["id"], json!(second.id));
    assert_eq!(v["strategy"], json!("majority"));
}

#[test]
fn result_json_shape_and_round_trip() {
    let e = with_config(|c| c.model_weights[2].min_confidence = 0.6);
    let r = e.predict_at(&seed_predictions(), NOW).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut expected = vec![
        "id",
        "timestamp",
        "strategy",
        "direction",
        "confidence",
        "meta_confidence",
        "agreement_score",
        "weighted_agreement",
        "expected_return",
        "should_trade",
        "reason",
        "probabilities",
        "model_contributions",
        "eligible_models",
        "excluded_models",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    expected.sort();
    assert_eq!(keys_sorted, expected);
    assert_eq!(v["direction"], json!("up"));
    assert_eq!(v["strategy"], json!("weighted_voting"));
    assert_eq!(v["reason"], json!(null));
    assert_eq!(v["eligible_models"], json!(["cnn_lstm", "mpd_transformer"]));
    assert_eq!(v["excluded_models"], json!({"tlob": "low_confidence"}));
    assert_eq!(
        v["model_contributions"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["cnn_lstm", "mpd_transformer"]
    );
    // serde_json parses floats to within an ulp unless its `float_roundtrip`
    // feature is on; everything else must come back exactly.
    let back: EnsembleResult = serde_json::from_value(v).unwrap();
    assert_round_trip(&back, &r);
    let text = serde_json::to_string(&r).unwrap();
    let back: EnsembleResult = serde_json::from_str(&text).unwrap();
    assert_round_trip(&back, &r);

    let r = with_config(|c| c.min_agreement = 0.9).predict_at(&seed_predictions(), NOW).unwrap();
    assert_eq!(serde_json::to_value(&r).unwrap()["reason"], json!("low_agreement"));
}

#[track_caller]
fn assert_round_trip(back: &EnsembleResult, r: &EnsembleResult) {
    let ulp = |a: f64, b: f64| (a - b).abs() <= 2.0 * f64::EPSILON * a.abs().max(b.abs());
    let floats = |x: &EnsembleResult| {
        let mut v = vec![
            x.timestamp,
            x.confidence,
            x.meta_confidence,
            x.agreement_score,
            x.weighted_agreement,
            x.expected_return,
        ];
        v.extend(x.probabilities);
        v.extend(x.model_contributions.iter().map(|c| c.1));
        v
    };
    let (a, b) = (floats(back), floats(r));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| ulp(*x, *y)), "{a:?} vs {b:?}");
    assert_eq!(
        (back.id, back.strategy, back.direction, back.should_trade, back.reason),
        (r.id, r.strategy, r.direction, r.should_trade, r.reason)
    );
    assert_eq!(
        back.model_contributions.iter().map(|c| c.0).collect::<Vec<_>>(),
        r.model_contributions.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert_eq!((&back.eligible_models, &back.excluded_models), (&r.eligible_models, &r.excluded_models));
}

#[test]
fn enum_json_strings_are_the_specs() {
    let s = |v: serde_json::Value| v.as_str().unwrap().to_string();
    assert_eq!([Down, Neutral, Up].map(|d| s(json!(d))), ["down", "neutral", "up"].map(String::from));
    assert_eq!((Down as u8, Neutral as u8, Up as u8), (0, 1, 2));
    assert_eq!(
        ModelType::ALL.iter().map(|m| s(json!(m))).collect::<Vec<_>>(),
        vec!["cnn_lstm", "mpd_transformer", "tlob"]
    );
    assert_eq!(
        ConsensusStrategy::ALL.map(|m| s(json!(m))),
        ["weighted_voting", "unanimous", "majority", "confidence_based", "adaptive"].map(String::from)
    );
    assert_eq!(ConsensusStrategy::default(), ConsensusStrategy::WeightedVoting);
    for r in [
        (json!(ExclusionReason::ZeroWeight), "zero_weight"),
        (json!(DecisionReason::NoEligiblePredictions), "no_eligible_predictions"),
        (json!(DecisionReason::ZeroTotalWeight), "zero_total_weight"),
        (json!(DecisionReason::NotUnanimous), "not_unanimous"),
        (json!(DecisionReason::NoMajority), "no_majority"),
    ] {
        assert_eq!(s(r.0), r.1);
    }
    let p: ModelPrediction = serde_json::from_str(
        r#"{"model_type": "tlob", "direction": "neutral", "confidence": 0.55,
            "probabilities": [0.2, 0.55, 0.25], "expected_return": 0.0001, "timestamp": 1.5}"#,
    )
    .unwrap();
    assert_eq!(p, ModelPrediction { timestamp: 1.5, ..seed_predictions()[2] });
    assert!(serde_json::from_str::<ModelPrediction>(
        r#"{"model_type": "lstm", "direction": "up", "confidence": 0.5,
            "probabilities": [0.2, 0.5, 0.3], "expected_return": 0, "timestamp": 0}"#
    )
    .is_err());
}

#[test]
fn config_json_overrides_the_defaults() {
    let c = EnsembleConfig::from_json_str(
        r#"{"strategy": "adaptive", "min_agreement": 0.5,
            "model_weights": [{"model_type": "tlob", "weight": 1.0},
                              {"model_type": "cnn_lstm", "weight": 2.0, "enabled": false,
                               "min_confidence": 0.7}],
            "max_prediction_age_s": 2.5}"#,
    )
    .unwrap();
    assert_eq!(c.strategy, ConsensusStrategy::Adaptive);
    assert_eq!(c.min_agreement, 0.5);
    assert_eq!(c.confidence_threshold, 0.5); // default kept
    assert_eq!(c.max_prediction_age_s, Some(2.5));
    assert_eq!(c.model_weights[0], ModelWeight::new(Tlob, 1.0));
    assert_eq!(
        c.model_weights[1],
        ModelWeight { model_type: CnnLstm, weight: 2.0, enabled: false, min_confidence: 0.7 }
    );
    // The ensemble keeps them in canonical order.
    let e = EnsembleConsensus::new(c.clone()).unwrap();
    assert_eq!(e.config().model_weights[0].model_type, CnnLstm);
    // A round trip through JSON.
    assert_eq!(EnsembleConfig::from_json_str(&serde_json::to_string(&c).unwrap()).unwrap(), c);
    assert_eq!(EnsembleConfig::from_json_str("{}").unwrap(), EnsembleConfig::default());

    for (json, needle) in [
        (r#"{"min_agreemnt": 0.5}"#, "min_agreemnt"),
        (r#"{"strategy": "plurality"}"#, "plurality"),
        (r#"{"neutral_threshold": 2}"#, "neutral_threshold 2 is outside [0, 1]"),
        (
            r#"{"model_weights": [{"model_type": "tlob", "weight": 1}, {"model_type": "tlob", "weight": 2}]}"#,
            "tlob: model_type is named twice",
        ),
        (r#"{"model_weights": [{"model_type": "tlob", "weight": -2}]}"#, "tlob: weight -2 is negative"),
    ] {
        let err = EnsembleConfig::from_json_str(json).unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn config_files_are_read_and_their_errors_name_the_path() {
    let dir = std::env::temp_dir().join(format!("quorum-ensemble-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("ensemble.json");
    std::fs::write(&good, r#"{"strategy": "majority"}"#).unwrap();
    assert_eq!(EnsembleConfig::from_file(&good).unwrap().strategy, ConsensusStrategy::Majority);
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{not json").unwrap();
    let err = EnsembleConfig::from_file(&broken).unwrap_err().to_string();
    assert!(err.contains("broken.json"), "{err}");
    let err = EnsembleConfig::from_file(dir.join("missing.json")).unwrap_err().to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_into_reuses_the_result_and_matches_predict_at() {
    let e = seed_ensemble();
    let mut r = EnsembleResult::empty(MAX_MODELS);
    e.predict_into(&seed_predictions(), NOW, &mut r).unwrap();
    let fresh = seed_ensemble().predict_at(&seed_predictions(), NOW).unwrap();
    assert_eq!(r, fresh);
    // An error leaves it as it was.
    let mut bad = seed_predictions();
    bad[0].confidence = 2.0;
    let kept = r.clone();
    assert!(e.predict_into(&bad, NOW, &mut r).is_err());
    assert_eq!(r, kept);
    e.predict_into(&seed_predictions()[..1], NOW, &mut r).unwrap();
    assert_eq!(r.id, 2);
    assert_eq!(r.eligible_models, vec![CnnLstm]);
}

#[test]
fn predict_uses_the_system_clock() {
    let e = with_config(|c| c.max_prediction_age_s = Some(3600.0));
    let mut preds = seed_predictions();
    let now = unix_now_s();
    for p in &mut preds {
        p.timestamp = now;
    }
    let r = e.predict(&preds).unwrap();
    assert_eq!(r.eligible_models.len(), 3);
    // Hour-old stamps are stale by the system clock.
    for p in &mut preds {
        p.timestamp = now - 7200.0;
    }
    assert_eq!(e.predict(&preds).unwrap().reason, Some(DecisionReason::NoEligiblePredictions));
}

// ---------------------------------------------------------------------------
// The adapter.

#[test]
fn adapter_turns_raw_outputs_into_a_prediction() {
    let adapter = PredictionAdapter::default();
    assert_eq!(adapter.return_scale(), 10.0);
    let raw = RawModelOutput {
        direction_logits: [0.0, 0.0, 3f32.ln()],
        confidence: 0.75,
        expected_return: 2.0, // 20 bps / 10
    };
    let p = adapter.to_prediction(Tlob, &raw, NOW).unwrap();
    assert_eq!(p.model_type, Tlob);
    assert_eq!(p.direction, Up);
    assert_eq!(p.confidence, 0.75);
    for (k, expected) in [0.2, 0.2, 0.6].into_iter().enumerate() {
        assert_close(p.probabilities[k], expected, 1e-7); // ln 3 in f32
    }
    assert_close(p.expected_return, 0.002, 1e-15);
    assert_eq!(p.timestamp, NOW);
    // Another scale; large logits do not overflow.
    let p = PredictionAdapter::new(4.0)
        .unwrap()
        .to_prediction(
            CnnLstm,
            &RawModelOutput { direction_logits: [1000.0, 999.0, 998.0], confidence: 0.5, expected_return: -5.0 },
            NOW,
        )
        .unwrap();
    assert_eq!(p.direction, Down);
    let e = (1.0f64, (-1.0f64).exp(), (-2.0f64).exp());
    assert_close(p.probabilities[0], e.0 / (e.0 + e.1 + e.2), 1e-15);
    assert_close(p.expected_return, -0.002, 1e-15);
    // Tied logits: NEUTRAL.
    let p = adapter
        .to_prediction(
            MpdTransformer,
            &RawModelOutput { direction_logits: [2.0, 1.0, 2.0], confidence: 0.5, expected_return: 0.0 },
            NOW,
        )
        .unwrap();
    assert_eq!(p.direction, Neutral);
    // Its predictions feed the consensus as they are.
    let preds: Vec<_> =
        [CnnLstm, MpdTransformer, Tlob].into_iter().map(|m| adapter.to_prediction(m, &raw, NOW).unwrap()).collect();
    let r = plain(ConsensusStrategy::WeightedVoting, [1.0, 1.0, 1.0]).predict_at(&preds, NOW).unwrap();
    assert_eq!(r.direction, Up);
    assert_close(r.meta_confidence, 1.0, 1e-15);
}

#[test]
fn adapter_errors_name_the_model_and_output() {
    let adapter = PredictionAdapter::default();
    let ok = RawModelOutput { direction_logits: [0.0; 3], confidence: 0.5, expected_return: 0.0 };
    let err = |raw: RawModelOutput| adapter.to_prediction(Tlob, &raw, NOW).unwrap_err().to_string();
    assert_eq!(
        err(RawModelOutput { direction_logits: [0.0, f32::NAN, 0.0], ..ok }),
        "tlob: direction_logits[1] NaN is not finite"
    );
    assert_eq!(err(RawModelOutput { confidence: 1.5, ..ok }), "tlob: confidence 1.5 is outside [0, 1]");
    assert_eq!(err(RawModelOutput { expected_return: f32::INFINITY, ..ok }), "tlob: expected_return inf is not finite");
    assert_eq!(PredictionAdapter::new(0.0).unwrap_err().to_string(), "return_scale 0 is not > 0");
    assert!(PredictionAdapter::new(f64::NAN).is_err());
}
