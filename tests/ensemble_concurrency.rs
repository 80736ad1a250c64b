//! Many threads predicting while others change weights, strategies and
//! enabled flags, record outcomes and read the status: no panic, unique ids,
//! and every result equal, bit for bit, to the result of one of the states
//! the writers can produce.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use quorum::ensemble::*;
use ModelType::{CnnLstm, MpdTransformer, Tlob};

const NOW: f64 = 1_764_000_000.0;

type Writer = Box<dyn Fn(usize, &EnsembleConsensus) + Send>;
const STRATEGIES: [ConsensusStrategy; 4] = [
    ConsensusStrategy::WeightedVoting,
    ConsensusStrategy::Majority,
    ConsensusStrategy::ConfidenceBased,
    ConsensusStrategy::Unanimous,
];
const CNN_WEIGHTS: [f64; 3] = [0.4, 0.1, 0.8];
const PREDICTORS: usize = 3;
const PREDICTS_EACH: usize = 3_000;

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
        p(CnnLstm, Direction::Up, 0.75, [0.1, 0.15, 0.75], 0.002),
        p(MpdTransformer, Direction::Down, 0.7, [0.6, 0.2, 0.2], -0.001),
        p(Tlob, Direction::Up, 0.6, [0.2, 0.3, 0.5], 0.001),
    ]
}

fn fingerprint(r: &EnsembleResult) -> String {
    let mut r = r.clone();
    r.id = 0;
    serde_json::to_string(&r).unwrap()
}

fn base() -> EnsembleConsensus {
    create_ensemble_consensus(ConsensusStrategy::WeightedVoting, [(CnnLstm, 0.4), (MpdTransformer, 0.35), (Tlob, 0.25)])
        .unwrap()
}

/// The result of every state the writers can leave, keyed by the state.
fn expected_results() -> HashMap<(ConsensusStrategy, u64, bool), String> {
    let mut out = HashMap::new();
    for s in STRATEGIES {
        for w in CNN_WEIGHTS {
            for enabled in [true, false] {
                let e = base();
                e.set_strategy(s);
                e.update_weight(CnnLstm, w).unwrap();
                e.set_enabled(Tlob, enabled).unwrap();
                let r = e.predict_at(&predictions(), NOW).unwrap();
                out.insert((s, w.to_bits(), enabled), fingerprint(&r));
            }
        }
    }
    out
}

#[test]
fn concurrent_predictions_and_updates_stay_consistent() {
    let expected = Arc::new(expected_results());
    let possible: Arc<HashSet<String>> = Arc::new(expected.values().cloned().collect());
    assert!(possible.len() >= 12, "the states must give distinct results to test anything");
    let ensemble = Arc::new(base());
    let writers = 4;
    let barrier = Arc::new(Barrier::new(PREDICTORS + writers));
    let done = Arc::new(AtomicBool::new(false));

    let mut predictors = Vec::new();
    for _ in 0..PREDICTORS {
        let (e, possible, barrier) = (ensemble.clone(), possible.clone(), barrier.clone());
        predictors.push(thread::spawn(move || {
            let preds = predictions();
            barrier.wait();
            let mut ids = Vec::with_capacity(PREDICTS_EACH);
            let mut seen = HashSet::new();
            for _ in 0..PREDICTS_EACH {
                let r = e.predict_at(&preds, NOW).unwrap();
                let f = fingerprint(&r);
                assert!(possible.contains(&f), "a result of no state: {f}");
                seen.insert(f);
                ids.push(r.id);
            }
            (ids, seen)
        }));
    }
    let spawn_writer = |f: Writer| {
        let (e, barrier, done) = (ensemble.clone(), barrier.clone(), done.clone());
        thread::spawn(move || {
            barrier.wait();
            // At least once, then until the predictors are done.
            let mut i = 0;
            loop {
                f(i, &e);
                i += 1;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                thread::yield_now();
            }
        })
    };
    let writer_threads = vec![
        spawn_writer(Box::new(|i, e| e.set_strategy(STRATEGIES[i % STRATEGIES.len()]))),
        spawn_writer(Box::new(|i, e| {
            e.update_weight(CnnLstm, CNN_WEIGHTS[i % CNN_WEIGHTS.len()]).unwrap();
        })),
        spawn_writer(Box::new(|i, e| {
            e.set_enabled(Tlob, i % 2 == 0).unwrap();
        })),
        // Outcomes and performance reports change the tracked figures, which
        // none of these strategies reads; the status is read meanwhile.
        spawn_writer(Box::new(|i, e| {
            match e.record_outcome(i as u64 + 1, Direction::Up, 0.001) {
                Ok(()) | Err(EnsembleError::UnknownResult { .. }) => {}
                Err(err) => panic!("{err}"),
            }
            e.update_model_performance(MpdTransformer, 0.6, 1.2).unwrap();
            let status = e.get_status();
            assert_eq!(status.total_models, 3);
            serde_json::to_string(&status).unwrap();
        })),
    ];

    let mut all_ids = Vec::new();
    let mut seen = HashSet::new();
    for p in predictors {
        let (ids, s) = p.join().expect("a predictor panicked");
        all_ids.extend(ids);
        seen.extend(s);
    }
    done.store(true, Ordering::Relaxed);
    for w in writer_threads {
        w.join().expect("a writer panicked");
    }

    // Ids: unique, and exactly 1..=N.
    all_ids.sort_unstable();
    let n = PREDICTORS * PREDICTS_EACH;
    assert_eq!(all_ids, (1..=n as u64).collect::<Vec<_>>());
    let status = ensemble.get_status();
    assert_eq!(status.last_prediction.as_ref().map(|r| r.id), Some(n as u64));
    // The final state's result is the one computed for that state.
    let config = ensemble.config();
    let key = (config.strategy, config.model_weights[0].weight.to_bits(), config.model_weights[2].enabled);
    let r = ensemble.predict_at(&predictions(), NOW).unwrap();
    assert_eq!(fingerprint(&r), expected[&key]);
    eprintln!("distinct states observed by the predictors: {}", seen.len());
}
