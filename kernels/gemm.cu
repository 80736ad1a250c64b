// Every matrix product of the forward pass, as one tiled f32 FMA GEMM with a
// pluggable operand loader and epilogue:
//   linear          y = x W^T + b, then nothing / GELU / accumulate into y
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
// step 16 through shared memory, every load and store masked.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "mma.cuh"

// The tensor-core variant of gemm_tile, for weights in a 16-bit float H
// (bf16 or f16): B is in PyTorch's (n, k) layout with k padded to even, two
// values per 32-bit word (Rust prepare_linear in Bf16/F16 mode); A is read as
// f32 through P::a and rounded to H; accumulation is f32.
//
// Per k step of 16 the block stages both operands in shared memory, as
// 32-bit words of two k: the A tile (64 rows) read once per block with
// consecutive threads on consecutive k of a row, the B tile (32 columns)
// read once per block instead of once per warp. Rows are padded to 12 words
// so that a warp's fragment reads (8 rows x 4 words) hit 32 distinct banks.
// Each of the 4 warps then computes a 16-row strip: four 16x8 mma tiles.
#define MMA_THREADS 128
#define MMA_BM 64
#define MMA_BN 32
#define MMA_KW 8   // 32-bit words per row of a k step (16 values)
#define MMA_SROW 12 // padded row stride of the staged tiles, in words

template <int H, class P>
__device__ __forceinline__ void gemm_tile_mma(const P &pr, const unsigned *__restrict__ W, int rows, int k, int n) {
    QUORUM_SHARED(unsigned, As, [MMA_BM][MMA_SROW]);
    QUORUM_SHARED(unsigned, Bs, [MMA_BN][MMA_SROW]);
    QUORUM_REQUIRE(blockDim.x == MMA_THREADS && blockDim.y == 1 && blockDim.z == 1);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row0 = blockIdx.y * MMA_BM, col0 = blockIdx.x * MMA_BN;
    const int kwords = (k + 1) / 2; // 32-bit words per row of W
    MmaC acc[4];
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) acc[t].c[i] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += 16) {
        // Masked loads give zeros: no size needs to be a multiple of a tile.
        for (int w = tid; w < MMA_BM * MMA_KW; w += MMA_THREADS) {
            const int r = w / MMA_KW, kw = w % MMA_KW, gr = row0 + r, gk = k0 + 2 * kw;
            const float v0 = (gr < rows && gk < k) ? pr.a(gr, gk) : 0.0f;
            const float v1 = (gr < rows && gk + 1 < k) ? pr.a(gr, gk + 1) : 0.0f;
            As[r][kw] = pack_half2<H>(v0, v1);
        }
        for (int w = tid; w < MMA_BN * MMA_KW; w += MMA_THREADS) {
            const int c = w / MMA_KW, kw = w % MMA_KW, gc = col0 + c, gkw = k0 / 2 + kw;
            Bs[c][kw] = (gc < n && gkw < kwords) ? W[(long long)gc * kwords + gkw] : 0u;
        }
        __syncthreads();
        // Fragment element 2j and 2j+1 share a register: consecutive k, one word.
        MmaA a;
        for (int j = 0; j < 4; j++) a.r[j] = As[warp * 16 + mma_a_row(lane, 2 * j)][mma_a_col(lane, 2 * j) / 2];
        for (int t = 0; t < 4; t++) {
            MmaB b;
            for (int j = 0; j < 2; j++) b.r[j] = Bs[t * 8 + mma_b_col(lane)][mma_b_k(lane, 2 * j) / 2];
            mma_16816<H>(acc[t], a, b);
        }
        // The next step overwrites the tiles other warps may still be reading.
        __syncthreads();
    }
    const int wrow0 = row0 + warp * 16;
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) {
            const int r = wrow0 + mma_c_row(lane, i), c = col0 + t * 8 + mma_c_col(lane, i);
            if (r < rows && c < n) pr.store(r, c, acc[t].c[i]);
        }
}

// ---- linear -----------------------------------------------------------------

struct LinearParams {
    const float *x; // (rows, n_in)
    const float *w; // prepared (n_in, n_out)
    const float *b; // (n_out)
    float *y;       // (rows, n_out)
    int rows, n_in, n_out;
    int epilogue; // 0 none, 1 GELU, 2 accumulate into y
};

struct LinearProblem {
    const LinearParams &p;
    __device__ float a(int r, int kk) const { return p.x[(long long)r * p.n_in + kk]; }
    __device__ void store(int r, int c, float acc) const {
        float *y = p.y + (long long)r * p.n_out + c;
        float v = acc + p.b[c];
        if (p.epilogue == 1) v = gelu_erf(v);
        if (p.epilogue == 2) v += *y;
        *y = v;
    }
};

QUORUM_KERNEL void quorum_linear(LinearParams p) {
    LinearProblem pr{p};
    gemm_tile(pr, p.w, p.rows, p.n_in, p.n_out);
}
QUORUM_EMU_ENTRY(quorum_linear, LinearParams)

// The same with w in bf16 or f16 (see gemm_tile_mma).
QUORUM_KERNEL void quorum_linear_bf16(LinearParams p) {
    LinearProblem pr{p};
    gemm_tile_mma<QUORUM_HALF_BF16>(pr, reinterpret_cast<const unsigned *>(p.w), p.rows, p.n_in, p.n_out);
}
QUORUM_EMU_ENTRY(quorum_linear_bf16, LinearParams)

QUORUM_KERNEL void quorum_linear_f16(LinearParams p) {
    LinearProblem pr{p};
    gemm_tile_mma<QUORUM_HALF_F16>(pr, reinterpret_cast<const unsigned *>(p.w), p.rows, p.n_in, p.n_out);
}
QUORUM_EMU_ENTRY(quorum_linear_f16, LinearParams)

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
