//! CNN-LSTM v2: temporal convs over the feature window, a stacked LSTM, and
//! heads on the top layer's last hidden state (docs/models.md §3).

use super::layers::{conv_chain, HeadsBufs, HeadsP, LinearP, Loader, NormP, ParamSpecs};
use super::{batch_of, write_heads, Inputs, Normalizers, Outputs, RunShape, PRIMARY};
use crate::backend::{Backend, ConvWeights, Epilogue, LstmShape, Pool};
use crate::error::{Error, Result};
use crate::model::config::CnnLstmConfig;

pub fn param_specs(c: &CnnLstmConfig) -> ParamSpecs {
    let mut s = ParamSpecs::default();
    let mut c_in = c.input_features;
    for (i, &c_out) in c.conv_channels.iter().enumerate() {
        s.conv1d(&format!("conv.{i}"), c_in, c_out, c.conv_kernel);
        c_in = c_out;
    }
    let h = c.lstm_hidden;
    for k in 0..c.lstm_layers {
        let n_in = if k == 0 { c_in } else { h };
        s.push(format!("lstm.weight_ih_l{k}"), &[4 * h, n_in]);
        s.push(format!("lstm.weight_hh_l{k}"), &[4 * h, h]);
        s.push(format!("lstm.bias_ih_l{k}"), &[4 * h]);
        s.push(format!("lstm.bias_hh_l{k}"), &[4 * h]);
    }
    s.layernorm("norm", h);
    s.heads("heads", h, c.num_classes);
    s
}

/// One LSTM layer: the input projection as a linear op whose bias is
/// `b_ih + b_hh` (summed once at load), and the recurrent weight.
struct LstmLayer<B: Backend> {
    input: LinearP<B>,
    w_hh: B::Buf,
}

pub struct CnnLstmNet<B: Backend> {
    cfg: CnnLstmConfig,
    convs: Vec<ConvWeights<B>>,
    layers: Vec<LstmLayer<B>>,
    norm: NormP<B>,
    heads: HeadsP<B>,
    acts: Option<Acts<B>>,
}

struct Acts<B: Backend> {
    batch: usize,
    input: B::Buf,
    conv_a: B::Buf,
    conv_b: B::Buf,
    gx: B::Buf,
    h_seq: B::Buf,
    last: B::Buf,
    normed: B::Buf,
    heads: HeadsBufs<B>,
}

impl<B: Backend> CnnLstmNet<B> {
    pub fn new(cfg: &CnnLstmConfig, ld: &Loader<'_, B>) -> Result<Self> {
        let mut convs = Vec::new();
        let mut c_in = cfg.input_features;
        for (i, &c_out) in cfg.conv_channels.iter().enumerate() {
            convs.push(ld.conv1d(&format!("conv.{i}"), c_in, c_out, cfg.conv_kernel)?);
            c_in = c_out;
        }
        let h = cfg.lstm_hidden;
        let mut layers = Vec::new();
        for k in 0..cfg.lstm_layers {
            let n_in = if k == 0 { c_in } else { h };
            let b_ih = ld.host(&format!("lstm.bias_ih_l{k}"), 4 * h)?;
            let b_hh = ld.host(&format!("lstm.bias_hh_l{k}"), 4 * h)?;
            let bias: Vec<f32> = b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect();
            layers.push(LstmLayer {
                input: LinearP {
                    w: ld.matrix(&format!("lstm.weight_ih_l{k}"), 4 * h, n_in)?,
                    b: ld.be.upload(&bias)?,
                    n_in,
                    n_out: 4 * h,
                },
                w_hh: ld.be.prepare_recurrent(ld.host(&format!("lstm.weight_hh_l{k}"), 4 * h * h)?, h)?,
            });
        }
        Ok(CnnLstmNet {
            convs,
            layers,
            norm: ld.layernorm("norm", h)?,
            heads: ld.heads("heads", h, cfg.num_classes)?,
            cfg: cfg.clone(),
            acts: None,
        })
    }

    /// Checks the inputs and writes them into the activations; returns the run's shape.
    pub fn stage(&mut self, be: &B, inputs: &Inputs<'_>) -> Result<RunShape> {
        let c = &self.cfg;
        let features = inputs.require("features", "cnn_lstm")?;
        let batch = batch_of(features, "features", &[c.sequence_length, c.input_features])?;
        let acts = ensure_acts(&mut self.acts, c, be, batch)?;
        be.write(&mut acts.input, &features.data)?;
        Ok(RunShape { batch, aux: false })
    }

    /// The forward's ops, from the staged inputs to the heads' buffers: only
    /// compute ops, so a backend can record them once and replay them.
    pub fn compute(&mut self, be: &B, norms: &Normalizers<B>) -> Result<()> {
        let CnnLstmNet { cfg: c, convs, layers, norm, heads, acts } = self;
        let (t, f, h) = (c.sequence_length, c.input_features, c.lstm_hidden);
        let acts = acts.as_mut().ok_or_else(|| Error::input("features", "compute before stage"))?;
        let batch = acts.batch;
        if let Some((mean, std)) = &norms.input {
            be.standardize(&mut acts.input, mean, std, batch * t, f)?;
        }
        let in_b = conv_chain(be, convs, &acts.input, &mut acts.conv_a, &mut acts.conv_b, batch, t)?;
        let conv_out = match in_b {
            None => &acts.input,
            Some(false) => &acts.conv_a,
            Some(true) => &acts.conv_b,
        };
        let shape = LstmShape { batch, steps: t, hidden: h };
        for (k, layer) in layers.iter().enumerate() {
            // Once `gx` holds this layer's input projection, the input
            // sequence is no longer needed: the layer writes over it.
            let seq = if k == 0 { conv_out } else { &acts.h_seq };
            layer.input.forward(be, seq, &mut acts.gx, batch * t, Epilogue::None)?;
            be.lstm(&acts.gx, &layer.w_hh, &mut acts.h_seq, shape)?;
        }
        be.pool(&acts.h_seq, &mut acts.last, batch, t, h, Pool::Last)?;
        norm.forward(be, &acts.last, &mut acts.normed, batch)?;
        heads.forward(be, &acts.normed, &mut acts.heads, batch)
    }

    /// Reads the heads' buffers into the named outputs.
    pub fn emit(&self, be: &B, out: &mut Outputs) -> Result<()> {
        let acts = self.acts.as_ref().ok_or_else(|| Error::input("features", "emit before compute"))?;
        write_heads(be, &acts.heads, acts.batch, self.cfg.num_classes, PRIMARY, out)
    }
}

fn ensure_acts<'a, B: Backend>(
    slot: &'a mut Option<Acts<B>>,
    c: &CnnLstmConfig,
    be: &B,
    batch: usize,
) -> Result<&'a mut Acts<B>> {
    if slot.as_ref().is_none_or(|a| a.batch != batch) {
        let rows = batch * c.sequence_length;
        let widest = c.conv_channels.iter().copied().max().unwrap_or(0);
        let h = c.lstm_hidden;
        *slot = Some(Acts {
            batch,
            input: be.alloc(rows * c.input_features)?,
            conv_a: be.alloc(rows * widest)?,
            conv_b: be.alloc(rows * widest)?,
            gx: be.alloc(rows * 4 * h)?,
            h_seq: be.alloc(rows * h)?,
            last: be.alloc(batch * h)?,
            normed: be.alloc(batch * h)?,
            heads: HeadsBufs::new(be, batch, c.num_classes)?,
        });
    }
    Ok(slot.as_mut().expect("set above"))
}
