//! The linear layer, `y = x·Wᵀ + b` (then GELU, or added into `y`), with
//! what belongs to it alone: its weight preparation (`prepare_linear`, and
//! `prepare_linear_from` after each optimizer step), the training forward
//! that keeps the pre-activation (`linear_gelu_keep`), its backward
//! (`linear_backward`) and the bias backward (`bias_backward`, a column sum
//! in fixed row chunks that the conv backward's bias shares on the CPU).
//!
//! Every piece of the op but its signatures (`Backend::linear`,
//! `Backend::prepare_linear`, `Train::linear_gelu_keep`, `Train::linear_backward`,
//! `Train::bias_backward`, `Train::prepare_linear_from`) and its kernels
//! (`kernels/linear.cu`):
//! - the shape checks, one list per call for both backends;
//! - the reference, plain f64 loops: the forward with its three epilogues,
//!   the backward (`dW += dyᵀx`, `dx = dy·W` or `+=`, `db += Σ dy`);
//! - the CPU: the prepared layouts (the transpose at f32, bf16 pairs from
//!   `small_gemm::pack_bf16`), the forward through `Cpu::product` (the
//!   shared micro-kernels of `cpu/small_gemm.rs` and `cpu/bf16.rs`, which the
//!   patch embedding uses too), `linear_gelu_keep` as one product storing
//!   both sides of GELU from its registers (`matmul_gelu_keep`), the
//!   backward (`dW` in two halves of the rows, `gemm_depth_halves`; `dx` on
//!   `gemm_strided`), and `col_sums`; on the GPU `linear_gelu_keep` is the
//!   product then `gelu`;
//! - the GPU: the parameter structs (`LinearParams` and its bf16/f16 twins,
//!   `LinearDwParams`, `LinearDxParams`, `BiasPartialsParams`,
//!   `BiasFinishParams`, `PackHalfParams`), the bias backward's launch rule
//!   and every launch (the GEMM tiles' rules stay in `gpu/launch.rs`, shared
//!   with the conv and the patch embedding);
//! - the tests: the CPU and the emulator against the reference, the bias
//!   backward the CPU's bits in every thread order, the refused sizes, the
//!   launch rule, the struct layout.
//!
//! Also exercised from `tests/`: `kernels_emu` (the forward on every
//! epilogue and precision), `train_kernels_emu` (`linear_backward_shapes`,
//! `prepare_from_matches_prepare`, gradients bit-identical across runs),
//! `train_grads` (against finite differences) and `bit_lock`.

use rayon::prelude::*;

use crate::backend::cpu::small_gemm;
use crate::backend::cpu::{
    add_weight_grad, bf16, check_len, int8, matmul_gelu_keep, rows_product, transpose, transpose_into, with_scratch,
    Cpu, Dst, Gemm, View, ROW_CHUNK,
};
use crate::backend::gpu::device::LaunchConfig;
use crate::backend::gpu::launch::{self, cfg};
use crate::backend::gpu::params::{params, twin, Bf16, Int8, KernelParams, F16};
use crate::backend::gpu::{launch_nonempty, Device, Gpu};
use crate::backend::ops::column_sum::{self, ColumnSum};
use crate::backend::ops::elementwise::{map_cpu, map_gpu, Map};
use crate::backend::ops::swap_last_axes;
use crate::backend::{Epilogue, LinearShape, Precision};
use crate::error::Result;

const OP: &str = "linear";
const KEEP: &str = "linear_gelu_keep";

// ------------------------------------------------------------------ shapes

/// The forward's buffers and the values each must hold, checked in this
/// order; `w_len` is the prepared weight's length in the backend's layout.
fn check_forward<B: ?Sized>(
    x: &B,
    w: &B,
    b: &B,
    y: &B,
    s: LinearShape,
    w_len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, s.rows * s.n_in)?;
    check("w", w, w_len)?;
    check("b", b, s.n_out)?;
    check("y", y, s.rows * s.n_out)
}

/// The backward's buffers and the values each must hold, checked in this
/// order (`w` is the f32 master weight, PyTorch's `(n_out, n_in)`).
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    x: &B,
    w: &B,
    dy: &B,
    dx: Option<&B>,
    dw: &B,
    db: Option<&B>,
    s: LinearShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, s.rows * s.n_in)?;
    check("w", w, s.n_out * s.n_in)?;
    check("dy", dy, s.rows * s.n_out)?;
    check("dw", dw, s.n_out * s.n_in)?;
    if let Some(dx) = dx {
        check("dx", dx, s.rows * s.n_in)?;
    }
    if let Some(db) = db {
        check("db", db, s.n_out)?;
    }
    Ok(())
}

/// The bias backward's buffers, checked in this order.
fn check_bias<B: ?Sized>(
    dy: &B,
    db: &B,
    rows: usize,
    n: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("dy", dy, rows * n)?;
    check("db", db, n)
}

// --------------------------------------------------------------- reference

/// The forward on plain vectors, `w` in PyTorch's `(n_out, n_in)` layout:
/// `y = x·Wᵀ + b`, then GELU (exact, the elementwise op's reference), or
/// added to `y0` (the output's previous contents) for `Accumulate`.
pub fn reference_forward(x: &[f64], w: &[f64], b: &[f64], y0: &[f64], s: LinearShape, epi: Epilogue) -> Vec<f64> {
    let mut y = vec![0f64; s.rows * s.n_out];
    for r in 0..s.rows {
        for o in 0..s.n_out {
            let dot: f64 = (0..s.n_in).map(|i| x[r * s.n_in + i] * w[o * s.n_in + i]).sum();
            y[r * s.n_out + o] = dot + b[o];
        }
    }
    match epi {
        Epilogue::None => {}
        Epilogue::Gelu => {
            let pre = y.clone();
            super::elementwise::reference(super::elementwise::Map::Gelu, &pre, &mut y);
        }
        Epilogue::Accumulate => y.iter_mut().zip(y0).for_each(|(v, a)| *v += a),
    }
    y
}

/// The backward's gradients of the reference, each as added to zero (`dx`
/// written).
pub struct ReferenceGrads {
    pub dx: Vec<f64>,
    pub dw: Vec<f64>,
    pub db: Vec<f64>,
}

/// The backward on plain vectors: `dW = dyᵀ·x`, `dx = dy·W`, `db = Σ_rows dy`.
pub fn reference_backward(x: &[f64], w: &[f64], dy: &[f64], s: LinearShape) -> ReferenceGrads {
    let (rows, n_in, n_out) = (s.rows, s.n_in, s.n_out);
    let mut g = ReferenceGrads { dx: vec![0.0; rows * n_in], dw: vec![0.0; n_out * n_in], db: vec![0.0; n_out] };
    for r in 0..rows {
        for o in 0..n_out {
            let d = dy[r * n_out + o];
            g.db[o] += d;
            for i in 0..n_in {
                g.dw[o * n_in + i] += d * x[r * n_in + i];
                g.dx[r * n_in + i] += d * w[o * n_in + i];
            }
        }
    }
    g
}

// --------------------------------------------------------------------- CPU

/// `Backend::prepare_linear` on the CPU: the transpose `(n_in, n_out)` at
/// f32, bf16 pairs of consecutive inputs in bf16 mode (cpu/bf16.rs), int8
/// quads and per-channel scales in int8 mode (cpu/int8.rs).
pub(crate) fn prepare_cpu(cpu: &Cpu, w: &[f32], n_out: usize, n_in: usize) -> Result<Vec<f32>> {
    check_len("prepare_linear", "w", w.len(), n_out * n_in)?;
    match cpu.precision() {
        Precision::Bf16 => Ok(pack_bf16(w, n_out, n_in)),
        Precision::Int8 => {
            int8::check_depth("prepare_linear", n_in)?;
            Ok(int8::pack(&w[..n_out * n_in], n_out, n_in))
        }
        Precision::F32 | Precision::F16 => Ok(transpose(&w[..n_out * n_in], n_out, n_in)),
    }
}

/// The bf16 mode's layout: `(⌈n_in/2⌉, n_out)` pairs (`small_gemm::pack_bf16`).
pub(crate) fn pack_bf16(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    bf16::to_bits(small_gemm::pack_bf16(&w[..n_out * n_in], n_out, n_in))
}

/// `Train::prepare_linear_from` on the CPU: `prepare_cpu`'s layout (the
/// transpose, or bf16 pairs with use_amp) into `dst`.
pub(crate) fn prepare_from_cpu(cpu: &Cpu, w: &[f32], n_out: usize, n_in: usize, dst: &mut [f32]) -> Result<()> {
    cpu.trainable("prepare_linear_from")?;
    check_len("prepare_linear_from", "w", w.len(), n_out * n_in)?;
    check_len("prepare_linear_from", "dst", dst.len(), cpu.linear_len(n_out, n_in))?;
    if cpu.precision() == Precision::Bf16 {
        small_gemm::pack_bf16_into(&w[..n_out * n_in], n_out, n_in, bf16::as_pairs_mut(dst));
    } else {
        transpose_into(&w[..n_out * n_in], n_out, n_in, &mut dst[..n_out * n_in]);
    }
    Ok(())
}

/// `Backend::linear` on the CPU: one product with the bias (and GELU) in
/// its epilogue, in the backend's precision.
pub(crate) fn forward_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    s: LinearShape,
    epi: Epilogue,
) -> Result<()> {
    let w_len = cpu.linear_len(s.n_out, s.n_in);
    check_forward(x, w, b, &*y, s, w_len, |what, v: &[f32], need| check_len(OP, what, v.len(), need))?;
    let g = Gemm { rows: s.rows, k: s.n_in, n: s.n_out, ld_y: s.n_out, accumulate: epi == Epilogue::Accumulate };
    cpu.product(x, w, y, g, Some((&b[..s.n_out], epi == Epilogue::Gelu)));
    Ok(())
}

/// `Train::linear_gelu_keep` on the CPU: the product (f32, or bf16 with
/// use_amp) with the bias and GELU in its epilogue, storing the values
/// before GELU too.
pub(crate) fn forward_keep_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    pre: &mut [f32],
    y: &mut [f32],
    s: LinearShape,
) -> Result<()> {
    cpu.trainable(KEEP)?;
    let w_len = cpu.linear_len(s.n_out, s.n_in);
    check_forward(x, w, b, &*y, s, w_len, |what, v: &[f32], need| check_len(KEEP, what, v.len(), need))?;
    check_len(KEEP, "pre", pre.len(), s.rows * s.n_out)?;
    if cpu.precision() == Precision::Bf16 {
        let g = Gemm { rows: s.rows, k: s.n_in, n: s.n_out, ld_y: s.n_out, accumulate: false };
        bf16::product_gelu_keep(x, w, b, pre, y, g);
        return Ok(());
    }
    if !small_gemm::f32_available() {
        // Without AVX-512: the product, then the `gelu` op itself.
        forward_cpu(cpu, x, w, b, pre, s, Epilogue::None)?;
        return map_cpu(Map::Gelu, Some(pre), y, s.rows * s.n_out);
    }
    matmul_gelu_keep(x, w, b, pre, y, s);
    Ok(())
}

/// `db[..n] += Σ_r dy[r·ld + off ..][..n]` in fixed row chunks combined in order.
pub(crate) fn col_sums(dy: &[f32], ld: usize, off: usize, rows: usize, n: usize, db: &mut [f32]) {
    if rows == 0 || n == 0 {
        return;
    }
    let chunks = rows.div_ceil(ROW_CHUNK);
    with_scratch(chunks * n, |part| {
        part.par_chunks_mut(n).enumerate().for_each(|(c, acc)| {
            acc.fill(0.0);
            for r in c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(rows) {
                acc.iter_mut().zip(&dy[r * ld + off..r * ld + off + n]).for_each(|(a, v)| *a += v);
            }
        });
        for acc in part.chunks(n) {
            db[..n].iter_mut().zip(acc).for_each(|(d, a)| *d += a);
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn backward_rows(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    rows: usize,
    n_in: usize,
    n_out: usize,
    accumulate_dx: bool,
    bf16_products: bool,
) {
    // dW (n_out, n_in) += dyᵀ · x in two halves of the rows, one per core,
    // added in order: split by columns instead, each of n_in/64 blocks
    // packed all of dyᵀ again.
    add_weight_grad(dy, n_out, x, n_in, rows, dw, (n_out, n_in), bf16_products);
    match dx {
        // use_amp: dX = dy · W in bf16 products, W's consecutive rows paired.
        Some(dx) if bf16_products => bf16::with_weight_pairs(n_out.div_ceil(2) * n_in, |wp| {
            small_gemm::pack_row_pairs(w, n_out, n_in, n_in, wp);
            let g = Gemm { rows, k: n_out, n: n_in, ld_y: n_in, accumulate: accumulate_dx };
            bf16::product_rows(dy, n_out, wp, dx, g, true);
        }),
        // dX (rows, n_in) = dy · W: small_gemm's product, W read as the
        // forward's right-hand operand is, each output summed in order.
        Some(dx) => {
            // SAFETY: dy (rows, n_out), w (n_out, n_in), dx (rows, n_in),
            // checked by the caller; distinct buffers.
            unsafe {
                rows_product(
                    rows,
                    n_in,
                    n_out,
                    Dst::new(dx.as_mut_ptr(), n_in, accumulate_dx),
                    View::rows(dy.as_ptr(), n_out),
                    View::rows(w.as_ptr(), n_in),
                    true,
                )
            }
        }
        None => {}
    }
    if let Some(db) = db {
        col_sums(dy, n_out, 0, rows, n_out, db);
    }
}

/// `Train::linear_backward` on the CPU (`w` the f32 master copy): with
/// use_amp (a bf16 backend) `dx` and `dw` from bf16 products.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut Vec<f32>>,
    dw: &mut [f32],
    db: Option<&mut Vec<f32>>,
    s: LinearShape,
    accumulate_dx: bool,
) -> Result<()> {
    cpu.trainable("linear_backward")?;
    let (dx, db) = (dx.map(|v| v.as_mut_slice()), db.map(|v| v.as_mut_slice()));
    check_backward(x, w, dy, dx.as_deref(), &*dw, db.as_deref(), s, |what, v: &[f32], need| {
        check_len("linear_backward", what, v.len(), need)
    })?;
    let bf16_products = cpu.precision() == Precision::Bf16;
    backward_rows(x, w, dy, dx, dw, db, s.rows, s.n_in, s.n_out, accumulate_dx, bf16_products);
    Ok(())
}

/// `Train::bias_backward` on the CPU.
pub(crate) fn bias_backward_cpu(dy: &[f32], db: &mut [f32], rows: usize, n: usize) -> Result<()> {
    check_bias(dy, &*db, rows, n, |what, v: &[f32], need| check_len("bias_backward", what, v.len(), need))?;
    col_sums(dy, n, 0, rows, n, db);
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/linear.cu` LinearParams (epilogue 0 none, 1 GELU, 2 accumulate)
    LinearParams => Linear { x: u64, w: u64, b: u64, y: u64, rows: i32, n_in: i32, n_out: i32, epilogue: i32 }
);
twin!(Bf16, LinearParams => LinearBf16);
twin!(F16, LinearParams => LinearF16);
twin!(Int8, LinearParams => LinearInt8);

params!(
    /// `kernels/linear.cu` LinearDwParams: `dw (n_out, n_in) += dyᵀ x`.
    LinearDwParams => LinearDw { x: u64, dy: u64, dw: u64, rows: i32, n_in: i32, n_out: i32 }
);
params!(
    /// `kernels/linear.cu` LinearDxParams: `dx = dy W` (`+=` when `accumulate`).
    LinearDxParams => LinearDx { dy: u64, w: u64, dx: u64, rows: i32, n_in: i32, n_out: i32, accumulate: i32 }
);
params!(
    /// `kernels/linear.cu` BiasPartialsParams: `part (chunks, n)` column sums of row chunks.
    BiasPartialsParams => BiasPartials { dy: u64, part: u64, rows: i32, n: i32, chunk: i32, _pad: i32 }
);
params!(
    /// `kernels/linear.cu` BiasFinishParams: `db += Σ_chunks part` in chunk order.
    BiasFinishParams => BiasFinish { part: u64, db: u64, chunks: i32, n: i32 }
);
params!(
    /// `kernels/linear.cu` PackHalfParams (kind 0 bf16, 1 f16)
    PackHalfParams => PackHalf { src: u64, dst: u64, n_out: i32, n_in: i32, kind: i32 }
);

/// Rows per partial sum of the bias backward: the CPU's chunk (`ROW_CHUNK`,
/// `col_sums`), so both sum in the same order and agree bit for bit.
const BIAS_ROW_CHUNK: usize = 64;
const BIAS_THREADS: u32 = 256;

/// quorum_bias_partials: a thread per (column, chunk of rows).
pub fn bias_partials_cfg(n: usize, chunks: usize) -> Result<LaunchConfig> {
    cfg([n.div_ceil(BIAS_THREADS as usize).max(1), chunks.max(1), 1], BIAS_THREADS, 0)
}

/// `Backend::prepare_linear` on a `Gpu`: the transpose `(n_in, n_out)` at
/// f32; in 16 bits PyTorch's `(n_out, n_in)` layout, k padded to even, two
/// values per 32-bit slot (low half first), gemm_tile_mma's B words; in
/// int8, `pack_int8_gpu`.
pub(crate) fn prepare_gpu<D: Device>(gpu: &Gpu<D>, w: &[f32], n_out: usize, n_in: usize) -> Result<D::Mem> {
    gpu.check_len("prepare_linear", "w", w.len(), n_out * n_in)?;
    let precision = gpu.precision();
    let bits: fn(f32) -> u32 = match precision {
        Precision::F32 => |_| 0,
        Precision::Bf16 => |v| u32::from(half::bf16::from_f32(v).to_bits()),
        Precision::F16 => |v| u32::from(half::f16::from_f32(v).to_bits()),
        Precision::Int8 => {
            if let Some(reason) = int8::too_deep(n_in) {
                return Err(gpu.err(format!("prepare_linear: {reason}")));
            }
            return gpu.device().upload(&pack_int8_gpu(&w[..n_out * n_in], n_out, n_in));
        }
    };
    if precision != Precision::F32 {
        // PyTorch's (n_out, n_in) layout, k padded to even, two 16-bit
        // values per 32-bit slot (low half first): gemm_tile_mma's B words.
        let words = n_in.div_ceil(2);
        let mut packed = vec![0f32; n_out * words];
        for o in 0..n_out {
            for j in 0..words {
                let lo = bits(w[o * n_in + 2 * j]);
                let hi = if 2 * j + 1 < n_in { bits(w[o * n_in + 2 * j + 1]) } else { 0 };
                packed[o * words + j] = f32::from_bits(lo | hi << 16);
            }
        }
        return gpu.device().upload(&packed);
    }
    let mut t = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        for i in 0..n_in {
            t[i * n_out + o] = w[o * n_in + i];
        }
    }
    gpu.device().upload(&t)
}

/// gemm_tile_int8.cuh's weight: PyTorch's `(n_out, n_in)` rows quantized
/// per output channel as the CPU's int8 mode quantizes them
/// (`int8::quantize_channels`), four consecutive inputs' signed bytes to a
/// 32-bit word (the lowest input in the lowest byte, zeros past `n_in`),
/// then the `n_out` scales, then the `n_out` sums of each row's quantized
/// values.
pub(crate) fn pack_int8_gpu(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    let words = n_in.div_ceil(4);
    let mut out = vec![0u32; n_out * words + 2 * n_out];
    let (scales, sums) =
        int8::quantize_channels(w, n_out, n_in, |o, i, byte| out[o * words + i / 4] |= byte << (8 * (i % 4)));
    for o in 0..n_out {
        out[n_out * words + o] = scales[o].to_bits();
        out[n_out * words + n_out + o] = sums[o] as u32;
    }
    out.into_iter().map(f32::from_bits).collect()
}

/// `Train::prepare_linear_from` on a `Gpu`: `prepare_linear`'s layout for
/// this backend's precision, from a weight on the device: the transpose at
/// f32 (`swap_last_axes`), packed 16-bit pairs otherwise (`quorum_pack_half`).
pub(crate) fn prepare_from_gpu<D: Device>(
    gpu: &Gpu<D>,
    w: &D::Mem,
    n_out: usize,
    n_in: usize,
    dst: &mut D::Mem,
) -> Result<()> {
    let op = "prepare_linear_from";
    let kind = match gpu.precision() {
        Precision::F32 => return swap_last_axes::swap_gpu(gpu, op, w, dst, 1, n_out, n_in, false),
        Precision::Bf16 => 0,
        Precision::F16 => 1,
        Precision::Int8 => {
            return Err(
                gpu.err(format!("{op}: training runs in f32, bf16 or f16; an int8 backend serves inference only"))
            )
        }
    };
    gpu.check(op, "w", w, n_out * n_in)?;
    gpu.check(op, "dst", dst, gpu.weight_len(n_out, n_in))?;
    if n_out * n_in == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    let p = PackHalfParams {
        src: dev.ptr(w),
        dst: dev.ptr_mut(dst),
        n_out: gpu.int(op, n_out)?,
        n_in: gpu.int(op, n_in)?,
        kind,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(launch::elementwise(gpu.weight_len(n_out, n_in))?, &p) }
}

/// `Train::linear_gelu_keep` on a `Gpu`: the product into `pre`, then GELU
/// into `y` (two launches).
pub(crate) fn forward_keep_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    b: &D::Mem,
    pre: &mut D::Mem,
    y: &mut D::Mem,
    s: LinearShape,
) -> Result<()> {
    gpu.check(KEEP, "y", y, s.rows * s.n_out)?;
    forward_gpu(gpu, x, w, b, pre, s, Epilogue::None)?;
    map_gpu(gpu, Map::Gelu, Some(pre), y, s.rows * s.n_out)
}

/// `Backend::linear` on a `Gpu`: one launch of `quorum_linear` (or its
/// 16-bit twin).
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    b: &D::Mem,
    y: &mut D::Mem,
    s: LinearShape,
    epi: Epilogue,
) -> Result<()> {
    let w_len = gpu.weight_len(s.n_out, s.n_in);
    check_forward(x, w, b, &*y, s, w_len, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let p = LinearParams {
        x: dev.ptr(x),
        w: dev.ptr(w),
        b: dev.ptr(b),
        y: dev.ptr_mut(y),
        rows: gpu.int(OP, s.rows)?,
        n_in: gpu.int(OP, s.n_in)?,
        n_out: gpu.int(OP, s.n_out)?,
        epilogue: match epi {
            Epilogue::None => 0,
            Epilogue::Gelu => 1,
            Epilogue::Accumulate => 2,
        },
    };
    gpu.launch_gemm(s.rows, s.n_out, 1, p)
}

/// `Train::linear_backward` on a `Gpu`: `quorum_linear_dw`, then
/// `quorum_linear_dx` when `dx` is asked for, then the bias as a column sum
/// (`quorum_column_sum`, backend/ops/column_sum.rs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    dy: &D::Mem,
    dx: Option<&mut D::Mem>,
    dw: &mut D::Mem,
    db: Option<&mut D::Mem>,
    s: LinearShape,
    accumulate_dx: bool,
) -> Result<()> {
    let op = "linear_backward";
    check_backward(x, w, dy, dx.as_deref(), &*dw, db.as_deref(), s, |what, m, need| gpu.check(op, what, m, need))?;
    let dev = gpu.device();
    let (rows, n_in, n_out) = (gpu.int(op, s.rows)?, gpu.int(op, s.n_in)?, gpu.int(op, s.n_out)?);
    if s.rows > 0 {
        let p = LinearDwParams { x: dev.ptr(x), dy: dev.ptr(dy), dw: dev.ptr_mut(dw), rows, n_in, n_out };
        launch_nonempty(gpu, launch::gemm(s.n_out, s.n_in, 1)?, &p)?;
    }
    if let Some(dx) = dx {
        let p = LinearDxParams {
            dy: dev.ptr(dy),
            w: dev.ptr(w),
            dx: dev.ptr_mut(dx),
            rows,
            n_in,
            n_out,
            accumulate: i32::from(accumulate_dx),
        };
        launch_nonempty(gpu, launch::gemm(s.rows, s.n_in, 1)?, &p)?;
    }
    if let Some(db) = db {
        column_sum::sum_gpu(gpu, op, dy, db, ColumnSum::rows(s.n_out, s.rows, s.n_out, 0))?;
    }
    Ok(())
}

/// `Train::bias_backward` on a `Gpu`: two launches in the CPU's order (row
/// chunks of 64 summed from zero, then added into `db` in chunk order), the
/// partials in the backend's scratch buffer: the same bits as the CPU.
pub(crate) fn bias_backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    dy: &D::Mem,
    db: &mut D::Mem,
    rows: usize,
    n: usize,
) -> Result<()> {
    check_bias(dy, &*db, rows, n, |what, m, need| gpu.check("bias_backward", what, m, need))?;
    let chunks = rows.div_ceil(BIAS_ROW_CHUNK);
    let (rows_i, n_i, chunks_i) =
        (gpu.int("bias_backward", rows)?, gpu.int("bias_backward", n)?, gpu.int("bias_backward", chunks)?);
    if chunks == 0 || n == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    gpu.with_scratch(chunks * n, |part| {
        let p1 = BiasPartialsParams {
            dy: dev.ptr(dy),
            part: dev.ptr_mut(part),
            rows: rows_i,
            n: n_i,
            chunk: BIAS_ROW_CHUNK as i32,
            _pad: 0,
        };
        let p2 = BiasFinishParams { part: dev.ptr(part), db: dev.ptr_mut(db), chunks: chunks_i, n: n_i };
        // SAFETY: dy and db checked above; the scratch holds chunks·n values.
        unsafe {
            dev.launch(bias_partials_cfg(n, chunks)?, &p1)?;
            dev.launch(launch::elementwise(n)?, &p2)
        }
    })
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<LinearParams>(),
        c_size_agrees::<Bf16<LinearParams>>(),
        c_size_agrees::<F16<LinearParams>>(),
        c_size_agrees::<Int8<LinearParams>>(),
        c_size_agrees::<LinearDwParams>(),
        c_size_agrees::<LinearDxParams>(),
        c_size_agrees::<BiasPartialsParams>(),
        c_size_agrees::<BiasFinishParams>(),
        c_size_agrees::<PackHalfParams>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{
        added, assert_close, assert_matches_finite_differences, data, emulator_gives_the_cpus_bits, read, read_close,
        same_bits_in_every_order, wide,
    };
    use crate::backend::{Backend, Train};

    /// (rows, n_in, n_out): one value, odd sizes around the tiles, a wide
    /// output, no rows.
    const SHAPES: [(usize, usize, usize); 5] = [(1, 3, 5), (7, 33, 17), (49, 64, 96), (3, 130, 40), (0, 4, 6)];

    fn shape((rows, n_in, n_out): (usize, usize, usize)) -> LinearShape {
        LinearShape { rows, n_in, n_out }
    }

    /// The forward with each epilogue, against the reference.
    fn forward_matches_the_reference<B: Backend>(be: &B, what: &str) {
        for (i, &sh) in SHAPES.iter().enumerate() {
            let s = shape(sh);
            let seed = 10 * i as u64;
            let (x, w, b) =
                (data(s.rows * s.n_in, seed, 1.0), data(s.n_out * s.n_in, seed + 1, 0.5), data(s.n_out, seed + 2, 1.0));
            let y0 = data(s.rows * s.n_out, seed + 3, 1.0);
            let wp = be.prepare_linear(&w, s.n_out, s.n_in).unwrap();
            for epi in [Epilogue::None, Epilogue::Gelu, Epilogue::Accumulate] {
                let mut y = be.upload(&y0).unwrap();
                be.linear(&be.upload(&x).unwrap(), &wp, &be.upload(&b).unwrap(), &mut y, s, epi).unwrap();
                let want = reference_forward(&wide(&x), &wide(&w), &wide(&b), &wide(&y0), s, epi);
                assert_close(&format!("{what} {sh:?} {epi:?}"), &read(be, &y, s.rows * s.n_out), &want);
            }
        }
    }

    /// The backward (dx written and added, db asked for) against the
    /// reference; the bits of every gradient, for the emulator comparison.
    fn backward_matches_the_reference<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (i, &sh) in SHAPES.iter().enumerate() {
            let s = shape(sh);
            let seed = 20 * i as u64;
            let (x, w, dy) = (
                data(s.rows * s.n_in, seed, 1.0),
                data(s.n_out * s.n_in, seed + 1, 0.5),
                data(s.rows * s.n_out, seed + 2, 1.0),
            );
            let (dx0, dw0, db0) = (
                data(s.rows * s.n_in, seed + 3, 1.0),
                data(s.n_out * s.n_in, seed + 4, 1.0),
                data(s.n_out, seed + 5, 1.0),
            );
            let g = reference_backward(&wide(&x), &wide(&w), &wide(&dy), s);
            for accumulate_dx in [false, true] {
                let (mut dx, mut dw, mut db) =
                    (be.upload(&dx0).unwrap(), be.upload(&dw0).unwrap(), be.upload(&db0).unwrap());
                let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap(), be.upload(&dy).unwrap());
                be.linear_backward(&xb, &wb, &dyb, Some(&mut dx), &mut dw, Some(&mut db), s, accumulate_dx).unwrap();
                let want_dx = if accumulate_dx { added(&dx0, &g.dx) } else { g.dx.clone() };
                let tag = format!("{what} {sh:?} accumulate_dx {accumulate_dx}");
                bits.push(read_close(be, &dx, &format!("{tag} dx"), &want_dx));
                bits.push(read_close(be, &dw, &format!("{tag} dw"), &added(&dw0, &g.dw)));
                bits.push(read_close(be, &db, &format!("{tag} db"), &added(&db0, &g.db)));
            }
        }
        bits
    }

    /// The bias backward on `be` (rows across several 64-row chunks) against
    /// the reference; its bits.
    fn bias_backward_bits<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut bits = Vec::new();
        for (rows, n) in [(1, 3), (64, 17), (200, 40), (0, 5)] {
            let (dy, db0) = (data(rows * n, rows as u64, 1.0), data(n, 7, 1.0));
            let mut db = be.upload(&db0).unwrap();
            be.bias_backward(&be.upload(&dy).unwrap(), &mut db, rows, n).unwrap();
            let s = LinearShape { rows, n_in: 0, n_out: n };
            let want = added(&db0, &reference_backward(&[], &[], &wide(&dy), s).db);
            bits.push(read_close(be, &db, &format!("{what} bias ({rows}, {n})"), &want));
        }
        bits
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        let s = LinearShape { rows: 3, n_in: 4, n_out: 5 };
        let wide_data = |n, seed| wide(&data(n, seed, 1.0));
        let (x, w, b, dy) = (wide_data(12, 1), wide_data(20, 2), wide_data(5, 3), wide_data(15, 4));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            reference_forward(x, w, b, &[], s, Epilogue::None).iter().zip(&dy).map(|(y, d)| y * d).sum()
        };
        let g = reference_backward(&x, &w, &dy, s);
        assert_matches_finite_differences("dx", &x, &g.dx, &|v| loss(v, &w, &b));
        assert_matches_finite_differences("dw", &w, &g.dw, &|v| loss(&x, v, &b));
        assert_matches_finite_differences("db", &b, &g.db, &|v| loss(&x, &w, v));
    }

    #[test]
    fn cpu_matches_the_reference() {
        forward_matches_the_reference(&Cpu::new(), "cpu");
        backward_matches_the_reference(&Cpu::new(), "cpu");
    }

    #[test]
    fn emulator_matches_the_reference_in_every_thread_order() {
        same_bits_in_every_order(|emu, what| {
            forward_matches_the_reference(emu, what);
            backward_matches_the_reference(emu, what)
        });
    }

    #[test]
    fn the_bias_backward_gives_the_cpus_bits_on_the_emulator() {
        emulator_gives_the_cpus_bits(&bias_backward_bits(&Cpu::new(), "cpu"), bias_backward_bits);
    }

    #[test]
    fn linear_matches_naive_at_awkward_sizes() {
        // Moved from cpu/mod.rs: the f32 CPU at the models' sizes.
        let data = |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect::<Vec<f32>>();
        let be = Cpu::new();
        for &(rows, n_in, n_out) in &[(1, 3, 5), (7, 33, 17), (49, 256, 768), (3, 1024, 40)] {
            let (x, w, b) = (data(rows * n_in, 1.0), data(n_out * n_in, 2.0), data(n_out, 3.0));
            let wp = be.prepare_linear(&w, n_out, n_in).unwrap();
            let mut y = data(rows * n_out, 4.0);
            let y0 = y.clone();
            let shape = LinearShape { rows, n_in, n_out };
            be.linear(&x, &wp, &b, &mut y, shape, Epilogue::Accumulate).unwrap();
            for r in 0..rows {
                for o in 0..n_out {
                    let want: f32 =
                        y0[r * n_out + o] + b[o] + (0..n_in).map(|i| x[r * n_in + i] * w[o * n_in + i]).sum::<f32>();
                    let got = y[r * n_out + o];
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{rows}x{n_in}x{n_out} ({r},{o}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let s = LinearShape { rows: 2, n_in: 3, n_out: 4 };
            let z = |n: usize| be.alloc(n).unwrap();
            let err = be.prepare_linear(&[0.5; 11], 4, 3).err().expect("a short weight").to_string();
            assert!(err.contains("prepare_linear: buffer w holds 11 values, needs 12"), "{}: {err}", be.name());
            let w = be.prepare_linear(&[0.5; 12], 4, 3).unwrap();
            // The forward: x, b, y one short (w's length depends on the precision).
            for (i, what) in [(0, "x"), (2, "b"), (3, "y")] {
                let mut n = [6, 0, 4, 8];
                n[i] -= 1;
                let err = be.linear(&z(n[0]), &w, &z(n[2]), &mut z(n[3]), s, Epilogue::None).unwrap_err().to_string();
                assert!(err.contains(&format!("linear: buffer {what} ")), "{}: {err}", be.name());
            }
            // The backward: every buffer one short.
            for (i, what) in ["x", "w", "dy", "dw", "dx", "db"].into_iter().enumerate() {
                let mut n = [6, 12, 8, 12, 6, 4];
                n[i] -= 1;
                let (mut dw, mut dx, mut db) = (z(n[3]), z(n[4]), z(n[5]));
                let err = be
                    .linear_backward(&z(n[0]), &z(n[1]), &z(n[2]), Some(&mut dx), &mut dw, Some(&mut db), s, false)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&format!("linear_backward: buffer {what} ")), "{}: {err}", be.name());
            }
            for (i, what) in ["dy", "db"].into_iter().enumerate() {
                let mut n = [8, 4];
                n[i] -= 1;
                let err = be.bias_backward(&z(n[0]), &mut z(n[1]), 2, 4).unwrap_err().to_string();
                assert!(err.contains(&format!("bias_backward: buffer {what} ")), "{}: {err}", be.name());
            }
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn launch_rules() {
        // Moved from gpu/train/bias.rs and gpu/train/gemm.rs.
        assert_eq!(bias_partials_cfg(300, 27).unwrap().grid, [2, 27, 1]);
        assert!(bias_partials_cfg(8, 70_000).is_err(), "grid.y above 65535");
        // From gpu/train/gemm.rs: dW of a 768×256 linear: 12×4 tiles of the (n_out, n_in) output.
        assert_eq!(launch::gemm(768, 256, 1).unwrap().grid, [4, 12, 1]);
    }

    #[test]
    fn the_parameter_struct_has_the_c_layout() {
        // Moved from gpu/params.rs: pointers 8 bytes, ints 4.
        assert_eq!(std::mem::size_of::<LinearParams>(), 48);
    }

    #[test]
    fn an_int8_cpu_refuses_the_training_ops_that_read_prepared_weights() {
        // use_amp trains on a bf16 CPU; an int8 one serves inference only.
        for p in [Precision::Int8] {
            let Ok(be) = Cpu::with_precision(p) else {
                eprintln!("skipped {p:?}: not on this CPU");
                continue;
            };
            let w = vec![0.5f32; 12];
            let mut dst = vec![0f32; 12];
            let e = be.prepare_linear_from(&w, 3, 4, &mut dst).unwrap_err().to_string();
            assert!(e.contains("prepare_linear_from") && e.contains("f32") && e.contains(p.name()), "{e}");
            assert_eq!(dst, vec![0f32; 12], "a refused op changes nothing");
            let (x, dy, mut dw) = (vec![0.5f32; 8], vec![0.5f32; 6], vec![0f32; 12]);
            let s = LinearShape { rows: 2, n_in: 4, n_out: 3 };
            let e = be.linear_backward(&x, &w, &dy, None, &mut dw, None, s, false).unwrap_err().to_string();
            assert!(e.contains("linear_backward") && e.contains("f32"), "{e}");
        }
    }

    /// `linear_gelu_keep` stores what `linear` (no epilogue) then `gelu`
    /// store, bit for bit.
    fn gelu_keep_is_the_product_then_gelu<B: Train>(be: &B, what: &str) {
        for (i, &sh) in SHAPES.iter().enumerate() {
            let s = shape(sh);
            let seed = 40 * i as u64;
            let (x, w, b) =
                (data(s.rows * s.n_in, seed, 2.0), data(s.n_out * s.n_in, seed + 1, 0.5), data(s.n_out, seed + 2, 1.0));
            let (xb, wp, bb) =
                (be.upload(&x).unwrap(), be.prepare_linear(&w, s.n_out, s.n_in).unwrap(), be.upload(&b).unwrap());
            let n = s.rows * s.n_out;
            let (mut pre_want, mut y_want) = (be.alloc(n.max(1)).unwrap(), be.alloc(n.max(1)).unwrap());
            be.linear(&xb, &wp, &bb, &mut pre_want, s, Epilogue::None).unwrap();
            be.gelu(&pre_want, &mut y_want, n).unwrap();
            let (mut pre, mut y) = (be.alloc(n.max(1)).unwrap(), be.alloc(n.max(1)).unwrap());
            be.linear_gelu_keep(&xb, &wp, &bb, &mut pre, &mut y, s).unwrap();
            assert_eq!(bits(&read(be, &pre, n)), bits(&read(be, &pre_want, n)), "{what} {sh:?}: pre");
            assert_eq!(bits(&read(be, &y, n)), bits(&read(be, &y_want, n)), "{what} {sh:?}: y");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn gelu_keep_is_the_product_then_gelu_on_the_cpu_and_the_emulator() {
        gelu_keep_is_the_product_then_gelu(&Cpu::new(), "cpu");
        gelu_keep_is_the_product_then_gelu(&Gpu::new(Emu::new()), "emu");
        // use_amp's bf16 products keep as f32's do.
        if let Ok(be) = Cpu::with_precision(Precision::Bf16) {
            gelu_keep_is_the_product_then_gelu(&be, "cpu bf16");
        }
        // An int8 backend serves inference only.
        if let Ok(be) = Cpu::with_precision(Precision::Int8) {
            let s = LinearShape { rows: 2, n_in: 4, n_out: 3 };
            let wp = be.prepare_linear(&[0.5f32; 12], 3, 4).unwrap();
            let (mut pre, mut y) = (vec![7f32; 6], vec![7f32; 6]);
            let e = be.linear_gelu_keep(&vec![0.5f32; 8], &wp, &vec![0f32; 3], &mut pre, &mut y, s).unwrap_err();
            assert!(e.to_string().contains("linear_gelu_keep") && e.to_string().contains("int8"), "{e}");
            assert_eq!((pre, y), (vec![7f32; 6], vec![7f32; 6]), "a refused op changes nothing");
        }
    }

    #[test]
    fn int8_refuses_a_weight_deeper_than_its_sums_hold_on_the_cpu_and_the_gpu() {
        let n_in = int8::MAX_DEPTH + 1;
        let w = vec![0.5f32; n_in];
        if let Ok(be) = Cpu::with_precision(Precision::Int8) {
            let e = be.prepare_linear(&w, 1, n_in).unwrap_err().to_string();
            assert!(e.contains("prepare_linear") && e.contains(&n_in.to_string()), "{e}");
        }
        let gpu = Gpu::with_precision(Emu::new(), Precision::Int8).unwrap();
        let e = gpu.prepare_linear(&w, 1, n_in).expect_err("refused").to_string();
        assert!(e.contains("prepare_linear") && e.contains(&n_in.to_string()) && e.contains("emu"), "{e}");
        assert!(gpu.prepare_linear(&w[..n_in - 1], 1, n_in - 1).is_ok(), "the deepest allowed product");
    }

    /// An int8 GPU serves inference only: the training op that re-derives a
    /// prepared weight says so, and leaves its destination as it was.
    #[test]
    fn an_int8_gpu_refuses_to_prepare_weights_for_training() {
        let gpu = Gpu::with_precision(Emu::new(), Precision::Int8).unwrap();
        let w = gpu.upload(&[0.5f32; 12]).unwrap();
        let mut dst = gpu.upload(&[7f32; 12]).unwrap();
        let e = gpu.prepare_linear_from(&w, 3, 4, &mut dst).unwrap_err().to_string();
        assert!(e.contains("prepare_linear_from") && e.contains("int8") && e.contains("inference"), "{e}");
        assert_eq!(read(&gpu, &dst, 12), vec![7f32; 12], "a refused op changes nothing");
    }

    /// The GPU's int8 weight: four inputs a word, lowest input in the lowest
    /// byte, zeros past `n_in`, then each row's scale and the sum of its
    /// quantized values (what the zero points are taken off with).
    #[test]
    fn the_gpus_int8_weight_layout() {
        // Row 0: max |w| = 1.27, so q = w · 100; row 1 all zeros.
        let w = [0.01f32, -0.02, 1.27, -1.27, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let packed: Vec<u32> = pack_int8_gpu(&w, 2, 5).into_iter().map(f32::to_bits).collect();
        let bytes = |q: [i8; 4]| u32::from_le_bytes(q.map(|v| v as u8));
        assert_eq!(packed.len(), 2 * 2 + 2 * 2);
        assert_eq!(packed[..4], [bytes([1, -2, 127, -127]), bytes([50, 0, 0, 0]), 0, 0]);
        assert_eq!(f32::from_bits(packed[4]), 1.27 / 127.0);
        assert_eq!(f32::from_bits(packed[5]), 0.0);
        assert_eq!(packed[6..], [49u32, 0]);
    }

    /// Each row's output, computed alone, has the bits it has inside a
    /// batch: what batching symbols into one forward, and a TLOB tick that
    /// recomputes only its newest snapshot, both rely on.
    fn rows_are_independent<B: Backend>(be: &B, what: &str, shapes: &[(usize, usize)]) {
        let rows = 100;
        for &(n_in, n_out) in shapes {
            let (x, w, b) = (data(rows * n_in, 1, 1.0), data(n_out * n_in, 2, 0.5), data(n_out, 3, 1.0));
            let (wp, bb) = (be.prepare_linear(&w, n_out, n_in).unwrap(), be.upload(&b).unwrap());
            let mut y = be.alloc(rows * n_out).unwrap();
            be.linear(&be.upload(&x).unwrap(), &wp, &bb, &mut y, LinearShape { rows, n_in, n_out }, Epilogue::Gelu)
                .unwrap();
            let all = read(be, &y, rows * n_out);
            for r in [0, 1, 63, 64, 99] {
                let mut y1 = be.alloc(n_out).unwrap();
                let x1 = be.upload(&x[r * n_in..(r + 1) * n_in]).unwrap();
                be.linear(&x1, &wp, &bb, &mut y1, LinearShape { rows: 1, n_in, n_out }, Epilogue::Gelu).unwrap();
                let alone = read(be, &y1, n_out);
                assert!(
                    alone.iter().zip(&all[r * n_out..]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what} {n_in}->{n_out}: row {r} alone differs from the batch"
                );
            }
        }
    }

    #[test]
    fn a_rows_output_has_the_same_bits_alone_or_in_a_batch() {
        // TLOB's spatial projection (2560 -> 128) and an MPD-sized layer.
        let shapes = [(2560, 128), (256, 768)];
        rows_are_independent(&Cpu::new(), "cpu f32", &shapes);
        for p in [Precision::Bf16, Precision::Int8] {
            if let Ok(be) = Cpu::with_precision(p) {
                rows_are_independent(&be, &format!("cpu {p:?}"), &shapes);
            }
        }
        for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
            rows_are_independent(&Gpu::with_precision(Emu::new(), p).unwrap(), &format!("emu {p:?}"), &[(160, 96)]);
        }
    }
}
