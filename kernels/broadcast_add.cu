// The broadcast add and its backward for the source (a memory-bound
// one-liner and a column sum; grid-stride loops so any launch size covers any
// tensor). Its Rust side (reference, CPU, launches, tests) is
// src/backend/ops/broadcast_add.rs.
#include "common.cuh"

// x (outer, inner, dim) += src, where src is (outer, dim) if per_outer, else (inner, dim).
struct BroadcastAddParams {
    float *x;
    const float *src;
    int outer, inner, dim, per_outer;
};

QUORUM_KERNEL void quorum_broadcast_add(BroadcastAddParams p) {
    QUORUM_GRID_STRIDE(i, p.outer * p.inner * p.dim) {
        int c = i % p.dim;
        int row = i / p.dim;
        int r = p.per_outer ? row / p.inner : row % p.inner;
        p.x[i] += p.src[r * p.dim + c];
    }
}
QUORUM_EMU_ENTRY(quorum_broadcast_add, BroadcastAddParams)

// Backward of broadcast_add for its source: dsrc (src_rows, dim) += Σ dx over
// the broadcast axis, one thread per dsrc value adding the rows into it in
// the CPU's order (samples, then tokens).
struct BroadcastBackwardParams {
    const float *dx;
    float *dsrc;
    int outer, inner, dim, per_outer;
};

QUORUM_KERNEL void quorum_broadcast_add_backward(BroadcastBackwardParams p) {
    const int src_rows = p.per_outer ? p.outer : p.inner;
    QUORUM_GRID_STRIDE(i, src_rows * p.dim) {
        const int r = i / p.dim, c = i % p.dim;
        float v = p.dsrc[i];
        if (p.per_outer) {
            const float *block = p.dx + (long long)r * p.inner * p.dim + c;
            for (int t = 0; t < p.inner; t++) v += block[(long long)t * p.dim];
        } else {
            const float *col = p.dx + (long long)r * p.dim + c;
            for (int o = 0; o < p.outer; o++) v += col[(long long)o * p.inner * p.dim];
        }
        p.dsrc[i] = v;
    }
}
QUORUM_EMU_ENTRY(quorum_broadcast_add_backward, BroadcastBackwardParams)
