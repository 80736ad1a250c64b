//! The "same", stride-1 Conv1d over channels-last sequences
//! (`x (samples, len, c_in)` → `y (samples, len, out_stride)`, the `c_out`
//! channels at column `out_offset`), the multi-scale conv (several such
//! convs over one input, each then GELU, concatenated on channels), the
//! weight preparation and the backward.
//!
//! Every piece of the op but its signatures (`Backend::conv1d`,
//! `Backend::multiscale_conv`, `Backend::prepare_conv`,
//! `Train::conv1d_gelu_keep`, `Train::conv1d_backward`) and its kernels
//! (`kernels/conv1d.cu`):
//! - the shape checks, one list per call for both backends;
//! - the reference, plain f64 loops over the taps, forward and backward;
//! - the CPU: the f32 forward as `k` row-shifted products summed in
//!   registers (`conv_taps` over `cpu/small_gemm.rs`'s micro-kernel), or
//!   im2col and one product where AVX-512 is missing (`conv1d_gelu_keep`,
//!   the training forward, the same products storing both sides of GELU;
//!   on the GPU the conv then `gelu`); the bf16 forward over
//!   tap-major bf16 pairs (`pack_bf16`); the backward as tap products
//!   too (`backward_taps`: the input gradient on the forward's kernel, the
//!   weight gradient one product over padded rows), or over the im2col
//!   matrix then col2im where AVX-512 is missing;
//! - the GPU: the parameter structs (`ConvParams` with up to four
//!   `ConvBranch`es, its bf16/f16 twins, `ConvDwParams`, `ConvDxParams`)
//!   and every launch (the GEMM tiles' rules are `gpu/launch.rs`'s, shared
//!   with the linear layer and the patch embedding); the bias gradient is a
//!   column sum (`ops/column_sum.rs`);
//! - the tests: the CPU (f32 and bf16) and the emulator against the
//!   reference, the multi-scale conv against its branches, the refused
//!   sizes and shapes, the struct layouts.
//!
//! Also exercised from `tests/`: `kernels_emu` (the forward on every
//! precision and the multi-scale conv against the CPU), `train_kernels_emu`
//! (`conv1d_backward_shapes`, gradients bit-identical across runs),
//! `train_grads` (against finite differences) and `bit_lock`.

use rayon::prelude::*;

use super::column_sum::{self, ColumnSum};
use super::elementwise::{map_cpu, map_gpu, Map};
use super::linear::col_sums;
use crate::backend::cpu::small_gemm::{self, Bias, Dequant, Elem, Lhs, Operand, Output, Product, Taps};
use crate::backend::cpu::{
    bf16, check_len, gemm_depth_halves, gemm_strided, int8, matmul, refuse, run_product, simd, split_chunks,
    with_scratch, Cpu, Dst, Gemm, View, PAR_MIN_ELEMS, PAR_MIN_MACS,
};
use crate::backend::gpu::params::{twin, Bf16, Int8, KernelParams, F16};
use crate::backend::gpu::{launch, launch_nonempty, params::params, Device, Gpu};
use crate::backend::{ConvShape, ConvWeights, Precision};
use crate::error::{Error, Result};

const OP: &str = "conv1d";
const MULTI: &str = "multiscale_conv";
const BACKWARD: &str = "conv1d_backward";
const KEEP: &str = "conv1d_gelu_keep";

// ------------------------------------------------------------------ shapes

/// The channels fit the output row and the kernel is odd ("same" padding
/// is `k/2` on both sides).
fn consistent(s: ConvShape) -> std::result::Result<(), String> {
    if s.out_offset + s.c_out > s.out_stride || s.kernel.is_multiple_of(2) {
        return Err(format!("inconsistent shape {s:?}"));
    }
    Ok(())
}

/// The forward's buffers and the values each must hold, checked in this
/// order; `w_len` is the prepared weight's length in the backend's layout.
fn check_forward<B: ?Sized>(
    x: &B,
    w: &B,
    b: &B,
    y: &B,
    s: ConvShape,
    w_len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check("x", x, s.samples * s.len * s.c_in)?;
    check("w", w, w_len)?;
    check("b", b, s.c_out)?;
    check("y", y, s.samples * s.len * s.out_stride)
}

/// The backward's buffers (`w` PyTorch's `(c_out, c_in, k)`), checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    x: &B,
    w: &B,
    dy: &B,
    dx: Option<&B>,
    dw: &B,
    db: &B,
    s: ConvShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let rows = s.samples * s.len;
    check("x", x, rows * s.c_in)?;
    check("w", w, s.c_out * s.c_in * s.kernel)?;
    check("dy", dy, rows * s.out_stride)?;
    check("dw", dw, s.c_out * s.c_in * s.kernel)?;
    check("db", db, s.c_out)?;
    if let Some(dx) = dx {
        check("dx", dx, rows * s.c_in)?;
    }
    Ok(())
}

/// Each branch of a multi-scale conv maps `dim` to `dim` channels with an
/// odd kernel (else `refuse` makes the error), and its buffers hold what it
/// needs (`w_len(kernel)` for its prepared weight).
fn check_branches<B: crate::backend::Backend + ?Sized>(
    branches: &[ConvWeights<B>],
    dim: usize,
    w_len: impl Fn(usize) -> usize,
    check: impl Fn(&str, &B::Buf, usize) -> Result<()>,
    refuse: impl Fn(String) -> Error,
) -> Result<()> {
    for br in branches {
        if br.c_in != dim || br.c_out != dim || br.kernel.is_multiple_of(2) {
            return Err(refuse(format!(
                "branch ({}, {}, k {}) does not map {dim} to {dim} channels with an odd kernel",
                br.c_in, br.c_out, br.kernel
            )));
        }
        check("branch w", &br.w, w_len(br.kernel))?;
        check("branch b", &br.b, dim)?;
    }
    Ok(())
}

/// Branch `i` of a multi-scale conv over `(samples, len, dim)` with `count` branches.
fn branch_shape(samples: usize, len: usize, dim: usize, kernel: usize, i: usize, count: usize) -> ConvShape {
    ConvShape { samples, len, c_in: dim, c_out: dim, kernel, out_stride: count * dim, out_offset: i * dim }
}

// --------------------------------------------------------------- reference

/// The conv on plain vectors, `w` PyTorch's `(c_out, c_in, k)`: `y (rows,
/// c_out)`, then GELU when asked (the elementwise op's reference). Only the
/// conv's own channels: the caller places them at `out_offset`.
pub fn reference_forward(x: &[f64], w: &[f64], b: &[f64], s: ConvShape, gelu: bool) -> Vec<f64> {
    let (len, c_in, c_out, k) = (s.len, s.c_in, s.c_out, s.kernel);
    let mut y = vec![0f64; s.samples * len * c_out];
    for smp in 0..s.samples {
        for t in 0..len {
            for o in 0..c_out {
                let mut acc = b[o];
                for c in 0..c_in {
                    for j in 0..k {
                        let src = t as isize + j as isize - (k / 2) as isize;
                        if (0..len as isize).contains(&src) {
                            acc += w[(o * c_in + c) * k + j] * x[(smp * len + src as usize) * c_in + c];
                        }
                    }
                }
                y[(smp * len + t) * c_out + o] = acc;
            }
        }
    }
    if gelu {
        let pre = y.clone();
        super::elementwise::reference(super::elementwise::Map::Gelu, &pre, &mut y);
    }
    y
}

/// The int8 forward's products, from the exact integer reference
/// (`int8::reference`): each sample quantized with one asymmetric scale
/// (padding at its zero point, an exact zero), each output channel's
/// `(c_in, k)` weights with one symmetric scale, the taps' products summed
/// exactly, then `(Σ as f32) · (scale_sample · scale_channel)`, the one
/// rounding the mode defines: `(samples·len, c_out)`, before the bias. The
/// CPU's int8 conv and the GPU's (gemm_tile_int8.cuh) are held to its bits.
pub fn reference_int8(x: &[f32], w: &[f32], s: ConvShape) -> Vec<f32> {
    let (len, c_in, c_out, k) = (s.len, s.c_in, s.c_out, s.kernel);
    let wq: Vec<(Vec<i64>, f32)> = w.chunks(c_in * k).take(c_out).map(int8::reference::weights).collect();
    let mut y = vec![0f32; s.samples * len * c_out];
    for smp in 0..s.samples {
        let (xq, x_scale) = int8::reference::activations(&x[smp * len * c_in..(smp + 1) * len * c_in]);
        for t in 0..len {
            for (o, (q, w_scale)) in wq.iter().enumerate() {
                let mut sum = 0i64;
                for j in 0..k {
                    let Some(src) = (t + j).checked_sub(k / 2).filter(|&r| r < len) else { continue };
                    sum += (0..c_in).map(|c| xq[src * c_in + c] * q[c * k + j]).sum::<i64>();
                }
                y[(smp * len + t) * c_out + o] = (sum as f32) * (x_scale * w_scale);
            }
        }
    }
    y
}

/// The backward's gradients of the reference, each as added to zero.
pub struct ReferenceGrads {
    pub dx: Vec<f64>,
    pub dw: Vec<f64>,
    pub db: Vec<f64>,
}

/// The backward on plain vectors, `dy (rows, c_out)` the gradient of the
/// pre-activation: every (output, tap) term of the forward sends its
/// gradient to the weight and the input it multiplied.
pub fn reference_backward(x: &[f64], w: &[f64], dy: &[f64], s: ConvShape) -> ReferenceGrads {
    let (len, c_in, c_out, k) = (s.len, s.c_in, s.c_out, s.kernel);
    let mut g =
        ReferenceGrads { dx: vec![0.0; s.samples * len * c_in], dw: vec![0.0; c_out * c_in * k], db: vec![0.0; c_out] };
    for smp in 0..s.samples {
        for t in 0..len {
            for o in 0..c_out {
                let d = dy[(smp * len + t) * c_out + o];
                g.db[o] += d;
                for c in 0..c_in {
                    for j in 0..k {
                        let src = t as isize + j as isize - (k / 2) as isize;
                        if (0..len as isize).contains(&src) {
                            let xi = (smp * len + src as usize) * c_in + c;
                            g.dw[(o * c_in + c) * k + j] += d * x[xi];
                            g.dx[xi] += d * w[(o * c_in + c) * k + j];
                        }
                    }
                }
            }
        }
    }
    g
}

// --------------------------------------------------------------------- CPU

/// Values a Conv1d weight prepared by `prepare_cpu` holds.
fn prepared_len(cpu: &Cpu, c_out: usize, c_in: usize, k: usize) -> usize {
    match cpu.precision() {
        Precision::Bf16 => bf16_len(c_out, c_in, k),
        Precision::Int8 => int8::conv_len(c_out, c_in, k),
        Precision::F32 | Precision::F16 => c_out * c_in * k,
    }
}

/// Values a bf16-prepared Conv1d weight holds (`pack_bf16`).
pub(crate) fn bf16_len(c_out: usize, c_in: usize, kernel: usize) -> usize {
    kernel * c_in.div_ceil(2) * c_out
}

/// PyTorch's `(c_out, c_in, k)` as tap-major bf16 pairs: row `j·⌈c_in/2⌉ + q`
/// holds channels `2q` and `2q + 1` of tap `j` for every output channel, so
/// each tap is a plain block of pairs of consecutive channels.
pub(crate) fn pack_bf16(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; bf16_len(c_out, c_in, k)];
    pack_bf16_into(w, c_out, c_in, k, bf16::as_pairs_mut(&mut out));
    out
}

/// `pack_bf16` into the start of `out` (the training refresh, every step):
/// per tap j the `(c_out, c_in)` matrix `W[:, :, j]`, packed as a linear weight.
fn pack_bf16_into(w: &[f32], c_out: usize, c_in: usize, k: usize, out: &mut [u32]) {
    let block = c_in.div_ceil(2) * c_out;
    assert!(w.len() >= c_out * c_in * k && out.len() >= k * block);
    let mut tap = vec![0f32; c_out * c_in];
    for j in 0..k {
        for o in 0..c_out {
            for c in 0..c_in {
                tap[o * c_in + c] = w[(o * c_in + c) * k + j];
            }
        }
        small_gemm::pack_bf16_into(&tap, c_out, c_in, &mut out[j * block..(j + 1) * block]);
    }
}

/// `Train::prepare_conv_from` on the CPU: `prepare_cpu`'s layout into `dst`
/// (the linear layer's at f32, tap-major bf16 pairs with use_amp).
pub(crate) fn prepare_from_cpu(
    cpu: &Cpu,
    w: &[f32],
    c_out: usize,
    c_in: usize,
    k: usize,
    dst: &mut [f32],
) -> Result<()> {
    const OP_FROM: &str = "prepare_conv_from";
    cpu.trainable(OP_FROM)?;
    check_len(OP_FROM, "w", w.len(), c_out * c_in * k)?;
    check_len(OP_FROM, "dst", dst.len(), prepared_len(cpu, c_out, c_in, k))?;
    if cpu.precision() == Precision::Bf16 {
        pack_bf16_into(w, c_out, c_in, k, bf16::as_pairs_mut(dst));
        Ok(())
    } else {
        super::linear::prepare_from_cpu(cpu, w, c_out, c_in * k, dst)
    }
}

/// `Backend::prepare_conv` on the CPU: the linear layer's layout of the
/// `(c_out, c_in·k)` matrix at f32, tap-major bf16 pairs in bf16 mode.
pub(crate) fn prepare_cpu(cpu: &Cpu, w: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Result<Vec<f32>> {
    check_len("prepare_conv", "w", w.len(), c_out * c_in * kernel)?;
    match cpu.precision() {
        Precision::Bf16 => Ok(pack_bf16(w, c_out, c_in, kernel)),
        Precision::Int8 => {
            int8::check_depth("prepare_conv", c_in * kernel)?;
            Ok(int8::pack_conv(&w[..c_out * c_in * kernel], c_out, c_in, kernel))
        }
        Precision::F32 | Precision::F16 => super::linear::prepare_cpu(cpu, w, c_out, c_in * kernel),
    }
}

/// `Backend::prepare_conv` on a `Gpu`: the linear layer's layout of the
/// `(c_out, c_in·k)` matrix, in the backend's precision.
pub(crate) fn prepare_gpu<D: Device>(gpu: &Gpu<D>, w: &[f32], c_out: usize, c_in: usize, k: usize) -> Result<D::Mem> {
    gpu.check_len("prepare_conv", "w", w.len(), c_out * c_in * k)?;
    super::linear::prepare_gpu(gpu, w, c_out, c_in * k)
}

/// `Train::prepare_conv_from` on a `Gpu`: `prepare_gpu`'s layout, the
/// linear layer's of the `(c_out, c_in·k)` matrix.
pub(crate) fn prepare_from_gpu<D: Device>(
    gpu: &Gpu<D>,
    w: &D::Mem,
    c_out: usize,
    c_in: usize,
    k: usize,
    dst: &mut D::Mem,
) -> Result<()> {
    super::linear::prepare_from_gpu(gpu, w, c_out, c_in * k, dst)
}

/// `Backend::conv1d` on the CPU, in the backend's precision.
pub(crate) fn forward_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    s: ConvShape,
    gelu: bool,
) -> Result<()> {
    consistent(s).map_err(|r| refuse(OP, r))?;
    let w_len = prepared_len(cpu, s.c_out, s.c_in, s.kernel);
    check_forward(x, w, b, &*y, s, w_len, |what, v: &[f32], need| check_len(OP, what, v.len(), need))?;
    match cpu.precision() {
        Precision::Bf16 => forward_bf16(x, w, y, s, TapsOut::bias(&b[..s.c_out], gelu)),
        Precision::Int8 => forward_int8(x, w, &b[..s.c_out], y, s, gelu),
        Precision::F32 | Precision::F16 => forward_f32(x, w, &b[..s.c_out], y, s, gelu),
    }
    Ok(())
}

/// `Backend::multiscale_conv` on the CPU: each branch a `conv1d` then GELU
/// into its columns.
pub(crate) fn multiscale_cpu(
    cpu: &Cpu,
    x: &[f32],
    branches: &[ConvWeights<Cpu>],
    y: &mut [f32],
    samples: usize,
    len: usize,
    dim: usize,
) -> Result<()> {
    let check = |what: &str, v: &Vec<f32>, need| check_len(MULTI, what, v.len(), need);
    check_len(MULTI, "x", x.len(), samples * len * dim)?;
    check_len(MULTI, "y", y.len(), samples * len * branches.len() * dim)?;
    let w_len = |k| prepared_len(cpu, dim, dim, k);
    check_branches(branches, dim, w_len, check, |r| refuse(MULTI, r))?;
    for (i, br) in branches.iter().enumerate() {
        let s = branch_shape(samples, len, dim, br.kernel, i, branches.len());
        forward_cpu(cpu, x, &br.w, &br.b, y, s, true)?;
    }
    Ok(())
}

/// `Train::conv1d_gelu_keep` on the CPU (a dense output): the tap
/// products (f32, or bf16 with use_amp) with the bias and GELU in their
/// epilogue, storing the values before GELU too.
pub(crate) fn forward_keep_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    pre: &mut [f32],
    y: &mut [f32],
    s: ConvShape,
) -> Result<()> {
    cpu.trainable(KEEP)?;
    dense(s).and_then(|_| consistent(s)).map_err(|r| refuse(KEEP, r))?;
    let w_len = prepared_len(cpu, s.c_out, s.c_in, s.kernel);
    check_forward(x, w, b, &*y, s, w_len, |what, v: &[f32], need| check_len(KEEP, what, v.len(), need))?;
    let n = s.samples * s.len * s.c_out;
    check_len(KEEP, "pre", pre.len(), n)?;
    if cpu.precision() == Precision::Bf16 {
        forward_bf16(x, w, y, s, TapsOut::Bias(&b[..s.c_out], true, pre.as_mut_ptr()));
        Ok(())
    } else if small_gemm::f32_available() {
        forward_taps(x, w, y, s, TapsOut::Bias(b, true, pre.as_mut_ptr()));
        Ok(())
    } else {
        // Without AVX-512: the conv, then the `gelu` op itself.
        forward_f32(x, w, b, pre, s, false);
        map_cpu(Map::Gelu, Some(pre), y, n)
    }
}

/// The kept pre-activation is laid out as the output, and a GPU's GELU
/// runs over whole buffers: the output rows must be the conv's own.
fn dense(s: ConvShape) -> std::result::Result<(), String> {
    if s.out_stride != s.c_out || s.out_offset != 0 {
        return Err(format!(
            "{KEEP} needs a dense output (out_stride = c_out = {}, out_offset = 0), got out_stride {} and out_offset {}",
            s.c_out, s.out_stride, s.out_offset
        ));
    }
    Ok(())
}

/// The f32 forward: the tap products where `small_gemm` runs, im2col and
/// one product elsewhere.
fn forward_f32(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let rows = s.samples * len;
    if small_gemm::f32_available() {
        forward_taps(x, w, y, s, TapsOut::bias(b, gelu));
    } else {
        let width = cin * k;
        with_scratch(rows * width, |cols| {
            im2col(x, cols, len, cin, k);
            let g = Gemm { rows, k: width, n: s.c_out, ld_y: s.out_stride, accumulate: false };
            matmul(cols, w, &mut y[s.out_offset..], g, true, Some((b, gelu)));
        });
    }
}

/// The conv as a sum of k row-shifted products, summed in registers: no
/// im2col matrix (k times the input, written with a stride; a seventh of a
/// TLOB forward). Tap `j` multiplies input row `t + j − k/2` by the rows
/// `c·k + j` of the prepared weight (a strided view of it), so the input
/// only needs its zero padding.
fn forward_taps(x: &[f32], w: &[f32], y: &mut [f32], s: ConvShape, out: TapsOut) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    assert!(x.len() >= s.samples * len * cin && w.len() >= cin * k * s.c_out);
    let taps =
        TapWeight { elem: Elem::F32, ptr: w.as_ptr() as *const u32, ld: k * s.c_out, tap_step: s.c_out, int8: None };
    with_scratch(s.samples * (len + k - 1) * cin, |xp| {
        conv_taps(xp, cin, taps, y, s, out, &|smp, rows, _| {
            rows.copy_from_slice(&x[smp * len * cin..][..len * cin]);
            0.0
        });
    });
}

/// The bf16 forward for a weight from `pack_bf16`: each sample's rows
/// rounded to pairs between `k/2` zero rows on either side, then one
/// product summing the k row-shifted taps.
fn forward_bf16(x: &[f32], w: &[f32], y: &mut [f32], s: ConvShape, out: TapsOut) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let cp = cin.div_ceil(2);
    assert!(x.len() >= s.samples * len * cin && w.len() >= bf16_len(s.c_out, cin, k));
    let pairs = bf16::as_pairs(w).as_ptr();
    let taps = TapWeight { elem: Elem::Bf16Pairs, ptr: pairs, ld: s.c_out, tap_step: cp * s.c_out, int8: None };
    bf16::with_pairs(s.samples * (len + k - 1) * cp, |xp| {
        conv_taps(xp, cp, taps, y, s, out, &|smp, rows, _| {
            small_gemm::to_bf16_pairs(&x[smp * len * cin..][..len * cin], len, cin, cin, rows);
            0
        });
    });
}

/// The int8 forward for a weight from `int8::pack_conv`: each sample
/// quantized with one scale and zero point (`int8::quantize_sample`), its
/// padding rows holding the zero point, then one product summing the k
/// row-shifted taps, the sums made f32 with the sample's and the channel's
/// scales.
fn forward_int8(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let cq = cin.div_ceil(4);
    assert!(x.len() >= s.samples * len * cin && w.len() >= int8::conv_len(s.c_out, cin, k));
    if cq == 0 {
        // No input channel: every output is its bias (then GELU).
        for r in 0..s.samples * len {
            let row = &mut y[r * s.out_stride + s.out_offset..][..s.c_out];
            row.fill(0.0);
            simd::bias_act_row(row, b, gelu);
        }
        return;
    }
    let quads = w.as_ptr() as *const u32;
    let cols = k * cq * s.c_out;
    let int8 = Some((w[cols..].as_ptr(), w[cols + s.c_out..].as_ptr() as *const i32));
    let taps = TapWeight { elem: Elem::Int8Quads, ptr: quads, ld: s.c_out, tap_step: cq * s.c_out, int8 };
    let per_sample = (len + k - 1 + tail_rows(true, cq)) * cq;
    bf16::with_pairs(s.samples * per_sample, |xp| {
        conv_taps(xp, cq, taps, y, s, TapsOut::bias(b, gelu), &|smp, rows, tail| {
            int8::quantize_sample(&x[smp * len * cin..][..len * cin], len, cin, rows, tail)
        });
    });
}

/// Where tap `j`'s weight block starts (`j·tap_step` on from `ptr`), its
/// row stride, and the elements of both operands.
#[derive(Clone, Copy)]
struct TapWeight {
    elem: Elem,
    ptr: *const u32,
    ld: usize,
    tap_step: usize,
    /// An int8 weight's per-channel scales and sums (`int8::pack_conv`).
    int8: Option<(*const f32, *const i32)>,
}

/// What a tap product does with its sums: add the bias (then GELU) and
/// overwrite the output (a forward), or add them to the output (the
/// backward's input gradient).
#[derive(Clone, Copy)]
enum TapsOut<'a> {
    /// The bias, whether GELU follows, and where to keep the values before
    /// GELU (laid out as the output; null when not kept).
    Bias(&'a [f32], bool, *mut f32),
    Accumulate,
}

impl<'a> TapsOut<'a> {
    fn bias(b: &'a [f32], gelu: bool) -> Self {
        TapsOut::Bias(b, gelu, std::ptr::null_mut())
    }
}

/// A "same" Conv1d (then bias, GELU if asked) as `s.kernel` row-shifted
/// products over `xp`: each sample laid out between `k/2` padding rows on
/// either side, `width` elements a row (f32 values, bf16 pairs or int8
/// quads). `fill(sample, rows, tail)` writes the sample's own rows and
/// returns what its padding rows hold (a zero input). An int8 weight
/// (`w.int8` set) reads each sample's scale and zero point from `tail`, the
/// rows after its padding, which `fill` writes.
fn conv_taps<T: Copy + Default + Send>(
    xp: &mut [T],
    width: usize,
    w: TapWeight,
    y: &mut [f32],
    s: ConvShape,
    out: TapsOut,
    fill: &FillSample<'_, T>,
) {
    let tail = tail_rows(w.int8.is_some(), width);
    pad_samples(xp, width, tail, s, fill);
    taps_product(xp, width, tail, w, y, s, out);
}

/// Lays each sample of `s` out in `xp` between `k/2` padding rows on either
/// side and `tail` rows after (see `conv_taps`), `width` elements a row.
fn pad_samples<T: Copy + Default + Send>(
    xp: &mut [T],
    width: usize,
    tail: usize,
    s: ConvShape,
    fill: &FillSample<'_, T>,
) {
    let (len, pad) = (s.len, s.kernel / 2);
    let block = (len + 2 * pad + tail) * width;
    assert!(xp.len() >= s.samples * block);
    split_chunks(xp, s.samples, block, block, s.samples * len * width >= PAR_MIN_ELEMS, &|smp, dst| {
        let (front, rest) = dst.split_at_mut(pad * width);
        let (own, rest) = rest.split_at_mut(len * width);
        let (back, tail) = rest.split_at_mut(pad * width);
        let zero = fill(smp, own, tail);
        front.fill(zero);
        back.fill(zero);
    });
}

/// The product of `conv_taps` over samples `pad_samples` laid out in `xp`.
fn taps_product<T: Copy>(xp: &[T], width: usize, tail: usize, w: TapWeight, y: &mut [f32], s: ConvShape, out: TapsOut) {
    assert_eq!(std::mem::size_of::<T>(), 4, "the kernel reads 32-bit elements");
    let (len, k, pad) = (s.len, s.kernel, s.kernel / 2);
    let (stored, rows) = (len + 2 * pad, s.samples * len);
    if rows == 0 {
        return;
    }
    let block = (stored + tail) * width;
    assert!(xp.len() >= s.samples * block && s.out_offset + s.c_out <= s.out_stride);
    assert!(y.len() >= (rows - 1) * s.out_stride + s.out_offset + s.c_out);
    let bias = match out {
        TapsOut::Bias(b, gelu, keep) => {
            assert!(b.len() >= s.c_out);
            Some(Bias {
                ptr: b.as_ptr(),
                gelu,
                keep: if keep.is_null() { keep } else { keep.wrapping_add(s.out_offset) },
            })
        }
        TapsOut::Accumulate => None,
    };
    let pr = Product {
        a: Lhs { ptr: xp.as_ptr() as *const u32, ld: width, seq: Some((len, stored + tail)) },
        b: Operand { ptr: w.ptr, ld: w.ld },
        y: Output {
            ptr: y[s.out_offset..].as_mut_ptr(),
            ld: s.out_stride,
            accumulate: matches!(out, TapsOut::Accumulate),
        },
        rows,
        depth: width,
        taps: Taps { count: k, lhs_step: width, rhs_step: w.tap_step },
        bias,
        dequant: w.int8.map(|(col_scale, col_sum)| {
            let scale = xp[stored * width..].as_ptr() as *const u32;
            Dequant {
                row_scale: scale as *const f32,
                row_zero: scale.wrapping_add(1) as *const i32,
                row_ld: block,
                rows_per_scale: len,
                col_scale,
                col_sum,
            }
        }),
    };
    let macs = rows * width * k * s.c_out;
    // SAFETY: every padded row the taps read is inside xp (asserted), so is
    // each sample's scale and zero point (an int8 weight's tail rows hold at
    // least two elements), the output and bias are asserted above, and the
    // callers assert their weight's length.
    unsafe { run_product(w.elem, &pr, s.c_out, macs >= PAR_MIN_MACS) };
}

/// `fill(sample, rows, tail)` of `conv_taps`: writes a sample's own rows
/// (and, in int8, its scale and zero point into `tail`), returns the value
/// of its padding rows.
type FillSample<'a, T> = dyn Fn(usize, &mut [T], &mut [T]) -> T + Sync + 'a;

/// Rows after each sample's padding for its int8 scale and zero point.
fn tail_rows(int8: bool, width: usize) -> usize {
    if int8 {
        2usize.div_ceil(width)
    } else {
        0
    }
}

/// The im2col matrix `cols (samples·len, c_in·k)` of a "same" Conv1d over
/// channels-last `x (samples, len, c_in)`: row `(sample, t)`, column `c·k + j`
/// (PyTorch's weight flattening) holds `x[sample, t + j − k/2, c]`, zero
/// outside the sequence. Shared by the forward and the backward.
fn im2col(x: &[f32], cols: &mut [f32], len: usize, cin: usize, k: usize) {
    let pad = k / 2;
    let width = cin * k;
    let fill = |(r, dst): (usize, &mut [f32])| {
        let (smp, t) = (r / len, r % len);
        for j in 0..k {
            let src_t = t as isize + j as isize - pad as isize;
            if src_t < 0 || src_t >= len as isize {
                for c in 0..cin {
                    dst[c * k + j] = 0.0;
                }
            } else {
                let src = &x[(smp * len + src_t as usize) * cin..][..cin];
                for (c, v) in src.iter().enumerate() {
                    dst[c * k + j] = *v;
                }
            }
        }
    };
    let rows = cols.len() / width;
    split_chunks(cols, rows, width, width, cols.len() >= 1 << 16, &|r, row| fill((r, row)));
}

/// `Train::conv1d_backward` on the CPU (f32 only): `dW += dyᵀ·im2col(x)`,
/// `dcols = dy·W` then col2im into `dx`, `db +=` the column sums of `dy`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut Vec<f32>>,
    dw: &mut [f32],
    db: &mut [f32],
    s: ConvShape,
) -> Result<()> {
    cpu.trainable(BACKWARD)?;
    check_backward(x, w, dy, dx.as_deref().map(Vec::as_slice), &*dw, &*db, s, |what, v: &[f32], need| {
        check_len(BACKWARD, what, v.len(), need)
    })?;
    consistent(s).map_err(|r| refuse(BACKWARD, r))?;
    if s.samples * s.len == 0 || s.c_out == 0 {
        return Ok(());
    }
    let dx = dx.map(|v| v.as_mut_slice());
    if small_gemm::f32_available() {
        backward_taps(x, w, dy, dx, dw, s, cpu.precision() == Precision::Bf16);
    } else {
        backward_im2col(x, w, dy, dx, dw, s);
    }
    col_sums(dy, s.out_stride, s.out_offset, s.samples * s.len, s.c_out, db);
    Ok(())
}

/// The backward's weight and input gradients as tap products, with no
/// im2col matrix (at TLOB's spatial convs im2col, its gradient and col2im
/// moved three times the input through memory each, most of the step's
/// conv time). `dy` and `x` are laid out per sample between `k/2` zero rows
/// on either side (`pad_samples`), then:
/// - `dx += Σ_j` tap products of the padded `dy` with each tap's weight
///   block `W[:, :, k−1−j]` (`taps_product`, the forward's kernel);
/// - `dW`, tap-major, is one product over every padded row: row `i` of the
///   padded `dy` against the `k` padded input rows centred on it, which lie
///   side by side in memory (a window read with a row stride of `c_in`).
///   The padding rows of `dy` are zeros, so the rows they meet add nothing
///   (a non-finite input value there would add a NaN, as it would anyway
///   through its own rows). Its depth is split in two fixed halves, one per
///   core (`gemm_depth_halves`), added in order; with `bf16_products`
///   (use_amp) `bf16::weight_grad` sums it, its halves likewise.
fn backward_taps(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    s: ConvShape,
    bf16_products: bool,
) {
    let (len, cin, cout, k) = (s.len, s.c_in, s.c_out, s.kernel);
    let pad = k / 2;
    let (width, stored) = (cin * k, len + 2 * pad);
    let padded = s.samples * stored;
    if cin == 0 {
        return;
    }
    let wr_len = if dx.is_some() { k * cout * cin } else { 0 };
    let sizes = [padded * cout, padded * cin, wr_len, 2 * cout * width];
    with_scratch(sizes.iter().sum(), |scr| {
        let (dyp, rest) = scr.split_at_mut(sizes[0]);
        let (xp, rest) = rest.split_at_mut(sizes[1]);
        let (wr, parts) = rest.split_at_mut(sizes[2]);
        pad_samples(dyp, cout, 0, s, &|smp, rows, _| {
            for (t, row) in rows.chunks_exact_mut(cout).enumerate() {
                row.copy_from_slice(&dy[(smp * len + t) * s.out_stride + s.out_offset..][..cout]);
            }
            0.0
        });
        pad_samples(xp, cin, 0, s, &|smp, rows, _| {
            rows.copy_from_slice(&x[smp * len * cin..][..len * cin]);
            0.0
        });
        if let Some(dx) = dx {
            // Tap j of the input gradient reads dy's row t + j (padded) with
            // the forward's tap k−1−j: wr[j] (c_out, c_in) = W[:, :, k−1−j].
            for j in 0..k {
                for o in 0..cout {
                    for c in 0..cin {
                        wr[(j * cout + o) * cin + c] = w[o * width + c * k + (k - 1 - j)];
                    }
                }
            }
            let taps = TapWeight {
                elem: Elem::F32,
                ptr: wr.as_ptr() as *const u32,
                ld: cin,
                tap_step: cout * cin,
                int8: None,
            };
            let back = ConvShape { c_in: cout, c_out: cin, out_stride: cin, out_offset: 0, ..s };
            taps_product(dyp, cout, 0, taps, dx, back, TapsOut::Accumulate);
        }
        // Padded row i (from the first sample's first own row back by pad)
        // meets the input rows i − pad .. i + pad: tap-major columns j·c_in + c.
        let depth = padded - 2 * pad;
        if bf16_products {
            // use_amp: the whole sum (its own halves added) into the first part.
            let g = Gemm { rows: cout, k: depth, n: width, ld_y: width, accumulate: false };
            bf16::weight_grad(&dyp[pad * cout..], cout, xp, cin, &mut parts[..cout * width], g);
        } else {
            // SAFETY: lhs element (o, i) is dyp[(pad + i)·c_out + o] and rhs
            // element (i, j·c_in + c) is xp[(i + j)·c_in + c], both inside their
            // buffers for i < depth, j < k; parts holds 2·c_out·width values.
            unsafe {
                gemm_depth_halves(
                    cout,
                    width,
                    depth,
                    parts.as_mut_ptr(),
                    View::transposed(dyp[pad * cout..].as_ptr(), cout),
                    View::rows(xp.as_ptr(), cin),
                )
            };
        }
        let (p0, p1) = parts.split_at(cout * width);
        let part = |at: usize| if bf16_products { p0[at] } else { p0[at] + p1[at] };
        for o in 0..cout {
            for j in 0..k {
                for c in 0..cin {
                    let at = o * width + j * cin + c;
                    dw[o * width + c * k + j] += part(at);
                }
            }
        }
    });
}

/// The backward where AVX-512 is missing: `dW += dyᵀ·im2col(x)`, `dcols =
/// dy·W` then col2im into `dx`.
fn backward_im2col(x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: &mut [f32], s: ConvShape) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let pad = k / 2;
    let rows = s.samples * len;
    let width = cin * k;
    let dy_at = dy[s.out_offset..].as_ptr();
    // No input channel: no weight or input gradient, only the bias's.
    with_scratch(2 * rows * width, |scr| {
        if width == 0 {
            return;
        }
        let (cols, dcols) = scr.split_at_mut(rows * width);
        im2col(x, cols, len, cin, k);
        // SAFETY: dy rows of stride out_stride hold c_out values at out_offset;
        // cols (rows, width); dw and w (c_out, width); dcols (rows, width).
        unsafe {
            gemm_strided(
                s.c_out,
                width,
                rows,
                Dst::add(dw.as_mut_ptr(), width),
                View::transposed(dy_at, s.out_stride),
                View::rows(cols.as_ptr(), width),
                1.0,
            );
        }
        if let Some(dx) = dx {
            unsafe {
                gemm_strided(
                    rows,
                    width,
                    s.c_out,
                    Dst::write(dcols.as_mut_ptr(), width),
                    View::rows(dy_at, s.out_stride),
                    View::rows(w.as_ptr(), width),
                    1.0,
                );
            }
            // col2im: each sample's rows of dx belong to one task.
            let dcols = &*dcols;
            dx[..rows * cin].par_chunks_mut(len * cin).enumerate().for_each(|(smp, dxs)| {
                for t in 0..len {
                    let src = &dcols[(smp * len + t) * width..][..width];
                    for j in 0..k {
                        let tt = t as isize + j as isize - pad as isize;
                        if tt < 0 || tt >= len as isize {
                            continue;
                        }
                        let row = &mut dxs[tt as usize * cin..][..cin];
                        for (c, v) in row.iter_mut().enumerate() {
                            *v += src[c * k + j];
                        }
                    }
                }
            });
        }
    });
}

// --------------------------------------------------------------------- GPU

/// `kernels/conv1d.cu` ConvBranch
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConvBranch {
    pub w: u64,
    pub b: u64,
    pub ksize: i32,
    pub _pad: i32,
}

/// Branches one conv launch can carry (`QUORUM_MAX_BRANCHES`).
pub const MAX_BRANCHES: usize = 4;

params!(
    /// `kernels/conv1d.cu` ConvParams; branch z of the grid uses `br[z]`.
    ConvParams => Conv1d {
        x: u64, y: u64, br: [ConvBranch; MAX_BRANCHES],
        samples: i32, len: i32, c_in: i32, c_out: i32, out_stride: i32, out_offset: i32, gelu: i32,
    }
);
twin!(Bf16, ConvParams => Conv1dBf16);
twin!(F16, ConvParams => Conv1dF16);
twin!(Int8, ConvParams => Conv1dInt8);

params!(
    /// `kernels/conv1d.cu` ConvDwParams: `dw (c_out, c_in·k) += dyᵀ im2col(x)`.
    ConvDwParams => Conv1dDw {
        x: u64, dy: u64, dw: u64,
        samples: i32, len: i32, c_in: i32, c_out: i32, ksize: i32, out_stride: i32, out_offset: i32,
    }
);
params!(
    /// `kernels/conv1d.cu` ConvDxParams: `dx +=` dy convolved with the flipped, transposed kernel.
    ConvDxParams => Conv1dDx {
        dy: u64, w: u64, dx: u64,
        samples: i32, len: i32, c_in: i32, c_out: i32, ksize: i32, out_stride: i32, out_offset: i32,
    }
);

/// One conv launch of up to `MAX_BRANCHES` branches over the same input;
/// branch z writes columns `s.out_offset + z·c_out ..` of each row.
#[allow(clippy::too_many_arguments)]
fn launch_branches<D: Device>(
    gpu: &Gpu<D>,
    op: &str,
    x: &D::Mem,
    br: [ConvBranch; MAX_BRANCHES],
    branches: usize,
    y: &mut D::Mem,
    s: ConvShape,
    gelu: bool,
) -> Result<()> {
    let dev = gpu.device();
    let p = ConvParams {
        x: dev.ptr(x),
        y: dev.ptr_mut(y),
        br,
        samples: gpu.int(op, s.samples)?,
        len: gpu.int(op, s.len)?,
        c_in: gpu.int(op, s.c_in)?,
        c_out: gpu.int(op, s.c_out)?,
        out_stride: gpu.int(op, s.out_stride)?,
        out_offset: gpu.int(op, s.out_offset)?,
        gelu: i32::from(gelu),
    };
    gpu.launch_gemm(s.samples * s.len, s.c_out, branches, p)
}

/// `Train::conv1d_gelu_keep` on a `Gpu`: the conv into `pre`, then GELU
/// into `y` (two launches).
pub(crate) fn forward_keep_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    b: &D::Mem,
    pre: &mut D::Mem,
    y: &mut D::Mem,
    s: ConvShape,
) -> Result<()> {
    dense(s).map_err(|r| gpu.err(r))?;
    let n = s.samples * s.len * s.c_out;
    gpu.check(KEEP, "y", y, n)?;
    forward_gpu(gpu, x, w, b, pre, s, false)?;
    map_gpu(gpu, Map::Gelu, Some(pre), y, n)
}

/// `Backend::conv1d` on a `Gpu`: one launch of `quorum_conv1d` (or its
/// 16-bit twin) with one branch.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    b: &D::Mem,
    y: &mut D::Mem,
    s: ConvShape,
    gelu: bool,
) -> Result<()> {
    consistent(s).map_err(|r| gpu.err(format!("{OP}: {r}")))?;
    let w_len = gpu.weight_len(s.c_out, s.c_in * s.kernel);
    check_forward(x, w, b, &*y, s, w_len, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let mut br = [ConvBranch::default(); MAX_BRANCHES];
    br[0] = ConvBranch { w: dev.ptr(w), b: dev.ptr(b), ksize: gpu.int(OP, s.kernel)?, _pad: 0 };
    launch_branches(gpu, OP, x, br, 1, y, s, gelu)
}

/// `Backend::multiscale_conv` on a `Gpu`: up to `MAX_BRANCHES` branches
/// per launch (`blockIdx.z` = branch).
pub(crate) fn multiscale_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    branches: &[ConvWeights<Gpu<D>>],
    y: &mut D::Mem,
    samples: usize,
    len: usize,
    dim: usize,
) -> Result<()> {
    let width = branches.len() * dim;
    gpu.check(MULTI, "x", x, samples * len * dim)?;
    gpu.check(MULTI, "y", y, samples * len * width)?;
    let w_len = |k| gpu.weight_len(dim, dim * k);
    let check = |what: &str, m: &D::Mem, need| gpu.check(MULTI, what, m, need);
    check_branches(branches, dim, w_len, check, |r| gpu.err(format!("{MULTI}: {r}")))?;
    let dev = gpu.device();
    for (chunk, group) in branches.chunks(MAX_BRANCHES).enumerate() {
        let mut br = [ConvBranch::default(); MAX_BRANCHES];
        for (slot, w) in br.iter_mut().zip(group) {
            *slot = ConvBranch { w: dev.ptr(&w.w), b: dev.ptr(&w.b), ksize: gpu.int(MULTI, w.kernel)?, _pad: 0 };
        }
        // The kernel reads each branch's own size; the shape's is unused.
        let s = branch_shape(samples, len, dim, 1, chunk * MAX_BRANCHES, branches.len());
        launch_branches(gpu, MULTI, x, br, group.len(), y, s, true)?;
    }
    Ok(())
}

/// `Train::conv1d_backward` on a `Gpu`: `quorum_conv1d_dw`, then
/// `quorum_conv1d_dx` when `dx` is asked for, then the bias as a column sum.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    dy: &D::Mem,
    dx: Option<&mut D::Mem>,
    dw: &mut D::Mem,
    db: &mut D::Mem,
    s: ConvShape,
) -> Result<()> {
    consistent(s).map_err(|r| gpu.err(format!("{BACKWARD}: {r}")))?;
    check_backward(x, w, dy, dx.as_deref(), &*dw, &*db, s, |what, m, need| gpu.check(BACKWARD, what, m, need))?;
    let rows = s.samples * s.len;
    let width = s.c_in * s.kernel;
    let int = |v| gpu.int(BACKWARD, v);
    let (samples, len, c_in, c_out) = (int(s.samples)?, int(s.len)?, int(s.c_in)?, int(s.c_out)?);
    let (ksize, out_stride, out_offset) = (int(s.kernel)?, int(s.out_stride)?, int(s.out_offset)?);
    int(rows)?;
    int(s.c_out * s.kernel)?;
    let dev = gpu.device();
    if rows > 0 {
        let p = ConvDwParams {
            x: dev.ptr(x),
            dy: dev.ptr(dy),
            dw: dev.ptr_mut(dw),
            samples,
            len,
            c_in,
            c_out,
            ksize,
            out_stride,
            out_offset,
        };
        launch_nonempty(gpu, launch::gemm(s.c_out, width, 1)?, &p)?;
    }
    if let Some(dx) = dx {
        if s.c_out > 0 {
            let p = ConvDxParams {
                dy: dev.ptr(dy),
                w: dev.ptr(w),
                dx: dev.ptr_mut(dx),
                samples,
                len,
                c_in,
                c_out,
                ksize,
                out_stride,
                out_offset,
            };
            launch_nonempty(gpu, launch::gemm(rows, s.c_in, 1)?, &p)?;
        }
    }
    column_sum::sum_gpu(gpu, BACKWARD, dy, db, ColumnSum::rows(s.c_out, rows, s.out_stride, s.out_offset))
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<ConvParams>(),
        c_size_agrees::<Bf16<ConvParams>>(),
        c_size_agrees::<F16<ConvParams>>(),
        c_size_agrees::<Int8<ConvParams>>(),
        c_size_agrees::<ConvDwParams>(),
        c_size_agrees::<ConvDxParams>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{
        added, assert_close, assert_matches_finite_differences, data, read, read_close, same_bits_in_every_order, wide,
    };
    use crate::backend::{Backend, Train};

    /// Odd channel counts, kernels 1 to 7, sequences shorter than the
    /// kernel, a branch of a wider output row, no samples, and the CNN-LSTM's
    /// first layer (60 steps of 112 features to 128 channels).
    fn shapes() -> [ConvShape; 7] {
        [
            ConvShape::dense(3, 15, 5, 16, 3),
            ConvShape::dense(2, 7, 33, 12, 5),
            ConvShape::dense(4, 2, 4, 40, 7),
            ConvShape::dense(1, 9, 3, 3, 1),
            ConvShape { samples: 2, len: 11, c_in: 6, c_out: 8, kernel: 3, out_stride: 20, out_offset: 12 },
            ConvShape::dense(0, 5, 4, 4, 3),
            ConvShape::dense(1, 60, 112, 128, 3),
        ]
    }

    /// The conv's own columns of `y (rows, out_stride)`.
    fn own_columns(y: &[f32], s: ConvShape) -> Vec<f32> {
        y.chunks(s.out_stride.max(1)).flat_map(|row| row[s.out_offset..s.out_offset + s.c_out].to_vec()).collect()
    }

    /// The forward with and without GELU against the reference; the other
    /// columns of a wider output row stay as they were.
    fn forward_matches_the_reference<B: Backend>(be: &B, what: &str) {
        for (i, s) in shapes().into_iter().enumerate() {
            let seed = 10 * i as u64;
            let (x, w, b) = (
                data(s.samples * s.len * s.c_in, seed, 1.0),
                data(s.c_out * s.c_in * s.kernel, seed + 1, 0.5),
                data(s.c_out, seed + 2, 1.0),
            );
            let y0 = data(s.samples * s.len * s.out_stride, seed + 3, 1.0);
            let wp = be.prepare_conv(&w, s.c_out, s.c_in, s.kernel).unwrap();
            for gelu in [false, true] {
                let mut y = be.upload(&y0).unwrap();
                be.conv1d(&be.upload(&x).unwrap(), &wp, &be.upload(&b).unwrap(), &mut y, s, gelu).unwrap();
                let got = read(be, &y, y0.len());
                let want = reference_forward(&wide(&x), &wide(&w), &wide(&b), s, gelu);
                assert_close(&format!("{what} {s:?} gelu {gelu}"), &own_columns(&got, s), &want);
                let others = |v: &[f32]| -> Vec<f32> {
                    v.chunks(s.out_stride)
                        .flat_map(|r| [&r[..s.out_offset], &r[s.out_offset + s.c_out..]].concat())
                        .collect()
                };
                assert_eq!(others(&got), others(&y0), "{what} {s:?}: the other columns");
            }
        }
    }

    /// The backward (with and without dx, every gradient starting non-zero)
    /// against the reference; the bits of every gradient.
    fn backward_matches_the_reference<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for (i, s) in shapes().into_iter().enumerate() {
            let seed = 20 * i as u64;
            let rows = s.samples * s.len;
            let wlen = s.c_out * s.c_in * s.kernel;
            let (x, w, dy) =
                (data(rows * s.c_in, seed, 1.0), data(wlen, seed + 1, 0.5), data(rows * s.out_stride, seed + 2, 1.0));
            let (dx0, dw0, db0) =
                (data(rows * s.c_in, seed + 3, 1.0), data(wlen, seed + 4, 1.0), data(s.c_out, seed + 5, 1.0));
            let dense_dy = own_columns(&dy, s);
            let g = reference_backward(&wide(&x), &wide(&w), &wide(&dense_dy), s);
            for with_dx in [true, false] {
                let (mut dx, mut dw, mut db) =
                    (be.upload(&dx0).unwrap(), be.upload(&dw0).unwrap(), be.upload(&db0).unwrap());
                let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap(), be.upload(&dy).unwrap());
                be.conv1d_backward(&xb, &wb, &dyb, with_dx.then_some(&mut dx), &mut dw, &mut db, s).unwrap();
                let tag = format!("{what} {s:?} dx {with_dx}");
                if with_dx {
                    out.push(read_close(be, &dx, &format!("{tag} dx"), &added(&dx0, &g.dx)));
                } else {
                    assert_eq!(read(be, &dx, dx0.len()), dx0, "{tag}: dx untouched");
                }
                out.push(read_close(be, &dw, &format!("{tag} dw"), &added(&dw0, &g.dw)));
                out.push(read_close(be, &db, &format!("{tag} db"), &added(&db0, &g.db)));
            }
        }
        out
    }

    /// The int8 forward against the exact integer reference
    /// (`reference_int8`), then `+ bias`, bit for bit.
    #[test]
    fn int8_conv_has_the_exact_integer_references_bits() {
        let Ok(be) = Cpu::with_precision(Precision::Int8) else {
            eprintln!("skipped: no AVX512_VNNI here");
            return;
        };
        // Channels that are and are not multiples of 4, one to four
        // quads, kernels 1 to 7, one and several samples, narrow and
        // wide outputs.
        for &(samples, len, c_in, c_out, k) in
            &[(1, 9, 1, 5, 3), (3, 20, 4, 32, 3), (2, 17, 7, 40, 5), (4, 60, 112, 64, 7), (2, 5, 13, 3, 1)]
        {
            let x: Vec<f32> = data(samples * len * c_in, 1, 1.0).iter().map(|v| v * 3.0 + 0.5).collect();
            let (w, b) = (data(c_out * c_in * k, 2, 0.5), data(c_out, 3, 1.0));
            let s = ConvShape::dense(samples, len, c_in, c_out, k);
            let mut y = be.alloc(samples * len * c_out).unwrap();
            be.conv1d(&x, &be.prepare_conv(&w, c_out, c_in, k).unwrap(), &b, &mut y, s, false).unwrap();
            for (i, (got, prod)) in y.iter().zip(reference_int8(&x, &w, s)).enumerate() {
                let want = prod + b[i % c_out];
                assert_eq!(got.to_bits(), want.to_bits(), "{s:?} output {i}: {got} vs {want}");
            }
        }
    }

    /// A multi-scale conv equals its branches run one by one, each into its
    /// columns: five branches (two launches on a GPU).
    fn multiscale_matches_its_branches<B: Backend>(be: &B, what: &str) {
        let (samples, len, dim) = (2, 9, 6);
        let kernels = [1, 3, 5, 7, 3];
        let x = data(samples * len * dim, 1, 1.0);
        let host: Vec<(Vec<f32>, Vec<f32>)> = kernels
            .iter()
            .enumerate()
            .map(|(i, &k)| (data(dim * dim * k, 10 + i as u64, 0.5), data(dim, 20 + i as u64, 1.0)))
            .collect();
        let branches: Vec<ConvWeights<B>> = host
            .iter()
            .zip(kernels)
            .map(|((w, b), k)| ConvWeights {
                w: be.prepare_conv(w, dim, dim, k).unwrap(),
                b: be.upload(b).unwrap(),
                c_in: dim,
                c_out: dim,
                kernel: k,
            })
            .collect();
        let width = kernels.len() * dim;
        let mut y = be.alloc(samples * len * width).unwrap();
        be.multiscale_conv(&be.upload(&x).unwrap(), &branches, &mut y, samples, len, dim).unwrap();
        let got = read(be, &y, samples * len * width);
        for (i, ((w, b), k)) in host.iter().zip(kernels).enumerate() {
            let s = branch_shape(samples, len, dim, k, i, kernels.len());
            let want = reference_forward(&wide(&x), &wide(w), &wide(b), s, true);
            assert_close(&format!("{what} branch {i} (k {k})"), &own_columns(&got, s), &want);
        }
    }

    /// Both CPU backwards, called directly (the backend picks one by the
    /// CPU's features), against the reference: `shapes()`, a batch whose
    /// weight gradient splits its depth over the two cores, and a kernel-5
    /// branch of a wider output row.
    #[test]
    fn the_tap_and_the_im2col_backward_both_match_the_reference() {
        type Path = fn(&[f32], &[f32], &[f32], Option<&mut [f32]>, &mut [f32], ConvShape);
        let mut paths: Vec<(&str, Path)> = vec![("im2col", backward_im2col)];
        if small_gemm::f32_available() {
            paths.push(("taps", |x, w, dy, dx, dw, s| backward_taps(x, w, dy, dx, dw, s, false)));
        }
        let more = [
            ConvShape::dense(48, 20, 16, 32, 3),
            ConvShape { samples: 3, len: 20, c_in: 8, c_out: 16, kernel: 5, out_stride: 48, out_offset: 16 },
        ];
        for (i, s) in shapes().into_iter().chain(more).enumerate() {
            let seed = 30 * i as u64;
            let rows = s.samples * s.len;
            let wlen = s.c_out * s.c_in * s.kernel;
            let (x, w, dy) =
                (data(rows * s.c_in, seed, 1.0), data(wlen, seed + 1, 0.5), data(rows * s.out_stride, seed + 2, 1.0));
            let (dx0, dw0) = (data(rows * s.c_in, seed + 3, 1.0), data(wlen, seed + 4, 1.0));
            let g = reference_backward(&wide(&x), &wide(&w), &wide(&own_columns(&dy, s)), s);
            for (name, path) in &paths {
                for with_dx in [true, false] {
                    let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
                    if rows > 0 && s.c_out > 0 {
                        path(&x, &w, &dy, with_dx.then_some(&mut dx[..]), &mut dw, s);
                    }
                    let tag = format!("{name} {s:?} dx {with_dx}");
                    let want_dx = if with_dx { added(&dx0, &g.dx) } else { wide(&dx0) };
                    assert_close(&format!("{tag} dx"), &dx, &want_dx);
                    assert_close(&format!("{tag} dw"), &dw, &added(&dw0, &g.dw));
                }
            }
        }
    }

    /// `conv1d_gelu_keep` stores what `conv1d` (no GELU) then `gelu` store,
    /// bit for bit, at every dense shape; a branch of a wider row is refused
    /// by name and changes nothing.
    fn gelu_keep_is_the_conv_then_gelu<B: Train>(be: &B, what: &str) {
        for (i, s) in shapes().into_iter().enumerate() {
            let n = s.samples * s.len * s.c_out;
            let seed = 50 * i as u64;
            let (x, w, b) = (
                data(s.samples * s.len * s.c_in, seed, 2.0),
                data(s.c_out * s.c_in * s.kernel, seed + 1, 0.5),
                data(s.c_out, seed + 2, 1.0),
            );
            let (xb, wp, bb) = (
                be.upload(&x).unwrap(),
                be.prepare_conv(&w, s.c_out, s.c_in, s.kernel).unwrap(),
                be.upload(&b).unwrap(),
            );
            let (mut pre, mut y) =
                (be.upload(&vec![7f32; n.max(1)]).unwrap(), be.upload(&vec![7f32; n.max(1)]).unwrap());
            let got = be.conv1d_gelu_keep(&xb, &wp, &bb, &mut pre, &mut y, s);
            if s.out_stride != s.c_out {
                let e = got.unwrap_err().to_string();
                assert!(e.contains("conv1d_gelu_keep") && e.contains("out_stride"), "{what} {s:?}: {e}");
                assert_eq!(read(be, &y, n), vec![7f32; n], "{what} {s:?}: a refused op changes nothing");
                continue;
            }
            got.unwrap();
            let (mut pre_want, mut y_want) = (be.alloc(n.max(1)).unwrap(), be.alloc(n.max(1)).unwrap());
            be.conv1d(&xb, &wp, &bb, &mut pre_want, s, false).unwrap();
            be.gelu(&pre_want, &mut y_want, n).unwrap();
            let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(read(be, &pre, n)), bits(read(be, &pre_want, n)), "{what} {s:?}: pre");
            assert_eq!(bits(read(be, &y, n)), bits(read(be, &y_want, n)), "{what} {s:?}: y");
        }
    }

    #[test]
    fn gelu_keep_is_the_conv_then_gelu_on_the_cpu_and_the_emulator() {
        gelu_keep_is_the_conv_then_gelu(&Cpu::new(), "cpu");
        gelu_keep_is_the_conv_then_gelu(&Gpu::new(Emu::new()), "emu");
        // use_amp's bf16 tap products keep as f32's do.
        if let Ok(be) = Cpu::with_precision(Precision::Bf16) {
            gelu_keep_is_the_conv_then_gelu(&be, "cpu bf16");
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        let s = ConvShape::dense(2, 4, 3, 2, 3);
        let wide_data = |n, seed| wide(&data(n, seed, 1.0));
        let (x, w, b, dy) = (wide_data(24, 1), wide_data(18, 2), wide_data(2, 3), wide_data(16, 4));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            reference_forward(x, w, b, s, false).iter().zip(&dy).map(|(y, d)| y * d).sum()
        };
        let g = reference_backward(&x, &w, &dy, s);
        assert_matches_finite_differences("dx", &x, &g.dx, &|v| loss(v, &w, &b));
        assert_matches_finite_differences("dw", &w, &g.dw, &|v| loss(&x, v, &b));
        assert_matches_finite_differences("db", &b, &g.db, &|v| loss(&x, &w, v));
    }

    #[test]
    fn cpu_matches_the_reference() {
        let cpu = Cpu::new();
        forward_matches_the_reference(&cpu, "cpu");
        backward_matches_the_reference(&cpu, "cpu");
        multiscale_matches_its_branches(&cpu, "cpu");
    }

    #[test]
    fn emulator_matches_the_reference_in_every_thread_order() {
        same_bits_in_every_order(|emu, what| {
            forward_matches_the_reference(emu, what);
            multiscale_matches_its_branches(emu, what);
            backward_matches_the_reference(emu, what)
        });
    }

    #[test]
    fn bf16_cpu_sums_the_rounded_products_of_every_tap() {
        // Moved from cpu/bf16.rs. In bf16 mode the products of rounded values
        // are exact and only the f32 sums differ: f32's bound on the sum of
        // magnitudes, far below what a wrong pairing or tap would cost.
        let Ok(be) = Cpu::with_precision(Precision::Bf16) else {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        };
        let r = |v: f32| f64::from(half::bf16::from_f32(v).to_f32());
        for s in shapes() {
            let (x, w, b) = (
                data(s.samples * s.len * s.c_in, 1, 1.0),
                data(s.c_out * s.c_in * s.kernel, 2, 1.0),
                data(s.c_out, 3, 1.0),
            );
            let wp = be.prepare_conv(&w, s.c_out, s.c_in, s.kernel).unwrap();
            let mut y = vec![f32::NAN; s.samples * s.len * s.out_stride];
            be.conv1d(&x, &wp, &b, &mut y, s, false).unwrap();
            let (len, c_in, k) = (s.len, s.c_in, s.kernel);
            for smp in 0..s.samples {
                for t in 0..len {
                    for o in 0..s.c_out {
                        let (mut sum, mut mag) = (f64::from(b[o]), 0f64);
                        for c in 0..c_in {
                            for j in 0..k {
                                let src = t as isize + j as isize - (k / 2) as isize;
                                if (0..len as isize).contains(&src) {
                                    let p = r(w[(o * c_in + c) * k + j]) * r(x[(smp * len + src as usize) * c_in + c]);
                                    sum += p;
                                    mag += p.abs();
                                }
                            }
                        }
                        let got = f64::from(y[(smp * len + t) * s.out_stride + s.out_offset + o]);
                        let bound = 1e-6 * (1.0 + mag);
                        assert!((got - sum).abs() <= bound, "{s:?} ({smp},{t},{o}): {got} vs {sum}");
                    }
                }
            }
        }
    }

    #[test]
    fn short_buffers_and_bad_shapes_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let name = be.name();
            let s = ConvShape::dense(2, 3, 2, 4, 3);
            let z = |n: usize| be.alloc(n).unwrap();
            let err = be.prepare_conv(&[0.5; 23], 4, 2, 3).err().expect("a short conv weight").to_string();
            assert!(err.contains("prepare_conv: buffer w holds 23 values, needs 24"), "{name}: {err}");
            let wp = be.prepare_conv(&[0.5; 24], 4, 2, 3).unwrap();
            // The forward: x, b, y one short (w's length depends on the precision).
            for (i, what) in [(0, "x"), (2, "b"), (3, "y")] {
                let mut n = [12, 0, 4, 24];
                n[i] -= 1;
                let err = be.conv1d(&z(n[0]), &wp, &z(n[2]), &mut z(n[3]), s, false).unwrap_err().to_string();
                assert!(err.contains(&format!("conv1d: buffer {what} ")), "{name}: {err}");
            }
            // The backward: every buffer one short.
            for (i, what) in ["x", "w", "dy", "dw", "db", "dx"].into_iter().enumerate() {
                let mut n = [12, 24, 24, 24, 4, 12];
                n[i] -= 1;
                let (mut dw, mut db, mut dx) = (z(n[3]), z(n[4]), z(n[5]));
                let err = be
                    .conv1d_backward(&z(n[0]), &z(n[1]), &z(n[2]), Some(&mut dx), &mut dw, &mut db, s)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&format!("conv1d_backward: buffer {what} ")), "{name}: {err}");
            }
            // An even kernel, channels past the output row.
            for bad in [ConvShape::dense(2, 3, 2, 4, 2), ConvShape { out_offset: 1, ..s }] {
                let big = || z(1000);
                let err = be.conv1d(&big(), &big(), &big(), &mut big(), bad, false).unwrap_err().to_string();
                assert!(err.contains("conv1d: inconsistent shape"), "{name}: {err}");
                let err = be
                    .conv1d_backward(&big(), &big(), &big(), None, &mut big(), &mut big(), bad)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("conv1d_backward: inconsistent shape"), "{name}: {err}");
            }
            // A multi-scale branch that does not map dim to dim.
            let odd =
                ConvWeights { w: be.prepare_conv(&[0.5; 24], 4, 2, 3).unwrap(), b: z(4), c_in: 2, c_out: 4, kernel: 3 };
            let err = be.multiscale_conv(&z(12), &[odd], &mut z(24), 2, 3, 2).unwrap_err().to_string();
            assert!(err.contains("multiscale_conv: branch (2, 4, k 3)"), "{name}: {err}");
            let short = ConvWeights { w: z(1), b: z(2), c_in: 2, c_out: 2, kernel: 3 };
            let err = be.multiscale_conv(&z(12), &[short], &mut z(12), 2, 3, 2).unwrap_err().to_string();
            assert!(err.contains("multiscale_conv: buffer branch w "), "{name}: {err}");
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn the_parameter_structs_have_the_c_layout() {
        // Moved from gpu/params.rs: pointers 8 bytes, ints 4, padded to 8.
        assert_eq!(std::mem::size_of::<ConvBranch>(), 24);
        assert_eq!(std::mem::size_of::<ConvParams>(), 16 + 4 * 24 + 7 * 4 + 4);
    }

    /// Each sample's output, computed alone, has the bits it has inside a
    /// batch (TLOB's spatial convs run over 100 snapshots as samples: a
    /// tick that recomputes only the newest one relies on this).
    fn samples_are_independent<B: Backend>(be: &B, what: &str, shapes: &[(usize, usize, usize, usize)]) {
        let samples = 100;
        for &(len, c_in, c_out, k) in shapes {
            let (x, w, b) = (data(samples * len * c_in, 1, 1.0), data(c_out * c_in * k, 2, 0.5), data(c_out, 3, 1.0));
            let (wp, bb) = (be.prepare_conv(&w, c_out, c_in, k).unwrap(), be.upload(&b).unwrap());
            let mut y = be.alloc(samples * len * c_out).unwrap();
            let s = ConvShape::dense(samples, len, c_in, c_out, k);
            be.conv1d(&be.upload(&x).unwrap(), &wp, &bb, &mut y, s, true).unwrap();
            let all = read(be, &y, samples * len * c_out);
            for smp in [0, 1, 50, 99] {
                let mut y1 = be.alloc(len * c_out).unwrap();
                let x1 = be.upload(&x[smp * len * c_in..(smp + 1) * len * c_in]).unwrap();
                be.conv1d(&x1, &wp, &bb, &mut y1, ConvShape::dense(1, len, c_in, c_out, k), true).unwrap();
                let alone = read(be, &y1, len * c_out);
                assert!(
                    alone.iter().zip(&all[smp * len * c_out..]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what} {len}x{c_in}->{c_out} k{k}: sample {smp} alone differs from the batch"
                );
            }
        }
    }

    #[test]
    fn a_samples_output_has_the_same_bits_alone_or_in_a_batch() {
        // TLOB's three spatial convs over 20 levels.
        let shapes = [(20, 4, 32, 3), (20, 32, 64, 3), (20, 64, 128, 3)];
        samples_are_independent(&Cpu::new(), "cpu f32", &shapes);
        for p in [Precision::Bf16, Precision::Int8] {
            if let Ok(be) = Cpu::with_precision(p) {
                samples_are_independent(&be, &format!("cpu {p:?}"), &shapes);
            }
        }
        for p in [Precision::F32, Precision::Bf16] {
            samples_are_independent(
                &Gpu::with_precision(Emu::new(), p).unwrap(),
                &format!("emu {p:?}"),
                &[(20, 4, 32, 3)],
            );
        }
    }
}
