// Elementwise and reduction-free ops: input standardization, broadcast add
// (sequence pooling is in pool.cu). Memory-bound one-liners; grid-stride
// loops so any launch size covers any tensor.
#include "common.cuh"

// x[r, i] = (x[r, i] - mean[i]) / std[i] over (rows, dim), in place.
struct StandardizeParams {
    float *x;
    const float *mean;
    const float *std;
    int rows, dim;
};

QUORUM_KERNEL void quorum_standardize(StandardizeParams p) {
    QUORUM_GRID_STRIDE(i, p.rows * p.dim) {
        int c = i % p.dim;
        p.x[i] = (p.x[i] - p.mean[c]) / p.std[c];
    }
}
QUORUM_EMU_ENTRY(quorum_standardize, StandardizeParams)

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
