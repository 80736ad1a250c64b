// Softmax attention for short sequences (N = 49 or 100 tokens, head dim 32),
// flash-style: the N x N score matrix never exists anywhere.
//
// One block per (query tile, head, sample), 4 warps. The block copies its
// head's K and V (N x hd each, 26 KiB at N = 100) into shared memory once;
// then each warp takes one query at a time. Lane l scores keys l, l+32, ...
// chunk by chunk, and an online softmax (running max m, running sum l,
// rescaled accumulator) folds each chunk into the output, which lane d holds
// for dimensions d and d + 32. K rows are padded to hd + 1 floats so the 32
// lanes reading 32 different keys at the same dimension hit 32 banks.
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_QUERIES_PER_BLOCK 16
#define ATT_MAX_HEAD_DIM 64

struct AttentionParams {
    const float *qkv; // (batch, tokens, 3*heads*hd): per token [q | k | v], heads of hd consecutive
    float *out;       // (batch, tokens, heads*hd)
    int batch, tokens, heads, head_dim;
};

QUORUM_KERNEL void quorum_attention(AttentionParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    QUORUM_REQUIRE(blockDim.x == ATT_WARPS * 32 && p.head_dim <= ATT_MAX_HEAD_DIM);
    const int n = p.tokens, hd = p.head_dim, d = p.heads * hd;
    const int h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *ks = smem;                        // [n][hd + 1]
    float *vs = ks + n * (hd + 1);           // [n][hd]
    float *qs = vs + n * hd + warp * hd;     // this warp's query, [hd]
    const float *seq = p.qkv + (long long)b * n * 3 * d;
    for (int e = tid; e < n * hd; e += blockDim.x) {
        int j = e / hd, c = e % hd;
        const float *row = seq + (long long)j * 3 * d + h * hd + c;
        ks[j * (hd + 1) + c] = row[d];
        vs[j * hd + c] = row[2 * d];
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)hd);
    const int q_end = min(n, (int)(blockIdx.x + 1) * ATT_QUERIES_PER_BLOCK);
    for (int qi = blockIdx.x * ATT_QUERIES_PER_BLOCK + warp; qi < q_end; qi += ATT_WARPS) {
        const float *q = seq + (long long)qi * 3 * d + h * hd;
        for (int c = lane; c < hd; c += 32) qs[c] = q[c];
        __syncwarp();
        float m = QUORUM_NEG_INF, l = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
        for (int c0 = 0; c0 < n; c0 += 32) {
            const int j = c0 + lane;
            float s = QUORUM_NEG_INF;
            if (j < n) {
                const float *kr = ks + j * (hd + 1);
                float dot = 0.0f;
                for (int c = 0; c < hd; c++) dot = fmaf(qs[c], kr[c], dot);
                s = dot * scale;
            }
            const float m_new = fmaxf(m, warp_max(s));
            const float pj = j < n ? expf(s - m_new) : 0.0f;
            const float corr = expf(m - m_new); // 0 on the first chunk (m = -inf)
            l = l * corr + warp_sum(pj);
            acc0 *= corr;
            acc1 *= corr;
            const int chunk = min(32, n - c0);
            for (int jj = 0; jj < chunk; jj++) {
                const float w = __shfl_sync(QUORUM_FULL_MASK, pj, jj);
                const float *vr = vs + (c0 + jj) * hd;
                if (lane < hd) acc0 = fmaf(w, vr[lane], acc0);
                if (lane + 32 < hd) acc1 = fmaf(w, vr[lane + 32], acc1);
            }
            m = m_new;
        }
        float *o = p.out + ((long long)b * n + qi) * d + h * hd;
        const float inv = 1.0f / l;
        if (lane < hd) o[lane] = acc0 * inv;
        if (lane + 32 < hd) o[lane + 32] = acc1 * inv;
        // qs is rewritten by the next query of this warp.
        __syncwarp();
    }
}
QUORUM_EMU_ENTRY(quorum_attention, AttentionParams)
