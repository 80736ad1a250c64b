//! After the first forward at a batch size, inference allocates nothing of its
//! own: every allocation of a warm forward, on every thread, is traced
//! (`alloc_watch`), and any outside the known exceptions fails the test with
//! its stack printed. One test in this binary, so no other test allocates
//! concurrently.

mod alloc_watch;

use quorum::backend::Precision;
use quorum::model::{LobNormalization, ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Cpu, Inputs, Model, Outputs, Tensor};

#[test]
fn steady_state_forward_allocates_nothing_of_its_own() {
    // f32, and bf16 where this CPU has AVX512_BF16 (its own scratch: the
    // activations as bf16 pairs).
    let mut backends = vec![Cpu::new()];
    backends.extend(Cpu::with_precision(Precision::Bf16).ok());
    for be in &backends {
        forwards_allocate_nothing(be);
    }
    for be in &backends {
        ticks_through_the_token_cache_allocate_nothing(be);
    }
    // The watcher must have seen something, or it watched nothing at all.
    assert!(alloc_watch::gemm_allocations() > 0, "no allocation was traced: the watcher is broken");
}

fn forwards_allocate_nothing(be: &Cpu) {
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut model =
            Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
        for batch in [1usize, 3] {
            let shape = |dims: &[usize]| [&[batch][..], dims].concat();
            let (features, lob, aux) = match kind {
                ModelKind::Tlob => {
                    (None, Some(Tensor::zeros(shape(&[100, 20, 4]))), Some(Tensor::zeros(shape(&[112]))))
                }
                _ => (Some(Tensor::zeros(shape(&[60, 112]))), None, None),
            };
            let inputs = Inputs { features: features.as_ref(), lob: lob.as_ref(), aux: aux.as_ref() };
            let mut out = Outputs::new();
            // Warm-up: activations, scratch and outputs are sized here.
            for _ in 0..3 {
                model.forward_into(be, &inputs, &mut out).unwrap();
            }
            let (result, offenders) = alloc_watch::watch(&[], || model.forward_into(be, &inputs, &mut out));
            result.unwrap();
            assert!(
                offenders.is_empty(),
                "{kind} at batch {batch} in {:?}: {} allocations outside gemm; the first:\n{}",
                be.precision(),
                offenders.len(),
                offenders[0]
            );
        }
    }
}

/// A TLOB of the snapshot contract over sliding windows (its token cache
/// finding all but one row a symbol): once warm, a tick allocates nothing.
fn ticks_through_the_token_cache_allocate_nothing(be: &Cpu) {
    let mut config = ModelConfig::default_for(ModelKind::Tlob);
    if let ModelConfig::Tlob(c) = &mut config {
        c.lob_normalization = LobNormalization::Snapshot;
    }
    let mut model = Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
    let symbols = 3;
    // Each symbol's stream of snapshot rows; window k holds rows k..k+100.
    let row =
        |n: usize, s: usize| (0..80).map(move |i| n as f32 * 0.01 + s as f32 * 1000.0 + ((i * 7) % 13) as f32 * 0.1);
    let window = |k: usize| {
        let data: Vec<f32> = (0..symbols).flat_map(|s| (k..k + 100).flat_map(move |n| row(n, s))).collect();
        Tensor::new(vec![symbols, 100, 20, 4], data).unwrap()
    };
    let aux = Tensor::zeros(vec![symbols, 112]);
    let mut out = Outputs::new();
    for k in 0..4 {
        let lob = window(k);
        model.forward_into(be, &Inputs { lob: Some(&lob), aux: Some(&aux), ..Inputs::default() }, &mut out).unwrap();
    }
    let lob = window(4);
    let inputs = Inputs { lob: Some(&lob), aux: Some(&aux), ..Inputs::default() };
    let before = model.token_cache().unwrap().counts().0;
    let (result, offenders) = alloc_watch::watch(&[], || model.forward_into(be, &inputs, &mut out));
    result.unwrap();
    assert_eq!(model.token_cache().unwrap().counts().0 - before, symbols as u64, "one new row a symbol");
    assert!(
        offenders.is_empty(),
        "a TLOB tick through the token cache in {:?}: {} allocations outside gemm; the first:\n{}",
        be.precision(),
        offenders.len(),
        offenders[0]
    );
    // A quiet book: symbol 0's newest snapshot repeats its last one, so this
    // tick has two new rows, not three. The encoding keeps its padded shape.
    let mut lob = window(5);
    let (row, last) = (80, 99 * 80);
    lob.data.copy_within(last - row..last, last);
    let inputs = Inputs { lob: Some(&lob), aux: Some(&aux), ..Inputs::default() };
    let before = model.token_cache().unwrap().counts().0;
    let (result, offenders) = alloc_watch::watch(&[], || model.forward_into(be, &inputs, &mut out));
    result.unwrap();
    assert_eq!(model.token_cache().unwrap().counts().0 - before, symbols as u64 - 1, "a repeated row is held");
    assert!(offenders.is_empty(), "a tick with fewer new rows allocated; the first:\n{}", offenders[0]);
}
