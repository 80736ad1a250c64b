//! MPDTransformer: a ViT over the (60 × 112) feature window (docs/models.md
//! §1). Its definition, its forward (inference and training run the same
//! code, see `model::run`) and, beside it, its backward.

use super::def::{Block, Def, Heads, Linear, Norm, Patch, Recipe};
use super::run::{Architecture, Run};
use super::tape::TrainRun;
use super::{batch_of, mlp_width, Inputs, RunShape};
use crate::backend::{Backend, PatchShape, Pool, Train};
use crate::error::Result;
use crate::model::config::MpdConfig;
use crate::tensor::Tensor;

pub struct Mpd {
    cfg: MpdConfig,
    pub def: Def,
    patch: Patch,
    blocks: Vec<Block>,
    norm: Norm,
    heads: Heads,
}

impl Mpd {
    pub fn new(c: &MpdConfig) -> Self {
        let d = c.embed_dim;
        let (pt, pf) = c.patch_size;
        let hidden = mlp_width(c.mlp_ratio, d);
        let mut def = Def::default();
        // (D, 1, Pt, Pf) flattens to (D, Pt·Pf) in the patch's own order.
        let p = def.param("patch_embed.proj.weight", &[d, 1, pt, pf]);
        let w = def.slot(Recipe::Linear { p, n_out: d, n_in: pt * pf });
        let b = def.raw("patch_embed.proj.bias", &[d]);
        let proj = Linear { p, w, b, n_in: pt * pf, n_out: d };
        let cls = c.use_cls_token.then(|| {
            let s = def.raw("cls_token", &[1, 1, d]);
            (def.specs.0.len() - 1, s)
        });
        let pos_slot = def.raw("pos_embed", &[1, c.tokens(), d]);
        let pos = (def.specs.0.len() - 1, pos_slot);
        let blocks = (0..c.num_layers).map(|i| def.block(&format!("blocks.{i}"), d, hidden, c.num_heads)).collect();
        let norm = def.norm("norm", d);
        let heads = def.heads("heads", d, c.num_classes);
        Mpd { cfg: c.clone(), def, patch: Patch { proj, cls, pos }, blocks, norm, heads }
    }

    fn patch_shape(&self, batch: usize) -> PatchShape {
        let c = &self.cfg;
        PatchShape {
            batch,
            height: c.sequence_length,
            width: c.input_features,
            patch_h: c.patch_size.0,
            patch_w: c.patch_size.1,
            dim: c.embed_dim,
            cls_token: c.use_cls_token,
        }
    }
}

impl Architecture for Mpd {
    fn def(&self) -> &Def {
        &self.def
    }

    /// Checks the inputs; returns the run's shape and the inputs to stage.
    fn inputs<'a>(&self, inputs: &Inputs<'a>) -> Result<(RunShape, [Option<&'a Tensor>; 2])> {
        let c = &self.cfg;
        let features = inputs.require("features", "mpd_transformer")?;
        let batch = batch_of(features, "features", &[c.sequence_length, c.input_features])?;
        Ok((RunShape::whole(batch, false), [Some(features), None]))
    }

    fn forward<B: Backend, R: Run<B>>(&self, r: &mut R) -> Result<()> {
        let c = &self.cfg;
        let (batch, d, n) = (r.batch(), c.embed_dim, c.tokens());
        let x = r.input(0, batch * c.sequence_length, c.input_features)?;
        let x = r.patch_embed(&self.patch, x, self.patch_shape(batch))?;
        let mut x = r.dropout_in_place(x, batch * n * d)?;
        let z = if c.use_cls_token {
            // Only the CLS token reaches the heads, and LayerNorm is per token:
            // only it is normalized (and at inference, the last block runs its
            // projection and MLP on that token alone).
            let (last, early) = self.blocks.split_last().expect("validated: num_layers > 0");
            for block in early {
                x = r.block(block, x, batch, n)?;
            }
            let x0 = r.block_first_token(last, x, batch, n)?;
            r.norm(&self.norm, x0, batch)?
        } else {
            for block in &self.blocks {
                x = r.block(block, x, batch, n)?;
            }
            let x = r.norm(&self.norm, x, batch * n)?;
            r.pool(x, n, d, Pool::Mean)?
        };
        let z = r.dropout(z, batch * d)?;
        r.heads(std::slice::from_ref(&self.heads), z)
    }

    /// The forward's ops in reverse.
    fn backward<B: Train>(&self, r: &mut TrainRun<'_, B>) -> Result<()> {
        let d = r.heads_bwd()?;
        let d = r.dropout_bwd(d)?;
        let mut d = if self.cfg.use_cls_token {
            let d = r.norm_bwd(&self.norm, d)?;
            r.pool_bwd(d)?
        } else {
            let d = r.pool_bwd(d)?;
            r.norm_bwd(&self.norm, d)?
        };
        for block in self.blocks.iter().rev() {
            d = r.block_bwd(block, d)?;
        }
        let d = r.dropout_bwd(d)?;
        r.patch_bwd(&self.patch, d)
    }
}
