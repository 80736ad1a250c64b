//! `Σ x²` over the first `len` values, accumulated in f64 (the global
//! gradient norm for clipping), in a fixed order on each backend so the
//! same gradients give the same bits whatever the scheduling (the two
//! backends' orders differ, so their sums agree to f64 rounding only).
//!
//! Every piece of the op but its signature (`Train::sum_squares`) and its
//! kernel (`kernels/sum_squares.cu`):
//! - the shape check, one for both backends;
//! - the reference, a plain f64 sum in order;
//! - the CPU: chunk sums on rayon's threads, added in chunk order;
//! - the GPU: per-block partials (grid a function of `len` alone) read back
//!   through the backend's scratch and added in block order on the host;
//!   the kernel's parameter struct, block count and launch;
//! - the tests: the CPU and the emulator against the reference, the
//!   emulator's bits the same in every thread order, the refusal, the
//!   block count.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/train_elementwise.rs` (`sum_squares_close`,
//! `reduction_bits`).

use rayon::prelude::*;

use crate::backend::cpu::{check_len, ELEM_CHUNK};
use crate::backend::gpu::launch::cfg;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{f64_from_words, Device, Gpu};
use crate::error::Result;

const OP: &str = "sum_squares";

/// The sum in f64, in order.
pub fn reference(x: &[f32], len: usize) -> f64 {
    x[..len].iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// `Train::sum_squares` on the CPU.
pub(crate) fn sum_cpu(x: &[f32], len: usize) -> Result<f64> {
    check_len(OP, "x", x.len(), len)?;
    // Chunk sums in a fixed order, so the result does not depend on scheduling.
    let partial: Vec<f64> =
        x[..len].par_chunks(ELEM_CHUNK).map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect();
    Ok(partial.iter().sum())
}

params!(
    /// `kernels/sum_squares.cu` SumSquaresParams: block b's f64 partial as words 2b, 2b+1.
    SumSquaresParams => SumSquares { x: u64, partials: u64, n: i32, _pad: i32 }
);

/// sum_squares.cu SUMSQ_THREADS; at most `SUMSQ_MAX_BLOCKS` partials (read
/// into a stack array), each block summing at least a few thousand values.
const SUMSQ_THREADS: u32 = 256;
const SUMSQ_MAX_BLOCKS: usize = 512;
const SUMSQ_PER_BLOCK: usize = 8 * SUMSQ_THREADS as usize;

/// `quorum_sum_squares`: blocks (the number of partials) as a function of `n` alone.
fn blocks(n: usize) -> usize {
    n.div_ceil(SUMSQ_PER_BLOCK).clamp(1, SUMSQ_MAX_BLOCKS)
}

/// `Train::sum_squares` on a `Gpu`: per-block f64 partials through the
/// scratch buffer, added on the host in block order.
pub(crate) fn sum_gpu<D: Device>(gpu: &Gpu<D>, x: &D::Mem, len: usize) -> Result<f64> {
    gpu.check(OP, "x", x, len)?;
    let blocks = blocks(len);
    let n = gpu.int(OP, len)?;
    let mut words = [0f32; 2 * SUMSQ_MAX_BLOCKS];
    let words = &mut words[..2 * blocks];
    let dev = gpu.device();
    gpu.with_scratch(2 * blocks, |scratch| {
        let p = SumSquaresParams { x: dev.ptr(x), partials: dev.ptr_mut(scratch), n, _pad: 0 };
        // SAFETY: x checked above; the scratch holds 2·blocks values.
        unsafe { dev.launch(cfg([blocks, 1, 1], SUMSQ_THREADS, 0)?, &p)? };
        dev.read(scratch, words)
    })?;
    Ok(words.chunks(2).map(|w| f64_from_words(w[0], w[1])).sum())
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<SumSquaresParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::{Emu, ThreadOrder};
    use crate::backend::ops::testing::data;
    use crate::backend::{Backend, Train};
    use crate::Cpu;

    /// Nothing, one value, around a warp and a block's share, past the
    /// CPU's chunks and the GPU's largest grid.
    const LENS: [usize; 7] = [0, 1, 31, 2049, 40_000, 70_000, 1_100_003];

    /// Every length's sum on `be` against the reference (f64 rounding of
    /// another order: 1e-12 relative); the bits.
    fn run<B: Train>(be: &B, what: &str) -> Vec<u64> {
        LENS.iter()
            .map(|&len| {
                let x = data(len + 3, len as u64 + 5, 3.0);
                let got = be.sum_squares(&be.upload(&x).unwrap(), len).unwrap();
                let want = reference(&x, len);
                assert!((got - want).abs() <= 1e-12 * want, "{what} {len}: {got} vs {want}");
                got.to_bits()
            })
            .collect()
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_with_the_same_bits_in_every_thread_order() {
        run(&Cpu::new(), "cpu");
        let first = run(&Gpu::new(Emu::with_order(ThreadOrder::Alternate)), "emu");
        for order in [ThreadOrder::Forward, ThreadOrder::Reverse] {
            assert_eq!(run(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}")), first, "{order:?}");
        }
    }

    #[test]
    fn a_short_buffer_is_refused_by_both_backends() {
        // Moved from cpu/train.rs (the CPU's half), with the emulator's.
        let x = vec![1f32; 50_000];
        let err = Cpu::new().sum_squares(&x, 60_000).unwrap_err().to_string();
        assert!(err.contains("sum_squares: buffer x "), "{err}");
        let gpu = Gpu::new(Emu::new());
        let err = gpu.sum_squares(&gpu.upload(&x).unwrap(), 60_000).unwrap_err().to_string();
        assert!(err.contains("sum_squares: buffer x "), "{err}");
    }

    #[test]
    fn the_cpu_sums_exactly_representable_squares_exactly() {
        // Moved from cpu/train.rs.
        let x: Vec<f32> = (0..50_000).map(|i| (i % 10) as f32).collect();
        let want: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
        assert_eq!(Cpu::new().sum_squares(&x, x.len()).unwrap(), want);
    }

    #[test]
    fn block_count() {
        // Moved from gpu/train/elementwise.rs.
        assert_eq!(blocks(0), 1);
        assert_eq!(blocks(70_000), 35);
        assert_eq!(blocks(1 << 30), SUMSQ_MAX_BLOCKS);
    }
}
