//! The CPU backend's bf16 mode (`Precision::Bf16`, on CPUs with
//! AVX512_BF16): every matrix product's weight is stored as bf16 pairs and
//! multiplied by `vdpbf16ps` against the activations rounded to bf16, with
//! f32 sums; everything else (bias, GELU, norms, attention, the LSTM's cell
//! update) stays f32, as on the GPU's bf16 path. The LSTM's bf16 recurrence
//! and its `W_hh` packing live with the op, in backend/ops/lstm.rs. Twice the f32 kernel's
//! peak and half the weight traffic, within docs/models.md's 16-bit tolerances.
//!
//! Layouts (all `u32` pairs stored in the backend's `Vec<f32>` buffers, bit
//! for bit): a linear weight `(n_out, n_in)` as `(⌈n_in/2⌉, n_out)` pairs of
//! consecutive inputs (`small_gemm::pack_bf16`); a Conv1d weight
//! `(c_out, c_in, k)` tap-major, `(k·⌈c_in/2⌉, c_out)`, so each tap is a
//! plain block of pairs of consecutive channels (backend/ops/conv1d.rs,
//! `pack_bf16`, with the conv's bf16 forward); `W_hh` in one block of
//! panels per core (backend/ops/lstm.rs, `pack_recurrent`).

use std::cell::RefCell;

use super::small_gemm::{self, Bias, Elem, Lhs, Operand, Output, Product, Taps};
use super::{run_product, split_chunks, split_items, with_local, Gemm, SendPtr, PAR_MIN_ELEMS, PAR_MIN_MACS};

thread_local! {
    /// Activations as bf16 pairs, reused: no allocation after warm-up. Apart
    /// from `with_scratch`'s, which a caller (the patch gather) may hold.
    static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// A backward's weight as pairs of consecutive rows (`small_gemm::pack_row_pairs`).
    static WEIGHT_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// `weight_grad`'s two halves' sums (its callers may hold `with_scratch`'s).
    static HALVES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn with_pairs<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    with_local(&PAIRS, len, f)
}

/// Runs `f` with this thread's buffer for a weight packed by
/// `small_gemm::pack_row_pairs` (`len` pairs, contents unspecified).
pub(crate) fn with_weight_pairs<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    with_local(&WEIGHT_PAIRS, len, f)
}

/// `g`'s product `y [+]= x · W` with `x`'s rows `ld_x` apart and `W`
/// packed by `small_gemm::pack_row_pairs` (`(⌈k/2⌉, n)` pairs): `x` rounded
/// to pairs, f32 sums in depth order. A backward's input gradient `dy·W`
/// with use_amp (`W` the master weight, its rows paired).
pub(crate) fn product_rows(x: &[f32], ld_x: usize, w_pairs: &[u32], y: &mut [f32], g: Gemm, parallel: bool) {
    run(x, ld_x, w_pairs, y, g, None, parallel);
}

/// Rows of depth per block of `weight_grad`: a block's operands, packed
/// (`m`·256 and 256·`n` pairs), stay in L2 for its product. A whole depth
/// at once streamed its right-hand panels from memory once per tile (the
/// spatial convs' 70,000-row gradients at TLOB's batch 32).
const WEIGHT_GRAD_ROWS: usize = 512;

/// A weight gradient with use_amp: `dw (m, n) [+]= dyᵀ · x` summed over
/// `g.k` rows, `dy (k, m)` and `x (k, n)` with rows `ld_dy` and `ld_x`
/// apart (`x`'s may overlap: a conv's window of taps), `g.rows` = `m`.
/// The rows in two fixed halves, one per core, each in blocks of
/// `WEIGHT_GRAD_ROWS`: a block's rows rounded to bf16 pairs of consecutive
/// rows (`dy`'s transposed, so each output row's pairs lie side by side),
/// then its product added to the half's f32 sums; the halves are added in
/// order. The split depends on the sizes alone, so the bits do not depend
/// on the threads. (Split by columns instead, a gradient of a few columns
/// over tens of thousands of rows ran on one core.)
pub(crate) fn weight_grad(dy: &[f32], ld_dy: usize, x: &[f32], ld_x: usize, dw: &mut [f32], g: Gemm) {
    let Gemm { rows: m, k, n, ld_y, accumulate } = g;
    if m == 0 || n == 0 {
        return;
    }
    assert!(m <= ld_dy || k <= 1, "dy's rows ({ld_dy} apart) hold {m} values");
    assert!(k == 0 || (dy.len() >= (k - 1) * ld_dy + m && x.len() >= (k - 1) * ld_x + n));
    assert!(dw.len() >= (m - 1) * ld_y + n && n <= ld_y);
    // An even split, so only the last block's last pair is ever padded.
    let half = k / 4 * 2;
    with_local(&HALVES, 2 * m * n, |parts| {
        let sums = SendPtr(parts.as_mut_ptr());
        split_items(2, m * k * n >= PAR_MIN_MACS, &|hs| {
            for h in hs {
                let (r0, r1) = if h == 0 { (0, half) } else { (half, k) };
                // SAFETY: each half writes its own m·n values of `parts`.
                let out = unsafe { std::slice::from_raw_parts_mut(sums.at(h * m * n), m * n) };
                half_weight_grad(&dy[r0 * ld_dy..], ld_dy, &x[r0 * ld_x..], ld_x, r1 - r0, out, (m, n));
            }
        });
        let (p0, p1) = parts.split_at(m * n);
        for ((row, a), b) in dw.chunks_mut(ld_y).zip(p0.chunks(n)).zip(p1.chunks(n)) {
            for ((d, &a), &b) in row[..n].iter_mut().zip(a).zip(b) {
                *d = if accumulate { *d + (a + b) } else { a + b };
            }
        }
    });
}

/// `out (m, n) = dyᵀ · x` over `rows` rows on this thread, in blocks of
/// `WEIGHT_GRAD_ROWS` (`weight_grad`'s half).
fn half_weight_grad(
    dy: &[f32],
    ld_dy: usize,
    x: &[f32],
    ld_x: usize,
    rows: usize,
    out: &mut [f32],
    (m, n): (usize, usize),
) {
    if rows == 0 {
        out.fill(0.0);
        return;
    }
    for r0 in (0..rows).step_by(WEIGHT_GRAD_ROWS) {
        let k = WEIGHT_GRAD_ROWS.min(rows - r0);
        let kp = k.div_ceil(2);
        with_pairs(m * kp, |a| {
            small_gemm::pack_row_pairs_transposed(&dy[r0 * ld_dy..], k, m, ld_dy, a);
            with_weight_pairs(kp * n, |b| {
                small_gemm::pack_row_pairs(&x[r0 * ld_x..], k, n, ld_x, b);
                let pr = Product {
                    a: Lhs::rows(a.as_ptr(), kp),
                    b: Operand { ptr: b.as_ptr(), ld: n },
                    y: Output { ptr: out.as_mut_ptr(), ld: n, accumulate: r0 > 0 },
                    rows: m,
                    depth: kp,
                    taps: Taps::ONE,
                    bias: None,
                    dequant: None,
                };
                // SAFETY: the packers bound every pair; `out` holds m·n.
                unsafe { small_gemm::run(Elem::Bf16Pairs, &pr, 0..n) };
            });
        });
    }
}

pub(crate) fn to_bits(v: Vec<u32>) -> Vec<f32> {
    v.into_iter().map(f32::from_bits).collect()
}

pub(crate) fn as_pairs(w: &[f32]) -> &[u32] {
    bytemuck::cast_slice(w)
}

pub(crate) fn as_pairs_mut(w: &mut [f32]) -> &mut [u32] {
    bytemuck::cast_slice_mut(w)
}

/// Values a prepared linear weight `(n_out, n_in)` holds.
pub(crate) fn linear_len(n_out: usize, n_in: usize) -> usize {
    n_in.div_ceil(2) * n_out
}

/// `g`'s product (then `+ bias[j]`, GELU) for `W` from `ops::linear::pack_bf16`.
pub(super) fn product(x: &[f32], w: &[f32], y: &mut [f32], g: Gemm, bias: Option<(&[f32], bool)>) {
    assert!(bias.is_none_or(|(b, _)| b.len() >= g.n));
    let bias = bias.map(|(b, gelu)| Bias { ptr: b.as_ptr(), gelu, keep: std::ptr::null_mut() });
    run(x, g.k, as_pairs(w), y, g, bias, true);
}

/// `pre = x·W + b` and `y = GELU(pre)` in one product (the training
/// forward keeps `pre`), `y` and `pre` dense `(rows, n)`.
pub(crate) fn product_gelu_keep(x: &[f32], w: &[f32], b: &[f32], pre: &mut [f32], y: &mut [f32], g: Gemm) {
    assert!(b.len() >= g.n && g.ld_y == g.n && !g.accumulate && pre.len() >= g.rows * g.n);
    let keep = Bias { ptr: b.as_ptr(), gelu: true, keep: pre.as_mut_ptr() };
    run(x, g.k, as_pairs(w), y, g, Some(keep), true);
}

/// The products' work: `x`'s rows (`ld_x` apart) rounded to pairs, then
/// one product against `w`'s `(⌈k/2⌉, n)` pairs, the bias (checked by the
/// callers) as the kernel reads it; on both cores when `parallel` and large.
fn run(x: &[f32], ld_x: usize, w: &[u32], y: &mut [f32], g: Gemm, bias: Option<Bias>, parallel: bool) {
    let Gemm { rows, k, n, ld_y, accumulate } = g;
    if rows == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    assert!(k <= ld_x && x.len() >= (rows - 1) * ld_x + k && w.len() >= kp * n);
    assert!(y.len() >= (rows - 1) * ld_y + n && n <= ld_y);
    with_pairs(rows * kp, |a| {
        split_chunks(a, rows, kp, kp, parallel && rows * k >= PAR_MIN_ELEMS, &|r, pairs| {
            small_gemm::to_bf16_pairs(&x[r * ld_x..r * ld_x + k], 1, k, k, pairs)
        });
        let pr = Product {
            a: Lhs::rows(a.as_ptr(), kp),
            b: Operand { ptr: w.as_ptr(), ld: n },
            y: Output { ptr: y.as_mut_ptr(), ld: ld_y, accumulate },
            rows,
            depth: kp,
            taps: Taps::ONE,
            bias,
            dequant: None,
        };
        // SAFETY: the assertions (here and the callers' of the bias and of
        // the kept pre-activation) bound every pair, weight, bias and output element.
        unsafe { run_product(Elem::Bf16Pairs, &pr, n, parallel && rows * k * n >= PAR_MIN_MACS) };
    });
}

#[cfg(test)]
mod tests {
    //! Each op against a plain f64 sum over the bf16-rounded operands: in
    //! bf16 mode the products of rounded values are exact and only the f32
    //! sums differ, so the bounds are f32's, far below what a wrong pairing,
    //! tap or column would cost.
    use super::super::{small_gemm, Cpu, Gemm};
    use crate::backend::{Backend, Epilogue, LinearShape, Precision};

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

    /// use_amp's backward products: `y [+]= x·W` over rows `ld_x` apart,
    /// `W (k, n)` paired down its rows (`pack_row_pairs`), against the f64
    /// sum of the rounded operands; odd depths (a padded last pair), one row
    /// and many, outputs around the 16-column panels. `pack_bf16` (the
    /// forward's layout, vectorized) holds the same bits as `half` gives.
    #[test]
    fn paired_rows_products_sum_the_rounded_products() {
        if backend().is_none() {
            return;
        }
        for &(rows, k, n, ld_x, accumulate) in
            &[(1, 7, 5, 7, false), (3, 33, 70, 40, true), (7, 129, 128, 129, false), (40, 256, 17, 300, true)]
        {
            let (x, w) = (data((rows - 1) * ld_x + k, 1.0), data(k * n, 2.0));
            let mut pairs = vec![0u32; k.div_ceil(2) * n];
            small_gemm::pack_row_pairs(&w, k, n, n, &mut pairs);
            let mut y = data(rows * n, 3.0);
            let y0 = y.clone();
            let g = Gemm { rows, k, n, ld_y: n, accumulate };
            super::product_rows(&x, ld_x, &pairs, &mut y, g, true);
            for i in 0..rows {
                for j in 0..n {
                    let terms = (0..k).map(|d| r(x[i * ld_x + d]) * r(w[d * n + j]));
                    let (sum, mag) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                    let want = if accumulate { f64::from(y0[i * n + j]) + sum } else { sum };
                    close(y[i * n + j], want, mag, &format!("{rows}x{k}x{n} ({i},{j})"));
                }
            }
            let packed = small_gemm::pack_bf16(&w, k, n);
            for (p, &v) in packed.iter().enumerate() {
                let (row, j) = (p / k, p % k);
                let at = |c: usize| if c < n { half::bf16::from_f32(w[j * n + c]).to_bits() as u32 } else { 0 };
                assert_eq!(v, at(2 * row) | (at(2 * row + 1) << 16), "pack_bf16 {k}x{n} pair {p}");
            }
        }
    }

    /// use_amp's weight gradients: `dw [+]= dyᵀ·x` against the f64 sum of
    /// the rounded operands, at odd depths (a padded last pair), outputs
    /// around the 16-row tiles of the transposed packing and the kernel's
    /// panels, `dy`'s rows wider than the output, and `x`'s rows
    /// overlapping (a conv's window). The transposed packing's bits are
    /// checked pair by pair against `half`'s.
    #[test]
    fn weight_gradients_sum_the_rounded_products() {
        if backend().is_none() {
            return;
        }
        let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
        for &(k, m, n, ld_dy, ld_x, accumulate) in &[
            (1, 1, 1, 1, 1, false),
            (7, 5, 3, 9, 3, true),
            (33, 17, 70, 17, 70, false),
            (64, 40, 33, 48, 11, true),
            (301, 130, 96, 130, 96, true),
            // Several blocks in each half, the last one odd.
            (2 * 1100 + 3, 19, 21, 19, 7, false),
        ] {
            let (dy, x) = (data((k - 1) * ld_dy + m, 1.0), data((k - 1) * ld_x + n, 2.0));
            let kp = k.div_ceil(2);
            let mut a = vec![0u32; m * kp];
            small_gemm::pack_row_pairs_transposed(&dy, k, m, ld_dy, &mut a);
            for i in 0..m {
                for p in 0..kp {
                    let hi = if 2 * p + 1 < k { bits(dy[(2 * p + 1) * ld_dy + i]) } else { 0 };
                    assert_eq!(a[i * kp + p], bits(dy[2 * p * ld_dy + i]) | hi << 16, "{k}x{m} pair ({i},{p})");
                }
            }
            let mut dw = data(m * n, 3.0);
            let dw0 = dw.clone();
            let g = Gemm { rows: m, k, n, ld_y: n, accumulate };
            super::weight_grad(&dy, ld_dy, &x, ld_x, &mut dw, g);
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|t| r(dy[t * ld_dy + i]) * r(x[t * ld_x + j]));
                    let (sum, mag) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                    let want = if accumulate { f64::from(dw0[i * n + j]) + sum } else { sum };
                    close(dw[i * n + j], want, mag, &format!("dW {k}x{m}x{n} ({i},{j})"));
                }
            }
        }
    }

    /// With use_amp a bf16 CPU's weight gradients are bf16 products: the
    /// linear layer's and the conv's `dW` and the LSTM's `dW_hh`, against
    /// the f64 sums of their rounded operands (f32 products of the same
    /// operands miss those sums by bf16's rounding, far above the bound).
    #[test]
    fn training_weight_gradients_are_bf16_products() {
        use crate::backend::{ConvShape, LstmShape, Train};
        let Some(be) = backend() else { return };
        let sum = |terms: &mut dyn Iterator<Item = f64>| terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));

        let (rows, n_in, n_out) = (37, 19, 23);
        let (x, w, dy) = (data(rows * n_in, 1.0), data(n_out * n_in, 2.0), data(rows * n_out, 3.0));
        let mut dw = vec![0f32; n_out * n_in];
        be.linear_backward(&x, &w, &dy, None, &mut dw, None, LinearShape { rows, n_in, n_out }, false).unwrap();
        for o in 0..n_out {
            for i in 0..n_in {
                let (want, mag) = sum(&mut (0..rows).map(|t| r(dy[t * n_out + o]) * r(x[t * n_in + i])));
                close(dw[o * n_in + i], want, mag, &format!("linear dW ({o},{i})"));
            }
        }

        let s = ConvShape::dense(2, 9, 5, 7, 3);
        let (x, w, dy) = (data(2 * 9 * 5, 4.0), data(7 * 5 * 3, 5.0), data(2 * 9 * 7, 6.0));
        let (mut dw, mut db) = (vec![0f32; 7 * 5 * 3], vec![0f32; 7]);
        be.conv1d_backward(&x, &w, &dy, None, &mut dw, &mut db, s).unwrap();
        for o in 0..7 {
            for c in 0..5 {
                for j in 0..3 {
                    let mut terms =
                        (0..2usize).flat_map(|smp| (0..9usize).map(move |t| (smp, t))).filter_map(|(smp, t)| {
                            let src = (t + j).checked_sub(1).filter(|&u| u < 9)?;
                            Some(r(dy[(smp * 9 + t) * 7 + o]) * r(x[(smp * 9 + src) * 5 + c]))
                        });
                    let (want, mag) = sum(&mut terms);
                    close(dw[(o * 5 + c) * 3 + j], want, mag, &format!("conv dW ({o},{c},{j})"));
                }
            }
        }

        let (batch, steps, h) = (3, 5, 9);
        let s = LstmShape { batch, steps, hidden: h };
        let (rows, g4) = (batch * steps, 4 * h);
        let (gx, w_hh) = (data(rows * g4, 7.0), data(g4 * h, 8.0).iter().map(|v| 0.3 * v).collect::<Vec<_>>());
        let wp = be.prepare_recurrent(&w_hh, h).unwrap();
        let (mut h_seq, mut c_seq, mut gates) = (vec![0f32; rows * h], vec![0f32; rows * h], vec![0f32; rows * g4]);
        be.lstm_train(&gx, &wp, &mut h_seq, &mut c_seq, &mut gates, s).unwrap();
        let (mut dgx, mut dw_hh) = (vec![0f32; rows * g4], vec![0f32; g4 * h]);
        let dh = data(rows * h, 9.0);
        be.lstm_backward(&w_hh, &h_seq, &c_seq, &gates, &dh, &mut dgx, &mut dw_hh, s).unwrap();
        for g in 0..g4 {
            for u in 0..h {
                let mut terms = (0..batch)
                    .flat_map(|b| (1..steps).map(move |t| b * steps + t))
                    .map(|row| r(dgx[row * g4 + g]) * r(h_seq[(row - 1) * h + u]));
                let (want, mag) = sum(&mut terms);
                close(dw_hh[g * h + u], want, mag, &format!("LSTM dW_hh ({g},{u})"));
            }
        }
    }
}
