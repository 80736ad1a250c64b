// Swapping the last two axes on the device, so the trainer's layout changes
// never round-trip through the host: TLOB's relabeling of spatial.proj
// between PyTorch's (C, L) flattening and our channels-last (L, C) one (and
// back, for its gradient), and the transpose that turns a PyTorch (n_out,
// n_in) weight into the GEMM's (n_in, n_out) layout after each optimizer
// step. Its Rust side (reference, CPU, launch, tests) is
// src/backend/ops/swap_last_axes.rs.
#include "common.cuh"

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
