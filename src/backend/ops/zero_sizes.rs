//! Every op at sizes with a zero in them, on both backends: no panic (the
//! standard: no panic on any input), and the two backends agree on whether
//! the call is refused. A zero-sized problem that is not refused is nothing
//! to do, and on a GPU it must launch nothing (the emulator refuses an empty
//! launch as CUDA does).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::backend::gpu::{Emu, Gpu};
use crate::backend::{
    AdamWStep, AttentionShape, BroadcastShape, ConvShape, ConvWeights, Epilogue, LinearShape, LstmShape, PatchShape,
    Pool, Train,
};
use crate::Cpu;

/// Each call's name and how it ended: `Ok(true)` done, `Ok(false)` refused
/// with an error, `Err(message)` panicked.
fn run_all<B: Train>(be: &B) -> Vec<(String, Result<bool, String>)> {
    const ROOM: usize = 4096;
    let z = || be.alloc(ROOM).unwrap();
    let mut out = Vec::new();
    let mut probe = |what: String, f: &dyn Fn() -> crate::error::Result<()>| {
        let ended = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Ok(r.is_ok()),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()),
        };
        out.push((what, ended));
    };
    for (rows, n_in, n_out) in [(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
        let s = LinearShape { rows, n_in, n_out };
        let w = be.prepare_linear(&[0.5; 64], n_out, n_in).unwrap();
        probe(format!("linear {s:?}"), &|| be.linear(&z(), &w, &z(), &mut z(), s, Epilogue::Gelu));
        probe(format!("linear_backward {s:?}"), &|| {
            be.linear_backward(&z(), &z(), &z(), Some(&mut z()), &mut z(), Some(&mut z()), s, false)
        });
        probe(format!("bias_backward {rows}x{n_out}"), &|| be.bias_backward(&z(), &mut z(), rows, n_out));
        probe(format!("prepare_linear_from {n_out}x{n_in}"), &|| be.prepare_linear_from(&z(), n_out, n_in, &mut z()));
    }
    for (samples, len, c_in, c_out) in [(0, 5, 3, 4), (2, 0, 3, 4), (2, 5, 0, 4), (2, 5, 3, 0)] {
        let s = ConvShape::dense(samples, len, c_in, c_out, 3);
        let w = be.prepare_conv(&[0.5; 64], c_out, c_in, 3).unwrap();
        probe(format!("conv1d {s:?}"), &|| be.conv1d(&z(), &w, &z(), &mut z(), s, true));
        probe(format!("conv1d_backward {s:?}"), &|| {
            be.conv1d_backward(&z(), &z(), &z(), Some(&mut z()), &mut z(), &mut z(), s)
        });
    }
    for (samples, len, dim) in [(0, 5, 3), (2, 0, 3), (2, 5, 0)] {
        let branches: Vec<ConvWeights<B>> = [1, 3]
            .into_iter()
            .map(|k| ConvWeights {
                w: be.prepare_conv(&[0.5; 64], dim, dim, k).unwrap(),
                b: z(),
                c_in: dim,
                c_out: dim,
                kernel: k,
            })
            .collect();
        probe(format!("multiscale_conv {samples}x{len}x{dim}"), &|| {
            be.multiscale_conv(&z(), &branches, &mut z(), samples, len, dim)
        });
    }
    for (batch, height, dim) in [(0, 4, 5), (2, 0, 5), (2, 4, 0)] {
        let s = PatchShape { batch, height, width: 6, patch_h: 2, patch_w: 3, dim, cls_token: true };
        let w = be.prepare_linear(&[0.5; 64], dim, 6).unwrap();
        probe(format!("patch_embed {s:?}"), &|| be.patch_embed(&z(), &w, &z(), Some(&z()), &z(), &mut z(), s));
        probe(format!("patch_embed_backward {s:?}"), &|| {
            be.patch_embed_backward(&z(), &z(), &mut z(), &mut z(), Some(&mut z()), &mut z(), s)
        });
    }
    for (rows, dim) in [(0, 4), (3, 0)] {
        probe(format!("layernorm {rows}x{dim}"), &|| be.layernorm(&z(), &z(), &z(), &mut z(), rows, dim));
        probe(format!("layernorm_backward {rows}x{dim}"), &|| {
            be.layernorm_backward(&z(), &z(), &z(), &mut z(), &mut z(), &mut z(), rows, dim)
        });
        probe(format!("standardize {rows}x{dim}"), &|| be.standardize(&mut z(), &z(), &z(), rows, dim));
    }
    for (batch, tokens, heads, head_dim) in [(0, 3, 2, 4), (2, 0, 2, 4), (2, 3, 0, 4), (2, 3, 2, 0)] {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        probe(format!("attention {s:?}"), &|| be.attention(&z(), &mut z(), s));
        probe(format!("attention_train {s:?}"), &|| be.attention_train(&z(), &mut z(), &mut z(), s));
        probe(format!("attention_backward {s:?}"), &|| be.attention_backward(&z(), &z(), &z(), &mut z(), &mut z(), s));
    }
    for (batch, steps, hidden) in [(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
        let s = LstmShape { batch, steps, hidden };
        let w = be.prepare_recurrent(&[0.5; 64], hidden).unwrap();
        probe(format!("lstm {s:?}"), &|| be.lstm(&z(), &w, &mut z(), s));
        probe(format!("lstm_train {s:?}"), &|| be.lstm_train(&z(), &w, &mut z(), &mut z(), &mut z(), s));
        probe(format!("lstm_backward {s:?}"), &|| {
            be.lstm_backward(&z(), &z(), &z(), &z(), &z(), &mut z(), &mut z(), s)
        });
    }
    for (batch, tokens, dim) in [(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
        for how in [Pool::First, Pool::Mean, Pool::Last] {
            probe(format!("pool {batch}x{tokens}x{dim} {how:?}"), &|| be.pool(&z(), &mut z(), batch, tokens, dim, how));
            probe(format!("pool_backward {batch}x{tokens}x{dim} {how:?}"), &|| {
                be.pool_backward(&z(), &mut z(), batch, tokens, dim, how)
            });
        }
    }
    for (outer, inner, dim) in [(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
        for per_outer in [true, false] {
            let s = BroadcastShape { outer, inner, dim, per_outer };
            probe(format!("broadcast_add {s:?}"), &|| be.broadcast_add(&mut z(), &z(), s));
            probe(format!("broadcast_add_backward {s:?}"), &|| be.broadcast_add_backward(&z(), &mut z(), s));
        }
    }
    for (outer, rows, cols) in [(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
        probe(format!("swap_last_axes {outer}x{rows}x{cols}"), &|| {
            be.swap_last_axes(&z(), &mut z(), outer, rows, cols, false)
        });
    }
    probe("copy 0".into(), &|| be.copy(&z(), &mut z(), 0));
    probe("add 0".into(), &|| be.add(&mut z(), &z(), 0));
    probe("mul 0".into(), &|| be.mul(&mut z(), &z(), 0));
    probe("gelu 0".into(), &|| be.gelu(&z(), &mut z(), 0));
    probe("gelu_backward 0".into(), &|| be.gelu_backward(&z(), &mut z(), 0));
    probe("fill 0".into(), &|| be.fill(&mut z(), 0, 1.0));
    probe("dropout_mask 0".into(), &|| be.dropout_mask(&mut z(), 0, 0.1, 1, 2));
    probe("sum_squares 0".into(), &|| be.sum_squares(&z(), 0).map(|_| ()));
    let step = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1, grad_scale: 1.0 };
    probe("adamw 0".into(), &|| be.adamw(&mut z(), &z(), &mut z(), &mut z(), 0, step));
    out
}

#[test]
fn zero_sizes_never_panic_and_both_backends_agree() {
    let (cpu, emu) = (run_all(&Cpu::new()), run_all(&Gpu::new(Emu::new())));
    let mut problems = Vec::new();
    for ((what, c), (_, e)) in cpu.iter().zip(&emu) {
        match (c, e) {
            (Err(p), _) => problems.push(format!("cpu panicked: {what}: {p}")),
            (_, Err(p)) => problems.push(format!("emu panicked: {what}: {p}")),
            (Ok(c), Ok(e)) if c != e => problems.push(format!("{what}: cpu {}, emu {}", done(*c), done(*e))),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn done(ok: bool) -> &'static str {
    if ok {
        "did it"
    } else {
        "refused it"
    }
}

#[test]
fn zero_sizes_never_panic_on_the_cpu_in_bf16_or_int8() {
    // Those modes take their own paths (pairs, quads, per-row scales); the
    // training ops refuse there, so only panics are looked for.
    for p in [crate::backend::Precision::Bf16, crate::backend::Precision::Int8] {
        let Ok(be) = Cpu::with_precision(p) else {
            eprintln!("skipped {p:?}: not on this CPU");
            continue;
        };
        let panics: Vec<String> =
            run_all(&be).into_iter().filter_map(|(what, r)| r.err().map(|p| format!("{what}: {p}"))).collect();
        assert!(panics.is_empty(), "{p:?}: {panics:#?}");
    }
}

#[test]
fn zero_sizes_never_panic_on_the_emulated_gpu_in_int8() {
    // The int8 tile (gemm_tile_int8.cuh) and its weight layout; the training
    // ops that re-derive prepared weights refuse there.
    let be = Gpu::with_precision(Emu::new(), crate::backend::Precision::Int8).unwrap();
    let panics: Vec<String> =
        run_all(&be).into_iter().filter_map(|(what, r)| r.err().map(|p| format!("{what}: {p}"))).collect();
    assert!(panics.is_empty(), "{panics:#?}");
}
