// LayerNorm over the last axis, eps 1e-5, biased variance: one warp per row.
//
// Rows are short (128 or 256 features), so a warp holds a row's statistics in
// two shuffle reductions and no shared memory or block barrier is needed.
// Two passes over the row (mean, then centred squares) like PyTorch, which
// keeps the variance accurate when the mean is large; the row is re-read from
// L1/L2, not recomputed.
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
