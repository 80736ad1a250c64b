// LayerNorm over the last axis, eps 1e-5, biased variance: the forward and
// its backward. Every piece of the op beside these kernels (the reference, the
// CPU paths, the parameter structs, the launches and the tests) is in
// src/backend/ops/layernorm.rs.
//
// Forward: one warp per row. Rows are short (128 or 256 features), so a warp
// holds a row's statistics in two shuffle reductions and no shared memory or
// block barrier is needed. Two passes over the row (mean, then centred
// squares) like PyTorch, which keeps the variance accurate when the mean is
// large; the row is re-read from L1/L2, not recomputed.
//
// Backward, the row statistics recomputed from x exactly as the forward
// computes them (a warp per row, mean then centred variance):
//
//   xh = (x - mean) rstd,  g = dy gamma
//   dx     += rstd (g - mean(g) - xh mean(g xh))      a warp per row
//   dgamma += sum_rows dy xh,  dbeta += sum_rows dy     column blocks
//
// The parameter gradients are column sums over every row: a block owns 32
// columns (a lane each); its 8 warps take rows w, w + 8, ... in order,
// each recomputing its rows' statistics, and the 8 partial sums are combined
// in warp order. No atomics: the bits do not depend on scheduling.
#include "common.cuh"

struct LayerNormParams {
    const float *x;
    const float *gamma;
    const float *beta;
    float *y;
    int rows, dim;
};

QUORUM_KERNEL void quorum_layernorm(LayerNormParams p) {
    const int lane = threadIdx.x & 31;
    QUORUM_REQUIRE(blockDim.x % 32 == 0); // whole warps: the shuffles use full masks
    const int warps = blockDim.x >> 5;
    // Every lane of a warp takes the same path: the shuffles below see full warps.
    for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < p.rows; row += gridDim.x * warps) {
        const float *x = p.x + (long long)row * p.dim;
        float s = 0.0f;
        for (int i = lane; i < p.dim; i += 32) s += x[i];
        const float mean = warp_sum(s) / (float)p.dim;
        float q = 0.0f;
        for (int i = lane; i < p.dim; i += 32) {
            float d = x[i] - mean;
            q += d * d;
        }
        const float inv = rsqrtf(warp_sum(q) / (float)p.dim + 1e-5f);
        float *y = p.y + (long long)row * p.dim;
        for (int i = lane; i < p.dim; i += 32) y[i] = (x[i] - mean) * inv * p.gamma[i] + p.beta[i];
    }
}
QUORUM_EMU_ENTRY(quorum_layernorm, LayerNormParams)

// ---------------------------------------------------------------- backward

#define LNB_WARPS 8

// Mean and 1 / sqrt(var + eps) of one row, on every lane of the warp.
__device__ __forceinline__ void ln_row_stats(const float *x, int dim, int lane, float &mean, float &rstd) {
    float s = 0.0f;
    for (int i = lane; i < dim; i += 32) s += x[i];
    mean = warp_sum(s) / (float)dim;
    float q = 0.0f;
    for (int i = lane; i < dim; i += 32) {
        const float d = x[i] - mean;
        q += d * d;
    }
    rstd = rsqrtf(warp_sum(q) / (float)dim + 1e-5f);
}

struct LayerNormDxParams {
    const float *x;     // (rows, dim)
    const float *gamma; // (dim)
    const float *dy;    // (rows, dim)
    float *dx;          // (rows, dim), added into
    int rows, dim;
};

QUORUM_KERNEL void quorum_layernorm_dx(LayerNormDxParams p) {
    const int lane = threadIdx.x & 31;
    QUORUM_REQUIRE(blockDim.x % 32 == 0); // whole warps: the shuffles use full masks
    const int warps = blockDim.x >> 5;
    // Every lane of a warp takes the same path: the shuffles below see full warps.
    for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < p.rows; row += gridDim.x * warps) {
        const float *x = p.x + (long long)row * p.dim;
        const float *dy = p.dy + (long long)row * p.dim;
        float mean, rstd;
        ln_row_stats(x, p.dim, lane, mean, rstd);
        float s1 = 0.0f, s2 = 0.0f;
        for (int i = lane; i < p.dim; i += 32) {
            const float g = dy[i] * p.gamma[i];
            s1 += g;
            s2 += g * ((x[i] - mean) * rstd);
        }
        const float m1 = warp_sum(s1) / (float)p.dim, m2 = warp_sum(s2) / (float)p.dim;
        float *dx = p.dx + (long long)row * p.dim;
        for (int i = lane; i < p.dim; i += 32) {
            const float xh = (x[i] - mean) * rstd;
            dx[i] += rstd * (dy[i] * p.gamma[i] - m1 - xh * m2);
        }
    }
}
QUORUM_EMU_ENTRY(quorum_layernorm_dx, LayerNormDxParams)

struct LayerNormDparamsParams {
    const float *x;  // (rows, dim)
    const float *dy; // (rows, dim)
    float *dgamma;   // (dim), added into
    float *dbeta;    // (dim), added into
    int rows, dim;
};

QUORUM_KERNEL void quorum_layernorm_dparams(LayerNormDparamsParams p) {
    QUORUM_SHARED(float, part_g, [LNB_WARPS][32]);
    QUORUM_SHARED(float, part_b, [LNB_WARPS][32]);
    QUORUM_REQUIRE(blockDim.x == 32 * LNB_WARPS && blockDim.y == 1 && blockDim.z == 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int c = blockIdx.x * 32 + lane;
    float sg = 0.0f, sb = 0.0f;
    // Warp-uniform loop: every lane reaches the shuffles of ln_row_stats.
    for (int row = warp; row < p.rows; row += LNB_WARPS) {
        const float *x = p.x + (long long)row * p.dim;
        float mean, rstd;
        ln_row_stats(x, p.dim, lane, mean, rstd);
        if (c < p.dim) {
            const float d = p.dy[(long long)row * p.dim + c];
            sg += d * ((x[c] - mean) * rstd);
            sb += d;
        }
    }
    part_g[warp][lane] = sg;
    part_b[warp][lane] = sb;
    __syncthreads();
    if (warp == 0 && c < p.dim) {
        float g = 0.0f, b = 0.0f;
        for (int w = 0; w < LNB_WARPS; w++) {
            g += part_g[w][lane];
            b += part_b[w][lane];
        }
        p.dgamma[c] += g;
        p.dbeta[c] += b;
    }
}
QUORUM_EMU_ENTRY(quorum_layernorm_dparams, LayerNormDparamsParams)
