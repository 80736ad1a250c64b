//! LayerNorm over the last axis of `(rows, dim)`, eps 1e-5, biased variance
//! (docs/models.md, "Common pieces"): `y = (x - mean) / sqrt(var + eps) ·
//! gamma + beta`, and its backward with the row statistics recomputed from
//! `x`: `dx += …`, `dgamma += …`, `dbeta += …`.
//!
//! Every piece of the op but its signatures (`Backend::layernorm`,
//! `Train::layernorm_backward`) and its kernels (`kernels/layernorm.cu`):
//! - the shape checks, one list for both backends;
//! - the reference, plain f64 loops the tests compare with;
//! - the CPU: a row at a time, two passes (mean, then centred squares) like
//!   PyTorch, in 16 independent partial sums that LLVM vectorizes; the
//!   backward's parameter gradients in fixed chunks of rows summed in
//!   order, so the bits do not depend on the thread count;
//! - the GPU: the three kernels' parameter structs, their launch rules and
//!   their launches (a warp per row for `y` and `dx`; 32-column blocks for
//!   `dgamma`/`dbeta`, see the `.cu`);
//! - the tests: the CPU and the emulator against the reference, the
//!   reference against finite differences, the launch rules, the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator
//! (`kernels_emu`, `train_kernels_emu`) and on a GPU (`kernels_cuda`,
//! `train_kernels_cuda`) through `tests/common/kernels.rs` (`layernorm_rows`)
//! and `tests/common/train_gemm.rs` (`layernorm_backward_shapes`), by finite
//! differences (`train_ops`); benched in `benches/models_cuda.rs`
//! (`layernorm_1568x256`).

use multiversion::multiversion;
use rayon::prelude::*;

use crate::backend::cpu::simd::LANES;
use crate::backend::cpu::{check_len, split_chunks, with_scratch, SendPtr, PAR_MIN_ELEMS, ROW_CHUNK};
use crate::backend::gpu::launch::cfg;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{launch_nonempty, Device, Gpu, LaunchConfig};
use crate::error::Result;

const OP: &str = "layernorm";
const OP_BACKWARD: &str = "layernorm_backward";

// ------------------------------------------------------------------ shapes

/// The forward's buffers and the values each must hold, checked in this
/// order by `check` (the backend's own length check).
fn check_forward<B: ?Sized>(
    x: &B,
    gamma: &B,
    beta: &B,
    y: &B,
    rows: usize,
    dim: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, rows * dim)?;
    check("y", y, rows * dim)?;
    check("gamma", gamma, dim)?;
    check("beta", beta, dim)
}

/// The backward's buffers and the values each must hold, checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    x: &B,
    gamma: &B,
    dy: &B,
    dx: &B,
    dgamma: &B,
    dbeta: &B,
    rows: usize,
    dim: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, rows * dim)?;
    check("gamma", gamma, dim)?;
    check("dy", dy, rows * dim)?;
    check("dx", dx, rows * dim)?;
    check("dgamma", dgamma, dim)?;
    check("dbeta", dbeta, dim)
}

// --------------------------------------------------------------- reference

/// Mean and `1 / sqrt(var + eps)` of one row, biased variance, in f64.
fn reference_stats(row: &[f64]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + 1e-5).sqrt())
}

/// The forward in f64, row by row: `y (rows, dim)`.
pub fn reference_forward(x: &[f64], gamma: &[f64], beta: &[f64], rows: usize, dim: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let (mean, rstd) = reference_stats(row);
        for i in 0..dim {
            y.push((row[i] - mean) * rstd * gamma[i] + beta[i]);
        }
    }
    y
}

/// The backward's gradients in f64 (not added into anything).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceGrads {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// The backward in f64, row by row, from `x`, `gamma` and `dy (rows, dim)`:
/// with `xh = (x - mean)·rstd` and `g = dy·gamma`,
/// `dx = rstd·(g - mean(g) - xh·mean(g·xh))`, `dgamma = Σ_rows dy·xh`,
/// `dbeta = Σ_rows dy`.
pub fn reference_backward(x: &[f64], gamma: &[f64], dy: &[f64], rows: usize, dim: usize) -> ReferenceGrads {
    let mut out = ReferenceGrads { dx: Vec::with_capacity(rows * dim), dgamma: vec![0.0; dim], dbeta: vec![0.0; dim] };
    for r in 0..rows {
        let (xr, dyr) = (&x[r * dim..(r + 1) * dim], &dy[r * dim..(r + 1) * dim]);
        let (mean, rstd) = reference_stats(xr);
        let xh: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
        let g: Vec<f64> = dyr.iter().zip(gamma).map(|(d, w)| d * w).collect();
        let mean_g = g.iter().sum::<f64>() / dim as f64;
        let mean_gxh = g.iter().zip(&xh).map(|(g, h)| g * h).sum::<f64>() / dim as f64;
        for i in 0..dim {
            out.dx.push(rstd * (g[i] - mean_g - xh[i] * mean_gxh));
            out.dgamma[i] += dyr[i] * xh[i];
            out.dbeta[i] += dyr[i];
        }
    }
    out
}

// --------------------------------------------------------------------- CPU

/// LayerNorm of one row, eps 1e-5, biased variance (two passes, like PyTorch).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_row(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let d = x.len();
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let mean = (acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()) / d as f32;
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let t = c[i] - mean;
            acc[i] += t * t;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    let var = (acc.iter().sum::<f32>() + tail) / d as f32;
    let inv = 1.0 / (var + 1e-5).sqrt();
    for i in 0..d {
        y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
    }
}

/// `Backend::layernorm` on the CPU: the rows in two halves on the two cores
/// when large enough.
pub(crate) fn forward_cpu(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    rows: usize,
    dim: usize,
) -> Result<()> {
    check_forward(x, gamma, beta, y, rows, dim, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    let (g, b) = (&gamma[..dim], &beta[..dim]);
    let x = &x[..rows * dim];
    let y = &mut y[..rows * dim];
    split_chunks(y, rows, dim, dim, rows * dim >= PAR_MIN_ELEMS, &|r, yr| {
        forward_row(&x[r * dim..(r + 1) * dim], g, b, yr)
    });
    Ok(())
}

/// One row of LayerNorm's backward: `dx += …`, and this row's terms of
/// `dgamma` and `dbeta` added into the chunk's partial sums.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_row(x: &[f32], gamma: &[f32], dy: &[f32], dx: &mut [f32], ag: &mut [f32], ab: &mut [f32]) {
    let d = x.len() as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    let rstd = 1.0 / (var + 1e-5).sqrt();
    let (mut s1, mut s2) = (0f32, 0f32);
    for i in 0..x.len() {
        let xh = (x[i] - mean) * rstd;
        let g = dy[i] * gamma[i];
        s1 += g;
        s2 += g * xh;
        ag[i] += dy[i] * xh;
        ab[i] += dy[i];
    }
    let (m1, m2) = (s1 / d, s2 / d);
    for i in 0..x.len() {
        let xh = (x[i] - mean) * rstd;
        dx[i] += rstd * (dy[i] * gamma[i] - m1 - xh * m2);
    }
}

/// `Train::layernorm_backward` on the CPU: chunks of `ROW_CHUNK` rows in
/// parallel, each with its own partial `dgamma`/`dbeta`, then the partials
/// added in chunk order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    rows: usize,
    dim: usize,
) -> Result<()> {
    check_backward(x, gamma, dy, dx, dgamma, dbeta, rows, dim, |what, b: &[f32], need| {
        check_len(OP_BACKWARD, what, b.len(), need)
    })?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let chunks = rows.div_ceil(ROW_CHUNK);
    let dxp = SendPtr(dx.as_mut_ptr());
    with_scratch(chunks * 2 * dim, |part| {
        part.par_chunks_mut(2 * dim).enumerate().for_each(|(c, acc)| {
            let (ag, ab) = acc.split_at_mut(dim);
            ag.fill(0.0);
            ab.fill(0.0);
            for r in c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(rows) {
                let (xr, dyr) = (&x[r * dim..(r + 1) * dim], &dy[r * dim..(r + 1) * dim]);
                // SAFETY: chunk c owns rows [c·64, (c+1)·64) of dx.
                let dxr = unsafe { std::slice::from_raw_parts_mut(dxp.at(r * dim), dim) };
                backward_row(xr, &gamma[..dim], dyr, dxr, ag, ab);
            }
        });
        for acc in part.chunks(2 * dim) {
            dgamma[..dim].iter_mut().zip(&acc[..dim]).for_each(|(d, a)| *d += a);
            dbeta[..dim].iter_mut().zip(&acc[dim..]).for_each(|(d, a)| *d += a);
        }
    });
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/layernorm.cu` LayerNormParams: `y = LayerNorm(x)`, a warp per row.
    LayerNormParams => Layernorm { x: u64, gamma: u64, beta: u64, y: u64, rows: i32, dim: i32 }
);
params!(
    /// `kernels/layernorm.cu` LayerNormDxParams: `dx += …`, a warp per row.
    LayerNormDxParams => LayernormDx { x: u64, gamma: u64, dy: u64, dx: u64, rows: i32, dim: i32 }
);
params!(
    /// `kernels/layernorm.cu` LayerNormDparamsParams: `dgamma += …`, `dbeta += …`.
    LayerNormDparamsParams => LayernormDparams { x: u64, dy: u64, dgamma: u64, dbeta: u64, rows: i32, dim: i32 }
);

/// The parameter kernel: 8 warps per block (`LNB_WARPS`), 32 columns (a lane each) per block.
const DPARAMS_THREADS: u32 = 256;
const DPARAMS_COLUMNS: usize = 32;

/// `quorum_layernorm` and `quorum_layernorm_dx`: one warp per row, 8 rows per block.
pub fn rows_cfg(rows: usize) -> Result<LaunchConfig> {
    cfg([rows.div_ceil(8).max(1), 1, 1], 256, 0)
}

/// `quorum_layernorm_dparams`: one block per 32 columns.
pub fn dparams_cfg(dim: usize) -> Result<LaunchConfig> {
    cfg([dim.div_ceil(DPARAMS_COLUMNS), 1, 1], DPARAMS_THREADS, 0)
}

/// `Backend::layernorm` on a `Gpu`: one launch of `quorum_layernorm`.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    gamma: &D::Mem,
    beta: &D::Mem,
    y: &mut D::Mem,
    rows: usize,
    dim: usize,
) -> Result<()> {
    check_forward(x, gamma, beta, &*y, rows, dim, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let p = LayerNormParams {
        x: dev.ptr(x),
        gamma: dev.ptr(gamma),
        beta: dev.ptr(beta),
        y: dev.ptr_mut(y),
        rows: gpu.int(OP, rows)?,
        dim: gpu.int(OP, dim)?,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(rows_cfg(rows)?, &p) }
}

/// `Train::layernorm_backward` on a `Gpu`: `quorum_layernorm_dx`, then
/// `quorum_layernorm_dparams`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    gamma: &D::Mem,
    dy: &D::Mem,
    dx: &mut D::Mem,
    dgamma: &mut D::Mem,
    dbeta: &mut D::Mem,
    rows: usize,
    dim: usize,
) -> Result<()> {
    let op = OP_BACKWARD;
    check_backward(x, gamma, dy, &*dx, &*dgamma, &*dbeta, rows, dim, |what, m, need| gpu.check(op, what, m, need))?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    let (r, d) = (gpu.int(op, rows)?, gpu.int(op, dim)?);
    let p = LayerNormDxParams {
        x: dev.ptr(x),
        gamma: dev.ptr(gamma),
        dy: dev.ptr(dy),
        dx: dev.ptr_mut(dx),
        rows: r,
        dim: d,
    };
    // The forward's launch rule: a warp per row.
    launch_nonempty(gpu, rows_cfg(rows)?, &p)?;
    let p = LayerNormDparamsParams {
        x: dev.ptr(x),
        dy: dev.ptr(dy),
        dgamma: dev.ptr_mut(dgamma),
        dbeta: dev.ptr_mut(dbeta),
        rows: r,
        dim: d,
    };
    launch_nonempty(gpu, dparams_cfg(dim)?, &p)
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<LayerNormParams>(),
        c_size_agrees::<LayerNormDxParams>(),
        c_size_agrees::<LayerNormDparamsParams>(),
    ]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::{Emu, ThreadOrder};
    use crate::backend::ops::testing::{
        assert_close, assert_matches_finite_differences, data, each_short_buffer_is_named, wide,
    };
    use crate::backend::Train;
    use crate::Cpu;

    /// Rows around the CPU's chunk of 64 and the kernels' 8 rows per block;
    /// widths around the 16 lanes and the 32 lanes of a warp, and the models'.
    const SHAPES: [(usize, usize); 7] = [(1, 256), (3, 112), (7, 33), (17, 128), (65, 17), (130, 32), (2, 1)];

    /// One case: `x` with an offset mean (a residual stream), `gamma`,
    /// `beta`, `dy`, and nonzero starting gradients (the backward adds).
    struct Case {
        rows: usize,
        dim: usize,
        x: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        dy: Vec<f32>,
        dx0: Vec<f32>,
        dg0: Vec<f32>,
        db0: Vec<f32>,
    }

    fn cases() -> impl Iterator<Item = Case> {
        SHAPES.iter().enumerate().map(|(i, &(rows, dim))| {
            let s = 10 * i as u64;
            Case {
                rows,
                dim,
                x: data(rows * dim, s + 1, 2.0).iter().map(|v| v + 3.0).collect(),
                gamma: data(dim, s + 2, 1.0),
                beta: data(dim, s + 3, 0.3),
                dy: data(rows * dim, s + 4, 1.0),
                dx0: data(rows * dim, s + 5, 0.5),
                dg0: data(dim, s + 6, 0.5),
                db0: data(dim, s + 7, 0.5),
            }
        })
    }

    impl Case {
        fn forward(&self) -> Vec<f64> {
            reference_forward(&wide(&self.x), &wide(&self.gamma), &wide(&self.beta), self.rows, self.dim)
        }

        /// The reference gradients added to the starting ones.
        fn backward(&self) -> [Vec<f64>; 3] {
            let g = reference_backward(&wide(&self.x), &wide(&self.gamma), &wide(&self.dy), self.rows, self.dim);
            let add = |a: &[f32], b: Vec<f64>| b.iter().zip(a).map(|(b, a)| b + f64::from(*a)).collect();
            [add(&self.dx0, g.dx), add(&self.dg0, g.dgamma), add(&self.db0, g.dbeta)]
        }

        /// Forward and backward on `be`, through the traits, compared with the reference.
        fn check<B: Train>(&self, be: &B, what: &str) {
            let (rows, dim) = (self.rows, self.dim);
            let up = |v: &[f32]| be.upload(v).unwrap();
            let read = |b: &B::Buf, n: usize| {
                let mut v = vec![0f32; n];
                be.read(b, &mut v).unwrap();
                v
            };
            let what = format!("{what} {rows}x{dim}");
            let (x, gamma, beta, dy) = (up(&self.x), up(&self.gamma), up(&self.beta), up(&self.dy));
            let mut y = be.alloc(rows * dim).unwrap();
            be.layernorm(&x, &gamma, &beta, &mut y, rows, dim).unwrap();
            assert_close(&format!("{what}: y"), &read(&y, rows * dim), &self.forward());
            let (mut dx, mut dg, mut db) = (up(&self.dx0), up(&self.dg0), up(&self.db0));
            be.layernorm_backward(&x, &gamma, &dy, &mut dx, &mut dg, &mut db, rows, dim).unwrap();
            let [want_dx, want_dg, want_db] = self.backward();
            assert_close(&format!("{what}: dx"), &read(&dx, rows * dim), &want_dx);
            assert_close(&format!("{what}: dgamma"), &read(&dg, dim), &want_dg);
            assert_close(&format!("{what}: dbeta"), &read(&db, dim), &want_db);
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        // L = Σ y·r: dL/dθ by central differences in f64.
        let (rows, dim) = (3, 7);
        let x: Vec<f64> = wide(&data(rows * dim, 1, 2.0)).iter().map(|v| v + 0.5).collect();
        let (gamma, beta, r) = (wide(&data(dim, 2, 1.0)), wide(&data(dim, 3, 1.0)), wide(&data(rows * dim, 4, 1.0)));
        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            reference_forward(x, g, b, rows, dim).iter().zip(&r).map(|(y, r)| y * r).sum()
        };
        let grads = reference_backward(&x, &gamma, &r, rows, dim);
        assert_matches_finite_differences("dx", &x, &grads.dx, &|x| loss(x, &gamma, &beta));
        assert_matches_finite_differences("dgamma", &gamma, &grads.dgamma, &|g| loss(&x, g, &beta));
        assert_matches_finite_differences("dbeta", &beta, &grads.dbeta, &|b| loss(&x, &gamma, b));
    }

    #[test]
    fn cpu_matches_the_reference() {
        let cpu = Cpu::new();
        for case in cases() {
            case.check(&cpu, "cpu");
        }
    }

    #[test]
    fn emulator_matches_the_reference_in_every_thread_order() {
        for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
            let gpu = Gpu::new(Emu::with_order(order));
            for case in cases() {
                case.check(&gpu, &format!("emu {order:?}"));
            }
        }
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let (rows, dim) = (3, 4);
            let fwd = |x, g, b, y| be.layernorm(&z(x), &z(g), &z(b), &mut z(y), rows, dim);
            fwd(12, 4, 4, 12).unwrap();
            for (what, sizes) in
                [("x", (11, 4, 4, 12)), ("gamma", (12, 3, 4, 12)), ("beta", (12, 4, 3, 12)), ("y", (12, 4, 4, 11))]
            {
                let err = fwd(sizes.0, sizes.1, sizes.2, sizes.3).unwrap_err().to_string();
                assert!(err.contains(&format!("layernorm: buffer {what} ")), "{}: {err}", be.name());
            }
            let bwd = |s: [usize; 6]| {
                be.layernorm_backward(&z(s[0]), &z(s[1]), &z(s[2]), &mut z(s[3]), &mut z(s[4]), &mut z(s[5]), rows, dim)
            };
            let names = ["x", "gamma", "dy", "dx", "dgamma", "dbeta"];
            each_short_buffer_is_named(be.name(), "layernorm_backward", names, [12, 4, 12, 12, 4, 4], bwd);
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn no_rows_is_nothing_to_do() {
        fn empty<B: Train>(be: &B) {
            let z = |n: usize| be.alloc(n).unwrap();
            let dim = 16;
            be.layernorm(&z(0), &z(dim), &z(dim), &mut z(0), 0, dim).unwrap();
            be.layernorm_backward(&z(0), &z(dim), &z(0), &mut z(0), &mut z(dim), &mut z(dim), 0, dim).unwrap();
        }
        empty(&Cpu::new());
        empty(&Gpu::new(Emu::new()));
    }

    #[test]
    fn launch_rules() {
        assert_eq!(rows_cfg(49).unwrap().grid, [7, 1, 1]);
        assert_eq!(rows_cfg(8).unwrap().grid, [1, 1, 1]);
        assert_eq!(rows_cfg(0).unwrap().grid, [1, 1, 1]);
        assert_eq!(rows_cfg(1).unwrap().block, [256, 1, 1]);
        assert_eq!(dparams_cfg(256).unwrap().grid, [8, 1, 1]);
        assert_eq!(dparams_cfg(17).unwrap().grid, [1, 1, 1]);
        assert_eq!(dparams_cfg(112).unwrap().block, [256, 1, 1]);
    }
}
