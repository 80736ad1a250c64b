//! Property tests of the consensus (proptest): contributions sum to 1,
//! confidence and meta_confidence in [0, 1], the input order never changes a
//! result, and scaling every weight by a positive constant does not either.

use proptest::prelude::*;
use quorum::ensemble::*;

const NOW: f64 = 1_764_000_000.0;
const MODELS: [ModelType; 3] = [ModelType::CnnLstm, ModelType::MpdTransformer, ModelType::Tlob];

#[derive(Debug, Clone)]
struct Case {
    config: EnsembleConfig,
    /// Performance reports (accuracy, profit factor) per model, in config order.
    reports: Vec<Option<(f64, f64)>>,
    predictions: Vec<ModelPrediction>,
    /// The same predictions in another order.
    shuffled: Vec<ModelPrediction>,
}

fn direction() -> impl Strategy<Value = Direction> {
    prop::sample::select(Direction::ALL.to_vec())
}

fn prediction(model_type: ModelType) -> impl Strategy<Value = ModelPrediction> {
    (direction(), 0.0..=1.0f64, [1e-6..1.0f64, 1e-6..1.0f64, 1e-6..1.0f64], -0.01..0.01f64).prop_map(
        move |(direction, confidence, raw, expected_return)| {
            let s = raw[0] + raw[1] + raw[2];
            ModelPrediction {
                model_type,
                direction,
                confidence,
                probabilities: raw.map(|x| x / s),
                expected_return,
                timestamp: NOW,
            }
        },
    )
}

fn model_weight(model_type: ModelType) -> impl Strategy<Value = ModelWeight> {
    (prop_oneof![1 => Just(0.0), 6 => 0.01..2.0f64], prop::bool::weighted(0.85), 0.0..0.5f64)
        .prop_map(move |(weight, enabled, min_confidence)| ModelWeight { model_type, weight, enabled, min_confidence })
}

fn case() -> impl Strategy<Value = Case> {
    let per_model = MODELS.map(|m| {
        (model_weight(m), prop::option::of((0.0..=1.0f64, 0.0..4.0f64)), prop::option::weighted(0.85, prediction(m)))
    });
    (prop::sample::select(ConsensusStrategy::ALL.to_vec()), per_model, 0.0..0.3f64, 0.0..0.8f64, 0.0..1.0f64)
        .prop_flat_map(|(strategy, per_model, neutral_threshold, confidence_threshold, min_agreement)| {
            let config = EnsembleConfig {
                strategy,
                model_weights: per_model.iter().map(|m| m.0).collect(),
                min_agreement,
                confidence_threshold,
                neutral_threshold,
                ..EnsembleConfig::default()
            };
            let reports: Vec<_> = per_model.iter().map(|m| m.1).collect();
            let predictions: Vec<_> = per_model.iter().filter_map(|m| m.2).collect();
            (Just(config), Just(reports), Just(predictions.clone()), Just(predictions).prop_shuffle())
        })
        .prop_map(|(config, reports, predictions, shuffled)| Case { config, reports, predictions, shuffled })
}

fn build(config: &EnsembleConfig, reports: &[Option<(f64, f64)>]) -> EnsembleConsensus {
    let e = EnsembleConsensus::new(config.clone()).unwrap();
    for (mw, report) in config.model_weights.iter().zip(reports) {
        if let Some((acc, pf)) = report {
            e.update_model_performance(mw.model_type, *acc, *pf).unwrap();
        }
    }
    e
}

/// Bit-for-bit equality: the JSON text distinguishes every double (−0 too).
fn same_bits(a: &EnsembleResult, b: &EnsembleResult) -> bool {
    a == b && serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
}

proptest! {
    // No regression files: failures are reported, and fixed as unit tests.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn results_are_well_formed(case in case()) {
        let e = build(&case.config, &case.reports);
        let r = e.predict_at(&case.predictions, NOW).unwrap();
        prop_assert!((0.0..=1.0).contains(&r.confidence), "confidence {}", r.confidence);
        prop_assert!((0.0..=1.0).contains(&r.meta_confidence), "meta {}", r.meta_confidence);
        prop_assert!((0.0..=1.0).contains(&r.agreement_score));
        prop_assert!((0.0..=1.0).contains(&r.weighted_agreement));
        prop_assert_eq!(r.eligible_models.len() + r.excluded_models.len(), case.predictions.len());
        match r.reason {
            Some(DecisionReason::NoEligiblePredictions) | Some(DecisionReason::ZeroTotalWeight) => {
                prop_assert!(r.model_contributions.is_empty());
                prop_assert_eq!(r.confidence, 0.0);
                prop_assert_eq!(r.direction, Direction::Neutral);
            }
            _ => {
                prop_assert_eq!(r.model_contributions.len(), r.eligible_models.len());
                let sum: f64 = r.model_contributions.iter().map(|c| c.1).sum();
                prop_assert!((sum - 1.0).abs() <= 1e-12, "contributions sum to {}", sum);
                for &(_, c) in &r.model_contributions {
                    prop_assert!((0.0..=1.0).contains(&c), "contribution {}", c);
                }
                let p_sum: f64 = r.probabilities.iter().sum();
                prop_assert!((p_sum - 1.0).abs() <= 1e-12, "P sums to {}", p_sum);
                prop_assert_eq!(r.confidence, r.probabilities[r.direction.index()].min(1.0));
                let returns = case.predictions.iter()
                    .filter(|p| r.eligible_models.contains(&p.model_type))
                    .map(|p| p.expected_return);
                let (lo, hi) = returns.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
                prop_assert!(r.expected_return >= lo - 1e-15 && r.expected_return <= hi + 1e-15);
            }
        }
        if r.should_trade {
            prop_assert!(r.direction != Direction::Neutral);
            prop_assert!(r.confidence >= case.config.confidence_threshold);
            prop_assert!(r.agreement_score >= case.config.min_agreement);
            prop_assert_eq!(r.reason, None);
        } else {
            prop_assert!(r.reason.is_some());
        }
    }

    #[test]
    fn input_order_never_changes_a_result(case in case()) {
        let a = build(&case.config, &case.reports).predict_at(&case.predictions, NOW).unwrap();
        let b = build(&case.config, &case.reports).predict_at(&case.shuffled, NOW).unwrap();
        prop_assert!(same_bits(&a, &b), "{:?}\n{:?}", a, b);
    }

    #[test]
    fn scaling_weights_by_a_power_of_two_changes_nothing(case in case(), k in -20i32..=20) {
        let c = 2f64.powi(k);
        let mut scaled = case.config.clone();
        for m in &mut scaled.model_weights {
            m.weight *= c;
        }
        let a = build(&case.config, &case.reports).predict_at(&case.predictions, NOW).unwrap();
        let b = build(&scaled, &case.reports).predict_at(&case.predictions, NOW).unwrap();
        prop_assert!(same_bits(&a, &b), "{:?}\n{:?}", a, b);
    }

    /// Any positive constant: the invariance (docs/consensus.md) is exact in real
    /// arithmetic; in floating point the figures move by rounding only
    /// (bounded here by 1e-12), and the decision is the same unless the base
    /// case sits within 1e-9 of a tie or a threshold, which is skipped.
    #[test]
    fn scaling_weights_by_any_constant_changes_only_rounding(case in case(), c in 1e-3..1e3f64) {
        let mut scaled = case.config.clone();
        for m in &mut scaled.model_weights {
            m.weight *= c;
        }
        let a = build(&case.config, &case.reports).predict_at(&case.predictions, NOW).unwrap();
        let b = build(&scaled, &case.reports).predict_at(&case.predictions, NOW).unwrap();
        let p = a.probabilities;
        let margins = [
            (p[0] - p[1]).abs(),
            (p[1] - p[2]).abs(),
            (p[0] - p[2]).abs(),
            ((p[2] - p[0]).abs() - case.config.neutral_threshold).abs(),
            (a.confidence - case.config.confidence_threshold).abs(),
        ];
        let weighted = matches!(
            case.config.strategy,
            ConsensusStrategy::WeightedVoting | ConsensusStrategy::ConfidenceBased | ConsensusStrategy::Adaptive
        );
        prop_assume!(!weighted || a.model_contributions.is_empty() || margins.iter().all(|&m| m > 1e-9));
        if case.config.strategy == ConsensusStrategy::Majority {
            // Majority ignores the weights: exactly the same result.
            prop_assert!(same_bits(&a, &b));
        }
        prop_assert_eq!(a.direction, b.direction);
        prop_assert_eq!(a.should_trade, b.should_trade);
        prop_assert_eq!(a.reason, b.reason);
        prop_assert_eq!(&a.eligible_models, &b.eligible_models);
        prop_assert_eq!(&a.excluded_models, &b.excluded_models);
        prop_assert_eq!(a.agreement_score, b.agreement_score);
        let close = |x: f64, y: f64, scale: f64| (x - y).abs() <= 1e-12 * scale;
        for k in 0..3 {
            prop_assert!(close(a.probabilities[k], b.probabilities[k], 1.0));
        }
        prop_assert!(close(a.confidence, b.confidence, 1.0));
        prop_assert!(close(a.meta_confidence, b.meta_confidence, 1.0));
        prop_assert!(close(a.weighted_agreement, b.weighted_agreement, 1.0));
        let max_r = case.predictions.iter().map(|p| p.expected_return.abs()).fold(0.0, f64::max);
        prop_assert!(close(a.expected_return, b.expected_return, max_r));
        prop_assert_eq!(a.model_contributions.len(), b.model_contributions.len());
        for (x, y) in a.model_contributions.iter().zip(&b.model_contributions) {
            prop_assert_eq!(x.0, y.0);
            prop_assert!(close(x.1, y.1, 1.0), "{} vs {}", x.1, y.1);
        }
    }

    #[test]
    fn adapter_predictions_are_valid_consensus_input(
        logits in [-50.0..50.0f32, -50.0..50.0f32, -50.0..50.0f32],
        confidence in 0.0..=1.0f32,
        head in -100.0..100.0f32,
        scale in 0.1..100.0f64,
    ) {
        let adapter = PredictionAdapter::new(scale).unwrap();
        let raw = RawModelOutput { direction_logits: logits, confidence, expected_return: head };
        let p = adapter.to_prediction(ModelType::Tlob, &raw, NOW).unwrap();
        prop_assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() <= 1e-12);
        let best = p.probabilities.iter().cloned().fold(f64::MIN, f64::max);
        if p.direction != Direction::Neutral {
            prop_assert_eq!(p.probabilities[p.direction.index()], best);
        }
        prop_assert!((p.expected_return - f64::from(head) * scale / 10_000.0).abs() <= 1e-15);
        let e = create_ensemble_consensus(ConsensusStrategy::WeightedVoting, [(ModelType::Tlob, 1.0)]).unwrap();
        let r = e.predict_at(&[p], NOW).unwrap();
        // Alone, its distribution is P (renormalized by the consensus when
        // the softmax's sum is off 1 by rounding).
        for k in 0..3 {
            prop_assert!((r.probabilities[k] - p.probabilities[k]).abs() <= 1e-15);
        }
    }
}
