//! Every kernel of kernels/*.cu, run by the CUDA emulator (`Gpu<Emu>`),
//! against the CPU backend on awkward sizes (not multiples of any tile;
//! batch 1, 3 and 17; 49 and 100 tokens; 112 features), within models.md's
//! f32 tolerance: max abs diff ≤ 1e-4·(1 + max |ref|) per output tensor
//! (confidences: 1e-5 absolute). And tests of the emulator itself: it catches
//! a missing `__syncthreads`, a divergent barrier, and implements CUDA's
//! warp-collective rules.

#[path = "common/kernels.rs"]
mod kernels;

use kernels::{data, read};
use quorum::backend::gpu::emu::selftest::{self, SelfTest};
use quorum::backend::gpu::{Emu, Gpu, Precision, ThreadOrder};
use quorum::backend::{AttentionShape, Backend};

/// Runs a kernel comparison under each of the emulator's schedules: forward
/// and reverse thread order everywhere, and alternating per block, so a
/// missing barrier shows in single-block launches too.
fn each_order(case: fn(&Gpu<Emu>)) {
    for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
        case(&Gpu::new(Emu::with_order(order)));
    }
}

#[test]
fn linear_all_epilogues() {
    each_order(kernels::linear_all_epilogues);
}

#[test]
fn layernorm_rows() {
    each_order(kernels::layernorm_rows);
}

#[test]
fn attention_short_sequences() {
    each_order(kernels::attention_short_sequences);
}

#[test]
fn patch_embedding_with_and_without_cls() {
    each_order(kernels::patch_embedding_with_and_without_cls);
}

#[test]
fn conv1d_with_offsets_and_gelu() {
    each_order(kernels::conv1d_with_offsets_and_gelu);
}

#[test]
fn multiscale_conv_in_one_launch_and_in_chunks() {
    each_order(kernels::multiscale_conv_in_one_launch_and_in_chunks);
}

#[test]
fn lstm_recurrence_batch_1_3_17() {
    each_order(kernels::lstm_recurrence_batch_1_3_17);
}

#[test]
fn elementwise_ops() {
    each_order(kernels::elementwise_ops);
}

#[test]
fn fused_heads() {
    each_order(kernels::fused_heads);
}

#[test]
fn thread_order_does_not_change_correct_kernels() {
    // The emulator's forward and reverse schedules give bit-identical results
    // for race-free kernels (each thread's arithmetic is the same either way).
    let (batch, tokens, heads, head_dim) = (2, 49, 2, 32);
    let s = AttentionShape { batch, tokens, heads, head_dim };
    let qkv = data(batch * tokens * 3 * s.dim(), 7, 2.0);
    let run = |order| {
        let g = Gpu::new(Emu::with_order(order));
        let mut o = g.alloc(batch * tokens * s.dim()).unwrap();
        g.attention(&g.upload(&qkv).unwrap(), &mut o, s).unwrap();
        read(&g, &o, batch * tokens * s.dim())
    };
    let f = run(ThreadOrder::Forward);
    assert_eq!(f, run(ThreadOrder::Reverse));
    assert_eq!(f, run(ThreadOrder::Alternate));
}

#[test]
fn emulator_catches_a_missing_syncthreads() {
    let (grid, block) = (3u32, 256u32);
    let input: Vec<f32> = (0..grid * block).map(|i| i as f32).collect();
    let want: Vec<f32> = (0..grid * block).map(|i| ((i / block) * block + block - 1 - i % block) as f32).collect();
    for order in [ThreadOrder::Forward, ThreadOrder::Reverse, ThreadOrder::Alternate] {
        let good = selftest::run(SelfTest::Reverse, order, grid, block, &input, input.len()).unwrap();
        assert_eq!(good, want, "{order:?}: the correct kernel");
        let bad = selftest::run(SelfTest::ReverseMissingBarrier, order, grid, block, &input, input.len()).unwrap();
        // Each thread reads a slot another thread has not written yet in
        // whichever order runs it first: poisoned NaN, never the right value.
        let wrong = bad.iter().zip(&want).filter(|(b, w)| b != w).count();
        assert!(wrong >= input.len() / 2 - 1, "{order:?}: only {wrong} wrong values without the barrier");
        assert!(bad.iter().any(|v| v.is_nan()), "{order:?}: poison shows");
    }
}

#[test]
fn emulator_reports_a_divergent_barrier() {
    let input = vec![0f32; 64];
    let err = selftest::run(SelfTest::DivergentBarrier, ThreadOrder::Forward, 1, 64, &input, 64).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("divergent barrier"), "{msg}");
    assert!(msg.contains("selftest.cu"), "the message names the source: {msg}");
}

#[test]
fn warp_collectives_follow_cuda() {
    let n = 64usize; // two warps
    let input: Vec<f32> = (0..n).map(|i| (i as f32) - 3.0).collect();
    let out = selftest::run(SelfTest::Warp, ThreadOrder::Alternate, 1, n as u32, &input, 7 * n).unwrap();
    for t in 0..n {
        let (w, lane) = (t / 32, t % 32);
        let v = |l: usize| input[w * 32 + l];
        let o = &out[t * 7..t * 7 + 7];
        assert_eq!(o[0], (0..32).map(v).sum::<f32>(), "sum lane {t}");
        assert_eq!(o[1], if lane + 3 < 32 { v(lane + 3) } else { v(lane) }, "down lane {t}");
        assert_eq!(o[2], v(5), "idx lane {t}");
        let ballot: u32 = (0..32).filter(|&l| (v(l) as i32) & 1 != 0).fold(0, |m, l| m | 1 << l);
        assert_eq!(o[3], ballot as f32, "ballot lane {t}");
        assert_eq!(o[4], 1.0);
        assert_eq!(o[5], 1.0);
        assert_eq!(o[6], v(lane ^ 1), "xor width 8 lane {t}");
    }
}

#[test]
fn atomics_are_atomic_across_parallel_blocks() {
    let (grid, block) = (64u32, 128u32);
    let n = (grid * block) as usize;
    let input = data(n, 5, 10.0);
    let out = selftest::run(SelfTest::Atomics, ThreadOrder::Alternate, grid, block, &input, 3).unwrap();
    assert_eq!(out[0], n as f32, "float atomicAdd lost updates");
    assert_eq!(out[1], input.iter().copied().fold(f32::NEG_INFINITY, f32::max), "float atomicMax");
    assert_eq!(out[2].to_bits() as usize, n, "int atomicAdd lost updates");
}

#[test]
fn emulator_reports_shape_errors_instead_of_reading_out_of_bounds() {
    let g = Gpu::new(Emu::new());
    let x = g.alloc(10).unwrap();
    let mut y = g.alloc(10).unwrap();
    let s = AttentionShape { batch: 1, tokens: 10, heads: 1, head_dim: 32 };
    assert!(g.attention(&x, &mut y, s).is_err());
}

#[test]
fn a_launch_that_breaks_a_kernels_assumption_is_an_error() {
    use quorum::backend::gpu::params::LinearParams;
    use quorum::backend::gpu::{Device, LaunchConfig};
    let emu = Emu::new();
    let (x, w, b) = (emu.alloc(64).unwrap(), emu.alloc(64).unwrap(), emu.alloc(8).unwrap());
    let mut y = emu.alloc(64).unwrap();
    let p = LinearParams {
        x: emu.ptr(&x),
        w: emu.ptr(&w),
        b: emu.ptr(&b),
        y: emu.ptr_mut(&mut y),
        rows: 8,
        n_in: 8,
        n_out: 8,
        epilogue: 0,
    };
    // The GEMM tile needs 256 threads; 128 would leave half the tile unloaded.
    let bad = LaunchConfig { grid: [1, 1, 1], block: [128, 1, 1], shared_bytes: 0 };
    // SAFETY: every buffer holds all the kernel could touch at this shape.
    let e = unsafe { emu.launch(bad, &p) }.unwrap_err().to_string();
    assert!(e.contains("launch assumption failed") && e.contains("GEMM_THREADS"), "{e}");
    let good = LaunchConfig { block: [256, 1, 1], ..bad };
    // SAFETY: as above.
    unsafe { emu.launch(good, &p) }.unwrap();
}

/// The 16-bit tensor-core precisions, each run by the same tests.
const HALVES: [Precision; 2] = [Precision::Bf16, Precision::F16];

#[test]
fn tensor_core_helper_matches_a_reference_product() {
    for p in HALVES {
        kernels::mma_check(&Emu::new(), p);
    }
}

/// mma.cuh's hand-written conversions (device f32 → bf16/f16 → f32) equal
/// round-to-nearest-even, on the cases that break naive ones: ties either
/// way, subnormals and the boundary to zero, overflow to infinity, NaN.
#[test]
fn half_conversions_round_to_nearest_even() {
    use quorum::backend::gpu::params::HalfRoundTripParams;
    use quorum::backend::gpu::{Device, LaunchConfig};
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
    let emu = Emu::new();
    let xb = emu.upload(&x).unwrap();
    for (kind, p) in [(0, Precision::Bf16), (1, Precision::F16)] {
        let mut yb = emu.upload(&vec![f32::NAN; x.len()]).unwrap();
        let params = HalfRoundTripParams { x: emu.ptr(&xb), y: emu.ptr_mut(&mut yb), n: x.len() as i32, kind };
        let cfg = LaunchConfig { grid: [8, 1, 1], block: [128, 1, 1], shared_bytes: 0 };
        // SAFETY: x and y hold n floats.
        unsafe { emu.launch(cfg, &params) }.unwrap();
        let mut y = vec![0f32; x.len()];
        emu.read(&yb, &mut y).unwrap();
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            let want = match p {
                Precision::F16 => half::f16::from_f32(xi).to_f32(),
                _ => half::bf16::from_f32(xi).to_f32(),
            };
            assert!(want.to_bits() == yi.to_bits(), "{p:?} x[{i}] = {xi:e}: got {yi:e}, want {want:e}");
        }
        let nan = emu.upload(&[f32::NAN]).unwrap();
        let mut out = emu.upload(&[0.0]).unwrap();
        let params = HalfRoundTripParams { x: emu.ptr(&nan), y: emu.ptr_mut(&mut out), n: 1, kind };
        // SAFETY: one float each.
        unsafe { emu.launch(LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 }, &params) }.unwrap();
        assert!(read_one(&emu, &out).is_nan(), "{p:?}: NaN stays NaN");
    }
}

fn read_one(emu: &Emu, b: &quorum::backend::gpu::EmuBuf) -> f32 {
    use quorum::backend::gpu::Device;
    let mut v = [0f32];
    emu.read(b, &mut v).unwrap();
    v[0]
}

/// Values already exact in the 16-bit type, so the kernels' own rounding of
/// their inputs and weights is the identity and the CPU reference can be
/// exact f32: what is compared is the tensor-core tiling, staging, fragments
/// and epilogues, at the f32 tolerance.
fn half_data(p: Precision, n: usize, seed: u64, scale: f32) -> Vec<f32> {
    data(n, seed, scale).into_iter().map(|v| kernels::round_to(p, v)).collect()
}

#[test]
fn half_linear_all_epilogues() {
    use quorum::backend::{Epilogue, LinearShape};
    for p in HALVES {
        let (cpu, g) = (quorum::Cpu::new(), Gpu::with_precision(Emu::new(), p));
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
                kernels::assert_close(&format!("{p:?} linear {s:?} {epi:?}"), &read(&g, &yg, yc.len()), &yc);
            }
        }
    }
}

#[test]
fn half_conv_and_patch_embedding() {
    use quorum::backend::{ConvShape, PatchShape};
    for p in HALVES {
        let (cpu, g) = (quorum::Cpu::new(), Gpu::with_precision(Emu::new(), p));
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
            kernels::assert_close(&format!("{p:?} conv1d {s:?}"), &read(&g, &yg, yc.len()), &yc);
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
            kernels::assert_close(&format!("{p:?} patch_embed {s:?}"), &read(&g, &og, n), &oc);
        }
    }
}

#[test]
fn half_weights_really_are_rounded() {
    // With f32 inputs that are not exact in the 16-bit type, the path must
    // differ from f32 (by about its relative step: bf16 2^-9, f16 2^-12), or
    // it is not using that type at all; f16 must be the closer of the two.
    use quorum::backend::{Epilogue, LinearShape};
    let (x, w, b) = (data(8 * 64, 1, 1.0), data(64 * 8, 2, 1.0), vec![0f32; 8]);
    let s = LinearShape { rows: 8, n_in: 64, n_out: 8 };
    let run = |g: &Gpu<Emu>| {
        let mut y = g.alloc(64).unwrap();
        let wg = g.prepare_linear(&w, 8, 64).unwrap();
        g.linear(&g.upload(&x).unwrap(), &wg, &g.upload(&b).unwrap(), &mut y, s, Epilogue::None).unwrap();
        read(g, &y, 64)
    };
    let yf = run(&Gpu::new(Emu::new()));
    let diff = |p| {
        let yh = run(&Gpu::with_precision(Emu::new(), p));
        yf.iter().zip(&yh).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    };
    let (wb, wh) = (diff(Precision::Bf16), diff(Precision::F16));
    assert!(wb > 1e-4 && wb < 0.1, "bf16 vs f32 max difference {wb}");
    assert!(wh > 1e-6 && wh < wb / 2.0, "f16 vs f32 max difference {wh} (bf16: {wb})");
}
