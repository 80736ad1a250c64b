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

// The GEMM family and LayerNorm:
// (tests below this line)

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
