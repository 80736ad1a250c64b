//! Every model, at the default configs and at non-default ones, against the
//! PyTorch goldens in tests/fixtures/models (models.md's tolerances).

mod common;

use common::{assert_close, check_golden, golden, ALL_CASES};
use quorum::model::{param_specs, ModelConfig, ModelKind};
use quorum::{Cpu, Inputs};

fn check_case(name: &str) {
    let worst = check_golden(&Cpu::new(), name);
    eprintln!("{name}: worst error / tolerance = {worst:.3}");
}

common::golden_case_tests!(check_case);

#[test]
fn every_case_is_tested() {
    assert_eq!(ALL_CASES.len(), 10);
    for c in ALL_CASES {
        assert!(common::fixture(&format!("{c}.safetensors")).exists(), "{c}");
    }
}

#[test]
fn parameter_counts_at_defaults_match_the_spec() {
    let count = |k| param_specs(&ModelConfig::default_for(k)).count();
    assert_eq!(count(ModelKind::MpdTransformer), 4_789_253);
    assert_eq!(count(ModelKind::Tlob), 1_480_815);
    assert_eq!(count(ModelKind::CnnLstm), 1_015_813);
}

/// Row `b` of a `(batch, …)` tensor as a batch of one.
fn sample(t: &quorum::Tensor, b: usize) -> quorum::Tensor {
    let per = t.numel() / t.shape[0];
    let mut shape = t.shape.clone();
    shape[0] = 1;
    quorum::Tensor::new(shape, t.data[b * per..(b + 1) * per].to_vec()).unwrap()
}

#[test]
fn every_case_run_one_sample_at_a_time_matches_the_goldens() {
    // Batch 1 takes its own code paths (the split LSTM recurrence, one
    // attention task per head): each sample alone must match PyTorch too.
    let be = Cpu::new();
    for name in ALL_CASES {
        let g = golden(name);
        let mut model = g.model(&be);
        let batch = g.inputs.values().next().unwrap().shape[0];
        for b in 0..batch {
            let one: std::collections::BTreeMap<&str, quorum::Tensor> =
                g.inputs.iter().map(|(k, t)| (k.as_str(), sample(t, b))).collect();
            let inputs = Inputs { features: one.get("features"), lob: one.get("lob"), aux: one.get("aux") };
            let out = model.forward(&be, &inputs).unwrap();
            for (k, want) in &g.outputs {
                assert_close(&format!("{name}[{b}]"), k, &out[k], &sample(want, b), false);
            }
        }
    }
}
