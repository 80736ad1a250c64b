//! The CPU backend's int8 mode (`Precision::Int8`, on CPUs with AVX512_VNNI
//! and AVX512_BF16): every weight that goes through `prepare_linear` (the
//! linear layers and the patch projection) is quantized once at load,
//! symmetric per output channel; each product's activations are quantized
//! per row as it runs; `vpdpbusd` multiplies the bytes four at a time into
//! exact i32 sums, which one multiply per output turns back into f32 before
//! the bias and GELU. Four products per lane and instruction (twice bf16's,
//! four times f32's) and a quarter of f32's weight bytes.
//!
//! What stays in higher precision, and why: the convolutions and the LSTM's
//! recurrence run as in bf16 mode (a conv's row mixes k input rows, so one
//! scale per row would not factor out of its sum; the recurrence quantizes
//! the state it feeds back, 60 times over), and the norms, attention, the
//! cell updates and the heads stay f32 as in every mode.
//!
//! Quantization, in one place for the weights and the activations
//! (`scales`, `quantize`): a row's scale is `max|v| / 127`, its values
//! `round_ties_even(v · 127 / max|v|)` clamped to ±127; a row of zeros has
//! scale 0, and a row holding a NaN or an infinity has scale NaN, so its
//! outputs are NaN as in f32 rather than quietly finite.
//!
//! `vpdpbusd` takes its left operand unsigned, so activations are stored as
//! `q + 128` and each column's `128 · Σ_k q_w` is subtracted from its sum
//! (exact, in i32). The product of row `r` and column `j` is then
//! `((Σ_k q_x · q_w) as f32) · (scale_r · scale_j)`, bit for bit: the tests
//! hold the kernel to that formula.
//!
//! Layouts (bits in the backend's `Vec<f32>` buffers): a prepared weight
//! `(n_out, n_in)` is `⌈n_in/4⌉ × n_out` quads of four consecutive inputs'
//! signed bytes (zero past `n_in`), then `n_out` f32 scales, then `n_out`
//! i32 offsets; a quantized activation row is its `⌈k/4⌉` quads of
//! unsigned bytes (128, a zero, past `k`), then its scale.

use std::cell::RefCell;

use super::small_gemm::{self, Bias, Dequant, Elem, Lhs, Operand, Output, Product, Taps};
use super::{run_product, split_chunks, with_local, Gemm, PAR_MIN_ELEMS, PAR_MIN_MACS};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The deepest product whose i32 sums cannot overflow: each term of
/// `Σ (q_x + 128)·q_w` is at most 255·127 in size, and the offset taken
/// back off adds 128·127 more per input; 32768 inputs stay below 2³¹.
pub(crate) const MAX_DEPTH: usize = 1 << 15;

/// The quantized value of an activation or weight is `v · inv`, rounded to
/// the nearest (ties to even, as `vcvtps2dq` does) and clamped to ±127.
pub(crate) fn quantize(v: f32, inv: f32) -> i32 {
    ((v * inv).round_ties_even() as i32).clamp(-127, 127)
}

/// `(scale, inv)` of a row whose largest magnitude is `amax`: `scale =
/// amax / 127` multiplies the integer sums back, `inv = 127 / amax`
/// quantizes. Zeros: (0, 0). A NaN or infinity in the row: (NaN, 0).
pub(crate) fn scales(amax: f32, finite: bool) -> (f32, f32) {
    if !finite {
        (f32::NAN, 0.0)
    } else if amax == 0.0 {
        (0.0, 0.0)
    } else {
        (amax / 127.0, 127.0 / amax)
    }
}

/// `scales` of a row of values.
pub(crate) fn row_scales(v: &[f32]) -> (f32, f32) {
    let finite = v.iter().all(|x| x.is_finite());
    scales(v.iter().fold(0f32, |m, x| m.max(x.abs())), finite)
}

/// Values a prepared linear weight `(n_out, n_in)` holds: the quads, the
/// scales and the offsets.
pub(crate) fn linear_len(n_out: usize, n_in: usize) -> usize {
    n_in.div_ceil(4) * n_out + 2 * n_out
}

/// `w (n_out, n_in)` row-major quantized per output channel, in the layout
/// above.
pub(crate) fn pack(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    let kq = n_in.div_ceil(4);
    let mut out = vec![0u32; linear_len(n_out, n_in)];
    for j in 0..n_out {
        let row = &w[j * n_in..(j + 1) * n_in];
        let (scale, inv) = row_scales(row);
        let mut sum = 0i32;
        for (i, &v) in row.iter().enumerate() {
            let q = quantize(v, inv);
            sum += q;
            out[(i / 4) * n_out + j] |= u32::from(q as i8 as u8) << (8 * (i % 4));
        }
        out[kq * n_out + j] = scale.to_bits();
        out[kq * n_out + n_out + j] = (128 * sum) as u32;
    }
    out.into_iter().map(f32::from_bits).collect()
}

thread_local! {
    /// Quantized activation rows, reused: no allocation after warm-up.
    static QUADS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `x (k)` as unsigned byte quads into `out[..⌈k/4⌉]`, and its scale (bits)
/// into `out[⌈k/4⌉]`. Needs `small_gemm::int8_available()`.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u32]) {
    let kq = x.len().div_ceil(4);
    assert!(small_gemm::int8_available(), "quantize_row needs AVX512_VNNI");
    assert!(out.len() > kq);
    // SAFETY: the feature was checked; `out` holds the row's 4·kq bytes and
    // its scale (asserted).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        quantize_row_avx512(x, out)
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(x: &[f32], out: &mut [u32]) {
    let k = x.len();
    let kq = k.div_ceil(4);
    let masked = |i: usize| -> __mmask16 {
        let n = (k - i).min(16);
        if n == 16 {
            !0
        } else {
            (1u16 << n) - 1
        }
    };
    // One pass for the largest magnitude and for any NaN or infinity (x·0
    // is NaN exactly for those), one to quantize.
    let (mut amax, mut poison) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..k).step_by(16) {
        let v = _mm512_maskz_loadu_ps(masked(i), x.as_ptr().add(i));
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        poison = _mm512_add_ps(poison, _mm512_mul_ps(v, _mm512_setzero_ps()));
    }
    let (scale, inv) = scales(_mm512_reduce_max_ps(amax), !_mm512_reduce_add_ps(poison).is_nan());
    let bytes = out.as_mut_ptr() as *mut i8;
    let (inv, lo, hi, offset) =
        (_mm512_set1_ps(inv), _mm512_set1_epi32(-127), _mm512_set1_epi32(127), _mm512_set1_epi32(128));
    for i in (0..k).step_by(16) {
        let v = _mm512_maskz_loadu_ps(masked(i), x.as_ptr().add(i));
        let q = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), lo), hi);
        _mm512_mask_cvtusepi32_storeu_epi8(bytes.add(i), masked(i), _mm512_add_epi32(q, offset));
    }
    for i in k..4 * kq {
        *bytes.add(i) = 128u8 as i8;
    }
    out[kq] = scale.to_bits();
}

/// `g`'s product (then `+ bias[j]`, GELU) for `W` from `pack`.
pub(super) fn product(x: &[f32], w: &[f32], y: &mut [f32], g: Gemm, bias: Option<(&[f32], bool)>) {
    let Gemm { rows, k, n, ld_y, accumulate } = g;
    if rows == 0 || n == 0 {
        return;
    }
    let kq = k.div_ceil(4);
    let ld = kq + 1;
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
            bias: bias.map(|(b, gelu)| Bias { ptr: b.as_ptr(), gelu }),
            dequant: Some(Dequant {
                row_scale: a[kq..].as_ptr() as *const f32,
                row_ld: ld,
                col_scale: w[kq * n..].as_ptr(),
                col_comp: w[kq * n + n..].as_ptr() as *const i32,
            }),
        };
        // SAFETY: the assertions bound every quad, scale, offset, bias and
        // output element; every row's scale was written by `quantize_row`.
        unsafe { run_product(Elem::Int8Quads, &pr, n, rows * k * n >= PAR_MIN_MACS) };
    });
}

#[cfg(test)]
mod tests {
    //! The kernel against an exact integer reference: the operands quantized
    //! here from first principles, their products summed in i64, then the
    //! one rounding the mode defines (`(Σ as f32) · (scale_r · scale_j)`).
    //! Every output must have the reference's bits.
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin() * (1.0 + (i % 7) as f32)).collect()
    }

    fn available() -> bool {
        let ok = small_gemm::int8_available();
        if !ok {
            eprintln!("skipped: no AVX512_VNNI here");
        }
        ok
    }

    /// `(q, scale)` of a row, written out without the module's helpers.
    fn reference_quantize(v: &[f32]) -> (Vec<i64>, f32) {
        let amax = v.iter().map(|x| x.abs()).fold(0f32, f32::max);
        if amax == 0.0 {
            return (vec![0; v.len()], 0.0);
        }
        let q = v.iter().map(|&x| i64::from(((x * (127.0 / amax)).round_ties_even() as i32).clamp(-127, 127)));
        (q.collect(), amax / 127.0)
    }

    fn reference(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let qx: Vec<_> = x.chunks(k.max(1)).take(rows).map(reference_quantize).collect();
        let qw: Vec<_> = w.chunks(k.max(1)).take(n).map(reference_quantize).collect();
        let mut y = vec![0f32; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let sum: i64 = (0..k).map(|i| qx[r].0[i] * qw[j].0[i]).sum();
                y[r * n + j] = (sum as f32) * (qx[r].1 * qw[j].1);
            }
        }
        y
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
            let (x, w, b) = (data(rows * k, 1.0), data(n * k, 2.0), data(n, 3.0));
            let want = reference(&x, &w, rows, k, n);
            let wp = pack(&w, n, k);
            let g = |accumulate| Gemm { rows, k, n, ld_y: n, accumulate };
            let mut y = data(rows * n, 4.0);
            product(&x, &wp, &mut y, g(false), None);
            assert_eq!(bits(&y), bits(&want), "{rows}x{k}x{n}");
            // Added into the output, then the bias: two f32 additions.
            let y0 = data(rows * n, 5.0);
            let mut y = y0.clone();
            product(&x, &wp, &mut y, g(true), Some((&b, false)));
            let want_acc: Vec<f32> = (0..rows * n).map(|i| (y0[i] + want[i]) + b[i % n]).collect();
            assert_eq!(bits(&y), bits(&want_acc), "{rows}x{k}x{n} accumulate + bias");
        }
    }

    #[test]
    fn the_largest_sums_do_not_overflow() {
        if !available() {
            return;
        }
        // Every activation at +max (stored as 255) against every weight at
        // -max: the largest sums in size an i32 lane sees.
        let (rows, k, n) = (2, MAX_DEPTH, 16);
        let x = vec![1.0f32; rows * k];
        let w = vec![-1.0f32; n * k];
        let mut y = vec![0f32; rows * n];
        product(&x, &pack(&w, n, k), &mut y, Gemm { rows, k, n, ld_y: n, accumulate: false }, None);
        let want = -((127 * 127 * k) as f32) * ((1.0f32 / 127.0) * (1.0 / 127.0));
        assert!(y.iter().all(|&v| v == want), "{:?} vs {want}", &y[..4]);
    }

    #[test]
    fn a_row_of_zeros_gives_zeros_and_a_nan_or_infinity_poisons_only_its_row() {
        if !available() {
            return;
        }
        let (rows, k, n) = (4, 37, 20);
        let mut x = data(rows * k, 1.0);
        x[..k].fill(0.0);
        x[k + 5] = f32::NAN;
        x[2 * k + 36] = f32::INFINITY;
        let wp = pack(&data(n * k, 2.0), n, k);
        let mut y = vec![1f32; rows * n];
        product(&x, &wp, &mut y, Gemm { rows, k, n, ld_y: n, accumulate: false }, None);
        assert!(y[..n].iter().all(|&v| v == 0.0), "{:?}", &y[..n]);
        assert!(y[n..3 * n].iter().all(|v| v.is_nan()), "{:?}", &y[n..3 * n]);
        assert!(y[3 * n..].iter().all(|v| v.is_finite() && *v != 0.0), "{:?}", &y[3 * n..]);
    }

    #[test]
    fn quantization_rounds_ties_to_even_and_pads_with_zero() {
        // amax 127: inv is 1, so the values are their own quantized values.
        let x = [127.0f32, -127.0, 2.5, -0.5, 1.5, 3.0];
        let (scale, inv) = row_scales(&x);
        assert_eq!((scale, inv), (1.0, 1.0));
        let q: Vec<i32> = x.iter().map(|&v| quantize(v, inv)).collect();
        assert_eq!(q, [127, -127, 2, 0, 2, 3]);
        let w = pack(&x, 1, 6);
        let quad = |a: i32, b: i32, c: i32, d: i32| {
            f32::from_bits(u32::from_le_bytes([a as i8 as u8, b as i8 as u8, c as i8 as u8, d as i8 as u8]))
        };
        let sum: i32 = q.iter().sum();
        assert_eq!(bits(&w), bits(&[quad(127, -127, 2, 0), quad(2, 3, 0, 0), 1.0, f32::from_bits((128 * sum) as u32)]));
        if small_gemm::int8_available() {
            let mut row = [0u32; 3];
            quantize_row(&x, &mut row);
            let u = |v: i32| (v + 128) as u8;
            assert_eq!(row[0], u32::from_le_bytes([u(127), u(-127), u(2), u(0)]));
            assert_eq!(row[1], u32::from_le_bytes([u(2), u(3), 128, 128]));
            assert_eq!(f32::from_bits(row[2]), 1.0);
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
