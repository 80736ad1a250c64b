//! Each model's forward on a CUDA GPU (`Gpu<Cuda>`) at batch 1 and 32, default
//! configs, generated weights; and the kernels at the models' sizes. Needs a
//! GPU:
//!
//!     cargo bench --features gpu-tests --bench models_cuda
//!
//! Each iteration ends with the outputs read back to the host, which waits for
//! the stream: the figures are end-to-end latencies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::backend::gpu::{Cuda, Gpu};
use quorum::backend::{AttentionShape, Backend, Epilogue, LinearShape, LstmShape};
use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Inputs, Model, Outputs, Tensor};

fn inputs(kind: ModelKind, batch: usize) -> (Option<Tensor>, Option<Tensor>, Option<Tensor>) {
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()).unwrap()
    };
    match kind {
        ModelKind::Tlob => (None, Some(fill(vec![batch, 100, 20, 4])), Some(fill(vec![batch, 112]))),
        _ => (Some(fill(vec![batch, 60, 112])), None, None),
    }
}

fn forward(c: &mut Criterion) {
    let be = Gpu::new(Cuda::new(0).expect("a CUDA device"));
    let mut group = c.benchmark_group("forward_cuda");
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut model =
            Model::from_tensors(&be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
        for batch in [1usize, 32] {
            let (f, l, a) = inputs(kind, batch);
            let inp = Inputs { features: f.as_ref(), lob: l.as_ref(), aux: a.as_ref() };
            let mut out = Outputs::new();
            model.forward_into(&be, &inp, &mut out).unwrap();
            group.bench_with_input(BenchmarkId::new(kind.as_str(), batch), &batch, |b, _| {
                b.iter(|| model.forward_into(&be, &inp, &mut out).unwrap())
            });
        }
    }
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let be = Gpu::new(Cuda::new(0).expect("a CUDA device"));
    let mut group = c.benchmark_group("kernels_cuda");
    let sync = |buf: &<Gpu<Cuda> as Backend>::Buf| {
        let mut one = [0f32; 1];
        be.read(buf, &mut one).unwrap();
    };
    // MPD's fc1 at batch 32: (32·49, 256) → 1024, GELU.
    let (rows, n_in, n_out) = (32 * 49, 256, 1024);
    let x = be.alloc(rows * n_in).unwrap();
    let w = be.prepare_linear(&vec![0.01; n_in * n_out], n_out, n_in).unwrap();
    let b = be.alloc(n_out).unwrap();
    let mut y = be.alloc(rows * n_out).unwrap();
    group.bench_function("linear_1568x256x1024_gelu", |bn| {
        bn.iter(|| {
            be.linear(&x, &w, &b, &mut y, LinearShape { rows, n_in, n_out }, Epilogue::Gelu).unwrap();
            sync(&y);
        })
    });
    // TLOB's attention at batch 32: 100 tokens, 4 heads of 32.
    let s = AttentionShape { batch: 32, tokens: 100, heads: 4, head_dim: 32 };
    let qkv = be.alloc(s.batch * s.tokens * 3 * s.dim()).unwrap();
    let mut o = be.alloc(s.batch * s.tokens * s.dim()).unwrap();
    group.bench_function("attention_32x100x4x32", |bn| {
        bn.iter(|| {
            be.attention(&qkv, &mut o, s).unwrap();
            sync(&o);
        })
    });
    // CNN-LSTM's recurrence at batch 1: 60 steps, hidden 256.
    let l = LstmShape { batch: 1, steps: 60, hidden: 256 };
    let gx = be.alloc(60 * 4 * 256).unwrap();
    let whh = be.alloc(4 * 256 * 256).unwrap();
    let mut h = be.alloc(60 * 256).unwrap();
    group.bench_function("lstm_1x60x256", |bn| {
        bn.iter(|| {
            be.lstm(&gx, &whh, &mut h, l).unwrap();
            sync(&h);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = forward, kernels
}
criterion_main!(benches);
