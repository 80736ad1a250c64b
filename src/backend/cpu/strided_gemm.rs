//! The products of the CPU's backward passes (the linear layer's, the
//! conv's, the patch embedding's, the LSTM's weight gradients) and of the
//! training recurrence's steps:
//! - `gemm_strided`: a `gemm` call on strided views (no transposed
//!   copies); large ones split over output columns, one block per task, so
//!   each output value is reduced by one thread in one order;
//! - `gemm_depth_halves`: a weight gradient summed over thousands of rows
//!   into a few hundred columns, its rows in two fixed halves, one per core,
//!   which the caller adds in order (splitting the columns instead packed the
//!   whole left operand once per block);
//! - `rows_product`: tens of contiguous rows against a cached weight, on
//!   small_gemm's kernel.
//!
//! Every split depends on the sizes alone, never on the thread count. With
//! the ops' row reductions in fixed chunks of `ROW_CHUNK` rows combined in
//! order, the same inputs give bit-identical gradients whatever the thread
//! scheduling (docs/training.md: same seed, same data, same weights).

use rayon::prelude::*;

use super::{run_product, small_gemm, SendPtr, PAR_MIN_MACS};

/// Output columns per task of a large product (a multiple of 16 floats, one AVX-512 register).
const COL_BLOCK: usize = 64;

/// `dst (m, n) [+]= scale · lhs (m, k) · rhs (k, n)` over strided views; the
/// destination's columns are contiguous. Split over column blocks when large.
///
/// # Safety
/// Every `(row, col)` the strides form must lie inside the buffers the
/// pointers come from, and `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
) {
    gemm_strided_on(m, n, k, dst, dst_rs, accumulate, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, scale, true);
}

/// `gemm_strided`, its column blocks run here in order unless `parallel`:
/// the same blocks either way, so the same bits.
///
/// # Safety
/// As `gemm_strided`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided_on(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(0.0);
            }
        }
        return;
    }
    // Column blocks of a width that depends on the sizes only, never on the
    // thread count: gemm's result for a column can depend on the block it
    // is computed in, and training must give the same bits on any pool.
    let width = if m * n * k >= PAR_MIN_MACS && n >= 2 * COL_BLOCK { COL_BLOCK } else { n };
    let (dst, lhs, rhs) = (SendPtr(dst), SendPtr(lhs as *mut f32), SendPtr(rhs as *mut f32));
    let run = |j0: usize| {
        let nb = width.min(n - j0);
        one_gemm(
            m,
            nb,
            k,
            dst.at(j0),
            dst_rs,
            accumulate,
            lhs.at(0),
            lhs_rs,
            lhs_cs,
            rhs.at(j0 * rhs_cs),
            rhs_rs,
            rhs_cs,
            scale,
        );
    };
    if width == n {
        run(0);
    } else if parallel {
        (0..n.div_ceil(width)).into_par_iter().for_each(|b| run(b * width));
    } else {
        (0..n.div_ceil(width)).for_each(|b| run(b * width));
    }
}

/// `dst (m, n) [+]= lhs (m, k) · rhs (k, n)` where both operands' rows are
/// contiguous (`lhs_rs`, `rhs_rs` apart): the products of a recurrence's
/// step, tens of rows against a weight that stays in the core's cache.
/// There small_gemm's f32 kernel reads both operands in place, where `gemm`
/// packs the whole weight on every call; without AVX-512,
/// `gemm_strided_on`. The result does not depend on `parallel` either way
/// (small_gemm sums each output in order; gemm's column blocks are fixed).
///
/// # Safety
/// As `gemm_strided`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows_product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 || !small_gemm::f32_available() {
        return gemm_strided_on(m, n, k, dst, dst_rs, accumulate, lhs, lhs_rs, 1, rhs, rhs_rs, 1, 1.0, parallel);
    }
    let pr = small_gemm::Product {
        a: small_gemm::Lhs::rows(lhs as *const u32, lhs_rs),
        b: small_gemm::Operand { ptr: rhs as *const u32, ld: rhs_rs },
        y: small_gemm::Output { ptr: dst, ld: dst_rs, accumulate },
        rows: m,
        depth: k,
        taps: small_gemm::Taps::ONE,
        bias: None,
        dequant: None,
    };
    // SAFETY: the caller's bounds; the halves write disjoint columns.
    run_product(small_gemm::Elem::F32, &pr, n, parallel && m * n * k >= PAR_MIN_MACS);
}

/// One `gemm` call over the whole of `dst (m, n)`, on this thread.
///
/// # Safety
/// As `gemm_strided`.
#[allow(clippy::too_many_arguments)]
unsafe fn one_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// The two halves of a deep product's depth: `parts[h] (m, n) = lhs (m,
/// k_h) · rhs (k_h, n)` over depths `[0, k/2)` and `[k/2, k)`, at once on
/// the two cores when large, each one `gemm` call; the caller adds them
/// in order. For a weight gradient summed over tens of thousands of rows
/// into a few hundred columns, where splitting the columns would pack the
/// whole left operand once per block. The split depends on `k` alone, so
/// the bits do not depend on the threads.
///
/// # Safety
/// As `gemm_strided` for both halves; `parts` holds `2·m·n` values and
/// overlaps neither operand.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_depth_halves(
    m: usize,
    n: usize,
    k: usize,
    parts: *mut f32,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (parts, lhs, rhs) = (SendPtr(parts), SendPtr(lhs as *mut f32), SendPtr(rhs as *mut f32));
    let half = k / 2;
    let run = |h: usize| {
        let (k0, kh) = if h == 0 { (0, half) } else { (half, k - half) };
        let dst = parts.at(h * m * n);
        if kh == 0 {
            std::slice::from_raw_parts_mut(dst, m * n).fill(0.0);
            return;
        }
        let (a, b) = (lhs.at(k0 * lhs_cs), rhs.at(k0 * rhs_rs));
        one_gemm(m, n, kh, dst, n, false, a, lhs_rs, lhs_cs, b, rhs_rs, rhs_cs, 1.0);
    };
    super::split_items(2, m * n * k >= PAR_MIN_MACS, &|hs| hs.for_each(run));
}
