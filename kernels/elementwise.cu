// Elementwise and reduction-free ops: input standardization, broadcast add,
// sequence pooling. Memory-bound one-liners; grid-stride loops so any launch
// size covers any tensor.
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

// out (batch, dim) from x (batch, tokens, dim): mode 0 first token, 1 mean, 2 last.
// One thread per output value; the mean walks the tokens in order (the same
// summation order as the CPU reference).
struct PoolParams {
    const float *x;
    float *out;
    int batch, tokens, dim, mode;
};

QUORUM_KERNEL void quorum_pool(PoolParams p) {
    QUORUM_GRID_STRIDE(i, p.batch * p.dim) {
        int b = i / p.dim, c = i % p.dim;
        const float *seq = p.x + (long long)b * p.tokens * p.dim + c;
        float v;
        if (p.mode == 0) {
            v = seq[0];
        } else if (p.mode == 2) {
            v = seq[(long long)(p.tokens - 1) * p.dim];
        } else {
            float s = 0.0f;
            for (int t = 0; t < p.tokens; t++) s += seq[(long long)t * p.dim];
            v = s * (1.0f / (float)p.tokens);
        }
        p.out[i] = v;
    }
}
QUORUM_EMU_ENTRY(quorum_pool, PoolParams)
