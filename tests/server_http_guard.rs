//! The HTTP transport held against a hostile web page and a greedy or broken
//! client (issue 15, items 4, 5 and 7). Here: JSON errors name the repeated
//! or misspelt key.
//!
//! Loopback only; every test opens tens of sockets at most and bounds every
//! wait with a timeout.

mod server_util;

use std::sync::Arc;

use quorum::engine::Engine;
use quorum::ensemble::EnsembleConfig;
use quorum::server::{Extras, Server, ServerConfig};
use quorum::Cpu;
use serde_json::Value;
use server_util::*;

fn loopback() -> ServerConfig {
    ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() }
}

fn bare_engine() -> Arc<Engine> {
    Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default()).unwrap())
}

async fn start(config: ServerConfig) -> (Server, Http) {
    let server = Server::start(config, bare_engine(), Extras::default()).await.unwrap();
    let http = Http::new(server.local_addr());
    (server, http)
}

async fn strategy(http: &Http) -> Value {
    http.get("/api/ensemble/status").await.json()["strategy"].clone()
}

// ---- item 7: every rejection carries the JSON error ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_name_the_duplicate_and_the_unknown_key() {
    let (_server, http) = start(loopback()).await;
    let pred = |extra: &str| {
        format!(
            r#"{{"predictions": [{{{extra}"direction": "up", "confidence": 0.7, "probabilities": [0.1, 0.2, 0.7], "expected_return": 0.001, "timestamp": 0}}]}}"#
        )
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "tlob", "enabled": true, "enabled": false}"#.into(),
            "duplicate_field",
            "enabled",
        ),
        (
            "/api/ensemble/strategy",
            r#"{"strategy": "majority", "strategy": "adaptive"}"#.into(),
            "duplicate_field",
            "strategy",
        ),
        (
            "/api/ensemble/predict",
            pred(r#""model_type": "tlob", "confidence": 0.9, "#),
            "duplicate_field",
            "predictions[0].confidence",
        ),
        // A misspelt key is named, not the key it was meant to be.
        ("/api/ensemble/predict", pred(r#""model_typ": "tlob", "#), "unknown_field", "predictions[0].model_typ"),
        ("/api/ensemble/models/enable", r#"{"model_type": "tlob", "enabld": true}"#.into(), "unknown_field", "enabld"),
        (
            "/api/ensemble/training/start",
            r#"{"architecture": "tlob", "symbl": "BTCUSDT"}"#.into(),
            "unknown_field",
            "symbl",
        ),
        (
            "/api/ensemble/training/start",
            r#"{"architecture": "tlob", "symbol": "BTCUSDT", "epochs": 1, "epochs": 2}"#.into(),
            "duplicate_field",
            "epochs",
        ),
    ];
    for (path, body, code, field) in &cases {
        let a = http.post(path, body).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.text());
        assert_eq!(a.error(), ((*code).to_owned(), Some((*field).to_owned())), "{path} {body}: {}", a.text());
    }
    assert_eq!(strategy(&http).await, "weighted_voting");
}
