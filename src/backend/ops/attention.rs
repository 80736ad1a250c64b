//! Softmax attention over a fused `qkv (batch, tokens, 3·heads·head_dim)`
//! (`AttentionShape`): per (sample, head), `S = Q Kᵀ / √head_dim`,
//! `P = softmax(S)` by rows, `O = P V`, the heads' outputs side by side in
//! `out (batch, tokens, heads·head_dim)`; for training, the same forward
//! keeping `probs (batch, heads, tokens, tokens)`, and the backward from
//! them: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
//! `dQ = dS K / √head_dim`, `dK = dSᵀ Q / √head_dim`, written into `dqkv`.
//!
//! Every piece of the op but its signatures (`Backend::attention`,
//! `Train::attention_train`, `Train::attention_backward`) and its kernels
//! (`kernels/attention.cu`):
//! - the shape checks, one list per call for both backends (the GPU's
//!   kernels also bound the head dim and the tokens, in their launch rules);
//! - the reference, plain f64 loops of the forward, the probabilities and
//!   the backward, that the tests compare with;
//! - the CPU: per (sample, head), two or four small GEMMs read straight out
//!   of the fused rows (strided views, no copies) around a vectorized row
//!   softmax; the inference forward splits the pairs over the two cores with
//!   thread-local scores, the training passes run the pairs on rayon's
//!   threads with the scores in `probs` and `scratch`;
//! - the GPU: the four kernels' parameter structs, launch rules and launches
//!   (flash-style online softmax for inference; for training a warp per
//!   query or key, the score row in registers, see the `.cu`);
//! - the tests: the CPU and the emulator against the reference, the
//!   reference's backward against finite differences, the emulator's bits
//!   the same in every thread order, the launch rules, the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a
//! GPU through `tests/common/kernels.rs` (`attention_short_sequences`) and
//! `tests/common/train_seq.rs` (`attention_train_matches_cpu`,
//! `attention_backward_matches_cpu`, `seq_short_buffers_are_errors`); the
//! CPU by finite differences (`train_ops`); benched in
//! `benches/models_cuda.rs` (`attention_32x100x4x32`).

use std::cell::RefCell;

use multiversion::multiversion;
use rayon::prelude::*;

use crate::backend::cpu::simd::{exp, LANES};
use crate::backend::cpu::{check_len, gemm_strided, refuse, split_items, Dst, SendPtr, View};
use crate::backend::gpu::launch::{cfg, err};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{launch_nonempty, Device, Gpu, LaunchConfig};
use crate::backend::AttentionShape;
use crate::error::Result;

const OP: &str = "attention";
const OP_TRAIN: &str = "attention_train";
const OP_BACKWARD: &str = "attention_backward";

// ------------------------------------------------------------------ shapes

/// Values of `qkv`, of `out` (and `dout`), of `probs` (and `scratch`).
fn sizes(s: AttentionShape) -> (usize, usize, usize) {
    let rows = s.batch * s.tokens;
    (rows * 3 * s.dim(), rows * s.dim(), s.batch * s.heads * s.tokens * s.tokens)
}

/// The forward's buffers and the values each must hold, checked in this order.
fn check_forward<B: ?Sized>(
    qkv: &B,
    out: &B,
    s: AttentionShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (nqkv, nout, _) = sizes(s);
    check("qkv", qkv, nqkv)?;
    check("out", out, nout)
}

/// The training forward's buffers, checked in this order.
fn check_train<B: ?Sized>(
    qkv: &B,
    out: &B,
    probs: &B,
    s: AttentionShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    check_forward(qkv, out, s, &check)?;
    check("probs", probs, sizes(s).2)
}

/// The backward's buffers, checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    qkv: &B,
    probs: &B,
    dout: &B,
    dqkv: &B,
    scratch: &B,
    s: AttentionShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
) -> Result<()> {
    let (nqkv, nout, np) = sizes(s);
    check("qkv", qkv, nqkv)?;
    check("probs", probs, np)?;
    check("scratch", scratch, np)?;
    check("dout", dout, nout)?;
    check("dqkv", dqkv, nqkv)
}

// --------------------------------------------------------------- reference

/// `qkv[b, t, part·dim + h·head_dim + e]`, part 0 q, 1 k, 2 v.
fn at(qkv: &[f64], s: AttentionShape, b: usize, t: usize, part: usize, h: usize, e: usize) -> f64 {
    let d = s.dim();
    qkv[(b * s.tokens + t) * 3 * d + part * d + h * s.head_dim + e]
}

/// The probabilities in f64, `(batch, heads, tokens, tokens)`: each row the
/// softmax of `q_i · k_j / √head_dim` over `j`.
pub fn reference_probs(qkv: &[f64], s: AttentionShape) -> Vec<f64> {
    let (n, dh) = (s.tokens, s.head_dim);
    let mut probs = Vec::with_capacity(s.batch * s.heads * n * n);
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..n {
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh).map(|e| at(qkv, s, b, i, 0, h, e) * at(qkv, s, b, j, 1, h, e)).sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                probs.extend(sc.iter().map(|v| (v - m).exp() / z));
            }
        }
    }
    probs
}

/// The forward in f64: `out (batch, tokens, heads·head_dim)`.
pub fn reference_forward(qkv: &[f64], s: AttentionShape) -> Vec<f64> {
    let (n, dh, d) = (s.tokens, s.head_dim, s.dim());
    let probs = reference_probs(qkv, s);
    let mut out = vec![0.0; s.batch * n * d];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let p = &probs[(b * s.heads + h) * n * n..][..n * n];
            for i in 0..n {
                for e in 0..dh {
                    out[(b * n + i) * d + h * dh + e] = (0..n).map(|j| p[i * n + j] * at(qkv, s, b, j, 2, h, e)).sum();
                }
            }
        }
    }
    out
}

/// The backward in f64 from `qkv` and `dout` (the probabilities recomputed):
/// `dqkv (batch, tokens, 3·heads·head_dim)`.
pub fn reference_backward(qkv: &[f64], dout: &[f64], s: AttentionShape) -> Vec<f64> {
    let (n, dh, d) = (s.tokens, s.head_dim, s.dim());
    let scale = 1.0 / (dh as f64).sqrt();
    let probs = reference_probs(qkv, s);
    let mut dqkv = vec![0.0; s.batch * n * 3 * d];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let p = &probs[(b * s.heads + h) * n * n..][..n * n];
            let dor = |i: usize, e: usize| dout[(b * n + i) * d + h * dh + e];
            // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)).
            let mut ds = vec![0.0; n * n];
            for i in 0..n {
                let dp: Vec<f64> =
                    (0..n).map(|j| (0..dh).map(|e| dor(i, e) * at(qkv, s, b, j, 2, h, e)).sum()).collect();
                let dot: f64 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
                for j in 0..n {
                    ds[i * n + j] = p[i * n + j] * (dp[j] - dot);
                }
            }
            let mut put =
                |t: usize, part: usize, e: usize, v: f64| dqkv[(b * n + t) * 3 * d + part * d + h * dh + e] = v;
            for t in 0..n {
                for e in 0..dh {
                    // dQ_t = dS_t· K · scale; dK_t = dS_·tᵀ Q · scale; dV_t = P_·tᵀ dO.
                    put(t, 0, e, scale * (0..n).map(|j| ds[t * n + j] * at(qkv, s, b, j, 1, h, e)).sum::<f64>());
                    put(t, 1, e, scale * (0..n).map(|i| ds[i * n + t] * at(qkv, s, b, i, 0, h, e)).sum::<f64>());
                    put(t, 2, e, (0..n).map(|i| p[i * n + t] * dor(i, e)).sum());
                }
            }
        }
    }
    dqkv
}

// --------------------------------------------------------------------- CPU

/// In-place softmax of one row of scores; max-subtracted for stability.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn softmax_row(s: &mut [f32]) {
    // Lane-wise maxima and a padded last block: a scalar max and a scalar
    // tail of exps (4 of a 100-token row) cost as much as the vector body.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = s.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    let mut m = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for v in lanes {
        m = m.max(v);
    }
    let mut acc = [0f32; LANES];
    let mut chunks = s.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp(c[i] - m);
            acc[i] += c[i];
        }
    }
    let rest = chunks.into_remainder();
    // exp(−∞ − m) is 0 (below exp's range): padding adds nothing.
    let mut tail = [f32::NEG_INFINITY; LANES];
    tail[..rest.len()].copy_from_slice(rest);
    for i in 0..LANES {
        tail[i] = exp(tail[i] - m);
        acc[i] += tail[i];
    }
    rest.copy_from_slice(&tail[..rest.len()]);
    let total = acc.iter().sum::<f32>();
    let inv = 1.0 / total;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

thread_local! {
    /// Scores of one (sample, head), reused: no allocation after warm-up.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The inference forward for short sequences (49 to 100 tokens, head dim
/// 32): per (sample, head) `S = Q Kᵀ · scale` and `O = softmax(S) V` as two
/// small GEMMs read straight out of the fused `qkv` rows, with the softmax
/// over S's rows in between. At N ≤ 100 the N×N scores are ≤ 40 KB, cache
/// resident; the GPU kernel streams them instead (flash-style). Tasks are
/// (sample, head) pairs; each writes its own columns of the output.
fn forward_pairs(qkv: &[f32], out: &mut [f32], s: AttentionShape) {
    let (n, d, dh) = (s.tokens, s.dim(), s.head_dim);
    let scale = 1.0 / (dh as f32).sqrt();
    let dst = SendPtr(out.as_mut_ptr());
    let task = |pair: usize| {
        let (b, h) = (pair / s.heads, pair % s.heads);
        let seq = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        let (q, k, v) = (&seq[h * dh..], &seq[d + h * dh..], &seq[2 * d + h * dh..]);
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            if scores.len() < n * n {
                scores.resize(n * n, 0.0);
            }
            let sc = &mut scores[..n * n];
            // SAFETY (both calls): every index gemm forms from these strides
            // stays inside `seq` (rows < n of stride 3d, columns < dh) or `sc`;
            // the output block (rows of sample b, columns of head h) is this
            // task's alone.
            unsafe {
                // S (n×n) = Q (n×dh, row stride 3d) · Kᵀ (dh×n: element (e, j) at k[j·3d + e]).
                gemm::gemm(
                    n,
                    n,
                    dh,
                    sc.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    (3 * d) as isize,
                    k.as_ptr(),
                    (3 * d) as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in sc.chunks_mut(n) {
                softmax_row(row);
            }
            unsafe {
                // O (n×dh, row stride d, at column h·dh) = P (n×n) · V (n×dh, row stride 3d).
                gemm::gemm(
                    n,
                    dh,
                    n,
                    dst.at(b * n * d + h * dh),
                    1,
                    d as isize,
                    false,
                    sc.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    (3 * d) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    };
    let pairs = s.batch * s.heads;
    split_items(pairs, true, &|range| range.for_each(task));
}

/// A head of no features has no scores to scale (1/√0): refused, as the
/// GPU's launch rules refuse it.
fn no_empty_heads(op: &str, s: AttentionShape) -> Result<()> {
    if s.head_dim == 0 {
        return Err(refuse(op, "head dim 0"));
    }
    Ok(())
}

/// `Backend::attention` on the CPU.
pub(crate) fn forward_cpu(qkv: &[f32], out: &mut [f32], s: AttentionShape) -> Result<()> {
    check_forward(qkv, out, s, |what, b: &[f32], need| check_len(OP, what, b.len(), need))?;
    no_empty_heads(OP, s)?;
    if s.tokens == 0 {
        // Nothing to compute, and the per-head slicing below needs a token.
        return Ok(());
    }
    let (nqkv, nout, _) = sizes(s);
    forward_pairs(&qkv[..nqkv], &mut out[..nout], s);
    Ok(())
}

/// `Train::attention_train` on the CPU: attention as the forward computes
/// it, keeping `P` per (sample, head) at `probs[(b·heads + h)·n²..]`, the
/// pairs on rayon's threads.
pub(crate) fn train_cpu(qkv: &[f32], out: &mut [f32], probs: &mut [f32], s: AttentionShape) -> Result<()> {
    check_train(qkv, out, probs, s, |what, b: &[f32], need| check_len(OP_TRAIN, what, b.len(), need))?;
    no_empty_heads(OP_TRAIN, s)?;
    if s.tokens == 0 {
        // Nothing to compute; an empty chunk size would panic below.
        return Ok(());
    }
    let (n, d, dh) = (s.tokens, s.dim(), s.head_dim);
    let scale = 1.0 / (dh as f32).sqrt();
    let dst = SendPtr(out.as_mut_ptr());
    probs[..s.batch * s.heads * n * n].par_chunks_mut(n * n).enumerate().for_each(|(pair, p)| {
        let (b, h) = (pair / s.heads, pair % s.heads);
        let seq = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        let (q, k, v) = (seq[h * dh..].as_ptr(), seq[d + h * dh..].as_ptr(), seq[2 * d + h * dh..].as_ptr());
        // SAFETY: views stay inside `seq` (rows < n of stride 3d, columns
        // < dh) or this pair's n×n block; the output columns of head h of
        // sample b are this task's alone.
        unsafe {
            gemm_strided(
                n,
                n,
                dh,
                Dst::write(p.as_mut_ptr(), n),
                View::rows(q, 3 * d),
                View::transposed(k, 3 * d),
                scale,
            );
        }
        for row in p.chunks_mut(n) {
            softmax_row(row);
        }
        unsafe {
            let out = Dst::write(dst.at(b * n * d + h * dh), d);
            gemm_strided(n, dh, n, out, View::rows(p.as_ptr(), n), View::rows(v, 3 * d), 1.0);
        }
    });
    Ok(())
}

/// `Train::attention_backward` on the CPU, the pairs on rayon's threads;
/// `scratch` holds one n×n block per (sample, head) for dP (no per-thread
/// buffers: which thread runs which pair must not decide what allocates).
pub(crate) fn backward_cpu(
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
    scratch: &mut [f32],
    s: AttentionShape,
) -> Result<()> {
    check_backward(qkv, probs, dout, dqkv, scratch, s, |what, b: &[f32], need| {
        check_len(OP_BACKWARD, what, b.len(), need)
    })?;
    no_empty_heads(OP_BACKWARD, s)?;
    if s.tokens == 0 {
        return Ok(());
    }
    let scratch = &mut scratch[..sizes(s).2];
    let (n, d, dh) = (s.tokens, s.dim(), s.head_dim);
    let scale = 1.0 / (dh as f32).sqrt();
    let dst = SendPtr(dqkv.as_mut_ptr());
    scratch.par_chunks_mut(n * n).enumerate().for_each(|(pair, dp)| {
        let (b, h) = (pair / s.heads, pair % s.heads);
        let seq = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        let (q, k, v) = (seq[h * dh..].as_ptr(), seq[d + h * dh..].as_ptr(), seq[2 * d + h * dh..].as_ptr());
        let p = &probs[pair * n * n..(pair + 1) * n * n];
        let dout = dout[b * n * d + h * dh..].as_ptr();
        let base = b * n * 3 * d;
        // SAFETY (every call): views stay inside `seq` (rows < n of stride
        // 3d, columns < dh), `dout` (rows of stride d), `p` or this pair's
        // scratch block; this task alone writes the columns of head h of sample b in dqkv.
        unsafe {
            // dV = Pᵀ dO.
            let dv = Dst::write(dst.at(base + 2 * d + h * dh), 3 * d);
            gemm_strided(n, dh, n, dv, View::transposed(p.as_ptr(), n), View::rows(dout, d), 1.0);
            // dP = dO Vᵀ.
            gemm_strided(
                n,
                n,
                dh,
                Dst::write(dp.as_mut_ptr(), n),
                View::rows(dout, d),
                View::transposed(v, 3 * d),
                1.0,
            );
        }
        // dS = P ⊙ (dP − rowsum(dP ⊙ P)), times the scale of S.
        for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
            let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
            dr.iter_mut().zip(pr).for_each(|(g, pv)| *g = pv * (*g - dot) * scale);
        }
        unsafe {
            // dQ = dS K; dK = dSᵀ Q.
            let dq = Dst::write(dst.at(base + h * dh), 3 * d);
            gemm_strided(n, dh, n, dq, View::rows(dp.as_ptr(), n), View::rows(k, 3 * d), 1.0);
            let dk = Dst::write(dst.at(base + d + h * dh), 3 * d);
            gemm_strided(n, dh, n, dk, View::transposed(dp.as_ptr(), n), View::rows(q, 3 * d), 1.0);
        }
    });
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/attention.cu` AttentionParams
    AttentionParams => Attention { qkv: u64, out: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32 }
);
params!(
    /// `kernels/attention.cu` AttentionTrainParams
    AttentionTrainParams => AttentionTrain {
        qkv: u64, out: u64, probs: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);
params!(
    /// `kernels/attention.cu` AttentionDqParams
    AttentionDqParams => AttentionDq {
        qkv: u64, probs: u64, dout: u64, dqkv: u64, ds: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);
params!(
    /// `kernels/attention.cu` AttentionDkvParams
    AttentionDkvParams => AttentionDkv {
        qkv: u64, probs: u64, dout: u64, ds: u64, dqkv: u64, batch: i32, tokens: i32, heads: i32, head_dim: i32,
    }
);

/// `quorum_attention`: 4 warps, 16 queries per block, head dim at most 64.
const ATT_THREADS: u32 = 128;
const ATT_QUERIES_PER_BLOCK: usize = 16;
const ATT_MAX_HEAD_DIM: usize = 64;
/// The training kernels: 4 warps per block, 16 query (or key) rows per
/// block, head dim at most 64 (two dims per lane), and at most 8 chunks of
/// 32 keys per lane in registers.
const ATT_TRAIN_THREADS: u32 = 128;
const ATT_TRAIN_ROWS_PER_BLOCK: usize = 16;
const ATT_TRAIN_MAX_HEAD_DIM: usize = 64;
const ATT_TRAIN_MAX_TOKENS: usize = 32 * 8;

/// `quorum_attention`'s dynamic shared memory: K padded to hd + 1, V, one query per warp.
pub fn forward_shared_bytes(tokens: usize, head_dim: usize) -> usize {
    4 * (tokens * (head_dim + 1) + tokens * head_dim + (ATT_THREADS as usize / 32) * head_dim)
}

/// `quorum_attention`: one block per (query tile, head, sample).
pub fn forward_cfg(batch: usize, tokens: usize, heads: usize, head_dim: usize) -> Result<LaunchConfig> {
    if head_dim == 0 || head_dim > ATT_MAX_HEAD_DIM {
        return Err(err(format!("attention: head dim {head_dim} outside 1..={ATT_MAX_HEAD_DIM}")));
    }
    cfg([tokens.div_ceil(ATT_QUERIES_PER_BLOCK), heads, batch], ATT_THREADS, forward_shared_bytes(tokens, head_dim))
}

/// The shared memory of `quorum_attention_train` and `quorum_attention_dq`:
/// one of K or V padded to hd + 1, and one hd-row per warp (the query, or dO).
pub fn train_shared_bytes(tokens: usize, head_dim: usize) -> usize {
    4 * (tokens * (head_dim + 1) + (ATT_TRAIN_THREADS as usize / 32) * head_dim)
}

/// The training kernels: one block per (tile of 16 query or key rows, head,
/// sample); `staged` for the kernels that hold K or V in shared memory.
pub fn train_cfg(s: AttentionShape, staged: bool) -> Result<LaunchConfig> {
    if s.head_dim == 0 || s.head_dim > ATT_TRAIN_MAX_HEAD_DIM {
        return Err(err(format!("attention training: head dim {} outside 1..={ATT_TRAIN_MAX_HEAD_DIM}", s.head_dim)));
    }
    if s.tokens > ATT_TRAIN_MAX_TOKENS {
        return Err(err(format!("attention training: {} tokens exceed {ATT_TRAIN_MAX_TOKENS}", s.tokens)));
    }
    let shared = if staged { train_shared_bytes(s.tokens, s.head_dim) } else { 0 };
    cfg([s.tokens.div_ceil(ATT_TRAIN_ROWS_PER_BLOCK), s.heads, s.batch], ATT_TRAIN_THREADS, shared)
}

/// `Backend::attention` on a `Gpu`: one launch of `quorum_attention`.
pub(crate) fn forward_gpu<D: Device>(gpu: &Gpu<D>, qkv: &D::Mem, out: &mut D::Mem, s: AttentionShape) -> Result<()> {
    check_forward(qkv, &*out, s, |what, m, need| gpu.check(OP, what, m, need))?;
    let cfg = forward_cfg(s.batch, s.tokens, s.heads, s.head_dim)?;
    let dev = gpu.device();
    let p = AttentionParams {
        qkv: dev.ptr(qkv),
        out: dev.ptr_mut(out),
        batch: gpu.int(OP, s.batch)?,
        tokens: gpu.int(OP, s.tokens)?,
        heads: gpu.int(OP, s.heads)?,
        head_dim: gpu.int(OP, s.head_dim)?,
    };
    launch_nonempty(gpu, cfg, &p)
}

/// The training kernels' ints of a shape, and whether there is anything to compute.
fn train_ints<D: Device>(gpu: &Gpu<D>, op: &str, s: AttentionShape) -> Result<([i32; 4], bool)> {
    let ints = [gpu.int(op, s.batch)?, gpu.int(op, s.tokens)?, gpu.int(op, s.heads)?, gpu.int(op, s.head_dim)?];
    gpu.int(op, s.batch * s.tokens * 3 * s.dim())?;
    Ok((ints, s.batch > 0 && s.tokens > 0 && s.heads > 0))
}

/// `Train::attention_train` on a `Gpu`: one launch of `quorum_attention_train`.
pub(crate) fn train_gpu<D: Device>(
    gpu: &Gpu<D>,
    qkv: &D::Mem,
    out: &mut D::Mem,
    probs: &mut D::Mem,
    s: AttentionShape,
) -> Result<()> {
    let op = OP_TRAIN;
    check_train(qkv, &*out, &*probs, s, |what, m, need| gpu.check(op, what, m, need))?;
    let cfg = train_cfg(s, true)?;
    let ([batch, tokens, heads, head_dim], work) = train_ints(gpu, op, s)?;
    if !work {
        return Ok(());
    }
    let dev = gpu.device();
    let p = AttentionTrainParams {
        qkv: dev.ptr(qkv),
        out: dev.ptr_mut(out),
        probs: dev.ptr_mut(probs),
        batch,
        tokens,
        heads,
        head_dim,
    };
    // SAFETY: sizes checked above.
    unsafe { dev.launch(cfg, &p) }
}

/// `Train::attention_backward` on a `Gpu`: `quorum_attention_dq` (dS into
/// the scratch, dQ), then `quorum_attention_dkv` (dK, dV).
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    qkv: &D::Mem,
    probs: &D::Mem,
    dout: &D::Mem,
    dqkv: &mut D::Mem,
    scratch: &mut D::Mem,
    s: AttentionShape,
) -> Result<()> {
    let op = OP_BACKWARD;
    check_backward(qkv, probs, dout, &*dqkv, &*scratch, s, |what, m, need| gpu.check(op, what, m, need))?;
    let (cfg_dq, cfg_dkv) = (train_cfg(s, true)?, train_cfg(s, false)?);
    let ([batch, tokens, heads, head_dim], work) = train_ints(gpu, op, s)?;
    if !work {
        return Ok(());
    }
    let dev = gpu.device();
    let (qkv, probs, dout) = (dev.ptr(qkv), dev.ptr(probs), dev.ptr(dout));
    let (dqkv, ds) = (dev.ptr_mut(dqkv), dev.ptr_mut(scratch));
    let dq = AttentionDqParams { qkv, probs, dout, dqkv, ds, batch, tokens, heads, head_dim };
    let dkv = AttentionDkvParams { qkv, probs, dout, ds, dqkv, batch, tokens, heads, head_dim };
    // SAFETY: sizes checked above; the dK/dV pass reads the dS the dQ
    // pass wrote, after it (launches on one stream run in order).
    unsafe {
        dev.launch(cfg_dq, &dq)?;
        dev.launch(cfg_dkv, &dkv)
    }
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<AttentionParams>(),
        c_size_agrees::<AttentionTrainParams>(),
        c_size_agrees::<AttentionDqParams>(),
        c_size_agrees::<AttentionDkvParams>(),
    ]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::{Emu, ThreadOrder};
    use crate::backend::ops::testing::{assert_close, data, each_short_buffer_is_named, wide};
    use crate::backend::{Backend, Train};
    use crate::Cpu;

    /// (batch, tokens, heads, head_dim): MPD's 49 tokens and 8 heads, TLOB's
    /// 100 tokens, odd sizes, a head dim of 64 (two dims per lane) past one
    /// chunk of 32 keys, one token.
    const SHAPES: [(usize, usize, usize, usize); 5] =
        [(1, 49, 8, 32), (3, 100, 4, 32), (2, 7, 3, 5), (2, 33, 2, 64), (1, 1, 1, 1)];

    fn shape(&(batch, tokens, heads, head_dim): &(usize, usize, usize, usize)) -> AttentionShape {
        AttentionShape { batch, tokens, heads, head_dim }
    }

    /// One case: `qkv` and `dout`.
    struct Case {
        s: AttentionShape,
        qkv: Vec<f32>,
        dout: Vec<f32>,
    }

    fn cases() -> impl Iterator<Item = Case> {
        SHAPES.iter().enumerate().map(|(i, sh)| {
            let s = shape(sh);
            let (nqkv, nout, _) = sizes(s);
            Case { s, qkv: data(nqkv, 1 + 10 * i as u64, 1.0), dout: data(nout, 2 + 10 * i as u64, 1.0) }
        })
    }

    fn read<B: Train>(be: &B, b: &B::Buf, n: usize) -> Vec<f32> {
        let mut v = vec![0f32; n];
        be.read(b, &mut v).unwrap();
        v
    }

    impl Case {
        /// The forward, the training forward (out, probs) and the backward
        /// (dqkv) on `be`, every output starting as NaN (each is written
        /// whole), the backward from the training forward's probabilities.
        fn run<B: Train>(&self, be: &B) -> [Vec<f32>; 4] {
            let s = self.s;
            let (nqkv, nout, np) = sizes(s);
            let nan = |n: usize| be.upload(&vec![f32::NAN; n]).unwrap();
            let qkv = be.upload(&self.qkv).unwrap();
            let mut out = nan(nout);
            be.attention(&qkv, &mut out, s).unwrap();
            let (mut out_t, mut probs) = (nan(nout), nan(np));
            be.attention_train(&qkv, &mut out_t, &mut probs, s).unwrap();
            let (mut dqkv, mut scratch) = (nan(nqkv), nan(np));
            be.attention_backward(&qkv, &probs, &be.upload(&self.dout).unwrap(), &mut dqkv, &mut scratch, s).unwrap();
            [read(be, &out, nout), read(be, &out_t, nout), read(be, &probs, np), read(be, &dqkv, nqkv)]
        }

        /// `be`'s results against the reference.
        fn check<B: Train>(&self, be: &B, what: &str) -> [Vec<f32>; 4] {
            let what = format!("{what} {:?}", self.s);
            let qkv = wide(&self.qkv);
            let [out, out_t, probs, dqkv] = self.run(be);
            let want = reference_forward(&qkv, self.s);
            assert_close(&format!("{what}: attention out"), &out, &want);
            assert_close(&format!("{what}: attention_train out"), &out_t, &want);
            assert_close(&format!("{what}: probs"), &probs, &reference_probs(&qkv, self.s));
            assert_close(&format!("{what}: dqkv"), &dqkv, &reference_backward(&qkv, &wide(&self.dout), self.s));
            [out, out_t, probs, dqkv]
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        // L = Σ out·r: dL/dqkv by central differences in f64.
        let s = AttentionShape { batch: 2, tokens: 5, heads: 2, head_dim: 3 };
        let (nqkv, nout, _) = sizes(s);
        let (qkv, r) = (wide(&data(nqkv, 3, 1.0)), wide(&data(nout, 4, 1.0)));
        let loss = |qkv: &[f64]| -> f64 { reference_forward(qkv, s).iter().zip(&r).map(|(o, r)| o * r).sum() };
        let grads = reference_backward(&qkv, &r, s);
        let h = 1e-6;
        for i in 0..nqkv {
            let (mut p, mut m) = (qkv.clone(), qkv.clone());
            p[i] += h;
            m[i] -= h;
            let want = (loss(&p) - loss(&m)) / (2.0 * h);
            assert!((grads[i] - want).abs() < 1e-6, "dqkv[{i}]: {} vs {want}", grads[i]);
        }
    }

    #[test]
    fn cpu_forward_is_within_1e_5_of_the_reference() {
        // The bound the CPU's attention test held before the move, at its shapes.
        let cpu = Cpu::new();
        for sh in [(1, 49, 8, 32), (3, 100, 4, 32), (2, 7, 3, 5)] {
            let s = shape(&sh);
            let (nqkv, nout, _) = sizes(s);
            let qkv: Vec<f32> = (0..nqkv).map(|i| ((i as f32 + 5.0) * 0.618).sin()).collect();
            let mut out = vec![f32::NAN; nout];
            cpu.attention(&qkv, &mut out, s).unwrap();
            for (i, (got, want)) in out.iter().zip(reference_forward(&wide(&qkv), s)).enumerate() {
                assert!((f64::from(*got) - want).abs() < 1e-5, "{s:?} at {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn cpu_matches_the_reference() {
        let cpu = Cpu::new();
        for case in cases() {
            case.check(&cpu, "cpu");
        }
    }

    #[test]
    fn emulator_matches_the_reference_with_the_same_bits_in_every_thread_order() {
        let bits =
            |v: &[Vec<f32>]| v.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect::<Vec<Vec<u32>>>();
        for case in cases() {
            let mut first = None;
            for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
                let got = bits(&case.check(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}")));
                let first = first.get_or_insert_with(|| got.clone());
                assert!(got == *first, "emu {order:?} {:?}: other bits than the first order's", case.s);
            }
        }
    }

    #[test]
    fn short_buffers_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let s = AttentionShape { batch: 2, tokens: 3, heads: 2, head_dim: 4 };
            let (nqkv, nout, np) = sizes(s);
            let z = |n: usize| be.alloc(n).unwrap();
            let fwd = |q, o| be.attention(&z(q), &mut z(o), s);
            fwd(nqkv, nout).unwrap();
            for (what, (q, o)) in [("qkv", (nqkv - 1, nout)), ("out", (nqkv, nout - 1))] {
                let err = fwd(q, o).unwrap_err().to_string();
                assert!(err.contains(&format!("attention: buffer {what} ")), "{}: {err}", be.name());
            }
            let train = |n: [usize; 3]| be.attention_train(&z(n[0]), &mut z(n[1]), &mut z(n[2]), s);
            each_short_buffer_is_named(be.name(), "attention_train", ["qkv", "out", "probs"], [nqkv, nout, np], train);
            let bwd =
                |n: [usize; 5]| be.attention_backward(&z(n[0]), &z(n[1]), &z(n[2]), &mut z(n[3]), &mut z(n[4]), s);
            let names = ["qkv", "probs", "dout", "dqkv", "scratch"];
            each_short_buffer_is_named(be.name(), "attention_backward", names, [nqkv, np, nout, nqkv, np], bwd);
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn the_kernels_bounds_are_refused_on_the_gpu() {
        let gpu = Gpu::new(Emu::new());
        let z = |n: usize| gpu.alloc(n).unwrap();
        let wide = AttentionShape { batch: 1, tokens: 3, heads: 1, head_dim: 65 };
        let (nqkv, nout, np) = sizes(wide);
        let err = gpu.attention(&z(nqkv), &mut z(nout), wide).unwrap_err().to_string();
        assert!(err.contains("head dim 65 outside 1..=64"), "{err}");
        let err = gpu.attention_train(&z(nqkv), &mut z(nout), &mut z(np), wide).unwrap_err().to_string();
        assert!(err.contains("head dim 65 outside 1..=64"), "{err}");
        let long = AttentionShape { batch: 1, tokens: 257, heads: 1, head_dim: 4 };
        let (nqkv, nout, np) = sizes(long);
        let err = gpu.attention_train(&z(nqkv), &mut z(nout), &mut z(np), long).unwrap_err().to_string();
        assert!(err.contains("257 tokens exceed 256"), "{err}");
        let err = gpu.attention_backward(&z(nqkv), &z(np), &z(nout), &mut z(nqkv), &mut z(np), long).unwrap_err();
        assert!(err.to_string().contains("257 tokens exceed 256"), "{err}");
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_the_order() {
        // Tails past the 16 lanes, and a score far below the others.
        let mut s = vec![1.0, 2.0, 3.0, -1.0e30, 0.5];
        softmax_row(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(s[3], 0.0);
        assert!(s[2] > s[1] && s[1] > s[0] && s[0] > s[4]);
        let mut s: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let want: Vec<f64> = {
            let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = s.iter().map(|&v| (v as f64 - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        };
        softmax_row(&mut s);
        assert_close("softmax of 37", &s, &want);
    }

    #[test]
    fn parameter_structs_have_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<AttentionParams>(), 2 * 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<AttentionTrainParams>(), 3 * 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<AttentionDqParams>(), 5 * 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<AttentionDkvParams>(), 5 * 8 + 4 * 4);
    }

    #[test]
    fn the_forward_fits_default_shared_memory_at_model_sizes() {
        // TLOB: 100 tokens, head dim 32: 26.5 KiB.
        let c = forward_cfg(17, 100, 4, 32).unwrap();
        assert_eq!(c.grid, [7, 4, 17]);
        assert_eq!(c.shared_bytes as usize, 4 * (100 * 33 + 100 * 32 + 4 * 32));
        assert_eq!(forward_cfg(1, 49, 8, 32).unwrap().grid, [4, 8, 1]);
        assert!(forward_cfg(1, 49, 1, 65).is_err());
        assert!(forward_cfg(1, 400, 1, 32).is_err(), "K/V of 400 tokens exceed 48 KiB");
    }

    #[test]
    fn training_fits_default_shared_memory_at_model_sizes() {
        // TLOB: 100 tokens; even at head dim 64 one padded K (or V) fits.
        let s = AttentionShape { batch: 17, tokens: 100, heads: 4, head_dim: 64 };
        let c = train_cfg(s, true).unwrap();
        assert_eq!(c.grid, [7, 4, 17]);
        assert_eq!(c.block, [128, 1, 1]);
        assert_eq!(c.shared_bytes as usize, 4 * (100 * 65 + 4 * 64));
        assert_eq!(train_cfg(s, false).unwrap().shared_bytes, 0);
        let mpd = AttentionShape { batch: 1, tokens: 50, heads: 8, head_dim: 32 };
        assert_eq!(train_cfg(mpd, true).unwrap().grid, [4, 8, 1]);
        assert!(train_cfg(AttentionShape { head_dim: 65, ..mpd }, true).is_err());
        assert!(train_cfg(AttentionShape { head_dim: 0, ..mpd }, true).is_err());
        assert!(train_cfg(AttentionShape { tokens: 257, head_dim: 8, ..mpd }, false).is_err());
        assert!(train_cfg(AttentionShape { tokens: 256, head_dim: 64, ..mpd }, true).is_err(), "48 KiB");
    }

    #[test]
    fn no_tokens_no_samples_or_no_heads_is_nothing_to_do_on_both_backends() {
        // Each of these panicked on the CPU before (a zero chunk size, a
        // slice past an empty sequence).
        fn empty<B: Train>(be: &B) {
            for s in [
                AttentionShape { batch: 2, tokens: 0, heads: 3, head_dim: 4 },
                AttentionShape { batch: 0, tokens: 5, heads: 3, head_dim: 4 },
                AttentionShape { batch: 2, tokens: 5, heads: 0, head_dim: 4 },
            ] {
                let (nqkv, nout, nprobs) = sizes(s);
                let z = |n: usize| be.alloc(n).unwrap();
                let (qkv, mut out, mut probs) = (z(nqkv), z(nout), z(nprobs));
                be.attention(&qkv, &mut out, s).unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
                be.attention_train(&qkv, &mut out, &mut probs, s)
                    .unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
                let (mut dqkv, mut scratch) = (z(nqkv), z(nprobs));
                be.attention_backward(&qkv, &probs, &z(nout), &mut dqkv, &mut scratch, s)
                    .unwrap_or_else(|e| panic!("{} {s:?}: {e}", be.name()));
            }
        }
        empty(&Cpu::new());
        empty(&Gpu::new(Emu::new()));
    }
}
