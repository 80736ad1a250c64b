//! After the first forward at a batch size, inference allocates nothing of its
//! own: every allocation of a warm forward, on every thread, is traced
//! (`alloc_watch`), and any outside the known exceptions fails the test with
//! its stack printed. One test in this binary, so no other test allocates
//! concurrently.

mod alloc_watch;

use quorum::backend::Precision;
use quorum::model::{ModelConfig, ModelKind, ModelMeta};
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
