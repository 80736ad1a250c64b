//! The kernels' parameter structs, field for field the C structs of
//! `kernels/*.cu`: each kernel takes one of these by value, on the GPU (as
//! the single kernel argument) and in the emulator alike. Pointers are device
//! addresses as `u64` (a host address for the emulator), `0` for "none".

use super::device::Kernel;

/// A parameter struct and the kernel it belongs to.
///
/// # Safety
/// The implementor must be `#[repr(C)]` with exactly the layout of the C
/// struct the kernel takes.
pub unsafe trait KernelParams: Copy + Send + Sync + 'static {
    const KERNEL: Kernel;
}

macro_rules! params {
    ($(#[$m:meta])* $name:ident => $kernel:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name { $(pub $field: $ty),* }
        // SAFETY: #[repr(C)], fields in the order and types of the C struct.
        unsafe impl KernelParams for $name {
            const KERNEL: $crate::backend::gpu::device::Kernel = $crate::backend::gpu::device::Kernel::$kernel;
        }
    };
}

// Usable by the op modules (backend/ops/), which declare their own
// parameter structs beside the ops that launch them.
pub(crate) use params;

params!(
    /// `kernels/mma_check.cu` MmaCheckParams: d (16×8) = a (16×16) · b (16×8) + c, bf16 inputs.
    MmaCheckParams => MmaCheck { a: u64, b: u64, c: u64, d: u64 }
);

params!(
    /// `kernels/mma_check.cu` HalfRoundTripParams: y = widen(narrow(x)), kind 0 bf16, 1 f16.
    HalfRoundTripParams => HalfRoundTrip { x: u64, y: u64, n: i32, kind: i32 }
);

/// The same parameters for a kernel's bf16-weight twin (`w` holds bf16).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bf16<P>(pub P);

/// The same parameters for a kernel's IEEE-f16 twin (`w` holds f16).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F16<P>(pub P);

/// The same parameters for a kernel's int8 twin (`w` holds int8 quads,
/// scales and sums: gemm_tile_int8.cuh).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Int8<P>(pub P);

macro_rules! twin {
    ($wrap:ident, $p:ty => $kernel:ident) => {
        // SAFETY: repr(transparent) over a parameter struct of the same C layout.
        unsafe impl KernelParams for $wrap<$p> {
            const KERNEL: $crate::backend::gpu::device::Kernel = $crate::backend::gpu::device::Kernel::$kernel;
        }
    };
}
// Usable by the op modules (backend/ops/) for their own twins.
pub(crate) use twin;

twin!(F16, MmaCheckParams => MmaCheckF16);
twin!(Int8, MmaCheckParams => MmaCheckInt8);
