// The "same", stride-1 Conv1d over channels-last rows, forward and backward
// (backend/ops/conv1d.rs launches them; its CPU path and reference beside):
//   quorum_conv1d        implicit im2col GEMM, bias, optional GELU, written at
//                        a column offset/stride; up to QUORUM_MAX_BRANCHES
//                        branches in one launch (blockIdx.z = branch, the
//                        multi-scale conv), concatenated on channels
//   quorum_conv1d_bf16/_f16  the same on gemm_tile_mma.cuh's tensor-core tile
//   quorum_conv1d_int8   the same on gemm_tile_int8.cuh, each sample quantized
//                        with one scale (its output rows sum shifted input rows)
//   quorum_conv1d_dw     dW (c_out, c_in * k) += dy^T im2col(x)
//   quorum_conv1d_dx     dx += dy convolved with the flipped, transposed kernel
//
// The forward's weight is the prepared (k, n) row-major matrix (Rust
// prepare_conv: PyTorch's (c_out, c_in * k) transposed), so a tile of B is
// read with consecutive threads on consecutive columns; the backward reads
// PyTorch's (c_out, c_in, k) master weight. All on gemm_tile.cuh's 64x64 tile
// (256 threads, 4x4 per thread, k step 16 through shared memory, every load
// and store masked). Determinism: each output is reduced by one thread over
// k in increasing order, no atomics, so the bits do not depend on scheduling.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "gemm_tile_int8.cuh"
#include "gemm_tile_mma.cuh"

// ---- forward --------------------------------------------------------------------

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
    // int8: a sample (len x c_in values) is one quantization group.
    __device__ int quant_group(int r) const { return r / p.len; }
    __device__ int quant_len(int) const { return p.len * p.c_in; }
    __device__ float quant_at(int r, int i) const { return p.x[(long long)(r / p.len) * p.len * p.c_in + i]; }
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

QUORUM_KERNEL void quorum_conv1d_int8(ConvParams p) {
    const int z = blockIdx.z;
    const ConvBranch br = p.br[z];
    ConvProblem pr{p, br.ksize, p.out_offset + z * p.c_out, br.b};
    gemm_tile_int8(pr, reinterpret_cast<const unsigned *>(br.w), p.samples * p.len, p.c_in * br.ksize, p.c_out);
}
QUORUM_EMU_ENTRY(quorum_conv1d_int8, ConvParams)

// ---- backward -------------------------------------------------------------------

// The backward reads the forward's geometry: row (sample, t), column
// c * ksize + j of the im2col matrix holds x[sample, t + j - ksize/2, c]
// (zero outside the sequence); dy is read at column out_offset of rows of
// out_stride (a branch of the multi-scale conv).
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
