//! `Gpu<D>`: the `Backend` ops as launches of the hand-written kernels in
//! `kernels/`, on any `Device`: `Emu` (the kernels compiled for the CPU with
//! the CUDA emulator, kernels/emu) or `Cuda` (a real GPU through cudarc).
//!
//! Each op checks its buffers' sizes, builds the kernel's parameter struct
//! (params.rs), picks the launch configuration (launch.rs) and launches; an
//! op moved to its own module (backend/ops/, e.g. `layernorm`) does the same
//! there, with `Gpu::check`, `Gpu::int`, `Gpu::err`, `Gpu::with_scratch`,
//! `launch_nonempty` and `f64_from_words` from here.
//! Weights of matrix products are prepared as `(n_in, n_out)` row-major, the
//! layout the GEMM tile (gemm_tile.cuh) reads with coalesced loads.

pub mod compile_check;
pub mod cuda;
pub mod device;
pub mod emu;
pub mod launch;
pub mod nvrtc;
pub mod params;
pub mod sources;

pub use cuda::Cuda;
pub use device::{Device, Kernel, LaunchConfig};
pub use emu::{Emu, EmuBuf, ThreadOrder};

use self::params::*;
use super::{
    AttentionShape, Backend, BroadcastShape, ConvShape, ConvWeights, Epilogue, HeadsOut, HeadsRef, LinearShape,
    LstmShape, PatchShape, Pool,
};
use crate::error::{Error, Result};

pub use super::Precision;

pub struct Gpu<D: Device> {
    dev: D,
    precision: Precision,
    /// Device memory the training ops reuse for what they hand back to the
    /// host (per-block partial sums, per-sample losses); grown on demand.
    scratch: std::sync::Mutex<Option<D::Mem>>,
}

impl<D: Device> Gpu<D> {
    pub fn new(dev: D) -> Self {
        Gpu { dev, precision: Precision::F32, scratch: std::sync::Mutex::new(None) }
    }

    /// The backend at `precision`: f32, bf16 or f16 (tensor-core products),
    /// or int8 (weights quantized at load, activations as each product
    /// runs: gemm_tile_int8.cuh).
    pub fn with_precision(dev: D, precision: Precision) -> Result<Self> {
        Ok(Gpu { precision, ..Gpu::new(dev) })
    }

    /// Runs `f` with the backend's scratch buffer, at least `len` values long
    /// (its contents are whatever the last user left).
    pub(crate) fn with_scratch<R>(&self, len: usize, f: impl FnOnce(&mut D::Mem) -> Result<R>) -> Result<R> {
        let mut slot = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|m| self.dev.len(m) < len) {
            *slot = Some(self.dev.alloc(len.max(1024))?);
        }
        f(slot.as_mut().expect("allocated above"))
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// f32 slots a prepared `(n_out, n_in)` weight occupies: bf16 pairs
    /// (k padded to even) share one slot; int8 quads (k padded to a
    /// multiple of 4) do, followed by a scale and a sum per output.
    pub(crate) fn weight_len(&self, n_out: usize, n_in: usize) -> usize {
        match self.precision {
            Precision::F32 => n_out * n_in,
            Precision::Bf16 | Precision::F16 => n_out * n_in.div_ceil(2),
            Precision::Int8 => n_out * n_in.div_ceil(4) + 2 * n_out,
        }
    }

    /// Launches a GEMM-family kernel in this backend's precision.
    pub(crate) fn launch_gemm<P>(&self, rows: usize, n: usize, branches: usize, p: P) -> Result<()>
    where
        P: KernelParams,
        Bf16<P>: KernelParams,
        F16<P>: KernelParams,
        Int8<P>: KernelParams,
    {
        match self.precision {
            Precision::F32 => launch_nonempty(self, launch::gemm(rows, n, branches)?, &p),
            Precision::Bf16 => launch_nonempty(self, launch::gemm_mma(rows, n, branches)?, &Bf16(p)),
            Precision::F16 => launch_nonempty(self, launch::gemm_mma(rows, n, branches)?, &F16(p)),
            // The int8 tile has the 16-bit tile's block and tile shape.
            Precision::Int8 => launch_nonempty(self, launch::gemm_mma(rows, n, branches)?, &Int8(p)),
        }
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Fails with a backend error unless `m` holds at least `need` values.
    pub(crate) fn check(&self, op: &str, what: &str, m: &D::Mem, need: usize) -> Result<()> {
        self.check_len(op, what, self.dev.len(m), need)
    }

    /// `check` for a length: a host slice an op uploads (the weights of the
    /// `prepare_*` ops), in the same words as the CPU's `check_len`.
    pub(crate) fn check_len(&self, op: &str, what: &str, have: usize, need: usize) -> Result<()> {
        if have < need {
            return Err(self.err(super::short_buffer(op, what, have, need)));
        }
        Ok(())
    }

    /// A backend error naming this device.
    pub(crate) fn err(&self, reason: String) -> Error {
        Error::Backend { backend: self.dev.name().into(), reason }
    }

    /// Sizes as the kernels' `int`s; the kernels index with 64-bit offsets
    /// where products may grow, but each dimension must fit.
    pub(crate) fn int(&self, op: &str, v: usize) -> Result<i32> {
        i32::try_from(v).map_err(|_| self.err(format!("{op}: size {v} exceeds the kernels' int range")))
    }
}

/// Launches unless the grid is empty (a zero-sized problem: nothing to
/// compute, and CUDA rejects empty grids). A free function, not a method:
/// the training modules and the op modules add methods to `Gpu` too.
pub(crate) fn launch_nonempty<D: Device, P: KernelParams>(gpu: &Gpu<D>, cfg: LaunchConfig, p: &P) -> Result<()> {
    if cfg.blocks() == 0 {
        return Ok(());
    }
    // SAFETY: every caller checked the buffers of `p` against its shape.
    unsafe { gpu.dev.launch(cfg, p) }
}

/// The f64 whose bits two f32 slots hold (low word first), as the kernels
/// write an f64 they hand back to the host (the sum of squares' partials,
/// the heads' loss).
pub(crate) fn f64_from_words(lo: f32, hi: f32) -> f64 {
    f64::from_bits(u64::from(lo.to_bits()) | u64::from(hi.to_bits()) << 32)
}

impl<D: Device> Backend for Gpu<D> {
    type Buf = D::Mem;
    type Graph = D::Graph;

    fn name(&self) -> &'static str {
        self.dev.name()
    }

    fn alloc(&self, len: usize) -> Result<D::Mem> {
        self.dev.alloc(len)
    }

    fn upload(&self, data: &[f32]) -> Result<D::Mem> {
        self.dev.upload(data)
    }

    fn prepare_recurrent(&self, w_hh: &[f32], hidden: usize) -> Result<D::Mem> {
        super::ops::lstm::prepare_gpu(self, w_hh, hidden)
    }

    fn prepare_conv(&self, w: &[f32], c_out: usize, c_in: usize, kernel: usize) -> Result<D::Mem> {
        super::ops::conv1d::prepare_gpu(self, w, c_out, c_in, kernel)
    }

    fn prepare_linear(&self, w: &[f32], n_out: usize, n_in: usize) -> Result<D::Mem> {
        super::ops::linear::prepare_gpu(self, w, n_out, n_in)
    }

    fn write(&self, dst: &mut D::Mem, src: &[f32]) -> Result<()> {
        self.check("write", "dst", dst, src.len())?;
        self.dev.write(dst, src)
    }

    fn read(&self, src: &D::Mem, dst: &mut [f32]) -> Result<()> {
        self.check("read", "src", src, dst.len())?;
        self.dev.read(src, dst)
    }

    fn standardize(&self, x: &mut D::Mem, mean: &D::Mem, std: &D::Mem, rows: usize, dim: usize) -> Result<()> {
        super::ops::standardize::forward_gpu(self, x, mean, std, rows, dim)
    }

    fn linear(&self, x: &D::Mem, w: &D::Mem, b: &D::Mem, y: &mut D::Mem, s: LinearShape, epi: Epilogue) -> Result<()> {
        super::ops::linear::forward_gpu(self, x, w, b, y, s, epi)
    }

    fn layernorm(&self, x: &D::Mem, g: &D::Mem, b: &D::Mem, y: &mut D::Mem, rows: usize, dim: usize) -> Result<()> {
        super::ops::layernorm::forward_gpu(self, x, g, b, y, rows, dim)
    }

    fn attention(&self, qkv: &D::Mem, out: &mut D::Mem, s: AttentionShape) -> Result<()> {
        super::ops::attention::forward_gpu(self, qkv, out, s)
    }

    fn patch_embed(
        &self,
        x: &D::Mem,
        w: &D::Mem,
        b: &D::Mem,
        cls: Option<&D::Mem>,
        pos: &D::Mem,
        out: &mut D::Mem,
        s: PatchShape,
    ) -> Result<()> {
        super::ops::patch_embed::forward_gpu(self, x, w, b, cls, pos, out, s)
    }

    fn conv1d(&self, x: &D::Mem, w: &D::Mem, b: &D::Mem, y: &mut D::Mem, s: ConvShape, gelu: bool) -> Result<()> {
        super::ops::conv1d::forward_gpu(self, x, w, b, y, s, gelu)
    }

    fn multiscale_conv(
        &self,
        x: &D::Mem,
        branches: &[ConvWeights<Self>],
        y: &mut D::Mem,
        samples: usize,
        len: usize,
        dim: usize,
    ) -> Result<()> {
        super::ops::conv1d::multiscale_gpu(self, x, branches, y, samples, len, dim)
    }

    fn lstm(&self, gx: &D::Mem, w_hh: &D::Mem, h_seq: &mut D::Mem, s: LstmShape) -> Result<()> {
        super::ops::lstm::forward_gpu(self, gx, w_hh, h_seq, s)
    }

    fn broadcast_add(&self, x: &mut D::Mem, src: &D::Mem, s: BroadcastShape) -> Result<()> {
        super::ops::broadcast_add::forward_gpu(self, x, src, s)
    }

    fn pool(&self, x: &D::Mem, out: &mut D::Mem, batch: usize, tokens: usize, dim: usize, how: Pool) -> Result<()> {
        super::ops::pool::forward_gpu(self, x, out, batch, tokens, dim, how)
    }

    fn heads(
        &self,
        z: &D::Mem,
        p: HeadsRef<'_, Self>,
        out: HeadsOut<'_, Self>,
        batch: usize,
        dim: usize,
    ) -> Result<()> {
        super::ops::heads::forward_gpu(self, z, p, out, batch, dim)
    }

    fn begin_capture(&self) -> Result<bool> {
        self.dev.begin_capture()?;
        Ok(true)
    }

    fn end_capture(&self) -> Result<D::Graph> {
        self.dev.end_capture()
    }

    fn replay(&self, graph: &D::Graph) -> Result<()> {
        self.dev.replay(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_words_round_trip() {
        for v in [0.0, 1.5, -3.25e-300, f64::MAX, 123_456.789] {
            let b = f64::to_bits(v);
            assert_eq!(f64_from_words(f32::from_bits(b as u32), f32::from_bits((b >> 32) as u32)), v);
        }
    }
}
