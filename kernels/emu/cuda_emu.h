// A CPU emulation of the CUDA execution model, enough for quorum's kernels.
//
// The same .cu source is compiled by NVRTC for the GPU and by g++ (with
// QUORUM_EMU defined) for the CPU. Here each block of a grid runs on one OS
// thread, its threads as cooperative fibers (emu.cpp): a barrier is a yield to
// the block's other fibers, so `__shared__` is plain block-local memory and
// every interleaving the emulator produces is one a GPU may produce too.
//
// To make races visible rather than lucky, the runtime
// - fills each block's shared memory with NaN before the block starts,
// - runs the fibers of a block in forward or reverse thread order (per block
//   and per launch, see QuorumEmuLaunch::order), each fiber until its next
//   barrier, so a read of a neighbour's write without a barrier sees poison,
// - checks that every thread of a block waits at the same __syncthreads (and
//   every lane of a mask at the same warp collective): a divergent barrier is
//   a reported error, not a hang. A thread that exits while others wait at a
//   barrier counts as divergent (undefined behaviour on a GPU).
//
// Kernels use only what is here: the thread/block indices, __syncthreads,
// the warp collectives (__shfl*_sync, __ballot/__any/__all_sync, __syncwarp),
// atomics, the float math intrinsics, and shared memory declared through
// QUORUM_SHARED / QUORUM_DYNAMIC_SHARED (common.cuh), which expand to
// `__shared__` / `extern __shared__` under NVRTC.
#pragma once

#include <cmath>
#include <math.h> // expf, erff, ... in the global namespace, as CUDA has them
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
// Shared memory must be declared with QUORUM_SHARED / QUORUM_DYNAMIC_SHARED
// (block-local and poisoned here); a bare __shared__ stops the build with
// this name in the error.
#define __shared__ quorum_emu_error_use_QUORUM_SHARED_not_bare___shared__

struct dim3 {
    unsigned x, y, z;
};

// The launch as the Rust side describes it (kernels/emu/README in emu.cpp).
struct QuorumEmuLaunch {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
    // Blocks [block_begin, block_end) of the grid, linearised x fastest:
    // the caller may split a grid across OS threads.
    unsigned long long block_begin, block_end;
    // 0: forward thread order in even blocks, reverse in odd ones;
    // 1: forward everywhere; 2: reverse everywhere.
    int order;
    // Where an error message goes (NUL-terminated, truncated to err_len).
    char *err;
    size_t err_len;
};

namespace quorum_emu {

// The fiber running now on this OS thread; the indices live there.
struct Fiber;
struct Block;
Fiber *current();
const dim3 &thread_idx();
const dim3 &block_idx();
const dim3 &block_dim();
const dim3 &grid_dim();

// Barriers and warp collectives, identified by call site for the checks.
void sync_block(const char *file, int line);
// Exchanges 8 bytes across the lanes of `mask`; returns lane `src`'s value,
// or the caller's own when `src` is outside [0, 32).
unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src, const char *file, int line);
unsigned warp_ballot(unsigned mask, int pred, const char *file, int line);
// Every lane of `mask` offers `bytes` at `mine`; each gets all 32 lanes' offers
// in `all` (lane l at all + l*bytes; lanes outside the mask left untouched).
// The twin of warp-wide instructions such as mma.sync.
void warp_gather(unsigned mask, const void *mine, size_t bytes, void *all, const char *file, int line);
void warp_sync(unsigned mask, const char *file, int line);
int lane_id();

// Block-local shared memory: one region per declaration site per block,
// poisoned with NaN when the block starts.
void *shared_static(const void *site, size_t bytes, size_t align);
void *shared_dynamic();

// Stops the block with an error (reported through the launch).
[[noreturn]] void fail(const char *file, int line, const char *what);

typedef void (*KernelBody)(const void *params);
int launch(const QuorumEmuLaunch *l, KernelBody body, const void *params);

template <class T> inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T> inline T from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

} // namespace quorum_emu

#define threadIdx (::quorum_emu::thread_idx())
#define blockIdx (::quorum_emu::block_idx())
#define blockDim (::quorum_emu::block_dim())
#define gridDim (::quorum_emu::grid_dim())
static const int warpSize = 32;

#define __syncthreads() ::quorum_emu::sync_block(__FILE__, __LINE__)
#define __syncwarp(...) ::quorum_emu::warp_sync(QUORUM_EMU_MASK(__VA_ARGS__), __FILE__, __LINE__)
#define QUORUM_EMU_MASK(...) (0xffffffffu __VA_OPT__(&(__VA_ARGS__)))

namespace quorum_emu {
// Source lane of each shuffle flavour, within segments of `width` lanes
// (CUDA's rules); -1 means "keep my own value".
inline int shfl_src_idx(int lane, int src, int width) { return (lane & ~(width - 1)) + (src & (width - 1)); }
inline int shfl_src_xor(int lane, int m, int width) {
    int s = lane ^ m;
    return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
}
inline int shfl_src_down(int lane, int d, int width) {
    int s = lane + d;
    return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
}
inline int shfl_src_up(int lane, int d, int width) {
    int s = lane - d;
    return s >= (lane & ~(width - 1)) ? s : lane;
}
template <class T> inline T shfl(unsigned mask, T v, int src, const char *f, int l) {
    return from_bits<T>(warp_exchange(mask, to_bits(v), src, f, l));
}
} // namespace quorum_emu

#define __shfl_sync(mask, v, src, ...)                                                                         \
    ::quorum_emu::shfl(mask, v, ::quorum_emu::shfl_src_idx(::quorum_emu::lane_id(), src, QUORUM_EMU_W(__VA_ARGS__)), \
                       __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...)                                                                       \
    ::quorum_emu::shfl(mask, v, ::quorum_emu::shfl_src_xor(::quorum_emu::lane_id(), m, QUORUM_EMU_W(__VA_ARGS__)), \
                       __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...)                                                                      \
    ::quorum_emu::shfl(mask, v, ::quorum_emu::shfl_src_down(::quorum_emu::lane_id(), d, QUORUM_EMU_W(__VA_ARGS__)), \
                       __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...)                                                                        \
    ::quorum_emu::shfl(mask, v, ::quorum_emu::shfl_src_up(::quorum_emu::lane_id(), d, QUORUM_EMU_W(__VA_ARGS__)), \
                       __FILE__, __LINE__)
#define QUORUM_EMU_W(...) (32 __VA_OPT__(* 0 + (__VA_ARGS__)))
#define __ballot_sync(mask, pred) ::quorum_emu::warp_ballot(mask, (pred) ? 1 : 0, __FILE__, __LINE__)
#define __any_sync(mask, pred) (::quorum_emu::warp_ballot(mask, (pred) ? 1 : 0, __FILE__, __LINE__) != 0u)
#define __all_sync(mask, pred)                                                                                  \
    (::quorum_emu::warp_ballot(mask, (pred) ? 1 : 0, __FILE__, __LINE__) == (unsigned)(mask))

// Shared memory. Under NVRTC these are `__shared__ T name dims;` and
// `extern __shared__ T name[];` (common.cuh).
#define QUORUM_EMU_CAT2(a, b) a##b
#define QUORUM_EMU_CAT(a, b) QUORUM_EMU_CAT2(a, b)
#define QUORUM_SHARED(T, name, dims)                                                                           \
    static const char QUORUM_EMU_CAT(quorum_site_, __LINE__) = 0;                                             \
    typedef T QUORUM_EMU_CAT(quorum_shared_t_, __LINE__) dims;                                                \
    QUORUM_EMU_CAT(quorum_shared_t_, __LINE__) &name = *reinterpret_cast<QUORUM_EMU_CAT(quorum_shared_t_, __LINE__) *>( \
        ::quorum_emu::shared_static(&QUORUM_EMU_CAT(quorum_site_, __LINE__),                                   \
                                    sizeof(QUORUM_EMU_CAT(quorum_shared_t_, __LINE__)), alignof(T)))
#define QUORUM_DYNAMIC_SHARED(T, name) T *name = reinterpret_cast<T *>(::quorum_emu::shared_dynamic())

// Atomics: blocks may run on several OS threads at once, so these are real
// atomics (the GCC builtins), floats through compare-and-swap.
inline float atomicAdd(float *p, float v) {
    unsigned *u = reinterpret_cast<unsigned *>(p);
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED);
    for (;;) {
        float f = quorum_emu::from_bits<float>(old);
        unsigned nu = (unsigned)quorum_emu::to_bits(f + v);
        if (__atomic_compare_exchange_n(u, &old, nu, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
    }
}
// Not a CUDA builtin, but the usual CAS idiom kernels write for it.
inline float atomicMax(float *p, float v) {
    unsigned *u = reinterpret_cast<unsigned *>(p);
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED);
    for (;;) {
        float f = quorum_emu::from_bits<float>(old);
        if (!(f < v)) return f;
        unsigned nu = (unsigned)quorum_emu::to_bits(v);
        if (__atomic_compare_exchange_n(u, &old, nu, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
    }
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline unsigned atomicMax(unsigned *p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicCAS(int *p, int cmp, int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Math: the C library's functions stand in for CUDA's (both are within a
// couple of ulp of exact, well inside docs/models.md's tolerances).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Never contracted into an FMA on a GPU; the emulator never contracts (no -mfma).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __int_as_float(int i) { return quorum_emu::from_bits<float>((unsigned)i); }
inline int __float_as_int(float f) { return (int)(unsigned)quorum_emu::to_bits(f); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> inline T __ldg(const T *p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// One extern "C" entry per kernel, called by the Rust emu device:
//   int quorum_emu_launch_<kernel>(const QuorumEmuLaunch*, const Params*)
// returning 0 or an error (message in launch->err), and the parameter struct's
// size, which the Rust side checks against its #[repr(C)] twin.
#define QUORUM_EMU_ENTRY(kernel, Params)                                                                       \
    static void quorum_emu_body_##kernel(const void *p) { kernel(*static_cast<const Params *>(p)); }          \
    extern "C" int quorum_emu_launch_##kernel(const QuorumEmuLaunch *l, const Params *p) {                    \
        return ::quorum_emu::launch(l, &quorum_emu_body_##kernel, p);                                          \
    }                                                                                                          \
    extern "C" size_t quorum_emu_sizeof_##kernel(void) { return sizeof(Params); }
