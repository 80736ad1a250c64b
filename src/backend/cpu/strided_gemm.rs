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
//! - `rows_product`: row-major operands on small_gemm's kernel: the
//!   recurrence's steps (tens of rows against a cached weight) and the
//!   linear layer's input gradient (thousands of rows, the weight read as
//!   the forward reads it).
//!
//! Every split depends on the sizes alone, never on the thread count. With
//! the ops' row reductions in fixed chunks of `ROW_CHUNK` rows combined in
//! order, the same inputs give bit-identical gradients whatever the thread
//! scheduling (docs/training.md: same seed, same data, same weights).

use rayon::prelude::*;

use super::{run_product, small_gemm, SendPtr, PAR_MIN_MACS};

/// Output columns per task of a large product (a multiple of 16 floats, one AVX-512 register).
const COL_BLOCK: usize = 64;

/// A matrix read in place: element `(i, j)` at `ptr + i·rs + j·cs`. Every
/// operand here is either row-major (`rows`) or the transpose of one
/// (`transposed`), so no transposed copy is ever made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// Where a product goes: rows `rs` apart, each row's columns contiguous;
/// written, or added to when `accumulate`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dst {
    ptr: *mut f32,
    rs: usize,
    accumulate: bool,
}

// SAFETY: the views are handed to the tasks of one product, which all finish
// before the caller's borrows of the buffers end; tasks write disjoint
// blocks of `Dst` (each function's contract).
unsafe impl Send for View {}
unsafe impl Sync for View {}
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

impl View {
    /// A row-major matrix whose rows start `rs` apart.
    pub(crate) fn rows(ptr: *const f32, rs: usize) -> View {
        View { ptr, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix whose rows start `ld` apart:
    /// element `(i, j)` is that matrix's `(j, i)`.
    pub(crate) fn transposed(ptr: *const f32, ld: usize) -> View {
        View { ptr, rs: 1, cs: ld }
    }

    /// The view without its first `i` rows.
    fn skip_rows(self, i: usize) -> View {
        View { ptr: self.ptr.wrapping_add(i * self.rs), ..self }
    }

    /// The view without its first `j` columns.
    fn skip_cols(self, j: usize) -> View {
        View { ptr: self.ptr.wrapping_add(j * self.cs), ..self }
    }
}

impl Dst {
    /// Rows `rs` apart, overwritten.
    pub(crate) fn write(ptr: *mut f32, rs: usize) -> Dst {
        Dst { ptr, rs, accumulate: false }
    }

    /// Rows `rs` apart, the product added to what is there.
    pub(crate) fn add(ptr: *mut f32, rs: usize) -> Dst {
        Dst { ptr, rs, accumulate: true }
    }

    /// `add` when `accumulate`, else `write`.
    pub(crate) fn new(ptr: *mut f32, rs: usize, accumulate: bool) -> Dst {
        Dst { ptr, rs, accumulate }
    }

    fn skip_cols(self, j: usize) -> Dst {
        Dst { ptr: self.ptr.wrapping_add(j), ..self }
    }
}

/// `dst (m, n) [+]= scale · lhs (m, k) · rhs (k, n)` over views. Split over
/// column blocks when large.
///
/// # Safety
/// Every `(row, col)` the views form must lie inside the buffers the
/// pointers come from, and `dst` must not overlap `lhs` or `rhs`.
pub(crate) unsafe fn gemm_strided(m: usize, n: usize, k: usize, dst: Dst, lhs: View, rhs: View, scale: f32) {
    gemm_strided_on(m, n, k, dst, lhs, rhs, scale, true);
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
    dst: Dst,
    lhs: View,
    rhs: View,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !dst.accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.ptr.add(i * dst.rs), n).fill(0.0);
            }
        }
        return;
    }
    // Column blocks of a width that depends on the sizes only, never on the
    // thread count: gemm's result for a column can depend on the block it
    // is computed in, and training must give the same bits on any pool.
    let width = if m * n * k >= PAR_MIN_MACS && n >= 2 * COL_BLOCK { COL_BLOCK } else { n };
    let run = |j0: usize| one_gemm(m, width.min(n - j0), k, dst.skip_cols(j0), lhs, rhs.skip_cols(j0), scale);
    if width == n {
        run(0);
    } else if parallel {
        (0..n.div_ceil(width)).into_par_iter().for_each(|b| run(b * width));
    } else {
        (0..n.div_ceil(width)).for_each(|b| run(b * width));
    }
}

/// `dst (m, n) [+]= lhs (m, k) · rhs (k, n)` where both operands' rows are
/// contiguous (`lhs_rs`, `rhs_rs` apart): a recurrence's step (tens of
/// rows against a weight that stays in the core's cache, where `gemm`
/// packed the whole weight on every call) or a linear layer's input
/// gradient, on small_gemm's f32 kernel; without AVX-512,
/// `gemm_strided_on`. The result does not depend on `parallel` either way
/// (small_gemm sums each output in order; gemm's column blocks are fixed).
///
/// # Safety
/// As `gemm_strided`; both views are `View::rows` (asserted).
pub(crate) unsafe fn rows_product(m: usize, n: usize, k: usize, dst: Dst, lhs: View, rhs: View, parallel: bool) {
    assert!(lhs.cs == 1 && rhs.cs == 1, "rows_product reads row-major operands: {lhs:?}, {rhs:?}");
    if m == 0 || n == 0 || k == 0 || !small_gemm::f32_available() {
        return gemm_strided_on(m, n, k, dst, lhs, rhs, 1.0, parallel);
    }
    let pr = small_gemm::Product {
        a: small_gemm::Lhs::rows(lhs.ptr as *const u32, lhs.rs),
        b: small_gemm::Operand { ptr: rhs.ptr as *const u32, ld: rhs.rs },
        y: small_gemm::Output { ptr: dst.ptr, ld: dst.rs, accumulate: dst.accumulate },
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
unsafe fn one_gemm(m: usize, n: usize, k: usize, dst: Dst, lhs: View, rhs: View, scale: f32) {
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        1,
        dst.rs as isize,
        dst.accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// A weight gradient `dw (m, n) += dyᵀ · x` summed over `k` rows, `dy (k,
/// m)` and `x (k, n)` row-major with rows `ld_dy` and `ld_x` apart: in f32,
/// `gemm_depth_halves`'s two halves added to `dw` in order (each output
/// `dw + (first + second)`); with `bf16_products` (use_amp),
/// `bf16::weight_grad`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_weight_grad(
    dy: &[f32],
    ld_dy: usize,
    x: &[f32],
    ld_x: usize,
    k: usize,
    dw: &mut [f32],
    (m, n): (usize, usize),
    bf16_products: bool,
) {
    if bf16_products {
        let g = super::Gemm { rows: m, k, n, ld_y: n, accumulate: true };
        return super::bf16::weight_grad(dy, ld_dy, x, ld_x, dw, g);
    }
    assert!(m <= ld_dy && n <= ld_x && dw.len() >= m * n);
    assert!(k == 0 || (dy.len() >= (k - 1) * ld_dy + m && x.len() >= (k - 1) * ld_x + n));
    super::with_scratch(2 * m * n, |parts| {
        // SAFETY: the assertions bound both operands' (row, column) pairs;
        // parts holds 2·m·n values and is neither operand.
        unsafe {
            gemm_depth_halves(
                m,
                n,
                k,
                parts.as_mut_ptr(),
                View::transposed(dy.as_ptr(), ld_dy),
                View::rows(x.as_ptr(), ld_x),
            )
        };
        let (p0, p1) = parts.split_at(m * n);
        dw[..m * n].iter_mut().zip(p0.iter().zip(p1)).for_each(|(d, (a, b))| *d += a + b);
    });
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
pub(crate) unsafe fn gemm_depth_halves(m: usize, n: usize, k: usize, parts: *mut f32, lhs: View, rhs: View) {
    if m == 0 || n == 0 {
        return;
    }
    let parts = SendPtr(parts);
    let half = k / 2;
    let run = |h: usize| {
        let (k0, kh) = if h == 0 { (0, half) } else { (half, k - half) };
        let dst = parts.at(h * m * n);
        if kh == 0 {
            std::slice::from_raw_parts_mut(dst, m * n).fill(0.0);
            return;
        }
        one_gemm(m, n, kh, Dst::write(dst, n), lhs.skip_cols(k0), rhs.skip_rows(k0), 1.0);
    };
    super::split_items(2, m * n * k >= PAR_MIN_MACS, &|hs| hs.for_each(run));
}
