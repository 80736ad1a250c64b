//! Conv1d over channels-last sequences as im2col + one GEMM.
//!
//! The im2col row of position t of a sample holds, for each input channel c
//! and tap j, `x[t + j − k/2, c]` (zero outside the sequence) at column
//! `c·k + j`: exactly the flattening of PyTorch's `(c_out, c_in, k)` weight, so
//! the weight is the `(c_out, c_in·k)` matrix `prepare_linear` was given.

use super::small_gemm::{self, Bias, Elem, Lhs, Operand, Output, Product, Taps};
use super::{matmul, run_product, split_chunks, with_scratch, Gemm, PAR_MIN_ELEMS, PAR_MIN_MACS};
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
            let g = Gemm { rows, k: width, n: s.c_out, ld_y: s.out_stride, accumulate: false };
            matmul(cols, w, &mut y[s.out_offset..], g, true, Some((b, gelu)));
        });
    }
}

/// The conv as a sum of k row-shifted products, summed in registers: no
/// im2col matrix (k times the input, written with a stride; a seventh of a
/// TLOB forward). Tap `j` multiplies input row `t + j − k/2` by the rows
/// `c·k + j` of the prepared weight (a strided view of it), so the input
/// only needs its zero padding.
fn forward_taps(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    assert!(x.len() >= s.samples * len * cin && w.len() >= cin * k * s.c_out);
    let taps = TapWeight { elem: Elem::F32, ptr: w.as_ptr() as *const u32, ld: k * s.c_out, tap_step: s.c_out };
    with_scratch(s.samples * (len + k - 1) * cin, |xp| {
        conv_taps(xp, cin, taps, b, y, s, gelu, &|smp, rows| rows.copy_from_slice(&x[smp * len * cin..][..len * cin]));
    });
}

/// Where tap `j`'s weight block starts (`j·tap_step` on from `ptr`), its
/// row stride, and the elements of both operands.
#[derive(Clone, Copy)]
pub(super) struct TapWeight {
    pub elem: Elem,
    pub ptr: *const u32,
    pub ld: usize,
    pub tap_step: usize,
}

/// A "same" Conv1d (then bias, GELU if asked) as `s.kernel` row-shifted
/// products over `xp`: each sample laid out between `k/2` zero rows on
/// either side, its own rows written by `fill(sample, rows)`, `width`
/// elements a row (f32 values, or bf16 pairs).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_taps<T: Copy + Default + Send>(
    xp: &mut [T],
    width: usize,
    w: TapWeight,
    b: &[f32],
    y: &mut [f32],
    s: ConvShape,
    gelu: bool,
    fill: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert_eq!(std::mem::size_of::<T>(), 4, "the kernel reads 32-bit elements");
    let (len, k, pad) = (s.len, s.kernel, s.kernel / 2);
    let (stored, rows) = (len + 2 * pad, s.samples * len);
    if rows == 0 {
        return;
    }
    assert!(b.len() >= s.c_out && s.out_offset + s.c_out <= s.out_stride);
    assert!(y.len() >= (rows - 1) * s.out_stride + s.out_offset + s.c_out);
    let block = stored * width;
    split_chunks(xp, s.samples, block, block, rows * width >= PAR_MIN_ELEMS, &|smp, dst| {
        dst[..pad * width].fill(T::default());
        fill(smp, &mut dst[pad * width..(pad + len) * width]);
        dst[(pad + len) * width..].fill(T::default());
    });
    let pr = Product {
        a: Lhs { ptr: xp.as_ptr() as *const u32, ld: width, seq: Some((len, stored)) },
        b: Operand { ptr: w.ptr, ld: w.ld },
        y: Output { ptr: y[s.out_offset..].as_mut_ptr(), ld: s.out_stride, accumulate: false },
        rows,
        depth: width,
        taps: Taps { count: k, lhs_step: width, rhs_step: w.tap_step },
        bias: Some(Bias { ptr: b.as_ptr(), gelu }),
    };
    let macs = rows * width * k * s.c_out;
    // SAFETY: every padded row the taps read is inside xp (split_chunks
    // asserted its length), the output and bias are asserted above, and the
    // callers assert their weight's length.
    unsafe { run_product(w.elem, &pr, s.c_out, macs >= PAR_MIN_MACS) };
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
    split_chunks(cols, rows, width, width, cols.len() >= 1 << 16, &|r, row| fill((r, row)));
}
