//! The oracle's accuracy on each planted effect of the synthetic market
//! (docs/data.md, "Synthetic market"): labels at horizon 30 with auto α,
//! as docs/training.md defines them.
//!
//! `cargo run --release --example oracle_accuracy -- [MINUTES] [SEED]`
//! (default 60 minutes, seed 42).

use quorum::market::simulator::SimConfig;
use quorum::train::oracle::oracle_score;

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: usize = args.next().map(|a| a.parse().expect("MINUTES")).unwrap_or(60);
    let seed: u64 = args.next().map(|a| a.parse().expect("SEED")).unwrap_or(42);
    let off = SimConfig { seed, signal_strength: 0.0, ..SimConfig::default() };
    let cases = [
        ("all off", off.clone()),
        ("flow (--signal-strength 1)", SimConfig { signal_strength: 1.0, ..off.clone() }),
        ("depth (--depth-effect 1)", SimConfig { depth_effect: 1.0, ..off.clone() }),
        ("slow (--slow-effect 1)", SimConfig { slow_effect: 1.0, ..off.clone() }),
        ("features (--feature-effect 1)", SimConfig { feature_effect: 1.0, ..off.clone() }),
        (
            "regimes (all four at 1, --regime-switching)",
            SimConfig {
                signal_strength: 1.0,
                depth_effect: 1.0,
                slow_effect: 1.0,
                feature_effect: 1.0,
                regime_switching: true,
                ..off.clone()
            },
        ),
    ];
    let ticks = minutes * 600;
    println!("{minutes} min (seed {seed}), horizon 30, auto α; shares DOWN/NEUTRAL/UP");
    for (name, cfg) in cases {
        let s = oracle_score(&cfg, ticks, 30).expect("simulate");
        println!(
            "{name:<45} oracle {:.3}  majority {:.3} ({:+.3})  regime-only {:.3} ({:+.3})  shares {:.2}/{:.2}/{:.2}",
            s.accuracy,
            s.majority,
            s.edge(),
            s.regime_only,
            s.drift_edge(),
            s.shares[0],
            s.shares[1],
            s.shares[2]
        );
    }
}
