// dst op= src over flat buffers: copy, add, mul, fill, GELU and its
// backward, in one kernel whose op is a uniform switch (every thread takes
// the same case), a grid-stride loop of a thread per value. The rest of the
// op (the shape checks, the reference, the CPU paths, the parameter struct,
// the launch and the tests) is in src/backend/ops/elementwise.rs.
#include "common.cuh"

// dst[i] op= src[i] over n values.
#define TRAIN_MAP_COPY 0     // dst = src
#define TRAIN_MAP_ADD 1      // dst += src
#define TRAIN_MAP_MUL 2      // dst *= src
#define TRAIN_MAP_FILL 3     // dst = value (src unused)
#define TRAIN_MAP_GELU 4     // dst = GELU(src)
#define TRAIN_MAP_GELU_BWD 5 // dst *= GELU'(src)

struct TrainMapParams {
    const float *src;
    float *dst;
    int n, op;
    float value;
    int _pad;
};

// GELU'(x) = Φ(x) + x·φ(x), with the forward's erf.
__device__ __forceinline__ float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
    return cdf + x * pdf;
}

QUORUM_KERNEL void quorum_train_map(TrainMapParams p) {
    switch (p.op) {
    case TRAIN_MAP_COPY:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] = p.src[i];
        break;
    case TRAIN_MAP_ADD:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] += p.src[i];
        break;
    case TRAIN_MAP_MUL:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] *= p.src[i];
        break;
    case TRAIN_MAP_FILL:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] = p.value;
        break;
    case TRAIN_MAP_GELU:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] = gelu_erf(p.src[i]);
        break;
    case TRAIN_MAP_GELU_BWD:
        QUORUM_GRID_STRIDE(i, p.n) p.dst[i] *= gelu_grad(p.src[i]);
        break;
    default:
        QUORUM_REQUIRE(p.op >= TRAIN_MAP_COPY && p.op <= TRAIN_MAP_GELU_BWD);
    }
}
QUORUM_EMU_ENTRY(quorum_train_map, TrainMapParams)
