// A one-warp check of mma.cuh: D (16x8) = A (16x16) B (16x8) + C with A and B
// rounded to bf16 (or f16), or (int8) u8 times s8 with k = 32, every operand built through the fragment-layout
// helpers. Run by the emulator against a CPU reference (tests/kernels_emu.rs)
// and compiled by NVRTC like every kernel, so the inline PTX is checked too;
// on a GPU (gpu-tests) it is what proves the helpers match the hardware.
#include "mma.cuh"

struct MmaCheckParams {
    const float *a; // (16, 16) row-major
    const float *b; // (16, 8) row-major (k, n)
    const float *c; // (16, 8)
    float *d;       // (16, 8)
};

template <int H> __device__ __forceinline__ void mma_check(const MmaCheckParams &p) {
    QUORUM_REQUIRE(blockDim.x == 32);
    const int lane = threadIdx.x;
    MmaA a;
    MmaB b;
    MmaC acc;
    for (int j = 0; j < 4; j++) {
        const int i0 = 2 * j, i1 = 2 * j + 1;
        a.r[j] = pack_half2<H>(p.a[mma_a_row(lane, i0) * 16 + mma_a_col(lane, i0)],
                             p.a[mma_a_row(lane, i1) * 16 + mma_a_col(lane, i1)]);
        acc.c[j] = p.c[mma_c_row(lane, j) * 8 + mma_c_col(lane, j)];
    }
    for (int j = 0; j < 2; j++) {
        const int i0 = 2 * j, i1 = 2 * j + 1;
        b.r[j] = pack_half2<H>(p.b[mma_b_k(lane, i0) * 8 + mma_b_col(lane)], p.b[mma_b_k(lane, i1) * 8 + mma_b_col(lane)]);
    }
    mma_16816<H>(acc, a, b);
    for (int i = 0; i < 4; i++) p.d[mma_c_row(lane, i) * 8 + mma_c_col(lane, i)] = acc.c[i];
}

QUORUM_KERNEL void quorum_mma_check(MmaCheckParams p) { mma_check<QUORUM_HALF_BF16>(p); }
QUORUM_EMU_ENTRY(quorum_mma_check, MmaCheckParams)

QUORUM_KERNEL void quorum_mma_check_f16(MmaCheckParams p) { mma_check<QUORUM_HALF_F16>(p); }
QUORUM_EMU_ENTRY(quorum_mma_check_f16, MmaCheckParams)

// The int8 product, the same way: D (16x8) = A (16x32) B (32x8) + C, every
// value an integer held in an f32 (A in 0..=255, B in -128..=127, the sums
// below 2^24, so every conversion is exact), each register packed through
// the 8-bit helpers, mma_16832_u8s8 doing the product.
QUORUM_KERNEL void quorum_mma_check_int8(MmaCheckParams p) {
    QUORUM_REQUIRE(blockDim.x == 32);
    const int lane = threadIdx.x;
    MmaA a;
    MmaB b;
    MmaCi acc;
    for (int j = 0; j < 4; j++) {
        a.r[j] = 0u;
        for (int e = 0; e < 4; e++)
            a.r[j] |= ((unsigned)(int)p.a[mma8_a_row(lane, j) * 32 + 4 * mma8_a_word(lane, j) + e] & 0xffu) << (8 * e);
        acc.c[j] = (int)p.c[mma_c_row(lane, j) * 8 + mma_c_col(lane, j)];
    }
    for (int j = 0; j < 2; j++) {
        b.r[j] = 0u;
        for (int e = 0; e < 4; e++)
            b.r[j] |= ((unsigned)(int)p.b[(4 * mma8_b_word(lane, j) + e) * 8 + mma_b_col(lane)] & 0xffu) << (8 * e);
    }
    mma_16832_u8s8(acc, a, b);
    for (int i = 0; i < 4; i++) p.d[mma_c_row(lane, i) * 8 + mma_c_col(lane, i)] = (float)acc.c[i];
}
QUORUM_EMU_ENTRY(quorum_mma_check_int8, MmaCheckParams)

// y[i] = widen(narrow(x[i])) for the 16-bit float `kind` (0 bf16, 1 f16): the
// hand-written conversions above, checked against a reference on edge cases
// (ties, subnormals, overflow, NaN) by tests/kernels_emu.rs.
struct HalfRoundTripParams {
    const float *x;
    float *y;
    int n, kind;
};

QUORUM_KERNEL void quorum_half_round_trip(HalfRoundTripParams p) {
    QUORUM_GRID_STRIDE(i, p.n) {
        p.y[i] = p.kind == QUORUM_HALF_F16 ? f16_to_f32(f32_to_f16(p.x[i])) : bf16_to_f32(f32_to_bf16(p.x[i]));
    }
}
QUORUM_EMU_ENTRY(quorum_half_round_trip, HalfRoundTripParams)
