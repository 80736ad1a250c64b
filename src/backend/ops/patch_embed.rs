//! The ViT patch embedding: a `(batch, height, width)` image cut into
//! `patch_h × patch_w` patches, each projected to `dim` (+ bias), an optional
//! class token first, a learned position embedding added to every token;
//! and its backward.
//!
//! Every piece of the op but its signatures (`Backend::patch_embed`,
//! `Train::patch_embed_backward`) and its kernels (`kernels/patch_embed.cu`):
//! - the shape checks, one list per call for both backends (the patches
//!   must tile the image; a class token needs its buffer);
//! - the reference, plain f64 loops over the patches, forward and backward;
//! - the CPU: each image's patches gathered as rows (`gather_patches`, in
//!   docs/models.md's order), one product per image through `Cpu::product`
//!   (the linear layer's prepared weight and micro-kernels, f32 or bf16),
//!   then the class token, bias and positions; the backward's `dW` on
//!   `gemm_strided`, the bias, class token and positions summed row by row;
//! - the GPU: the parameter structs (`PatchParams` and its bf16/f16 twins,
//!   `PatchDwParams`) and every launch; the bias, class-token and position
//!   gradients are column sums (`ops/column_sum.rs`);
//! - the tests: the CPU and the emulator against the reference, the refused
//!   sizes and shapes, the struct layout.
//!
//! Also exercised from `tests/`: `kernels_emu` (the forward on every
//! precision against the CPU), `train_kernels_emu`
//! (`patch_embed_backward_shapes`), `train_grads` and `bit_lock`.

use super::column_sum::{self, ColumnSum};
use crate::backend::cpu::{check_len, gemm_strided, refuse, with_scratch, Cpu, Dst, Gemm, View};
use crate::backend::gpu::params::{params, twin, Bf16, Int8, KernelParams, F16};
use crate::backend::gpu::{launch, launch_nonempty, Device, Gpu};
use crate::backend::PatchShape;
use crate::error::{Error, Result};

const OP: &str = "patch_embed";
const BACKWARD: &str = "patch_embed_backward";

// ------------------------------------------------------------------ shapes

/// The patches tile the image: a size that does not would make every
/// token's gather (and `PatchShape::patches`, which divides) wrong.
fn consistent(s: PatchShape) -> std::result::Result<(), String> {
    if s.patch_h == 0 || s.patch_w == 0 || !s.height.is_multiple_of(s.patch_h) || !s.width.is_multiple_of(s.patch_w) {
        return Err(format!("inconsistent shape {s:?}"));
    }
    Ok(())
}

/// With a class token its buffer must be given and hold `dim` values;
/// without, a given one is ignored.
fn check_class_token<B: ?Sized>(
    s: PatchShape,
    what: &str,
    buf: Option<&B>,
    check: &impl Fn(&str, &B, usize) -> Result<()>,
    refuse: &impl Fn(String) -> Error,
) -> Result<()> {
    match (s.cls_token, buf) {
        (false, _) => Ok(()),
        (true, Some(c)) => check(what, c, s.dim),
        (true, None) => Err(refuse(format!("cls_token set but no {what} buffer"))),
    }
}

/// The forward's shape and buffers, checked in this order; `w_len` is the
/// prepared weight's length in the backend's layout.
#[allow(clippy::too_many_arguments)]
fn check_forward<B: ?Sized>(
    x: &B,
    w: &B,
    b: &B,
    cls: Option<&B>,
    pos: &B,
    out: &B,
    s: PatchShape,
    w_len: impl Fn(usize, usize) -> usize,
    check: impl Fn(&str, &B, usize) -> Result<()>,
    refuse: impl Fn(String) -> Error,
) -> Result<()> {
    consistent(s).map_err(&refuse)?;
    let tokens = s.tokens();
    check("x", x, s.batch * s.height * s.width)?;
    check("w", w, w_len(s.dim, s.patch_h * s.patch_w))?;
    check("b", b, s.dim)?;
    check("pos", pos, tokens * s.dim)?;
    check("out", out, s.batch * tokens * s.dim)?;
    check_class_token(s, "cls", cls, &check, &refuse)
}

/// The backward's shape and buffers, checked in this order.
#[allow(clippy::too_many_arguments)]
fn check_backward<B: ?Sized>(
    x: &B,
    dout: &B,
    dw: &B,
    db: &B,
    dcls: Option<&B>,
    dpos: &B,
    s: PatchShape,
    check: impl Fn(&str, &B, usize) -> Result<()>,
    refuse: impl Fn(String) -> Error,
) -> Result<()> {
    consistent(s).map_err(&refuse)?;
    let tokens = s.tokens();
    check("x", x, s.batch * s.height * s.width)?;
    check("dout", dout, s.batch * tokens * s.dim)?;
    check("dw", dw, s.dim * s.patch_h * s.patch_w)?;
    check("db", db, s.dim)?;
    check("dpos", dpos, tokens * s.dim)?;
    check_class_token(s, "dcls", dcls, &check, &refuse)
}

// --------------------------------------------------------------- reference

/// Patch `p`'s value `e` of image `b`: `p = i·n_f + j`, `e = r·patch_w + c`
/// holds `x[b, i·patch_h + r, j·patch_w + c]`.
fn patch_value(x: &[f64], s: PatchShape, b: usize, p: usize, e: usize) -> f64 {
    let n_f = s.width / s.patch_w;
    let (i, j, r, c) = (p / n_f, p % n_f, e / s.patch_w, e % s.patch_w);
    x[(b * s.height + i * s.patch_h + r) * s.width + j * s.patch_w + c]
}

/// The forward on plain vectors, `w` PyTorch's `(dim, patch_h·patch_w)`:
/// token 0 is `cls + pos[0]` with a class token; a patch token is
/// `w·patch + b + pos[token]`.
pub fn reference_forward(x: &[f64], w: &[f64], b: &[f64], cls: &[f64], pos: &[f64], s: PatchShape) -> Vec<f64> {
    let (tokens, plen, d, first) = (s.tokens(), s.patch_h * s.patch_w, s.dim, usize::from(s.cls_token));
    let mut out = vec![0f64; s.batch * tokens * d];
    for bi in 0..s.batch {
        for t in 0..tokens {
            for o in 0..d {
                let v = if t < first {
                    cls[o]
                } else {
                    b[o] + (0..plen).map(|e| w[o * plen + e] * patch_value(x, s, bi, t - first, e)).sum::<f64>()
                };
                out[(bi * tokens + t) * d + o] = v + pos[t * d + o];
            }
        }
    }
    out
}

/// The backward's gradients of the reference, each as added to zero.
pub struct ReferenceGrads {
    pub dw: Vec<f64>,
    pub db: Vec<f64>,
    pub dcls: Vec<f64>,
    pub dpos: Vec<f64>,
}

/// The backward on plain vectors: each token's gradient goes to its
/// position, to the class token or to the bias and (times its patch) the weight.
pub fn reference_backward(x: &[f64], dout: &[f64], s: PatchShape) -> ReferenceGrads {
    let (tokens, plen, d, first) = (s.tokens(), s.patch_h * s.patch_w, s.dim, usize::from(s.cls_token));
    let mut g =
        ReferenceGrads { dw: vec![0.0; d * plen], db: vec![0.0; d], dcls: vec![0.0; d], dpos: vec![0.0; tokens * d] };
    for bi in 0..s.batch {
        for t in 0..tokens {
            for o in 0..d {
                let gv = dout[(bi * tokens + t) * d + o];
                g.dpos[t * d + o] += gv;
                if t < first {
                    g.dcls[o] += gv;
                    continue;
                }
                g.db[o] += gv;
                for e in 0..plen {
                    g.dw[o * plen + e] += gv * patch_value(x, s, bi, t - first, e);
                }
            }
        }
    }
    g
}

// --------------------------------------------------------------------- CPU

/// One image's patches as rows: patch `p = i·n_f + j` becomes
/// `v[p, r·pf + c] = img[i·pt + r, j·pf + c]` (docs/models.md's order). Shared by
/// the forward and the backward.
fn gather_patches(img: &[f32], v: &mut [f32], s: PatchShape) {
    let (pt, pf) = (s.patch_h, s.patch_w);
    let (n_t, n_f, plen) = (s.height / pt, s.width / pf, pt * pf);
    for i in 0..n_t {
        for j in 0..n_f {
            let dst = &mut v[(i * n_f + j) * plen..(i * n_f + j + 1) * plen];
            for r in 0..pt {
                let src = (i * pt + r) * s.width + j * pf;
                dst[r * pf..(r + 1) * pf].copy_from_slice(&img[src..src + pf]);
            }
        }
    }
}

/// `Backend::patch_embed` on the CPU, in the backend's precision.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_cpu(
    cpu: &Cpu,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    cls: Option<&Vec<f32>>,
    pos: &[f32],
    out: &mut [f32],
    s: PatchShape,
) -> Result<()> {
    let check = |what: &str, v: &[f32], need| check_len(OP, what, v.len(), need);
    let w_len = |n_out, n_in| cpu.linear_len(n_out, n_in);
    check_forward(x, w, b, cls.map(Vec::as_slice), pos, &*out, s, w_len, check, |r| refuse(OP, r))?;
    if s.batch == 0 || s.dim == 0 {
        return Ok(());
    }
    let (pt, pf, d) = (s.patch_h, s.patch_w, s.dim);
    let (patches, tokens, plen) = (s.patches(), s.tokens(), pt * pf);
    let first = usize::from(s.cls_token);
    with_scratch(patches * plen, |v| {
        for bi in 0..s.batch {
            gather_patches(&x[bi * s.height * s.width..(bi + 1) * s.height * s.width], v, s);
            let o = &mut out[(bi * tokens + first) * d..(bi + 1) * tokens * d];
            cpu.product(v, w, o, Gemm { rows: patches, k: plen, n: d, ld_y: d, accumulate: false }, None);
        }
    });
    for bi in 0..s.batch {
        let seq = &mut out[bi * tokens * d..(bi + 1) * tokens * d];
        if let Some(c) = cls.filter(|_| s.cls_token) {
            seq[..d].copy_from_slice(&c[..d]);
        }
        for (t, row) in seq.chunks_mut(d).enumerate() {
            let p = &pos[t * d..(t + 1) * d];
            if t < first {
                row.iter_mut().zip(p).for_each(|(v, pv)| *v += pv);
            } else {
                row.iter_mut().zip(p).zip(&b[..d]).for_each(|((v, pv), bv)| *v += bv + pv);
            }
        }
    }
    Ok(())
}

/// `Train::patch_embed_backward` on the CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_cpu(
    x: &[f32],
    dout: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dcls: Option<&mut Vec<f32>>,
    dpos: &mut [f32],
    s: PatchShape,
) -> Result<()> {
    let check = |what: &str, v: &[f32], need| check_len(BACKWARD, what, v.len(), need);
    check_backward(x, dout, &*dw, &*db, dcls.as_deref().map(Vec::as_slice), &*dpos, s, check, |r| refuse(BACKWARD, r))?;
    if s.batch == 0 || s.dim == 0 {
        return Ok(());
    }
    let mut dcls = dcls.map(|c| c.as_mut_slice());
    let (pt, pf, d) = (s.patch_h, s.patch_w, s.dim);
    let (patches, tokens, plen) = (s.patches(), s.tokens(), pt * pf);
    let first = usize::from(s.cls_token);
    with_scratch(patches * plen, |v| {
        for bi in 0..s.batch {
            gather_patches(&x[bi * s.height * s.width..(bi + 1) * s.height * s.width], v, s);
            let de = &dout[(bi * tokens + first) * d..(bi + 1) * tokens * d];
            // SAFETY: dW (d, plen) += dEᵀ (d × patches) · V (patches × plen), all in bounds.
            unsafe {
                gemm_strided(
                    d,
                    plen,
                    patches,
                    Dst::add(dw.as_mut_ptr(), plen),
                    View::transposed(de.as_ptr(), d),
                    View::rows(v.as_ptr(), plen),
                    1.0,
                )
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
    Ok(())
}

// --------------------------------------------------------------------- GPU

params!(
    /// `kernels/patch_embed.cu` PatchParams
    PatchParams => PatchEmbed {
        x: u64, w: u64, b: u64, cls: u64, pos: u64, out: u64,
        batch: i32, height: i32, width: i32, ph: i32, pw: i32, dim: i32, tokens: i32, has_cls: i32,
    }
);
twin!(Bf16, PatchParams => PatchEmbedBf16);
twin!(F16, PatchParams => PatchEmbedF16);
twin!(Int8, PatchParams => PatchEmbedInt8);

params!(
    /// `kernels/patch_embed.cu` PatchDwParams: `dw (dim, ph·pw) +=` dout's patch rows ᵀ · the patches.
    PatchDwParams => PatchEmbedDw {
        x: u64, dout: u64, dw: u64,
        batch: i32, height: i32, width: i32, ph: i32, pw: i32, dim: i32, tokens: i32, has_cls: i32,
    }
);

/// `Backend::patch_embed` on a `Gpu`: one launch of `quorum_patch_embed`
/// (or its 16-bit twin).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    w: &D::Mem,
    b: &D::Mem,
    cls: Option<&D::Mem>,
    pos: &D::Mem,
    out: &mut D::Mem,
    s: PatchShape,
) -> Result<()> {
    let check = |what: &str, m: &D::Mem, need| gpu.check(OP, what, m, need);
    let w_len = |n_out, n_in| gpu.weight_len(n_out, n_in);
    check_forward(x, w, b, cls, pos, &*out, s, w_len, check, |r| gpu.err(format!("{OP}: {r}")))?;
    let dev = gpu.device();
    let int = |v| gpu.int(OP, v);
    let tokens = s.tokens();
    let p = PatchParams {
        x: dev.ptr(x),
        w: dev.ptr(w),
        b: dev.ptr(b),
        cls: cls.filter(|_| s.cls_token).map_or(0, |c| dev.ptr(c)),
        pos: dev.ptr(pos),
        out: dev.ptr_mut(out),
        batch: int(s.batch)?,
        height: int(s.height)?,
        width: int(s.width)?,
        ph: int(s.patch_h)?,
        pw: int(s.patch_w)?,
        dim: int(s.dim)?,
        tokens: int(tokens)?,
        has_cls: i32::from(s.cls_token),
    };
    gpu.launch_gemm(s.batch * tokens, s.dim, 1, p)
}

/// `Train::patch_embed_backward` on a `Gpu`: `quorum_patch_embed_dw`, then
/// the bias, class token and positions as column sums.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_gpu<D: Device>(
    gpu: &Gpu<D>,
    x: &D::Mem,
    dout: &D::Mem,
    dw: &mut D::Mem,
    db: &mut D::Mem,
    dcls: Option<&mut D::Mem>,
    dpos: &mut D::Mem,
    s: PatchShape,
) -> Result<()> {
    let check = |what: &str, m: &D::Mem, need| gpu.check(BACKWARD, what, m, need);
    let refuse = |r| gpu.err(format!("{BACKWARD}: {r}"));
    check_backward(x, dout, &*dw, &*db, dcls.as_deref(), &*dpos, s, check, refuse)?;
    let (tokens, patches, plen, d) = (s.tokens(), s.patches(), s.patch_h * s.patch_w, s.dim);
    let dev = gpu.device();
    let int = |v| gpu.int(BACKWARD, v);
    if s.batch * patches > 0 {
        let p = PatchDwParams {
            x: dev.ptr(x),
            dout: dev.ptr(dout),
            dw: dev.ptr_mut(dw),
            batch: int(s.batch)?,
            height: int(s.height)?,
            width: int(s.width)?,
            ph: int(s.patch_h)?,
            pw: int(s.patch_w)?,
            dim: int(d)?,
            tokens: int(tokens)?,
            has_cls: i32::from(s.cls_token),
        };
        launch_nonempty(gpu, launch::gemm(d, plen, 1)?, &p)?;
    }
    let first = usize::from(s.cls_token);
    let per_sample = tokens * d;
    // The bias: every patch token of every sample.
    let bias =
        ColumnSum { n: d, groups: s.batch, rows: patches, group_stride: per_sample, row_stride: d, offset: first * d };
    column_sum::sum_gpu(gpu, BACKWARD, dout, db, bias)?;
    if let Some(dcls) = dcls.filter(|_| s.cls_token) {
        // The class token: token 0 of every sample.
        let cls = ColumnSum { n: d, groups: s.batch, rows: 1, group_stride: per_sample, row_stride: d, offset: 0 };
        column_sum::sum_gpu(gpu, BACKWARD, dout, dcls, cls)?;
    }
    // The position embedding: each (token, feature) summed over the samples.
    let pos = ColumnSum { n: per_sample, groups: s.batch, rows: 1, group_stride: per_sample, row_stride: 0, offset: 0 };
    column_sum::sum_gpu(gpu, BACKWARD, dout, dpos, pos)
}

/// This module's parameter structs, each checked against its C size.
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    use crate::backend::gpu::emu::c_size_agrees;
    vec![
        c_size_agrees::<PatchParams>(),
        c_size_agrees::<Bf16<PatchParams>>(),
        c_size_agrees::<F16<PatchParams>>(),
        c_size_agrees::<Int8<PatchParams>>(),
        c_size_agrees::<PatchDwParams>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::Emu;
    use crate::backend::ops::testing::{
        added, assert_close, assert_matches_finite_differences, data, read, read_close, same_bits_in_every_order, wide,
    };
    use crate::backend::{Backend, Train};

    /// Square and oblong patches, with and without a class token, one and
    /// three images, a single patch, no images.
    fn shapes() -> [PatchShape; 6] {
        let s = |batch, height, width, patch_h, patch_w, dim, cls_token| PatchShape {
            batch,
            height,
            width,
            patch_h,
            patch_w,
            dim,
            cls_token,
        };
        [
            s(1, 6, 8, 2, 2, 5, true),
            s(3, 6, 8, 3, 4, 7, false),
            s(2, 12, 14, 4, 7, 33, true),
            s(1, 3, 5, 3, 5, 4, true),
            s(2, 10, 16, 10, 16, 72, false),
            s(0, 4, 4, 2, 2, 3, true),
        ]
    }

    fn forward_matches_the_reference<B: Backend>(be: &B, what: &str) {
        for (i, s) in shapes().into_iter().enumerate() {
            let seed = 10 * i as u64;
            let (tokens, plen, d) = (s.tokens(), s.patch_h * s.patch_w, s.dim);
            let x = data(s.batch * s.height * s.width, seed, 1.0);
            let (w, b) = (data(d * plen, seed + 1, 0.5), data(d, seed + 2, 1.0));
            let (cls, pos) = (data(d, seed + 3, 1.0), data(tokens * d, seed + 4, 1.0));
            let wp = be.prepare_linear(&w, d, plen).unwrap();
            let (clsb, mut out) = (be.upload(&cls).unwrap(), be.alloc(s.batch * tokens * d).unwrap());
            let (xb, bb, posb) = (be.upload(&x).unwrap(), be.upload(&b).unwrap(), be.upload(&pos).unwrap());
            be.patch_embed(&xb, &wp, &bb, Some(&clsb), &posb, &mut out, s).unwrap();
            let want = reference_forward(&wide(&x), &wide(&w), &wide(&b), &wide(&cls), &wide(&pos), s);
            assert_close(&format!("{what} {s:?}"), &read(be, &out, want.len()), &want);
        }
    }

    /// The backward (gradients starting non-zero) against the reference;
    /// the bits of every gradient. Without a class token a given `dcls`
    /// stays as it was.
    fn backward_matches_the_reference<B: Train>(be: &B, what: &str) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for (i, s) in shapes().into_iter().enumerate() {
            let seed = 20 * i as u64;
            let (tokens, plen, d) = (s.tokens(), s.patch_h * s.patch_w, s.dim);
            let (x, dout) = (data(s.batch * s.height * s.width, seed, 1.0), data(s.batch * tokens * d, seed + 1, 1.0));
            let (dw0, db0) = (data(d * plen, seed + 2, 1.0), data(d, seed + 3, 1.0));
            let (dcls0, dpos0) = (data(d, seed + 4, 1.0), data(tokens * d, seed + 5, 1.0));
            let g = reference_backward(&wide(&x), &wide(&dout), s);
            let up = |v: &[f32]| be.upload(v).unwrap();
            let (mut dw, mut db, mut dcls, mut dpos) = (up(&dw0), up(&db0), up(&dcls0), up(&dpos0));
            be.patch_embed_backward(&up(&x), &up(&dout), &mut dw, &mut db, Some(&mut dcls), &mut dpos, s).unwrap();
            let tag = format!("{what} {s:?}");
            out.push(read_close(be, &dw, &format!("{tag} dw"), &added(&dw0, &g.dw)));
            out.push(read_close(be, &db, &format!("{tag} db"), &added(&db0, &g.db)));
            out.push(read_close(be, &dcls, &format!("{tag} dcls"), &added(&dcls0, &g.dcls)));
            out.push(read_close(be, &dpos, &format!("{tag} dpos"), &added(&dpos0, &g.dpos)));
            if !s.cls_token {
                assert_eq!(read(be, &dcls, d), dcls0, "{tag}: dcls untouched without a class token");
            }
        }
        out
    }

    #[test]
    fn reference_backward_matches_finite_differences_of_the_reference_forward() {
        let s = PatchShape { batch: 2, height: 4, width: 6, patch_h: 2, patch_w: 3, dim: 3, cls_token: true };
        let (tokens, plen) = (s.tokens(), 6);
        let wide_data = |n, seed| wide(&data(n, seed, 1.0));
        let x = wide_data(48, 1);
        let (w, b, cls, pos) = (wide_data(3 * plen, 2), wide_data(3, 3), wide_data(3, 4), wide_data(tokens * 3, 5));
        let dout = wide_data(2 * tokens * 3, 6);
        let loss = |w: &[f64], b: &[f64], cls: &[f64], pos: &[f64]| -> f64 {
            reference_forward(&x, w, b, cls, pos, s).iter().zip(&dout).map(|(y, d)| y * d).sum()
        };
        let g = reference_backward(&x, &dout, s);
        assert_matches_finite_differences("dw", &w, &g.dw, &|v| loss(v, &b, &cls, &pos));
        assert_matches_finite_differences("db", &b, &g.db, &|v| loss(&w, v, &cls, &pos));
        assert_matches_finite_differences("dcls", &cls, &g.dcls, &|v| loss(&w, &b, v, &pos));
        assert_matches_finite_differences("dpos", &pos, &g.dpos, &|v| loss(&w, &b, &cls, v));
    }

    #[test]
    fn cpu_matches_the_reference() {
        forward_matches_the_reference(&Cpu::new(), "cpu");
        backward_matches_the_reference(&Cpu::new(), "cpu");
    }

    #[test]
    fn emulator_matches_the_reference_in_every_thread_order() {
        same_bits_in_every_order(|emu, what| {
            forward_matches_the_reference(emu, what);
            backward_matches_the_reference(emu, what)
        });
    }

    #[test]
    fn short_buffers_and_bad_shapes_are_refused_by_both_backends() {
        fn refuses<B: Train>(be: &B) {
            let name = be.name();
            // 2 images of 4×6 in 2×3 patches, dim 5, a class token: 5 tokens.
            let s = PatchShape { batch: 2, height: 4, width: 6, patch_h: 2, patch_w: 3, dim: 5, cls_token: true };
            let z = |n: usize| be.alloc(n).unwrap();
            let w = be.prepare_linear(&[0.5; 30], 5, 6).unwrap();
            // The forward: every buffer but w (its length depends on the precision) one short.
            for (i, what) in [(0, "x"), (1, "b"), (2, "pos"), (3, "out"), (4, "cls")] {
                let mut n = [48, 5, 25, 50, 5];
                n[i] -= 1;
                let err =
                    be.patch_embed(&z(n[0]), &w, &z(n[1]), Some(&z(n[4])), &z(n[2]), &mut z(n[3]), s).unwrap_err();
                assert!(err.to_string().contains(&format!("patch_embed: buffer {what} ")), "{name}: {err}");
            }
            let err = be.patch_embed(&z(48), &w, &z(5), None, &z(25), &mut z(50), s).unwrap_err().to_string();
            assert!(err.contains("patch_embed: cls_token set but no cls buffer"), "{name}: {err}");
            // The backward: every buffer one short, then no dcls.
            let call = |n: [usize; 6], with_cls: bool| {
                let mut dcls = z(n[4]);
                let dcls = with_cls.then_some(&mut dcls);
                be.patch_embed_backward(&z(n[0]), &z(n[1]), &mut z(n[2]), &mut z(n[3]), dcls, &mut z(n[5]), s)
            };
            for (i, what) in ["x", "dout", "dw", "db", "dcls", "dpos"].into_iter().enumerate() {
                let mut n = [48, 50, 30, 5, 5, 25];
                n[i] -= 1;
                let err = call(n, true).unwrap_err().to_string();
                assert!(err.contains(&format!("patch_embed_backward: buffer {what} ")), "{name}: {err}");
            }
            let err = call([48, 50, 30, 5, 5, 25], false).unwrap_err().to_string();
            assert!(err.contains("patch_embed_backward: cls_token set but no dcls buffer"), "{name}: {err}");
            // Patches that do not tile the image, and empty patches: refused, not a panic.
            for bad in [PatchShape { width: 7, ..s }, PatchShape { patch_h: 0, ..s }] {
                let err = be.patch_embed(&z(99), &w, &z(9), Some(&z(9)), &z(99), &mut z(999), bad).unwrap_err();
                assert!(err.to_string().contains("patch_embed: inconsistent shape"), "{name}: {err}");
                let mut c = z(9);
                let err = be
                    .patch_embed_backward(&z(99), &z(99), &mut z(99), &mut z(9), Some(&mut c), &mut z(99), bad)
                    .unwrap_err();
                assert!(err.to_string().contains("patch_embed_backward: inconsistent shape"), "{name}: {err}");
            }
        }
        refuses(&Cpu::new());
        refuses(&Gpu::new(Emu::new()));
    }

    #[test]
    fn the_parameter_struct_has_the_c_layout() {
        // Moved from gpu/params.rs: six pointers, eight ints.
        assert_eq!(std::mem::size_of::<PatchParams>(), 6 * 8 + 8 * 4);
    }
}
