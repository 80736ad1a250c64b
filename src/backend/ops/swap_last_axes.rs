//! Swapping the last two axes, `dst (outer, cols, rows) = src (outer, rows,
//! cols)` with `(r, c) → (c, r)` in each plane, or `+=` when `accumulate`:
//! TLOB's relabeling of `spatial.proj` between PyTorch's flattening and
//! ours (and back, added, for its gradient); on the GPU also the f32
//! `prepare_linear_from` (a weight's transpose after each optimizer step,
//! from `gpu/train/layout.rs`), so weights never round-trip through the host.
//!
//! Every piece of the op but its signature (`Train::swap_last_axes`) and its
//! kernel (`kernels/swap_last_axes.cu`):
//! - the shape checks, one list for both backends;
//! - the reference, a plain loop (a permutation: exact, so every backend
//!   gives its bits);
//! - the CPU: the same loop over the planes;
//! - the GPU: the kernel's parameter struct, launch rule (a 32×32 tile of a
//!   plane per block, planes along z) and launch;
//! - the tests: the CPU and the emulator against the reference bit for bit
//!   in every thread order, written and added; the refusals; the launch rule.
//!
//! Also exercised from `tests/`: on every backend by `train_ops`
//! (`swap_last_axes` twice is the identity, added into a start), and through
//! `prepare_linear_from` (`prepare_from_matches_prepare`).

use crate::backend::cpu::check_len;
use crate::backend::gpu::launch::{cfg, err};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig};
use crate::error::Result;

pub(crate) const OP: &str = "swap_last_axes";

/// The buffers and the values each must hold, checked in this order.
fn check_buffers<B: ?Sized>(
    src: &B,
    dst: &B,
    outer: usize,
    rows: usize,
    cols: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let n = outer * rows * cols;
    check("src", src, n)?;
    check("dst", dst, n)
}

/// The op on plain vectors: `dst` with `src`'s planes transposed into (or,
/// when `accumulate`, added to) it.
pub fn reference(src: &[f32], dst: &[f32], outer: usize, rows: usize, cols: usize, accumulate: bool) -> Vec<f32> {
    let mut out = dst[..outer * rows * cols].to_vec();
    for o in 0..outer {
        for r in 0..rows {
            for c in 0..cols {
                let v = src[(o * rows + r) * cols + c];
                let at = &mut out[(o * cols + c) * rows + r];
                *at = if accumulate { *at + v } else { v };
            }
        }
    }
    out
}

/// `Train::swap_last_axes` on the CPU.
pub(crate) fn swap_cpu(
    src: &[f32],
    dst: &mut [f32],
    outer: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    check_buffers(src, &*dst, outer, rows, cols, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    let plane = rows * cols;
    for (s, d) in src[..outer * plane].chunks_exact(plane.max(1)).zip(dst.chunks_exact_mut(plane.max(1))) {
        for r in 0..rows {
            for c in 0..cols {
                let v = s[r * cols + c];
                let at = &mut d[c * rows + r];
                *at = if accumulate { *at + v } else { v };
            }
        }
    }
    Ok(())
}

params!(
    /// `kernels/swap_last_axes.cu` SwapLastAxesParams
    SwapLastAxesParams => SwapLastAxes { src: u64, dst: u64, outer: i32, rows: i32, cols: i32, accumulate: i32 }
);

/// `quorum_swap_last_axes`: one 32×8-thread block per 32×32 tile of each plane.
pub fn launch_cfg(outer: usize, rows: usize, cols: usize) -> Result<LaunchConfig> {
    if outer == 0 {
        return Err(err("swap_last_axes: zero planes".into()));
    }
    let mut c = cfg([cols.div_ceil(32).max(1), rows.div_ceil(32).max(1), outer], 32, 0)?;
    c.block = [32, 8, 1];
    Ok(c)
}

/// `Train::swap_last_axes` on a `Gpu` (and the f32 `prepare_linear_from`,
/// whose name `op` gives the errors): one launch of `quorum_swap_last_axes`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn swap_gpu<D: Device>(
    gpu: &Gpu<D>,
    op: &str,
    src: &D::Mem,
    dst: &mut D::Mem,
    outer: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    check_buffers(src, &*dst, outer, rows, cols, |what, m, need| gpu.check(op, what, m, need))?;
    if outer * rows * cols == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    let p = SwapLastAxesParams {
        src: dev.ptr(src),
        dst: dev.ptr_mut(dst),
        outer: gpu.int(op, outer)?,
        rows: gpu.int(op, rows)?,
        cols: gpu.int(op, cols)?,
        accumulate: i32::from(accumulate),
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch_cfg(outer, rows, cols)?, &p) }
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<SwapLastAxesParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::testing::{data, each_short_buffer_is_named, emulator_gives_the_cpus_bits};
    use crate::backend::Train;
    use crate::Cpu;

    /// (outer, rows, cols): one plane, partial tiles, a plane smaller than
    /// a tile, TLOB's (batch, 40, 64)-like planes, empty.
    const SHAPES: [(usize, usize, usize); 6] = [(1, 1, 1), (1, 33, 65), (3, 5, 7), (4, 40, 64), (2, 0, 3), (0, 4, 4)];

    /// Every shape written and added on `be`, against the reference bit for
    /// bit (over a buffer one longer, whose last value must stay); the bits.
    fn run<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &(outer, rows, cols)) in SHAPES.iter().enumerate() {
            let n = outer * rows * cols;
            let (src, start) = (data(n, 2 * i as u64, 1.0), data(n + 1, 2 * i as u64 + 1, 1.0));
            for accumulate in [false, true] {
                let mut d = be.upload(&start).unwrap();
                be.swap_last_axes(&be.upload(&src).unwrap(), &mut d, outer, rows, cols, accumulate).unwrap();
                let mut got = vec![0f32; n + 1];
                be.read(&d, &mut got).unwrap();
                let mut want = reference(&src, &start, outer, rows, cols, accumulate);
                want.push(start[n]);
                let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits_of(&got), bits_of(&want), "{what} ({outer}, {rows}, {cols}) accumulate {accumulate}");
                bits.push(bits_of(&got));
            }
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_give_the_references_bits() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let call = |n: [usize; 2]| be.swap_last_axes(&z(n[0]), &mut z(n[1]), 2, 3, 4, false);
            each_short_buffer_is_named(be.name(), "swap_last_axes", ["src", "dst"], [24, 24], call);
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(crate::backend::gpu::Emu::new()));
    }

    #[test]
    fn tiles_cover_every_plane() {
        // Moved from gpu/train/layout.rs.
        let c = launch_cfg(3, 33, 65).unwrap();
        assert_eq!(c.grid, [3, 2, 3]);
        assert_eq!(c.block, [32, 8, 1]);
        assert!(launch_cfg(70_000, 1, 1).is_err(), "grid.z above 65535");
    }
}
