//! Every kernel of kernels/*.cu, run by the CUDA emulator (`Gpu<Emu>`),
//! against the CPU backend on awkward sizes (not multiples of any tile;
//! batch 1, 3 and 17; 49 and 100 tokens; 112 features), within docs/models.md's
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
    use quorum::backend::gpu::{Device, LaunchConfig};
    use quorum::backend::ops::linear::LinearParams;
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

#[test]
fn half_linear_all_epilogues() {
    for p in HALVES {
        kernels::half_linear_all_epilogues(&Gpu::with_precision(Emu::new(), p).unwrap(), p);
    }
}

#[test]
fn half_conv_and_patch_embedding() {
    for p in HALVES {
        kernels::half_conv_and_patch_embedding(&Gpu::with_precision(Emu::new(), p).unwrap(), p);
    }
}

/// The int8 tile's fragments, then its products (tests/common/kernels.rs).
#[test]
fn int8_helper_matches_the_exact_product() {
    kernels::mma_check_int8(&Emu::new());
}

#[test]
fn int8_linear_has_the_exact_references_bits() {
    kernels::int8_linear_has_the_exact_references_bits(&Gpu::with_precision(Emu::new(), Precision::Int8).unwrap());
}

#[test]
fn int8_conv_and_patch_have_the_exact_references_bits() {
    let g = Gpu::with_precision(Emu::new(), Precision::Int8).unwrap();
    kernels::int8_conv_and_patch_have_the_exact_references_bits(&g);
}

#[test]
fn half_weights_really_are_rounded() {
    kernels::half_weights_really_are_rounded(|p| Gpu::with_precision(Emu::new(), p).unwrap());
}

#[test]
fn capture_belongs_to_the_stream_not_the_thread() {
    kernels::capture_is_exclusive_to_its_thread(&Gpu::new(Emu::new()));
}

#[test]
fn a_copy_on_the_capturing_stream_invalidates_the_capture() {
    // CUDA's rule, which the emulator follows so a forward that copies
    // while recording fails here, not first on a GPU.
    use quorum::backend::gpu::Device;
    let emu = Emu::new();
    let buf = emu.upload(&[1.0, 2.0]).unwrap();
    emu.begin_capture().unwrap();
    let mut out = [0f32; 2];
    let e = emu.read(&buf, &mut out).unwrap_err();
    assert!(e.to_string().contains("stream is capturing"), "{e}");
    let e = emu.end_capture().err().expect("the capture was invalidated");
    assert!(e.to_string().contains("invalidated"), "{e}");
    // The stream is usable again.
    emu.read(&buf, &mut out).unwrap();
    assert_eq!(out, [1.0, 2.0]);
}

#[test]
fn half_conversions_round_to_nearest_even() {
    kernels::half_conversions_round_to_nearest_even(&Emu::new());
}
