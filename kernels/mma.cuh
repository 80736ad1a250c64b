// Tensor-core matrix multiply-accumulate for bf16 inputs with f32
// accumulators (sm_80+), as our own helper rather than nvcuda::wmma, so the
// kernels need no toolkit header under NVRTC. The instruction is inline PTX
// (mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32), and this header
// gives it its emulated twin (design.md: inline PTX only with a twin).
//
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16"), for lane l,
// g = l >> 2, t = l & 3; element i of a fragment is at:
//   A (16x16, row-major, 8 bf16 in 4 regs): row g + 8*((i >> 1) & 1), col 2t + (i & 1) + 8*(i >> 2)
//   B (16x8, "col": k-major per column, 4 bf16 in 2 regs): k 2t + (i & 1) + 8*(i >> 1), col g
//   C/D (16x8 f32, 4 regs): row g + 8*(i >> 1), col 2t + (i & 1)
// Each 32-bit register holds two bf16, element 2j in the low half.
// The twin reads fragments through these same index helpers: the emulator
// proves kernels use the helpers consistently, not that the helpers match the
// hardware. That is tests/kernels_cuda.rs's mma check, on a GPU (gpu-tests).
#pragma once

#include "common.cuh"

__device__ __forceinline__ int mma_a_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
__device__ __forceinline__ int mma_a_col(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * (i >> 2); }
__device__ __forceinline__ int mma_b_k(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * (i >> 1); }
__device__ __forceinline__ int mma_b_col(int lane) { return lane >> 2; }
__device__ __forceinline__ int mma_c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
__device__ __forceinline__ int mma_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

// bf16 as raw bits (no cuda_bf16.h): widening is exact, narrowing rounds to
// nearest even (NaN kept quiet).
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __int_as_float(((int)h) << 16); }
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned u = (unsigned)__float_as_int(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)f32_to_bf16(lo) | ((unsigned)f32_to_bf16(hi) << 16);
}
__device__ __forceinline__ float unpack_bf16(unsigned r, int half) {
    return bf16_to_f32((unsigned short)(half ? r >> 16 : r & 0xffffu));
}

struct MmaA {
    unsigned r[4];
};
struct MmaB {
    unsigned r[2];
};
struct MmaC {
    float c[4];
};

// d += a * b, by the whole warp (every lane must call it, converged).
__device__ __forceinline__ void mma_bf16_16816(MmaC &d, const MmaA &a, const MmaB &b) {
#ifdef QUORUM_EMU
    // The twin: gather every lane's fragments, form the 16x16 and 16x8
    // operands, and compute this lane's four outputs with f32 FMAs in k order.
    MmaA as[32];
    MmaB bs[32];
    ::quorum_emu::warp_gather(QUORUM_FULL_MASK, &a, sizeof a, as, __FILE__, __LINE__);
    ::quorum_emu::warp_gather(QUORUM_FULL_MASK, &b, sizeof b, bs, __FILE__, __LINE__);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        for (int i = 0; i < 8; i++) A[mma_a_row(l, i)][mma_a_col(l, i)] = unpack_bf16(as[l].r[i >> 1], i & 1);
        for (int i = 0; i < 4; i++) B[mma_b_k(l, i)][mma_b_col(l)] = unpack_bf16(bs[l].r[i >> 1], i & 1);
    }
    const int lane = ::quorum_emu::lane_id();
    for (int i = 0; i < 4; i++) {
        const int row = mma_c_row(lane, i), col = mma_c_col(lane, i);
        float s = d.c[i];
        for (int k = 0; k < 16; k++) s = fmaf(A[row][k], B[k][col], s);
        d.c[i] = s;
    }
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d.c[0]), "+f"(d.c[1]), "+f"(d.c[2]), "+f"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
#endif
}
