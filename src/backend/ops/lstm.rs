//! One LSTM layer's recurrence (PyTorch `nn.LSTM`, gates i, f, g, o) over
//! `(batch, steps)` from `h0 = c0 = 0`, given the input projection
//! `gx (batch, steps, 4·hidden)` (`x W_ihᵀ + b_ih + b_hh`, one GEMM by the
//! caller): per step `z = gx[t] + W_hh h`, `c = σ(z_f)·c + σ(z_i)·tanh(z_g)`,
//! `h = σ(z_o)·tanh(c)`, every step's `h` written to `h_seq (batch, steps,
//! hidden)`. For training, the same recurrence also keeping every step's
//! cell state `c_seq` and activated gates `gates (batch, steps, 4·hidden)`,
//! and backpropagation through time from them: the gate pre-activation
//! gradients `dgx` (written) and `dw_hh (4·hidden, hidden) += …`.
//!
//! Every piece of the op but its signatures (`Backend::prepare_recurrent`,
//! `Backend::lstm`, `Train::prepare_recurrent_from`, `Train::lstm_train`,
//! `Train::lstm_backward`, with `LstmShape`) and its kernels
//! (`kernels/lstm.cu`):
//! - the prepared `W_hh` of each backend: on the CPU `[W_hh packed | W_hhᵀ]`
//!   in f32 (one block of panels per core for inference; the transpose for
//!   training and for CPUs without AVX-512) or, in bf16 and int8, the blocks
//!   of panels alone; on the GPU PyTorch's layout as it is;
//! - the shape checks, one list per call for both backends (the prepared
//!   `W_hh`'s length the backend's own);
//! - the reference, plain f64 loops of the recurrence (h, c and the gates)
//!   and of its backward, that the tests compare with;
//! - the CPU: the inference recurrence in f32, bf16 and int8 (the hidden
//!   units split over two cores meeting at a barrier per step, one product
//!   per step over each core's block, the same path at every batch size so
//!   a sample's bits do not depend on its batch; without AVX-512, a GEMM per
//!   step with the samples split over the cores); the training recurrence
//!   and BPTT, the samples in two halves, each step's product over a half's
//!   rows on `rows_product` (small_gemm's kernel, reading `W_hh` in place:
//!   the `gemm` crate packed all of it every step) and the cell in blocks of
//!   16 lanes, so the bits never depend on the threads;
//! - the GPU: the four kernels' parameter structs, launch rules and
//!   launches (persistent: one block per sample runs every step; `dW_hh` a
//!   tiled GEMM over (sample, step), see the `.cu`);
//! - the tests: the CPU and the emulator against the reference, the
//!   reference's backward against finite differences, the packed f32 path
//!   against the plain GEMM one and each sample alone against its batch,
//!   bf16's rounding, the emulator's bits the same in
//!   every thread order, the launch rules, the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/kernels.rs` (`lstm_recurrence_batch_1_3_17`)
//! and `tests/common/train_seq.rs` (`lstm_train_matches_cpu`,
//! `lstm_backward_matches_cpu`, `seq_short_buffers_are_errors`); through the
//! CNN-LSTM's gradients by finite differences (`train_grads`); benched in
//! `benches/models_cuda.rs` (`lstm_1x60x256`), and within the CNN-LSTM's
//! forward in `benches/models.rs`.

use multiversion::multiversion;

use crate::backend::cpu::bf16::{self, as_pairs, linear_len, to_bits, with_pairs};
use crate::backend::cpu::simd::LANES;
use crate::backend::cpu::small_gemm::{self, Dequant, Elem, Lhs, Operand, Output, Product, Taps};
use crate::backend::cpu::{
    add_weight_grad, check_len, int8, matmul, pair, rows_product, simd, transpose_into, with_local, with_scratch, Cpu,
    Dst, Gemm, SendPtr, View, PAR_MIN_MACS,
};
use crate::backend::gpu::launch::cfg;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{launch_nonempty, Device, Gpu, LaunchConfig};
use crate::backend::{LstmShape, Precision, Train};
use crate::error::Result;

const OP: &str = "lstm";
const OP_TRAIN: &str = "lstm_train";
const OP_BACKWARD: &str = "lstm_backward";

// ------------------------------------------------------------------ shapes

/// Values of `gx` (and `gates`, `dgx`), of `h_seq` (and `c_seq`, `dh_seq`),
/// of `W_hh` in PyTorch's layout (and `dw_hh`).
fn sizes(s: LstmShape) -> (usize, usize, usize) {
    let (rows, h) = (s.batch * s.steps, s.hidden);
    (rows * 4 * h, rows * h, 4 * h * h)
}

/// The forward's buffers and the values each must hold, checked in this
/// order; `w_len` is the length of the backend's prepared `W_hh`.
fn check_forward<B: ?Sized>(
    gx: &B,
    w_hh: &B,
    h_seq: &B,
    s: LstmShape,
    w_len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (ng, nh, _) = sizes(s);
    check("gx", gx, ng)?;
    check("w_hh", w_hh, w_len)?;
    check("h_seq", h_seq, nh)
}

/// The training forward's buffers, checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_train<B: ?Sized>(
    gx: &B,
    w_hh: &B,
    h_seq: &B,
    c_seq: &B,
    gates: &B,
    s: LstmShape,
    w_len: usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (ng, nh, _) = sizes(s);
    check_forward(gx, w_hh, h_seq, s, w_len, &check)?;
    check("c_seq", c_seq, nh)?;
    check("gates", gates, ng)
}

/// The backward's buffers, checked in this order (`w_hh` in PyTorch's
/// layout on every backend).
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    w_hh: &B,
    h_seq: &B,
    c_seq: &B,
    gates: &B,
    dh_seq: &B,
    dgx: &B,
    dw_hh: &B,
    s: LstmShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (ng, nh, nw) = sizes(s);
    check("w_hh", w_hh, nw)?;
    check("h_seq", h_seq, nh)?;
    check("c_seq", c_seq, nh)?;
    check("gates", gates, ng)?;
    check("dh_seq", dh_seq, nh)?;
    check("dgx", dgx, ng)?;
    check("dw_hh", dw_hh, nw)
}

// --------------------------------------------------------------- reference

/// σ in f64 (the CPU paths use `simd::sigmoid`, in f32).
fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// The recurrence in f64 from `gx` and `W_hh (4H, H)` in PyTorch's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Every step's output, `(batch, steps, H)`.
    pub h: Vec<f64>,
    /// Every step's cell state, `(batch, steps, H)`.
    pub c: Vec<f64>,
    /// Every step's activated gates `[i | f | g | o]`, `(batch, steps, 4H)`.
    pub gates: Vec<f64>,
}

/// The forward in f64, a sample and a step at a time.
pub fn reference_forward(gx: &[f64], w_hh: &[f64], s: LstmShape) -> Reference {
    let (ng, nh, _) = sizes(s);
    let h = s.hidden;
    let mut out = Reference { h: vec![0.0; nh], c: vec![0.0; nh], gates: vec![0.0; ng] };
    for b in 0..s.batch {
        let (mut hp, mut cp) = (vec![0.0; h], vec![0.0; h]);
        for t in 0..s.steps {
            let row = b * s.steps + t;
            let z = |r: usize| gx[row * 4 * h + r] + (0..h).map(|k| w_hh[r * h + k] * hp[k]).sum::<f64>();
            let z: Vec<f64> = (0..4 * h).map(z).collect();
            for u in 0..h {
                let (i, f, g, o) = (sigmoid(z[u]), sigmoid(z[h + u]), z[2 * h + u].tanh(), sigmoid(z[3 * h + u]));
                cp[u] = f * cp[u] + i * g;
                let gates = &mut out.gates[row * 4 * h..];
                (gates[u], gates[h + u], gates[2 * h + u], gates[3 * h + u]) = (i, f, g, o);
                out.c[row * h + u] = cp[u];
            }
            for u in 0..h {
                hp[u] = out.gates[row * 4 * h + 3 * h + u] * cp[u].tanh();
                out.h[row * h + u] = hp[u];
            }
        }
    }
    out
}

/// The backward in f64 from `gx`, `W_hh` and `dh_seq` (the forward
/// recomputed): `(dgx, dw_hh)`, the gradients of `Σ h_seq·dh_seq` with
/// respect to `gx` and `W_hh` (not added into anything).
pub fn reference_backward(gx: &[f64], w_hh: &[f64], dh_seq: &[f64], s: LstmShape) -> (Vec<f64>, Vec<f64>) {
    let (ng, _, nw) = sizes(s);
    let h = s.hidden;
    let fwd = reference_forward(gx, w_hh, s);
    let (mut dgx, mut dw) = (vec![0.0; ng], vec![0.0; nw]);
    for b in 0..s.batch {
        let (mut dh_next, mut dc_next) = (vec![0.0; h], vec![0.0; h]);
        for t in (0..s.steps).rev() {
            let row = b * s.steps + t;
            let ga = &fwd.gates[row * 4 * h..(row + 1) * 4 * h];
            let dg = &mut dgx[row * 4 * h..(row + 1) * 4 * h];
            for u in 0..h {
                let dh = dh_seq[row * h + u] + dh_next[u];
                let tc = fwd.c[row * h + u].tanh();
                let cp = if t > 0 { fwd.c[(row - 1) * h + u] } else { 0.0 };
                let (i, f, g, o) = (ga[u], ga[h + u], ga[2 * h + u], ga[3 * h + u]);
                let dc = dc_next[u] + dh * o * (1.0 - tc * tc);
                dc_next[u] = dc * f;
                dg[u] = dc * g * i * (1.0 - i);
                dg[h + u] = dc * cp * f * (1.0 - f);
                dg[2 * h + u] = dc * i * (1.0 - g * g);
                dg[3 * h + u] = dh * tc * o * (1.0 - o);
            }
            // dh_{t−1} = W_hhᵀ dz_t; dW_hh += dz_t h_{t−1}ᵀ.
            for k in 0..h {
                dh_next[k] = (0..4 * h).map(|r| dg[r] * w_hh[r * h + k]).sum();
            }
            if t > 0 {
                for r in 0..4 * h {
                    for k in 0..h {
                        dw[r * h + k] += dg[r] * fwd.h[(row - 1) * h + k];
                    }
                }
            }
        }
    }
    (dgx, dw)
}

// --------------------------------------------------------------------- CPU

/// `Backend::prepare_recurrent` on the CPU: in f32 `[W_hh packed | W_hhᵀ (H, 4H)]`,
/// the packed half (`pack_recurrent_f32_into`: one block of panels per core)
/// for the inference recurrence, the transpose for the training one and for
/// CPUs without AVX-512. In bf16: `W_hh` packed in one block per core
/// (`pack_recurrent`); in int8 likewise, quantized (`pack_recurrent_int8`).
pub(crate) fn prepare_cpu(cpu: &Cpu, w_hh: &[f32], hidden: usize) -> Result<Vec<f32>> {
    let n = 4 * hidden * hidden;
    check_len("prepare_recurrent", "w_hh", w_hh.len(), n)?;
    match cpu.precision() {
        Precision::Bf16 => return Ok(pack_recurrent(w_hh, hidden)),
        Precision::Int8 => {
            int8::check_depth("prepare_recurrent", hidden)?;
            return Ok(pack_recurrent_int8(w_hh, hidden));
        }
        Precision::F32 | Precision::F16 => {}
    }
    let mut both = vec![0f32; 2 * n];
    pack_recurrent_f32_into(&w_hh[..n], hidden, &mut both[..n]);
    transpose_into(&w_hh[..n], 4 * hidden, hidden, &mut both[n..]);
    Ok(both)
}

/// `Train::prepare_recurrent_from` on the CPU: `prepare_cpu`'s layout (f32,
/// or bf16 with use_amp) into `dst`.
pub(crate) fn prepare_from_cpu(cpu: &Cpu, w_hh: &[f32], hidden: usize, dst: &mut [f32]) -> Result<()> {
    cpu.trainable("prepare_recurrent_from")?;
    let n = 4 * hidden * hidden;
    check_len("prepare_recurrent_from", "w_hh", w_hh.len(), n)?;
    check_len("prepare_recurrent_from", "dst", dst.len(), prepared_len(cpu, hidden))?;
    if cpu.precision() == Precision::Bf16 {
        // One allocation per refresh (half a megabyte at H = 256), beside
        // the step's products: pack_recurrent builds its panels in a Vec.
        let packed = pack_recurrent(&w_hh[..n], hidden);
        dst[..packed.len()].copy_from_slice(&packed);
        return Ok(());
    }
    pack_recurrent_f32_into(&w_hh[..n], hidden, &mut dst[..n]);
    transpose_into(&w_hh[..n], 4 * hidden, hidden, &mut dst[n..2 * n]);
    Ok(())
}

/// Values `prepare_cpu` gives (f32: the packed `W_hh` and its transpose).
fn prepared_len(cpu: &Cpu, h: usize) -> usize {
    match cpu.precision() {
        Precision::Bf16 => linear_len(4 * h, h),
        Precision::Int8 => int8::linear_len(4 * h, h),
        Precision::F32 | Precision::F16 => 8 * h * h,
    }
}

/// No sample, no step or no unit: every output is empty (the CPU's loops
/// index a step's rows, which an empty buffer does not have).
fn nothing_to_do(s: LstmShape) -> bool {
    s.batch == 0 || s.steps == 0 || s.hidden == 0
}

/// `Backend::lstm` on the CPU, in the backend's precision.
pub(crate) fn forward_cpu(cpu: &Cpu, gx: &[f32], w_hh: &[f32], h_seq: &mut [f32], s: LstmShape) -> Result<()> {
    let h = s.hidden;
    check_forward(gx, w_hh, h_seq, s, prepared_len(cpu, h), |what, b: &[f32], need| {
        check_len(OP, what, b.len(), need)
    })?;
    if nothing_to_do(s) {
        return Ok(());
    }
    match cpu.precision() {
        Precision::Bf16 => forward_packed(gx, w_hh, h_seq, None, s, Packed::Bf16),
        Precision::Int8 => forward_packed(gx, w_hh, h_seq, None, s, Packed::Int8),
        Precision::F32 | Precision::F16 if small_gemm::f32_available() => {
            forward_packed(gx, w_hh, h_seq, None, s, Packed::F32)
        }
        Precision::F32 | Precision::F16 => forward_f32(gx, &w_hh[4 * h * h..8 * h * h], h_seq, s),
    }
    Ok(())
}

/// `Train::lstm_train` on the CPU: `w_hh` is `prepare_cpu`'s layout, of
/// which the recurrence reads the packed half (`forward_packed`, as the
/// inference recurrence), or the transpose where AVX-512 is missing; with
/// use_amp the bf16 panels.
pub(crate) fn train_cpu(
    cpu: &Cpu,
    gx: &[f32],
    w_hh: &[f32],
    h_seq: &mut [f32],
    c_seq: &mut [f32],
    gates: &mut [f32],
    s: LstmShape,
) -> Result<()> {
    cpu.trainable(OP_TRAIN)?;
    let h = s.hidden;
    check_train(gx, w_hh, h_seq, c_seq, gates, s, prepared_len(cpu, h), |what, b: &[f32], need| {
        check_len(OP_TRAIN, what, b.len(), need)
    })?;
    if nothing_to_do(s) {
        return Ok(());
    }
    if cpu.precision() == Precision::Bf16 {
        forward_packed(gx, w_hh, h_seq, Some((c_seq, gates)), s, Packed::Bf16);
    } else if small_gemm::f32_available() {
        forward_packed(gx, w_hh, h_seq, Some((c_seq, gates)), s, Packed::F32);
    } else {
        train_f32(gx, &w_hh[4 * h * h..8 * h * h], h_seq, c_seq, gates, s);
    }
    Ok(())
}

/// `Train::lstm_backward` on the CPU, `w_hh` the f32 master copy in
/// PyTorch's layout.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    cpu: &Cpu,
    w_hh: &[f32],
    h_seq: &[f32],
    c_seq: &[f32],
    gates: &[f32],
    dh_seq: &[f32],
    dgx: &mut [f32],
    dw_hh: &mut [f32],
    s: LstmShape,
) -> Result<()> {
    cpu.trainable(OP_BACKWARD)?;
    check_backward(w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, s, |what, b: &[f32], need| {
        check_len(OP_BACKWARD, what, b.len(), need)
    })?;
    if nothing_to_do(s) {
        return Ok(());
    }
    backprop(w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, s, cpu.precision() == Precision::Bf16);
    Ok(())
}

/// One LSTM cell update from pre-activation gates `[i | f | g | o]` (4·H):
/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let n = c.len();
    let (gi, rest) = gates.split_at(n);
    let (gf, rest) = rest.split_at(n);
    let (gg, go) = rest.split_at(n);
    let h = &mut h[..n];
    // Blocks of 16 lanes with fixed bounds, then the rest: over a plain loop
    // LLVM left 16 units in a scalar tail (its bounds checks), which took
    // more time than the other 112 of a 128-unit half together.
    let full = n / LANES * LANES;
    for j0 in (0..full).step_by(LANES) {
        let (i, f, g, o) = (&gi[j0..j0 + LANES], &gf[j0..j0 + LANES], &gg[j0..j0 + LANES], &go[j0..j0 + LANES]);
        let (cb, hb) = (&mut c[j0..j0 + LANES], &mut h[j0..j0 + LANES]);
        for l in 0..LANES {
            let cj = simd::sigmoid(f[l]) * cb[l] + simd::sigmoid(i[l]) * simd::tanh(g[l]);
            cb[l] = cj;
            hb[l] = simd::sigmoid(o[l]) * simd::tanh(cj);
        }
    }
    for j in full..n {
        let cj = simd::sigmoid(gf[j]) * c[j] + simd::sigmoid(gi[j]) * simd::tanh(gg[j]);
        c[j] = cj;
        h[j] = simd::sigmoid(go[j]) * simd::tanh(cj);
    }
}

/// The f32 recurrence where AVX-512 is missing (`forward_packed` runs it
/// elsewhere): a GEMM per step against `W_hhᵀ`, the batch split across two
/// cores from batch 2.
fn forward_f32(gx: &[f32], w_t: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let two_cores = rayon::current_num_threads() > 1 && 4 * s.hidden * s.hidden >= PAR_MIN_MACS;
    if s.batch >= 2 && two_cores {
        return forward_batch_split(gx, w_t, h_seq, s);
    }
    forward_batch(gx, w_t, h_seq, s.batch, s.steps, s.hidden, true);
}

/// Batches of 2 and more: the samples' recurrences are independent, so each
/// core runs every step for half of the batch, with serial products, and the
/// two meet once at the end instead of at a fork/join per step.
fn forward_batch_split(gx: &[f32], w_t: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let (steps, h) = (s.steps, s.hidden);
    let out = SendPtr(h_seq.as_mut_ptr());
    pair::run_halves(s.batch, &|b0, nb| {
        // SAFETY: the halves write the disjoint sample ranges [0, first) and
        // [first, batch) of h_seq, which the caller holds mutably throughout.
        let hs = unsafe { std::slice::from_raw_parts_mut(out.at(b0 * steps * h), nb * steps * h) };
        forward_batch(&gx[b0 * steps * 4 * h..][..nb * steps * 4 * h], w_t, hs, nb, steps, h, false);
    });
}

/// Every step of `batch` samples on this thread (`parallel`: the per-step
/// products may split across the cores).
fn forward_batch(gx: &[f32], w_t: &[f32], h_seq: &mut [f32], batch: usize, steps: usize, h: usize, parallel: bool) {
    let g4 = 4 * h;
    with_scratch(batch * g4 + 2 * batch * h, |scr| {
        let (gates, state) = scr.split_at_mut(batch * g4);
        let (h_prev, c) = state.split_at_mut(batch * h);
        h_prev.fill(0.0);
        c.fill(0.0);
        for t in 0..steps {
            for bi in 0..batch {
                gates[bi * g4..(bi + 1) * g4].copy_from_slice(&gx[(bi * steps + t) * g4..][..g4]);
            }
            if t > 0 {
                let g = Gemm { rows: batch, k: h, n: g4, ld_y: g4, accumulate: true };
                matmul(h_prev, w_t, gates, g, parallel, None);
            }
            for bi in 0..batch {
                let g = &gates[bi * g4..(bi + 1) * g4];
                let cb = &mut c[bi * h..(bi + 1) * h];
                let hb = &mut h_prev[bi * h..(bi + 1) * h];
                lstm_cell(g, cb, hb);
                h_seq[(bi * steps + t) * h..][..h].copy_from_slice(hb);
            }
        }
    });
}

/// The hidden units `[0, mid)` and `[mid, H)` of the recurrence's two
/// halves, split on a 16-unit boundary.
fn unit_halves(h: usize) -> [(usize, usize); 2] {
    let mid = ((h / 2).div_ceil(16) * 16).min(h);
    [(0, mid), (mid, h)]
}

/// Columns of one recurrent panel: what a one-row product keeps in registers.
const PANEL: usize = 128;

/// `W_hh (4H, H)` as two blocks, one per half of the hidden units: block `p`
/// holds the `(4·n_p, H)` matrix of the gate rows `[i | f | g | o]` of its
/// units, packed as a linear weight `(⌈H/2⌉, 4·n_p)` and then cut into
/// panels of `PANEL` columns stored one after the other. Each core streams
/// its quarter megabyte per step (at H = 256) front to back: with the
/// gates' columns 4 KiB apart, both layers' halves did not fit the L2's
/// ways, and strided panels left its prefetchers behind.
fn pack_recurrent(w_hh: &[f32], h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(linear_len(4 * h, h));
    for (u0, u1) in unit_halves(h) {
        let cols = 4 * (u1 - u0);
        let packed = small_gemm::pack_bf16(&half_gate_rows(w_hh, h, u0, u1), cols, h);
        push_panels(&mut out, &packed, h.div_ceil(2), cols);
    }
    to_bits(out)
}

/// The `(4·n, H)` gate rows `[i | f | g | o]` of the hidden units `[u0, u1)`.
fn half_gate_rows(w_hh: &[f32], h: usize, u0: usize, u1: usize) -> Vec<f32> {
    (0..4).flat_map(|q| w_hh[(q * h + u0) * h..(q * h + u1) * h].iter().copied()).collect()
}

/// Appends a packed `(depth, cols)` weight to `out` as panels of `PANEL`
/// columns, each panel's `depth` rows one after the other.
fn push_panels<T: Copy>(out: &mut Vec<T>, packed: &[T], depth: usize, cols: usize) {
    for c0 in (0..cols).step_by(PANEL) {
        let width = PANEL.min(cols - c0);
        for p in 0..depth {
            out.extend_from_slice(&packed[p * cols + c0..p * cols + c0 + width]);
        }
    }
}

/// `pack_recurrent`'s blocks and panels in f32, written into `dst` (the
/// training refresh calls it every step, so it allocates nothing): per half,
/// the `(H, 4·n_p)` transpose of its gate rows, cut into panels of `PANEL`
/// columns, each panel's rows one after the other.
fn pack_recurrent_f32_into(w_hh: &[f32], h: usize, dst: &mut [f32]) {
    let mut out = dst.iter_mut();
    for (u0, u1) in unit_halves(h) {
        let n = u1 - u0;
        for c0 in (0..4 * n).step_by(PANEL) {
            let width = PANEL.min(4 * n - c0);
            for k in 0..h {
                for j in c0..c0 + width {
                    // Column j of the half is gate j / n of unit u0 + j % n.
                    let row = (j / n) * h + u0 + j % n;
                    *out.next().expect("dst holds 4·H·H values") = w_hh[row * h + k];
                }
            }
        }
    }
}

/// `pack_recurrent`'s blocks and panels in int8 (cpu/int8.rs): each half's
/// `(4·n_p, H)` gate rows quantized per row, as quads of consecutive inputs
/// `(⌈H/4⌉, 4·n_p)` cut into panels of `PANEL` columns, then the half's
/// `4·n_p` scales and `4·n_p` sums.
fn pack_recurrent_int8(w_hh: &[f32], h: usize) -> Vec<f32> {
    let hq = h.div_ceil(4);
    let mut out = Vec::with_capacity(int8::linear_len(4 * h, h));
    for (u0, u1) in unit_halves(h) {
        let cols = 4 * (u1 - u0);
        let packed = int8::pack(&half_gate_rows(w_hh, h, u0, u1), cols, h);
        push_panels(&mut out, &packed, hq, cols);
        out.extend_from_slice(&packed[hq * cols..]);
    }
    out
}

/// The element of a packed recurrence: `pack_recurrent_f32_into`'s floats,
/// `pack_recurrent`'s bf16 pairs or `pack_recurrent_int8`'s quads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Packed {
    F32,
    Bf16,
    Int8,
}

impl Packed {
    /// Elements of one sample's `h` as the products read it: its floats, its
    /// pairs, or its quads with their scale and zero point.
    fn row_len(self, h: usize) -> usize {
        match self {
            Packed::F32 => h,
            Packed::Bf16 => h.div_ceil(2),
            Packed::Int8 => int8::row_len(h),
        }
    }

    /// Depth steps of one product over `h` inputs.
    fn depth(self, h: usize) -> usize {
        match self {
            Packed::F32 => h,
            Packed::Bf16 => h.div_ceil(2),
            Packed::Int8 => h.div_ceil(4),
        }
    }

    /// Values of one half's block of `W_hh` with `cols` gate columns.
    fn block_len(self, h: usize, cols: usize) -> usize {
        match self {
            Packed::F32 => h * cols,
            Packed::Bf16 => linear_len(cols, h),
            Packed::Int8 => int8::linear_len(cols, h),
        }
    }
}

/// The packed recurrence over a `W_hh` from `pack_recurrent_f32_into` (f32),
/// `pack_recurrent` (bf16) or `pack_recurrent_int8` (int8), at every batch
/// size: one code path, so each sample's products, and with them its bits,
/// are the same alone as inside any batch (the products treat rows apart).
///
/// Each step, each of the two cores takes half of the hidden units: it
/// rounds the whole previous `h` of every sample to bf16 pairs (copies it in
/// f32), computes the
/// four gates of its units (one product over its block of `W_hh`, into a
/// local `[i | f | g | o]` row per sample), updates their cells and writes
/// their `h`; then the two meet at a barrier, since the next step reads all
/// of `h`. Without the helper core, the halves run in turn. In int8 each
/// sample's `h` is quantized per row instead of rounded to pairs.
///
/// Training (`keep`: `c_seq (batch, steps, H)` and `gates (batch, steps,
/// 4H)`) keeps every step's cell state and activated gates for the
/// backward (`cell_forward`, the same operations as `lstm_cell`), the cell
/// state read from and written to `c_seq`.
fn forward_packed(
    gx: &[f32],
    w_hh: &[f32],
    h_seq: &mut [f32],
    keep: Option<(&mut [f32], &mut [f32])>,
    s: LstmShape,
    elem: Packed,
) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let (g4, hp, depth) = (4 * h, elem.row_len(h), elem.depth(h));
    if batch == 0 || steps == 0 || h == 0 {
        return;
    }
    let units = unit_halves(h);
    let block = |p: usize| elem.block_len(h, 4 * (units[p].1 - units[p].0));
    assert!(gx.len() >= batch * steps * g4 && w_hh.len() >= block(0) + block(1) && h_seq.len() >= batch * steps * h);
    let kept = keep.map(|(c_seq, gates)| {
        assert!(c_seq.len() >= batch * steps * h && gates.len() >= batch * steps * g4);
        (SendPtr(c_seq.as_mut_ptr()), SendPtr(gates.as_mut_ptr()))
    });
    let w = as_pairs(w_hh);
    // Scratch: the cell state (batch, H) unless kept in c_seq, then per half
    // its h as the products read it (batch, row_len) and its gate blocks
    // (batch, 4·units).
    let part_len = |p: usize| batch * hp + batch * 4 * (units[p].1 - units[p].0);
    with_scratch(if kept.is_some() { 0 } else { batch * h }, |c| {
        c.fill(0.0);
        with_pairs(part_len(0) + part_len(1), |scr| {
            let (c_ptr, out_ptr, scr_ptr) =
                (SendPtr(c.as_mut_ptr()), SendPtr(h_seq.as_mut_ptr()), SendPtr(scr.as_mut_ptr() as *mut f32));
            let step = |part: usize, t: usize| {
                let (u0, u1) = units[part];
                let n = u1 - u0;
                if n == 0 {
                    return;
                }
                let base = if part == 0 { 0 } else { part_len(0) };
                // SAFETY: this half's own scratch region, cell units, and
                // output units of step t; the previous step's rows of h_seq,
                // which nobody writes during step t (the caller orders steps).
                let (pairs, gates) = unsafe {
                    let p = scr_ptr.at(base) as *mut u32;
                    (
                        std::slice::from_raw_parts_mut(p, batch * hp),
                        std::slice::from_raw_parts_mut(scr_ptr.at(base + batch * hp), batch * 4 * n),
                    )
                };
                for bi in 0..batch {
                    for q in 0..4 {
                        gates[(bi * 4 + q) * n..][..n].copy_from_slice(&gx[(bi * steps + t) * g4 + q * h + u0..][..n]);
                    }
                }
                if t > 0 {
                    for bi in 0..batch {
                        // SAFETY: row t − 1 of sample bi, complete since the
                        // last barrier and written by nobody during step t.
                        let prev = unsafe { std::slice::from_raw_parts(out_ptr.at((bi * steps + t - 1) * h), h) };
                        let row = &mut pairs[bi * hp..(bi + 1) * hp];
                        match elem {
                            Packed::F32 => row.iter_mut().zip(prev).for_each(|(r, &v)| *r = v.to_bits()),
                            Packed::Bf16 => small_gemm::to_bf16_pairs(prev, 1, h, h, row),
                            Packed::Int8 => int8::quantize_row(prev, row),
                        }
                    }
                    let half = &w[if part == 0 { 0 } else { block(0) }..];
                    let (kind, cols) = match elem {
                        Packed::F32 => (Elem::F32, None),
                        Packed::Bf16 => (Elem::Bf16Pairs, None),
                        Packed::Int8 => (Elem::Int8Quads, Some(depth * 4 * n)),
                    };
                    for c0 in (0..4 * n).step_by(PANEL) {
                        let width = PANEL.min(4 * n - c0);
                        let pr = Product {
                            a: Lhs::rows(pairs.as_ptr(), hp),
                            b: Operand { ptr: half[depth * c0..].as_ptr(), ld: width },
                            y: Output { ptr: gates[c0..].as_mut_ptr(), ld: 4 * n, accumulate: true },
                            rows: batch,
                            depth,
                            taps: Taps::ONE,
                            bias: None,
                            dequant: cols.map(|at| Dequant {
                                row_scale: pairs[depth..].as_ptr() as *const f32,
                                row_zero: pairs[depth + 1..].as_ptr() as *const i32,
                                row_ld: hp,
                                rows_per_scale: 1,
                                col_scale: half[at + c0..].as_ptr() as *const f32,
                                col_sum: half[at + 4 * n + c0..].as_ptr() as *const i32,
                            }),
                        };
                        // SAFETY: one panel of this half's block of W_hh
                        // (the whole size is asserted above), its scales and
                        // sums in int8, columns c0.. of this half's gate rows;
                        // every row of `pairs` was written above.
                        unsafe { small_gemm::run(kind, &pr, 0..width) };
                    }
                }
                for bi in 0..batch {
                    let row = bi * steps + t;
                    // SAFETY: this half's units of sample bi's output row t.
                    let hb = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(row * h + u0), n) };
                    let g = &mut gates[bi * 4 * n..(bi + 1) * 4 * n];
                    let Some((c_seq, kept_gates)) = kept else {
                        // SAFETY: this half's units of sample bi's cell.
                        let cb = unsafe { std::slice::from_raw_parts_mut(c_ptr.at(bi * h + u0), n) };
                        lstm_cell(g, cb, hb);
                        continue;
                    };
                    // SAFETY: this half's units of sample bi's rows t − 1
                    // (read) and t (written) of c_seq, and of its row t of
                    // the kept gates: written by this half only.
                    let (c_prev, cb) = unsafe {
                        let prev =
                            (t > 0).then(|| std::slice::from_raw_parts(c_seq.at((row - 1) * h + u0), n) as &[f32]);
                        (prev, std::slice::from_raw_parts_mut(c_seq.at(row * h + u0), n))
                    };
                    cell_forward(g, c_prev, cb, hb);
                    for q in 0..4 {
                        // SAFETY: as above.
                        let to = unsafe { std::slice::from_raw_parts_mut(kept_gates.at(row * g4 + q * h + u0), n) };
                        to.copy_from_slice(&g[q * n..(q + 1) * n]);
                    }
                }
            };
            let two_cores = rayon::current_num_threads() > 1 && batch * g4 * h >= PAR_MIN_MACS;
            let ran = two_cores
                && pair::run(&|part, barrier| {
                    let mut sense = false;
                    for t in 0..steps {
                        step(part, t);
                        barrier.wait(&mut sense);
                    }
                });
            if !ran {
                for t in 0..steps {
                    step(0, t);
                    step(1, t);
                }
            }
        });
    });
}

/// One step's cell update for one sample: activates the gates in place
/// (i, f, g, o, the backend's sigmoid and tanh as in the inference
/// recurrence) and writes `c` and `h`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cell_forward(g: &mut [f32], c_prev: Option<&[f32]>, c: &mut [f32], h: &mut [f32]) {
    let n = c.len();
    let (gi, rest) = g.split_at_mut(n);
    let (gf, rest) = rest.split_at_mut(n);
    let (gg, go) = rest.split_at_mut(n);
    let (go, h) = (&mut go[..n], &mut h[..n]);
    let zeros = [0f32; LANES];
    // Blocks of 16 lanes with fixed bounds (as `lstm_cell`): over a plain
    // loop on one slice LLVM kept every value scalar, a quarter of the
    // CNN-LSTM's training step.
    let full = n / LANES * LANES;
    for j0 in (0..full).step_by(LANES) {
        let cp = c_prev.map_or(&zeros[..], |p| &p[j0..j0 + LANES]);
        let (i, f) = (&mut gi[j0..j0 + LANES], &mut gf[j0..j0 + LANES]);
        let (gb, o) = (&mut gg[j0..j0 + LANES], &mut go[j0..j0 + LANES]);
        let (cb, hb) = (&mut c[j0..j0 + LANES], &mut h[j0..j0 + LANES]);
        for l in 0..LANES {
            (i[l], f[l], gb[l], o[l]) =
                (simd::sigmoid(i[l]), simd::sigmoid(f[l]), simd::tanh(gb[l]), simd::sigmoid(o[l]));
            cb[l] = f[l] * cp[l] + i[l] * gb[l];
            hb[l] = o[l] * simd::tanh(cb[l]);
        }
    }
    for u in full..n {
        (gi[u], gf[u], gg[u], go[u]) =
            (simd::sigmoid(gi[u]), simd::sigmoid(gf[u]), simd::tanh(gg[u]), simd::sigmoid(go[u]));
        let cp = c_prev.map_or(0.0, |p| p[u]);
        c[u] = gf[u] * cp + gi[u] * gg[u];
        h[u] = go[u] * simd::tanh(c[u]);
    }
}

/// One step's backward for one sample: from the output gradient `dh` (this
/// step's plus the recurrent one) and the cell gradient carried in `dc_next`
/// (updated to the previous step's), writes the gate pre-activation gradients.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn cell_backward(
    g: &[f32],
    c: &[f32],
    c_prev: Option<&[f32]>,
    dh_out: &[f32],
    dh_rec: &[f32],
    dc_next: &mut [f32],
    dg: &mut [f32],
) {
    let n = c.len();
    let (gi, gf, gg, go) = (&g[..n], &g[n..2 * n], &g[2 * n..3 * n], &g[3 * n..4 * n]);
    let (dgi, rest) = dg.split_at_mut(n);
    let (dgf, rest) = rest.split_at_mut(n);
    let (dgg, dgo) = rest.split_at_mut(n);
    let dgo = &mut dgo[..n];
    let zeros = [0f32; LANES];
    // One unit's gradients, the same operations in the whole blocks and the tail.
    #[inline(always)]
    fn unit([i, f, gg, o]: [f32; 4], c: f32, cp: f32, dh: f32, dc_next: &mut f32) -> [f32; 4] {
        let tc = simd::tanh(c);
        let dc = *dc_next + dh * o * (1.0 - tc * tc);
        *dc_next = dc * f;
        [dc * gg * i * (1.0 - i), dc * cp * f * (1.0 - f), dc * i * (1.0 - gg * gg), dh * tc * o * (1.0 - o)]
    }
    // Blocks of 16 lanes, each handed over as arrays: the arguments'
    // `noalias` lets LLVM vectorize (over the slices it wanted a run-time
    // overlap check per pair of the 13 and gave up, leaving it scalar).
    type Lanes = [f32; LANES];
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn block(
        [i, f, gg, o]: [&Lanes; 4],
        c: &Lanes,
        cp: &Lanes,
        [dh_out, dh_rec]: [&Lanes; 2],
        dc_next: &mut Lanes,
        [di, df, dgg, dgo]: [&mut Lanes; 4],
    ) {
        for l in 0..LANES {
            [di[l], df[l], dgg[l], dgo[l]] =
                unit([i[l], f[l], gg[l], o[l]], c[l], cp[l], dh_out[l] + dh_rec[l], &mut dc_next[l]);
        }
    }
    fn lanes(v: &[f32], j0: usize) -> &Lanes {
        v[j0..j0 + LANES].try_into().expect("16 lanes")
    }
    let full = n / LANES * LANES;
    for j0 in (0..full).step_by(LANES) {
        let cp = c_prev.map_or(&zeros, |p| lanes(p, j0));
        let r = j0..j0 + LANES;
        block(
            [lanes(gi, j0), lanes(gf, j0), lanes(gg, j0), lanes(go, j0)],
            lanes(c, j0),
            cp,
            [lanes(dh_out, j0), lanes(dh_rec, j0)],
            (&mut dc_next[r.clone()]).try_into().expect("16 lanes"),
            [
                (&mut dgi[r.clone()]).try_into().expect("16 lanes"),
                (&mut dgf[r.clone()]).try_into().expect("16 lanes"),
                (&mut dgg[r.clone()]).try_into().expect("16 lanes"),
                (&mut dgo[r]).try_into().expect("16 lanes"),
            ],
        );
    }
    for u in full..n {
        let cp = c_prev.map_or(0.0, |p| p[u]);
        [dgi[u], dgf[u], dgg[u], dgo[u]] =
            unit([gi[u], gf[u], gg[u], go[u]], c[u], cp, dh_out[u] + dh_rec[u], &mut dc_next[u]);
    }
}

/// Runs `part(first_sample, samples, parallel)` over the batch: at batch 2
/// and more, the two halves at once (`pair::run_halves`: the samples'
/// recurrences are independent), each with serial products: no fork/join per
/// step. Where a half runs does not change its bits, and the split depends on
/// the batch only, so results do not depend on the threads.
fn batch_halves(batch: usize, part: &(dyn Fn(usize, usize, bool) + Sync)) {
    if batch < 2 {
        return part(0, batch, true);
    }
    pair::run_halves(batch, &|b0, nb| part(b0, nb, false));
}

/// The training recurrence; `w_t` is the `W_hhᵀ (H, 4H)` half of
/// `prepare_cpu`'s layout.
fn train_f32(gx: &[f32], w_t: &[f32], h_seq: &mut [f32], c_seq: &mut [f32], gates: &mut [f32], s: LstmShape) {
    let (steps, h) = (s.steps, s.hidden);
    let (hp, cp, gp) = (SendPtr(h_seq.as_mut_ptr()), SendPtr(c_seq.as_mut_ptr()), SendPtr(gates.as_mut_ptr()));
    batch_halves(s.batch, &|b0, nb, parallel| {
        // SAFETY: each part owns samples [b0, b0 + nb) of h_seq, c_seq and
        // gates (contiguous, disjoint between parts), all of which the caller
        // holds mutably and sized for the whole batch.
        let (h_part, c_part, g_part) = unsafe {
            (
                std::slice::from_raw_parts_mut(hp.at(b0 * steps * h), nb * steps * h),
                std::slice::from_raw_parts_mut(cp.at(b0 * steps * h), nb * steps * h),
                std::slice::from_raw_parts_mut(gp.at(b0 * steps * 4 * h), nb * steps * 4 * h),
            )
        };
        let gx_part = &gx[b0 * steps * 4 * h..(b0 + nb) * steps * 4 * h];
        train_part(gx_part, w_t, h_part, c_part, g_part, LstmShape { batch: nb, steps, hidden: h }, parallel);
    });
}

fn train_part(
    gx: &[f32],
    w_t: &[f32],
    h_seq: &mut [f32],
    c_seq: &mut [f32],
    gates: &mut [f32],
    s: LstmShape,
    parallel: bool,
) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let g4 = 4 * h;
    gates[..batch * steps * g4].copy_from_slice(&gx[..batch * steps * g4]);
    for t in 0..steps {
        if t > 0 {
            // SAFETY: gates rows (b, t) of stride steps·4H, h_seq rows (b, t−1)
            // of stride steps·H, w_t (H, 4H): all in bounds, distinct buffers.
            unsafe {
                rows_product(
                    batch,
                    g4,
                    h,
                    Dst::add(gates[t * g4..].as_mut_ptr(), steps * g4),
                    View::rows(h_seq[(t - 1) * h..].as_ptr(), steps * h),
                    View::rows(w_t.as_ptr(), g4),
                    parallel,
                );
            }
        }
        for bi in 0..batch {
            let row = bi * steps + t;
            let g = &mut gates[row * g4..(row + 1) * g4];
            // c_{t−1} and c_t are neighbouring rows of c_seq.
            let (before, cur) = c_seq.split_at_mut(row * h);
            let c_prev = if t > 0 { Some(&before[(row - 1) * h..]) } else { None };
            cell_forward(g, c_prev, &mut cur[..h], &mut h_seq[row * h..(row + 1) * h]);
        }
    }
}

/// BPTT, then `dW_hh` from the gate gradients it wrote. With
/// `bf16_products` (use_amp) both run in bf16 products: BPTT's `dgates ·
/// W_hh` with `W_hh`'s consecutive gate rows paired once per call, and
/// `dW_hh` (`bf16::weight_grad`).
#[allow(clippy::too_many_arguments)]
fn backprop(
    w_hh: &[f32],
    h_seq: &[f32],
    c_seq: &[f32],
    gates: &[f32],
    dh_seq: &[f32],
    dgx: &mut [f32],
    dw_hh: &mut [f32],
    s: LstmShape,
    bf16_products: bool,
) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let g4 = 4 * h;
    let pairs_len = if bf16_products { 2 * h * h } else { 0 };
    bf16::with_weight_pairs(pairs_len, |w_pairs| {
        if bf16_products {
            small_gemm::pack_row_pairs(w_hh, g4, h, h, w_pairs);
        }
        let w_pairs = bf16_products.then_some(&*w_pairs);
        let dgx_ptr = SendPtr(dgx.as_mut_ptr());
        batch_halves(batch, &|b0, nb, parallel| {
            let (rows, rows_end) = (b0 * steps, (b0 + nb) * steps);
            // SAFETY: each part owns samples [b0, b0 + nb) of dgx (contiguous,
            // disjoint between parts), which the caller holds mutably.
            let dgx_part = unsafe { std::slice::from_raw_parts_mut(dgx_ptr.at(rows * g4), nb * steps * g4) };
            let part = LstmShape { batch: nb, steps, hidden: h };
            let state = (&c_seq[rows * h..rows_end * h], &gates[rows * g4..rows_end * g4]);
            bptt_part(w_hh, w_pairs, state, &dh_seq[rows * h..rows_end * h], dgx_part, part, parallel);
        });
    });
    if steps > 1 {
        // dW_hh += Σ_b Σ_{t≥1} dgates[b, t]ᵀ h[b, t−1]: one product over
        // every (sample, step) row against h shifted down a step (zeros at
        // t = 0), the weight gradient's depth halves on the two cores. One
        // product per sample instead (depth steps − 1) read and wrote all of
        // dW_hh once per sample.
        let rows = batch * steps;
        with_local(&SHIFTED, rows * h, |shifted| {
            for bi in 0..batch {
                let r0 = bi * steps;
                shifted[r0 * h..(r0 + 1) * h].fill(0.0);
                shifted[(r0 + 1) * h..(r0 + steps) * h].copy_from_slice(&h_seq[r0 * h..(r0 + steps - 1) * h]);
            }
            add_weight_grad(dgx, g4, shifted, h, rows, dw_hh, (g4, h), bf16_products);
        });
    }
}

thread_local! {
    /// `backprop`'s `h` shifted down a step, kept between calls.
    static SHIFTED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Backpropagation through time of `s.batch` samples: writes their `dgx`.
/// `w_pairs`: `W_hh` as bf16 pairs of consecutive rows (use_amp), or `None`
/// for f32 products; `(c_seq, gates)`: the training forward's state.
fn bptt_part(
    w_hh: &[f32],
    w_pairs: Option<&[u32]>,
    (c_seq, gates): (&[f32], &[f32]),
    dh_seq: &[f32],
    dgx: &mut [f32],
    s: LstmShape,
    parallel: bool,
) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let g4 = 4 * h;
    with_scratch(2 * batch * h, |scr| {
        let (dh_next, dc_next) = scr.split_at_mut(batch * h);
        dh_next.fill(0.0);
        dc_next.fill(0.0);
        for t in (0..steps).rev() {
            for bi in 0..batch {
                let row = bi * steps + t;
                let c_prev = if t > 0 { Some(&c_seq[(row - 1) * h..row * h]) } else { None };
                cell_backward(
                    &gates[row * g4..(row + 1) * g4],
                    &c_seq[row * h..(row + 1) * h],
                    c_prev,
                    &dh_seq[row * h..(row + 1) * h],
                    &dh_next[bi * h..(bi + 1) * h],
                    &mut dc_next[bi * h..(bi + 1) * h],
                    &mut dgx[row * g4..(row + 1) * g4],
                );
            }
            if t == 0 {
                continue;
            }
            // dh_{t−1} = dgates_t · W_hh (batch rows of stride steps·4H).
            if let Some(w_pairs) = w_pairs {
                // use_amp: in bf16 products.
                let g = Gemm { rows: batch, k: g4, n: h, ld_y: h, accumulate: false };
                bf16::product_rows(&dgx[t * g4..], steps * g4, w_pairs, dh_next, g, parallel);
            } else {
                // SAFETY: in bounds as checked by the caller; distinct buffers.
                unsafe {
                    rows_product(
                        batch,
                        h,
                        g4,
                        Dst::write(dh_next.as_mut_ptr(), h),
                        View::rows(dgx[t * g4..].as_ptr(), steps * g4),
                        View::rows(w_hh.as_ptr(), h),
                        parallel,
                    );
                }
            }
        }
    });
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/lstm.cu` LstmParams
    LstmParams => Lstm { gx: u64, w_hh: u64, h_seq: u64, batch: i32, steps: i32, hidden: i32 }
);
params!(
    /// `kernels/lstm.cu` LstmTrainParams
    LstmTrainParams => LstmTrain {
        gx: u64, w_hh: u64, h_seq: u64, c_seq: u64, gates: u64, batch: i32, steps: i32, hidden: i32,
    }
);
params!(
    /// `kernels/lstm.cu` LstmBackwardParams
    LstmBackwardParams => LstmBackward {
        w_hh: u64, c_seq: u64, gates: u64, dh_seq: u64, dgx: u64, batch: i32, steps: i32, hidden: i32,
    }
);
params!(
    /// `kernels/lstm.cu` LstmDwParams
    LstmDwParams => LstmDw { dgx: u64, h_seq: u64, dw_hh: u64, batch: i32, steps: i32, hidden: i32 }
);

/// lstm.cu: the backward's block size and the dW_hh tile.
const LSTM_BWD_THREADS: u32 = 256;
const LSTM_DW_TILE: usize = 32;
const LSTM_DW_THREADS: u32 = 256;

/// `quorum_lstm` and `quorum_lstm_train`: one persistent block per sample;
/// h (double-buffered) and c in shared memory.
pub fn forward_cfg(batch: usize, hidden: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], 256, 3 * hidden * 4)
}

/// `quorum_lstm_backward` (BPTT): one persistent block per sample; dh_next,
/// dc_next and the step's four gate gradients in shared memory (6·hidden floats).
pub fn backward_cfg(batch: usize, hidden: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], LSTM_BWD_THREADS, 6 * hidden * 4)
}

/// `quorum_lstm_dw`: one block per 32×32 tile of the (4·hidden, hidden) output.
pub fn dw_cfg(hidden: usize) -> Result<LaunchConfig> {
    cfg([hidden.div_ceil(LSTM_DW_TILE), (4 * hidden).div_ceil(LSTM_DW_TILE), 1], LSTM_DW_THREADS, 0)
}

/// `Backend::prepare_recurrent` on a `Gpu`: the kernels read `W_hh` in
/// PyTorch's `(4·hidden, hidden)` layout, uploaded as it is.
pub(crate) fn prepare_gpu<D: Device>(gpu: &Gpu<D>, w_hh: &[f32], hidden: usize) -> Result<D::Mem> {
    let n = 4 * hidden * hidden;
    gpu.check_len("prepare_recurrent", "w_hh", w_hh.len(), n)?;
    gpu.device().upload(&w_hh[..n])
}

/// `Train::prepare_recurrent_from` on a `Gpu`: a copy.
pub(crate) fn prepare_from_gpu<D: Device>(gpu: &Gpu<D>, w_hh: &D::Mem, hidden: usize, dst: &mut D::Mem) -> Result<()> {
    let n = 4 * hidden * hidden;
    gpu.check("prepare_recurrent_from", "w_hh", w_hh, n)?;
    gpu.check("prepare_recurrent_from", "dst", dst, n)?;
    gpu.copy(w_hh, dst, n)
}

/// `Backend::lstm` on a `Gpu`: one launch of `quorum_lstm`.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    gx: &D::Mem,
    w_hh: &D::Mem,
    h_seq: &mut D::Mem,
    s: LstmShape,
) -> Result<()> {
    check_forward(gx, w_hh, &*h_seq, s, sizes(s).2, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let p = LstmParams {
        gx: dev.ptr(gx),
        w_hh: dev.ptr(w_hh),
        h_seq: dev.ptr_mut(h_seq),
        batch: gpu.int(OP, s.batch)?,
        steps: gpu.int(OP, s.steps)?,
        hidden: gpu.int(OP, s.hidden)?,
    };
    launch_nonempty(gpu, forward_cfg(s.batch, s.hidden)?, &p)
}

/// `Train::lstm_train` on a `Gpu`: one launch of `quorum_lstm_train`.
pub(crate) fn train_gpu<D: Device>(
    gpu: &Gpu<D>,
    gx: &D::Mem,
    w_hh: &D::Mem,
    h_seq: &mut D::Mem,
    c_seq: &mut D::Mem,
    gates: &mut D::Mem,
    s: LstmShape,
) -> Result<()> {
    let op = OP_TRAIN;
    let (rows, h) = (s.batch * s.steps, s.hidden);
    check_train(gx, w_hh, &*h_seq, &*c_seq, &*gates, s, sizes(s).2, |what, m, need| gpu.check(op, what, m, need))?;
    let cfg = forward_cfg(s.batch, h)?;
    let (batch, steps, hidden) = (gpu.int(op, s.batch)?, gpu.int(op, s.steps)?, gpu.int(op, h)?);
    gpu.int(op, rows * 4 * h)?;
    if rows == 0 || h == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    let p = LstmTrainParams {
        gx: dev.ptr(gx),
        w_hh: dev.ptr(w_hh),
        h_seq: dev.ptr_mut(h_seq),
        c_seq: dev.ptr_mut(c_seq),
        gates: dev.ptr_mut(gates),
        batch,
        steps,
        hidden,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(cfg, &p) }
}

/// `Train::lstm_backward` on a `Gpu`: `quorum_lstm_backward` (BPTT, dgx),
/// then `quorum_lstm_dw` (dW_hh from dgx).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    w_hh: &D::Mem,
    h_seq: &D::Mem,
    c_seq: &D::Mem,
    gates: &D::Mem,
    dh_seq: &D::Mem,
    dgx: &mut D::Mem,
    dw_hh: &mut D::Mem,
    s: LstmShape,
) -> Result<()> {
    let op = OP_BACKWARD;
    let (rows, h) = (s.batch * s.steps, s.hidden);
    check_backward(w_hh, h_seq, c_seq, gates, dh_seq, &*dgx, &*dw_hh, s, |what, m, need| gpu.check(op, what, m, need))?;
    let (cfg_bptt, cfg_dw) = (backward_cfg(s.batch, h)?, dw_cfg(h)?);
    let (batch, steps, hidden) = (gpu.int(op, s.batch)?, gpu.int(op, s.steps)?, gpu.int(op, h)?);
    gpu.int(op, rows * 4 * h)?;
    if rows == 0 || h == 0 {
        return Ok(());
    }
    let dev = gpu.device();
    let dgx = dev.ptr_mut(dgx);
    let bptt = LstmBackwardParams {
        w_hh: dev.ptr(w_hh),
        c_seq: dev.ptr(c_seq),
        gates: dev.ptr(gates),
        dh_seq: dev.ptr(dh_seq),
        dgx,
        batch,
        steps,
        hidden,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(cfg_bptt, &bptt)? };
    if s.steps < 2 {
        // h[t−1] = 0 at t = 0: a single step adds nothing to dW_hh.
        return Ok(());
    }
    let dw = LstmDwParams { dgx, h_seq: dev.ptr(h_seq), dw_hh: dev.ptr_mut(dw_hh), batch, steps, hidden };
    // SAFETY: sizes checked above; reads the dgx the BPTT launch wrote, after it.
    unsafe { dev.launch(cfg_dw, &dw) }
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<LstmParams>(),
        c_size_agrees::<LstmTrainParams>(),
        c_size_agrees::<LstmBackwardParams>(),
        c_size_agrees::<LstmDwParams>(),
    ]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::transpose;
    use crate::backend::gpu::{Emu, ThreadOrder};
    use crate::backend::ops::testing::{assert_close, data, each_short_buffer_is_named, wide};
    use crate::backend::Backend;

    /// (batch, steps, hidden): one sample and several, one step, hidden
    /// sizes not a multiple of the 32 lanes or the 16-unit split, one past a
    /// warp per unit.
    const SHAPES: [(usize, usize, usize); 5] = [(1, 6, 7), (3, 5, 33), (2, 1, 8), (2, 7, 40), (1, 3, 1)];

    /// The CPU's two-core paths besides (4H² ≥ `PAR_MIN_MACS` from H = 181):
    /// batch 1 split by hidden units, batches of 2 and 3 split by samples.
    const CPU_SHAPES: [(usize, usize, usize); 3] = [(1, 4, 200), (2, 3, 183), (3, 3, 192)];

    fn shape(&(batch, steps, hidden): &(usize, usize, usize)) -> LstmShape {
        LstmShape { batch, steps, hidden }
    }

    /// One case: `gx`, `W_hh` in PyTorch's layout, `dh_seq`, and the start
    /// of `dw_hh` (non-zero: it is added into).
    struct Case {
        s: LstmShape,
        gx: Vec<f32>,
        w: Vec<f32>,
        dh: Vec<f32>,
        dw0: Vec<f32>,
    }

    fn case(i: usize, sh: &(usize, usize, usize)) -> Case {
        let s = shape(sh);
        let (ng, nh, nw) = sizes(s);
        let seed = 10 * i as u64;
        Case {
            s,
            gx: data(ng, seed + 1, 1.5),
            w: data(nw, seed + 2, 1.0 / (s.hidden as f32).sqrt()),
            dh: data(nh, seed + 3, 1.0),
            dw0: data(nw, seed + 4, 0.5),
        }
    }

    fn cases(shapes: &[(usize, usize, usize)]) -> impl Iterator<Item = Case> + '_ {
        shapes.iter().enumerate().map(|(i, sh)| case(i, sh))
    }

    fn read<B: Backend>(be: &B, b: &B::Buf, n: usize) -> Vec<f32> {
        let mut v = vec![0f32; n];
        be.read(b, &mut v).unwrap();
        v
    }

    impl Case {
        /// The forward (h), the training forward (h, c, gates) and the
        /// backward (dgx, dw_hh less its start) on `be`, every output but
        /// `dw_hh` starting as NaN (each is written whole), the backward
        /// from the training forward's state.
        fn run<B: Train>(&self, be: &B) -> [Vec<f32>; 6] {
            let s = self.s;
            let (ng, nh, nw) = sizes(s);
            let nan = |n: usize| be.upload(&vec![f32::NAN; n]).unwrap();
            let gx = be.upload(&self.gx).unwrap();
            let wp = be.prepare_recurrent(&self.w, s.hidden).unwrap();
            let mut h = nan(nh);
            be.lstm(&gx, &wp, &mut h, s).unwrap();
            let (mut h_t, mut c, mut gates) = (nan(nh), nan(nh), nan(ng));
            be.lstm_train(&gx, &wp, &mut h_t, &mut c, &mut gates, s).unwrap();
            let (w, dh) = (be.upload(&self.w).unwrap(), be.upload(&self.dh).unwrap());
            let (mut dgx, mut dw) = (nan(ng), be.upload(&self.dw0).unwrap());
            be.lstm_backward(&w, &h_t, &c, &gates, &dh, &mut dgx, &mut dw, s).unwrap();
            let dw: Vec<f32> = read(be, &dw, nw).iter().zip(&self.dw0).map(|(d, d0)| d - d0).collect();
            [read(be, &h, nh), read(be, &h_t, nh), read(be, &c, nh), read(be, &gates, ng), read(be, &dgx, ng), dw]
        }

        /// `be`'s results against the reference.
        fn check<B: Train>(&self, be: &B, what: &str) -> [Vec<f32>; 6] {
            let what = format!("{what} {:?}", self.s);
            let (gx, w) = (wide(&self.gx), wide(&self.w));
            let got = self.run(be);
            let want = reference_forward(&gx, &w, self.s);
            let (dgx, dw) = reference_backward(&gx, &w, &wide(&self.dh), self.s);
            assert_close(&format!("{what}: lstm h"), &got[0], &want.h);
            assert_close(&format!("{what}: lstm_train h"), &got[1], &want.h);
            assert_close(&format!("{what}: lstm_train c"), &got[2], &want.c);
            assert_close(&format!("{what}: lstm_train gates"), &got[3], &want.gates);
            assert_close(&format!("{what}: dgx"), &got[4], &dgx);
            assert_close(&format!("{what}: dw_hh"), &got[5], &dw);
            got
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        // L = Σ h·r: dL/dgx and dL/dW_hh by central differences in f64.
        let s = LstmShape { batch: 2, steps: 4, hidden: 3 };
        let (ng, nh, nw) = sizes(s);
        let (gx, w, r) = (wide(&data(ng, 5, 1.5)), wide(&data(nw, 6, 0.6)), wide(&data(nh, 7, 1.0)));
        let loss =
            |gx: &[f64], w: &[f64]| -> f64 { reference_forward(gx, w, s).h.iter().zip(&r).map(|(h, r)| h * r).sum() };
        let (dgx, dw) = reference_backward(&gx, &w, &r, s);
        let eps = 1e-6;
        for i in 0..ng {
            let (mut p, mut m) = (gx.clone(), gx.clone());
            p[i] += eps;
            m[i] -= eps;
            let want = (loss(&p, &w) - loss(&m, &w)) / (2.0 * eps);
            assert!((dgx[i] - want).abs() < 1e-6, "dgx[{i}]: {} vs {want}", dgx[i]);
        }
        for i in 0..nw {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += eps;
            m[i] -= eps;
            let want = (loss(&gx, &p) - loss(&gx, &m)) / (2.0 * eps);
            assert!((dw[i] - want).abs() < 1e-6, "dw_hh[{i}]: {} vs {want}", dw[i]);
        }
    }

    #[test]
    fn cpu_matches_the_reference() {
        let cpu = Cpu::new();
        for case in cases(&SHAPES).chain(cases(&CPU_SHAPES)) {
            case.check(&cpu, "cpu");
        }
    }

    #[test]
    fn emulator_matches_the_reference_with_the_same_bits_in_every_thread_order() {
        let bits =
            |v: &[Vec<f32>]| v.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect::<Vec<Vec<u32>>>();
        for case in cases(&SHAPES) {
            let mut first = None;
            for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
                let got = bits(&case.check(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}")));
                // The training recurrence runs the inference kernel's code.
                assert!(got[0] == got[1], "emu {order:?} {:?}: lstm_train's h is not lstm's", case.s);
                let first = first.get_or_insert_with(|| got.clone());
                assert!(got == *first, "emu {order:?} {:?}: other bits than the first order's", case.s);
            }
        }
    }

    #[test]
    fn packed_f32_recurrence_matches_the_plain_one_and_a_sample_alone_its_batch() {
        if !small_gemm::f32_available() {
            eprintln!("skipped: the packed f32 path needs AVX-512");
            return;
        }
        // Batch 1 to 5 (uneven halves), hidden sizes around the 16-unit split
        // and the 128-column panels, one not a multiple of 16.
        for &(batch, steps, h) in &[(1usize, 7usize, 200usize), (2, 4, 200), (3, 5, 183), (5, 3, 256), (4, 3, 40)] {
            let g4 = 4 * h;
            let gx: Vec<f32> = (0..batch * steps * g4).map(|i| (i as f32 * 0.017).sin()).collect();
            let w: Vec<f32> = (0..g4 * h).map(|i| (i as f32 * 0.0071).cos() * 0.05).collect();
            let be = Cpu::new();
            let prepared = be.prepare_recurrent(&w, h).unwrap();
            let s = LstmShape { batch, steps, hidden: h };
            let mut packed = vec![0f32; batch * steps * h];
            be.lstm(&gx, &prepared, &mut packed, s).unwrap();
            let mut plain = vec![0f32; batch * steps * h];
            forward_f32(&gx, &transpose(&w, g4, h), &mut plain, s);
            assert!(packed.iter().all(|v| v.is_finite() && *v != 0.0), "the packed path wrote every value");
            for (i, (a, b)) in packed.iter().zip(&plain).enumerate() {
                assert!((a - b).abs() < 1e-6, "batch {batch} h {h} index {i}: {a} vs {b}");
            }
            for b in 0..batch {
                let mut alone = vec![0f32; steps * h];
                let one = LstmShape { batch: 1, ..s };
                be.lstm(&gx[b * steps * g4..][..steps * g4].to_vec(), &prepared, &mut alone, one).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&alone) == bits(&packed[b * steps * h..][..steps * h]),
                    "batch {batch} h {h}: sample {b} alone differs from the batch"
                );
            }
        }
    }

    #[test]
    fn batch_split_recurrence_matches_the_plain_one() {
        // Odd and even batches (uneven halves), hidden not a multiple of 16.
        for &(batch, steps, h) in &[(2usize, 4usize, 200usize), (3, 5, 183), (5, 3, 256)] {
            let g4 = 4 * h;
            let gx: Vec<f32> = (0..batch * steps * g4).map(|i| (i as f32 * 0.017).sin()).collect();
            let w: Vec<f32> = (0..g4 * h).map(|i| (i as f32 * 0.0071).cos() * 0.05).collect();
            let w_t = transpose(&w, g4, h);
            let s = LstmShape { batch, steps, hidden: h };
            let mut split = vec![0f32; batch * steps * h];
            forward_batch_split(&gx, &w_t, &mut split, s);
            let mut plain = vec![0f32; batch * steps * h];
            forward_batch(&gx, &w_t, &mut plain, batch, steps, h, true);
            assert!(split.iter().all(|v| v.is_finite() && *v != 0.0), "the split path wrote every value");
            for (i, (a, b)) in split.iter().zip(&plain).enumerate() {
                assert!((a - b).abs() < 1e-6, "batch {batch} h {h} index {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bf16_rounds_h_each_step_and_keeps_the_cell_in_f32() {
        // Each step against a plain f64 sum over the bf16-rounded operands:
        // the products of rounded values are exact, only the f32 sums and
        // the cell's f32 arithmetic differ.
        let Ok(be) = Cpu::with_precision(Precision::Bf16) else {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        };
        let data = |n: usize, seed: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect() };
        let r = |v: f32| f64::from(half::bf16::from_f32(v).to_f32());
        // Batch 1 and 3, hidden sizes around the 16-unit split, one odd.
        for &(batch, steps, h) in &[(1usize, 6usize, 40usize), (3, 5, 33), (2, 4, 256)] {
            let g4 = 4 * h;
            let gx = data(batch * steps * g4, 1.0);
            let w: Vec<f32> = data(g4 * h, 2.0).iter().map(|v| v * 0.2).collect();
            let wp = be.prepare_recurrent(&w, h).unwrap();
            let mut out = vec![f32::NAN; batch * steps * h];
            be.lstm(&gx, &wp, &mut out, LstmShape { batch, steps, hidden: h }).unwrap();
            for bi in 0..batch {
                let (mut hs, mut cs) = (vec![0f64; h], vec![0f64; h]);
                for t in 0..steps {
                    // The previous h as the backend rounds it: its own f32
                    // output, to bf16.
                    let hr: Vec<f64> =
                        (0..h).map(|u| if t == 0 { 0.0 } else { r(out[(bi * steps + t - 1) * h + u]) }).collect();
                    let gate = |q: usize, u: usize| {
                        let row = q * h + u;
                        let dot: f64 = (0..h).map(|k| r(w[row * h + k]) * hr[k]).sum();
                        f64::from(gx[(bi * steps + t) * g4 + row]) + dot
                    };
                    for u in 0..h {
                        let (i, f, g, o) =
                            (sigmoid(gate(0, u)), sigmoid(gate(1, u)), gate(2, u).tanh(), sigmoid(gate(3, u)));
                        cs[u] = f * cs[u] + i * g;
                        hs[u] = o * cs[u].tanh();
                        // The cell's own f32 arithmetic (approximate tanh and
                        // sigmoid, as in f32 mode) dominates the difference.
                        let got = out[(bi * steps + t) * h + u];
                        let what = format!("batch {batch} h {h} ({bi},{t},{u})");
                        assert!((f64::from(got) - hs[u]).abs() < 1e-5, "{what}: {got} vs {}", hs[u]);
                    }
                }
            }
        }
    }

    #[test]
    fn int8_quantizes_h_each_step_and_keeps_the_cell_in_f32() {
        // Each step against the exact integer product of the quantized
        // operands (cpu/int8.rs's definitions, written out here: the
        // backend's own previous h quantized per row, asymmetric; each gate
        // row of W_hh symmetric), added to gx in f32 as the kernel adds it;
        // only the cell's f32 arithmetic differs.
        let Ok(be) = Cpu::with_precision(Precision::Int8) else {
            eprintln!("skipped: no AVX512_VNNI here");
            return;
        };
        let data = |n: usize, seed: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect() };
        for &(batch, steps, h) in &[(1usize, 6usize, 40usize), (3, 5, 33), (2, 4, 256)] {
            let g4 = 4 * h;
            let gx = data(batch * steps * g4, 1.0);
            let w: Vec<f32> = data(g4 * h, 2.0).iter().map(|v| v * 0.2).collect();
            let wq: Vec<(Vec<i64>, f32)> = w.chunks(h).map(int8::reference::weights).collect();
            let wp = be.prepare_recurrent(&w, h).unwrap();
            let mut out = vec![f32::NAN; batch * steps * h];
            be.lstm(&gx, &wp, &mut out, LstmShape { batch, steps, hidden: h }).unwrap();
            for bi in 0..batch {
                let mut cs = vec![0f64; h];
                for t in 0..steps {
                    let prev: Vec<f32> =
                        (0..h).map(|u| if t == 0 { 0.0 } else { out[(bi * steps + t - 1) * h + u] }).collect();
                    let (hq, h_scale) = int8::reference::activations(&prev);
                    let gate = |q: usize, u: usize| {
                        let row = q * h + u;
                        let g = gx[(bi * steps + t) * g4 + row];
                        if t == 0 {
                            return f64::from(g);
                        }
                        let sum: i64 = (0..h).map(|k| hq[k] * wq[row].0[k]).sum();
                        f64::from((sum as f32) * (h_scale * wq[row].1) + g)
                    };
                    for u in 0..h {
                        let (i, f, g, o) =
                            (sigmoid(gate(0, u)), sigmoid(gate(1, u)), gate(2, u).tanh(), sigmoid(gate(3, u)));
                        cs[u] = f * cs[u] + i * g;
                        let want = o * cs[u].tanh();
                        let got = out[(bi * steps + t) * h + u];
                        let what = format!("batch {batch} h {h} ({bi},{t},{u})");
                        assert!((f64::from(got) - want).abs() < 1e-5, "{what}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B, w_len: usize) {
            let s = LstmShape { batch: 2, steps: 3, hidden: 4 };
            let (ng, nh, nw) = sizes(s);
            let z = |n: usize| be.alloc(n).unwrap();
            let fwd = |n: [usize; 3]| be.lstm(&z(n[0]), &z(n[1]), &mut z(n[2]), s);
            each_short_buffer_is_named(be.name(), "lstm", ["gx", "w_hh", "h_seq"], [ng, w_len, nh], fwd);
            let train = |n: [usize; 5]| be.lstm_train(&z(n[0]), &z(n[1]), &mut z(n[2]), &mut z(n[3]), &mut z(n[4]), s);
            let names = ["gx", "w_hh", "h_seq", "c_seq", "gates"];
            each_short_buffer_is_named(be.name(), "lstm_train", names, [ng, w_len, nh, nh, ng], train);
            let bwd = |n: [usize; 7]| {
                be.lstm_backward(&z(n[0]), &z(n[1]), &z(n[2]), &z(n[3]), &z(n[4]), &mut z(n[5]), &mut z(n[6]), s)
            };
            let names = ["w_hh", "h_seq", "c_seq", "gates", "dh_seq", "dgx", "dw_hh"];
            each_short_buffer_is_named(be.name(), "lstm_backward", names, [nw, nh, nh, ng, nh, ng, nw], bwd);
            let prep = |n: [usize; 2]| be.prepare_recurrent_from(&z(n[0]), s.hidden, &mut z(n[1]));
            each_short_buffer_is_named(be.name(), "prepare_recurrent_from", ["w_hh", "dst"], [nw, w_len], prep);
            let Err(err) = be.prepare_recurrent(&vec![0.0; nw - 1], s.hidden) else {
                panic!("{}: prepare_recurrent took a short W_hh", be.name());
            };
            let want = format!("prepare_recurrent: buffer w_hh holds {} values, needs {nw}", nw - 1);
            assert!(err.to_string().contains(&want), "{}: {err}", be.name());
        }
        refuses(&Cpu::new(), 2 * 4 * 4 * 4);
        refuses(&Gpu::new(Emu::new()), 4 * 4 * 4);
        // use_amp: W_hh as bf16 pairs, (4H, ⌈H/2⌉).
        if let Ok(be) = Cpu::with_precision(Precision::Bf16) {
            refuses(&be, 4 * 4 * 2);
        }
    }

    #[test]
    fn training_on_an_int8_cpu_is_refused() {
        let Ok(be) = Cpu::with_precision(Precision::Int8) else {
            eprintln!("skipped: no AVX512_VNNI here");
            return;
        };
        let s = LstmShape { batch: 1, steps: 1, hidden: 1 };
        let z = |n: usize| vec![0f32; n];
        let err = be.lstm_train(&z(4), &z(8), &mut z(1), &mut z(1), &mut z(4), s).unwrap_err().to_string();
        assert!(err.contains("lstm_train: training on the CPU runs in f32 or with bf16 products"), "{err}");
        assert!(err.contains("int8"), "{err}");
        let err = be.lstm_backward(&z(4), &z(1), &z(1), &z(4), &z(1), &mut z(4), &mut z(4), s).unwrap_err();
        assert!(err.to_string().contains("lstm_backward: training on the CPU runs in f32"), "{err}");
    }

    /// use_amp: the bf16 training recurrence is the inference one (the same
    /// h, bit for bit) keeping its state: each kept cell state is the kept
    /// gates' `f·c_prev + i·g`, in f32 as the cell computes it, and the
    /// gates are activated (i, f, o in (0, 1), g in [−1, 1]).
    #[test]
    fn bf16_training_recurrence_is_the_inference_one_keeping_its_state() {
        let Ok(be) = Cpu::with_precision(Precision::Bf16) else {
            eprintln!("skipped: no AVX512_BF16 here");
            return;
        };
        for &(batch, steps, h) in &[(1usize, 6usize, 40usize), (3, 5, 33), (32, 4, 256)] {
            let s = LstmShape { batch, steps, hidden: h };
            let (ng, nh, nw) = sizes(s);
            let gx = data(ng, 1, 1.0);
            let wp = be.prepare_recurrent(&data(nw, 2, 0.2), h).unwrap();
            let mut h_inf = vec![f32::NAN; nh];
            be.lstm(&gx, &wp, &mut h_inf, s).unwrap();
            let (mut h_seq, mut c, mut g) = (vec![f32::NAN; nh], vec![f32::NAN; nh], vec![f32::NAN; ng]);
            be.lstm_train(&gx, &wp, &mut h_seq, &mut c, &mut g, s).unwrap();
            let what = format!("batch {batch} steps {steps} h {h}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&h_seq), bits(&h_inf), "{what}: h");
            for row in 0..batch * steps {
                let first = row % steps == 0;
                for u in 0..h {
                    let gate = |q: usize| g[row * 4 * h + q * h + u];
                    let (i, f, gg, o) = (gate(0), gate(1), gate(2), gate(3));
                    let unit = (0.0..=1.0).contains(&i) && (0.0..=1.0).contains(&f) && (0.0..=1.0).contains(&o);
                    assert!(unit && (-1.0..=1.0).contains(&gg), "{what} row {row} unit {u}: gates {i} {f} {gg} {o}");
                    let c_prev = if first { 0.0 } else { c[(row - 1) * h + u] };
                    assert_eq!(
                        c[row * h + u].to_bits(),
                        (f * c_prev + i * gg).to_bits(),
                        "{what} row {row} unit {u}: c"
                    );
                }
            }
        }
    }

    #[test]
    fn launch_rules() {
        assert_eq!(forward_cfg(3, 256).unwrap().shared_bytes, 3072);
        let c = backward_cfg(17, 256).unwrap();
        assert_eq!((c.grid, c.block, c.shared_bytes), ([17, 1, 1], [256, 1, 1], 6144));
        assert_eq!(dw_cfg(256).unwrap().grid, [8, 32, 1]);
        assert_eq!(dw_cfg(33).unwrap().grid, [2, 5, 1]);
    }

    #[test]
    fn parameter_structs_have_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<LstmParams>(), 3 * 8 + 3 * 4 + 4);
        assert_eq!(std::mem::size_of::<LstmTrainParams>(), 5 * 8 + 3 * 4 + 4);
        assert_eq!(std::mem::size_of::<LstmBackwardParams>(), 5 * 8 + 3 * 4 + 4);
        assert_eq!(std::mem::size_of::<LstmDwParams>(), 3 * 8 + 3 * 4 + 4);
    }

    #[test]
    fn no_samples_or_no_steps_is_nothing_to_do_on_both_backends() {
        // The GPU forward launched an empty grid at batch 0, which CUDA
        // refuses (the emulator now does too).
        fn empty<B: crate::backend::Train>(be: &B) {
            for (batch, steps, hidden) in [(0, 5, 8), (3, 0, 8)] {
                let s = LstmShape { batch, steps, hidden };
                let z = |n: usize| be.alloc(n).unwrap();
                let (rows, gates) = (batch * steps, 4 * hidden);
                let w = be.prepare_recurrent(&vec![0.5; gates * hidden], hidden).unwrap();
                let (gx, mut h) = (z(rows * gates), z(rows * hidden));
                be.lstm(&gx, &w, &mut h, s).unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
                let (mut c, mut g) = (z(rows * hidden), z(rows * gates));
                be.lstm_train(&gx, &w, &mut h, &mut c, &mut g, s)
                    .unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
                let (w_pt, mut dgx, mut dw) = (z(gates * hidden), z(rows * gates), z(gates * hidden));
                be.lstm_backward(&w_pt, &h, &c, &g, &z(rows * hidden), &mut dgx, &mut dw, s)
                    .unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
            }
        }
        empty(&Cpu::new());
        empty(&Gpu::new(Emu::new()));
    }
}
