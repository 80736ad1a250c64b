//! Layout changes on the device (kernels/train_layout.cu): re-preparing
//! weights after an optimizer step (a transpose at f32, a 16-bit packing for
//! mixed precision) and TLOB's `spatial.proj` relabeling stay on the GPU
//! instead of a host round trip per step.

use crate::backend::gpu::launch::elementwise;
use crate::backend::gpu::launch::{cfg, err};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig, Precision};
use crate::error::Result;

params!(
    /// `kernels/train_layout.cu` SwapLastAxesParams
    SwapLastAxesParams => SwapLastAxes { src: u64, dst: u64, outer: i32, rows: i32, cols: i32, accumulate: i32 }
);

params!(
    /// `kernels/train_layout.cu` PackHalfParams (kind 0 bf16, 1 f16)
    PackHalfParams => PackHalf { src: u64, dst: u64, n_out: i32, n_in: i32, kind: i32 }
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
    /// `prepare_linear`'s layout for this backend's precision, from a weight
    /// on the device: the transpose at f32, packed 16-bit pairs otherwise.
    pub(super) fn prepare_linear_from_op(&self, w: &D::Mem, n_out: usize, n_in: usize, dst: &mut D::Mem) -> Result<()> {
        let op = "prepare_linear_from";
        let kind = match self.precision {
            Precision::F32 => return self.swap_last_axes_op(op, w, dst, 1, n_out, n_in, false),
            Precision::Bf16 => 0,
            Precision::F16 => 1,
        };
        self.check(op, "w", w, n_out * n_in)?;
        self.check(op, "dst", dst, self.weight_len(n_out, n_in))?;
        if n_out * n_in == 0 {
            return Ok(());
        }
        let p = PackHalfParams {
            src: self.dev.ptr(w),
            dst: self.dev.ptr_mut(dst),
            n_out: self.int(op, n_out)?,
            n_in: self.int(op, n_in)?,
            kind,
        };
        // SAFETY: sizes checked above.
        unsafe { self.dev.launch(elementwise(self.weight_len(n_out, n_in))?, &p) }
    }

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

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(super) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<SwapLastAxesParams>(), c_size_agrees::<PackHalfParams>()]
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
