//! quorum: an engine for an ensemble of order-book models.
//!
//! Three models (MPDTransformer, TLOB, CNN-LSTM v2) written once over the
//! [`backend::Backend`] trait and run on the CPU backend or on hand-written
//! CUDA kernels (`Gpu<Cuda>`, or `Gpu<Emu>` in the emulator); weights in
//! safetensors, loaded by name exactly as PyTorch saves them. See
//! docs/architecture.md for the layout.

pub mod backend;
pub mod ensemble;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod fsutil;
pub mod market;
pub mod model;
pub mod server;
pub mod tensor;
pub mod train;
pub mod weights;

pub use backend::cpu::Cpu;
pub use backend::Backend;
pub use error::{Error, Result};
pub use model::{Inputs, Model, ModelConfig, ModelKind, Outputs};
pub use tensor::Tensor;
