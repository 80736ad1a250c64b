//! The training kernels on a real device (`Gpu<Cuda>`), with
//! `--features gpu-tests` on a machine with a GPU: the same cases as
//! tests/train_kernels_emu.rs.

#[cfg(feature = "gpu-tests")]
#[path = "common/kernels.rs"]
mod kernels;
#[cfg(feature = "gpu-tests")]
#[path = "common/train_elementwise.rs"]
mod train_elementwise;
#[cfg(feature = "gpu-tests")]
#[path = "common/train_gemm.rs"]
mod train_gemm;
#[cfg(feature = "gpu-tests")]
#[path = "common/train_seq.rs"]
mod train_seq;

#[cfg(feature = "gpu-tests")]
mod on_gpu {
    #[allow(unused_imports)]
    use super::{train_elementwise, train_gemm, train_seq};
    use quorum::backend::gpu::{Cuda, Gpu};

    #[allow(dead_code)]
    fn gpu() -> Gpu<Cuda> {
        Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device"))
    }

    // Elementwise, optimizer and heads:
    // (tests below this line)
    #[test]
    fn copy_add_mul_fill_gelu_and_gelu_backward() {
        train_elementwise::map_ops(&gpu());
    }
    #[test]
    fn dropout_mask_is_the_cpus_bit_for_bit() {
        train_elementwise::dropout_mask_bits(&gpu());
    }
    #[test]
    fn adamw_matches_cpu_over_steps() {
        train_elementwise::adamw_steps(&gpu());
    }
    #[test]
    fn sum_squares_matches_cpu() {
        train_elementwise::sum_squares_close(&gpu());
    }
    #[test]
    fn bias_backward_is_the_cpus_bit_for_bit() {
        train_elementwise::bias_backward_bits(&gpu());
    }
    #[test]
    fn broadcast_add_backward_is_the_cpus_bit_for_bit() {
        train_elementwise::broadcast_add_backward_bits(&gpu());
    }
    #[test]
    fn pool_backward_every_mode() {
        train_elementwise::pool_backward_all_modes(&gpu());
    }
    #[test]
    fn heads_loss_with_and_without_grads() {
        train_elementwise::heads_loss_matches_cpu(&gpu());
    }
    #[test]
    fn reductions_repeat_bit_for_bit() {
        train_elementwise::reductions_repeat(&gpu());
    }
    #[test]
    fn short_buffers_are_errors() {
        train_elementwise::short_buffers_are_errors(&gpu());
    }

    // The GEMM family and LayerNorm:
    // (tests below this line)
    #[test]
    fn gemm_linear_backward_model_shapes() {
        train_gemm::linear_backward_shapes(&gpu());
    }

    #[test]
    fn gemm_conv1d_backward_kernels_offsets_samples() {
        train_gemm::conv1d_backward_shapes(&gpu());
    }

    #[test]
    fn gemm_patch_embed_backward_patches_cls_batch() {
        train_gemm::patch_embed_backward_shapes(&gpu());
    }

    #[test]
    fn gemm_layernorm_backward_rows_dims() {
        train_gemm::layernorm_backward_shapes(&gpu());
    }

    #[test]
    fn gemm_prepare_from_matches_prepare() {
        train_gemm::prepare_from_matches_prepare(&gpu());
    }

    #[test]
    fn gemm_short_buffers_are_errors() {
        train_gemm::short_buffers_are_errors(&gpu());
    }

    #[test]
    fn gemm_gradients_bit_identical_across_runs() {
        train_gemm::gradients_bit_identical_across_runs(&gpu());
    }

    // Attention and the LSTM:
    // (tests below this line)

    #[test]
    fn attention_train_matches_cpu() {
        train_seq::attention_train_matches_cpu(&gpu());
    }

    #[test]
    fn attention_backward_matches_cpu() {
        train_seq::attention_backward_matches_cpu(&gpu());
    }

    #[test]
    fn lstm_train_matches_cpu() {
        train_seq::lstm_train_matches_cpu(&gpu());
    }

    #[test]
    fn lstm_backward_matches_cpu() {
        train_seq::lstm_backward_matches_cpu(&gpu());
    }

    #[test]
    fn seq_ops_bit_identical_across_runs() {
        let g = gpu();
        train_seq::seq_ops_bit_identical(&g, &g);
    }

    #[test]
    fn seq_short_buffers_are_errors() {
        train_seq::seq_short_buffers_are_errors(&gpu());
    }
}
