// Σ x² in f64 (global-norm gradient clipping) as per-block partials the host
// adds in block order: no float atomics, so the same inputs give the same
// bits whatever the schedule. Its Rust side (reference, CPU, launch, tests)
// is src/backend/ops/sum_squares.rs.
#include "common.cuh"

// The bits of a double as two 32-bit words and back: partial sums travel
// through f32 buffers (whose start need only be 4-byte aligned).
__device__ __forceinline__ unsigned long long train_double_bits(double d) {
#ifdef QUORUM_EMU
    return quorum_emu::to_bits(d);
#else
    return (unsigned long long)__double_as_longlong(d);
#endif
}

// Σ x² over n values in f64: each thread sums its grid-stride elements, the
// block reduces by warp shuffles then warps in order, and block b writes its
// partial as the two 32-bit words (low, high) at partials[2b]. The host adds
// the partials in block order; the grid is a function of n only.
#define SUMSQ_THREADS 256

struct SumSquaresParams {
    const float *x;
    unsigned *partials;
    int n, _pad;
};

QUORUM_KERNEL void quorum_sum_squares(SumSquaresParams p) {
    QUORUM_REQUIRE(blockDim.x == SUMSQ_THREADS);
    QUORUM_SHARED(double, warp_sums, [SUMSQ_THREADS / 32]);
    double s = 0.0;
    QUORUM_GRID_STRIDE(i, p.n) {
        double v = (double)p.x[i];
        s += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(QUORUM_FULL_MASK, s, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < SUMSQ_THREADS / 32; w++) total += warp_sums[w];
        unsigned long long b = train_double_bits(total);
        p.partials[2 * blockIdx.x] = (unsigned)b;
        p.partials[2 * blockIdx.x + 1] = (unsigned)(b >> 32);
    }
}
QUORUM_EMU_ENTRY(quorum_sum_squares, SumSquaresParams)
