//! The trainable form of the three models: parameters in PyTorch's layout
//! (the master copy the optimizer updates and checkpoints store), their
//! gradients, a training forward that keeps what the backward needs, and the
//! multi-task loss of training.md.
//!
//! The contract the trainer relies on:
//! - `forward_backward` adds the gradient of the batch's *mean* loss into
//!   every `Param::grad` (so gradient accumulation is repeated calls, then one
//!   optimizer step with `grad_scale = 1 / steps`);
//! - after the optimizer changes `Param::value`, `refresh` re-derives whatever
//!   the backend's forward ops read (prepared weight layouts);
//! - `export` gives models.md's tensors, loadable by `Model::from_tensors`.

use std::collections::HashMap;
use std::marker::PhantomData;

use crate::backend::Train;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::tensor::Tensor;

/// training.md's loss weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub direction: f32,
    pub confidence: f32,
    pub ret: f32,
}

/// The targets of one set of heads over a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeadTargets {
    /// Class ids 0 (DOWN), 1 (NEUTRAL), 2 (UP).
    pub class: Vec<u8>,
    /// The return target in basis points divided by `return_scale`.
    pub ret: Vec<f32>,
}

/// One mini-batch, host side, inputs already normalized.
#[derive(Clone, Debug, Default)]
pub struct TrainBatch {
    pub batch: usize,
    /// `(B, T, F)` for MPD and CNN-LSTM.
    pub features: Option<Tensor>,
    /// `(B, T, L, 4)` for TLOB.
    pub lob: Option<Tensor>,
    /// `(B, A)` for TLOB with an auxiliary encoder.
    pub aux: Option<Tensor>,
    /// One entry per set of heads: the primary heads of MPD and CNN-LSTM, or
    /// each TLOB horizon in the config's order.
    pub targets: Vec<HeadTargets>,
}

/// A batch's mean loss and the primary heads' outputs (for the metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossOut {
    pub loss: f64,
    pub logits: Vec<[f32; 3]>,
    pub confidence: Vec<f32>,
    pub expected_return: Vec<f32>,
}

/// One parameter tensor, by models.md's name, in PyTorch's layout.
pub struct Param<B: Train> {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: B::Buf,
    pub grad: B::Buf,
    /// Whether AdamW's weight decay applies (matrices and conv kernels only).
    pub decay: bool,
}

impl<B: Train> Param<B> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct TrainNet<B: Train> {
    config: ModelConfig,
    params: Vec<Param<B>>,
    _backend: PhantomData<B>,
}

fn not_built<T>() -> Result<T> {
    Err(Error::Backend { backend: "cpu".into(), reason: "training is not built yet (issue 4)".into() })
}

impl<B: Train> TrainNet<B> {
    /// A fresh model, initialized as PyTorch initializes these modules, from `seed`.
    pub fn init(_be: &B, _config: ModelConfig, _seed: u64) -> Result<Self> {
        not_built()
    }

    /// A model from models.md's tensors (a checkpoint, or PyTorch weights).
    pub fn from_tensors(_be: &B, _config: ModelConfig, _tensors: &HashMap<String, Tensor>) -> Result<Self> {
        not_built()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Training forward (dropout on, its masks drawn from `dropout_seed`),
    /// loss, and backward: adds the gradient of the mean loss into the grads.
    pub fn forward_backward(
        &mut self,
        _be: &B,
        _batch: &TrainBatch,
        _weights: LossWeights,
        _dropout_seed: u64,
    ) -> Result<LossOut> {
        not_built()
    }

    /// Inference forward (no dropout) and the loss; gradients untouched.
    pub fn evaluate(&mut self, _be: &B, _batch: &TrainBatch, _weights: LossWeights) -> Result<LossOut> {
        not_built()
    }

    pub fn zero_grads(&mut self, be: &B) -> Result<()> {
        for p in &mut self.params {
            let n = p.numel();
            be.fill(&mut p.grad, n, 0.0)?;
        }
        Ok(())
    }

    pub fn params(&self) -> &[Param<B>] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [Param<B>] {
        &mut self.params
    }

    /// Re-derives the backend-layout copies after the parameters changed.
    pub fn refresh(&mut self, _be: &B) -> Result<()> {
        not_built()
    }

    /// models.md's tensors, PyTorch layout.
    pub fn export(&self, _be: &B) -> Result<HashMap<String, Tensor>> {
        not_built()
    }
}
