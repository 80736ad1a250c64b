//! `impl Train for Gpu<D>`: the backward passes and the optimizer as launches
//! of the training kernels, on any device (the emulator today, cudarc's
//! device on a GPU). Each op lives in the module of its kernel family, next
//! to the parameter structs and launch rules of its kernels (LayerNorm's,
//! pooling's and the broadcast add's backwards, with their forwards, AdamW,
//! the copy/add/mul/fill/GELU map, the heads' loss, attention's and the
//! LSTM's training passes in backend/ops/):
//! - `gemm`: conv1d and patch-embedding backwards, and the column sums the
//!   linear backward's bias uses too (train_gemm.cu).
//!
//! The linear layer's backward, its bias backward and `prepare_linear_from`
//! (so re-preparing weights after an optimizer step never goes through the
//! host) live with its forward in backend/ops/linear.rs.
//!
//! The same conventions as the CPU's `Train` (backend/mod.rs): parameter
//! gradients add, reductions run in a fixed order (no float atomics), so the
//! same inputs give bit-identical results whatever the block scheduling.
//!
//! Mixed precision (docs/training.md's `use_amp`): on a `Gpu` built with
//! `Precision::Bf16` (or F16) the forward's matrix products (linear, conv,
//! patch embedding) run on the 16-bit tensor-core kernels, from weights
//! re-packed after each step from the f32 master copy the optimizer updates;
//! everything else, and every backward op, stays f32 (the backward's matrix
//! products read the f32 master weights).

pub(crate) mod gemm;

/// Every training kernel's parameter struct, each checked against its C size
/// (for the emulator's test that every registered kernel has one).
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<super::Kernel> {
    gemm::parameter_structs_checked()
}

use super::{Device, Gpu, Precision};
use crate::backend::ops::elementwise::{map_gpu, Map};
use crate::backend::ops::linear;
use crate::backend::{
    AdamWStep, AttentionShape, BroadcastShape, ConvShape, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets,
    LinearShape, LstmShape, PatchShape, Pool, Train,
};
use crate::error::Result;

impl<D: Device> Train for Gpu<D> {
    fn mixed_precision(&self) -> Option<&'static str> {
        match self.precision {
            Precision::F32 => None,
            Precision::Bf16 => Some("bf16"),
            Precision::F16 => Some("f16"),
        }
    }

    fn prepare_linear_from(&self, w: &D::Mem, n_out: usize, n_in: usize, dst: &mut D::Mem) -> Result<()> {
        linear::prepare_from_gpu(self, w, n_out, n_in, dst)
    }

    fn prepare_recurrent_from(&self, w_hh: &D::Mem, hidden: usize, dst: &mut D::Mem) -> Result<()> {
        crate::backend::ops::lstm::prepare_from_gpu(self, w_hh, hidden, dst)
    }

    fn swap_last_axes(
        &self,
        src: &D::Mem,
        dst: &mut D::Mem,
        outer: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) -> Result<()> {
        crate::backend::ops::swap_last_axes::swap_gpu(self, "swap_last_axes", src, dst, outer, rows, cols, accumulate)
    }

    fn copy(&self, src: &D::Mem, dst: &mut D::Mem, len: usize) -> Result<()> {
        map_gpu(self, Map::Copy, Some(src), dst, len)
    }

    fn add(&self, dst: &mut D::Mem, src: &D::Mem, len: usize) -> Result<()> {
        map_gpu(self, Map::Add, Some(src), dst, len)
    }

    fn mul(&self, x: &mut D::Mem, m: &D::Mem, len: usize) -> Result<()> {
        map_gpu(self, Map::Mul, Some(m), x, len)
    }

    fn gelu(&self, x: &D::Mem, y: &mut D::Mem, len: usize) -> Result<()> {
        map_gpu(self, Map::Gelu, Some(x), y, len)
    }

    fn gelu_backward(&self, pre: &D::Mem, dy: &mut D::Mem, len: usize) -> Result<()> {
        map_gpu(self, Map::GeluBackward, Some(pre), dy, len)
    }

    fn dropout_mask(&self, mask: &mut D::Mem, len: usize, p: f32, seed: u64, stream: u64) -> Result<()> {
        crate::backend::ops::dropout::mask_gpu(self, mask, len, p, seed, stream)
    }

    fn linear_backward(
        &self,
        x: &D::Mem,
        w: &D::Mem,
        dy: &D::Mem,
        dx: Option<&mut D::Mem>,
        dw: &mut D::Mem,
        db: Option<&mut D::Mem>,
        shape: LinearShape,
        accumulate_dx: bool,
    ) -> Result<()> {
        linear::backward_gpu(self, x, w, dy, dx, dw, db, shape, accumulate_dx)
    }

    fn bias_backward(&self, dy: &D::Mem, db: &mut D::Mem, rows: usize, n: usize) -> Result<()> {
        linear::bias_backward_gpu(self, dy, db, rows, n)
    }

    fn layernorm_backward(
        &self,
        x: &D::Mem,
        gamma: &D::Mem,
        dy: &D::Mem,
        dx: &mut D::Mem,
        dgamma: &mut D::Mem,
        dbeta: &mut D::Mem,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        crate::backend::ops::layernorm::backward_gpu(self, x, gamma, dy, dx, dgamma, dbeta, rows, dim)
    }

    fn attention_train(&self, qkv: &D::Mem, out: &mut D::Mem, probs: &mut D::Mem, shape: AttentionShape) -> Result<()> {
        crate::backend::ops::attention::train_gpu(self, qkv, out, probs, shape)
    }

    fn attention_backward(
        &self,
        qkv: &D::Mem,
        probs: &D::Mem,
        dout: &D::Mem,
        dqkv: &mut D::Mem,
        scratch: &mut D::Mem,
        shape: AttentionShape,
    ) -> Result<()> {
        crate::backend::ops::attention::backward_gpu(self, qkv, probs, dout, dqkv, scratch, shape)
    }

    fn patch_embed_backward(
        &self,
        x: &D::Mem,
        dout: &D::Mem,
        dw: &mut D::Mem,
        db: &mut D::Mem,
        dcls: Option<&mut D::Mem>,
        dpos: &mut D::Mem,
        shape: PatchShape,
    ) -> Result<()> {
        self.patch_embed_backward_op(x, dout, dw, db, dcls, dpos, shape)
    }

    fn conv1d_backward(
        &self,
        x: &D::Mem,
        w: &D::Mem,
        dy: &D::Mem,
        dx: Option<&mut D::Mem>,
        dw: &mut D::Mem,
        db: &mut D::Mem,
        shape: ConvShape,
    ) -> Result<()> {
        self.conv1d_backward_op(x, w, dy, dx, dw, db, shape)
    }

    fn lstm_train(
        &self,
        gx: &D::Mem,
        w_hh: &D::Mem,
        h_seq: &mut D::Mem,
        c_seq: &mut D::Mem,
        gates: &mut D::Mem,
        shape: LstmShape,
    ) -> Result<()> {
        crate::backend::ops::lstm::train_gpu(self, gx, w_hh, h_seq, c_seq, gates, shape)
    }

    fn lstm_backward(
        &self,
        w_hh: &D::Mem,
        h_seq: &D::Mem,
        c_seq: &D::Mem,
        gates: &D::Mem,
        dh_seq: &D::Mem,
        dgx: &mut D::Mem,
        dw_hh: &mut D::Mem,
        shape: LstmShape,
    ) -> Result<()> {
        crate::backend::ops::lstm::backward_gpu(self, w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, shape)
    }

    fn broadcast_add_backward(&self, dx: &D::Mem, dsrc: &mut D::Mem, shape: BroadcastShape) -> Result<()> {
        crate::backend::ops::broadcast_add::backward_gpu(self, dx, dsrc, shape)
    }

    fn pool_backward(
        &self,
        dout: &D::Mem,
        dx: &mut D::Mem,
        batch: usize,
        tokens: usize,
        dim: usize,
        how: Pool,
    ) -> Result<()> {
        crate::backend::ops::pool::backward_gpu(self, dout, dx, batch, tokens, dim, how)
    }

    fn heads_loss(
        &self,
        z: &D::Mem,
        p: HeadsRef<'_, Self>,
        out: HeadsOut<'_, Self>,
        targets: HeadsTargets<'_, Self>,
        loss: HeadsLoss,
        grads: Option<(HeadsGrads<'_, Self>, &mut D::Mem)>,
        batch: usize,
        dim: usize,
    ) -> Result<f64> {
        crate::backend::ops::heads::loss_gpu(self, z, p, out, targets, loss, grads, batch, dim)
    }

    fn adamw(
        &self,
        param: &mut D::Mem,
        grad: &D::Mem,
        m: &mut D::Mem,
        v: &mut D::Mem,
        len: usize,
        step: AdamWStep,
    ) -> Result<()> {
        crate::backend::ops::adamw::step_gpu(self, param, grad, m, v, len, step)
    }

    fn sum_squares(&self, x: &D::Mem, len: usize) -> Result<f64> {
        crate::backend::ops::sum_squares::sum_gpu(self, x, len)
    }

    fn fill(&self, x: &mut D::Mem, len: usize, value: f32) -> Result<()> {
        map_gpu(self, Map::Fill(value), None, x, len)
    }
}
