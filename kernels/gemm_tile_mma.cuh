// The tensor-core tile shared by the 16-bit forward products (linear.cu,
// conv1d.cu, patch_embed.cu): gemm_tile_mma, one tile for all (as
// gemm_tile.cuh for f32).
#pragma once

#include "common.cuh"
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
