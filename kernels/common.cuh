// Shared by every kernel family: the portability layer between NVRTC (the GPU)
// and the CPU emulator (kernels/emu), and small device helpers.
//
// Each kernel takes ONE parameter struct by value; the Rust side declares the
// same struct #[repr(C)] (src/backend/gpu/params.rs). Only fixed-size C types
// appear in them (pointers, int), so both compilers lay them out alike.
#pragma once

#ifdef QUORUM_EMU
#include "emu/cuda_emu.h"
#define QUORUM_KERNEL extern "C"
#else
// NVRTC: no toolkit headers are needed by these kernels.
#define QUORUM_KERNEL extern "C" __global__
#define QUORUM_SHARED(T, name, dims) __shared__ T name dims
#define QUORUM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define QUORUM_EMU_ENTRY(kernel, Params)
#endif

// A launch-configuration assumption of a kernel (e.g. "256 threads"). The
// Rust launch rules (src/backend/gpu/launch.rs) keep them; this makes a broken
// rule loud instead of silently wrong: the emulator fails the launch with the
// condition's text, a GPU traps (the launch returns an error).
#ifdef QUORUM_EMU
#define QUORUM_REQUIRE(cond)                                                                                   \
    do {                                                                                                       \
        if (!(cond)) ::quorum_emu::fail(__FILE__, __LINE__, "launch assumption failed: " #cond);               \
    } while (0)
#else
#define QUORUM_REQUIRE(cond)                                                                                   \
    do {                                                                                                       \
        if (!(cond)) __trap();                                                                                 \
    } while (0)
#endif

#define QUORUM_FULL_MASK 0xffffffffu
// -inf without math.h (NVRTC has no INFINITY macro without toolkit headers).
#define QUORUM_NEG_INF __int_as_float(0xff800000)

// Sum over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(QUORUM_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(QUORUM_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(QUORUM_FULL_MASK, v, o));
    return v;
}

// Exact GELU (erf form), as PyTorch's default and docs/models.md.
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// Grid-stride loop bounds for elementwise kernels (n < 2^31 everywhere here).
#define QUORUM_GRID_STRIDE(i, n)                                                                               \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)
