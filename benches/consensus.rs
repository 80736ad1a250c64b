//! The consensus of 3 models (docs/consensus.md's worked example): target ≤ 1 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::ensemble::*;

const NOW: f64 = 1_764_000_000.0;

fn predictions() -> Vec<ModelPrediction> {
    let p = |model_type, direction, confidence, probabilities, expected_return| ModelPrediction {
        model_type,
        direction,
        confidence,
        probabilities,
        expected_return,
        timestamp: NOW,
    };
    vec![
        p(ModelType::CnnLstm, Direction::Up, 0.75, [0.1, 0.15, 0.75], 0.002),
        p(ModelType::MpdTransformer, Direction::Up, 0.68, [0.12, 0.2, 0.68], 0.0018),
        p(ModelType::Tlob, Direction::Neutral, 0.55, [0.2, 0.55, 0.25], 0.0001),
    ]
}

fn consensus(c: &mut Criterion) {
    let preds = predictions();
    let e = EnsembleConsensus::new(EnsembleConfig::default()).unwrap();
    c.bench_function("consensus_3_models/predict_at/weighted_voting", |b| {
        b.iter(|| e.predict_at(black_box(&preds), black_box(NOW)).unwrap())
    });
    c.bench_function("consensus_3_models/predict/weighted_voting_system_clock", |b| {
        b.iter(|| e.predict(black_box(&preds)).unwrap())
    });
    let mut out = EnsembleResult::empty(MAX_MODELS);
    c.bench_function("consensus_3_models/predict_into/weighted_voting", |b| {
        b.iter(|| e.predict_into(black_box(&preds), black_box(NOW), &mut out).unwrap())
    });
    let adaptive =
        EnsembleConsensus::new(EnsembleConfig { strategy: ConsensusStrategy::Adaptive, ..EnsembleConfig::default() })
            .unwrap();
    adaptive.update_model_performance(ModelType::CnnLstm, 0.72, 1.8).unwrap();
    c.bench_function("consensus_3_models/predict_at/adaptive", |b| {
        b.iter(|| adaptive.predict_at(black_box(&preds), black_box(NOW)).unwrap())
    });
}

criterion_group!(benches, consensus);
criterion_main!(benches);
