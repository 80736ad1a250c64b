//! The seeded simulator and the Parquet store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum::market::binance::{combined_json, parse_combined, parse_depth_snapshot};
use quorum::market::simulator::{parse_duration, simulate_to_parquet, MarketSimulator, SimConfig, SimError};
use quorum::market::store::{
    list_days, read_snapshot_file, read_snapshots, read_trades, utc_day, write_snapshots, write_trades, StoreError,
};
use quorum::market::types::{Level, Snapshot, Trade};
use quorum::market::{OrderBook, StreamEvent};

/// A fresh scratch directory under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorum_market_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Two minutes that straddle midnight UTC (2026-01-02), so files split by day.
fn midnight_config(seed: u64) -> SimConfig {
    SimConfig { seed, start_ms: 1_767_312_000_000 - 60_000, ..SimConfig::default() }
}

#[test]
fn same_seed_gives_byte_identical_parquet_and_another_seed_differs() {
    let (a, b, c) = (scratch("det_a"), scratch("det_b"), scratch("det_c"));
    let d = Duration::from_secs(120);
    let mut calls = 0;
    let sa = simulate_to_parquet(&midnight_config(7), &a, d, |done, total| {
        calls += 1;
        assert!(done <= total && total == 1200);
    })
    .unwrap();
    assert!(calls >= 1);
    let sb = simulate_to_parquet(&midnight_config(7), &b, d, |_, _| {}).unwrap();
    let sc = simulate_to_parquet(&midnight_config(8), &c, d, |_, _| {}).unwrap();
    assert_eq!(sa.ticks, 1200);
    assert_eq!(sa.first_ts_ms, 1_767_312_000_000 - 60_000);
    assert_eq!(sa.last_ts_ms, 1_767_312_000_000 + 59_900);
    assert_eq!((sa.trades, sa.depth_events, sa.last_update_id), (sb.trades, sb.depth_events, sb.last_update_id));
    assert!(sa.trades > 100, "{sa:?}");
    // One snapshot file and one trade file per day.
    assert_eq!(sa.snapshot_files.len(), 2);
    assert_eq!(sa.trade_files.len(), 2);
    assert_eq!(list_days(&a, "SIMUSDT").unwrap(), vec!["2026-01-01", "2026-01-02"]);

    let (fa, fb, fc) = (files_under(&a), files_under(&b), files_under(&c));
    assert_eq!((fa.len(), fc.len()), (4, 4));
    let rel = |fs: &[PathBuf], root: &Path| -> Vec<PathBuf> {
        fs.iter().map(|p| p.strip_prefix(root).unwrap().to_path_buf()).collect()
    };
    assert_eq!(rel(&fa, &a), rel(&fb, &b));
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{x:?} differs");
    }
    let snap_a = std::fs::read(&sa.snapshot_files[0]).unwrap();
    let snap_c = std::fs::read(&sc.snapshot_files[0]).unwrap();
    assert_ne!(snap_a, snap_c, "a different seed gave the same snapshots");
    for dir in [a, b, c] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn parquet_round_trip_streams_days_in_order() {
    let dir = scratch("roundtrip");
    let cfg = midnight_config(3);
    let sum = simulate_to_parquet(&cfg, &dir, Duration::from_secs(90), |_, _| {}).unwrap();

    // Replay the same simulator in memory.
    let mut sim = MarketSimulator::new(cfg.clone()).unwrap();
    let mut snaps = vec![*sim.snapshot()];
    let mut trades = Vec::new();
    for _ in 1..sum.ticks {
        let t = sim.step().unwrap();
        snaps.push(*t.snapshot);
        trades.extend(t.trades.iter().map(|a| a.to_trade()));
    }
    let read: Vec<Snapshot> = read_snapshots(&dir, "SIMUSDT").unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(read.len(), snaps.len());
    assert!(read == snaps, "snapshots differ after the round trip");
    assert!(read.windows(2).all(|w| w[0].ts_exchange_ms < w[1].ts_exchange_ms));
    let read_t: Vec<Trade> = read_trades(&dir, "SIMUSDT").unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(read_t, trades);
    assert_eq!(read_t.len() as u64, sum.trades);

    // Metadata: symbol and level count.
    let (info, rows) = read_snapshot_file(&sum.snapshot_files[1]).unwrap();
    assert_eq!(info.symbol, "SIMUSDT");
    assert_eq!(info.num_levels, Some(20));
    assert_eq!(info.rows as usize, rows.len());
    assert!(rows.iter().all(|s| utc_day(s.ts_exchange_ms) == "2026-01-02"));
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[0].ts_exchange_ms, 1_767_312_000_000);

    // A reader for another symbol finds nothing; a misfiled file is refused.
    assert_eq!(read_snapshots(&dir, "OTHER").unwrap().count(), 0);
    let other = dir.join("OTHER").join("2026-01-01");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&sum.snapshot_files[0], other.join("snapshots_1_2.parquet")).unwrap();
    let mut r = read_snapshots(&dir, "OTHER").unwrap();
    assert!(matches!(r.next(), Some(Err(StoreError::Metadata { key: "symbol", .. }))));
    assert!(r.next().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hand_written_rows_round_trip_with_nan_levels_and_no_temp_files_left() {
    let dir = scratch("handrows");
    let mut s = Snapshot::empty(1_767_225_600_000, 5, u64::MAX - 1);
    s.bids[0] = Level::new(100.25, 0.5);
    s.asks[0] = Level::new(100.5, 1e-8);
    let mut s2 = s;
    s2.ts_exchange_ms += 100;
    s2.asks[1] = Level::new(100.75, 3.0);
    let files = write_snapshots(&dir, "BTCUSDT", &[s, s2]).unwrap();
    // A second save with the same timestamps gets its own name.
    let files2 = write_snapshots(&dir, "BTCUSDT", &[s, s2]).unwrap();
    assert_ne!(files, files2);
    let t =
        Trade { ts_exchange_ms: 1_767_225_600_050, trade_id: 9, price: 100.5, quantity: 0.25, is_buyer_maker: true };
    write_trades(&dir, "BTCUSDT", &[t]).unwrap();
    let back: Vec<Snapshot> = read_snapshots(&dir, "BTCUSDT").unwrap().collect::<Result<_, _>>().unwrap();
    assert!(back == vec![s, s2, s, s2]);
    assert!(back[0].bids[1].price.is_nan() && back[0].asks[1].quantity.is_nan());
    let tb: Vec<Trade> = read_trades(&dir, "BTCUSDT").unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(tb, vec![t]);
    let leftovers: Vec<_> = files_under(&dir).into_iter().filter(|p| p.to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(matches!(write_snapshots(&dir, "../evil", &[s]), Err(StoreError::BadSymbol(_))));
    // A leftover temporary file is not data; a corrupt published file is an
    // error, not a panic, and ends the stream.
    let day = dir.join("BTCUSDT").join("2026-01-01");
    std::fs::write(day.join(".snapshots_0000000000001.parquet.tmp"), b"PAR1 half").unwrap();
    assert_eq!(read_snapshots(&dir, "BTCUSDT").unwrap().count(), 4);
    std::fs::write(day.join("snapshots_0000000000001_0000000000002.parquet"), b"PAR1 junk PAR1").unwrap();
    let mut r = read_snapshots(&dir, "BTCUSDT").unwrap();
    assert!(matches!(r.next(), Some(Err(StoreError::Parquet { .. }))));
    assert!(r.next().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_tick_is_valid_and_the_event_stream_rebuilds_the_book() {
    // A collector-side book fed only the JSON the loopback exchange would send.
    let mut sim = MarketSimulator::new(SimConfig { seed: 11, ..SimConfig::default() }).unwrap();
    let mut client = OrderBook::new("simusdt");
    let rest = parse_depth_snapshot(&sim.rest_snapshot(1000).to_json()).unwrap();
    client.apply_snapshot(&rest).unwrap();
    let mut last_u = rest.last_update_id;
    let mut agg_ids = 0;
    for _ in 0..5_000 {
        let tick = sim.step().unwrap();
        let snap = *tick.snapshot;
        snap.validate().unwrap();
        assert!(snap.bid_levels() == 20 && snap.ask_levels() == 20);
        if let Some(ev) = tick.depth_update {
            assert_eq!(ev.first_update_id, last_u + 1);
            last_u = ev.final_update_id;
            let msg = parse_combined(&combined_json("simusdt@depth@100ms", &ev.to_json())).unwrap();
            let StreamEvent::Depth(d) = msg.event else {
                panic!("not a depth event");
            };
            client.apply_diff(&d).unwrap();
        }
        for t in tick.trades {
            assert_eq!(t.agg_trade_id, agg_ids + 1);
            agg_ids = t.agg_trade_id;
            assert!(t.trade_time_ms <= snap.ts_exchange_ms && t.trade_time_ms > snap.ts_exchange_ms - 100);
        }
        let mine = client.snapshot(snap.ts_exchange_ms, snap.ts_local_ns).unwrap();
        assert!(mine == snap, "client book diverged at update {}", snap.last_update_id);
    }
    assert_eq!(client.stats().gaps, 0);
    assert!(client.bid_depth() >= 25 && client.ask_depth() >= 25);
}

fn corr(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// corr(top-5 volume imbalance at t, mid[t + k] − mid[t]) over `n` ticks.
fn imbalance_signal(signal_strength: f64, seed: u64, n: usize, k: usize) -> f64 {
    let mut sim = MarketSimulator::new(SimConfig { seed, signal_strength, ..SimConfig::default() }).unwrap();
    let mut imb = Vec::with_capacity(n);
    let mut mid = Vec::with_capacity(n);
    for _ in 0..n {
        let s = *sim.step().unwrap().snapshot;
        let b: f64 = s.bids[..5].iter().map(|l| l.quantity).sum();
        let a: f64 = s.asks[..5].iter().map(|l| l.quantity).sum();
        imb.push((b - a) / (b + a));
        mid.push(s.mid().unwrap());
    }
    let fut: Vec<f64> = (0..n - k).map(|t| mid[t + k] - mid[t]).collect();
    corr(&imb[..n - k], &fut)
}

#[test]
fn order_flow_imbalance_predicts_only_when_the_signal_is_on() {
    // Strong signal: a clearly positive correlation at 10 and 30 ticks.
    for k in [10, 30] {
        let c = imbalance_signal(1.0, 5, 60_000, k);
        eprintln!("signal 1, k={k}: corr {c:.4}");
        assert!(c > 0.2, "signal 1, k={k}: corr {c:.4}");
    }
    let half = imbalance_signal(0.5, 5, 60_000, 30);
    let full = imbalance_signal(1.0, 5, 60_000, 30);
    eprintln!("k=30: signal 0.5 -> {half:.4}, 1 -> {full:.4}");
    assert!(half > 0.1 && half < full, "0.5 → {half:.4}, 1 → {full:.4}");
    // No signal: nothing to learn. With 200k ticks the correlation's standard
    // error is about 0.02 (autocorrelated windows), so |c| < 0.06 is ~3 sigma.
    for seed in [5, 6] {
        let c = imbalance_signal(0.0, seed, 200_000, 30);
        eprintln!("signal 0, seed {seed}, k=30: corr {c:.4}");
        assert!(c.abs() < 0.06, "signal 0, seed {seed}: corr {c:.4}");
    }
}

#[test]
fn volatility_regimes_change_the_rate_of_price_moves() {
    let mut sim = MarketSimulator::new(SimConfig { seed: 21, signal_strength: 0.0, ..SimConfig::default() }).unwrap();
    // Share of ticks with a mid change in each 5-minute window over 6 hours.
    let window = 3_000;
    let mut rates = Vec::new();
    let mut regimes = std::collections::BTreeSet::new();
    let mut prev = sim.snapshot().mid().unwrap();
    for _ in 0..72 {
        let mut moves = 0;
        for _ in 0..window {
            let m = sim.step().unwrap().snapshot.mid().unwrap();
            moves += usize::from(m != prev);
            prev = m;
            regimes.insert(sim.regime().name);
        }
        rates.push(moves as f64 / window as f64);
    }
    let lo = rates.iter().cloned().fold(f64::MAX, f64::min);
    let hi = rates.iter().cloned().fold(0.0, f64::max);
    eprintln!("move rate per 5-minute window: {lo:.3}..{hi:.3}");
    assert_eq!(regimes.len(), 3, "{regimes:?}");
    assert!(hi > 3.0 * lo, "move rates {lo:.3}..{hi:.3} show no regimes");
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: SimConfig, field: &str| match MarketSimulator::new(c) {
        Err(SimError::Config { field: f, .. }) => assert_eq!(f, field),
        Err(e) => panic!("expected a config error for {field}, got {e}"),
        Ok(_) => panic!("expected a config error for {field}"),
    };
    let d = SimConfig::default;
    bad(SimConfig { signal_strength: -0.1, ..d() }, "signal_strength");
    bad(SimConfig { signal_strength: f64::NAN, ..d() }, "signal_strength");
    bad(SimConfig { depth_effect: 2.5, ..d() }, "depth_effect");
    bad(SimConfig { slow_effect: -1.0, ..d() }, "slow_effect");
    bad(SimConfig { feature_effect: f64::INFINITY, ..d() }, "feature_effect");
    bad(SimConfig { depth: 19, ..d() }, "depth");
    bad(SimConfig { interval_ms: 0, ..d() }, "interval_ms");
    bad(SimConfig { symbol: "a/b".into(), ..d() }, "symbol");
}

#[test]
fn cli_durations_parse() {
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
    // A bare number is seconds, as `serve --duration 60` always took.
    assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
    for bad in ["", "h", "-1h", "2x", "1.5", "99999999999999999999d", "99999999999999999999"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}
