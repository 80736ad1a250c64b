//! A model's definition, written once: its parameters (docs/models.md's names
//! and shapes, in order), the buffers its forward reads (each one a `Recipe`
//! over the parameters), and its layers, which name those buffers by slot.
//!
//! The same definition serves the three uses of a model: the expected
//! tensors of a weights file (`Def::specs`), inference (`load`: every slot
//! made once from the host tensors) and training (`derive_alloc` and
//! `refresh`: the slots that are not a parameter as it stands re-derived on
//! the device after each optimizer step). A layer holds no buffer: a run
//! (`model::run`) resolves its slots, and the training run its parameters'
//! gradients through `Layer::p` (the index of its first parameter).

use std::collections::HashMap;

use crate::backend::{AttentionShape, Backend, ConvWeights, Train};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The expected parameters of a model: names and shapes, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSpecs(pub Vec<(String, Vec<usize>)>);

impl ParamSpecs {
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push((name.into(), shape.to_vec()));
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice())
    }
}

/// An index into a definition's recipes: one buffer the forward reads.
pub type Slot = usize;

/// How a buffer the forward reads is made from the parameters (`p`: an index
/// into the parameter list).
#[derive(Clone, Debug, PartialEq)]
pub enum Recipe {
    /// The parameter as it stands (PyTorch's layout).
    Raw(usize),
    /// A matrix-product weight `(n_out, n_in)`, `prepare_linear`'s layout.
    Linear { p: usize, n_out: usize, n_in: usize },
    /// A Conv1d weight `(c_out, c_in, k)`: `prepare_conv` at load; training
    /// re-derives it as the `(c_out, c_in·k)` matrix.
    Conv { p: usize, c_out: usize, c_in: usize, k: usize },
    /// An LSTM layer's `W_hh`, `prepare_recurrent`'s layout.
    Recurrent { p: usize, hidden: usize },
    /// The sum of two parameters of `len` values (an LSTM layer's `b_ih + b_hh`).
    Sum { a: usize, b: usize, len: usize },
    /// Values fixed by the config (TLOB's positional encoding).
    Constant(Vec<f32>),
    /// TLOB's `spatial.proj` weight `(d, channels·levels)` relabeled from
    /// PyTorch's channel-major flattening to our channels-last one
    /// (`tlob::spatial_proj_to_internal`), row-major: read by the training
    /// backward only (empty at inference).
    Relabel { p: usize, d: usize, channels: usize, levels: usize },
    /// The relabeled weight in `prepare_linear`'s layout (training: from the
    /// `Relabel` slot `src`, refreshed after it).
    RelabelPrepared { p: usize, src: Slot, d: usize, channels: usize, levels: usize },
    /// A training scratch of `len` values the size of a parameter (empty at inference).
    Scratch(usize),
}

/// A matrix product `y = x Wᵀ + b`: parameters `p` (weight) and `p + 1` (bias).
#[derive(Clone, Debug)]
pub struct Linear {
    pub p: usize,
    pub w: Slot,
    pub b: Slot,
    pub n_in: usize,
    pub n_out: usize,
}

/// A "same" Conv1d: parameters `p` (weight) and `p + 1` (bias).
#[derive(Clone, Debug)]
pub struct Conv {
    pub p: usize,
    pub w: Slot,
    pub b: Slot,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
}

/// LayerNorm(dim): parameters `p` (weight) and `p + 1` (bias).
#[derive(Clone, Debug)]
pub struct Norm {
    pub p: usize,
    pub w: Slot,
    pub b: Slot,
    pub dim: usize,
}

/// One set of heads, in PyTorch's `(n_out, dim)` layout (the fused heads op
/// reads rows): parameters `p..p + 6` are direction's, confidence's and
/// expected_return's weight and bias; so are `slots`.
#[derive(Clone, Debug)]
pub struct Heads {
    pub p: usize,
    pub slots: [Slot; 6],
    pub dim: usize,
    pub classes: usize,
}

/// One LSTM layer: the input projection, whose bias is `b_ih + b_hh`, and the
/// recurrent weight. Parameters `p..p + 4`: `weight_ih`, `weight_hh`,
/// `bias_ih`, `bias_hh`.
#[derive(Clone, Debug)]
pub struct Lstm {
    pub input: Linear,
    pub w_hh: Slot,
    pub hidden: usize,
}

impl Lstm {
    pub fn p(&self) -> usize {
        self.input.p
    }
}

/// A pre-norm transformer block (docs/models.md "Block").
#[derive(Clone, Debug)]
pub struct Block {
    pub norm1: Norm,
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: Norm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub heads: usize,
    pub dim: usize,
    pub hidden: usize,
}

impl Block {
    pub fn attention(&self, batch: usize, tokens: usize) -> AttentionShape {
        AttentionShape { batch, tokens, heads: self.heads, head_dim: self.dim / self.heads }
    }
}

/// ViT patch embedding: the projection as a `(D, Pt·Pf)` matrix, the
/// optional class token and the position embedding.
#[derive(Clone, Debug)]
pub struct Patch {
    pub proj: Linear,
    pub cls: Option<(usize, Slot)>,
    pub pos: (usize, Slot),
}

/// TLOB's `spatial.proj`: a linear whose weight is relabeled (see
/// `Recipe::Relabel`); the training backward takes the gradient in the
/// relabeled layout (`g_int`) and relabels it back.
#[derive(Clone, Debug)]
pub struct SpatialProj {
    pub lin: Linear,
    pub w_int: Slot,
    pub g_int: Slot,
    pub channels: usize,
    pub levels: usize,
}

/// Parallel Conv1d branches over the same input, each followed by GELU,
/// concatenated on channels; `set` indexes the inference model's
/// `ConvWeights` sets (the fused op takes them by value).
#[derive(Clone, Debug)]
pub struct Multiscale {
    pub branches: Vec<Conv>,
    pub set: usize,
    pub dim: usize,
}

/// The parameters and slots of a definition, filled in order by its build.
#[derive(Clone, Debug, Default)]
pub struct Def {
    pub specs: ParamSpecs,
    pub recipes: Vec<Recipe>,
    /// The branches of each `Multiscale`.
    pub sets: Vec<Vec<Conv>>,
}

/// What inference reads: every slot, and each multiscale set's branches
/// (their slots left empty).
pub struct Loaded<B: Backend> {
    pub w: Vec<B::Buf>,
    pub sets: Vec<Vec<ConvWeights<B>>>,
}

impl Def {
    /// Declares the next parameter; returns its index.
    pub fn param(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        self.specs.push(name, shape);
        self.specs.0.len() - 1
    }

    pub fn slot(&mut self, r: Recipe) -> Slot {
        self.recipes.push(r);
        self.recipes.len() - 1
    }

    /// A parameter read as it stands.
    pub fn raw(&mut self, name: impl Into<String>, shape: &[usize]) -> Slot {
        let p = self.param(name, shape);
        self.slot(Recipe::Raw(p))
    }

    pub fn linear(&mut self, prefix: &str, n_in: usize, n_out: usize) -> Linear {
        let p = self.param(format!("{prefix}.weight"), &[n_out, n_in]);
        let w = self.slot(Recipe::Linear { p, n_out, n_in });
        let b = self.raw(format!("{prefix}.bias"), &[n_out]);
        Linear { p, w, b, n_in, n_out }
    }

    pub fn conv(&mut self, prefix: &str, c_in: usize, c_out: usize, k: usize) -> Conv {
        let p = self.param(format!("{prefix}.weight"), &[c_out, c_in, k]);
        let w = self.slot(Recipe::Conv { p, c_out, c_in, k });
        let b = self.raw(format!("{prefix}.bias"), &[c_out]);
        Conv { p, w, b, c_in, c_out, k }
    }

    /// A chain of convs, each `c_out` of `channels` from `c_in`.
    pub fn convs(&mut self, prefix: &str, c_in: usize, channels: &[usize], k: usize) -> Vec<Conv> {
        let mut c_in = c_in;
        let mut out = Vec::new();
        for (i, &c_out) in channels.iter().enumerate() {
            out.push(self.conv(&format!("{prefix}.{i}"), c_in, c_out, k));
            c_in = c_out;
        }
        out
    }

    pub fn norm(&mut self, prefix: &str, dim: usize) -> Norm {
        let w = self.raw(format!("{prefix}.weight"), &[dim]);
        let b = self.raw(format!("{prefix}.bias"), &[dim]);
        Norm { p: self.specs.0.len() - 2, w, b, dim }
    }

    pub fn heads(&mut self, prefix: &str, dim: usize, classes: usize) -> Heads {
        let p = self.specs.0.len();
        let mut slots = [0; 6];
        for (i, (name, n_out)) in [("direction", classes), ("confidence", 1), ("expected_return", 1)].iter().enumerate()
        {
            slots[2 * i] = self.raw(format!("{prefix}.{name}.weight"), &[*n_out, dim]);
            slots[2 * i + 1] = self.raw(format!("{prefix}.{name}.bias"), &[*n_out]);
        }
        Heads { p, slots, dim, classes }
    }

    pub fn block(&mut self, prefix: &str, dim: usize, hidden: usize, heads: usize) -> Block {
        Block {
            norm1: self.norm(&format!("{prefix}.norm1"), dim),
            qkv: self.linear(&format!("{prefix}.attn.qkv"), dim, 3 * dim),
            proj: self.linear(&format!("{prefix}.attn.proj"), dim, dim),
            norm2: self.norm(&format!("{prefix}.norm2"), dim),
            fc1: self.linear(&format!("{prefix}.mlp.fc1"), dim, hidden),
            fc2: self.linear(&format!("{prefix}.mlp.fc2"), hidden, dim),
            heads,
            dim,
            hidden,
        }
    }

    /// Branches `prefix.{i}`, `dim` channels in and out, one per kernel size.
    pub fn multiscale(&mut self, prefix: &str, dim: usize, kernels: &[usize]) -> Multiscale {
        let branches: Vec<Conv> =
            kernels.iter().enumerate().map(|(i, &k)| self.conv(&format!("{prefix}.{i}"), dim, dim, k)).collect();
        self.sets.push(branches.clone());
        Multiscale { branches, set: self.sets.len() - 1, dim }
    }

    /// A linear `prefix` over a `(levels, channels)` map flattened channels-last.
    pub fn spatial_proj(&mut self, prefix: &str, channels: usize, levels: usize, d: usize) -> SpatialProj {
        let n_in = channels * levels;
        let p = self.param(format!("{prefix}.weight"), &[d, n_in]);
        let w_int = self.slot(Recipe::Relabel { p, d, channels, levels });
        let w = self.slot(Recipe::RelabelPrepared { p, src: w_int, d, channels, levels });
        let b = self.raw(format!("{prefix}.bias"), &[d]);
        let g_int = self.slot(Recipe::Scratch(d * n_in));
        SpatialProj { lin: Linear { p, w, b, n_in, n_out: d }, w_int, g_int, channels, levels }
    }

    /// Layer `k` of a PyTorch `nn.LSTM` named `prefix`.
    pub fn lstm(&mut self, prefix: &str, k: usize, n_in: usize, h: usize) -> Lstm {
        let p = self.param(format!("{prefix}.weight_ih_l{k}"), &[4 * h, n_in]);
        self.param(format!("{prefix}.weight_hh_l{k}"), &[4 * h, h]);
        self.param(format!("{prefix}.bias_ih_l{k}"), &[4 * h]);
        self.param(format!("{prefix}.bias_hh_l{k}"), &[4 * h]);
        let w = self.slot(Recipe::Linear { p, n_out: 4 * h, n_in });
        let b = self.slot(Recipe::Sum { a: p + 2, b: p + 3, len: 4 * h });
        let w_hh = self.slot(Recipe::Recurrent { p: p + 1, hidden: h });
        Lstm { input: Linear { p, w, b, n_in, n_out: 4 * h }, w_hh, hidden: h }
    }

    /// Every slot made from host tensors (checked against `specs` by size), for inference.
    pub fn load<B: Backend>(&self, be: &B, tensors: &HashMap<String, Tensor>) -> Result<Loaded<B>> {
        let host = |p: usize| -> Result<&[f32]> {
            let (name, shape) = &self.specs.0[p];
            let numel: usize = shape.iter().product();
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::weights("(parameters)", vec![format!("missing tensor {name}")]))?;
            if t.numel() != numel {
                return Err(Error::weights(
                    "(parameters)",
                    vec![format!("tensor {name} holds {} values, expected {numel}", t.numel())],
                ));
            }
            Ok(&t.data)
        };
        let mut w = self
            .recipes
            .iter()
            .map(|r| match *r {
                Recipe::Raw(p) => be.upload(host(p)?),
                Recipe::Linear { p, n_out, n_in } => be.prepare_linear(host(p)?, n_out, n_in),
                Recipe::Conv { p, c_out, c_in, k } => be.prepare_conv(host(p)?, c_out, c_in, k),
                Recipe::Recurrent { p, hidden } => be.prepare_recurrent(host(p)?, hidden),
                Recipe::Sum { a, b, .. } => {
                    let sum: Vec<f32> = host(a)?.iter().zip(host(b)?).map(|(x, y)| x + y).collect();
                    be.upload(&sum)
                }
                Recipe::Constant(ref v) => be.upload(v),
                Recipe::Relabel { .. } | Recipe::Scratch(_) => be.alloc(0),
                Recipe::RelabelPrepared { p, d, channels, levels, .. } => {
                    let w = super::tlob::spatial_proj_to_internal(host(p)?, d, channels, levels);
                    be.prepare_linear(&w, d, channels * levels)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut take = |s: Slot| -> Result<B::Buf> { Ok(std::mem::replace(&mut w[s], be.alloc(0)?)) };
        let sets = self
            .sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|c| {
                        Ok(ConvWeights { w: take(c.w)?, b: take(c.b)?, c_in: c.c_in, c_out: c.c_out, kernel: c.k })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Loaded { w, sets })
    }

    /// The training copies of the slots that are not a parameter as it stands
    /// (`None` for those), allocated; `refresh` fills them.
    pub fn derive_alloc<B: Train>(&self, be: &B) -> Result<Vec<Option<B::Buf>>> {
        self.recipes
            .iter()
            .map(|r| {
                Ok(match *r {
                    Recipe::Raw(_) => None,
                    Recipe::Linear { n_out, n_in, .. } => Some(be.alloc(n_out * n_in)?),
                    Recipe::Conv { c_out, c_in, k, .. } => Some(be.alloc(c_out * c_in * k)?),
                    // The CPU keeps W_hh and its transpose.
                    Recipe::Recurrent { hidden, .. } => Some(be.alloc(8 * hidden * hidden)?),
                    Recipe::Sum { len, .. } | Recipe::Scratch(len) => Some(be.alloc(len)?),
                    Recipe::Constant(ref v) => Some(be.upload(v)?),
                    Recipe::Relabel { d, channels, levels, .. }
                    | Recipe::RelabelPrepared { d, channels, levels, .. } => Some(be.alloc(d * channels * levels)?),
                })
            })
            .collect()
    }

    /// Re-derives the training copies from the parameters' current values.
    pub fn refresh<B: Train>(&self, be: &B, params: &[Param<B>], derived: &mut [Option<B::Buf>]) -> Result<()> {
        for (i, r) in self.recipes.iter().enumerate() {
            let (done, rest) = derived.split_at_mut(i);
            let Some(dst) = &mut rest[0] else { continue };
            match *r {
                Recipe::Raw(_) | Recipe::Constant(_) | Recipe::Scratch(_) => {}
                Recipe::Relabel { p, d, channels, levels } => {
                    // w[o, c·L + l] → w_int[o, l·C + c].
                    be.swap_last_axes(&params[p].value, dst, d, channels, levels, false)?
                }
                Recipe::RelabelPrepared { src, d, channels, levels, .. } => {
                    let w_int = done[src].as_ref().expect("the relabeled weight comes first");
                    be.prepare_linear_from(w_int, d, channels * levels, dst)?
                }
                Recipe::Linear { p, n_out, n_in } => be.prepare_linear_from(&params[p].value, n_out, n_in, dst)?,
                Recipe::Conv { p, c_out, c_in, k } => be.prepare_conv_from(&params[p].value, c_out, c_in, k, dst)?,
                Recipe::Recurrent { p, hidden } => be.prepare_recurrent_from(&params[p].value, hidden, dst)?,
                Recipe::Sum { a, b, len } => {
                    be.copy(&params[a].value, dst, len)?;
                    be.add(dst, &params[b].value, len)?;
                }
            }
        }
        Ok(())
    }
}

/// One parameter tensor, by docs/models.md's name, in PyTorch's layout: the
/// master copy training updates, and its gradient.
pub struct Param<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: B::Buf,
    pub grad: B::Buf,
    /// Whether AdamW's weight decay applies (matrices and conv kernels only).
    pub decay: bool,
}

impl<B: Backend> Param<B> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
