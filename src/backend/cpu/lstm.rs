//! The LSTM recurrence (PyTorch `nn.LSTM` semantics, gates i, f, g, o).
//!
//! The input projection of every step is one GEMM done by the caller; what is
//! left is inherently sequential: per step, `gates = gx[t] + h · W_hhᵀ`, then
//! the pointwise cell update. At batch 1 that product is a matrix-vector
//! product over `W_hh` (4H × H, 1 MiB at H = 256, which stays in L2 across the
//! steps); at larger batches it is a small GEMM.

use super::{matmul_wt, simd, with_scratch};
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
                    matmul_wt(h_prev, w_hh, gates, batch, h, g4, g4, true);
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
