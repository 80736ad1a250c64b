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
    let live_cfg = LiveConfig {
        symbol,
        endpoint: exchange.endpoint(),
        sample_interval: Duration::from_millis(4),
        ..LiveConfig::default()
    };
    let live = LiveRunner::start(live_cfg, engine.clone(), Some(observer)).unwrap();
    let extras = Extras { live: Some(live.hub()), launcher: None, metrics: Some(metrics) };
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
