//! The bias backward (kernels/bias_backward.cu), which the linear, conv and
//! patch-embedding backwards share; it keeps its per-chunk partials in the
//! backend's scratch buffer between its two launches.

use crate::backend::gpu::device::LaunchConfig;
use crate::backend::gpu::launch::{self, cfg};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::error::Result;

params!(
    /// `kernels/bias_backward.cu` BiasPartialsParams: `part (chunks, n)` column sums of row chunks.
    BiasPartialsParams => BiasPartials { dy: u64, part: u64, rows: i32, n: i32, chunk: i32, _pad: i32 }
);
params!(
    /// `kernels/bias_backward.cu` BiasFinishParams: `db += Σ_chunks part` in chunk order.
    BiasFinishParams => BiasFinish { part: u64, db: u64, chunks: i32, n: i32 }
);

/// Rows per partial sum of the bias backward: the CPU's chunk (grad.rs
/// ROW_CHUNK), so both sum in the same order and agree bit for bit.
const BIAS_ROW_CHUNK: usize = 64;
const BIAS_THREADS: u32 = 256;

/// quorum_bias_partials: a thread per (column, chunk of rows).
fn bias_partials(n: usize, chunks: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(BIAS_THREADS as usize).max(1), chunks.max(1), 1], BIAS_THREADS, 0)
}

impl<D: Device> Gpu<D> {
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
    vec![c_size_agrees::<BiasPartialsParams>(), c_size_agrees::<BiasFinishParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_rules() {
        assert_eq!(bias_partials(300, 27).unwrap().grid, [2, 27, 1]);
        assert!(bias_partials(8, 70_000).is_err(), "grid.y above 65535");
    }
}
