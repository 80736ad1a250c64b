//! Kernel-by-kernel comparisons of a backend under test (the GPU backend on
//! the emulator, or on a real device) against the CPU backend, on awkward
//! sizes (not multiples of any tile; batch 1, 3 and 17; 49 and 100 tokens;
//! 112 features), within docs/models.md's f32 tolerance: max abs diff ≤
//! 1e-4·(1 + max |ref|) per output tensor (confidences: 1e-5 absolute).
#![allow(dead_code)]

use quorum::backend::cpu::int8::reference as int8_reference;
use quorum::backend::gpu::params::{Int8, MmaCheckParams, F16};
use quorum::backend::gpu::{Device, Gpu, LaunchConfig, Precision};
use quorum::backend::ops::conv1d;
use quorum::backend::{
    AttentionShape, Backend, BroadcastShape, ConvShape, ConvWeights, Epilogue, HeadsOut, HeadsRef, LinearShape,
    LstmShape, PatchShape, Pool,
};
use quorum::Cpu;

/// Deterministic values in [-scale, scale) (an LCG; no test depends on a seed's luck).
pub fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * (1.0 + max_ref);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // NaN (e.g. a read of poisoned shared memory) counts as infinitely wrong.
        let d = if (g - w).is_nan() { f32::INFINITY } else { (g - w).abs() };
        if d > worst {
            worst = d;
            at = i;
        }
    }
    assert!(worst <= tol, "{what}: max abs diff {worst:e} at {at} > {tol:e} (got {} want {})", got[at], want[at]);
}

/// The CPU reference and the backend under test.
pub struct Pair<'a, G: Backend> {
    pub cpu: Cpu,
    pub gpu: &'a G,
}

pub fn read<G: Backend>(g: &G, b: &G::Buf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    g.read(b, &mut v).unwrap();
    v
}

pub fn linear_all_epilogues<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(rows, n_in, n_out)) in
        [(1, 3, 5), (3, 33, 17), (17, 112, 100), (49, 256, 768), (100, 128, 129), (65, 17, 64)].iter().enumerate()
    {
        let x = data(rows * n_in, 1 + i as u64, 1.0);
        let w = data(n_out * n_in, 2 + i as u64, 0.2);
        let b = data(n_out, 3 + i as u64, 0.5);
        let y0 = data(rows * n_out, 4 + i as u64, 1.0);
        for epi in [Epilogue::None, Epilogue::Gelu, Epilogue::Accumulate] {
            let s = LinearShape { rows, n_in, n_out };
            let mut yc = y0.clone();
            let wc = p.cpu.prepare_linear(&w, n_out, n_in).unwrap();
            p.cpu.linear(&x, &wc, &b, &mut yc, s, epi).unwrap();
            let (xg, wg, bg) =
                (p.gpu.upload(&x).unwrap(), p.gpu.prepare_linear(&w, n_out, n_in).unwrap(), p.gpu.upload(&b).unwrap());
            let mut yg = p.gpu.upload(&y0).unwrap();
            p.gpu.linear(&xg, &wg, &bg, &mut yg, s, epi).unwrap();
            assert_close(&format!("linear {rows}x{n_in}x{n_out} {epi:?}"), &read(p.gpu, &yg, rows * n_out), &yc);
        }
    }
}

pub fn layernorm_rows<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(rows, dim)) in [(1, 256), (3, 112), (17 * 49, 128), (7, 33), (17, 256)].iter().enumerate() {
        // An offset mean, as in a residual stream.
        let x: Vec<f32> = data(rows * dim, 10 + i as u64, 2.0).iter().map(|v| v + 3.0).collect();
        let g = data(dim, 11, 1.0);
        let b = data(dim, 12, 0.3);
        let mut yc = vec![0f32; rows * dim];
        p.cpu.layernorm(&x, &g, &b, &mut yc, rows, dim).unwrap();
        let mut yg = p.gpu.alloc(rows * dim).unwrap();
        let (xg, gg, bg) = (p.gpu.upload(&x).unwrap(), p.gpu.upload(&g).unwrap(), p.gpu.upload(&b).unwrap());
        p.gpu.layernorm(&xg, &gg, &bg, &mut yg, rows, dim).unwrap();
        assert_close(&format!("layernorm {rows}x{dim}"), &read(p.gpu, &yg, rows * dim), &yc);
    }
}

pub fn attention_short_sequences<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(batch, tokens, heads, head_dim)) in
        [(1, 49, 8, 32), (3, 100, 4, 32), (17, 49, 2, 32), (2, 37, 3, 48), (1, 1, 1, 32), (3, 60, 2, 7)]
            .iter()
            .enumerate()
    {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        let qkv = data(batch * tokens * 3 * s.dim(), 20 + i as u64, 2.0);
        let mut oc = vec![0f32; batch * tokens * s.dim()];
        p.cpu.attention(&qkv, &mut oc, s).unwrap();
        let mut og = p.gpu.alloc(oc.len()).unwrap();
        p.gpu.attention(&p.gpu.upload(&qkv).unwrap(), &mut og, s).unwrap();
        assert_close(&format!("attention {s:?}"), &read(p.gpu, &og, oc.len()), &oc);
    }
}

pub fn patch_embedding_with_and_without_cls<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(batch, height, width, ph, pw, dim, cls)) in
        [(1, 60, 112, 10, 14, 256, true), (3, 60, 112, 10, 14, 40, false), (17, 20, 21, 5, 7, 33, true)]
            .iter()
            .enumerate()
    {
        let s = PatchShape { batch, height, width, patch_h: ph, patch_w: pw, dim, cls_token: cls };
        let x = data(batch * height * width, 30 + i as u64, 1.0);
        let w = data(dim * ph * pw, 31, 0.1);
        let b = data(dim, 32, 0.5);
        let c = data(dim, 33, 0.5);
        let pos = data(s.tokens() * dim, 34, 0.5);
        let n = batch * s.tokens() * dim;
        let mut oc = vec![0f32; n];
        let wc = p.cpu.prepare_linear(&w, dim, ph * pw).unwrap();
        p.cpu.patch_embed(&x, &wc, &b, cls.then_some(&c), &pos, &mut oc, s).unwrap();
        let g = p.gpu;
        let (xg, wg, bg, cg, pg) = (
            g.upload(&x).unwrap(),
            g.prepare_linear(&w, dim, ph * pw).unwrap(),
            g.upload(&b).unwrap(),
            g.upload(&c).unwrap(),
            g.upload(&pos).unwrap(),
        );
        let mut og = g.upload(&vec![f32::NAN; n]).unwrap();
        g.patch_embed(&xg, &wg, &bg, cls.then_some(&cg), &pg, &mut og, s).unwrap();
        assert_close(&format!("patch_embed {s:?}"), &read(g, &og, n), &oc);
    }
}

pub fn conv1d_with_offsets_and_gelu<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(samples, len, c_in, c_out, k, stride, off, gelu)) in [
        (3, 15, 24, 16, 3, 16, 0, false),
        (2, 7, 5, 12, 5, 20, 7, true),
        (17 * 3, 20, 4, 32, 3, 32, 0, true),
        (1, 60, 112, 128, 3, 128, 0, true),
        (17, 60, 128, 128, 3, 130, 1, true),
    ]
    .iter()
    .enumerate()
    {
        let s = ConvShape { samples, len, c_in, c_out, kernel: k, out_stride: stride, out_offset: off };
        let x = data(samples * len * c_in, 40 + i as u64, 1.0);
        let w = data(c_out * c_in * k, 41, 0.2);
        let b = data(c_out, 42, 0.5);
        // Columns outside [off, off + c_out) must be left alone.
        let y0 = data(samples * len * stride, 43, 1.0);
        let mut yc = y0.clone();
        let wc = p.cpu.prepare_linear(&w, c_out, c_in * k).unwrap();
        p.cpu.conv1d(&x, &wc, &b, &mut yc, s, gelu).unwrap();
        let g = p.gpu;
        let mut yg = g.upload(&y0).unwrap();
        let (xg, wg, bg) =
            (g.upload(&x).unwrap(), g.prepare_linear(&w, c_out, c_in * k).unwrap(), g.upload(&b).unwrap());
        g.conv1d(&xg, &wg, &bg, &mut yg, s, gelu).unwrap();
        assert_close(&format!("conv1d {s:?} gelu {gelu}"), &read(g, &yg, y0.len()), &yc);
    }
}

pub fn multiscale_conv_in_one_launch_and_in_chunks<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    // Three branches (TLOB's 3, 5, 7) fit one launch; five take two.
    for (i, kernels) in [vec![3usize, 5, 7], vec![1, 3, 5, 7, 9]].iter().enumerate() {
        let (samples, len, dim) = (3, 100, 24);
        let x = data(samples * len * dim, 50 + i as u64, 1.0);
        let raw: Vec<(Vec<f32>, Vec<f32>, usize)> = kernels
            .iter()
            .enumerate()
            .map(|(j, &k)| (data(dim * dim * k, 60 + j as u64, 0.2), data(dim, 70 + j as u64, 0.5), k))
            .collect();
        let cpu_br: Vec<ConvWeights<Cpu>> = raw
            .iter()
            .map(|(w, b, k)| ConvWeights {
                w: p.cpu.prepare_linear(w, dim, dim * k).unwrap(),
                b: b.clone(),
                c_in: dim,
                c_out: dim,
                kernel: *k,
            })
            .collect();
        let gpu_br: Vec<ConvWeights<G>> = raw
            .iter()
            .map(|(w, b, k)| ConvWeights {
                w: p.gpu.prepare_linear(w, dim, dim * k).unwrap(),
                b: p.gpu.upload(b).unwrap(),
                c_in: dim,
                c_out: dim,
                kernel: *k,
            })
            .collect();
        let n = samples * len * dim * kernels.len();
        let mut yc = vec![0f32; n];
        p.cpu.multiscale_conv(&x, &cpu_br, &mut yc, samples, len, dim).unwrap();
        let mut yg = p.gpu.upload(&vec![f32::NAN; n]).unwrap();
        p.gpu.multiscale_conv(&p.gpu.upload(&x).unwrap(), &gpu_br, &mut yg, samples, len, dim).unwrap();
        assert_close(&format!("multiscale {kernels:?}"), &read(p.gpu, &yg, n), &yc);
    }
}

pub fn lstm_recurrence_batch_1_3_17<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(batch, steps, hidden)) in [(1, 60, 256), (3, 60, 40), (17, 13, 33)].iter().enumerate() {
        let s = LstmShape { batch, steps, hidden };
        let gx = data(batch * steps * 4 * hidden, 80 + i as u64, 2.0);
        let w = data(4 * hidden * hidden, 81, 1.0 / (hidden as f32).sqrt());
        let mut hc = vec![0f32; batch * steps * hidden];
        p.cpu.lstm(&gx, &p.cpu.prepare_recurrent(&w, hidden).unwrap(), &mut hc, s).unwrap();
        let mut hg = p.gpu.alloc(hc.len()).unwrap();
        let wg = p.gpu.prepare_recurrent(&w, hidden).unwrap();
        p.gpu.lstm(&p.gpu.upload(&gx).unwrap(), &wg, &mut hg, s).unwrap();
        assert_close(&format!("lstm {s:?}"), &read(p.gpu, &hg, hc.len()), &hc);
    }
}

pub fn elementwise_ops<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    let g = p.gpu;
    for (i, &(outer, inner, dim)) in [(1, 60, 112), (3, 100, 128), (17, 49, 33)].iter().enumerate() {
        let x = data(outer * inner * dim, 90 + i as u64, 1.0);
        for per_outer in [true, false] {
            let src = data(if per_outer { outer } else { inner } * dim, 91, 1.0);
            let s = BroadcastShape { outer, inner, dim, per_outer };
            let mut xc = x.clone();
            p.cpu.broadcast_add(&mut xc, &src, s).unwrap();
            let mut xg = g.upload(&x).unwrap();
            g.broadcast_add(&mut xg, &g.upload(&src).unwrap(), s).unwrap();
            assert_close(&format!("broadcast_add {s:?}"), &read(g, &xg, x.len()), &xc);
        }
        for how in [Pool::First, Pool::Mean, Pool::Last] {
            let mut oc = vec![0f32; outer * dim];
            p.cpu.pool(&x, &mut oc, outer, inner, dim, how).unwrap();
            let mut og = g.alloc(outer * dim).unwrap();
            g.pool(&g.upload(&x).unwrap(), &mut og, outer, inner, dim, how).unwrap();
            assert_close(&format!("pool {how:?} {outer}x{inner}x{dim}"), &read(g, &og, outer * dim), &oc);
        }
        let mean = data(dim, 92, 1.0);
        let std: Vec<f32> = data(dim, 93, 1.0).iter().map(|v| 0.5 + v.abs()).collect();
        let rows = outer * inner;
        let mut xc = x.clone();
        p.cpu.standardize(&mut xc, &mean, &std, rows, dim).unwrap();
        let mut xg = g.upload(&x).unwrap();
        g.standardize(&mut xg, &g.upload(&mean).unwrap(), &g.upload(&std).unwrap(), rows, dim).unwrap();
        assert_close(&format!("standardize {rows}x{dim}"), &read(g, &xg, x.len()), &xc);
    }
}

pub fn fused_heads<G: Backend>(gpu: &G) {
    let p = Pair { cpu: Cpu::new(), gpu };
    for (i, &(batch, dim)) in [(1, 256), (3, 128), (17, 33)].iter().enumerate() {
        let classes = 3;
        let z = data(batch * dim, 100 + i as u64, 1.0);
        let ws: Vec<Vec<f32>> = [classes * dim, classes, dim, 1, dim, 1]
            .iter()
            .enumerate()
            .map(|(j, &n)| data(n, 110 + j as u64, 0.3))
            .collect();
        let (mut lc, mut cc, mut rc) = (vec![0f32; batch * classes], vec![0f32; batch], vec![0f32; batch]);
        let hp = HeadsRef::<Cpu> {
            direction_w: &ws[0],
            direction_b: &ws[1],
            confidence_w: &ws[2],
            confidence_b: &ws[3],
            return_w: &ws[4],
            return_b: &ws[5],
            classes,
        };
        p.cpu
            .heads(&z, hp, HeadsOut { logits: &mut lc, confidence: &mut cc, expected_return: &mut rc }, batch, dim)
            .unwrap();
        let g = p.gpu;
        let wg: Vec<_> = ws.iter().map(|w| g.upload(w).unwrap()).collect();
        let (mut lg, mut cg, mut rg) =
            (g.alloc(batch * classes).unwrap(), g.alloc(batch).unwrap(), g.alloc(batch).unwrap());
        let hg = HeadsRef::<G> {
            direction_w: &wg[0],
            direction_b: &wg[1],
            confidence_w: &wg[2],
            confidence_b: &wg[3],
            return_w: &wg[4],
            return_b: &wg[5],
            classes,
        };
        g.heads(
            &g.upload(&z).unwrap(),
            hg,
            HeadsOut { logits: &mut lg, confidence: &mut cg, expected_return: &mut rg },
            batch,
            dim,
        )
        .unwrap();
        assert_close("heads logits", &read(g, &lg, batch * classes), &lc);
        assert_close("heads return", &read(g, &rg, batch), &rc);
        let conf = read(g, &cg, batch);
        for (a, b) in conf.iter().zip(&cc) {
            assert!((a - b).abs() <= 1e-5, "heads confidence {a} vs {b}");
        }
    }
}

/// bf16 rounding to nearest even, as mma.cuh's f32_to_bf16 (finite inputs).
pub fn bf16(x: f32) -> f32 {
    let u = x.to_bits();
    f32::from_bits((u + 0x7fff + ((u >> 16) & 1)) & 0xffff_0000)
}

/// IEEE f16 rounding to nearest even (the `half` crate's, a reference for mma.cuh's f32_to_f16).
pub fn f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `x` rounded to the 16-bit type of `precision` (f32: unchanged).
pub fn round_to(precision: Precision, x: f32) -> f32 {
    match precision {
        Precision::F32 => x,
        Precision::Bf16 => bf16(x),
        Precision::F16 => f16(x),
        Precision::Int8 => panic!("round_to is for the GPU's precisions"),
    }
}

/// mma_check.cu on a device: D = A·B + C with A and B rounded to bf16 or f16
/// (`precision`), against an f64 reference. On the emulator this checks the
/// kernel's use of the fragment helpers (the twin reads fragments through the
/// same helpers); on a GPU it checks the helpers against the hardware's layout.
pub fn mma_check<D: Device>(dev: &D, precision: Precision) {
    // Distinct values everywhere, so a fragment mix-up changes the result.
    let a = data(16 * 16, 1, 1.0);
    let b = data(16 * 8, 2, 1.0);
    let c = data(16 * 8, 3, 1.0);
    let (ab, bb, cb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.upload(&c).unwrap());
    let mut db = dev.upload(&[f32::NAN; 128]).unwrap();
    let p = MmaCheckParams { a: dev.ptr(&ab), b: dev.ptr(&bb), c: dev.ptr(&cb), d: dev.ptr_mut(&mut db) };
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 };
    // SAFETY: the buffers hold the 16×16, 16×8 and 16×8 matrices the kernel reads and writes.
    match precision {
        Precision::Bf16 => unsafe { dev.launch(cfg, &p) }.unwrap(),
        Precision::F16 => unsafe { dev.launch(cfg, &F16(p)) }.unwrap(),
        Precision::F32 | Precision::Int8 => panic!("mma_check is for the 16-bit precisions"),
    }
    let round = |x: f32| round_to(precision, x);
    let mut d = vec![0f32; 128];
    dev.read(&db, &mut d).unwrap();
    for r in 0..16 {
        for n in 0..8 {
            let want: f64 = c[r * 8 + n] as f64
                + (0..16).map(|k| round(a[r * 16 + k]) as f64 * round(b[k * 8 + n]) as f64).sum::<f64>();
            let got = d[r * 8 + n] as f64;
            // f32 accumulation of 16 exact 16-bit products: a few ulp of the sum's scale.
            assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "d[{r}][{n}] = {got}, want {want}");
        }
    }
    // And the inputs really were rounded: with f32 inputs the answer differs.
    let exact: f64 = c[0] as f64 + (0..16).map(|k| a[k] as f64 * b[k * 8] as f64).sum::<f64>();
    assert!((d[0] as f64 - exact).abs() > 1e-6, "{precision:?} rounding is visible");
}

/// mma.cuh's hand-written conversions (device f32 → bf16/f16 → f32) equal
/// round-to-nearest-even, on the cases that break naive ones: ties either
/// way, subnormals and the boundary to zero, overflow to infinity, NaN.
pub fn half_conversions_round_to_nearest_even<D: Device>(dev: &D) {
    use quorum::backend::gpu::params::HalfRoundTripParams;
    let mut x: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.0,
        65520.0,
        -70000.0,
        1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        6.103_515_6e-5, // 2^-14: smallest normal f16
        6.0e-5,
        3.0e-6,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_233e-8,
        1e-9,
        -4.5e-7,
        1.000_488_3,
        1.000_976_6,
        1.001_464_8, // f16 ties at 1 + 2^-11, 1 + 2^-10 + 2^-11 (to even: down, up)
        1.003_906_3,
        1.005_859_4, // bf16 ties at 1 + 2^-8 and 1 + 3·2^-8
        1e-40,
        3.4e38,
        -2.5,
    ];
    x.extend(data(2000, 9, 8.0));
    let xb = dev.upload(&x).unwrap();
    for (kind, p) in [(0, Precision::Bf16), (1, Precision::F16)] {
        let mut yb = dev.upload(&vec![f32::NAN; x.len()]).unwrap();
        let params = HalfRoundTripParams { x: dev.ptr(&xb), y: dev.ptr_mut(&mut yb), n: x.len() as i32, kind };
        let cfg = LaunchConfig { grid: [8, 1, 1], block: [128, 1, 1], shared_bytes: 0 };
        // SAFETY: x and y hold n floats.
        unsafe { dev.launch(cfg, &params) }.unwrap();
        let mut y = vec![0f32; x.len()];
        dev.read(&yb, &mut y).unwrap();
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            let want = match p {
                Precision::F16 => half::f16::from_f32(xi).to_f32(),
                _ => half::bf16::from_f32(xi).to_f32(),
            };
            assert!(want.to_bits() == yi.to_bits(), "{p:?} x[{i}] = {xi:e}: got {yi:e}, want {want:e}");
        }
        let nan = dev.upload(&[f32::NAN]).unwrap();
        let mut out = dev.upload(&[0.0]).unwrap();
        let params = HalfRoundTripParams { x: dev.ptr(&nan), y: dev.ptr_mut(&mut out), n: 1, kind };
        // SAFETY: one float each.
        unsafe { dev.launch(LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 }, &params) }.unwrap();
        let mut one = [0f32];
        dev.read(&out, &mut one).unwrap();
        assert!(one[0].is_nan(), "{p:?}: NaN stays NaN");
    }
}

/// Values already exact in the 16-bit type, so the kernels' own rounding of
/// their inputs and weights is the identity and the CPU reference can be
/// exact f32: what is compared is the tensor-core tiling, staging, fragments
/// and epilogues, at the f32 tolerance.
pub fn half_data(p: Precision, n: usize, seed: u64, scale: f32) -> Vec<f32> {
    data(n, seed, scale).into_iter().map(|v| round_to(p, v)).collect()
}

/// The 16-bit GEMM (`g` runs in precision `p`) against the CPU in f32.
pub fn half_linear_all_epilogues<G: Backend>(g: &G, p: Precision) {
    {
        let cpu = Cpu::new();
        for (i, &(rows, n_in, n_out)) in
            [(1, 3, 5), (3, 33, 17), (17, 112, 100), (49, 256, 768), (65, 17, 64), (130, 40, 33)].iter().enumerate()
        {
            let x = half_data(p, rows * n_in, 1 + i as u64, 1.0);
            let w = half_data(p, n_out * n_in, 2 + i as u64, 0.2);
            let b = data(n_out, 3 + i as u64, 0.5);
            let y0 = data(rows * n_out, 4 + i as u64, 1.0);
            for epi in [Epilogue::None, Epilogue::Gelu, Epilogue::Accumulate] {
                let s = LinearShape { rows, n_in, n_out };
                let mut yc = y0.clone();
                cpu.linear(&x, &cpu.prepare_linear(&w, n_out, n_in).unwrap(), &b, &mut yc, s, epi).unwrap();
                let mut yg = g.upload(&y0).unwrap();
                let wg = g.prepare_linear(&w, n_out, n_in).unwrap();
                g.linear(&g.upload(&x).unwrap(), &wg, &g.upload(&b).unwrap(), &mut yg, s, epi).unwrap();
                assert_close(&format!("{p:?} linear {s:?} {epi:?}"), &read(g, &yg, yc.len()), &yc);
            }
        }
    }
}

/// The 16-bit conv and patch-embedding kernels (`g` in precision `p`) against the CPU in f32.
pub fn half_conv_and_patch_embedding<G: Backend>(g: &G, p: Precision) {
    {
        let cpu = Cpu::new();
        for (i, &(samples, len, c_in, c_out, k, stride, off)) in [
            (3, 15, 24, 16, 3, 16, 0),
            (2, 7, 5, 12, 5, 20, 7),
            (17, 20, 4, 32, 3, 32, 0),
            (1, 60, 112, 128, 3, 130, 1),
        ]
        .iter()
        .enumerate()
        {
            let s = ConvShape { samples, len, c_in, c_out, kernel: k, out_stride: stride, out_offset: off };
            let x = half_data(p, samples * len * c_in, 40 + i as u64, 1.0);
            let w = half_data(p, c_out * c_in * k, 41, 0.2);
            let b = data(c_out, 42, 0.5);
            let y0 = data(samples * len * stride, 43, 1.0);
            let mut yc = y0.clone();
            cpu.conv1d(&x, &cpu.prepare_linear(&w, c_out, c_in * k).unwrap(), &b, &mut yc, s, true).unwrap();
            let mut yg = g.upload(&y0).unwrap();
            let wg = g.prepare_linear(&w, c_out, c_in * k).unwrap();
            g.conv1d(&g.upload(&x).unwrap(), &wg, &g.upload(&b).unwrap(), &mut yg, s, true).unwrap();
            assert_close(&format!("{p:?} conv1d {s:?}"), &read(g, &yg, yc.len()), &yc);
        }
        for (i, &(batch, cls)) in [(1, true), (3, false)].iter().enumerate() {
            let s = PatchShape { batch, height: 60, width: 112, patch_h: 10, patch_w: 14, dim: 40, cls_token: cls };
            let x = half_data(p, batch * 60 * 112, 30 + i as u64, 1.0);
            let w = half_data(p, 40 * 140, 31, 0.1);
            let (b, c, pos) = (data(40, 32, 0.5), data(40, 33, 0.5), data(s.tokens() * 40, 34, 0.5));
            let n = batch * s.tokens() * 40;
            let mut oc = vec![0f32; n];
            cpu.patch_embed(&x, &cpu.prepare_linear(&w, 40, 140).unwrap(), &b, cls.then_some(&c), &pos, &mut oc, s)
                .unwrap();
            let mut og = g.upload(&vec![f32::NAN; n]).unwrap();
            let (wg, cg) = (g.prepare_linear(&w, 40, 140).unwrap(), g.upload(&c).unwrap());
            g.patch_embed(
                &g.upload(&x).unwrap(),
                &wg,
                &g.upload(&b).unwrap(),
                cls.then_some(&cg),
                &g.upload(&pos).unwrap(),
                &mut og,
                s,
            )
            .unwrap();
            assert_close(&format!("{p:?} patch_embed {s:?}"), &read(g, &og, n), &oc);
        }
    }
}

/// mma_check.cu's int8 kernel on a device: D = A·B + C over k = 32 with A in
/// bytes 0..=255 and B in -128..=127, exact integers, so every output must
/// equal the reference exactly. On a GPU this is what proves the 8-bit
/// fragment helpers match the hardware's layout.
pub fn mma_check_int8<D: Device>(dev: &D) {
    // Distinct values everywhere, so a fragment mix-up changes the result.
    let a: Vec<f32> = (0..16 * 32).map(|i| ((i * 37 + 11) % 256) as f32).collect();
    let b: Vec<f32> = (0..32 * 8).map(|i| ((i * 53 + 7) % 256) as f32 - 128.0).collect();
    let c: Vec<f32> = (0..16 * 8).map(|i| (i as f32 - 64.0) * 1000.0).collect();
    let (ab, bb, cb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.upload(&c).unwrap());
    let mut db = dev.upload(&[f32::NAN; 128]).unwrap();
    let p = MmaCheckParams { a: dev.ptr(&ab), b: dev.ptr(&bb), c: dev.ptr(&cb), d: dev.ptr_mut(&mut db) };
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 };
    // SAFETY: the buffers hold the 16×32, 32×8, 16×8 and 16×8 matrices the kernel reads and writes.
    unsafe { dev.launch(cfg, &Int8(p)) }.unwrap();
    let mut d = vec![0f32; 128];
    dev.read(&db, &mut d).unwrap();
    for r in 0..16 {
        for n in 0..8 {
            let want = c[r * 8 + n] as i64 + (0..32).map(|k| a[r * 32 + k] as i64 * b[k * 8 + n] as i64).sum::<i64>();
            assert_eq!(d[r * 8 + n], want as f32, "int8 mma ({r}, {n})");
        }
    }
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// The int8 linear layer (gemm_tile_int8.cuh on a GPU backend, `g` at
/// `Precision::Int8`) against the exact integer reference, bit for bit: the
/// product, then the bias, then (accumulate) the old output, in that order.
/// Sizes around every tile edge (64 rows, 32 columns, 32 deep, 4 to a
/// word), one-sided rows as after a GELU, a row of zeros, and rows holding
/// a NaN or an infinity (NaN out, the other rows untouched).
pub fn int8_linear_has_the_exact_references_bits<G: Backend>(g: &G) {
    for (i, &(rows, k, n)) in [
        (1, 7, 5),
        (1, 1, 17),
        (2, 33, 70),
        (5, 2, 17),
        (13, 63, 200),
        (49, 256, 96),
        (65, 40, 33),
        (130, 129, 64),
        (3, 4096, 33),
    ]
    .iter()
    .enumerate()
    {
        let mut x = data(rows * k, 1 + i as u64, 1.0);
        if rows >= 3 {
            x[k..2 * k].iter_mut().filter(|v| **v < 0.0).for_each(|v| *v *= 0.05);
            x[2 * k..3 * k].fill(0.0);
        }
        let poisoned = if rows >= 13 { vec![(4, f32::NAN), (7, f32::INFINITY)] } else { vec![] };
        for &(r, v) in &poisoned {
            x[r * k + k / 2] = v;
        }
        let (w, b, y0) = (data(n * k, 2 + i as u64, 0.2), data(n, 3 + i as u64, 0.5), data(rows * n, 4, 1.0));
        let prod = int8_reference::product(&x, &w, rows, k, n);
        let (xg, wg, bg) = (g.upload(&x).unwrap(), g.prepare_linear(&w, n, k).unwrap(), g.upload(&b).unwrap());
        for epi in [Epilogue::None, Epilogue::Accumulate] {
            let mut yg = g.upload(&y0).unwrap();
            let s = LinearShape { rows, n_in: k, n_out: n };
            g.linear(&xg, &wg, &bg, &mut yg, s, epi).unwrap();
            let mut got = read(g, &yg, rows * n);
            let mut want: Vec<f32> = (0..rows * n)
                .map(|e| {
                    let v = prod[e] + b[e % n];
                    if epi == Epilogue::Accumulate {
                        v + y0[e]
                    } else {
                        v
                    }
                })
                .collect();
            for &(r, _) in &poisoned {
                assert!(got[r * n..(r + 1) * n].iter().all(|v| v.is_nan()), "{s:?}: row {r} holds a NaN or inf");
                got[r * n..(r + 1) * n].fill(0.0);
                want[r * n..(r + 1) * n].fill(0.0);
            }
            assert_bits(&format!("int8 linear {s:?} {epi:?}"), &got, &want);
        }
    }
}

/// The int8 conv (each sample quantized with one scale: its padding at the
/// zero point) and patch embedding (each patch alone; the class token's row
/// is zero) against the exact integer reference, bit for bit, in the
/// kernels' own order of additions (conv: `+ bias`; patch: `+ bias` or
/// `+ cls`, then `+ pos`). Samples shorter and longer than the 64-row
/// tile, so a tile holds parts of several samples and a sample spans tiles.
pub fn int8_conv_and_patch_have_the_exact_references_bits<G: Backend>(g: &G) {
    for (i, &(samples, len, c_in, c_out, k)) in
        [(1, 9, 1, 5, 3), (3, 20, 4, 32, 3), (2, 17, 7, 40, 5), (2, 60, 112, 64, 7), (5, 30, 13, 3, 1)]
            .iter()
            .enumerate()
    {
        let (stride, off) = (c_out + 3, 2);
        let s = ConvShape { samples, len, c_in, c_out, kernel: k, out_stride: stride, out_offset: off };
        let x: Vec<f32> = data(samples * len * c_in, 50 + i as u64, 1.0).iter().map(|v| v * 3.0 + 0.5).collect();
        let (w, b) = (data(c_out * c_in * k, 51, 0.5), data(c_out, 52, 1.0));
        let y0 = data(samples * len * stride, 53, 1.0);
        let mut yg = g.upload(&y0).unwrap();
        let (xg, wg, bg) = (g.upload(&x).unwrap(), g.prepare_conv(&w, c_out, c_in, k).unwrap(), g.upload(&b).unwrap());
        g.conv1d(&xg, &wg, &bg, &mut yg, s, false).unwrap();
        let got = read(g, &yg, y0.len());
        let mut want = y0.clone();
        for (i, prod) in conv1d::reference_int8(&x, &w, s).into_iter().enumerate() {
            let (r, o) = (i / c_out, i % c_out);
            want[r * stride + off + o] = prod + b[o];
        }
        assert_bits(&format!("int8 conv1d {s:?}"), &got, &want);
    }
    for (i, &(batch, cls)) in [(1, true), (3, false), (2, true)].iter().enumerate() {
        let s = PatchShape { batch, height: 60, width: 112, patch_h: 10, patch_w: 14, dim: 40, cls_token: cls };
        let x = data(batch * 60 * 112, 60 + i as u64, 1.0);
        let (w, b, c, pos) =
            (data(40 * 140, 61, 0.1), data(40, 62, 0.5), data(40, 63, 0.5), data(s.tokens() * 40, 64, 0.5));
        let n = batch * s.tokens() * 40;
        let mut og = g.upload(&vec![f32::NAN; n]).unwrap();
        let (wg, cg) = (g.prepare_linear(&w, 40, 140).unwrap(), g.upload(&c).unwrap());
        let (xg, bg, pg) = (g.upload(&x).unwrap(), g.upload(&b).unwrap(), g.upload(&pos).unwrap());
        g.patch_embed(&xg, &wg, &bg, cls.then_some(&cg), &pg, &mut og, s).unwrap();
        // The patches in token order, the class token's row (if any) zero.
        let nf = 112 / 14;
        let mut rows = Vec::new();
        for bi in 0..batch {
            if cls {
                rows.extend([0f32; 140]);
            }
            for p in 0..s.patches() {
                let (pi, pj) = (p / nf, p % nf);
                rows.extend((0..140).map(|e| x[(bi * 60 + pi * 10 + e / 14) * 112 + pj * 14 + e % 14]));
            }
        }
        let prod = int8_reference::product(&rows, &w, batch * s.tokens(), 140, 40);
        let want: Vec<f32> = (0..n)
            .map(|e| {
                let (tok, col) = ((e / 40) % s.tokens(), e % 40);
                let add = if cls && tok == 0 { c[col] } else { b[col] };
                prod[e] + add + pos[tok * 40 + col]
            })
            .collect();
        assert_bits(&format!("int8 patch_embed {s:?}"), &read(g, &og, n), &want);
    }
}

pub fn half_weights_really_are_rounded<D: Device>(make: impl Fn(Precision) -> Gpu<D>) {
    // With f32 inputs that are not exact in the 16-bit type, the path must
    // differ from f32 (by about its relative step: bf16 2^-9, f16 2^-12), or
    // it is not using that type at all; f16 must be the closer of the two.
    let (x, w, b) = (data(8 * 64, 1, 1.0), data(64 * 8, 2, 1.0), vec![0f32; 8]);
    let s = LinearShape { rows: 8, n_in: 64, n_out: 8 };
    let run = |g: &Gpu<D>| {
        let mut y = g.alloc(64).unwrap();
        let wg = g.prepare_linear(&w, 8, 64).unwrap();
        g.linear(&g.upload(&x).unwrap(), &wg, &g.upload(&b).unwrap(), &mut y, s, Epilogue::None).unwrap();
        read(g, &y, 64)
    };
    let yf = run(&make(Precision::F32));
    let diff = |p| {
        let yh = run(&make(p));
        yf.iter().zip(&yh).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    };
    let (wb, wh) = (diff(Precision::Bf16), diff(Precision::F16));
    assert!(wb > 1e-4 && wb < 0.1, "bf16 vs f32 max difference {wb}");
    assert!(wh > 1e-6 && wh < wb / 2.0, "f16 vs f32 max difference {wh} (bf16: {wb})");
}

/// Thread A captures one launch while thread B, on the same device, runs a
/// launch of its own and reads the result. CUDA records every launch queued
/// on the capturing stream, whichever thread queues it (and a read there
/// breaks the capture), so B's work must wait until A's capture ends and then
/// run, not be recorded into A's graph.
pub fn capture_is_exclusive_to_its_thread<D: Device>(g: &Gpu<D>) {
    let (rows, dim) = (16, 4);
    let (a0, b0) = (data(rows * dim, 1, 1.0), data(rows * dim, 2, 1.0));
    let mean = g.upload(&vec![1.0; dim]).unwrap();
    let std = g.upload(&vec![2.0; dim]).unwrap();
    let standardized = |x: &[f32]| x.iter().map(|v| (v - 1.0) / 2.0).collect::<Vec<f32>>();
    let (mut xa, mut xb) = (g.upload(&a0).unwrap(), g.upload(&b0).unwrap());
    assert!(g.begin_capture().unwrap(), "a GPU backend records");
    let (reached, wait_b) = std::sync::mpsc::channel();
    let got_b = std::thread::scope(|s| {
        let b = s.spawn(|| {
            reached.send(()).unwrap();
            g.standardize(&mut xb, &mean, &std, rows, dim).unwrap();
            read(g, &xb, rows * dim)
        });
        wait_b.recv().unwrap();
        // Give B time to reach the device while A is still capturing.
        std::thread::sleep(std::time::Duration::from_millis(50));
        g.standardize(&mut xa, &mean, &std, rows, dim).unwrap();
        let graph = g.end_capture().unwrap();
        assert_eq!(read(g, &xa, rows * dim), a0, "A's launch was recorded, not run");
        g.replay(&graph).unwrap();
        assert_eq!(read(g, &xa, rows * dim), standardized(&a0), "the graph holds A's launch");
        g.replay(&graph).unwrap();
        assert_eq!(
            read(g, &xa, rows * dim),
            standardized(&standardized(&a0)),
            "and only A's: a replay standardizes A once more"
        );
        b.join().unwrap()
    });
    assert_eq!(got_b, standardized(&b0), "B's launch ran once, outside A's graph");
    assert_eq!(read(g, &xb, rows * dim), standardized(&b0), "replaying A's graph left B alone");
}
