//! Writes the simulated market as a recording in hftbacktest's format (a
//! REST snapshot line, then the diff and aggTrade frames with receive times),
//! as long as asked, for measuring `quorum import` on long inputs: its time
//! and its memory against the recording's length.
//!
//! ```text
//! cargo run --release --example simulate_recording -- /tmp/sim_1h.gz 1h
//! /usr/bin/time -f "%M kB, %e s" target/release/quorum import --format hftbacktest \
//!     --symbol SIMUSDT --out /tmp/imported /tmp/sim_1h.gz
//! ```

use std::io::Write;
use std::path::PathBuf;

use quorum::market::binance::combined_json;
use quorum::market::{parse_duration, MarketSimulator, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "sim_recording.gz".into()));
    let duration = parse_duration(&args.next().unwrap_or_else(|| "1h".into()))?;
    let cfg = SimConfig::default();
    let ticks = (duration.as_millis() / 100) as u64;
    let mut sim = MarketSimulator::new(cfg.clone())?;
    let sym = cfg.symbol.to_ascii_lowercase();
    let file = std::fs::File::create(&out)?;
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let first_ns = sim.snapshot().ts_local_ns;
    writeln!(gz, "{first_ns} {}", sim.rest_snapshot(1000).to_json())?;
    for _ in 0..ticks {
        let tick = sim.step()?;
        let recv_ns = tick.snapshot.ts_local_ns;
        if let Some(d) = tick.depth_update {
            writeln!(gz, "{recv_ns} {}", combined_json(&format!("{sym}@depth@100ms"), &d.to_json()))?;
        }
        for t in tick.trades {
            writeln!(gz, "{recv_ns} {}", combined_json(&format!("{sym}@aggTrade"), &t.to_json()))?;
        }
    }
    gz.finish()?.flush()?;
    println!("{}: {ticks} ticks of {} → {}", cfg.symbol, duration.as_secs(), out.display());
    Ok(())
}
