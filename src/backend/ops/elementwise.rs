//! The training ops that map flat buffers value by value, `dst op= src`
//! over the first `len` values: `copy`, `add`, `mul` (the dropout mask),
//! `fill`, `gelu` (exact form, `0.5·x·(1 + erf(x/√2))`) and
//! `gelu_backward` (`dy *= GELU'(pre) = Φ(pre) + pre·φ(pre)`).
//!
//! Every piece of these ops but their signatures (`Train::copy`, `add`,
//! `mul`, `gelu`, `gelu_backward`, `fill`) and their kernel
//! (`kernels/elementwise_map.cu`, one kernel for all six):
//! - the shape checks, one table of each op's buffers for both backends;
//! - the reference, plain f64 loops (with an f64 erf) the tests compare with;
//! - the CPU: plain loops, or the backend's `axpy` and polynomial
//!   erf/exp for GELU, in chunks of `ELEM_CHUNK` on rayon's threads (each
//!   value alone, so the bits do not depend on the split);
//! - the GPU: the kernel's parameter struct and its launch (grid-stride, a
//!   thread per value, `launch::elementwise`);
//! - the tests: the CPU and the emulator against the reference, copy, add,
//!   mul and fill bit for bit between them; the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a GPU
//! through `tests/common/train_elementwise.rs` (`map_ops`,
//! `short_buffers_are_errors`); by finite differences (`train_ops`).

use multiversion::multiversion;
use rayon::prelude::*;

use crate::backend::cpu::simd;
use crate::backend::cpu::{check_len, ELEM_CHUNK, PAR_MIN_ELEMS};
use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::error::Result;

/// One of the ops, `dst op= src`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Map {
    /// `dst = src`
    Copy,
    /// `dst += src`
    Add,
    /// `dst *= src`
    Mul,
    /// `dst = value` (no `src`)
    Fill(f32),
    /// `dst = GELU(src)`
    Gelu,
    /// `dst *= GELU'(src)`
    GeluBackward,
}

/// Which of the two buffers an op's buffer name stands for.
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

impl Map {
    /// The op's name in errors, as `Train` names it.
    fn name(self) -> &'static str {
        match self {
            Map::Copy => "copy",
            Map::Add => "add",
            Map::Mul => "mul",
            Map::Fill(_) => "fill",
            Map::Gelu => "gelu",
            Map::GeluBackward => "gelu_backward",
        }
    }

    /// The op's buffers by their `Train` names, in the order they are checked.
    fn buffers(self) -> &'static [(&'static str, Side)] {
        match self {
            Map::Copy | Map::Add => &[("src", Side::Src), ("dst", Side::Dst)],
            Map::Mul => &[("x", Side::Dst), ("mask", Side::Src)],
            Map::Fill(_) => &[("x", Side::Dst)],
            Map::Gelu => &[("x", Side::Src), ("y", Side::Dst)],
            Map::GeluBackward => &[("pre", Side::Src), ("dy", Side::Dst)],
        }
    }
}

// ------------------------------------------------------------------ shapes

/// The op's buffers, each holding at least `len` values; `src` is `None`
/// only for `fill`, which reads none.
fn check_buffers<B: ?Sized>(
    op: Map,
    src: Option<&B>,
    dst: &B,
    len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    for &(what, side) in op.buffers() {
        match (side, src) {
            (Side::Dst, _) => check(what, dst, len)?,
            (Side::Src, Some(src)) => check(what, src, len)?,
            (Side::Src, None) => {}
        }
    }
    Ok(())
}

// --------------------------------------------------------------- reference

/// erf in f64: its Maclaurin series, summed until the terms vanish, up to
/// |x| = 3 (where cancellation costs about 4 of f64's 16 digits); erfc's
/// continued fraction beyond.
fn reference_erf(x: f64) -> f64 {
    if x.abs() > 3.0 {
        // Out here the series cancels catastrophically (its terms reach
        // e^(x²)): erfc's continued fraction instead, evaluated from the
        // back, f64-exact from 3 on: erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + ³⁄₂/…))).
        let a = x.abs();
        let t = (1..=80).rev().fold(a, |t, n| a + f64::from(n) / 2.0 / t);
        return (1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)).copysign(x);
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// The op in f64 over whole slices: `dst op= src` (`src` unread by `fill`).
pub fn reference(op: Map, src: &[f64], dst: &mut [f64]) {
    let cdf = |x: f64| 0.5 * (1.0 + reference_erf(x / std::f64::consts::SQRT_2));
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    for (i, d) in dst.iter_mut().enumerate() {
        *d = match op {
            Map::Copy => src[i],
            Map::Add => *d + src[i],
            Map::Mul => *d * src[i],
            Map::Fill(v) => f64::from(v),
            Map::Gelu => src[i] * cdf(src[i]),
            Map::GeluBackward => *d * (cdf(src[i]) + src[i] * pdf(src[i])),
        };
    }
}

// --------------------------------------------------------------------- CPU

/// `dy *= GELU'(x) = Φ(x) + x·φ(x)`, with the forward's erf and the backend's exp.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_backward_chunk(pre: &[f32], dy: &mut [f32]) {
    for (d, &x) in dy.iter_mut().zip(pre) {
        let cdf = 0.5 * (1.0 + simd::erf(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = simd::exp(-0.5 * x * x) * 0.398_942_3;
        *d *= cdf + x * pdf;
    }
}

/// `Train::copy`, `add`, `mul`, `fill`, `gelu` and `gelu_backward` on the
/// CPU; `src` is `None` only for `fill`.
pub(crate) fn map_cpu(op: Map, src: Option<&[f32]>, dst: &mut [f32], len: usize) -> Result<()> {
    check_buffers(op, src, dst, len, |what, b: &[f32], need| check_len(op.name(), what, b.len(), need))?;
    let dst = &mut dst[..len];
    let src = src.map_or(&[][..], |s| &s[..len]);
    // GELU and its backward split only above PAR_MIN_ELEMS: their cost per
    // value is worth a thread only in bulk.
    let gelu_parallel = len >= PAR_MIN_ELEMS;
    match op {
        Map::Copy => dst.copy_from_slice(src),
        Map::Add => {
            dst.par_chunks_mut(ELEM_CHUNK).zip(src.par_chunks(ELEM_CHUNK)).for_each(|(d, s)| simd::axpy(1.0, s, d))
        }
        Map::Mul => dst.par_chunks_mut(ELEM_CHUNK).zip(src.par_chunks(ELEM_CHUNK)).for_each(|(x, m)| {
            x.iter_mut().zip(m).for_each(|(a, b)| *a *= b);
        }),
        Map::Fill(value) => dst.fill(value),
        Map::Gelu => {
            dst.copy_from_slice(src);
            if gelu_parallel {
                dst.par_chunks_mut(ELEM_CHUNK).for_each(simd::gelu_inplace);
            } else {
                simd::gelu_inplace(dst);
            }
        }
        Map::GeluBackward => {
            if gelu_parallel {
                dst.par_chunks_mut(ELEM_CHUNK)
                    .zip(src.par_chunks(ELEM_CHUNK))
                    .for_each(|(d, p)| gelu_backward_chunk(p, d));
            } else {
                gelu_backward_chunk(src, dst);
            }
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/elementwise_map.cu` TrainMapParams: `dst op= src` (`op` a TRAIN_MAP_* code).
    TrainMapParams => TrainMap { src: u64, dst: u64, n: i32, op: i32, value: f32, _pad: i32 }
);

/// The kernel's `op` (elementwise_map.cu TRAIN_MAP_*) and `value`.
fn kernel_op(op: Map) -> (i32, f32) {
    match op {
        Map::Copy => (0, 0.0),
        Map::Add => (1, 0.0),
        Map::Mul => (2, 0.0),
        Map::Fill(value) => (3, value),
        Map::Gelu => (4, 0.0),
        Map::GeluBackward => (5, 0.0),
    }
}

/// `Train::copy`, `add`, `mul`, `fill`, `gelu` and `gelu_backward` on a
/// `Gpu`: one launch of `quorum_train_map`, a thread per value; `src` is
/// `None` only for `fill`.
pub(crate) fn map_gpu<D: Device>(
    gpu: &Gpu<D>,
    op: Map,
    src: Option<&D::Mem>,
    dst: &mut D::Mem,
    len: usize,
) -> Result<()> {
    check_buffers(op, src, &*dst, len, |what, m, need| gpu.check(op.name(), what, m, need))?;
    let dev = gpu.device();
    let (code, value) = kernel_op(op);
    let p = TrainMapParams {
        src: src.map_or(0, |s| dev.ptr(s)),
        dst: dev.ptr_mut(dst),
        n: gpu.int(op.name(), len)?,
        op: code,
        value,
        _pad: 0,
    };
    // SAFETY: sizes checked above; `fill` reads no `src`.
    unsafe { dev.launch(launch::elementwise(len)?, &p) }
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<TrainMapParams>()]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{assert_close, data, emulator_gives_the_cpus_bits, wide};
    use crate::backend::Train;
    use crate::Cpu;

    const OPS: [Map; 6] = [Map::Copy, Map::Add, Map::Mul, Map::Fill(-0.75), Map::Gelu, Map::GeluBackward];

    /// `op` through its `Train` method (`fill` ignores `s`).
    fn apply<B: Train>(be: &B, op: Map, s: &B::Buf, d: &mut B::Buf, len: usize) -> Result<()> {
        match op {
            Map::Copy => be.copy(s, d, len),
            Map::Add => be.add(d, s, len),
            Map::Mul => be.mul(d, s, len),
            Map::Fill(value) => be.fill(d, len, value),
            Map::Gelu => be.gelu(s, d, len),
            Map::GeluBackward => be.gelu_backward(s, d, len),
        }
    }

    /// Lengths: one value, odd tails, past the CPU's parallel threshold and
    /// past one pass of the largest elementwise grid (1024 blocks of 256).
    const LENS: [usize; 4] = [1, 17, PAR_MIN_ELEMS + 5, 1024 * 256 + 33];

    /// Each op on `be`, through the trait, over the first `len` of `len + 1`
    /// values, against the reference (the last value must stay); returns the
    /// bits of the exact ops (copy, add, mul, fill) for comparing backends.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &len) in LENS.iter().enumerate() {
            let (src, dst0) = (data(len + 1, 2 * i as u64 + 1, 4.0), data(len + 1, 2 * i as u64 + 2, 2.0));
            for op in OPS {
                let what = format!("{what} {op:?} {len}");
                let mut d = be.upload(&dst0).unwrap();
                apply(be, op, &be.upload(&src).unwrap(), &mut d, len).unwrap();
                let mut got = vec![0f32; len + 1];
                be.read(&d, &mut got).unwrap();
                assert_eq!(got[len], dst0[len], "{what}: wrote past len");
                let mut want = wide(&dst0[..len]);
                reference(op, &wide(&src[..len]), &mut want);
                assert_close(&what, &got[..len], &want);
                if !matches!(op, Map::Gelu | Map::GeluBackward) {
                    bits.push(got.iter().map(|x| x.to_bits()).collect());
                }
            }
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_and_each_other_bit_for_bit_where_exact() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn reference_erf_and_gelu_match_known_values() {
        // erf(0.5), erf(1), erf(2), erf(-3) to 15 digits by the series;
        // erf(4), erf(-5), erf(9) by the continued fraction (the series
        // would have lost 1e-5 at 5 and everything at 9: a conv's
        // pre-activations reach there).
        for (x, want) in [
            (0.5, 0.520_499_877_813_047),
            (1.0, 0.842_700_792_949_715),
            (2.0, 0.995_322_265_018_953),
            (-3.0, -0.999_977_909_503_001),
            (4.0, 0.999_999_984_582_742),
            (-5.0, -0.999_999_999_998_463),
            (9.0, 1.0),
        ] {
            assert!((reference_erf(x) - want).abs() < 1e-10, "erf({x}) = {} vs {want}", reference_erf(x));
        }
        // GELU(1) = Φ(1) = 0.841344746068543; GELU'(0) = 1/2.
        let mut y = [0.0, 1.0];
        reference(Map::Gelu, &[0.0, 1.0], &mut y);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 0.841_344_746_068_543).abs() < 1e-12, "{}", y[1]);
        let mut dy = [3.0];
        reference(Map::GeluBackward, &[0.0], &mut dy);
        assert!((dy[0] - 1.5).abs() < 1e-15, "{}", dy[0]);
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let len = 8;
            let call = |op: Map, src: usize, dst: usize| apply(be, op, &z(src), &mut z(dst), len);
            for op in OPS {
                call(op, len, len).unwrap();
                for &(what, side) in op.buffers() {
                    let (src, dst) = match side {
                        Side::Src => (len - 1, len),
                        Side::Dst => (len, len - 1),
                    };
                    let err = call(op, src, dst).unwrap_err().to_string();
                    assert!(err.contains(&format!("{}: buffer {what} ", op.name())), "{}: {err}", be.name());
                }
            }
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }
}
