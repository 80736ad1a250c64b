//! Backward passes of the conv1d and the patch embedding
//! (kernels/train_gemm.cu), and the column sums (`column_sum`) the linear
//! backward's bias uses too (backend/ops/linear.rs holds the linear layer's).
//!
//! Every weight gradient is one launch of the forward's GEMM tile
//! (gemm_tile.cuh) reducing over the forward's rows, `dW (m, n) += Σ_k
//! dy(k, m)·input(k, n)`, with the input read as plain rows, an implicit
//! im2col or an implicit patch gather; data gradients are the same tile with
//! PyTorch's weight layout as its `(k, n)` operand; biases (and the class
//! token and position embedding) are column sums, one thread per column.
//! No split over the reduced axis: each output's sum runs in one thread in
//! a fixed order, so gradients are bit-identical run to run.

use crate::backend::gpu::launch;
use crate::backend::gpu::params::{params, KernelParams};
use crate::backend::gpu::{launch_nonempty, Device, Gpu, LaunchConfig};
use crate::backend::{ConvShape, PatchShape};
use crate::error::Result;

params!(
    /// `kernels/train_gemm.cu` ConvDwParams: `dw (c_out, c_in·k) += dyᵀ im2col(x)`.
    ConvDwParams => Conv1dDw {
        x: u64, dy: u64, dw: u64,
        samples: i32, len: i32, c_in: i32, c_out: i32, ksize: i32, out_stride: i32, out_offset: i32,
    }
);
params!(
    /// `kernels/train_gemm.cu` ConvDxParams: `dx +=` dy convolved with the flipped, transposed kernel.
    ConvDxParams => Conv1dDx {
        dy: u64, w: u64, dx: u64,
        samples: i32, len: i32, c_in: i32, c_out: i32, ksize: i32, out_stride: i32, out_offset: i32,
    }
);
params!(
    /// `kernels/train_gemm.cu` PatchDwParams: `dw (dim, ph·pw) +=` dout's patch rows ᵀ · the patches.
    PatchDwParams => PatchEmbedDw {
        x: u64, dout: u64, dw: u64,
        batch: i32, height: i32, width: i32, ph: i32, pw: i32, dim: i32, tokens: i32, has_cls: i32,
    }
);
params!(
    /// `kernels/train_gemm.cu` BiasGradParams:
    /// `dst[c] += Σ_g Σ_r src[g·group_stride + r·row_stride + offset + c]` for `c < n`.
    BiasGradParams => GemmBiasGrad {
        src: u64, dst: u64, n: i32, groups: i32, rows: i32, group_stride: i32, row_stride: i32, offset: i32,
    }
);
/// The GEMM tile's launch (gemm_tile.cuh): one 256-thread block per 64×64
/// tile of the `(rows, n)` output.
fn gemm_cfg(rows: usize, n: usize) -> Result<LaunchConfig> {
    launch::gemm(rows, n, 1)
}

/// One column sum (`BiasGradParams`) over a strided view of `src`.
#[derive(Clone, Copy)]
pub(crate) struct ColumnSum {
    pub(crate) n: usize,
    pub(crate) groups: usize,
    pub(crate) rows: usize,
    pub(crate) group_stride: usize,
    pub(crate) row_stride: usize,
    pub(crate) offset: usize,
}

/// `dst[..s.n] +=` column sums of `src` (sizes checked by the caller).
pub(crate) fn column_sum<D: Device>(
    gpu: &Gpu<D>,
    op: &str,
    src: &D::Mem,
    dst: &mut D::Mem,
    s: ColumnSum,
) -> Result<()> {
    if s.n == 0 || s.groups == 0 || s.rows == 0 {
        return Ok(());
    }
    let p = BiasGradParams {
        src: gpu.dev.ptr(src),
        dst: gpu.dev.ptr_mut(dst),
        n: gpu.int(op, s.n)?,
        groups: gpu.int(op, s.groups)?,
        rows: gpu.int(op, s.rows)?,
        group_stride: gpu.int(op, s.group_stride)?,
        row_stride: gpu.int(op, s.row_stride)?,
        offset: gpu.int(op, s.offset)?,
    };
    launch_nonempty(gpu, launch::elementwise(s.n)?, &p)
}

impl<D: Device> Gpu<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn patch_embed_backward_op(
        &self,
        x: &D::Mem,
        dout: &D::Mem,
        dw: &mut D::Mem,
        db: &mut D::Mem,
        dcls: Option<&mut D::Mem>,
        dpos: &mut D::Mem,
        s: PatchShape,
    ) -> Result<()> {
        let op = "patch_embed_backward";
        if s.patch_h == 0 || s.patch_w == 0 || !s.height.is_multiple_of(s.patch_h) || !s.width.is_multiple_of(s.patch_w)
        {
            return Err(self.err(format!("{op}: inconsistent shape {s:?}")));
        }
        let (tokens, patches, plen, d) = (s.tokens(), s.patches(), s.patch_h * s.patch_w, s.dim);
        self.check(op, "x", x, s.batch * s.height * s.width)?;
        self.check(op, "dout", dout, s.batch * tokens * d)?;
        self.check(op, "dw", dw, d * plen)?;
        self.check(op, "db", db, d)?;
        self.check(op, "dpos", dpos, tokens * d)?;
        let dcls = match (s.cls_token, dcls) {
            (false, _) => None,
            (true, Some(c)) => {
                self.check(op, "dcls", c, d)?;
                Some(c)
            }
            (true, None) => return Err(self.err(format!("{op}: cls_token set but no dcls buffer"))),
        };
        if s.batch * patches > 0 {
            let p = PatchDwParams {
                x: self.dev.ptr(x),
                dout: self.dev.ptr(dout),
                dw: self.dev.ptr_mut(dw),
                batch: self.int(op, s.batch)?,
                height: self.int(op, s.height)?,
                width: self.int(op, s.width)?,
                ph: self.int(op, s.patch_h)?,
                pw: self.int(op, s.patch_w)?,
                dim: self.int(op, d)?,
                tokens: self.int(op, tokens)?,
                has_cls: i32::from(s.cls_token),
            };
            launch_nonempty(self, gemm_cfg(d, plen)?, &p)?;
        }
        let first = usize::from(s.cls_token);
        let per_sample = tokens * d;
        // The bias: every patch token of every sample.
        let bias = ColumnSum {
            n: d,
            groups: s.batch,
            rows: patches,
            group_stride: per_sample,
            row_stride: d,
            offset: first * d,
        };
        column_sum(self, op, dout, db, bias)?;
        if let Some(dcls) = dcls {
            // The class token: token 0 of every sample.
            let cls = ColumnSum { n: d, groups: s.batch, rows: 1, group_stride: per_sample, row_stride: d, offset: 0 };
            column_sum(self, op, dout, dcls, cls)?;
        }
        // The position embedding: each (token, feature) summed over the samples.
        let pos =
            ColumnSum { n: per_sample, groups: s.batch, rows: 1, group_stride: per_sample, row_stride: 0, offset: 0 };
        column_sum(self, op, dout, dpos, pos)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv1d_backward_op(
        &self,
        x: &D::Mem,
        w: &D::Mem,
        dy: &D::Mem,
        dx: Option<&mut D::Mem>,
        dw: &mut D::Mem,
        db: &mut D::Mem,
        s: ConvShape,
    ) -> Result<()> {
        let op = "conv1d_backward";
        if s.out_offset + s.c_out > s.out_stride || s.kernel.is_multiple_of(2) {
            return Err(self.err(format!("{op}: inconsistent shape {s:?}")));
        }
        let rows = s.samples * s.len;
        let width = s.c_in * s.kernel;
        self.check(op, "x", x, rows * s.c_in)?;
        self.check(op, "w", w, s.c_out * width)?;
        self.check(op, "dy", dy, rows * s.out_stride)?;
        self.check(op, "dw", dw, s.c_out * width)?;
        self.check(op, "db", db, s.c_out)?;
        if let Some(dx) = &dx {
            self.check(op, "dx", dx, rows * s.c_in)?;
        }
        let samples = self.int(op, s.samples)?;
        let len = self.int(op, s.len)?;
        let c_in = self.int(op, s.c_in)?;
        let c_out = self.int(op, s.c_out)?;
        let ksize = self.int(op, s.kernel)?;
        let out_stride = self.int(op, s.out_stride)?;
        let out_offset = self.int(op, s.out_offset)?;
        self.int(op, rows)?;
        self.int(op, s.c_out * s.kernel)?;
        if rows > 0 {
            let p = ConvDwParams {
                x: self.dev.ptr(x),
                dy: self.dev.ptr(dy),
                dw: self.dev.ptr_mut(dw),
                samples,
                len,
                c_in,
                c_out,
                ksize,
                out_stride,
                out_offset,
            };
            launch_nonempty(self, gemm_cfg(s.c_out, width)?, &p)?;
        }
        if let Some(dx) = dx {
            if s.c_out > 0 {
                let p = ConvDxParams {
                    dy: self.dev.ptr(dy),
                    w: self.dev.ptr(w),
                    dx: self.dev.ptr_mut(dx),
                    samples,
                    len,
                    c_in,
                    c_out,
                    ksize,
                    out_stride,
                    out_offset,
                };
                launch_nonempty(self, gemm_cfg(rows, s.c_in)?, &p)?;
            }
        }
        let bias =
            ColumnSum { n: s.c_out, groups: 1, rows, group_stride: 0, row_stride: s.out_stride, offset: s.out_offset };
        column_sum(self, op, dy, db, bias)
    }
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(super) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<ConvDwParams>(),
        c_size_agrees::<ConvDxParams>(),
        c_size_agrees::<PatchDwParams>(),
        c_size_agrees::<BiasGradParams>(),
    ]
}
