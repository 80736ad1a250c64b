//! `prepare_linear_from` on the device: re-preparing weights after an
//! optimizer step (a transpose at f32, by backend/ops/swap_last_axes.rs; a
//! 16-bit packing for mixed precision, kernels/train_layout.cu) stays on the
//! GPU instead of a host round trip per step.

use crate::backend::gpu::launch::elementwise;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, Precision};
use crate::backend::ops::swap_last_axes;
use crate::error::Result;

params!(
    /// `kernels/train_layout.cu` PackHalfParams (kind 0 bf16, 1 f16)
    PackHalfParams => PackHalf { src: u64, dst: u64, n_out: i32, n_in: i32, kind: i32 }
);

impl<D: Device> Gpu<D> {
    /// `prepare_linear`'s layout for this backend's precision, from a weight
    /// on the device: the transpose at f32, packed 16-bit pairs otherwise.
    pub(super) fn prepare_linear_from_op(&self, w: &D::Mem, n_out: usize, n_in: usize, dst: &mut D::Mem) -> Result<()> {
        let op = "prepare_linear_from";
        let kind = match self.precision {
            Precision::F32 => return swap_last_axes::swap_gpu(self, op, w, dst, 1, n_out, n_in, false),
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
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(super) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<PackHalfParams>()]
}
