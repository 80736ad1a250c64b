//! MPDTransformer's training forward and backward (docs/models.md §1).

use super::parts::{
    blocks_bwd, blocks_fwd, index, mask, Block, BlockGrads, BlockTape, Dropout, Heads, HeadsTape, Lin, Norm,
};
use super::{heads_stage, Ctx, Param, TrainBatch};
use crate::backend::{PatchShape, Pool, Train};
use crate::error::Result;
use crate::model::MpdConfig;

pub(super) struct Mpd<B: Train> {
    cfg: MpdConfig,
    /// The patch projection as a `(D, Pt·Pf)` matrix.
    patch: Lin<B>,
    cls: Option<usize>,
    pos: usize,
    blocks: Vec<Block<B>>,
    norm: Norm,
    heads: Heads,
    tape: Option<Tape<B>>,
}

pub(super) struct Tape<B: Train> {
    /// The largest batch the buffers hold: every op is sized by the batch it
    /// is given, so a smaller batch (an epoch's last) runs in the same tape.
    batch: usize,
    input: B::Buf,
    emb: B::Buf,
    m_emb: B::Buf,
    blocks: Vec<BlockTape<B>>,
    tmp: B::Buf,
    /// Without a class token: LayerNorm of every token, then the mean.
    normed_all: B::Buf,
    pooled: B::Buf,
    normed: B::Buf,
    zd: B::Buf,
    zmask: B::Buf,
    pub heads: Vec<HeadsTape<B>>,
    g: BlockGrads<B>,
    d: B::Buf,
    dn: B::Buf,
    dz: B::Buf,
    dpool: B::Buf,
}

impl<B: Train> Mpd<B> {
    pub fn new(be: &B, cfg: &MpdConfig, params: &[Param<B>]) -> Result<Self> {
        let d = cfg.embed_dim;
        let hidden = (cfg.mlp_ratio * d as f64) as usize;
        Ok(Mpd {
            patch: Lin::new(be, params, "patch_embed.proj", cfg.patch_size.0 * cfg.patch_size.1, d)?,
            cls: if cfg.use_cls_token { Some(index(params, "cls_token")?) } else { None },
            pos: index(params, "pos_embed")?,
            blocks: (0..cfg.num_layers)
                .map(|i| Block::new(be, params, &format!("blocks.{i}"), d, hidden, cfg.num_heads))
                .collect::<Result<_>>()?,
            norm: Norm::new(params, "norm", d)?,
            heads: Heads::new(params, "heads", d)?,
            cfg: cfg.clone(),
            tape: None,
        })
    }

    pub fn refresh(&mut self, be: &B, params: &[Param<B>]) -> Result<()> {
        self.patch.refresh(be, params)?;
        for b in &mut self.blocks {
            for l in b.lins_mut() {
                l.refresh(be, params)?;
            }
        }
        Ok(())
    }

    pub fn tape(&mut self, be: &B, batch: usize) -> Result<&mut Tape<B>> {
        if self.tape.as_ref().is_none_or(|t| t.batch < batch) {
            let c = &self.cfg;
            let (d, n) = (c.embed_dim, c.tokens());
            let hidden = (c.mlp_ratio * d as f64) as usize;
            let rows = batch * n;
            self.tape = Some(Tape {
                batch,
                input: be.alloc(batch * c.sequence_length * c.input_features)?,
                emb: be.alloc(rows * d)?,
                m_emb: mask(be, c.dropout, rows * d)?,
                blocks: (0..c.num_layers)
                    .map(|_| BlockTape::new(be, batch, n, d, hidden, c.num_heads, c.dropout))
                    .collect::<Result<_>>()?,
                tmp: be.alloc(rows * d)?,
                normed_all: be.alloc(if c.use_cls_token { 0 } else { rows * d })?,
                pooled: be.alloc(batch * d)?,
                normed: be.alloc(batch * d)?,
                zd: be.alloc(batch * d)?,
                zmask: mask(be, c.dropout, batch * d)?,
                heads: vec![HeadsTape::new(be, batch, 3)?],
                g: BlockGrads::new(be, batch, n, d, hidden, c.num_heads)?,
                d: be.alloc(rows * d)?,
                dn: be.alloc(if c.use_cls_token { 0 } else { rows * d })?,
                dz: be.alloc(batch * d)?,
                dpool: be.alloc(batch * d)?,
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
        let Mpd { cfg: c, patch, cls, pos, blocks, norm, heads, tape } = self;
        let t = tape.as_mut().expect("allocated by the caller");
        let n_b = ctx.batch;
        let (d, n) = (c.embed_dim, c.tokens());
        let rows = n_b * n;
        let features = batch.features.as_ref().expect("checked");
        be.write(&mut t.input, &features.data)?;
        let shape = PatchShape {
            batch: n_b,
            height: c.sequence_length,
            width: c.input_features,
            patch_h: c.patch_size.0,
            patch_w: c.patch_size.1,
            dim: d,
            cls_token: c.use_cls_token,
        };
        be.patch_embed(
            &t.input,
            &patch.wt,
            &params[patch.b].value,
            cls.map(|i| &params[i].value),
            &params[*pos].value,
            &mut t.emb,
            shape,
        )?;
        drop.apply(be, &mut t.m_emb, &mut t.emb, rows * d)?;
        let dropping = drop.active();
        blocks_fwd(be, params, blocks, &t.emb, &mut t.blocks, &mut t.tmp, &mut drop, n_b, n)?;
        let x_last = &t.blocks.last().expect("num_layers ≥ 1").x_out;
        if c.use_cls_token {
            be.pool(x_last, &mut t.pooled, n_b, n, d, Pool::First)?;
            norm.fwd(be, params, &t.pooled, &mut t.normed, n_b)?;
        } else {
            norm.fwd(be, params, x_last, &mut t.normed_all, rows)?;
            be.pool(&t.normed_all, &mut t.normed, n_b, n, d, Pool::Mean)?;
        }
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
            d,
        )?;
        if !ctx.backward {
            return Ok(total);
        }

        // Backward, the same list in reverse.
        let x_last = &t.blocks.last().expect("num_layers ≥ 1").x_out;
        if c.use_cls_token {
            be.fill(&mut t.dpool, n_b * d, 0.0)?;
            norm.bwd(be, params, &t.pooled, &t.dz, &mut t.dpool, n_b)?;
            be.pool_backward(&t.dpool, &mut t.d, n_b, n, d, Pool::First)?;
        } else {
            be.pool_backward(&t.dz, &mut t.dn, n_b, n, d, Pool::Mean)?;
            be.fill(&mut t.d, rows * d, 0.0)?;
            norm.bwd(be, params, x_last, &t.dn, &mut t.d, rows)?;
        }
        blocks_bwd(be, params, blocks, &t.emb, &t.blocks, &mut t.g, &mut t.d, dropping, n_b, n)?;
        if dropping {
            be.mul(&mut t.d, &t.m_emb, rows * d)?;
        }
        // Parameters in docs/models.md's order: patch weight, patch bias, [cls], pos.
        let (head, rest) = params.split_at_mut(patch.b + 1);
        let (pw, pb) = head.split_at_mut(patch.b);
        let (dcls, dpos) = match cls {
            Some(ci) => {
                let (a, b) = rest.split_at_mut(*pos - *ci);
                (Some(&mut a[*ci - patch.b - 1].grad), &mut b[0].grad)
            }
            None => (None, &mut rest[*pos - patch.b - 1].grad),
        };
        be.patch_embed_backward(&t.input, &t.d, &mut pw[patch.w].grad, &mut pb[0].grad, dcls, dpos, shape)?;
        Ok(total)
    }
}
