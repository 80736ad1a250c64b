//! AdamW, one update of a parameter tensor from its gradient and its two
//! moments (`AdamWStep`, backend/mod.rs; docs/training.md): `g =
//! grad_scale · grad`, `m = β1 m + (1−β1) g`, `v = β2 v + (1−β2) g²`,
//! `p −= lr · (weight_decay · p + m̂ / (√v̂ + eps))` with `m̂ = m / (1−β1^t)`,
//! `v̂ = v / (1−β2^t)`.
//!
//! Every piece of the op but its signature (`Train::adamw`) and its kernel
//! (`kernels/adamw.cu`):
//! - the shape checks, one list for both backends;
//! - the reference, a plain f64 step the tests compare with;
//! - the bias corrections' reciprocals, computed in f32 once per step on the
//!   host for both backends, so the CPU and the kernel multiply by the same
//!   bits;
//! - the CPU: a plain loop per chunk of `ELEM_CHUNK` values, the chunks on
//!   rayon's threads (each value is updated alone, so the bits do not depend
//!   on the split);
//! - the GPU: the kernel's parameter struct and its launch (grid-stride, a
//!   thread per value, `launch::elementwise`);
//! - the tests: the CPU and the emulator against the reference over several
//!   steps, and each other bit for bit; the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a GPU
//! through `tests/common/train_elementwise.rs` (`adamw_steps`,
//! `short_buffers_are_errors`); inside whole training steps by
//! `tests/train_emu.rs`, `tests/train_grads.rs` and `tests/bit_lock.rs`.

use rayon::prelude::*;

use crate::backend::cpu::{check_len, ELEM_CHUNK};
use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::backend::AdamWStep;
use crate::error::Result;

const OP: &str = "adamw";

// ------------------------------------------------------------------ shapes

/// The buffers and the values each must hold, checked in this order.
fn check_buffers<B: ?Sized>(
    param: &B,
    grad: &B,
    m: &B,
    v: &B,
    len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("param", param, len)?;
    check("grad", grad, len)?;
    check("m", m, len)?;
    check("v", v, len)
}

// --------------------------------------------------------------- reference

/// One step in f64 over whole tensors: `param`, `m` and `v` updated in place.
pub fn reference_step(param: &mut [f64], grad: &[f64], m: &mut [f64], v: &mut [f64], s: AdamWStep) {
    let (b1, b2) = (f64::from(s.beta1), f64::from(s.beta2));
    let t = s.step.max(1) as i32;
    let (lr, wd, eps, scale) = (f64::from(s.lr), f64::from(s.weight_decay), f64::from(s.eps), f64::from(s.grad_scale));
    for i in 0..param.len() {
        let g = scale * grad[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
        param[i] -= lr * (wd * param[i] + mh / (vh.sqrt() + eps));
    }
}

// ---------------------------------------------------------------- both paths

/// `1 / (1 − β1^t)` and `1 / (1 − β2^t)` in f32, step 0 taken as 1.
fn bias_corrections(s: AdamWStep) -> (f32, f32) {
    let step = s.step.max(1) as i32;
    (1.0 / (1.0 - s.beta1.powi(step)), 1.0 / (1.0 - s.beta2.powi(step)))
}

// --------------------------------------------------------------------- CPU

/// One rayon task's slices of param, grad, m and v, as the zipped iterators yield them.
type Chunks<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// `Train::adamw` on the CPU.
pub(crate) fn step_cpu(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    len: usize,
    s: AdamWStep,
) -> Result<()> {
    check_buffers(param, grad, m, v, len, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    let (c1, c2) = bias_corrections(s);
    let update = |(((p, g), m), v): Chunks<'_>| {
        for i in 0..p.len() {
            let g = s.grad_scale * g[i];
            m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g;
            v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
            let step = (m[i] * c1) / ((v[i] * c2).sqrt() + s.eps);
            p[i] -= s.lr * (s.weight_decay * p[i] + step);
        }
    };
    param[..len]
        .par_chunks_mut(ELEM_CHUNK)
        .zip(grad[..len].par_chunks(ELEM_CHUNK))
        .zip(m[..len].par_chunks_mut(ELEM_CHUNK))
        .zip(v[..len].par_chunks_mut(ELEM_CHUNK))
        .for_each(update);
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/adamw.cu` AdamWParams; `c1`, `c2` the bias corrections' reciprocals.
    AdamWParams => Adamw {
        param: u64, grad: u64, m: u64, v: u64, n: i32,
        lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, grad_scale: f32, c1: f32, c2: f32,
    }
);

/// `Train::adamw` on a `Gpu`: one launch of `quorum_adamw`, a thread per value.
pub(crate) fn step_gpu<D: Device>(
    gpu: &Gpu<D>,
    param: &mut D::Mem,
    grad: &D::Mem,
    m: &mut D::Mem,
    v: &mut D::Mem,
    len: usize,
    s: AdamWStep,
) -> Result<()> {
    check_buffers(&*param, grad, &*m, &*v, len, |what, b, need| gpu.check(OP, what, b, need))?;
    let (c1, c2) = bias_corrections(s);
    let dev = gpu.device();
    let p = AdamWParams {
        param: dev.ptr_mut(param),
        grad: dev.ptr(grad),
        m: dev.ptr_mut(m),
        v: dev.ptr_mut(v),
        n: gpu.int(OP, len)?,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
        grad_scale: s.grad_scale,
        c1,
        c2,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(len)?, &p) }
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<AdamWParams>()]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{
        self, data, each_short_buffer_is_named, emulator_gives_the_cpus_bits, read, wide,
    };
    use crate::backend::Train;
    use crate::Cpu;

    /// Within 1e-5 of the reference, the bound the CPU's AdamW test held
    /// before the move (values of order 1, three f32 steps).
    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let d = (f64::from(*g) - w).abs();
            assert!(d < 1e-5, "{what}: |{g} - {w}| = {d:e} at {i}");
        }
    }

    /// Lengths: one value, odd tails, more than two CPU chunks, and past one
    /// pass of the largest elementwise grid (1024 blocks of 256 threads).
    const LENS: [usize; 5] = [1, 17, 1000, 2 * ELEM_CHUNK + 5, 1024 * 256 + 33];

    /// Three steps (step 0 taken as 1, then 2 and 3; weight decay off in the
    /// middle one) from nonzero moments.
    fn steps() -> [AdamWStep; 3] {
        let s =
            AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, step: 0, grad_scale: 0.5 };
        [s, AdamWStep { step: 2, weight_decay: 0.0, ..s }, AdamWStep { step: 3, ..s }]
    }

    /// The steps on `be`, through the trait, against the reference; returns
    /// the bits of param, m and v for comparing backends.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &len) in LENS.iter().enumerate() {
            let seed = 10 * i as u64;
            let p0 = data(len, seed + 1, 5.0);
            let m0 = data(len, seed + 2, 0.01);
            let v0: Vec<f32> = data(len, seed + 3, 1e-4).iter().map(|v| v.abs()).collect();
            let (mut p, mut m, mut v) = (be.upload(&p0).unwrap(), be.upload(&m0).unwrap(), be.upload(&v0).unwrap());
            let (mut wp, mut wm, mut wv) = (wide(&p0), wide(&m0), wide(&v0));
            for (t, s) in steps().into_iter().enumerate() {
                let grad = data(len, seed + 4 + t as u64, 2.0);
                be.adamw(&mut p, &be.upload(&grad).unwrap(), &mut m, &mut v, len, s).unwrap();
                reference_step(&mut wp, &wide(&grad), &mut wm, &mut wv, s);
            }
            for (name, buf, want) in [("param", &p, &wp), ("m", &m, &wm), ("v", &v, &wv)] {
                let got = read(be, buf, len);
                assert_close(&format!("{what} {len}: {name}"), &got, want);
                bits.push(testing::bits(&got));
            }
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_and_each_other_bit_for_bit() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn reference_first_step_moves_by_lr_and_counts_step_zero_as_one() {
        let s = steps()[0];
        let first = |step: u32| {
            let (mut p, mut m, mut v) = (vec![1.0], vec![0.0], vec![0.0]);
            reference_step(&mut p, &[0.3], &mut m, &mut v, AdamWStep { step, ..s });
            (p[0], m[0], v[0])
        };
        assert_eq!(first(0), first(1));
        // From zero moments the bias-corrected m̂ / √v̂ is sign(g), so the
        // first step moves p by lr·(weight_decay·p + 1).
        let p = first(1).0;
        assert!((p - (1.0 - 0.01 * (0.1 + 1.0))).abs() < 1e-6, "{p}");
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let s = steps()[0];
            let run = |n: [usize; 4]| be.adamw(&mut z(n[0]), &z(n[1]), &mut z(n[2]), &mut z(n[3]), 8, s);
            each_short_buffer_is_named(be.name(), "adamw", ["param", "grad", "m", "v"], [8; 4], run);
            be.adamw(&mut z(0), &z(0), &mut z(0), &mut z(0), 0, s).unwrap();
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }
}
