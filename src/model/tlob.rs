//! TLOB: spatial CNN over levels, multi-scale temporal conv, optional
//! auxiliary features, a temporal transformer, and one set of heads per
//! horizon (docs/models.md §2).

use super::layers::{conv_chain, BlockActs, BlockP, HeadsBufs, HeadsP, LinearP, Loader, NormP, ParamSpecs};
use super::{batch_of, horizon_names, mlp_width, write_heads, Inputs, Normalizers, Outputs, RunShape, PRIMARY};
use crate::backend::{Backend, BroadcastShape, ConvWeights, Epilogue, Pool};
use crate::error::{Error, Result};
use crate::model::config::TlobConfig;

pub fn param_specs(c: &TlobConfig) -> ParamSpecs {
    let d = c.temporal_hidden;
    let mut s = ParamSpecs::default();
    let mut c_in = c.lob_features;
    for (i, &c_out) in c.spatial_channels.iter().enumerate() {
        s.conv1d(&format!("spatial.convs.{i}"), c_in, c_out, c.spatial_kernel);
        c_in = c_out;
    }
    s.linear("spatial.proj", c_in * c.num_levels, d);
    for (i, &k) in c.temporal_kernels.iter().enumerate() {
        s.conv1d(&format!("multiscale.branches.{i}"), d, d, k);
    }
    s.linear("multiscale.proj", c.temporal_kernels.len() * d, d);
    if c.aux_features > 0 {
        s.linear("aux.fc1", c.aux_features, d);
        s.linear("aux.fc2", d, d);
    }
    let hidden = mlp_width(c.mlp_ratio, d);
    for i in 0..c.num_temporal_layers {
        s.block(&format!("temporal.{i}"), d, hidden);
    }
    s.layernorm("norm", d);
    for h in &c.horizons {
        s.heads(&format!("heads.h{h}"), d, c.num_classes);
    }
    s
}

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

pub struct TlobNet<B: Backend> {
    cfg: TlobConfig,
    convs: Vec<ConvWeights<B>>,
    proj: LinearP<B>,
    branches: Vec<ConvWeights<B>>,
    ms_proj: LinearP<B>,
    aux: Option<(LinearP<B>, LinearP<B>)>,
    pe: B::Buf,
    blocks: Vec<BlockP<B>>,
    norm: NormP<B>,
    heads: Vec<(usize, HeadsP<B>)>,
    /// Each horizon's output names, made once (no formatting per forward).
    head_names: Vec<[String; 3]>,
    acts: Option<Acts<B>>,
}

struct Acts<B: Backend> {
    batch: usize,
    lob: B::Buf,
    sp_a: B::Buf,
    sp_b: B::Buf,
    x: B::Buf,
    cat: B::Buf,
    aux_in: B::Buf,
    aux_h: B::Buf,
    aux_out: B::Buf,
    block: BlockActs<B>,
    pooled: B::Buf,
    heads: Vec<HeadsBufs<B>>,
}

impl<B: Backend> TlobNet<B> {
    pub fn new(cfg: &TlobConfig, ld: &Loader<'_, B>) -> Result<Self> {
        let d = cfg.temporal_hidden;
        let mut convs = Vec::new();
        let mut c_in = cfg.lob_features;
        for (i, &c_out) in cfg.spatial_channels.iter().enumerate() {
            convs.push(ld.conv1d(&format!("spatial.convs.{i}"), c_in, c_out, cfg.spatial_kernel)?);
            c_in = c_out;
        }
        let flat = c_in * cfg.num_levels;
        let proj_w = spatial_proj_to_internal(ld.host("spatial.proj.weight", d * flat)?, d, c_in, cfg.num_levels);
        let proj = LinearP {
            w: ld.be.prepare_linear(&proj_w, d, flat)?,
            b: ld.buf("spatial.proj.bias", d)?,
            n_in: flat,
            n_out: d,
        };
        let branches = cfg
            .temporal_kernels
            .iter()
            .enumerate()
            .map(|(i, &k)| ld.conv1d(&format!("multiscale.branches.{i}"), d, d, k))
            .collect::<Result<_>>()?;
        let aux = if cfg.aux_features > 0 {
            Some((ld.linear("aux.fc1", cfg.aux_features, d)?, ld.linear("aux.fc2", d, d)?))
        } else {
            None
        };
        let hidden = mlp_width(cfg.mlp_ratio, d);
        Ok(TlobNet {
            convs,
            proj,
            branches,
            ms_proj: ld.linear("multiscale.proj", cfg.temporal_kernels.len() * d, d)?,
            aux,
            pe: ld.be.upload(&positional_encoding(cfg.sequence_length, d))?,
            blocks: (0..cfg.num_temporal_layers)
                .map(|i| ld.block(&format!("temporal.{i}"), d, hidden, cfg.num_heads))
                .collect::<Result<_>>()?,
            norm: ld.layernorm("norm", d)?,
            heads: cfg
                .horizons
                .iter()
                .map(|&h| Ok((h, ld.heads(&format!("heads.h{h}"), d, cfg.num_classes)?)))
                .collect::<Result<_>>()?,
            head_names: cfg.horizons.iter().map(|&h| horizon_names(h)).collect(),
            cfg: cfg.clone(),
            acts: None,
        })
    }

    /// Checks the inputs and writes them into the activations; returns the
    /// run's shape (whether the auxiliary encoder runs changes the op list).
    pub fn stage(&mut self, be: &B, inputs: &Inputs<'_>) -> Result<RunShape> {
        let TlobNet { cfg: c, aux, acts, .. } = self;
        let lob = inputs.require("lob", "tlob")?;
        let batch = batch_of(lob, "lob", &[c.sequence_length, c.num_levels, c.lob_features])?;
        let aux_input = match (inputs.aux, aux.is_some()) {
            (Some(_), false) => {
                return Err(Error::input("aux", "this tlob model has no auxiliary encoder (aux_features = 0)"));
            }
            (Some(a), true) => {
                let b = batch_of(a, "aux", &[c.aux_features])?;
                if b != batch {
                    return Err(Error::input("aux", format!("batch {b} differs from lob's batch {batch}")));
                }
                Some(a)
            }
            (None, _) => None,
        };
        let acts = ensure_acts(acts, c, be, batch)?;
        be.write(&mut acts.lob, &lob.data)?;
        if let Some(a) = aux_input {
            be.write(&mut acts.aux_in, &a.data)?;
        }
        Ok(RunShape { batch, aux: aux_input.is_some() })
    }

    /// The forward's ops, from the staged inputs to the heads' buffers: only
    /// compute ops, so a backend can record them once and replay them.
    pub fn compute(&mut self, be: &B, norms: &Normalizers<B>, with_aux: bool) -> Result<()> {
        let TlobNet { cfg: c, convs, proj, branches, ms_proj, aux, pe, blocks, norm, heads, acts, .. } = self;
        let (t, l, d) = (c.sequence_length, c.num_levels, c.temporal_hidden);
        let acts = acts.as_mut().ok_or_else(|| Error::input("lob", "compute before stage"))?;
        let batch = acts.batch;

        // 1-2. Spatial CNN per snapshot, then one token per snapshot.
        let samples = batch * t;
        let in_b = conv_chain(be, convs, &acts.lob, &mut acts.sp_a, &mut acts.sp_b, samples, l)?;
        let map = if in_b == Some(true) { &acts.sp_b } else { &acts.sp_a };
        proj.forward(be, map, &mut acts.x, samples, Epilogue::None)?;

        // 3. Multi-scale temporal conv, residual.
        be.multiscale_conv(&acts.x, branches, &mut acts.cat, batch, t, d)?;
        ms_proj.forward(be, &acts.cat, &mut acts.x, samples, Epilogue::Accumulate)?;

        // 4. Auxiliary features, broadcast over time.
        if let (true, Some((fc1, fc2))) = (with_aux, aux.as_ref()) {
            if let Some((mean, std)) = &norms.aux {
                be.standardize(&mut acts.aux_in, mean, std, batch, c.aux_features)?;
            }
            fc1.forward(be, &acts.aux_in, &mut acts.aux_h, batch, Epilogue::Gelu)?;
            fc2.forward(be, &acts.aux_h, &mut acts.aux_out, batch, Epilogue::None)?;
            be.broadcast_add(
                &mut acts.x,
                &acts.aux_out,
                BroadcastShape { outer: batch, inner: t, dim: d, per_outer: true },
            )?;
        }

        // 5-7. Positions, temporal blocks, norm, mean pool.
        be.broadcast_add(&mut acts.x, pe, BroadcastShape { outer: batch, inner: t, dim: d, per_outer: false })?;
        for block in blocks.iter() {
            block.forward(be, &mut acts.x, &mut acts.block, batch, t)?;
        }
        norm.forward(be, &acts.x, &mut acts.block.h, samples)?;
        be.pool(&acts.block.h, &mut acts.pooled, batch, t, d, Pool::Mean)?;

        // 8. Heads per horizon.
        for ((_, p), bufs) in heads.iter().zip(acts.heads.iter_mut()) {
            p.forward(be, &acts.pooled, bufs, batch)?;
        }
        Ok(())
    }

    /// Reads the heads' buffers into the named outputs: each horizon's, and
    /// the primary one's again under the plain names.
    pub fn emit(&self, be: &B, out: &mut Outputs) -> Result<()> {
        let c = &self.cfg;
        let acts = self.acts.as_ref().ok_or_else(|| Error::input("lob", "emit before compute"))?;
        for (((h, _), bufs), names) in self.heads.iter().zip(acts.heads.iter()).zip(self.head_names.iter()) {
            write_heads(be, bufs.refs(), acts.batch, c.num_classes, [&names[0], &names[1], &names[2]], out)?;
            if *h == c.primary_horizon {
                write_heads(be, bufs.refs(), acts.batch, c.num_classes, PRIMARY, out)?;
            }
        }
        Ok(())
    }
}

fn ensure_acts<'a, B: Backend>(
    slot: &'a mut Option<Acts<B>>,
    c: &TlobConfig,
    be: &B,
    batch: usize,
) -> Result<&'a mut Acts<B>> {
    if slot.as_ref().is_none_or(|a| a.batch != batch) {
        let (t, l, d) = (c.sequence_length, c.num_levels, c.temporal_hidden);
        let widest = c.spatial_channels.iter().copied().max().unwrap_or(0);
        let rows = batch * t;
        *slot = Some(Acts {
            batch,
            lob: be.alloc(rows * l * c.lob_features)?,
            sp_a: be.alloc(rows * l * widest)?,
            sp_b: be.alloc(rows * l * widest)?,
            x: be.alloc(rows * d)?,
            cat: be.alloc(rows * d * c.temporal_kernels.len())?,
            aux_in: be.alloc(batch * c.aux_features.max(1))?,
            aux_h: be.alloc(batch * d)?,
            aux_out: be.alloc(batch * d)?,
            block: BlockActs::new(be, rows, d, mlp_width(c.mlp_ratio, d))?,
            pooled: be.alloc(batch * d)?,
            heads: c.horizons.iter().map(|_| HeadsBufs::new(be, batch, c.num_classes)).collect::<Result<_>>()?,
        });
    }
    Ok(slot.as_mut().expect("set above"))
}
