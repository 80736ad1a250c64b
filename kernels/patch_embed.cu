// The ViT patch embedding, forward and backward (backend/ops/patch_embed.rs
// launches them; its CPU path and reference beside):
//   quorum_patch_embed        implicit patch gather GEMM, + CLS row, + bias,
//                             + position embedding
//   quorum_patch_embed_bf16/_f16  the same on gemm_tile_mma.cuh's tensor-core tile
//   quorum_patch_embed_int8   the same on gemm_tile_int8.cuh, each patch quantized alone
//   quorum_patch_embed_dw     dW (dim, ph * pw) += dout's patch rows^T . patches
// The bias, class-token and position-embedding gradients are column sums
// (column_sum.cu). Tiling as conv1d.cu: gemm_tile.cuh's 64x64 tile, each
// output reduced by one thread in a fixed order.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "gemm_tile_int8.cuh"
#include "gemm_tile_mma.cuh"

// ---- forward --------------------------------------------------------------------

// ViT patch embedding of x (batch, height, width) into out (batch, tokens, dim):
// GEMM row = (b, token); token 0 is the CLS token when cls != 0 (its A row is
// zero and the epilogue adds cls instead of the bias); patch p = i*nf + j holds
// v[rr*pw + cc] = x[b, i*ph + rr, j*pw + cc].
struct PatchParams {
    const float *x;
    const float *w; // prepared (ph*pw, dim)
    const float *b; // (dim)
    const float *cls; // (dim), or null
    const float *pos; // (tokens, dim)
    float *out;
    int batch, height, width, ph, pw, dim, tokens, has_cls;
};

struct PatchProblem {
    const PatchParams &p;
    __device__ float a(int r, int kk) const {
        int b = r / p.tokens, tok = r % p.tokens;
        int patch = tok - p.has_cls;
        if (patch < 0) return 0.0f;
        int nf = p.width / p.pw;
        int i = patch / nf, j = patch % nf, rr = kk / p.pw, cc = kk % p.pw;
        return p.x[((long long)b * p.height + i * p.ph + rr) * p.width + j * p.pw + cc];
    }
    // int8: each patch (a row) is its own quantization group.
    __device__ int quant_group(int r) const { return r; }
    __device__ int quant_len(int) const { return p.ph * p.pw; }
    __device__ float quant_at(int r, int i) const { return a(r, i); }
    __device__ void store(int r, int c, float acc) const {
        int tok = r % p.tokens;
        float add = (p.has_cls && tok == 0) ? p.cls[c] : p.b[c];
        p.out[(long long)r * p.dim + c] = acc + add + p.pos[(long long)tok * p.dim + c];
    }
};

QUORUM_KERNEL void quorum_patch_embed(PatchParams p) {
    PatchProblem pr{p};
    gemm_tile(pr, p.w, p.batch * p.tokens, p.ph * p.pw, p.dim);
}
QUORUM_EMU_ENTRY(quorum_patch_embed, PatchParams)

QUORUM_KERNEL void quorum_patch_embed_bf16(PatchParams p) {
    PatchProblem pr{p};
    gemm_tile_mma<QUORUM_HALF_BF16>(pr, reinterpret_cast<const unsigned *>(p.w), p.batch * p.tokens, p.ph * p.pw, p.dim);
}
QUORUM_EMU_ENTRY(quorum_patch_embed_bf16, PatchParams)

QUORUM_KERNEL void quorum_patch_embed_f16(PatchParams p) {
    PatchProblem pr{p};
    gemm_tile_mma<QUORUM_HALF_F16>(pr, reinterpret_cast<const unsigned *>(p.w), p.batch * p.tokens, p.ph * p.pw, p.dim);
}
QUORUM_EMU_ENTRY(quorum_patch_embed_f16, PatchParams)

QUORUM_KERNEL void quorum_patch_embed_int8(PatchParams p) {
    PatchProblem pr{p};
    gemm_tile_int8(pr, reinterpret_cast<const unsigned *>(p.w), p.batch * p.tokens, p.ph * p.pw, p.dim);
}
QUORUM_EMU_ENTRY(quorum_patch_embed_int8, PatchParams)

// ---- backward -------------------------------------------------------------------

// dW (dim, ph * pw) += sum over (sample, patch) of dout[sample, token] (x) the
// patch, token = has_cls + patch (the class token's row has no patch). Patch
// p = i * nf + j holds v[rr * pw + cc] = x[b, i * ph + rr, j * pw + cc], as
// the forward's gather.
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
