//! The LSTM recurrence (PyTorch `nn.LSTM` semantics, gates i, f, g, o).
//!
//! The input projection of every step is one GEMM done by the caller; what is
//! left is inherently sequential: per step, `gates = gx[t] + h · W_hhᵀ`, then
//! the pointwise cell update. At batch 1 that product is a matrix-vector
//! product over `W_hh` (4H × H, 1 MiB at H = 256), split across two cores; at
//! larger batches, a GEMM per step against the transposed copy, the batch
//! split across two cores.

use super::{matmul, pair, simd, with_scratch, Gemm, SendPtr, PAR_MIN_MACS};
use crate::backend::LstmShape;

/// `w_hh` is `prepare_recurrent`'s `[W_hh | W_hhᵀ]`.
pub(super) fn forward(gx: &[f32], w_hh: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let (w_hh, w_t) = w_hh.split_at(4 * s.hidden * s.hidden);
    let two_cores = rayon::current_num_threads() > 1 && 4 * s.hidden * s.hidden >= PAR_MIN_MACS;
    if s.batch == 1 && two_cores {
        return forward_single_split(gx, w_hh, h_seq, s.steps, s.hidden);
    }
    if s.batch >= 2 && two_cores {
        return forward_batch_split(gx, w_hh, w_t, h_seq, s);
    }
    forward_batch(gx, w_hh, w_t, h_seq, s.batch, s.steps, s.hidden, true);
}

/// Batches of 2 and more: the samples' recurrences are independent, so each
/// core runs every step for half of the batch, with serial products, and the
/// two meet once at the end instead of at a fork/join per step (which, with
/// the per-step cell update left on one core, cost a third of the time at
/// batch 32).
fn forward_batch_split(gx: &[f32], w_hh: &[f32], w_t: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let (steps, h) = (s.steps, s.hidden);
    let out = SendPtr(h_seq.as_mut_ptr());
    pair::run_halves(s.batch, &|b0, nb| {
        // SAFETY: the halves write the disjoint sample ranges [0, first) and
        // [first, batch) of h_seq, which the caller holds mutably throughout.
        let hs = unsafe { std::slice::from_raw_parts_mut(out.at(b0 * steps * h), nb * steps * h) };
        forward_batch(&gx[b0 * steps * 4 * h..][..nb * steps * 4 * h], w_hh, w_t, hs, nb, steps, h, false);
    });
}

/// Every step of `batch` samples on this thread (`parallel`: the per-step
/// products may split across the cores).
#[allow(clippy::too_many_arguments)]
fn forward_batch(
    gx: &[f32],
    w_hh: &[f32],
    w_t: &[f32],
    h_seq: &mut [f32],
    batch: usize,
    steps: usize,
    h: usize,
    parallel: bool,
) {
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
                    matmul(
                        h_prev,
                        w_t,
                        gates,
                        Gemm { rows: batch, k: h, n: g4, ld_y: g4, accumulate: true },
                        parallel,
                        None,
                    );
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

/// Batch 1, the latency case: the two halves of the hidden units run on two
/// cores, each computing all four gate rows of its units (so its part of the
/// cell update is local) from the full previous `h`, meeting once per step.
/// Each core then streams only its half of `W_hh` (512 KiB at H = 256), which
/// stays in its own L2 across the steps. The second core is `pair`'s helper
/// thread (a spin barrier per step); if it is busy, `rayon::join` per step.
fn forward_single_split(gx: &[f32], w_hh: &[f32], h_seq: &mut [f32], steps: usize, h: usize) {
    let g4 = 4 * h;
    // Split on a 16-float boundary so each half's rows start vector-aligned.
    let mid = ((h / 2).div_ceil(16) * 16).min(h);
    with_scratch(2 * h + h + g4, |scr| {
        let (hbuf, rest) = scr.split_at_mut(2 * h);
        let (c, gates) = rest.split_at_mut(h);
        hbuf.fill(0.0);
        c.fill(0.0);
        let (hp_ptr, c_ptr, g_ptr, out_ptr) = (
            SendPtr(hbuf.as_mut_ptr()),
            SendPtr(c.as_mut_ptr()),
            SendPtr(gates.as_mut_ptr()),
            SendPtr(h_seq.as_mut_ptr()),
        );
        // One step for units [u0, u1): the halves touch disjoint units of `c`,
        // of the gate scratch, of the next `h` and of the step's output row;
        // both read the whole current `h`, which neither writes in that step.
        let half = |u0: usize, u1: usize, t: usize| {
            let n = u1 - u0;
            let (cur, next) = if t.is_multiple_of(2) { (0, h) } else { (h, 0) };
            // SAFETY: see above; the caller orders steps (join or barrier).
            let (h_cur, c, h_next, out, g) = unsafe {
                (
                    std::slice::from_raw_parts(hp_ptr.at(cur), h),
                    std::slice::from_raw_parts_mut(c_ptr.at(u0), n),
                    std::slice::from_raw_parts_mut(hp_ptr.at(next + u0), n),
                    std::slice::from_raw_parts_mut(out_ptr.at(t * h + u0), n),
                    std::slice::from_raw_parts_mut(g_ptr.at(4 * u0), 4 * n),
                )
            };
            for q in 0..4 {
                let gq = &mut g[q * n..(q + 1) * n];
                gq.copy_from_slice(&gx[t * g4 + q * h + u0..][..n]);
                if t > 0 {
                    simd::gemv_acc(&w_hh[(q * h + u0) * h..(q * h + u1) * h], h_cur, gq);
                }
            }
            simd::lstm_cell(g, c, h_next);
            out.copy_from_slice(h_next);
        };
        let ran = pair::run(&|part, barrier| {
            let (u0, u1) = if part == 0 { (0, mid) } else { (mid, h) };
            let mut sense = false;
            for t in 0..steps {
                half(u0, u1, t);
                // After this, step t's `h` is complete and step t−1's buffer,
                // which step t + 1 overwrites, is no longer read.
                barrier.wait(&mut sense);
            }
        });
        if !ran {
            for t in 0..steps {
                rayon::join(|| half(0, mid, t), || half(mid, h, t));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_batch1_recurrence_matches_the_plain_one() {
        use crate::backend::{Backend, LstmShape};
        // Hidden sizes around the split point, incl. one not a multiple of 16.
        for &(steps, h) in &[(7usize, 200usize), (5, 256), (3, 183)] {
            let g4 = 4 * h;
            let gx: Vec<f32> = (0..steps * g4).map(|i| (i as f32 * 0.013).sin()).collect();
            let w: Vec<f32> = (0..g4 * h).map(|i| (i as f32 * 0.0071).cos() * 0.05).collect();
            let mut split = vec![0f32; steps * h];
            super::forward_single_split(&gx, &w, &mut split, steps, h);
            assert!(split.iter().all(|v| v.is_finite() && *v != 0.0), "the split path wrote every value");
            // The plain path at batch 2 with the same sample twice.
            let mut gx2 = gx.clone();
            gx2.extend_from_slice(&gx);
            let mut plain = vec![0f32; 2 * steps * h];
            let be = crate::Cpu::new();
            let both = be.prepare_recurrent(&w, h).unwrap();
            be.lstm(&gx2, &both, &mut plain, LstmShape { batch: 2, steps, hidden: h }).unwrap();
            for (i, (a, b)) in split.iter().zip(&plain[..steps * h]).enumerate() {
                assert!((a - b).abs() < 1e-6, "steps {steps} h {h} index {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn batch_split_recurrence_matches_the_plain_one() {
        use crate::backend::LstmShape;
        // Odd and even batches (uneven halves), hidden not a multiple of 16.
        for &(batch, steps, h) in &[(2usize, 4usize, 200usize), (3, 5, 183), (5, 3, 256)] {
            let g4 = 4 * h;
            let gx: Vec<f32> = (0..batch * steps * g4).map(|i| (i as f32 * 0.017).sin()).collect();
            let w: Vec<f32> = (0..g4 * h).map(|i| (i as f32 * 0.0071).cos() * 0.05).collect();
            let w_t = crate::backend::cpu::transpose(&w, g4, h);
            let s = LstmShape { batch, steps, hidden: h };
            let mut split = vec![0f32; batch * steps * h];
            super::forward_batch_split(&gx, &w, &w_t, &mut split, s);
            let mut plain = vec![0f32; batch * steps * h];
            super::forward_batch(&gx, &w, &w_t, &mut plain, batch, steps, h, true);
            assert!(split.iter().all(|v| v.is_finite() && *v != 0.0), "the split path wrote every value");
            for (i, (a, b)) in split.iter().zip(&plain).enumerate() {
                assert!((a - b).abs() < 1e-6, "batch {batch} h {h} index {i}: {a} vs {b}");
            }
        }
    }
}
