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

use super::def::{Conv, Def, Heads, Lstm, Norm, Param, Recipe, Slot};
use super::run::{Act, Arena, Run};
use crate::backend::{
    ConvShape, Epilogue, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets, LinearShape, LstmShape, Pool, Train,
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
    pub derived: &'a [Option<B::Buf>],
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

impl<B: Train> Run<B> for TrainRun<'_, B> {
    fn batch(&self) -> usize {
        self.batch
    }

    fn input(&mut self, i: usize, rows: usize, dim: usize) -> Result<Act> {
        let x = self.take(rows * dim)?;
        let t = self.inputs[i].ok_or_else(|| Error::input("batch", "an input the model reads is missing"))?;
        self.be.write(self.tape.acts.get_mut(x), &t.data)?;
        self.tape.inputs[i] = Some(x);
        Ok(x)
    }

    /// The pre-activation is kept for the backward, so GELU is its own op.
    fn conv_gelu(&mut self, conv: &Conv, x: Act, samples: usize, len: usize) -> Result<Act> {
        let n = samples * len * conv.c_out;
        let pre = self.take(n)?;
        let y = self.take(n)?;
        let shape = ConvShape::dense(samples, len, conv.c_in, conv.c_out, conv.k);
        let (def, params, derived) = (self.def, &*self.params, self.derived);
        let (w, b) = (Self::slot(def, params, derived, conv.w), Self::slot(def, params, derived, conv.b));
        let acts = &mut self.tape.acts;
        let (xb, pb) = acts.io(x, pre);
        self.be.conv1d(xb, w, b, pb, shape, false)?;
        let (pb, yb) = acts.io(pre, y);
        self.be.gelu(pb, yb, n)?;
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
        let (def, params, derived) = (self.def, &*self.params, self.derived);
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

    fn pool(&mut self, x: Act, tokens: usize, dim: usize, how: Pool) -> Result<Act> {
        let y = self.take(self.batch * dim)?;
        let (xb, yb) = self.tape.acts.io(x, y);
        self.be.pool(xb, yb, self.batch, tokens, dim, how)?;
        self.tape.recs.push(Rec::Pool { tokens, dim, how });
        Ok(y)
    }

    fn norm(&mut self, norm: &Norm, x: Act, rows: usize) -> Result<Act> {
        let y = self.take(rows * norm.dim)?;
        let (def, params, derived) = (self.def, &*self.params, self.derived);
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
