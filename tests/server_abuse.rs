//! The server under abuse (issue 15): requests that used to take the process
//! down, read or write outside its folders, or yield an invalid decision.
//! Each test reproduces one probe and checks the answer is a clear 4xx (or a
//! valid decision), that nothing changed and that the server keeps serving.

mod server_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quorum::engine::Engine;
use quorum::ensemble::EnsembleConfig;
use quorum::server::{Extras, LaunchError, Server, ServerConfig, TrainingLauncher};
use quorum::train::{ProgressHandle, TrainingConfig};
use quorum::Cpu;
use serde_json::{json, Value};
use server_util::*;

fn loopback() -> ServerConfig {
    ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() }
}

fn bare_engine() -> Arc<Engine> {
    Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default()).unwrap())
}

async fn start(engine: Arc<Engine>, config: ServerConfig, extras: Extras) -> (Server, Http) {
    let server = Server::start(config, engine, extras).await.unwrap();
    let http = Http::new(server.local_addr());
    (server, http)
}

/// A launcher that only counts the jobs it was asked to start; each job is
/// over at once.
#[derive(Default)]
struct CountingLauncher {
    started: AtomicUsize,
}

impl TrainingLauncher for CountingLauncher {
    fn start(&self, _config: TrainingConfig, _symbol: String) -> Result<ProgressHandle, LaunchError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(ProgressHandle::new())
    }
}

/// Issue 15.1: sizes beyond their documented bounds are refused naming the
/// field, before any job starts; a job within the bounds but over the
/// memory budget is refused too; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_training_requests_are_refused_before_a_job_starts() {
    let launcher = Arc::new(CountingLauncher::default());
    let extras = Extras { launcher: Some(launcher.clone()), ..Extras::default() };
    let (_server, http) = start(bare_engine(), loopback(), extras).await;

    let cnn = |model: Value| json!({"architecture": "cnn_lstm", "symbol": "SIMUSDT", "model_config": model});
    let mpd = |model: Value| json!({"architecture": "mpd_transformer", "symbol": "SIMUSDT", "model_config": model});
    let tlob = |model: Value| json!({"architecture": "tlob", "symbol": "SIMUSDT", "model_config": model});
    let train = |extra: Value| {
        let mut body = json!({"architecture": "cnn_lstm", "symbol": "SIMUSDT"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        // The probe: a 64 TB LSTM.
        (cnn(json!({"lstm_hidden": 2_000_000})), "model_config.lstm_hidden"),
        (cnn(json!({"lstm_layers": 100_000})), "model_config.lstm_layers"),
        (cnn(json!({"conv_channels": [1_000_000]})), "model_config.conv_channels[0]"),
        (cnn(json!({"conv_channels": vec![8; 1000]})), "model_config.conv_channels"),
        (cnn(json!({"conv_kernel": 100_001})), "model_config.conv_kernel"),
        (cnn(json!({"input_features": 10_000_000})), "model_config.input_features"),
        (mpd(json!({"embed_dim": 1_048_576, "num_heads": 8})), "model_config.embed_dim"),
        (mpd(json!({"num_layers": 10_000})), "model_config.num_layers"),
        (mpd(json!({"mlp_ratio": 1e6})), "model_config.mlp_ratio"),
        (mpd(json!({"patch_size": [1, 1]})), "model_config.patch_size"),
        (tlob(json!({"spatial_channels": [8, 1_000_000]})), "model_config.spatial_channels[1]"),
        (tlob(json!({"num_levels": 1_000_000})), "model_config.num_levels"),
        (tlob(json!({"horizons": [10, 30, 1_000_000_000_000u64], "primary_horizon": 30})), "model_config.horizons[2]"),
        (train(json!({"batch_size": 1_000_000_000})), "batch_size"),
        (train(json!({"epochs": 1_000_000_000_000u64})), "epochs"),
        (train(json!({"early_stopping_patience": 1_000_000_000_000u64})), "early_stopping_patience"),
        (train(json!({"walk_forward_splits": 1_000_000})), "walk_forward_splits"),
        (train(json!({"gradient_accumulation_steps": 1_000_000_000})), "gradient_accumulation_steps"),
        (train(json!({"horizon": 1_000_000_000_000u64})), "horizon"),
        (train(json!({"sequence_length": 1_000_000})), "sequence_length"),
        (train(json!({"checkpoint_dir": "x".repeat(5000)})), "checkpoint_dir"),
    ];
    for (body, field) in &cases {
        let a = http.post_json("/api/ensemble/training/start", body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text());
        let (code, f) = a.error();
        assert_eq!((code.as_str(), f.as_deref()), ("invalid_value", Some(*field)), "{body}: {}", a.text());
        let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("at most"), "the message says the bound: {message}");
    }
    assert_eq!(launcher.started.load(Ordering::SeqCst), 0, "no refused body started a job");

    // Every size within its bound, together far over the default budget.
    let huge = json!({
        "architecture": "cnn_lstm", "symbol": "SIMUSDT", "batch_size": 4096, "sequence_length": 1024,
        "model_config": {"sequence_length": 1024, "conv_channels": [4096, 4096], "lstm_hidden": 4096, "lstm_layers": 16},
    });
    let a = http.post_json("/api/ensemble/training/start", &huge).await;
    assert_eq!((a.status, a.error().0.as_str()), (400, "over_memory_budget"), "{}", a.text());
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("--training-memory-mb"), "the message says how to change the budget: {message}");
    assert_eq!(launcher.started.load(Ordering::SeqCst), 0);

    // The server is still up, and a job of sane size starts.
    assert_eq!(http.get("/health/live").await.status, 200);
    let small = json!({
        "architecture": "cnn_lstm", "symbol": "SIMUSDT", "sequence_length": 20,
        "model_config": {"sequence_length": 20, "conv_channels": [16], "lstm_hidden": 16, "lstm_layers": 1},
    });
    let a = http.post_json("/api/ensemble/training/start", &small).await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(launcher.started.load(Ordering::SeqCst), 1);
}

/// Issue 15.1: the budget is the server's setting: a tiny one refuses even
/// the seed's default job, naming the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_memory_budget_is_configurable() {
    let launcher = Arc::new(CountingLauncher::default());
    let extras = Extras { launcher: Some(launcher.clone()), ..Extras::default() };
    let config = ServerConfig { training_memory_budget: 1 << 20, ..loopback() };
    let (_server, http) = start(bare_engine(), config, extras).await;
    let a = http.post("/api/ensemble/training/start", r#"{"architecture": "tlob", "symbol": "BTCUSDT"}"#).await;
    assert_eq!((a.status, a.error().0.as_str()), (400, "over_memory_budget"), "{}", a.text());
    assert!(a.text().contains("1 MiB"), "{}", a.text());
    assert_eq!(launcher.started.load(Ordering::SeqCst), 0);
}

/// Issue 15.6: returns that are valid numbers never give a non-finite (or
/// null) decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_expected_returns_give_a_finite_decision() {
    let (_server, http) = start(bare_engine(), loopback(), Extras::default()).await;
    let pred = |m: &str, r: f64| {
        json!({"model_type": m, "direction": "up", "confidence": 0.9,
               "probabilities": [0.05, 0.05, 0.9], "expected_return": r, "timestamp": 0.0})
    };
    for (a, b) in [(1.7e308, 1.7e308), (-1.7e308, -1.7e308), (f64::MAX, f64::MAX), (1.7e308, -1.7e308)] {
        let body = json!({"predictions": [pred("cnn_lstm", a), pred("tlob", b)]});
        let d = http.post_json("/api/ensemble/predict", &body).await;
        assert_eq!(d.status, 200, "{}", d.text());
        let d = d.json();
        let r = d["expected_return"].as_f64().unwrap_or_else(|| panic!("expected_return is not a number: {d}"));
        assert!(r.is_finite() && r >= a.min(b) && r <= a.max(b), "{r} is outside [{a}, {b}]: {d}");
    }
}
