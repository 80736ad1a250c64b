//! The pieces the three models share (docs/models.md, "Common pieces"): their
//! parameter names and shapes, their device-side parameters, and the pre-norm
//! transformer block's forward as a list of backend ops.

use std::collections::HashMap;

use crate::backend::{
    AttentionShape, Backend, ConvShape, ConvWeights, Epilogue, HeadsOut, HeadsRef, LinearShape, Pool,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The expected parameters of a model: names and shapes, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSpecs(pub Vec<(String, Vec<usize>)>);

impl ParamSpecs {
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push((name.into(), shape.to_vec()));
    }

    pub fn linear(&mut self, prefix: &str, n_in: usize, n_out: usize) {
        self.push(format!("{prefix}.weight"), &[n_out, n_in]);
        self.push(format!("{prefix}.bias"), &[n_out]);
    }

    pub fn conv1d(&mut self, prefix: &str, c_in: usize, c_out: usize, k: usize) {
        self.push(format!("{prefix}.weight"), &[c_out, c_in, k]);
        self.push(format!("{prefix}.bias"), &[c_out]);
    }

    pub fn layernorm(&mut self, prefix: &str, dim: usize) {
        self.push(format!("{prefix}.weight"), &[dim]);
        self.push(format!("{prefix}.bias"), &[dim]);
    }

    pub fn block(&mut self, prefix: &str, dim: usize, hidden: usize) {
        self.layernorm(&format!("{prefix}.norm1"), dim);
        self.linear(&format!("{prefix}.attn.qkv"), dim, 3 * dim);
        self.linear(&format!("{prefix}.attn.proj"), dim, dim);
        self.layernorm(&format!("{prefix}.norm2"), dim);
        self.linear(&format!("{prefix}.mlp.fc1"), dim, hidden);
        self.linear(&format!("{prefix}.mlp.fc2"), hidden, dim);
    }

    pub fn heads(&mut self, prefix: &str, dim: usize, classes: usize) {
        self.linear(&format!("{prefix}.direction"), dim, classes);
        self.linear(&format!("{prefix}.confidence"), dim, 1);
        self.linear(&format!("{prefix}.expected_return"), dim, 1);
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice())
    }
}

/// Uploads named host tensors to a backend, checking each one's size.
pub struct Loader<'a, B: Backend> {
    pub be: &'a B,
    pub tensors: &'a HashMap<String, Tensor>,
}

impl<'a, B: Backend> Loader<'a, B> {
    pub fn host(&self, name: &str, numel: usize) -> Result<&'a [f32]> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::weights("(parameters)", vec![format!("missing tensor {name}")]))?;
        if t.numel() != numel {
            return Err(Error::weights(
                "(parameters)",
                vec![format!("tensor {name} holds {} values, expected {numel}", t.numel())],
            ));
        }
        Ok(&t.data)
    }

    pub fn buf(&self, name: &str, numel: usize) -> Result<B::Buf> {
        self.be.upload(self.host(name, numel)?)
    }

    /// A matrix-product weight `(n_out, n_in)`, in the backend's layout.
    pub fn matrix(&self, name: &str, n_out: usize, n_in: usize) -> Result<B::Buf> {
        self.be.prepare_linear(self.host(name, n_out * n_in)?, n_out, n_in)
    }

    pub fn linear(&self, prefix: &str, n_in: usize, n_out: usize) -> Result<LinearP<B>> {
        Ok(LinearP {
            w: self.matrix(&format!("{prefix}.weight"), n_out, n_in)?,
            b: self.buf(&format!("{prefix}.bias"), n_out)?,
            n_in,
            n_out,
        })
    }

    pub fn conv1d(&self, prefix: &str, c_in: usize, c_out: usize, kernel: usize) -> Result<ConvWeights<B>> {
        Ok(ConvWeights {
            w: self.be.prepare_conv(
                self.host(&format!("{prefix}.weight"), c_out * c_in * kernel)?,
                c_out,
                c_in,
                kernel,
            )?,
            b: self.buf(&format!("{prefix}.bias"), c_out)?,
            c_in,
            c_out,
            kernel,
        })
    }

    pub fn layernorm(&self, prefix: &str, dim: usize) -> Result<NormP<B>> {
        Ok(NormP { w: self.buf(&format!("{prefix}.weight"), dim)?, b: self.buf(&format!("{prefix}.bias"), dim)?, dim })
    }

    pub fn block(&self, prefix: &str, dim: usize, hidden: usize, heads: usize) -> Result<BlockP<B>> {
        Ok(BlockP {
            norm1: self.layernorm(&format!("{prefix}.norm1"), dim)?,
            qkv: self.linear(&format!("{prefix}.attn.qkv"), dim, 3 * dim)?,
            proj: self.linear(&format!("{prefix}.attn.proj"), dim, dim)?,
            norm2: self.layernorm(&format!("{prefix}.norm2"), dim)?,
            fc1: self.linear(&format!("{prefix}.mlp.fc1"), dim, hidden)?,
            fc2: self.linear(&format!("{prefix}.mlp.fc2"), hidden, dim)?,
            heads,
        })
    }

    /// The heads' weights stay in PyTorch's `(n_out, dim)` layout: the fused
    /// heads op reads them as rows, it is not a `linear`.
    pub fn heads(&self, prefix: &str, dim: usize, classes: usize) -> Result<HeadsP<B>> {
        let raw = |name: &str, n_out: usize| -> Result<LinearP<B>> {
            Ok(LinearP {
                w: self.buf(&format!("{prefix}.{name}.weight"), n_out * dim)?,
                b: self.buf(&format!("{prefix}.{name}.bias"), n_out)?,
                n_in: dim,
                n_out,
            })
        };
        Ok(HeadsP {
            direction: raw("direction", classes)?,
            confidence: raw("confidence", 1)?,
            expected_return: raw("expected_return", 1)?,
        })
    }
}

pub struct LinearP<B: Backend> {
    pub w: B::Buf,
    pub b: B::Buf,
    pub n_in: usize,
    pub n_out: usize,
}

impl<B: Backend> LinearP<B> {
    pub fn forward(&self, be: &B, x: &B::Buf, y: &mut B::Buf, rows: usize, epi: Epilogue) -> Result<()> {
        be.linear(x, &self.w, &self.b, y, LinearShape { rows, n_in: self.n_in, n_out: self.n_out }, epi)
    }
}

/// A chain of "same" Conv1d + GELU layers over channels-last sequences,
/// ping-ponging between two scratch buffers; returns which holds the result
/// (`false`: `a`, `true`: `b`), or `None` for an empty chain.
pub fn conv_chain<B: Backend>(
    be: &B,
    convs: &[ConvWeights<B>],
    input: &B::Buf,
    a: &mut B::Buf,
    b: &mut B::Buf,
    samples: usize,
    len: usize,
) -> Result<Option<bool>> {
    let mut in_b = None;
    for conv in convs {
        let shape = ConvShape::dense(samples, len, conv.c_in, conv.c_out, conv.kernel);
        match in_b {
            None => be.conv1d(input, &conv.w, &conv.b, a, shape, true)?,
            Some(false) => be.conv1d(a, &conv.w, &conv.b, b, shape, true)?,
            Some(true) => be.conv1d(b, &conv.w, &conv.b, a, shape, true)?,
        }
        in_b = Some(in_b == Some(false));
    }
    Ok(in_b)
}

pub struct NormP<B: Backend> {
    pub w: B::Buf,
    pub b: B::Buf,
    pub dim: usize,
}

impl<B: Backend> NormP<B> {
    pub fn forward(&self, be: &B, x: &B::Buf, y: &mut B::Buf, rows: usize) -> Result<()> {
        be.layernorm(x, &self.w, &self.b, y, rows, self.dim)
    }
}

pub struct HeadsP<B: Backend> {
    pub direction: LinearP<B>,
    pub confidence: LinearP<B>,
    pub expected_return: LinearP<B>,
}

impl<B: Backend> HeadsP<B> {
    pub fn forward(&self, be: &B, z: &B::Buf, out: &mut HeadsBufs<B>, batch: usize) -> Result<()> {
        let p = HeadsRef {
            direction_w: &self.direction.w,
            direction_b: &self.direction.b,
            confidence_w: &self.confidence.w,
            confidence_b: &self.confidence.b,
            return_w: &self.expected_return.w,
            return_b: &self.expected_return.b,
            classes: self.direction.n_out,
        };
        let o = HeadsOut {
            logits: &mut out.logits,
            confidence: &mut out.confidence,
            expected_return: &mut out.expected_return,
        };
        be.heads(z, p, o, batch, self.direction.n_in)
    }
}

/// Device buffers of one set of heads' outputs at a batch size.
pub struct HeadsBufs<B: Backend> {
    pub logits: B::Buf,
    pub confidence: B::Buf,
    pub expected_return: B::Buf,
}

impl<B: Backend> HeadsBufs<B> {
    pub fn refs(&self) -> [&B::Buf; 3] {
        [&self.logits, &self.confidence, &self.expected_return]
    }

    pub fn new(be: &B, batch: usize, classes: usize) -> Result<Self> {
        Ok(HeadsBufs {
            logits: be.alloc(batch * classes)?,
            confidence: be.alloc(batch)?,
            expected_return: be.alloc(batch)?,
        })
    }
}

/// A pre-norm transformer block (docs/models.md "Block").
pub struct BlockP<B: Backend> {
    pub norm1: NormP<B>,
    pub qkv: LinearP<B>,
    pub proj: LinearP<B>,
    pub norm2: NormP<B>,
    pub fc1: LinearP<B>,
    pub fc2: LinearP<B>,
    pub heads: usize,
}

/// Scratch activations of a block at one batch size; shared by all the blocks
/// of a model at inference (each block's inputs live in the residual stream).
pub struct BlockActs<B: Backend> {
    pub h: B::Buf,
    pub qkv: B::Buf,
    pub att: B::Buf,
    pub mlp: B::Buf,
}

impl<B: Backend> BlockActs<B> {
    pub fn new(be: &B, rows: usize, dim: usize, hidden: usize) -> Result<Self> {
        Ok(BlockActs {
            h: be.alloc(rows * dim)?,
            qkv: be.alloc(rows * 3 * dim)?,
            att: be.alloc(rows * dim)?,
            mlp: be.alloc(rows * hidden)?,
        })
    }
}

impl<B: Backend> BlockP<B> {
    /// `x = x + proj(attn(norm1(x)))`; `x = x + fc2(GELU(fc1(norm2(x))))`, in place.
    pub fn forward(&self, be: &B, x: &mut B::Buf, a: &mut BlockActs<B>, batch: usize, tokens: usize) -> Result<()> {
        let rows = batch * tokens;
        self.attend(be, x, a, batch, tokens)?;
        self.proj.forward(be, &a.att, x, rows, Epilogue::Accumulate)?;
        self.mlp(be, x, a, rows)
    }

    /// The block's output for each sample's first token only, into `x0
    /// (batch, dim)`: what a model that pools the first token (MPD's CLS) needs
    /// of its last block. Every token still feeds the attention (as keys and
    /// values), but the projection and the MLP, most of the block's work, run
    /// on one row per sample instead of `tokens`. Uses `a`'s buffers; `x` is
    /// left as the block's input.
    pub fn forward_first_token(
        &self,
        be: &B,
        x: &B::Buf,
        x0: &mut B::Buf,
        a: &mut BlockActs<B>,
        batch: usize,
        tokens: usize,
    ) -> Result<()> {
        let dim = self.norm1.dim;
        self.attend(be, x, a, batch, tokens)?;
        be.pool(x, x0, batch, tokens, dim, Pool::First)?;
        // The first token's attention output, gathered into the rows of `h` (free again).
        be.pool(&a.att, &mut a.h, batch, tokens, dim, Pool::First)?;
        self.proj.forward(be, &a.h, x0, batch, Epilogue::Accumulate)?;
        self.mlp(be, x0, a, batch)
    }

    /// `att = attn(norm1(x))` (`h` and `qkv` as scratch).
    fn attend(&self, be: &B, x: &B::Buf, a: &mut BlockActs<B>, batch: usize, tokens: usize) -> Result<()> {
        let rows = batch * tokens;
        let dim = self.norm1.dim;
        self.norm1.forward(be, x, &mut a.h, rows)?;
        self.qkv.forward(be, &a.h, &mut a.qkv, rows, Epilogue::None)?;
        let shape = AttentionShape { batch, tokens, heads: self.heads, head_dim: dim / self.heads };
        be.attention(&a.qkv, &mut a.att, shape)
    }

    /// `x += fc2(GELU(fc1(norm2(x))))` over `rows` rows.
    fn mlp(&self, be: &B, x: &mut B::Buf, a: &mut BlockActs<B>, rows: usize) -> Result<()> {
        self.norm2.forward(be, x, &mut a.h, rows)?;
        self.fc1.forward(be, &a.h, &mut a.mlp, rows, Epilogue::Gelu)?;
        self.fc2.forward(be, &a.mlp, x, rows, Epilogue::Accumulate)
    }
}
