//! The server under abuse (issue 15): requests that used to take the process
//! down, read or write outside its folders, or yield an invalid decision.
//! Each test reproduces one probe and checks the answer is a clear 4xx (or a
//! valid decision), that nothing changed and that the server keeps serving.

mod server_util;

use std::sync::Arc;

use quorum::engine::Engine;
use quorum::ensemble::EnsembleConfig;
use quorum::server::{Extras, Server, ServerConfig};
use quorum::Cpu;
use serde_json::json;
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
