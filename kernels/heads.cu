// The three output heads, forward and training; their Rust side (shape
// checks, reference, CPU path, launches, tests) is src/backend/ops/heads.rs.
//
// quorum_heads: the three heads in one kernel: direction logits (classes rows),
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

// The heads' training step (src/backend/ops/heads.rs loss_gpu): the forward
// above, docs/training.md's multi-task loss per sample, and the gradients,
// in two launches with no float atomics:
// 1. quorum_heads_loss, one block per sample: the three heads (the same warp
//    dot products as quorum_heads, so the same outputs bit for bit), then one
//    thread computes the sample's loss (f64, as the CPU's sample_loss in
//    ops/heads.rs) and the gradients of its five head values; with dz, the
//    block adds the sample's dz row. The sample's record goes to `scratch`.
// 2. quorum_heads_param_grads: one thread per parameter-gradient element
//    looping over the samples in order; one more thread sums the losses in
//    sample order (f64) into the scratch header for the host.
//
// scratch (32-bit words): header [loss lo, loss hi, first bad sample + 1 (0:
// none), unused], then per sample HEADS_RECORD words: [loss lo, loss hi,
// g0, g1, g2 (direction logits), g3 (confidence pre-sigmoid), g4 (return), bad].

#define HEADS_CLASSES 3
#define HEADS_HEADER 4
#define HEADS_RECORD 8

__device__ __forceinline__ unsigned long long heads_double_bits(double d) {
#ifdef QUORUM_EMU
    return quorum_emu::to_bits(d);
#else
    return (unsigned long long)__double_as_longlong(d);
#endif
}

__device__ __forceinline__ double heads_bits_double(unsigned long long b) {
#ifdef QUORUM_EMU
    return quorum_emu::from_bits<double>(b);
#else
    return __longlong_as_double((long long)b);
#endif
}

// ln σ(s) without overflow: −softplus(−s).
__device__ __forceinline__ double log_sigmoid(double s) { return s >= 0.0 ? -log1p(exp(-s)) : s - log1p(exp(s)); }

struct HeadsLossParams {
    const float *z;                               // (batch, dim)
    const float *dir_w, *dir_b;                   // (3, dim), (3)
    const float *conf_w, *conf_b;                 // (1, dim), (1)
    const float *ret_w, *ret_b;                   // (1, dim), (1)
    float *logits, *confidence, *expected_return; // (batch, 3), (batch), (batch)
    const float *target_class, *target_ret;       // (batch), (batch)
    float *dz;                                    // (batch, dim) or null: no backward
    unsigned *scratch;                            // header + batch records
    int batch, dim, classes;
    float w_direction, w_confidence, w_ret, grad_scale;
};

QUORUM_KERNEL void quorum_heads_loss(HeadsLossParams p) {
    QUORUM_REQUIRE(blockDim.x % 32 == 0 && blockDim.x >= 64); // whole warps: full-mask shuffles
    QUORUM_REQUIRE(p.classes == HEADS_CLASSES);
    QUORUM_SHARED(float, dots, [HEADS_CLASSES + 2]);
    QUORUM_SHARED(float, grad, [HEADS_CLASSES + 2]);
    // Whether any sample of the batch has an invalid class: then the op
    // fails and must change nothing (no outputs, no dz, no parameter
    // gradients), so every block looks at every target, not only its own.
    QUORUM_SHARED(int, batch_bad, [1]);
    const int b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float *z = p.z + (long long)b * p.dim;
    for (int o = warp; o < HEADS_CLASSES + 2; o += warps) {
        const float *w = o < HEADS_CLASSES ? p.dir_w + (long long)o * p.dim : (o == HEADS_CLASSES ? p.conf_w : p.ret_w);
        float s = 0.0f;
        for (int k = lane; k < p.dim; k += 32) s = fmaf(z[k], w[k], s);
        s = warp_sum(s);
        if (lane == 0) dots[o] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int any_bad = 0;
        for (int i = 0; i < p.batch && !any_bad; i++) {
            const float c = p.target_class[i];
            any_bad = !(c == 0.0f || c == 1.0f || c == 2.0f);
        }
        batch_bad[0] = any_bad;
        float logits[HEADS_CLASSES];
        for (int k = 0; k < HEADS_CLASSES; k++) {
            logits[k] = dots[k] + p.dir_b[k];
            if (!any_bad) p.logits[b * HEADS_CLASSES + k] = logits[k];
        }
        const float conf_pre = dots[HEADS_CLASSES] + p.conf_b[0];
        const float ret = dots[HEADS_CLASSES + 1] + p.ret_b[0];
        if (!any_bad) {
            p.confidence[b] = sigmoidf(conf_pre);
            p.expected_return[b] = ret;
        }

        const float cls = p.target_class[b];
        const bool valid = cls == 0.0f || cls == 1.0f || cls == 2.0f;
        const int class_id = valid ? (int)cls : 0;
        // Cross-entropy through the log-sum-exp, in f64.
        float mf = logits[0];
        for (int k = 1; k < HEADS_CLASSES; k++) mf = fmaxf(mf, logits[k]);
        const double m = (double)mf;
        double zsum = 0.0;
        for (int k = 0; k < HEADS_CLASSES; k++) zsum += exp((double)logits[k] - m);
        const double lse = m + log(zsum);
        const double ce = lse - (double)logits[class_id];
        // The confidence target: is the argmax (the first maximum) right?
        int best = 0;
        for (int k = 1; k < HEADS_CLASSES; k++)
            if (logits[k] > logits[best]) best = k;
        const double right = best == class_id ? 1.0 : 0.0;
        // BCE on the sigmoid with PyTorch's clamp of the logs at −100.
        const double s = (double)conf_pre;
        const double bce = -(right * fmax(log_sigmoid(s), -100.0) + (1.0 - right) * fmax(log_sigmoid(-s), -100.0));
        // Huber, δ = 1.
        const double d = (double)ret - (double)p.target_ret[b];
        const double huber = fabs(d) < 1.0 ? 0.5 * d * d : fabs(d) - 0.5;
        const double loss =
            (double)p.w_direction * ce + (double)p.w_confidence * bce + (double)p.w_ret * huber;

        float g[HEADS_CLASSES + 2];
        for (int k = 0; k < HEADS_CLASSES; k++) {
            const double pk = exp((double)logits[k] - lse);
            g[k] = (float)((double)p.w_direction * (pk - (k == class_id ? 1.0 : 0.0))) * p.grad_scale;
        }
        const double sig = 1.0 / (1.0 + exp(-s));
        g[HEADS_CLASSES] = (float)((double)p.w_confidence * (sig - right)) * p.grad_scale;
        g[HEADS_CLASSES + 1] = p.w_ret * (float)fmin(fmax(d, -1.0), 1.0) * p.grad_scale;
        // A sample with an invalid class contributes nothing (and its
        // batch fails as a whole, below).
        unsigned *rec = p.scratch + HEADS_HEADER + (long long)b * HEADS_RECORD;
        const unsigned long long lb = heads_double_bits(valid ? loss : 0.0);
        rec[0] = (unsigned)lb;
        rec[1] = (unsigned)(lb >> 32);
        for (int k = 0; k < HEADS_CLASSES + 2; k++) {
            grad[k] = valid ? g[k] : 0.0f;
            rec[2 + k] = (unsigned)__float_as_int(grad[k]);
        }
        rec[7] = valid ? 0u : 1u;
    }
    __syncthreads();
    if (p.dz != 0 && !batch_bad[0]) {
        // dz += Σ_o g_o · w_o, heads in the CPU's order.
        float *dz = p.dz + (long long)b * p.dim;
        for (int j = threadIdx.x; j < p.dim; j += blockDim.x) {
            float v = dz[j];
            for (int k = 0; k < HEADS_CLASSES; k++) v += grad[k] * p.dir_w[(long long)k * p.dim + j];
            v += grad[HEADS_CLASSES] * p.conf_w[j];
            v += grad[HEADS_CLASSES + 1] * p.ret_w[j];
            dz[j] = v;
        }
    }
}
QUORUM_EMU_ENTRY(quorum_heads_loss, HeadsLossParams)

struct HeadsParamGradsParams {
    const float *z;          // (batch, dim)
    unsigned *scratch;       // as quorum_heads_loss left it
    float *dir_w, *dir_b;    // gradients (3, dim), (3), added into
    float *conf_w, *conf_b;  // (dim), (1)
    float *ret_w, *ret_b;    // (dim), (1)
    int batch, dim, grads, _pad; // grads 0: only the loss sum
};

// Element e of the gradients, in the order direction.weight (3·dim),
// direction.bias (3), confidence.weight (dim), confidence.bias, return.weight
// (dim), return.bias; element 5·dim + 5 (or 0 without grads) sums the losses.
QUORUM_KERNEL void quorum_heads_param_grads(HeadsParamGradsParams p) {
    const int d = p.dim;
    const int elems = p.grads ? 5 * d + 5 : 0;
    QUORUM_GRID_STRIDE(e, elems + 1) {
        const unsigned *rec = p.scratch + HEADS_HEADER;
        if (e == elems) {
            double total = 0.0;
            unsigned bad = 0;
            for (int b = 0; b < p.batch; b++) {
                const unsigned *r = rec + (long long)b * HEADS_RECORD;
                total += heads_bits_double((unsigned long long)r[0] | ((unsigned long long)r[1] << 32));
                if (bad == 0 && r[7] != 0) bad = (unsigned)b + 1;
            }
            const unsigned long long tb = heads_double_bits(total);
            p.scratch[0] = (unsigned)tb;
            p.scratch[1] = (unsigned)(tb >> 32);
            p.scratch[2] = bad;
            p.scratch[3] = 0;
            continue;
        }
        // Which gradient slot, which head value (g index), which z column (-1: a bias).
        float *dst;
        int gi, col;
        if (e < 3 * d) {
            dst = p.dir_w + e, gi = e / d, col = e % d;
        } else if (e < 3 * d + 3) {
            dst = p.dir_b + (e - 3 * d), gi = e - 3 * d, col = -1;
        } else if (e < 4 * d + 3) {
            dst = p.conf_w + (e - 3 * d - 3), gi = HEADS_CLASSES, col = e - 3 * d - 3;
        } else if (e == 4 * d + 3) {
            dst = p.conf_b, gi = HEADS_CLASSES, col = -1;
        } else if (e < 5 * d + 4) {
            dst = p.ret_w + (e - 4 * d - 4), gi = HEADS_CLASSES + 1, col = e - 4 * d - 4;
        } else {
            dst = p.ret_b, gi = HEADS_CLASSES + 1, col = -1;
        }
        // A batch with an invalid class adds nothing anywhere (the op fails).
        bool any_bad = false;
        for (int b = 0; b < p.batch && !any_bad; b++) any_bad = rec[(long long)b * HEADS_RECORD + 7] != 0;
        if (any_bad) continue;
        float v = *dst;
        for (int b = 0; b < p.batch; b++) {
            const float g = __int_as_float((int)rec[(long long)b * HEADS_RECORD + 2 + gi]);
            v += col < 0 ? g : g * p.z[(long long)b * d + col];
        }
        *dst = v;
    }
}
QUORUM_EMU_ENTRY(quorum_heads_param_grads, HeadsParamGradsParams)
