//! One LSTM layer's recurrence on the CPU at the CNN-LSTM's shape (hidden
//! 256, 60 steps), in f32: the median time of the inference recurrence
//! (`lstm`), the training one (`lstm_train`, which also keeps the gates and
//! cell states) and backpropagation through time with `dW_hh`
//! (`lstm_backward`), with the recurrent multiply-adds per second.
//!
//!     cargo run --release --example lstm_layer            (batch 32)
//!     cargo run --release --example lstm_layer -- 1       (batch 1)

use quorum::backend::{Backend, LstmShape, Train};
use quorum::Cpu;

fn main() -> quorum::error::Result<()> {
    let batch: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 32,
        Some(Ok(b)) if b > 0 => b,
        Some(_) => {
            eprintln!("usage: lstm_layer [batch, a whole number from 1]");
            std::process::exit(2);
        }
    };
    let be = Cpu::new();
    let (steps, hidden) = (60, 256);
    let s = LstmShape { batch, steps, hidden };
    let (g4, rows) = (4 * hidden, batch * steps);
    let w_host: Vec<f32> = (0..g4 * hidden).map(|i| 0.05 * (i as f32 * 0.11).cos()).collect();
    let gx = be.upload(&(0..rows * g4).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>())?;
    let (w_prepared, w_hh) = (be.prepare_recurrent(&w_host, hidden)?, be.upload(&w_host)?);
    let (mut h_seq, mut c_seq, mut gates) = (be.alloc(rows * hidden)?, be.alloc(rows * hidden)?, be.alloc(rows * g4)?);
    let dh_seq = be.upload(&vec![0.01; rows * hidden])?;
    let (mut dgx, mut dw_hh) = (be.alloc(rows * g4)?, be.alloc(g4 * hidden)?);
    // The recurrent product per pass: steps − 1 of (batch × hidden × 4·hidden);
    // the backward does it twice (dh through W_hh, and dW_hh).
    let macs = ((steps - 1) * batch * hidden * g4) as f64;
    let calls = if batch >= 8 { 40 } else { 400 };
    for (pass, factor) in [("lstm", 1.0), ("lstm_train", 1.0), ("lstm_backward", 2.0)] {
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls + calls / 10 {
            let t = std::time::Instant::now();
            match pass {
                "lstm" => be.lstm(&gx, &w_prepared, &mut h_seq, s)?,
                "lstm_train" => be.lstm_train(&gx, &w_prepared, &mut h_seq, &mut c_seq, &mut gates, s)?,
                _ => be.lstm_backward(&w_hh, &h_seq, &c_seq, &gates, &dh_seq, &mut dgx, &mut dw_hh, s)?,
            }
            if i >= calls / 10 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{pass:<14} batch {batch} x {steps} steps, hidden {hidden}: median {median:8.1} µs, {:.0} GMAC/s",
            factor * macs / median / 1e3
        );
    }
    Ok(())
}
