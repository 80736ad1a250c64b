// Tensor-core matrix multiply-accumulate for 16-bit float inputs (bf16 or
// IEEE f16) with f32 accumulators (sm_80+), as our own helper rather than
// nvcuda::wmma, so the kernels need no toolkit header under NVRTC. The
// instruction is inline PTX (mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.
// {bf16,f16}.f32), and this header gives it its emulated twin (docs/kernels.md:
// inline PTX only with a twin). Both input types share the fragment layout.
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

// IEEE binary16 as raw bits (no cuda_fp16.h): narrowing rounds to nearest
// even, with subnormals, overflow to infinity, NaN kept quiet; widening is exact.
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    const unsigned x = (unsigned)__float_as_int(f);
    const unsigned sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u); // rounds past 65504
    if (ax < 0x38800000u) {                                        // below 2^-14: subnormal or zero
        if (ax < 0x33000000u) return (unsigned short)sign;          // below half the smallest subnormal
        const unsigned e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126u - e;
        unsigned q = m >> shift;
        const unsigned rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        q += (rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u;
        return (unsigned short)(sign | q);
    }
    unsigned r = ax - 0x38000000u; // exponent bias 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);
    return (unsigned short)(sign | (r >> 13));
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return __int_as_float((int)(sign | 0x7f800000u | (m << 13)));
    if (e == 0) {
        const float v = (float)m * 5.9604644775390625e-8f; // m * 2^-24, exact
        return sign ? -v : v;
    }
    return __int_as_float((int)(sign | ((e + 112u) << 23) | (m << 13)));
}

// Which 16-bit float a kernel's tensor-core operands are.
#define QUORUM_HALF_BF16 0
#define QUORUM_HALF_F16 1

template <int H> struct HalfBits;
template <> struct HalfBits<QUORUM_HALF_BF16> {
    static __device__ __forceinline__ unsigned short from(float f) { return f32_to_bf16(f); }
    static __device__ __forceinline__ float to(unsigned short h) { return bf16_to_f32(h); }
};
template <> struct HalfBits<QUORUM_HALF_F16> {
    static __device__ __forceinline__ unsigned short from(float f) { return f32_to_f16(f); }
    static __device__ __forceinline__ float to(unsigned short h) { return f16_to_f32(h); }
};

// Two values in one 32-bit register, `lo` in the low half.
template <int H> __device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    return (unsigned)HalfBits<H>::from(lo) | ((unsigned)HalfBits<H>::from(hi) << 16);
}
template <int H> __device__ __forceinline__ float unpack_half(unsigned r, int half) {
    return HalfBits<H>::to((unsigned short)(half ? r >> 16 : r & 0xffffu));
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) { return pack_half2<QUORUM_HALF_BF16>(lo, hi); }
__device__ __forceinline__ float unpack_bf16(unsigned r, int half) { return unpack_half<QUORUM_HALF_BF16>(r, half); }

struct MmaA {
    unsigned r[4];
};
struct MmaB {
    unsigned r[2];
};
struct MmaC {
    float c[4];
};

// d += a * b, by the whole warp (every lane must call it, converged), with
// a and b holding 16-bit floats of kind H.
template <int H> __device__ __forceinline__ void mma_16816(MmaC &d, const MmaA &a, const MmaB &b);

#ifdef QUORUM_EMU
// Every lane's A and B registers, for the twins (a warp collective).
__device__ __forceinline__ void mma_gather(const MmaA &a, const MmaB &b, MmaA *as, MmaB *bs) {
    ::quorum_emu::warp_gather(QUORUM_FULL_MASK, &a, sizeof a, as, __FILE__, __LINE__);
    ::quorum_emu::warp_gather(QUORUM_FULL_MASK, &b, sizeof b, bs, __FILE__, __LINE__);
}

// The twin: gather every lane's fragments, form the 16x16 and 16x8 operands,
// and compute this lane's four outputs with f32 FMAs in k order.
template <int H> __device__ __forceinline__ void mma_16816(MmaC &d, const MmaA &a, const MmaB &b) {
    MmaA as[32];
    MmaB bs[32];
    mma_gather(a, b, as, bs);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        for (int i = 0; i < 8; i++) A[mma_a_row(l, i)][mma_a_col(l, i)] = unpack_half<H>(as[l].r[i >> 1], i & 1);
        for (int i = 0; i < 4; i++) B[mma_b_k(l, i)][mma_b_col(l)] = unpack_half<H>(bs[l].r[i >> 1], i & 1);
    }
    const int lane = ::quorum_emu::lane_id();
    for (int i = 0; i < 4; i++) {
        const int row = mma_c_row(lane, i), col = mma_c_col(lane, i);
        float s = d.c[i];
        for (int k = 0; k < 16; k++) s = fmaf(A[row][k], B[k][col], s);
        d.c[i] = s;
    }
}
#else
template <> __device__ __forceinline__ void mma_16816<QUORUM_HALF_BF16>(MmaC &d, const MmaA &a, const MmaB &b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d.c[0]), "+f"(d.c[1]), "+f"(d.c[2]), "+f"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
template <> __device__ __forceinline__ void mma_16816<QUORUM_HALF_F16>(MmaC &d, const MmaA &a, const MmaB &b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d.c[0]), "+f"(d.c[1]), "+f"(d.c[2]), "+f"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#endif

__device__ __forceinline__ void mma_bf16_16816(MmaC &d, const MmaA &a, const MmaB &b) {
    mma_16816<QUORUM_HALF_BF16>(d, a, b);
}

// ---- 8-bit integers: mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 ----------
//
// The int8 mode's product (docs/kernels.md, "int8"): A holds unsigned bytes
// (activations with a zero point), B signed bytes (symmetric weights), the
// sums are exact in i32. Fragment layout (PTX ISA, "Matrix Fragments for
// mma.m16n8k32", 8-bit types), lane l, g = l >> 2, t = l & 3; each 32-bit
// register holds four consecutive k, the lowest k in the lowest byte:
//   A (16x32, 4 regs): reg j holds row g + 8*(j & 1), k 4t + 16*(j >> 1) .. +3
//   B (32x8, 2 regs):  reg j holds k 4t + 16*j .. +3 of column g
//   C/D (16x8 s32, 4 regs): as the 16-bit kinds' f32 C (mma_c_row, mma_c_col)
// So a register is one 32-bit word of a row (A) or column (B) of four
// consecutive k: word index (in words of 4 k) t + 4*(j >> 1) for A, t + 4*j for B.
__device__ __forceinline__ int mma8_a_row(int lane, int j) { return (lane >> 2) + 8 * (j & 1); }
__device__ __forceinline__ int mma8_a_word(int lane, int j) { return (lane & 3) + 4 * (j >> 1); }
__device__ __forceinline__ int mma8_b_word(int lane, int j) { return (lane & 3) + 4 * j; }

struct MmaCi {
    int c[4];
};

// d += a * b over k = 32, by the whole warp (every lane, converged); a holds
// u8, b holds s8 (four to a register, as above).
#ifdef QUORUM_EMU
// The twin: gather every lane's registers, unpack the 16x32 and 32x8 byte
// operands through the same helpers, and sum this lane's four outputs in
// i32 (exact, so the order does not matter).
__device__ __forceinline__ void mma_16832_u8s8(MmaCi &d, const MmaA &a, const MmaB &b) {
    MmaA as[32];
    MmaB bs[32];
    mma_gather(a, b, as, bs);
    int A[16][32], B[32][8];
    for (int l = 0; l < 32; l++) {
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++)
                A[mma8_a_row(l, j)][4 * mma8_a_word(l, j) + e] = (int)((as[l].r[j] >> (8 * e)) & 0xffu);
        for (int j = 0; j < 2; j++)
            for (int e = 0; e < 4; e++)
                B[4 * mma8_b_word(l, j) + e][mma_b_col(l)] = (int)(signed char)((bs[l].r[j] >> (8 * e)) & 0xffu);
    }
    const int lane = ::quorum_emu::lane_id();
    for (int i = 0; i < 4; i++) {
        const int row = mma_c_row(lane, i), col = mma_c_col(lane, i);
        int s = d.c[i];
        for (int k = 0; k < 32; k++) s += A[row][k] * B[k][col];
        d.c[i] = s;
    }
}
#else
__device__ __forceinline__ void mma_16832_u8s8(MmaCi &d, const MmaA &a, const MmaB &b) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+r"(d.c[0]), "+r"(d.c[1]), "+r"(d.c[2]), "+r"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#endif
