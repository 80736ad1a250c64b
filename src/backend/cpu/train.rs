//! `impl Train for Cpu`: every training op on the CPU. The backward row
//! math lives in `grad.rs` and the forward loops in `simd.rs` (an op moved
//! to backend/ops/, e.g. LayerNorm, keeps both there); here are the
//! dispatch, the shape checks and the optimizer's own ops (the squared norm
//! for global-norm clipping, filling; AdamW is in backend/ops/), plain loops
//! because they are memory bound and run once per optimizer step, not per
//! micro-batch.

use rayon::prelude::*;

use super::{check_len, grad, Cpu};
use crate::backend::ops::elementwise::{map_cpu, Map};
use crate::backend::ops::linear;
use crate::backend::{
    AdamWStep, AttentionShape, BroadcastShape, ConvShape, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets,
    LinearShape, LstmShape, PatchShape, Pool, Train,
};
use crate::error::{Error, Result};

/// `(rows, cols)` → `(cols, rows)` row-major, in tiles so both sides stay in
/// cache (a plain double loop strides through the destination); runs after
/// every optimizer step for every matrix.
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 32;
    // Parallel over destination row blocks (source column blocks): disjoint writes.
    dst.par_chunks_mut(T * rows).enumerate().for_each(|(cb, block)| {
        let c0 = cb * T;
        let c1 = (c0 + T).min(cols);
        for r0 in (0..rows).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                let row = &src[r * cols..];
                for c in c0..c1 {
                    block[(c - c0) * rows + r] = row[c];
                }
            }
        }
    });
}

impl Train for Cpu {
    fn adamw(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
        s: AdamWStep,
    ) -> Result<()> {
        crate::backend::ops::adamw::step_cpu(param, grad, m, v, len, s)
    }

    fn sum_squares(&self, x: &Vec<f32>, len: usize) -> Result<f64> {
        crate::backend::ops::sum_squares::sum_cpu(x, len)
    }

    fn fill(&self, x: &mut Vec<f32>, len: usize, value: f32) -> Result<()> {
        map_cpu(Map::Fill(value), None, x, len)
    }

    fn prepare_linear_from(&self, w: &Vec<f32>, n_out: usize, n_in: usize, dst: &mut Vec<f32>) -> Result<()> {
        linear::prepare_from_cpu(self, w, n_out, n_in, dst)
    }

    fn prepare_recurrent_from(&self, w_hh: &Vec<f32>, hidden: usize, dst: &mut Vec<f32>) -> Result<()> {
        crate::backend::ops::lstm::prepare_from_cpu(self, w_hh, hidden, dst)
    }

    fn swap_last_axes(
        &self,
        src: &Vec<f32>,
        dst: &mut Vec<f32>,
        outer: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) -> Result<()> {
        crate::backend::ops::swap_last_axes::swap_cpu(src, dst, outer, rows, cols, accumulate)
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, len: usize) -> Result<()> {
        map_cpu(Map::Copy, Some(src), dst, len)
    }

    fn add(&self, dst: &mut Vec<f32>, src: &Vec<f32>, len: usize) -> Result<()> {
        map_cpu(Map::Add, Some(src), dst, len)
    }

    fn mul(&self, x: &mut Vec<f32>, m: &Vec<f32>, len: usize) -> Result<()> {
        map_cpu(Map::Mul, Some(m), x, len)
    }

    fn gelu(&self, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) -> Result<()> {
        map_cpu(Map::Gelu, Some(x), y, len)
    }

    fn gelu_backward(&self, pre: &Vec<f32>, dy: &mut Vec<f32>, len: usize) -> Result<()> {
        map_cpu(Map::GeluBackward, Some(pre), dy, len)
    }

    fn dropout_mask(&self, mask: &mut Vec<f32>, len: usize, p: f32, seed: u64, stream: u64) -> Result<()> {
        crate::backend::ops::dropout::mask_cpu(mask, len, p, seed, stream)
    }

    fn linear_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: &mut Vec<f32>,
        db: Option<&mut Vec<f32>>,
        s: LinearShape,
        accumulate_dx: bool,
    ) -> Result<()> {
        linear::backward_cpu(
            self,
            x,
            w,
            dy,
            dx.map(|v| v.as_mut_slice()),
            dw,
            db.map(|v| v.as_mut_slice()),
            s,
            accumulate_dx,
        )
    }

    fn bias_backward(&self, dy: &Vec<f32>, db: &mut Vec<f32>, rows: usize, n: usize) -> Result<()> {
        linear::bias_backward_cpu(dy, db, rows, n)
    }

    fn layernorm_backward(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        crate::backend::ops::layernorm::backward_cpu(x, gamma, dy, dx, dgamma, dbeta, rows, dim)
    }

    fn attention_train(
        &self,
        qkv: &Vec<f32>,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
        s: AttentionShape,
    ) -> Result<()> {
        crate::backend::ops::attention::train_cpu(qkv, out, probs, s)
    }

    fn attention_backward(
        &self,
        qkv: &Vec<f32>,
        probs: &Vec<f32>,
        dout: &Vec<f32>,
        dqkv: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        s: AttentionShape,
    ) -> Result<()> {
        crate::backend::ops::attention::backward_cpu(qkv, probs, dout, dqkv, scratch, s)
    }

    fn patch_embed_backward(
        &self,
        x: &Vec<f32>,
        dout: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dcls: Option<&mut Vec<f32>>,
        dpos: &mut Vec<f32>,
        s: PatchShape,
    ) -> Result<()> {
        let op = "patch_embed_backward";
        let plen = s.patch_h * s.patch_w;
        check_len(op, "x", x.len(), s.batch * s.height * s.width)?;
        check_len(op, "dout", dout.len(), s.batch * s.tokens() * s.dim)?;
        check_len(op, "dw", dw.len(), s.dim * plen)?;
        check_len(op, "db", db.len(), s.dim)?;
        check_len(op, "dpos", dpos.len(), s.tokens() * s.dim)?;
        if s.cls_token {
            check_len(op, "dcls", dcls.as_ref().map_or(0, |c| c.len()), s.dim)?;
        }
        grad::patch_embed_backward(x, dout, dw, db, dcls.map(|c| c.as_mut_slice()), dpos, s);
        Ok(())
    }

    fn conv1d_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        s: ConvShape,
    ) -> Result<()> {
        self.f32_only("conv1d_backward")?;
        let op = "conv1d_backward";
        let rows = s.samples * s.len;
        check_len(op, "x", x.len(), rows * s.c_in)?;
        check_len(op, "w", w.len(), s.c_out * s.c_in * s.kernel)?;
        check_len(op, "dy", dy.len(), rows * s.out_stride)?;
        check_len(op, "dw", dw.len(), s.c_out * s.c_in * s.kernel)?;
        check_len(op, "db", db.len(), s.c_out)?;
        if let Some(dx) = &dx {
            check_len(op, "dx", dx.len(), rows * s.c_in)?;
        }
        if s.out_offset + s.c_out > s.out_stride || s.kernel.is_multiple_of(2) {
            return Err(Error::Backend { backend: "cpu".into(), reason: format!("{op}: inconsistent shape {s:?}") });
        }
        grad::conv1d_backward(x, w, dy, dx.map(|v| v.as_mut_slice()), dw, db, s);
        Ok(())
    }

    fn lstm_train(
        &self,
        gx: &Vec<f32>,
        w_hh: &Vec<f32>,
        h_seq: &mut Vec<f32>,
        c_seq: &mut Vec<f32>,
        gates: &mut Vec<f32>,
        s: LstmShape,
    ) -> Result<()> {
        crate::backend::ops::lstm::train_cpu(self, gx, w_hh, h_seq, c_seq, gates, s)
    }

    fn lstm_backward(
        &self,
        w_hh: &Vec<f32>,
        h_seq: &Vec<f32>,
        c_seq: &Vec<f32>,
        gates: &Vec<f32>,
        dh_seq: &Vec<f32>,
        dgx: &mut Vec<f32>,
        dw_hh: &mut Vec<f32>,
        s: LstmShape,
    ) -> Result<()> {
        crate::backend::ops::lstm::backward_cpu(self, w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, s)
    }

    fn broadcast_add_backward(&self, dx: &Vec<f32>, dsrc: &mut Vec<f32>, s: BroadcastShape) -> Result<()> {
        crate::backend::ops::broadcast_add::backward_cpu(dx, dsrc, s)
    }

    fn pool_backward(
        &self,
        dout: &Vec<f32>,
        dx: &mut Vec<f32>,
        batch: usize,
        tokens: usize,
        dim: usize,
        how: Pool,
    ) -> Result<()> {
        crate::backend::ops::pool::backward_cpu(dout, dx, batch, tokens, dim, how)
    }

    fn heads_loss(
        &self,
        z: &Vec<f32>,
        p: HeadsRef<'_, Self>,
        out: HeadsOut<'_, Self>,
        targets: HeadsTargets<'_, Self>,
        loss: HeadsLoss,
        grads: Option<(HeadsGrads<'_, Self>, &mut Vec<f32>)>,
        batch: usize,
        dim: usize,
    ) -> Result<f64> {
        crate::backend::ops::heads::loss_cpu(z, p, out, targets, loss, grads, batch, dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_writes_the_first_len_values() {
        // The sum of squares' half of this test moved to ops/sum_squares.rs.
        let mut x: Vec<f32> = (0..50_000).map(|i| (i % 10) as f32).collect();
        Cpu::new().fill(&mut x, 10, 3.0).unwrap();
        assert_eq!(&x[..11], &[3.0; 10].iter().copied().chain([0.0]).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn a_bf16_cpu_refuses_the_training_ops_that_read_prepared_weights() {
        let Ok(be) = Cpu::with_precision(crate::backend::Precision::Bf16) else {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        };
        let w = vec![0.5f32; 12];
        let mut dst = vec![0f32; 12];
        let e = be.prepare_linear_from(&w, 3, 4, &mut dst).unwrap_err().to_string();
        assert!(e.contains("prepare_linear_from") && e.contains("f32"), "{e}");
        assert_eq!(dst, vec![0f32; 12], "a refused op changes nothing");
    }
}
