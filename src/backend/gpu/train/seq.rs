//! Attention and the LSTM for training: forwards that keep what the backward
//! needs, and the backwards (kernels/attention_train.cu, kernels/lstm_train.cu).
//!
//! Every output element is owned by one thread (or one warp lane) that sums
//! in a fixed order, so results are bit-identical whatever the scheduling.

use crate::backend::gpu::launch::{cfg, err};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu, LaunchConfig};
use crate::backend::{AttentionShape, LstmShape};
use crate::error::Result;

params!(
    /// `kernels/attention_train.cu` AttentionTrainParams
    AttentionTrainParams => AttentionTrain {
        qkv: u64, out: u64, probs: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);
params!(
    /// `kernels/attention_train.cu` AttentionDqParams
    AttentionDqParams => AttentionDq {
        qkv: u64, probs: u64, dout: u64, dqkv: u64, ds: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);
params!(
    /// `kernels/attention_train.cu` AttentionDkvParams
    AttentionDkvParams => AttentionDkv {
        qkv: u64, probs: u64, dout: u64, ds: u64, dqkv: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);
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

/// attention_train.cu: 4 warps per block, 16 query (or key) rows per block,
/// head dim at most 64 (two dims per lane), and at most 8 chunks of 32 keys
/// per lane in registers.
const ATT_TRAIN_THREADS: u32 = 128;
const ATT_TRAIN_ROWS_PER_BLOCK: usize = 16;
const ATT_TRAIN_MAX_HEAD_DIM: usize = 64;
const ATT_TRAIN_MAX_TOKENS: usize = 32 * 8;
/// lstm_train.cu: the backward's block size and the dW_hh tile.
const LSTM_BWD_THREADS: u32 = 256;
const LSTM_DW_TILE: usize = 32;
const LSTM_DW_THREADS: u32 = 256;

/// attention_train.cu's shared memory for the forward and the dQ pass: one
/// of K or V padded to hd + 1, and one hd-row per warp (the query, or dO).
pub(crate) fn attention_train_shared_bytes(tokens: usize, head_dim: usize) -> usize {
    4 * (tokens * (head_dim + 1) + (ATT_TRAIN_THREADS as usize / 32) * head_dim)
}

/// attention_train.cu: one block per (tile of 16 query or key rows, head,
/// sample); `staged` for the kernels that hold K or V in shared memory.
pub(crate) fn attention_train_launch(s: AttentionShape, staged: bool) -> Result<LaunchConfig> {
    if s.head_dim == 0 || s.head_dim > ATT_TRAIN_MAX_HEAD_DIM {
        return Err(err(format!("attention training: head dim {} outside 1..={ATT_TRAIN_MAX_HEAD_DIM}", s.head_dim)));
    }
    if s.tokens > ATT_TRAIN_MAX_TOKENS {
        return Err(err(format!("attention training: {} tokens exceed {ATT_TRAIN_MAX_TOKENS}", s.tokens)));
    }
    let shared = if staged { attention_train_shared_bytes(s.tokens, s.head_dim) } else { 0 };
    cfg([s.tokens.div_ceil(ATT_TRAIN_ROWS_PER_BLOCK), s.heads, s.batch], ATT_TRAIN_THREADS, shared)
}

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
    /// The kernels' ints of an attention shape, and whether there is anything to compute.
    fn attention_ints(&self, op: &str, s: AttentionShape) -> Result<([i32; 4], bool)> {
        let ints = [self.int(op, s.batch)?, self.int(op, s.tokens)?, self.int(op, s.heads)?, self.int(op, s.head_dim)?];
        self.int(op, s.batch * s.tokens * 3 * s.dim())?;
        Ok((ints, s.batch > 0 && s.tokens > 0 && s.heads > 0))
    }

    pub(super) fn attention_train_op(
        &self,
        qkv: &D::Mem,
        out: &mut D::Mem,
        probs: &mut D::Mem,
        s: AttentionShape,
    ) -> Result<()> {
        let op = "attention_train";
        let rows = s.batch * s.tokens;
        self.check(op, "qkv", qkv, rows * 3 * s.dim())?;
        self.check(op, "out", out, rows * s.dim())?;
        self.check(op, "probs", probs, s.batch * s.heads * s.tokens * s.tokens)?;
        let cfg = attention_train_launch(s, true)?;
        let ([batch, tokens, heads, head_dim], work) = self.attention_ints(op, s)?;
        if !work {
            return Ok(());
        }
        let p = AttentionTrainParams {
            qkv: self.dev.ptr(qkv),
            out: self.dev.ptr_mut(out),
            probs: self.dev.ptr_mut(probs),
            batch,
            tokens,
            heads,
            head_dim,
        };
        // SAFETY: sizes checked above.
        unsafe { self.dev.launch(cfg, &p) }
    }

    pub(super) fn attention_backward_op(
        &self,
        qkv: &D::Mem,
        probs: &D::Mem,
        dout: &D::Mem,
        dqkv: &mut D::Mem,
        scratch: &mut D::Mem,
        s: AttentionShape,
    ) -> Result<()> {
        let op = "attention_backward";
        let rows = s.batch * s.tokens;
        let pn = s.batch * s.heads * s.tokens * s.tokens;
        self.check(op, "qkv", qkv, rows * 3 * s.dim())?;
        self.check(op, "probs", probs, pn)?;
        self.check(op, "scratch", scratch, pn)?;
        self.check(op, "dout", dout, rows * s.dim())?;
        self.check(op, "dqkv", dqkv, rows * 3 * s.dim())?;
        let (cfg_dq, cfg_dkv) = (attention_train_launch(s, true)?, attention_train_launch(s, false)?);
        let ([batch, tokens, heads, head_dim], work) = self.attention_ints(op, s)?;
        if !work {
            return Ok(());
        }
        let (qkv, probs, dout) = (self.dev.ptr(qkv), self.dev.ptr(probs), self.dev.ptr(dout));
        let (dqkv, ds) = (self.dev.ptr_mut(dqkv), self.dev.ptr_mut(scratch));
        let dq = AttentionDqParams { qkv, probs, dout, dqkv, ds, batch, tokens, heads, head_dim };
        let dkv = AttentionDkvParams { qkv, probs, dout, ds, dqkv, batch, tokens, heads, head_dim };
        // SAFETY: sizes checked above; the dK/dV pass reads the dS the dQ
        // pass wrote, after it (launches on one stream run in order).
        unsafe {
            self.dev.launch(cfg_dq, &dq)?;
            self.dev.launch(cfg_dkv, &dkv)
        }
    }

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
    vec![
        c_size_agrees::<AttentionTrainParams>(),
        c_size_agrees::<AttentionDqParams>(),
        c_size_agrees::<AttentionDkvParams>(),
        c_size_agrees::<LstmTrainParams>(),
        c_size_agrees::<LstmBackwardParams>(),
        c_size_agrees::<LstmDwParams>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_training_fits_default_shared_memory_at_model_sizes() {
        // TLOB: 100 tokens; even at head dim 64 one padded K (or V) fits.
        let s = AttentionShape { batch: 17, tokens: 100, heads: 4, head_dim: 64 };
        let c = attention_train_launch(s, true).unwrap();
        assert_eq!(c.grid, [7, 4, 17]);
        assert_eq!(c.block, [128, 1, 1]);
        assert_eq!(c.shared_bytes as usize, 4 * (100 * 65 + 4 * 64));
        assert_eq!(attention_train_launch(s, false).unwrap().shared_bytes, 0);
        let mpd = AttentionShape { batch: 1, tokens: 50, heads: 8, head_dim: 32 };
        assert_eq!(attention_train_launch(mpd, true).unwrap().grid, [4, 8, 1]);
        assert!(attention_train_launch(AttentionShape { head_dim: 65, ..mpd }, true).is_err());
        assert!(attention_train_launch(AttentionShape { head_dim: 0, ..mpd }, true).is_err());
        assert!(attention_train_launch(AttentionShape { tokens: 257, head_dim: 8, ..mpd }, false).is_err());
        assert!(attention_train_launch(AttentionShape { tokens: 256, head_dim: 64, ..mpd }, true).is_err(), "48 KiB");
    }

    #[test]
    fn lstm_training_launches() {
        assert_eq!(lstm_train_launch(3, 256).unwrap().shared_bytes, 3072);
        let c = lstm_backward_launch(17, 256).unwrap();
        assert_eq!((c.grid, c.block, c.shared_bytes), ([17, 1, 1], [256, 1, 1], 6144));
        assert_eq!(lstm_dw_launch(256).unwrap().grid, [8, 32, 1]);
        assert_eq!(lstm_dw_launch(33).unwrap().grid, [2, 5, 1]);
    }
}
