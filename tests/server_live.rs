//! Live mode for real: the simulator served as a loopback exchange (Binance's
//! protocol), the client and the feature pipeline, small generated models,
//! and the server streaming decisions. Decisions come on every tick once
//! warm, their ids are scored through `/outcome`, and `adaptive` re-weights
//! the models from those outcomes.

mod server_util;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use quorum::ensemble::{ConsensusStrategy, EnsembleConfig, ModelType, ModelWeight};
use quorum::market::{ExchangeConfig, LoopbackExchange, SimConfig};
use quorum::server::live::{LiveConfig, LiveObserver, LiveRunner};
use quorum::server::{Extras, Metrics, Server, ServerConfig};
use serde_json::{json, Value};
use server_util::*;

/// Reads server-sent events from `path` until `want` decision events arrived.
async fn read_events(addr: std::net::SocketAddr, path: &str, want: usize) -> Vec<Value> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(format!("http://{addr}{path}").parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let frame = tokio::time::timeout(Duration::from_secs(120), body.frame())
            .await
            .expect("a decision within 2 minutes")
            .expect("the stream stays open")
            .unwrap();
        let Ok(data) = frame.into_data() else { continue };
        buf.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let mut kind = "message";
            let mut id = None;
            let mut payload = None;
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(i) = line.strip_prefix("id: ") {
                    id = Some(i.parse::<u64>().unwrap());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    payload = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            assert_ne!(kind, "lagged", "the test reader fell behind: {event}");
            if kind == "decision" {
                let v = payload.expect("a decision event has data");
                assert_eq!(Some(v["id"].as_u64().unwrap()), id, "the SSE id is the result id");
                events.push(v);
            }
        }
    }
    events
}

/// docs/consensus.md's adaptive score from a model's status line.
fn adaptive_score(model: &Value) -> f64 {
    let acc = model["accuracy"].as_f64().unwrap_or(0.5);
    let pf = model["profit_factor"].as_f64().unwrap_or(1.0);
    ((acc - 1.0 / 3.0) / (2.0 / 3.0)).max(0.05) * pf.min(3.0) / 3.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_decisions_on_every_tick_are_scored_and_move_the_adaptive_weights() {
    // One simulated tick per second of exchange time: every tick completes a
    // 1 s candle, so the 200-candle warm-up takes 200 ticks, not 2000.
    let sim = SimConfig { interval_ms: 1000, ..SimConfig::default() };
    let symbol = sim.symbol.clone();
    let ex_cfg = ExchangeConfig {
        sim,
        tick_interval: Duration::from_millis(4),
        wait_for_client: true,
        truth_capacity: 1_000,
        ..ExchangeConfig::default()
    };
    let exchange = LoopbackExchange::start("127.0.0.1:0".parse().unwrap(), ex_cfg).await.unwrap();

    // Every model eligible (min_confidence 0), so every outcome scores all three.
    let ensemble = EnsembleConfig {
        strategy: ConsensusStrategy::Adaptive,
        model_weights: vec![
            ModelWeight::new(ModelType::CnnLstm, 0.4),
            ModelWeight::new(ModelType::MpdTransformer, 0.35),
            ModelWeight::new(ModelType::Tlob, 0.25),
        ],
        ..EnsembleConfig::default()
    };
    let engine = engine_with(&small_configs(), ensemble);
    let metrics = Arc::new(Metrics::default());
    let observer: Arc<dyn LiveObserver> = metrics.clone();
    let live_cfg =
        LiveConfig { sample_interval: Duration::from_millis(4), ..LiveConfig::on(&[symbol], &exchange.endpoint()) };
    let live = LiveRunner::start(live_cfg, engine.clone(), Some(observer)).unwrap();
    let extras = Extras { live: live.hubs(), launcher: None, metrics: Some(metrics) };
    let server_cfg = ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::start(server_cfg, engine, extras).await.unwrap();
    let http = Http::new(server.local_addr());

    // Every tick once warm makes a decision: the ticks of consecutive decisions are consecutive.
    let events = read_events(server.local_addr(), "/api/ensemble/live/stream", 30).await;
    for w in events.windows(2) {
        assert_eq!(w[1]["seq"].as_u64(), Some(w[0]["seq"].as_u64().unwrap() + 1), "a tick without a decision");
        assert!(w[1]["id"].as_u64() > w[0]["id"].as_u64());
    }
    for e in &events {
        let d = &e["decision"];
        assert_eq!(d["predictions"].as_array().unwrap().len(), 3, "{e}");
        assert!(d["skipped"].as_object().unwrap().is_empty(), "{e}");
        assert!(e["tick_to_decision_us"].as_f64().unwrap() > 0.0);
        assert!(e["tick"]["mid"].as_f64().unwrap() > 0.0);
    }
    let status = http.get("/api/ensemble/live/status").await.json();
    assert_eq!(status["warm"], true, "{status}");
    assert_eq!(status["failed_ticks"], 0, "{status}");
    assert_eq!(status["feature_window"], json!([60, 60]));
    assert_eq!(status["lob_window"], json!([100, 100]));
    assert_eq!(http.get("/health/ready").await.status, 200);
    let latest = http.get("/api/ensemble/live/latest").await;
    assert_eq!(latest.status, 200);
    assert!(latest.json()["id"].as_u64() >= events.last().unwrap()["id"].as_u64());
    let history = http.get("/api/ensemble/live/history?limit=5").await.json();
    assert_eq!(history.as_array().unwrap().len(), 5);

    // Score every decision against MPD's call: MPD is always right, and its
    // position earns 10 bps whenever it takes one.
    let mpd_direction = |e: &Value| {
        e["decision"]["predictions"].as_array().unwrap().iter().find(|p| p["model_type"] == "mpd_transformer").unwrap()
            ["direction"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for e in &events {
        let dir = mpd_direction(e);
        let ret = match dir.as_str() {
            "up" => 0.001,
            "down" => -0.001,
            _ => 0.0,
        };
        let body = json!({"result_id": e["id"], "realized_direction": dir, "realized_return": ret});
        let a = http.post_json("/api/ensemble/outcome", &body).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let twice = json!({"result_id": events[0]["id"], "realized_direction": "up", "realized_return": 0.0});
    assert_eq!(http.post_json("/api/ensemble/outcome", &twice).await.status, 409);

    let models = http.get("/api/ensemble/status").await.json()["models"].clone();
    // 30 outcomes: the first report comes with the 10th, then one per outcome.
    for m in ["cnn_lstm", "mpd_transformer", "tlob"] {
        assert_eq!(models[m]["performance_reports"], 21, "{models}");
    }
    assert_eq!(models["mpd_transformer"]["accuracy"], 1.0, "{models}");
    let scores: Vec<f64> =
        ["cnn_lstm", "mpd_transformer", "tlob"].iter().map(|m| adaptive_score(&models[*m])).collect();
    let untracked = adaptive_score(&json!({}));
    assert!(scores[1] != untracked, "MPD's adaptive score moved from {untracked}: {models}");

    // A decision made after the scoring uses the new scores: its contributions
    // are w·p[d] / Σ w·p[d] with w = weight × score.
    let after_id = http.get("/api/ensemble/status").await.json()["last_prediction"]["id"].as_u64().unwrap();
    let next = loop {
        let e = read_events(server.local_addr(), "/api/ensemble/live/stream", 1).await.remove(0);
        if e["id"].as_u64().unwrap() > after_id {
            break e;
        }
    };
    let d = &next["decision"];
    let di = match d["direction"].as_str().unwrap() {
        "down" => 0,
        "neutral" => 1,
        _ => 2,
    };
    let weights = [0.4, 0.35, 0.25];
    let names = ["cnn_lstm", "mpd_transformer", "tlob"];
    let mass: Vec<f64> = names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = d["predictions"].as_array().unwrap().iter().find(|p| p["model_type"] == *m).unwrap();
            weights[i] * scores[i] * p["probabilities"][di].as_f64().unwrap()
        })
        .collect();
    let total: f64 = mass.iter().sum();
    for (i, m) in names.iter().enumerate() {
        let got = d["model_contributions"][m].as_f64().unwrap();
        assert!(
            (got - mass[i] / total).abs() < 1e-9,
            "{m}: contribution {got} vs {} from the scores {scores:?}",
            mass[i] / total
        );
    }

    let metrics = http.get("/metrics").await.text();
    assert!(metrics.contains("quorum_live_warm 1\n"), "{metrics}");
    assert!(metrics.contains("quorum_collector_resyncs_total"), "{metrics}");
    let count_line = metrics.lines().find(|l| l.starts_with("quorum_live_tick_to_decision_seconds_count")).unwrap();
    assert!(count_line.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 31, "{count_line}");

    // Stopping the server ends an open event stream cleanly (the last chunk
    // arrives), instead of leaving it to be cut off.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/api/ensemble/live/stream", server.local_addr());
    let mut stream = client.get(url.parse().unwrap()).await.unwrap().into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b": connected\n\n");
    let stopping = tokio::spawn(server.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.frame().await {
                None => break Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e.to_string()),
            }
        }
    })
    .await
    .expect("the stream ends when the server stops");
    assert_eq!(ended, Ok(()));
    stopping.await.unwrap();
    live.stop().await;
    exchange.shutdown().await;
}

/// The live pipeline without the network, driven by the simulator directly.
#[test]
fn live_state_waits_for_every_input_a_model_reads_and_refills_after_a_break() {
    use quorum::market::{MarketSimulator, Trade};
    use quorum::server::live::{LiveHub, LiveState};
    use std::time::Instant;

    // TLOB alone, with aux: its lob window fills at tick 100, but it must also
    // wait for the first feature vector (after 200 one-second candles).
    let ensemble =
        EnsembleConfig { model_weights: vec![ModelWeight::new(ModelType::Tlob, 1.0)], ..EnsembleConfig::default() };
    let engine = engine_with(&small_configs()[1..2], ensemble);
    let hub = LiveHub::new("SIMUSDT", 100);
    let mut state = LiveState::new(engine, hub.clone(), None);
    let mut sim = MarketSimulator::new(SimConfig { interval_ms: 1000, ..SimConfig::default() }).unwrap();
    let mut step = |state: &mut LiveState| {
        let view = sim.step().unwrap();
        let trades: Vec<Trade> = view.trades.iter().map(|t| t.to_trade()).collect();
        let snap = *view.snapshot;
        state.on_sample(&trades, &snap, Instant::now())
    };
    let mut candles_before = 0;
    let mut first = None;
    for tick in 1..=1000u64 {
        if let Some(e) = step(&mut state) {
            first = Some((tick, e));
            break;
        }
        candles_before = hub.status().completed_candles;
    }
    let (tick, entry) = first.expect("a decision within 1000 ticks");
    assert!(tick > 100, "decided at tick {tick}, before the lob window was full");
    assert!(candles_before < 200, "it waited for the features, not the book: {candles_before} candles before");
    let v: Value = serde_json::from_str(&entry.json).unwrap();
    assert_eq!(v["decision"]["predictions"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["decision"]["skipped"].as_object().unwrap().is_empty(), "{v}");
    for _ in 0..5 {
        assert!(step(&mut state).is_some(), "every tick once warm decides");
    }
    // After a break the book window refills: 99 ticks without a decision, then one.
    state.break_windows();
    assert!(!hub.is_warm());
    for k in 1..100 {
        assert!(step(&mut state).is_none(), "a decision {k} ticks after the break");
    }
    assert!(step(&mut state).is_some(), "the 100th tick after the break decides");
    assert_eq!(hub.counters().window_breaks, 1);
}

/// The parts of a live record that say what was decided (not when, nor under which id).
fn decided(json: &str) -> Value {
    let mut v: Value = serde_json::from_str(json).unwrap();
    let d = v["decision"].as_object_mut().unwrap();
    for k in ["id", "timestamp", "timings"] {
        d.remove(k);
    }
    for p in d["predictions"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("timestamp");
    }
    json!({"symbol": v["symbol"], "seq": v["seq"], "tick": v["tick"], "decision": v["decision"]})
}

/// #19, "many symbols, one forward": several symbols decided together (one
/// forward per model, batch = symbols) decide exactly what each decides
/// alone, at the models' default sizes, in every precision this CPU runs.
#[test]
fn symbols_decided_together_decide_what_each_decides_alone() {
    use quorum::backend::Precision;
    use quorum::market::{MarketSimulator, Trade};
    use quorum::model::{ModelConfig, ModelKind};
    use quorum::server::engine::{model_type, Engine};
    use quorum::server::live::{decide_together, LiveHub, LiveState};
    use quorum::Cpu;
    use std::time::Instant;

    const SYMBOLS: usize = 3;
    let engine_at = |precision: Precision| -> Option<Arc<Engine>> {
        let be = Cpu::with_precision(precision).ok()?;
        let engine = Engine::new(be, EnsembleConfig::default()).unwrap();
        for kind in ModelKind::ALL {
            let config = ModelConfig::default_for(kind);
            engine.load_weights(model_type(kind), weights(&config, 1.0)).unwrap();
        }
        Some(Arc::new(engine))
    };
    let mut ran = Vec::new();
    for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
        let (Some(together), Some(alone)) = (engine_at(precision), engine_at(precision)) else {
            println!("{}: this CPU does not run it, skipped", precision.name());
            continue;
        };
        ran.push(precision.name());
        // Each market feeds two pipelines: one set decides together, the other one symbol at a time.
        let mut sims: Vec<MarketSimulator> = (0..SYMBOLS as u64)
            .map(|k| {
                let symbol = format!("SIM{}USDT", k + 1);
                MarketSimulator::new(SimConfig { interval_ms: 1000, seed: 7 + k, symbol, ..SimConfig::default() })
                    .unwrap()
            })
            .collect();
        let states = |engine: &Arc<Engine>| -> Vec<LiveState> {
            (0..SYMBOLS)
                .map(|k| LiveState::new(engine.clone(), LiveHub::new(&format!("SIM{}USDT", k + 1), 10), None))
                .collect()
        };
        let (mut st_t, mut st_a) = (states(&together), states(&alone));
        let mut compared = 0;
        for _ in 0..300 {
            // This tick's sample of each market, and whether its pipelines are warm.
            let mut snaps = Vec::new();
            for (k, sim) in sims.iter_mut().enumerate() {
                let view = sim.step().unwrap();
                let trades: Vec<Trade> = view.trades.iter().map(|t| t.to_trade()).collect();
                let snap = *view.snapshot;
                let warm = st_t[k].advance(&trades, &snap).warm;
                assert_eq!(warm, st_a[k].advance(&trades, &snap).warm);
                snaps.push((warm, snap));
            }
            // Alone: each warm symbol decides by itself.
            let mut alone_json = Vec::new();
            for (k, (warm, snap)) in snaps.iter().enumerate() {
                if *warm {
                    let (entry, _) = st_a[k].decide(snap, Instant::now()).expect("a warm pipeline decides");
                    alone_json.push(decided(&entry.json));
                }
            }
            // Together: one engine call for every warm symbol.
            let mut ticks: Vec<(&mut LiveState, &quorum::market::Snapshot, Instant)> = st_t
                .iter_mut()
                .zip(&snaps)
                .filter(|(_, (warm, _))| *warm)
                .map(|(s, (_, snap))| (s, snap, Instant::now()))
                .collect();
            let published = decide_together(&mut ticks);
            let together_json: Vec<Value> =
                published.iter().map(|p| decided(&p.as_ref().expect("a warm pipeline decides").0.json)).collect();
            assert_eq!(together_json.len(), alone_json.len());
            for (t, a) in together_json.iter().zip(&alone_json) {
                assert_eq!(t["decision"]["predictions"].as_array().unwrap().len(), 3, "{t}");
                assert_eq!(t, a, "{}: decided together vs alone", precision.name());
            }
            compared += together_json.len();
        }
        assert!(compared >= SYMBOLS * 30, "{}: only {compared} decisions compared", precision.name());
        println!("{}: {compared} decisions identical together and alone", precision.name());
    }
    assert!(ran.contains(&"f32"), "f32 always runs");
}

/// A batch of samples where one is refused and one lacks the book: the
/// refused one gets its error naming the field, the one without a book is
/// decided without TLOB, and the rest are decided as they are alone.
#[test]
fn predict_many_refuses_only_the_bad_sample() {
    use quorum::server::engine::EngineInputs;

    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let sample = |seed: u64| {
        let (f, l, a) = inputs(seed);
        EngineInputs { features: Some(f), lob: Some(l), aux: Some(a) }
    };
    let mut bad = sample(2);
    bad.lob.as_mut().unwrap()[85] = f32::NAN;
    let no_book = EngineInputs { lob: None, aux: None, ..sample(3) };
    let batch = vec![sample(1), bad, no_book.clone(), sample(4)];
    let answers = engine.predict_many(batch);
    assert_eq!(answers.len(), 4);
    let err = answers[1].as_ref().unwrap_err();
    assert_eq!(err.field().as_deref(), Some("lob[1][1][1]"), "{err}");
    for (i, seed_or_input) in [(0, sample(1)), (2, no_book), (3, sample(4))] {
        let together = answers[i].as_ref().unwrap();
        let alone = engine.predict(seed_or_input).unwrap();
        assert_eq!(together.predictions.len(), alone.predictions.len(), "sample {i}");
        for (t, a) in together.predictions.iter().zip(&alone.predictions) {
            assert_eq!((t.model_type, t.probabilities, t.confidence), (a.model_type, a.probabilities, a.confidence));
            assert_eq!(t.expected_return.to_bits(), a.expected_return.to_bits());
        }
        assert_eq!(together.skipped, alone.skipped, "sample {i}");
        assert_eq!(together.result.probabilities, alone.result.probabilities, "sample {i}");
    }
    assert_eq!(answers[2].as_ref().unwrap().skipped[&ModelType::Tlob].reason, "missing_input");
    assert_eq!(answers[0].as_ref().unwrap().predictions.len(), 3);
    // The consensus numbered the decided samples in order; the refused one took no id.
    let ids: Vec<u64> = [0, 2, 3].iter().map(|&i| answers[i].as_ref().unwrap().result.id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

/// `serve --live A,B` end to end: two exchanges, one pipeline deciding both
/// symbols every tick, and the live endpoints choosing a symbol by `?symbol=`
/// (required once there are several, refused by name when unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_symbols_are_followed_together_and_served_by_name() {
    use quorum::server::live::LiveMarket;

    let mut exchanges = Vec::new();
    let mut markets = Vec::new();
    for (k, symbol) in ["AAAUSDT", "BBBUSDT"].iter().enumerate() {
        let sim =
            SimConfig { interval_ms: 1000, seed: 11 + k as u64, symbol: symbol.to_string(), ..SimConfig::default() };
        let ex_cfg = ExchangeConfig {
            sim,
            tick_interval: Duration::from_millis(4),
            wait_for_client: true,
            truth_capacity: 100,
            ..ExchangeConfig::default()
        };
        let ex = LoopbackExchange::start("127.0.0.1:0".parse().unwrap(), ex_cfg).await.unwrap();
        markets.push(LiveMarket { symbol: symbol.to_string(), endpoint: ex.endpoint() });
        exchanges.push(ex);
    }
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let live_cfg = LiveConfig { markets, sample_interval: Duration::from_millis(4), ..LiveConfig::default() };
    let live = LiveRunner::start(live_cfg, engine.clone(), None).unwrap();
    let extras = Extras { live: live.hubs(), launcher: None, metrics: None };
    let server_cfg = ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::start(server_cfg, engine, extras).await.unwrap();
    let http = Http::new(server.local_addr());

    let events = read_events(server.local_addr(), "/api/ensemble/live/stream?symbol=bbbusdt", 3).await;
    assert!(events.iter().all(|e| e["symbol"] == "BBBUSDT"), "{events:?}");
    for symbol in ["AAAUSDT", "BBBUSDT"] {
        let latest = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let a = http.get(&format!("/api/ensemble/live/latest?symbol={symbol}")).await;
                if a.status == 200 {
                    break a.json();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("each symbol decides");
        assert_eq!(latest["symbol"], symbol, "{latest}");
        assert_eq!(latest["decision"]["predictions"].as_array().unwrap().len(), 3, "{latest}");
        let status = http.get(&format!("/api/ensemble/live/status?symbol={symbol}")).await.json();
        assert_eq!((status["symbol"].as_str(), status["warm"].as_bool()), (Some(symbol), Some(true)), "{status}");
        let history = http.get(&format!("/api/ensemble/live/history?symbol={symbol}&limit=2")).await.json();
        assert!(history.as_array().unwrap().iter().all(|e| e["symbol"] == symbol), "{history}");
    }
    // Without a symbol, with several followed: refused, naming the field and the symbols.
    for path in ["/api/ensemble/live/latest", "/api/ensemble/live/status", "/api/ensemble/live/stream"] {
        let a = http.get(path).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text());
        let body = a.json()["error"].clone();
        assert_eq!(body["field"], "symbol", "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("AAAUSDT, BBBUSDT"), "{path}: {body}");
    }
    let unknown = http.get("/api/ensemble/live/latest?symbol=CCCUSDT").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["error"]["code"], "unknown_symbol");
    let extra = http.get("/api/ensemble/live/latest?symbol=AAAUSDT&limit=3").await;
    assert_eq!((extra.status, extra.json()["error"]["field"].as_str()), (400, Some("limit")), "{}", extra.text());
    let ready = http.get("/health/ready").await;
    assert_eq!(ready.status, 200, "both symbols warm: {}", ready.text());
    assert_eq!(ready.json()["live_not_warm"], json!([]));
    let metrics = http.get("/metrics").await.text();
    for symbol in ["AAAUSDT", "BBBUSDT"] {
        assert!(metrics.contains(&format!("quorum_live_symbol_warm{{symbol=\"{symbol}\"}} 1\n")), "{metrics}");
    }
    let api = http.get("/openapi.json").await.json();
    for path in ["/api/ensemble/live/latest", "/api/ensemble/live/history", "/api/ensemble/live/stream"] {
        let params = api["paths"][path]["get"]["parameters"].as_array().cloned().unwrap_or_default();
        assert!(params.iter().any(|p| p["name"] == "symbol" && p["in"] == "query"), "{path}: {params:?}");
    }

    server.shutdown().await;
    let counters = live.counters();
    live.stop().await;
    assert!(counters.decisions >= 2 * 3, "{counters:?}");
    for ex in exchanges {
        ex.shutdown().await;
    }
}

/// A TLOB of the `snapshot` input contract, live: each decision reads the
/// window as `to_snapshot_tensor` builds it (the first row's price reference
/// the snapshot before the window, once live mode has one), not the window
/// normalization, and its token cache does not change what it decides.
#[test]
fn a_snapshot_tlob_decides_live_on_each_snapshots_own_rows() {
    use quorum::market::{MarketSimulator, RawLOBSequence, Snapshot, Trade};
    use quorum::model::{LobNormalization, ModelConfig, TlobConfig};
    use quorum::server::engine::EngineInputs;
    use quorum::server::live::{LiveHub, LiveState};
    use std::time::Instant;

    let ModelConfig::Tlob(small) = &small_configs()[1] else { unreachable!() };
    let config = ModelConfig::Tlob(TlobConfig {
        aux_features: 0,
        lob_normalization: LobNormalization::Snapshot,
        ..small.clone()
    });
    let ensemble =
        EnsembleConfig { model_weights: vec![ModelWeight::new(ModelType::Tlob, 1.0)], ..EnsembleConfig::default() };
    let engine = engine_with(std::slice::from_ref(&config), ensemble.clone());
    // The same weights answering windows given whole, apart from the live pipeline.
    let reference = engine_with(&[config], ensemble);
    let hub = LiveHub::new("SIMUSDT", 10);
    let mut state = LiveState::new(engine, hub, None);
    let mut sim = MarketSimulator::new(SimConfig { interval_ms: 1000, ..SimConfig::default() }).unwrap();
    let mut seen: Vec<Snapshot> = Vec::new();
    let tlob_of = |json: &str| -> Value {
        let v: Value = serde_json::from_str(json).unwrap();
        v["decision"]["predictions"][0].clone()
    };
    let mut checked = 0;
    for tick in 1..=130usize {
        let view = sim.step().unwrap();
        let trades: Vec<Trade> = view.trades.iter().map(|t| t.to_trade()).collect();
        let snap = *view.snapshot;
        seen.push(snap);
        let Some(entry) = state.on_sample(&trades, &snap, Instant::now()) else {
            assert!(tick < 100, "tick {tick} warm but undecided");
            continue;
        };
        let window = &seen[seen.len() - 100..];
        let before = seen.len().checked_sub(101).map(|i| &seen[i]);
        let seq = RawLOBSequence::new(window.to_vec()).unwrap();
        let decide = |lob: Vec<f32>| {
            let d = reference.predict_many(vec![EngineInputs { features: None, lob: Some(lob), aux: None }]);
            let d = d.into_iter().next().unwrap().unwrap();
            serde_json::to_value(d.predictions[0]).unwrap()
        };
        let mut live = tlob_of(&entry.json);
        let mut want = decide(seq.to_snapshot_tensor(before));
        let mut window_contract = decide(seq.to_normalized_tensor());
        for v in [&mut live, &mut want, &mut window_contract] {
            v.as_object_mut().unwrap().remove("timestamp");
        }
        assert_eq!(live, want, "tick {tick}");
        assert_ne!(live, window_contract, "tick {tick}: the window normalization would decide the same");
        checked += 1;
    }
    assert!(checked >= 30, "{checked} decisions checked");
}
