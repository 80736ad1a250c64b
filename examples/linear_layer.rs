//! One linear layer on the CPU at the models' shapes, in one precision: the
//! median time of its calls and the multiply-adds per second. The int8
//! products run on AMX where the CPU has it; compare with VNNI in a second
//! run:
//!
//!     cargo run --release --example linear_layer -- int8
//!     QUORUM_CPU_AMX=0 cargo run --release --example linear_layer -- int8
//!     cargo run --release --example linear_layer -- f32     (or bf16)
//!     cargo run --release --example linear_layer -- f32 backward
//!
//! `backward` times the training backward instead (f32: the input gradient
//! `dy·W` and the weight gradient `dyᵀ·x`, twice the forward's products).

use quorum::backend::{Backend, Epilogue, LinearShape, Precision, Train};
use quorum::Cpu;

fn main() -> quorum::error::Result<()> {
    let precision = match std::env::args().nth(1).as_deref() {
        Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some("int8") => Precision::Int8,
        other => {
            eprintln!("usage: linear_layer f32|bf16|int8 (got {other:?})");
            std::process::exit(2);
        }
    };
    let backward = match std::env::args().nth(2).as_deref() {
        None => false,
        Some("backward") if precision == Precision::F32 => true,
        Some(other) => {
            eprintln!("the second argument can only be `backward`, after f32 (got {other:?})");
            std::process::exit(2);
        }
    };
    let be = Cpu::with_precision(precision)?;
    // (rows, n_in, n_out): MPD's qkv, fc1 and fc2 at batch 1, TLOB's
    // spatial projection, MPD's qkv at batch 32, the CNN-LSTM's input
    // projections at batch 32 (60 steps of 32 windows).
    for (rows, n_in, n_out) in
        [(61, 256, 768), (61, 256, 1024), (61, 1024, 256), (100, 2560, 128), (1952, 256, 768), (1920, 128, 1024)]
    {
        let x: Vec<f32> = (0..rows * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n_out * n_in).map(|i| (i as f32 * 0.11).cos()).collect();
        let (x, w, b) = (be.upload(&x)?, be.prepare_linear(&w, n_out, n_in)?, be.upload(&vec![0.1; n_out])?);
        let mut y = be.alloc(rows * n_out)?;
        let (dy, mut dx, mut dw) =
            (be.upload(&vec![0.01; rows * n_out])?, be.alloc(rows * n_in)?, be.alloc(n_out * n_in)?);
        let w_rows = be.upload(&vec![0.02; n_out * n_in])?;
        let shape = LinearShape { rows, n_in, n_out };
        let calls = if rows > 1000 { 100 } else { 2000 };
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls + calls / 10 {
            let t = std::time::Instant::now();
            if backward {
                be.linear_backward(&x, &w_rows, &dy, Some(&mut dx), &mut dw, None, shape, false)?;
            } else {
                be.linear(&x, &w, &b, &mut y, shape, Epilogue::None)?;
            }
            if i >= calls / 10 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let macs = (rows * n_in * n_out * if backward { 2 } else { 1 }) as f64;
        let pass = if backward { " backward" } else { "" };
        println!(
            "{precision:?}{pass} {rows}x{n_in}->{n_out}: median {median:.1} µs, {:.0} GMAC/s",
            macs / median / 1e3
        );
    }
    Ok(())
}
