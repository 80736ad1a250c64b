// The LSTM recurrence of one layer, shared by the inference kernel (lstm.cu)
// and the training forward (lstm_train.cu), so both compute the same h bit
// for bit. See lstm.cu for the design: one persistent block per sample, h
// double-buffered and c in shared memory, a warp per hidden unit computing
// its four gate rows, one barrier per step.
#pragma once
#include "common.cuh"

// Runs every step for sample blockIdx.x from h0 = c0 = 0. gx (batch, steps,
// 4H) holds x W_ih^T + b_ih + b_hh; w_hh is PyTorch's (4H, H). Writes
// h_seq (batch, steps, H); when c_seq and gates are given (training), also
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
