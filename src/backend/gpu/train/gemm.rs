//! Backward passes of the GEMM family (linear, conv1d, patch embedding) and
//! of LayerNorm (kernels/train_gemm.cu, kernels/layernorm_backward.cu).

use crate::backend::gpu::{Device, Gpu};
use crate::backend::{ConvShape, LinearShape, PatchShape};
use crate::error::Result;

impl<D: Device> Gpu<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_backward_op(
        &self,
        _x: &D::Mem,
        _w: &D::Mem,
        _dy: &D::Mem,
        _dx: Option<&mut D::Mem>,
        _dw: &mut D::Mem,
        _db: Option<&mut D::Mem>,
        _s: LinearShape,
        _accumulate_dx: bool,
    ) -> Result<()> {
        Err(self.not_built("linear_backward"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn layernorm_backward_op(
        &self,
        _x: &D::Mem,
        _gamma: &D::Mem,
        _dy: &D::Mem,
        _dx: &mut D::Mem,
        _dgamma: &mut D::Mem,
        _dbeta: &mut D::Mem,
        _rows: usize,
        _dim: usize,
    ) -> Result<()> {
        Err(self.not_built("layernorm_backward"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn patch_embed_backward_op(
        &self,
        _x: &D::Mem,
        _dout: &D::Mem,
        _dw: &mut D::Mem,
        _db: &mut D::Mem,
        _dcls: Option<&mut D::Mem>,
        _dpos: &mut D::Mem,
        _s: PatchShape,
    ) -> Result<()> {
        Err(self.not_built("patch_embed_backward"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv1d_backward_op(
        &self,
        _x: &D::Mem,
        _w: &D::Mem,
        _dy: &D::Mem,
        _dx: Option<&mut D::Mem>,
        _dw: &mut D::Mem,
        _db: &mut D::Mem,
        _s: ConvShape,
    ) -> Result<()> {
        Err(self.not_built("conv1d_backward"))
    }
}
