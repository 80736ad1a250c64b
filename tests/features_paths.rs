//! The two feature paths held together: streaming (`FeatureEngine`) and
//! batch (`build_features`) on random synthetic histories with gaps,
//! repeated timestamps and bad input; no lookahead; the warm-up; bad-input
//! counting; indicator features against the talib batch functions over an
//! independently built candle series; the on-disk table.

use std::time::Duration;

use proptest::prelude::*;
use quorum::features::talib as ta;
use quorum::features::{
    build_features, merge_events, read_feature_table, write_feature_table, Event, FeatureEngine, FeatureTable,
    InputStats, Update, FEATURE_NAMES, NUM_FEATURES, WARMUP_CANDLES,
};
use quorum::market::{read_snapshots, read_trades, simulate_to_parquet, Level, SimConfig, Snapshot, Trade};

// ---- synthetic histories -------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

#[derive(Clone, Copy, Debug)]
struct Opts {
    snapshots: usize,
    p_repeat: f64,
    p_gap: f64,
    p_flat: f64,
    p_bad: f64,
}

fn book(ts: i64, bid_ticks: i64, spread: i64, rng: &mut Rng, flat_qty: bool, levels: usize) -> Snapshot {
    let mut s = Snapshot::empty(ts, ts * 1_000_000, ts as u64);
    for j in 0..levels {
        let q = |rng: &mut Rng| if flat_qty { 5.0 } else { (rng.int(0, 400) as f64) / 8.0 };
        s.bids[j] = Level::new((bid_ticks - j as i64) as f64 * 0.01, q(rng));
        s.asks[j] = Level::new((bid_ticks + spread + j as i64) as f64 * 0.01, q(rng));
    }
    s
}

/// A random history: snapshots on a 0.01 grid around 100, 10–20 levels,
/// steps of 50–400 ms, repeated timestamps, multi-second gaps, flat
/// stretches (no move, no trade: h = l, v = 0), and, with `p_bad`, bad
/// input (crossed, NaN price, out-of-order snapshots and trades).
fn synth(seed: u64, o: Opts) -> (Vec<Snapshot>, Vec<Trade>) {
    let mut rng = Rng(seed);
    let mut ts = 1_767_225_600_000 + rng.int(0, 999);
    let mut bid = 10_000i64;
    let mut spread = 1;
    let mut flat = false;
    let mut snaps = Vec::with_capacity(o.snapshots);
    let mut trades = Vec::new();
    let mut tid = 0u64;
    for _ in 0..o.snapshots {
        let r = rng.f();
        let dt = if r < o.p_repeat {
            0
        } else if r < o.p_repeat + o.p_gap {
            rng.int(1_000, 9_000)
        } else {
            rng.int(50, 400)
        };
        if rng.f() < 0.02 {
            flat = rng.f() < o.p_flat * 10.0;
        }
        if !flat {
            if rng.f() < 0.3 {
                bid += rng.int(-3, 3);
            }
            if rng.f() < 0.1 {
                spread = rng.int(1, 3);
            }
            let k = if dt == 0 { 0 } else { rng.int(0, 3) };
            let mut times: Vec<i64> = (0..k).map(|_| ts + rng.int(1, dt)).collect();
            times.sort();
            for t in times {
                tid += 1;
                trades.push(Trade {
                    ts_exchange_ms: t,
                    trade_id: tid,
                    price: bid as f64 * 0.01,
                    quantity: rng.int(0, 50) as f64 / 4.0,
                    is_buyer_maker: rng.f() < 0.5,
                });
            }
        }
        ts += dt;
        let levels = if rng.f() < 0.1 { rng.int(10, 19) as usize } else { 20 };
        let mut s = book(ts, bid, spread, &mut rng, flat, levels);
        if rng.f() < o.p_bad {
            match rng.int(0, 4) {
                0 => s.bids[0].price = s.asks[0].price, // crossed
                1 => s.asks[0].price = f64::NAN,        // empty top / NaN
                2 => s.bids[3].price = f64::NAN,        // a hole
                3 => s.ts_exchange_ms -= 3_000,         // out of order
                _ => {
                    tid += 1;
                    trades.push(Trade {
                        ts_exchange_ms: ts - 5_000,
                        trade_id: tid,
                        price: 100.0,
                        quantity: 1.0,
                        is_buyer_maker: false,
                    });
                }
            }
        }
        snaps.push(s);
    }
    // Trades are generated in time order except the injected late ones,
    // which stay where they were pushed (out of order on purpose).
    (snaps, trades)
}

fn stream(snaps: &[Snapshot], trades: &[Trade]) -> (Vec<(i64, [f64; NUM_FEATURES])>, InputStats) {
    let mut e = FeatureEngine::new().quiet();
    let mut out = Vec::new();
    for ev in merge_events(snaps.iter().copied(), trades.iter().copied()) {
        if let Event::Snapshot(s) = &ev {
            if let Update::Ready(v) = e.push_snapshot(s) {
                out.push((s.ts_exchange_ms, *v));
            }
        } else {
            e.push(&ev);
        }
    }
    (out, *e.stats())
}

fn batch(snaps: &[Snapshot], trades: &[Trade]) -> (FeatureTable, InputStats) {
    let mut b = quorum::features::BatchBuilder::new().quiet();
    for ev in merge_events(snaps.iter().copied(), trades.iter().copied()) {
        let _ = b.push(&ev);
    }
    b.finish().expect("batch")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

/// Asserts both paths emit the same rows; returns the number of rows and of
/// values that differ in their bits.
fn assert_agree(snaps: &[Snapshot], trades: &[Trade]) -> (usize, usize) {
    let (s_rows, s_stats) = stream(snaps, trades);
    let (table, b_stats) = batch(snaps, trades);
    assert_eq!(s_stats, b_stats, "input counts");
    assert_eq!(s_rows.len(), table.len(), "rows");
    let mut bit_diffs = 0;
    for (i, (ts, v)) in s_rows.iter().enumerate() {
        assert_eq!(*ts, table.ts_ms[i], "row {i} ts");
        for j in 0..NUM_FEATURES {
            let (a, b) = (v[j], table.rows[i][j]);
            assert!(a.is_finite(), "row {i} stream {} = {a}", FEATURE_NAMES[j]);
            assert!(b.is_finite(), "row {i} batch {} = {b}", FEATURE_NAMES[j]);
            assert!(close(a, b), "row {i} {}: stream {a} batch {b}", FEATURE_NAMES[j]);
            bit_diffs += usize::from(a.to_bits() != b.to_bits());
        }
    }
    (s_rows.len(), bit_diffs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn streaming_and_batch_agree(
        seed in any::<u64>(),
        p_repeat in 0.0..0.3f64,
        p_gap in 0.0..0.03f64,
        p_flat in 0.0..0.05f64,
        p_bad in prop_oneof![Just(0.0), 0.0..0.05f64],
    ) {
        let o = Opts { snapshots: 1_500, p_repeat, p_gap, p_flat, p_bad };
        let (snaps, trades) = synth(seed, o);
        let (rows, bit_diffs) = assert_agree(&snaps, &trades);
        // The histories are long enough (≥ 1 500 × ~150 ms) to warm up.
        prop_assert!(rows > 0, "no row emitted");
        prop_assert_eq!(bit_diffs, 0, "values agree within 1e-9 but not bit for bit");
    }
}

#[test]
fn agreement_with_long_gaps_and_a_reset() {
    let o = Opts { snapshots: 3_000, p_repeat: 0.1, p_gap: 0.01, p_flat: 0.02, p_bad: 0.01 };
    let (mut snaps, mut trades) = synth(7, o);
    // A jump of two days in the middle: a new segment that warms up again.
    let shift = 2 * 86_400_000;
    for s in &mut snaps[1_500..] {
        s.ts_exchange_ms += shift;
    }
    for t in trades.iter_mut().filter(|t| t.ts_exchange_ms > snaps[1_499].ts_exchange_ms) {
        t.ts_exchange_ms += shift;
    }
    let (rows, bits) = assert_agree(&snaps, &trades);
    let (_, stats) = batch(&snaps, &trades);
    assert_eq!(stats.resets, 1);
    assert!(rows > 0);
    assert_eq!(bits, 0);
}

// ---- no lookahead ----------------------------------------------------------------

#[test]
fn no_lookahead() {
    let o = Opts { snapshots: 2_500, p_repeat: 0.05, p_gap: 0.005, p_flat: 0.01, p_bad: 0.0 };
    let (snaps, trades) = synth(11, o);
    let (base, _) = stream(&snaps, &trades);
    assert!(base.len() > 500);
    let (base_table, _) = batch(&snaps, &trades);
    let mut rng = Rng(99);
    for cut_row in [0, 1, base.len() / 3, base.len() / 2, base.len() - 2] {
        let t_ts = base[cut_row].0;
        // The tick at the cut: the last snapshot with that timestamp.
        let cut = snaps.iter().rposition(|s| s.ts_exchange_ms == t_ts).expect("cut tick");
        // Change everything after it: books, timestamps (kept ordered), trades.
        let mut s2 = snaps.clone();
        for s in &mut s2[cut + 1..] {
            let bid = 9_000 + rng.int(0, 2_000);
            *s = book(s.ts_exchange_ms + rng.int(0, 50), bid, rng.int(1, 5), &mut rng, false, 20);
        }
        for i in cut + 2..s2.len() {
            if s2[i].ts_exchange_ms < s2[i - 1].ts_exchange_ms {
                s2[i].ts_exchange_ms = s2[i - 1].ts_exchange_ms;
            }
        }
        let mut t2: Vec<Trade> = trades.iter().copied().filter(|t| t.ts_exchange_ms <= t_ts).collect();
        let mut ts = t_ts;
        for k in 0..500 {
            ts += rng.int(1, 300);
            t2.push(Trade {
                ts_exchange_ms: ts,
                trade_id: 1_000_000 + k,
                price: 90.0,
                quantity: rng.int(1, 1_000) as f64,
                is_buyer_maker: rng.f() < 0.9,
            });
        }
        let (changed, _) = stream(&s2, &t2);
        let (changed_table, _) = batch(&s2, &t2);
        for i in 0..=cut_row {
            assert_eq!(base[i].0, changed[i].0, "cut {cut_row}: row {i} ts");
            assert!(
                base[i].1.iter().zip(&changed[i].1).all(|(a, b)| a.to_bits() == b.to_bits()),
                "cut {cut_row}: the stream row {i} changed when data after it changed"
            );
            assert_eq!(base_table.rows[i], changed_table.rows[i], "cut {cut_row}: batch row {i} changed");
        }
        // The change is visible afterwards (the test can fail).
        let later = cut_row + 20;
        if later < base.len().min(changed.len()) {
            assert_ne!(base[later].1, changed[later].1, "cut {cut_row}: later rows should differ");
        }
    }
}

// ---- simulator data: warm-up, candles, indicators vs talib -------------------------

fn simulated(secs: u64, seed: u64) -> (Vec<Snapshot>, Vec<Trade>) {
    let dir = std::env::temp_dir().join(format!("quorum-features-{}-{seed}-{secs}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = SimConfig { seed, ..SimConfig::default() };
    simulate_to_parquet(&cfg, &dir, Duration::from_secs(secs), |_, _| {}).expect("simulate");
    let snaps: Vec<Snapshot> = read_snapshots(&dir, &cfg.symbol).expect("open").map(|r| r.expect("row")).collect();
    let trades: Vec<Trade> = read_trades(&dir, &cfg.symbol).expect("open").map(|r| r.expect("row")).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (snaps, trades)
}

/// Candles built the obvious way, independently of the library.
struct RefCandles {
    bucket: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    buy: Vec<f64>,
    trades: Vec<f64>,
}

fn ref_candles(snaps: &[Snapshot], trades: &[Trade]) -> RefCandles {
    let first = snaps[0].ts_exchange_ms.div_euclid(1000);
    let last = snaps.last().unwrap().ts_exchange_ms.div_euclid(1000);
    let mut c = RefCandles {
        bucket: vec![],
        open: vec![],
        high: vec![],
        low: vec![],
        close: vec![],
        volume: vec![],
        buy: vec![],
        trades: vec![],
    };
    let mut prev = f64::NAN;
    for b in first..last {
        let mids: Vec<f64> = snaps
            .iter()
            .filter(|s| s.ts_exchange_ms.div_euclid(1000) == b)
            .map(|s| (s.bids[0].price + s.asks[0].price) / 2.0)
            .collect();
        let tr: Vec<&Trade> = trades.iter().filter(|t| t.ts_exchange_ms.div_euclid(1000) == b).collect();
        let (o, h, l, cl) = if mids.is_empty() {
            (prev, prev, prev, prev)
        } else {
            (
                mids[0],
                mids.iter().copied().fold(f64::MIN, f64::max),
                mids.iter().copied().fold(f64::MAX, f64::min),
                *mids.last().unwrap(),
            )
        };
        prev = cl;
        c.bucket.push(b);
        c.open.push(o);
        c.high.push(h);
        c.low.push(l);
        c.close.push(cl);
        c.volume.push(tr.iter().map(|t| t.quantity).sum());
        c.buy.push(tr.iter().filter(|t| !t.is_buyer_maker).map(|t| t.quantity).sum());
        c.trades.push(tr.len() as f64);
    }
    c
}

#[test]
fn simulator_warmup_candles_and_indicators_match_talib() {
    let (snaps, trades) = simulated(260, 5);
    let c = ref_candles(&snaps, &trades);
    let mut e = FeatureEngine::new();
    let mut rows: Vec<(i64, u64, [f64; NUM_FEATURES])> = Vec::new();
    let first_bucket = snaps[0].ts_exchange_ms.div_euclid(1000);
    for ev in merge_events(snaps.iter().copied(), trades.iter().copied()) {
        match &ev {
            Event::Snapshot(s) => match e.push_snapshot(s) {
                Update::Ready(v) => rows.push((s.ts_exchange_ms, 0, *v)),
                Update::WarmingUp { completed_candles } => {
                    assert!(completed_candles < WARMUP_CANDLES);
                    assert!(rows.is_empty(), "warming up after a vector was emitted");
                }
                other => panic!("clean simulator data gave {other:?}"),
            },
            Event::Trade(_) => {
                e.push(&ev);
            }
        }
    }
    assert_eq!(e.stats().rejected(), 0);
    // Warm-up: the first vector comes with the first tick of bucket first + 200,
    // the tick that completes the 200th candle; nothing before.
    let first_ready = rows[0].0;
    assert_eq!(first_ready.div_euclid(1000), first_bucket + WARMUP_CANDLES as i64);
    let before = snaps.iter().filter(|s| s.ts_exchange_ms < first_ready).count();
    assert_eq!(snaps[before].ts_exchange_ms, first_ready);
    assert_eq!(snaps[before - 1].ts_exchange_ms.div_euclid(1000), first_bucket + WARMUP_CANDLES as i64 - 1);
    assert!(rows.len() > 500);

    let (h, l, cl, v) = (&c.high, &c.low, &c.close, &c.volume);
    let macd = ta::macd(cl, 12, 26, 9).unwrap();
    let bb = ta::bbands(cl, 20, 2.0, 2.0).unwrap();
    let stoch = ta::stoch(h, l, cl, 14, 3, 3).unwrap();
    let obv = ta::obv(cl, v).unwrap();
    let ema9 = ta::ema(cl, 9).unwrap();
    let ema21 = ta::ema(cl, 21).unwrap();
    let cols: Vec<(&str, Vec<f64>)> = vec![
        ("rsi_6", ta::rsi(cl, 6).unwrap()),
        ("rsi_14", ta::rsi(cl, 14).unwrap()),
        ("rsi_24", ta::rsi(cl, 24).unwrap()),
        ("natr_14", ta::natr(h, l, cl, 14).unwrap()),
        ("adx_14", ta::adx(h, l, cl, 14).unwrap()),
        ("plus_di_14", ta::plus_di(h, l, cl, 14).unwrap()),
        ("minus_di_14", ta::minus_di(h, l, cl, 14).unwrap()),
        ("stoch_k", stoch.slowk.clone()),
        ("stoch_d", stoch.slowd.clone()),
        ("cci_20", ta::cci(h, l, cl, 20).unwrap()),
        ("willr_14", ta::willr(h, l, cl, 14).unwrap()),
        ("mfi_14", ta::mfi(h, l, cl, v, 14).unwrap()),
        ("roc_10", ta::roc(cl, 10).unwrap()),
        ("roc_30", ta::roc(cl, 30).unwrap()),
        ("trix_15", ta::trix(cl, 15).unwrap()),
        ("ultosc", ta::ultosc(h, l, cl, 7, 14, 28).unwrap()),
        ("aroonosc_14", ta::aroonosc(h, l, 14).unwrap()),
        ("cmo_14", ta::cmo(cl, 14).unwrap()),
        ("ppo", ta::ppo(cl, 12, 26).unwrap()),
        ("stochrsi_k", ta::stochrsi(cl, 14, 5, 3).unwrap().fastk),
    ];
    let norm = [
        ("macd", macd.macd.clone()),
        ("macd_signal", macd.signal.clone()),
        ("macd_hist", macd.hist.clone()),
        ("mom_10", ta::mom(cl, 10).unwrap()),
        ("linreg_slope_14", ta::linearreg_slope(cl, 14).unwrap()),
        ("stddev_20", ta::stddev(cl, 20, 1.0).unwrap()),
    ];
    let ratio = [
        ("ema_9", ema9.clone()),
        ("ema_21", ema21.clone()),
        ("ema_50", ta::ema(cl, 50).unwrap()),
        ("sma_20", ta::sma(cl, 20).unwrap()),
        ("sma_50", ta::sma(cl, 50).unwrap()),
        ("sma_200", ta::sma(cl, 200).unwrap()),
    ];
    let adosc = ta::adosc(h, l, cl, v, 3, 10).unwrap();
    let idx = |name: &str| FEATURE_NAMES.iter().position(|n| *n == name).unwrap();
    let mut checked = 0;
    for (ts, _, row) in &rows {
        // The last completed candle: the bucket before the tick's.
        let n = (ts.div_euclid(1000) - 1 - first_bucket) as usize;
        assert_eq!(c.bucket[n], ts.div_euclid(1000) - 1);
        let cn = cl[n];
        let check = |name: &str, want: f64| {
            let got = row[idx(name)];
            assert!(close(got, want), "{name} at candle {n}: got {got}, talib {want}");
        };
        for (name, col) in &cols {
            check(name, col[n]);
        }
        for (name, col) in &norm {
            check(name, col[n] / cn * 1e4);
        }
        for (name, col) in &ratio {
            check(name, (col[n] / cn - 1.0) * 1e4);
        }
        check("ema_cross_9_21", (ema9[n] / ema21[n] - 1.0) * 1e4);
        let (up, lo, mid) = (bb.upper[n], bb.lower[n], bb.middle[n]);
        check("bb_percent_b", if up == lo { 0.5 } else { (cn - lo) / (up - lo) });
        check("bb_width", (up - lo) / mid);
        let v14: f64 = v[n - 13..=n].iter().sum();
        check("obv_flow_14", if v14 == 0.0 { 0.0 } else { (obv[n] - obv[n - 14]) / v14 });
        let m10: f64 = v[n - 9..=n].iter().sum::<f64>() / 10.0;
        check("adosc", if m10 == 0.0 { 0.0 } else { adosc[n] / m10 });
        // A few candle features off the same reference candles.
        check("ret_1", (cl[n] / cl[n - 1]).ln() * 1e4);
        check("ret_60", (cl[n] / cl[n - 60]).ln() * 1e4);
        check("range", (h[n] - l[n]) / cn * 1e4);
        check("body", (cn - c.open[n]) / c.open[n] * 1e4);
        check("log_volume", (1.0 + v[n]).ln());
        check("log_trades", (1.0 + c.trades[n]).ln());
        check("taker_buy_ratio", if v[n] == 0.0 { 0.5 } else { c.buy[n] / v[n] });
        check("log_volume_60", (1.0 + v[n - 59..=n].iter().sum::<f64>()).ln());
        check("idle_10", c.trades[n - 9..=n].iter().filter(|&&t| t == 0.0).count() as f64);
        checked += 1;
    }
    assert!(checked > 500);
    // And the batch path agrees on this data too.
    let (n_rows, bits) = assert_agree(&snaps, &trades);
    assert_eq!(n_rows, rows.len());
    assert_eq!(bits, 0);
}

// ---- bad input -------------------------------------------------------------------

#[test]
fn bad_input_is_counted_skipped_and_changes_nothing_else() {
    let o = Opts { snapshots: 2_500, p_repeat: 0.0, p_gap: 0.0, p_flat: 0.0, p_bad: 0.0 };
    let (snaps, trades) = synth(21, o);
    let (clean, clean_stats) = stream(&snaps, &trades);
    assert_eq!(clean_stats.rejected(), 0);

    let mut bad = snaps.clone();
    let mut bad_trades = trades.clone();
    let mut insert = |i: usize, s: Snapshot| bad.insert(i, s);
    let base = |i: usize| snaps[i];
    // Inserted after snapshot i, each with i's timestamp (or earlier), so
    // the clean ticks are untouched.
    let mut crossed = base(900);
    crossed.bids[0].price = crossed.asks[0].price + 0.01;
    insert(901, crossed);
    let mut nan_px = base(1200);
    nan_px.asks[2].price = f64::NAN;
    insert(1202, nan_px);
    let mut empty = base(1500);
    empty.bids = [Level::MISSING; 20];
    insert(1504, empty);
    let mut neg = base(1600);
    neg.bids[1].quantity = -1.0;
    insert(1606, neg);
    let mut thin = base(1700);
    thin.asks[5] = Level::MISSING;
    for j in 6..20 {
        thin.asks[j] = Level::MISSING;
    }
    insert(1708, thin);
    let late = base(1000);
    insert(2009, late); // older than its neighbours: out of order
    let late_trade = Trade {
        ts_exchange_ms: snaps[1000].ts_exchange_ms,
        trade_id: 9,
        price: 1.0,
        quantity: 1.0,
        is_buyer_maker: true,
    };
    let pos = bad_trades.iter().position(|t| t.ts_exchange_ms > snaps[2100].ts_exchange_ms).unwrap();
    bad_trades.insert(pos, late_trade);
    let nan_trade = Trade {
        ts_exchange_ms: snaps[2100].ts_exchange_ms,
        trade_id: 10,
        price: f64::NAN,
        quantity: 1.0,
        is_buyer_maker: true,
    };
    bad_trades.insert(pos, nan_trade);

    let (got, stats) = stream(&bad, &bad_trades);
    assert_eq!(stats.crossed, 1, "{stats:?}");
    assert_eq!(stats.invalid_book, 2, "NaN price and negative quantity: {stats:?}");
    assert_eq!(stats.empty_top, 1, "{stats:?}");
    assert_eq!(stats.thin_book, 1, "{stats:?}");
    assert_eq!(stats.snapshots_out_of_order, 1, "{stats:?}");
    assert_eq!(stats.trades_out_of_order, 1, "{stats:?}");
    assert_eq!(stats.bad_trades, 1, "{stats:?}");
    assert_eq!(stats.rejected(), 8);
    assert_eq!(stats.emitted, clean_stats.emitted);
    // Skipped means skipped: the emitted vectors are exactly the clean ones.
    assert_eq!(got.len(), clean.len());
    for (a, b) in got.iter().zip(&clean) {
        assert_eq!(a.0, b.0);
        assert!(a.1.iter().zip(&b.1).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(a.1.iter().all(|x| x.is_finite()));
    }
    let (_, batch_stats) = batch(&bad, &bad_trades);
    assert_eq!(batch_stats, stats);
}

#[test]
fn garbage_never_panics_nor_emits_nan() {
    let mut rng = Rng(3);
    let mut e = FeatureEngine::new().quiet();
    let mut ts = 0i64;
    let specials = [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300, 1e-300, 100.0];
    let mut emitted = 0;
    for i in 0..20_000 {
        ts += rng.int(-50, 400);
        let mut s = book(ts, 10_000 + rng.int(-5, 5), rng.int(-1, 2), &mut rng, false, 20);
        if rng.f() < 0.2 {
            let k = rng.int(0, 19) as usize;
            s.bids[k].quantity = specials[rng.int(0, 6) as usize];
            s.asks[k].price = specials[rng.int(0, 6) as usize];
        }
        if let Update::Ready(v) = e.push_snapshot(&s) {
            assert!(v.iter().all(|x| x.is_finite()), "tick {i}");
            emitted += 1;
        }
        let t = Trade {
            ts_exchange_ms: ts + rng.int(-100, 100),
            trade_id: i,
            price: specials[rng.int(0, 6) as usize],
            quantity: specials[rng.int(0, 6) as usize],
            is_buyer_maker: rng.f() < 0.5,
        };
        let _ = e.push_trade(&t);
    }
    let st = e.stats();
    assert!(st.rejected() > 1_000, "{st:?}");
    assert_eq!(st.emitted, emitted);
}

// ---- the table on disk -------------------------------------------------------------

#[test]
fn table_round_trip() {
    let o = Opts { snapshots: 2_500, p_repeat: 0.05, p_gap: 0.0, p_flat: 0.01, p_bad: 0.0 };
    let (snaps, trades) = synth(5, o);
    let (table, _) = build_features(snaps.iter().copied(), trades.iter().copied()).unwrap();
    assert!(table.len() > 100);
    let dir = std::env::temp_dir().join(format!("quorum-table-{}", std::process::id()));
    let path = dir.join("SIM.parquet");
    write_feature_table(&path, "SIM", &table).unwrap();
    let back = read_feature_table(&path).unwrap();
    assert_eq!(back.symbol, "SIM");
    assert_eq!(back.ts_ms, table.ts_ms);
    for i in 0..table.len() {
        let want: Vec<f32> = table.rows[i].iter().map(|&x| x as f32).collect();
        assert_eq!(back.row(i), &want[..], "row {i}");
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "SIM.parquet").collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Column names and order are docs/features.md's.
    let file = std::fs::File::open(&path).unwrap();
    let meta = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let schema = meta.metadata().file_metadata().schema_descr();
    let names: Vec<String> = schema.columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names[0], "ts_ms");
    assert_eq!(names[1], "symbol");
    assert_eq!(&names[2..], &FEATURE_NAMES.map(String::from)[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- from the raw store: library and CLI --------------------------------------------

#[test]
fn store_build_cli_and_dataset_agree() {
    let dir = std::env::temp_dir().join(format!("quorum-features-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let raw = dir.join("raw");
    let cfg = SimConfig { seed: 17, ..SimConfig::default() };
    simulate_to_parquet(&cfg, &raw, Duration::from_secs(230), |_, _| {}).expect("simulate");
    let snaps: Vec<Snapshot> = read_snapshots(&raw, &cfg.symbol).unwrap().map(|r| r.unwrap()).collect();
    let trades: Vec<Trade> = read_trades(&raw, &cfg.symbol).unwrap().map(|r| r.unwrap()).collect();
    let (want, _) = build_features(snaps.iter().copied(), trades.iter().copied()).unwrap();
    let mut calls = 0;
    let got = quorum::features::build_from_store(&raw, &cfg.symbol, true, |_| calls += 1).unwrap();
    assert_eq!(got.table, want);
    assert_eq!(got.snapshots, snaps);
    assert!(calls >= 1);
    assert_eq!(want.len(), 2_300 - 2_000, "230 s of ticks, the first 200 s warming up");

    let out = dir.join("features");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["features", "--raw"])
        .arg(&raw)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run quorum features");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("300 rows written"), "{stdout}");
    let file = read_feature_table(&out.join("SIMUSDT.parquet")).unwrap();
    assert_eq!(file.symbol, "SIMUSDT");
    assert_eq!(file.ts_ms, want.ts_ms);
    for i in 0..want.len() {
        let row: Vec<f32> = want.rows[i].iter().map(|&x| x as f32).collect();
        assert_eq!(file.row(i), &row[..]);
    }

    // The dataset joins the snapshots back by `source`: TLOB input at the end.
    let ds = quorum::train::Dataset::from_table(&got.table, &got.snapshots, 100).unwrap();
    assert_eq!(ds.len(), 300);
    let t = ds.len() - 1;
    assert_eq!(ds.snapshots[t].ts_exchange_ms, ds.ts_ms[t]);
    let tl = ds.tlob_input(t).unwrap().expect("100 consecutive ticks");
    assert_eq!(tl.lob.len(), 100 * 20 * 4);
    assert_eq!(tl.aux, ds.row(t));
    let _ = std::fs::remove_dir_all(&dir);
}
