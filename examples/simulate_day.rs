//! Writes a simulated day of 100 ms snapshots and trades (864,000 ticks)
//! into a raw store, for timing `quorum features` on a day:
//!
//! ```text
//! cargo run --release --example simulate_day -- /tmp/raw_lob
//! time target/release/quorum features --raw /tmp/raw_lob --out /tmp/features
//! ```

use std::path::PathBuf;
use std::time::Instant;

use quorum::market::{parse_duration, simulate_to_parquet, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "data/raw_lob".into()));
    let duration = parse_duration(&args.next().unwrap_or_else(|| "1d".into()))?;
    let cfg = SimConfig::default();
    let t0 = Instant::now();
    let s = simulate_to_parquet(&cfg, &out, duration, |done, total| {
        if done % 100_000 == 0 || done == total {
            println!("{done}/{total} ticks");
        }
    })?;
    println!(
        "{}: {} snapshots, {} trades in {:.1} s → {}",
        cfg.symbol,
        s.ticks,
        s.trades,
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
