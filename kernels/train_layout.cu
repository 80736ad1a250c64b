// Layout changes the trainer makes on the device after each optimizer step,
// so weights never round-trip through the host: the transpose that turns a
// PyTorch (n_out, n_in) weight into the GEMM's (n_in, n_out) layout, and
// TLOB's relabeling of spatial.proj between PyTorch's (C, L) flattening and
// our channels-last (L, C) one (and back, for its gradient); and, for mixed
// precision (use_amp), packing the f32 master weights into the 16-bit layout
// the tensor-core GEMMs read.
#include "common.cuh"
#include "mma.cuh"

// dst (outer, cols, rows) = or += src (outer, rows, cols) with the last two axes swapped.
struct SwapLastAxesParams {
    const float *src;
    float *dst;
    int outer, rows, cols, accumulate;
};

#define SWAP_TILE 32

// A 32×32 tile per block (32×8 threads, 4 rows each) through shared memory,
// so both the reads of src rows and the writes of dst rows are coalesced;
// the tile is padded to 33 columns so the transposed reads hit distinct banks.
// Every dst element is written by exactly one thread: no ordering questions.
QUORUM_KERNEL void quorum_swap_last_axes(SwapLastAxesParams p) {
    QUORUM_REQUIRE(blockDim.x == SWAP_TILE && blockDim.y == 8);
    QUORUM_SHARED(float, tile, [SWAP_TILE][SWAP_TILE + 1]);
    const long long plane = (long long)p.rows * p.cols;
    const float *src = p.src + blockIdx.z * plane;
    float *dst = p.dst + blockIdx.z * plane;
    const int r0 = blockIdx.y * SWAP_TILE, c0 = blockIdx.x * SWAP_TILE;
    for (int k = threadIdx.y; k < SWAP_TILE; k += 8) {
        int r = r0 + k, c = c0 + threadIdx.x;
        if (r < p.rows && c < p.cols) tile[k][threadIdx.x] = src[(long long)r * p.cols + c];
    }
    __syncthreads();
    // Thread (x, k) now writes dst row c0 + k (a src column), column r0 + x (a src row).
    for (int k = threadIdx.y; k < SWAP_TILE; k += 8) {
        int c = c0 + k, r = r0 + threadIdx.x;
        if (r < p.rows && c < p.cols) {
            float v = tile[threadIdx.x][k];
            long long at = (long long)c * p.rows + r;
            dst[at] = p.accumulate ? dst[at] + v : v;
        }
    }
}
QUORUM_EMU_ENTRY(quorum_swap_last_axes, SwapLastAxesParams)

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
