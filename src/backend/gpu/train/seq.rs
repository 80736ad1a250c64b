//! The LSTM for training: the recurrence that keeps what the backward
//! needs, and the backward (kernels/lstm_train.cu).
//!
//! Every output element is owned by one thread (or one warp lane) that sums
//! in a fixed order, so results are bit-identical whatever the scheduling.

use crate::backend::gpu::launch::cfg;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig};
use crate::backend::LstmShape;
use crate::error::Result;

params!(
    /// `kernels/lstm_train.cu` LstmTrainParams
    LstmTrainParams => LstmTrain {
        gx: u64, w_hh: u64, h_seq: u64, c_seq: u64, gates: u64, batch: i32, steps: i32, hidden: i32,
    }
);
params!(
    /// `kernels/lstm_train.cu` LstmBackwardParams
    LstmBackwardParams => LstmBackward {
        w_hh: u64, c_seq: u64, gates: u64, dh_seq: u64, dgx: u64, batch: i32, steps: i32, hidden: i32,
    }
);
params!(
    /// `kernels/lstm_train.cu` LstmDwParams
    LstmDwParams => LstmDw { dgx: u64, h_seq: u64, dw_hh: u64, batch: i32, steps: i32, hidden: i32 }
);

/// lstm_train.cu: the backward's block size and the dW_hh tile.
const LSTM_BWD_THREADS: u32 = 256;
const LSTM_DW_TILE: usize = 32;
const LSTM_DW_THREADS: u32 = 256;

/// lstm_train.cu's recurrence: lstm.cu's rule (one persistent block per
/// sample, h double-buffered and c in shared memory).
pub(crate) fn lstm_train_launch(batch: usize, hidden: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], 256, 3 * hidden * 4)
}

/// lstm_train.cu's BPTT: one persistent block per sample; dh_next, dc_next
/// and the step's four gate gradients in shared memory (6·hidden floats).
pub(crate) fn lstm_backward_launch(batch: usize, hidden: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], LSTM_BWD_THREADS, 6 * hidden * 4)
}

/// lstm_train.cu's dW_hh: one block per 32×32 tile of the (4·hidden, hidden) output.
pub(crate) fn lstm_dw_launch(hidden: usize) -> Result<LaunchConfig> {
    cfg([hidden.div_ceil(LSTM_DW_TILE), (4 * hidden).div_ceil(LSTM_DW_TILE), 1], LSTM_DW_THREADS, 0)
}

impl<D: Device> Gpu<D> {
    pub(super) fn lstm_train_op(
        &self,
        gx: &D::Mem,
        w_hh: &D::Mem,
        h_seq: &mut D::Mem,
        c_seq: &mut D::Mem,
        gates: &mut D::Mem,
        s: LstmShape,
    ) -> Result<()> {
        let op = "lstm_train";
        let (rows, h) = (s.batch * s.steps, s.hidden);
        self.check(op, "gx", gx, rows * 4 * h)?;
        self.check(op, "w_hh", w_hh, 4 * h * h)?;
        self.check(op, "h_seq", h_seq, rows * h)?;
        self.check(op, "c_seq", c_seq, rows * h)?;
        self.check(op, "gates", gates, rows * 4 * h)?;
        let cfg = lstm_train_launch(s.batch, h)?;
        let (batch, steps, hidden) = (self.int(op, s.batch)?, self.int(op, s.steps)?, self.int(op, h)?);
        self.int(op, rows * 4 * h)?;
        if rows == 0 || h == 0 {
            return Ok(());
        }
        let p = LstmTrainParams {
            gx: self.dev.ptr(gx),
            w_hh: self.dev.ptr(w_hh),
            h_seq: self.dev.ptr_mut(h_seq),
            c_seq: self.dev.ptr_mut(c_seq),
            gates: self.dev.ptr_mut(gates),
            batch,
            steps,
            hidden,
        };
        // SAFETY: sizes checked above.
        unsafe { self.dev.launch(cfg, &p) }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn lstm_backward_op(
        &self,
        w_hh: &D::Mem,
        h_seq: &D::Mem,
        c_seq: &D::Mem,
        gates: &D::Mem,
        dh_seq: &D::Mem,
        dgx: &mut D::Mem,
        dw_hh: &mut D::Mem,
        s: LstmShape,
    ) -> Result<()> {
        let op = "lstm_backward";
        let (rows, h) = (s.batch * s.steps, s.hidden);
        self.check(op, "w_hh", w_hh, 4 * h * h)?;
        self.check(op, "h_seq", h_seq, rows * h)?;
        self.check(op, "c_seq", c_seq, rows * h)?;
        self.check(op, "gates", gates, rows * 4 * h)?;
        self.check(op, "dh_seq", dh_seq, rows * h)?;
        self.check(op, "dgx", dgx, rows * 4 * h)?;
        self.check(op, "dw_hh", dw_hh, 4 * h * h)?;
        let (cfg_bptt, cfg_dw) = (lstm_backward_launch(s.batch, h)?, lstm_dw_launch(h)?);
        let (batch, steps, hidden) = (self.int(op, s.batch)?, self.int(op, s.steps)?, self.int(op, h)?);
        self.int(op, rows * 4 * h)?;
        if rows == 0 || h == 0 {
            return Ok(());
        }
        let dgx = self.dev.ptr_mut(dgx);
        let bptt = LstmBackwardParams {
            w_hh: self.dev.ptr(w_hh),
            c_seq: self.dev.ptr(c_seq),
            gates: self.dev.ptr(gates),
            dh_seq: self.dev.ptr(dh_seq),
            dgx,
            batch,
            steps,
            hidden,
        };
        // SAFETY: sizes checked above.
        unsafe { self.dev.launch(cfg_bptt, &bptt)? };
        if s.steps < 2 {
            // h[t−1] = 0 at t = 0: a single step adds nothing to dW_hh.
            return Ok(());
        }
        let dw = LstmDwParams { dgx, h_seq: self.dev.ptr(h_seq), dw_hh: self.dev.ptr_mut(dw_hh), batch, steps, hidden };
        // SAFETY: sizes checked above; reads the dgx the BPTT launch wrote, after it.
        unsafe { self.dev.launch(cfg_dw, &dw) }
    }
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(super) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<LstmTrainParams>(), c_size_agrees::<LstmBackwardParams>(), c_size_agrees::<LstmDwParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lstm_training_launches() {
        assert_eq!(lstm_train_launch(3, 256).unwrap().shared_bytes, 3072);
        let c = lstm_backward_launch(17, 256).unwrap();
        assert_eq!((c.grid, c.block, c.shared_bytes), ([17, 1, 1], [256, 1, 1], 6144));
        assert_eq!(lstm_dw_launch(256).unwrap().grid, [8, 32, 1]);
        assert_eq!(lstm_dw_launch(33).unwrap().grid, [2, 5, 1]);
    }
}
