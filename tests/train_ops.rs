//! Every backward op of the CPU backend against central finite differences of
//! its forward op, at awkward sizes (not multiples of anything, batch 1 and 3).
//!
//! Each check takes a random projection `L = Σ r·y` of the op's output, its
//! gradient from the backward op, and `(L(x + ε) − L(x − ε)) / 2ε` on a sample
//! of coordinates of every input (the f32 forward, the loss summed in f64).
//! The figure compared is the relative L2 error over the sampled coordinates;
//! 5e-3 leaves room for f32 rounding at ε = 1e-2 and is far below what any
//! wrong index, missing term or transposition gives (errors of order 1).

use quorum::backend::{
    AttentionShape, BroadcastShape, ConvShape, Epilogue, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets,
    LinearShape, LstmShape, PatchShape, Pool, Train,
};
use quorum::{Backend, Cpu};

const EPS: f32 = 1e-2;
const TOL: f64 = 5e-3;

/// Deterministic pseudo-random values in [−1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn dot(a: &[f32], r: &[f32]) -> f64 {
    a.iter().zip(r).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// Compares `analytic` with finite differences of `loss` over `x`, on up to
/// 60 coordinates spread over the tensor.
fn fd_check(what: &str, x: &mut [f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}");
    let step = (x.len() / 60).max(1);
    let (mut num, mut den) = (0f64, 0f64);
    for i in (0..x.len()).step_by(step) {
        let orig = x[i];
        x[i] = orig + EPS;
        let lp = loss(x);
        x[i] = orig - EPS;
        let lm = loss(x);
        x[i] = orig;
        let fd = (lp - lm) / (2.0 * f64::from(EPS));
        num += (fd - f64::from(analytic[i])).powi(2);
        den += fd * fd;
    }
    let err = (num / den.max(1e-20)).sqrt();
    assert!(den > 0.0, "{what}: the loss does not depend on this input (test is vacuous)");
    assert!(err <= TOL, "{what}: relative L2 error {err:.3e} against finite differences");
}

#[test]
fn linear_backward_matches_finite_differences() {
    let be = Cpu::new();
    for &(rows, n_in, n_out) in &[(1usize, 7usize, 5usize), (3, 13, 11), (37, 33, 70)] {
        let s = LinearShape { rows, n_in, n_out };
        let (mut x, mut w, mut b) = (rand(rows * n_in, 1), rand(n_out * n_in, 2), rand(n_out, 3));
        let r = rand(rows * n_out, 4);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let wp = be.prepare_linear(w, n_out, n_in).unwrap();
            let mut y = vec![0f32; rows * n_out];
            be.linear(&x.to_vec(), &wp, &b.to_vec(), &mut y, s, Epilogue::None).unwrap();
            dot(&y, &r)
        };
        // Gradients start non-zero: the op must add into dw and db.
        let (mut dw, mut db) = (vec![0.5f32; n_out * n_in], vec![0.25f32; n_out]);
        let mut dx = vec![9.0f32; rows * n_in];
        be.linear_backward(&x, &w, &r, Some(&mut dx), &mut dw, Some(&mut db), s, false).unwrap();
        dw.iter_mut().for_each(|v| *v -= 0.5);
        db.iter_mut().for_each(|v| *v -= 0.25);
        let tag = format!("linear {rows}x{n_in}x{n_out}");
        fd_check(&format!("{tag} dx"), &mut x.clone(), &dx, |x| fwd(x, &w, &b));
        fd_check(&format!("{tag} dw"), &mut w.clone(), &dw, |w| fwd(&x, w, &b));
        fd_check(&format!("{tag} db"), &mut b.clone(), &db, |b| fwd(&x, &w, b));
        // accumulate_dx adds.
        let mut dx2 = vec![1.0f32; rows * n_in];
        be.linear_backward(&x, &w, &r, Some(&mut dx2), &mut dw, None, s, true).unwrap();
        for (a, b) in dx2.iter().zip(&dx) {
            assert!((a - 1.0 - b).abs() < 1e-5, "{tag}: accumulate_dx");
        }
        x[0] += 0.0;
        w[0] += 0.0;
        b[0] += 0.0;
    }
}

#[test]
fn gelu_backward_matches_finite_differences() {
    let be = Cpu::new();
    let n = 1001;
    let x: Vec<f32> = rand(n, 5).iter().map(|v| v * 4.0).collect();
    let r = rand(n, 6);
    let mut d = r.clone();
    be.gelu_backward(&x, &mut d, n).unwrap();
    fd_check("gelu", &mut x.clone(), &d, |x| {
        let mut y = vec![0f32; n];
        be.gelu(&x.to_vec(), &mut y, n).unwrap();
        dot(&y, &r)
    });
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let be = Cpu::new();
    for &(rows, dim) in &[(1usize, 13usize), (3, 29), (70, 37)] {
        let (x, g, b) = (rand(rows * dim, 7), rand(dim, 8), rand(dim, 9));
        let r = rand(rows * dim, 10);
        let fwd = |x: &[f32], g: &[f32], b: &[f32]| {
            let mut y = vec![0f32; rows * dim];
            be.layernorm(&x.to_vec(), &g.to_vec(), &b.to_vec(), &mut y, rows, dim).unwrap();
            dot(&y, &r)
        };
        // dx is added into: start from a known offset.
        let (mut dx, mut dg, mut db) = (vec![2.0f32; rows * dim], vec![0f32; dim], vec![0f32; dim]);
        be.layernorm_backward(&x, &g, &r, &mut dx, &mut dg, &mut db, rows, dim).unwrap();
        dx.iter_mut().for_each(|v| *v -= 2.0);
        let tag = format!("layernorm {rows}x{dim}");
        fd_check(&format!("{tag} dx"), &mut x.clone(), &dx, |x| fwd(x, &g, &b));
        fd_check(&format!("{tag} dgamma"), &mut g.clone(), &dg, |g| fwd(&x, g, &b));
        fd_check(&format!("{tag} dbeta"), &mut b.clone(), &db, |b| fwd(&x, &g, b));
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let be = Cpu::new();
    for &(batch, tokens, heads, head_dim) in &[(1usize, 7usize, 3usize, 5usize), (3, 11, 2, 6), (2, 49, 4, 8)] {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        let d = s.dim();
        let qkv: Vec<f32> = rand(batch * tokens * 3 * d, 11).iter().map(|v| v * 1.5).collect();
        let r = rand(batch * tokens * d, 12);
        // The keeping forward gives the inference op's output.
        let (mut out, mut want) = (vec![0f32; batch * tokens * d], vec![0f32; batch * tokens * d]);
        let mut probs = vec![f32::NAN; batch * heads * tokens * tokens];
        be.attention_train(&qkv, &mut out, &mut probs, s).unwrap();
        be.attention(&qkv, &mut want, s).unwrap();
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "attention_train vs attention: {a} vs {b}");
        }
        let mut dqkv = vec![f32::NAN; qkv.len()];
        let mut scratch = vec![f32::NAN; probs.len()];
        be.attention_backward(&qkv, &probs, &r, &mut dqkv, &mut scratch, s).unwrap();
        fd_check(&format!("attention {s:?}"), &mut qkv.clone(), &dqkv, |q| {
            let mut out = vec![0f32; batch * tokens * d];
            be.attention(&q.to_vec(), &mut out, s).unwrap();
            dot(&out, &r)
        });
    }
}

#[test]
fn patch_embed_backward_matches_finite_differences() {
    let be = Cpu::new();
    for &(batch, cls) in &[(1usize, true), (3, false), (3, true)] {
        let s = PatchShape { batch, height: 6, width: 10, patch_h: 3, patch_w: 5, dim: 7, cls_token: cls };
        let (plen, tokens) = (15, s.tokens());
        let x = rand(batch * 60, 13);
        let (w, b, c, pos) = (rand(7 * plen, 14), rand(7, 15), rand(7, 16), rand(tokens * 7, 17));
        let r = rand(batch * tokens * 7, 18);
        let fwd = |w: &[f32], b: &[f32], c: &[f32], pos: &[f32]| {
            let wp = be.prepare_linear(w, 7, plen).unwrap();
            let mut out = vec![0f32; batch * tokens * 7];
            let cls_buf = c.to_vec();
            be.patch_embed(&x, &wp, &b.to_vec(), cls.then_some(&cls_buf), &pos.to_vec(), &mut out, s).unwrap();
            dot(&out, &r)
        };
        let (mut dw, mut db, mut dc, mut dpos) =
            (vec![0f32; 7 * plen], vec![0f32; 7], vec![0f32; 7], vec![0f32; tokens * 7]);
        be.patch_embed_backward(&x, &r, &mut dw, &mut db, cls.then_some(&mut dc), &mut dpos, s).unwrap();
        let tag = format!("patch_embed batch {batch} cls {cls}");
        fd_check(&format!("{tag} dw"), &mut w.clone(), &dw, |w| fwd(w, &b, &c, &pos));
        fd_check(&format!("{tag} db"), &mut b.clone(), &db, |b| fwd(&w, b, &c, &pos));
        fd_check(&format!("{tag} dpos"), &mut pos.clone(), &dpos, |p| fwd(&w, &b, &c, p));
        if cls {
            fd_check(&format!("{tag} dcls"), &mut c.clone(), &dc, |c| fwd(&w, &b, c, &pos));
        }
    }
}

#[test]
fn conv1d_backward_matches_finite_differences() {
    let be = Cpu::new();
    // (samples, len, c_in, c_out, k, out_stride, out_offset): dense, and one
    // branch written into the middle of wider rows (the multi-scale concat).
    for &(samples, len, c_in, c_out, k, stride, off) in
        &[(1usize, 11usize, 5usize, 4usize, 3usize, 4usize, 0usize), (3, 9, 6, 5, 5, 13, 4), (3, 20, 7, 9, 7, 9, 0)]
    {
        let s = ConvShape { samples, len, c_in, c_out, kernel: k, out_stride: stride, out_offset: off };
        let (x, w, b) = (rand(samples * len * c_in, 19), rand(c_out * c_in * k, 20), rand(c_out, 21));
        let mut r = rand(samples * len * stride, 22);
        // Large values in the other columns: if they leaked into the gradients, the check would fail.
        for row in 0..samples * len {
            for j in 0..stride {
                if j < off || j >= off + c_out {
                    r[row * stride + j] = 1e3;
                }
            }
        }
        let r = r;
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let wp = be.prepare_linear(w, c_out, c_in * k).unwrap();
            let mut y = vec![0f32; samples * len * stride];
            be.conv1d(&x.to_vec(), &wp, &b.to_vec(), &mut y, s, false).unwrap();
            let mut l = 0f64;
            for row in 0..samples * len {
                for o in 0..c_out {
                    l += f64::from(y[row * stride + off + o]) * f64::from(r[row * stride + off + o]);
                }
            }
            l
        };
        let (mut dx, mut dw, mut db) = (vec![1.0f32; x.len()], vec![0f32; w.len()], vec![0f32; c_out]);
        be.conv1d_backward(&x, &w, &r, Some(&mut dx), &mut dw, &mut db, s).unwrap();
        dx.iter_mut().for_each(|v| *v -= 1.0);
        let tag = format!("conv1d {s:?}");
        fd_check(&format!("{tag} dx"), &mut x.clone(), &dx, |x| fwd(x, &w, &b));
        fd_check(&format!("{tag} dw"), &mut w.clone(), &dw, |w| fwd(&x, w, &b));
        fd_check(&format!("{tag} db"), &mut b.clone(), &db, |b| fwd(&x, &w, b));
    }
}

#[test]
fn lstm_backward_through_time_matches_finite_differences() {
    let be = Cpu::new();
    for &(batch, steps, hidden) in &[(1usize, 6usize, 5usize), (3, 7, 9), (2, 1, 4)] {
        let s = LstmShape { batch, steps, hidden };
        let g4 = 4 * hidden;
        let gx = rand(batch * steps * g4, 23);
        let w: Vec<f32> = rand(g4 * hidden, 24).iter().map(|v| v * 0.7).collect();
        let r = rand(batch * steps * hidden, 25);
        let fwd = |gx: &[f32], w: &[f32]| {
            let wp = be.prepare_recurrent(w, hidden).unwrap();
            let mut h = vec![0f32; batch * steps * hidden];
            be.lstm(&gx.to_vec(), &wp, &mut h, s).unwrap();
            dot(&h, &r)
        };
        let wp = be.prepare_recurrent(&w, hidden).unwrap();
        let n = batch * steps * hidden;
        let (mut h, mut c, mut gates) = (vec![0f32; n], vec![0f32; n], vec![0f32; batch * steps * g4]);
        be.lstm_train(&gx, &wp, &mut h, &mut c, &mut gates, s).unwrap();
        // The keeping forward computes what the inference recurrence does.
        let mut h_inf = vec![0f32; n];
        be.lstm(&gx, &wp, &mut h_inf, s).unwrap();
        for (a, b) in h.iter().zip(&h_inf) {
            assert!((a - b).abs() < 1e-5, "lstm_train vs lstm: {a} vs {b}");
        }
        let (mut dgx, mut dw) = (vec![0f32; gx.len()], vec![0f32; w.len()]);
        be.lstm_backward(&w, &h, &c, &gates, &r, &mut dgx, &mut dw, s).unwrap();
        let tag = format!("lstm {s:?}");
        fd_check(&format!("{tag} dgx"), &mut gx.clone(), &dgx, |g| fwd(g, &w));
        if steps > 1 {
            fd_check(&format!("{tag} dw_hh"), &mut w.clone(), &dw, |w| fwd(&gx, w));
        } else {
            assert!(dw.iter().all(|&v| v == 0.0), "one step: W_hh never multiplies a non-zero h");
        }
    }
}

#[test]
fn broadcast_and_pool_backward_match_finite_differences() {
    let be = Cpu::new();
    for per_outer in [true, false] {
        let s = BroadcastShape { outer: 3, inner: 5, dim: 7, per_outer };
        let x = rand(3 * 5 * 7, 26);
        let src = rand(if per_outer { 3 * 7 } else { 5 * 7 }, 27);
        let r = rand(x.len(), 28);
        let mut dsrc = vec![0f32; src.len()];
        be.broadcast_add_backward(&r, &mut dsrc, s).unwrap();
        fd_check(&format!("broadcast {s:?}"), &mut src.clone(), &dsrc, |src| {
            let mut y = x.clone();
            be.broadcast_add(&mut y, &src.to_vec(), s).unwrap();
            dot(&y, &r)
        });
    }
    for how in [Pool::First, Pool::Mean, Pool::Last] {
        for &(batch, tokens, dim) in &[(1usize, 5usize, 3usize), (3, 7, 11)] {
            let x = rand(batch * tokens * dim, 29);
            let r = rand(batch * dim, 30);
            let mut dx = vec![f32::NAN; x.len()];
            be.pool_backward(&r, &mut dx, batch, tokens, dim, how).unwrap();
            fd_check(&format!("pool {how:?} {batch}x{tokens}x{dim}"), &mut x.clone(), &dx, |x| {
                let mut y = vec![0f32; batch * dim];
                be.pool(&x.to_vec(), &mut y, batch, tokens, dim, how).unwrap();
                dot(&y, &r)
            });
        }
    }
}

/// docs/training.md's loss of one sample written out in f64.
fn loss_f64(logits: &[f64], s: f64, r: f64, class: usize, target: f64, w: (f64, f64, f64)) -> f64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    let ce = lse - logits[class];
    let arg = (0..3).fold(0, |a, k| if logits[k] > logits[a] { k } else { a });
    let t = if arg == class { 1.0 } else { 0.0 };
    let p = 1.0 / (1.0 + (-s).exp());
    let bce = -(t * p.ln().max(-100.0) + (1.0 - t) * (1.0 - p).ln().max(-100.0));
    let d = r - target;
    let hub = if d.abs() < 1.0 { 0.5 * d * d } else { d.abs() - 0.5 };
    w.0 * ce + w.1 * bce + w.2 * hub
}

#[test]
fn heads_loss_matches_the_formula_and_finite_differences() {
    let be = Cpu::new();
    for batch in [1usize, 3, 5] {
        let dim = 6;
        let z = rand(batch * dim, 31);
        let params: Vec<Vec<f32>> =
            vec![rand(3 * dim, 32), rand(3, 33), rand(dim, 34), rand(1, 35), rand(dim, 36), rand(1, 37)];
        let class: Vec<f32> = (0..batch).map(|i| (i % 3) as f32).collect();
        // Targets on both sides of Huber's kink.
        let target: Vec<f32> = (0..batch).map(|i| if i % 2 == 0 { 2.5 } else { -0.2 }).collect();
        let w = HeadsLoss { direction: 1.0, confidence: 0.5, ret: 0.3, grad_scale: 1.0 };
        let run = |z: &[f32], p: &[Vec<f32>], grads: Option<(&mut [Vec<f32>], &mut Vec<f32>)>| -> (f64, Vec<f32>) {
            let (mut lg, mut cf, mut rt) = (vec![0f32; batch * 3], vec![0f32; batch], vec![0f32; batch]);
            let hr = HeadsRef {
                direction_w: &p[0],
                direction_b: &p[1],
                confidence_w: &p[2],
                confidence_b: &p[3],
                return_w: &p[4],
                return_b: &p[5],
                classes: 3,
            };
            let out = HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt };
            let tg = HeadsTargets { class: &class, ret: &target };
            let g = grads.map(|(g, dz)| {
                let [a, b, c, d, e, f] = g else { unreachable!() };
                (
                    HeadsGrads {
                        direction_w: a,
                        direction_b: b,
                        confidence_w: c,
                        confidence_b: d,
                        return_w: e,
                        return_b: f,
                    },
                    dz,
                )
            });
            let l = be.heads_loss(&z.to_vec(), hr, out, tg, w, g, batch, dim).unwrap();
            (l, lg)
        };
        let mut g: Vec<Vec<f32>> = params.iter().map(|p| vec![0f32; p.len()]).collect();
        let mut dz = vec![0f32; batch * dim];
        let (loss, logits) = run(&z, &params, Some((&mut g, &mut dz)));
        // The loss against the formula in f64.
        let mut want = 0.0;
        for bi in 0..batch {
            let zr = &z[bi * dim..(bi + 1) * dim];
            let lin = |wv: &[f32], b: f32| {
                zr.iter().zip(wv).map(|(a, c)| f64::from(*a) * f64::from(*c)).sum::<f64>() + f64::from(b)
            };
            let l: Vec<f64> = (0..3).map(|k| lin(&params[0][k * dim..(k + 1) * dim], params[1][k])).collect();
            for k in 0..3 {
                assert!((l[k] - f64::from(logits[bi * 3 + k])).abs() < 1e-5);
            }
            let s = lin(&params[2], params[3][0]);
            let r = lin(&params[4], params[5][0]);
            want += loss_f64(&l, s, r, class[bi] as usize, f64::from(target[bi]), (1.0, 0.5, 0.3));
        }
        assert!((loss - want).abs() < 1e-5 * (1.0 + want.abs()), "batch {batch}: loss {loss} vs {want}");
        fd_check(&format!("heads batch {batch} dz"), &mut z.clone(), &dz, |z| run(z, &params, None).0);
        for i in 0..6 {
            let mut p = params.clone();
            let analytic = g[i].clone();
            let mut v = p[i].clone();
            fd_check(&format!("heads batch {batch} param {i}"), &mut v, &analytic, |v| {
                p[i] = v.to_vec();
                run(&z, &p, None).0
            });
        }
    }
}

#[test]
fn dropout_masks_are_seeded_and_have_the_right_rate() {
    let be = Cpu::new();
    let n = 100_003;
    let (mut a, mut b, mut c) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    be.dropout_mask(&mut a, n, 0.1, 42, 3).unwrap();
    be.dropout_mask(&mut b, n, 0.1, 42, 3).unwrap();
    be.dropout_mask(&mut c, n, 0.1, 42, 4).unwrap();
    assert_eq!(a, b, "same seed and stream, same mask");
    assert_ne!(a, c, "another stream, another mask");
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.1).abs() < 0.005, "dropped fraction {dropped}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-7), "kept values are scaled by 1/(1-p)");
    assert!(be.dropout_mask(&mut a, n, 1.0, 1, 1).is_err(), "p = 1 is an error, not a division by zero");
    // The mask is one ChaCha8 sequence (drawn in parallel chunks that seek):
    // element i is decided by word i of the stream.
    use rand_chacha::rand_core::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    rng.set_stream(3);
    let cut = (0.1f64 * 4_294_967_296.0) as u64;
    for (i, &m) in b.iter().enumerate() {
        let dropped = u64::from(rng.next_u32()) < cut;
        assert_eq!(m == 0.0, dropped, "element {i}");
    }
}

#[test]
fn backward_ops_reject_short_buffers() {
    let be = Cpu::new();
    let s = LinearShape { rows: 3, n_in: 4, n_out: 5 };
    let (x, w, dy) = (vec![0f32; 12], vec![0f32; 20], vec![0f32; 14]);
    let mut dw = vec![0f32; 20];
    assert!(be.linear_backward(&x, &w, &dy, None, &mut dw, None, s, false).is_err());
    let mut dx = vec![0f32; 5];
    let att = AttentionShape { batch: 1, tokens: 2, heads: 1, head_dim: 2 };
    let mut scratch = vec![0f32; 4];
    assert!(be.attention_backward(&x, &x, &x, &mut dx, &mut scratch, att).is_err());
}

/// Re-preparing from a weight already on the backend gives what preparing
/// from the host gives, and the device-side relabeling is the naive one; on
/// the CPU and on the GPU backend (emulated), whose layouts differ.
/// `lens`: the values each `prepare_*` gives (16-bit modes pack two per slot).
fn prepare_from_matches_prepare<B: Train>(be: &B, lens: PreparedLens) {
    let read = |b: &B::Buf, n: usize| {
        let mut v = vec![0f32; n];
        be.read(b, &mut v).unwrap();
        v
    };
    for &(n_out, n_in) in &[(1usize, 1usize), (5, 7), (33, 65), (100, 31)] {
        let w = rand(n_out * n_in, 40);
        let n = (lens.linear)(n_out, n_in);
        let mut dst = be.upload(&vec![f32::NAN; n]).unwrap();
        be.prepare_linear_from(&be.upload(&w).unwrap(), n_out, n_in, &mut dst).unwrap();
        assert_eq!(read(&dst, n), read(&be.prepare_linear(&w, n_out, n_in).unwrap(), n), "{n_out}x{n_in}");
    }
    // Odd channel counts (a padded last pair) and kernels 1, 3 and 5.
    for &(c_out, c_in, k) in &[(1usize, 1usize, 1usize), (4, 3, 3), (17, 8, 5), (32, 33, 3)] {
        let w = rand(c_out * c_in * k, 44);
        let n = (lens.conv)(c_out, c_in, k);
        let mut dst = be.upload(&vec![f32::NAN; n]).unwrap();
        be.prepare_conv_from(&be.upload(&w).unwrap(), c_out, c_in, k, &mut dst).unwrap();
        let want = be.prepare_conv(&w, c_out, c_in, k).unwrap();
        assert_eq!(read(&dst, n), read(&want, n), "conv {c_out}x{c_in}x{k}");
    }
    for hidden in [1usize, 5, 37] {
        let w = rand(4 * hidden * hidden, 41);
        let want = be.prepare_recurrent(&w, hidden).unwrap();
        let n = (lens.recurrent)(hidden);
        let mut dst = be.upload(&vec![f32::NAN; n]).unwrap();
        be.prepare_recurrent_from(&be.upload(&w).unwrap(), hidden, &mut dst).unwrap();
        assert_eq!(read(&dst, n), read(&want, n), "hidden {hidden}");
    }
    for &(outer, rows, cols) in &[(1usize, 1usize, 1usize), (3, 5, 7), (2, 33, 65), (16, 8, 40)] {
        let n = outer * rows * cols;
        let src = rand(n, 42);
        let start = rand(n, 43);
        let mut want = start.clone();
        for o in 0..outer {
            for r in 0..rows {
                for c in 0..cols {
                    want[o * rows * cols + c * rows + r] += src[o * rows * cols + r * cols + c];
                }
            }
        }
        let src_b = be.upload(&src).unwrap();
        let mut dst = be.upload(&start).unwrap();
        be.swap_last_axes(&src_b, &mut dst, outer, rows, cols, true).unwrap();
        assert_eq!(read(&dst, n), want, "({outer}, {rows}, {cols}) accumulated");
        be.swap_last_axes(&src_b, &mut dst, outer, rows, cols, false).unwrap();
        let again = read(&dst, n);
        let mut back = be.upload(&vec![0f32; n]).unwrap();
        be.swap_last_axes(&dst, &mut back, outer, cols, rows, false).unwrap();
        assert_eq!(read(&back, n), src, "({outer}, {rows}, {cols}) swapped twice");
        assert_ne!(again, start);
    }
    let small = be.upload(&[0.0; 5]).unwrap();
    let mut dst = be.upload(&[0.0; 6]).unwrap();
    assert!(be.swap_last_axes(&small, &mut dst, 1, 2, 3, false).is_err(), "a short source is an error");
}

/// How many values a backend's `prepare_linear (n_out, n_in)`,
/// `prepare_conv (c_out, c_in, k)` and `prepare_recurrent (hidden)` give.
struct PreparedLens {
    linear: fn(usize, usize) -> usize,
    conv: fn(usize, usize, usize) -> usize,
    recurrent: fn(usize) -> usize,
}

#[test]
fn prepare_from_matches_prepare_on_the_cpu() {
    // f32: the recurrence keeps W_hh packed and its transpose.
    let f32_lens = PreparedLens { linear: |o, i| o * i, conv: |o, i, k| o * i * k, recurrent: |h| 8 * h * h };
    prepare_from_matches_prepare(&Cpu::new(), f32_lens);
    // use_amp: bf16 pairs, the conv's tap-major, W_hh in its two unit halves.
    if let Ok(cpu) = Cpu::with_precision(quorum::backend::Precision::Bf16) {
        let bf16_lens = PreparedLens {
            linear: |o, i| o * i.div_ceil(2),
            conv: |o, i, k| k * i.div_ceil(2) * o,
            recurrent: |h| 4 * h * h.div_ceil(2),
        };
        prepare_from_matches_prepare(&cpu, bf16_lens);
    } else {
        eprintln!("bf16 skipped: no AVX512_BF16 here");
    }
}

#[test]
fn prepare_from_matches_prepare_on_the_emulated_gpu() {
    use quorum::backend::gpu::{Emu, Gpu, Precision};
    // The GPU kernels read W_hh as it is, in every precision.
    let f32_lens = PreparedLens { linear: |o, i| o * i, conv: |o, i, k| o * i * k, recurrent: |h| 4 * h * h };
    prepare_from_matches_prepare(&Gpu::new(Emu::new()), f32_lens);
    // Mixed precision: the f32 master weights packed on the device as the host packs them.
    for p in [Precision::Bf16, Precision::F16] {
        let lens = PreparedLens {
            linear: |o, i| o * i.div_ceil(2),
            conv: |o, i, k| o * (i * k).div_ceil(2),
            recurrent: |h| 4 * h * h,
        };
        prepare_from_matches_prepare(&Gpu::with_precision(Emu::new(), p).unwrap(), lens);
    }
}
