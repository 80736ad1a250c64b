//! Conv1d over channels-last sequences as im2col + one GEMM.
//!
//! The im2col row of position t of a sample holds, for each input channel c
//! and tap j, `x[t + j − k/2, c]` (zero outside the sequence) at column
//! `c·k + j`: exactly the flattening of PyTorch's `(c_out, c_in, k)` weight, so
//! the weight is the `(c_out, c_in·k)` matrix `prepare_linear` was given.

use super::small_gemm::{self, Bias, Elem, Lhs, Operand, Output, Product, Taps};
use super::{bias_act, matmul, split_columns, split_items, with_scratch, SendPtr, PAR_MIN_MACS};
use crate::backend::ConvShape;

pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let rows = s.samples * len;
    if small_gemm::f32_available() {
        forward_taps(x, w, b, y, s, gelu);
    } else {
        let width = cin * k;
        with_scratch(rows * width, |cols| {
            im2col(x, cols, len, cin, k);
            matmul(cols, w, &mut y[s.out_offset..], rows, width, s.c_out, s.out_stride, false);
        });
        bias_act(y, b, rows, s.out_stride, s.out_offset, gelu);
    }
}

/// The conv as a sum of k row-shifted products, summed in registers: no
/// im2col matrix (k times the input, written with a stride; a seventh of a
/// TLOB forward). Tap `j` multiplies input row `t + j − k/2` by the rows
/// `c·k + j` of the prepared weight (a strided view of it), so the input
/// only needs its zero padding: each sample is copied between `k/2` zero
/// rows on either side.
fn forward_taps(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k, pad) = (s.len, s.c_in, s.kernel, s.kernel / 2);
    let stored = len + 2 * pad;
    assert!(x.len() >= s.samples * len * cin && w.len() >= cin * k * s.c_out && b.len() >= s.c_out);
    assert!(s.samples == 0 || y.len() >= (s.samples * len - 1) * s.out_stride + s.out_offset + s.c_out);
    with_scratch(s.samples * stored * cin, |xp| {
        for (src, dst) in x.chunks(len * cin).zip(xp.chunks_mut(stored * cin)).take(s.samples) {
            dst[..pad * cin].fill(0.0);
            dst[pad * cin..(pad + len) * cin].copy_from_slice(src);
            dst[(pad + len) * cin..].fill(0.0);
        }
        let pr = Product {
            a: Lhs { ptr: xp.as_ptr() as *const u32, ld: cin, seq: Some((len, stored)) },
            b: Operand { ptr: w.as_ptr() as *const u32, ld: k * s.c_out },
            y: Output { ptr: y[s.out_offset..].as_mut_ptr(), ld: s.out_stride, accumulate: false },
            rows: s.samples * len,
            depth: cin,
            taps: Taps { count: k, lhs_step: cin, rhs_step: s.c_out },
            bias: Some(Bias { ptr: b.as_ptr(), gelu }),
        };
        let macs = s.samples * len * cin * k * s.c_out;
        // SAFETY: the assertions bound every padded input row, weight row and
        // output element the taps touch; the halves write disjoint columns.
        split_columns(s.c_out, macs >= PAR_MIN_MACS, &|cols| unsafe { small_gemm::run(Elem::F32, &pr, cols) });
    });
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
    let rows = cols.len() / width;
    let dst = SendPtr(cols.as_mut_ptr());
    split_items(rows, cols.len() >= 1 << 16, &|range| {
        for r in range {
            // SAFETY: row r of cols is inside it and this half's alone.
            fill((r, unsafe { std::slice::from_raw_parts_mut(dst.at(r * width), width) }));
        }
    });
}
