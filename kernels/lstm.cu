// The LSTM recurrence of one layer (PyTorch nn.LSTM: gates i, f, g, o), given
// gx (batch, steps, 4H) = x W_ih^T + b_ih + b_hh from one GEMM over all steps.
//
// Design, and why: what is left after that GEMM is 60 strictly sequential
// steps of h W_hh^T (4H x H) plus a pointwise cell update. At batch 1 the cost
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
#include "common.cuh"
#include "lstm_step.cuh"

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
