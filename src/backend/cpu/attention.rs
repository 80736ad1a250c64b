//! Softmax attention for short sequences (49 to 100 tokens, head dim 32).
//!
//! Per (sample, head): `S = Q Kᵀ · scale` and `O = softmax(S) V` as two small
//! GEMMs read straight out of the fused `qkv` rows (strided views: no copies),
//! with the softmax over S's rows in between. At N ≤ 100 the N×N scores are
//! ≤ 40 KB, cache resident; the GPU kernel streams them instead (flash-style).
//! Tasks are (sample, head) pairs; each writes its own columns of the output.

use std::cell::RefCell;

use super::{simd, split_items, SendPtr};
use crate::backend::AttentionShape;

thread_local! {
    /// Scores of one (sample, head), reused: no allocation after warm-up.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn forward(qkv: &[f32], out: &mut [f32], s: AttentionShape) {
    let (n, d, dh) = (s.tokens, s.dim(), s.head_dim);
    let scale = 1.0 / (dh as f32).sqrt();
    let dst = SendPtr(out.as_mut_ptr());
    let task = |pair: usize| {
        let (b, h) = (pair / s.heads, pair % s.heads);
        let seq = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        let (q, k, v) = (&seq[h * dh..], &seq[d + h * dh..], &seq[2 * d + h * dh..]);
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            if scores.len() < n * n {
                scores.resize(n * n, 0.0);
            }
            let sc = &mut scores[..n * n];
            // SAFETY (both calls): every index gemm forms from these strides
            // stays inside `seq` (rows < n of stride 3d, columns < dh) or `sc`;
            // the output block (rows of sample b, columns of head h) is this
            // task's alone.
            unsafe {
                // S (n×n) = Q (n×dh, row stride 3d) · Kᵀ (dh×n: element (e, j) at k[j·3d + e]).
                gemm::gemm(
                    n,
                    n,
                    dh,
                    sc.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    (3 * d) as isize,
                    k.as_ptr(),
                    (3 * d) as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in sc.chunks_mut(n) {
                simd::softmax_inplace(row);
            }
            unsafe {
                // O (n×dh, row stride d, at column h·dh) = P (n×n) · V (n×dh, row stride 3d).
                gemm::gemm(
                    n,
                    dh,
                    n,
                    dst.at(b * n * d + h * dh),
                    1,
                    d as isize,
                    false,
                    sc.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    (3 * d) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    };
    let pairs = s.batch * s.heads;
    split_items(pairs, true, &|range| range.for_each(task));
}
