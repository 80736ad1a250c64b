// The tiled f32 FMA GEMM shared by every matrix product, forward and
// backward (linear.cu, conv1d.cu, patch_embed.cu): one tile, so a fix or a
// tuning applies to all.
//
// Tiling: a 256-thread block computes a 64x64 tile of C, each thread a 4x4
// sub-tile at rows ty + 16 i and columns tx + 16 j (strided, so the stores of
// a warp are coalesced and the shared reads are broadcasts), stepping k by 16
// through shared memory. Every load and store is masked: no size needs to be a
// multiple of a tile (49, 60, 100 tokens; 112 features).
//
// Each output is accumulated by one thread over k in increasing order, so the
// result does not depend on the scheduling of threads or blocks: the same
// inputs give the same bits (what training's reproducibility needs).
#pragma once

#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256

// C (rows, n) = A (rows, k) B (k, n), both operands read through the problem
// P: P::a(r, kk), P::b(kk, c); results handed to P::store(r, c, acc).
// A_T says how A is laid out in memory, so its tile is loaded with
// consecutive threads on consecutive addresses: false when A is stored as
// (rows, k) (consecutive threads take consecutive k), true when it is
// stored as (k, rows), a transposed view like dyᵀ in a weight gradient
// (consecutive threads take consecutive rows). Called by every thread of the
// block, which must all reach it (it has block barriers).
template <bool A_T, class P> __device__ __forceinline__ void gemm_tile_ab(const P &pr, int rows, int k, int n) {
    QUORUM_SHARED(float, As, [GEMM_BK][GEMM_BM + 1]);
    QUORUM_SHARED(float, Bs, [GEMM_BK][GEMM_BN]);
    QUORUM_REQUIRE(blockDim.x == GEMM_THREADS && blockDim.y == 1 && blockDim.z == 1);
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int row0 = blockIdx.y * GEMM_BM, col0 = blockIdx.x * GEMM_BN;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += GEMM_BK) {
        // A tile: 64 rows x 16 k, 4 per thread.
        for (int e = tid; e < GEMM_BM * GEMM_BK; e += GEMM_THREADS) {
            const int r = A_T ? e % GEMM_BM : e / GEMM_BK, kk = A_T ? e / GEMM_BM : e % GEMM_BK;
            const int gr = row0 + r, gk = k0 + kk;
            As[kk][r] = (gr < rows && gk < k) ? pr.a(gr, gk) : 0.0f;
        }
        // B tile: 16 k x 64 columns, columns fastest.
        for (int e = tid; e < GEMM_BK * GEMM_BN; e += GEMM_THREADS) {
            const int kk = e / GEMM_BN, c = e % GEMM_BN;
            const int gk = k0 + kk, gc = col0 + c;
            Bs[kk][c] = (gk < k && gc < n) ? pr.b(gk, gc) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // The next iteration overwrites the tiles others may still be reading.
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        const int r = row0 + ty + 16 * i;
        if (r >= rows) continue;
        for (int j = 0; j < 4; j++) {
            const int c = col0 + tx + 16 * j;
            if (c < n) pr.store(r, c, acc[i][j]);
        }
    }
}

// The forward products' form: A through P::a (row-major (rows, k) or an
// implicit loader over it), B a plain (k, n) row-major matrix (the prepared
// weight).
template <class P> struct GemmPlainB {
    const P &pr;
    const float *__restrict__ B;
    int n;
    __device__ float a(int r, int kk) const { return pr.a(r, kk); }
    __device__ float b(int kk, int c) const { return B[(long long)kk * n + c]; }
    __device__ void store(int r, int c, float acc) const { pr.store(r, c, acc); }
};

template <class P> __device__ __forceinline__ void gemm_tile(const P &pr, const float *__restrict__ B, int rows, int k, int n) {
    GemmPlainB<P> plain{pr, B, n};
    gemm_tile_ab<false>(plain, rows, k, n);
}
