// Sequence pooling, (batch, tokens, dim) -> (batch, dim), and its backward:
// mode 0 the first token, 1 the mean, 2 the last. Grid-stride loops, one
// thread per output value. The rest of the op (the reference, the CPU paths,
// the parameter structs, the launches and the tests) is in
// src/backend/ops/pool.rs.
#include "common.cuh"

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

// Backward of pool: writes all of dx (batch, tokens, dim); mode 0 first, 1 mean, 2 last.
struct PoolBackwardParams {
    const float *dout;
    float *dx;
    int batch, tokens, dim, mode;
};

QUORUM_KERNEL void quorum_pool_backward(PoolBackwardParams p) {
    const float inv = 1.0f / (float)p.tokens;
    QUORUM_GRID_STRIDE(i, p.batch * p.tokens * p.dim) {
        const int c = i % p.dim, row = i / p.dim;
        const int b = row / p.tokens, t = row % p.tokens;
        const float g = p.dout[(long long)b * p.dim + c];
        float v;
        if (p.mode == 1)
            v = g * inv;
        else
            v = t == (p.mode == 0 ? 0 : p.tokens - 1) ? g : 0.0f;
        p.dx[i] = v;
    }
}
QUORUM_EMU_ENTRY(quorum_pool_backward, PoolBackwardParams)
