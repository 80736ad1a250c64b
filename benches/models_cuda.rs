//! Each model's forward on a CUDA GPU (`Gpu<Cuda>`) at batch 1 and 32, default
//! configs, generated weights, in f32, bf16 and f16, replaying the recorded
//! CUDA graph (and at batch 1 without it, to show what the graph saves); and
//! each kernel family at the models' sizes. Needs a GPU:
//!
//!     cargo bench --features gpu-tests --bench models_cuda
//!
//! Each iteration ends with the outputs read back to the host, which waits for
//! the stream: the figures are end-to-end latencies.

mod common;

use common::{default_model, inputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::backend::gpu::{Cuda, Gpu, Precision};
use quorum::backend::{AttentionShape, Backend, ConvShape, ConvWeights, Epilogue, LinearShape, LstmShape, PatchShape};
use quorum::model::ModelKind;
use quorum::{Inputs, Outputs};

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_cuda");
    for precision in [Precision::F32, Precision::Bf16, Precision::F16] {
        let be = Gpu::with_precision(Cuda::new(0).expect("a CUDA device"), precision).unwrap();
        for kind in ModelKind::ALL {
            let mut model = default_model(&be, kind);
            for (batch, graphs) in [(1usize, true), (1, false), (32, true)] {
                model.set_graphs(graphs);
                let (f, l, a) = inputs(kind, batch);
                let inp = Inputs { features: f.as_ref(), lob: l.as_ref(), aux: a.as_ref() };
                let mut out = Outputs::new();
                // Two calls: the second records the graph.
                model.forward_into(&be, &inp, &mut out).unwrap();
                model.forward_into(&be, &inp, &mut out).unwrap();
                let id = format!("{}/{precision:?}/{}", kind.as_str(), if graphs { "graph" } else { "launches" });
                group.bench_with_input(BenchmarkId::new(id, batch), &batch, |b, _| {
                    b.iter(|| model.forward_into(&be, &inp, &mut out).unwrap())
                });
            }
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
    // The same product with 16-bit weights on the tensor cores.
    for precision in [Precision::Bf16, Precision::F16] {
        let half = Gpu::with_precision(Cuda::new(0).expect("a CUDA device"), precision).unwrap();
        let (x, b) = (half.alloc(rows * n_in).unwrap(), half.alloc(n_out).unwrap());
        let w = half.prepare_linear(&vec![0.01; n_in * n_out], n_out, n_in).unwrap();
        let mut y = half.alloc(rows * n_out).unwrap();
        group.bench_function(format!("linear_1568x256x1024_gelu_{precision:?}"), |bn| {
            bn.iter(|| {
                half.linear(&x, &w, &b, &mut y, LinearShape { rows, n_in, n_out }, Epilogue::Gelu).unwrap();
                let mut one = [0f32; 1];
                half.read(&y, &mut one).unwrap();
            })
        });
    }
    // MPD's layernorm at batch 32: 1568 rows of 256.
    let (g, beta) = (be.upload(&vec![1.0; 256]).unwrap(), be.alloc(256).unwrap());
    group.bench_function("layernorm_1568x256", |bn| {
        bn.iter(|| {
            be.layernorm(&x, &g, &beta, &mut y, rows, 256).unwrap();
            sync(&y);
        })
    });
    // MPD's patch embedding at batch 32.
    let ps = PatchShape { batch: 32, height: 60, width: 112, patch_h: 10, patch_w: 14, dim: 256, cls_token: true };
    let (img, pw) = (be.alloc(32 * 60 * 112).unwrap(), be.prepare_linear(&vec![0.01; 256 * 140], 256, 140).unwrap());
    let (pos, cls) = (be.alloc(ps.tokens() * 256).unwrap(), be.alloc(256).unwrap());
    group.bench_function("patch_embed_32x60x112_d256", |bn| {
        bn.iter(|| {
            be.patch_embed(&img, &pw, &b, Some(&cls), &pos, &mut y, ps).unwrap();
            sync(&y);
        })
    });
    // TLOB's multi-scale temporal conv at batch 32 (k = 3, 5, 7 in one launch), and one spatial conv.
    let (t, d) = (100, 128);
    let branches: Vec<ConvWeights<Gpu<Cuda>>> = [3usize, 5, 7]
        .iter()
        .map(|&k| ConvWeights {
            w: be.prepare_linear(&vec![0.01; d * d * k], d, d * k).unwrap(),
            b: be.alloc(d).unwrap(),
            c_in: d,
            c_out: d,
            kernel: k,
        })
        .collect();
    let seq = be.alloc(32 * t * d).unwrap();
    let mut cat = be.alloc(32 * t * 3 * d).unwrap();
    group.bench_function("multiscale_conv_32x100x128_k357", |bn| {
        bn.iter(|| {
            be.multiscale_conv(&seq, &branches, &mut cat, 32, t, d).unwrap();
            sync(&cat);
        })
    });
    let cs = ConvShape::dense(32 * 100, 20, 64, 128, 3);
    let cw = be.prepare_linear(&vec![0.01; 128 * 64 * 3], 128, 64 * 3).unwrap();
    let cx = be.alloc(32 * 100 * 20 * 64).unwrap();
    let mut cy = be.alloc(32 * 100 * 20 * 128).unwrap();
    group.bench_function("spatial_conv_3200x20_64to128", |bn| {
        bn.iter(|| {
            be.conv1d(&cx, &cw, &branches[0].b, &mut cy, cs, true).unwrap();
            sync(&cy);
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
