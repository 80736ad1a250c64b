//! The broadcast add `x (outer, inner, dim) += src` (`BroadcastShape`),
//! `src` one row per sample (`(outer, dim)`, `per_outer`) or one table shared
//! by every sample (`(inner, dim)`: position embeddings); and its backward
//! for the source, `dsrc += Σ dx` over the broadcast axis.
//!
//! Every piece of the op but its signatures (`Backend::broadcast_add`,
//! `Train::broadcast_add_backward`, with `BroadcastShape`) and its kernels
//! (`kernels/broadcast_add.cu`):
//! - the shape checks, one list per call for both backends;
//! - the reference, plain f64 loops the tests compare with;
//! - the CPU: plain loops, the backward summing samples, then tokens, in
//!   order (the kernel's order, so CPU and GPU agree bit for bit);
//! - the GPU: the two kernels' parameter structs and launches (grid-stride,
//!   a thread per value of `x`, then of `dsrc`, `launch::elementwise`);
//! - the tests: the CPU and the emulator against the reference, and each
//!   other bit for bit in every thread order, both layouts; the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/kernels.rs` (`elementwise_ops`) and
//! `tests/common/train_elementwise.rs` (`broadcast_add_backward_bits`,
//! `reduction_bits`, `short_buffers_are_errors`); by finite differences
//! (`train_ops`).

use crate::backend::cpu::check_len;
use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::backend::BroadcastShape;
use crate::error::Result;

const OP: &str = "broadcast_add";
const OP_BACKWARD: &str = "broadcast_add_backward";

// ------------------------------------------------------------------ shapes

/// Values of `x` (and `dx`), and of `src` (and `dsrc`).
fn sizes(s: BroadcastShape) -> (usize, usize) {
    let src_rows = if s.per_outer { s.outer } else { s.inner };
    (s.outer * s.inner * s.dim, src_rows * s.dim)
}

/// The forward's buffers and the values each must hold, checked in this order.
fn check_forward<B: ?Sized>(
    x: &B,
    src: &B,
    s: BroadcastShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (nx, nsrc) = sizes(s);
    check("x", x, nx)?;
    check("src", src, nsrc)
}

/// The backward's buffers and the values each must hold, checked in this order.
fn check_backward<B: ?Sized>(
    dx: &B,
    dsrc: &B,
    s: BroadcastShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (nx, nsrc) = sizes(s);
    check("dx", dx, nx)?;
    check("dsrc", dsrc, nsrc)
}

// --------------------------------------------------------------- reference

/// The row of `src` that row `t` of sample `o` adds.
fn src_row(s: BroadcastShape, o: usize, t: usize) -> usize {
    if s.per_outer {
        o
    } else {
        t
    }
}

/// The forward in f64: `x + src` broadcast, `(outer, inner, dim)`.
pub fn reference_forward(x: &[f64], src: &[f64], s: BroadcastShape) -> Vec<f64> {
    let mut y = x[..sizes(s).0].to_vec();
    for o in 0..s.outer {
        for t in 0..s.inner {
            let r = src_row(s, o, t);
            for i in 0..s.dim {
                y[(o * s.inner + t) * s.dim + i] += src[r * s.dim + i];
            }
        }
    }
    y
}

/// The backward in f64: `Σ dx` over the broadcast axis, the shape of `src`
/// (not added into anything).
pub fn reference_backward(dx: &[f64], s: BroadcastShape) -> Vec<f64> {
    let mut dsrc = vec![0.0; sizes(s).1];
    for o in 0..s.outer {
        for t in 0..s.inner {
            let r = src_row(s, o, t);
            for i in 0..s.dim {
                dsrc[r * s.dim + i] += dx[(o * s.inner + t) * s.dim + i];
            }
        }
    }
    dsrc
}

// --------------------------------------------------------------------- CPU

/// `Backend::broadcast_add` on the CPU.
pub(crate) fn forward_cpu(x: &mut [f32], src: &[f32], s: BroadcastShape) -> Result<()> {
    check_forward(&*x, src, s, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    if s.outer * s.inner * s.dim == 0 {
        return Ok(());
    }
    for (o, block) in x[..s.outer * s.inner * s.dim].chunks_mut(s.inner * s.dim).enumerate() {
        for (t, row) in block.chunks_mut(s.dim).enumerate() {
            let r = if s.per_outer { o } else { t };
            row.iter_mut().zip(&src[r * s.dim..(r + 1) * s.dim]).for_each(|(v, a)| *v += a);
        }
    }
    Ok(())
}

/// `Train::broadcast_add_backward` on the CPU: samples, then tokens, in order.
pub(crate) fn backward_cpu(dx: &[f32], dsrc: &mut [f32], s: BroadcastShape) -> Result<()> {
    check_backward(dx, &*dsrc, s, |what, b: &[f32], need| check_len(OP_BACKWARD, what, b.len(), need))?;
    if s.outer * s.inner * s.dim == 0 {
        // Nothing broadcast: nothing to add back.
        return Ok(());
    }
    for (o, block) in dx[..s.outer * s.inner * s.dim].chunks(s.inner * s.dim).enumerate() {
        for (t, row) in block.chunks(s.dim).enumerate() {
            let r = if s.per_outer { o } else { t };
            dsrc[r * s.dim..(r + 1) * s.dim].iter_mut().zip(row).for_each(|(a, g)| *a += g);
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/broadcast_add.cu` BroadcastAddParams
    BroadcastAddParams => BroadcastAdd { x: u64, src: u64, outer: i32, inner: i32, dim: i32, per_outer: i32 }
);
params!(
    /// `kernels/broadcast_add.cu` BroadcastBackwardParams
    BroadcastBackwardParams => BroadcastAddBackward { dx: u64, dsrc: u64, outer: i32, inner: i32, dim: i32, per_outer: i32 }
);

/// `Backend::broadcast_add` on a `Gpu`: one launch of `quorum_broadcast_add`.
pub(crate) fn forward_gpu<D: Device>(gpu: &Gpu<D>, x: &mut D::Mem, src: &D::Mem, s: BroadcastShape) -> Result<()> {
    check_forward(&*x, src, s, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let p = BroadcastAddParams {
        x: dev.ptr_mut(x),
        src: dev.ptr(src),
        outer: gpu.int(OP, s.outer)?,
        inner: gpu.int(OP, s.inner)?,
        dim: gpu.int(OP, s.dim)?,
        per_outer: i32::from(s.per_outer),
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(s.outer * s.inner * s.dim)?, &p) }
}

/// `Train::broadcast_add_backward` on a `Gpu`: one launch of
/// `quorum_broadcast_add_backward`, a thread per value of `dsrc`.
pub(crate) fn backward_gpu<D: Device>(gpu: &Gpu<D>, dx: &D::Mem, dsrc: &mut D::Mem, s: BroadcastShape) -> Result<()> {
    let op = OP_BACKWARD;
    check_backward(dx, &*dsrc, s, |what, m, need| gpu.check(op, what, m, need))?;
    gpu.int(op, s.outer * s.inner * s.dim)?;
    let dev = gpu.device();
    let p = BroadcastBackwardParams {
        dx: dev.ptr(dx),
        dsrc: dev.ptr_mut(dsrc),
        outer: gpu.int(op, s.outer)?,
        inner: gpu.int(op, s.inner)?,
        dim: gpu.int(op, s.dim)?,
        per_outer: i32::from(s.per_outer),
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(sizes(s).1)?, &p) }
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<BroadcastAddParams>(), c_size_agrees::<BroadcastBackwardParams>()]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::testing::{
        added, data, each_short_buffer_is_named, emulator_gives_the_cpus_bits, read_close, wide,
    };
    use crate::backend::Train;
    use crate::Cpu;

    /// (outer, inner, dim, per_outer): both layouts, a single sample, a
    /// single token, odd sizes, more values than one launch's threads.
    const SHAPES: [(usize, usize, usize, bool); 6] =
        [(3, 5, 7, true), (3, 5, 7, false), (1, 9, 4, false), (4, 1, 3, true), (17, 50, 64, false), (17, 50, 64, true)];

    fn shape(&(outer, inner, dim, per_outer): &(usize, usize, usize, bool)) -> BroadcastShape {
        BroadcastShape { outer, inner, dim, per_outer }
    }

    /// Every shape's forward (`x + src`) and backward (`dsrc` from a
    /// non-zero start, which it is added into) on `be`, checked against the
    /// reference; their bits.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, sh) in SHAPES.iter().enumerate() {
            let s = shape(sh);
            let (nx, nsrc) = sizes(s);
            let seed = 10 * i as u64;
            let (x, src, dx, d0) =
                (data(nx, seed, 1.0), data(nsrc, seed + 1, 1.0), data(nx, seed + 2, 1.0), data(nsrc, seed + 3, 0.5));
            let mut xb = be.upload(&x).unwrap();
            be.broadcast_add(&mut xb, &be.upload(&src).unwrap(), s).unwrap();
            bits.push(read_close(be, &xb, &format!("{what} {s:?}: x"), &reference_forward(&wide(&x), &wide(&src), s)));
            let mut db = be.upload(&d0).unwrap();
            be.broadcast_add_backward(&be.upload(&dx).unwrap(), &mut db, s).unwrap();
            let want = added(&d0, &reference_backward(&wide(&dx), s));
            bits.push(read_close(be, &db, &format!("{what} {s:?}: dsrc"), &want));
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_and_each_other_bit_for_bit() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            for per_outer in [true, false] {
                let s = BroadcastShape { outer: 2, inner: 3, dim: 4, per_outer };
                let (nx, nsrc) = sizes(s);
                let z = |n: usize| be.alloc(n).unwrap();
                let fwd = |n: [usize; 2]| be.broadcast_add(&mut z(n[0]), &z(n[1]), s);
                let bwd = |n: [usize; 2]| be.broadcast_add_backward(&z(n[0]), &mut z(n[1]), s);
                each_short_buffer_is_named(be.name(), "broadcast_add", ["x", "src"], [nx, nsrc], fwd);
                each_short_buffer_is_named(be.name(), "broadcast_add_backward", ["dx", "dsrc"], [nx, nsrc], bwd);
            }
        }
        refuses(&Cpu::new());
        refuses(&crate::backend::gpu::Gpu::new(crate::backend::gpu::Emu::new()));
    }

    #[test]
    fn parameter_structs_have_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<BroadcastAddParams>(), 2 * 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<BroadcastBackwardParams>(), 2 * 8 + 4 * 4);
    }
}
