//! Conv1d over channels-last sequences as im2col + one GEMM.
//!
//! The im2col row of position t of a sample holds, for each input channel c
//! and tap j, `x[t + j − k/2, c]` (zero outside the sequence) at column
//! `c·k + j`: exactly the flattening of PyTorch's `(c_out, c_in, k)` weight, so
//! the weight is the `(c_out, c_in·k)` matrix `prepare_linear` was given.

use rayon::prelude::*;

use super::{bias_act, matmul, with_scratch};
use crate::backend::ConvShape;

pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let rows = s.samples * len;
    let width = cin * k;
    with_scratch(rows * width, |cols| {
        im2col(x, cols, len, cin, k);
        matmul(cols, w, &mut y[s.out_offset..], rows, width, s.c_out, s.out_stride, false);
    });
    bias_act(y, b, rows, s.out_stride, s.out_offset, gelu);
}

/// The im2col matrix `cols (samples·len, c_in·k)` of a "same" Conv1d over
/// channels-last `x (samples, len, c_in)`: row `(sample, t)`, column `c·k + j`
/// (PyTorch's weight flattening) holds `x[sample, t + j − k/2, c]`, zero
/// outside the sequence. Shared by the forward and the backward.
pub(super) fn im2col(x: &[f32], cols: &mut [f32], len: usize, cin: usize, k: usize) {
    let pad = k / 2;
    let width = cin * k;
    let fill = |(r, dst): (usize, &mut [f32])| {
        let (smp, t) = (r / len, r % len);
        for j in 0..k {
            let src_t = t as isize + j as isize - pad as isize;
            if src_t < 0 || src_t >= len as isize {
                for c in 0..cin {
                    dst[c * k + j] = 0.0;
                }
            } else {
                let src = &x[(smp * len + src_t as usize) * cin..][..cin];
                for (c, v) in src.iter().enumerate() {
                    dst[c * k + j] = *v;
                }
            }
        }
    };
    if cols.len() >= 1 << 16 {
        cols.par_chunks_mut(width).enumerate().for_each(fill);
    } else {
        cols.chunks_mut(width).enumerate().for_each(fill);
    }
}
