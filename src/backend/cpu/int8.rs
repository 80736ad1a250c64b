//! The CPU backend's int8 mode (`Precision::Int8`, on CPUs with
//! AVX512_VNNI): every weight that goes through `prepare_linear` (the
//! linear layers and the patch projection), `prepare_conv` or
//! `prepare_recurrent` (the LSTM's `W_hh`) is quantized
//! once at load, symmetric per output channel; activations are quantized as
//! each product runs, per row for a linear layer and per sample for a conv
//! (a conv's output row sums k shifted input rows, which must share one
//! scale for it to factor out); `vpdpbusd` multiplies the bytes four at a
//! time into exact i32 sums, which one multiply per output turns back into
//! f32 before the bias and GELU. Four products per lane and instruction
//! (twice bf16's, four times f32's) and a quarter of f32's weight bytes.
//!
//! The LSTM's recurrence quantizes each step's `h` per sample the same way
//! (ops/lstm.rs, `forward_packed`); the cell state stays f32. What stays in
//! higher precision: the norms, attention, the cell updates and the heads,
//! f32 as in every mode.
//!
//! Quantization, in one place for the weights and the activations:
//! - a weight row (one output channel) is symmetric: scale `max|w| / 127`,
//!   values `round_ties_even(w · 127 / max|w|)` clamped to ±127
//!   (`vpdpbusd` takes its right operand signed);
//! - an activation row is asymmetric over `[min(x, 0), max(x, 0)]`: scale
//!   `(hi − lo) / 255`, zero point `z = round(−lo · 255 / (hi − lo))`, values
//!   `u = round(x · 255 / (hi − lo)) + z` clamped to `0..=255` (`vpdpbusd`
//!   takes its left operand unsigned). A row after a GELU is nearly
//!   one-sided, and this gives it twice a symmetric scale's resolution; on
//!   MPD's held-out windows it halved the probabilities' error.
//!
//! A row of zeros has scale 0; a row holding a NaN or an infinity has scale
//! NaN, so its outputs are NaN as in f32 rather than quietly finite.
//!
//! Each column keeps `Σ_k q_w` so the zero point comes off exactly, in i32:
//! the product of row `r` and column `j` is
//! `((Σ_k u·q_w − z_r·Σ_k q_w) as f32) · (scale_r · scale_j)`, bit for bit:
//! the tests hold the kernel to that formula.
//!
//! Layouts (bits in the backend's `Vec<f32>` buffers): a prepared weight
//! `(n_out, n_in)` is `⌈n_in/4⌉ × n_out` quads of four consecutive inputs'
//! signed bytes (zero past `n_in`), then `n_out` f32 scales, then `n_out`
//! i32 sums; a conv's `(c_out, c_in, k)` is the same per tap, tap after tap,
//! then the scales and sums over all taps (`pack_conv`). A quantized
//! activation row is its `⌈k/4⌉` quads of unsigned bytes (zero past `k`,
//! against zero weights), then its scale, then its zero point (i32); a
//! conv's sample is its rows of quads between padding rows of zero points
//! (ops/conv1d.rs), its scale and zero point after them.

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use super::small_gemm::lanes;
use super::small_gemm::{self, Bias, Dequant, Elem, Lhs, Operand, Output, Product, Taps};
use super::{run_product, split_chunks, with_local, Gemm, PAR_MIN_ELEMS, PAR_MIN_MACS};
use crate::error::Result;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The deepest product whose i32 sums cannot overflow: `Σ u·q_w` and
/// `z·Σ q_w` are each at most 255·127 per input in size, so their
/// difference stays below 2³¹ up to 33,000 inputs.
pub(crate) const MAX_DEPTH: usize = 1 << 15;

/// A weight's quantized value: `v · inv` rounded to the nearest (ties to
/// even, as `vcvtps2dq` does) and clamped to ±127.
pub(crate) fn quantize_weight(v: f32, inv: f32) -> i32 {
    ((v * inv).round_ties_even() as i32).clamp(-127, 127)
}

/// `(scale, inv)` of a weight row whose largest magnitude is `amax`:
/// `scale = amax / 127` multiplies the integer sums back, `inv = 127 /
/// amax` quantizes. Zeros: (0, 0). A NaN or infinity in the row: (NaN, 0).
pub(crate) fn weight_scales(w: &[f32]) -> (f32, f32) {
    let amax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    if !w.iter().all(|x| x.is_finite()) {
        (f32::NAN, 0.0)
    } else if amax == 0.0 {
        (0.0, 0.0)
    } else {
        (amax / 127.0, 127.0 / amax)
    }
}

/// How an activation row is quantized: `u = clamp(round(x · inv) + zero,
/// 0, 255)`, and `scale` multiplies the integer sums back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowQuant {
    pub scale: f32,
    pub inv: f32,
    pub zero: i32,
}

/// `RowQuant` of a row whose values lie in `[lo, hi]`, `lo ≤ 0 ≤ hi`;
/// `finite` false when the row holds a NaN or an infinity.
pub(crate) fn row_quant(lo: f32, hi: f32, finite: bool) -> RowQuant {
    let range = hi - lo;
    if !finite || !range.is_finite() {
        RowQuant { scale: f32::NAN, inv: 0.0, zero: 0 }
    } else if range == 0.0 {
        RowQuant { scale: 0.0, inv: 0.0, zero: 0 }
    } else {
        let inv = 255.0 / range;
        RowQuant { scale: range / 255.0, inv, zero: ((-lo * inv).round_ties_even() as i32).clamp(0, 255) }
    }
}

/// Why a product `depth` inputs deep cannot run in int8, if it cannot
/// (the CPU's and the GPU's int8 share the i32 sums' bound).
pub(crate) fn too_deep(depth: usize) -> Option<String> {
    (depth > MAX_DEPTH)
        .then(|| format!("int8 products take at most {MAX_DEPTH} inputs (i32 sums), this one has {depth}"))
}

/// Refuses, for `op`, a product deeper than `MAX_DEPTH` inputs.
pub(crate) fn check_depth(op: &str, depth: usize) -> Result<()> {
    too_deep(depth).map_or(Ok(()), |reason| Err(super::refuse(op, reason)))
}

/// Values a prepared linear weight `(n_out, n_in)` holds: the quads, the
/// scales and the sums (a conv of one tap).
pub(crate) fn linear_len(n_out: usize, n_in: usize) -> usize {
    conv_len(n_out, n_in, 1)
}

/// `w (n_out, n_in)` row-major quantized per output channel, in the layout
/// above (a conv of one tap).
pub(crate) fn pack(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    pack_conv(w, n_out, n_in, 1)
}

thread_local! {
    /// Quantized activation rows, reused: no allocation after warm-up.
    static QUADS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Values a quantized activation row of `k` inputs takes: its quads, its
/// scale and its zero point.
pub(crate) fn row_len(k: usize) -> usize {
    k.div_ceil(4) + 2
}

/// `x (k)` as unsigned byte quads into `out[..⌈k/4⌉]`, then its scale and
/// zero point (bits). Needs `small_gemm::int8_available()`.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u32]) {
    assert!(out.len() >= row_len(x.len()));
    // A row is a sample of one row, its scale and zero point right after its quads.
    let (quads, tail) = out.split_at_mut(x.len().div_ceil(4));
    quantize_sample(x, 1, x.len(), quads, tail);
}

/// A convolution's input sample `x (rows, k)` quantized with one scale and
/// zero point for the whole sample (a conv's output row sums several input
/// rows, so they must share them): row `r`'s quads into
/// `out[r·⌈k/4⌉..]`, the scale and zero point (bits) into `tail[..2]`.
/// Returns the quad that stands for a zero input (four zero points), which
/// the sample's padding rows must hold. Needs `small_gemm::int8_available()`.
pub(crate) fn quantize_sample(x: &[f32], rows: usize, k: usize, out: &mut [u32], tail: &mut [u32]) -> u32 {
    assert!(small_gemm::int8_available(), "quantize_sample needs AVX512_VNNI");
    let kq = k.div_ceil(4);
    assert!(x.len() >= rows * k && out.len() >= rows * kq && tail.len() >= 2);
    // SAFETY: the feature was checked; each row's 4·kq bytes are inside
    // `out` (asserted).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let (lo, hi, finite) = range_avx512(&x[..rows * k]);
        let q = row_quant(lo, hi, finite);
        for r in 0..rows {
            quantize_into_avx512(&x[r * k..(r + 1) * k], q, out[r * kq..].as_mut_ptr() as *mut i8, 4 * kq);
        }
        tail[0] = q.scale.to_bits();
        tail[1] = q.zero as u32;
        u32::from_le_bytes([q.zero as u8; 4])
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("int8 needs x86-64")
}

/// `(min(x, 0), max(x, 0), no NaN or infinity in x)`.
///
/// Two vectors a step into two pairs of running bounds, and the poison test
/// as a mask: one chain of `min`/`max` latencies per pair instead of one
/// per vector, and no add chain (a quarter of an int8 TLOB's quantizing
/// time was this loop waiting on itself).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn range_avx512(x: &[f32]) -> (f32, f32, bool) {
    // x − x is NaN exactly for a NaN or an infinity. Masked-off lanes load
    // zeros, which the range includes anyway.
    let poisoned = |v: __m512| {
        let d = _mm512_sub_ps(v, v);
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d)
    };
    let zero = _mm512_setzero_ps();
    let (mut lo, mut hi, mut lo2, mut hi2) = (zero, zero, zero, zero);
    let mut poison: __mmask16 = 0;
    let mut i = 0;
    while i + 32 <= x.len() {
        let (a, b) = (_mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(x.as_ptr().add(i + 16)));
        (lo, hi) = (_mm512_min_ps(lo, a), _mm512_max_ps(hi, a));
        (lo2, hi2) = (_mm512_min_ps(lo2, b), _mm512_max_ps(hi2, b));
        poison |= poisoned(a) | poisoned(b);
        i += 32;
    }
    while i < x.len() {
        let v = _mm512_maskz_loadu_ps(lanes(x.len() - i), x.as_ptr().add(i));
        (lo, hi) = (_mm512_min_ps(lo, v), _mm512_max_ps(hi, v));
        poison |= poisoned(v);
        i += 16;
    }
    let (lo, hi) = (_mm512_min_ps(lo, lo2), _mm512_max_ps(hi, hi2));
    (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), poison == 0)
}

/// `x`'s bytes under `q` at `bytes`, then zero bytes up to `padded`
/// (inputs past `k`, which meet zero weights).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_into_avx512(x: &[f32], q: RowQuant, bytes: *mut i8, padded: usize) {
    let k = x.len();
    let (inv, zero, top) = (_mm512_set1_ps(q.inv), _mm512_set1_epi32(q.zero), _mm512_set1_epi32(255));
    for i in (0..k).step_by(16) {
        let v = _mm512_maskz_loadu_ps(lanes(k - i), x.as_ptr().add(i));
        let u = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), zero);
        let u = _mm512_min_epi32(_mm512_max_epi32(u, _mm512_setzero_si512()), top);
        _mm512_mask_cvtusepi32_storeu_epi8(bytes.add(i), lanes(k - i), u);
    }
    for i in k..padded {
        *bytes.add(i) = 0;
    }
}

/// Values an int8-prepared Conv1d weight holds (`pack_conv`): per tap the
/// quads of consecutive input channels, then the scales and the sums.
pub(crate) fn conv_len(c_out: usize, c_in: usize, k: usize) -> usize {
    k * c_in.div_ceil(4) * c_out + 2 * c_out
}

/// PyTorch's `(c_out, c_in, k)` quantized per output channel (over all its
/// taps and channels, the sums' common scale), tap-major: tap `j`'s block is
/// `⌈c_in/4⌉ × c_out` quads of consecutive channels, as a linear weight's
/// (which is this at k = 1).
pub(crate) fn pack_conv(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let cq = c_in.div_ceil(4);
    let mut out = vec![0u32; conv_len(c_out, c_in, k)];
    let taps = k * cq * c_out;
    // Input i of a channel's row is PyTorch's (c, j) = (i / k, i % k).
    let (scales, sums) = quantize_channels(w, c_out, c_in * k, |o, i, byte| {
        let (c, j) = (i / k, i % k);
        out[(j * cq + c / 4) * c_out + o] |= byte << (8 * (c % 4));
    });
    for o in 0..c_out {
        out[taps + o] = scales[o].to_bits();
        out[taps + c_out + o] = sums[o] as u32;
    }
    out.into_iter().map(f32::from_bits).collect()
}

/// Quantizes each of the `n_out` rows of `w` (`row_len` values each)
/// symmetrically per output channel, handing `put(row, input, byte)` every
/// quantized value as its signed byte (in the low 8 bits) for the caller's
/// layout; returns each row's scale and the sum of its quantized values
/// (what the activations' zero points come off with). The CPU's packs and
/// the GPU's (`ops::linear::pack_int8_gpu`) all quantize through here.
pub(crate) fn quantize_channels(
    w: &[f32],
    n_out: usize,
    row_len: usize,
    mut put: impl FnMut(usize, usize, u32),
) -> (Vec<f32>, Vec<i32>) {
    let (mut scales, mut sums) = (Vec::with_capacity(n_out), Vec::with_capacity(n_out));
    for o in 0..n_out {
        let row = &w[o * row_len..(o + 1) * row_len];
        let (scale, inv) = weight_scales(row);
        let mut sum = 0i32;
        for (i, &v) in row.iter().enumerate() {
            let q = quantize_weight(v, inv);
            sum += q;
            put(o, i, u32::from(q as i8 as u8));
        }
        scales.push(scale);
        sums.push(sum);
    }
    (scales, sums)
}

/// `g`'s product (then `+ bias[j]`, GELU) for `W` from `pack`.
pub(super) fn product(x: &[f32], w: &[f32], y: &mut [f32], g: Gemm, bias: Option<(&[f32], bool)>) {
    let Gemm { rows, k, n, ld_y, accumulate } = g;
    if rows == 0 || n == 0 {
        return;
    }
    let kq = k.div_ceil(4);
    let ld = row_len(k);
    assert!(k <= MAX_DEPTH, "int8 products are at most {MAX_DEPTH} deep (prepare refuses deeper)");
    assert!(x.len() >= rows * k && w.len() >= linear_len(n, k) && y.len() >= (rows - 1) * ld_y + n && n <= ld_y);
    assert!(bias.is_none_or(|(b, _)| b.len() >= n));
    with_local(&QUADS, rows * ld, |a| {
        split_chunks(a, rows, ld, ld, rows * k >= PAR_MIN_ELEMS, &|r, row| quantize_row(&x[r * k..(r + 1) * k], row));
        let pr = Product {
            a: Lhs::rows(a.as_ptr(), ld),
            b: Operand { ptr: w.as_ptr() as *const u32, ld: n },
            y: Output { ptr: y.as_mut_ptr(), ld: ld_y, accumulate },
            rows,
            depth: kq,
            taps: Taps::ONE,
            bias: bias.map(|(b, gelu)| Bias { ptr: b.as_ptr(), gelu, keep: std::ptr::null_mut() }),
            dequant: Some(Dequant {
                row_scale: a[kq..].as_ptr() as *const f32,
                row_zero: a[kq + 1..].as_ptr() as *const i32,
                row_ld: ld,
                rows_per_scale: 1,
                col_scale: w[kq * n..].as_ptr(),
                col_sum: w[kq * n + n..].as_ptr() as *const i32,
            }),
        };
        // SAFETY: the assertions bound every quad, scale, sum, bias and
        // output element; every row's scale and zero point were written by
        // `quantize_row`.
        unsafe { run_product(Elem::Int8Quads, &pr, n, rows * k * n >= PAR_MIN_MACS) };
    });
}

/// The quantization written out from its definitions above, without this
/// module's helpers: the reference that the int8 tests of the linear layer,
/// the conv and the recurrence hold the kernels to, the CPU's here and the
/// GPU's (gemm_tile_int8.cuh) in tests/common/kernels.rs.
pub mod reference {
    /// A weight row's `(q, scale)`: symmetric, ±127.
    pub fn weights(v: &[f32]) -> (Vec<i64>, f32) {
        let amax = v.iter().map(|x| x.abs()).fold(0f32, f32::max);
        if amax == 0.0 {
            return (vec![0; v.len()], 0.0);
        }
        let q = v.iter().map(|&x| i64::from(((x * (127.0 / amax)).round_ties_even() as i32).clamp(-127, 127)));
        (q.collect(), amax / 127.0)
    }

    /// An activation row's (or a conv sample's) `(u − z, scale)`:
    /// asymmetric over `[min(v, 0), max(v, 0)]`.
    pub fn activations(v: &[f32]) -> (Vec<i64>, f32) {
        let lo = v.iter().fold(0f32, |m, &x| m.min(x));
        let hi = v.iter().fold(0f32, |m, &x| m.max(x));
        if hi == lo {
            return (vec![0; v.len()], 0.0);
        }
        let inv = 255.0 / (hi - lo);
        let z = i64::from(((-lo * inv).round_ties_even() as i32).clamp(0, 255));
        let u = v.iter().map(|&x| (i64::from((x * inv).round_ties_even() as i32) + z).clamp(0, 255) - z);
        (u.collect(), (hi - lo) / 255.0)
    }

    /// The int8 product of `x (rows, k)`, each row quantized alone (a
    /// linear layer's or a patch's), and `w (n, k)`: the products summed
    /// exactly, then `(Σ as f32) · (scale_row · scale_col)`, the one
    /// rounding the mode defines (before any bias).
    pub fn product(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let qx: Vec<_> = x.chunks(k.max(1)).take(rows).map(activations).collect();
        let qw: Vec<_> = w.chunks(k.max(1)).take(n).map(weights).collect();
        let mut y = Vec::with_capacity(rows * n);
        for (ax, x_scale) in &qx {
            for (qw, w_scale) in &qw {
                let sum: i64 = ax.iter().zip(qw).map(|(a, b)| a * b).sum();
                y.push((sum as f32) * (x_scale * w_scale));
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    //! The kernel against an exact integer reference: the operands quantized
    //! here from first principles, their products summed in i64, then the
    //! one rounding the mode defines (`(Σ as f32) · (scale_r · scale_j)`).
    //! Every output must have the reference's bits.
    use super::reference::product as reference_product;
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin() * (1.0 + (i % 7) as f32)).collect()
    }

    /// Mostly positive, as after a GELU: the zero point sits near one end.
    fn one_sided(n: usize, seed: f32) -> Vec<f32> {
        data(n, seed).into_iter().map(|v| if v < 0.0 { 0.05 * v } else { v }).collect()
    }

    fn available() -> bool {
        let ok = small_gemm::int8_available();
        if !ok {
            eprintln!("skipped: no AVX512_VNNI here");
        }
        ok
    }

    /// Rows around every tile (1, 2, 3..13, 49), depths that are and are
    /// not multiples of 4, columns around the 16-wide vectors and panels.
    const SIZES: &[(usize, usize, usize)] = &[
        (1, 7, 5),
        (1, 1, 17),
        (2, 33, 70),
        (3, 16, 64),
        (5, 2, 17),
        (6, 40, 65),
        (7, 129, 128),
        (13, 63, 200),
        (49, 256, 96),
        (27, 3, 32),
        (23, 21, 60),
        (4, 4096, 33),
    ];

    #[test]
    fn products_have_the_exact_integer_references_bits_at_awkward_sizes() {
        if !available() {
            return;
        }
        for &(rows, k, n) in SIZES {
            for (shape, x) in [("two-sided", data(rows * k, 1.0)), ("one-sided", one_sided(rows * k, 1.0))] {
                let (w, b) = (data(n * k, 2.0), data(n, 3.0));
                let want = reference_product(&x, &w, rows, k, n);
                let wp = pack(&w, n, k);
                let g = |accumulate| Gemm { rows, k, n, ld_y: n, accumulate };
                let mut y = data(rows * n, 4.0);
                product(&x, &wp, &mut y, g(false), None);
                assert_eq!(bits(&y), bits(&want), "{rows}x{k}x{n} {shape}");
                // Added into the output, then the bias: two f32 additions.
                let y0 = data(rows * n, 5.0);
                let mut y = y0.clone();
                product(&x, &wp, &mut y, g(true), Some((&b, false)));
                let want_acc: Vec<f32> = (0..rows * n).map(|i| (y0[i] + want[i]) + b[i % n]).collect();
                assert_eq!(bits(&y), bits(&want_acc), "{rows}x{k}x{n} {shape} accumulate + bias");
            }
        }
    }

    #[test]
    fn the_largest_sums_do_not_overflow() {
        if !available() {
            return;
        }
        // Row 0 all at +max (stored as 255, zero point 0), row 1 all at
        // -max (stored as 0, zero point 255), every weight at -max: the
        // largest sums, and the largest zero-point term, an i32 lane sees.
        let (k, n) = (MAX_DEPTH, 16);
        let mut x = vec![1.0f32; 2 * k];
        x[k..].fill(-1.0);
        let w = vec![-1.0f32; n * k];
        let mut y = vec![0f32; 2 * n];
        product(&x, &pack(&w, n, k), &mut y, Gemm { rows: 2, k, n, ld_y: n, accumulate: false }, None);
        let want = ((255 * 127 * k) as f32) * ((1.0f32 / 255.0) * (1.0 / 127.0));
        assert!(y[..n].iter().all(|&v| v == -want), "{:?} vs {}", &y[..4], -want);
        assert!(y[n..].iter().all(|&v| v == want), "{:?} vs {want}", &y[n..n + 4]);
    }

    #[test]
    fn a_row_of_zeros_gives_zeros_and_a_nan_or_infinity_poisons_only_its_row() {
        if !available() {
            return;
        }
        // The range reads two vectors a step, then the tail: poison in each place.
        let (rows, k, n) = (6, 37, 20);
        let mut x = data(rows * k, 1.0);
        x[..k].fill(0.0);
        x[k + 5] = f32::NAN;
        x[2 * k + 36] = f32::INFINITY;
        x[4 * k + 20] = f32::NAN;
        x[5 * k + 17] = f32::NEG_INFINITY;
        let wp = pack(&data(n * k, 2.0), n, k);
        let mut y = vec![1f32; rows * n];
        product(&x, &wp, &mut y, Gemm { rows, k, n, ld_y: n, accumulate: false }, None);
        assert!(y[..n].iter().all(|&v| v == 0.0), "{:?}", &y[..n]);
        assert!(y[n..3 * n].iter().all(|v| v.is_nan()), "{:?}", &y[n..3 * n]);
        assert!(y[3 * n..4 * n].iter().all(|v| v.is_finite() && *v != 0.0), "{:?}", &y[3 * n..4 * n]);
        assert!(y[4 * n..].iter().all(|v| v.is_nan()), "{:?}", &y[4 * n..]);
    }

    #[test]
    fn weights_round_ties_to_even_symmetrically_and_pad_with_zero() {
        // max|w| 127: inv is 1, so the values are their own quantized values.
        let w = [127.0f32, -127.0, 2.5, -0.5, 1.5, 3.0];
        let (scale, inv) = weight_scales(&w);
        assert_eq!((scale, inv), (1.0, 1.0));
        let q: Vec<i32> = w.iter().map(|&v| quantize_weight(v, inv)).collect();
        assert_eq!(q, [127, -127, 2, 0, 2, 3]);
        let quad = |a: i32, b: i32, c: i32, d: i32| {
            f32::from_bits(u32::from_le_bytes([a as i8 as u8, b as i8 as u8, c as i8 as u8, d as i8 as u8]))
        };
        let sum: i32 = q.iter().sum();
        let want = [quad(127, -127, 2, 0), quad(2, 3, 0, 0), 1.0, f32::from_bits(sum as u32)];
        assert_eq!(bits(&pack(&w, 1, 6)), bits(&want));
    }

    #[test]
    fn activations_take_a_zero_point_and_round_ties_to_even() {
        if !available() {
            return;
        }
        // Range [-100, 155]: inv 1, zero point 100.
        let x = [-100.0f32, 155.0, 0.5, -0.5, 1.5];
        assert_eq!(row_quant(-100.0, 155.0, true), RowQuant { scale: 1.0, inv: 1.0, zero: 100 });
        let mut row = [u32::MAX; 4];
        quantize_row(&x, &mut row);
        assert_eq!(row[0], u32::from_le_bytes([0, 255, 100, 100]));
        assert_eq!(row[1], u32::from_le_bytes([102, 0, 0, 0]));
        assert_eq!((f32::from_bits(row[2]), row[3]), (1.0, 100));
        // All positive: the range starts at 0, the zero point is 0.
        quantize_row(&[255.0, 0.0, 2.5, 1.5, 3.0], &mut row);
        assert_eq!((row[0], row[1], row[3]), (u32::from_le_bytes([255, 0, 2, 2]), 3, 0));
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
