//! Training ops over flat buffers: copy/add/mul/fill, GELU and its backward,
//! dropout masks, AdamW, sums of squares, the bias/broadcast/pool backwards,
//! and the heads' loss (kernels/train_elementwise.cu, kernels/heads_train.cu).

use crate::backend::gpu::{Device, Gpu};
use crate::backend::{AdamWStep, BroadcastShape, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets, Pool};
use crate::error::Result;

impl<D: Device> Gpu<D> {
    pub(super) fn copy_op(&self, _src: &D::Mem, _dst: &mut D::Mem, _len: usize) -> Result<()> {
        Err(self.not_built("copy"))
    }

    pub(super) fn add_op(&self, _dst: &mut D::Mem, _src: &D::Mem, _len: usize) -> Result<()> {
        Err(self.not_built("add"))
    }

    pub(super) fn mul_op(&self, _x: &mut D::Mem, _m: &D::Mem, _len: usize) -> Result<()> {
        Err(self.not_built("mul"))
    }

    pub(super) fn gelu_op(&self, _x: &D::Mem, _y: &mut D::Mem, _len: usize) -> Result<()> {
        Err(self.not_built("gelu"))
    }

    pub(super) fn gelu_backward_op(&self, _pre: &D::Mem, _dy: &mut D::Mem, _len: usize) -> Result<()> {
        Err(self.not_built("gelu_backward"))
    }

    pub(super) fn dropout_mask_op(
        &self,
        _mask: &mut D::Mem,
        _len: usize,
        _p: f32,
        _seed: u64,
        _stream: u64,
    ) -> Result<()> {
        Err(self.not_built("dropout_mask"))
    }

    pub(super) fn bias_backward_op(&self, _dy: &D::Mem, _db: &mut D::Mem, _rows: usize, _n: usize) -> Result<()> {
        Err(self.not_built("bias_backward"))
    }

    pub(super) fn broadcast_add_backward_op(&self, _dx: &D::Mem, _dsrc: &mut D::Mem, _s: BroadcastShape) -> Result<()> {
        Err(self.not_built("broadcast_add_backward"))
    }

    pub(super) fn pool_backward_op(
        &self,
        _dout: &D::Mem,
        _dx: &mut D::Mem,
        _batch: usize,
        _tokens: usize,
        _dim: usize,
        _how: Pool,
    ) -> Result<()> {
        Err(self.not_built("pool_backward"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn heads_loss_op(
        &self,
        _z: &D::Mem,
        _p: HeadsRef<'_, Self>,
        _out: HeadsOut<'_, Self>,
        _targets: HeadsTargets<'_, Self>,
        _loss: HeadsLoss,
        _grads: Option<(HeadsGrads<'_, Self>, &mut D::Mem)>,
        _batch: usize,
        _dim: usize,
    ) -> Result<f64> {
        Err(self.not_built("heads_loss"))
    }

    pub(super) fn adamw_op(
        &self,
        _param: &mut D::Mem,
        _grad: &D::Mem,
        _m: &mut D::Mem,
        _v: &mut D::Mem,
        _len: usize,
        _step: AdamWStep,
    ) -> Result<()> {
        Err(self.not_built("adamw"))
    }

    pub(super) fn sum_squares_op(&self, _x: &D::Mem, _len: usize) -> Result<f64> {
        Err(self.not_built("sum_squares"))
    }

    pub(super) fn fill_op(&self, _x: &mut D::Mem, _len: usize, _value: f32) -> Result<()> {
        Err(self.not_built("fill"))
    }
}
