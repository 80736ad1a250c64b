//! Market-data benches: diff-event apply and snapshot extraction on a
//! 1000-level book, JSON parsing, the simulator's throughput, and
//! `quorum import` of real recordings.
//!
//! `cargo bench --bench market -- --warm-up-time 1 --measurement-time 3`
//!
//! The import bench reads the whole BTCUSDT recording (11 minutes, two
//! files) from `../shared/data/binance/` or `$QUORUM_BINANCE_DATA`; without
//! it, the one-minute excerpt in tests/fixtures/binance/. It prints the
//! recording's length, so a median reads as seconds per minute of data.

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use quorum::market::binance::parse_depth_update;
use quorum::market::decimal::Fixed;
use quorum::market::simulator::{simulate_to_parquet, MarketSimulator, SimConfig};
use quorum::market::{
    import_files, DepthSnapshot, DepthUpdate, ImportOptions, OrderBook, PriceLevel, RecordFormat, Snapshot,
};

const EVENTS: usize = 1_000;

/// A synced book with ~1000 levels a side and the next `EVENTS` simulator events.
fn fixture() -> (OrderBook, Vec<DepthUpdate>) {
    let mut sim = MarketSimulator::new(SimConfig::default()).unwrap();
    let mut rest: DepthSnapshot = sim.rest_snapshot(1000);
    // Deep levels the simulator never touches (it trades around 100.00).
    for i in 0..975i64 {
        let q = Fixed::from_units(100_000_000 + i);
        rest.bids.push(PriceLevel::new(Fixed::from_units((5_000 - i) * 1_000_000), q));
        rest.asks.push(PriceLevel::new(Fixed::from_units((20_000 + i) * 1_000_000), q));
    }
    let mut book = OrderBook::new("SIMUSDT");
    book.apply_snapshot(&rest).unwrap();
    let mut events = Vec::with_capacity(EVENTS);
    while events.len() < EVENTS {
        if let Some(ev) = sim.step().unwrap().depth_update {
            events.push(ev.clone());
        }
    }
    (book, events)
}

fn book_benches(c: &mut Criterion) {
    let (book, events) = fixture();
    let levels: usize = events.iter().map(|e| e.bids.len() + e.asks.len()).sum();
    eprintln!(
        "fixture: {} bid / {} ask levels, {:.1} levels per event",
        book.bid_depth(),
        book.ask_depth(),
        levels as f64 / EVENTS as f64
    );
    let mut g = c.benchmark_group("book");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("apply_diff_x1000", |b| {
        b.iter_batched_ref(
            || book.clone(),
            |bk| {
                for ev in &events {
                    black_box(bk.apply_diff(ev).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("apply_diff_and_snapshot_x1000", |b| {
        b.iter_batched_ref(
            || (book.clone(), Snapshot::empty(0, 0, 0)),
            |(bk, snap)| {
                for ev in &events {
                    bk.apply_diff(ev).unwrap();
                    bk.snapshot_into(snap).unwrap();
                    black_box(&snap);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut bk = book.clone();
    let mut snap = Snapshot::empty(0, 0, 0);
    c.bench_function("book/snapshot_top20", |b| {
        b.iter(|| {
            bk.snapshot_into(&mut snap).unwrap();
            black_box(&snap);
        })
    });

    let json = events[0].to_json();
    c.bench_function("binance/parse_depth_update", |b| {
        b.iter(|| black_box(parse_depth_update(black_box(&json)).unwrap()))
    });
}

fn sim_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulator");
    g.throughput(Throughput::Elements(1));
    let mut sim = MarketSimulator::new(SimConfig::default()).unwrap();
    g.bench_function("step", |b| {
        b.iter(|| {
            black_box(sim.step().unwrap().snapshot.last_update_id);
        })
    });
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    let dir = std::env::temp_dir().join(format!("quorum_market_bench_{}", std::process::id()));
    g.bench_function("to_parquet_10k_ticks", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(&dir);
            let cfg = SimConfig::default();
            black_box(simulate_to_parquet(&cfg, &dir, Duration::from_secs(1_000), |_, _| {}).unwrap());
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    g.finish();
}

/// The BTCUSDT recording: the full files if this machine has them, else the excerpt.
fn btcusdt_recording() -> Vec<std::path::PathBuf> {
    if let Some(shared) = fixtures::shared_binance_data() {
        let full = [shared.join("spot_btcusdt_20240808.gz"), shared.join("spot_btcusdt_20240809.gz")];
        if full.iter().all(|f| f.is_file()) {
            return full.to_vec();
        }
    }
    let excerpts = fixtures::fixtures_dir().join("binance");
    vec![excerpts.join("btcusdt_excerpt_a.gz"), excerpts.join("btcusdt_excerpt_b.gz")]
}

fn import_benches(c: &mut Criterion) {
    let files = btcusdt_recording();
    let out = std::env::temp_dir().join(format!("quorum-bench-import-{}", std::process::id()));
    let opts = ImportOptions::new(RecordFormat::Hftbacktest, "BTCUSDT", &out);
    let probe = import_files(&opts, &files, &mut |_| {}).expect("the recording imports");
    let seconds = probe.segments.iter().map(|s| s.last_exchange_ms - s.first_exchange_ms).sum::<i64>() as f64 / 1e3;
    eprintln!(
        "import: {} files, {:.1} minutes of data, {} snapshots, {} trades",
        files.len(),
        seconds / 60.0,
        probe.snapshots_written,
        probe.trades_written
    );
    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    g.bench_function("btcusdt_hftbacktest", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(&out);
            black_box(import_files(&opts, &files, &mut |_| {}).unwrap())
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&out);
}

criterion_group!(benches, book_benches, sim_benches, import_benches);
criterion_main!(benches);
