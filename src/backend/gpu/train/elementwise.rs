//! Training ops over flat buffers: dropout masks, sums of squares, the bias
//! backward (kernels/train_elementwise.cu).
//!
//! What comes back to the host (the sum of squares' per-block partials) goes
//! through the backend's scratch buffer; the bias backward keeps its
//! per-chunk partials there between its two launches.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backend::gpu::device::LaunchConfig;
use crate::backend::gpu::launch::{self, cfg};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{f64_from_words, Device, Gpu};
use crate::error::Result;

params!(
    /// `kernels/train_elementwise.cu` DropoutParams: ChaCha8 `key` words, stream id, drop threshold.
    DropoutParams => DropoutMask { mask: u64, stream: u64, cut: u64, key: [u32; 8], n: i32, keep: f32 }
);
params!(
    /// `kernels/train_elementwise.cu` SumSquaresParams: block b's f64 partial as words 2b, 2b+1.
    SumSquaresParams => SumSquares { x: u64, partials: u64, n: i32, _pad: i32 }
);
params!(
    /// `kernels/train_elementwise.cu` BiasPartialsParams: `part (chunks, n)` column sums of row chunks.
    BiasPartialsParams => BiasPartials { dy: u64, part: u64, rows: i32, n: i32, chunk: i32, _pad: i32 }
);
params!(
    /// `kernels/train_elementwise.cu` BiasFinishParams: `db += Σ_chunks part` in chunk order.
    BiasFinishParams => BiasFinish { part: u64, db: u64, chunks: i32, n: i32 }
);

/// train_elementwise.cu DROPOUT_THREADS and the mask values one block
/// covers per pass (16 ChaCha words per thread).
const DROPOUT_THREADS: u32 = 256;
const DROPOUT_TILE: usize = DROPOUT_THREADS as usize * 16;
/// train_elementwise.cu SUMSQ_THREADS; at most `SUMSQ_MAX_BLOCKS` partials
/// (read into a stack array), each block summing at least a few thousand values.
const SUMSQ_THREADS: u32 = 256;
const SUMSQ_MAX_BLOCKS: usize = 512;
const SUMSQ_PER_BLOCK: usize = 8 * SUMSQ_THREADS as usize;
/// Rows per partial sum of the bias backward: the CPU's chunk (grad.rs
/// ROW_CHUNK), so both sum in the same order and agree bit for bit.
const BIAS_ROW_CHUNK: usize = 64;
const BIAS_THREADS: u32 = 256;

/// quorum_dropout_mask: one 256-thread block per 4096 values per pass.
fn dropout(n: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(DROPOUT_TILE).clamp(1, 1024), 1, 1], DROPOUT_THREADS, 0)
}

/// quorum_sum_squares: blocks (the number of partials) as a function of `n` alone.
fn sum_squares_blocks(n: usize) -> usize {
    n.div_ceil(SUMSQ_PER_BLOCK).clamp(1, SUMSQ_MAX_BLOCKS)
}

/// quorum_bias_partials: a thread per (column, chunk of rows).
fn bias_partials(n: usize, chunks: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(BIAS_THREADS as usize).max(1), chunks.max(1), 1], BIAS_THREADS, 0)
}

impl<D: Device> Gpu<D> {
    /// The CPU's mask (grad.rs `dropout_mask`) bit for bit: the key is the
    /// seed `ChaCha8Rng::seed_from_u64` derives, the kernel runs the ChaCha8
    /// block function on it with the same counter and stream words.
    pub(super) fn dropout_mask_op(&self, mask: &mut D::Mem, len: usize, p: f32, seed: u64, stream: u64) -> Result<()> {
        self.check("dropout_mask", "mask", mask, len)?;
        if !(0.0..1.0).contains(&p) {
            return Err(self.err(format!("dropout_mask: p = {p} not in [0, 1)")));
        }
        let bytes = ChaCha8Rng::seed_from_u64(seed).get_seed();
        let key = std::array::from_fn(|i| u32::from_le_bytes([0, 1, 2, 3].map(|j| bytes[4 * i + j])));
        let prm = DropoutParams {
            mask: self.dev.ptr_mut(mask),
            stream,
            cut: (f64::from(p) * 4_294_967_296.0) as u64,
            key,
            n: self.int("dropout_mask", len)?,
            keep: 1.0 / (1.0 - p),
        };
        // SAFETY: mask checked above.
        unsafe { self.dev.launch(dropout(len)?, &prm) }
    }

    /// Per-block f64 partials through the scratch buffer, added on the host in block order.
    pub(super) fn sum_squares_op(&self, x: &D::Mem, len: usize) -> Result<f64> {
        self.check("sum_squares", "x", x, len)?;
        let blocks = sum_squares_blocks(len);
        let n = self.int("sum_squares", len)?;
        let mut words = [0f32; 2 * SUMSQ_MAX_BLOCKS];
        let words = &mut words[..2 * blocks];
        self.with_scratch(2 * blocks, |scratch| {
            let p = SumSquaresParams { x: self.dev.ptr(x), partials: self.dev.ptr_mut(scratch), n, _pad: 0 };
            // SAFETY: x checked above; the scratch holds 2·blocks values.
            unsafe { self.dev.launch(cfg([blocks, 1, 1], SUMSQ_THREADS, 0)?, &p)? };
            self.dev.read(scratch, words)
        })?;
        Ok(words.chunks(2).map(|w| f64_from_words(w[0], w[1])).sum())
    }

    /// Two launches in the CPU's order (row chunks of 64 summed from zero,
    /// then added into `db` in chunk order): the same bits as the CPU.
    pub(super) fn bias_backward_op(&self, dy: &D::Mem, db: &mut D::Mem, rows: usize, n: usize) -> Result<()> {
        self.check("bias_backward", "dy", dy, rows * n)?;
        self.check("bias_backward", "db", db, n)?;
        let chunks = rows.div_ceil(BIAS_ROW_CHUNK);
        let (rows_i, n_i, chunks_i) =
            (self.int("bias_backward", rows)?, self.int("bias_backward", n)?, self.int("bias_backward", chunks)?);
        if chunks == 0 || n == 0 {
            return Ok(());
        }
        self.with_scratch(chunks * n, |part| {
            let p1 = BiasPartialsParams {
                dy: self.dev.ptr(dy),
                part: self.dev.ptr_mut(part),
                rows: rows_i,
                n: n_i,
                chunk: BIAS_ROW_CHUNK as i32,
                _pad: 0,
            };
            let p2 = BiasFinishParams { part: self.dev.ptr(part), db: self.dev.ptr_mut(db), chunks: chunks_i, n: n_i };
            // SAFETY: dy and db checked above; the scratch holds chunks·n values.
            unsafe {
                self.dev.launch(bias_partials(n, chunks)?, &p1)?;
                self.dev.launch(launch::elementwise(n)?, &p2)
            }
        })
    }
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(super) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<DropoutParams>(),
        c_size_agrees::<SumSquaresParams>(),
        c_size_agrees::<BiasPartialsParams>(),
        c_size_agrees::<BiasFinishParams>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_structs_have_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<DropoutParams>(), 3 * 8 + 8 * 4 + 2 * 4);
    }

    #[test]
    fn launch_rules() {
        assert_eq!(dropout(1).unwrap().grid, [1, 1, 1]);
        assert_eq!(dropout(4097).unwrap().grid, [2, 1, 1]);
        assert_eq!(dropout(100_000_000).unwrap().grid, [1024, 1, 1]);
        assert_eq!(sum_squares_blocks(0), 1);
        assert_eq!(sum_squares_blocks(70_000), 35);
        assert_eq!(sum_squares_blocks(1 << 30), SUMSQ_MAX_BLOCKS);
        assert_eq!(bias_partials(300, 27).unwrap().grid, [2, 27, 1]);
        assert!(bias_partials(8, 70_000).is_err(), "grid.y above 65535");
    }
}
