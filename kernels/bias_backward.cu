// The bias backward (src/backend/gpu/train/elementwise.rs), beside the
// linear and conv backwards that call it: db += Σ_rows dy in the CPU's
// summation order, so it matches it bit for bit (no float atomics).
#include "common.cuh"

// db[..n] += Σ_rows dy (rows, n) in the CPU's order (grad.rs col_sums): rows
// in chunks of `chunk`, each chunk summed from zero in row order, the chunk
// sums then added into db in chunk order. Two launches: partials
// part (chunks, n), one thread per (chunk, column); then one thread per column.
struct BiasPartialsParams {
    const float *dy;
    float *part;
    int rows, n, chunk, _pad;
};

QUORUM_KERNEL void quorum_bias_partials(BiasPartialsParams p) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y;
    if (col >= p.n) return;
    const int r0 = c * p.chunk, r1 = min(r0 + p.chunk, p.rows);
    float acc = 0.0f;
    for (int r = r0; r < r1; r++) acc += p.dy[(long long)r * p.n + col];
    p.part[(long long)c * p.n + col] = acc;
}
QUORUM_EMU_ENTRY(quorum_bias_partials, BiasPartialsParams)

struct BiasFinishParams {
    const float *part;
    float *db;
    int chunks, n;
};

QUORUM_KERNEL void quorum_bias_finish(BiasFinishParams p) {
    QUORUM_GRID_STRIDE(col, p.n) {
        float v = p.db[col];
        for (int c = 0; c < p.chunks; c++) v += p.part[(long long)c * p.n + col];
        p.db[col] = v;
    }
}
QUORUM_EMU_ENTRY(quorum_bias_finish, BiasFinishParams)
