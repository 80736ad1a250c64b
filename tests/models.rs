//! Every model, at the default configs and at non-default ones, against the
//! PyTorch goldens in tests/fixtures/models (models.md's tolerances).

mod common;

use common::{assert_close, golden, ALL_CASES};
use quorum::model::{param_specs, ModelConfig, ModelKind};
use quorum::{Cpu, Inputs};

fn check_case(name: &str) {
    let g = golden(name);
    let be = Cpu::new();
    let mut model = g.model(&be);
    assert_eq!(model.kind(), g.kind);
    let out = model.forward(&be, &g.inputs()).unwrap();
    let got: Vec<&String> = out.keys().collect();
    let want: Vec<&String> = g.outputs.keys().collect();
    assert_eq!(got, want, "{name}: output names");
    let mut worst = 0f64;
    for (k, want) in &g.outputs {
        worst = worst.max(assert_close(name, k, &out[k], want, false));
    }
    eprintln!("{name}: worst error / tolerance = {worst:.3}");
}

#[test]
fn mpd_default() {
    check_case("mpd_default");
}
#[test]
fn mpd_small_cls() {
    check_case("mpd_small_cls");
}
#[test]
fn mpd_small_without_cls_with_normalizer() {
    check_case("mpd_small_nocls_norm");
}
#[test]
fn tlob_default() {
    check_case("tlob_default");
}
#[test]
fn tlob_small_without_aux_two_horizons() {
    check_case("tlob_small_noaux_2h");
}
#[test]
fn tlob_small_with_aux_and_aux_normalizer() {
    check_case("tlob_small_aux_norm");
}
#[test]
fn tlob_with_aux_weights_run_without_aux() {
    check_case("tlob_small_aux_unused");
}
#[test]
fn cnn_lstm_default() {
    check_case("cnn_lstm_default");
}
#[test]
fn cnn_lstm_one_layer() {
    check_case("cnn_lstm_small_1layer");
}
#[test]
fn cnn_lstm_three_layers_with_normalizer() {
    check_case("cnn_lstm_small_3layer_norm");
}

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
