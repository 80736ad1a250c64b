// AdamW, one update of a parameter tensor from its gradient and its two
// moments (backend/mod.rs AdamWStep), a thread per value in a grid-stride
// loop. The bias corrections c1 = 1/(1−β1^t), c2 = 1/(1−β2^t) are computed
// on the host as the CPU computes them. The rest of the op (the shape
// checks, the reference, the CPU step, the parameter struct, the launch and
// the tests) is in src/backend/ops/adamw.rs.
#include "common.cuh"

struct AdamWParams {
    float *param;
    const float *grad;
    float *m, *v;
    int n;
    float lr, beta1, beta2, eps, weight_decay, grad_scale, c1, c2;
};

QUORUM_KERNEL void quorum_adamw(AdamWParams p) {
    QUORUM_GRID_STRIDE(i, p.n) {
        float g = p.grad_scale * p.grad[i];
        float m = p.beta1 * p.m[i] + (1.0f - p.beta1) * g;
        float v = p.beta2 * p.v[i] + (1.0f - p.beta2) * g * g;
        p.m[i] = m;
        p.v[i] = v;
        float step = (m * p.c1) / (sqrtf(v * p.c2) + p.eps);
        float w = p.param[i];
        p.param[i] = w - p.lr * (p.weight_decay * w + step);
    }
}
QUORUM_EMU_ENTRY(quorum_adamw, AdamWParams)
