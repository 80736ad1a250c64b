//! MPDTransformer: a ViT over the (60 × 112) feature window (docs/models.md §1).

use super::layers::{BlockActs, BlockP, HeadsBufs, HeadsP, Loader, NormP, ParamSpecs};
use super::{batch_of, mlp_width, write_heads, Inputs, Normalizers, Outputs, RunShape, PRIMARY};
use crate::backend::{Backend, PatchShape, Pool};
use crate::error::{Error, Result};
use crate::model::config::MpdConfig;

pub fn param_specs(c: &MpdConfig) -> ParamSpecs {
    let d = c.embed_dim;
    let (pt, pf) = c.patch_size;
    let hidden = mlp_width(c.mlp_ratio, d);
    let mut s = ParamSpecs::default();
    s.push("patch_embed.proj.weight", &[d, 1, pt, pf]);
    s.push("patch_embed.proj.bias", &[d]);
    if c.use_cls_token {
        s.push("cls_token", &[1, 1, d]);
    }
    s.push("pos_embed", &[1, c.tokens(), d]);
    for i in 0..c.num_layers {
        s.block(&format!("blocks.{i}"), d, hidden);
    }
    s.layernorm("norm", d);
    s.heads("heads", d, c.num_classes);
    s
}

pub struct MpdNet<B: Backend> {
    cfg: MpdConfig,
    patch_w: B::Buf,
    patch_b: B::Buf,
    cls: Option<B::Buf>,
    pos: B::Buf,
    blocks: Vec<BlockP<B>>,
    norm: NormP<B>,
    heads: HeadsP<B>,
    acts: Option<Acts<B>>,
}

struct Acts<B: Backend> {
    batch: usize,
    input: B::Buf,
    x: B::Buf,
    block: BlockActs<B>,
    pooled: B::Buf,
    normed: B::Buf,
    heads: HeadsBufs<B>,
}

impl<B: Backend> MpdNet<B> {
    pub fn new(cfg: &MpdConfig, ld: &Loader<'_, B>) -> Result<Self> {
        let d = cfg.embed_dim;
        let hidden = mlp_width(cfg.mlp_ratio, d);
        Ok(MpdNet {
            // (D, 1, Pt, Pf) flattens to (D, Pt·Pf) in the patch's own order.
            patch_w: ld.matrix("patch_embed.proj.weight", d, cfg.patch_size.0 * cfg.patch_size.1)?,
            patch_b: ld.buf("patch_embed.proj.bias", d)?,
            cls: if cfg.use_cls_token { Some(ld.buf("cls_token", d)?) } else { None },
            pos: ld.buf("pos_embed", cfg.tokens() * d)?,
            blocks: (0..cfg.num_layers)
                .map(|i| ld.block(&format!("blocks.{i}"), d, hidden, cfg.num_heads))
                .collect::<Result<_>>()?,
            norm: ld.layernorm("norm", d)?,
            heads: ld.heads("heads", d, cfg.num_classes)?,
            cfg: cfg.clone(),
            acts: None,
        })
    }

    /// Checks the inputs and writes them into the activations; returns the run's shape.
    pub fn stage(&mut self, be: &B, inputs: &Inputs<'_>) -> Result<RunShape> {
        let c = &self.cfg;
        let features = inputs.require("features", "mpd_transformer")?;
        let batch = batch_of(features, "features", &[c.sequence_length, c.input_features])?;
        let acts = ensure_acts(&mut self.acts, c, be, batch)?;
        be.write(&mut acts.input, &features.data)?;
        Ok(RunShape { batch, aux: false })
    }

    /// The forward's ops, from the staged inputs to the heads' buffers: only
    /// compute ops, so a backend can record them once and replay them.
    pub fn compute(&mut self, be: &B, norms: &Normalizers<B>) -> Result<()> {
        let c = &self.cfg;
        let (t, f, d, n) = (c.sequence_length, c.input_features, c.embed_dim, c.tokens());
        let acts = self.acts.as_mut().ok_or_else(|| Error::input("features", "compute before stage"))?;
        let batch = acts.batch;
        if let Some((mean, std)) = &norms.input {
            be.standardize(&mut acts.input, mean, std, batch * t, f)?;
        }
        let shape = PatchShape {
            batch,
            height: t,
            width: f,
            patch_h: c.patch_size.0,
            patch_w: c.patch_size.1,
            dim: d,
            cls_token: c.use_cls_token,
        };
        be.patch_embed(&acts.input, &self.patch_w, &self.patch_b, self.cls.as_ref(), &self.pos, &mut acts.x, shape)?;
        if c.use_cls_token {
            // Only the CLS token reaches the heads, and LayerNorm is per token:
            // the last block runs its projection and MLP on that token alone,
            // and only it is normalized.
            let (last, early) = self.blocks.split_last().expect("validated: num_layers > 0");
            for block in early {
                block.forward(be, &mut acts.x, &mut acts.block, batch, n)?;
            }
            last.forward_first_token(be, &acts.x, &mut acts.pooled, &mut acts.block, batch, n)?;
            self.norm.forward(be, &acts.pooled, &mut acts.normed, batch)?;
        } else {
            for block in &self.blocks {
                block.forward(be, &mut acts.x, &mut acts.block, batch, n)?;
            }
            self.norm.forward(be, &acts.x, &mut acts.block.h, batch * n)?;
            be.pool(&acts.block.h, &mut acts.normed, batch, n, d, Pool::Mean)?;
        }
        self.heads.forward(be, &acts.normed, &mut acts.heads, batch)
    }

    /// Reads the heads' buffers into the named outputs.
    pub fn emit(&self, be: &B, out: &mut Outputs) -> Result<()> {
        let acts = self.acts.as_ref().ok_or_else(|| Error::input("features", "emit before compute"))?;
        write_heads(be, acts.heads.refs(), acts.batch, self.cfg.num_classes, PRIMARY, out)
    }
}

/// The activations for `batch`, allocated on the first call at that batch size.
fn ensure_acts<'a, B: Backend>(
    slot: &'a mut Option<Acts<B>>,
    c: &MpdConfig,
    be: &B,
    batch: usize,
) -> Result<&'a mut Acts<B>> {
    if slot.as_ref().is_none_or(|a| a.batch != batch) {
        let (d, n) = (c.embed_dim, c.tokens());
        *slot = Some(Acts {
            batch,
            input: be.alloc(batch * c.sequence_length * c.input_features)?,
            x: be.alloc(batch * n * d)?,
            block: BlockActs::new(be, batch * n, d, mlp_width(c.mlp_ratio, d))?,
            pooled: be.alloc(batch * d)?,
            normed: be.alloc(batch * d)?,
            heads: HeadsBufs::new(be, batch, c.num_classes)?,
        });
    }
    Ok(slot.as_mut().expect("set above"))
}
