//! What the op modules' tests share: their inputs, the f32 tolerance, the
//! CPU-against-emulator comparison.

use crate::backend::gpu::{Emu, Gpu, ThreadOrder};
use crate::backend::Backend;

/// Deterministic values in [-scale, scale) (an LCG).
pub(super) fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The values in f64, for the references.
pub(super) fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// docs/models.md's f32 tolerance: max abs diff ≤ 1e-4·(1 + max |want|).
pub(super) fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = 1e-4 * (1.0 + want.iter().fold(0f64, |m, v| m.max(v.abs())));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (f64::from(*g) - w).abs();
        assert!(d <= tol, "{what}: |{g} - {w}| = {d:e} at {i} > {tol:e}");
    }
}

/// Compares `cpu`, the bits an op's test run gave on the CPU, with those
/// `run` gives on the emulator in every thread order: a kernel whose result
/// depended on the schedule, or strayed from the CPU's arithmetic, differs.
pub(super) fn emulator_gives_the_cpus_bits(cpu: &[Vec<u32>], run: impl Fn(&Gpu<Emu>, &str) -> Vec<Vec<u32>>) {
    for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
        let emu = run(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}"));
        assert!(emu == cpu, "emu {order:?}: not the CPU's bits");
    }
}

/// Calls `call` with every buffer at its full length (it must succeed), then
/// with each buffer one value short: each of those calls must be refused
/// with an error naming the op and that buffer (the shape checks of
/// docs/kernels.md, the same on every backend).
pub(super) fn each_short_buffer_is_named<const N: usize>(
    backend: &str,
    op: &str,
    names: [&str; N],
    full: [usize; N],
    call: impl Fn([usize; N]) -> crate::error::Result<()>,
) {
    call(full).unwrap_or_else(|e| panic!("{backend}: {op} at full lengths: {e}"));
    for (i, what) in names.into_iter().enumerate() {
        let mut n = full;
        n[i] -= 1;
        let err = call(n).err().unwrap_or_else(|| panic!("{backend}: {op} took a short {what}")).to_string();
        assert!(err.contains(&format!("{op}: buffer {what} ")), "{backend}: {err}");
    }
}

/// The first `n` values of `m`.
pub(super) fn read<B: Backend>(be: &B, m: &B::Buf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    be.read(m, &mut v).unwrap();
    v
}

/// Each value's bits, for the comparisons that must be exact.
pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Reads as many values of `m` as `want` has, asserts them within the f32
/// tolerance of `want` (`assert_close`), and returns their bits.
pub(super) fn read_close<B: Backend>(be: &B, m: &B::Buf, what: &str, want: &[f64]) -> Vec<u32> {
    let got = read(be, m, want.len());
    assert_close(what, &got, want);
    bits(&got)
}

/// `start + delta` in f64: what a buffer that started at `start` holds
/// once a gradient `delta` is added into it.
pub(super) fn added(start: &[f32], delta: &[f64]) -> Vec<f64> {
    start.iter().zip(delta).map(|(a, d)| f64::from(*a) + d).collect()
}

/// Runs `run` (which asserts against the reference and returns the bits of
/// what it computed) on the emulator in every thread order: each order
/// must give the first order's bits, or the kernel depends on the schedule.
pub(super) fn same_bits_in_every_order(run: impl Fn(&Gpu<Emu>, &str) -> Vec<Vec<u32>>) {
    let mut first: Option<Vec<Vec<u32>>> = None;
    for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
        let bits = run(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}"));
        assert!(first.get_or_insert_with(|| bits.clone()) == &bits, "emu {order:?}: other bits than the first order");
    }
}

/// Asserts that `grad` is the gradient of `f` at `v`, entry by entry,
/// against central differences (step 1e-6, within 1e-6: the references are
/// f64 and smooth).
pub(super) fn assert_matches_finite_differences(what: &str, v: &[f64], grad: &[f64], f: &dyn Fn(&[f64]) -> f64) {
    assert_eq!(v.len(), grad.len(), "{what}: length");
    let h = 1e-6;
    for i in 0..v.len() {
        let (mut p, mut m) = (v.to_vec(), v.to_vec());
        p[i] += h;
        m[i] -= h;
        let fd = (f(&p) - f(&m)) / (2.0 * h);
        assert!((fd - grad[i]).abs() < 1e-6, "{what} {i}: {} vs finite difference {fd}", grad[i]);
    }
}
