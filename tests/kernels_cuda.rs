//! The GPU backend on a real device (`Gpu<Cuda>`): on a machine without CUDA,
//! that opening the device is an error (not a panic); with `--features
//! gpu-tests` on a machine with a GPU, every kernel against the CPU backend
//! (the same cases as the emulator's) and every golden model case.

#[path = "common/kernels.rs"]
mod kernels;

use quorum::backend::gpu::cuda::driver_present;
use quorum::backend::gpu::Cuda;

#[test]
fn no_cuda_is_an_error_not_a_panic() {
    if driver_present() {
        // A machine with a driver: opening may succeed or fail (no device),
        // but must not panic; the gpu-tests below cover the rest.
        let _ = Cuda::new(0);
        return;
    }
    let e = Cuda::new(0).err().expect("no driver, so no device");
    assert!(e.to_string().contains("no CUDA driver"), "{e}");
}

#[cfg(feature = "gpu-tests")]
mod on_gpu {
    use super::kernels;
    use quorum::backend::gpu::{Cuda, Gpu, Precision};

    fn gpu() -> Gpu<Cuda> {
        Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device"))
    }

    #[test]
    fn every_kernel_matches_the_cpu() {
        let g = gpu();
        kernels::linear_all_epilogues(&g);
        kernels::layernorm_rows(&g);
        kernels::attention_short_sequences(&g);
        kernels::patch_embedding_with_and_without_cls(&g);
        kernels::conv1d_with_offsets_and_gelu(&g);
        kernels::multiscale_conv_in_one_launch_and_in_chunks(&g);
        kernels::lstm_recurrence_batch_1_3_17(&g);
        kernels::elementwise_ops(&g);
        kernels::fused_heads(&g);
    }

    #[test]
    fn tensor_core_fragments_match_the_hardware() {
        let cuda = Cuda::new(0).expect("gpu-tests need a CUDA device");
        kernels::mma_check(&cuda, Precision::Bf16);
        kernels::mma_check(&cuda, Precision::F16);
        kernels::mma_check_int8(&cuda);
    }

    // The 16-bit kernels: the same cases as the emulator's (tests/kernels_emu.rs).
    const HALVES: [Precision; 2] = [Precision::Bf16, Precision::F16];

    fn gpu_in(p: Precision) -> Gpu<Cuda> {
        Gpu::with_precision(Cuda::new(0).expect("gpu-tests need a CUDA device"), p).unwrap()
    }

    #[test]
    fn half_linear_all_epilogues() {
        for p in HALVES {
            kernels::half_linear_all_epilogues(&gpu_in(p), p);
        }
    }

    #[test]
    fn half_conv_and_patch_embedding() {
        for p in HALVES {
            kernels::half_conv_and_patch_embedding(&gpu_in(p), p);
        }
    }

    #[test]
    fn half_weights_really_are_rounded() {
        kernels::half_weights_really_are_rounded(gpu_in);
    }

    // The int8 tile on the hardware: the same exact-reference cases as the emulator's.
    #[test]
    fn int8_products_have_the_exact_references_bits() {
        let g = gpu_in(Precision::Int8);
        kernels::int8_linear_has_the_exact_references_bits(&g);
        kernels::int8_conv_and_patch_have_the_exact_references_bits(&g);
    }

    #[test]
    fn half_conversions_round_to_nearest_even() {
        kernels::half_conversions_round_to_nearest_even(&Cuda::new(0).expect("gpu-tests need a CUDA device"));
    }

    /// A capture on the shared device records only the capturing thread's
    /// launches; another thread's work waits and is run, not recorded.
    #[test]
    fn capture_belongs_to_the_stream() {
        kernels::capture_is_exclusive_to_its_thread(&gpu());
    }
}
