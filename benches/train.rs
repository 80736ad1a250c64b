//! One training step per model at the default configs, batch 32:
//! `forward_backward` (dropout on), the trainer's optimizer step (gradient
//! norm, clip, AdamW over every parameter) and `refresh`: what the trainer
//! does per optimizer step. On the CPU backend (f32, and with use_amp's
//! bf16 products where the CPU has AVX512_BF16), and with `--features
//! gpu-tests` on a CUDA device as well (the training kernels, f32, and with
//! use_amp's bf16 forward products).
//!
//!     cargo bench --bench train
//!     cargo bench --features gpu-tests --bench train

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::backend::Train;
use quorum::model::{ModelConfig, ModelKind};
use quorum::train::optim::AdamW;
use quorum::train::{HeadTargets, LossWeights, TrainBatch, TrainNet};
use quorum::{Cpu, Tensor};

const BATCH: usize = 32;

fn batch_for(config: &ModelConfig) -> TrainBatch {
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()).unwrap()
    };
    let target = || HeadTargets {
        class: (0..BATCH).map(|i| (i % 3) as u8).collect(),
        ret: (0..BATCH).map(|i| i as f32 * 0.1 - 1.5).collect(),
    };
    let mut b = TrainBatch { batch: BATCH, ..Default::default() };
    match config {
        ModelConfig::Tlob(c) => {
            b.lob = Some(fill(vec![BATCH, c.sequence_length, c.num_levels, c.lob_features]));
            b.aux = Some(fill(vec![BATCH, c.aux_features]));
            b.targets = c.horizons.iter().map(|_| target()).collect();
        }
        ModelConfig::Mpd(c) => {
            b.features = Some(fill(vec![BATCH, c.sequence_length, c.input_features]));
            b.targets = vec![target()];
        }
        ModelConfig::CnnLstm(c) => {
            b.features = Some(fill(vec![BATCH, c.sequence_length, c.input_features]));
            b.targets = vec![target()];
        }
    }
    b
}

fn train_step(c: &mut Criterion) {
    train_step_on(c, &Cpu::new(), "train_step_cpu");
    // use_amp on the CPU: bf16 products from f32 master weights.
    if let Ok(amp) = Cpu::with_precision(quorum::backend::Precision::Bf16) {
        train_step_on(c, &amp, "train_step_cpu_amp");
    }
    #[cfg(feature = "gpu-tests")]
    {
        use quorum::backend::gpu::{Cuda, Gpu};
        use quorum::backend::Precision;
        let gpu = Gpu::new(Cuda::new(0).expect("--features gpu-tests needs a CUDA device"));
        train_step_on(c, &gpu, "train_step_cuda");
        // use_amp: bf16 products in the forward, f32 master weights (the
        // peer of PyTorch's autocast bf16 step).
        let amp = Gpu::with_precision(Cuda::new(0).expect("a CUDA device"), Precision::for_training(true)).unwrap();
        train_step_on(c, &amp, "train_step_cuda_amp");
    }
}

fn train_step_on<B: Train>(c: &mut Criterion, be: &B, group_name: &str) {
    let weights = LossWeights { direction: 1.0, confidence: 0.5, ret: 0.3 };
    let mut group = c.benchmark_group(group_name);
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut net = TrainNet::init(be, config.clone(), 1).unwrap();
        let batch = batch_for(&config);
        let mut opt = AdamW::new(be, net.params(), 0.01, 1.0).unwrap();
        let mut step = 0u64;
        group.bench_function(format!("{}/{BATCH}", kind.as_str()), |b| {
            b.iter(|| {
                step += 1;
                net.zero_grads(be).unwrap();
                net.forward_backward(be, &batch, weights, step).unwrap();
                opt.step(be, net.params_mut(), 1, 1e-4).unwrap();
                net.refresh(be).unwrap();
                // Waits for a device's queue to drain (a no-op on the CPU).
                let mut one = [0f32];
                be.read(&net.params()[0].value, &mut one).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = train_step
}
criterion_main!(benches);
