//! Each model's forward on the CPU backend at batch 1 and 32, default configs,
//! generated weights (the values do not change the work done): in f32
//! (`forward_cpu`) and, where the CPU has AVX512_BF16, in bf16
//! (`forward_cpu_bf16`, `--precision bf16`). And TLOB's tick
//! (`quorum::model::tick`) beside its whole forward over the same window,
//! per CPU precision, for 1 and 32 symbols (`tlob_tick_<precision>/tick|whole`).
//!
//!     cargo bench --bench models
//!     cargo bench --bench models -- tlob_tick
//!
//! Compare with PyTorch eager on the same machine:
//!     ~/.cache/quorum/ref-venv/bin/python tools/reference/bench_torch.py [--dtype bf16]

mod common;

use common::{default_model, inputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorum::backend::Precision;
use quorum::model::ModelKind;
use quorum::{Cpu, Inputs, Outputs, Tensor};

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

/// A tick through TLOB's token cache (windows slid by one snapshot, so one
/// new row a symbol) against the whole forward of the same windows (the
/// cache off), in one group so the two are measured in the same run.
fn tlob_tick(c: &mut Criterion) {
    for (name, precision) in [("f32", Precision::F32), ("bf16", Precision::Bf16), ("int8", Precision::Int8)] {
        let be = match Cpu::with_precision(precision) {
            Ok(be) => be,
            Err(e) => {
                eprintln!("tlob_tick_{name} not run: {e}");
                continue;
            }
        };
        let mut group = c.benchmark_group(format!("tlob_tick_{name}"));
        let mut model = default_model(&be, ModelKind::Tlob);
        for symbols in [1usize, 32] {
            // A stream of 200 snapshots a symbol, cut into its sliding windows.
            let (_, stream, aux) = inputs(ModelKind::Tlob, 2 * symbols);
            let (stream, aux) = (stream.unwrap(), aux.unwrap());
            let aux = Tensor::new(vec![symbols, 112], aux.data[..symbols * 112].to_vec()).unwrap();
            let windows: Vec<Tensor> = (0..100)
                .map(|k| {
                    let mut lob = Vec::with_capacity(symbols * 8000);
                    for s in 0..symbols {
                        lob.extend_from_slice(&stream.data[s * 16000 + k * 80..s * 16000 + (k + 100) * 80]);
                    }
                    Tensor::new(vec![symbols, 100, 20, 4], lob).unwrap()
                })
                .collect();
            let mut out = Outputs::new();
            for (label, cache) in [("whole", false), ("tick", true)] {
                model.set_token_cache(cache);
                let mut k = 0;
                group.bench_with_input(BenchmarkId::new(label, symbols), &symbols, |b, _| {
                    b.iter(|| {
                        k = (k + 1) % windows.len();
                        let inp = Inputs { lob: Some(&windows[k]), aux: Some(&aux), ..Inputs::default() };
                        model.forward_into(&be, &inp, &mut out).unwrap()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = forward, tlob_tick
}
criterion_main!(benches);
