//! Transposes on the device (kernels/train_layout.cu): re-preparing weights
//! after an optimizer step and TLOB's `spatial.proj` relabeling stay on the
//! GPU instead of a host round trip per step.

use crate::backend::gpu::launch::{cfg, err};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig};
use crate::error::Result;

params!(
    /// `kernels/train_layout.cu` SwapLastAxesParams
    SwapLastAxesParams => SwapLastAxes { src: u64, dst: u64, outer: i32, rows: i32, cols: i32, accumulate: i32 }
);

/// train_layout.cu: one 32×8-thread block per 32×32 tile of each plane.
pub fn swap_last_axes(outer: usize, rows: usize, cols: usize) -> Result<LaunchConfig> {
    if outer == 0 {
        return Err(err("swap_last_axes: zero planes".into()));
    }
    let mut c = cfg([cols.div_ceil(32).max(1), rows.div_ceil(32).max(1), outer], 32, 0)?;
    c.block = [32, 8, 1];
    Ok(c)
}

impl<D: Device> Gpu<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn swap_last_axes_op(
        &self,
        op: &str,
        src: &D::Mem,
        dst: &mut D::Mem,
        outer: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) -> Result<()> {
        let n = outer * rows * cols;
        self.check(op, "src", src, n)?;
        self.check(op, "dst", dst, n)?;
        if n == 0 {
            return Ok(());
        }
        let p = SwapLastAxesParams {
            src: self.dev.ptr(src),
            dst: self.dev.ptr_mut(dst),
            outer: self.int(op, outer)?,
            rows: self.int(op, rows)?,
            cols: self.int(op, cols)?,
            accumulate: i32::from(accumulate),
        };
        // SAFETY: sizes checked above.
        unsafe { self.dev.launch(swap_last_axes(outer, rows, cols)?, &p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_plane() {
        let c = swap_last_axes(3, 33, 65).unwrap();
        assert_eq!(c.grid, [3, 2, 3]);
        assert_eq!(c.block, [32, 8, 1]);
        assert!(swap_last_axes(70_000, 1, 1).is_err(), "grid.z above 65535");
    }
}
