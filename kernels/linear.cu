// The linear layer, everything its kernels are (its Rust side is
// src/backend/ops/linear.rs):
//   quorum_linear        y = x W^T + b, then nothing / GELU / accumulate into y,
//                        on the f32 tile (gemm_tile.cuh); _bf16 and _f16 on
//                        the tensor-core tile (gemm_tile_mma.cuh); _int8 on the
//                        int8 tile (gemm_tile_int8.cuh), each row quantized alone
//   quorum_linear_dw     dW (n_out, n_in) += dy^T x, on the f32 tile
//   quorum_linear_dx     dx = dy W (or +=), W in PyTorch's (n_out, n_in) layout
//   quorum_bias_partials, quorum_bias_finish
//                        the bias backward, db += sum over rows of dy, in the
//                        CPU's summation order (bit for bit, no float atomics)
//   quorum_pack_half     prepare_linear_from's 16-bit packing for mixed
//                        precision (use_amp), on the device after each
//                        optimizer step (its f32 transpose is swap_last_axes.cu)
//
// The weight of the f32 forward is the "prepared" (k, n) row-major matrix
// (Rust prepare_linear: PyTorch's (n_out, n_in) transposed), so a tile of B is
// read with consecutive threads on consecutive columns. Each output is
// reduced by one thread over k in increasing order, so the bits do not depend
// on scheduling.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "gemm_tile_int8.cuh"
#include "gemm_tile_mma.cuh"

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
    // int8: each row is its own quantization group.
    __device__ int quant_group(int r) const { return r; }
    __device__ int quant_len(int) const { return p.n_in; }
    __device__ float quant_at(int r, int i) const { return a(r, i); }
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

// The same with w in int8 (see gemm_tile_int8).
QUORUM_KERNEL void quorum_linear_int8(LinearParams p) {
    LinearProblem pr{p};
    gemm_tile_int8(pr, reinterpret_cast<const unsigned *>(p.w), p.rows, p.n_in, p.n_out);
}
QUORUM_EMU_ENTRY(quorum_linear_int8, LinearParams)

// ---- linear -------------------------------------------------------------------

// dW (n_out, n_in) += dy^T x over the rows.
struct LinearDwParams {
    const float *x;  // (rows, n_in)
    const float *dy; // (rows, n_out)
    float *dw;       // (n_out, n_in)
    int rows, n_in, n_out;
};

struct LinearDw {
    const LinearDwParams &p;
    __device__ float a(int o, int r) const { return p.dy[(long long)r * p.n_out + o]; }
    __device__ float b(int r, int i) const { return p.x[(long long)r * p.n_in + i]; }
    __device__ void store(int o, int i, float acc) const { p.dw[(long long)o * p.n_in + i] += acc; }
};

QUORUM_KERNEL void quorum_linear_dw(LinearDwParams p) {
    LinearDw pr{p};
    gemm_tile_ab<true>(pr, p.n_out, p.rows, p.n_in);
}
QUORUM_EMU_ENTRY(quorum_linear_dw, LinearDwParams)

// dx (rows, n_in) = dy (rows, n_out) W (n_out, n_in), or += when accumulate.
struct LinearDxParams {
    const float *dy; // (rows, n_out)
    const float *w;  // (n_out, n_in), PyTorch's layout
    float *dx;       // (rows, n_in)
    int rows, n_in, n_out, accumulate;
};

struct LinearDx {
    const LinearDxParams &p;
    __device__ float a(int r, int o) const { return p.dy[(long long)r * p.n_out + o]; }
    __device__ float b(int o, int i) const { return p.w[(long long)o * p.n_in + i]; }
    __device__ void store(int r, int i, float acc) const {
        float *dx = p.dx + (long long)r * p.n_in + i;
        *dx = p.accumulate ? *dx + acc : acc;
    }
};

QUORUM_KERNEL void quorum_linear_dx(LinearDxParams p) {
    LinearDx pr{p};
    gemm_tile_ab<false>(pr, p.rows, p.n_out, p.n_in);
}
QUORUM_EMU_ENTRY(quorum_linear_dx, LinearDxParams)

// ---- bias backward ------------------------------------------------------------
// db[..n] += Σ_rows dy (rows, n) in the CPU's order (ops/linear.rs col_sums): rows
// in chunks of `chunk`, each chunk summed from zero in row order, the chunk
// sums then added into db in chunk order. Two launches: partials
// part (chunks, n), one thread per (chunk, column); then one thread per column.
struct BiasPartialsParams {
    const float *dy;
    float *part;
    int rows, n, chunk, _pad;
};

QUORUM_KERNEL void quorum_bias_partials(BiasPartialsParams p) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y;
    if (col >= p.n) return;
    const int r0 = c * p.chunk, r1 = min(r0 + p.chunk, p.rows);
    float acc = 0.0f;
    for (int r = r0; r < r1; r++) acc += p.dy[(long long)r * p.n + col];
    p.part[(long long)c * p.n + col] = acc;
}
QUORUM_EMU_ENTRY(quorum_bias_partials, BiasPartialsParams)

struct BiasFinishParams {
    const float *part;
    float *db;
    int chunks, n;
};

QUORUM_KERNEL void quorum_bias_finish(BiasFinishParams p) {
    QUORUM_GRID_STRIDE(col, p.n) {
        float v = p.db[col];
        for (int c = 0; c < p.chunks; c++) v += p.part[(long long)c * p.n + col];
        p.db[col] = v;
    }
}
QUORUM_EMU_ENTRY(quorum_bias_finish, BiasFinishParams)

// ---- prepare_linear_from (16-bit) -----------------------------------------------
// dst (n_out, ceil(n_in/2)) 32-bit words from src (n_out, n_in) f32: two
// 16-bit values per word, low half first, k padded to even with zero: the
// layout Gpu::prepare_linear uploads for Precision::Bf16/F16 (gemm_tile_mma's
// B operand). kind 0 bf16, 1 f16 (QUORUM_HALF_*), rounded to nearest even.
struct PackHalfParams {
    const float *src;
    float *dst;
    int n_out, n_in, kind;
};

QUORUM_KERNEL void quorum_pack_half(PackHalfParams p) {
    const int words = (p.n_in + 1) / 2;
    QUORUM_GRID_STRIDE(i, p.n_out * words) {
        int o = i / words, j = i % words;
        const float *row = p.src + (long long)o * p.n_in;
        float lo = row[2 * j], hi = 2 * j + 1 < p.n_in ? row[2 * j + 1] : 0.0f;
        unsigned w = p.kind == QUORUM_HALF_F16 ? pack_half2<QUORUM_HALF_F16>(lo, hi) : pack_half2<QUORUM_HALF_BF16>(lo, hi);
        p.dst[i] = __int_as_float((int)w);
    }
}
QUORUM_EMU_ENTRY(quorum_pack_half, PackHalfParams)
