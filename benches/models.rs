//! Each model's forward on the CPU backend at batch 1 and 32, default configs,
//! generated weights (the values do not change the work done): in f32
//! (`forward_cpu`) and, where the CPU has AVX512_BF16, in bf16
//! (`forward_cpu_bf16`, `--precision bf16`).
//!
//!     cargo bench --bench models
//!
//! Compare with PyTorch eager on the same machine:
//!     ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch.py [--dtype bf16]

mod common;

use common::{default_model, inputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::backend::Precision;
use quorum::model::ModelKind;
use quorum::{Cpu, Inputs, Outputs};

fn forward(c: &mut Criterion) {
    forward_on(c, "forward_cpu", Cpu::new());
    match Cpu::with_precision(Precision::Bf16) {
        Ok(be) => forward_on(c, "forward_cpu_bf16", be),
        Err(e) => eprintln!("forward_cpu_bf16 not run: {e}"),
    }
}

fn forward_on(c: &mut Criterion, name: &str, be: Cpu) {
    let mut group = c.benchmark_group(name);
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
