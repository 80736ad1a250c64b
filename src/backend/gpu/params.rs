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

// Usable by the training ops' modules (gpu/train/) and the op modules
// (backend/ops/), which declare their own parameter structs beside the ops
// that launch them.
pub(crate) use params;

/// `kernels/gemm.cu` ConvBranch
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConvBranch {
    pub w: u64,
    pub b: u64,
    pub ksize: i32,
    pub _pad: i32,
}

/// Branches one conv launch can carry (`QUORUM_MAX_BRANCHES`).
pub const MAX_BRANCHES: usize = 4;

params!(
    /// `kernels/gemm.cu` ConvParams; branch z of the grid uses `br[z]`.
    ConvParams => Conv1d {
        x: u64, y: u64, br: [ConvBranch; MAX_BRANCHES],
        samples: i32, len: i32, c_in: i32, c_out: i32, out_stride: i32, out_offset: i32, gelu: i32,
    }
);
params!(
    /// `kernels/gemm.cu` PatchParams
    PatchParams => PatchEmbed {
        x: u64, w: u64, b: u64, cls: u64, pos: u64, out: u64,
        batch: i32, height: i32, width: i32, ph: i32, pw: i32, dim: i32, tokens: i32, has_cls: i32,
    }
);

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

twin!(Bf16, ConvParams => Conv1dBf16);
twin!(Bf16, PatchParams => PatchEmbedBf16);
twin!(F16, ConvParams => Conv1dF16);
twin!(F16, PatchParams => PatchEmbedF16);
twin!(F16, MmaCheckParams => MmaCheckF16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        // The C compiler's layout on LP64: pointers 8 bytes, ints 4, structs
        // padded to 8. These sizes are what the kernels see.
        assert_eq!(std::mem::size_of::<ConvBranch>(), 24);
        assert_eq!(std::mem::size_of::<ConvParams>(), 16 + 4 * 24 + 7 * 4 + 4);
        assert_eq!(std::mem::size_of::<PatchParams>(), 6 * 8 + 8 * 4);
    }
}
