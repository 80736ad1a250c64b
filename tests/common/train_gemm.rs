//! Training-kernel cases (gemm family): each a `fn case<G: Train>(gpu: &G)`
//! comparing the backend under test with the CPU's `Train` ops (see
//! common/kernels.rs for `data`, `assert_close`, `read`), run by
//! tests/train_kernels_emu.rs and, with --features gpu-tests, tests/train_kernels_cuda.rs.
//!
//! Shapes come from the models (MPD's 49-token/256-wide and 112-feature
//! linears, TLOB's multi-scale temporal conv writing branch i at column
//! i·d of rows of 3·d, CNN-LSTM's 112→128 conv, MPD's 60×112 image in
//! 10×16 and 12×8 patches), plus tiny ones (1×3→5) and sizes just past a
//! tile (65 rows, 17 columns). Every gradient buffer starts nonzero: the
//! backward adds into it.
#![allow(dead_code)]

use quorum::backend::{Backend, ConvShape, LinearShape, PatchShape, Train};
use quorum::Cpu;

use crate::kernels::{assert_close, data, read};

fn up<G: Backend>(g: &G, v: &[f32]) -> G::Buf {
    g.upload(v).unwrap()
}

pub const LINEAR_SHAPES: [(usize, usize, usize); 4] = [(49, 256, 768), (17, 112, 100), (1, 3, 5), (65, 17, 64)];

/// `linear_backward` at the models' shapes: dW and db add, dx written or
/// added, and the optional outputs left out.
pub fn linear_backward_shapes<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(rows, n_in, n_out)) in LINEAR_SHAPES.iter().enumerate() {
        let seed = 100 * i as u64;
        let x = data(rows * n_in, seed + 1, 1.0);
        let w = data(n_out * n_in, seed + 2, 0.2);
        let dy = data(rows * n_out, seed + 3, 1.0);
        let dw0 = data(n_out * n_in, seed + 4, 0.5);
        let db0 = data(n_out, seed + 5, 0.5);
        let dx0 = data(rows * n_in, seed + 6, 0.5);
        let s = LinearShape { rows, n_in, n_out };
        // (with dx, accumulate dx, with db)
        for (with_dx, acc, with_db) in
            [(true, false, true), (true, true, true), (false, false, false), (true, true, false)]
        {
            let what = format!("linear_backward {rows}x{n_in}->{n_out} dx {with_dx} acc {acc} db {with_db}");
            let (mut dwc, mut dbc, mut dxc) = (dw0.clone(), db0.clone(), dx0.clone());
            cpu.linear_backward(
                &x,
                &w,
                &dy,
                with_dx.then_some(&mut dxc),
                &mut dwc,
                with_db.then_some(&mut dbc),
                s,
                acc,
            )
            .unwrap();
            let (xg, wg, dyg) = (up(gpu, &x), up(gpu, &w), up(gpu, &dy));
            let (mut dwg, mut dbg, mut dxg) = (up(gpu, &dw0), up(gpu, &db0), up(gpu, &dx0));
            gpu.linear_backward(
                &xg,
                &wg,
                &dyg,
                with_dx.then_some(&mut dxg),
                &mut dwg,
                with_db.then_some(&mut dbg),
                s,
                acc,
            )
            .unwrap();
            assert_close(&format!("{what}: dw"), &read(gpu, &dwg, dw0.len()), &dwc);
            assert_close(&format!("{what}: db"), &read(gpu, &dbg, db0.len()), &dbc);
            assert_close(&format!("{what}: dx"), &read(gpu, &dxg, dx0.len()), &dxc);
            if !with_db {
                assert_eq!(read(gpu, &dbg, db0.len()), db0, "{what}: db untouched");
            }
            if !with_dx {
                assert_eq!(read(gpu, &dxg, dx0.len()), dx0, "{what}: dx untouched");
            }
        }
    }
}

/// The conv shapes: CNN-LSTM's 112→128 k 3 over 60 steps, TLOB's
/// multi-scale temporal branches (k 3/5/7, branch i at column i·d of rows of
/// 3·d, 100 steps), a pointwise k 1, a wide k 7, at 1, 3 and 17 samples.
pub fn conv_shapes() -> Vec<ConvShape> {
    let mut v = vec![
        ConvShape::dense(17, 60, 112, 128, 3),
        ConvShape::dense(1, 60, 17, 33, 1),
        ConvShape::dense(3, 100, 20, 64, 7),
        ConvShape::dense(1, 100, 5, 3, 5),
    ];
    let d = 40;
    for (i, k) in [3, 5, 7].into_iter().enumerate() {
        v.push(ConvShape { samples: 3, len: 100, c_in: d, c_out: d, kernel: k, out_stride: 3 * d, out_offset: i * d });
    }
    v.push(ConvShape { samples: 17, len: 100, c_in: 24, c_out: 24, kernel: 1, out_stride: 72, out_offset: 48 });
    v
}

/// `conv1d_backward`: dW, db and dx all add; dx optional.
pub fn conv1d_backward_shapes<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, s) in conv_shapes().into_iter().enumerate() {
        let seed = 1000 + 100 * i as u64;
        let rows = s.samples * s.len;
        let wlen = s.c_out * s.c_in * s.kernel;
        let x = data(rows * s.c_in, seed + 1, 1.0);
        let w = data(wlen, seed + 2, 0.2);
        let dy = data(rows * s.out_stride, seed + 3, 1.0);
        let dw0 = data(wlen, seed + 4, 0.5);
        let db0 = data(s.c_out, seed + 5, 0.5);
        let dx0 = data(rows * s.c_in, seed + 6, 0.5);
        for with_dx in [true, false] {
            let what = format!("conv1d_backward {s:?} dx {with_dx}");
            let (mut dwc, mut dbc, mut dxc) = (dw0.clone(), db0.clone(), dx0.clone());
            cpu.conv1d_backward(&x, &w, &dy, with_dx.then_some(&mut dxc), &mut dwc, &mut dbc, s).unwrap();
            let (xg, wg, dyg) = (up(gpu, &x), up(gpu, &w), up(gpu, &dy));
            let (mut dwg, mut dbg, mut dxg) = (up(gpu, &dw0), up(gpu, &db0), up(gpu, &dx0));
            gpu.conv1d_backward(&xg, &wg, &dyg, with_dx.then_some(&mut dxg), &mut dwg, &mut dbg, s).unwrap();
            assert_close(&format!("{what}: dw"), &read(gpu, &dwg, wlen), &dwc);
            assert_close(&format!("{what}: db"), &read(gpu, &dbg, s.c_out), &dbc);
            assert_close(&format!("{what}: dx"), &read(gpu, &dxg, dx0.len()), &dxc);
        }
    }
}

/// MPD's 60×112 image (height = steps, width = features) in 10×16 and 12×8
/// patches, with and without a class token, batch 1 and 3.
pub fn patch_shapes() -> Vec<PatchShape> {
    let mut v = Vec::new();
    for (patch_h, patch_w, dim) in [(10, 16, 256), (12, 8, 72)] {
        for cls_token in [true, false] {
            for batch in [1, 3] {
                v.push(PatchShape { batch, height: 60, width: 112, patch_h, patch_w, dim, cls_token });
            }
        }
    }
    v
}

/// `patch_embed_backward`: dW, db, dcls (with a class token) and dpos add.
pub fn patch_embed_backward_shapes<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, s) in patch_shapes().into_iter().enumerate() {
        let seed = 2000 + 100 * i as u64;
        let (tokens, plen, d) = (s.tokens(), s.patch_h * s.patch_w, s.dim);
        let x = data(s.batch * s.height * s.width, seed + 1, 1.0);
        let dout = data(s.batch * tokens * d, seed + 2, 1.0);
        let dw0 = data(d * plen, seed + 3, 0.5);
        let db0 = data(d, seed + 4, 0.5);
        let dcls0 = data(d, seed + 5, 0.5);
        let dpos0 = data(tokens * d, seed + 6, 0.5);
        let what = format!("patch_embed_backward {s:?}");
        let (mut dwc, mut dbc, mut dclsc, mut dposc) = (dw0.clone(), db0.clone(), dcls0.clone(), dpos0.clone());
        cpu.patch_embed_backward(&x, &dout, &mut dwc, &mut dbc, s.cls_token.then_some(&mut dclsc), &mut dposc, s)
            .unwrap();
        let (xg, doutg) = (up(gpu, &x), up(gpu, &dout));
        let (mut dwg, mut dbg, mut dclsg, mut dposg) = (up(gpu, &dw0), up(gpu, &db0), up(gpu, &dcls0), up(gpu, &dpos0));
        gpu.patch_embed_backward(&xg, &doutg, &mut dwg, &mut dbg, s.cls_token.then_some(&mut dclsg), &mut dposg, s)
            .unwrap();
        assert_close(&format!("{what}: dw"), &read(gpu, &dwg, dw0.len()), &dwc);
        assert_close(&format!("{what}: db"), &read(gpu, &dbg, d), &dbc);
        assert_close(&format!("{what}: dcls"), &read(gpu, &dclsg, d), &dclsc);
        assert_close(&format!("{what}: dpos"), &read(gpu, &dposg, dpos0.len()), &dposc);
        if !s.cls_token {
            // Without a class token a given dcls is ignored.
            let mut dclsg = up(gpu, &dcls0);
            let mut dwg = up(gpu, &dw0);
            gpu.patch_embed_backward(&xg, &doutg, &mut dwg, &mut dbg, Some(&mut dclsg), &mut dposg, s).unwrap();
            assert_eq!(read(gpu, &dclsg, d), dcls0, "{what}: dcls untouched");
            assert_close(&format!("{what}: dw (dcls given)"), &read(gpu, &dwg, dw0.len()), &dwc);
        }
    }
}

/// `layernorm_backward` over 1, 49 and 100·17 rows of 32, 112 and 256
/// features: dx, dgamma and dbeta add.
pub fn layernorm_backward_shapes<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, rows) in [1, 49, 100 * 17].into_iter().enumerate() {
        for (j, dim) in [32, 112, 256].into_iter().enumerate() {
            let seed = 3000 + 100 * (3 * i + j) as u64;
            // An offset mean, so the centred variance matters.
            let x: Vec<f32> = data(rows * dim, seed + 1, 2.0).iter().map(|v| v + 0.7).collect();
            let gamma = data(dim, seed + 2, 1.0);
            let dy = data(rows * dim, seed + 3, 1.0);
            let dx0 = data(rows * dim, seed + 4, 0.5);
            let dg0 = data(dim, seed + 5, 0.5);
            let db0 = data(dim, seed + 6, 0.5);
            let what = format!("layernorm_backward {rows}x{dim}");
            let (mut dxc, mut dgc, mut dbc) = (dx0.clone(), dg0.clone(), db0.clone());
            cpu.layernorm_backward(&x, &gamma, &dy, &mut dxc, &mut dgc, &mut dbc, rows, dim).unwrap();
            let (xg, gg, dyg) = (up(gpu, &x), up(gpu, &gamma), up(gpu, &dy));
            let (mut dxg, mut dgg, mut dbg) = (up(gpu, &dx0), up(gpu, &dg0), up(gpu, &db0));
            gpu.layernorm_backward(&xg, &gg, &dyg, &mut dxg, &mut dgg, &mut dbg, rows, dim).unwrap();
            assert_close(&format!("{what}: dx"), &read(gpu, &dxg, dx0.len()), &dxc);
            assert_close(&format!("{what}: dgamma"), &read(gpu, &dgg, dim), &dgc);
            assert_close(&format!("{what}: dbeta"), &read(gpu, &dbg, dim), &dbc);
        }
    }
}

/// `prepare_linear_from` (on the device, after an optimizer step) gives
/// `prepare_linear`'s layout (the forward then reads it), in place;
/// `prepare_recurrent_from` gives `prepare_recurrent`'s.
pub fn prepare_from_matches_prepare<G: Train>(gpu: &G) {
    for (i, &(_, n_in, n_out)) in LINEAR_SHAPES.iter().enumerate() {
        let w = data(n_out * n_in, 4000 + i as u64, 1.0);
        let want = read(gpu, &gpu.prepare_linear(&w, n_out, n_in).unwrap(), n_out * n_in);
        // A longer destination keeps its tail.
        let mut dst = up(gpu, &vec![9.0; n_out * n_in + 3]);
        gpu.prepare_linear_from(&up(gpu, &w), n_out, n_in, &mut dst).unwrap();
        let got = read(gpu, &dst, n_out * n_in + 3);
        assert_eq!(&got[..n_out * n_in], &want[..], "prepare_linear_from {n_out}x{n_in}");
        assert_eq!(&got[n_out * n_in..], &[9.0; 3], "prepare_linear_from {n_out}x{n_in}: tail");
        // And the forward through it agrees with the CPU's.
        let rows = 3;
        let x = data(rows * n_in, 4100 + i as u64, 1.0);
        let b = data(n_out, 4200 + i as u64, 0.5);
        let s = LinearShape { rows, n_in, n_out };
        let cpu = Cpu::new();
        let mut yc = vec![0f32; rows * n_out];
        cpu.linear(&x, &cpu.prepare_linear(&w, n_out, n_in).unwrap(), &b, &mut yc, s, quorum::backend::Epilogue::None)
            .unwrap();
        let mut yg = gpu.alloc(rows * n_out).unwrap();
        gpu.linear(&up(gpu, &x), &dst, &up(gpu, &b), &mut yg, s, quorum::backend::Epilogue::None).unwrap();
        assert_close(&format!("linear through prepare_linear_from {n_out}x{n_in}"), &read(gpu, &yg, rows * n_out), &yc);
    }
    for hidden in [1, 17, 64] {
        let n = 4 * hidden * hidden;
        let w = data(n, 4300 + hidden as u64, 1.0);
        let want = read(gpu, &gpu.prepare_recurrent(&w, hidden).unwrap(), n);
        let mut dst = gpu.alloc(n).unwrap();
        gpu.prepare_recurrent_from(&up(gpu, &w), hidden, &mut dst).unwrap();
        assert_eq!(read(gpu, &dst, n), want, "prepare_recurrent_from {hidden}");
    }
}

/// Every op of the family refuses a short buffer (or an inconsistent
/// shape) with an error naming the op, not a panic or an out-of-bounds launch.
pub fn short_buffers_are_errors<G: Train>(gpu: &G) {
    let z = |n: usize| gpu.alloc(n).unwrap();
    let expect_err = |what: &str, r: quorum::error::Result<()>| {
        let e = r.expect_err(what).to_string();
        let op = what.split(' ').next().unwrap();
        assert!(e.contains(op), "{what}: error {e:?} does not name {op}");
    };
    // prepare_*_from
    expect_err("prepare_linear_from dst", gpu.prepare_linear_from(&z(6), 2, 3, &mut z(5)));
    expect_err("prepare_linear_from w", gpu.prepare_linear_from(&z(5), 2, 3, &mut z(6)));
    expect_err("prepare_recurrent_from dst", gpu.prepare_recurrent_from(&z(16), 2, &mut z(15)));
    expect_err("prepare_recurrent_from w", gpu.prepare_recurrent_from(&z(15), 2, &mut z(16)));
    // linear_backward (rows 4, 3 → 5)
    let s = LinearShape { rows: 4, n_in: 3, n_out: 5 };
    let (x, w, dy) = (z(12), z(15), z(20));
    expect_err("linear_backward x", gpu.linear_backward(&z(11), &w, &dy, None, &mut z(15), None, s, false));
    expect_err("linear_backward w", gpu.linear_backward(&x, &z(14), &dy, None, &mut z(15), None, s, false));
    expect_err("linear_backward dy", gpu.linear_backward(&x, &w, &z(19), None, &mut z(15), None, s, false));
    expect_err("linear_backward dw", gpu.linear_backward(&x, &w, &dy, None, &mut z(14), None, s, false));
    expect_err("linear_backward dx", gpu.linear_backward(&x, &w, &dy, Some(&mut z(11)), &mut z(15), None, s, false));
    expect_err("linear_backward db", gpu.linear_backward(&x, &w, &dy, None, &mut z(15), Some(&mut z(4)), s, false));
    // conv1d_backward (2 samples of 5 steps, 3 → 4 channels, k 3, at column 4 of rows of 8)
    let s = ConvShape { samples: 2, len: 5, c_in: 3, c_out: 4, kernel: 3, out_stride: 8, out_offset: 4 };
    let (x, w, dy) = (z(30), z(36), z(80));
    expect_err("conv1d_backward x", gpu.conv1d_backward(&z(29), &w, &dy, None, &mut z(36), &mut z(4), s));
    expect_err("conv1d_backward w", gpu.conv1d_backward(&x, &z(35), &dy, None, &mut z(36), &mut z(4), s));
    expect_err("conv1d_backward dy", gpu.conv1d_backward(&x, &w, &z(79), None, &mut z(36), &mut z(4), s));
    expect_err("conv1d_backward dw", gpu.conv1d_backward(&x, &w, &dy, None, &mut z(35), &mut z(4), s));
    expect_err("conv1d_backward db", gpu.conv1d_backward(&x, &w, &dy, None, &mut z(36), &mut z(3), s));
    expect_err("conv1d_backward dx", gpu.conv1d_backward(&x, &w, &dy, Some(&mut z(29)), &mut z(36), &mut z(4), s));
    let wide = ConvShape { out_offset: 5, ..s };
    expect_err("conv1d_backward offset", gpu.conv1d_backward(&x, &w, &dy, None, &mut z(36), &mut z(4), wide));
    let even = ConvShape { kernel: 2, ..s };
    expect_err("conv1d_backward even", gpu.conv1d_backward(&x, &w, &dy, None, &mut z(36), &mut z(4), even));
    // patch_embed_backward (2 images of 4×6 in 2×3 patches, dim 5, class token: 5 tokens)
    let s = PatchShape { batch: 2, height: 4, width: 6, patch_h: 2, patch_w: 3, dim: 5, cls_token: true };
    let (x, dout) = (z(48), z(50));
    let pe = |x: &G::Buf, dout: &G::Buf, dw: usize, db: usize, dcls: Option<usize>, dpos: usize, s: PatchShape| {
        let mut c = dcls.map(z);
        gpu.patch_embed_backward(x, dout, &mut z(dw), &mut z(db), c.as_mut(), &mut z(dpos), s)
    };
    pe(&x, &dout, 30, 5, Some(5), 25, s).unwrap();
    expect_err("patch_embed_backward x", pe(&z(47), &dout, 30, 5, Some(5), 25, s));
    expect_err("patch_embed_backward dout", pe(&x, &z(49), 30, 5, Some(5), 25, s));
    expect_err("patch_embed_backward dw", pe(&x, &dout, 29, 5, Some(5), 25, s));
    expect_err("patch_embed_backward db", pe(&x, &dout, 30, 4, Some(5), 25, s));
    expect_err("patch_embed_backward dcls", pe(&x, &dout, 30, 5, Some(4), 25, s));
    expect_err("patch_embed_backward no dcls", pe(&x, &dout, 30, 5, None, 25, s));
    expect_err("patch_embed_backward dpos", pe(&x, &dout, 30, 5, Some(5), 24, s));
    let ragged = PatchShape { width: 7, ..s };
    expect_err("patch_embed_backward ragged", pe(&z(56), &dout, 30, 5, Some(5), 25, ragged));
    // layernorm_backward (3 rows of 4)
    let ln = |x: usize, g: usize, dy: usize, dx: usize, dg: usize, db: usize| {
        gpu.layernorm_backward(&z(x), &z(g), &z(dy), &mut z(dx), &mut z(dg), &mut z(db), 3, 4)
    };
    ln(12, 4, 12, 12, 4, 4).unwrap();
    expect_err("layernorm_backward x", ln(11, 4, 12, 12, 4, 4));
    expect_err("layernorm_backward gamma", ln(12, 3, 12, 12, 4, 4));
    expect_err("layernorm_backward dy", ln(12, 4, 11, 12, 4, 4));
    expect_err("layernorm_backward dx", ln(12, 4, 12, 11, 4, 4));
    expect_err("layernorm_backward dgamma", ln(12, 4, 12, 12, 3, 4));
    expect_err("layernorm_backward dbeta", ln(12, 4, 12, 12, 4, 3));
}

/// Every output of the family on one set of inputs (a representative shape
/// per op, gradients starting nonzero), as bits: for comparing runs and
/// thread orders.
pub fn gradient_bits<G: Train>(gpu: &G) -> Vec<Vec<u32>> {
    let bits = |b: &G::Buf, n: usize| read(gpu, b, n).iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut out = Vec::new();
    // linear 65×112 → 100, dx accumulated, db.
    let s = LinearShape { rows: 65, n_in: 112, n_out: 100 };
    let (x, w, dy) =
        (up(gpu, &data(65 * 112, 1, 1.0)), up(gpu, &data(100 * 112, 2, 0.2)), up(gpu, &data(6500, 3, 1.0)));
    let (mut dw, mut db, mut dx) =
        (up(gpu, &data(11200, 4, 0.5)), up(gpu, &data(100, 5, 0.5)), up(gpu, &data(65 * 112, 6, 0.5)));
    gpu.linear_backward(&x, &w, &dy, Some(&mut dx), &mut dw, Some(&mut db), s, true).unwrap();
    out.extend([bits(&dw, 11200), bits(&db, 100), bits(&dx, 65 * 112)]);
    // conv: TLOB's k 7 branch at column 2·40 of rows of 120.
    let s = ConvShape { samples: 3, len: 100, c_in: 40, c_out: 40, kernel: 7, out_stride: 120, out_offset: 80 };
    let (x, w, dy) = (up(gpu, &data(12000, 7, 1.0)), up(gpu, &data(11200, 8, 0.2)), up(gpu, &data(36000, 9, 1.0)));
    let (mut dw, mut db, mut dx) =
        (up(gpu, &data(11200, 10, 0.5)), up(gpu, &data(40, 11, 0.5)), up(gpu, &data(12000, 12, 0.5)));
    gpu.conv1d_backward(&x, &w, &dy, Some(&mut dx), &mut dw, &mut db, s).unwrap();
    out.extend([bits(&dw, 11200), bits(&db, 40), bits(&dx, 12000)]);
    // patches: 3 images, 12×8 patches, class token.
    let s = PatchShape { batch: 3, height: 60, width: 112, patch_h: 12, patch_w: 8, dim: 72, cls_token: true };
    let (tokens, plen) = (s.tokens(), 96);
    let (x, dout) = (up(gpu, &data(3 * 60 * 112, 13, 1.0)), up(gpu, &data(3 * tokens * 72, 14, 1.0)));
    let (mut dw, mut db) = (up(gpu, &data(72 * plen, 15, 0.5)), up(gpu, &data(72, 16, 0.5)));
    let (mut dcls, mut dpos) = (up(gpu, &data(72, 17, 0.5)), up(gpu, &data(tokens * 72, 18, 0.5)));
    gpu.patch_embed_backward(&x, &dout, &mut dw, &mut db, Some(&mut dcls), &mut dpos, s).unwrap();
    out.extend([bits(&dw, 72 * plen), bits(&db, 72), bits(&dcls, 72), bits(&dpos, tokens * 72)]);
    // layernorm: 100·17 rows of 112.
    let (rows, dim) = (1700, 112);
    let (x, g, dy) =
        (up(gpu, &data(rows * dim, 19, 2.0)), up(gpu, &data(dim, 20, 1.0)), up(gpu, &data(rows * dim, 21, 1.0)));
    let (mut dx, mut dg, mut dbt) =
        (up(gpu, &data(rows * dim, 22, 0.5)), up(gpu, &data(dim, 23, 0.5)), up(gpu, &data(dim, 24, 0.5)));
    gpu.layernorm_backward(&x, &g, &dy, &mut dx, &mut dg, &mut dbt, rows, dim).unwrap();
    out.extend([bits(&dx, rows * dim), bits(&dg, dim), bits(&dbt, dim)]);
    out
}

/// Two runs on the same inputs give the same bits.
pub fn gradients_bit_identical_across_runs<G: Train>(gpu: &G) {
    assert!(gradient_bits(gpu) == gradient_bits(gpu), "two runs differ");
}
