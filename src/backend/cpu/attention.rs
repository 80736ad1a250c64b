//! Softmax attention for short sequences (49 to 100 tokens, head dim 32).
//!
//! Work is split by (sample, block of queries): each task computes every head
//! for its queries and writes whole output rows, so tasks never share a row.
//! The N×N score matrix is never materialised: one row of scores at a time.

use rayon::prelude::*;

use super::simd;
use crate::backend::AttentionShape;

/// Queries per task: small enough to feed two threads at batch 1, large
/// enough that rayon's per-task cost stays negligible.
const QUERIES_PER_TASK: usize = 8;

pub(super) fn forward(qkv: &[f32], out: &mut [f32], s: AttentionShape) {
    let (n, d, dh) = (s.tokens, s.dim(), s.head_dim);
    let scale = 1.0 / (dh as f32).sqrt();
    let out = &mut out[..s.batch * n * d];
    out.par_chunks_mut(n * d).enumerate().for_each(|(b, seq_out)| {
        let seq = &qkv[b * n * 3 * d..(b + 1) * n * 3 * d];
        seq_out.par_chunks_mut(QUERIES_PER_TASK * d).enumerate().for_each(|(blk, rows)| {
            let mut scores = vec![0f32; n];
            for h in 0..s.heads {
                let (qo, ko, vo) = (h * dh, d + h * dh, 2 * d + h * dh);
                for (r, orow) in rows.chunks_mut(d).enumerate() {
                    let i = blk * QUERIES_PER_TASK + r;
                    let q = &seq[i * 3 * d + qo..i * 3 * d + qo + dh];
                    for (j, sc) in scores.iter_mut().enumerate() {
                        *sc = simd::dot(q, &seq[j * 3 * d + ko..j * 3 * d + ko + dh]) * scale;
                    }
                    simd::softmax_inplace(&mut scores);
                    let o = &mut orow[h * dh..(h + 1) * dh];
                    o.fill(0.0);
                    for (j, &p) in scores.iter().enumerate() {
                        simd::axpy(p, &seq[j * 3 * d + vo..j * 3 * d + vo + dh], o);
                    }
                }
            }
        });
    });
}
