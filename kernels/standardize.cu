// Input standardization, in place (a memory-bound one-liner; a grid-stride
// loop so any launch size covers any tensor). Its Rust side (reference, CPU,
// launch, tests) is src/backend/ops/standardize.rs.
#include "common.cuh"

// x[r, i] = (x[r, i] - mean[i]) / std[i] over (rows, dim), in place.
struct StandardizeParams {
    float *x;
    const float *mean;
    const float *std;
    int rows, dim;
};

QUORUM_KERNEL void quorum_standardize(StandardizeParams p) {
    QUORUM_GRID_STRIDE(i, p.rows * p.dim) {
        int c = i % p.dim;
        p.x[i] = (p.x[i] - p.mean[c]) / p.std[c];
    }
}
QUORUM_EMU_ENTRY(quorum_standardize, StandardizeParams)
