// The convolution and patch-embedding products of the forward pass (the
// linear layer's is linear.cu), as one tiled f32 FMA GEMM with a pluggable
// operand loader and epilogue:
//   conv1d          implicit im2col of a "same" Conv1d over channels-last rows,
//                   bias, optional GELU, written at a column offset/stride
//   multiscale      several conv1d branches in one launch (blockIdx.z = branch),
//                   concatenated on channels
//   patch_embed     implicit patch gather of a ViT patch embedding, + CLS row,
//                   + bias, + position embedding
//
// The weight B is always the "prepared" (k, n) row-major matrix (Rust
// prepare_linear: PyTorch's (n_out, n_in) transposed), so a tile of B is read
// with consecutive threads on consecutive columns.
//
// Tiling (gemm_tile.cuh, shared with the backward products of
// train_gemm.cu): a 256-thread block per 64x64 tile of C, 4x4 per thread, k
// step 16 through shared memory, every load and store masked; the 16-bit
// twins on gemm_tile_mma.cuh's tensor-core tile.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "gemm_tile_mma.cuh"

// ---- conv1d -------------------------------------------------------------------

// A "same", stride-1 Conv1d over channels-last x (samples, len, c_in): the GEMM
// row is (sample, t), the GEMM k index is c * ksize + j (PyTorch's weight
// flattening), and A(row, c*ksize + j) = x[sample, t + j - ksize/2, c], zero
// outside the sequence.
struct ConvBranch {
    const float *w; // prepared (c_in*ksize, c_out)
    const float *b; // (c_out)
    int ksize;
};

#define QUORUM_MAX_BRANCHES 4

struct ConvParams {
    const float *x;
    float *y; // (samples, len, out_stride); branch z writes columns [out_offset + z*c_out, +c_out)
    ConvBranch br[QUORUM_MAX_BRANCHES];
    int samples, len, c_in, c_out, out_stride, out_offset, gelu;
};

struct ConvProblem {
    const ConvParams &p;
    int ksize, col_off;
    const float *bias;
    __device__ float a(int r, int kk) const {
        int t = r % p.len, c = kk / ksize, j = kk % ksize;
        int src = t + j - ksize / 2;
        if (src < 0 || src >= p.len) return 0.0f;
        return p.x[((long long)(r - t) + src) * p.c_in + c];
    }
    __device__ void store(int r, int c, float acc) const {
        float v = acc + bias[c];
        if (p.gelu) v = gelu_erf(v);
        p.y[(long long)r * p.out_stride + col_off + c] = v;
    }
};

QUORUM_KERNEL void quorum_conv1d(ConvParams p) {
    const int z = blockIdx.z;
    const ConvBranch br = p.br[z];
    ConvProblem pr{p, br.ksize, p.out_offset + z * p.c_out, br.b};
    gemm_tile(pr, br.w, p.samples * p.len, p.c_in * br.ksize, p.c_out);
}
QUORUM_EMU_ENTRY(quorum_conv1d, ConvParams)

template <int H> __device__ __forceinline__ void conv1d_mma(const ConvParams &p) {
    const int z = blockIdx.z;
    const ConvBranch br = p.br[z];
    ConvProblem pr{p, br.ksize, p.out_offset + z * p.c_out, br.b};
    gemm_tile_mma<H>(pr, reinterpret_cast<const unsigned *>(br.w), p.samples * p.len, p.c_in * br.ksize, p.c_out);
}

QUORUM_KERNEL void quorum_conv1d_bf16(ConvParams p) { conv1d_mma<QUORUM_HALF_BF16>(p); }
QUORUM_EMU_ENTRY(quorum_conv1d_bf16, ConvParams)

QUORUM_KERNEL void quorum_conv1d_f16(ConvParams p) { conv1d_mma<QUORUM_HALF_F16>(p); }
QUORUM_EMU_ENTRY(quorum_conv1d_f16, ConvParams)

// ---- patch embedding ------------------------------------------------------------

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
