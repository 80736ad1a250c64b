//! Training-kernel cases (elementwise family): each a `fn case<G: Train>(gpu: &G)`
//! comparing the backend under test with the CPU's `Train` ops (see
//! common/kernels.rs for `data`, `assert_close`, `read`), run by
//! tests/train_kernels_emu.rs and, with --features gpu-tests, tests/train_kernels_cuda.rs.
#![allow(dead_code)]
