//! TLOB: spatial CNN over levels, multi-scale temporal conv, optional
//! auxiliary features, a temporal transformer, and one set of heads per
//! horizon (docs/models.md §2). Its definition, its forward (inference and
//! training run the same code, see `model::run`) and, beside it, its backward.

use super::def::{Block, Conv, Def, Heads, Linear, Multiscale, Norm, Recipe, Slot, SpatialProj};
use super::run::{Act, Architecture, Run};
use super::tape::TrainRun;
use super::{batch_of, horizon_names, mlp_width, Inputs, Part, RunShape};
use crate::backend::{Backend, BroadcastShape, Pool, Train};
use crate::error::{Error, Result};
use crate::model::config::TlobConfig;
use crate::tensor::Tensor;

/// `pe[t, 2i] = sin(t / 10000^(2i/D))`, `pe[t, 2i+1] = cos(…)`, computed in f64.
pub fn positional_encoding(steps: usize, dim: usize) -> Vec<f32> {
    let mut pe = vec![0f32; steps * dim];
    for i in (0..dim).step_by(2) {
        let denom = 10000f64.powf(i as f64 / dim as f64);
        for t in 0..steps {
            let a = t as f64 / denom;
            pe[t * dim + i] = a.sin() as f32;
            if i + 1 < dim {
                pe[t * dim + i + 1] = a.cos() as f32;
            }
        }
    }
    pe
}

/// `spatial.proj` flattens the conv map channel-major (`c·L + l`); our conv
/// output is channels-last (`l·C + c`). Relabeling the weight's columns once
/// at load makes the two agree without a transpose on every forward.
pub fn spatial_proj_to_internal(w: &[f32], d: usize, channels: usize, levels: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..d {
        for c in 0..channels {
            for l in 0..levels {
                out[o * channels * levels + l * channels + c] = w[o * channels * levels + c * levels + l];
            }
        }
    }
    out
}

pub struct Tlob {
    cfg: TlobConfig,
    pub def: Def,
    convs: Vec<Conv>,
    proj: SpatialProj,
    multiscale: Multiscale,
    ms_proj: Linear,
    aux: Option<(Linear, Linear)>,
    pe: Slot,
    blocks: Vec<Block>,
    norm: Norm,
    heads: Vec<Heads>,
    /// Each horizon's output names, made once (no formatting per forward).
    pub head_names: Vec<[String; 3]>,
}

impl Tlob {
    pub fn new(c: &TlobConfig) -> Self {
        let d = c.temporal_hidden;
        let mut def = Def::default();
        let convs = def.convs("spatial.convs", c.lob_features, &c.spatial_channels, c.spatial_kernel);
        let channels = c.spatial_channels.last().copied().unwrap_or(c.lob_features);
        let proj = def.spatial_proj("spatial.proj", channels, c.num_levels, d);
        let multiscale = def.multiscale("multiscale.branches", d, &c.temporal_kernels);
        let ms_proj = def.linear("multiscale.proj", c.temporal_kernels.len() * d, d);
        let aux = (c.aux_features > 0).then(|| (def.linear("aux.fc1", c.aux_features, d), def.linear("aux.fc2", d, d)));
        let hidden = mlp_width(c.mlp_ratio, d);
        let blocks =
            (0..c.num_temporal_layers).map(|i| def.block(&format!("temporal.{i}"), d, hidden, c.num_heads)).collect();
        let norm = def.norm("norm", d);
        let heads = c.horizons.iter().map(|h| def.heads(&format!("heads.h{h}"), d, c.num_classes)).collect();
        let pe = def.slot(Recipe::Constant(positional_encoding(c.sequence_length, d)));
        let head_names = c.horizons.iter().map(|&h| horizon_names(h)).collect();
        Tlob { cfg: c.clone(), def, convs, proj, multiscale, ms_proj, aux, pe, blocks, norm, heads, head_names }
    }

    pub fn config(&self) -> &TlobConfig {
        &self.cfg
    }

    /// Which set of heads is the primary horizon's.
    pub fn primary(&self) -> usize {
        self.cfg.horizons.iter().position(|&h| h == self.cfg.primary_horizon).unwrap_or(0)
    }

    /// Checks an `Encode` pass's `lob (n, L, F)`; returns its shape.
    pub(super) fn encode_inputs(&self, lob: &Tensor) -> Result<RunShape> {
        let c = &self.cfg;
        let batch = batch_of(lob, "lob", &[c.num_levels, c.lob_features])?;
        Ok(RunShape { batch, aux: false, part: Part::Encode })
    }

    /// Checks a `Tokens` pass's `tokens (B, T, D)` and optional `aux`;
    /// returns its shape and the inputs to stage.
    pub(super) fn tokens_inputs<'a>(
        &self,
        tokens: &'a Tensor,
        aux: Option<&'a Tensor>,
    ) -> Result<(RunShape, [Option<&'a Tensor>; 2])> {
        let c = &self.cfg;
        let batch = batch_of(tokens, "tokens", &[c.sequence_length, c.temporal_hidden])?;
        let aux = self.check_aux(aux, batch)?;
        Ok((RunShape { batch, aux: aux.is_some(), part: Part::Tokens }, [Some(tokens), aux]))
    }

    /// `aux` if this model takes it and its batch is `batch`.
    fn check_aux<'a>(&self, aux: Option<&'a Tensor>, batch: usize) -> Result<Option<&'a Tensor>> {
        match (aux, self.aux.is_some()) {
            (Some(_), false) => Err(Error::input("aux", "this tlob model has no auxiliary encoder (aux_features = 0)")),
            (Some(a), true) => {
                let b = batch_of(a, "aux", &[self.cfg.aux_features])?;
                if b != batch {
                    return Err(Error::input("aux", format!("batch {b} differs from the tlob input's batch {batch}")));
                }
                Ok(Some(a))
            }
            (None, _) => Ok(None),
        }
    }

    /// 1-2. Spatial CNN per snapshot, then one token per snapshot: each of
    /// `snapshots` on its own, so an encoding does not depend on the others.
    fn encode<B: Backend, R: Run<B>>(&self, r: &mut R, mut x: Act, snapshots: usize) -> Result<Act> {
        for conv in &self.convs {
            x = r.conv_gelu(conv, x, snapshots, self.cfg.num_levels)?;
        }
        r.linear(&self.proj.lin, x, snapshots)
    }
}

impl Architecture for Tlob {
    fn def(&self) -> &Def {
        &self.def
    }

    /// Checks the inputs; returns the run's shape (whether the auxiliary
    /// encoder runs changes the op list) and the inputs to stage.
    fn inputs<'a>(&self, inputs: &Inputs<'a>) -> Result<(RunShape, [Option<&'a Tensor>; 2])> {
        let c = &self.cfg;
        let lob = inputs.require("lob", "tlob")?;
        let batch = batch_of(lob, "lob", &[c.sequence_length, c.num_levels, c.lob_features])?;
        let aux = self.check_aux(inputs.aux, batch)?;
        Ok((RunShape::whole(batch, aux.is_some()), [Some(lob), aux]))
    }

    /// The whole forward, or one of its two parts (`model::Part`): the
    /// snapshots' encoding alone, or everything after it from given tokens.
    fn forward<B: Backend, R: Run<B>>(&self, r: &mut R) -> Result<()> {
        let c = &self.cfg;
        let (part, batch, t, l, d) = (r.part(), r.batch(), c.sequence_length, c.num_levels, c.temporal_hidden);
        let rows = batch * t;
        let x = match part {
            Part::Tokens => r.input(0, rows, d)?,
            Part::Encode => r.input(0, batch * l, c.lob_features)?,
            Part::Whole => r.input(0, rows * l, c.lob_features)?,
        };
        let aux = match (&self.aux, r.aux()) {
            (Some(_), true) => Some(r.input(1, batch, c.aux_features)?),
            _ => None,
        };
        let x = match part {
            Part::Tokens => x,
            Part::Encode => {
                let tokens = self.encode(r, x, batch)?;
                return r.tokens_out(tokens);
            }
            Part::Whole => self.encode(r, x, rows)?,
        };
        // 3. Multi-scale temporal conv, residual.
        let cat = r.multiscale(&self.multiscale, x, batch, t)?;
        let mut x = r.residual(&self.ms_proj, cat, x, rows)?;
        // 4. Auxiliary features (no dropout in the reference), broadcast over time.
        if let (Some((fc1, fc2)), Some(a)) = (&self.aux, aux) {
            let h = r.linear_gelu(fc1, a, batch)?;
            let o = r.linear(fc2, h, batch)?;
            x = r.broadcast_add(x, o, BroadcastShape { outer: batch, inner: t, dim: d, per_outer: true })?;
        }
        // 5. Positions, then dropout of the embedded tokens.
        let x = r.add_positions(x, self.pe, BroadcastShape { outer: batch, inner: t, dim: d, per_outer: false })?;
        let mut x = r.dropout_in_place(x, rows * d)?;
        // 6-8. Blocks, norm, mean pool, the heads of every horizon.
        for block in &self.blocks {
            x = r.block(block, x, batch, t)?;
        }
        let x = r.norm(&self.norm, x, rows)?;
        let z = r.pool(x, t, d, Pool::Mean)?;
        let z = r.dropout(z, batch * d)?;
        r.heads(&self.heads, z)
    }

    /// The forward's ops in reverse.
    fn backward<B: Train>(&self, r: &mut TrainRun<'_, B>) -> Result<()> {
        let d = r.heads_bwd()?;
        let d = r.dropout_bwd(d)?;
        let d = r.pool_bwd(d)?;
        let mut d = r.norm_bwd(&self.norm, d)?;
        for block in self.blocks.iter().rev() {
            d = r.block_bwd(block, d)?;
        }
        // The gradient of the embedded tokens is that of the stream before
        // the positions (constants).
        let d = r.dropout_bwd(d)?;
        if let (Some((fc1, fc2)), true) = (&self.aux, r.aux()) {
            let dsrc = r.broadcast_bwd(d)?;
            let dh = r.linear_bwd(fc2, dsrc)?.expect("an activation");
            r.linear_gelu_bwd(fc1, dh)?;
        }
        let dcat = r.residual_bwd(&self.ms_proj, d)?;
        r.multiscale_bwd(&self.multiscale, dcat, d)?;
        let Some(mut d) = r.spatial_proj_bwd(&self.proj, d)? else { return Ok(()) };
        for conv in self.convs.iter().rev() {
            match r.conv_bwd(conv, d)? {
                Some(dx) => d = dx,
                None => return Ok(()),
            }
        }
        Ok(())
    }
}
