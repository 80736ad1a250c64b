//! Each model's forward on the CPU backend at batch 1 and 32, default configs,
//! generated weights (the values do not change the work done).
//!
//!     cargo bench --bench models
//!
//! Compare with PyTorch eager on the same machine:
//!     ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch.py

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Cpu, Inputs, Model, Outputs, Tensor};

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
    let be = Cpu::new();
    let mut group = c.benchmark_group("forward_cpu");
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = forward
}
criterion_main!(benches);
