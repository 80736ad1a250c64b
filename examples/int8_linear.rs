//! One int8 linear layer on the CPU at the models' batch-1 shapes (and one
//! batch-32 shape): the median time of 2,000 calls and the multiply-adds per
//! second. Its products run on AMX where the CPU has it; compare with VNNI
//! in a second run:
//!
//!     cargo run --release --example int8_linear
//!     QUORUM_CPU_AMX=0 cargo run --release --example int8_linear

use quorum::backend::{Backend, Epilogue, LinearShape, Precision};
use quorum::Cpu;

fn main() -> quorum::error::Result<()> {
    let be = Cpu::with_precision(Precision::Int8)?;
    // (rows, n_in, n_out): MPD's qkv, fc1 and fc2 at batch 1, TLOB's
    // spatial projection, MPD's qkv at batch 32.
    for (rows, n_in, n_out) in [(61, 256, 768), (61, 256, 1024), (61, 1024, 256), (100, 2560, 128), (1952, 256, 768)] {
        let x: Vec<f32> = (0..rows * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n_out * n_in).map(|i| (i as f32 * 0.11).cos()).collect();
        let (x, w, b) = (be.upload(&x)?, be.prepare_linear(&w, n_out, n_in)?, be.upload(&vec![0.1; n_out])?);
        let mut y = be.alloc(rows * n_out)?;
        let calls = if rows > 1000 { 100 } else { 2000 };
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls + calls / 10 {
            let t = std::time::Instant::now();
            be.linear(&x, &w, &b, &mut y, LinearShape { rows, n_in, n_out }, Epilogue::None)?;
            if i >= calls / 10 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let macs = (rows * n_in * n_out) as f64;
        println!("{rows}x{n_in}->{n_out}: median {median:.1} µs, {:.0} GMAC/s", macs / median / 1e3);
    }
    Ok(())
}
