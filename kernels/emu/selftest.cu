// Kernels that test the emulator itself (compiled into the emulator only,
// never shipped to a GPU): a block-reversal through shared memory with and
// without its barrier, a divergent barrier, and the warp collectives'
// semantics. tests/kernels_emu.rs runs them.
#include "../common.cuh"

struct SelfTestParams {
    const float *in;
    float *out;
    int n;
};

// out[b*T + t] = in[b*T + (T-1-t)] through shared memory: needs the barrier
// between each thread's write and its read of another thread's slot.
QUORUM_KERNEL void emu_selftest_reverse(SelfTestParams p) {
    QUORUM_SHARED(float, s, [1024]);
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = p.in[base + t];
    __syncthreads();
    p.out[base + t] = s[blockDim.x - 1 - t];
}
QUORUM_EMU_ENTRY(emu_selftest_reverse, SelfTestParams)

// The same with the barrier forgotten: a race a GPU may or may not show.
QUORUM_KERNEL void emu_selftest_reverse_broken(SelfTestParams p) {
    QUORUM_SHARED(float, s, [1024]);
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = p.in[base + t];
    p.out[base + t] = s[blockDim.x - 1 - t];
}
QUORUM_EMU_ENTRY(emu_selftest_reverse_broken, SelfTestParams)

// A barrier only half the block reaches.
QUORUM_KERNEL void emu_selftest_divergent(SelfTestParams p) {
    if (threadIdx.x < blockDim.x / 2) __syncthreads();
    p.out[threadIdx.x] = 1.0f;
}
QUORUM_EMU_ENTRY(emu_selftest_divergent, SelfTestParams)

// Per lane: [xor-sum, shfl_down by 3, shfl from lane 5, ballot of odd inputs
// (as float bits count), any(in > 0), all(in > -100), width-8 xor 1].
QUORUM_KERNEL void emu_selftest_warp(SelfTestParams p) {
    const int t = threadIdx.x, lane = t & 31;
    const float v = p.in[t];
    float* o = p.out + t * 7;
    o[0] = warp_sum(v);
    o[1] = __shfl_down_sync(QUORUM_FULL_MASK, v, 3);
    o[2] = __shfl_sync(QUORUM_FULL_MASK, v, 5);
    unsigned odd = __ballot_sync(QUORUM_FULL_MASK, ((int)v) & 1);
    o[3] = (float)odd;
    o[4] = __any_sync(QUORUM_FULL_MASK, v > 0.0f) ? 1.0f : 0.0f;
    o[5] = __all_sync(QUORUM_FULL_MASK, v > -100.0f) ? 1.0f : 0.0f;
    o[6] = __shfl_xor_sync(QUORUM_FULL_MASK, v, 1, 8);
    (void)lane;
}
QUORUM_EMU_ENTRY(emu_selftest_warp, SelfTestParams)

// Atomics across blocks that the emulator may run on different OS threads:
// out[0] += 1 per thread (float), out[1] = max of the inputs (float),
// out[2] as an int counter.
QUORUM_KERNEL void emu_selftest_atomics(SelfTestParams p) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&p.out[0], 1.0f);
    atomicMax(&p.out[1], p.in[i]);
    atomicAdd(reinterpret_cast<int *>(&p.out[2]), 1);
}
QUORUM_EMU_ENTRY(emu_selftest_atomics, SelfTestParams)
