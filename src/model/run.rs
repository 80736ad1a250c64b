//! How a forward written once runs: the `Run` trait (the layer-level ops a
//! model's forward is a list of), the activation arena both runs draw their
//! buffers from, and the inference run.
//!
//! A model's forward (`cnn_lstm::CnnLstm::forward`, …) names its
//! activations by `Act` handles and leaves every choice of how an op runs to
//! the run: the inference run (`Infer`, here) calls the fused `Backend` ops
//! and hands a consumed activation's buffer to a later one; the training run
//! (`model::tape::TrainRun`) calls the `Train` ops that keep what the
//! backward needs, applies dropout, and records a tape the backward (written
//! beside each forward) reads in reverse.
//!
//! Buffers come from an `Arena`: the first pass at a shape *plans* (each
//! request takes a free buffer of its size or allocates one), and every later
//! pass at that shape *replays* the plan (the n-th request gets the n-th
//! planned buffer), so a warm forward allocates nothing and its buffers do not
//! move (what a recorded CUDA graph needs). Sizes are per sample: a buffer
//! holds `per_sample · cap` values, `cap` being the largest batch the plan
//! serves.

use super::def::{Block, Conv, Def, Heads, Linear, Lstm, Multiscale, Norm, Patch, Slot};
use super::tape::TrainRun;
use super::{Inputs, Normalizers, Part, RunShape};
use crate::backend::{
    Backend, BroadcastShape, ConvShape, ConvWeights, Epilogue, HeadsOut, HeadsRef, LinearShape, LstmShape, PatchShape,
    Pool, Train,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A model written once: its definition, its forward (any run) and its
/// backward (the training run's tape in reverse).
pub trait Architecture {
    fn def(&self) -> &Def;
    /// Checks a forward's inputs; returns the run's shape and the inputs to stage.
    fn inputs<'a>(&self, inputs: &Inputs<'a>) -> Result<(RunShape, [Option<&'a Tensor>; 2])>;
    fn forward<B: Backend, R: Run<B>>(&self, r: &mut R) -> Result<()>;
    fn backward<B: Train>(&self, r: &mut TrainRun<'_, B>) -> Result<()>;
}

/// An activation: an index into the arena's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Act(pub usize);

/// The layer-level ops a model's forward is written in.
pub trait Run<B: Backend> {
    /// The batch size of this pass.
    fn batch(&self) -> usize;
    /// Whether this pass has the auxiliary input (input 1).
    fn aux(&self) -> bool;
    /// Which part of the forward this pass runs (only inference splits).
    fn part(&self) -> Part {
        Part::Whole
    }
    /// An `Encode` pass's result, `(batch, D)` tokens, for the caller to read.
    fn tokens_out(&mut self, _x: Act) -> Result<()> {
        Err(Error::input("(activations)", "only an inference pass can end at the tokens"))
    }
    /// Input `i` (0: `features` or `lob`, 1: `aux`), `(rows, dim)`: the staged
    /// input, standardized when the inference model has a normalizer for it.
    fn input(&mut self, i: usize, rows: usize, dim: usize) -> Result<Act>;
    /// A "same" Conv1d then GELU over `(samples, len, c_in)`.
    fn conv_gelu(&mut self, conv: &Conv, x: Act, samples: usize, len: usize) -> Result<Act>;
    /// One LSTM layer over `x (batch, steps, n_in)`: its input projection and recurrence.
    fn lstm(&mut self, layer: &Lstm, x: Act, shape: LstmShape) -> Result<Act>;
    /// Dropout of `len` values (training only; a new activation when it drops).
    fn dropout(&mut self, x: Act, len: usize) -> Result<Act>;
    /// `y = x Wᵀ + b`.
    fn linear(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act>;
    /// `y = GELU(x Wᵀ + b)`.
    fn linear_gelu(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act>;
    /// `stream + drop(x Wᵀ + b)`: a residual branch (inference: into `stream` in place).
    fn residual(&mut self, l: &Linear, x: Act, stream: Act, rows: usize) -> Result<Act>;
    /// Every branch over `x (batch, len, dim)`, each then GELU, concatenated
    /// on channels; `x` stays readable (it is the residual stream).
    fn multiscale(&mut self, ms: &Multiscale, x: Act, batch: usize, len: usize) -> Result<Act>;
    /// `x += src` broadcast by `shape` (`src` an activation), in place.
    fn broadcast_add(&mut self, x: Act, src: Act, shape: BroadcastShape) -> Result<Act>;
    /// `x + pe` with `pe` a constant slot broadcast over the samples.
    fn add_positions(&mut self, x: Act, pe: Slot, shape: BroadcastShape) -> Result<Act>;
    /// Dropout of `len` values in place (training only).
    fn dropout_in_place(&mut self, x: Act, len: usize) -> Result<Act>;
    /// ViT patch embedding of `x (batch, height, width)`.
    fn patch_embed(&mut self, patch: &Patch, x: Act, shape: PatchShape) -> Result<Act>;
    /// A pre-norm transformer block over `x (batch, tokens, dim)`.
    fn block(&mut self, b: &Block, x: Act, batch: usize, tokens: usize) -> Result<Act>;
    /// A block's output for each sample's first token only, `(batch, dim)`
    /// (inference runs the projection and the MLP on that token alone).
    fn block_first_token(&mut self, b: &Block, x: Act, batch: usize, tokens: usize) -> Result<Act>;
    fn pool(&mut self, x: Act, tokens: usize, dim: usize, how: Pool) -> Result<Act>;
    fn norm(&mut self, norm: &Norm, x: Act, rows: usize) -> Result<Act>;
    /// Every set of heads on `z (batch, dim)` (training: with its loss).
    fn heads(&mut self, heads: &[Heads], z: Act) -> Result<()>;
}

/// Buffers drawn by request order, planned once per shape (see the module doc).
pub struct Arena<B: Backend> {
    /// Each buffer and its size per sample (`None`: dropped by a plan that
    /// did not use it; indices stay, so handles held across passes do).
    bufs: Vec<(Option<B::Buf>, usize)>,
    /// Request n → buffer.
    plan: Vec<usize>,
    cursor: usize,
    planning: bool,
    /// Free buffers while planning.
    free: Vec<usize>,
    /// The batch the buffers are sized for, and what else the plan depends on.
    cap: usize,
    key: u64,
    /// Whether a pass completed the plan.
    complete: bool,
    /// Plans made so far: buffers move only when it changes.
    epoch: u64,
}

impl<B: Backend> Default for Arena<B> {
    fn default() -> Self {
        Arena {
            bufs: Vec::new(),
            plan: Vec::new(),
            cursor: 0,
            planning: false,
            free: Vec::new(),
            cap: 0,
            key: 0,
            complete: false,
            epoch: 0,
        }
    }
}

impl<B: Backend> Arena<B> {
    /// Whether a pass at `(cap, key)` must plan.
    pub fn needs_plan(&self, cap: usize, key: u64) -> bool {
        !self.complete || cap != self.cap || key != self.key
    }

    /// Starts a pass for batches up to `cap`: it replays the plan, or plans
    /// anew (keeping the buffers as a pool when `cap` is unchanged).
    pub fn begin(&mut self, cap: usize, key: u64) {
        self.cursor = 0;
        self.planning = self.needs_plan(cap, key);
        if self.planning {
            self.epoch += 1;
            if cap != self.cap {
                self.bufs.clear();
            }
            self.cap = cap;
            self.key = key;
            self.complete = false;
            self.plan.clear();
            self.free.clear();
            self.free.extend((0..self.bufs.len()).filter(|&i| self.bufs[i].0.is_some()));
        }
    }

    /// Which plan the buffers are laid out by (a recording of a pass holds
    /// their addresses, so it stays valid only while this does not change).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Ends a pass; a planning pass drops the pool's buffers it did not use.
    pub fn end(&mut self) {
        if !self.planning {
            return;
        }
        self.planning = false;
        let mut used = vec![false; self.bufs.len()];
        for &i in &self.plan {
            used[i] = true;
        }
        for (b, used) in self.bufs.iter_mut().zip(used) {
            if !used {
                b.0 = None;
            }
        }
        self.complete = true;
    }

    /// The next buffer, of `per_sample` values a sample.
    pub fn take(&mut self, be: &B, per_sample: usize) -> Result<Act> {
        let n = self.cursor;
        self.cursor += 1;
        if !self.planning {
            return match self.plan.get(n) {
                Some(&i) if self.bufs[i].1 == per_sample => Ok(Act(i)),
                _ => Err(Error::input("(activations)", "a pass asked for other buffers than its plan")),
            };
        }
        let i = match self.free.iter().position(|&i| self.bufs[i].1 == per_sample) {
            Some(k) => self.free.remove(k),
            None => {
                self.bufs.push((Some(be.alloc(per_sample * self.cap)?), per_sample));
                self.bufs.len() - 1
            }
        };
        self.plan.push(i);
        Ok(Act(i))
    }

    /// `a` is no longer read in this pass: a later request may take its buffer.
    pub fn free(&mut self, a: Act) {
        if self.planning {
            self.free.push(a.0);
        }
    }

    pub fn get(&self, a: Act) -> &B::Buf {
        self.bufs[a.0].0.as_ref().expect("a planned activation")
    }

    pub fn get_mut(&mut self, a: Act) -> &mut B::Buf {
        self.bufs[a.0].0.as_mut().expect("a planned activation")
    }

    /// `x` to read and `y` to write (two different activations).
    pub fn io(&mut self, x: Act, y: Act) -> (&B::Buf, &mut B::Buf) {
        let [x, y] = self.many_mut([x, y]);
        (x, y)
    }

    /// Distinct activations, each mutable (an op's several buffers at once).
    pub fn many_mut<const N: usize>(&mut self, ids: [Act; N]) -> [&mut B::Buf; N] {
        let refs = self.bufs.get_disjoint_mut(ids.map(|a| a.0)).expect("an op's buffers are distinct activations");
        refs.map(|r| r.0.as_mut().expect("a planned activation"))
    }
}

/// An inference model's activations: the arena, where its inputs were put,
/// and each set of heads' outputs (logits, confidence, expected return), or
/// an `Encode` pass's tokens.
pub struct Acts<B: Backend> {
    pub arena: Arena<B>,
    pub inputs: [Option<Act>; 2],
    pub heads: Vec<[Act; 3]>,
    pub tokens: Option<Act>,
    pub batch: usize,
}

impl<B: Backend> Default for Acts<B> {
    fn default() -> Self {
        Acts { arena: Arena::default(), inputs: [None; 2], heads: Vec::new(), tokens: None, batch: 0 }
    }
}

/// The inference run: fused ops into the arena's buffers. A `dry` pass only
/// plans (no op runs); the model makes one when the shape changes, before
/// the inputs are written, so the compute phase never allocates.
pub struct Infer<'a, B: Backend> {
    pub be: &'a B,
    pub w: &'a [B::Buf],
    pub sets: &'a [Vec<ConvWeights<B>>],
    pub aux: bool,
    pub part: Part,
    pub acts: &'a mut Acts<B>,
    pub norms: &'a Normalizers<B>,
    pub dry: bool,
}

impl<B: Backend> Infer<'_, B> {
    fn take(&mut self, len: usize) -> Result<Act> {
        let b = self.acts.batch;
        debug_assert_eq!(len % b, 0, "an activation is whole samples");
        self.acts.arena.take(self.be, len / b)
    }
}

/// A block's scratch at inference: `h`, `qkv`, `att`, `mlp`, shared by the
/// blocks of a model (each block's input lives in the residual stream).
#[derive(Clone, Copy)]
struct Scratch {
    h: Act,
    qkv: Act,
    att: Act,
    mlp: Act,
}

impl<B: Backend> Infer<'_, B> {
    fn lin(&mut self, l: &Linear, x: Act, y: Act, rows: usize, epi: Epilogue) -> Result<()> {
        let [xb, yb] = self.acts.arena.many_mut([x, y]);
        self.be.linear(xb, &self.w[l.w], &self.w[l.b], yb, LinearShape { rows, n_in: l.n_in, n_out: l.n_out }, epi)
    }

    fn ln(&mut self, n: &Norm, x: Act, y: Act, rows: usize) -> Result<()> {
        let [xb, yb] = self.acts.arena.many_mut([x, y]);
        self.be.layernorm(xb, &self.w[n.w], &self.w[n.b], yb, rows, n.dim)
    }

    /// A linear into a new activation; `x` is free after.
    fn linear_into_new(&mut self, l: &Linear, x: Act, rows: usize, epi: Epilogue) -> Result<Act> {
        let y = self.take(rows * l.n_out)?;
        if !self.dry {
            self.lin(l, x, y, rows, epi)?;
        }
        self.acts.arena.free(x);
        Ok(y)
    }

    fn scratch(&mut self, b: &Block, rows: usize) -> Result<Scratch> {
        Ok(Scratch {
            h: self.take(rows * b.dim)?,
            qkv: self.take(rows * 3 * b.dim)?,
            att: self.take(rows * b.dim)?,
            mlp: self.take(rows * b.hidden)?,
        })
    }

    fn free_scratch(&mut self, s: Scratch) {
        for a in [s.h, s.qkv, s.att, s.mlp] {
            self.acts.arena.free(a);
        }
    }

    /// `att = attn(norm1(x))` (`h` and `qkv` as scratch).
    fn attend(&mut self, b: &Block, x: Act, s: Scratch, batch: usize, tokens: usize) -> Result<()> {
        let rows = batch * tokens;
        self.ln(&b.norm1, x, s.h, rows)?;
        self.lin(&b.qkv, s.h, s.qkv, rows, Epilogue::None)?;
        let (qb, ab) = self.acts.arena.io(s.qkv, s.att);
        self.be.attention(qb, ab, b.attention(batch, tokens))
    }

    /// `x += fc2(GELU(fc1(norm2(x))))` over `rows` rows.
    fn mlp(&mut self, b: &Block, x: Act, s: Scratch, rows: usize) -> Result<()> {
        self.ln(&b.norm2, x, s.h, rows)?;
        self.lin(&b.fc1, s.h, s.mlp, rows, Epilogue::Gelu)?;
        self.lin(&b.fc2, s.mlp, x, rows, Epilogue::Accumulate)
    }
}

impl<B: Backend> Run<B> for Infer<'_, B> {
    fn batch(&self) -> usize {
        self.acts.batch
    }

    fn aux(&self) -> bool {
        self.aux
    }

    fn part(&self) -> Part {
        self.part
    }

    fn tokens_out(&mut self, x: Act) -> Result<()> {
        if self.dry {
            self.acts.tokens = Some(x);
        }
        Ok(())
    }

    fn linear(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act> {
        self.linear_into_new(l, x, rows, Epilogue::None)
    }

    fn linear_gelu(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act> {
        self.linear_into_new(l, x, rows, Epilogue::Gelu)
    }

    fn residual(&mut self, l: &Linear, x: Act, stream: Act, rows: usize) -> Result<Act> {
        if !self.dry {
            self.lin(l, x, stream, rows, Epilogue::Accumulate)?;
        }
        self.acts.arena.free(x);
        Ok(stream)
    }

    fn multiscale(&mut self, ms: &Multiscale, x: Act, batch: usize, len: usize) -> Result<Act> {
        let y = self.take(batch * len * ms.branches.len() * ms.dim)?;
        if !self.dry {
            let (xb, yb) = self.acts.arena.io(x, y);
            self.be.multiscale_conv(xb, &self.sets[ms.set], yb, batch, len, ms.dim)?;
        }
        Ok(y)
    }

    fn broadcast_add(&mut self, x: Act, src: Act, shape: BroadcastShape) -> Result<Act> {
        if !self.dry {
            let [xb, sb] = self.acts.arena.many_mut([x, src]);
            self.be.broadcast_add(xb, sb, shape)?;
        }
        self.acts.arena.free(src);
        Ok(x)
    }

    fn add_positions(&mut self, x: Act, pe: Slot, shape: BroadcastShape) -> Result<Act> {
        if !self.dry {
            self.be.broadcast_add(self.acts.arena.get_mut(x), &self.w[pe], shape)?;
        }
        Ok(x)
    }

    fn input(&mut self, i: usize, rows: usize, dim: usize) -> Result<Act> {
        let x = self.take(rows * dim)?;
        if self.dry {
            self.acts.inputs[i] = Some(x);
        } else if let Some((mean, std)) = if i == 0 { &self.norms.input } else { &self.norms.aux } {
            self.be.standardize(self.acts.arena.get_mut(x), mean, std, rows, dim)?;
        }
        Ok(x)
    }

    fn conv_gelu(&mut self, conv: &Conv, x: Act, samples: usize, len: usize) -> Result<Act> {
        let y = self.take(samples * len * conv.c_out)?;
        if !self.dry {
            let shape = ConvShape::dense(samples, len, conv.c_in, conv.c_out, conv.k);
            let (xb, yb) = self.acts.arena.io(x, y);
            self.be.conv1d(xb, &self.w[conv.w], &self.w[conv.b], yb, shape, true)?;
        }
        self.acts.arena.free(x);
        Ok(y)
    }

    fn lstm(&mut self, layer: &Lstm, x: Act, shape: LstmShape) -> Result<Act> {
        let rows = shape.batch * shape.steps;
        let lin = &layer.input;
        let gx = self.take(rows * lin.n_out)?;
        if !self.dry {
            let (xb, gb) = self.acts.arena.io(x, gx);
            let ls = LinearShape { rows, n_in: lin.n_in, n_out: lin.n_out };
            self.be.linear(xb, &self.w[lin.w], &self.w[lin.b], gb, ls, Epilogue::None)?;
        }
        // Once `gx` holds the input projection, the input sequence is free.
        self.acts.arena.free(x);
        let h = self.take(rows * shape.hidden)?;
        if !self.dry {
            let (gb, hb) = self.acts.arena.io(gx, h);
            self.be.lstm(gb, &self.w[layer.w_hh], hb, shape)?;
        }
        self.acts.arena.free(gx);
        Ok(h)
    }

    fn dropout(&mut self, x: Act, _len: usize) -> Result<Act> {
        Ok(x)
    }

    fn dropout_in_place(&mut self, x: Act, _len: usize) -> Result<Act> {
        Ok(x)
    }

    fn patch_embed(&mut self, patch: &Patch, x: Act, shape: PatchShape) -> Result<Act> {
        let y = self.take(shape.batch * shape.tokens() * shape.dim)?;
        if !self.dry {
            let w = self.w;
            let cls = patch.cls.map(|(_, s)| &w[s]);
            let (xb, yb) = self.acts.arena.io(x, y);
            self.be.patch_embed(xb, &w[patch.proj.w], &w[patch.proj.b], cls, &w[patch.pos.1], yb, shape)?;
        }
        self.acts.arena.free(x);
        Ok(y)
    }

    /// `x = x + proj(attn(norm1(x)))`; `x = x + fc2(GELU(fc1(norm2(x))))`, in place.
    fn block(&mut self, b: &Block, x: Act, batch: usize, tokens: usize) -> Result<Act> {
        let rows = batch * tokens;
        let s = self.scratch(b, rows)?;
        if !self.dry {
            self.attend(b, x, s, batch, tokens)?;
            self.lin(&b.proj, s.att, x, rows, Epilogue::Accumulate)?;
            self.mlp(b, x, s, rows)?;
        }
        self.free_scratch(s);
        Ok(x)
    }

    /// Every token still feeds the attention (as keys and values), but the
    /// projection and the MLP, most of the block's work, run on one row per
    /// sample instead of `tokens`.
    fn block_first_token(&mut self, b: &Block, x: Act, batch: usize, tokens: usize) -> Result<Act> {
        let s = self.scratch(b, batch * tokens)?;
        let x0 = self.take(batch * b.dim)?;
        if !self.dry {
            self.attend(b, x, s, batch, tokens)?;
            let (xb, x0b) = self.acts.arena.io(x, x0);
            self.be.pool(xb, x0b, batch, tokens, b.dim, Pool::First)?;
            // The first token's attention output, gathered into the rows of `h` (free again).
            let (ab, hb) = self.acts.arena.io(s.att, s.h);
            self.be.pool(ab, hb, batch, tokens, b.dim, Pool::First)?;
            self.lin(&b.proj, s.h, x0, batch, Epilogue::Accumulate)?;
            self.mlp(b, x0, s, batch)?;
        }
        self.free_scratch(s);
        self.acts.arena.free(x);
        Ok(x0)
    }

    fn pool(&mut self, x: Act, tokens: usize, dim: usize, how: Pool) -> Result<Act> {
        let batch = self.acts.batch;
        let y = self.take(batch * dim)?;
        if !self.dry {
            let (xb, yb) = self.acts.arena.io(x, y);
            self.be.pool(xb, yb, batch, tokens, dim, how)?;
        }
        self.acts.arena.free(x);
        Ok(y)
    }

    fn norm(&mut self, norm: &Norm, x: Act, rows: usize) -> Result<Act> {
        let y = self.take(rows * norm.dim)?;
        if !self.dry {
            let (xb, yb) = self.acts.arena.io(x, y);
            self.be.layernorm(xb, &self.w[norm.w], &self.w[norm.b], yb, rows, norm.dim)?;
        }
        self.acts.arena.free(x);
        Ok(y)
    }

    fn heads(&mut self, heads: &[Heads], z: Act) -> Result<()> {
        let batch = self.acts.batch;
        if self.dry {
            self.acts.heads.clear();
        }
        for h in heads {
            let out = [self.take(batch * h.classes)?, self.take(batch)?, self.take(batch)?];
            if self.dry {
                self.acts.heads.push(out);
                continue;
            }
            let s = &h.slots;
            let w = self.w;
            let p = HeadsRef {
                direction_w: &w[s[0]],
                direction_b: &w[s[1]],
                confidence_w: &w[s[2]],
                confidence_b: &w[s[3]],
                return_w: &w[s[4]],
                return_b: &w[s[5]],
                classes: h.classes,
            };
            let [l, c, r] = out;
            let [zb, logits, confidence, expected_return] = self.acts.arena.many_mut([z, l, c, r]);
            self.be.heads(zb, p, HeadsOut { logits, confidence, expected_return }, batch, h.dim)?;
        }
        self.acts.arena.free(z);
        Ok(())
    }
}
