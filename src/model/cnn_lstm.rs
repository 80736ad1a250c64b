//! CNN-LSTM v2: temporal convs over the feature window, a stacked LSTM, and
//! heads on the top layer's last hidden state (docs/models.md §3). Its
//! definition, its forward (inference and training run the same code, see
//! `model::run`) and, beside it, its backward.

use super::def::{Conv, Def, Heads, Lstm, Norm};
use super::run::{Architecture, Run};
use super::tape::TrainRun;
use super::{batch_of, Inputs, RunShape};
use crate::backend::{Backend, LstmShape, Pool, Train};
use crate::error::Result;
use crate::model::config::CnnLstmConfig;
use crate::tensor::Tensor;

pub struct CnnLstm {
    cfg: CnnLstmConfig,
    pub def: Def,
    convs: Vec<Conv>,
    /// One LSTM layer each; the input projection's bias is `b_ih + b_hh`.
    layers: Vec<Lstm>,
    norm: Norm,
    heads: Heads,
}

impl CnnLstm {
    pub fn new(c: &CnnLstmConfig) -> Self {
        let mut def = Def::default();
        let convs = def.convs("conv", c.input_features, &c.conv_channels, c.conv_kernel);
        let c_in = c.conv_channels.last().copied().unwrap_or(c.input_features);
        let h = c.lstm_hidden;
        let layers = (0..c.lstm_layers).map(|k| def.lstm("lstm", k, if k == 0 { c_in } else { h }, h)).collect();
        let norm = def.norm("norm", h);
        let heads = def.heads("heads", h, c.num_classes);
        CnnLstm { cfg: c.clone(), def, convs, layers, norm, heads }
    }
}

impl Architecture for CnnLstm {
    fn def(&self) -> &Def {
        &self.def
    }

    /// Checks the inputs; returns the run's shape and the inputs to stage.
    fn inputs<'a>(&self, inputs: &Inputs<'a>) -> Result<(RunShape, [Option<&'a Tensor>; 2])> {
        let c = &self.cfg;
        let features = inputs.require("features", "cnn_lstm")?;
        let batch = batch_of(features, "features", &[c.sequence_length, c.input_features])?;
        Ok((RunShape::whole(batch, false), [Some(features), None]))
    }

    fn forward<B: Backend, R: Run<B>>(&self, r: &mut R) -> Result<()> {
        let c = &self.cfg;
        let (batch, t, h) = (r.batch(), c.sequence_length, c.lstm_hidden);
        let mut seq = r.input(0, batch * t, c.input_features)?;
        for conv in &self.convs {
            seq = r.conv_gelu(conv, seq, batch, t)?;
        }
        let shape = LstmShape { batch, steps: t, hidden: h };
        for (k, layer) in self.layers.iter().enumerate() {
            seq = r.lstm(layer, seq, shape)?;
            // PyTorch's nn.LSTM drops every layer's output but the top one's.
            if k + 1 < self.layers.len() {
                seq = r.dropout(seq, batch * t * h)?;
            }
        }
        let last = r.pool(seq, t, h, Pool::Last)?;
        let z = r.norm(&self.norm, last, batch)?;
        let z = r.dropout(z, batch * h)?;
        r.heads(std::slice::from_ref(&self.heads), z)
    }

    /// The forward's ops in reverse, through time layer by layer from the top.
    fn backward<B: Train>(&self, r: &mut TrainRun<'_, B>) -> Result<()> {
        let d = r.heads_bwd()?;
        let d = r.dropout_bwd(d)?;
        let d = r.norm_bwd(&self.norm, d)?;
        let mut d = r.pool_bwd(d)?;
        for (k, layer) in self.layers.iter().enumerate().rev() {
            if k + 1 < self.layers.len() {
                d = r.dropout_bwd(d)?;
            }
            match r.lstm_bwd(layer, d)? {
                Some(dx) => d = dx,
                None => return Ok(()),
            }
        }
        for conv in self.convs.iter().rev() {
            match r.conv_bwd(conv, d)? {
                Some(dx) => d = dx,
                None => return Ok(()),
            }
        }
        Ok(())
    }
}
