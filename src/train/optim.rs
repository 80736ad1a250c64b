//! AdamW with docs/training.md's schedule, gradient accumulation and global-norm
//! clipping, over the parameters of any trainable net on a `Train` backend.
//!
//! One optimizer step after `accumulated` micro-batches:
//! 1. `norm = sqrt(Σ_params sum_squares(grad)) / accumulated` — the L2 norm of
//!    the *mean* gradient (the grads hold the sum of per-micro-batch means);
//! 2. `clip = min(1, max_grad_norm / (norm + 1e-6))` (PyTorch's
//!    `clip_grad_norm_`);
//! 3. `grad_scale = clip / accumulated`, folded into the backend's AdamW op,
//!    which applies decoupled weight decay only where `Param::decay`.
//!
//! The state (m, v per parameter, the step count) round-trips through a
//! safetensors file: tensors `m.<name>`, `v.<name>`, metadata `step`.

use std::collections::HashMap;
use std::path::Path;

use crate::backend::{AdamWStep, Train};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::train::net::Param;

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;
/// Share of all steps spent warming the learning rate up linearly.
pub const WARMUP_FRACTION: f64 = 0.05;
/// The learning rate at the last step, as a fraction of the peak.
pub const FINAL_LR_FRACTION: f64 = 0.1;

/// docs/training.md's schedule: linear warm-up over the first 5% of steps (at
/// least one step), then cosine decay from the peak to 10% of it at the last
/// step. `step` is 1-based; steps past `total` stay at the floor.
pub fn lr_at(base: f64, step: u64, total: u64) -> f64 {
    let total = total.max(1);
    let step = step.clamp(1, total);
    let warmup = ((total as f64 * WARMUP_FRACTION).ceil() as u64).max(1);
    if step <= warmup {
        return base * step as f64 / warmup as f64;
    }
    let decay_steps = total - warmup;
    let p = (step - warmup) as f64 / decay_steps as f64;
    base * (FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// `min(1, max_norm / (norm + 1e-6))`, PyTorch's clip coefficient.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    pub step: u64,
    pub lr: f64,
    /// The norm of the mean gradient, before clipping.
    pub grad_norm: f64,
    pub clip: f64,
}

/// AdamW state: the first and second moments of every parameter.
pub struct AdamW<B: Train> {
    m: Vec<B::Buf>,
    v: Vec<B::Buf>,
    /// Optimizer steps taken so far.
    pub step: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// AdamW's ε: docs/training.md's `EPS` unless set (a test comparing two
    /// backends raises it, so coordinates whose gradient is only rounding
    /// noise are not moved by ±lr).
    pub eps: f32,
}

impl<B: Train> AdamW<B> {
    /// Zero moments for `params`.
    pub fn new(be: &B, params: &[Param<B>], weight_decay: f64, max_grad_norm: f64) -> Result<Self> {
        let m = params.iter().map(|p| be.alloc(p.numel())).collect::<Result<_>>()?;
        let v = params.iter().map(|p| be.alloc(p.numel())).collect::<Result<_>>()?;
        Ok(AdamW { m, v, step: 0, weight_decay, max_grad_norm, eps: EPS })
    }

    /// The L2 norm of the summed gradients (before dividing by the micro-batches).
    pub fn grad_norm(be: &B, params: &[Param<B>]) -> Result<f64> {
        let mut s = 0.0;
        for p in params {
            s += be.sum_squares(&p.grad, p.numel())?;
        }
        Ok(s.sqrt())
    }

    /// One update from grads summed over `accumulated` micro-batches, at
    /// learning rate `lr`. The caller refreshes the net and zeroes the grads.
    pub fn step(&mut self, be: &B, params: &mut [Param<B>], accumulated: usize, lr: f64) -> Result<StepInfo> {
        if params.len() != self.m.len() {
            return Err(Error::config(
                "optimizer",
                format!("{} moments for {} parameters", self.m.len(), params.len()),
            ));
        }
        let accumulated = accumulated.max(1) as f64;
        let grad_norm = Self::grad_norm(be, params)? / accumulated;
        if !grad_norm.is_finite() {
            return Err(Error::input(
                "gradients",
                format!("the gradient norm is {grad_norm} at optimizer step {}: the loss diverged", self.step + 1),
            ));
        }
        let clip = clip_factor(grad_norm, self.max_grad_norm);
        self.step += 1;
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let n = p.numel();
            let s = AdamWStep {
                lr: lr as f32,
                beta1: BETA1,
                beta2: BETA2,
                eps: self.eps,
                weight_decay: if p.decay { self.weight_decay as f32 } else { 0.0 },
                step: self.step.min(u32::MAX as u64) as u32,
                grad_scale: (clip / accumulated) as f32,
            };
            be.adamw(&mut p.value, &p.grad, m, v, n, s)?;
        }
        Ok(StepInfo { step: self.step, lr, grad_norm, clip })
    }

    /// The state as safetensors bytes (`m.<name>`, `v.<name>`, metadata `step`).
    pub fn to_bytes(&self, be: &B, params: &[Param<B>]) -> Result<Vec<u8>> {
        self.to_bytes_with(be, params, HashMap::new())
    }

    fn to_bytes_with(&self, be: &B, params: &[Param<B>], extra: HashMap<String, String>) -> Result<Vec<u8>> {
        let mut tensors = HashMap::new();
        for ((p, m), v) in params.iter().zip(&self.m).zip(&self.v) {
            for (prefix, buf) in [("m", m), ("v", v)] {
                let mut data = vec![0.0; p.numel()];
                be.read(buf, &mut data)?;
                tensors.insert(format!("{prefix}.{}", p.name), Tensor { shape: p.shape.clone(), data });
            }
        }
        let mut md = HashMap::from([
            ("format".to_string(), "quorum-adamw".to_string()),
            ("step".to_string(), self.step.to_string()),
        ]);
        md.extend(extra);
        crate::weights::to_bytes(&tensors, md)
    }

    /// Restores the state saved by [`AdamW::to_bytes`] for the same parameters;
    /// every missing or mis-shaped moment is reported in one error.
    pub fn from_bytes(
        be: &B,
        params: &[Param<B>],
        bytes: &[u8],
        label: &str,
        weight_decay: f64,
        max_grad_norm: f64,
    ) -> Result<Self> {
        let file = crate::weights::read_tensor_file(bytes, label)?;
        let mut problems = Vec::new();
        let step = match file.metadata.get("step").map(|s| s.parse::<u64>()) {
            Some(Ok(s)) => s,
            _ => {
                problems.push("metadata step is missing or not a whole number".to_string());
                0
            }
        };
        let mut m = Vec::with_capacity(params.len());
        let mut v = Vec::with_capacity(params.len());
        for p in params {
            for (prefix, out) in [("m", &mut m), ("v", &mut v)] {
                let name = format!("{prefix}.{}", p.name);
                match file.tensors.get(&name) {
                    Some(t) if t.shape == p.shape => out.push(be.upload(&t.data)?),
                    Some(t) => problems.push(format!("tensor {name} has shape {:?}, expected {:?}", t.shape, p.shape)),
                    None => problems.push(format!("missing tensor {name}")),
                }
            }
        }
        if file.tensors.len() != 2 * params.len() && problems.is_empty() {
            problems.push(format!(
                "{} tensors for {} parameters (expected m and v each)",
                file.tensors.len(),
                params.len()
            ));
        }
        if !problems.is_empty() {
            return Err(Error::weights(label, problems));
        }
        Ok(AdamW { m, v, step, weight_decay, max_grad_norm, eps: EPS })
    }

    pub fn save(&self, be: &B, params: &[Param<B>], path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_bytes(be, params)?)
    }

    /// Saves with a checkpoint sequence number in the metadata (see `checkpoint`).
    pub fn save_with_seq(&self, be: &B, params: &[Param<B>], path: &Path, seq: u64) -> Result<()> {
        let md = HashMap::from([("checkpoint_seq".to_string(), seq.to_string())]);
        crate::fsutil::write_atomic(path, &self.to_bytes_with(be, params, md)?)
    }

    pub fn load(be: &B, params: &[Param<B>], path: &Path, weight_decay: f64, max_grad_norm: f64) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Self::from_bytes(be, params, &bytes, &path.display().to_string(), weight_decay, max_grad_norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::Cpu;

    fn param(name: &str, value: Vec<f32>, grad: Vec<f32>, decay: bool) -> Param<Cpu> {
        Param { name: name.into(), shape: vec![value.len()], value, grad, decay }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let (base, total) = (1e-3, 200);
        // 5% of 200 = 10 warm-up steps: step 1 is a tenth, step 10 the peak.
        assert!((lr_at(base, 1, total) - 1e-4).abs() < 1e-15);
        assert!((lr_at(base, 5, total) - 5e-4).abs() < 1e-15);
        assert!((lr_at(base, 10, total) - base).abs() < 1e-15);
        // Halfway through the decay (step 10 + 95): 0.1 + 0.9 · 0.5 = 0.55.
        assert!((lr_at(base, 105, total) - 0.55 * base).abs() < 1e-12);
        assert!((lr_at(base, total, total) - 0.1 * base).abs() < 1e-15);
        assert!((lr_at(base, total + 7, total) - 0.1 * base).abs() < 1e-15);
        // Monotone: up during warm-up, down after.
        let lrs: Vec<f64> = (1..=total).map(|s| lr_at(base, s, total)).collect();
        assert!(lrs[..10].windows(2).all(|w| w[1] > w[0]));
        assert!(lrs[9..].windows(2).all(|w| w[1] < w[0]));
        // One step in all: warm-up of one step, the peak.
        assert_eq!(lr_at(base, 1, 1), base);
    }

    #[test]
    fn clipping_scales_the_mean_gradient_to_the_max_norm() {
        let be = Cpu::new();
        // Two micro-batches summed: grads (6, 8) → mean (3, 4), norm 5.
        let mut params = vec![param("a.weight", vec![0.0, 0.0], vec![6.0, 8.0], true)];
        assert_eq!(AdamW::<Cpu>::grad_norm(&be, &params).unwrap(), 10.0);
        let mut opt = AdamW::new(&be, &params, 0.0, 1.0).unwrap();
        let info = opt.step(&be, &mut params, 2, 0.1).unwrap();
        assert_eq!(info.grad_norm, 5.0);
        assert!((info.clip - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        // First Adam step moves each element by lr · sign(g) (m̂/√v̂ = ±1).
        for x in &params[0].value {
            assert!((x + 0.1).abs() < 1e-6, "{x}");
        }
        // m holds (1 − β1) · the clipped mean gradient: (0.1 · 3/5, 0.1 · 4/5).
        let mut m = vec![0.0f32; 2];
        be.read(&opt.m[0], &mut m).unwrap();
        assert!((m[0] - 0.06).abs() < 1e-6 && (m[1] - 0.08).abs() < 1e-6, "{m:?}");
        // Below the threshold nothing is clipped.
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
    }

    #[test]
    fn weight_decay_only_where_the_param_says() {
        let be = Cpu::new();
        let mut params =
            vec![param("w.weight", vec![1.0], vec![0.0], true), param("w.bias", vec![1.0], vec![0.0], false)];
        let mut opt = AdamW::new(&be, &params, 0.5, 1.0).unwrap();
        opt.step(&be, &mut params, 1, 0.1).unwrap();
        // Zero gradient: only decay moves the value, p −= lr · wd · p.
        assert!((params[0].value[0] - 0.95).abs() < 1e-7);
        assert_eq!(params[1].value[0], 1.0);
    }

    #[test]
    fn state_round_trips_and_mismatches_are_named() {
        let be = Cpu::new();
        let mut params = vec![param("x", vec![1.0, 2.0, 3.0], vec![0.3, -0.2, 0.1], true)];
        let mut opt = AdamW::new(&be, &params, 0.01, 1.0).unwrap();
        for _ in 0..3 {
            opt.step(&be, &mut params, 1, 0.01).unwrap();
        }
        let bytes = opt.to_bytes(&be, &params).unwrap();
        let mut back = AdamW::from_bytes(&be, &params, &bytes, "opt", 0.01, 1.0).unwrap();
        assert_eq!(back.step, 3);
        assert_eq!((back.m[0].clone(), back.v[0].clone()), (opt.m[0].clone(), opt.v[0].clone()));
        // Continuing from the copy equals continuing from the original.
        let mut p2 = vec![param("x", params[0].value.clone(), params[0].grad.clone(), true)];
        opt.step(&be, &mut params, 1, 0.01).unwrap();
        back.step(&be, &mut p2, 1, 0.01).unwrap();
        assert_eq!(params[0].value, p2[0].value);
        // Another parameter set: the error names the missing moments.
        let other = vec![param("y", vec![0.0; 3], vec![0.0; 3], true)];
        let err = AdamW::from_bytes(&be, &other, &bytes, "opt.safetensors", 0.0, 1.0).err().unwrap().to_string();
        assert!(err.contains("opt.safetensors") && err.contains("missing tensor m.y"), "{err}");
    }

    #[test]
    fn a_diverged_gradient_is_an_error_not_a_step() {
        let be = Cpu::new();
        let mut params = vec![param("x", vec![1.0], vec![f32::NAN], true)];
        let mut opt = AdamW::new(&be, &params, 0.0, 1.0).unwrap();
        let err = opt.step(&be, &mut params, 1, 0.1).unwrap_err().to_string();
        assert!(err.contains("gradient norm"), "{err}");
        assert_eq!((params[0].value[0], opt.step), (1.0, 0));
    }
}
