//! TLOB's training forward and backward (docs/models.md §2).

use super::parts::{
    blocks_bwd, blocks_fwd, conv_chain_bwd, conv_chain_fwd, mask, Block, BlockGrads, BlockTape, Conv, ConvTape,
    Dropout, Heads, HeadsTape, Lin, Norm,
};
use super::{heads_stage, Ctx, Param, TrainBatch};
use crate::backend::{BroadcastShape, ConvShape, Epilogue, Pool, Train};
use crate::error::Result;
use crate::model::tlob::positional_encoding;
use crate::model::TlobConfig;

pub(super) struct Tlob<B: Train> {
    cfg: TlobConfig,
    convs: Vec<Conv<B>>,
    /// `spatial.proj`, its prepared weight relabeled to our channels-last map
    /// (see model/tlob.rs); `w_int` is the relabeled weight row-major (for
    /// the input gradient) and `g_int` its gradient, relabeled back into the
    /// parameter's after each backward.
    proj: Lin<B>,
    w_int: B::Buf,
    g_int: B::Buf,
    channels: usize,
    branches: Vec<Conv<B>>,
    ms_proj: Lin<B>,
    aux: Option<(Lin<B>, Lin<B>)>,
    pe: B::Buf,
    blocks: Vec<Block<B>>,
    norm: Norm,
    heads: Vec<Heads>,
    tape: Option<Tape<B>>,
}

pub(super) struct Tape<B: Train> {
    /// The largest batch the buffers hold: every op is sized by the batch it
    /// is given, so a smaller batch (an epoch's last) runs in the same tape.
    batch: usize,
    lob: B::Buf,
    spatial: ConvTape<B>,
    x0: B::Buf,
    cat_pre: B::Buf,
    cat: B::Buf,
    tmp: B::Buf,
    m_ms: B::Buf,
    x1: B::Buf,
    aux_in: B::Buf,
    aux_pre: B::Buf,
    aux_act: B::Buf,
    aux_out: B::Buf,
    emb: B::Buf,
    m_emb: B::Buf,
    blocks: Vec<BlockTape<B>>,
    normed_all: B::Buf,
    pooled: B::Buf,
    zd: B::Buf,
    zmask: B::Buf,
    pub heads: Vec<HeadsTape<B>>,
    g: BlockGrads<B>,
    d: B::Buf,
    dn: B::Buf,
    dz: B::Buf,
    dcat: B::Buf,
    daux_out: B::Buf,
    daux_act: B::Buf,
    dmap_a: B::Buf,
    dmap_b: B::Buf,
}

impl<B: Train> Tlob<B> {
    pub fn new(be: &B, cfg: &TlobConfig, params: &[Param<B>]) -> Result<Self> {
        let d = cfg.temporal_hidden;
        let mut convs = Vec::new();
        let mut c_in = cfg.lob_features;
        for (i, &c_out) in cfg.spatial_channels.iter().enumerate() {
            convs.push(Conv::new(be, params, &format!("spatial.convs.{i}"), c_in, c_out, cfg.spatial_kernel)?);
            c_in = c_out;
        }
        let flat = c_in * cfg.num_levels;
        let hidden = (cfg.mlp_ratio * d as f64) as usize;
        Ok(Tlob {
            proj: Lin::new(be, params, "spatial.proj", flat, d)?,
            w_int: be.alloc(flat * d)?,
            g_int: be.alloc(flat * d)?,
            channels: c_in,
            branches: cfg
                .temporal_kernels
                .iter()
                .enumerate()
                .map(|(i, &k)| Conv::new(be, params, &format!("multiscale.branches.{i}"), d, d, k))
                .collect::<Result<_>>()?,
            ms_proj: Lin::new(be, params, "multiscale.proj", cfg.temporal_kernels.len() * d, d)?,
            aux: if cfg.aux_features > 0 {
                Some((Lin::new(be, params, "aux.fc1", cfg.aux_features, d)?, Lin::new(be, params, "aux.fc2", d, d)?))
            } else {
                None
            },
            pe: be.upload(&positional_encoding(cfg.sequence_length, d))?,
            blocks: (0..cfg.num_temporal_layers)
                .map(|i| Block::new(be, params, &format!("temporal.{i}"), d, hidden, cfg.num_heads))
                .collect::<Result<_>>()?,
            norm: Norm::new(params, "norm", d)?,
            heads: cfg.horizons.iter().map(|h| Heads::new(params, &format!("heads.h{h}"), d)).collect::<Result<_>>()?,
            convs,
            cfg: cfg.clone(),
            tape: None,
        })
    }

    /// Which set of heads is the primary horizon's.
    pub fn primary(&self) -> usize {
        self.cfg.horizons.iter().position(|&h| h == self.cfg.primary_horizon).unwrap_or(0)
    }

    pub fn refresh(&mut self, be: &B, params: &[Param<B>]) -> Result<()> {
        for c in self.convs.iter_mut().chain(self.branches.iter_mut()) {
            c.lin.refresh(be, params)?;
        }
        self.ms_proj.refresh(be, params)?;
        if let Some((a, b)) = &mut self.aux {
            a.refresh(be, params)?;
            b.refresh(be, params)?;
        }
        for b in &mut self.blocks {
            for l in b.lins_mut() {
                l.refresh(be, params)?;
            }
        }
        // model/tlob.rs's `spatial_proj_to_internal`: w[o, c·L + l] → w_int[o, l·C + c].
        let (d, l, ch) = (self.cfg.temporal_hidden, self.cfg.num_levels, self.channels);
        be.swap_last_axes(&params[self.proj.w].value, &mut self.w_int, d, ch, l, false)?;
        be.prepare_linear_from(&self.w_int, d, ch * l, &mut self.proj.wt)
    }

    pub fn tape(&mut self, be: &B, batch: usize) -> Result<&mut Tape<B>> {
        if self.tape.as_ref().is_none_or(|t| t.batch < batch) {
            let c = &self.cfg;
            let (t, l, d) = (c.sequence_length, c.num_levels, c.temporal_hidden);
            let hidden = (c.mlp_ratio * d as f64) as usize;
            let rows = batch * t;
            let nb = c.temporal_kernels.len();
            let widest = c.spatial_channels.iter().copied().max().unwrap_or(0).max(c.lob_features);
            let a = c.aux_features.max(1);
            self.tape = Some(Tape {
                batch,
                lob: be.alloc(rows * l * c.lob_features)?,
                spatial: ConvTape::new(be, &self.convs, rows * l)?,
                x0: be.alloc(rows * d)?,
                cat_pre: be.alloc(rows * nb * d)?,
                cat: be.alloc(rows * nb * d)?,
                tmp: be.alloc(rows * d)?,
                m_ms: mask(be, c.dropout, rows * d)?,
                x1: be.alloc(rows * d)?,
                aux_in: be.alloc(batch * a)?,
                aux_pre: be.alloc(batch * d)?,
                aux_act: be.alloc(batch * d)?,
                aux_out: be.alloc(batch * d)?,
                emb: be.alloc(rows * d)?,
                m_emb: mask(be, c.dropout, rows * d)?,
                blocks: (0..c.num_temporal_layers)
                    .map(|_| BlockTape::new(be, batch, t, d, hidden, c.num_heads, c.dropout))
                    .collect::<Result<_>>()?,
                normed_all: be.alloc(rows * d)?,
                pooled: be.alloc(batch * d)?,
                zd: be.alloc(batch * d)?,
                zmask: mask(be, c.dropout, batch * d)?,
                heads: c.horizons.iter().map(|_| HeadsTape::new(be, batch, 3)).collect::<Result<_>>()?,
                g: BlockGrads::new(be, batch, t, d, hidden, c.num_heads)?,
                d: be.alloc(rows * d)?,
                dn: be.alloc(rows * d)?,
                dz: be.alloc(batch * d)?,
                dcat: be.alloc(rows * nb * d)?,
                daux_out: be.alloc(batch * d)?,
                daux_act: be.alloc(batch * d)?,
                dmap_a: be.alloc(rows * l * widest)?,
                dmap_b: be.alloc(rows * l * widest)?,
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
        let Tlob { cfg: c, convs, proj, w_int, g_int, channels, branches, ms_proj, aux, pe, blocks, norm, heads, tape } =
            self;
        let t = tape.as_mut().expect("allocated by the caller");
        let n_b = ctx.batch;
        let (steps, l, d) = (c.sequence_length, c.num_levels, c.temporal_hidden);
        let rows = n_b * steps;
        let samples = rows;
        let nb = branches.len();
        be.write(&mut t.lob, &batch.lob.as_ref().expect("checked").data)?;

        // 1-2. Spatial CNN per snapshot, one token per snapshot.
        conv_chain_fwd(be, params, convs, &t.lob, &mut t.spatial, samples, l)?;
        let map = t.spatial.out.last().expect("spatial_channels non-empty");
        proj.fwd(be, params, map, &mut t.x0, rows, Epilogue::None)?;

        // 3. Multi-scale temporal conv, residual through dropout.
        let branch_shape = |i: usize, k: usize| ConvShape {
            samples: n_b,
            len: steps,
            c_in: d,
            c_out: d,
            kernel: k,
            out_stride: nb * d,
            out_offset: i * d,
        };
        for (i, br) in branches.iter().enumerate() {
            br.fwd(be, params, &t.x0, &mut t.cat_pre, branch_shape(i, br.k))?;
        }
        be.gelu(&t.cat_pre, &mut t.cat, rows * nb * d)?;
        be.copy(&t.x0, &mut t.x1, rows * d)?;
        let ms_dropping = drop.active();
        if ms_dropping {
            ms_proj.fwd(be, params, &t.cat, &mut t.tmp, rows, Epilogue::None)?;
            drop.apply(be, &mut t.m_ms, &mut t.tmp, rows * d)?;
            be.add(&mut t.x1, &t.tmp, rows * d)?;
        } else {
            ms_proj.fwd(be, params, &t.cat, &mut t.x1, rows, Epilogue::Accumulate)?;
            drop.site += 1;
        }

        // 4. Auxiliary features (no dropout in the reference), broadcast over time.
        let per_sample = BroadcastShape { outer: n_b, inner: steps, dim: d, per_outer: true };
        let aux_used = match (aux.as_ref(), batch.aux.as_ref()) {
            (Some((fc1, fc2)), Some(a)) => {
                be.write(&mut t.aux_in, &a.data)?;
                fc1.fwd(be, params, &t.aux_in, &mut t.aux_pre, n_b, Epilogue::None)?;
                be.gelu(&t.aux_pre, &mut t.aux_act, n_b * d)?;
                fc2.fwd(be, params, &t.aux_act, &mut t.aux_out, n_b, Epilogue::None)?;
                be.broadcast_add(&mut t.x1, &t.aux_out, per_sample)?;
                true
            }
            _ => false,
        };

        // 5. Positions, then dropout of the embedded tokens.
        be.copy(&t.x1, &mut t.emb, rows * d)?;
        be.broadcast_add(&mut t.emb, pe, BroadcastShape { outer: n_b, inner: steps, dim: d, per_outer: false })?;
        drop.apply(be, &mut t.m_emb, &mut t.emb, rows * d)?;
        let dropping = drop.active();

        // 6-8. Blocks, norm, mean pool, the heads of every horizon.
        blocks_fwd(be, params, blocks, &t.emb, &mut t.blocks, &mut t.tmp, &mut drop, n_b, steps)?;
        let x_last = &t.blocks.last().expect("num_temporal_layers ≥ 1").x_out;
        norm.fwd(be, params, x_last, &mut t.normed_all, rows)?;
        be.pool(&t.normed_all, &mut t.pooled, n_b, steps, d, Pool::Mean)?;
        let dz = if ctx.backward { Some(&mut t.dz) } else { None };
        let total = heads_stage(
            be,
            params,
            heads,
            &mut t.heads,
            &t.pooled,
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

        // Backward.
        let x_last = &t.blocks.last().expect("num_temporal_layers ≥ 1").x_out;
        be.pool_backward(&t.dz, &mut t.dn, n_b, steps, d, Pool::Mean)?;
        be.fill(&mut t.d, rows * d, 0.0)?;
        norm.bwd(be, params, x_last, &t.dn, &mut t.d, rows)?;
        blocks_bwd(be, params, blocks, &t.emb, &t.blocks, &mut t.g, &mut t.d, dropping, n_b, steps)?;
        if dropping {
            be.mul(&mut t.d, &t.m_emb, rows * d)?;
        }
        // t.d: the gradient of x1 (the positions are constants).
        if aux_used {
            let (fc1, fc2) = aux.as_ref().expect("aux_used");
            be.fill(&mut t.daux_out, n_b * d, 0.0)?;
            be.broadcast_add_backward(&t.d, &mut t.daux_out, per_sample)?;
            fc2.bwd(be, params, &t.aux_act, &t.daux_out, Some((&mut t.daux_act, false)), n_b)?;
            be.gelu_backward(&t.aux_pre, &mut t.daux_act, n_b * d)?;
            fc1.bwd(be, params, &t.aux_in, &t.daux_act, None, n_b)?;
        }
        let dy: &B::Buf = if ms_dropping {
            be.copy(&t.d, &mut t.tmp, rows * d)?;
            be.mul(&mut t.tmp, &t.m_ms, rows * d)?;
            &t.tmp
        } else {
            &t.d
        };
        ms_proj.bwd(be, params, &t.cat, dy, Some((&mut t.dcat, false)), rows)?;
        be.gelu_backward(&t.cat_pre, &mut t.dcat, rows * nb * d)?;
        for (i, br) in branches.iter().enumerate() {
            // Each branch adds its input gradient to the residual one in t.d.
            br.bwd(be, params, &t.x0, &t.dcat, Some(&mut t.d), branch_shape(i, br.k))?;
        }
        // Spatial projection, in the relabeled layout.
        let flat = *channels * l;
        be.fill(g_int, flat * d, 0.0)?;
        {
            let pb = &mut params[proj.b];
            let shape = proj.shape(rows);
            be.linear_backward(
                map_of(&t.spatial),
                w_int,
                &t.d,
                Some(&mut t.dmap_a),
                g_int,
                Some(&mut pb.grad),
                shape,
                false,
            )?;
        }
        conv_chain_bwd(be, params, convs, &t.lob, &t.spatial, &mut t.dmap_a, &mut t.dmap_b, samples, l)?;
        // g_int[o, l·C + c] → grad[o, c·L + l].
        be.swap_last_axes(g_int, &mut params[proj.w].grad, d, l, *channels, true)?;
        Ok(total)
    }
}

fn map_of<B: Train>(t: &ConvTape<B>) -> &B::Buf {
    t.out.last().expect("spatial_channels non-empty")
}
