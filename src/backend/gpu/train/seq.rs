//! Attention and the LSTM for training: forwards that keep what the backward
//! needs, and the backwards (kernels/attention_train.cu, kernels/lstm_train.cu).

use crate::backend::gpu::{Device, Gpu};
use crate::backend::{AttentionShape, LstmShape};
use crate::error::Result;

impl<D: Device> Gpu<D> {
    pub(super) fn attention_train_op(
        &self,
        _qkv: &D::Mem,
        _out: &mut D::Mem,
        _probs: &mut D::Mem,
        _s: AttentionShape,
    ) -> Result<()> {
        Err(self.not_built("attention_train"))
    }

    pub(super) fn attention_backward_op(
        &self,
        _qkv: &D::Mem,
        _probs: &D::Mem,
        _dout: &D::Mem,
        _dqkv: &mut D::Mem,
        _scratch: &mut D::Mem,
        _s: AttentionShape,
    ) -> Result<()> {
        Err(self.not_built("attention_backward"))
    }

    pub(super) fn lstm_train_op(
        &self,
        _gx: &D::Mem,
        _w_hh: &D::Mem,
        _h_seq: &mut D::Mem,
        _c_seq: &mut D::Mem,
        _gates: &mut D::Mem,
        _s: LstmShape,
    ) -> Result<()> {
        Err(self.not_built("lstm_train"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lstm_backward_op(
        &self,
        _w_hh: &D::Mem,
        _h_seq: &D::Mem,
        _c_seq: &D::Mem,
        _gates: &D::Mem,
        _dh_seq: &D::Mem,
        _dgx: &mut D::Mem,
        _dw_hh: &mut D::Mem,
        _s: LstmShape,
    ) -> Result<()> {
        Err(self.not_built("lstm_backward"))
    }
}
