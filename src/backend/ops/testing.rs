//! What the op modules' tests share: their inputs, the f32 tolerance, the
//! CPU-against-emulator comparison.

use crate::backend::gpu::{Emu, Gpu, ThreadOrder};

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
