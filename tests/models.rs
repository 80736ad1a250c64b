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

#[test]
fn batch_results_equal_single_sample_results() {
    // A sample's outputs must not depend on the rest of its batch.
    let g = golden("tlob_small_aux_norm");
    let be = Cpu::new();
    let mut model = g.model(&be);
    let full = model.forward(&be, &g.inputs()).unwrap();
    let lob = &g.inputs["lob"];
    let aux = &g.inputs["aux"];
    let per_lob = lob.numel() / lob.shape[0];
    let per_aux = aux.numel() / aux.shape[0];
    for b in 0..lob.shape[0] {
        let mut ls = lob.shape.clone();
        ls[0] = 1;
        let one_lob = quorum::Tensor::new(ls, lob.data[b * per_lob..(b + 1) * per_lob].to_vec()).unwrap();
        let one_aux = quorum::Tensor::new(vec![1, per_aux], aux.data[b * per_aux..(b + 1) * per_aux].to_vec()).unwrap();
        let out = model.forward(&be, &Inputs { lob: Some(&one_lob), aux: Some(&one_aux), features: None }).unwrap();
        for (k, t) in &out {
            let c = t.shape[1];
            let want = &full[k].data[b * c..(b + 1) * c];
            for (x, y) in t.data.iter().zip(want) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{k} sample {b}: {x} vs {y}");
            }
        }
    }
}
