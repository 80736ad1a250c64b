//! The serving path, measured:
//! - `server/predict_binary_3_models`: one predict round trip over loopback
//!   (binary body, the three models at their default configs with generated
//!   weights, CPU backend): client write → decode → models → consensus →
//!   JSON answer → client read;
//! - `server/predict_consensus_json`: the same round trip with given
//!   predictions (consensus only): the server's own overhead;
//! - `live/tick_to_decision_3_models`: one live tick once warm, from a sampled
//!   book to the published decision (features, windows, TLOB tensor, the
//!   three models, consensus, JSON, publish), driven by the simulator directly.
//!
//! `engine/predict_3_models` (printed only) is the same decision called
//! in-process, for the split between the server and the models.
//!
//! Criterion gives the mean and median; each bench also prints the median
//! and p99 of a separate run of timed iterations (criterion has no p99).

#[path = "../tests/server_util/mod.rs"]
mod server_util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::ensemble::EnsembleConfig;
use quorum::market::{MarketSimulator, SimConfig, Trade};
use quorum::model::{ModelConfig, ModelKind};
use quorum::server::engine::{model_type, Engine, EngineInputs};
use quorum::server::live::{LiveHub, LiveState};
use quorum::server::{Extras, Server, ServerConfig};
use quorum::Cpu;
use server_util::{inputs, weights, Http};

fn default_engine(be: Cpu) -> Arc<Engine> {
    let engine = Engine::new(be, EnsembleConfig::default()).unwrap();
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        engine.load_weights(model_type(kind), weights(&config, 1.0)).unwrap();
    }
    Arc::new(engine)
}

fn report(name: &str, mut us: Vec<f64>) {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    println!("{name}: {} runs, median {:.1} µs, p99 {:.1} µs", us.len(), at(0.5), at(0.99));
}

fn server_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let engine = default_engine(Cpu::new());
    // The same decision without HTTP, for the split between the server and
    // the models; and in bf16 (`serve --precision bf16`) where the CPU has it.
    let (f, l, a) = inputs(1);
    let direct = |engine: &Engine| {
        let inputs = EngineInputs { features: Some(f.clone()), lob: Some(l.clone()), aux: Some(a.clone()) };
        let t = Instant::now();
        engine.predict(inputs).unwrap();
        t.elapsed().as_secs_f64() * 1e6
    };
    let mut engines = vec![("engine/predict_3_models (no HTTP)", engine.clone())];
    if let Ok(bf16) = Cpu::with_precision(quorum::backend::Precision::Bf16) {
        engines.push(("engine/predict_3_models bf16 (no HTTP)", default_engine(bf16)));
    }
    for (name, e) in &engines {
        for _ in 0..20 {
            direct(e);
        }
        report(name, (0..300).map(|_| direct(e)).collect());
    }
    let cfg = ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = rt.block_on(Server::start(cfg, engine, Extras::default())).unwrap();
    let http = Http::new(server.local_addr());
    let floats: Vec<f32> = f.iter().chain(&l).chain(&a).copied().collect();
    let binary = |http: &Http| {
        let a = rt.block_on(http.post_binary("/api/ensemble/predict", &floats));
        assert_eq!(a.status, 200, "{}", a.text());
    };
    for _ in 0..20 {
        binary(&http);
    }
    let mut g = c.benchmark_group("server");
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    g.bench_function("predict_binary_3_models", |b| b.iter(|| binary(&http)));
    let preds = serde_json::json!({"predictions": [
        {"model_type": "cnn_lstm", "direction": "up", "confidence": 0.75, "probabilities": [0.1, 0.15, 0.75], "expected_return": 0.002, "timestamp": 0.0},
        {"model_type": "mpd_transformer", "direction": "up", "confidence": 0.68, "probabilities": [0.12, 0.2, 0.68], "expected_return": 0.0018, "timestamp": 0.0},
        {"model_type": "tlob", "direction": "neutral", "confidence": 0.55, "probabilities": [0.2, 0.55, 0.25], "expected_return": 0.0001, "timestamp": 0.0}
    ]})
    .to_string();
    let consensus = |http: &Http| {
        let a = rt.block_on(http.post("/api/ensemble/predict", &preds));
        assert_eq!(a.status, 200);
    };
    g.sample_size(100).measurement_time(Duration::from_secs(5));
    g.bench_function("predict_consensus_json", |b| b.iter(|| consensus(&http)));
    g.finish();

    let timed = |f: &dyn Fn(&Http), n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f(&http);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    };
    report("server/predict_binary_3_models", timed(&binary, 300));
    report("server/predict_consensus_json", timed(&consensus, 2000));
    rt.block_on(server.shutdown());
}

/// A simulator and a warm live pipeline over it.
fn warm_live() -> (MarketSimulator, LiveState, Arc<LiveHub>) {
    // One tick per second of exchange time: the 200-candle warm-up is 200 ticks.
    let mut sim = MarketSimulator::new(SimConfig { interval_ms: 1000, ..SimConfig::default() }).unwrap();
    let hub = LiveHub::new("SIMUSDT", 1000);
    let mut state = LiveState::new(default_engine(Cpu::new()), hub.clone(), None);
    let mut trades: Vec<Trade> = Vec::new();
    for _ in 0..2000 {
        let view = sim.step().unwrap();
        trades.clear();
        trades.extend(view.trades.iter().map(|t| t.to_trade()));
        let snap = *view.snapshot;
        if state.on_sample(&trades, &snap, Instant::now()).is_some() {
            return (sim, state, hub);
        }
    }
    panic!("the live pipeline did not warm up in 2000 ticks");
}

fn tick(sim: &mut MarketSimulator, state: &mut LiveState, trades: &mut Vec<Trade>) -> f64 {
    let view = sim.step().unwrap();
    trades.clear();
    trades.extend(view.trades.iter().map(|t| t.to_trade()));
    let snap = *view.snapshot;
    let t = Instant::now();
    state.on_sample(trades, &snap, t).expect("a warm pipeline decides on every tick");
    t.elapsed().as_secs_f64() * 1e6
}

fn live_benches(c: &mut Criterion) {
    let (mut sim, mut state, _hub) = warm_live();
    let mut trades = Vec::new();
    let mut g = c.benchmark_group("live");
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    g.bench_function("tick_to_decision_3_models", |b| {
        b.iter_custom(|iters| {
            (0..iters).map(|_| Duration::from_secs_f64(tick(&mut sim, &mut state, &mut trades) * 1e-6)).sum()
        })
    });
    g.finish();
    report("live/tick_to_decision_3_models", (0..300).map(|_| tick(&mut sim, &mut state, &mut trades)).collect());
}

criterion_group!(benches, server_benches, live_benches);
criterion_main!(benches);
