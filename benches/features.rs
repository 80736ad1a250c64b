//! The feature pipeline: one streaming tick (all 112 features, amortized
//! over the ticks that complete a candle and those that do not), the ticks
//! that complete a candle alone (the worst case: candle features and all
//! 25 indicators), and the batch builder over 10 minutes of ticks.
//!
//! Run: `cargo bench --bench features`. The day-scale batch figure (864,000
//! snapshots) is measured with `quorum features` on simulated data instead
//! (see examples/simulate_day.rs).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::features::{build_features, FeatureEngine, Update};
use quorum::market::{MarketSimulator, SimConfig, Snapshot, Trade};

/// `n` simulated ticks (100 ms) with their trades.
fn ticks(n: usize) -> Vec<(Snapshot, Vec<Trade>)> {
    let mut sim = MarketSimulator::new(SimConfig::default()).expect("simulator");
    let mut out = Vec::with_capacity(n);
    out.push((*sim.snapshot(), Vec::new()));
    while out.len() < n {
        let t = sim.step().expect("step");
        out.push((*t.snapshot, t.trades.iter().map(|a| a.to_trade()).collect()));
    }
    out
}

/// Replays `data` forever, shifting timestamps by the span on each lap.
struct Replay {
    data: Vec<(Snapshot, Vec<Trade>)>,
    i: usize,
    shift: i64,
    span: i64,
}

impl Replay {
    fn new(data: Vec<(Snapshot, Vec<Trade>)>) -> Replay {
        let span = data[data.len() - 1].0.ts_exchange_ms - data[0].0.ts_exchange_ms + 100;
        Replay { data, i: 0, shift: 0, span }
    }

    /// Feeds the next tick's trades and returns its snapshot (not yet fed).
    fn next(&mut self, e: &mut FeatureEngine) -> Snapshot {
        if self.i == self.data.len() {
            self.i = 0;
            self.shift += self.span;
        }
        let (s, trades) = &self.data[self.i];
        self.i += 1;
        for t in trades {
            let mut t = *t;
            t.ts_exchange_ms += self.shift;
            let _ = e.push_trade(&t);
        }
        let mut s = *s;
        s.ts_exchange_ms += self.shift;
        s
    }
}

fn warm_engine(r: &mut Replay) -> FeatureEngine {
    let mut e = FeatureEngine::new();
    for _ in 0..2_500 {
        let s = r.next(&mut e);
        e.push_snapshot(&s);
    }
    let s = r.next(&mut e);
    assert!(matches!(e.push_snapshot(&s), Update::Ready(_)), "engine warm");
    e
}

fn bench_stream(c: &mut Criterion) {
    let mut r = Replay::new(ticks(36_000));
    let mut e = warm_engine(&mut r);
    c.bench_function("features/stream_tick (amortized, all 112)", |b| {
        b.iter(|| {
            let s = r.next(&mut e);
            black_box(matches!(e.push_snapshot(black_box(&s)), Update::Ready(_)))
        })
    });
    c.bench_function("features/stream_tick_completing_a_candle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Feed ticks until the next one starts a new second; time that one.
                loop {
                    let s = r.next(&mut e);
                    if s.ts_exchange_ms % 1000 == 0 {
                        let t = Instant::now();
                        black_box(e.push_snapshot(black_box(&s)));
                        total += t.elapsed();
                        break;
                    }
                    e.push_snapshot(&s);
                }
            }
            total
        })
    });
}

fn bench_batch(c: &mut Criterion) {
    let data = ticks(6_000);
    let snaps: Vec<Snapshot> = data.iter().map(|d| d.0).collect();
    let trades: Vec<Trade> = data.iter().flat_map(|d| d.1.iter().copied()).collect();
    let mut g = c.benchmark_group("features");
    g.sample_size(10);
    g.bench_function("batch_10_minutes (6,000 ticks)", |b| {
        b.iter(|| build_features(snaps.iter().copied(), trades.iter().copied()).expect("batch"))
    });
    g.finish();
}

criterion_group!(benches, bench_stream, bench_batch);
criterion_main!(benches);
