//! One module per op: everything an op is, in one place, beside its kernels
//! in `kernels/<op>.cu` (docs/architecture.md, "One op, every place it
//! lives").
//!
//! An op module holds, for its forward and its backward together:
//! - the shape checks (one list of the buffers and the sizes they need,
//!   applied by every backend);
//! - a plain reference: simple loops in f64, obviously correct and slow,
//!   what the tests compare the fast paths with;
//! - the CPU's fast path (the row loops, vectorized by `multiversion`, and
//!   their split over the cores);
//! - the GPU's parameter structs (field for field the C structs of the
//!   `.cu`), launch rules and launches, on any `Device`;
//! - its tests: the CPU path and the emulator against the reference, the
//!   launch rules, the refused sizes.
//!
//! The `Backend` and `Train` traits (backend/mod.rs) keep the op's
//! signature; `impl Backend for Cpu`, `impl Backend for Gpu<D>` and their
//! `Train` impls delegate to the op module in one line each.
//!
//! Every op of `Backend` and `Train` lives here (a few share a module:
//! `linear` holds `prepare_linear`, `prepare_linear_from` and
//! `bias_backward`; `conv1d` the multi-scale conv and `prepare_conv`;
//! `lstm` `prepare_recurrent`; `elementwise` copy, add, mul, fill and GELU),
//! plus `column_sum`, the GPU's reduction that the backwards of the linear
//! layer, the conv and the patch embedding share. What stays in `cpu/` and
//! `gpu/` is what every op uses: the CPU's micro-kernels, scratch and
//! thread splits; the devices, the emulator, the launch rules of the shared
//! GEMM tiles.

pub mod adamw;
pub mod attention;
pub mod broadcast_add;
pub mod column_sum;
pub mod conv1d;
pub mod dropout;
pub mod elementwise;
pub mod heads;
pub mod layernorm;
pub mod linear;
pub mod lstm;
pub mod patch_embed;
pub mod pool;
pub mod standardize;
pub mod sum_squares;
pub mod swap_last_axes;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod zero_sizes;

/// Every op module's parameter structs, each checked against its C size
/// (for the emulator's test that every registered kernel has one).
#[cfg(test)]
pub(crate) fn parameter_structs_checked() -> Vec<crate::backend::gpu::Kernel> {
    [
        layernorm::parameter_structs_checked(),
        pool::parameter_structs_checked(),
        adamw::parameter_structs_checked(),
        elementwise::parameter_structs_checked(),
        heads::parameter_structs_checked(),
        attention::parameter_structs_checked(),
        lstm::parameter_structs_checked(),
        broadcast_add::parameter_structs_checked(),
        standardize::parameter_structs_checked(),
        dropout::parameter_structs_checked(),
        sum_squares::parameter_structs_checked(),
        swap_last_axes::parameter_structs_checked(),
        linear::parameter_structs_checked(),
        column_sum::parameter_structs_checked(),
        conv1d::parameter_structs_checked(),
        patch_embed::parameter_structs_checked(),
    ]
    .concat()
}
