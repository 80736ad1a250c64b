//! The CPU backend's bf16 mode (`Precision::Bf16`, on CPUs with
//! AVX512_BF16): every matrix product's weight is stored as bf16 pairs and
//! multiplied by `vdpbf16ps` against the activations rounded to bf16, with
//! f32 sums; everything else (bias, GELU, norms, attention, the LSTM's cell
//! update) stays f32, as on the GPU's bf16 path. Twice the f32 kernel's
//! peak and half the weight traffic, within docs/models.md's 16-bit tolerances.
//!
//! Layouts (all `u32` pairs stored in the backend's `Vec<f32>` buffers, bit
//! for bit): a linear weight `(n_out, n_in)` as `(⌈n_in/2⌉, n_out)` pairs of
//! consecutive inputs (`small_gemm::pack_bf16`); a Conv1d weight
//! `(c_out, c_in, k)` tap-major, `(k·⌈c_in/2⌉, c_out)`, so each tap is a
//! plain block of pairs of consecutive channels; `W_hh` in one block of
//! panels per core (`pack_recurrent`).

use std::cell::RefCell;

use super::conv::{conv_taps, TapWeight};
use super::small_gemm::{self, Bias, Elem, Lhs, Operand, Output, Product, Taps};
use super::{
    pair, run_product, simd, split_chunks, with_local, with_scratch, Gemm, SendPtr, PAR_MIN_ELEMS, PAR_MIN_MACS,
};
use crate::backend::{ConvShape, LstmShape};

thread_local! {
    /// Activations as bf16 pairs, reused: no allocation after warm-up. Apart
    /// from `with_scratch`'s, which a caller (the patch gather) may hold.
    static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn with_pairs<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    with_local(&PAIRS, len, f)
}

fn to_bits(v: Vec<u32>) -> Vec<f32> {
    v.into_iter().map(f32::from_bits).collect()
}

fn as_pairs(w: &[f32]) -> &[u32] {
    bytemuck::cast_slice(w)
}

/// Values a prepared linear weight `(n_out, n_in)` holds.
pub(super) fn linear_len(n_out: usize, n_in: usize) -> usize {
    n_in.div_ceil(2) * n_out
}

/// Values a prepared Conv1d weight holds.
pub(super) fn conv_len(c_out: usize, c_in: usize, kernel: usize) -> usize {
    kernel * c_in.div_ceil(2) * c_out
}

pub(super) fn pack_linear(w: &[f32], n_out: usize, n_in: usize) -> Vec<f32> {
    to_bits(small_gemm::pack_bf16(&w[..n_out * n_in], n_out, n_in))
}

/// PyTorch's `(c_out, c_in, k)` as tap-major pairs: row `j·⌈c_in/2⌉ + q`
/// holds channels `2q` and `2q + 1` of tap `j` for every output channel.
pub(super) fn pack_conv(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let cp = c_in.div_ceil(2);
    // (c_out, c_in, k) → per tap j the (c_out, c_in) matrix, packed as a linear weight.
    let mut out = Vec::with_capacity(conv_len(c_out, c_in, k));
    let mut tap = vec![0f32; c_out * c_in];
    for j in 0..k {
        for o in 0..c_out {
            for c in 0..c_in {
                tap[o * c_in + c] = w[(o * c_in + c) * k + j];
            }
        }
        out.extend(small_gemm::pack_bf16(&tap, c_out, c_in));
    }
    debug_assert_eq!(out.len(), k * cp * c_out);
    to_bits(out)
}

/// The hidden units `[0, mid)` and `[mid, H)` of the recurrence's two
/// halves, split on a 16-unit boundary.
fn unit_halves(h: usize) -> [(usize, usize); 2] {
    let mid = ((h / 2).div_ceil(16) * 16).min(h);
    [(0, mid), (mid, h)]
}

/// Columns of one recurrent panel: what a one-row product keeps in registers.
const PANEL: usize = 128;

/// `W_hh (4H, H)` as two blocks, one per half of the hidden units: block `p`
/// holds the `(4·n_p, H)` matrix of the gate rows `[i | f | g | o]` of its
/// units, packed as a linear weight `(⌈H/2⌉, 4·n_p)` and then cut into
/// panels of `PANEL` columns stored one after the other. Each core streams
/// its quarter megabyte per step (at H = 256) front to back: with the
/// gates' columns 4 KiB apart, both layers' halves did not fit the L2's
/// ways, and strided panels left its prefetchers behind.
pub(super) fn pack_recurrent(w_hh: &[f32], h: usize) -> Vec<f32> {
    let hp = h.div_ceil(2);
    let mut out = Vec::with_capacity(linear_len(4 * h, h));
    for (u0, u1) in unit_halves(h) {
        let cols = 4 * (u1 - u0);
        let rows: Vec<f32> = (0..4).flat_map(|q| w_hh[(q * h + u0) * h..(q * h + u1) * h].iter().copied()).collect();
        let packed = small_gemm::pack_bf16(&rows, cols, h);
        for c0 in (0..cols).step_by(PANEL) {
            let width = PANEL.min(cols - c0);
            for p in 0..hp {
                out.extend_from_slice(&packed[p * cols + c0..p * cols + c0 + width]);
            }
        }
    }
    to_bits(out)
}

/// `g`'s product (then `+ bias[j]`, GELU) for `W` from `pack_linear`.
pub(super) fn product(x: &[f32], w: &[f32], y: &mut [f32], g: Gemm, bias: Option<(&[f32], bool)>) {
    let Gemm { rows, k, n, ld_y, accumulate } = g;
    if rows == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    assert!(x.len() >= rows * k && w.len() >= linear_len(n, k) && y.len() >= (rows - 1) * ld_y + n && n <= ld_y);
    assert!(bias.is_none_or(|(b, _)| b.len() >= n));
    with_pairs(rows * kp, |a| {
        split_chunks(a, rows, kp, kp, rows * k >= PAR_MIN_ELEMS, &|r, pairs| {
            small_gemm::to_bf16_pairs(&x[r * k..(r + 1) * k], 1, k, k, pairs)
        });
        let pr = Product {
            a: Lhs::rows(a.as_ptr(), kp),
            b: Operand { ptr: as_pairs(w).as_ptr(), ld: n },
            y: Output { ptr: y.as_mut_ptr(), ld: ld_y, accumulate },
            rows,
            depth: kp,
            taps: Taps::ONE,
            bias: bias.map(|(b, gelu)| Bias { ptr: b.as_ptr(), gelu }),
        };
        // SAFETY: the assertions bound every pair, weight, bias and output element.
        unsafe { run_product(Elem::Bf16Pairs, &pr, n, rows * k * n >= PAR_MIN_MACS) };
    });
}

/// A "same" Conv1d (then bias, GELU if asked) for a weight from
/// `pack_conv`: each sample's rows rounded to pairs between `k/2` zero rows
/// on either side, then one product summing the k row-shifted taps.
pub(super) fn conv(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: ConvShape, gelu: bool) {
    let (len, cin, k) = (s.len, s.c_in, s.kernel);
    let cp = cin.div_ceil(2);
    assert!(x.len() >= s.samples * len * cin && w.len() >= conv_len(s.c_out, cin, k));
    let taps = TapWeight { elem: Elem::Bf16Pairs, ptr: as_pairs(w).as_ptr(), ld: s.c_out, tap_step: cp * s.c_out };
    with_pairs(s.samples * (len + k - 1) * cp, |xp| {
        conv_taps(xp, cp, taps, b, y, s, gelu, &|smp, rows| {
            small_gemm::to_bf16_pairs(&x[smp * len * cin..][..len * cin], len, cin, cin, rows)
        });
    });
}

/// The LSTM recurrence over a `W_hh` from `pack_recurrent`.
///
/// Each step, each of the two cores takes half of the hidden units: it
/// rounds the whole previous `h` of every sample to bf16 pairs, computes the
/// four gates of its units (one product over its block of `W_hh`, into a
/// local `[i | f | g | o]` row per sample), updates their cells and writes
/// their `h`; then the two meet at a barrier, since the next step reads all
/// of `h`. Without the helper core, the halves run in turn.
pub(super) fn lstm(gx: &[f32], w_hh: &[f32], h_seq: &mut [f32], s: LstmShape) {
    let (batch, steps, h) = (s.batch, s.steps, s.hidden);
    let (g4, hp) = (4 * h, h.div_ceil(2));
    if batch == 0 || steps == 0 || h == 0 {
        return;
    }
    assert!(gx.len() >= batch * steps * g4 && w_hh.len() >= linear_len(g4, h) && h_seq.len() >= batch * steps * h);
    let units = unit_halves(h);
    let w = as_pairs(w_hh);
    // Scratch: the cell state (batch, H), then per half its h pairs
    // (batch, ⌈H/2⌉) and its gate blocks (batch, 4·units).
    let part_len = |p: usize| batch * hp + batch * 4 * (units[p].1 - units[p].0);
    with_scratch(batch * h, |c| {
        c.fill(0.0);
        with_pairs(part_len(0) + part_len(1), |scr| {
            let (c_ptr, out_ptr, scr_ptr) =
                (SendPtr(c.as_mut_ptr()), SendPtr(h_seq.as_mut_ptr()), SendPtr(scr.as_mut_ptr() as *mut f32));
            let step = |part: usize, t: usize| {
                let (u0, u1) = units[part];
                let n = u1 - u0;
                if n == 0 {
                    return;
                }
                let base = if part == 0 { 0 } else { part_len(0) };
                // SAFETY: this half's own scratch region, cell units, and
                // output units of step t; the previous step's rows of h_seq,
                // which nobody writes during step t (the caller orders steps).
                let (pairs, gates) = unsafe {
                    let p = scr_ptr.at(base) as *mut u32;
                    (
                        std::slice::from_raw_parts_mut(p, batch * hp),
                        std::slice::from_raw_parts_mut(scr_ptr.at(base + batch * hp), batch * 4 * n),
                    )
                };
                for bi in 0..batch {
                    for q in 0..4 {
                        gates[(bi * 4 + q) * n..][..n].copy_from_slice(&gx[(bi * steps + t) * g4 + q * h + u0..][..n]);
                    }
                }
                if t > 0 {
                    for bi in 0..batch {
                        // SAFETY: row t − 1 of sample bi, complete since the
                        // last barrier and written by nobody during step t.
                        let prev = unsafe { std::slice::from_raw_parts(out_ptr.at((bi * steps + t - 1) * h), h) };
                        small_gemm::to_bf16_pairs(prev, 1, h, h, &mut pairs[bi * hp..(bi + 1) * hp]);
                    }
                    for c0 in (0..4 * n).step_by(PANEL) {
                        let width = PANEL.min(4 * n - c0);
                        let pr = Product {
                            a: Lhs::rows(pairs.as_ptr(), hp),
                            b: Operand { ptr: w[hp * (4 * u0 + c0)..].as_ptr(), ld: width },
                            y: Output { ptr: gates[c0..].as_mut_ptr(), ld: 4 * n, accumulate: true },
                            rows: batch,
                            depth: hp,
                            taps: Taps::ONE,
                            bias: None,
                        };
                        // SAFETY: one panel of this half's block of W_hh's
                        // pairs (after the first half's hp·4·mid; the whole
                        // size is asserted above), columns c0.. of this half's
                        // gate rows.
                        unsafe { small_gemm::run(Elem::Bf16Pairs, &pr, 0..width) };
                    }
                }
                for bi in 0..batch {
                    // SAFETY: this half's units of sample bi's cell and output row t.
                    let (cb, hb) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(c_ptr.at(bi * h + u0), n),
                            std::slice::from_raw_parts_mut(out_ptr.at((bi * steps + t) * h + u0), n),
                        )
                    };
                    simd::lstm_cell(&gates[bi * 4 * n..(bi + 1) * 4 * n], cb, hb);
                }
            };
            let two_cores = rayon::current_num_threads() > 1 && batch * g4 * h >= PAR_MIN_MACS;
            let ran = two_cores
                && pair::run(&|part, barrier| {
                    let mut sense = false;
                    for t in 0..steps {
                        step(part, t);
                        barrier.wait(&mut sense);
                    }
                });
            if !ran {
                for t in 0..steps {
                    step(0, t);
                    step(1, t);
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    //! Each op against a plain f64 sum over the bf16-rounded operands: in
    //! bf16 mode the products of rounded values are exact and only the f32
    //! sums differ, so the bounds are f32's, far below what a wrong pairing,
    //! tap or column would cost.
    use super::super::Cpu;
    use crate::backend::{Backend, ConvShape, Epilogue, LinearShape, LstmShape, Precision};

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
    }

    fn r(v: f32) -> f64 {
        f64::from(half::bf16::from_f32(v).to_f32())
    }

    fn backend() -> Option<Cpu> {
        let be = Cpu::with_precision(Precision::Bf16).ok();
        if be.is_none() {
            eprintln!("skipped: no AVX512_BF16 here");
        }
        be
    }

    fn close(got: f32, want: f64, magnitude: f64, what: &str) {
        let bound = 1e-6 * (1.0 + magnitude);
        assert!((f64::from(got) - want).abs() <= bound, "{what}: {got} vs {want} (bound {bound:e})");
    }

    #[test]
    fn linear_sums_the_rounded_products_at_awkward_sizes() {
        let Some(be) = backend() else { return };
        // Odd input widths (a padded last pair), one and two rows (the wide
        // panels), outputs around the 16- and 64-column panels.
        for &(rows, n_in, n_out) in &[(1, 7, 5), (2, 33, 70), (7, 129, 128), (49, 256, 96), (3, 1, 17)] {
            let (x, w, b) = (data(rows * n_in, 1.0), data(n_out * n_in, 2.0), data(n_out, 3.0));
            let wp = be.prepare_linear(&w, n_out, n_in).unwrap();
            let mut y = data(rows * n_out, 4.0);
            let y0 = y.clone();
            be.linear(&x, &wp, &b, &mut y, LinearShape { rows, n_in, n_out }, Epilogue::Accumulate).unwrap();
            for i in 0..rows {
                for o in 0..n_out {
                    let terms = (0..n_in).map(|k| r(x[i * n_in + k]) * r(w[o * n_in + k]));
                    let (sum, mag) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                    let want = f64::from(y0[i * n_out + o]) + f64::from(b[o]) + sum;
                    close(y[i * n_out + o], want, mag, &format!("{rows}x{n_in}x{n_out} ({i},{o})"));
                }
            }
        }
    }

    #[test]
    fn conv1d_sums_the_rounded_products_of_every_tap() {
        let Some(be) = backend() else { return };
        // Odd channel counts, kernels 1 to 7, samples shorter than the kernel.
        for &(samples, len, c_in, c_out, k) in
            &[(3, 15, 5, 16, 3), (2, 7, 33, 12, 5), (4, 2, 4, 40, 7), (1, 9, 3, 3, 1)]
        {
            let (x, w, b) = (data(samples * len * c_in, 1.0), data(c_out * c_in * k, 2.0), data(c_out, 3.0));
            let wp = be.prepare_conv(&w, c_out, c_in, k).unwrap();
            let mut y = vec![f32::NAN; samples * len * c_out];
            be.conv1d(&x, &wp, &b, &mut y, ConvShape::dense(samples, len, c_in, c_out, k), false).unwrap();
            for s in 0..samples {
                for t in 0..len {
                    for o in 0..c_out {
                        let (mut sum, mut mag) = (f64::from(b[o]), 0f64);
                        for c in 0..c_in {
                            for j in 0..k {
                                let src = t as isize + j as isize - (k / 2) as isize;
                                if (0..len as isize).contains(&src) {
                                    let p = r(w[(o * c_in + c) * k + j]) * r(x[(s * len + src as usize) * c_in + c]);
                                    sum += p;
                                    mag += p.abs();
                                }
                            }
                        }
                        close(
                            y[(s * len + t) * c_out + o],
                            sum,
                            mag,
                            &format!("conv {c_in}→{c_out} k{k} ({s},{t},{o})"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lstm_rounds_h_each_step_and_keeps_the_cell_in_f32() {
        let Some(be) = backend() else { return };
        // Batch 1 and 3, hidden sizes around the 16-unit split, one odd.
        for &(batch, steps, h) in &[(1usize, 6usize, 40usize), (3, 5, 33), (2, 4, 256)] {
            let g4 = 4 * h;
            let gx = data(batch * steps * g4, 1.0);
            let w: Vec<f32> = data(g4 * h, 2.0).iter().map(|v| v * 0.2).collect();
            let wp = be.prepare_recurrent(&w, h).unwrap();
            let mut out = vec![f32::NAN; batch * steps * h];
            be.lstm(&gx, &wp, &mut out, LstmShape { batch, steps, hidden: h }).unwrap();
            let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
            for bi in 0..batch {
                let (mut hs, mut cs) = (vec![0f64; h], vec![0f64; h]);
                for t in 0..steps {
                    // The previous h as the backend rounds it: its own f32
                    // output, to bf16.
                    let hr: Vec<f64> =
                        (0..h).map(|u| if t == 0 { 0.0 } else { r(out[(bi * steps + t - 1) * h + u]) }).collect();
                    let gate = |q: usize, u: usize| {
                        let row = q * h + u;
                        let dot: f64 = (0..h).map(|k| r(w[row * h + k]) * hr[k]).sum();
                        f64::from(gx[(bi * steps + t) * g4 + row]) + dot
                    };
                    for u in 0..h {
                        let (i, f, g, o) = (sig(gate(0, u)), sig(gate(1, u)), gate(2, u).tanh(), sig(gate(3, u)));
                        cs[u] = f * cs[u] + i * g;
                        hs[u] = o * cs[u].tanh();
                        // The cell's own f32 arithmetic (approximate tanh and
                        // sigmoid, as in f32 mode) dominates the difference.
                        let got = out[(bi * steps + t) * h + u];
                        let what = format!("batch {batch} h {h} ({bi},{t},{u})");
                        assert!((f64::from(got) - hs[u]).abs() < 1e-5, "{what}: {got} vs {}", hs[u]);
                    }
                }
            }
        }
    }
}
