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
#[allow(clippy::excessive_precision)] // the coefficients as fitted; f32 rounds them
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// Exact-form GELU: 0.5·x·(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
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
