// Softmax attention, the inference forward and the training forward and
// backward; their Rust side (shape checks, reference, CPU path, launches,
// tests) is src/backend/ops/attention.rs.
//
// quorum_attention: softmax attention for short sequences (N = 49 or 100
// tokens, head dim 32), flash-style: the N x N score matrix never exists
// anywhere.
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

// Softmax attention for training: the forward that also keeps the
// probabilities P (batch, heads, N, N), and the backward from them.
//
// Same layout as quorum_attention: qkv (batch, N, 3*heads*hd), per token [q | k | v],
// heads of hd consecutive features; hd <= 64 (lane l owns dims l and l + 32).
//
// Forward (quorum_attention_train): one block per (query tile of 16, head,
// sample), 4 warps, a warp per query. Unlike the inference kernel the whole
// score row is kept (P is an output anyway), so the softmax is the exact
// two-pass one of the CPU: lane l holds the scores of keys l, l+32, ... in
// registers (N <= 32 * ATT_TRAIN_MAX_CHUNKS), then max, exp, sum, normalize,
// write P's row, and O = P V. K sits in shared memory padded to hd + 1 (the
// 32 lanes read 32 different keys at one dimension: 32 banks); V is read from
// global memory row by row (all lanes one row: coalesced, and the 16 queries
// of a block share it through L1), which keeps shared memory to K alone so
// 100 tokens at hd 64 fit the 48 KiB default.
//
// Backward, two kernels, each output owned by one lane and summed in a fixed
// order (no atomics: bit-reproducible):
// - quorum_attention_dq, a warp per query row i (same grid as the forward):
//   dP_ij = dO_i . V_j for the lane's keys (V padded in shared memory, the
//   same bank argument as K above), dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij)
//   * scale into `ds` (the caller's scratch, P's shape), and
//   dQ_i = dS_i K (K rows from global memory).
// - quorum_attention_dkv, a warp per key j: dV_j = sum_i P_ij dO_i and
//   dK_j = sum_i dS_ij Q_i over the queries in order; the column of P and dS
//   is fetched 32 queries at a time (one per lane) and broadcast by shuffles.
// Together they write all of dqkv: dq the q part, dkv the k and v parts.

#define ATT_TRAIN_WARPS 4
#define ATT_TRAIN_ROWS_PER_BLOCK 16
#define ATT_TRAIN_MAX_HEAD_DIM 64
// Score chunks of 32 keys a lane keeps in registers: N <= 256.
#define ATT_TRAIN_MAX_CHUNKS 8

struct AttentionTrainParams {
    const float *qkv; // (batch, N, 3*heads*hd)
    float *out;       // (batch, N, heads*hd)
    float *probs;     // (batch, heads, N, N)
    int batch, tokens, heads, head_dim;
};

struct AttentionDqParams {
    const float *qkv;   // (batch, N, 3*heads*hd)
    const float *probs; // (batch, heads, N, N)
    const float *dout;  // (batch, N, heads*hd)
    float *dqkv;        // (batch, N, 3*heads*hd): the q part written here
    float *ds;          // (batch, heads, N, N): dS, for quorum_attention_dkv
    int batch, tokens, heads, head_dim;
};

struct AttentionDkvParams {
    const float *qkv;   // (batch, N, 3*heads*hd)
    const float *probs; // (batch, heads, N, N)
    const float *dout;  // (batch, N, heads*hd)
    const float *ds;    // (batch, heads, N, N), from quorum_attention_dq
    float *dqkv;        // the k and v parts written here
    int batch, tokens, heads, head_dim;
};

// The launch assumptions shared by the three training kernels (launch rules
// in src/backend/ops/attention.rs, train_cfg).
#define ATT_TRAIN_REQUIRE(p)                                                                                   \
    QUORUM_REQUIRE(blockDim.x == ATT_TRAIN_WARPS * 32 && (p).head_dim >= 1 &&                                  \
                   (p).head_dim <= ATT_TRAIN_MAX_HEAD_DIM && (p).tokens <= 32 * ATT_TRAIN_MAX_CHUNKS &&        \
                   (int)gridDim.y == (p).heads && (int)gridDim.z == (p).batch)

// Copies this head's rows of part `part` (1 = k, 2 = v) into dst [N][hd + 1].
__device__ __forceinline__ void att_stage_padded(float *dst, const float *seq, int part, int n, int hd, int d, int h) {
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int j = e / hd, c = e % hd;
        dst[j * (hd + 1) + c] = seq[(long long)j * 3 * d + part * d + h * hd + c];
    }
}

QUORUM_KERNEL void quorum_attention_train(AttentionTrainParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    ATT_TRAIN_REQUIRE(p);
    const int n = p.tokens, hd = p.head_dim, d = p.heads * hd;
    const int h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *ks = smem;                        // [n][hd + 1]
    float *qs = ks + n * (hd + 1) + warp * hd; // this warp's query, [hd]
    const float *seq = p.qkv + (long long)b * n * 3 * d;
    att_stage_padded(ks, seq, 1, n, hd, d, h);
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)hd);
    const int q_end = min(n, (int)(blockIdx.x + 1) * ATT_TRAIN_ROWS_PER_BLOCK);
    for (int qi = blockIdx.x * ATT_TRAIN_ROWS_PER_BLOCK + warp; qi < q_end; qi += ATT_TRAIN_WARPS) {
        const float *q = seq + (long long)qi * 3 * d + h * hd;
        for (int c = lane; c < hd; c += 32) qs[c] = q[c];
        __syncwarp();
        float sc[ATT_TRAIN_MAX_CHUNKS];
        float m = QUORUM_NEG_INF;
#pragma unroll
        for (int ch = 0; ch < ATT_TRAIN_MAX_CHUNKS; ch++) {
            const int j = ch * 32 + lane;
            float s = QUORUM_NEG_INF;
            if (j < n) {
                const float *kr = ks + j * (hd + 1);
                float dot = 0.0f;
                for (int c = 0; c < hd; c++) dot = fmaf(qs[c], kr[c], dot);
                s = dot * scale;
            }
            sc[ch] = s;
            m = fmaxf(m, s);
        }
        m = warp_max(m);
        float l = 0.0f;
#pragma unroll
        for (int ch = 0; ch < ATT_TRAIN_MAX_CHUNKS; ch++) {
            const float e = ch * 32 + lane < n ? expf(sc[ch] - m) : 0.0f;
            sc[ch] = e;
            l += e;
        }
        const float inv = 1.0f / warp_sum(l);
        float *prow = p.probs + (((long long)b * p.heads + h) * n + qi) * n;
        const float *vbase = seq + 2 * d + h * hd;
        float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
        for (int ch = 0; ch < ATT_TRAIN_MAX_CHUNKS; ch++) {
            const int c0 = ch * 32;
            if (c0 >= n) continue; // warp-uniform; not `break`, so the loop unrolls fully
            const float pj = sc[ch] * inv;
            if (c0 + lane < n) prow[c0 + lane] = pj;
            const int chunk = min(32, n - c0);
            for (int jj = 0; jj < chunk; jj++) {
                const float w = __shfl_sync(QUORUM_FULL_MASK, pj, jj);
                const float *vr = vbase + (long long)(c0 + jj) * 3 * d;
                if (lane < hd) acc0 = fmaf(w, vr[lane], acc0);
                if (lane + 32 < hd) acc1 = fmaf(w, vr[lane + 32], acc1);
            }
        }
        float *o = p.out + ((long long)b * n + qi) * d + h * hd;
        if (lane < hd) o[lane] = acc0;
        if (lane + 32 < hd) o[lane + 32] = acc1;
        // qs is rewritten by the next query of this warp.
        __syncwarp();
    }
}
QUORUM_EMU_ENTRY(quorum_attention_train, AttentionTrainParams)

QUORUM_KERNEL void quorum_attention_dq(AttentionDqParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    ATT_TRAIN_REQUIRE(p);
    const int n = p.tokens, hd = p.head_dim, d = p.heads * hd;
    const int h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *vs = smem;                          // [n][hd + 1]
    float *dos = vs + n * (hd + 1) + warp * hd; // this warp's dO row, [hd]
    const float *seq = p.qkv + (long long)b * n * 3 * d;
    att_stage_padded(vs, seq, 2, n, hd, d, h);
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)hd);
    const long long bh = (long long)b * p.heads + h;
    const int q_end = min(n, (int)(blockIdx.x + 1) * ATT_TRAIN_ROWS_PER_BLOCK);
    for (int qi = blockIdx.x * ATT_TRAIN_ROWS_PER_BLOCK + warp; qi < q_end; qi += ATT_TRAIN_WARPS) {
        const float *dorow = p.dout + ((long long)b * n + qi) * d + h * hd;
        for (int c = lane; c < hd; c += 32) dos[c] = dorow[c];
        __syncwarp();
        const float *prow = p.probs + (bh * n + qi) * n;
        float pc[ATT_TRAIN_MAX_CHUNKS], dpc[ATT_TRAIN_MAX_CHUNKS];
        float dot = 0.0f;
#pragma unroll
        for (int ch = 0; ch < ATT_TRAIN_MAX_CHUNKS; ch++) {
            const int j = ch * 32 + lane;
            float pv = 0.0f, dp = 0.0f;
            if (j < n) {
                const float *vr = vs + j * (hd + 1);
                for (int c = 0; c < hd; c++) dp = fmaf(dos[c], vr[c], dp);
                pv = prow[j];
            }
            pc[ch] = pv;
            dpc[ch] = dp;
            dot = fmaf(pv, dp, dot);
        }
        dot = warp_sum(dot);
        float *dsrow = p.ds + (bh * n + qi) * n;
        const float *kbase = seq + d + h * hd;
        float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
        for (int ch = 0; ch < ATT_TRAIN_MAX_CHUNKS; ch++) {
            const int c0 = ch * 32;
            if (c0 >= n) continue; // warp-uniform; not `break`, so the loop unrolls fully
            const float ds = pc[ch] * (dpc[ch] - dot) * scale;
            if (c0 + lane < n) dsrow[c0 + lane] = ds;
            const int chunk = min(32, n - c0);
            for (int jj = 0; jj < chunk; jj++) {
                const float w = __shfl_sync(QUORUM_FULL_MASK, ds, jj);
                const float *kr = kbase + (long long)(c0 + jj) * 3 * d;
                if (lane < hd) acc0 = fmaf(w, kr[lane], acc0);
                if (lane + 32 < hd) acc1 = fmaf(w, kr[lane + 32], acc1);
            }
        }
        float *dq = p.dqkv + ((long long)b * n + qi) * 3 * d + h * hd;
        if (lane < hd) dq[lane] = acc0;
        if (lane + 32 < hd) dq[lane + 32] = acc1;
        // dos is rewritten by the next query of this warp.
        __syncwarp();
    }
}
QUORUM_EMU_ENTRY(quorum_attention_dq, AttentionDqParams)

QUORUM_KERNEL void quorum_attention_dkv(AttentionDkvParams p) {
    ATT_TRAIN_REQUIRE(p);
    const int n = p.tokens, hd = p.head_dim, d = p.heads * hd;
    const int h = blockIdx.y, b = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *seq = p.qkv + (long long)b * n * 3 * d;
    const long long bh = (long long)b * p.heads + h;
    const float *pcol = p.probs + bh * n * n;
    const float *dscol = p.ds + bh * n * n;
    const int k_end = min(n, (int)(blockIdx.x + 1) * ATT_TRAIN_ROWS_PER_BLOCK);
    for (int kj = blockIdx.x * ATT_TRAIN_ROWS_PER_BLOCK + warp; kj < k_end; kj += ATT_TRAIN_WARPS) {
        float dv0 = 0.0f, dv1 = 0.0f, dk0 = 0.0f, dk1 = 0.0f;
        for (int i0 = 0; i0 < n; i0 += 32) {
            const int i = i0 + lane;
            const float pl = i < n ? pcol[(long long)i * n + kj] : 0.0f;
            const float dl = i < n ? dscol[(long long)i * n + kj] : 0.0f;
            const int chunk = min(32, n - i0);
            for (int ii = 0; ii < chunk; ii++) {
                const float pw = __shfl_sync(QUORUM_FULL_MASK, pl, ii);
                const float dw = __shfl_sync(QUORUM_FULL_MASK, dl, ii);
                const float *dorow = p.dout + ((long long)b * n + i0 + ii) * d + h * hd;
                const float *qrow = seq + (long long)(i0 + ii) * 3 * d + h * hd;
                if (lane < hd) {
                    dv0 = fmaf(pw, dorow[lane], dv0);
                    dk0 = fmaf(dw, qrow[lane], dk0);
                }
                if (lane + 32 < hd) {
                    dv1 = fmaf(pw, dorow[lane + 32], dv1);
                    dk1 = fmaf(dw, qrow[lane + 32], dk1);
                }
            }
        }
        float *dst = p.dqkv + ((long long)b * n + kj) * 3 * d + h * hd;
        if (lane < hd) {
            dst[d + lane] = dk0;
            dst[2 * d + lane] = dv0;
        }
        if (lane + 32 < hd) {
            dst[d + lane + 32] = dk1;
            dst[2 * d + lane + 32] = dv1;
        }
    }
}
QUORUM_EMU_ENTRY(quorum_attention_dkv, AttentionDkvParams)
