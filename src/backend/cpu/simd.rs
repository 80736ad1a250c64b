//! Vectorizable f32 kernels for the CPU backend's hot loops.
//!
//! Each public function is compiled for AVX-512, AVX2+FMA and baseline x86-64
//! (or the build target elsewhere) by `multiversion` and picks the best at run
//! time, so the binary stays portable. Reductions keep 16 independent partial
//! sums, which lets LLVM vectorize them without reassociating floats freely.
//!
//! `erf` and `exp` are our own polynomial approximations: libm's scalar calls
//! cost more than the GEMMs around them at these sizes. Their accuracy is
//! checked against libm in the tests below (a few ulp), far inside the models'
//! 1e-4 tolerance.

use multiversion::multiversion;

/// Independent partial sums of a reduction (16 f32: one AVX-512 register).
pub(crate) const LANES: usize = 16;

/// Σ a[i]·b[i]
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// y[i] += alpha · x[i]
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// y[i] = alpha · y[i]
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn scale(alpha: f32, y: &mut [f32]) {
    for yi in y.iter_mut() {
        *yi *= alpha;
    }
}

/// erf(x) as a rational function on [-4, 4] (odd numerator of degree 13,
/// even denominator of degree 8); |erf(x)| rounds to 1 outside in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * ERF_P[0] + ERF_P[1];
    for c in &ERF_P[2..] {
        p = x2 * p + c;
    }
    let mut q = x2 * ERF_Q[0] + ERF_Q[1];
    for c in &ERF_Q[2..] {
        q = x2 * q + c;
    }
    x * p / q
}

/// `erf`'s numerator and denominator coefficients in x², highest degree first.
#[allow(clippy::excessive_precision)] // the coefficients as fitted; f32 rounds them
const ERF_P: [f32; 7] =
    [-2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_600e-3, -1.609_603_3e-2];
#[allow(clippy::excessive_precision)]
const ERF_Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];

/// Exact-form GELU: 0.5·x·(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `gelu` of 16 lanes, operation for operation as the scalar one (no
/// fused multiply-adds, the same order), so every lane has its bits: the
/// products' epilogue (small_gemm.rs) applies it to a tile still in
/// registers, where many independent lanes hide the division's latency.
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn gelu_avx512(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let splat = _mm512_set1_ps;
    let s = _mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2));
    // clamp(-4, 4), a NaN kept: max/min return their second operand on a NaN.
    let x = _mm512_min_ps(splat(4.0), _mm512_max_ps(splat(-4.0), s));
    let x2 = _mm512_mul_ps(x, x);
    let mut p = _mm512_add_ps(_mm512_mul_ps(x2, splat(ERF_P[0])), splat(ERF_P[1]));
    for &c in &ERF_P[2..] {
        p = _mm512_add_ps(_mm512_mul_ps(x2, p), splat(c));
    }
    let mut q = _mm512_add_ps(_mm512_mul_ps(x2, splat(ERF_Q[0])), splat(ERF_Q[1]));
    for &c in &ERF_Q[2..] {
        q = _mm512_add_ps(_mm512_mul_ps(x2, q), splat(c));
    }
    let erf = _mm512_div_ps(_mm512_mul_ps(x, p), q);
    _mm512_mul_ps(_mm512_mul_ps(splat(0.5), v), _mm512_add_ps(splat(1.0), erf))
}

/// e^x: range reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for
/// e^r, and 2^n built in the exponent bits. Inputs below −87 give 0 (the
/// normal range ends there; softmax and sigmoid need nothing smaller), inputs
/// above 88 give e^88 (sigmoid and tanh saturate long before).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // ln2 split in a high part exact in f32 and the remainder.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The clamp keeps n within [−126, 127], and `max` turns a NaN's n into
    // −127 (the result is NaN through r anyway), so the conversion is always
    // in range. `as i32` would saturate instead, which the compiler does one
    // lane at a time; this is one vector conversion, with the same integers.
    // SAFETY: n.max(−127.0) is finite and within i32 (see above).
    let n_int: i32 = unsafe { n.max(-127.0).to_int_unchecked() };
    let bits = ((n_int + 127) as u32) << 23;
    let v = p * f32::from_bits(bits);
    if underflow {
        0.0
    } else {
        v
    }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // tanh(x) = 1 − 2 / (e^{2x} + 1): exact at both tails, ~1e-7 absolute near 0.
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn gelu_inplace(y: &mut [f32]) {
    for v in y.iter_mut() {
        *v = gelu(*v);
    }
}

/// y = y + b, then GELU if asked, over one row.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn bias_act_row(y: &mut [f32], b: &[f32], apply_gelu: bool) {
    if apply_gelu {
        for (v, bi) in y.iter_mut().zip(b) {
            *v = gelu(*v + bi);
        }
    } else {
        for (v, bi) in y.iter_mut().zip(b) {
            *v += bi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 5e-5)
    }

    /// The vector GELU of the products' epilogue has the scalar one's bits.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vector_gelu_has_the_scalar_ones_bits() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512 here");
            return;
        }
        let specials = [0.0, -0.0, 1e-30, -1e-30, 5.656, -5.656, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY];
        let xs: Vec<f32> = grid().chain((-300..=300).map(|i| i as f32 * 0.037)).chain(specials).collect();
        for chunk in xs.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F was detected; both pointers are 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), gelu_avx512(_mm512_loadu_ps(lanes.as_ptr()))) };
            for (x, y) in lanes.iter().zip(out) {
                assert_eq!(y.to_bits(), gelu(*x).to_bits(), "gelu({x}): vector {y}, scalar {}", gelu(*x));
            }
        }
        let mut nan = [f32::NAN; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(nan.as_mut_ptr(), gelu_avx512(_mm512_loadu_ps(nan.as_ptr()))) };
        assert!(nan.iter().all(|v| v.is_nan()), "a NaN stays NaN");
    }

    #[test]
    fn erf_matches_libm() {
        let worst = grid().map(|x| (erf(x) as f64 - libm::erf(x as f64)).abs()).fold(0.0, f64::max);
        assert!(worst < 5e-7, "erf max abs error {worst}");
    }

    #[test]
    fn gelu_matches_exact_form() {
        // The f32 formula 0.5·x·(1 + erf) inherits erf's absolute error (< 5e-7,
        // above) scaled by 0.5·|x|, plus a few roundings: bound it by that.
        let worst = grid()
            .map(|x| {
                let x64 = x as f64;
                let exact = 0.5 * x64 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2));
                (gelu(x) as f64 - exact).abs() / (2.5e-7 * x64.abs() + 2.4e-7 * (1.0 + exact.abs()))
            })
            .fold(0.0, f64::max);
        assert!(worst <= 1.0, "gelu error exceeds the propagated erf bound by {worst}×");
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let (worst, at) = (-86_990..=87_990)
            .map(|i| {
                let x = i as f32 * 1e-3;
                let exact = (x as f64).exp();
                (((exp(x) as f64 - exact) / exact).abs(), x)
            })
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        assert!(worst < 4e-7, "exp max relative error {worst} at x = {at}");
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(1e30), exp(88.0));
        assert!(exp(88.0).is_finite());
    }

    #[test]
    fn tanh_and_sigmoid_match_std() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "tanh({x})");
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 2e-7, "sigmoid({x})");
        }
    }

    #[test]
    fn reductions_handle_tails() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 - 2.0).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), want);
    }
}
