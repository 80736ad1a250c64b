//! Input standardization, in place: `x[r, i] = (x[r, i] − mean[i]) / std[i]`
//! over `(rows, dim)`, with `std`'s zeros already replaced by ones (the
//! normalizer's job). Inference only: its inputs are data, not parameters.
//!
//! Every piece of the op but its signature (`Backend::standardize`) and its
//! kernel (`kernels/standardize.cu`):
//! - the shape checks, one list for both backends;
//! - the reference, a plain f64 loop the tests compare with;
//! - the CPU: a plain loop over the rows;
//! - the GPU: the kernel's parameter struct and launch (grid-stride, a
//!   thread per value, `launch::elementwise`);
//! - the tests: the CPU and the emulator against the reference, and each
//!   other bit for bit in every thread order; the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/kernels.rs` (`elementwise_ops`, and the graph
//! capture test, which records and replays its launch).

use crate::backend::cpu::check_len;
use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{Device, Gpu};
use crate::error::Result;

const OP: &str = "standardize";

/// The buffers and the values each must hold, checked in this order.
fn check_buffers<B: ?Sized>(
    x: &B,
    mean: &B,
    std: &B,
    rows: usize,
    dim: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, rows * dim)?;
    check("mean", mean, dim)?;
    check("std", std, dim)
}

/// The op in f64: `(x − mean) / std` by columns.
pub fn reference(x: &[f64], mean: &[f64], std: &[f64], rows: usize, dim: usize) -> Vec<f64> {
    (0..rows * dim).map(|k| (x[k] - mean[k % dim]) / std[k % dim]).collect()
}

/// `Backend::standardize` on the CPU.
pub(crate) fn forward_cpu(x: &mut [f32], mean: &[f32], std: &[f32], rows: usize, dim: usize) -> Result<()> {
    check_buffers(&*x, mean, std, rows, dim, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    for row in x[..rows * dim].chunks_mut(dim) {
        for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
            *v = (*v - m) / s;
        }
    }
    Ok(())
}

params!(
    /// `kernels/standardize.cu` StandardizeParams
    StandardizeParams => Standardize { x: u64, mean: u64, std: u64, rows: i32, dim: i32 }
);

/// `Backend::standardize` on a `Gpu`: one launch of `quorum_standardize`.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &mut D::Mem,
    mean: &D::Mem,
    std: &D::Mem,
    rows: usize,
    dim: usize,
) -> Result<()> {
    check_buffers(&*x, mean, std, rows, dim, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let p = StandardizeParams {
        x: dev.ptr_mut(x),
        mean: dev.ptr(mean),
        std: dev.ptr(std),
        rows: gpu.int(OP, rows)?,
        dim: gpu.int(OP, dim)?,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(rows * dim)?, &p) }
}

/// This op's parameter struct, checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    vec![crate::backend::gpu::emu::c_size_agrees::<StandardizeParams>()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::testing::{
        data, each_short_buffer_is_named, emulator_gives_the_cpus_bits, read_close, wide,
    };
    use crate::backend::Backend;
    use crate::Cpu;

    /// (rows, dim): one value, odd sizes, more values than one launch's threads.
    const SHAPES: [(usize, usize); 4] = [(1, 1), (7, 5), (60, 112), (1500, 112)];

    /// Every shape on `be`, checked against the reference; the bits.
    fn run<B: Backend>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &(rows, dim)) in SHAPES.iter().enumerate() {
            let seed = 10 * i as u64;
            let x = data(rows * dim, seed, 3.0);
            let mean = data(dim, seed + 1, 1.0);
            // Positive, as the normalizer leaves them, some below one.
            let std: Vec<f32> = data(dim, seed + 2, 1.0).iter().map(|v| 0.25 + v.abs() * 2.0).collect();
            let mut xb = be.upload(&x).unwrap();
            be.standardize(&mut xb, &be.upload(&mean).unwrap(), &be.upload(&std).unwrap(), rows, dim).unwrap();
            let want = reference(&wide(&x), &wide(&mean), &wide(&std), rows, dim);
            bits.push(read_close(be, &xb, &format!("{what} {rows}x{dim}"), &want));
        }
        bits
    }

    #[test]
    fn cpu_and_emulator_match_the_reference_and_each_other_bit_for_bit() {
        emulator_gives_the_cpus_bits(&run(&Cpu::new(), "cpu"), run);
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Backend>(be: &B) {
            let (rows, dim) = (3, 4);
            let z = |n: usize| be.alloc(n).unwrap();
            let call = |n: [usize; 3]| be.standardize(&mut z(n[0]), &z(n[1]), &z(n[2]), rows, dim);
            // Zero std gives NaN or inf, not an error: the caller's to avoid.
            each_short_buffer_is_named(be.name(), "standardize", ["x", "mean", "std"], [rows * dim, dim, dim], call);
        }
        refuses(&Cpu::new());
        refuses(&crate::backend::gpu::Gpu::new(crate::backend::gpu::Emu::new()));
    }

    #[test]
    fn the_parameter_struct_has_its_c_layout() {
        // Moved from gpu/params.rs: three pointers, two ints.
        assert_eq!(std::mem::size_of::<StandardizeParams>(), 32);
    }
}
