//! The trainable form of the three models: parameters in PyTorch's layout
//! (the master copy the optimizer updates and checkpoints store), their
//! gradients, and the multi-task loss of docs/training.md, around a model's
//! one definition (`model::def`), run forward and backward by the training
//! run (`model::tape`).
//!
//! The contract the trainer relies on:
//! - `forward_backward` adds the gradient of the batch's *mean* loss into
//!   every `Param::grad` (so gradient accumulation is repeated calls, then one
//!   optimizer step with `grad_scale = 1 / steps`);
//! - after the optimizer changes `Param::value`, `refresh` re-derives whatever
//!   the backend's forward ops read (prepared weight layouts);
//! - `export` gives docs/models.md's tensors, loadable by `Model::from_tensors`.

use std::collections::HashMap;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{HeadsLoss, Train};
use crate::error::{Error, Result};
pub use crate::model::def::Param;
use crate::model::run::Architecture;
use crate::model::tape::{Dropout, HeadsTape, Tape, TrainRun};
use crate::model::{param_specs, with_net, ModelConfig, Net};
use crate::tensor::Tensor;
use crate::weights;

/// docs/training.md's loss weights.
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

pub struct TrainNet<B: Train> {
    config: ModelConfig,
    params: Vec<Param<B>>,
    net: Defined<B>,
    /// Host scratch for the targets' class ids (reused).
    host: Vec<f32>,
}

/// The model's definition (`model::def`), the training copies of its
/// derived slots, and its tape.
struct Defined<B: Train> {
    net: Net,
    derived: Vec<Option<B::Buf>>,
    tape: Tape<B>,
}

/// PyTorch's default initialization of a parameter (from its name and shape):
/// `(bound, constant)`, the value being `U(±bound)` when `constant` is None.
fn init_rule(name: &str, shape: &[usize], specs: &[(String, Vec<usize>)], lstm_hidden: usize) -> (f32, Option<f32>) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let is_norm = name.split('.').any(|s| s.starts_with("norm"));
    if is_norm {
        return (0.0, Some(if leaf == "weight" { 1.0 } else { 0.0 }));
    }
    // quorum_ref.py: nn.Parameter(torch.zeros(…)).
    if name == "cls_token" || name == "pos_embed" {
        return (0.0, Some(0.0));
    }
    // nn.LSTM: every tensor U(±1/√H).
    if name.starts_with("lstm.") {
        return (1.0 / (lstm_hidden as f32).sqrt(), None);
    }
    // Linear / Conv: kaiming_uniform(a=√5) gives U(±1/√fan_in) for the
    // weight, and the bias uses the same bound.
    let weight_shape = if leaf == "bias" {
        let w = format!("{}.weight", &name[..name.len() - ".bias".len()]);
        specs.iter().find(|(n, _)| *n == w).map(|(_, s)| s.clone()).unwrap_or_else(|| shape.to_vec())
    } else {
        shape.to_vec()
    };
    let fan_in: usize = weight_shape[1..].iter().product::<usize>().max(1);
    (1.0 / (fan_in as f32).sqrt(), None)
}

fn lstm_hidden(config: &ModelConfig) -> usize {
    match config {
        ModelConfig::CnnLstm(c) => c.lstm_hidden,
        _ => 1,
    }
}

impl<B: Train> TrainNet<B> {
    /// A fresh model, initialized as PyTorch initializes these modules, from `seed`.
    pub fn init(be: &B, config: ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let specs = param_specs(&config);
        let hidden = lstm_hidden(&config);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, shape) in &specs.0 {
            let n: usize = shape.iter().product();
            // Sized by the config, which may come from a request: fallible.
            let mut data = crate::tensor::try_vec(n, name)?;
            match init_rule(name, shape, &specs.0, hidden) {
                (_, Some(c)) => data.resize(n, c),
                (bound, None) => data.extend((0..n).map(|_| {
                    // 24 random bits → [0, 1), exact in f32.
                    let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
                    bound * (2.0 * u - 1.0)
                })),
            }
            tensors.insert(name.clone(), Tensor { shape: shape.clone(), data });
        }
        Self::from_tensors(be, config, &tensors)
    }

    /// A model from docs/models.md's tensors (a checkpoint, or PyTorch weights).
    /// Normalizer tensors are accepted and ignored (training batches come normalized).
    pub fn from_tensors(be: &B, config: ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        let problems = weights::check(&config, tensors);
        if !problems.is_empty() {
            return Err(Error::weights("(parameters)", problems));
        }
        let mut params = Vec::new();
        for (name, shape) in param_specs(&config).0 {
            let t = &tensors[&name];
            let decay = shape.len() >= 2 && name != "cls_token" && name != "pos_embed";
            params.push(Param { value: be.upload(&t.data)?, grad: be.alloc(t.numel())?, name, shape, decay });
        }
        let net = Net::new(&config);
        let net = Defined { derived: net.def().derive_alloc(be)?, net, tape: Tape::default() };
        let mut net = TrainNet { config, params, net, host: Vec::new() };
        net.refresh(be)?;
        Ok(net)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// How many sets of heads (and so of targets) a batch needs.
    pub fn head_sets(&self) -> usize {
        match &self.config {
            ModelConfig::Tlob(c) => c.horizons.len(),
            _ => 1,
        }
    }

    /// Training forward (dropout on, its masks drawn from `dropout_seed`),
    /// loss, and backward: adds the gradient of the mean loss into the grads.
    pub fn forward_backward(
        &mut self,
        be: &B,
        batch: &TrainBatch,
        weights: LossWeights,
        dropout_seed: u64,
    ) -> Result<LossOut> {
        self.run(be, batch, weights, Some(dropout_seed))
    }

    /// Inference forward (no dropout) and the loss; gradients untouched.
    pub fn evaluate(&mut self, be: &B, batch: &TrainBatch, weights: LossWeights) -> Result<LossOut> {
        self.run(be, batch, weights, None)
    }

    fn run(&mut self, be: &B, batch: &TrainBatch, weights: LossWeights, seed: Option<u64>) -> Result<LossOut> {
        let n = self.check_batch(batch)?;
        for (what, w) in [("direction", weights.direction), ("confidence", weights.confidence), ("ret", weights.ret)] {
            if !w.is_finite() {
                return Err(Error::input("loss weights", format!("{what} weight {w} is not finite")));
            }
        }
        let dropout = match &self.config {
            ModelConfig::Mpd(c) => c.dropout,
            ModelConfig::Tlob(c) => c.dropout,
            ModelConfig::CnnLstm(c) => c.dropout,
        };
        let drop = Dropout { p: dropout as f32, seed: seed.unwrap_or(0), on: seed.is_some(), site: 0 };
        let backward = seed.is_some();
        let sets = self.head_sets();
        let loss = HeadsLoss {
            direction: weights.direction,
            confidence: weights.confidence,
            ret: weights.ret,
            grad_scale: 1.0 / (n * sets) as f32,
        };
        let primary = match &self.net.net {
            Net::Tlob(t) => t.primary(),
            _ => 0,
        };
        let TrainNet { params, net, host, .. } = self;
        let (total, primary) = net.step(be, params, batch, drop, loss, backward, host, primary)?;
        let out = loss_out(be, primary, n, total / (n * sets) as f64)?;
        if !out.loss.is_finite() {
            return Err(Error::input("batch", format!("the loss is not finite ({})", out.loss)));
        }
        Ok(out)
    }

    /// The batch size, after checking every input and target against the config.
    fn check_batch(&self, b: &TrainBatch) -> Result<usize> {
        let n = b.batch;
        if n == 0 {
            return Err(Error::input("batch", "batch size 0"));
        }
        let check = |t: Option<&Tensor>, name: &str, dims: &[usize]| -> Result<()> {
            let t = t.ok_or_else(|| Error::input(name, format!("required by {} but not given", self.config.kind())))?;
            // Compared in place: this runs every step and must not allocate.
            if t.shape.len() != dims.len() + 1 || t.shape[0] != n || t.shape[1..] != *dims || t.data.len() != t.numel()
            {
                let want: Vec<usize> = [&[n][..], dims].concat();
                return Err(Error::input(name, format!("expected shape {want:?}, got {:?}", t.shape)));
            }
            t.expect_finite(name)
        };
        match &self.config {
            ModelConfig::Mpd(c) => check(b.features.as_ref(), "features", &[c.sequence_length, c.input_features])?,
            ModelConfig::CnnLstm(c) => check(b.features.as_ref(), "features", &[c.sequence_length, c.input_features])?,
            ModelConfig::Tlob(c) => {
                check(b.lob.as_ref(), "lob", &[c.sequence_length, c.num_levels, c.lob_features])?;
                if b.aux.is_some() {
                    if c.aux_features == 0 {
                        return Err(Error::input("aux", "this tlob model has no auxiliary encoder (aux_features = 0)"));
                    }
                    check(b.aux.as_ref(), "aux", &[c.aux_features])?;
                }
            }
        }
        let sets = self.head_sets();
        if b.targets.len() != sets {
            return Err(Error::input(
                "targets",
                format!("{} sets of targets given, the model has {sets}", b.targets.len()),
            ));
        }
        for (i, t) in b.targets.iter().enumerate() {
            if t.class.len() != n || t.ret.len() != n {
                return Err(Error::input(
                    format!("targets[{i}]"),
                    format!("{} classes and {} returns for a batch of {n}", t.class.len(), t.ret.len()),
                ));
            }
            if let Some(j) = t.class.iter().position(|&c| c >= 3) {
                return Err(Error::input(
                    format!("targets[{i}].class"),
                    format!("sample {j}: class id {} ≥ 3", t.class[j]),
                ));
            }
            if let Some(j) = t.ret.iter().position(|r| !r.is_finite()) {
                return Err(Error::input(
                    format!("targets[{i}].ret"),
                    format!("sample {j}: {} is not finite", t.ret[j]),
                ));
            }
        }
        Ok(n)
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
    pub fn refresh(&mut self, be: &B) -> Result<()> {
        let TrainNet { params, net, .. } = self;
        net.net.def().refresh(be, params, &mut net.derived)
    }

    /// docs/models.md's tensors, PyTorch layout.
    pub fn export(&self, be: &B) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let mut t = Tensor::zeros(p.shape.clone());
            be.read(&p.value, &mut t.data)?;
            out.insert(p.name.clone(), t);
        }
        Ok(out)
    }
}

impl<B: Train> Defined<B> {
    /// One forward (and with `backward`, the backward) of a batch; returns
    /// the summed loss and the outputs of the set of heads `primary`.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        be: &B,
        params: &mut [Param<B>],
        batch: &TrainBatch,
        drop: Dropout,
        loss: HeadsLoss,
        backward: bool,
        host: &mut Vec<f32>,
        primary: usize,
    ) -> Result<(f64, [&B::Buf; 3])> {
        let Defined { net, derived, tape } = self;
        let n = batch.batch;
        let key = u64::from(batch.aux.is_some());
        tape.begin(be, n, batch.targets.len(), 3, key, backward)?;
        upload_targets(be, batch, &mut tape.heads, host)?;
        let inputs = [batch.features.as_ref().or(batch.lob.as_ref()), batch.aux.as_ref()];
        let total = with_net!(&*net, m => {
            let def = m.def();
            let mut r = TrainRun { be, def, params, derived, tape, inputs, drop, loss, backward, batch: n, total: 0.0 };
            m.forward(&mut r)?;
            if backward {
                m.backward(&mut r)?;
            }
            r.total
        });
        tape.end(backward);
        let h = &tape.heads[primary];
        Ok((total, [&h.logits, &h.confidence, &h.ret]))
    }
}

/// The step's result: the only allocations of a steady-state step (the
/// returned vectors; tests/train_no_alloc.rs recognizes this frame).
fn loss_out<B: Train>(be: &B, primary: [&B::Buf; 3], n: usize, loss: f64) -> Result<LossOut> {
    let mut out = LossOut { loss, logits: vec![[0.0; 3]; n], confidence: vec![0.0; n], expected_return: vec![0.0; n] };
    be.read(primary[0], out.logits.as_flattened_mut())?;
    be.read(primary[1], &mut out.confidence)?;
    be.read(primary[2], &mut out.expected_return)?;
    Ok(out)
}

fn upload_targets<B: Train>(be: &B, batch: &TrainBatch, tapes: &mut [HeadsTape<B>], host: &mut Vec<f32>) -> Result<()> {
    for (t, tape) in batch.targets.iter().zip(tapes.iter_mut()) {
        host.clear();
        host.extend(t.class.iter().map(|&c| f32::from(c)));
        be.write(&mut tape.class, host)?;
        be.write(&mut tape.target, &t.ret)?;
    }
    Ok(())
}
