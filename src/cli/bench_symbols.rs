//! `quorum bench --symbols 1,8,32,64`: live mode's tick for many symbols at
//! once, without the network. Each symbol is its own simulated market; a tick
//! samples every market, advances each symbol's features and windows, then
//! decides all of them together (`live::decide_together`: one forward per
//! model, batch = symbols) and publishes each decision. The time of a tick,
//! from its first sample to its last published decision, is the
//! tick-to-decision of its slowest symbol; its p50 and p99 over the ticks
//! say how many symbols fit a 100 ms tick. The table also splits the tick:
//! the symbols' features and windows, and each model's one forward.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};

use super::models::percentile;
use quorum::backend::gpu::Precision;
use quorum::backend::select::Device;
use quorum::ensemble::{EnsembleConfig, ModelType};
use quorum::market::{MarketSimulator, SimConfig, Snapshot, Trade};
use quorum::model::LobNormalization;
use quorum::server::engine::Engine;
use quorum::server::live::{decide_together, LiveHub, LiveState, MAX_LIVE_SYMBOLS};

/// The tick live mode samples at (`serve --sample-ms`' default).
const TICK_MS: f64 = 100.0;

/// Ticks a fresh market needs before every window is full: 200 one-second
/// candles, then 60 feature vectors, with margin.
const MAX_WARMUP_TICKS: usize = 400;

pub fn bench_symbols(
    counts: &[usize],
    ticks: usize,
    backend: Device,
    precision: Precision,
    lob_normalization: LobNormalization,
) -> Result<()> {
    if ticks == 0 {
        bail!("--iters (ticks per symbol count) must be at least 1");
    }
    if let Some(&n) = counts.iter().find(|&&n| n == 0 || n > MAX_LIVE_SYMBOLS) {
        bail!("--symbols: {n} is not 1 to {MAX_LIVE_SYMBOLS}");
    }
    let engine = Arc::new(Engine::on(backend.open()?, precision, EnsembleConfig::default())?);
    engine.load_builtin_weights_as(lob_normalization)?;
    println!(
        "quorum {} live tick for many symbols: backend {}, precision {}, {} threads, the three models at their \
         default sizes (generated weights), TLOB's lob normalization {lob_normalization:?}, {ticks} ticks each",
        env!("CARGO_PKG_VERSION"),
        engine.backend_name(),
        precision.name(),
        rayon::current_num_threads()
    );
    println!(
        "| symbols | tick p50 ms | tick p99 ms | per symbol p50 µs | p99 under {TICK_MS:.0} ms | features p50 ms | \
         mpd p50 ms | tlob p50 ms | cnn_lstm p50 ms |"
    );
    println!(
        "|--------:|------------:|------------:|------------------:|:---------------:|----------------:|\
         -----------:|------------:|----------------:|"
    );
    let mut fits = None;
    for &n in counts {
        let t = time_ticks(&engine, n, ticks)?;
        let (p50, p99) = (percentile(&t.tick, 0.5), percentile(&t.tick, 0.99));
        let under = p99 < TICK_MS;
        if under {
            fits = fits.max(Some(n));
        }
        let model = |m: ModelType| t.models.get(&m).map_or(f64::NAN, |v| percentile(v, 0.5));
        println!(
            "| {n:7} | {p50:11.2} | {p99:11.2} | {:17.0} | {:^15} | {:15.2} | {:10.2} | {:11.2} | {:15.2} |",
            p50 * 1e3 / n as f64,
            if under { "yes" } else { "no" },
            percentile(&t.advance, 0.5),
            model(ModelType::MpdTransformer),
            model(ModelType::Tlob),
            model(ModelType::CnnLstm),
        );
    }
    match fits {
        Some(n) => println!("largest symbol count measured with a tick p99 under {TICK_MS:.0} ms: {n}"),
        None => println!("no symbol count measured had a tick p99 under {TICK_MS:.0} ms"),
    }
    Ok(())
}

/// One simulated market and its live pipeline.
struct Market {
    sim: MarketSimulator,
    state: LiveState,
    trades: Vec<Trade>,
    snap: Snapshot,
}

impl Market {
    /// The exchange's side of a tick (outside the timing): the next trades and book.
    fn next_sample(&mut self) -> Result<()> {
        let view = self.sim.step()?;
        self.trades.clear();
        self.trades.extend(view.trades.iter().map(|t| t.to_trade()));
        self.snap = *view.snapshot;
        Ok(())
    }
}

/// Sorted times, in ms, of the ticks and of their parts.
struct TickTimes {
    /// From the first sample's arrival to the last decision's publication.
    tick: Vec<f64>,
    /// Every symbol's features and windows (`LiveState::advance`).
    advance: Vec<f64>,
    /// Each model's one forward over all the symbols (with its adapter).
    models: BTreeMap<ModelType, Vec<f64>>,
}

/// `ticks` ticks of `n` warm symbols, timed.
fn time_ticks(engine: &Arc<Engine>, n: usize, ticks: usize) -> Result<TickTimes> {
    let mut markets: Vec<Market> = (0..n as u64)
        .map(|k| {
            let symbol = format!("SIM{}USDT", k + 1);
            // One tick per second of exchange time: the 200-candle warm-up is 200 ticks.
            let cfg = SimConfig { interval_ms: 1000, seed: 1 + k, symbol: symbol.clone(), ..SimConfig::default() };
            let sim = MarketSimulator::new(cfg)?;
            let state = LiveState::new(engine.clone(), LiveHub::new(&symbol, 16), None);
            Ok(Market { sim, state, trades: Vec::new(), snap: Snapshot::empty(0, 0, 0) })
        })
        .collect::<Result<_>>()?;
    let mut warm = false;
    for _ in 0..MAX_WARMUP_TICKS {
        warm = true;
        for m in &mut markets {
            m.next_sample()?;
            warm &= m.state.advance(&m.trades, &m.snap).warm;
        }
        if warm {
            break;
        }
    }
    if !warm {
        bail!("{n} simulated symbols were not warm after {MAX_WARMUP_TICKS} ticks");
    }
    let mut times = TickTimes { tick: Vec::new(), advance: Vec::new(), models: BTreeMap::new() };
    for _ in 0..ticks {
        for m in &mut markets {
            m.next_sample()?;
        }
        let t0 = Instant::now();
        let mut due = Vec::with_capacity(n);
        for m in &mut markets {
            if m.state.advance(&m.trades, &m.snap).warm {
                due.push((&mut m.state, &m.snap, t0));
            }
        }
        times.advance.push(t0.elapsed().as_secs_f64() * 1e3);
        let published = decide_together(&mut due);
        times.tick.push(t0.elapsed().as_secs_f64() * 1e3);
        let decided: Vec<_> = published.iter().flatten().collect();
        if decided.len() != n {
            bail!("{n} symbols: {} decided on a warm tick", decided.len());
        }
        // One forward per model for the whole tick: every decision carries its time.
        for (m, us) in &decided[0].1.timings.models_us {
            times.models.entry(*m).or_default().push(us / 1e3);
        }
    }
    for v in std::iter::once(&mut times.tick).chain([&mut times.advance]).chain(times.models.values_mut()) {
        v.sort_by(f64::total_cmp);
    }
    Ok(times)
}
