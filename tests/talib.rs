//! TA-Lib goldens and batch/stream agreement for `features::talib`.
//!
//! The goldens (tests/fixtures/talib/goldens.json) come from the `ta-lib`
//! Python package 0.8.2 via tools/talib_goldens.py; this test needs no
//! Python. Every function must reproduce TA-Lib's NaN prefix exactly and
//! every value to `|ours − ref| ≤ 1e-9 · (1 + |ref|)`; the streaming form must
//! give what the batch form gives on every bar.

use quorum::features::talib::{self as ta, TalibError};
use serde_json::Value;

#[path = "common/fixtures.rs"]
mod fixtures;

fn goldens_path() -> std::path::PathBuf {
    fixtures::fixtures_dir().join("talib/goldens.json")
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
}

/// A column of the goldens: `repr()` strings (parsed exactly by
/// `str::parse`), `null` for NaN.
fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| match x {
            Value::Null => f64::NAN,
            Value::String(s) => s.parse().unwrap_or_else(|_| panic!("bad float {s:?}")),
            other => panic!("expected a repr string or null, got {other}"),
        })
        .collect()
}

fn load() -> Value {
    let text = std::fs::read_to_string(goldens_path()).expect("read goldens.json");
    serde_json::from_str(&text).expect("parse goldens.json")
}

fn series_of(v: &Value) -> Series {
    Series {
        name: v["name"].as_str().expect("name").to_string(),
        high: floats(&v["high"]),
        low: floats(&v["low"]),
        close: floats(&v["close"]),
        volume: floats(&v["volume"]),
    }
}

fn int(params: &Value, key: &str) -> usize {
    params[key].as_u64().unwrap_or_else(|| panic!("param {key}")) as usize
}

fn real(params: &Value, key: &str) -> f64 {
    params[key].as_f64().unwrap_or_else(|| panic!("param {key}"))
}

type Outputs = Vec<(&'static str, Vec<f64>)>;

/// The batch function for a golden call.
fn batch(func: &str, p: &Value, s: &Series) -> Outputs {
    let (h, l, c, v) = (&s.high[..], &s.low[..], &s.close[..], &s.volume[..]);
    let tp = || int(p, "timeperiod");
    let one = |r: Result<Vec<f64>, TalibError>| vec![("real", r.expect("valid call"))];
    match func {
        "RSI" => one(ta::rsi(c, tp())),
        "MACD" => {
            let m = ta::macd(c, int(p, "fastperiod"), int(p, "slowperiod"), int(p, "signalperiod")).unwrap();
            vec![("macd", m.macd), ("signal", m.signal), ("hist", m.hist)]
        }
        "BBANDS" => {
            assert_eq!(int(p, "matype"), 0);
            let b = ta::bbands(c, tp(), real(p, "nbdevup"), real(p, "nbdevdn")).unwrap();
            vec![("upper", b.upper), ("middle", b.middle), ("lower", b.lower)]
        }
        "NATR" => one(ta::natr(h, l, c, tp())),
        "ADX" => one(ta::adx(h, l, c, tp())),
        "PLUS_DI" => one(ta::plus_di(h, l, c, tp())),
        "MINUS_DI" => one(ta::minus_di(h, l, c, tp())),
        "STOCH" => {
            assert_eq!(int(p, "slowk_matype"), 0);
            assert_eq!(int(p, "slowd_matype"), 0);
            let st =
                ta::stoch(h, l, c, int(p, "fastk_period"), int(p, "slowk_period"), int(p, "slowd_period")).unwrap();
            vec![("slowk", st.slowk), ("slowd", st.slowd)]
        }
        "CCI" => one(ta::cci(h, l, c, tp())),
        "WILLR" => one(ta::willr(h, l, c, tp())),
        "MFI" => one(ta::mfi(h, l, c, v, tp())),
        "OBV" => one(ta::obv(c, v)),
        "ROC" => one(ta::roc(c, tp())),
        "MOM" => one(ta::mom(c, tp())),
        "EMA" => one(ta::ema(c, tp())),
        "SMA" => one(ta::sma(c, tp())),
        "TRIX" => one(ta::trix(c, tp())),
        "ULTOSC" => one(ta::ultosc(h, l, c, int(p, "timeperiod1"), int(p, "timeperiod2"), int(p, "timeperiod3"))),
        "AROONOSC" => one(ta::aroonosc(h, l, tp())),
        "CMO" => one(ta::cmo(c, tp())),
        "PPO" => {
            assert_eq!(int(p, "matype"), 0);
            one(ta::ppo(c, int(p, "fastperiod"), int(p, "slowperiod")))
        }
        "STOCHRSI" => {
            assert_eq!(int(p, "fastd_matype"), 0);
            let r = ta::stochrsi(c, tp(), int(p, "fastk_period"), int(p, "fastd_period")).unwrap();
            vec![("fastk", r.fastk), ("fastd", r.fastd)]
        }
        "ADOSC" => one(ta::adosc(h, l, c, v, int(p, "fastperiod"), int(p, "slowperiod"))),
        "LINEARREG_SLOPE" => one(ta::linearreg_slope(c, tp())),
        "STDDEV" => one(ta::stddev(c, tp(), real(p, "nbdev"))),
        other => panic!("no dispatcher for {other}"),
    }
}

/// Feeds `n` bars to a stream; `f(i)` returns bar i's outputs.
fn collect<const K: usize>(names: [&'static str; K], n: usize, mut f: impl FnMut(usize) -> [f64; K]) -> Outputs {
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); K];
    for i in 0..n {
        for (col, x) in cols.iter_mut().zip(f(i)) {
            col.push(x);
        }
    }
    names.into_iter().zip(cols).collect()
}

/// The streaming form for a golden call, with the stream's `lookback()`.
fn stream_with_lookback(func: &str, p: &Value, s: &Series) -> (usize, Outputs) {
    let (h, l, c, v) = (&s.high[..], &s.low[..], &s.close[..], &s.volume[..]);
    let n = c.len();
    let tp = || int(p, "timeperiod");
    let (lookback, out) = match func {
        "RSI" => {
            let mut st = ta::RsiStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "MACD" => {
            let mut st =
                ta::MacdStream::new(int(p, "fastperiod"), int(p, "slowperiod"), int(p, "signalperiod")).unwrap();
            let lb = st.lookback();
            (
                lb,
                collect(["macd", "signal", "hist"], n, |i| {
                    let m = st.update(c[i]);
                    [m.macd, m.signal, m.hist]
                }),
            )
        }
        "BBANDS" => {
            let mut st = ta::BbandsStream::new(tp(), real(p, "nbdevup"), real(p, "nbdevdn")).unwrap();
            let lb = st.lookback();
            (
                lb,
                collect(["upper", "middle", "lower"], n, |i| {
                    let b = st.update(c[i]);
                    [b.upper, b.middle, b.lower]
                }),
            )
        }
        "NATR" => {
            let mut st = ta::NatrStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "ADX" => {
            let mut st = ta::AdxStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "PLUS_DI" => {
            let mut st = ta::PlusDiStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "MINUS_DI" => {
            let mut st = ta::MinusDiStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "STOCH" => {
            let mut st =
                ta::StochStream::new(int(p, "fastk_period"), int(p, "slowk_period"), int(p, "slowd_period")).unwrap();
            let lb = st.lookback();
            (
                lb,
                collect(["slowk", "slowd"], n, |i| {
                    let x = st.update(h[i], l[i], c[i]);
                    [x.slowk, x.slowd]
                }),
            )
        }
        "CCI" => {
            let mut st = ta::CciStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "WILLR" => {
            let mut st = ta::WillrStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "MFI" => {
            let mut st = ta::MfiStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i], v[i])]))
        }
        "OBV" => {
            let mut st = ta::ObvStream::new();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i], v[i])]))
        }
        "ROC" => {
            let mut st = ta::RocStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "MOM" => {
            let mut st = ta::MomStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "EMA" => {
            let mut st = ta::EmaStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "SMA" => {
            let mut st = ta::SmaStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "TRIX" => {
            let mut st = ta::TrixStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "ULTOSC" => {
            let mut st =
                ta::UltOscStream::new(int(p, "timeperiod1"), int(p, "timeperiod2"), int(p, "timeperiod3")).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i])]))
        }
        "AROONOSC" => {
            let mut st = ta::AroonOscStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i])]))
        }
        "CMO" => {
            let mut st = ta::CmoStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "PPO" => {
            let mut st = ta::PpoStream::new(int(p, "fastperiod"), int(p, "slowperiod")).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "STOCHRSI" => {
            let mut st = ta::StochRsiStream::new(tp(), int(p, "fastk_period"), int(p, "fastd_period")).unwrap();
            let lb = st.lookback();
            (
                lb,
                collect(["fastk", "fastd"], n, |i| {
                    let x = st.update(c[i]);
                    [x.fastk, x.fastd]
                }),
            )
        }
        "ADOSC" => {
            let mut st = ta::AdOscStream::new(int(p, "fastperiod"), int(p, "slowperiod")).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(h[i], l[i], c[i], v[i])]))
        }
        "LINEARREG_SLOPE" => {
            let mut st = ta::LinearRegSlopeStream::new(tp()).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        "STDDEV" => {
            let mut st = ta::StddevStream::new(tp(), real(p, "nbdev")).unwrap();
            (st.lookback(), collect(["real"], n, |i| [st.update(c[i])]))
        }
        other => panic!("no stream for {other}"),
    };
    (lookback, out)
}

/// The streaming form for a golden call; also checks `lookback()` against
/// the NaN prefix it produces on this (finite) series.
fn stream(func: &str, p: &Value, s: &Series) -> Outputs {
    let (lookback, out) = stream_with_lookback(func, p, s);
    let n = s.close.len();
    for (name, col) in &out {
        let prefix = col.iter().take_while(|x| x.is_nan()).count();
        assert_eq!(prefix, lookback.min(n), "{func} {p} {name} on {}: NaN prefix vs lookback()", s.name);
    }
    out
}

fn close_enough(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= 1e-9 * (1.0 + reference.abs())
}

/// Compares two aligned outputs: NaN exactly where `reference` is NaN, and
/// every other value within `1e-9 · (1 + |ref|)`. Returns a description of
/// the first few failures.
fn compare(ours: &[f64], reference: &[f64]) -> Vec<String> {
    let mut errs = Vec::new();
    if ours.len() != reference.len() {
        errs.push(format!("length {} vs {}", ours.len(), reference.len()));
        return errs;
    }
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let ok = if b.is_nan() { a.is_nan() } else { close_enough(a, b) };
        if !ok && errs.len() < 5 {
            errs.push(format!("[{i}] ours {a:?} ref {b:?}"));
        }
    }
    errs
}

const ALL: [&str; 25] = [
    "RSI",
    "MACD",
    "BBANDS",
    "NATR",
    "ADX",
    "PLUS_DI",
    "MINUS_DI",
    "STOCH",
    "CCI",
    "WILLR",
    "MFI",
    "OBV",
    "ROC",
    "MOM",
    "EMA",
    "SMA",
    "TRIX",
    "ULTOSC",
    "AROONOSC",
    "CMO",
    "PPO",
    "STOCHRSI",
    "ADOSC",
    "LINEARREG_SLOPE",
    "STDDEV",
];

/// The module replicates TA-Lib 0.8's arithmetic operation for operation
/// (seeds, running sums and their rebuilds, fused multiply-adds, zero tests),
/// so every function must equal TA-Lib bit for bit, not just within the
/// tolerance — a stricter check than the acceptance criterion, and portable:
/// only IEEE-exact operations (+ − × ÷ √, fma, abs, comparisons) are used.
#[test]
fn goldens_bit_exact() {
    let doc = load();
    let mut failures = Vec::new();
    for sv in doc["series"].as_array().expect("series") {
        let s = series_of(sv);
        for call in sv["calls"].as_array().expect("calls") {
            let func = call["func"].as_str().expect("func");
            let params = &call["params"];
            for (name, col) in batch(func, params, &s) {
                let reference = floats(&call["outputs"][name]);
                let bad = col
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| !(a.is_nan() && b.is_nan()) && a.to_bits() != b.to_bits());
                if let Some(i) = bad {
                    failures
                        .push(format!("{} {func} {params} {name}: [{i}] {:?} vs {:?}", s.name, col[i], reference[i]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn goldens_match_talib() {
    let doc = load();
    assert_eq!(doc["ta_lib_python"], "0.8.2");
    let series = doc["series"].as_array().expect("series");
    assert!(series.len() >= 2);
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut checked_values = 0usize;
    for sv in series {
        let s = series_of(sv);
        for call in sv["calls"].as_array().expect("calls") {
            let func = call["func"].as_str().expect("func");
            let params = &call["params"];
            *seen.entry(func.to_string()).or_default() += 1;
            let ours = batch(func, params, &s);
            let refs = call["outputs"].as_object().expect("outputs");
            assert_eq!(ours.len(), refs.len(), "{func}: number of outputs");
            for (name, col) in &ours {
                let reference = floats(&refs[*name]);
                checked_values += reference.iter().filter(|x| !x.is_nan()).count();
                let errs = compare(col, &reference);
                if !errs.is_empty() {
                    failures.push(format!("{} {func} {params} {name}: {errs:?}", s.name));
                }
            }
        }
    }
    for f in ALL {
        assert!(seen.get(f).copied().unwrap_or(0) >= 2, "{f} must be checked on at least two series");
    }
    assert!(checked_values > 10_000, "too few values checked");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Streaming gives what batch gives, on every golden call.
#[test]
fn stream_equals_batch_on_goldens() {
    let doc = load();
    let mut failures = Vec::new();
    for sv in doc["series"].as_array().expect("series") {
        let s = series_of(sv);
        for call in sv["calls"].as_array().expect("calls") {
            let func = call["func"].as_str().expect("func");
            let params = &call["params"];
            let b = batch(func, params, &s);
            let st = stream(func, params, &s);
            for ((name, x), (_, y)) in b.iter().zip(&st) {
                let errs = compare(y, x);
                if !errs.is_empty() {
                    failures.push(format!("{} {func} {params} {name}: {errs:?}", s.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small seeded generator (splitmix64), so the test needs no rand crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (sum of uniforms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// A random OHLCV series with flat stretches (h = l = c, volume 0), stretches
/// of zero volume, and runs of repeated highs and lows.
fn random_series(seed: u64, n: usize) -> Series {
    let mut rng = Rng(seed);
    let mut price = 20.0 + 200.0 * rng.unit();
    let (mut high, mut low, mut close, mut volume) = (vec![], vec![], vec![], vec![]);
    let mut flat_left = 0usize;
    let mut novol_left = 0usize;
    for _ in 0..n {
        if flat_left == 0 && rng.unit() < 0.03 {
            flat_left = 1 + (rng.unit() * 60.0) as usize;
        }
        if novol_left == 0 && rng.unit() < 0.03 {
            novol_left = 1 + (rng.unit() * 20.0) as usize;
        }
        if flat_left > 0 {
            flat_left -= 1;
            high.push(price);
            low.push(price);
            close.push(price);
            volume.push(0.0);
            continue;
        }
        let open = price;
        price *= (0.003 * rng.normal()).exp();
        // Quantize to a tick so that equal highs/lows occur.
        price = (price * 100.0).round() / 100.0;
        let hi = open.max(price) + (rng.unit() * 3.0).floor() * 0.01;
        let lo = open.min(price) - (rng.unit() * 3.0).floor() * 0.01;
        high.push(hi);
        low.push(lo);
        close.push(price);
        if novol_left > 0 {
            novol_left -= 1;
            volume.push(0.0);
        } else {
            volume.push((rng.unit() * 50.0).floor());
        }
    }
    Series { name: format!("random seed {seed}"), high, low, close, volume }
}

/// Every function, with the feature table's parameters and small ones.
fn random_calls() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    let mut v = Vec::new();
    for p in [2, 6, 14, 24] {
        v.push(("RSI", json!({ "timeperiod": p })));
        v.push(("CMO", json!({ "timeperiod": p })));
        v.push(("ADX", json!({ "timeperiod": p })));
        v.push(("CCI", json!({ "timeperiod": p })));
        v.push(("WILLR", json!({ "timeperiod": p })));
        v.push(("MFI", json!({ "timeperiod": p })));
        v.push(("AROONOSC", json!({ "timeperiod": p })));
        v.push(("LINEARREG_SLOPE", json!({ "timeperiod": p })));
        v.push(("STDDEV", json!({ "timeperiod": p, "nbdev": 1.5 })));
    }
    for p in [1, 3, 14, 30] {
        v.push(("NATR", json!({ "timeperiod": p })));
        v.push(("PLUS_DI", json!({ "timeperiod": p })));
        v.push(("MINUS_DI", json!({ "timeperiod": p })));
        v.push(("ROC", json!({ "timeperiod": p })));
        v.push(("MOM", json!({ "timeperiod": p })));
        v.push(("EMA", json!({ "timeperiod": p })));
        v.push(("SMA", json!({ "timeperiod": p })));
        v.push(("TRIX", json!({ "timeperiod": p })));
    }
    v.push(("OBV", json!({})));
    for (f, s, g) in [(12, 26, 9), (3, 2, 1), (2, 2, 5)] {
        v.push(("MACD", json!({ "fastperiod": f, "slowperiod": s, "signalperiod": g })));
        v.push(("PPO", json!({ "fastperiod": f, "slowperiod": s, "matype": 0 })));
        v.push(("ADOSC", json!({ "fastperiod": f, "slowperiod": s })));
    }
    for (p, u, d) in [(20, 2.0, 2.0), (2, 1.0, 3.0)] {
        v.push(("BBANDS", json!({ "timeperiod": p, "nbdevup": u, "nbdevdn": d, "matype": 0 })));
    }
    for (k, sk, sd) in [(14, 3, 3), (1, 1, 1), (5, 1, 7)] {
        v.push((
            "STOCH",
            json!({ "fastk_period": k, "slowk_period": sk, "slowk_matype": 0,
                    "slowd_period": sd, "slowd_matype": 0 }),
        ));
        v.push((
            "STOCHRSI",
            json!({ "timeperiod": k + 1, "fastk_period": sk + 2, "fastd_period": sd,
                    "fastd_matype": 0 }),
        ));
    }
    for (a, b, c) in [(7, 14, 28), (1, 2, 3), (9, 2, 4)] {
        v.push(("ULTOSC", json!({ "timeperiod1": a, "timeperiod2": b, "timeperiod3": c })));
    }
    v
}

/// Streaming equals batch on seeded random series with flat stretches and
/// zero volumes, for every function.
#[test]
fn stream_equals_batch_on_random_series() {
    let calls = random_calls();
    let covered: std::collections::BTreeSet<&str> = calls.iter().map(|(f, _)| *f).collect();
    assert_eq!(covered.len(), ALL.len());
    let mut failures = Vec::new();
    for seed in 0..8u64 {
        let s = random_series(seed, 700);
        for (func, params) in &calls {
            let b = batch(func, params, &s);
            let st = stream(func, params, &s);
            for ((name, x), (_, y)) in b.iter().zip(&st) {
                let errs = compare(y, x);
                if !errs.is_empty() {
                    failures.push(format!("{} {func} {params} {name}: {errs:?}", s.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A stream cloned mid-series continues exactly like the original.
#[test]
fn cloned_stream_continues_identically() {
    let s = random_series(99, 400);
    let mut a = ta::MacdStream::new(12, 26, 9).unwrap();
    let mut r = ta::AdxStream::new(14).unwrap();
    for i in 0..200 {
        a.update(s.close[i]);
        r.update(s.high[i], s.low[i], s.close[i]);
    }
    let mut b = a.clone();
    let mut q = r.clone();
    for i in 200..400 {
        assert_eq!(a.update(s.close[i]), b.update(s.close[i]));
        let x = r.update(s.high[i], s.low[i], s.close[i]);
        assert_eq!(x, q.update(s.high[i], s.low[i], s.close[i]));
    }
}

#[test]
fn flat_series_conventions() {
    // A flat series: TA-Lib gives RSI 0 (not 50), and 0 for the other
    // zero-denominator ratios.
    let c = vec![10.0; 60];
    let v = vec![0.0; 60];
    let last = |x: Vec<f64>| *x.last().unwrap();
    assert_eq!(last(ta::rsi(&c, 14).unwrap()), 0.0);
    assert_eq!(last(ta::cmo(&c, 14).unwrap()), 0.0);
    assert_eq!(last(ta::willr(&c, &c, &c, 14).unwrap()), 0.0);
    assert_eq!(last(ta::cci(&c, &c, &c, 20).unwrap()), 0.0);
    assert_eq!(last(ta::mfi(&c, &c, &c, &v, 14).unwrap()), 0.0);
    assert_eq!(last(ta::adx(&c, &c, &c, 14).unwrap()), 0.0);
    assert_eq!(last(ta::plus_di(&c, &c, &c, 14).unwrap()), 0.0);
    assert_eq!(last(ta::ultosc(&c, &c, &c, 7, 14, 28).unwrap()), 0.0);
    assert_eq!(last(ta::stddev(&c, 20, 1.0).unwrap()), 0.0);
    assert_eq!(last(ta::stoch(&c, &c, &c, 14, 3, 3).unwrap().slowk), 0.0);
    // OBV starts at the first volume.
    assert_eq!(ta::obv(&[1.0, 1.0], &[7.0, 3.0]).unwrap(), vec![7.0, 7.0]);
}

#[test]
fn lookbacks_match_talib() {
    let s = random_series(5, 300);
    let c = &s.close[..];
    let prefix = |x: &[f64]| x.iter().take_while(|v| v.is_nan()).count();
    assert_eq!(prefix(&ta::rsi(c, 14).unwrap()), 14);
    assert_eq!(prefix(&ta::macd(c, 12, 26, 9).unwrap().macd), 33);
    assert_eq!(prefix(&ta::trix(c, 15).unwrap()), 43);
    assert_eq!(prefix(&ta::stochrsi(c, 14, 5, 3).unwrap().fastk), 20);
    assert_eq!(prefix(&ta::adx(&s.high, &s.low, c, 14).unwrap()), 27, "ADX lookback 2·period − 1");
    assert_eq!(prefix(&ta::stoch(&s.high, &s.low, c, 14, 3, 3).unwrap().slowd), 17);
    assert_eq!(prefix(&ta::ultosc(&s.high, &s.low, c, 7, 14, 28).unwrap()), 28);
    assert_eq!(prefix(&ta::adosc(&s.high, &s.low, c, &s.volume, 3, 10).unwrap()), 9);
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    let x = vec![1.0, 2.0, 3.0];
    // Periods TA-Lib rejects (it answers TA_BAD_PARAM for these).
    assert!(ta::rsi(&x, 1).is_err());
    assert!(ta::rsi(&x, 0).is_err());
    assert!(ta::cmo(&x, 1).is_err());
    assert!(ta::sma(&x, 0).is_err());
    assert!(ta::ema(&x, 0).is_err());
    assert!(ta::mom(&x, 0).is_err());
    assert!(ta::roc(&x, 0).is_err());
    assert!(ta::trix(&x, 0).is_err());
    assert!(ta::stddev(&x, 1, 1.0).is_err());
    assert!(ta::stddev(&x, 5, f64::NAN).is_err());
    assert!(ta::linearreg_slope(&x, 1).is_err());
    assert!(ta::bbands(&x, 1, 2.0, 2.0).is_err());
    assert!(ta::bbands(&x, 5, f64::INFINITY, 2.0).is_err());
    assert!(ta::macd(&x, 1, 26, 9).is_err());
    assert!(ta::macd(&x, 12, 26, 0).is_err());
    assert!(ta::ppo(&x, 12, 1).is_err());
    assert!(ta::stochrsi(&x, 1, 5, 3).is_err());
    assert!(ta::stochrsi(&x, 14, 0, 3).is_err());
    assert!(ta::stochrsi(&x, 14, 5, 0).is_err());
    assert!(ta::adx(&x, &x, &x, 1).is_err());
    assert!(ta::plus_di(&x, &x, &x, 0).is_err());
    assert!(ta::minus_di(&x, &x, &x, 0).is_err());
    assert!(ta::natr(&x, &x, &x, 0).is_err());
    assert!(ta::cci(&x, &x, &x, 1).is_err());
    assert!(ta::willr(&x, &x, &x, 1).is_err());
    assert!(ta::mfi(&x, &x, &x, &x, 1).is_err());
    assert!(ta::aroonosc(&x, &x, 1).is_err());
    assert!(ta::stoch(&x, &x, &x, 0, 3, 3).is_err());
    assert!(ta::stoch(&x, &x, &x, 14, 0, 3).is_err());
    assert!(ta::stoch(&x, &x, &x, 14, 3, 0).is_err());
    assert!(ta::ultosc(&x, &x, &x, 0, 14, 28).is_err());
    assert!(ta::adosc(&x, &x, &x, &x, 1, 10).is_err());
    assert!(ta::rsi(&x, ta::MAX_PERIOD + 1).is_err());
    assert!(ta::RsiStream::new(1).is_err());
    // The message names the parameter.
    let e = ta::stoch(&x, &x, &x, 14, 3, 0).unwrap_err();
    assert!(e.to_string().contains("slowd_period"), "{e}");
    assert_eq!(e, TalibError::BadParam { name: "slowd_period", value: 0.0, min: 1.0, max: ta::MAX_PERIOD as f64 });
    // TA-Lib's smallest accepted periods work.
    assert!(ta::sma(&x, 1).is_ok());
    assert!(ta::plus_di(&x, &x, &x, 1).is_ok());
    assert!(ta::natr(&x, &x, &x, 1).is_ok());
    assert!(ta::macd(&x, 2, 2, 1).is_ok());
}

#[test]
fn mismatched_lengths_are_errors() {
    let a = vec![1.0; 10];
    let b = vec![1.0; 9];
    let e = ta::adx(&a, &a, &b, 14).unwrap_err();
    assert_eq!(e, TalibError::LengthMismatch { name: "close", len: 9, first: "high", expected: 10 });
    assert!(e.to_string().contains("close"));
    assert!(ta::plus_di(&a, &b, &a, 14).is_err());
    assert!(ta::minus_di(&b, &a, &a, 14).is_err());
    assert!(ta::natr(&a, &a, &b, 14).is_err());
    assert!(ta::stoch(&a, &a, &b, 14, 3, 3).is_err());
    assert!(ta::cci(&a, &a, &b, 14).is_err());
    assert!(ta::willr(&a, &a, &b, 14).is_err());
    assert!(ta::mfi(&a, &a, &a, &b, 14).is_err());
    assert!(ta::obv(&a, &b).is_err());
    assert!(ta::ultosc(&a, &b, &a, 7, 14, 28).is_err());
    assert!(ta::aroonosc(&a, &b, 14).is_err());
    assert!(ta::adosc(&a, &a, &a, &b, 3, 10).is_err());
}

#[test]
fn empty_short_and_nan_inputs_never_panic() {
    let s = random_series(11, 120);
    let empty: &[f64] = &[];
    for (func, params) in random_calls() {
        let e = Series { name: "empty".into(), high: vec![], low: vec![], close: vec![], volume: vec![] };
        for (_, col) in batch(func, &params, &e) {
            assert!(col.is_empty());
        }
        // Shorter than the lookback: all NaN, right length.
        let short = Series {
            name: "short".into(),
            high: s.high[..2].to_vec(),
            low: s.low[..2].to_vec(),
            close: s.close[..2].to_vec(),
            volume: s.volume[..2].to_vec(),
        };
        // (`stream` asserts the NaN prefix equals `lookback()`, capped at 2.)
        let st = stream(func, &params, &short);
        for ((name, col), (_, scol)) in batch(func, &params, &short).iter().zip(&st) {
            assert_eq!(col.len(), 2, "{func} {params} {name}");
            assert!(compare(scol, col).is_empty(), "{func} {params} {name}");
        }
        // NaN and infinities in the input: outputs of the right length.
        let mut bad = s.clone();
        bad.close[50] = f64::NAN;
        bad.high[60] = f64::NAN;
        bad.low[61] = f64::INFINITY;
        bad.volume[70] = f64::NAN;
        bad.close[80] = f64::NEG_INFINITY;
        for (_, col) in batch(func, &params, &bad) {
            assert_eq!(col.len(), 120);
        }
        let (_, st) = stream_with_lookback(func, &params, &bad);
        for (_, col) in st {
            assert_eq!(col.len(), 120);
        }
    }
    assert!(ta::sma(empty, 5).unwrap().is_empty());
    // A NaN close poisons RSI's running averages from there on; TA-Lib's
    // `gain + loss > 0` test is then false, so TA-Lib 0.8.2 answers 0 for
    // every later bar (checked against the Python package), and so do we.
    // SMA-based outputs turn NaN instead.
    let mut c = s.close.clone();
    c[40] = f64::NAN;
    let r = ta::rsi(&c, 14).unwrap();
    assert!(r[39].is_finite() && r[39] > 0.0);
    assert!(r[40..].iter().all(|&x| x == 0.0));
    let m = ta::sma(&c, 5).unwrap();
    assert!(m[39].is_finite());
    assert!(m[40..].iter().all(|x| x.is_nan()));
}
