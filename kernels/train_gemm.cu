// The backward products of the convolution and the patch embedding (the
// linear layer's are in linear.cu), all on the forward's tile (gemm_tile.cuh) with their own operand loaders:
//
//   weight gradients   dW (m, n) += sum_k A(k, m) B(k, n) over k = the rows of
//                      the forward (tokens of every sample): A is the output
//                      gradient dy read transposed (tile loaded along m, its
//                      contiguous axis), B the layer input, as an implicit
//                      im2col (conv1d) or an implicit patch gather (patch
//                      embedding)
//   data gradients     conv1d's dx, a convolution of dy with the flipped,
//                      transposed kernel
//   bias-like sums     dst[c] += sum over (group, row) of a strided view
//                      (biases, the class token, the position embedding)
//
// Determinism: each output is reduced by one thread over k (or the rows) in
// increasing order, and every gradient output is written by exactly one
// thread, so there are no atomics and the bits do not depend on scheduling.
// Gradients are added into what the buffers hold (accumulation over
// micro-batches).
#include "common.cuh"
#include "gemm_tile.cuh"

// ---- conv1d -------------------------------------------------------------------

// A "same", stride-1 Conv1d over channels-last x (samples, len, c_in) as in
// gemm.cu: row (sample, t), column c * ksize + j of the im2col matrix holds
// x[sample, t + j - ksize/2, c] (zero outside the sequence); dy is read at
// column out_offset of rows of out_stride (a branch of the multi-scale conv).
struct ConvDwParams {
    const float *x;  // (samples, len, c_in)
    const float *dy; // (samples, len, out_stride)
    float *dw;       // (c_out, c_in, ksize), PyTorch's layout
    int samples, len, c_in, c_out, ksize, out_stride, out_offset;
};

// dW (c_out, c_in * ksize) += dy^T im2col(x).
struct ConvDw {
    const ConvDwParams &p;
    __device__ float a(int o, int r) const { return p.dy[(long long)r * p.out_stride + p.out_offset + o]; }
    __device__ float b(int r, int col) const {
        const int t = r % p.len, c = col / p.ksize, j = col % p.ksize;
        const int src = t + j - p.ksize / 2;
        if (src < 0 || src >= p.len) return 0.0f;
        return p.x[((long long)(r - t) + src) * p.c_in + c];
    }
    __device__ void store(int o, int col, float acc) const {
        p.dw[(long long)o * p.c_in * p.ksize + col] += acc;
    }
};

QUORUM_KERNEL void quorum_conv1d_dw(ConvDwParams p) {
    ConvDw pr{p};
    gemm_tile_ab<true>(pr, p.c_out, p.samples * p.len, p.c_in * p.ksize);
}
QUORUM_EMU_ENTRY(quorum_conv1d_dw, ConvDwParams)

struct ConvDxParams {
    const float *dy; // (samples, len, out_stride)
    const float *w;  // (c_out, c_in, ksize), PyTorch's layout
    float *dx;       // (samples, len, c_in), added into
    int samples, len, c_in, c_out, ksize, out_stride, out_offset;
};

// dx[s, t, c] += sum_{j, o} dy[s, t + ksize/2 - j, o] w[o, c, j]: output t' =
// t + ksize/2 - j read input t through tap j. The GEMM's k index is
// j * c_out + o, so an A tile row is a run of consecutive channels of dy.
struct ConvDx {
    const ConvDxParams &p;
    __device__ float a(int r, int kk) const {
        const int t = r % p.len, j = kk / p.c_out, o = kk % p.c_out;
        const int src = t + p.ksize / 2 - j;
        if (src < 0 || src >= p.len) return 0.0f;
        return p.dy[((long long)(r - t) + src) * p.out_stride + p.out_offset + o];
    }
    __device__ float b(int kk, int c) const {
        const int j = kk / p.c_out, o = kk % p.c_out;
        return p.w[((long long)o * p.c_in + c) * p.ksize + j];
    }
    __device__ void store(int r, int c, float acc) const { p.dx[(long long)r * p.c_in + c] += acc; }
};

QUORUM_KERNEL void quorum_conv1d_dx(ConvDxParams p) {
    ConvDx pr{p};
    gemm_tile_ab<false>(pr, p.samples * p.len, p.c_out * p.ksize, p.c_in);
}
QUORUM_EMU_ENTRY(quorum_conv1d_dx, ConvDxParams)

// ---- patch embedding ------------------------------------------------------------

// dW (dim, ph * pw) += sum over (sample, patch) of dout[sample, token] (x) the
// patch, token = has_cls + patch (the class token's row has no patch). Patch
// p = i * nf + j holds v[rr * pw + cc] = x[b, i * ph + rr, j * pw + cc], as
// gemm.cu's gather.
struct PatchDwParams {
    const float *x;    // (batch, height, width)
    const float *dout; // (batch, tokens, dim)
    float *dw;         // (dim, ph * pw)
    int batch, height, width, ph, pw, dim, tokens, has_cls;
};

struct PatchDw {
    const PatchDwParams &p;
    int patches;
    __device__ float a(int d, int kk) const {
        const int smp = kk / patches, patch = kk % patches;
        return p.dout[((long long)smp * p.tokens + p.has_cls + patch) * p.dim + d];
    }
    __device__ float b(int kk, int e) const {
        const int smp = kk / patches, patch = kk % patches;
        const int nf = p.width / p.pw;
        const int i = patch / nf, j = patch % nf, rr = e / p.pw, cc = e % p.pw;
        return p.x[((long long)smp * p.height + i * p.ph + rr) * p.width + j * p.pw + cc];
    }
    __device__ void store(int d, int e, float acc) const { p.dw[(long long)d * p.ph * p.pw + e] += acc; }
};

QUORUM_KERNEL void quorum_patch_embed_dw(PatchDwParams p) {
    const int patches = p.tokens - p.has_cls;
    PatchDw pr{p, patches};
    gemm_tile_ab<true>(pr, p.dim, p.batch * patches, p.ph * p.pw);
}
QUORUM_EMU_ENTRY(quorum_patch_embed_dw, PatchDwParams)

// ---- bias-like sums -------------------------------------------------------------

// dst[c] += sum_{g < groups} sum_{r < rows} src[g * group_stride + r * row_stride + offset + c]
// for c < n: a bias (rows of dy, possibly at a column offset), the class token
// (row 0 of every sample), the position embedding (n = tokens * dim, one row
// per sample). One thread per column sums in (group, row) order; consecutive
// threads read consecutive columns.
struct BiasGradParams {
    const float *src;
    float *dst;
    int n, groups, rows, group_stride, row_stride, offset;
};

QUORUM_KERNEL void quorum_gemm_bias_grad(BiasGradParams p) {
    QUORUM_GRID_STRIDE(c, p.n) {
        float s = 0.0f;
        for (int g = 0; g < p.groups; g++) {
            const float *src = p.src + (long long)g * p.group_stride + p.offset + c;
            for (int r = 0; r < p.rows; r++) s += src[(long long)r * p.row_stride];
        }
        p.dst[c] += s;
    }
}
QUORUM_EMU_ENTRY(quorum_gemm_bias_grad, BiasGradParams)
