//! The backward ops of the CPU backend (the `Train` trait's gradients).
//!
//! Every product is a `gemm` call on strided views (no transposed copies);
//! large ones are split over output columns, one block per task, so each
//! output value is reduced by one thread in one order. Row reductions
//! (biases here; LayerNorm's affine parameters in backend/ops/layernorm.rs)
//! run in fixed chunks of `ROW_CHUNK` rows combined in order. Together: the
//! same inputs give bit-identical gradients whatever the thread scheduling
//! (docs/training.md: same seed, same data, same weights).

use rayon::prelude::*;

use super::{with_scratch, SendPtr, PAR_MIN_MACS};
use crate::backend::ops::linear::col_sums;
use crate::backend::{ConvShape, PatchShape};

/// Output columns per task of a large product (a multiple of 16 floats, one AVX-512 register).
const COL_BLOCK: usize = 64;

/// `dst (m, n) [+]= scale · lhs (m, k) · rhs (k, n)` over strided views; the
/// destination's columns are contiguous. Split over column blocks when large.
///
/// # Safety
/// Every `(row, col)` the strides form must lie inside the buffers the
/// pointers come from, and `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
) {
    gemm_strided_on(m, n, k, dst, dst_rs, accumulate, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, scale, true);
}

/// `gemm_strided`, its column blocks run here in order unless `parallel`:
/// the same blocks either way, so the same bits.
///
/// # Safety
/// As `gemm_strided`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided_on(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(0.0);
            }
        }
        return;
    }
    // Column blocks of a width that depends on the sizes only, never on the
    // thread count: gemm's result for a column can depend on the block it
    // is computed in, and training must give the same bits on any pool.
    let width = if m * n * k >= PAR_MIN_MACS && n >= 2 * COL_BLOCK { COL_BLOCK } else { n };
    let (dst, lhs, rhs) = (SendPtr(dst), SendPtr(lhs as *mut f32), SendPtr(rhs as *mut f32));
    let run = |j0: usize| {
        let nb = width.min(n - j0);
        gemm::gemm(
            m,
            nb,
            k,
            dst.at(j0),
            1,
            dst_rs as isize,
            accumulate,
            lhs.at(0) as *const f32,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.at(j0 * rhs_cs) as *const f32,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    };
    if width == n {
        run(0);
    } else if parallel {
        (0..n.div_ceil(width)).into_par_iter().for_each(|b| run(b * width));
    } else {
        (0..n.div_ceil(width)).for_each(|b| run(b * width));
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn patch_embed_backward(
    x: &[f32],
    dout: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    mut dcls: Option<&mut [f32]>,
    dpos: &mut [f32],
    s: PatchShape,
) {
    let (pt, pf, d) = (s.patch_h, s.patch_w, s.dim);
    let (patches, tokens, plen) = (s.patches(), s.tokens(), pt * pf);
    let first = usize::from(s.cls_token);
    with_scratch(patches * plen, |v| {
        for bi in 0..s.batch {
            super::gather_patches(&x[bi * s.height * s.width..(bi + 1) * s.height * s.width], v, s);
            let de = &dout[(bi * tokens + first) * d..(bi + 1) * tokens * d];
            // SAFETY: dW (d, plen) += dEᵀ (d × patches) · V (patches × plen), all in bounds.
            unsafe {
                gemm_strided(d, plen, patches, dw.as_mut_ptr(), plen, true, de.as_ptr(), 1, d, v.as_ptr(), plen, 1, 1.0)
            };
        }
    });
    for bi in 0..s.batch {
        let seq = &dout[bi * tokens * d..(bi + 1) * tokens * d];
        for (t, row) in seq.chunks(d).enumerate() {
            dpos[t * d..(t + 1) * d].iter_mut().zip(row).for_each(|(a, g)| *a += g);
            if t < first {
                if let Some(c) = dcls.as_deref_mut() {
                    c[..d].iter_mut().zip(row).for_each(|(a, g)| *a += g);
                }
            } else {
                db[..d].iter_mut().zip(row).for_each(|(a, g)| *a += g);
            }
        }
    }
}

pub(super) fn conv1d_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    s: ConvShape,
) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let pad = k / 2;
    let rows = s.samples * len;
    let width = cin * k;
    let dy_at = dy[s.out_offset..].as_ptr();
    with_scratch(2 * rows * width, |scr| {
        let (cols, dcols) = scr.split_at_mut(rows * width);
        super::conv::im2col(x, cols, len, cin, k);
        // SAFETY: dy rows of stride out_stride hold c_out values at out_offset;
        // cols (rows, width); dw and w (c_out, width); dcols (rows, width).
        unsafe {
            gemm_strided(
                s.c_out,
                width,
                rows,
                dw.as_mut_ptr(),
                width,
                true,
                dy_at,
                1,
                s.out_stride,
                cols.as_ptr(),
                width,
                1,
                1.0,
            );
        }
        if let Some(dx) = dx {
            unsafe {
                gemm_strided(
                    rows,
                    width,
                    s.c_out,
                    dcols.as_mut_ptr(),
                    width,
                    false,
                    dy_at,
                    s.out_stride,
                    1,
                    w.as_ptr(),
                    width,
                    1,
                    1.0,
                );
            }
            // col2im: each sample's rows of dx belong to one task.
            let dcols = &*dcols;
            dx[..rows * cin].par_chunks_mut(len * cin).enumerate().for_each(|(smp, dxs)| {
                for t in 0..len {
                    let src = &dcols[(smp * len + t) * width..][..width];
                    for j in 0..k {
                        let tt = t as isize + j as isize - pad as isize;
                        if tt < 0 || tt >= len as isize {
                            continue;
                        }
                        let row = &mut dxs[tt as usize * cin..][..cin];
                        for (c, v) in row.iter_mut().enumerate() {
                            *v += src[c * k + j];
                        }
                    }
                }
            });
        }
    });
    // Outside the closure above: col_sums takes the thread's scratch too.
    col_sums(dy, s.out_stride, s.out_offset, rows, s.c_out, db);
}
