//! Training-kernel cases (elementwise family): each a `fn case<G: Train>(gpu: &G)`
//! comparing the backend under test with the CPU's `Train` ops (see
//! common/kernels.rs for `data`, `assert_close`, `read`), run by
//! tests/train_kernels_emu.rs and, with --features gpu-tests, tests/train_kernels_cuda.rs.
#![allow(dead_code)]

use quorum::backend::{
    AdamWStep, BroadcastShape, HeadsGrads, HeadsLoss, HeadsOut, HeadsRef, HeadsTargets, Pool, Train,
};
use quorum::Cpu;

use crate::kernels::{assert_close, data, read};

/// Lengths around the kernels' block and tile sizes (256 threads, 16 ChaCha
/// words per thread, 4096 mask values per block pass).
const LENS: [usize; 7] = [1, 15, 17, 1000, 4097, 70_000, 300_001];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: first difference at {i}: got {} want {}", got[i], want[i]);
    }
}

/// copy, add, mul, fill: exact; GELU and its backward within the tolerance.
/// Each writes exactly `len` values (the buffers are one longer).
pub fn map_ops<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &len) in LENS.iter().enumerate() {
        let seed = 10 * i as u64;
        let (a, b) = (data(len + 1, seed + 1, 4.0), data(len + 1, seed + 2, 2.0));
        let ag = gpu.upload(&a).unwrap();

        let mut dst = gpu.upload(&b).unwrap();
        gpu.copy(&ag, &mut dst, len).unwrap();
        let mut want = b.clone();
        cpu.copy(&a, &mut want, len).unwrap();
        assert_bits(&format!("copy {len}"), &read(gpu, &dst, len + 1), &want);

        let mut dst = gpu.upload(&b).unwrap();
        gpu.add(&mut dst, &ag, len).unwrap();
        let mut want = b.clone();
        cpu.add(&mut want, &a, len).unwrap();
        assert_bits(&format!("add {len}"), &read(gpu, &dst, len + 1), &want);

        let mut dst = gpu.upload(&b).unwrap();
        gpu.mul(&mut dst, &ag, len).unwrap();
        let mut want = b.clone();
        cpu.mul(&mut want, &a, len).unwrap();
        assert_bits(&format!("mul {len}"), &read(gpu, &dst, len + 1), &want);

        let mut dst = gpu.upload(&b).unwrap();
        gpu.fill(&mut dst, len, -0.75).unwrap();
        let mut want = b.clone();
        cpu.fill(&mut want, len, -0.75).unwrap();
        assert_bits(&format!("fill {len}"), &read(gpu, &dst, len + 1), &want);

        let mut dst = gpu.upload(&b).unwrap();
        gpu.gelu(&ag, &mut dst, len).unwrap();
        let mut want = b.clone();
        cpu.gelu(&a, &mut want, len).unwrap();
        let got = read(gpu, &dst, len + 1);
        assert_close(&format!("gelu {len}"), &got[..len], &want[..len]);
        assert_eq!(got[len], b[len], "gelu {len}: wrote past len");

        let mut dst = gpu.upload(&b).unwrap();
        gpu.gelu_backward(&ag, &mut dst, len).unwrap();
        let mut want = b.clone();
        cpu.gelu_backward(&a, &mut want, len).unwrap();
        let got = read(gpu, &dst, len + 1);
        assert_close(&format!("gelu_backward {len}"), &got[..len], &want[..len]);
        assert_eq!(got[len], b[len], "gelu_backward {len}: wrote past len");
    }
}

/// The mask bit for bit as the CPU's (ChaCha8, word i of the stream for
/// value i), over lengths, seeds, streams and drop rates.
pub fn dropout_mask_bits<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    let mut seen_drop = false;
    for &len in &LENS {
        for (seed, stream) in [(0u64, 0u64), (7, 1), (0x1234_5678_9abc_def0, 12_345), (42, u64::MAX - 1)] {
            for p in [0.0f32, 0.1, 0.5] {
                let init = data(len + 1, len as u64, 1.0);
                let mut g = gpu.upload(&init).unwrap();
                gpu.dropout_mask(&mut g, len, p, seed, stream).unwrap();
                let mut want = init.clone();
                cpu.dropout_mask(&mut want, len, p, seed, stream).unwrap();
                let got = read(gpu, &g, len + 1);
                assert_bits(&format!("dropout len {len} seed {seed} stream {stream} p {p}"), &got, &want);
                seen_drop |= got[..len].contains(&0.0);
            }
        }
    }
    assert!(seen_drop, "no value was ever dropped");
    // Past one pass of the largest grid (1024 blocks of 4096 values): the grid-stride loop.
    let len = 1024 * 4096 + 33;
    let mut g = gpu.alloc(len).unwrap();
    gpu.dropout_mask(&mut g, len, 0.25, 99, 3).unwrap();
    let mut want = vec![0f32; len];
    cpu.dropout_mask(&mut want, len, 0.25, 99, 3).unwrap();
    assert_bits(&format!("dropout len {len}"), &read(gpu, &g, len), &want);
    let mut g = gpu.alloc(4).unwrap();
    assert!(gpu.dropout_mask(&mut g, 4, 1.0, 1, 1).is_err(), "p = 1 is refused");
    assert!(gpu.dropout_mask(&mut g, 4, -0.1, 1, 1).is_err(), "p < 0 is refused");
}

/// Three AdamW steps with weight decay, gradient scaling and nonzero moments.
pub fn adamw_steps<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &len) in [1usize, 17, 1000, 70_000].iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let p0 = data(len, seed, 1.0);
        let m0 = data(len, seed + 1, 0.01);
        let v0: Vec<f32> = data(len, seed + 2, 1e-4).iter().map(|v| v.abs()).collect();
        let (mut pc, mut mc, mut vc) = (p0.clone(), m0.clone(), v0.clone());
        let (mut pg, mut mg, mut vg) = (gpu.upload(&p0).unwrap(), gpu.upload(&m0).unwrap(), gpu.upload(&v0).unwrap());
        for t in 0..3u32 {
            let grad = data(len, seed + 3 + u64::from(t), 2.0);
            let gg = gpu.upload(&grad).unwrap();
            let s = AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: if t == 1 { 0.0 } else { 0.05 },
                step: t + 1,
                grad_scale: 0.37,
            };
            cpu.adamw(&mut pc, &grad, &mut mc, &mut vc, len, s).unwrap();
            gpu.adamw(&mut pg, &gg, &mut mg, &mut vg, len, s).unwrap();
        }
        assert_close(&format!("adamw param {len}"), &read(gpu, &pg, len), &pc);
        assert_close(&format!("adamw m {len}"), &read(gpu, &mg, len), &mc);
        assert_close(&format!("adamw v {len}"), &read(gpu, &vg, len), &vc);
    }
}

/// The f64 sum of squares within 1e-9 relative of the CPU's, on the first
/// `len` values only; past the partials' cap (512 blocks of 2048) too.
pub fn sum_squares_close<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for &len in &[0usize, 1, 15, 17, 1000, 4097, 70_000, 1_100_003] {
        let x = data(len + 3, len as u64 + 5, 3.0);
        let xg = gpu.upload(&x).unwrap();
        let got = gpu.sum_squares(&xg, len).unwrap();
        let want = cpu.sum_squares(&x, len).unwrap();
        assert!((got - want).abs() <= 1e-9 * want.abs(), "sum_squares {len}: {got} vs {want}");
    }
}

/// Bias backward in the CPU's order (chunks of 64 rows), so bit-identical;
/// adds into a nonzero `db`, touching only its first `n` values.
pub fn bias_backward_bits<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(rows, n)) in
        [(1, 1), (3, 3), (63, 112), (64, 17), (65, 300), (17 * 49, 112), (17 * 100, 256), (4100, 5)].iter().enumerate()
    {
        let dy = data(rows * n, 200 + i as u64, 1.0);
        let db0 = data(n + 1, 300 + i as u64, 0.5);
        let mut want = db0.clone();
        cpu.bias_backward(&dy, &mut want, rows, n).unwrap();
        let dyg = gpu.upload(&dy).unwrap();
        let mut dbg = gpu.upload(&db0).unwrap();
        gpu.bias_backward(&dyg, &mut dbg, rows, n).unwrap();
        assert_bits(&format!("bias_backward {rows}x{n}"), &read(gpu, &dbg, n + 1), &want);
    }
}

/// Both broadcast layouts (per sample, one table), adding into a nonzero
/// `dsrc`; the CPU's order, so bit-identical.
pub fn broadcast_add_backward_bits<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(outer, inner, dim)) in [(1, 1, 5), (3, 49, 112), (17, 100, 32), (2, 7, 300)].iter().enumerate() {
        for per_outer in [true, false] {
            let s = BroadcastShape { outer, inner, dim, per_outer };
            let dx = data(outer * inner * dim, 400 + i as u64, 1.0);
            let rows = if per_outer { outer } else { inner };
            let d0 = data(rows * dim + 1, 500 + i as u64, 0.5);
            let mut want = d0.clone();
            cpu.broadcast_add_backward(&dx, &mut want, s).unwrap();
            let dxg = gpu.upload(&dx).unwrap();
            let mut dg = gpu.upload(&d0).unwrap();
            gpu.broadcast_add_backward(&dxg, &mut dg, s).unwrap();
            assert_bits(&format!("broadcast_add_backward {s:?}"), &read(gpu, &dg, rows * dim + 1), &want);
        }
    }
}

/// Every pool mode writes all of dx (it starts as garbage), exactly as the CPU.
pub fn pool_backward_all_modes<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, tokens, dim)) in [(1, 1, 3), (3, 49, 112), (17, 100, 32), (2, 61, 256)].iter().enumerate() {
        for how in [Pool::First, Pool::Mean, Pool::Last] {
            let dout = data(batch * dim, 600 + i as u64, 1.0);
            let dx0 = data(batch * tokens * dim, 700 + i as u64, 9.0);
            let mut want = dx0.clone();
            cpu.pool_backward(&dout, &mut want, batch, tokens, dim, how).unwrap();
            let dg = gpu.upload(&dout).unwrap();
            let mut dxg = gpu.upload(&dx0).unwrap();
            gpu.pool_backward(&dg, &mut dxg, batch, tokens, dim, how).unwrap();
            assert_bits(&format!("pool_backward {batch}x{tokens}x{dim} {how:?}"), &read(gpu, &dxg, dx0.len()), &want);
        }
    }
}

/// One heads_loss problem: z, the six parameters, targets, the gradients'
/// initial (nonzero) contents and dz's.
pub struct HeadsCase {
    pub batch: usize,
    pub dim: usize,
    pub z: Vec<f32>,
    pub params: [Vec<f32>; 6],
    pub class: Vec<f32>,
    pub target: Vec<f32>,
    pub grads0: [Vec<f32>; 6],
    pub dz0: Vec<f32>,
    pub loss: HeadsLoss,
}

impl HeadsCase {
    pub fn new(batch: usize, dim: usize, seed: u64) -> Self {
        let lens = [3 * dim, 3, dim, 1, dim, 1];
        let params = std::array::from_fn(|i| data(lens[i], seed + i as u64, 1.0 / (dim as f32).sqrt()));
        let grads0 = std::array::from_fn(|i| data(lens[i], seed + 10 + i as u64, 0.1));
        // Every class, and return targets on both sides of Huber's kink.
        let class = (0..batch).map(|b| ((b + seed as usize) % 3) as f32).collect();
        let target = (0..batch).map(|b| if b % 2 == 0 { 2.5 } else { -0.2 }).collect();
        HeadsCase {
            batch,
            dim,
            z: data(batch * dim, seed + 20, 2.0),
            params,
            class,
            target,
            grads0,
            dz0: data(batch * dim, seed + 21, 0.3),
            loss: HeadsLoss { direction: 1.0, confidence: 0.5, ret: 0.3, grad_scale: 1.0 / batch as f32 },
        }
    }
}

/// What one heads_loss call gives: the summed loss, then logits,
/// confidence, expected return, and (with grads) the six parameter
/// gradients and dz.
pub struct HeadsRun {
    pub loss: f64,
    pub outputs: Vec<Vec<f32>>,
}

/// The heads' parameters `[direction_w, direction_b, confidence_w,
/// confidence_b, return_w, return_b]` on a backend, three classes.
fn heads_ref<B: Train>(p: &[B::Buf; 6]) -> HeadsRef<'_, B> {
    HeadsRef {
        direction_w: &p[0],
        direction_b: &p[1],
        confidence_w: &p[2],
        confidence_b: &p[3],
        return_w: &p[4],
        return_b: &p[5],
        classes: 3,
    }
}

pub fn run_heads<B: Train>(be: &B, c: &HeadsCase, with_grads: bool) -> quorum::error::Result<HeadsRun> {
    let up = |v: &[f32]| be.upload(v).unwrap();
    let (batch, dim) = (c.batch, c.dim);
    let params = c.params.each_ref().map(|v| up(v));
    let (z, class, target) = (up(&c.z), up(&c.class), up(&c.target));
    let (mut lg, mut cf, mut rt) = (up(&vec![7.0; batch * 3]), up(&vec![7.0; batch]), up(&vec![7.0; batch]));
    let [mut g0, mut g1, mut g2, mut g3, mut g4, mut g5] = c.grads0.each_ref().map(|v| up(v));
    let mut dz = up(&c.dz0);
    let p = heads_ref::<B>(&params);
    let out = HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt };
    let grads = with_grads.then_some((
        HeadsGrads {
            direction_w: &mut g0,
            direction_b: &mut g1,
            confidence_w: &mut g2,
            confidence_b: &mut g3,
            return_w: &mut g4,
            return_b: &mut g5,
        },
        &mut dz,
    ));
    let loss = be.heads_loss(&z, p, out, HeadsTargets { class: &class, ret: &target }, c.loss, grads, batch, dim)?;
    let mut outputs = vec![read(be, &lg, batch * 3), read(be, &cf, batch), read(be, &rt, batch)];
    if with_grads {
        for (g, v) in [&g0, &g1, &g2, &g3, &g4, &g5].into_iter().zip(&c.grads0) {
            outputs.push(read(be, g, v.len()));
        }
        outputs.push(read(be, &dz, batch * dim));
    }
    Ok(HeadsRun { loss, outputs })
}

const HEADS_NAMES: [&str; 10] = [
    "logits",
    "confidence",
    "expected_return",
    "direction.weight grad",
    "direction.bias grad",
    "confidence.weight grad",
    "confidence.bias grad",
    "expected_return.weight grad",
    "expected_return.bias grad",
    "dz",
];

/// The heads' outputs, loss and (added) gradients against the CPU's, with
/// and without grads; the forward outputs bit-identical to the `heads` op.
pub fn heads_loss_matches_cpu<G: Train>(gpu: &G) {
    let cpu = Cpu::new();
    for (i, &(batch, dim)) in [(1, 32), (3, 112), (17, 256), (17, 32), (3, 256), (1, 112)].iter().enumerate() {
        let c = HeadsCase::new(batch, dim, 1000 + 37 * i as u64);
        for with_grads in [false, true] {
            let what = format!("heads_loss batch {batch} dim {dim} grads {with_grads}");
            let got = run_heads(gpu, &c, with_grads).unwrap();
            let want = run_heads(&cpu, &c, with_grads).unwrap();
            assert!(
                (got.loss - want.loss).abs() <= 1e-5 * (1.0 + want.loss.abs()),
                "{what}: loss {} vs {}",
                got.loss,
                want.loss
            );
            assert_eq!(got.outputs.len(), want.outputs.len());
            for (k, (g, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
                assert_close(&format!("{what}: {}", HEADS_NAMES[k]), g, w);
            }
        }
        // The forward outputs are the `heads` op's, bit for bit.
        let up = |v: &[f32]| gpu.upload(v).unwrap();
        let params = c.params.each_ref().map(|v| up(v));
        let z = up(&c.z);
        let (mut lg, mut cf, mut rt) =
            (gpu.alloc(batch * 3).unwrap(), gpu.alloc(batch).unwrap(), gpu.alloc(batch).unwrap());
        let p = heads_ref::<G>(&params);
        gpu.heads(&z, p, HeadsOut { logits: &mut lg, confidence: &mut cf, expected_return: &mut rt }, batch, dim)
            .unwrap();
        let got = run_heads(gpu, &c, true).unwrap();
        for (k, buf) in [(0, &lg), (1, &cf), (2, &rt)] {
            let n = got.outputs[k].len();
            assert_bits(
                &format!("heads_loss vs heads batch {batch} dim {dim}: {}", HEADS_NAMES[k]),
                &got.outputs[k],
                &read(gpu, buf, n),
            );
        }
    }
    // A class target that is not 0, 1 or 2 is an error, as on the CPU.
    let mut c = HeadsCase::new(3, 32, 5);
    c.class[1] = 1.5;
    assert!(run_heads(gpu, &c, true).is_err(), "class 1.5");
    assert!(run_heads(&cpu, &c, true).is_err());
}

/// The reductions' results as bits (sum of squares, bias backward, the heads'
/// loss and gradients), for comparing schedules and runs.
pub fn reduction_bits<G: Train>(gpu: &G) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for len in [1000usize, 70_000, 1_100_003] {
        let xg = gpu.upload(&data(len, 77 + len as u64, 3.0)).unwrap();
        out.push(vec![
            gpu.sum_squares(&xg, len).unwrap().to_bits() as u32,
            (gpu.sum_squares(&xg, len).unwrap().to_bits() >> 32) as u32,
        ]);
    }
    for &(rows, n) in &[(17 * 49, 112), (4100, 5)] {
        let dyg = gpu.upload(&data(rows * n, 88, 1.0)).unwrap();
        let mut dbg = gpu.upload(&data(n, 89, 1.0)).unwrap();
        gpu.bias_backward(&dyg, &mut dbg, rows, n).unwrap();
        out.push(bits(&read(gpu, &dbg, n)));
    }
    for (batch, dim) in [(17, 256), (3, 112)] {
        let r = run_heads(gpu, &HeadsCase::new(batch, dim, 99), true).unwrap();
        out.push(vec![r.loss.to_bits() as u32, (r.loss.to_bits() >> 32) as u32]);
        out.extend(r.outputs.iter().map(|v| bits(v)));
    }
    let s = BroadcastShape { outer: 17, inner: 100, dim: 32, per_outer: false };
    let dxg = gpu.upload(&data(17 * 100 * 32, 90, 1.0)).unwrap();
    let mut dg = gpu.upload(&data(100 * 32, 91, 1.0)).unwrap();
    gpu.broadcast_add_backward(&dxg, &mut dg, s).unwrap();
    out.push(bits(&read(gpu, &dg, 100 * 32)));
    out
}

/// The same results on a second run.
pub fn reductions_repeat<G: Train>(gpu: &G) {
    assert!(reduction_bits(gpu) == reduction_bits(gpu), "a second run gave different bits");
}

/// A buffer shorter than the op needs is an error, never a panic or an out-of-bounds access.
pub fn short_buffers_are_errors<G: Train>(gpu: &G) {
    let a = gpu.alloc(10).unwrap();
    let mut b = gpu.alloc(10).unwrap();
    let mut c = gpu.alloc(10).unwrap();
    let mut d = gpu.alloc(10).unwrap();
    assert!(gpu.copy(&a, &mut b, 11).is_err());
    assert!(gpu.add(&mut b, &a, 11).is_err());
    assert!(gpu.mul(&mut b, &a, 11).is_err());
    assert!(gpu.gelu(&a, &mut b, 11).is_err());
    assert!(gpu.gelu_backward(&a, &mut b, 11).is_err());
    assert!(gpu.fill(&mut b, 11, 1.0).is_err());
    assert!(gpu.dropout_mask(&mut b, 11, 0.1, 1, 2).is_err());
    let s = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1, grad_scale: 1.0 };
    assert!(gpu.adamw(&mut b, &a, &mut c, &mut d, 11, s).is_err());
    assert!(gpu.sum_squares(&a, 11).is_err());
    assert!(gpu.bias_backward(&a, &mut b, 4, 3).is_err(), "dy short");
    assert!(gpu.bias_backward(&a, &mut b, 1, 11).is_err(), "db short");
    let s = BroadcastShape { outer: 2, inner: 3, dim: 2, per_outer: true };
    assert!(gpu.broadcast_add_backward(&a, &mut b, s).is_err(), "dx short");
    let s = BroadcastShape { outer: 1, inner: 5, dim: 3, per_outer: false };
    assert!(gpu.broadcast_add_backward(&gpu.alloc(15).unwrap(), &mut b, s).is_err(), "dsrc short");
    assert!(gpu.pool_backward(&a, &mut b, 2, 3, 2, Pool::Mean).is_err());
    assert!(gpu.pool_backward(&a, &mut b, 1, 0, 2, Pool::Mean).is_err(), "zero tokens");
    // heads_loss: a short z, a short gradient, a short dz, and two classes.
    let c0 = HeadsCase::new(3, 32, 7);
    let mut c1 = HeadsCase::new(3, 32, 7);
    c1.z.truncate(3 * 32 - 1);
    assert!(run_heads(gpu, &c1, false).is_err(), "z short");
    let mut c2 = HeadsCase::new(3, 32, 7);
    c2.grads0[2].truncate(31);
    assert!(run_heads(gpu, &c2, true).is_err(), "confidence.weight grad short");
    let mut c3 = HeadsCase::new(3, 32, 7);
    c3.dz0.truncate(3 * 32 - 1);
    assert!(run_heads(gpu, &c3, true).is_err(), "dz short");
    assert!(run_heads(gpu, &c0, true).is_ok());
}
