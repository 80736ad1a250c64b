//! The LSTM recurrence (PyTorch `nn.LSTM` semantics, gates i, f, g, o).
//!
//! The input projection of every step is one GEMM done by the caller; what is
//! left is inherently sequential: per step, `gates = gx[t] + h · W_hhᵀ`, then
//! the pointwise cell update. At batch 1 that product is a matrix-vector
//! product over `W_hh` (4H × H, 1 MiB at H = 256, which stays in L2 across the
//! steps); at larger batches it is a small GEMM.

use super::{simd, with_scratch, PAR_MIN_MACS};
use crate::backend::LstmShape;

pub(super) fn forward(gx: &[f32], w_hh: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let g4 = 4 * h;
    with_scratch(batch * g4 + 2 * batch * h, |scr| {
        let (gates, state) = scr.split_at_mut(batch * g4);
        let (h_prev, c) = state.split_at_mut(batch * h);
        h_prev.fill(0.0);
        c.fill(0.0);
        for t in 0..steps {
            for bi in 0..batch {
                gates[bi * g4..(bi + 1) * g4].copy_from_slice(&gx[(bi * steps + t) * g4..][..g4]);
            }
            if t > 0 {
                if batch == 1 {
                    simd::gemv_acc(w_hh, h_prev, gates);
                } else {
                    gates_from_hidden(h_prev, w_hh, gates, batch, h);
                }
            }
            for bi in 0..batch {
                let g = &gates[bi * g4..(bi + 1) * g4];
                let cb = &mut c[bi * h..(bi + 1) * h];
                let hb = &mut h_prev[bi * h..(bi + 1) * h];
                simd::lstm_cell(g, cb, hb);
                h_seq[(bi * steps + t) * h..][..h].copy_from_slice(hb);
            }
        }
    });
}

/// `gates (batch, 4H) += h (batch, H) · W_hhᵀ` with `W_hh (4H, H)` in PyTorch
/// layout: one dot product per (sample, gate row), rows split across threads
/// when the batch makes it worth it.
fn gates_from_hidden(h_prev: &[f32], w_hh: &[f32], gates: &mut [f32], batch: usize, h: usize) {
    use rayon::prelude::*;
    let g4 = 4 * h;
    let row = |(bi, g): (usize, &mut [f32])| simd::gemv_acc(w_hh, &h_prev[bi * h..(bi + 1) * h], g);
    if batch * g4 * h >= PAR_MIN_MACS {
        gates[..batch * g4].par_chunks_mut(g4).enumerate().for_each(row);
    } else {
        gates[..batch * g4].chunks_mut(g4).enumerate().for_each(row);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gates_from_hidden_matches_naive() {
        let (batch, h) = (3, 5);
        let w: Vec<f32> = (0..4 * h * h).map(|i| (i as f32 * 0.37).sin()).collect();
        let hp: Vec<f32> = (0..batch * h).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut g = vec![0.5f32; batch * 4 * h];
        super::gates_from_hidden(&hp, &w, &mut g, batch, h);
        for b in 0..batch {
            for j in 0..4 * h {
                let want: f32 = 0.5 + (0..h).map(|k| w[j * h + k] * hp[b * h + k]).sum::<f32>();
                assert!((g[b * 4 * h + j] - want).abs() < 1e-5, "b{b} j{j}: {} vs {want}", g[b * 4 * h + j]);
            }
        }
    }
}
