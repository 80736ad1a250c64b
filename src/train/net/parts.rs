//! The trainable pieces shared by the three models: parameter handles by
//! index into the `Param` list, each with its forward op, its backward op and
//! (for matrix products) the prepared layout the forward reads; the
//! transformer block with its tape; dropout sites; the heads and the loss.

use crate::backend::{
    AttentionShape, ConvShape, Epilogue, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets, LinearShape, Train,
};
use crate::error::{Error, Result};

use super::Param;

pub(super) fn index<B: Train>(params: &[Param<B>], name: &str) -> Result<usize> {
    params
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| Error::weights("(parameters)", vec![format!("missing tensor {name}")]))
}

/// A matrix product `y = x Wᵀ + b`: `w` and `b` index the parameters
/// (`b = w + 1`, docs/models.md's order), `wt` is `prepare_linear`'s copy.
pub(super) struct Lin<B: Train> {
    pub w: usize,
    pub b: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub wt: B::Buf,
}

impl<B: Train> Lin<B> {
    pub fn new(be: &B, params: &[Param<B>], prefix: &str, n_in: usize, n_out: usize) -> Result<Self> {
        let w = index(params, &format!("{prefix}.weight"))?;
        let b = index(params, &format!("{prefix}.bias"))?;
        if b != w + 1 || params[w].numel() != n_in * n_out {
            return Err(Error::weights("(parameters)", vec![format!("{prefix}: unexpected parameter layout")]));
        }
        Ok(Lin { w, b, n_in, n_out, wt: be.alloc(n_in * n_out)? })
    }

    pub fn refresh(&mut self, be: &B, params: &[Param<B>]) -> Result<()> {
        be.prepare_linear_from(&params[self.w].value, self.n_out, self.n_in, &mut self.wt)
    }

    pub fn shape(&self, rows: usize) -> LinearShape {
        LinearShape { rows, n_in: self.n_in, n_out: self.n_out }
    }

    pub fn fwd(
        &self,
        be: &B,
        params: &[Param<B>],
        x: &B::Buf,
        y: &mut B::Buf,
        rows: usize,
        epi: Epilogue,
    ) -> Result<()> {
        be.linear(x, &self.wt, &params[self.b].value, y, self.shape(rows), epi)
    }

    /// `dx` is `(buffer, accumulate)`.
    pub fn bwd(
        &self,
        be: &B,
        params: &mut [Param<B>],
        x: &B::Buf,
        dy: &B::Buf,
        dx: Option<(&mut B::Buf, bool)>,
        rows: usize,
    ) -> Result<()> {
        let (l, r) = params.split_at_mut(self.b);
        let (pw, pb) = (&mut l[self.w], &mut r[0]);
        let acc = dx.as_ref().is_some_and(|d| d.1);
        be.linear_backward(x, &pw.value, dy, dx.map(|d| d.0), &mut pw.grad, Some(&mut pb.grad), self.shape(rows), acc)
    }
}

/// A "same" Conv1d: the product's view of its weight as `(c_out, c_in·k)`.
pub(super) struct Conv<B: Train> {
    pub lin: Lin<B>,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
}

impl<B: Train> Conv<B> {
    pub fn new(be: &B, params: &[Param<B>], prefix: &str, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        Ok(Conv { lin: Lin::new(be, params, prefix, c_in * k, c_out)?, c_in, c_out, k })
    }

    pub fn dense(&self, samples: usize, len: usize) -> ConvShape {
        ConvShape::dense(samples, len, self.c_in, self.c_out, self.k)
    }

    /// The pre-activation (GELU is the caller's, so the backward has its input).
    pub fn fwd(&self, be: &B, params: &[Param<B>], x: &B::Buf, y: &mut B::Buf, shape: ConvShape) -> Result<()> {
        be.conv1d(x, &self.lin.wt, &params[self.lin.b].value, y, shape, false)
    }

    pub fn bwd(
        &self,
        be: &B,
        params: &mut [Param<B>],
        x: &B::Buf,
        dy: &B::Buf,
        dx: Option<&mut B::Buf>,
        shape: ConvShape,
    ) -> Result<()> {
        let (l, r) = params.split_at_mut(self.lin.b);
        let (pw, pb) = (&mut l[self.lin.w], &mut r[0]);
        be.conv1d_backward(x, &pw.value, dy, dx, &mut pw.grad, &mut pb.grad, shape)
    }
}

/// A chain of Conv1d + GELU layers over `(samples, len, channels)`, with its
/// tape: every layer's pre-activation and output.
pub(super) struct ConvTape<B: Train> {
    pub pre: Vec<B::Buf>,
    pub out: Vec<B::Buf>,
}

impl<B: Train> ConvTape<B> {
    pub fn new(be: &B, convs: &[Conv<B>], rows: usize) -> Result<Self> {
        Ok(ConvTape {
            pre: convs.iter().map(|c| be.alloc(rows * c.c_out)).collect::<Result<_>>()?,
            out: convs.iter().map(|c| be.alloc(rows * c.c_out)).collect::<Result<_>>()?,
        })
    }
}

pub(super) fn conv_chain_fwd<B: Train>(
    be: &B,
    params: &[Param<B>],
    convs: &[Conv<B>],
    input: &B::Buf,
    tape: &mut ConvTape<B>,
    samples: usize,
    len: usize,
) -> Result<()> {
    for (i, conv) in convs.iter().enumerate() {
        let x = if i == 0 { input } else { &tape.out[i - 1] };
        conv.fwd(be, params, x, &mut tape.pre[i], conv.dense(samples, len))?;
        be.gelu(&tape.pre[i], &mut tape.out[i], samples * len * conv.c_out)?;
    }
    Ok(())
}

/// Backward through the chain: `d` holds the gradient of the last output and
/// is consumed; `other` is scratch of the same size. The input's gradient is
/// not needed (the models' inputs are data).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_chain_bwd<'a, B: Train>(
    be: &B,
    params: &mut [Param<B>],
    convs: &[Conv<B>],
    input: &B::Buf,
    tape: &ConvTape<B>,
    mut d: &'a mut B::Buf,
    mut other: &'a mut B::Buf,
    samples: usize,
    len: usize,
) -> Result<()> {
    for (i, conv) in convs.iter().enumerate().rev() {
        be.gelu_backward(&tape.pre[i], d, samples * len * conv.c_out)?;
        let x = if i == 0 { input } else { &tape.out[i - 1] };
        let dx = if i == 0 {
            None
        } else {
            be.fill(other, samples * len * conv.c_in, 0.0)?;
            Some(&mut *other)
        };
        conv.bwd(be, params, x, d, dx, conv.dense(samples, len))?;
        std::mem::swap(&mut d, &mut other);
    }
    Ok(())
}

pub(super) struct Norm {
    pub w: usize,
    pub b: usize,
    pub dim: usize,
}

impl Norm {
    pub fn new<B: Train>(params: &[Param<B>], prefix: &str, dim: usize) -> Result<Self> {
        let w = index(params, &format!("{prefix}.weight"))?;
        let b = index(params, &format!("{prefix}.bias"))?;
        if b != w + 1 {
            return Err(Error::weights("(parameters)", vec![format!("{prefix}: unexpected parameter layout")]));
        }
        Ok(Norm { w, b, dim })
    }

    pub fn fwd<B: Train>(&self, be: &B, params: &[Param<B>], x: &B::Buf, y: &mut B::Buf, rows: usize) -> Result<()> {
        be.layernorm(x, &params[self.w].value, &params[self.b].value, y, rows, self.dim)
    }

    /// `dx += …`
    pub fn bwd<B: Train>(
        &self,
        be: &B,
        params: &mut [Param<B>],
        x: &B::Buf,
        dy: &B::Buf,
        dx: &mut B::Buf,
        rows: usize,
    ) -> Result<()> {
        let (l, r) = params.split_at_mut(self.b);
        let (pw, pb) = (&mut l[self.w], &mut r[0]);
        be.layernorm_backward(x, &pw.value, dy, dx, &mut pw.grad, &mut pb.grad, rows, self.dim)
    }
}

pub(super) use crate::model::tape::{Dropout, HeadsTape};

/// A mask buffer: empty when the model has no dropout.
pub(super) fn mask<B: Train>(be: &B, p: f64, len: usize) -> Result<B::Buf> {
    be.alloc(if p > 0.0 { len } else { 0 })
}

/// A residual branch's output `tmp` added into `stream` through dropout.
pub(super) fn residual<B: Train>(
    be: &B,
    drop: &mut Dropout,
    m: &mut B::Buf,
    tmp: &mut B::Buf,
    stream: &mut B::Buf,
    len: usize,
) -> Result<()> {
    drop.apply(be, m, tmp, len)?;
    be.add(stream, tmp, len)
}

pub(super) struct Block<B: Train> {
    pub norm1: Norm,
    pub qkv: Lin<B>,
    pub proj: Lin<B>,
    pub norm2: Norm,
    pub fc1: Lin<B>,
    pub fc2: Lin<B>,
    pub heads: usize,
    pub dim: usize,
    pub hidden: usize,
}

impl<B: Train> Block<B> {
    pub fn new(be: &B, params: &[Param<B>], prefix: &str, dim: usize, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Block {
            norm1: Norm::new(params, &format!("{prefix}.norm1"), dim)?,
            qkv: Lin::new(be, params, &format!("{prefix}.attn.qkv"), dim, 3 * dim)?,
            proj: Lin::new(be, params, &format!("{prefix}.attn.proj"), dim, dim)?,
            norm2: Norm::new(params, &format!("{prefix}.norm2"), dim)?,
            fc1: Lin::new(be, params, &format!("{prefix}.mlp.fc1"), dim, hidden)?,
            fc2: Lin::new(be, params, &format!("{prefix}.mlp.fc2"), hidden, dim)?,
            heads,
            dim,
            hidden,
        })
    }

    pub fn lins_mut(&mut self) -> [&mut Lin<B>; 4] {
        [&mut self.qkv, &mut self.proj, &mut self.fc1, &mut self.fc2]
    }

    fn att_shape(&self, batch: usize, tokens: usize) -> AttentionShape {
        AttentionShape { batch, tokens, heads: self.heads, head_dim: self.dim / self.heads }
    }

    /// `x_mid = x_in + drop(proj(attn(norm1(x_in))))`,
    /// `x_out = x_mid + drop(fc2(GELU(fc1(norm2(x_mid)))))`, keeping every activation.
    #[allow(clippy::too_many_arguments)]
    pub fn fwd(
        &self,
        be: &B,
        params: &[Param<B>],
        x_in: &B::Buf,
        t: &mut BlockTape<B>,
        tmp: &mut B::Buf,
        drop: &mut Dropout,
        batch: usize,
        tokens: usize,
    ) -> Result<()> {
        let rows = batch * tokens;
        let n = rows * self.dim;
        self.norm1.fwd(be, params, x_in, &mut t.h1, rows)?;
        self.qkv.fwd(be, params, &t.h1, &mut t.qkv, rows, Epilogue::None)?;
        be.attention_train(&t.qkv, &mut t.att, &mut t.probs, self.att_shape(batch, tokens))?;
        be.copy(x_in, &mut t.x_mid, n)?;
        if drop.active() {
            self.proj.fwd(be, params, &t.att, tmp, rows, Epilogue::None)?;
            residual(be, drop, &mut t.m1, tmp, &mut t.x_mid, n)?;
        } else {
            self.proj.fwd(be, params, &t.att, &mut t.x_mid, rows, Epilogue::Accumulate)?;
            drop.site += 1;
        }
        self.norm2.fwd(be, params, &t.x_mid, &mut t.h2, rows)?;
        self.fc1.fwd(be, params, &t.h2, &mut t.pre, rows, Epilogue::None)?;
        be.gelu(&t.pre, &mut t.act, rows * self.hidden)?;
        be.copy(&t.x_mid, &mut t.x_out, n)?;
        if drop.active() {
            self.fc2.fwd(be, params, &t.act, tmp, rows, Epilogue::None)?;
            residual(be, drop, &mut t.m2, tmp, &mut t.x_out, n)?;
        } else {
            self.fc2.fwd(be, params, &t.act, &mut t.x_out, rows, Epilogue::Accumulate)?;
            drop.site += 1;
        }
        Ok(())
    }

    /// `d` holds the gradient of `x_out` and leaves holding that of `x_in`.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd(
        &self,
        be: &B,
        params: &mut [Param<B>],
        x_in: &B::Buf,
        t: &BlockTape<B>,
        g: &mut BlockGrads<B>,
        d: &mut B::Buf,
        dropping: bool,
        batch: usize,
        tokens: usize,
    ) -> Result<()> {
        let rows = batch * tokens;
        let n = rows * self.dim;
        // MLP branch.
        let dy: &B::Buf = if dropping {
            be.copy(d, &mut g.g, n)?;
            be.mul(&mut g.g, &t.m2, n)?;
            &g.g
        } else {
            d
        };
        self.fc2.bwd(be, params, &t.act, dy, Some((&mut g.dact, false)), rows)?;
        be.gelu_backward(&t.pre, &mut g.dact, rows * self.hidden)?;
        self.fc1.bwd(be, params, &t.h2, &g.dact, Some((&mut g.dh, false)), rows)?;
        self.norm2.bwd(be, params, &t.x_mid, &g.dh, d, rows)?;
        // Attention branch.
        let dy: &B::Buf = if dropping {
            be.copy(d, &mut g.g, n)?;
            be.mul(&mut g.g, &t.m1, n)?;
            &g.g
        } else {
            d
        };
        self.proj.bwd(be, params, &t.att, dy, Some((&mut g.datt, false)), rows)?;
        let shape = self.att_shape(batch, tokens);
        be.attention_backward(&t.qkv, &t.probs, &g.datt, &mut g.dqkv, &mut g.dprobs, shape)?;
        self.qkv.bwd(be, params, &t.h1, &g.dqkv, Some((&mut g.dh, false)), rows)?;
        self.norm1.bwd(be, params, x_in, &g.dh, d, rows)
    }
}

/// One block's kept activations (its input is the previous block's `x_out`).
pub(super) struct BlockTape<B: Train> {
    pub h1: B::Buf,
    pub qkv: B::Buf,
    /// Softmax probabilities `(batch, heads, tokens, tokens)`.
    pub probs: B::Buf,
    pub att: B::Buf,
    pub x_mid: B::Buf,
    pub h2: B::Buf,
    pub pre: B::Buf,
    pub act: B::Buf,
    pub x_out: B::Buf,
    pub m1: B::Buf,
    pub m2: B::Buf,
}

impl<B: Train> BlockTape<B> {
    pub fn new(be: &B, batch: usize, tokens: usize, dim: usize, hidden: usize, heads: usize, p: f64) -> Result<Self> {
        let rows = batch * tokens;
        Ok(BlockTape {
            h1: be.alloc(rows * dim)?,
            qkv: be.alloc(rows * 3 * dim)?,
            probs: be.alloc(batch * heads * tokens * tokens)?,
            att: be.alloc(rows * dim)?,
            x_mid: be.alloc(rows * dim)?,
            h2: be.alloc(rows * dim)?,
            pre: be.alloc(rows * hidden)?,
            act: be.alloc(rows * hidden)?,
            x_out: be.alloc(rows * dim)?,
            m1: mask(be, p, rows * dim)?,
            m2: mask(be, p, rows * dim)?,
        })
    }
}

/// Gradient scratch shared by all the blocks of a model.
pub(super) struct BlockGrads<B: Train> {
    pub g: B::Buf,
    pub dh: B::Buf,
    pub datt: B::Buf,
    pub dqkv: B::Buf,
    pub dact: B::Buf,
    pub dprobs: B::Buf,
}

impl<B: Train> BlockGrads<B> {
    pub fn new(be: &B, batch: usize, tokens: usize, dim: usize, hidden: usize, heads: usize) -> Result<Self> {
        let rows = batch * tokens;
        Ok(BlockGrads {
            dprobs: be.alloc(batch * heads * tokens * tokens)?,
            g: be.alloc(rows * dim)?,
            dh: be.alloc(rows * dim)?,
            datt: be.alloc(rows * dim)?,
            dqkv: be.alloc(rows * 3 * dim)?,
            dact: be.alloc(rows * hidden)?,
        })
    }
}

/// Runs the blocks forward over `x0`; the output is the last block's `x_out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn blocks_fwd<B: Train>(
    be: &B,
    params: &[Param<B>],
    blocks: &[Block<B>],
    x0: &B::Buf,
    tapes: &mut [BlockTape<B>],
    tmp: &mut B::Buf,
    drop: &mut Dropout,
    batch: usize,
    tokens: usize,
) -> Result<()> {
    for (l, blk) in blocks.iter().enumerate() {
        let (done, rest) = tapes.split_at_mut(l);
        let x_in = if l == 0 { x0 } else { &done[l - 1].x_out };
        blk.fwd(be, params, x_in, &mut rest[0], tmp, drop, batch, tokens)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn blocks_bwd<B: Train>(
    be: &B,
    params: &mut [Param<B>],
    blocks: &[Block<B>],
    x0: &B::Buf,
    tapes: &[BlockTape<B>],
    g: &mut BlockGrads<B>,
    d: &mut B::Buf,
    dropping: bool,
    batch: usize,
    tokens: usize,
) -> Result<()> {
    for (l, blk) in blocks.iter().enumerate().rev() {
        let x_in = if l == 0 { x0 } else { &tapes[l - 1].x_out };
        blk.bwd(be, params, x_in, &tapes[l], g, d, dropping, batch, tokens)?;
    }
    Ok(())
}

/// One set of heads: `base` indexes `direction.weight`, followed by its
/// bias, then confidence's and expected_return's weight and bias.
pub(super) struct Heads {
    pub base: usize,
    pub dim: usize,
}

impl Heads {
    pub fn new<B: Train>(params: &[Param<B>], prefix: &str, dim: usize) -> Result<Self> {
        let base = index(params, &format!("{prefix}.direction.weight"))?;
        let names = ["direction.bias", "confidence.weight", "confidence.bias", "expected_return.weight"];
        for (i, n) in names.iter().enumerate() {
            if index(params, &format!("{prefix}.{n}"))? != base + 1 + i {
                return Err(Error::weights("(parameters)", vec![format!("{prefix}: unexpected parameter layout")]));
            }
        }
        Ok(Heads { base, dim })
    }

    /// Forward, loss (summed over the batch) and, with `dz`, the backward.
    #[allow(clippy::too_many_arguments)]
    pub fn run<B: Train>(
        &self,
        be: &B,
        params: &mut [Param<B>],
        z: &B::Buf,
        out: &mut HeadsTape<B>,
        loss: HeadsLoss,
        dz: Option<&mut B::Buf>,
        batch: usize,
    ) -> Result<f64> {
        let [dw, db, cw, cb, rw, rb] = &mut params[self.base..self.base + 6] else { unreachable!("six head tensors") };
        let p = HeadsRef {
            direction_w: &dw.value,
            direction_b: &db.value,
            confidence_w: &cw.value,
            confidence_b: &cb.value,
            return_w: &rw.value,
            return_b: &rb.value,
            classes: 3,
        };
        let o = HeadsOut { logits: &mut out.logits, confidence: &mut out.confidence, expected_return: &mut out.ret };
        let targets = HeadsTargets { class: &out.class, ret: &out.target };
        let grads = dz.map(|dz| {
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
        be.heads_loss(z, p, o, targets, loss, grads, batch, self.dim)
    }
}
