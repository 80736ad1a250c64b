// The int8 tile shared by the int8 forward products (linear.cu, conv1d.cu,
// patch_embed.cu): gemm_tile_int8, the GPU twin of the CPU's int8 mode
// (src/backend/cpu/int8.rs, whose quantization it repeats value for value).
//
// Weights (Rust prepare_linear in Int8 mode): PyTorch's (n, k) layout as
// 32-bit words of four consecutive k's signed bytes (k padded to a multiple
// of 4 with zeros), then n f32 scales, then n i32 sums Σ_k q_w. Each weight
// row was quantized symmetrically, scale max|w| / 127.
//
// Activations are quantized as the block reads them, asymmetric over
// [min(x, 0), max(x, 0)] of their group: u = clamp(rint(x · 255 / range) + z,
// 0, 255). A group is what must share one scale: a row of a linear layer or
// a patch, a whole sample of a conv (an output row sums shifted input rows).
// The problem names it: quant_group(r) (rows with equal groups share it),
// quant_len(r) and quant_at(r, i) (the group's values). Before the k loop,
// each warp takes rows of the block's 64 and reduces their group's range
// (a row whose group is the previous row's copies it instead).
//
// The products run on mma.sync m16n8k32 u8·s8 with exact i32 sums; each
// output is ((Σ u·q_w − z·Σ q_w) as f32) · (scale_row · scale_col), the
// CPU's formula and rounding (no fused multiply-add: __fmul_rn), handed to
// the problem's store. Staging and shape as gemm_tile_mma: 128 threads
// (4 warps), a 64 × 32 tile, k in steps of 32 (8 words a row).
#pragma once

#include "common.cuh"
#include "gemm_tile_mma.cuh"
#include "mma.cuh"

// An activation's byte under a row's (inv, zero): rint ties to even, as the
// CPU's vcvtps2dq. A NaN (only in a row already marked non-finite, whose
// scale is NaN) gives 0, as the CPU's clamp of the integer indefinite does.
__device__ __forceinline__ unsigned quantize_u8(float v, float inv, int zero) {
    const float t = v * inv;
    int q = (t == t) ? (int)rintf(t) + zero : 0;
    q = q < 0 ? 0 : q;
    return (unsigned)(q > 255 ? 255 : q);
}

template <class P>
__device__ __forceinline__ void gemm_tile_int8(const P &pr, const unsigned *__restrict__ W, int rows, int k, int n) {
    QUORUM_SHARED(unsigned, As, [MMA_BM][MMA_SROW]);
    QUORUM_SHARED(unsigned, Bs, [MMA_BN][MMA_SROW]);
    QUORUM_SHARED(float, s_lo, [MMA_BM]);
    QUORUM_SHARED(float, s_hi, [MMA_BM]);
    QUORUM_SHARED(int, s_flags, [MMA_BM]); // bit 0: owns its range, bit 1: non-finite
    QUORUM_SHARED(float, s_inv, [MMA_BM]);
    QUORUM_SHARED(float, s_scale, [MMA_BM]);
    QUORUM_SHARED(int, s_zero, [MMA_BM]);
    QUORUM_REQUIRE(blockDim.x == MMA_THREADS && blockDim.y == 1 && blockDim.z == 1);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row0 = blockIdx.y * MMA_BM, col0 = blockIdx.x * MMA_BN;
    const int kwords = (k + 3) / 4; // 32-bit words per row of W

    // Each row's group range, one warp per row (warp-uniform branches).
    for (int i = warp; i < MMA_BM; i += MMA_THREADS / 32) {
        const int r = row0 + i;
        const bool own = r < rows && (i == 0 || pr.quant_group(r) != pr.quant_group(r - 1));
        float lo = 0.0f, hi = 0.0f;
        int bad = 0;
        if (own) {
            const int len = pr.quant_len(r);
            for (int e = lane; e < len; e += 32) {
                const float v = pr.quant_at(r, e);
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
                bad |= !(v * 0.0f == 0.0f); // NaN or infinity
            }
            lo = warp_min(lo);
            hi = warp_max(hi);
            bad = __any_sync(QUORUM_FULL_MASK, bad) ? 1 : 0;
        }
        if (lane == 0) {
            s_lo[i] = lo;
            s_hi[i] = hi;
            s_flags[i] = (own ? 1 : 0) | (bad << 1);
        }
    }
    __syncthreads();
    // Each row's quantization from its group's range (int8.rs row_quant).
    if (tid < MMA_BM) {
        int j = tid;
        while (j > 0 && !(s_flags[j] & 1)) j--;
        const float lo = s_lo[j], hi = s_hi[j], range = hi - lo;
        float inv = 0.0f, scale = 0.0f;
        int zero = 0;
        if ((s_flags[j] & 2) || !(range - range == 0.0f)) {
            scale = __int_as_float(0x7fc00000); // NaN: the row's outputs are NaN, as in f32
        } else if (range != 0.0f) {
            inv = 255.0f / range;
            scale = range / 255.0f;
            const int z = (int)rintf(-lo * inv);
            zero = z < 0 ? 0 : (z > 255 ? 255 : z);
        }
        s_inv[tid] = inv;
        s_scale[tid] = scale;
        s_zero[tid] = zero;
    }
    __syncthreads();

    MmaCi acc[4];
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) acc[t].c[i] = 0;
    for (int k0 = 0; k0 < k; k0 += 32) {
        // Masked loads: past k the bytes are 0 against zero weights; a
        // conv's padding reads x = 0, which quantizes to the zero point.
        for (int w = tid; w < MMA_BM * MMA_KW; w += MMA_THREADS) {
            const int r = w / MMA_KW, kw = w % MMA_KW, gr = row0 + r, gk = k0 + 4 * kw;
            unsigned word = 0u;
            if (gr < rows)
                for (int e = 0; e < 4; e++)
                    if (gk + e < k) word |= quantize_u8(pr.a(gr, gk + e), s_inv[r], s_zero[r]) << (8 * e);
            As[r][kw] = word;
        }
        for (int w = tid; w < MMA_BN * MMA_KW; w += MMA_THREADS) {
            const int c = w / MMA_KW, kw = w % MMA_KW, gc = col0 + c, gkw = k0 / 4 + kw;
            Bs[c][kw] = (gc < n && gkw < kwords) ? W[(long long)gc * kwords + gkw] : 0u;
        }
        __syncthreads();
        MmaA a;
        for (int j = 0; j < 4; j++) a.r[j] = As[warp * 16 + mma8_a_row(lane, j)][mma8_a_word(lane, j)];
        for (int t = 0; t < 4; t++) {
            MmaB b;
            for (int j = 0; j < 2; j++) b.r[j] = Bs[t * 8 + mma_b_col(lane)][mma8_b_word(lane, j)];
            mma_16832_u8s8(acc[t], a, b);
        }
        // The next step overwrites the tiles other warps may still be reading.
        __syncthreads();
    }
    const float *col_scale = reinterpret_cast<const float *>(W + (long long)n * kwords);
    const int *col_sum = reinterpret_cast<const int *>(W + (long long)n * kwords + n);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 4; i++) {
            const int li = warp * 16 + mma_c_row(lane, i), r = row0 + li, c = col0 + t * 8 + mma_c_col(lane, i);
            if (r < rows && c < n) {
                const int sum = acc[t].c[i] - s_zero[li] * col_sum[c];
                pr.store(r, c, __fmul_rn((float)sum, __fmul_rn(s_scale[li], col_scale[c])));
            }
        }
}
