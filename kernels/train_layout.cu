// For mixed precision (use_amp), packing the f32 master weights into the
// 16-bit layout the tensor-core GEMMs read, on the device after each
// optimizer step, so weights never round-trip through the host
// (prepare_linear_from; its f32 transpose is swap_last_axes.cu).
#include "common.cuh"
#include "mma.cuh"

// dst (n_out, ceil(n_in/2)) 32-bit words from src (n_out, n_in) f32: two
// 16-bit values per word, low half first, k padded to even with zero: the
// layout Gpu::prepare_linear uploads for Precision::Bf16/F16 (gemm_tile_mma's
// B operand). kind 0 bf16, 1 f16 (QUORUM_HALF_*), rounded to nearest even.
struct PackHalfParams {
    const float *src;
    float *dst;
    int n_out, n_in, kind;
};

QUORUM_KERNEL void quorum_pack_half(PackHalfParams p) {
    const int words = (p.n_in + 1) / 2;
    QUORUM_GRID_STRIDE(i, p.n_out * words) {
        int o = i / words, j = i % words;
        const float *row = p.src + (long long)o * p.n_in;
        float lo = row[2 * j], hi = 2 * j + 1 < p.n_in ? row[2 * j + 1] : 0.0f;
        unsigned w = p.kind == QUORUM_HALF_F16 ? pack_half2<QUORUM_HALF_F16>(lo, hi) : pack_half2<QUORUM_HALF_BF16>(lo, hi);
        p.dst[i] = __int_as_float((int)w);
    }
}
QUORUM_EMU_ENTRY(quorum_pack_half, PackHalfParams)
