// The three output heads in one kernel: direction logits (classes rows),
// confidence (one row, then a sigmoid) and expected return (one row), all
// reading the pooled vector z. One block per sample; each warp computes whole
// dot products (lanes stride the dim, a shuffle reduction), one output at a
// time. The weights are in PyTorch's (n_out, dim) layout: rows are read
// contiguously.
#include "common.cuh"

struct HeadsParams {
    const float *z; // (batch, dim)
    const float *dir_w, *dir_b;   // (classes, dim), (classes)
    const float *conf_w, *conf_b; // (1, dim), (1)
    const float *ret_w, *ret_b;   // (1, dim), (1)
    float *logits, *confidence, *expected_return; // (batch, classes), (batch), (batch)
    int batch, dim, classes;
};

QUORUM_KERNEL void quorum_heads(HeadsParams p) {
    QUORUM_REQUIRE(blockDim.x % 32 == 0); // whole warps: the shuffles use full masks
    const int b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float *z = p.z + (long long)b * p.dim;
    for (int o = warp; o < p.classes + 2; o += warps) {
        const float *w = o < p.classes ? p.dir_w + (long long)o * p.dim : (o == p.classes ? p.conf_w : p.ret_w);
        float s = 0.0f;
        for (int k = lane; k < p.dim; k += 32) s = fmaf(z[k], w[k], s);
        s = warp_sum(s);
        if (lane == 0) {
            if (o < p.classes)
                p.logits[b * p.classes + o] = s + p.dir_b[o];
            else if (o == p.classes)
                p.confidence[b] = sigmoidf(s + p.conf_b[0]);
            else
                p.expected_return[b] = s + p.ret_b[0];
        }
    }
}
QUORUM_EMU_ENTRY(quorum_heads, HeadsParams)
