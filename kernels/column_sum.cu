// Column sums over a strided view, one thread per column summing in a fixed
// (group, row) order (backend/ops/column_sum.rs): the gradients of the conv's
// bias, the patch embedding's bias, class token and position embedding, and
// the linear backward's bias.
#include "common.cuh"

// dst[c] += sum_{g < groups} sum_{r < rows} src[g * group_stride + r * row_stride + offset + c]
// for c < n: a bias (rows of dy, possibly at a column offset), the class token
// (row 0 of every sample), the position embedding (n = tokens * dim, one row
// per sample). One thread per column sums in (group, row) order; consecutive
// threads read consecutive columns.
struct ColumnSumParams {
    const float *src;
    float *dst;
    int n, groups, rows, group_stride, row_stride, offset;
};

QUORUM_KERNEL void quorum_column_sum(ColumnSumParams p) {
    QUORUM_GRID_STRIDE(c, p.n) {
        float s = 0.0f;
        for (int g = 0; g < p.groups; g++) {
            const float *src = p.src + (long long)g * p.group_stride + p.offset + c;
            for (int r = 0; r < p.rows; r++) s += src[(long long)r * p.row_stride];
        }
        p.dst[c] += s;
    }
}
QUORUM_EMU_ENTRY(quorum_column_sum, ColumnSumParams)
