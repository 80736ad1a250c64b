//! The three output heads over a pooled `z (batch, dim)`: direction logits
//! `z·Wᵀ + b (batch, classes)`, confidence `σ(z·w_c + b_c) (batch)` and
//! expected return `z·w_r + b_r (batch)`, weights in PyTorch's `(n_out, dim)`
//! layout; and for training, docs/training.md's multi-task loss of one set of
//! heads (cross-entropy + BCE on "is the argmax right" + Huber δ = 1) with its
//! gradients, added `grad_scale ·` into the heads' parameter gradients and
//! into `dz`.
//!
//! Every piece of the op but its signatures (`Backend::heads`,
//! `Train::heads_loss`, with `HeadsRef`, `HeadsOut`, `HeadsGrads`,
//! `HeadsLoss`, `HeadsTargets`) and its kernels (`kernels/heads.cu`):
//! - the shape checks, one list for both backends;
//! - the reference, plain f64 loops of the forward and of the loss and its
//!   gradients, that the tests compare with;
//! - the CPU: a row at a time with the backend's `dot` and `axpy`, the loss
//!   of each sample in f64 (`sample_loss`);
//! - the GPU: the three kernels' parameter structs, launch rules and
//!   launches (a block per sample for the forward and the loss; then the
//!   parameter gradients a thread per element over the samples in order, see
//!   the `.cu`), and the losses read back through the backend's scratch;
//! - the tests: the CPU and the emulator against the reference, the
//!   reference against finite differences, the loss's outputs bit for bit the
//!   forward's, the emulator's bits the same in every thread order, the launch
//!   rules, the refusals.
//!
//! Also exercised from `tests/`: against the CPU on the emulator and on a GPU
//! through `tests/common/kernels.rs` (`fused_heads`) and
//! `tests/common/train_elementwise.rs` (`heads_loss_matches_cpu`,
//! `reduction_bits`, `short_buffers_are_errors`); the CPU against the
//! formula and finite differences (`train_ops`).

use crate::backend::cpu::{check_len, simd, Cpu};
use crate::backend::gpu::launch::{self, cfg};
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{f64_from_words, launch_nonempty, Device, Gpu, LaunchConfig};
use crate::backend::{Backend, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets};
use crate::error::{Error, Result};

const OP: &str = "heads";
const OP_LOSS: &str = "heads_loss";

/// heads.cu: the loss's class count, the scratch header and per-sample
/// record (32-bit words), threads per sample.
const HEADS_CLASSES: usize = 3;
const HEADS_HEADER: usize = 4;
const HEADS_RECORD: usize = 8;
const HEADS_THREADS: u32 = 128;

// ------------------------------------------------------------------ shapes

/// The forward's buffers and the values each must hold, checked in this order.
fn check_forward<B: Backend + ?Sized>(
    z: &B::Buf,
    p: &HeadsRef<'_, B>,
    out: &HeadsOut<'_, B>,
    batch: usize,
    dim: usize,
    check: impl Fn(&str, &B::Buf, usize) -> Result<()>,
) -> Result<()> {
    let c = p.classes;
    check("z", z, batch * dim)?;
    check("direction.weight", p.direction_w, c * dim)?;
    check("direction.bias", p.direction_b, c)?;
    check("confidence.weight", p.confidence_w, dim)?;
    check("confidence.bias", p.confidence_b, 1)?;
    check("expected_return.weight", p.return_w, dim)?;
    check("expected_return.bias", p.return_b, 1)?;
    check("logits", out.logits, batch * c)?;
    check("confidence", out.confidence, batch)?;
    check("expected_return", out.expected_return, batch)
}

/// The loss's buffers: the forward's, the targets, and with gradients `dz`
/// and the six parameter gradients, checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_loss<B: Backend + ?Sized>(
    z: &B::Buf,
    p: &HeadsRef<'_, B>,
    out: &HeadsOut<'_, B>,
    targets: &HeadsTargets<'_, B>,
    grads: Option<(&HeadsGrads<'_, B>, &B::Buf)>,
    batch: usize,
    dim: usize,
    check: impl Fn(&str, &B::Buf, usize) -> Result<()>,
) -> Result<()> {
    let c = p.classes;
    check_forward(z, p, out, batch, dim, &check)?;
    check("class", targets.class, batch)?;
    check("ret", targets.ret, batch)?;
    if let Some((g, dz)) = grads {
        check("dz", dz, batch * dim)?;
        check("direction.weight grad", g.direction_w, c * dim)?;
        check("direction.bias grad", g.direction_b, c)?;
        check("confidence.weight grad", g.confidence_w, dim)?;
        check("confidence.bias grad", g.confidence_b, 1)?;
        check("expected_return.weight grad", g.return_w, dim)?;
        check("expected_return.bias grad", g.return_b, 1)?;
    }
    Ok(())
}

/// The loss is docs/training.md's, over three classes (down, flat, up).
fn check_classes(classes: usize, err: impl Fn(String) -> Error) -> Result<()> {
    if classes != HEADS_CLASSES {
        return Err(err(format!("{OP_LOSS}: {classes} classes, needs {HEADS_CLASSES}")));
    }
    Ok(())
}

// --------------------------------------------------------------- reference

/// The heads' parameters in f64, PyTorch's layout, in the order
/// `[direction.weight (classes, dim), direction.bias (classes),
/// confidence.weight (dim), confidence.bias (1), expected_return.weight
/// (dim), expected_return.bias (1)]`: the reference's input, and its
/// gradients' shape.
pub type ReferenceParams = [Vec<f64>; 6];

/// The forward's outputs in f64, and the confidence before its sigmoid.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceOutputs {
    pub logits: Vec<f64>,
    pub confidence_pre: Vec<f64>,
    pub confidence: Vec<f64>,
    pub expected_return: Vec<f64>,
}

/// The forward in f64, sample by sample.
pub fn reference_forward(z: &[f64], p: &ReferenceParams, batch: usize, dim: usize) -> ReferenceOutputs {
    let classes = p[1].len();
    let dot = |zr: &[f64], w: &[f64]| zr.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    let mut out = ReferenceOutputs {
        logits: Vec::with_capacity(batch * classes),
        confidence_pre: Vec::with_capacity(batch),
        confidence: Vec::with_capacity(batch),
        expected_return: Vec::with_capacity(batch),
    };
    for b in 0..batch {
        let zr = &z[b * dim..(b + 1) * dim];
        for k in 0..classes {
            out.logits.push(dot(zr, &p[0][k * dim..(k + 1) * dim]) + p[1][k]);
        }
        let s = dot(zr, &p[2]) + p[3][0];
        out.confidence_pre.push(s);
        out.confidence.push(1.0 / (1.0 + (-s).exp()));
        out.expected_return.push(dot(zr, &p[4]) + p[5][0]);
    }
    out
}

/// The loss summed over the batch and `grad_scale ·` its gradients, in f64
/// (not added into anything).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceLoss {
    pub loss: f64,
    pub grads: ReferenceParams,
    pub dz: Vec<f64>,
}

/// docs/training.md's loss of each sample from the f64 forward, summed, and
/// its gradients: with `p = softmax(logits)`, `t = [argmax(logits) == class]`
/// (the first maximum), `d = expected_return − target`,
/// `dlogit_k = w_dir·(p_k − [k == class])`, `dconf_pre = w_conf·(σ(conf_pre) − t)`,
/// `dreturn = w_ret·clamp(d, −1, 1)`; each parameter's gradient is the
/// sum over samples of its head value's gradient times `z` (weights) or 1
/// (biases), and `dz` the sum over heads of the head value's gradient times
/// the head's weight row.
pub fn reference_loss(
    z: &[f64],
    p: &ReferenceParams,
    class: &[usize],
    target: &[f64],
    w: HeadsLoss,
    batch: usize,
    dim: usize,
) -> ReferenceLoss {
    let classes = p[1].len();
    let (wd, wc, wr, scale) =
        (f64::from(w.direction), f64::from(w.confidence), f64::from(w.ret), f64::from(w.grad_scale));
    let f = reference_forward(z, p, batch, dim);
    let mut out = ReferenceLoss { loss: 0.0, grads: p.clone().map(|v| vec![0.0; v.len()]), dz: vec![0.0; batch * dim] };
    for b in 0..batch {
        let logits = &f.logits[b * classes..(b + 1) * classes];
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        let ce = lse - logits[class[b]];
        let best = (1..classes).fold(0, |best, k| if logits[k] > logits[best] { k } else { best });
        let t = if best == class[b] { 1.0 } else { 0.0 };
        let conf = f.confidence[b];
        let bce = -(t * conf.ln().max(-100.0) + (1.0 - t) * (1.0 - conf).ln().max(-100.0));
        let d = f.expected_return[b] - target[b];
        let huber = if d.abs() < 1.0 { 0.5 * d * d } else { d.abs() - 0.5 };
        out.loss += wd * ce + wc * bce + wr * huber;
        // Each head value's gradient, then the parameters' and z's through it.
        let mut g: Vec<f64> = (0..classes)
            .map(|k| scale * wd * ((logits[k] - lse).exp() - if k == class[b] { 1.0 } else { 0.0 }))
            .collect();
        g.push(scale * wc * (conf - t));
        g.push(scale * wr * d.clamp(-1.0, 1.0));
        let zr = &z[b * dim..(b + 1) * dim];
        for (h, &gh) in g.iter().enumerate() {
            // Head h's weight row and bias: a class row of direction, or confidence, or return.
            let (wi, bi, row) =
                if h < classes { (0, 1, h) } else { (2 * (h - classes + 1), 2 * (h - classes + 1) + 1, 0) };
            for i in 0..dim {
                out.grads[wi][row * dim + i] += gh * zr[i];
                out.dz[b * dim + i] += gh * p[wi][row * dim + i];
            }
            out.grads[bi][row] += gh;
        }
    }
    out
}

// --------------------------------------------------------------------- CPU

/// The three heads of each sample, the confidence through an exact sigmoid.
fn forward_rows(z: &[f32], p: &HeadsRef<'_, Cpu>, out: &mut HeadsOut<'_, Cpu>, batch: usize, dim: usize) {
    let c = p.classes;
    for bi in 0..batch {
        let zr = &z[bi * dim..(bi + 1) * dim];
        for k in 0..c {
            out.logits[bi * c + k] = simd::dot(zr, &p.direction_w[k * dim..(k + 1) * dim]) + p.direction_b[k];
        }
        let conf = simd::dot(zr, &p.confidence_w[..dim]) + p.confidence_b[0];
        // Exact sigmoid here: one value per sample, and it is an output
        // with the tightest tolerance (1e-5 absolute).
        out.confidence[bi] = 1.0 / (1.0 + (-conf).exp());
        out.expected_return[bi] = simd::dot(zr, &p.return_w[..dim]) + p.return_b[0];
    }
}

/// `Backend::heads` on the CPU.
pub(crate) fn forward_cpu(
    z: &Vec<f32>,
    p: HeadsRef<'_, Cpu>,
    mut out: HeadsOut<'_, Cpu>,
    batch: usize,
    dim: usize,
) -> Result<()> {
    check_forward(z, &p, &out, batch, dim, |what, b: &Vec<f32>, need| check_len(OP, what, b.len(), need))?;
    forward_rows(z, &p, &mut out, batch, dim);
    Ok(())
}

/// `ln σ(s)` without overflow: `−softplus(−s)`.
fn log_sigmoid(s: f64) -> f64 {
    if s >= 0.0 {
        -(-s).exp().ln_1p()
    } else {
        s - s.exp().ln_1p()
    }
}

/// The per-sample loss of one set of heads and the gradients of its three
/// head values: docs/training.md's CE + BCE (on the sigmoid, target "argmax is
/// right", PyTorch's log clamp at −100) + Huber δ = 1.
fn sample_loss(logits: &[f32], conf_pre: f32, ret: f32, class: usize, target: f32, w: HeadsLoss) -> (f64, [f32; 5]) {
    let c = logits.len();
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    let lse = m + z.ln();
    let ce = lse - logits[class] as f64;
    // argmax: the first maximum, as torch.argmax.
    let mut best = 0;
    for k in 1..c {
        if logits[k] > logits[best] {
            best = k;
        }
    }
    let right = if best == class { 1.0 } else { 0.0 };
    let s = conf_pre as f64;
    let bce = -(right * log_sigmoid(s).max(-100.0) + (1.0 - right) * log_sigmoid(-s).max(-100.0));
    let d = ret as f64 - target as f64;
    let huber = if d.abs() < 1.0 { 0.5 * d * d } else { d.abs() - 0.5 };
    let loss = w.direction as f64 * ce + w.confidence as f64 * bce + w.ret as f64 * huber;
    let mut g = [0f32; 5];
    for k in 0..c.min(3) {
        let p = (logits[k] as f64 - lse).exp();
        g[k] = (w.direction as f64 * (p - if k == class { 1.0 } else { 0.0 })) as f32 * w.grad_scale;
    }
    let p = 1.0 / (1.0 + (-s).exp());
    g[3] = (w.confidence as f64 * (p - right)) as f32 * w.grad_scale;
    g[4] = w.ret * (d.clamp(-1.0, 1.0) as f32) * w.grad_scale;
    (loss, g)
}

/// `Train::heads_loss` on the CPU: the forward, then sample by sample its
/// loss (f64, summed in order) and, with gradients, `axpy`s of the head
/// values' gradients into the parameters' gradients and `dz`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_cpu(
    z: &Vec<f32>,
    p: HeadsRef<'_, Cpu>,
    mut out: HeadsOut<'_, Cpu>,
    targets: HeadsTargets<'_, Cpu>,
    loss: HeadsLoss,
    mut grads: Option<(HeadsGrads<'_, Cpu>, &mut Vec<f32>)>,
    batch: usize,
    dim: usize,
) -> Result<f64> {
    let c = p.classes;
    check_classes(c, |reason| Error::Backend { backend: "cpu".into(), reason })?;
    let g = grads.as_ref().map(|(g, dz)| (g, &**dz));
    check_loss(z, &p, &out, &targets, g, batch, dim, |what, b: &Vec<f32>, need| {
        check_len(OP_LOSS, what, b.len(), need)
    })?;
    // Every class before anything is written: a refused batch changes nothing.
    if let Some(bi) = targets.class[..batch].iter().position(|&c| !(c == 0.0 || c == 1.0 || c == 2.0)) {
        let class = targets.class[bi];
        return Err(Error::input("targets.class", format!("sample {bi}: class {class} is not 0, 1 or 2")));
    }
    forward_rows(z, &p, &mut out, batch, dim);
    let mut total = 0f64;
    for bi in 0..batch {
        let zr = &z[bi * dim..(bi + 1) * dim];
        let class = targets.class[bi];
        // The confidence head's pre-sigmoid value, recomputed exactly.
        let conf_pre = simd::dot(zr, &p.confidence_w[..dim]) + p.confidence_b[0];
        let logits = &out.logits[bi * c..(bi + 1) * c];
        let (l, g) = sample_loss(logits, conf_pre, out.expected_return[bi], class as usize, targets.ret[bi], loss);
        total += l;
        if let Some((hg, dz)) = grads.as_mut() {
            let dzr = &mut dz[bi * dim..(bi + 1) * dim];
            for (k, &gk) in g[..c].iter().enumerate() {
                simd::axpy(gk, zr, &mut hg.direction_w[k * dim..(k + 1) * dim]);
                hg.direction_b[k] += gk;
                simd::axpy(gk, &p.direction_w[k * dim..(k + 1) * dim], dzr);
            }
            simd::axpy(g[3], zr, &mut hg.confidence_w[..dim]);
            hg.confidence_b[0] += g[3];
            simd::axpy(g[3], &p.confidence_w[..dim], dzr);
            simd::axpy(g[4], zr, &mut hg.return_w[..dim]);
            hg.return_b[0] += g[4];
            simd::axpy(g[4], &p.return_w[..dim], dzr);
        }
    }
    Ok(total)
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/heads.cu` HeadsParams
    HeadsParams => Heads {
        z: u64, dir_w: u64, dir_b: u64, conf_w: u64, conf_b: u64, ret_w: u64, ret_b: u64,
        logits: u64, confidence: u64, expected_return: u64, batch: i32, dim: i32, classes: i32,
    }
);
params!(
    /// `kernels/heads.cu` HeadsLossParams; `dz` 0 for the loss alone.
    HeadsLossParams => HeadsLoss {
        z: u64, dir_w: u64, dir_b: u64, conf_w: u64, conf_b: u64, ret_w: u64, ret_b: u64,
        logits: u64, confidence: u64, expected_return: u64, target_class: u64, target_ret: u64, dz: u64, scratch: u64,
        batch: i32, dim: i32, classes: i32, w_direction: f32, w_confidence: f32, w_ret: f32, grad_scale: f32,
    }
);
params!(
    /// `kernels/heads.cu` HeadsParamGradsParams; `grads` 0: only the loss sum.
    HeadsParamGradsParams => HeadsParamGrads {
        z: u64, scratch: u64, dir_w: u64, dir_b: u64, conf_w: u64, conf_b: u64, ret_w: u64, ret_b: u64,
        batch: i32, dim: i32, grads: i32, _pad: i32,
    }
);

/// `quorum_heads`: one block of 4 warps per sample.
pub fn forward_cfg(batch: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], 128, 0)
}

/// `quorum_heads_loss`: one block of 4 warps per sample.
pub fn loss_cfg(batch: usize) -> Result<LaunchConfig> {
    cfg([batch, 1, 1], HEADS_THREADS, 0)
}

/// `Backend::heads` on a `Gpu`: one launch of `quorum_heads`.
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    z: &D::Mem,
    p: HeadsRef<'_, Gpu<D>>,
    out: HeadsOut<'_, Gpu<D>>,
    batch: usize,
    dim: usize,
) -> Result<()> {
    check_forward(z, &p, &out, batch, dim, |what, m, need| gpu.check(OP, what, m, need))?;
    let dev = gpu.device();
    let prm = HeadsParams {
        z: dev.ptr(z),
        dir_w: dev.ptr(p.direction_w),
        dir_b: dev.ptr(p.direction_b),
        conf_w: dev.ptr(p.confidence_w),
        conf_b: dev.ptr(p.confidence_b),
        ret_w: dev.ptr(p.return_w),
        ret_b: dev.ptr(p.return_b),
        logits: dev.ptr_mut(out.logits),
        confidence: dev.ptr_mut(out.confidence),
        expected_return: dev.ptr_mut(out.expected_return),
        batch: gpu.int(OP, batch)?,
        dim: gpu.int(OP, dim)?,
        classes: gpu.int(OP, p.classes)?,
    };
    launch_nonempty(gpu, forward_cfg(batch)?, &prm)
}

/// `Train::heads_loss` on a `Gpu`: per-sample losses and head-value
/// gradients into the scratch (one block per sample, which also adds its dz
/// row), then the parameter gradients (a thread per element over the
/// samples in order) and the loss summed in sample order (f64) on the
/// device; the host reads the sum and whether a class target was invalid.
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_gpu<D: Device>(
    gpu: &Gpu<D>,
    z: &D::Mem,
    p: HeadsRef<'_, Gpu<D>>,
    out: HeadsOut<'_, Gpu<D>>,
    targets: HeadsTargets<'_, Gpu<D>>,
    loss: HeadsLoss,
    grads: Option<(HeadsGrads<'_, Gpu<D>>, &mut D::Mem)>,
    batch: usize,
    dim: usize,
) -> Result<f64> {
    let op = OP_LOSS;
    check_classes(p.classes, |reason| gpu.err(reason))?;
    let g = grads.as_ref().map(|(g, dz)| (g, &**dz));
    check_loss(z, &p, &out, &targets, g, batch, dim, |what, m, need| gpu.check(op, what, m, need))?;
    if batch == 0 {
        // No sample: no loss and nothing to add (and CUDA refuses the empty grid).
        return Ok(0.0);
    }
    let dev = gpu.device();
    let (batch_i, dim_i) = (gpu.int(op, batch)?, gpu.int(op, dim)?);
    let elems = if grads.is_some() { gpu.int(op, 5 * dim + 5)? as usize } else { 0 };
    let mut header = [0f32; HEADS_HEADER];
    gpu.with_scratch(HEADS_HEADER + HEADS_RECORD * batch, |scratch| {
        let scratch_ptr = dev.ptr_mut(scratch);
        let mut pg = HeadsParamGradsParams {
            z: dev.ptr(z),
            scratch: scratch_ptr,
            batch: batch_i,
            dim: dim_i,
            ..Default::default()
        };
        let mut dz_ptr = 0;
        if let Some((g, dz)) = grads {
            dz_ptr = dev.ptr_mut(dz);
            pg.dir_w = dev.ptr_mut(g.direction_w);
            pg.dir_b = dev.ptr_mut(g.direction_b);
            pg.conf_w = dev.ptr_mut(g.confidence_w);
            pg.conf_b = dev.ptr_mut(g.confidence_b);
            pg.ret_w = dev.ptr_mut(g.return_w);
            pg.ret_b = dev.ptr_mut(g.return_b);
            pg.grads = 1;
        }
        let pl = HeadsLossParams {
            z: dev.ptr(z),
            dir_w: dev.ptr(p.direction_w),
            dir_b: dev.ptr(p.direction_b),
            conf_w: dev.ptr(p.confidence_w),
            conf_b: dev.ptr(p.confidence_b),
            ret_w: dev.ptr(p.return_w),
            ret_b: dev.ptr(p.return_b),
            logits: dev.ptr_mut(out.logits),
            confidence: dev.ptr_mut(out.confidence),
            expected_return: dev.ptr_mut(out.expected_return),
            target_class: dev.ptr(targets.class),
            target_ret: dev.ptr(targets.ret),
            dz: dz_ptr,
            scratch: scratch_ptr,
            batch: batch_i,
            dim: dim_i,
            classes: HEADS_CLASSES as i32,
            w_direction: loss.direction,
            w_confidence: loss.confidence,
            w_ret: loss.ret,
            grad_scale: loss.grad_scale,
        };
        // SAFETY: every buffer checked above; the scratch holds the header and a record per sample.
        unsafe {
            dev.launch(loss_cfg(batch)?, &pl)?;
            dev.launch(launch::elementwise(elems + 1)?, &pg)?;
        }
        dev.read(scratch, &mut header)
    })?;
    let bad = header[2].to_bits();
    if bad != 0 {
        return Err(Error::input("targets.class", format!("sample {}: class is not 0, 1 or 2", bad - 1)));
    }
    Ok(f64_from_words(header[0], header[1]))
}

/// This op's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![c_size_agrees::<HeadsParams>(), c_size_agrees::<HeadsLossParams>(), c_size_agrees::<HeadsParamGradsParams>()]
}

// ------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::{Emu, ThreadOrder};
    use crate::backend::ops::testing::{assert_close, data, each_short_buffer_is_named, wide};
    use crate::backend::Train;

    /// (batch, dim): one sample, the models' widths, 17 samples (more
    /// blocks than one), widths off the warp's 32 lanes and the CPU's 16.
    const SHAPES: [(usize, usize); 6] = [(1, 32), (3, 112), (17, 256), (17, 33), (5, 7), (2, 1)];

    /// One case: `z`, the six parameters, the targets (every class, return
    /// targets on both sides of Huber's kink), nonzero starting gradients
    /// and `dz` (the backward adds).
    struct Case {
        batch: usize,
        dim: usize,
        z: Vec<f32>,
        params: [Vec<f32>; 6],
        class: Vec<f32>,
        target: Vec<f32>,
        grads0: [Vec<f32>; 6],
        dz0: Vec<f32>,
        loss: HeadsLoss,
    }

    fn case(i: usize, batch: usize, dim: usize) -> Case {
        let s = 20 * i as u64;
        let lens = [3 * dim, 3, dim, 1, dim, 1];
        let scale = 1.0 / (dim as f32).sqrt();
        Case {
            batch,
            dim,
            z: data(batch * dim, s + 1, 2.0),
            params: std::array::from_fn(|j| data(lens[j], s + 2 + j as u64, scale)),
            class: (0..batch).map(|b| ((b + i) % 3) as f32).collect(),
            target: (0..batch).map(|b| if b % 2 == 0 { 2.5 } else { -0.2 }).collect(),
            grads0: std::array::from_fn(|j| data(lens[j], s + 10 + j as u64, 0.1)),
            dz0: data(batch * dim, s + 17, 0.3),
            loss: HeadsLoss { direction: 1.0, confidence: 0.5, ret: 0.3, grad_scale: 1.0 / batch as f32 },
        }
    }

    fn cases() -> impl Iterator<Item = Case> {
        SHAPES.iter().enumerate().map(|(i, &(batch, dim))| case(i, batch, dim))
    }

    /// What a backend gives for a case: the forward's outputs, and
    /// `heads_loss`'s loss and outputs, without and with gradients (then
    /// also the six parameter gradients and `dz`).
    struct Run {
        forward: [Vec<f32>; 3],
        loss: [f64; 2],
        outputs: [Vec<Vec<f32>>; 2],
    }

    fn read<B: Backend>(be: &B, b: &B::Buf, n: usize) -> Vec<f32> {
        let mut v = vec![0f32; n];
        be.read(b, &mut v).unwrap();
        v
    }

    fn heads_ref<B: Backend>(p: &[B::Buf; 6], classes: usize) -> HeadsRef<'_, B> {
        HeadsRef {
            direction_w: &p[0],
            direction_b: &p[1],
            confidence_w: &p[2],
            confidence_b: &p[3],
            return_w: &p[4],
            return_b: &p[5],
            classes,
        }
    }

    impl Case {
        fn reference_params(&self) -> ReferenceParams {
            self.params.each_ref().map(|v| wide(v))
        }

        fn reference(&self) -> (ReferenceOutputs, ReferenceLoss) {
            let (z, p) = (wide(&self.z), self.reference_params());
            let class: Vec<usize> = self.class.iter().map(|&c| c as usize).collect();
            let loss = reference_loss(&z, &p, &class, &wide(&self.target), self.loss, self.batch, self.dim);
            (reference_forward(&z, &p, self.batch, self.dim), loss)
        }

        /// `heads_loss` on `be` with `classes` classes, the outputs starting
        /// as NaN and the gradients from the case's values; what it returned,
        /// and the outputs then (with grads, also the six parameter gradients
        /// and `dz`), whether it succeeded or not.
        fn heads_loss_raw<B: Train>(&self, be: &B, classes: usize, with_grads: bool) -> (Result<f64>, Vec<Vec<f32>>) {
            let (batch, dim) = (self.batch, self.dim);
            let up = |v: &[f32]| be.upload(v).unwrap();
            let params = self.params.each_ref().map(|v| up(v));
            let (z, class, target) = (up(&self.z), up(&self.class), up(&self.target));
            let nan = |n: usize| up(&vec![f32::NAN; n]);
            let (mut lg, mut cf, mut rt) = (nan(batch * 3), nan(batch), nan(batch));
            let mut g = self.grads0.each_ref().map(|v| up(v));
            let mut dz = up(&self.dz0);
            let out = HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt };
            let targets = HeadsTargets { class: &class, ret: &target };
            let [g0, g1, g2, g3, g4, g5] = &mut g;
            let grads = with_grads.then_some((
                HeadsGrads {
                    direction_w: g0,
                    direction_b: g1,
                    confidence_w: g2,
                    confidence_b: g3,
                    return_w: g4,
                    return_b: g5,
                },
                &mut dz,
            ));
            let loss = be.heads_loss(&z, heads_ref::<B>(&params, classes), out, targets, self.loss, grads, batch, dim);
            let mut outputs = vec![read(be, &lg, batch * 3), read(be, &cf, batch), read(be, &rt, batch)];
            if with_grads {
                outputs.extend(g.iter().zip(&self.grads0).map(|(b, v)| read(be, b, v.len())));
                outputs.push(read(be, &dz, self.dz0.len()));
            }
            (loss, outputs)
        }

        fn heads_loss<B: Train>(&self, be: &B, classes: usize, with_grads: bool) -> Result<(f64, Vec<Vec<f32>>)> {
            let (loss, outputs) = self.heads_loss_raw(be, classes, with_grads);
            loss.map(|l| (l, outputs))
        }

        /// Whether a `heads_loss_raw` with grads left every buffer as it was.
        fn untouched(&self, outputs: &[Vec<f32>]) -> bool {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            outputs[..3].iter().all(|v| v.iter().all(|x| x.is_nan()))
                && outputs[3..9].iter().zip(&self.grads0).all(|(g, g0)| bits(g) == bits(g0))
                && bits(&outputs[9]) == bits(&self.dz0)
        }

        fn run<B: Train>(&self, be: &B) -> Run {
            let (batch, dim) = (self.batch, self.dim);
            let up = |v: &[f32]| be.upload(v).unwrap();
            let params = self.params.each_ref().map(|v| up(v));
            let nan = |n: usize| up(&vec![f32::NAN; n]);
            let (mut lg, mut cf, mut rt) = (nan(batch * 3), nan(batch), nan(batch));
            let out = HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt };
            be.heads(&up(&self.z), heads_ref::<B>(&params, 3), out, batch, dim).unwrap();
            let forward = [read(be, &lg, batch * 3), read(be, &cf, batch), read(be, &rt, batch)];
            let (l0, o0) = self.heads_loss(be, 3, false).unwrap();
            let (l1, o1) = self.heads_loss(be, 3, true).unwrap();
            Run { forward, loss: [l0, l1], outputs: [o0, o1] }
        }

        /// `be`'s forward and loss against the reference; the loss's outputs
        /// the forward's bit for bit.
        fn check<B: Train>(&self, be: &B, what: &str) -> Run {
            let what = format!("{what} {}x{}", self.batch, self.dim);
            let (f, l) = self.reference();
            let r = self.run(be);
            let [logits, conf, ret] = &r.forward;
            assert_close(&format!("{what}: logits"), logits, &f.logits);
            assert_close(&format!("{what}: confidence"), conf, &f.confidence);
            for (g, w) in conf.iter().zip(&f.confidence) {
                // docs/models.md: the confidence within 1e-5 absolute.
                assert!((f64::from(*g) - w).abs() <= 1e-5, "{what}: confidence {g} vs {w}");
            }
            assert_close(&format!("{what}: expected_return"), ret, &f.expected_return);
            for (loss, outputs) in r.loss.iter().zip(&r.outputs) {
                assert!((loss - l.loss).abs() <= 1e-5 * (1.0 + l.loss.abs()), "{what}: loss {loss} vs {}", l.loss);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (k, (got, want)) in outputs.iter().zip(&r.forward).enumerate() {
                    assert!(bits(got) == bits(want), "{what}: heads_loss output {k} is not heads'");
                }
            }
            let added = |start: &[f32], g: &[f64]| -> Vec<f64> {
                g.iter().zip(start).map(|(g, s)| g + f64::from(*s)).collect()
            };
            let with = &r.outputs[1];
            assert_eq!(with.len(), 10, "{what}");
            for (j, name) in [
                "direction.weight",
                "direction.bias",
                "confidence.weight",
                "confidence.bias",
                "return.weight",
                "return.bias",
            ]
            .into_iter()
            .enumerate()
            {
                assert_close(&format!("{what}: {name} grad"), &with[3 + j], &added(&self.grads0[j], &l.grads[j]));
            }
            assert_close(&format!("{what}: dz"), &with[9], &added(&self.dz0, &l.dz));
            r
        }
    }

    #[test]
    fn reference_gradients_match_finite_differences_of_the_reference_loss() {
        let (batch, dim) = (5, 6);
        let mut c = case(3, batch, dim);
        c.loss.grad_scale = 1.0;
        let (z, p) = (wide(&c.z), c.reference_params());
        let class: Vec<usize> = c.class.iter().map(|&v| v as usize).collect();
        let target = wide(&c.target);
        let loss = |z: &[f64], p: &ReferenceParams| reference_loss(z, p, &class, &target, c.loss, batch, dim).loss;
        let want = reference_loss(&z, &p, &class, &target, c.loss, batch, dim);
        let h = 1e-6;
        for i in 0..batch * dim {
            let (mut zp, mut zm) = (z.clone(), z.clone());
            zp[i] += h;
            zm[i] -= h;
            let fd = (loss(&zp, &p) - loss(&zm, &p)) / (2.0 * h);
            assert!((want.dz[i] - fd).abs() < 1e-6, "dz[{i}]: {} vs {fd}", want.dz[i]);
        }
        for j in 0..6 {
            for i in 0..p[j].len() {
                let (mut pp, mut pm) = (p.clone(), p.clone());
                pp[j][i] += h;
                pm[j][i] -= h;
                let fd = (loss(&z, &pp) - loss(&z, &pm)) / (2.0 * h);
                assert!((want.grads[j][i] - fd).abs() < 1e-6, "param {j}[{i}]: {} vs {fd}", want.grads[j][i]);
            }
        }
        // grad_scale scales every gradient and not the loss.
        c.loss.grad_scale = 0.25;
        let scaled = reference_loss(&z, &p, &class, &target, c.loss, batch, dim);
        assert_eq!(scaled.loss, want.loss);
        assert!(scaled.dz.iter().zip(&want.dz).all(|(s, w)| (s - 0.25 * w).abs() <= 1e-15 * (1.0 + w.abs())));
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
        for case in cases() {
            let mut first: Option<Run> = None;
            for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
                let r = case.check(&Gpu::new(Emu::with_order(order)), &format!("emu {order:?}"));
                if let Some(f) = &first {
                    let bits = |v: &[Vec<f32>]| {
                        v.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect::<Vec<Vec<u32>>>()
                    };
                    let what = format!("emu {order:?} {}x{}", case.batch, case.dim);
                    assert!(bits(&r.forward) == bits(&f.forward), "{what}: forward bits");
                    assert!(r.loss.map(f64::to_bits) == f.loss.map(f64::to_bits), "{what}: loss bits");
                    assert!(bits(&r.outputs[1]) == bits(&f.outputs[1]), "{what}: gradient bits");
                }
                first.get_or_insert(r);
            }
        }
    }

    #[test]
    fn short_buffers_and_other_class_counts_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let (batch, dim) = (3, 4);
            let z = |n: usize| be.alloc(n).unwrap();
            // Forward: z, the six parameters, the three outputs.
            let full = [12, 12, 3, 4, 1, 4, 1, 9, 3, 3];
            let fwd = |s: [usize; 10]| {
                let params = [z(s[1]), z(s[2]), z(s[3]), z(s[4]), z(s[5]), z(s[6])];
                let (mut lg, mut cf, mut rt) = (z(s[7]), z(s[8]), z(s[9]));
                let out = HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt };
                be.heads(&z(s[0]), heads_ref::<B>(&params, 3), out, batch, dim)
            };
            let names = [
                "z",
                "direction.weight",
                "direction.bias",
                "confidence.weight",
                "confidence.bias",
                "expected_return.weight",
                "expected_return.bias",
                "logits",
                "confidence",
                "expected_return",
            ];
            each_short_buffer_is_named(be.name(), "heads", names, full, fwd);
            // The loss: two classes, each target and gradient short, a bad
            // class; a refused call writes nothing.
            let c = case(0, batch, dim);
            c.heads_loss(be, 3, true).unwrap();
            let err = c.heads_loss(be, 2, true).unwrap_err().to_string();
            assert!(err.contains("heads_loss: 2 classes, needs 3"), "{}: {err}", be.name());
            for what in ["class", "ret"] {
                let mut s = case(0, batch, dim);
                if what == "class" {
                    s.class.pop();
                } else {
                    s.target.pop();
                }
                let err = s.heads_loss(be, 3, false).unwrap_err().to_string();
                assert!(err.contains(&format!("heads_loss: buffer {what} ")), "{}: {err}", be.name());
            }
            let grads = [
                "direction.weight",
                "direction.bias",
                "confidence.weight",
                "confidence.bias",
                "expected_return.weight",
                "expected_return.bias",
            ];
            for (j, what) in grads.into_iter().enumerate() {
                let mut s = case(0, batch, dim);
                s.grads0[j].pop();
                let (loss, outputs) = s.heads_loss_raw(be, 3, true);
                let err = loss.unwrap_err().to_string();
                assert!(err.contains(&format!("heads_loss: buffer {what} grad ")), "{}: {err}", be.name());
                assert!(s.untouched(&outputs), "{}: a refused heads_loss wrote", be.name());
            }
            let mut s = case(0, batch, dim);
            s.dz0.pop();
            let (loss, outputs) = s.heads_loss_raw(be, 3, true);
            let err = loss.unwrap_err().to_string();
            assert!(err.contains("heads_loss: buffer dz "), "{}: {err}", be.name());
            assert!(s.untouched(&outputs), "{}: a refused heads_loss wrote", be.name());
            let (loss, outputs) = c.heads_loss_raw(be, 2, true);
            assert!(loss.is_err() && c.untouched(&outputs), "{}: two classes wrote", be.name());
            // A bad class after a good one: refused, and the good sample's
            // outputs and gradients are not written either.
            let mut s = case(0, batch, dim);
            s.class[1] = 1.5;
            let (loss, outputs) = s.heads_loss_raw(be, 3, true);
            let err = loss.unwrap_err().to_string();
            assert!(err.contains("targets.class") && err.contains("sample 1"), "{}: {err}", be.name());
            assert!(s.untouched(&outputs), "{}: a batch with a bad class wrote", be.name());
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn parameter_structs_have_the_documented_sizes() {
        assert_eq!(std::mem::size_of::<HeadsParams>(), 10 * 8 + 3 * 4 + 4);
        assert_eq!(std::mem::size_of::<HeadsLossParams>(), 14 * 8 + 7 * 4 + 4);
        assert_eq!(std::mem::size_of::<HeadsParamGradsParams>(), 8 * 8 + 4 * 4);
    }

    #[test]
    fn launch_rules() {
        assert_eq!(forward_cfg(17).unwrap().grid, [17, 1, 1]);
        assert_eq!(forward_cfg(1).unwrap().block, [128, 1, 1]);
        assert_eq!(loss_cfg(17).unwrap().grid, [17, 1, 1]);
        assert_eq!(loss_cfg(3).unwrap().block, [128, 1, 1]);
    }

    #[test]
    fn an_empty_batch_has_no_loss_and_writes_nothing_on_both_backends() {
        // The GPU launched empty grids at batch 0, which CUDA refuses.
        fn empty<B: Train>(be: &B) {
            let s = case(0, 0, 4);
            let (loss, outputs) = s.heads_loss(be, 3, true).unwrap_or_else(|e| panic!("{}: {e}", be.name()));
            assert_eq!(loss, 0.0, "{}", be.name());
            assert!(s.untouched(&outputs), "{}: an empty batch wrote", be.name());
            s.run(be);
        }
        empty(&Cpu::new());
        empty(&Gpu::new(Emu::new()));
    }
}
