//! Each model's forward on the CPU backend at batch 1 and 32, default configs,
//! generated weights (the values do not change the work done).
//!
//!     cargo bench --bench models
//!
//! Compare with PyTorch eager on the same machine:
//!     ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch.py

mod common;

use common::{default_model, inputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::model::ModelKind;
use quorum::{Cpu, Inputs, Outputs};

fn forward(c: &mut Criterion) {
    let be = Cpu::new();
    let mut group = c.benchmark_group("forward_cpu");
    for kind in ModelKind::ALL {
        let mut model = default_model(&be, kind);
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
