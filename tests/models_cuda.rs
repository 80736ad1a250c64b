//! The golden model cases on a real GPU (`Gpu<Cuda>`); needs `--features gpu-tests`.
#![cfg(feature = "gpu-tests")]

mod common;

use common::{assert_close, golden, ALL_CASES};
use quorum::backend::gpu::{Cuda, Gpu};

#[test]
fn every_golden_case_on_cuda() {
    let be = Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device"));
    for name in ALL_CASES {
        let g = golden(name);
        let mut model = g.model(&be);
        let out = model.forward(&be, &g.inputs()).unwrap();
        for (k, want) in &g.outputs {
            assert_close(name, k, &out[k], want, false);
        }
    }
}

#[test]
fn every_golden_case_on_cuda_in_bf16() {
    use quorum::backend::gpu::Precision;
    let be = Gpu::with_precision(Cuda::new(0).expect("gpu-tests need a CUDA device"), Precision::Bf16).unwrap();
    for name in ALL_CASES {
        let g = golden(name);
        let mut model = g.model(&be);
        let out = model.forward(&be, &g.inputs()).unwrap();
        for (k, want) in &g.outputs {
            assert_close(name, k, &out[k], want, true);
        }
    }
}

/// Every golden case in int8 (gemm_tile_int8.cuh on the tensor cores)
/// within docs/models.md's int8 bounds, as on the emulator.
#[test]
fn every_golden_case_on_cuda_in_int8_within_the_int8_bounds() {
    use quorum::backend::gpu::Precision;
    let be = Gpu::with_precision(Cuda::new(0).expect("gpu-tests need a CUDA device"), Precision::Int8).unwrap();
    for name in ALL_CASES {
        common::check_golden_int8(&be, name);
    }
}

/// The batch-1 (and any-batch) forward captured into a CUDA graph replays
/// bit-identically to launching its kernels one by one.
#[test]
fn cuda_graph_replays_match_direct_launches() {
    common::check_recorded_replays(&Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device")));
}

/// Three models on one device from three threads, as the engine runs them.
#[test]
fn models_sharing_the_device_across_threads_stay_apart() {
    common::check_concurrent_models(&Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device")), true);
}
