//! The `Backend` trait: the ops the models are written in.
//!
//! Each op mirrors one fused kernel family of `kernels/` (linear with its
//! epilogue, layernorm, attention, patch embedding, conv1d, the multi-scale
//! conv, the LSTM recurrence, pooling, the heads), so the GPU backend
//! implements the same list and a model's forward is a straight list of ops
//! over preallocated buffers, written once for every backend.
//!
//! Layout conventions shared by every backend:
//! - activations are row-major with the feature axis last ("channels-last"):
//!   a token sequence is `(batch, tokens, features)`;
//! - the weight of every matrix product (a `Linear`, a conv's `(c_out, c_in·k)`
//!   matrix, the patch projection) is uploaded once through `prepare_linear`,
//!   which stores it in the layout the backend's kernels read fastest; other
//!   weights are in PyTorch's layout, except where a model documents a
//!   load-time relabeling;
//! - every op writes its whole output (no op relies on a zeroed destination)
//!   except `Epilogue::Accumulate`, which adds into it.

pub mod cpu;
pub mod gpu;
pub mod ops;
pub mod select;

use crate::error::Result;
use ops::elementwise::{map_cpu, map_gpu, Map};

/// Why a buffer is refused, in the same words on every backend.
pub(crate) fn short_buffer(op: &str, what: &str, have: usize, need: usize) -> String {
    format!("{op}: buffer {what} holds {have} values, needs {need}")
}

/// What a linear op does after the matrix product and bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `y = x Wᵀ + b`
    None,
    /// `y = GELU(x Wᵀ + b)` (exact, erf form)
    Gelu,
    /// `y += x Wᵀ + b` (a residual branch added into the stream)
    Accumulate,
}

/// `y (rows, n_out) = x (rows, n_in) · Wᵀ` with `W (n_out, n_in)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub n_in: usize,
    pub n_out: usize,
}

/// Softmax attention over a fused `qkv (batch, tokens, 3·heads·head_dim)` buffer,
/// laid out per token as `[q | k | v]`, each split into heads of consecutive
/// features; the output is `(batch, tokens, heads·head_dim)`, heads in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// ViT patch embedding of a `(batch, height, width)` single-channel image into
/// `(batch, tokens, dim)`, with an optional class token first and a learned
/// position embedding added to every token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub patch_h: usize,
    pub patch_w: usize,
    pub dim: usize,
    pub cls_token: bool,
}

impl PatchShape {
    pub fn patches(&self) -> usize {
        (self.height / self.patch_h) * (self.width / self.patch_w)
    }
    pub fn tokens(&self) -> usize {
        self.patches() + usize::from(self.cls_token)
    }
}

/// A "same"-padded, stride-1 Conv1d over channels-last sequences:
/// `x (samples, len, c_in)` → `y (samples, len, out_stride)`, writing the
/// `c_out` channels at column offset `out_offset` of each output row (so branch
/// outputs can be concatenated in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub samples: usize,
    pub len: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub out_stride: usize,
    pub out_offset: usize,
}

impl ConvShape {
    /// A conv whose output rows hold exactly its own channels.
    pub fn dense(samples: usize, len: usize, c_in: usize, c_out: usize, kernel: usize) -> Self {
        ConvShape { samples, len, c_in, c_out, kernel, out_stride: c_out, out_offset: 0 }
    }
}

/// One LSTM layer's recurrence over `(batch, steps)`, given the input
/// projection `gx (batch, steps, 4·hidden)` that already holds
/// `x W_ihᵀ + b_ih + b_hh`; gate order input, forget, cell, output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmShape {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
}

/// How a `(batch, tokens, dim)` sequence is reduced to `(batch, dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    First,
    Mean,
    Last,
}

/// Adds `src` to every row group of `x (outer, inner, dim)`: `src` is
/// `(outer, dim)` when `per_outer` (one vector per sample, broadcast over the
/// inner axis) and `(inner, dim)` otherwise (one table shared by all samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastShape {
    pub outer: usize,
    pub inner: usize,
    pub dim: usize,
    pub per_outer: bool,
}

/// The three output heads' parameters, by reference, in PyTorch's
/// `(n_out, dim)` layout (not prepared: the heads op reads rows).
pub struct HeadsRef<'a, B: Backend + ?Sized> {
    pub direction_w: &'a B::Buf,
    pub direction_b: &'a B::Buf,
    pub confidence_w: &'a B::Buf,
    pub confidence_b: &'a B::Buf,
    pub return_w: &'a B::Buf,
    pub return_b: &'a B::Buf,
    pub classes: usize,
}

/// The three output heads' destinations: `logits (batch, classes)`,
/// `confidence (batch, 1)` through a sigmoid, `expected_return (batch, 1)`.
pub struct HeadsOut<'a, B: Backend + ?Sized> {
    pub logits: &'a mut B::Buf,
    pub confidence: &'a mut B::Buf,
    pub expected_return: &'a mut B::Buf,
}

/// A Conv1d's parameters: `w` prepared from PyTorch's `(c_out, c_in, kernel)`
/// by `prepare_conv`, `b (c_out)`.
pub struct ConvWeights<B: Backend + ?Sized> {
    pub w: B::Buf,
    pub b: B::Buf,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
}

/// How matrix-product weights are stored and multiplied. Activations,
/// norms, attention and the cell updates stay f32 in every mode. The GPU
/// backends take f32, bf16 and f16; the CPU takes f32 and, where the CPU has
/// AVX512_BF16, bf16, and where it has AVX512_VNNI, int8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// f32 weights, FMA GEMM: docs/models.md's f32 tolerances.
    #[default]
    F32,
    /// bf16 weights (half the memory traffic), bf16 products with f32
    /// accumulation (tensor cores on a GPU, `vdpbf16ps` on a CPU):
    /// docs/models.md's f16/bf16 tolerances.
    Bf16,
    /// IEEE f16 weights and tensor-core products, f32 accumulation: three
    /// more mantissa bits than bf16 and a range to ±65504, which weights and
    /// normalized activations stay well inside; same tolerances.
    F16,
    /// int8 linear, conv and recurrent weights (a quarter of f32's bytes),
    /// quantized per output channel at load, activations per row (per
    /// sample for a conv) as they run, exact i32 sums (`vpdpbusd` on a CPU
    /// with AVX512_VNNI, backend/cpu/int8.rs; `mma.sync` u8 × s8 on a GPU,
    /// kernels/gemm_tile_int8.cuh, whose recurrence stays f32):
    /// docs/models.md's int8 bounds. Inference only.
    Int8,
}

impl Precision {
    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision a GPU backend trains at: docs/training.md's `use_amp` means
    /// bf16 products in the forward (f32 master weights); otherwise f32.
    pub fn for_training(use_amp: bool) -> Self {
        if use_amp {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

pub trait Backend: Send + Sync {
    /// A buffer of f32 values in this backend's memory.
    type Buf: Send + Sync;
    /// A recorded sequence of ops (a CUDA graph); `()` where nothing records.
    type Graph: Send + Sync;

    fn name(&self) -> &'static str;

    /// A buffer of `len` zeros.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// Uploads a matrix-product weight given in PyTorch's `(n_out, n_in)`
    /// layout, in whatever layout this backend's `linear` and `patch_embed`
    /// expect.
    fn prepare_linear(&self, w: &[f32], n_out: usize, n_in: usize) -> Result<Self::Buf>;
    /// Uploads a Conv1d weight given in PyTorch's `(c_out, c_in, kernel)`
    /// layout, in whatever layout `conv1d` and `multiscale_conv` expect
    /// (`prepare_linear`'s of the `(c_out, c_in·kernel)` matrix, or the CPU's
    /// tap-major bf16 pairs).
    fn prepare_conv(&self, w: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Result<Self::Buf>;
    /// Uploads an LSTM layer's recurrent weight `W_hh` given in PyTorch's
    /// `(4·hidden, hidden)` layout, in whatever layout `lstm` expects.
    fn prepare_recurrent(&self, w_hh: &[f32], hidden: usize) -> Result<Self::Buf>;
    /// Overwrites the start of `dst` with `src`.
    fn write(&self, dst: &mut Self::Buf, src: &[f32]) -> Result<()>;
    /// Copies the start of `src` into all of `dst`.
    fn read(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;

    /// `x[r, i] = (x[r, i] − mean[i]) / std[i]` over `(rows, dim)`; `std` must
    /// already have its zeros replaced by ones.
    fn standardize(&self, x: &mut Self::Buf, mean: &Self::Buf, std: &Self::Buf, rows: usize, dim: usize) -> Result<()>;

    fn linear(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
        shape: LinearShape,
        epilogue: Epilogue,
    ) -> Result<()>;

    /// LayerNorm over the last axis of `(rows, dim)`, eps 1e-5, biased variance.
    fn layernorm(
        &self,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        dim: usize,
    ) -> Result<()>;

    fn attention(&self, qkv: &Self::Buf, out: &mut Self::Buf, shape: AttentionShape) -> Result<()>;

    /// `w` prepared from `(dim, patch_h·patch_w)`, `b (dim)`, `cls (dim)` when `shape.cls_token`,
    /// `pos (tokens, dim)`; writes `out (batch, tokens, dim)`.
    #[allow(clippy::too_many_arguments)]
    fn patch_embed(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        cls: Option<&Self::Buf>,
        pos: &Self::Buf,
        out: &mut Self::Buf,
        shape: PatchShape,
    ) -> Result<()>;

    /// Conv1d, optionally GELU; `w` is prepared from PyTorch's `(c_out, c_in, kernel)`
    /// seen as a `(c_out, c_in·kernel)` matrix.
    fn conv1d(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
        shape: ConvShape,
        gelu: bool,
    ) -> Result<()>;

    /// Every branch over the same `x (samples, len, dim)`, each followed by
    /// GELU, concatenated on channels in branch order into
    /// `y (samples, len, branches·dim)`.
    fn multiscale_conv(
        &self,
        x: &Self::Buf,
        branches: &[ConvWeights<Self>],
        y: &mut Self::Buf,
        samples: usize,
        len: usize,
        dim: usize,
    ) -> Result<()>;

    /// The recurrence of one LSTM layer from `h0 = c0 = 0`; writes every step's
    /// hidden state into `h_seq (batch, steps, hidden)`. `w_hh` comes from
    /// `prepare_recurrent`.
    fn lstm(&self, gx: &Self::Buf, w_hh: &Self::Buf, h_seq: &mut Self::Buf, shape: LstmShape) -> Result<()>;

    fn broadcast_add(&self, x: &mut Self::Buf, src: &Self::Buf, shape: BroadcastShape) -> Result<()>;

    fn pool(
        &self,
        x: &Self::Buf,
        out: &mut Self::Buf,
        batch: usize,
        tokens: usize,
        dim: usize,
        how: Pool,
    ) -> Result<()>;

    fn heads(
        &self,
        z: &Self::Buf,
        p: HeadsRef<'_, Self>,
        out: HeadsOut<'_, Self>,
        batch: usize,
        dim: usize,
    ) -> Result<()>;

    /// Starts recording the ops that follow instead of running them, until
    /// `end_capture`; `Ok(false)` when this backend does not record (the CPU:
    /// an op is already just a function call), and the caller runs the ops.
    /// Between the two, only compute ops: no `alloc`, `upload`, `write`, `read`.
    fn begin_capture(&self) -> Result<bool>;
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Runs a recording again on the buffers' current contents; every buffer
    /// it was recorded with must still be alive and unmoved.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}

/// One AdamW update (docs/training.md): `g = grad_scale · grad`;
/// `m = β1 m + (1−β1) g`; `v = β2 v + (1−β2) g²`;
/// `p −= lr · (weight_decay · p + m̂ / (√v̂ + eps))` with the bias-corrected
/// `m̂ = m / (1−β1^step)`, `v̂ = v / (1−β2^step)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 0 for the tensors docs/training.md exempts (biases, LayerNorm, embeddings).
    pub weight_decay: f32,
    /// 1-based, for the bias correction.
    pub step: u32,
    /// Applied to the gradient first: the mean over accumulated micro-batches
    /// and the global-norm clip factor, folded into one multiplier.
    pub grad_scale: f32,
}

/// The gradients of one set of heads' parameters, PyTorch layout; the
/// backward adds into them.
pub struct HeadsGrads<'a, B: Backend + ?Sized> {
    pub direction_w: &'a mut B::Buf,
    pub direction_b: &'a mut B::Buf,
    pub confidence_w: &'a mut B::Buf,
    pub confidence_b: &'a mut B::Buf,
    pub return_w: &'a mut B::Buf,
    pub return_b: &'a mut B::Buf,
}

/// docs/training.md's multi-task loss of one set of heads: the weights of its three
/// terms, and the factor applied to every gradient (`1 / batch` for the mean
/// over the batch, times `1 / sets` for TLOB's horizons).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadsLoss {
    pub direction: f32,
    pub confidence: f32,
    pub ret: f32,
    pub grad_scale: f32,
}

/// One set of heads' targets over a batch: `class (batch)` holds the class
/// ids as f32 (0, 1, 2), `ret (batch)` the return target.
pub struct HeadsTargets<'a, B: Backend + ?Sized> {
    pub class: &'a B::Buf,
    pub ret: &'a B::Buf,
}

/// Declares `Train` and its two implementations from one list: each op's
/// signature once, with the one call each backend makes (its op module's
/// function, backend/ops/). `impl Train for Cpu` and `impl Train for Gpu<D>`
/// are nothing but these calls.
macro_rules! train_ops {
    ($(#[$trait_meta:meta])* pub trait Train: Backend {
        $(
            $(#[$meta:meta])*
            fn $name:ident(&$this:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty {
                cpu: $cpu:expr,
                gpu: $gpu:expr $(,)?
            }
        )*
    }) => {
        $(#[$trait_meta])*
        pub trait Train: Backend {
            $( $(#[$meta])* fn $name(&$this $(, $arg: $ty)*) -> $ret; )*
        }

        impl Train for cpu::Cpu {
            $( fn $name(&$this $(, $arg: $ty)*) -> $ret { $cpu } )*
        }

        impl<D: gpu::Device> Train for gpu::Gpu<D> {
            $( fn $name(&$this $(, $arg: $ty)*) -> $ret { $gpu } )*
        }
    };
}

train_ops! {
    /// The ops training needs beyond the forward: backward passes and the
    /// optimizer. A separate trait so a backend without them cannot be handed
    /// to the trainer by mistake (the CPU and `Gpu<D>` implement both).
    ///
    /// Backward conventions: weights are passed in PyTorch's layout (the master
    /// copy, not `prepare_linear`'s); parameter gradients are always added into
    /// (so accumulation over micro-batches is free); an input gradient is written
    /// unless the op says it adds. Reductions run in a fixed order, so the same
    /// inputs give bit-identical gradients whatever the thread scheduling.
    pub trait Train: Backend {
        /// The 16-bit format the forward's matrix products use while training
        /// (docs/training.md's `use_amp`), or `None` when everything runs in f32.
        fn mixed_precision(&self) -> Option<&'static str> {
            cpu: (self.precision() == Precision::Bf16).then_some("bf16"),
            gpu: match self.precision() {
                Precision::F32 => None,
                Precision::Bf16 => Some("bf16"),
                Precision::F16 => Some("f16"),
                // Inference only: prepare_linear_from refuses int8, so a
                // trainer handed an int8 GPU stops at its first step.
                Precision::Int8 => None,
            },
        }

        /// `prepare_linear` from a weight already on this backend (PyTorch's
        /// `(n_out, n_in)` layout) into an existing buffer: re-deriving the
        /// layout after an optimizer step without allocating or leaving the device.
        fn prepare_linear_from(&self, w: &Self::Buf, n_out: usize, n_in: usize, dst: &mut Self::Buf) -> Result<()> {
            cpu: ops::linear::prepare_from_cpu(self, w, n_out, n_in, dst),
            gpu: ops::linear::prepare_from_gpu(self, w, n_out, n_in, dst),
        }
        /// `prepare_conv` from a Conv1d weight already on this backend
        /// (PyTorch's `(c_out, c_in, k)`) into an existing buffer.
        fn prepare_conv_from(&self, w: &Self::Buf, c_out: usize, c_in: usize, k: usize, dst: &mut Self::Buf) -> Result<()> {
            cpu: ops::conv1d::prepare_from_cpu(self, w, c_out, c_in, k, dst),
            gpu: ops::conv1d::prepare_from_gpu(self, w, c_out, c_in, k, dst),
        }
        /// `prepare_recurrent` from a `W_hh` already on this backend into an existing buffer.
        fn prepare_recurrent_from(&self, w_hh: &Self::Buf, hidden: usize, dst: &mut Self::Buf) -> Result<()> {
            cpu: ops::lstm::prepare_from_cpu(self, w_hh, hidden, dst),
            gpu: ops::lstm::prepare_from_gpu(self, w_hh, hidden, dst),
        }
        /// `dst (outer, cols, rows) = src (outer, rows, cols)` with the last two
        /// axes swapped, or `+=` when `accumulate` (TLOB's relabeling of
        /// `spatial.proj` between PyTorch's and our flattening, and back for its gradient).
        #[allow(clippy::too_many_arguments)]
        fn swap_last_axes(
            &self,
            src: &Self::Buf,
            dst: &mut Self::Buf,
            outer: usize,
            rows: usize,
            cols: usize,
            accumulate: bool,
        ) -> Result<()> {
            cpu: ops::swap_last_axes::swap_cpu(src, dst, outer, rows, cols, accumulate),
            gpu: ops::swap_last_axes::swap_gpu(self, "swap_last_axes", src, dst, outer, rows, cols, accumulate),
        }

        /// `dst[..len] = src[..len]`.
        fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf, len: usize) -> Result<()> {
            cpu: map_cpu(Map::Copy, Some(src), dst, len),
            gpu: map_gpu(self, Map::Copy, Some(src), dst, len),
        }
        /// `dst[..len] += src[..len]`.
        fn add(&self, dst: &mut Self::Buf, src: &Self::Buf, len: usize) -> Result<()> {
            cpu: map_cpu(Map::Add, Some(src), dst, len),
            gpu: map_gpu(self, Map::Add, Some(src), dst, len),
        }
        /// `x[..len] *= m[..len]` (applying a dropout mask, forward or backward).
        fn mul(&self, x: &mut Self::Buf, m: &Self::Buf, len: usize) -> Result<()> {
            cpu: map_cpu(Map::Mul, Some(m), x, len),
            gpu: map_gpu(self, Map::Mul, Some(m), x, len),
        }
        /// `pre = x Wᵀ + b` and `y = GELU(pre)` (the training forward keeps
        /// the pre-activation for the backward): the same bits as `linear`
        /// without an epilogue, then `gelu`.
        fn linear_gelu_keep(
            &self,
            x: &Self::Buf,
            w: &Self::Buf,
            b: &Self::Buf,
            pre: &mut Self::Buf,
            y: &mut Self::Buf,
            shape: LinearShape,
        ) -> Result<()> {
            cpu: ops::linear::forward_keep_cpu(self, x, w, b, pre, y, shape),
            gpu: ops::linear::forward_keep_gpu(self, x, w, b, pre, y, shape),
        }
        /// `pre = conv1d(x)` and `y = GELU(pre)` over a dense output
        /// (`out_stride = c_out`, `out_offset = 0`): the same bits as
        /// `conv1d` without GELU, then `gelu`.
        fn conv1d_gelu_keep(
            &self,
            x: &Self::Buf,
            w: &Self::Buf,
            b: &Self::Buf,
            pre: &mut Self::Buf,
            y: &mut Self::Buf,
            shape: ConvShape,
        ) -> Result<()> {
            cpu: ops::conv1d::forward_keep_cpu(self, x, w, b, pre, y, shape),
            gpu: ops::conv1d::forward_keep_gpu(self, x, w, b, pre, y, shape),
        }
        /// `y = GELU(x)` elementwise (the training forward keeps `x`).
        fn gelu(&self, x: &Self::Buf, y: &mut Self::Buf, len: usize) -> Result<()> {
            cpu: map_cpu(Map::Gelu, Some(x), y, len),
            gpu: map_gpu(self, Map::Gelu, Some(x), y, len),
        }
        /// `dy *= GELU'(pre)`: turns the gradient of a GELU's output into that of its input.
        fn gelu_backward(&self, pre: &Self::Buf, dy: &mut Self::Buf, len: usize) -> Result<()> {
            cpu: map_cpu(Map::GeluBackward, Some(pre), dy, len),
            gpu: map_gpu(self, Map::GeluBackward, Some(pre), dy, len),
        }
        /// An inverted-dropout mask: each value is `1 / (1 − p)` with probability
        /// `1 − p`, else 0, drawn from ChaCha8 seeded with `seed` on stream `stream`.
        fn dropout_mask(&self, mask: &mut Self::Buf, len: usize, p: f32, seed: u64, stream: u64) -> Result<()> {
            cpu: ops::dropout::mask_cpu(mask, len, p, seed, stream),
            gpu: ops::dropout::mask_gpu(self, mask, len, p, seed, stream),
        }

        /// Backward of `y = x Wᵀ + b` with `w (n_out, n_in)`: `dw += dyᵀ x`,
        /// `db += Σ_rows dy` when given, and `dx = dy W` (`+=` when
        /// `accumulate_dx`) when given.
        #[allow(clippy::too_many_arguments)]
        fn linear_backward(
            &self,
            x: &Self::Buf,
            w: &Self::Buf,
            dy: &Self::Buf,
            dx: Option<&mut Self::Buf>,
            dw: &mut Self::Buf,
            db: Option<&mut Self::Buf>,
            shape: LinearShape,
            accumulate_dx: bool,
        ) -> Result<()> {
            cpu: ops::linear::backward_cpu(self, x, w, dy, dx, dw, db, shape, accumulate_dx),
            gpu: ops::linear::backward_gpu(self, x, w, dy, dx, dw, db, shape, accumulate_dx),
        }

        /// `db[..n] += Σ_rows dy (rows, n)`.
        fn bias_backward(&self, dy: &Self::Buf, db: &mut Self::Buf, rows: usize, n: usize) -> Result<()> {
            cpu: ops::linear::bias_backward_cpu(dy, db, rows, n),
            gpu: ops::linear::bias_backward_gpu(self, dy, db, rows, n),
        }

        /// Backward of `layernorm`, statistics recomputed from `x`: `dx += …`,
        /// `dgamma += …`, `dbeta += …`.
        #[allow(clippy::too_many_arguments)]
        fn layernorm_backward(
            &self,
            x: &Self::Buf,
            gamma: &Self::Buf,
            dy: &Self::Buf,
            dx: &mut Self::Buf,
            dgamma: &mut Self::Buf,
            dbeta: &mut Self::Buf,
            rows: usize,
            dim: usize,
        ) -> Result<()> {
            cpu: ops::layernorm::backward_cpu(x, gamma, dy, dx, dgamma, dbeta, rows, dim),
            gpu: ops::layernorm::backward_gpu(self, x, gamma, dy, dx, dgamma, dbeta, rows, dim),
        }

        /// `attention`, also keeping the softmax probabilities
        /// `probs (batch, heads, tokens, tokens)` for the backward.
        fn attention_train(
            &self,
            qkv: &Self::Buf,
            out: &mut Self::Buf,
            probs: &mut Self::Buf,
            shape: AttentionShape,
        ) -> Result<()> {
            cpu: ops::attention::train_cpu(qkv, out, probs, shape),
            gpu: ops::attention::train_gpu(self, qkv, out, probs, shape),
        }

        /// Backward of `attention` from the kept probabilities: writes `dqkv`;
        /// `scratch` has the size of `probs` (the probabilities' gradient).
        fn attention_backward(
            &self,
            qkv: &Self::Buf,
            probs: &Self::Buf,
            dout: &Self::Buf,
            dqkv: &mut Self::Buf,
            scratch: &mut Self::Buf,
            shape: AttentionShape,
        ) -> Result<()> {
            cpu: ops::attention::backward_cpu(qkv, probs, dout, dqkv, scratch, shape),
            gpu: ops::attention::backward_gpu(self, qkv, probs, dout, dqkv, scratch, shape),
        }

        /// Backward of `patch_embed`: `dw (dim, patch_h·patch_w) += …`, `db += …`,
        /// `dcls += …` (with a class token), `dpos (tokens, dim) += …`.
        #[allow(clippy::too_many_arguments)]
        fn patch_embed_backward(
            &self,
            x: &Self::Buf,
            dout: &Self::Buf,
            dw: &mut Self::Buf,
            db: &mut Self::Buf,
            dcls: Option<&mut Self::Buf>,
            dpos: &mut Self::Buf,
            shape: PatchShape,
        ) -> Result<()> {
            cpu: ops::patch_embed::backward_cpu(x, dout, dw, db, dcls, dpos, shape),
            gpu: ops::patch_embed::backward_gpu(self, x, dout, dw, db, dcls, dpos, shape),
        }

        /// Backward of a `conv1d` without its activation (`dy` is the gradient of
        /// the pre-activation, read at `shape.out_offset` of rows of
        /// `shape.out_stride`); `w` is PyTorch's `(c_out, c_in, k)`; `dw += …`,
        /// `db += …`, `dx += …` when given.
        #[allow(clippy::too_many_arguments)]
        fn conv1d_backward(
            &self,
            x: &Self::Buf,
            w: &Self::Buf,
            dy: &Self::Buf,
            dx: Option<&mut Self::Buf>,
            dw: &mut Self::Buf,
            db: &mut Self::Buf,
            shape: ConvShape,
        ) -> Result<()> {
            cpu: ops::conv1d::backward_cpu(self, x, w, dy, dx, dw, db, shape),
            gpu: ops::conv1d::backward_gpu(self, x, w, dy, dx, dw, db, shape),
        }

        /// The LSTM recurrence of `lstm`, also keeping every step's cell state
        /// `c_seq (batch, steps, hidden)` and activated gates
        /// `gates (batch, steps, 4·hidden)` (i, f, g, o) for the backward.
        fn lstm_train(
            &self,
            gx: &Self::Buf,
            w_hh: &Self::Buf,
            h_seq: &mut Self::Buf,
            c_seq: &mut Self::Buf,
            gates: &mut Self::Buf,
            shape: LstmShape,
        ) -> Result<()> {
            cpu: ops::lstm::train_cpu(self, gx, w_hh, h_seq, c_seq, gates, shape),
            gpu: ops::lstm::train_gpu(self, gx, w_hh, h_seq, c_seq, gates, shape),
        }

        /// Backpropagation through time of one LSTM layer: from the gradient of
        /// every step's output `dh_seq`, writes the gradient of the gate
        /// pre-activations `dgx (batch, steps, 4·hidden)` (which is also the
        /// gradient of both biases and, through `W_ih`, of the input) and adds
        /// `dw_hh (4·hidden, hidden) += …`. `w_hh` in PyTorch's layout.
        #[allow(clippy::too_many_arguments)]
        fn lstm_backward(
            &self,
            w_hh: &Self::Buf,
            h_seq: &Self::Buf,
            c_seq: &Self::Buf,
            gates: &Self::Buf,
            dh_seq: &Self::Buf,
            dgx: &mut Self::Buf,
            dw_hh: &mut Self::Buf,
            shape: LstmShape,
        ) -> Result<()> {
            cpu: ops::lstm::backward_cpu(self, w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, shape),
            gpu: ops::lstm::backward_gpu(self, w_hh, h_seq, c_seq, gates, dh_seq, dgx, dw_hh, shape),
        }

        /// Backward of `broadcast_add` for its source: `dsrc += Σ dx` over the broadcast axis.
        fn broadcast_add_backward(&self, dx: &Self::Buf, dsrc: &mut Self::Buf, shape: BroadcastShape) -> Result<()> {
            cpu: ops::broadcast_add::backward_cpu(dx, dsrc, shape),
            gpu: ops::broadcast_add::backward_gpu(self, dx, dsrc, shape),
        }

        /// Backward of `pool`: writes all of `dx (batch, tokens, dim)`.
        fn pool_backward(
            &self,
            dout: &Self::Buf,
            dx: &mut Self::Buf,
            batch: usize,
            tokens: usize,
            dim: usize,
            how: Pool,
        ) -> Result<()> {
            cpu: ops::pool::backward_cpu(dout, dx, batch, tokens, dim, how),
            gpu: ops::pool::backward_gpu(self, dout, dx, batch, tokens, dim, how),
        }

        /// The heads' forward (as `heads`) and docs/training.md's loss of one set of
        /// heads; returns the loss summed over the batch (not yet averaged).
        /// With `grads`, adds `loss.grad_scale ·` the gradient into the heads'
        /// parameter gradients and into `dz (batch, dim)`.
        #[allow(clippy::too_many_arguments)]
        fn heads_loss(
            &self,
            z: &Self::Buf,
            p: HeadsRef<'_, Self>,
            out: HeadsOut<'_, Self>,
            targets: HeadsTargets<'_, Self>,
            loss: HeadsLoss,
            grads: Option<(HeadsGrads<'_, Self>, &mut Self::Buf)>,
            batch: usize,
            dim: usize,
        ) -> Result<f64> {
            cpu: ops::heads::loss_cpu(z, p, out, targets, loss, grads, batch, dim),
            gpu: ops::heads::loss_gpu(self, z, p, out, targets, loss, grads, batch, dim),
        }

        fn adamw(
            &self,
            param: &mut Self::Buf,
            grad: &Self::Buf,
            m: &mut Self::Buf,
            v: &mut Self::Buf,
            len: usize,
            step: AdamWStep,
        ) -> Result<()> {
            cpu: ops::adamw::step_cpu(param, grad, m, v, len, step),
            gpu: ops::adamw::step_gpu(self, param, grad, m, v, len, step),
        }

        /// `Σ x²` over the first `len` values, accumulated in f64 (for the
        /// global gradient norm).
        fn sum_squares(&self, x: &Self::Buf, len: usize) -> Result<f64> {
            cpu: ops::sum_squares::sum_cpu(x, len),
            gpu: ops::sum_squares::sum_gpu(self, x, len),
        }

        /// Sets the first `len` values to `value` (zeroing gradients).
        fn fill(&self, x: &mut Self::Buf, len: usize, value: f32) -> Result<()> {
            cpu: map_cpu(Map::Fill(value), None, x, len),
            gpu: map_gpu(self, Map::Fill(value), None, x, len),
        }
    }
}
