//! The three models end to end on `Gpu<Emu>` (every op a CUDA kernel run by
//! the emulator) against the committed PyTorch goldens, with docs/models.md's f32
//! tolerances: the GPU code path, tested without a GPU.

mod common;

use common::{check_golden, check_golden_within, golden, ALL_CASES};
use quorum::backend::gpu::{Emu, Gpu, Precision, ThreadOrder};

fn check_case(name: &str) {
    let worst = check_golden(&Gpu::new(Emu::new()), name);
    eprintln!("{name} on emu: worst error / tolerance = {worst:.3}");
}

common::golden_case_tests!(check_case);

#[test]
fn every_case_runs_on_emu() {
    // Keep this file in step with the golden cases.
    assert_eq!(ALL_CASES.len(), 10);
}

#[test]
fn whole_model_is_independent_of_the_emulators_thread_order() {
    // A race anywhere in the forward would show as a difference between the
    // forward and reverse schedules (poisoned shared memory reads give NaN).
    let g = golden("tlob_small_aux_norm");
    let run = |order| {
        let be = Gpu::new(Emu::with_order(order));
        let mut model = g.model(&be);
        model.forward(&be, &g.inputs()).unwrap()
    };
    let f = run(ThreadOrder::Forward);
    let r = run(ThreadOrder::Reverse);
    assert_eq!(f, r);
    assert!(f.values().all(|t| t.data.iter().all(|v| v.is_finite())));
}

#[test]
fn batch_results_equal_single_sample_results_on_emu() {
    let g = golden("mpd_small_cls");
    let be = Gpu::new(Emu::new());
    let mut model = g.model(&be);
    let full = model.forward(&be, &g.inputs()).unwrap();
    let x = &g.inputs["features"];
    let per = x.numel() / x.shape[0];
    assert!(x.shape[0] > 1, "the case has a batch to split");
    for b in 0..x.shape[0] {
        let mut shape = x.shape.clone();
        shape[0] = 1;
        let one = quorum::Tensor::new(shape, x.data[b * per..(b + 1) * per].to_vec()).unwrap();
        let out = model.forward(&be, &quorum::Inputs { features: Some(&one), lob: None, aux: None }).unwrap();
        for (k, t) in &out {
            let c = t.shape[1];
            let want = &full[k].data[b * c..(b + 1) * c];
            for (x, y) in t.data.iter().zip(want) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{k} sample {b}: {x} vs {y}");
            }
        }
    }
}

/// Every golden case with 16-bit weights and tensor-core products
/// (`Precision::Bf16` and `Precision::F16`), within docs/models.md's f16/bf16 column.
#[test]
fn every_case_in_bf16_and_f16_within_the_half_precision_tolerances() {
    for precision in [Precision::Bf16, Precision::F16] {
        for name in ALL_CASES {
            let worst = check_golden_within(&Gpu::with_precision(Emu::new(), precision).unwrap(), name, true);
            eprintln!("{name} on emu, {precision:?}: worst error / tolerance = {worst:.3}");
        }
    }
}

/// The emulator's recording (its CUDA graph) replays exactly what the ops compute one by one.
#[test]
fn recorded_forwards_replay_exactly_what_direct_forwards_compute() {
    common::check_recorded_replays(&Gpu::new(Emu::new()));
}

#[test]
fn models_sharing_the_emulated_device_across_threads_stay_apart() {
    common::check_concurrent_models(&Gpu::new(Emu::new()), true);
}

/// Every golden case in int8 on the emulator (gemm_tile_int8.cuh for each
/// linear layer, conv and the patch projection; the recurrence and the rest
/// in f32) within docs/models.md's int8 bounds against the f32 golden
/// (`common::check_golden_int8`). The CPU's int8, where this CPU has it, is
/// printed beside it: MPD's and TLOB's products are the same bits, so the
/// two differ only where an f32 op's last bit moves a quantized byte (the
/// CNN-LSTM's recurrence is int8 on the CPU, f32 here).
#[test]
fn every_case_in_int8_on_emu_within_the_int8_bounds() {
    let cpu8 = quorum::Cpu::with_precision(Precision::Int8).ok();
    let emu8 = Gpu::with_precision(Emu::new(), Precision::Int8).unwrap();
    for name in ALL_CASES {
        let got = common::check_golden_int8(&emu8, name);
        if let Some(cpu8) = &cpu8 {
            let g = golden(name);
            let cpu = g.model(cpu8).forward(cpu8, &g.inputs()).unwrap();
            for (k, t) in &got {
                let beside = t.data.iter().zip(&cpu[k].data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                eprintln!("{name} {k}: cpu int8 - emu int8 {beside:e}");
            }
        }
    }
}

/// TLOB's token cache on the GPU path (docs/models.md, "The TLOB tick"):
/// over sliding windows, a snapshot-contract TLOB with its cache gives the
/// outputs of the same model with the cache off, bit for bit, so the
/// kernels encode a snapshot alike whatever the batch it comes in; and its
/// two passes are each recorded and replayed as the whole forward is.
#[test]
fn the_tlob_token_cache_gives_the_whole_forwards_bits_on_emu() {
    use quorum::model::{LobNormalization, ModelConfig, ModelKind, ModelMeta, Outputs, TlobConfig};
    use quorum::{Inputs, Model, Tensor};
    let config = ModelConfig::Tlob(TlobConfig {
        sequence_length: 12,
        num_levels: 5,
        spatial_channels: vec![8, 8],
        temporal_hidden: 16,
        num_temporal_layers: 1,
        num_heads: 2,
        aux_features: 0,
        lob_normalization: LobNormalization::Snapshot,
        ..TlobConfig::default()
    });
    assert_eq!(config.kind(), ModelKind::Tlob);
    let be = Gpu::new(Emu::new());
    let params = quorum::weights::generated::params(&config);
    let mut cached = Model::from_tensors(&be, config.clone(), &params, ModelMeta::default()).unwrap();
    let mut whole = Model::from_tensors(&be, config, &params, ModelMeta::default()).unwrap();
    whole.set_token_cache(false);
    let (symbols, steps, row) = (3usize, 12usize, 5 * 4);
    let value = |n: usize, s: usize, i: usize| ((n * 131 + s * 977 + i * 31) % 199) as f32 / 99.0 - 1.0;
    let (mut out, mut expected) = (Outputs::new(), Outputs::new());
    for end in steps - 1..steps + 5 {
        let mut lob = Vec::new();
        for s in 0..symbols {
            for n in end + 1 - steps..=end {
                lob.extend((0..row).map(|i| value(n, s, i)));
            }
        }
        let lob = Tensor::new(vec![symbols, steps, 5, 4], lob).unwrap();
        let inputs = Inputs { lob: Some(&lob), ..Inputs::default() };
        cached.forward_into(&be, &inputs, &mut out).unwrap();
        whole.forward_into(&be, &inputs, &mut expected).unwrap();
        for (k, t) in &expected {
            let same = t.data.iter().zip(&out[k].data).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{k} at {end}: {:?} vs {:?}", out[k].data, t.data);
        }
    }
    assert_eq!(cached.token_cache().unwrap().counts().0, (symbols * (steps + 5)) as u64);
    // The tokens pass keeps one shape: recorded on the second tick, replayed
    // from then on (5). The encoding's batch goes from 36 rows to 3 on the
    // second tick: recorded on the third, replayed from then on (4).
    assert_eq!(cached.graph_replays(), 9);
    // A whole forward in between plans the activations it shares with the
    // tokens pass anew (a recording is kept only while its plan holds):
    // still the whole forward's outputs, cache off and on.
    let lob = Tensor::new(vec![symbols, steps, 5, 4], (0..symbols * steps * row).map(|i| value(i, 1, 2)).collect());
    let inputs = Inputs { lob: Some(lob.as_ref().unwrap()), ..Inputs::default() };
    whole.forward_into(&be, &inputs, &mut expected).unwrap();
    for cache in [false, true, true, true] {
        cached.set_token_cache(cache);
        cached.forward_into(&be, &inputs, &mut out).unwrap();
        assert_eq!(out, expected, "cache {cache}");
    }
}
