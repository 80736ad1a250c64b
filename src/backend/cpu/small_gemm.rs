//! Products of tens of rows against a prepared weight, the shape of every
//! batch-1 layer here (49 to 100 tokens by 128 to 2560 inputs), as AVX-512
//! micro-kernels: f32 fused multiply-adds, bf16 pair dot-products
//! (`vdpbf16ps`, AVX512_BF16: two products per f32 lane per instruction,
//! twice f32's peak on a Zen 4) and int8 quad dot-products (`vpdpbusd`,
//! AVX512_VNNI: four per i32 lane, made f32 by `Madd::finish` with the
//! scales of cpu/int8.rs).
//!
//! The weight is the right-hand side `B (depth, ldb)`, row-major, read in
//! place: a panel of `16·NV` columns is `NV` vector loads per depth step, and
//! the left-hand rows are broadcast one element at a time, so neither operand
//! is packed per call (the `gemm` crate packs both; at these sizes that was a
//! seventh of the time). A tile keeps `MR × NV` accumulators in registers.
//!
//! In bf16 both operands are pairs: element `p` of a row is the `u32` holding
//! the bf16 values of depth `2p` (low half) and `2p + 1` (high half), which is
//! what `vdpbf16ps` multiplies and adds into one f32 lane. The weight's pairs
//! are made once at load (`pack_bf16`), the activations' per product
//! (`to_bf16_pairs`), both rounding to nearest even. Sums are f32 throughout.

use std::ops::Range;

use super::amx;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the f32 kernel can run here (AVX-512F).
pub(crate) fn f32_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the bf16 kernel can run here (AVX-512F and AVX512_BF16).
pub(crate) fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the int8 kernel can run here (AVX-512F and AVX512_VNNI).
pub(crate) fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The bf16 bits of `v`, rounded to nearest even (`half`'s conversion, as the
/// GPU backend's packing uses).
fn bf16_bits(v: f32) -> u32 {
    u32::from(half::bf16::from_f32(v).to_bits())
}

/// `w (n_out, n_in)` row-major as the bf16 pairs of its transpose:
/// `(⌈n_in/2⌉, n_out)`, element `(p, j)` holding `w[j, 2p]` and `w[j, 2p+1]`
/// (zero past `n_in`).
pub(crate) fn pack_bf16(w: &[f32], n_out: usize, n_in: usize) -> Vec<u32> {
    let mut out = vec![0u32; n_in.div_ceil(2) * n_out];
    pack_bf16_into(w, n_out, n_in, &mut out);
    out
}

/// `pack_bf16` into the start of `out` (the training refresh, every step).
pub(crate) fn pack_bf16_into(w: &[f32], n_out: usize, n_in: usize, out: &mut [u32]) {
    let pairs = n_in.div_ceil(2);
    assert!(w.len() >= n_out * n_in && out.len() >= pairs * n_out);
    if bf16_available() {
        // Sixteen rows' pairs at a time rounded in vectors and transposed in
        // registers (in `half`, one element a nanosecond, the packing was a
        // twentieth of a CPU training step with use_amp; a scalar transpose
        // after vector rounding still took 2%).
        // SAFETY: the feature was checked; the assertion bounds both sides.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            pack_pairs_transposed(w, n_out, n_in, out)
        };
        return;
    }
    for j in 0..n_out {
        let row = &w[j * n_in..(j + 1) * n_in];
        for (p, two) in row.chunks(2).enumerate() {
            let hi = two.get(1).map_or(0, |&v| bf16_bits(v));
            out[p * n_out + j] = bf16_bits(two[0]) | (hi << 16);
        }
    }
}

/// `w (rows, cols)` (rows `ld` apart) as bf16 pairs of consecutive rows:
/// `(⌈rows/2⌉, cols)`, element `(p, j)` holding `w[2p, j]` (low half) and
/// `w[2p+1, j]` (zero past `rows`). The right-hand operand of a product
/// whose depth runs down `w`'s rows, as a backward's `dy·W` does. Rows may
/// overlap (`ld < cols`: a conv's window of taps). Needs `bf16_available()`.
pub(crate) fn pack_row_pairs(w: &[f32], rows: usize, cols: usize, ld: usize, out: &mut [u32]) {
    assert!(bf16_available(), "pack_row_pairs needs AVX512_BF16");
    assert!((rows == 0 || w.len() >= (rows - 1) * ld + cols) && out.len() >= rows.div_ceil(2) * cols);
    for p in 0..rows.div_ceil(2) {
        let lo = &w[2 * p * ld..][..cols];
        let hi = (2 * p + 1 < rows).then(|| &w[(2 * p + 1) * ld..][..cols]);
        // SAFETY: the feature was checked; both rows and the output row hold `cols`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            interleave_bf16(lo, hi, &mut out[p * cols..(p + 1) * cols])
        };
    }
}

/// `pack_row_pairs` transposed: `w (rows, cols)` (rows `ld` apart, which
/// may overlap) as `(cols, ⌈rows/2⌉)`, element `(j, p)` holding `w[2p, j]`
/// (low half) and `w[2p+1, j]` (zero past `rows`). The left-hand operand
/// of a weight gradient `dyᵀ·x`, whose depth runs down `dy`'s rows: each
/// output row's pairs side by side, as the kernel broadcasts them. Needs
/// `bf16_available()`.
pub(crate) fn pack_row_pairs_transposed(w: &[f32], rows: usize, cols: usize, ld: usize, out: &mut [u32]) {
    assert!(bf16_available(), "pack_row_pairs_transposed needs AVX512_BF16");
    assert!((rows == 0 || w.len() >= (rows - 1) * ld + cols) && out.len() >= cols * rows.div_ceil(2));
    // SAFETY: the feature was checked; the assertion bounds both sides.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        row_pairs_transposed(w, rows, cols, ld, out.as_mut_ptr())
    };
}

/// `pack_row_pairs_transposed`'s work: per tile, sixteen pairs of rows
/// interleaved as `interleave_bf16` does, then transposed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn row_pairs_transposed(w: &[f32], rows: usize, cols: usize, ld: usize, out: *mut u32) {
    let pairs = rows.div_ceil(2);
    // Along the rows first: the tiles of sixteen pairs read their 32 rows
    // in order, each source line once.
    for p0 in (0..pairs).step_by(16) {
        for c0 in (0..cols).step_by(16) {
            let mask = lanes(cols - c0);
            let mut tile = [_mm512_setzero_si512(); 16];
            for (l, t) in tile.iter_mut().enumerate().take(pairs - p0) {
                let r = 2 * (p0 + l);
                let hi = (r + 1 < rows).then(|| w.as_ptr().add((r + 1) * ld + c0));
                *t = pair_lanes(w.as_ptr().add(r * ld + c0), hi, mask);
            }
            store_transposed(
                transpose16(tile),
                out.add(c0 * pairs + p0),
                pairs,
                (cols - c0).min(16),
                lanes(pairs - p0),
            );
        }
    }
}

/// `pack_bf16_into`'s vector path: per tile, sixteen weight rows' next
/// sixteen pairs (`vcvtne2ps2bf16` of 32 values), transposed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn pack_pairs_transposed(w: &[f32], n_out: usize, n_in: usize, out: &mut [u32]) {
    let pairs = n_in.div_ceil(2);
    for j0 in (0..n_out).step_by(16) {
        for p0 in (0..pairs).step_by(16) {
            let (lo_mask, hi_mask) = (lanes(n_in - 2 * p0), lanes(n_in.saturating_sub(2 * p0 + 16)));
            let mut tile = [_mm512_setzero_si512(); 16];
            for (l, t) in tile.iter_mut().enumerate().take(n_out - j0) {
                let row = w.as_ptr().add((j0 + l) * n_in + 2 * p0);
                let lo = _mm512_maskz_loadu_ps(lo_mask, row);
                let hi = _mm512_maskz_loadu_ps(hi_mask, row.wrapping_add(16));
                // Values 0..16 (lo) in the low half of the result: lane p
                // holds values 2p and 2p + 1, the pair `to_bf16_pairs` makes.
                *t = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            }
            let out_rows = (pairs - p0).min(16);
            store_transposed(
                transpose16(tile),
                out.as_mut_ptr().add(p0 * n_out + j0),
                n_out,
                out_rows,
                lanes(n_out - j0),
            );
        }
    }
}

/// Sixteen values from `v` (masked) as bf16 bits in the low halves of 32-bit lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bf16_lanes(v: *const f32, mask: __mmask16) -> __m512i {
    let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, v)));
    _mm512_cvtepu16_epi32(h)
}

/// Sixteen pairs: `bf16(lo[j]) | bf16(hi[j]) << 16` (zero high halves
/// without `hi`), the lanes of `mask`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair_lanes(lo: *const f32, hi: Option<*const f32>, mask: __mmask16) -> __m512i {
    let pair = bf16_lanes(lo, mask);
    match hi {
        Some(hi) => _mm512_or_si512(pair, _mm512_slli_epi32::<16>(bf16_lanes(hi, mask))),
        None => pair,
    }
}

/// A 16 × 16 tile of 32-bit values transposed in registers: lane `j` of
/// `r[i]` becomes lane `i` of the result's `j`. Pairs of rows interleaved
/// (32-bit, then 64-bit), then 128-bit blocks gathered in two rounds.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut a = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // b[4i + q], 128-bit block L: column 4L + q of rows 4i..4i + 4.
    let mut b = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    let mut t = [_mm512_setzero_si512(); 16];
    for q in 0..4 {
        let (c0, c1) = (_mm512_shuffle_i32x4::<0x44>(b[q], b[4 + q]), _mm512_shuffle_i32x4::<0xEE>(b[q], b[4 + q]));
        let (d0, d1) =
            (_mm512_shuffle_i32x4::<0x44>(b[8 + q], b[12 + q]), _mm512_shuffle_i32x4::<0xEE>(b[8 + q], b[12 + q]));
        t[q] = _mm512_shuffle_i32x4::<0x88>(c0, d0);
        t[4 + q] = _mm512_shuffle_i32x4::<0xDD>(c0, d0);
        t[8 + q] = _mm512_shuffle_i32x4::<0x88>(c1, d1);
        t[12 + q] = _mm512_shuffle_i32x4::<0xDD>(c1, d1);
    }
    t
}

/// The first `rows` of a transposed tile to `out`, rows `ld` apart, the
/// lanes of `mask` in each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_transposed(t: [__m512i; 16], out: *mut u32, ld: usize, rows: usize, mask: __mmask16) {
    for (i, v) in t.iter().enumerate().take(rows) {
        _mm512_mask_storeu_epi32(out.add(i * ld) as *mut i32, mask, *v);
    }
}

/// `out[j] = bf16(lo[j]) | bf16(hi[j]) << 16` (zero high halves without `hi`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn interleave_bf16(lo: &[f32], hi: Option<&[f32]>, out: &mut [u32]) {
    let n = out.len();
    let mut j = 0;
    while j < n {
        let mask = lanes(n - j);
        let pair = pair_lanes(lo.as_ptr().add(j), hi.map(|hi| hi.as_ptr().add(j)), mask);
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(j) as *mut i32, mask, pair);
        j += 16;
    }
}

/// Rows `x (rows, k)` with row stride `ldx` as bf16 pairs into
/// `out (rows, ⌈k/2⌉)`. Needs `bf16_available()`.
pub(crate) fn to_bf16_pairs(x: &[f32], rows: usize, k: usize, ldx: usize, out: &mut [u32]) {
    let pairs = k.div_ceil(2);
    assert!(bf16_available(), "to_bf16_pairs needs AVX512_BF16");
    assert!(rows == 0 || (x.len() >= (rows - 1) * ldx + k && out.len() >= rows * pairs));
    if k.is_multiple_of(2) && ldx == k {
        // Dense rows of whole pairs are one run of bf16 values: one pass,
        // not one short masked pass per row (a conv's 4 to 64 channels).
        // SAFETY: as below, over the rows·k values as one row.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            row_to_bf16(&x[..rows * k], &mut out[..rows * pairs])
        };
        return;
    }
    for r in 0..rows {
        // SAFETY: the feature was checked; the assertion bounds both rows.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            row_to_bf16(&x[r * ldx..r * ldx + k], &mut out[r * pairs..(r + 1) * pairs])
        };
    }
}

/// The first `min(n, 16)` lanes of a vector, as a mask.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        (1u16 << n) - 1
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn row_to_bf16(x: &[f32], out: &mut [u32]) {
    let dst = out.as_mut_ptr() as *mut u16;
    let k = x.len();
    let mut i = 0;
    while i < k {
        let n = (k - i).min(16);
        let mask = lanes(n);
        let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_mask_storeu_epi16(dst.add(i) as *mut i16, mask, h);
        i += 16;
    }
    if k % 2 == 1 {
        *dst.add(k) = 0;
    }
}

/// How one depth step multiplies and adds (bits in, sums out), and how a
/// tile's sums become f32 outputs.
#[cfg(target_arch = "x86_64")]
trait Madd {
    unsafe fn madd(acc: __m512, a: __m512, b: __m512) -> __m512;

    /// The f32 values of the sums `acc` of row `r`, columns `j..j + 16`
    /// (masked by `mask`): the sums themselves where they are f32 already.
    #[inline(always)]
    unsafe fn finish(acc: __m512, _pr: &Product, _r: usize, _j: usize, _mask: __mmask16) -> __m512 {
        acc
    }
}

#[cfg(target_arch = "x86_64")]
struct F32;
#[cfg(target_arch = "x86_64")]
struct Bf16;
#[cfg(target_arch = "x86_64")]
struct Int8;

#[cfg(target_arch = "x86_64")]
impl Madd for F32 {
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, acc)
    }
}

#[cfg(target_arch = "x86_64")]
impl Madd for Bf16 {
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_dpbf16_ps(acc, std::mem::transmute::<__m512, __m512bh>(a), std::mem::transmute::<__m512, __m512bh>(b))
    }
}

#[cfg(target_arch = "x86_64")]
impl Madd for Int8 {
    /// `vpdpbusd`: four products of an unsigned activation byte and a signed
    /// weight byte added into each i32 lane, exactly.
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_dpbusd_epi32(
            _mm512_castps_si512(acc),
            _mm512_castps_si512(a),
            _mm512_castps_si512(b),
        ))
    }

    /// `(Σ − zero[r]·sum[j]) · (row_scale[r] · col_scale[j])`: the integer
    /// sum with the activations' zero point taken off, then both scales.
    #[inline(always)]
    unsafe fn finish(acc: __m512, pr: &Product, r: usize, j: usize, mask: __mmask16) -> __m512 {
        let q = pr.dequant.expect("an int8 product carries its scales");
        let sum = _mm512_maskz_loadu_epi32(mask, q.col_sum.add(j));
        let at = r / q.rows_per_scale * q.row_ld;
        let zero = _mm512_set1_epi32(*q.row_zero.add(at));
        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_castps_si512(acc), _mm512_mullo_epi32(zero, sum)));
        let row_scale = _mm512_set1_ps(*q.row_scale.add(at));
        _mm512_mul_ps(exact, _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, q.col_scale.add(j))))
    }
}

/// The right-hand operand: `depth` rows (per tap), `ld` elements apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand {
    pub ptr: *const u32,
    pub ld: usize,
}

/// The left-hand operand: `rows` rows of `depth` elements (per tap), `ld`
/// elements apart; with `seq = Some((len, stored))`, row `r` is row `r % len`
/// of sequence `r / len`, and sequences are stored `stored` rows apart (a
/// convolution's input with its zero padding).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lhs {
    pub ptr: *const u32,
    pub ld: usize,
    pub seq: Option<(usize, usize)>,
}

impl Lhs {
    /// Plain rows.
    pub(crate) fn rows(ptr: *const u32, ld: usize) -> Self {
        Lhs { ptr, ld, seq: None }
    }

    fn row(&self, r: usize) -> *const u32 {
        let stored = match self.seq {
            Some((len, stored)) => r / len * stored + r % len,
            None => r,
        };
        self.ptr.wrapping_add(stored * self.ld)
    }
}

/// The product is a sum over `count` taps; tap `j` reads the left rows
/// `j·lhs_step` elements on and the right operand `j·rhs_step` elements on.
/// One tap is a plain product; a "same" Conv1d of kernel k over a padded
/// input is k taps, each a shift by one row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taps {
    pub count: usize,
    pub lhs_step: usize,
    pub rhs_step: usize,
}

impl Taps {
    pub(crate) const ONE: Taps = Taps { count: 1, lhs_step: 0, rhs_step: 0 };
}

/// The output: rows `ld` apart, overwritten or (`accumulate`) added to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    pub ptr: *mut f32,
    pub ld: usize,
    pub accumulate: bool,
}

// SAFETY: plain addresses handed to the two cores of one product, which read
// the operands and write disjoint column ranges of the output (`run`'s
// contract) before the caller's borrows end.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}
unsafe impl Send for Lhs {}
unsafe impl Sync for Lhs {}
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// Added to every output row after its sums (`bias[j]` to column `j`), then
/// GELU if asked: done per tile while it is in registers, instead of a pass
/// over the output afterwards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bias {
    pub ptr: *const f32,
    pub gelu: bool,
    /// Where to also store the values before GELU (the training forward
    /// keeps them for the backward), laid out as the output (`y.ld`, the
    /// same columns); null when not kept.
    pub keep: *mut f32,
}

unsafe impl Send for Bias {}
unsafe impl Sync for Bias {}

/// How an int8 product's integer sums become f32 (cpu/int8.rs): row `r`'s
/// activation scale and zero point are `row_scale[i·row_ld]` and
/// `row_zero[i·row_ld]` with `i = r / rows_per_scale` (1 for a linear
/// layer's rows, a sequence's length for a conv's samples); column `j`'s
/// weight scale is `col_scale[j]` and `col_sum[j]` the sum of its quantized
/// weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dequant {
    pub row_scale: *const f32,
    pub row_zero: *const i32,
    pub row_ld: usize,
    pub rows_per_scale: usize,
    pub col_scale: *const f32,
    pub col_sum: *const i32,
}

unsafe impl Send for Dequant {}
unsafe impl Sync for Dequant {}

/// What one call computes: `y[r, j] (+)= Σ_taps Σ_p a[r, p] · b[p, j]`
/// (then `+ bias[j]`, GELU) for `r < rows`, `j ∈ cols`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    pub a: Lhs,
    pub b: Operand,
    pub y: Output,
    pub rows: usize,
    pub depth: usize,
    pub taps: Taps,
    pub bias: Option<Bias>,
    /// The scales of an int8 product (`Elem::Int8Quads`); `None` otherwise.
    pub dequant: Option<Dequant>,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn product<K: Kernels>(pr: &Product, cols: Range<usize>) {
    // Few rows (the LSTM's step, a CLS-only layer): wide panels, so enough
    // independent accumulators hide the multiply-add latency. Narrow column
    // ranges (a 32- or 64-channel conv split in two): panels no wider than
    // the range, so no lanes are masked off, and more rows per tile instead.
    let width = cols.end - cols.start;
    if pr.rows <= 2 {
        panels::<K, 2, 8>(pr, cols);
    } else if width <= 16 {
        panels::<K, 12, 1>(pr, cols);
    } else if width <= 32 {
        panels::<K, 8, 2>(pr, cols);
    } else {
        panels::<K, 6, 4>(pr, cols);
    }
}

/// One element type's loops, each compiled alone with the element's CPU
/// features (`kernels!`). Alone, because LLVM allocates registers per
/// function: with every panel shape and the 4-, 2- and 1-row tail tiles
/// inlined into one function, the full tile's depth loop spilled one of
/// its 24 accumulators and copied nine between registers on every step
/// (bf16's worst: its batch-32 forwards took 0.6-0.73 of their time once
/// fixed, `quorum bench --backend cpu --batch 32 --precision bf16`).
#[cfg(target_arch = "x86_64")]
trait Kernels: Madd + Sized {
    /// `blocks::<Self, MR, NV>`.
    unsafe fn blocks<const MR: usize, const NV: usize>(
        pr: &Product,
        cols: Range<usize>,
        panel: &dyn Fn(usize) -> Product,
    );
    /// `tail::<Self, NV>`.
    unsafe fn tail<const NV: usize>(pr: &Product, r: usize, j: usize, masks: [__mmask16; NV]);
}

#[cfg(target_arch = "x86_64")]
macro_rules! kernels {
    ($($elem:ty: $features:literal),* $(,)?) => {$(
        impl Kernels for $elem {
            #[inline(never)]
            #[target_feature(enable = $features)]
            unsafe fn blocks<const MR: usize, const NV: usize>(
                pr: &Product,
                cols: Range<usize>,
                panel: &dyn Fn(usize) -> Product,
            ) {
                blocks::<Self, MR, NV>(pr, cols, panel)
            }

            #[inline(never)]
            #[target_feature(enable = $features)]
            unsafe fn tail<const NV: usize>(pr: &Product, r: usize, j: usize, masks: [__mmask16; NV]) {
                tail::<Self, NV>(pr, r, j, masks)
            }
        }
    )*};
}

#[cfg(target_arch = "x86_64")]
kernels!(F32: "avx512f", Bf16: "avx512f,avx512bf16", Int8: "avx512f,avx512vnni");

/// Rows from which a product first copies its weight's panels into one
/// contiguous block per call (`panels`), and runs its full tiles in row
/// blocks (`row_block`). Below, the copy costs more than it saves (at 24
/// and 61 rows the packed product measured slower).
const PACK_MIN_ROWS: usize = 192;

#[cfg(target_arch = "x86_64")]
thread_local! {
    static PANELS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows of left-hand operand per block of full tiles: about 256 KiB of it,
/// so the block stays in the core's L2 while every panel of the column
/// range passes over it, instead of all rows streaming from L3 once per
/// panel (a 1952-row, 1024-deep product went from about 0.8 of the `gemm`
/// crate's rate to level with it, in a one-off timing).
fn row_block<const MR: usize>(depth: usize) -> usize {
    ((256 << 10) / (4 * depth.max(1))).clamp(MR, 16 * MR) / MR * MR
}

#[cfg(target_arch = "x86_64")]
unsafe fn panels<K: Kernels, const MR: usize, const NV: usize>(pr: &Product, cols: Range<usize>) {
    if pr.rows < PACK_MIN_ROWS {
        return K::blocks::<MR, NV>(pr, cols, &|_| *pr);
    }
    // The weight's panels, each `taps · depth` rows of `16·NV` columns,
    // one after the other: a weight row `4·n` bytes long put a panel's
    // successive rows 4 KiB apart at n = 1024, all in the same few cache
    // sets, and the panel was read from beyond L2 by every tile.
    let w = 16 * NV;
    let steps = pr.taps.count * pr.depth;
    let count = (cols.end - cols.start).div_ceil(w);
    super::with_local(&PANELS, count * steps * w, |packed| {
        for (q, j) in cols.clone().step_by(w).enumerate() {
            let width = (cols.end - j).min(w);
            for tap in 0..pr.taps.count {
                for p in 0..pr.depth {
                    let from = pr.b.ptr.add(tap * pr.taps.rhs_step + p * pr.b.ld + j);
                    let to = &mut packed[(q * steps + tap * pr.depth + p) * w..][..width];
                    to.copy_from_slice(std::slice::from_raw_parts(from, width));
                }
            }
        }
        let base = packed.as_ptr();
        K::blocks::<MR, NV>(pr, cols.clone(), &|j| Product {
            // Panel q's column j at base + q·steps·w + (j − j_q): the
            // tile adds j to the pointer, so it starts j_q before.
            b: Operand { ptr: base.wrapping_add((j - cols.start) / w * steps * w).wrapping_sub(j), ld: w },
            taps: Taps { rhs_step: pr.depth * w, ..pr.taps },
            ..*pr
        });
    });
}

/// Every tile of the columns `cols` in panels of `16·NV`, `panel(j)` being
/// the product to read the panel from column `j` in: the full tiles (from
/// `PACK_MIN_ROWS` rows in blocks of `row_block` rows, every panel over one
/// block, then the next), the last rows out of line (`Kernels`) with the
/// last block's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks<K: Kernels, const MR: usize, const NV: usize>(
    pr: &Product,
    cols: Range<usize>,
    panel: &dyn Fn(usize) -> Product,
) {
    let full = pr.rows / MR * MR;
    // Below PACK_MIN_ROWS one block of every row: blocks of a deep product
    // (24 rows at TLOB's 2560) would read each panel again from L3 per block.
    let block = if pr.rows < PACK_MIN_ROWS { full } else { row_block::<MR>(pr.taps.count * pr.depth) };
    let mut r0 = 0;
    loop {
        let r1 = (r0 + block).min(full);
        for j in cols.clone().step_by(16 * NV) {
            let (pj, m) = (panel(j), masks::<NV>(cols.end - j));
            for r in (r0..r1).step_by(MR) {
                // Packed panels were just written, so are in cache already.
                if r == 0 && pr.rows < PACK_MIN_ROWS {
                    tile::<K, MR, NV, true>(&pj, r, j, m);
                } else {
                    tile::<K, MR, NV, false>(&pj, r, j, m);
                }
            }
            // The last rows with the last block, while the panel is in cache.
            if r1 == full && full < pr.rows {
                K::tail::<NV>(&pj, full, j, m);
            }
        }
        if r1 == full {
            break;
        }
        r0 = r1;
    }
}

/// The lanes of a panel's `NV` vectors that hold columns, `left` columns
/// being left in the range.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks<const NV: usize>(left: usize) -> [__mmask16; NV] {
    let width = left.min(16 * NV);
    let mut masks = [0 as __mmask16; NV];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = lanes(width.saturating_sub(16 * v).min(16));
    }
    masks
}

/// Rows `r..pr.rows` (fewer than a full tile) in tiles of 4, 2 and 1.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tail<K: Madd, const NV: usize>(pr: &Product, mut r: usize, j: usize, masks: [__mmask16; NV]) {
    while r < pr.rows {
        r += match pr.rows - r {
            n if n >= 4 => {
                tile::<K, 4, NV, false>(pr, r, j, masks);
                4
            }
            n if n >= 2 => {
                tile::<K, 2, NV, false>(pr, r, j, masks);
                2
            }
            _ => {
                tile::<K, 1, NV, false>(pr, r, j, masks);
                1
            }
        };
    }
}

/// Rows `r0..r0 + R` by `NV` vectors of columns from `j0` (masked past the
/// panel's width), every tap summed in registers before one store; the
/// epilogue (the old output when accumulating, then the bias, then GELU)
/// runs on the registers too, where the tile's R·NV independent vectors
/// hide GELU's division (a pass over each stored row cost TLOB 16% of its
/// int8 time; the bits are the same: `simd::gelu_avx512`). `FIRST`: the
/// panel's first tile, which prefetches the weight for the others.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<K: Madd, const R: usize, const NV: usize, const FIRST: bool>(
    pr: &Product,
    r0: usize,
    j0: usize,
    masks: [__mmask16; NV],
) {
    let mut rows = [std::ptr::null::<u32>(); R];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = pr.a.row(r0 + i);
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for tap in 0..pr.taps.count {
        let a_off = tap * pr.taps.lhs_step;
        let b = pr.b.ptr.add(tap * pr.taps.rhs_step + j0);
        for p in 0..pr.depth {
            // One or two rows stream the weight once (the LSTM's steps), and
            // a panel's first tile (`FIRST`) brings it from beyond L2 for
            // the tiles below (at batch 1 every layer's weight does): ask
            // for its lines eight depth steps ahead, which the hardware
            // prefetchers did not (a layer's 60 steps, 257 -> 219 µs median;
            // MPD's batch-1 forward, 3.0-3.6 -> 2.4-2.8 ms in 3 interleaved
            // rounds of `quorum bench --batch 1`).
            if R <= 2 || FIRST {
                for v in 0..NV {
                    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + 8) * pr.b.ld + 16 * v) as *const i8);
                }
            }
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv =
                    _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(masks[v], b.add(p * pr.b.ld + 16 * v) as *const i32));
            }
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let av = _mm512_castsi512_ps(_mm512_set1_epi32(*row.add(a_off + p) as i32));
                for v in 0..NV {
                    acc[v] = K::madd(acc[v], av, bv[v]);
                }
            }
        }
    }
    store::<K, R, NV>(pr, r0, j0, masks, acc);
}

/// A tile's sums made outputs: rows `r0..r0 + R` by `NV` vectors of columns
/// from `j0`, each made f32 (`Madd::finish`), the old output added when
/// accumulating, then the bias, GELU's input kept, GELU, one store a vector.
/// The sums come by value: passed by reference, the 6 × 4 tile's were
/// given a stack home that every tile cleared with a 1.5 KiB `memset`
/// call (4% of the CNN-LSTM at batch 32, `perf record --call-graph dwarf`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<K: Madd, const R: usize, const NV: usize>(
    pr: &Product,
    r0: usize,
    j0: usize,
    masks: [__mmask16; NV],
    acc: [[__m512; NV]; R],
) {
    // The bias vectors once per tile, not once per row.
    let mut bias = [_mm512_setzero_ps(); NV];
    if let Some(b) = pr.bias {
        for (v, bv) in bias.iter_mut().enumerate() {
            *bv = _mm512_maskz_loadu_ps(masks[v], b.ptr.add(j0 + 16 * v));
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for v in 0..NV {
            let j = j0 + 16 * v;
            let dst = pr.y.ptr.add((r0 + i) * pr.y.ld + j);
            let mut val = K::finish(acc[v], pr, r0 + i, j, masks[v]);
            if pr.y.accumulate {
                val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(masks[v], dst));
            }
            if let Some(b) = pr.bias {
                val = _mm512_add_ps(val, bias[v]);
                if !b.keep.is_null() {
                    _mm512_mask_storeu_ps(b.keep.add((r0 + i) * pr.y.ld + j), masks[v], val);
                }
                if b.gelu {
                    val = super::simd::gelu_avx512(val);
                }
            }
            _mm512_mask_storeu_ps(dst, masks[v], val);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn product_int8(pr: &Product, cols: Range<usize>) {
    // Whole 32-column steps on the tile unit where it suits, the rest here.
    let whole = cols.start + (cols.end - cols.start) / 32 * 32;
    if whole > cols.start && amx_suits(pr) {
        product_amx(pr, cols.start..whole);
        product::<Int8>(pr, whole..cols.end);
    } else {
        product::<Int8>(pr, cols)
    }
}

/// Rows an int8 product needs for the tile unit: below, a 16-row tile would
/// be mostly empty (the LSTM's steps at batch 1) and VNNI's tiles serve.
const AMX_MIN_ROWS: usize = 16;

/// Whether `pr`'s sums can come from the tile unit (`amx`): evenly spaced
/// rows (a tile is read with one stride), one tap, at least `AMX_MIN_ROWS`,
/// a depth of whole tile steps (every int8 layer's here). A conv's taps and
/// padded sequences stay on VNNI.
fn amx_suits(pr: &Product) -> bool {
    pr.taps.count == 1
        && pr.a.seq.is_none()
        && pr.rows >= AMX_MIN_ROWS
        && pr.depth > 0
        && pr.depth.is_multiple_of(amx::QUADS)
        && amx::available()
}

/// `product::<Int8>` over whole 32-column steps (`cols` a multiple of 32
/// wide), the integer sums from the tile unit, 32 rows by 32 columns at a
/// time; the same sums, so the same outputs (`store`).
///
/// # Safety
/// As `run`, and `amx_suits(pr)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn product_amx(pr: &Product, cols: Range<usize>) {
    let load = |p: *const i32| _mm512_castsi512_ps(_mm512_loadu_si512(p as *const __m512i));
    let mut sums = [0i32; 32 * 32];
    let mut r0 = 0;
    while r0 < pr.rows {
        let rows = (pr.rows - r0).min(32);
        let (upper, lower) = (rows.min(16), rows.saturating_sub(16));
        // Full steps share one configuration; the last rows need their own.
        if r0 == 0 || rows < 32 {
            amx::configure(upper, lower);
        }
        for j in cols.clone().step_by(32) {
            let (a, b) = (pr.a.row(r0) as *const u8, pr.b.ptr.add(j) as *const u8);
            amx::sums(a, 4 * pr.a.ld, lower > 0, b, 4 * pr.b.ld, pr.depth, &mut sums);
            for i in 0..rows {
                let row = sums[i * 32..].as_ptr();
                store::<Int8, 1, 2>(pr, r0 + i, j, [!0; 2], [[load(row), load(row.add(16))]]);
            }
        }
        r0 += rows;
    }
    amx::release();
}

/// The element type of both operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    /// f32 values, one per depth step.
    F32,
    /// bf16 pairs, one `u32` per two depth steps (`depth` counts pairs).
    Bf16Pairs,
    /// Quads of bytes, one `u32` per four depth steps (`depth` counts
    /// quads): unsigned activations (with a zero point) against signed
    /// weights, i32 sums, and `Product::dequant` to make them f32.
    Int8Quads,
}

/// Computes the columns `cols` of `pr`.
///
/// # Safety
/// The feature for `elem` must be available (`f32_available`,
/// `bf16_available`, `int8_available`), an int8 product must carry its
/// `dequant` scales; every row, tap, column and bias the product reads or
/// writes must lie inside its buffers; and no other thread may touch `y`'s block
/// meanwhile.
pub(crate) unsafe fn run(elem: Elem, pr: &Product, cols: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    match elem {
        Elem::F32 => product::<F32>(pr, cols),
        Elem::Bf16Pairs => product::<Bf16>(pr, cols),
        Elem::Int8Quads => product_int8(pr, cols),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("small_gemm::run without AVX-512 ({elem:?}, {pr:?}, {cols:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
    }

    /// Sizes around every tile and panel edge: rows 1..=2 (the wide panels),
    /// 3..=27 (full tiles of 6, 8 and 12 rows and every tail), column ranges
    /// of at most 16, at most 32 and wider (the three panel widths).
    const SIZES: &[(usize, usize, usize)] = &[
        (1, 7, 5),
        (2, 33, 70),
        (3, 16, 64),
        (5, 1, 17),
        (6, 40, 65),
        (7, 129, 128),
        (13, 64, 200),
        (49, 256, 96),
        (27, 12, 32),
        (23, 20, 60),
        (15, 9, 24),
    ];

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn int8_on_vnni(pr: &Product, cols: Range<usize>) {
        product::<Int8>(pr, cols)
    }

    /// The tile unit's int8 sums are `vpdpbusd`'s, so its outputs have the
    /// VNNI products' bits: one and two row tiles, last tiles of 1 to 15
    /// rows, one to forty depth steps, a column range starting mid-row (the
    /// second core's), written and accumulated, with a bias, GELU and GELU's
    /// input kept.
    #[test]
    fn amx_int8_products_have_the_vnni_products_bits() {
        if !amx::available() {
            eprintln!("skipped: no AMX here");
            return;
        }
        // Arbitrary bytes: the bits of the f32 test data.
        let words = |n: usize, seed: f32| -> Vec<u32> { data(n, seed).into_iter().map(f32::to_bits).collect() };
        for &(rows, quads, n) in
            &[(16, 16, 32), (17, 32, 64), (61, 64, 96), (32, 16, 32), (100, 48, 128), (47, 640, 32)]
        {
            let ld = quads + 2;
            let mut a = words(rows * ld, 1.0);
            for r in 0..rows {
                a[r * ld + quads] = (0.001 * (r + 1) as f32).to_bits();
                a[r * ld + quads + 1] = (r * 37 % 256) as u32;
            }
            let w = words(quads * n, 2.0);
            let col_scale: Vec<f32> = (0..n).map(|j| 0.002 + 0.0001 * j as f32).collect();
            let col_sum: Vec<i32> = (0..n).map(|j| (j * 7919 % 2001) as i32 - 1000).collect();
            let bias: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37).sin()).collect();
            let y0: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.11).cos()).collect();
            for (accumulate, epilogue) in [(false, false), (true, true)] {
                let run = |on_amx: bool| {
                    let (mut y, mut keep) = (y0.clone(), vec![0f32; rows * n]);
                    let pr = Product {
                        a: Lhs::rows(a.as_ptr(), ld),
                        b: Operand { ptr: w.as_ptr(), ld: n },
                        y: Output { ptr: y.as_mut_ptr(), ld: n, accumulate },
                        rows,
                        depth: quads,
                        taps: Taps::ONE,
                        bias: epilogue.then_some(Bias { ptr: bias.as_ptr(), gelu: true, keep: keep.as_mut_ptr() }),
                        dequant: Some(Dequant {
                            row_scale: a[quads..].as_ptr() as *const f32,
                            row_zero: a[quads + 1..].as_ptr() as *const i32,
                            row_ld: ld,
                            rows_per_scale: 1,
                            col_scale: col_scale.as_ptr(),
                            col_sum: col_sum.as_ptr(),
                        }),
                    };
                    assert!(amx_suits(&pr));
                    let mid = (n / 2).div_ceil(32) * 32;
                    for cols in [0..mid, mid..n] {
                        // SAFETY: every buffer holds the rows, quads and columns above.
                        unsafe {
                            if on_amx {
                                product_amx(&pr, cols)
                            } else {
                                int8_on_vnni(&pr, cols)
                            }
                        }
                    }
                    (
                        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        keep.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                };
                let (amx_out, vnni_out) = (run(true), run(false));
                assert!(vnni_out.0.iter().zip(&y0).any(|(v, y)| *v != y.to_bits()), "the product wrote nothing");
                assert_eq!(amx_out, vnni_out, "{rows}x{quads}x{n} accumulate {accumulate} epilogue {epilogue}");
            }
        }
    }

    /// From `PACK_MIN_ROWS` rows a product copies its weight's panels and
    /// runs its tiles in row blocks; the sums are the same, so a large
    /// product has the bits of the same rows computed in pieces below that
    /// size: plain rows (several row blocks, a tail of 5, a column range
    /// starting mid-row, a last panel partly masked) and a conv's padded
    /// sequences with three taps, written and accumulated, with a bias,
    /// GELU and GELU's input kept, in f32 and bf16.
    #[test]
    fn packed_row_blocked_products_have_the_unpacked_products_bits() {
        if !bf16_available() {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        }
        // (sequence length, stored rows per sequence, sequences, taps, depth, columns)
        for &(len, stored, seqs, taps, depth, n) in &[(203, 203, 1, 1, 70, 150), (67, 69, 3, 3, 40, 96)] {
            let rows = len * seqs;
            assert!(rows >= PACK_MIN_ROWS && row_block::<6>(taps * depth) < rows);
            for elem in [Elem::F32, Elem::Bf16Pairs] {
                let words = |n: usize, seed: f32| -> Vec<u32> {
                    let v = data(n, seed);
                    match elem {
                        Elem::F32 => v.into_iter().map(f32::to_bits).collect(),
                        _ => v.chunks(2).map(|p| bf16_bits(p[0]) | bf16_bits(p[1]) << 16).collect(),
                    }
                };
                let a = words(2 * (stored * seqs + taps) * depth, 1.0);
                let b = words(2 * taps * depth * n, 2.0);
                let bias = data(n, 3.0);
                let y0 = data(rows * n, 4.0);
                for accumulate in [false, true] {
                    // Rows `r0..r1` of the product (whole sequences), into y and keep.
                    let part = |r0: usize, r1: usize, y: &mut [f32], keep: &mut [f32]| {
                        let first = r0 / len * stored + r0 % len;
                        let pr = Product {
                            a: Lhs {
                                ptr: a[first * depth..].as_ptr(),
                                ld: depth,
                                seq: (seqs > 1).then_some((len, stored)),
                            },
                            b: Operand { ptr: b.as_ptr(), ld: n },
                            y: Output { ptr: y[r0 * n..].as_mut_ptr(), ld: n, accumulate },
                            rows: r1 - r0,
                            depth,
                            taps: Taps { count: taps, lhs_step: depth, rhs_step: depth * n },
                            bias: Some(Bias { ptr: bias.as_ptr(), gelu: true, keep: keep[r0 * n..].as_mut_ptr() }),
                            dequant: None,
                        };
                        for cols in [0..80, 80..n] {
                            // SAFETY: a holds every row and tap read, b every
                            // tap's depth by n, y and keep the rows by n.
                            unsafe { run(elem, &pr, cols) };
                        }
                    };
                    let (mut whole, mut whole_keep) = (y0.clone(), vec![0f32; rows * n]);
                    part(0, rows, &mut whole, &mut whole_keep);
                    // Pieces below the threshold: two halves of the plain
                    // rows, each sequence of the conv alone.
                    let cuts: Vec<usize> =
                        if seqs == 1 { vec![0, 101, rows] } else { (0..=seqs).map(|s| s * len).collect() };
                    let (mut pieces, mut pieces_keep) = (y0.clone(), vec![0f32; rows * n]);
                    for c in cuts.windows(2) {
                        assert!(c[1] - c[0] < PACK_MIN_ROWS);
                        part(c[0], c[1], &mut pieces, &mut pieces_keep);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&whole) != bits(&y0), "the product wrote nothing");
                    let case = format!("{elem:?} {seqs}x{len} taps {taps} depth {depth} n {n} accumulate {accumulate}");
                    assert_eq!(bits(&whole), bits(&pieces), "{case}");
                    assert_eq!(bits(&whole_keep), bits(&pieces_keep), "{case}: kept");
                }
            }
        }
    }

    fn check(elem: Elem, round: fn(f32) -> f32) {
        for &(rows, k, n) in SIZES {
            let (x, w) = (data(rows * k, 1.0), data(n * k, 2.0));
            let y0 = data(rows * n, 3.0);
            for accumulate in [false, true] {
                let mut y = y0.clone();
                let (a, b, depth) = match elem {
                    Elem::F32 => {
                        let wt = super::super::transpose(&w, n, k);
                        (x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), wt.iter().map(|v| v.to_bits()).collect(), k)
                    }
                    Elem::Bf16Pairs => {
                        let mut a = vec![0u32; rows * k.div_ceil(2)];
                        to_bf16_pairs(&x, rows, k, k, &mut a);
                        (a, pack_bf16(&w, n, k), k.div_ceil(2))
                    }
                    Elem::Int8Quads => unreachable!("cpu/int8.rs tests the int8 products against their own reference"),
                };
                // Two column ranges, as two cores would split them.
                let mid = (n / 2).div_ceil(16) * 16;
                let pr = Product {
                    a: Lhs::rows(a.as_ptr(), depth),
                    b: Operand { ptr: b.as_ptr(), ld: n },
                    y: Output { ptr: y.as_mut_ptr(), ld: n, accumulate },
                    rows,
                    depth,
                    taps: Taps::ONE,
                    bias: None,
                    dequant: None,
                };
                for cols in [0..mid.min(n), mid.min(n)..n] {
                    unsafe { run(elem, &pr, cols) };
                }
                for r in 0..rows {
                    for j in 0..n {
                        let terms = (0..k).map(|i| f64::from(round(x[r * k + i])) * f64::from(round(w[j * k + i])));
                        let start = if accumulate { f64::from(y0[r * n + j]) } else { 0.0 };
                        let (want, magnitude) = terms.fold((start, start.abs()), |(s, m), t| (s + t, m + t.abs()));
                        // Any order of k + 1 f32 additions is within (k + 1)·2⁻²⁴
                        // of the magnitude sum (products are exact in bf16, and
                        // fused in f32); a wrong element or pair is far outside.
                        let bound = (k + 2) as f64 * f64::from(f32::EPSILON) / 2.0 * magnitude;
                        let got = f64::from(y[r * n + j]);
                        assert!(
                            (got - want).abs() <= bound,
                            "{elem:?} {rows}x{k}x{n} acc {accumulate} ({r},{j}): {got} vs {want} (bound {bound:e})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn f32_product_matches_a_plain_sum_at_every_edge() {
        if !f32_available() {
            eprintln!("skipped: no AVX-512F here");
            return;
        }
        check(Elem::F32, |v| v);
    }

    #[test]
    fn bf16_product_is_the_exact_sum_of_the_rounded_operands() {
        if !bf16_available() {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        }
        // Products of two bf16 values are exact in f32, so the only error
        // left is the f32 summation: the reference rounds the operands the
        // same way and sums in f64.
        check(Elem::Bf16Pairs, |v| half::bf16::from_f32(v).to_f32());
    }

    #[test]
    fn bf16_packing_pairs_depth_steps_and_pads_odd_depths_with_zero() {
        // w (2, 3): rows [1, 2, 3] and [4, 5, 6] → pairs (⌈3/2⌉ = 2, 2).
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let p = pack_bf16(&w, 2, 3);
        let b = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
        assert_eq!(p, vec![b(1.0) | b(2.0) << 16, b(4.0) | b(5.0) << 16, b(3.0), b(6.0)]);
        if bf16_available() {
            let mut a = vec![u32::MAX; 4];
            to_bf16_pairs(&[1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0], 2, 3, 4, &mut a);
            assert_eq!(a, vec![b(1.0) | b(2.0) << 16, b(3.0), b(4.0) | b(5.0) << 16, b(6.0)]);
        }
    }
}
