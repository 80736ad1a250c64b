//! The training run: a model's forward (the same code inference runs) on the
//! `Train` ops that keep what the backward needs, with dropout, recording a
//! tape; and the backward of each layer-level op, which a model's backward
//! (written beside its forward) calls in reverse order, each popping the
//! record its forward op pushed.
//!
//! Conventions (those of `backend::Train`): the forward reads the slots a
//! `Def` derives (prepared layouts) and the master parameters as they stand;
//! the backward reads the master values and adds into their gradients. A
//! backward op takes the gradient of its op's output and returns that of its
//! input (`None` where the input is data: nothing needs it).

use super::def::{Block, Conv, Def, Heads, Linear, Lstm, Multiscale, Norm, Param, Patch, Recipe, Slot, SpatialProj};
use super::run::{Act, Arena, Run};
use crate::backend::{
    BroadcastShape, ConvShape, Epilogue, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets, LinearShape,
    LstmShape, PatchShape, Pool, Train,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The dropout of one forward: sites are numbered in forward order, each
/// drawing its mask from its own ChaCha stream of the step's seed.
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    pub on: bool,
    pub site: u64,
}

impl Dropout {
    pub fn active(&self) -> bool {
        self.on && self.p > 0.0
    }

    /// Draws the next site's mask into `mask` and applies it to `x`.
    pub fn apply<B: Train>(&mut self, be: &B, mask: &mut B::Buf, x: &mut B::Buf, len: usize) -> Result<()> {
        let site = self.site;
        self.site += 1;
        if self.active() {
            be.dropout_mask(mask, len, self.p, self.seed, site)?;
            be.mul(x, mask, len)?;
        }
        Ok(())
    }
}

/// One set of heads' outputs and targets at a batch size.
pub struct HeadsTape<B: Train> {
    pub logits: B::Buf,
    pub confidence: B::Buf,
    pub ret: B::Buf,
    pub class: B::Buf,
    pub target: B::Buf,
}

impl<B: Train> HeadsTape<B> {
    pub fn new(be: &B, batch: usize, classes: usize) -> Result<Self> {
        Ok(HeadsTape {
            logits: be.alloc(batch * classes)?,
            confidence: be.alloc(batch)?,
            ret: be.alloc(batch)?,
            class: be.alloc(batch)?,
            target: be.alloc(batch)?,
        })
    }
}

/// What a forward op recorded for its backward.
#[derive(Clone, Copy, Debug)]
enum Rec {
    Conv { x: Act, pre: Act, samples: usize, len: usize },
    Lstm { x: Act, h: Act, c: Act, gates: Act, shape: LstmShape },
    Drop { mask: Option<Act>, len: usize },
    Pool { tokens: usize, dim: usize, how: Pool },
    Norm { x: Act, rows: usize },
    Heads { dz: Option<Act> },
    Patch { x: Act, shape: PatchShape },
    Linear { x: Act, rows: usize },
    LinearGelu { x: Act, pre: Act, rows: usize },
    Residual { x: Act, mask: Option<Act>, rows: usize },
    Multiscale { x: Act, pre: Act, batch: usize, len: usize },
    Broadcast { shape: BroadcastShape },
    Block(BlockRec),
}

/// One block's kept activations (its input is `x_in`); the masks when it dropped.
#[derive(Clone, Copy, Debug)]
struct BlockRec {
    x_in: Act,
    h1: Act,
    qkv: Act,
    /// Softmax probabilities `(batch, heads, tokens, tokens)`.
    probs: Act,
    att: Act,
    x_mid: Act,
    h2: Act,
    pre: Act,
    act: Act,
    masks: Option<(Act, Act)>,
    batch: usize,
    tokens: usize,
}

/// A training model's tape, kept from step to step (its buffers sized for
/// the largest batch seen; a smaller batch, an epoch's last, runs in them).
pub struct Tape<B: Train> {
    pub acts: Arena<B>,
    pub grads: Arena<B>,
    recs: Vec<Rec>,
    /// Each set of heads' outputs and targets.
    pub heads: Vec<HeadsTape<B>>,
    /// The data inputs of the step (their gradient is not needed).
    inputs: [Option<Act>; 2],
    /// The batch the buffers are sized for.
    cap: usize,
}

impl<B: Train> Tape<B> {
    /// Starts a step of `batch` samples with `sets` sets of heads; `key`
    /// names what else changes the forward's op list (TLOB's auxiliary input).
    pub fn begin(&mut self, be: &B, batch: usize, sets: usize, classes: usize, key: u64, backward: bool) -> Result<()> {
        let cap = batch.max(self.cap);
        if cap != self.cap || self.heads.len() != sets {
            self.heads = (0..sets).map(|_| HeadsTape::new(be, cap, classes)).collect::<Result<_>>()?;
            self.cap = cap;
        }
        self.acts.begin(cap, key);
        if backward {
            self.grads.begin(cap, key);
        }
        self.recs.clear();
        self.inputs = [None; 2];
        Ok(())
    }

    /// Ends a step that ran to its end.
    pub fn end(&mut self, backward: bool) {
        self.acts.end();
        if backward {
            self.grads.end();
        }
    }
}

impl<B: Train> Default for Tape<B> {
    fn default() -> Self {
        Tape {
            acts: Arena::default(),
            grads: Arena::default(),
            recs: Vec::new(),
            heads: Vec::new(),
            inputs: [None; 2],
            cap: 0,
        }
    }
}

/// The training run of one step: `params` (the master values, and the
/// gradients the backward adds into), `derived` (the `Def`'s prepared slots,
/// `None` where a slot is a parameter as it stands).
pub struct TrainRun<'a, B: Train> {
    pub be: &'a B,
    pub def: &'a Def,
    pub params: &'a mut [Param<B>],
    pub derived: &'a mut [Option<B::Buf>],
    pub tape: &'a mut Tape<B>,
    pub inputs: [Option<&'a Tensor>; 2],
    pub drop: Dropout,
    pub loss: HeadsLoss,
    pub backward: bool,
    pub batch: usize,
    /// The loss summed over the samples and sets of heads.
    pub total: f64,
}

fn pop_err() -> Error {
    Error::input("(tape)", "the backward does not mirror the forward")
}

impl<B: Train> TrainRun<'_, B> {
    fn take(&mut self, len: usize) -> Result<Act> {
        self.tape.acts.take(self.be, len / self.batch)
    }

    fn take_grad(&mut self, len: usize) -> Result<Act> {
        self.tape.grads.take(self.be, len / self.batch)
    }

    fn is_data(&self, a: Act) -> bool {
        self.tape.inputs.contains(&Some(a))
    }

    fn pop(&mut self) -> Result<Rec> {
        self.tape.recs.pop().ok_or_else(pop_err)
    }

    /// The buffer a slot names: a derived one, or the parameter as it stands.
    fn slot<'s>(def: &Def, params: &'s [Param<B>], derived: &'s [Option<B::Buf>], s: Slot) -> &'s B::Buf {
        match (&derived[s], &def.recipes[s]) {
            (Some(b), _) => b,
            (None, Recipe::Raw(p)) => &params[*p].value,
            (None, r) => unreachable!("slot {s} ({r:?}) is derived but was not allocated"),
        }
    }

    /// `y = x Wᵀ + b` (both activations).
    fn lin(&mut self, l: &Linear, x: Act, y: Act, rows: usize, epi: Epilogue) -> Result<()> {
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let (w, b) = (Self::slot(def, params, derived, l.w), Self::slot(def, params, derived, l.b));
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.linear(xb, w, b, yb, LinearShape { rows, n_in: l.n_in, n_out: l.n_out }, epi)
    }

    /// `pre = x Wᵀ + b` and `y = GELU(pre)` (all three activations), in one op.
    fn lin_gelu(&mut self, l: &Linear, x: Act, pre: Act, y: Act, rows: usize) -> Result<()> {
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let (w, b) = (Self::slot(def, params, derived, l.w), Self::slot(def, params, derived, l.b));
        let [xb, pb, yb] = self.tape.acts.many_mut([x, pre, y]);
        self.be.linear_gelu_keep(xb, w, b, pb, yb, LinearShape { rows, n_in: l.n_in, n_out: l.n_out })
    }

    fn ln(&mut self, n: &Norm, x: Act, y: Act, rows: usize) -> Result<()> {
        let (p, be) = (&*self.params, self.be);
        let (xb, yb) = self.tape.acts.io(x, y);
        be.layernorm(xb, &p[n.p].value, &p[n.p + 1].value, yb, rows, n.dim)
    }

    /// Backward of a linear: `x` an activation, `dy` a gradient; `dx` (a
    /// gradient) written, or added into when `accumulate`.
    fn lin_bwd(&mut self, l: &Linear, x: Act, dy: Act, dx: Option<(Act, bool)>, rows: usize) -> Result<()> {
        let Ok([pw, pb]) = self.params.get_disjoint_mut([l.p, l.p + 1]) else { unreachable!("two parameters") };
        let Tape { acts, grads, .. } = &mut *self.tape;
        let shape = LinearShape { rows, n_in: l.n_in, n_out: l.n_out };
        match dx {
            Some((dx, acc)) => {
                let (dyb, dxb) = grads.io(dy, dx);
                self.be.linear_backward(
                    acts.get(x),
                    &pw.value,
                    dyb,
                    Some(dxb),
                    &mut pw.grad,
                    Some(&mut pb.grad),
                    shape,
                    acc,
                )
            }
            None => {
                let dyb = grads.get(dy);
                self.be.linear_backward(
                    acts.get(x),
                    &pw.value,
                    dyb,
                    None,
                    &mut pw.grad,
                    Some(&mut pb.grad),
                    shape,
                    false,
                )
            }
        }
    }

    /// `dx += …` of a LayerNorm (`x` an activation, `dy` and `dx` gradients).
    fn ln_bwd(&mut self, n: &Norm, x: Act, dy: Act, dx: Act, rows: usize) -> Result<()> {
        let Ok([pw, pb]) = self.params.get_disjoint_mut([n.p, n.p + 1]) else { unreachable!("two parameters") };
        let Tape { acts, grads, .. } = &mut *self.tape;
        let (dyb, dxb) = grads.io(dy, dx);
        self.be.layernorm_backward(acts.get(x), &pw.value, dyb, dxb, &mut pw.grad, &mut pb.grad, rows, n.dim)
    }

    /// `g = d · mask` when the branch dropped, else `d` itself.
    fn masked(&mut self, d: Act, g: Act, mask: Option<Act>, n: usize) -> Result<Act> {
        let Some(m) = mask else { return Ok(d) };
        let Tape { acts, grads, .. } = &mut *self.tape;
        let (db, gb) = grads.io(d, g);
        self.be.copy(db, gb, n)?;
        self.be.mul(gb, acts.get(m), n)?;
        Ok(g)
    }

    /// `d` holds the gradient of the block's output and leaves holding that of its input.
    pub fn block_bwd(&mut self, b: &Block, d: Act) -> Result<Act> {
        let Rec::Block(t) = self.pop()? else { return Err(pop_err()) };
        let rows = t.batch * t.tokens;
        let n = rows * b.dim;
        let g = self.take_grad(n)?;
        let dact = self.take_grad(rows * b.hidden)?;
        let dh = self.take_grad(n)?;
        let datt = self.take_grad(n)?;
        let dqkv = self.take_grad(3 * n)?;
        let dprobs = self.take_grad(t.batch * b.heads * t.tokens * t.tokens)?;
        // MLP branch.
        let dy = self.masked(d, g, t.masks.map(|m| m.1), n)?;
        self.lin_bwd(&b.fc2, t.act, dy, Some((dact, false)), rows)?;
        {
            let Tape { acts, grads, .. } = &mut *self.tape;
            self.be.gelu_backward(acts.get(t.pre), grads.get_mut(dact), rows * b.hidden)?;
        }
        self.lin_bwd(&b.fc1, t.h2, dact, Some((dh, false)), rows)?;
        self.ln_bwd(&b.norm2, t.x_mid, dh, d, rows)?;
        // Attention branch.
        let dy = self.masked(d, g, t.masks.map(|m| m.0), n)?;
        self.lin_bwd(&b.proj, t.att, dy, Some((datt, false)), rows)?;
        {
            let Tape { acts, grads, .. } = &mut *self.tape;
            let [da, dq, dp] = grads.many_mut([datt, dqkv, dprobs]);
            let shape = b.attention(t.batch, t.tokens);
            self.be.attention_backward(acts.get(t.qkv), acts.get(t.probs), da, dq, dp, shape)?;
        }
        self.lin_bwd(&b.qkv, t.h1, dqkv, Some((dh, false)), rows)?;
        self.ln_bwd(&b.norm1, t.x_in, dh, d, rows)?;
        for a in [g, dact, dh, datt, dqkv, dprobs] {
            self.tape.grads.free(a);
        }
        Ok(d)
    }

    /// The patch embedding's parameters' gradients (its input is data).
    pub fn patch_bwd(&mut self, patch: &Patch, d: Act) -> Result<()> {
        let Rec::Patch { x, shape } = self.pop()? else { return Err(pop_err()) };
        let p = patch.proj.p;
        let Tape { acts, grads, .. } = &mut *self.tape;
        let (xb, db) = (acts.get(x), grads.get(d));
        match patch.cls {
            Some((c, _)) => {
                let Ok([pw, pb, pc, pp]) = self.params.get_disjoint_mut([p, p + 1, c, patch.pos.0]) else {
                    unreachable!("four parameters")
                };
                let dcls = Some(&mut pc.grad);
                self.be.patch_embed_backward(xb, db, &mut pw.grad, &mut pb.grad, dcls, &mut pp.grad, shape)?;
            }
            None => {
                let Ok([pw, pb, pp]) = self.params.get_disjoint_mut([p, p + 1, patch.pos.0]) else {
                    unreachable!("three parameters")
                };
                self.be.patch_embed_backward(xb, db, &mut pw.grad, &mut pb.grad, None, &mut pp.grad, shape)?;
            }
        }
        grads.free(d);
        Ok(())
    }

    /// `out = stream + drop(l(x))`: a residual branch through dropout (`tmp`
    /// its scratch), or accumulated straight into the copy of the stream.
    #[allow(clippy::too_many_arguments)]
    fn residual_op(
        &mut self,
        l: &Linear,
        x: Act,
        stream: Act,
        out: Act,
        tmp: Act,
        mask: Option<Act>,
        rows: usize,
    ) -> Result<()> {
        let n = rows * l.n_out;
        {
            let (sb, ob) = self.tape.acts.io(stream, out);
            self.be.copy(sb, ob, n)?;
        }
        match mask {
            Some(m) if self.drop.active() => {
                self.lin(l, x, tmp, rows, Epilogue::None)?;
                let [mb, tb, ob] = self.tape.acts.many_mut([m, tmp, out]);
                self.drop.apply(self.be, mb, tb, n)?;
                self.be.add(ob, tb, n)
            }
            _ => {
                self.lin(l, x, out, rows, Epilogue::Accumulate)?;
                self.drop.site += 1;
                Ok(())
            }
        }
    }

    /// Backward of `linear` (`Some(dx)` unless its input is data).
    pub fn linear_bwd(&mut self, l: &Linear, d: Act) -> Result<Option<Act>> {
        let Rec::Linear { x, rows } = self.pop()? else { return Err(pop_err()) };
        self.linear_bwd_from(l, x, d, rows)
    }

    fn linear_bwd_from(&mut self, l: &Linear, x: Act, d: Act, rows: usize) -> Result<Option<Act>> {
        let dx = if self.is_data(x) { None } else { Some(self.take_grad(rows * l.n_in)?) };
        self.lin_bwd(l, x, d, dx.map(|a| (a, false)), rows)?;
        self.tape.grads.free(d);
        Ok(dx)
    }

    /// Backward of `linear_gelu`.
    pub fn linear_gelu_bwd(&mut self, l: &Linear, d: Act) -> Result<Option<Act>> {
        let Rec::LinearGelu { x, pre, rows } = self.pop()? else { return Err(pop_err()) };
        {
            let Tape { acts, grads, .. } = &mut *self.tape;
            self.be.gelu_backward(acts.get(pre), grads.get_mut(d), rows * l.n_out)?;
        }
        self.linear_bwd_from(l, x, d, rows)
    }

    /// Backward of `residual`: `d` stays the stream's gradient; returns the
    /// gradient of the branch's input.
    pub fn residual_bwd(&mut self, l: &Linear, d: Act) -> Result<Act> {
        let Rec::Residual { x, mask, rows } = self.pop()? else { return Err(pop_err()) };
        let n = rows * l.n_out;
        let g = self.take_grad(n)?;
        let dy = self.masked(d, g, mask, n)?;
        let dx = self.take_grad(rows * l.n_in)?;
        self.lin_bwd(l, x, dy, Some((dx, false)), rows)?;
        self.tape.grads.free(g);
        Ok(dx)
    }

    /// Backward of `multiscale` from `dcat`: each branch adds its input
    /// gradient into `d` (the residual stream's).
    pub fn multiscale_bwd(&mut self, ms: &Multiscale, dcat: Act, d: Act) -> Result<()> {
        let Rec::Multiscale { x, pre, batch, len } = self.pop()? else { return Err(pop_err()) };
        let nb = ms.branches.len();
        let be = self.be;
        let Tape { acts, grads, .. } = &mut *self.tape;
        be.gelu_backward(acts.get(pre), grads.get_mut(dcat), batch * len * nb * ms.dim)?;
        for (i, br) in ms.branches.iter().enumerate() {
            let Ok([pw, pb]) = self.params.get_disjoint_mut([br.p, br.p + 1]) else { unreachable!("two parameters") };
            let shape = branch_shape(ms, i, br, batch, len);
            let (dcb, db) = grads.io(dcat, d);
            be.conv1d_backward(acts.get(x), &pw.value, dcb, Some(db), &mut pw.grad, &mut pb.grad, shape)?;
        }
        grads.free(dcat);
        Ok(())
    }

    /// Backward of `broadcast_add` for its source: returns `dsrc`.
    pub fn broadcast_bwd(&mut self, d: Act) -> Result<Act> {
        let Rec::Broadcast { shape } = self.pop()? else { return Err(pop_err()) };
        let dsrc = self.take_grad(shape.outer * shape.dim)?;
        let (db, dsb) = self.tape.grads.io(d, dsrc);
        self.be.fill(dsb, shape.outer * shape.dim, 0.0)?;
        self.be.broadcast_add_backward(db, dsb, shape)?;
        Ok(dsrc)
    }

    /// Backward of `linear` with TLOB's relabeled `spatial.proj`: the weight's
    /// gradient taken in the relabeled layout, then relabeled back into the
    /// parameter's (`g_int[o, l·C + c]` → `grad[o, c·L + l]`).
    pub fn spatial_proj_bwd(&mut self, sp: &SpatialProj, d: Act) -> Result<Option<Act>> {
        let Rec::Linear { x, rows } = self.pop()? else { return Err(pop_err()) };
        let l = &sp.lin;
        let dx = if self.is_data(x) { None } else { Some(self.take_grad(rows * l.n_in)?) };
        let be = self.be;
        let (done, rest) = self.derived.split_at_mut(sp.g_int);
        let (Some(w_int), Some(g_int)) = (&done[sp.w_int], &mut rest[0]) else {
            unreachable!("training allocates the relabeled weight and its gradient")
        };
        be.fill(g_int, l.n_in * l.n_out, 0.0)?;
        let Tape { acts, grads, .. } = &mut *self.tape;
        let shape = LinearShape { rows, n_in: l.n_in, n_out: l.n_out };
        let db = Some(&mut self.params[l.p + 1].grad);
        match dx {
            Some(dx) => {
                let (dyb, dxb) = grads.io(d, dx);
                be.linear_backward(acts.get(x), w_int, dyb, Some(dxb), g_int, db, shape, false)?;
            }
            None => be.linear_backward(acts.get(x), w_int, grads.get(d), None, g_int, db, shape, false)?,
        }
        be.swap_last_axes(g_int, &mut self.params[l.p].grad, l.n_out, sp.levels, sp.channels, true)?;
        grads.free(d);
        Ok(dx)
    }

    /// The gradient of the heads' input (`dz`), to start the backward from.
    pub fn heads_bwd(&mut self) -> Result<Act> {
        match self.pop()? {
            Rec::Heads { dz: Some(dz) } => Ok(dz),
            _ => Err(pop_err()),
        }
    }

    /// In place: the mask applied to the gradient.
    pub fn dropout_bwd(&mut self, d: Act) -> Result<Act> {
        let Rec::Drop { mask, len } = self.pop()? else { return Err(pop_err()) };
        if let Some(m) = mask {
            let (mb, db) = self.tape.grads_and_act(m, d);
            self.be.mul(db, mb, len)?;
        }
        Ok(d)
    }

    pub fn norm_bwd(&mut self, norm: &Norm, d: Act) -> Result<Act> {
        let Rec::Norm { x, rows } = self.pop()? else { return Err(pop_err()) };
        let dx = self.take_grad(rows * norm.dim)?;
        let be = self.be;
        let (l, r) = self.params.split_at_mut(norm.p + 1);
        let (pw, pb) = (&mut l[norm.p], &mut r[0]);
        let Tape { acts, grads, .. } = &mut *self.tape;
        let (db, dxb) = grads.io(d, dx);
        be.fill(dxb, rows * norm.dim, 0.0)?;
        be.layernorm_backward(acts.get(x), &pw.value, db, dxb, &mut pw.grad, &mut pb.grad, rows, norm.dim)?;
        grads.free(d);
        Ok(dx)
    }

    pub fn pool_bwd(&mut self, d: Act) -> Result<Act> {
        let Rec::Pool { tokens, dim, how } = self.pop()? else { return Err(pop_err()) };
        let batch = self.batch;
        let dx = self.take_grad(batch * tokens * dim)?;
        let (db, dxb) = self.tape.grads.io(d, dx);
        self.be.pool_backward(db, dxb, batch, tokens, dim, how)?;
        self.tape.grads.free(d);
        Ok(dx)
    }

    pub fn lstm_bwd(&mut self, layer: &Lstm, d: Act) -> Result<Option<Act>> {
        let Rec::Lstm { x, h, c, gates, shape } = self.pop()? else { return Err(pop_err()) };
        let (rows, hid) = (shape.batch * shape.steps, shape.hidden);
        let p = layer.p();
        let be = self.be;
        let dgx = self.take_grad(rows * 4 * hid)?;
        {
            let Tape { acts, grads, .. } = &mut *self.tape;
            let (db, dgb) = grads.io(d, dgx);
            let whh = &mut self.params[p + 1];
            be.lstm_backward(&whh.value, acts.get(h), acts.get(c), acts.get(gates), db, dgb, &mut whh.grad, shape)?;
            be.bias_backward(dgb, &mut self.params[p + 2].grad, rows, 4 * hid)?;
            be.bias_backward(dgb, &mut self.params[p + 3].grad, rows, 4 * hid)?;
            grads.free(d);
        }
        let dx = if self.is_data(x) { None } else { Some(self.take_grad(rows * layer.input.n_in)?) };
        let Tape { acts, grads, .. } = &mut *self.tape;
        let ls = LinearShape { rows, n_in: layer.input.n_in, n_out: 4 * hid };
        let pw = &mut self.params[p];
        match dx {
            Some(dx) => {
                let (dgb, dxb) = grads.io(dgx, dx);
                be.linear_backward(acts.get(x), &pw.value, dgb, Some(dxb), &mut pw.grad, None, ls, false)?;
            }
            None => be.linear_backward(acts.get(x), &pw.value, grads.get(dgx), None, &mut pw.grad, None, ls, false)?,
        }
        grads.free(dgx);
        Ok(dx)
    }

    pub fn conv_bwd(&mut self, conv: &Conv, d: Act) -> Result<Option<Act>> {
        let Rec::Conv { x, pre, samples, len } = self.pop()? else { return Err(pop_err()) };
        let be = self.be;
        let shape = ConvShape::dense(samples, len, conv.c_in, conv.c_out, conv.k);
        {
            let Tape { acts, grads, .. } = &mut *self.tape;
            be.gelu_backward(acts.get(pre), grads.get_mut(d), samples * len * conv.c_out)?;
        }
        let dx = if self.is_data(x) { None } else { Some(self.take_grad(samples * len * conv.c_in)?) };
        let (l, r) = self.params.split_at_mut(conv.p + 1);
        let (pw, pb) = (&mut l[conv.p], &mut r[0]);
        let Tape { acts, grads, .. } = &mut *self.tape;
        match dx {
            Some(dx) => {
                let (db, dxb) = grads.io(d, dx);
                be.fill(dxb, samples * len * conv.c_in, 0.0)?;
                be.conv1d_backward(acts.get(x), &pw.value, db, Some(dxb), &mut pw.grad, &mut pb.grad, shape)?;
            }
            None => {
                be.conv1d_backward(acts.get(x), &pw.value, grads.get(d), None, &mut pw.grad, &mut pb.grad, shape)?
            }
        }
        grads.free(d);
        Ok(dx)
    }
}

impl<B: Train> Tape<B> {
    /// A mask (an activation) and a gradient to scale by it.
    fn grads_and_act(&mut self, m: Act, d: Act) -> (&B::Buf, &mut B::Buf) {
        (self.acts.get(m), self.grads.get_mut(d))
    }
}

/// Branch `i`'s conv, writing its channels at their offset of the concatenation.
fn branch_shape(ms: &Multiscale, i: usize, br: &Conv, batch: usize, len: usize) -> ConvShape {
    let stride = ms.branches.len() * ms.dim;
    ConvShape {
        samples: batch,
        len,
        c_in: ms.dim,
        c_out: ms.dim,
        kernel: br.k,
        out_stride: stride,
        out_offset: i * ms.dim,
    }
}

impl<B: Train> Run<B> for TrainRun<'_, B> {
    fn batch(&self) -> usize {
        self.batch
    }

    fn aux(&self) -> bool {
        self.inputs[1].is_some()
    }

    fn linear(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act> {
        let y = self.take(rows * l.n_out)?;
        self.lin(l, x, y, rows, Epilogue::None)?;
        self.tape.recs.push(Rec::Linear { x, rows });
        Ok(y)
    }

    /// The pre-activation is kept for the backward, stored beside the
    /// output by the same op.
    fn linear_gelu(&mut self, l: &Linear, x: Act, rows: usize) -> Result<Act> {
        let pre = self.take(rows * l.n_out)?;
        let y = self.take(rows * l.n_out)?;
        self.lin_gelu(l, x, pre, y, rows)?;
        self.tape.recs.push(Rec::LinearGelu { x, pre, rows });
        Ok(y)
    }

    fn residual(&mut self, l: &Linear, x: Act, stream: Act, rows: usize) -> Result<Act> {
        let n = rows * l.n_out;
        let out = self.take(n)?;
        let mask = if self.drop.p > 0.0 { Some(self.take(n)?) } else { None };
        let tmp = self.take(n)?;
        self.residual_op(l, x, stream, out, tmp, mask, rows)?;
        self.tape.acts.free(tmp);
        let mask = mask.filter(|_| self.drop.active());
        self.tape.recs.push(Rec::Residual { x, mask, rows });
        Ok(out)
    }

    /// Each branch's pre-activation at its offset, then one GELU over all.
    fn multiscale(&mut self, ms: &Multiscale, x: Act, batch: usize, len: usize) -> Result<Act> {
        let n = batch * len * ms.branches.len() * ms.dim;
        let pre = self.take(n)?;
        let y = self.take(n)?;
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        for (i, br) in ms.branches.iter().enumerate() {
            let (w, b) = (Self::slot(def, params, derived, br.w), Self::slot(def, params, derived, br.b));
            let (xb, pb) = self.tape.acts.io(x, pre);
            self.be.conv1d(xb, w, b, pb, branch_shape(ms, i, br, batch, len), false)?;
        }
        let (pb, yb) = self.tape.acts.io(pre, y);
        self.be.gelu(pb, yb, n)?;
        self.tape.recs.push(Rec::Multiscale { x, pre, batch, len });
        Ok(y)
    }

    fn broadcast_add(&mut self, x: Act, src: Act, shape: BroadcastShape) -> Result<Act> {
        let [xb, sb] = self.tape.acts.many_mut([x, src]);
        self.be.broadcast_add(xb, sb, shape)?;
        self.tape.recs.push(Rec::Broadcast { shape });
        Ok(x)
    }

    /// Into a copy (the positions are constants: the backward passes the gradient through).
    fn add_positions(&mut self, x: Act, pe: Slot, shape: BroadcastShape) -> Result<Act> {
        let n = shape.outer * shape.inner * shape.dim;
        let y = self.take(n)?;
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let peb = Self::slot(def, params, derived, pe);
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.copy(xb, yb, n)?;
        self.be.broadcast_add(yb, peb, shape)?;
        Ok(y)
    }

    fn input(&mut self, i: usize, rows: usize, dim: usize) -> Result<Act> {
        let x = self.take(rows * dim)?;
        let t = self.inputs[i].ok_or_else(|| Error::input("batch", "an input the model reads is missing"))?;
        self.be.write(self.tape.acts.get_mut(x), &t.data)?;
        self.tape.inputs[i] = Some(x);
        Ok(x)
    }

    /// The pre-activation is kept for the backward, stored beside the
    /// output by the same op.
    fn conv_gelu(&mut self, conv: &Conv, x: Act, samples: usize, len: usize) -> Result<Act> {
        let n = samples * len * conv.c_out;
        let pre = self.take(n)?;
        let y = self.take(n)?;
        let shape = ConvShape::dense(samples, len, conv.c_in, conv.c_out, conv.k);
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let (w, b) = (Self::slot(def, params, derived, conv.w), Self::slot(def, params, derived, conv.b));
        let [xb, pb, yb] = self.tape.acts.many_mut([x, pre, y]);
        self.be.conv1d_gelu_keep(xb, w, b, pb, yb, shape)?;
        self.tape.recs.push(Rec::Conv { x, pre, samples, len });
        Ok(y)
    }

    fn lstm(&mut self, layer: &Lstm, x: Act, shape: LstmShape) -> Result<Act> {
        let rows = shape.batch * shape.steps;
        let lin = &layer.input;
        let gx = self.take(rows * lin.n_out)?;
        let h = self.take(rows * shape.hidden)?;
        let c = self.take(rows * shape.hidden)?;
        let gates = self.take(rows * 4 * shape.hidden)?;
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let slot = |s| Self::slot(def, params, derived, s);
        let acts = &mut self.tape.acts;
        let (xb, gb) = acts.io(x, gx);
        let ls = LinearShape { rows, n_in: lin.n_in, n_out: lin.n_out };
        self.be.linear(xb, slot(lin.w), slot(lin.b), gb, ls, Epilogue::None)?;
        let [gb, hb, cb, tb] = acts.many_mut([gx, h, c, gates]);
        self.be.lstm_train(gb, slot(layer.w_hh), hb, cb, tb, shape)?;
        self.tape.recs.push(Rec::Lstm { x, h, c, gates, shape });
        Ok(h)
    }

    /// Inverted dropout into a copy (the input stays for its op's backward).
    fn dropout(&mut self, x: Act, len: usize) -> Result<Act> {
        // Taken whether or not this pass drops: the plan is the same for
        // training steps and evaluations.
        let bufs = if self.drop.p > 0.0 { Some((self.take(len)?, self.take(len)?)) } else { None };
        match bufs {
            Some((y, m)) if self.drop.active() => {
                let acts = &mut self.tape.acts;
                let (xb, yb) = acts.io(x, y);
                self.be.copy(xb, yb, len)?;
                let [mb, yb] = acts.many_mut([m, y]);
                self.drop.apply(self.be, mb, yb, len)?;
                self.tape.recs.push(Rec::Drop { mask: Some(m), len });
                Ok(y)
            }
            _ => {
                self.drop.site += 1;
                self.tape.recs.push(Rec::Drop { mask: None, len });
                Ok(x)
            }
        }
    }

    fn dropout_in_place(&mut self, x: Act, len: usize) -> Result<Act> {
        let mask = if self.drop.p > 0.0 { Some(self.take(len)?) } else { None };
        match mask {
            Some(m) => {
                let [mb, xb] = self.tape.acts.many_mut([m, x]);
                self.drop.apply(self.be, mb, xb, len)?;
            }
            None => self.drop.site += 1,
        }
        let mask = mask.filter(|_| self.drop.active());
        self.tape.recs.push(Rec::Drop { mask, len });
        Ok(x)
    }

    fn patch_embed(&mut self, patch: &Patch, x: Act, shape: PatchShape) -> Result<Act> {
        let y = self.take(shape.batch * shape.tokens() * shape.dim)?;
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let slot = |s| Self::slot(def, params, derived, s);
        let cls = patch.cls.map(|(_, s)| slot(s));
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.patch_embed(xb, slot(patch.proj.w), slot(patch.proj.b), cls, slot(patch.pos.1), yb, shape)?;
        self.tape.recs.push(Rec::Patch { x, shape });
        Ok(y)
    }

    /// `x_mid = x_in + drop(proj(attn(norm1(x_in))))`,
    /// `x_out = x_mid + drop(fc2(GELU(fc1(norm2(x_mid)))))`, keeping every activation.
    fn block(&mut self, b: &Block, x_in: Act, batch: usize, tokens: usize) -> Result<Act> {
        let rows = batch * tokens;
        let n = rows * b.dim;
        let h1 = self.take(n)?;
        let qkv = self.take(3 * n)?;
        let probs = self.take(batch * b.heads * tokens * tokens)?;
        let att = self.take(n)?;
        let x_mid = self.take(n)?;
        let h2 = self.take(n)?;
        let pre = self.take(rows * b.hidden)?;
        let act = self.take(rows * b.hidden)?;
        let x_out = self.take(n)?;
        let masks = if self.drop.p > 0.0 { Some((self.take(n)?, self.take(n)?)) } else { None };
        // Scratch for a dropped branch, shared by the blocks.
        let tmp = self.take(n)?;
        let be = self.be;
        self.ln(&b.norm1, x_in, h1, rows)?;
        self.lin(&b.qkv, h1, qkv, rows, Epilogue::None)?;
        {
            let [qb, ab, pb] = self.tape.acts.many_mut([qkv, att, probs]);
            be.attention_train(qb, ab, pb, b.attention(batch, tokens))?;
        }
        self.residual_op(&b.proj, att, x_in, x_mid, tmp, masks.map(|m| m.0), rows)?;
        self.ln(&b.norm2, x_mid, h2, rows)?;
        self.lin_gelu(&b.fc1, h2, pre, act, rows)?;
        self.residual_op(&b.fc2, act, x_mid, x_out, tmp, masks.map(|m| m.1), rows)?;
        self.tape.acts.free(tmp);
        let masks = masks.filter(|_| self.drop.active());
        let rec = BlockRec { x_in, h1, qkv, probs, att, x_mid, h2, pre, act, masks, batch, tokens };
        self.tape.recs.push(Rec::Block(rec));
        Ok(x_out)
    }

    /// The whole block, then its first token (training keeps every token's activations anyway).
    fn block_first_token(&mut self, b: &Block, x: Act, batch: usize, tokens: usize) -> Result<Act> {
        let x = self.block(b, x, batch, tokens)?;
        self.pool(x, tokens, b.dim, Pool::First)
    }

    fn pool(&mut self, x: Act, tokens: usize, dim: usize, how: Pool) -> Result<Act> {
        let y = self.take(self.batch * dim)?;
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.pool(xb, yb, self.batch, tokens, dim, how)?;
        self.tape.recs.push(Rec::Pool { tokens, dim, how });
        Ok(y)
    }

    fn norm(&mut self, norm: &Norm, x: Act, rows: usize) -> Result<Act> {
        let y = self.take(rows * norm.dim)?;
        let (def, params, derived) = (self.def, &*self.params, &*self.derived);
        let (w, b) = (Self::slot(def, params, derived, norm.w), Self::slot(def, params, derived, norm.b));
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.layernorm(xb, w, b, yb, rows, norm.dim)?;
        self.tape.recs.push(Rec::Norm { x, rows });
        Ok(y)
    }

    /// Every set's forward and loss; with the backward, the gradient of `z`
    /// (the heads' op computes both at once).
    fn heads(&mut self, heads: &[Heads], z: Act) -> Result<()> {
        let batch = self.batch;
        let dim = heads.first().map_or(0, |h| h.dim);
        let dz = if self.backward { Some(self.take_grad(batch * dim)?) } else { None };
        let be = self.be;
        let Tape { acts, grads, heads: tapes, .. } = &mut *self.tape;
        let mut dz_buf = match dz {
            Some(dz) => {
                let b = grads.get_mut(dz);
                be.fill(b, batch * dim, 0.0)?;
                Some(b)
            }
            None => None,
        };
        for (h, tape) in heads.iter().zip(tapes.iter_mut()) {
            let [dw, db, cw, cb, rw, rb] = &mut self.params[h.p..h.p + 6] else { unreachable!("six head tensors") };
            let p = HeadsRef {
                direction_w: &dw.value,
                direction_b: &db.value,
                confidence_w: &cw.value,
                confidence_b: &cb.value,
                return_w: &rw.value,
                return_b: &rb.value,
                classes: h.classes,
            };
            let o =
                HeadsOut { logits: &mut tape.logits, confidence: &mut tape.confidence, expected_return: &mut tape.ret };
            let targets = HeadsTargets { class: &tape.class, ret: &tape.target };
            let g = dz_buf.as_deref_mut().map(|dz| {
                (
                    HeadsGrads {
                        direction_w: &mut dw.grad,
                        direction_b: &mut db.grad,
                        confidence_w: &mut cw.grad,
                        confidence_b: &mut cb.grad,
                        return_w: &mut rw.grad,
                        return_b: &mut rb.grad,
                    },
                    dz,
                )
            });
            self.total += be.heads_loss(acts.get(z), p, o, targets, self.loss, g, batch, h.dim)?;
        }
        self.tape.recs.push(Rec::Heads { dz });
        Ok(())
    }
}
