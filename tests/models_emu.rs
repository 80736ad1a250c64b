//! The three models end to end on `Gpu<Emu>` (every op a CUDA kernel run by
//! the emulator) against the committed PyTorch goldens, with models.md's f32
//! tolerances: the GPU code path, tested without a GPU.

mod common;

use common::{assert_close, golden, ALL_CASES};
use quorum::backend::gpu::{Emu, Gpu};

fn check_case(name: &str) {
    let g = golden(name);
    let be = Gpu::new(Emu::new());
    let mut model = g.model(&be);
    let out = model.forward(&be, &g.inputs()).unwrap();
    let got: Vec<&String> = out.keys().collect();
    let want: Vec<&String> = g.outputs.keys().collect();
    assert_eq!(got, want, "{name}: output names");
    let mut worst = 0f64;
    for (k, want) in &g.outputs {
        worst = worst.max(assert_close(name, k, &out[k], want, false));
    }
    eprintln!("{name} on emu: worst error / tolerance = {worst:.3}");
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
fn every_case_runs_on_emu() {
    // Keep this file in step with the golden cases.
    assert_eq!(ALL_CASES.len(), 10);
}
