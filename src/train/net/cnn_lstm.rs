//! CNN-LSTM v2's training forward and backward through time (docs/models.md §3).

use super::parts::{conv_chain_bwd, conv_chain_fwd, index, mask, Conv, ConvTape, Dropout, Heads, HeadsTape, Norm};
use super::{heads_stage, Ctx, Param, TrainBatch};
use crate::backend::{Epilogue, LinearShape, LstmShape, Pool, Train};
use crate::error::{Error, Result};
use crate::model::CnnLstmConfig;

/// One LSTM layer: `w_ih` indexes `weight_ih_l{k}`, followed by `weight_hh`,
/// `bias_ih`, `bias_hh` (docs/models.md's order). The forward reads the prepared
/// `W_ih`, the summed bias and the prepared `W_hh`.
struct Layer<B: Train> {
    w_ih: usize,
    n_in: usize,
    wt_ih: B::Buf,
    bias: B::Buf,
    w_hh: B::Buf,
}

pub(super) struct CnnLstm<B: Train> {
    cfg: CnnLstmConfig,
    convs: Vec<Conv<B>>,
    layers: Vec<Layer<B>>,
    norm: Norm,
    heads: Heads,
    tape: Option<Tape<B>>,
}

struct LayerTape<B: Train> {
    gx: B::Buf,
    h: B::Buf,
    c: B::Buf,
    gates: B::Buf,
    /// The dropped output fed to the next layer (only below the top layer, with dropout).
    hd: B::Buf,
    mask: B::Buf,
}

pub(super) struct Tape<B: Train> {
    /// The largest batch the buffers hold: every op is sized by the batch it
    /// is given, so a smaller batch (an epoch's last) runs in the same tape.
    batch: usize,
    input: B::Buf,
    convs: ConvTape<B>,
    layers: Vec<LayerTape<B>>,
    last: B::Buf,
    normed: B::Buf,
    zd: B::Buf,
    zmask: B::Buf,
    pub heads: Vec<HeadsTape<B>>,
    dz: B::Buf,
    dlast: B::Buf,
    dh: B::Buf,
    dgx: B::Buf,
    dconv_a: B::Buf,
    dconv_b: B::Buf,
}

impl<B: Train> CnnLstm<B> {
    pub fn new(be: &B, cfg: &CnnLstmConfig, params: &[Param<B>]) -> Result<Self> {
        let mut convs = Vec::new();
        let mut c_in = cfg.input_features;
        for (i, &c_out) in cfg.conv_channels.iter().enumerate() {
            convs.push(Conv::new(be, params, &format!("conv.{i}"), c_in, c_out, cfg.conv_kernel)?);
            c_in = c_out;
        }
        let h = cfg.lstm_hidden;
        let mut layers = Vec::new();
        for k in 0..cfg.lstm_layers {
            let n_in = if k == 0 { c_in } else { h };
            let w_ih = index(params, &format!("lstm.weight_ih_l{k}"))?;
            for (off, name) in [(1, "weight_hh"), (2, "bias_ih"), (3, "bias_hh")] {
                if index(params, &format!("lstm.{name}_l{k}"))? != w_ih + off {
                    return Err(Error::weights("(parameters)", vec![format!("lstm layer {k}: unexpected layout")]));
                }
            }
            layers.push(Layer {
                w_ih,
                n_in,
                wt_ih: be.alloc(4 * h * n_in)?,
                bias: be.alloc(4 * h)?,
                w_hh: be.alloc(8 * h * h)?,
            });
        }
        Ok(CnnLstm {
            convs,
            layers,
            norm: Norm::new(params, "norm", h)?,
            heads: Heads::new(params, "heads", h)?,
            cfg: cfg.clone(),
            tape: None,
        })
    }

    pub fn refresh(&mut self, be: &B, params: &[Param<B>]) -> Result<()> {
        for c in &mut self.convs {
            c.lin.refresh(be, params)?;
        }
        let h = self.cfg.lstm_hidden;
        for l in &mut self.layers {
            be.prepare_linear_from(&params[l.w_ih].value, 4 * h, l.n_in, &mut l.wt_ih)?;
            be.prepare_recurrent_from(&params[l.w_ih + 1].value, h, &mut l.w_hh)?;
            // The input projection's bias is b_ih + b_hh, as in the inference model.
            be.copy(&params[l.w_ih + 2].value, &mut l.bias, 4 * h)?;
            be.add(&mut l.bias, &params[l.w_ih + 3].value, 4 * h)?;
        }
        Ok(())
    }

    pub fn tape(&mut self, be: &B, batch: usize) -> Result<&mut Tape<B>> {
        if self.tape.as_ref().is_none_or(|t| t.batch < batch) {
            let c = &self.cfg;
            let rows = batch * c.sequence_length;
            let h = c.lstm_hidden;
            let widest = c.conv_channels.iter().copied().max().unwrap_or(0);
            let n_layers = c.lstm_layers;
            self.tape = Some(Tape {
                batch,
                input: be.alloc(rows * c.input_features)?,
                convs: ConvTape::new(be, &self.convs, rows)?,
                layers: (0..n_layers)
                    .map(|k| {
                        let below_top = k + 1 < n_layers;
                        let p = if below_top { c.dropout } else { 0.0 };
                        Ok(LayerTape {
                            gx: be.alloc(rows * 4 * h)?,
                            h: be.alloc(rows * h)?,
                            c: be.alloc(rows * h)?,
                            gates: be.alloc(rows * 4 * h)?,
                            hd: mask(be, p, rows * h)?,
                            mask: mask(be, p, rows * h)?,
                        })
                    })
                    .collect::<Result<_>>()?,
                last: be.alloc(batch * h)?,
                normed: be.alloc(batch * h)?,
                zd: be.alloc(batch * h)?,
                zmask: mask(be, c.dropout, batch * h)?,
                heads: vec![HeadsTape::new(be, batch)?],
                dz: be.alloc(batch * h)?,
                dlast: be.alloc(batch * h)?,
                dh: be.alloc(rows * h)?,
                dgx: be.alloc(rows * 4 * h)?,
                dconv_a: be.alloc(rows * widest)?,
                dconv_b: be.alloc(rows * widest)?,
            });
        }
        Ok(self.tape.as_mut().expect("set above"))
    }

    pub fn tape_ref(&self) -> &Tape<B> {
        self.tape.as_ref().expect("allocated by the step")
    }

    pub fn step(
        &mut self,
        be: &B,
        params: &mut [Param<B>],
        batch: &TrainBatch,
        mut drop: Dropout,
        ctx: Ctx<'_>,
    ) -> Result<f64> {
        let CnnLstm { cfg: c, convs, layers, norm, heads, tape } = self;
        let t = tape.as_mut().expect("allocated by the caller");
        let n_b = ctx.batch;
        let (steps, h) = (c.sequence_length, c.lstm_hidden);
        let rows = n_b * steps;
        let shape = LstmShape { batch: n_b, steps, hidden: h };
        be.write(&mut t.input, &batch.features.as_ref().expect("checked").data)?;
        conv_chain_fwd(be, params, convs, &t.input, &mut t.convs, n_b, steps)?;

        // PyTorch's nn.LSTM drops every layer's output but the top one's.
        let dropping = drop.active();
        let n_layers = layers.len();
        for (k, lay) in layers.iter().enumerate() {
            let (below, rest) = t.layers.split_at_mut(k);
            let lt = &mut rest[0];
            let x = layer_input(&t.input, &t.convs, below, k, dropping);
            let ls = LinearShape { rows, n_in: lay.n_in, n_out: 4 * h };
            be.linear(x, &lay.wt_ih, &lay.bias, &mut lt.gx, ls, Epilogue::None)?;
            be.lstm_train(&lt.gx, &lay.w_hh, &mut lt.h, &mut lt.c, &mut lt.gates, shape)?;
            if k + 1 < n_layers {
                if dropping {
                    be.copy(&lt.h, &mut lt.hd, rows * h)?;
                }
                drop.apply(be, &mut lt.mask, &mut lt.hd, rows * h)?;
            }
        }
        let top = &t.layers.last().expect("lstm_layers ≥ 1").h;
        be.pool(top, &mut t.last, n_b, steps, h, Pool::Last)?;
        norm.fwd(be, params, &t.last, &mut t.normed, n_b)?;
        let dz = if ctx.backward { Some(&mut t.dz) } else { None };
        let total = heads_stage(
            be,
            params,
            std::slice::from_ref(heads),
            &mut t.heads,
            &t.normed,
            &mut t.zd,
            &mut t.zmask,
            &mut drop,
            ctx.loss,
            dz,
            n_b,
            h,
        )?;
        if !ctx.backward {
            return Ok(total);
        }

        // Backward through time, layer by layer from the top.
        be.fill(&mut t.dlast, n_b * h, 0.0)?;
        norm.bwd(be, params, &t.last, &t.dz, &mut t.dlast, n_b)?;
        be.pool_backward(&t.dlast, &mut t.dh, n_b, steps, h, Pool::Last)?;
        for k in (0..n_layers).rev() {
            let lay = &layers[k];
            let lt = &t.layers[k];
            let (wi, bih, bhh) = (lay.w_ih, lay.w_ih + 2, lay.w_ih + 3);
            let whh = &mut params[wi + 1];
            be.lstm_backward(&whh.value, &lt.h, &lt.c, &lt.gates, &t.dh, &mut t.dgx, &mut whh.grad, shape)?;
            be.bias_backward(&t.dgx, &mut params[bih].grad, rows, 4 * h)?;
            be.bias_backward(&t.dgx, &mut params[bhh].grad, rows, 4 * h)?;
            let x = layer_input(&t.input, &t.convs, &t.layers[..k], k, dropping);
            let ls = LinearShape { rows, n_in: lay.n_in, n_out: 4 * h };
            let dx = if k > 0 {
                Some(&mut t.dh)
            } else if !convs.is_empty() {
                Some(&mut t.dconv_a)
            } else {
                None
            };
            let p = &mut params[wi];
            be.linear_backward(x, &p.value, &t.dgx, dx, &mut p.grad, None, ls, false)?;
            if k > 0 && dropping {
                be.mul(&mut t.dh, &t.layers[k - 1].mask, rows * h)?;
            }
        }
        if !convs.is_empty() {
            conv_chain_bwd(be, params, convs, &t.input, &t.convs, &mut t.dconv_a, &mut t.dconv_b, n_b, steps)?;
        }
        Ok(total)
    }
}

/// The input sequence of layer `k`: the conv stack's output (or the raw
/// features without convs) for the first, the previous layer's (dropped) output above.
fn layer_input<'a, B: Train>(
    input: &'a B::Buf,
    convs: &'a ConvTape<B>,
    below: &'a [LayerTape<B>],
    k: usize,
    dropping: bool,
) -> &'a B::Buf {
    if k == 0 {
        convs.out.last().unwrap_or(input)
    } else if dropping {
        &below[k - 1].hd
    } else {
        &below[k - 1].h
    }
}
