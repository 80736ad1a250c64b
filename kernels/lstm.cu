// The LSTM layer (PyTorch nn.LSTM: gates i, f, g, o), forward and backward:
// the recurrence given gx (batch, steps, 4H) = x W_ih^T + b_ih + b_hh from
// one GEMM over all steps; for training, the same recurrence also keeping
// what the backward needs, and backpropagation through time. W_hh is in
// PyTorch's (4H, H) layout throughout. The op's Rust side (reference, CPU,
// launches, tests) is src/backend/ops/lstm.rs.
//
// quorum_lstm, the inference recurrence. Design, and why: what is left after
// that GEMM is 60 strictly sequential steps of h W_hh^T (4H x H) plus a
// pointwise cell update. At batch 1 the cost
// is latency, not arithmetic: a launch per step (~3-5 us each) would dominate,
// so the kernel is persistent: one block per sample runs all the steps, with
// h (double-buffered) and c in shared memory and one __syncthreads per step as
// the only synchronization. A warp owns a hidden unit at a time and computes
// its four gate rows as coalesced dot products (lanes stride the row of W_hh),
// reduced by shuffles; W_hh (1 MiB at H = 256) does not fit in one SM's shared
// memory, so it streams from L2, where it stays resident across the steps.
// Splitting W_hh across several SMs' shared memory needs a grid-wide barrier
// per step (cooperative launch) and is the next step for lower batch-1
// latency; it is not done here.
// Batched path: samples are independent, so the grid has one block per sample
// and the blocks run the recurrences concurrently on different SMs; each
// block reads W_hh from L2, which the concurrent blocks share.
//
// quorum_lstm_train: quorum_lstm's persistent recurrence (one block per
// sample, h double-buffered and c in shared memory, a warp per hidden unit
// computing its four gate rows, one barrier per step), the same code
// (lstm_recurrence), so its h matches the inference kernel's bit for bit; it
// also writes every step's cell state c_seq (batch, steps, H) and the
// activated gates (batch, steps, 4H) in i, f, g, o order, as the CPU's
// training recurrence does.
//
// quorum_lstm_backward: one persistent block per sample walks the steps
// backwards with dh_next and dc_next (the gradients flowing into step t from
// step t+1) in shared memory. Per step: a thread per unit turns dh (this
// step's output gradient plus dh_next) into the four gate pre-activation
// gradients (written to dgx and kept in shared memory) and dc_next; after a
// barrier, dh_next = W_hh^T dgates, a thread per unit k summing down column
// k of W_hh (coalesced across the warp) with one accumulator per gate,
// combined in a fixed order. Samples are independent blocks.
//
// quorum_lstm_dw: dW_hh (4H, H) += sum over (b, t >= 1) of
// dgates[b, t]^T h[b, t-1], a 32x32-tile GEMM over the M = batch*(steps-1)
// (sample, step) pairs staged 32 at a time in shared memory; each thread owns
// 4 outputs and sums over M in order, so the result does not depend on the
// schedule.
#include "common.cuh"

// The recurrence of one layer, shared by the inference kernel (quorum_lstm)
// and the training forward (quorum_lstm_train), so both compute the same h
// bit for bit. Runs every step for sample blockIdx.x from h0 = c0 = 0. gx
// (batch, steps, 4H) holds x W_ih^T + b_ih + b_hh; w_hh is PyTorch's (4H, H).
// Writes h_seq (batch, steps, H); when c_seq and gates are given (training), also
// every step's cell state and activated gates (i, f, g, o). smem: 3H floats.
__device__ __forceinline__ void lstm_recurrence(const float *gx, const float *w_hh, float *h_seq, float *c_seq,
                                                float *gates, int steps, int H, float *smem) {
    const int b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float *hbuf = smem;       // [2][H]: h of step t-1 in hbuf[t & 1], step t writes the other
    float *cs = smem + 2 * H; // [H]
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        hbuf[j] = 0.0f;
        cs[j] = 0.0f;
    }
    __syncthreads();
    for (int t = 0; t < steps; t++) {
        const float *hp = hbuf + (t & 1) * H;
        float *hn = hbuf + ((t + 1) & 1) * H;
        const long long row = (long long)b * steps + t;
        const float *g = gx + row * 4 * H;
        for (int j = warp; j < H; j += warps) {
            float z[4];
            for (int q = 0; q < 4; q++) {
                const float *w = w_hh + (long long)(q * H + j) * H;
                float s = 0.0f;
                if (t > 0)
                    for (int k = lane; k < H; k += 32) s = fmaf(w[k], hp[k], s);
                z[q] = warp_sum(s) + g[q * H + j];
            }
            if (lane == 0) {
                const float i = sigmoidf(z[0]), f = sigmoidf(z[1]), gg = tanhf(z[2]), o = sigmoidf(z[3]);
                const float c = f * cs[j] + i * gg;
                const float hv = o * tanhf(c);
                cs[j] = c;
                hn[j] = hv;
                h_seq[row * H + j] = hv;
                if (gates) {
                    float *ga = gates + row * 4 * H;
                    ga[j] = i;
                    ga[H + j] = f;
                    ga[2 * H + j] = gg;
                    ga[3 * H + j] = o;
                    c_seq[row * H + j] = c;
                }
            }
        }
        // Step t+1 reads every unit's new h.
        __syncthreads();
    }
}

struct LstmParams {
    const float *gx;   // (batch, steps, 4H)
    const float *w_hh; // (4H, H), PyTorch layout
    float *h_seq;      // (batch, steps, H)
    int batch, steps, hidden;
};

QUORUM_KERNEL void quorum_lstm(LstmParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    QUORUM_REQUIRE(blockDim.x % 32 == 0); // whole warps: the shuffles use full masks
    lstm_recurrence(p.gx, p.w_hh, p.h_seq, nullptr, nullptr, p.steps, p.hidden, smem);
}
QUORUM_EMU_ENTRY(quorum_lstm, LstmParams)

#define LSTM_BWD_THREADS 256
#define LSTM_DW_TILE 32
#define LSTM_DW_THREADS 256

struct LstmTrainParams {
    const float *gx;   // (batch, steps, 4H)
    const float *w_hh; // (4H, H), PyTorch layout
    float *h_seq;      // (batch, steps, H)
    float *c_seq;      // (batch, steps, H)
    float *gates;      // (batch, steps, 4H), activated, i f g o
    int batch, steps, hidden;
};

struct LstmBackwardParams {
    const float *w_hh;   // (4H, H), PyTorch layout
    const float *c_seq;  // (batch, steps, H)
    const float *gates;  // (batch, steps, 4H), activated
    const float *dh_seq; // (batch, steps, H)
    float *dgx;          // (batch, steps, 4H): gradient of the gate pre-activations
    int batch, steps, hidden;
};

struct LstmDwParams {
    const float *dgx;   // (batch, steps, 4H)
    const float *h_seq; // (batch, steps, H)
    float *dw_hh;       // (4H, H), added into
    int batch, steps, hidden;
};

QUORUM_KERNEL void quorum_lstm_train(LstmTrainParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    QUORUM_REQUIRE(blockDim.x % 32 == 0 && (int)gridDim.x == p.batch); // whole warps: full-mask shuffles
    lstm_recurrence(p.gx, p.w_hh, p.h_seq, p.c_seq, p.gates, p.steps, p.hidden, smem);
}
QUORUM_EMU_ENTRY(quorum_lstm_train, LstmTrainParams)

QUORUM_KERNEL void quorum_lstm_backward(LstmBackwardParams p) {
    QUORUM_DYNAMIC_SHARED(float, smem);
    QUORUM_REQUIRE(blockDim.x == LSTM_BWD_THREADS && (int)gridDim.x == p.batch);
    const int H = p.hidden, G = 4 * H, b = blockIdx.x;
    float *dh_next = smem;    // [H]: dL/dh_t through step t+1's gates
    float *dc_next = smem + H; // [H]: dL/dc_t through step t+1's cell
    float *dg = smem + 2 * H;  // [4H]: this step's gate gradients
    for (int u = threadIdx.x; u < H; u += blockDim.x) {
        dh_next[u] = 0.0f;
        dc_next[u] = 0.0f;
    }
    __syncthreads();
    for (int t = p.steps - 1; t >= 0; t--) {
        const long long row = (long long)b * p.steps + t;
        const float *ga = p.gates + row * G;
        const float *c = p.c_seq + row * H;
        const float *dh_out = p.dh_seq + row * H;
        float *dgx = p.dgx + row * G;
        // Each thread reads and writes only its own units of dh_next/dc_next here.
        for (int u = threadIdx.x; u < H; u += blockDim.x) {
            const float dh = dh_out[u] + dh_next[u];
            const float tc = tanhf(c[u]);
            const float cp = t > 0 ? c[u - H] : 0.0f; // c_{t-1}: the previous row of this sample
            const float i = ga[u], f = ga[H + u], gg = ga[2 * H + u], o = ga[3 * H + u];
            const float dc = dc_next[u] + dh * o * (1.0f - tc * tc);
            dc_next[u] = dc * f;
            const float d0 = dc * gg * i * (1.0f - i);
            const float d1 = dc * cp * f * (1.0f - f);
            const float d2 = dc * i * (1.0f - gg * gg);
            const float d3 = dh * tc * o * (1.0f - o);
            dg[u] = d0;
            dg[H + u] = d1;
            dg[2 * H + u] = d2;
            dg[3 * H + u] = d3;
            dgx[u] = d0;
            dgx[H + u] = d1;
            dgx[2 * H + u] = d2;
            dgx[3 * H + u] = d3;
        }
        if (t == 0) break; // uniform: nothing flows further back
        // The column sums read every unit's gate gradients.
        __syncthreads();
        for (int k = threadIdx.x; k < H; k += blockDim.x) {
            // Four independent chains (one per gate) for latency, combined in a fixed order.
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            const float *w = p.w_hh + k;
            for (int r = 0; r < H; r++) {
                s0 = fmaf(dg[r], w[(long long)r * H], s0);
                s1 = fmaf(dg[H + r], w[(long long)(H + r) * H], s1);
                s2 = fmaf(dg[2 * H + r], w[(long long)(2 * H + r) * H], s2);
                s3 = fmaf(dg[3 * H + r], w[(long long)(3 * H + r) * H], s3);
            }
            dh_next[k] = (s0 + s1) + (s2 + s3);
        }
        // The next step's cell update reads dh_next; dg is rewritten.
        __syncthreads();
    }
}
QUORUM_EMU_ENTRY(quorum_lstm_backward, LstmBackwardParams)

QUORUM_KERNEL void quorum_lstm_dw(LstmDwParams p) {
    QUORUM_SHARED(float, as, [LSTM_DW_TILE][LSTM_DW_TILE]); // [m][gate row]
    QUORUM_SHARED(float, bs, [LSTM_DW_TILE][LSTM_DW_TILE]); // [m][hidden unit]
    QUORUM_REQUIRE(blockDim.x == LSTM_DW_THREADS && p.steps >= 2);
    const int H = p.hidden, G = 4 * H, sm1 = p.steps - 1;
    const int M = p.batch * sm1;
    const int r0 = blockIdx.y * LSTM_DW_TILE, k0 = blockIdx.x * LSTM_DW_TILE;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5; // ty in 0..8: rows ty + 8i
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int m0 = 0; m0 < M; m0 += LSTM_DW_TILE) {
        for (int e = threadIdx.x; e < LSTM_DW_TILE * LSTM_DW_TILE; e += blockDim.x) {
            const int mm = e / LSTM_DW_TILE, cc = e % LSTM_DW_TILE, m = m0 + mm;
            float a = 0.0f, v = 0.0f;
            if (m < M) {
                const int bi = m / sm1, t = 1 + m % sm1;
                const long long row = (long long)bi * p.steps + t;
                if (r0 + cc < G) a = p.dgx[row * G + r0 + cc];
                if (k0 + cc < H) v = p.h_seq[(row - 1) * H + k0 + cc];
            }
            as[mm][cc] = a;
            bs[mm][cc] = v;
        }
        __syncthreads();
        const int len = min(LSTM_DW_TILE, M - m0);
        for (int mm = 0; mm < len; mm++) {
            const float v = bs[mm][tx];
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = fmaf(as[mm][ty + 8 * i], v, acc[i]);
        }
        // The tiles are overwritten by the next chunk of M.
        __syncthreads();
    }
    const int k = k0 + tx;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = r0 + ty + 8 * i;
        if (r < G && k < H) p.dw_hh[(long long)r * H + k] += acc[i];
    }
}
QUORUM_EMU_ENTRY(quorum_lstm_dw, LstmDwParams)
