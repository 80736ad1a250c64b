//! Training-kernel cases (seq family): each a `fn case<G: Train>(gpu: &G)`
//! comparing the backend under test with the CPU's `Train` ops (see
//! common/kernels.rs for `data`, `assert_close`, `read`), run by
//! tests/train_kernels_emu.rs and, with --features gpu-tests, tests/train_kernels_cuda.rs.
#![allow(dead_code)]

use quorum::backend::{AttentionShape, Backend, LstmShape, Train};
use quorum::Cpu;

use crate::kernels::{assert_close, data, read};

/// Attention shapes: MPD (49/50 tokens), TLOB (100), the edges (1 and 2
/// tokens), batch 1/3/17, heads 1/4/8, head dims 8 to 64.
const ATTENTION_SHAPES: [(usize, usize, usize, usize); 9] = [
    (1, 49, 8, 32),
    (3, 100, 4, 32),
    (17, 50, 4, 16),
    (3, 100, 1, 64),
    (1, 1, 1, 8),
    (3, 2, 4, 8),
    (17, 49, 1, 64),
    (1, 100, 8, 16),
    (3, 33, 1, 8),
];

/// LSTM shapes: batch 1/3/17, steps 1/2/60, hidden 8/33/64/128/256.
const LSTM_SHAPES: [(usize, usize, usize); 8] =
    [(1, 60, 256), (3, 60, 33), (17, 2, 64), (3, 1, 128), (17, 13, 8), (1, 2, 8), (3, 60, 256), (17, 60, 64)];

fn qkv_of(s: AttentionShape, seed: u64) -> Vec<f32> {
    data(s.batch * s.tokens * 3 * s.dim(), seed, 2.0)
}

/// The training forward against the CPU's (output and probabilities, every
/// value written over a NaN-filled destination) and against the inference
/// kernel's output.
pub fn attention_train_matches_cpu<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, tokens, heads, head_dim)) in ATTENTION_SHAPES.iter().enumerate() {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        let (no, np) = (batch * tokens * s.dim(), batch * heads * tokens * tokens);
        let qkv = qkv_of(s, 300 + i as u64);
        let (mut oc, mut pc) = (vec![0f32; no], vec![0f32; np]);
        cpu.attention_train(&qkv, &mut oc, &mut pc, s).unwrap();
        let qg = gpu.upload(&qkv).unwrap();
        let (mut og, mut pg) = (gpu.upload(&vec![f32::NAN; no]).unwrap(), gpu.upload(&vec![f32::NAN; np]).unwrap());
        gpu.attention_train(&qg, &mut og, &mut pg, s).unwrap();
        let out = read(gpu, &og, no);
        assert_close(&format!("attention_train out {s:?}"), &out, &oc);
        assert_close(&format!("attention_train probs {s:?}"), &read(gpu, &pg, np), &pc);
        // The inference kernel holds K and V in shared memory: only where they fit.
        let mut of = gpu.alloc(no).unwrap();
        if gpu.attention(&qg, &mut of, s).is_ok() {
            assert_close(&format!("attention_train vs attention {s:?}"), &out, &read(gpu, &of, no));
        }
    }
}

/// The backward from the CPU's probabilities: all of dqkv written (over NaN),
/// whatever the scratch held.
pub fn attention_backward_matches_cpu<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, tokens, heads, head_dim)) in ATTENTION_SHAPES.iter().enumerate() {
        let s = AttentionShape { batch, tokens, heads, head_dim };
        let (no, np, nq) = (batch * tokens * s.dim(), batch * heads * tokens * tokens, batch * tokens * 3 * s.dim());
        let qkv = qkv_of(s, 400 + i as u64);
        let dout = data(no, 450 + i as u64, 1.0);
        let (mut oc, mut pc) = (vec![0f32; no], vec![0f32; np]);
        cpu.attention_train(&qkv, &mut oc, &mut pc, s).unwrap();
        let (mut dc, mut sc) = (vec![0f32; nq], vec![0f32; np]);
        cpu.attention_backward(&qkv, &pc, &dout, &mut dc, &mut sc, s).unwrap();
        let (qg, pg, dg) = (gpu.upload(&qkv).unwrap(), gpu.upload(&pc).unwrap(), gpu.upload(&dout).unwrap());
        let mut dqg = gpu.upload(&vec![f32::NAN; nq]).unwrap();
        let mut scratch = gpu.upload(&vec![f32::NAN; np]).unwrap();
        gpu.attention_backward(&qg, &pg, &dg, &mut dqg, &mut scratch, s).unwrap();
        let got = read(gpu, &dqg, nq);
        // Per part (q, k, v), each against its own scale.
        let d = s.dim();
        for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let pick = |v: &[f32]| -> Vec<f32> {
                v.chunks(3 * d).flat_map(|row| row[part * d..(part + 1) * d].to_vec()).collect()
            };
            assert_close(&format!("attention_backward {name} {s:?}"), &pick(&got), &pick(&dc));
        }
    }
}

/// The training recurrence against the CPU's (h, c and the activated gates)
/// and its h against the inference kernel's.
pub fn lstm_train_matches_cpu<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, steps, hidden)) in LSTM_SHAPES.iter().enumerate() {
        let s = LstmShape { batch, steps, hidden };
        let (nh, ng) = (batch * steps * hidden, batch * steps * 4 * hidden);
        let gx = data(ng, 500 + i as u64, 1.5);
        let w = data(4 * hidden * hidden, 550 + i as u64, 1.0 / (hidden as f32).sqrt());
        let wc = cpu.prepare_recurrent(&w, hidden).unwrap();
        let (mut hc, mut cc, mut gc) = (vec![0f32; nh], vec![0f32; nh], vec![0f32; ng]);
        cpu.lstm_train(&gx, &wc, &mut hc, &mut cc, &mut gc, s).unwrap();
        let (gxg, wg) = (gpu.upload(&gx).unwrap(), gpu.prepare_recurrent(&w, hidden).unwrap());
        let nan = |n: usize| gpu.upload(&vec![f32::NAN; n]).unwrap();
        let (mut hg, mut cg, mut gg) = (nan(nh), nan(nh), nan(ng));
        gpu.lstm_train(&gxg, &wg, &mut hg, &mut cg, &mut gg, s).unwrap();
        let h = read(gpu, &hg, nh);
        assert_close(&format!("lstm_train h {s:?}"), &h, &hc);
        assert_close(&format!("lstm_train c {s:?}"), &read(gpu, &cg, nh), &cc);
        assert_close(&format!("lstm_train gates {s:?}"), &read(gpu, &gg, ng), &gc);
        let mut hf = gpu.alloc(nh).unwrap();
        gpu.lstm(&gxg, &wg, &mut hf, s).unwrap();
        assert_close(&format!("lstm_train vs lstm {s:?}"), &h, &read(gpu, &hf, nh));
    }
}

/// BPTT from the CPU's forward state: dgx written (over NaN), dW_hh added
/// into a nonzero start.
pub fn lstm_backward_matches_cpu<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, steps, hidden)) in LSTM_SHAPES.iter().enumerate() {
        let s = LstmShape { batch, steps, hidden };
        let (nh, ng, nw) = (batch * steps * hidden, batch * steps * 4 * hidden, 4 * hidden * hidden);
        let gx = data(ng, 600 + i as u64, 1.5);
        let w = data(nw, 650 + i as u64, 1.0 / (hidden as f32).sqrt());
        let wc = cpu.prepare_recurrent(&w, hidden).unwrap();
        let (mut hc, mut cc, mut gc) = (vec![0f32; nh], vec![0f32; nh], vec![0f32; ng]);
        cpu.lstm_train(&gx, &wc, &mut hc, &mut cc, &mut gc, s).unwrap();
        let dh = data(nh, 700 + i as u64, 1.0);
        let dw0 = data(nw, 750 + i as u64, 0.5);
        let (mut dgc, mut dwc) = (vec![0f32; ng], dw0.clone());
        cpu.lstm_backward(&w, &hc, &cc, &gc, &dh, &mut dgc, &mut dwc, s).unwrap();
        let up = |v: &[f32]| gpu.upload(v).unwrap();
        let (mut dgg, mut dwg) = (up(&vec![f32::NAN; ng]), up(&dw0));
        gpu.lstm_backward(&up(&w), &up(&hc), &up(&cc), &up(&gc), &up(&dh), &mut dgg, &mut dwg, s).unwrap();
        assert_close(&format!("lstm_backward dgx {s:?}"), &read(gpu, &dgg, ng), &dgc);
        let dw = read(gpu, &dwg, nw);
        assert_close(&format!("lstm_backward dw_hh {s:?}"), &dw, &dwc);
        if steps == 1 {
            assert_eq!(dw, dw0, "one step adds nothing to dW_hh ({s:?})");
        }
    }
}

/// Every output of the four ops, in order, from one run at a fixed shape.
fn seq_outputs<G: Train>(gpu: &G) -> Vec<Vec<f32>> {
    let mut outs = Vec::new();
    let s = AttentionShape { batch: 3, tokens: 100, heads: 4, head_dim: 32 };
    let (no, np, nq) = (3 * 100 * s.dim(), 3 * 4 * 100 * 100, 3 * 100 * 3 * s.dim());
    let qkv = gpu.upload(&qkv_of(s, 800)).unwrap();
    let (mut o, mut p) = (gpu.alloc(no).unwrap(), gpu.alloc(np).unwrap());
    gpu.attention_train(&qkv, &mut o, &mut p, s).unwrap();
    let dout = gpu.upload(&data(no, 801, 1.0)).unwrap();
    let (mut dq, mut scratch) = (gpu.alloc(nq).unwrap(), gpu.alloc(np).unwrap());
    gpu.attention_backward(&qkv, &p, &dout, &mut dq, &mut scratch, s).unwrap();
    outs.extend([read(gpu, &o, no), read(gpu, &p, np), read(gpu, &dq, nq)]);

    let l = LstmShape { batch: 3, steps: 60, hidden: 64 };
    let (nh, ng, nw) = (3 * 60 * 64, 3 * 60 * 256, 256 * 64);
    let w = gpu.upload(&data(nw, 802, 0.125)).unwrap();
    let gx = gpu.upload(&data(ng, 803, 1.5)).unwrap();
    let (mut h, mut c, mut g) = (gpu.alloc(nh).unwrap(), gpu.alloc(nh).unwrap(), gpu.alloc(ng).unwrap());
    gpu.lstm_train(&gx, &w, &mut h, &mut c, &mut g, l).unwrap();
    let dh = gpu.upload(&data(nh, 804, 1.0)).unwrap();
    let (mut dgx, mut dw) = (gpu.alloc(ng).unwrap(), gpu.upload(&data(nw, 805, 0.5)).unwrap());
    gpu.lstm_backward(&w, &h, &c, &g, &dh, &mut dgx, &mut dw, l).unwrap();
    outs.extend([read(gpu, &h, nh), read(gpu, &c, nh), read(gpu, &g, ng), read(gpu, &dgx, ng), read(gpu, &dw, nw)]);
    outs
}

/// Two backends (two schedules, or two runs) give bit-identical results.
pub fn seq_ops_bit_identical<G: Train>(a: &G, b: &G) {
    let (x, y) = (seq_outputs(a), seq_outputs(b));
    let names = ["attention out", "probs", "dqkv", "lstm h", "lstm c", "lstm gates", "dgx", "dw_hh"];
    for ((name, u), v) in names.iter().zip(&x).zip(&y) {
        let same = u.len() == v.len() && u.iter().zip(v).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{name}: results differ between runs");
    }
}

/// Each buffer one value short gives an error, not a panic or an overrun.
pub fn seq_short_buffers_are_errors<G: Train>(gpu: &G) {
    let s = AttentionShape { batch: 2, tokens: 5, heads: 2, head_dim: 8 };
    let (no, np, nq) = (2 * 5 * s.dim(), 2 * 2 * 25, 2 * 5 * 3 * s.dim());
    let buf = |n: usize| gpu.alloc(n).unwrap();
    for short in 0..3 {
        let len = |k: usize, n: usize| if k == short { n - 1 } else { n };
        let (qkv, mut o, mut p) = (buf(len(0, nq)), buf(len(1, no)), buf(len(2, np)));
        assert!(gpu.attention_train(&qkv, &mut o, &mut p, s).is_err(), "attention_train, buffer {short} short");
    }
    for short in 0..5 {
        let len = |k: usize, n: usize| if k == short { n - 1 } else { n };
        let (qkv, p, dout) = (buf(len(0, nq)), buf(len(1, np)), buf(len(2, no)));
        let (mut dq, mut scratch) = (buf(len(3, nq)), buf(len(4, np)));
        let r = gpu.attention_backward(&qkv, &p, &dout, &mut dq, &mut scratch, s);
        assert!(r.is_err(), "attention_backward, buffer {short} short");
    }
    let l = LstmShape { batch: 2, steps: 3, hidden: 8 };
    let (nh, ng, nw) = (2 * 3 * 8, 2 * 3 * 32, 32 * 8);
    for short in 0..5 {
        let len = |k: usize, n: usize| if k == short { n - 1 } else { n };
        let (gx, w) = (buf(len(0, ng)), buf(len(1, nw)));
        let (mut h, mut c, mut g) = (buf(len(2, nh)), buf(len(3, nh)), buf(len(4, ng)));
        assert!(gpu.lstm_train(&gx, &w, &mut h, &mut c, &mut g, l).is_err(), "lstm_train, buffer {short} short");
    }
    for short in 0..7 {
        let len = |k: usize, n: usize| if k == short { n - 1 } else { n };
        let (w, h, c, g, dh) = (buf(len(0, nw)), buf(len(1, nh)), buf(len(2, nh)), buf(len(3, ng)), buf(len(4, nh)));
        let (mut dgx, mut dw) = (buf(len(5, ng)), buf(len(6, nw)));
        let r = gpu.lstm_backward(&w, &h, &c, &g, &dh, &mut dgx, &mut dw, l);
        assert!(r.is_err(), "lstm_backward, buffer {short} short");
    }
    // Outside the kernels' limits: an error too.
    let wide = AttentionShape { batch: 1, tokens: 4, heads: 1, head_dim: 65 };
    let (qkv, mut o, mut p) = (buf(4 * 3 * 65), buf(4 * 65), buf(16));
    assert!(gpu.attention_train(&qkv, &mut o, &mut p, wide).is_err(), "head dim 65");
}
