//! The training kernels (`impl Train for Gpu<D>`) run by the CUDA emulator
//! against the CPU's `Train` ops, on awkward sizes, under each of the
//! emulator's thread orders; results must also be bit-identical across
//! orders and runs (no float atomics: training is reproducible on a GPU too).

#[path = "common/kernels.rs"]
mod kernels;
#[path = "common/train_elementwise.rs"]
mod train_elementwise;
#[path = "common/train_gemm.rs"]
mod train_gemm;
#[path = "common/train_seq.rs"]
mod train_seq;

use quorum::backend::gpu::{Emu, Gpu, ThreadOrder};

/// Runs a case under each of the emulator's schedules: forward and reverse
/// thread order everywhere, and alternating per block.
#[allow(dead_code)]
fn each_order(case: fn(&Gpu<Emu>)) {
    for order in [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse] {
        case(&Gpu::new(Emu::with_order(order)));
    }
}

// Elementwise, optimizer and heads:
// (tests below this line)
#[test]
fn copy_add_mul_fill_gelu_and_gelu_backward() {
    each_order(train_elementwise::map_ops);
}
#[test]
fn dropout_mask_is_the_cpus_bit_for_bit() {
    each_order(train_elementwise::dropout_mask_bits);
}
#[test]
fn adamw_matches_cpu_over_steps() {
    each_order(train_elementwise::adamw_steps);
}
#[test]
fn sum_squares_matches_cpu() {
    each_order(train_elementwise::sum_squares_close);
}
#[test]
fn bias_backward_is_the_cpus_bit_for_bit() {
    each_order(train_elementwise::bias_backward_bits);
}
#[test]
fn broadcast_add_backward_is_the_cpus_bit_for_bit() {
    each_order(train_elementwise::broadcast_add_backward_bits);
}
#[test]
fn pool_backward_every_mode() {
    each_order(train_elementwise::pool_backward_all_modes);
}
#[test]
fn heads_loss_with_and_without_grads() {
    each_order(train_elementwise::heads_loss_matches_cpu);
}
#[test]
fn reductions_repeat_bit_for_bit() {
    each_order(train_elementwise::reductions_repeat);
}
#[test]
fn short_buffers_are_errors() {
    each_order(train_elementwise::short_buffers_are_errors);
}
#[test]
fn reductions_bit_identical_across_thread_orders() {
    let forward = train_elementwise::reduction_bits(&Gpu::new(Emu::with_order(ThreadOrder::Forward)));
    let reverse = train_elementwise::reduction_bits(&Gpu::new(Emu::with_order(ThreadOrder::Reverse)));
    let alternate = train_elementwise::reduction_bits(&Gpu::new(Emu::with_order(ThreadOrder::Alternate)));
    assert!(forward == reverse && forward == alternate, "the reductions' bits depend on the thread order");
}

// The GEMM family and LayerNorm:
// (tests below this line)
#[test]
fn gemm_linear_backward_model_shapes() {
    each_order(train_gemm::linear_backward_shapes);
}

#[test]
fn gemm_conv1d_backward_kernels_offsets_samples() {
    each_order(train_gemm::conv1d_backward_shapes);
}

#[test]
fn gemm_patch_embed_backward_patches_cls_batch() {
    each_order(train_gemm::patch_embed_backward_shapes);
}

#[test]
fn gemm_layernorm_backward_rows_dims() {
    each_order(train_gemm::layernorm_backward_shapes);
}

#[test]
fn gemm_prepare_from_matches_prepare() {
    each_order(train_gemm::prepare_from_matches_prepare);
}

#[test]
fn gemm_short_buffers_are_errors() {
    each_order(train_gemm::short_buffers_are_errors);
}

#[test]
fn gemm_gradients_bit_identical_across_runs_and_thread_orders() {
    let orders = [ThreadOrder::Alternate, ThreadOrder::Forward, ThreadOrder::Reverse];
    let runs: Vec<_> = orders.iter().map(|&o| train_gemm::gradient_bits(&Gpu::new(Emu::with_order(o)))).collect();
    for (o, r) in orders.iter().zip(&runs).skip(1) {
        assert!(*r == runs[0], "{o:?} differs from {:?}", orders[0]);
    }
    train_gemm::gradients_bit_identical_across_runs(&Gpu::new(Emu::new()));
}

// Attention and the LSTM:
// (tests below this line)

#[test]
fn attention_train_matches_cpu() {
    each_order(train_seq::attention_train_matches_cpu);
}

#[test]
fn attention_backward_matches_cpu() {
    each_order(train_seq::attention_backward_matches_cpu);
}

#[test]
fn lstm_train_matches_cpu() {
    each_order(train_seq::lstm_train_matches_cpu);
}

#[test]
fn lstm_backward_matches_cpu() {
    each_order(train_seq::lstm_backward_matches_cpu);
}

#[test]
fn seq_ops_bit_identical_across_thread_orders_and_runs() {
    let forward = Gpu::new(Emu::with_order(ThreadOrder::Forward));
    let reverse = Gpu::new(Emu::with_order(ThreadOrder::Reverse));
    train_seq::seq_ops_bit_identical(&forward, &reverse);
    train_seq::seq_ops_bit_identical(&forward, &forward);
}

#[test]
fn seq_short_buffers_are_errors() {
    train_seq::seq_short_buffers_are_errors(&Gpu::new(Emu::default()));
}
