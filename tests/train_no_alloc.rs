//! After the first step at a batch size, a training step (`forward_backward`
//! with dropout on, then `refresh`) allocates nothing of its own beyond the
//! `LossOut` it returns: the tape, gradient scratch and host scratch are all
//! reused. Same watcher as tests/no_alloc.rs (`alloc_watch`): it traces every
//! allocation in the measured window on every thread; the gemm crate's tiny
//! per-call vector, rayon's job queue blocks and the returned `LossOut`
//! (allocated in `net::loss_out`) are the known exceptions. One test in this
//! binary, so nothing else allocates concurrently.

mod alloc_watch;

use quorum::model::{ModelConfig, ModelKind};
use quorum::train::{HeadTargets, LossWeights, TrainBatch, TrainNet};
use quorum::{Cpu, Tensor};

#[test]
fn steady_state_training_step_allocates_nothing_of_its_own() {
    let be = Cpu::new();
    let weights = LossWeights { direction: 1.0, confidence: 0.5, ret: 0.3 };
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut net = TrainNet::init(&be, config.clone(), 3).unwrap();
        let batch = 2;
        let target = || HeadTargets { class: vec![0, 2], ret: vec![0.5, -1.5] };
        let mut b = TrainBatch { batch, ..Default::default() };
        match &config {
            ModelConfig::Tlob(c) => {
                b.lob = Some(Tensor::zeros(vec![batch, 100, 20, 4]));
                b.aux = Some(Tensor::zeros(vec![batch, 112]));
                b.targets = c.horizons.iter().map(|_| target()).collect();
            }
            _ => {
                b.features = Some(Tensor::zeros(vec![batch, 60, 112]));
                b.targets = vec![target()];
            }
        }
        // Warm-up: the tape, scratch and host buffers are sized here.
        for step in 0..2 {
            net.forward_backward(&be, &b, weights, step).unwrap();
            net.refresh(&be).unwrap();
        }
        let (result, offenders) = alloc_watch::watch(&[" loss_out<"], || {
            net.forward_backward(&be, &b, weights, 7).and_then(|_| net.refresh(&be))
        });
        result.unwrap();
        assert!(
            offenders.is_empty(),
            "{kind}: {} allocations of our own in a training step; the first:\n{}",
            offenders.len(),
            offenders[0]
        );
    }
    assert!(alloc_watch::gemm_allocations() > 0, "no allocation was traced: the watcher is broken");
}
