//! Each feature family against small cases computed by hand.

use quorum::features::book_features::{check_snapshot, BookReject, BookState};
use quorum::features::candle_features::{autocorr_lag1, candle_features, skewness, CandleWindow};
use quorum::features::candles::{Candle, CandleBuilder};
use quorum::features::indicators::{transform, TransformInputs, NUM_RAW};
use quorum::features::{feature_index, FEATURE_NAMES, NUM_FEATURES};
use quorum::market::{Level, Snapshot, Trade};

fn near(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

fn idx(name: &str) -> usize {
    feature_index(name).unwrap_or_else(|| panic!("no feature {name}"))
}

/// Bids 99.99, 99.98, …; asks 100.01, 100.02, …; sizes given per level.
fn snap(bid0: f64, ask0: f64, bq: [f64; 20], aq: [f64; 20]) -> Snapshot {
    let mut s = Snapshot::empty(0, 0, 0);
    for i in 0..20 {
        s.bids[i] = Level::new(bid0 - 0.01 * i as f64, bq[i]);
        s.asks[i] = Level::new(ask0 + 0.01 * i as f64, aq[i]);
    }
    s
}

fn book_qty() -> ([f64; 20], [f64; 20]) {
    let mut bq = [0.0; 20];
    let mut aq = [4.0; 20];
    bq[0] = 3.0;
    for q in &mut bq[1..5] {
        *q = 1.0;
    }
    for q in &mut bq[5..10] {
        *q = 2.0;
    }
    for q in &mut aq[..10] {
        *q = 1.0;
    }
    (bq, aq)
}

#[test]
fn names_are_the_spec_order() {
    assert_eq!(FEATURE_NAMES.len(), NUM_FEATURES);
    assert_eq!(idx("ask_offset_0"), 0);
    assert_eq!(idx("bid_size_9"), 39);
    assert_eq!(idx("spread"), 40);
    assert_eq!(idx("depth_total"), 49);
    assert_eq!(idx("ret_1"), 50);
    assert_eq!(idx("idle_10"), 74);
    assert_eq!(idx("rsi_6"), 75);
    assert_eq!(idx("adosc"), 109);
    assert_eq!(idx("stddev_20"), 111);
    let mut sorted = FEATURE_NAMES.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), NUM_FEATURES, "names are unique");
}

#[test]
fn book_features_by_hand() {
    let (bq, aq) = book_qty();
    let s1 = snap(99.99, 100.01, bq, aq);
    check_snapshot(&s1).unwrap();
    let mut st = BookState::new();
    let mut f = [f64::NAN; 50];
    st.update(&s1, &mut f);
    let mid = 100.0;
    near(f[0], (100.01 / mid - 1.0) * 1e4, "ask_offset_0");
    near(f[0], 1.0, "ask_offset_0 ≈ 1 bp");
    near(f[9], (100.10 / mid - 1.0) * 1e4, "ask_offset_9");
    near(f[10], 1.0, "bid_offset_0");
    near(f[19], (1.0 - 99.90 / mid) * 1e4, "bid_offset_9");
    near(f[20], 2f64.ln(), "ask_size_0 = ln(1 + 1)");
    near(f[30], 4f64.ln(), "bid_size_0 = ln(1 + 3)");
    near(f[35], 3f64.ln(), "bid_size_5 = ln(1 + 2)");
    near(f[40], 2.0, "spread");
    near(f[41], 0.0, "mid_return on the first tick");
    // micro = (100.01·3 + 99.99·1) / 4 = 100.005 → 0.5 bp.
    near(f[42], 0.5, "microprice_offset");
    near(f[43], 0.5, "imbalance_1 = (3 − 1) / 4");
    near(f[44], 2.0 / 12.0, "imbalance_5 = (7 − 5) / 12");
    near(f[45], 7.0 / 27.0, "imbalance_10 = (17 − 10) / 27");
    near(f[46], -33.0 / 67.0, "imbalance_all = (17 − 50) / 67");
    near(f[47], 0.0, "ofi_1 on the first tick");
    near(f[48], 0.0, "ofi_10 on the first tick");
    near(f[49], 28f64.ln(), "depth_total = ln(1 + 27)");

    // Tick 2: the bid improves to 100.00 with size 2; the ask is unchanged.
    let mut bq2 = bq;
    bq2[0] = 2.0;
    let s2 = snap(100.00, 100.01, bq2, aq);
    st.update(&s2, &mut f);
    near(f[41], (100.005f64 / 100.0).ln() * 1e4, "mid_return");
    // e = 2 (new bid) − 0 − 1 (ask same: −q_a) + 1 (ask same: +q_a prev) = 2; / ((2 + 1) / 2).
    near(f[47], 4.0 / 3.0, "ofi_1");
    near(f[48], 4.0 / 3.0, "ofi_10 (fewer at the start)");
    // The same book again: ofi_1 = 2 − 2 − 1 + 1 = 0; ofi_10 keeps 4/3 for 9 more ticks.
    for k in 3..=11 {
        st.update(&s2, &mut f);
        near(f[47], 0.0, "ofi_1 unchanged book");
        near(f[48], 4.0 / 3.0, &format!("ofi_10 at tick {k}"));
    }
    st.update(&s2, &mut f);
    near(f[48], 0.0, "ofi_10 once the 4/3 is 10 ticks old");

    // The ask drops into the spread: −1[a_t ≤ a_{t−1}]·q_a,t and no +q_a,t−1.
    let mut aq3 = aq;
    aq3[0] = 5.0;
    let s3 = snap(100.00, 100.005, bq2, aq3);
    st.update(&s3, &mut f);
    // e = 2 − 2 − 5 + 0 = −5; depth (2 + 5) / 2.
    near(f[47], -5.0 / 3.5, "ofi_1 ask improves");

    // Zero sizes at the top: imbalance_1 0, microprice_offset 0, ofi 0.
    let (mut bq0, mut aq0) = (bq, aq);
    bq0[0] = 0.0;
    aq0[0] = 0.0;
    let s0 = snap(99.99, 100.01, bq0, aq0);
    let mut st0 = BookState::new();
    st0.update(&s0, &mut f);
    near(f[43], 0.0, "imbalance_1 with empty sizes");
    near(f[42], 0.0, "microprice_offset with empty sizes");
    st0.update(&s0, &mut f);
    near(f[47], 0.0, "ofi_1 with zero depth");
}

#[test]
fn bad_books_are_refused() {
    let (bq, aq) = book_qty();
    let crossed = snap(100.02, 100.01, bq, aq);
    assert!(check_snapshot(&crossed).unwrap_err().is_crossed());
    let locked = snap(100.01, 100.01, bq, aq);
    assert!(check_snapshot(&locked).unwrap_err().is_crossed());
    let mut empty = snap(99.99, 100.01, bq, aq);
    empty.asks = [Level::MISSING; 20];
    assert_eq!(check_snapshot(&empty), Err(BookReject::EmptyTop { field: "ask_px_0" }));
    let mut thin = snap(99.99, 100.01, bq, aq);
    for l in &mut thin.bids[9..] {
        *l = Level::MISSING;
    }
    assert_eq!(check_snapshot(&thin), Err(BookReject::Thin { side: "bids", levels: 9 }));
    let mut nan = snap(99.99, 100.01, bq, aq);
    nan.asks[0].price = f64::NAN;
    nan.asks[0].quantity = f64::NAN;
    assert!(check_snapshot(&nan).is_err());
    let mut inf = snap(99.99, 100.01, bq, aq);
    inf.bids[4].price = f64::INFINITY;
    assert!(matches!(check_snapshot(&inf), Err(BookReject::Invalid(_))));
}

fn trade(ts: i64, q: f64, buyer_maker: bool) -> Trade {
    Trade { ts_exchange_ms: ts, trade_id: 0, price: 100.0, quantity: q, is_buyer_maker: buyer_maker }
}

#[test]
fn candles_by_hand() {
    let mut b = CandleBuilder::new();
    let mut out: Vec<Candle> = Vec::new();
    b.advance(5, &mut |c: &Candle| out.push(*c));
    for m in [100.0, 101.0, 99.0, 100.5] {
        b.tick(m);
    }
    b.trade(&trade(5_100, 2.0, false));
    b.trade(&trade(5_200, 3.0, true));
    b.advance(5, &mut |c: &Candle| out.push(*c));
    assert!(out.is_empty(), "a candle counts only once complete");
    // Bucket 6 has no input at all; bucket 7 has a trade but no tick.
    b.advance(7, &mut |c: &Candle| out.push(*c));
    b.trade(&trade(7_500, 1.5, false));
    b.advance(9, &mut |c: &Candle| out.push(*c));
    assert_eq!(out.len(), 4);
    let c = out[0];
    assert_eq!((c.bucket, c.open, c.high, c.low, c.close), (5, 100.0, 101.0, 99.0, 100.5));
    assert_eq!((c.volume, c.buy_volume, c.trades, c.ticks), (5.0, 2.0, 2, 4));
    for (c, bucket, v) in [(out[1], 6, 0.0), (out[2], 7, 1.5), (out[3], 8, 0.0)] {
        assert_eq!(c.bucket, bucket);
        assert_eq!((c.open, c.high, c.low, c.close), (100.5, 100.5, 100.5, 100.5), "flat at the previous close");
        assert_eq!(c.volume, v);
        assert_eq!(c.ticks, 0);
    }
    assert_eq!(out[2].buy_volume, 1.5);
}

#[test]
fn trades_before_the_first_tick_make_no_candle() {
    let mut b = CandleBuilder::new();
    let mut out: Vec<Candle> = Vec::new();
    b.advance(1, &mut |c: &Candle| out.push(*c));
    b.trade(&trade(1_000, 1.0, false));
    b.advance(2, &mut |c: &Candle| out.push(*c));
    b.tick(50.0);
    b.advance(3, &mut |c: &Candle| out.push(*c));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bucket, 2);
    assert_eq!(out[0].volume, 0.0);
}

struct Win {
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    buy: Vec<f64>,
    trades: Vec<f64>,
    ret1: Vec<f64>,
}

impl Win {
    /// 61 flat candles at 100 with volume 1 (half bought), one trade each.
    fn flat() -> Win {
        let n = 61;
        let mut ret1 = vec![0.0; n];
        ret1[0] = f64::NAN;
        Win {
            open: vec![100.0; n],
            high: vec![100.0; n],
            low: vec![100.0; n],
            close: vec![100.0; n],
            volume: vec![1.0; n],
            buy: vec![0.5; n],
            trades: vec![1.0; n],
            ret1,
        }
    }

    fn features(&self) -> [f64; 25] {
        let w = CandleWindow {
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            volume: &self.volume,
            buy_volume: &self.buy,
            trades: &self.trades,
            ret1: &self.ret1,
        };
        let mut out = [f64::NAN; 25];
        candle_features(&w, &mut out);
        out
    }
}

fn cf(out: &[f64; 25], name: &str) -> f64 {
    out[idx(name) - 50]
}

#[test]
fn candle_features_by_hand() {
    // Flat market: every edge case's fallback.
    let f = Win::flat().features();
    for (name, want) in [
        ("ret_1", 0.0),
        ("ret_60", 0.0),
        ("range", 0.0),
        ("close_location", 0.5),
        ("volume_z60", 0.0),
        ("taker_buy_ratio", 0.5),
        ("vwap_offset_60", 0.0),
        ("rv_10", 0.0),
        ("rv_60", 0.0),
        ("parkinson_20", 0.0),
        ("location_60", 0.5),
        ("skew_60", 0.0),
        ("autocorr_60", 0.0),
        ("vw_ret_10", 0.0),
        ("buy_ratio_10", 0.5),
        ("log_volume_60", 61f64.ln()),
        ("idle_10", 0.0),
        ("log_trades", 2f64.ln()),
    ] {
        near(cf(&f, name), want, name);
    }

    // The last candle: o 100, h 103, l 98, c 101; volume 8 (6 bought), 3 trades.
    let mut w = Win::flat();
    let n = 60;
    (w.open[n], w.high[n], w.low[n], w.close[n]) = (100.0, 103.0, 98.0, 101.0);
    (w.volume[n], w.buy[n], w.trades[n]) = (8.0, 6.0, 3.0);
    w.close[n - 5] = 99.0;
    w.ret1[n] = (101f64 / 100.0).ln() * 1e4;
    for t in &mut w.trades[52..60] {
        *t = 0.0;
    }
    for v in &mut w.volume[52..60] {
        *v = 2.0;
    }
    let f = w.features();
    near(cf(&f, "ret_1"), (1.01f64).ln() * 1e4, "ret_1");
    near(cf(&f, "ret_5"), (101f64 / 99.0).ln() * 1e4, "ret_5");
    near(cf(&f, "ret_60"), (1.01f64).ln() * 1e4, "ret_60");
    near(cf(&f, "range"), 5.0 / 101.0 * 1e4, "range");
    near(cf(&f, "body"), 100.0, "body = bps(1 / 100)");
    near(cf(&f, "upper_wick"), 2.0 / 101.0 * 1e4, "upper_wick");
    near(cf(&f, "lower_wick"), 2.0 / 101.0 * 1e4, "lower_wick");
    near(cf(&f, "close_location"), 3.0 / 5.0, "close_location");
    near(cf(&f, "log_volume"), 9f64.ln(), "log_volume");
    near(cf(&f, "taker_buy_ratio"), 0.75, "taker_buy_ratio");
    near(cf(&f, "log_trades"), 4f64.ln(), "log_trades");
    near(cf(&f, "idle_10"), 8.0, "idle_10: candles 52..59 had no trade");
    // Volumes over the last 60 (candles 1..=60): 51 × 1, 8 × 2, 1 × 8.
    let vs: Vec<f64> = w.volume[1..].to_vec();
    let mean = vs.iter().sum::<f64>() / 60.0;
    near(mean, 75.0 / 60.0, "mean volume");
    let var = vs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 60.0;
    near(cf(&f, "volume_z60"), (8.0 - mean) / var.sqrt(), "volume_z60");
    near(cf(&f, "log_volume_60"), 76f64.ln(), "log_volume_60");
    // buy ratio over the last 10: buys 9 × 0.5 + 6 = 10.5 over 8 × 2 + 1 + 8 = 25.
    near(cf(&f, "buy_ratio_10"), 10.5 / 25.0, "buy_ratio_10");
    // vwap over candles 1..=60: typical 100 except candle 55 (c 99) and 60.
    let typ = |i: usize| (w.high[i] + w.low[i] + w.close[i]) / 3.0;
    let pv: f64 = (1..=60).map(|i| typ(i) * w.volume[i]).sum();
    let vwap = pv / 75.0;
    near(vwap, (100.0 * 65.0 + 2.0 * 299.0 / 3.0 + 8.0 * 302.0 / 3.0) / 75.0, "vwap");
    near(cf(&f, "vwap_offset_60"), (101.0 / vwap - 1.0) * 1e4, "vwap_offset_60");
    // range over 60: max h 103, min l 98.
    near(cf(&f, "range_60"), 5.0 / 101.0 * 1e4, "range_60");
    near(cf(&f, "location_60"), 0.6, "location_60");
    // Parkinson: one candle of 20 with ln(103/98)², the others 0.
    let p = ((103f64 / 98.0).ln().powi(2) / 20.0 / (4.0 * 2f64.ln())).sqrt() * 1e4;
    near(cf(&f, "parkinson_20"), p, "parkinson_20");
    // ret_1 over the last 10: nine 0 and one r.
    let r = (1.01f64).ln() * 1e4;
    near(cf(&f, "rv_10"), (r * r * 0.1 - (r / 10.0).powi(2)).sqrt(), "rv_10 = sqrt(E[x²] − E[x]²)");
    // vw_ret_10: only the last candle has a return: 8 r / 25.
    near(cf(&f, "vw_ret_10"), 8.0 * r / 25.0, "vw_ret_10");
    // skew of 59 zeros and one r: m2 = r²·59/3600, m3 = r³·59·58/216000.
    let m2 = r * r * 59.0 / 3600.0;
    let m3 = r.powi(3) * 59.0 * 58.0 / 216_000.0;
    near(cf(&f, "skew_60"), m3 / m2.powf(1.5), "skew_60");

    // Before 61 candles the 60-windows are undefined, before 11 rv_10 too.
    let short = Win {
        open: w.open[..11].to_vec(),
        high: w.high[..11].to_vec(),
        low: w.low[..11].to_vec(),
        close: w.close[..11].to_vec(),
        volume: w.volume[..11].to_vec(),
        buy: w.buy[..11].to_vec(),
        trades: w.trades[..11].to_vec(),
        ret1: w.ret1[..11].to_vec(),
    };
    let f = short.features();
    assert!(cf(&f, "ret_60").is_nan() && cf(&f, "rv_60").is_nan() && cf(&f, "volume_z60").is_nan());
    assert!(cf(&f, "ret_5").is_finite() && cf(&f, "rv_10").is_finite() && cf(&f, "idle_10").is_finite());
}

#[test]
fn skew_and_autocorr_edge_cases() {
    // Alternating ±10: symmetric (skew 0) and perfectly anti-correlated.
    let alt: Vec<f64> = (0..60).map(|i| if i % 2 == 0 { 10.0 } else { -10.0 }).collect();
    near(skewness(&alt), 0.0, "skew of ±10");
    near(autocorr_lag1(&alt), -1.0, "autocorr of ±10");
    // A straight line is perfectly correlated with itself shifted.
    let line: Vec<f64> = (0..60).map(|i| i as f64).collect();
    near(autocorr_lag1(&line), 1.0, "autocorr of a line");
    near(skewness(&line), 0.0, "skew of a line");
    // Constant: both undefined → 0.
    assert_eq!(skewness(&[3.0; 60]), 0.0);
    assert_eq!(autocorr_lag1(&[3.0; 60]), 0.0);
    // Constant except the first value: x[1..] constant → 0.
    let mut first = vec![1.0; 60];
    first[0] = 5.0;
    assert_eq!(autocorr_lag1(&first), 0.0);
    // A right tail is positive skew.
    let mut tail = vec![0.0; 60];
    tail[59] = 60.0;
    near(skewness(&tail), 3422.0 / 59f64.powf(1.5), "skew of one outlier");
}

#[test]
fn indicator_transforms_by_hand() {
    let mut raw = [0.0; NUM_RAW];
    for (j, r) in raw.iter_mut().enumerate() {
        *r = 1.0 + j as f64;
    }
    raw[6] = 102.0; // BB upper
    raw[7] = 100.0; // BB middle
    raw[8] = 98.0; // BB lower
    raw[18] = 50.0; // OBV now
    raw[22] = 101.0; // EMA 9
    raw[23] = 100.0; // EMA 21
    raw[34] = 7.0; // ADOSC
    let x = TransformInputs::new(100.0, 20.0, &[2.0; 14]);
    let mut out = [f64::NAN; 37];
    transform(&raw, &x, &mut out);
    let g = |name: &str| out[idx(name) - 75];
    near(g("rsi_6"), raw[0], "rsi_6 as is");
    near(g("macd"), raw[3] / 100.0 * 1e4, "macd norm");
    near(g("bb_percent_b"), 0.5, "(100 − 98) / 4");
    near(g("bb_width"), 0.04, "4 / 100");
    near(g("obv_flow_14"), 30.0 / 28.0, "(50 − 20) / (14 × 2)");
    near(g("ema_9"), 100.0, "ratio: bps(101 / 100 − 1)");
    near(g("ema_cross_9_21"), 100.0, "bps(101 / 100 − 1)");
    near(g("adosc"), 3.5, "7 / mean volume 2");
    near(g("sma_200"), (raw[27] / 100.0 - 1.0) * 1e4, "sma_200 ratio");
    // Zero volumes and equal bands.
    raw[6] = 100.0;
    raw[8] = 100.0;
    let x0 = TransformInputs::new(100.0, 20.0, &[0.0; 14]);
    transform(&raw, &x0, &mut out);
    near(out[idx("bb_percent_b") - 75], 0.5, "equal bands");
    near(out[idx("obv_flow_14") - 75], 0.0, "Σv = 0");
    near(out[idx("adosc") - 75], 0.0, "mean volume 0");
    // Fewer than 15 candles: obv_flow undefined.
    let xs = TransformInputs::new(100.0, f64::NAN, &[1.0; 9]);
    transform(&raw, &xs, &mut out);
    assert!(out[idx("obv_flow_14") - 75].is_nan() && out[idx("adosc") - 75].is_nan());
}
