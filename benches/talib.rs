//! TA-Lib indicator layer: one streaming tick of every indicator of the
//! feature table (docs/features.md rows 75–111), and the batch form of all
//! of them over a day of 1 s candles (86,400 bars).
//!
//! Run: `cargo bench --bench talib`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::features::talib as ta;

const DAY: usize = 86_400;

/// A deterministic random-walk day of OHLCV bars (xorshift, no dependency).
struct Bars {
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
}

fn bars(n: usize) -> Bars {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut unit = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut price = 100.0;
    let mut b = Bars { high: vec![], low: vec![], close: vec![], volume: vec![] };
    for _ in 0..n {
        let open = price;
        price *= 1.0 + 0.001 * (unit() - 0.5);
        b.high.push(open.max(price) + 0.01 * unit());
        b.low.push(open.min(price) - 0.01 * unit());
        b.close.push(price);
        b.volume.push((unit() * 20.0).floor());
    }
    b
}

/// Every stream the feature table needs.
struct TableStreams {
    rsi: [ta::RsiStream; 3],
    macd: ta::MacdStream,
    bbands: ta::BbandsStream,
    natr: ta::NatrStream,
    adx: ta::AdxStream,
    plus_di: ta::PlusDiStream,
    minus_di: ta::MinusDiStream,
    stoch: ta::StochStream,
    cci: ta::CciStream,
    willr: ta::WillrStream,
    mfi: ta::MfiStream,
    obv: ta::ObvStream,
    roc: [ta::RocStream; 2],
    mom: ta::MomStream,
    ema: [ta::EmaStream; 3],
    sma: [ta::SmaStream; 3],
    trix: ta::TrixStream,
    ultosc: ta::UltOscStream,
    aroonosc: ta::AroonOscStream,
    cmo: ta::CmoStream,
    ppo: ta::PpoStream,
    stochrsi: ta::StochRsiStream,
    adosc: ta::AdOscStream,
    slope: ta::LinearRegSlopeStream,
    stddev: ta::StddevStream,
}

impl TableStreams {
    fn new() -> Self {
        Self {
            rsi: [ta::RsiStream::new(6).unwrap(), ta::RsiStream::new(14).unwrap(), ta::RsiStream::new(24).unwrap()],
            macd: ta::MacdStream::new(12, 26, 9).unwrap(),
            bbands: ta::BbandsStream::new(20, 2.0, 2.0).unwrap(),
            natr: ta::NatrStream::new(14).unwrap(),
            adx: ta::AdxStream::new(14).unwrap(),
            plus_di: ta::PlusDiStream::new(14).unwrap(),
            minus_di: ta::MinusDiStream::new(14).unwrap(),
            stoch: ta::StochStream::new(14, 3, 3).unwrap(),
            cci: ta::CciStream::new(20).unwrap(),
            willr: ta::WillrStream::new(14).unwrap(),
            mfi: ta::MfiStream::new(14).unwrap(),
            obv: ta::ObvStream::new(),
            roc: [ta::RocStream::new(10).unwrap(), ta::RocStream::new(30).unwrap()],
            mom: ta::MomStream::new(10).unwrap(),
            ema: [ta::EmaStream::new(9).unwrap(), ta::EmaStream::new(21).unwrap(), ta::EmaStream::new(50).unwrap()],
            sma: [ta::SmaStream::new(20).unwrap(), ta::SmaStream::new(50).unwrap(), ta::SmaStream::new(200).unwrap()],
            trix: ta::TrixStream::new(15).unwrap(),
            ultosc: ta::UltOscStream::new(7, 14, 28).unwrap(),
            aroonosc: ta::AroonOscStream::new(14).unwrap(),
            cmo: ta::CmoStream::new(14).unwrap(),
            ppo: ta::PpoStream::new(12, 26).unwrap(),
            stochrsi: ta::StochRsiStream::new(14, 5, 3).unwrap(),
            adosc: ta::AdOscStream::new(3, 10).unwrap(),
            slope: ta::LinearRegSlopeStream::new(14).unwrap(),
            stddev: ta::StddevStream::new(20, 1.0).unwrap(),
        }
    }

    /// One completed candle through every indicator; returns a checksum so
    /// nothing is optimized away.
    fn tick(&mut self, h: f64, l: f64, c: f64, v: f64) -> f64 {
        let mut acc = 0.0;
        for s in &mut self.rsi {
            acc += s.update(c);
        }
        let m = self.macd.update(c);
        acc += m.macd + m.signal + m.hist;
        let b = self.bbands.update(c);
        acc += b.upper + b.middle + b.lower;
        acc += self.natr.update(h, l, c);
        acc += self.adx.update(h, l, c);
        acc += self.plus_di.update(h, l, c);
        acc += self.minus_di.update(h, l, c);
        let st = self.stoch.update(h, l, c);
        acc += st.slowk + st.slowd;
        acc += self.cci.update(h, l, c);
        acc += self.willr.update(h, l, c);
        acc += self.mfi.update(h, l, c, v);
        acc += self.obv.update(c, v);
        for s in &mut self.roc {
            acc += s.update(c);
        }
        acc += self.mom.update(c);
        for s in &mut self.ema {
            acc += s.update(c);
        }
        for s in &mut self.sma {
            acc += s.update(c);
        }
        acc += self.trix.update(c);
        acc += self.ultosc.update(h, l, c);
        acc += self.aroonosc.update(h, l);
        acc += self.cmo.update(c);
        acc += self.ppo.update(c);
        acc += self.stochrsi.update(c).fastk;
        acc += self.adosc.update(h, l, c, v);
        acc += self.slope.update(c);
        acc += self.stddev.update(c);
        acc
    }
}

/// Every batch call of the feature table over the whole input.
fn batch_all(b: &Bars) -> usize {
    let (h, l, c, v) = (&b.high[..], &b.low[..], &b.close[..], &b.volume[..]);
    let mut n = 0;
    for p in [6, 14, 24] {
        n += ta::rsi(c, p).unwrap().len();
    }
    n += ta::macd(c, 12, 26, 9).unwrap().hist.len();
    n += ta::bbands(c, 20, 2.0, 2.0).unwrap().upper.len();
    n += ta::natr(h, l, c, 14).unwrap().len();
    n += ta::adx(h, l, c, 14).unwrap().len();
    n += ta::plus_di(h, l, c, 14).unwrap().len();
    n += ta::minus_di(h, l, c, 14).unwrap().len();
    n += ta::stoch(h, l, c, 14, 3, 3).unwrap().slowd.len();
    n += ta::cci(h, l, c, 20).unwrap().len();
    n += ta::willr(h, l, c, 14).unwrap().len();
    n += ta::mfi(h, l, c, v, 14).unwrap().len();
    n += ta::obv(c, v).unwrap().len();
    n += ta::roc(c, 10).unwrap().len() + ta::roc(c, 30).unwrap().len();
    n += ta::mom(c, 10).unwrap().len();
    for p in [9, 21, 50] {
        n += ta::ema(c, p).unwrap().len();
    }
    for p in [20, 50, 200] {
        n += ta::sma(c, p).unwrap().len();
    }
    n += ta::trix(c, 15).unwrap().len();
    n += ta::ultosc(h, l, c, 7, 14, 28).unwrap().len();
    n += ta::aroonosc(h, l, 14).unwrap().len();
    n += ta::cmo(c, 14).unwrap().len();
    n += ta::ppo(c, 12, 26).unwrap().len();
    n += ta::stochrsi(c, 14, 5, 3).unwrap().fastk.len();
    n += ta::adosc(h, l, c, v, 3, 10).unwrap().len();
    n += ta::linearreg_slope(c, 14).unwrap().len();
    n += ta::stddev(c, 20, 1.0).unwrap().len();
    n
}

fn bench_stream(cr: &mut Criterion) {
    let b = bars(4096);
    let mut s = TableStreams::new();
    // Warm past every lookback so the measured ticks do the full work.
    for i in 0..1024 {
        s.tick(b.high[i], b.low[i], b.close[i], b.volume[i]);
    }
    let mut i = 1024;
    cr.bench_function("talib/stream_tick_all_table_indicators", |bench| {
        bench.iter(|| {
            i = if i + 1 == b.close.len() { 1024 } else { i + 1 };
            black_box(s.tick(b.high[i], b.low[i], b.close[i], b.volume[i]))
        })
    });
}

fn bench_batch(cr: &mut Criterion) {
    let b = bars(DAY);
    let mut g = cr.benchmark_group("talib/batch_86400");
    g.sample_size(10);
    g.bench_function("all_table_indicators", |bench| bench.iter(|| black_box(batch_all(black_box(&b)))));
    let c = &b.close;
    g.bench_function("rsi_14", |bench| bench.iter(|| black_box(ta::rsi(black_box(c), 14).unwrap())));
    g.bench_function("sma_200", |bench| bench.iter(|| black_box(ta::sma(black_box(c), 200).unwrap())));
    g.bench_function("cci_20", |bench| bench.iter(|| black_box(ta::cci(&b.high, &b.low, black_box(c), 20).unwrap())));
    g.bench_function("stddev_20", |bench| bench.iter(|| black_box(ta::stddev(black_box(c), 20, 1.0).unwrap())));
    g.finish();
}

criterion_group!(benches, bench_stream, bench_batch);
criterion_main!(benches);
