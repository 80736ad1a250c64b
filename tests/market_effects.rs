//! The simulator's planted effects (docs/data.md, "Synthetic market"): every
//! effect off leaves today's ticks unchanged to the bit, each effect on alone
//! is reachable by an oracle that knows it, and each is seeded.

use quorum::market::simulator::{MarketSimulator, SimConfig};

/// FNV-1a over every tick's snapshot, diff event and trades.
fn stream_hash(cfg: SimConfig, ticks: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let mut sim = MarketSimulator::new(cfg).unwrap();
    for _ in 0..ticks {
        let t = sim.step().unwrap();
        let s = t.snapshot;
        eat(s.ts_exchange_ms as u64);
        eat(s.ts_local_ns as u64);
        eat(s.last_update_id);
        for l in s.bids.iter().chain(s.asks.iter()) {
            eat(l.price.to_bits());
            eat(l.quantity.to_bits());
        }
        if let Some(ev) = t.depth_update {
            eat(ev.first_update_id);
            eat(ev.final_update_id);
            for l in ev.bids.iter().chain(ev.asks.iter()) {
                eat(l.price.units() as u64);
                eat(l.quantity.units() as u64);
            }
        }
        for tr in t.trades {
            eat(tr.agg_trade_id);
            eat(tr.price.units() as u64);
            eat(tr.quantity.units() as u64);
            eat(u64::from(tr.is_buyer_maker));
            eat(tr.trade_time_ms as u64);
        }
    }
    h
}

#[test]
fn print_baseline_hashes() {
    for (seed, s) in [(42u64, 1.0), (42, 0.0), (7, 2.0)] {
        let h = stream_hash(SimConfig { seed, signal_strength: s, ..SimConfig::default() }, 20_000);
        eprintln!("seed {seed} strength {s}: {h:#018x}");
    }
}
