// A one-warp check of mma.cuh: D (16x8) = A (16x16) B (16x8) + C with A and B
// rounded to bf16, every operand built through the fragment-layout helpers.
// Run by the emulator against a CPU reference (tests/kernels_emu.rs) and
// compiled by NVRTC like every kernel, so the inline PTX is checked too; the
// first step of the bf16 tensor-core GEMM (not yet written).
#include "mma.cuh"

struct MmaCheckParams {
    const float *a; // (16, 16) row-major
    const float *b; // (16, 8) row-major (k, n)
    const float *c; // (16, 8)
    float *d;       // (16, 8)
};

QUORUM_KERNEL void quorum_mma_check(MmaCheckParams p) {
    QUORUM_REQUIRE(blockDim.x == 32);
    const int lane = threadIdx.x;
    MmaA a;
    MmaB b;
    MmaC acc;
    for (int j = 0; j < 4; j++) {
        const int i0 = 2 * j, i1 = 2 * j + 1;
        a.r[j] = pack_bf16x2(p.a[mma_a_row(lane, i0) * 16 + mma_a_col(lane, i0)],
                             p.a[mma_a_row(lane, i1) * 16 + mma_a_col(lane, i1)]);
        acc.c[j] = p.c[mma_c_row(lane, j) * 8 + mma_c_col(lane, j)];
    }
    for (int j = 0; j < 2; j++) {
        const int i0 = 2 * j, i1 = 2 * j + 1;
        b.r[j] = pack_bf16x2(p.b[mma_b_k(lane, i0) * 8 + mma_b_col(lane)], p.b[mma_b_k(lane, i1) * 8 + mma_b_col(lane)]);
    }
    mma_bf16_16816(acc, a, b);
    for (int i = 0; i < 4; i++) p.d[mma_c_row(lane, i) * 8 + mma_c_col(lane, i)] = acc.c[i];
}
QUORUM_EMU_ENTRY(quorum_mma_check, MmaCheckParams)
