//! The HTTP server for real: started on a loopback port, called with hyper's
//! client. Every endpoint of docs/api.md; every kind of bad input gets
//! its documented 4xx and leaves the state as it was; hot swap under load;
//! the training endpoints through a test launcher; the token; a slow client.

mod server_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quorum::ensemble::EnsembleConfig;
use quorum::server::{Extras, LaunchError, ServerConfig, TrainingLauncher};
use quorum::train::{ProgressHandle, TrainingConfig};
use serde_json::{json, Value};
use server_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The worked example of docs/consensus.md.
fn seed_predictions() -> Value {
    json!({"predictions": [
        {"model_type": "cnn_lstm", "direction": "up", "confidence": 0.75,
         "probabilities": [0.1, 0.15, 0.75], "expected_return": 0.002, "timestamp": 0.0},
        {"model_type": "mpd_transformer", "direction": "up", "confidence": 0.68,
         "probabilities": [0.12, 0.2, 0.68], "expected_return": 0.0018, "timestamp": 0.0},
        {"model_type": "tlob", "direction": "neutral", "confidence": 0.55,
         "probabilities": [0.2, 0.55, 0.25], "expected_return": 0.0001, "timestamp": 0.0}
    ]})
}

/// Everything a bad request must leave untouched.
async fn snapshot(http: &Http) -> (Value, Value) {
    let status = http.get("/api/ensemble/status").await.json();
    let mut models = http.get("/api/ensemble/models").await.json();
    // loaded_at is when a model was loaded: stable unless something was loaded.
    assert!(models["models"].is_array());
    models["backend"] = Value::Null;
    (status, models)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_endpoints_answer_with_the_seed_bodies() {
    let (_server, http) = start(bare_engine(), loopback(), Extras::default()).await;

    let status = http.get("/api/ensemble/status").await;
    assert_eq!(status.status, 200);
    assert!(status.content_type.starts_with("application/json"));
    let s = status.json();
    assert_eq!(s["strategy"], "weighted_voting");
    assert_eq!((s["total_models"].as_u64(), s["enabled_models"].as_u64()), (Some(3), Some(3)));
    assert_eq!(s["models"]["cnn_lstm"]["weight"], 0.4);
    assert_eq!(s["models"]["tlob"]["accuracy"], Value::Null);
    assert_eq!(s["last_prediction"], Value::Null);

    let models = http.get("/api/ensemble/models").await.json();
    let list = models["models"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for m in list {
        assert_eq!(m["loaded"], false, "{m}");
        assert_eq!(m["weights_file"], Value::Null);
        for key in ["model_type", "enabled", "weight", "min_confidence", "parameters", "backend", "accuracy"] {
            assert!(m.get(key).is_some(), "{key} missing in {m}");
        }
    }

    let a = http.post("/api/ensemble/models/enable", r#"{"model_type": "mpd_transformer", "enabled": false}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!((a.json()["model_type"].clone(), a.json()["enabled"].clone()), (json!("mpd_transformer"), json!(false)));
    assert_eq!(http.get("/api/ensemble/status").await.json()["enabled_models"], 2);

    let a = http.post("/api/ensemble/models/weight", r#"{"model_type": "cnn_lstm", "weight": 0.5}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["weight"], 0.5);

    let a = http.post("/api/ensemble/strategy", r#"{"strategy": "adaptive"}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["strategy"], "adaptive");
    assert_eq!(a.json()["total_models"], 3);

    let a = http
        .post(
            "/api/ensemble/performance/update",
            r#"{"model_type": "cnn_lstm", "accuracy": 0.73, "profit_factor": 1.95}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!((a.json()["accuracy"].as_f64(), a.json()["profit_factor"].as_f64()), (Some(0.73), Some(1.95)));
    let s = http.get("/api/ensemble/status").await.json();
    assert_eq!(s["models"]["cnn_lstm"]["performance_reports"], 1);
    assert_eq!(s["models"]["cnn_lstm"]["weight"], 0.5);
    assert_eq!(s["models"]["mpd_transformer"]["enabled"], false);

    // No trainer plugged in: said so, nothing started.
    let a = http
        .post(
            "/api/ensemble/training/start",
            r#"{"architecture": "mpd_transformer", "symbol": "BTCUSDT", "epochs": 100, "batch_size": 32}"#,
        )
        .await;
    assert_eq!((a.status, a.error().0.as_str()), (501, "training_unavailable"));
    let t = http.get("/api/ensemble/training/status").await.json();
    assert_eq!(t["is_training"], false);

    assert_eq!(http.get("/health/live").await.status, 200);
    let r = http.get("/health/ready").await;
    assert_eq!(r.status, 503, "no model loaded: not ready");
    assert_eq!(r.json()["models_not_loaded"].as_array().unwrap().len(), 3);
    // The KServe v2 paths answer the same.
    assert_eq!(http.get("/v2/health/live").await.status, 200);
    let v2 = http.get("/v2/health/ready").await;
    assert_eq!((v2.status, v2.json()), (503, r.json()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_only_predict_gives_the_worked_example_and_outcomes_score_it() {
    let (_server, http) = start(bare_engine(), loopback(), Extras::default()).await;
    let a = http.post_json("/api/ensemble/predict", &seed_predictions()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let d = a.json();
    assert_eq!(d["direction"], "up");
    assert!((d["confidence"].as_f64().unwrap() - 0.6005).abs() < 1e-12, "{d}");
    assert!((d["meta_confidence"].as_f64().unwrap() - 0.82475).abs() < 1e-12, "{d}");
    assert_eq!(d["should_trade"], true);
    assert_eq!(d["predictions"].as_array().unwrap().len(), 3);
    assert!(d["timings"]["consensus_us"].as_f64().is_some());
    let id = d["id"].as_u64().unwrap();
    assert_eq!(http.get("/api/ensemble/status").await.json()["last_prediction"]["id"], id);

    let body = json!({"result_id": id, "realized_direction": "up", "realized_return": 0.0012});
    let a = http.post_json("/api/ensemble/outcome", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["recorded"], true);
    let again = http.post_json("/api/ensemble/outcome", &body).await;
    assert_eq!((again.status, again.error()), (409, ("already_scored".into(), Some("result_id".into()))));
    let unknown = http
        .post_json(
            "/api/ensemble/outcome",
            &json!({"result_id": id + 100, "realized_direction": "up", "realized_return": 0.0}),
        )
        .await;
    assert_eq!((unknown.status, unknown.error().0.as_str()), (404, "unknown_result"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_4xx_naming_the_field_and_changes_nothing() {
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let (_server, http) = start(engine, loopback(), Extras::default()).await;
    // One good decision first, so "nothing changed" covers last_prediction too.
    assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 200);
    let before = snapshot(&http).await;

    let mut bad_conf = seed_predictions();
    bad_conf["predictions"][1]["confidence"] = json!(1.3);
    let mut bad_sum = seed_predictions();
    bad_sum["predictions"][2]["probabilities"] = json!([0.2, 0.5, 0.2]);
    let mut bad_model = seed_predictions();
    bad_model["predictions"][0]["model_type"] = json!("stockformer");
    let mut both = seed_predictions();
    both["aux"] = json!([0.0]);
    let (f, l, a) = inputs(1);
    let mut short_rows = inputs_json(&f, &l, &a);
    short_rows["features"] = json!(f.chunks(112).take(59).collect::<Vec<_>>());
    let mut short_row = inputs_json(&f, &l, &a);
    short_row["features"][3] = json!(vec![0.0f32; 111]);
    let mut huge = inputs_json(&f, &l, &a);
    huge["features"][3][7] = json!(1e39);
    let mut short_lob = inputs_json(&f, &l, &a);
    short_lob["lob"][5] = json!(vec![vec![0.0f32; 4]; 19]);
    let mut short_aux = inputs_json(&f, &l, &a);
    short_aux["aux"] = json!(vec![0.0f32; 111]);

    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "tlob", "enabled": tru"#.into(),
            400,
            "invalid_json",
            Some("enabled"),
        ),
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "tlob", "enabled": "no"}"#.into(),
            400,
            "invalid_type",
            Some("enabled"),
        ),
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "lstm", "enabled": false}"#.into(),
            400,
            "unknown_model",
            Some("model_type"),
        ),
        ("/api/ensemble/models/enable", r#"{"model_type": "tlob"}"#.into(), 400, "missing_field", Some("enabled")),
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "tlob", "enabled": false, "x": 1}"#.into(),
            400,
            "unknown_field",
            Some("x"),
        ),
        ("/api/ensemble/models/enable", "[]".into(), 400, "invalid_type", Some("body")),
        ("/api/ensemble/models/enable", "".into(), 400, "invalid_json", Some("body")),
        (
            "/api/ensemble/models/weight",
            r#"{"model_type": "cnn_lstm", "weight": -0.5}"#.into(),
            400,
            "invalid_value",
            Some("weight"),
        ),
        (
            "/api/ensemble/models/weight",
            r#"{"model_type": "cnn_lstm", "weight": "0.5"}"#.into(),
            400,
            "invalid_type",
            Some("weight"),
        ),
        (
            "/api/ensemble/models/weight",
            r#"{"model_type": "cnn_lstm", "weight": 1e999}"#.into(),
            400,
            "invalid_value",
            Some("weight"),
        ),
        ("/api/ensemble/strategy", r#"{"strategy": "greedy"}"#.into(), 400, "unknown_strategy", Some("strategy")),
        (
            "/api/ensemble/performance/update",
            r#"{"model_type": "tlob", "accuracy": 1.5, "profit_factor": 1}"#.into(),
            400,
            "invalid_value",
            Some("accuracy"),
        ),
        (
            "/api/ensemble/performance/update",
            r#"{"model_type": "tlob", "accuracy": 0.5, "profit_factor": -1}"#.into(),
            400,
            "invalid_value",
            Some("profit_factor"),
        ),
        (
            "/api/ensemble/outcome",
            r#"{"result_id": 1, "realized_direction": "sideways", "realized_return": 0}"#.into(),
            400,
            "invalid_value",
            Some("realized_direction"),
        ),
        (
            "/api/ensemble/outcome",
            r#"{"result_id": -1, "realized_direction": "up", "realized_return": 0}"#.into(),
            400,
            "invalid_type",
            Some("result_id"),
        ),
        ("/api/ensemble/predict", bad_conf.to_string(), 400, "invalid_value", Some("predictions[1].confidence")),
        (
            "/api/ensemble/predict",
            bad_sum.to_string(),
            400,
            "invalid_probabilities",
            Some("predictions[2].probabilities"),
        ),
        ("/api/ensemble/predict", bad_model.to_string(), 400, "unknown_model", Some("predictions[0].model_type")),
        ("/api/ensemble/predict", both.to_string(), 400, "invalid_input", Some("predictions")),
        ("/api/ensemble/predict", "{}".into(), 400, "missing_field", Some("predictions")),
        ("/api/ensemble/predict", r#"{"feature": []}"#.into(), 400, "unknown_field", Some("feature")),
        ("/api/ensemble/predict", short_rows.to_string(), 400, "invalid_input", Some("features")),
        ("/api/ensemble/predict", short_row.to_string(), 400, "invalid_input", Some("features[3]")),
        ("/api/ensemble/predict", huge.to_string(), 400, "invalid_value", Some("features[3][7]")),
        ("/api/ensemble/predict", short_lob.to_string(), 400, "invalid_input", Some("lob[5]")),
        ("/api/ensemble/predict", short_aux.to_string(), 400, "invalid_input", Some("aux")),
        (
            "/api/ensemble/models/load",
            r#"{"model_type": "tlob", "path": "/nonexistent/tlob.safetensors"}"#.into(),
            400,
            "invalid_weights",
            Some("path"),
        ),
    ];
    for (path, body, status, code, field) in &cases {
        let a = http.post(path, body).await;
        assert_eq!(a.status, *status, "{path} {body:.80}: {}", a.text());
        let (c, f) = a.error();
        assert_eq!((c.as_str(), f.as_deref()), (*code, *field), "{path} {body:.80}: {}", a.text());
    }

    // Binary bodies: a wrong length, and NaN where a finite number belongs.
    let mut floats: Vec<f32> = f.iter().chain(&l).chain(&a).copied().collect();
    let short = http.post_binary("/api/ensemble/predict", &floats[1..]).await;
    assert_eq!((short.status, short.error()), (400, ("invalid_input".into(), Some("body".into()))));
    floats[112 * 2 + 5] = f32::NAN;
    let nan = http.post_binary("/api/ensemble/predict", &floats).await;
    assert_eq!((nan.status, nan.error()), (400, ("invalid_input".into(), Some("features[2][5]".into()))));
    floats[112 * 2 + 5] = 0.0;
    floats[60 * 112 + 7] = f32::INFINITY;
    let inf = http.post_binary("/api/ensemble/predict", &floats).await;
    assert_eq!(inf.error().1.as_deref(), Some("lob[0][1][3]"));

    // Too large, unknown route, wrong method, binary sent to a JSON endpoint.
    // Too large: announced by Content-Length (refused before reading), or sent chunked (cut at the limit).
    let announced = raw_exchange(
        http.addr,
        format!(
            "POST /api/ensemble/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 2000000\r\n\r\n",
            http.addr
        )
        .into_bytes(),
    )
    .await;
    assert!(announced.starts_with("HTTP/1.1 413") && announced.contains("body_too_large"), "{announced}");
    let mut chunked = format!(
        "POST /api/ensemble/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        http.addr
    )
    .into_bytes();
    let n = (1 << 20) + 1;
    chunked.extend_from_slice(format!("{n:x}\r\n").as_bytes());
    chunked.extend(std::iter::repeat_n(b' ', n));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let streamed = raw_exchange(http.addr, chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413") && streamed.contains("body_too_large"), "{streamed}");
    let nf = http.get("/api/ensemble/nothing").await;
    assert_eq!((nf.status, nf.error().0.as_str()), (404, "not_found"));
    let m = http.get("/api/ensemble/strategy").await;
    assert_eq!((m.status, m.error().0.as_str()), (405, "method_not_allowed"));
    let ct = http.send("POST", "/api/ensemble/strategy", Some("application/octet-stream"), b"{}".to_vec()).await;
    assert_eq!((ct.status, ct.error().0.as_str()), (415, "unsupported_media_type"));

    assert_eq!(snapshot(&http).await, before, "a refused request changed the state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_run_on_json_and_binary_bodies_with_the_same_answer() {
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let (_server, http) = start(engine, loopback(), Extras::default()).await;
    let layout = http.get("/api/ensemble/predict/layout").await.json();
    assert_eq!(layout["binary_f32_counts"], json!([60 * 112, 100 * 20 * 4, 112]));
    let (f, l, a) = inputs(7);
    let j = http.post_json("/api/ensemble/predict", &inputs_json(&f, &l, &a)).await;
    assert_eq!(j.status, 200, "{}", j.text());
    let floats: Vec<f32> = f.iter().chain(&l).chain(&a).copied().collect();
    let b = http.post_binary("/api/ensemble/predict", &floats).await;
    assert_eq!(b.status, 200, "{}", b.text());
    let (j, b) = (j.json(), b.json());
    assert_eq!(j["predictions"].as_array().unwrap().len(), 3, "{j}");
    for (pj, pb) in j["predictions"].as_array().unwrap().iter().zip(b["predictions"].as_array().unwrap()) {
        assert_eq!(pj["probabilities"], pb["probabilities"]);
        assert_eq!(pj["expected_return"], pb["expected_return"]);
    }
    assert_eq!(j["probabilities"], b["probabilities"]);
    assert_ne!(j["id"], b["id"], "each decision has its own id");
    for t in [&j, &b] {
        for m in ["cnn_lstm", "mpd_transformer", "tlob"] {
            assert!(t["timings"]["models_us"][m].as_f64().is_some(), "{t}");
        }
        assert!(t["timings"]["decode_us"].as_f64().is_some());
    }
    // Without lob, TLOB is left out and says why.
    let mut no_lob = inputs_json(&f, &l, &a);
    no_lob.as_object_mut().unwrap().remove("lob");
    let d = http.post_json("/api/ensemble/predict", &no_lob).await.json();
    assert_eq!(d["skipped"]["tlob"]["reason"], "missing_input", "{d}");
    assert_eq!(d["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(http.get("/health/ready").await.status, 200);
    assert_eq!(http.get("/v2/health/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_hot_swaps_from_a_weights_file_without_dropping_requests() {
    let configs = small_configs();
    let cnn = configs[2].clone();
    let dir = tempdir("swap");
    let (first, second, wrong) =
        (dir.join("cnn_a.safetensors"), dir.join("cnn_b.safetensors"), dir.join("tlob.safetensors"));
    save_weights(&first, &weights(&cnn, 1.0));
    save_weights(&second, &weights(&cnn, 0.5));
    save_weights(&wrong, &weights(&configs[1], 1.0));
    let engine = engine_with(&configs[..2], EnsembleConfig::default());
    // Loads read only inside the weights folder (tests/server_abuse.rs has the rest).
    let config = ServerConfig { weights_dir: Some(dir.clone()), ..loopback() };
    let (_server, http) = start(engine, config, Extras::default()).await;

    let load = |p: &std::path::Path| json!({"model_type": "cnn_lstm", "path": p.to_str().unwrap()});
    let a = http.post_json("/api/ensemble/models/load", &load(&first)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["weights_file"], first.to_str().unwrap());
    assert_eq!(a.json()["parameters"].as_u64(), Some(quorum::model::param_specs(&cnn).count() as u64));

    let (f, l, aux) = inputs(3);
    let floats: Vec<f32> = f.iter().chain(&l).chain(&aux).copied().collect();
    let cnn_probs = |d: &Value| {
        d["predictions"].as_array().unwrap().iter().find(|p| p["model_type"] == "cnn_lstm").unwrap()["probabilities"]
            .clone()
    };
    let before = cnn_probs(&http.post_binary("/api/ensemble/predict", &floats).await.json());

    // Requests keep flowing while the swap happens; none fails.
    let mut load_tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (http, floats) = (http.clone(), floats.clone());
        load_tasks.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..15 {
                statuses.push(http.post_binary("/api/ensemble/predict", &floats).await.status);
            }
            statuses
        });
    }
    let swap = http.post_json("/api/ensemble/models/load", &load(&second)).await;
    assert_eq!(swap.status, 200, "{}", swap.text());
    while let Some(statuses) = load_tasks.join_next().await {
        assert!(statuses.unwrap().iter().all(|&s| s == 200));
    }
    let after = cnn_probs(&http.post_binary("/api/ensemble/predict", &floats).await.json());
    assert_ne!(before, after, "the swapped weights answer differently");
    let entry = http.get("/api/ensemble/models").await.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_type"] == "cnn_lstm")
        .unwrap()
        .clone();
    assert_eq!(entry["weights_file"], second.to_str().unwrap());

    // A file of the wrong kind is refused and the loaded model stays.
    let bad = http.post_json("/api/ensemble/models/load", &load(&wrong)).await;
    assert_eq!((bad.status, bad.error()), (400, ("invalid_weights".into(), Some("model_type".into()))));
    let still = cnn_probs(&http.post_binary("/api/ensemble/predict", &floats).await.json());
    assert_eq!(still, after);
}

/// A launcher whose job counts epochs until it is told to stop.
#[derive(Default)]
struct TestLauncher {
    started: AtomicUsize,
}

impl TrainingLauncher for TestLauncher {
    fn start(&self, config: TrainingConfig, symbol: String) -> Result<ProgressHandle, LaunchError> {
        if symbol == "NODATA" {
            return Err(LaunchError { field: Some("symbol".into()), message: "no data for NODATA".into() });
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let handle = ProgressHandle::new();
        handle.update(|p| {
            p.is_training = true;
            p.architecture = config.architecture.to_string();
            p.total_epochs = config.epochs;
        });
        let h = handle.clone();
        std::thread::spawn(move || {
            // At least one epoch, then one every 5 ms until asked to stop.
            loop {
                h.update(|p| {
                    p.current_epoch = (p.current_epoch + 1).min(p.total_epochs);
                    p.current_loss = Some(1.0 / p.current_epoch as f64);
                    p.progress_percent = 100.0 * p.current_epoch as f64 / p.total_epochs as f64;
                });
                if h.stop_requested() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            h.update(|p| {
                p.is_training = false;
                p.best_loss = p.current_loss;
            });
        });
        Ok(handle)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_endpoints_start_report_and_stop_a_job_through_the_launcher() {
    let launcher = Arc::new(TestLauncher::default());
    let extras = Extras { launcher: Some(launcher.clone()), ..Extras::default() };
    let (_server, http) = start(bare_engine(), loopback(), extras).await;
    let seed_body = r#"{"architecture": "mpd_transformer", "symbol": "BTCUSDT", "epochs": 100, "batch_size": 32}"#;

    let bad: [(&str, &str, &str); 6] = [
        (r#"{"architecture": "mpd_transformer", "epochs": 100}"#, "missing_field", "symbol"),
        (r#"{"architecture": "mpd_transformer", "symbol": 5}"#, "invalid_type", "symbol"),
        (r#"{"architecture": "gpt", "symbol": "BTCUSDT"}"#, "unknown_model", "architecture"),
        (r#"{"architecture": "tlob", "symbol": "BTCUSDT", "epoch": 3}"#, "unknown_field", "epoch"),
        (r#"{"architecture": "tlob", "symbol": "BTCUSDT", "epochs": 0}"#, "invalid_value", "epochs"),
        (r#"{"architecture": "tlob", "symbol": "NODATA"}"#, "training_rejected", "symbol"),
    ];
    for (body, code, field) in bad {
        let a = http.post("/api/ensemble/training/start", body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text());
        assert_eq!(a.error(), (code.to_owned(), Some(field.to_owned())), "{body}");
    }
    assert_eq!(launcher.started.load(Ordering::SeqCst), 0, "a refused body started nothing");
    let idle = http.post("/api/ensemble/training/stop", "").await;
    assert_eq!((idle.status, idle.error().0.as_str()), (409, "no_training_running"));

    let a = http.post("/api/ensemble/training/start", seed_body).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let job = a.json();
    assert_eq!((job["is_training"].clone(), job["architecture"].clone()), (json!(true), json!("mpd_transformer")));
    assert_eq!((job["total_epochs"].clone(), job["symbol"].clone()), (json!(100), json!("BTCUSDT")));
    let again = http.post("/api/ensemble/training/start", seed_body).await;
    assert_eq!((again.status, again.error().0.as_str()), (409, "training_running"));
    assert_eq!(launcher.started.load(Ordering::SeqCst), 1);

    let status = http.get("/api/ensemble/training/status").await.json();
    for key in [
        "is_training",
        "current_epoch",
        "total_epochs",
        "current_loss",
        "best_loss",
        "architecture",
        "progress_percent",
    ] {
        assert!(status.get(key).is_some(), "{key} missing: {status}");
    }
    let stop = http.post("/api/ensemble/training/stop", "").await;
    assert_eq!(stop.status, 202, "{}", stop.text());
    assert_eq!(stop.json()["stop_requested"], true);
    let mut last = Value::Null;
    for _ in 0..500 {
        last = http.get("/api/ensemble/training/status").await.json();
        if last["is_training"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last["is_training"], false, "the job stopped: {last}");
    assert!(last["current_epoch"].as_u64().unwrap() >= 1, "the last job's result stays: {last}");
    assert_eq!(last["best_loss"], last["current_loss"]);
    let metrics = http.get("/metrics").await.text();
    assert!(metrics.contains("quorum_training_active 0\n"), "{metrics}");
    // Idle again: a new job may start.
    assert_eq!(http.post("/api/ensemble/training/start", seed_body).await.status, 202);
    http.post("/api/ensemble/training/stop", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_post_needs_it_and_remote_binds_need_flag_and_token() {
    let token = "0123456789abcdef-test";
    let config = ServerConfig { token: Some(token.into()), ..loopback() };
    let (_server, mut http) = start(bare_engine(), config, Extras::default()).await;
    let before = snapshot(&http).await;
    let body = r#"{"strategy": "majority"}"#;
    let a = http.post("/api/ensemble/strategy", body).await;
    assert_eq!((a.status, a.error()), (401, ("unauthorized".into(), Some("Authorization".into()))));
    http.token = Some("0123456789abcdef-nope".into());
    assert_eq!(http.post("/api/ensemble/strategy", body).await.status, 401);
    assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 401);
    assert_eq!(snapshot(&http).await, before);
    http.token = None;
    assert_eq!(http.get("/api/ensemble/status").await.status, 200, "GETs need no token");
    http.token = Some(token.into());
    assert_eq!(http.post("/api/ensemble/strategy", body).await.status, 200);

    let remote = |allow, token: Option<&str>| ServerConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        allow_remote: allow,
        token: token.map(str::to_owned),
        ..ServerConfig::default()
    };
    let e = remote(false, Some(token)).validate().unwrap_err().to_string();
    assert!(e.contains("bind") && e.contains("--allow-remote"), "{e}");
    let e = remote(true, None).validate().unwrap_err().to_string();
    assert!(e.contains("token"), "{e}");
    assert!(remote(true, Some("short")).validate().is_err());
    remote(true, Some(token)).validate().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_stall_the_others_and_is_dropped() {
    let config = ServerConfig {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        // Fewer places than stalled clients: they must not hold places while they stall.
        max_in_flight: 2,
        queue_timeout: Duration::from_millis(100),
        ..loopback()
    };
    let (server, http) = start(bare_engine(), config, Extras::default()).await;
    let addr = server.local_addr();
    // Half the headers, then nothing.
    let mut half_headers = tokio::net::TcpStream::connect(addr).await.unwrap();
    half_headers
        .write_all(format!("POST /api/ensemble/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Le").as_bytes())
        .await
        .unwrap();
    // Whole headers, half the body, then nothing: four of them.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 40\r\n\r\n{{\"strategy\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }

    // Everyone else is served meanwhile.
    for _ in 0..20 {
        assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 200);
    }
    // The stalled body gets 408 and its change is not made; the stalled headers get a 408 too.
    for mut half_body in stalled {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), half_body.read_to_end(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
    }
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), half_headers.read_to_end(&mut rest)).await.unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(r.is_err() || !text.contains("200 OK"), "the stalled request was not served");
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("header_timeout"), "{text}");
    assert_eq!(http.get("/api/ensemble/status").await.json()["strategy"], "weighted_voting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_stages_and_decisions() {
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let (_server, http) = start(engine, loopback(), Extras::default()).await;
    let (f, l, a) = inputs(5);
    let floats: Vec<f32> = f.iter().chain(&l).chain(&a).copied().collect();
    assert_eq!(http.post_binary("/api/ensemble/predict", &floats).await.status, 200);
    assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 200);
    assert_eq!(http.post("/api/ensemble/strategy", "{").await.status, 400);
    let m = http.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain; version=0.0.4"));
    let t = m.text();
    for line in [
        "quorum_http_requests_total{endpoint=\"/api/ensemble/predict\",method=\"POST\",status=\"200\"} 2\n",
        "quorum_http_requests_total{endpoint=\"/api/ensemble/strategy\",method=\"POST\",status=\"400\"} 1\n",
        "quorum_http_request_duration_seconds_count{endpoint=\"/api/ensemble/predict\"} 2\n",
        "quorum_inference_duration_seconds_count{stage=\"model_tlob\"} 1\n",
        "quorum_inference_duration_seconds_count{stage=\"consensus\"} 2\n",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    assert!(t.contains("quorum_inference_duration_seconds_bucket{stage=\"total\",le=\"+Inf\"} 2\n"), "{t}");
    let decisions: u64 = ["down", "neutral", "up"]
        .iter()
        .map(|d| {
            let key = format!("quorum_decisions_total{{direction=\"{d}\"}} ");
            let line = t.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("{key} in {t}"));
            line[key.len()..].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(decisions, 2, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_a_scraper_reads_them_with_process_and_build_series() {
    use prometheus_parse::{Scrape, Value};
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let (_server, http) = start(engine, loopback(), Extras::default()).await;
    assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 200);
    assert_eq!(http.post_json("/api/ensemble/predict", &seed_predictions()).await.status, 200);
    let t = http.get("/metrics").await.text();
    // The parser skips what it cannot read, so each sample line is parsed on
    // its own first: one sample each, or the line is malformed.
    for line in t.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let one = Scrape::parse(std::iter::once(Ok(line.to_string()))).unwrap();
        assert_eq!(one.samples.len(), 1, "{line:?} is not a sample line a scraper reads");
    }
    let scrape = Scrape::parse(t.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| {
        let s =
            scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
        s.unwrap_or_else(|| panic!("no {name} {label:?} in\n{t}")).value.clone()
    };
    let predict = scrape
        .samples
        .iter()
        .find(|s| s.metric == "quorum_http_requests_total" && s.labels.get("endpoint") == Some("/api/ensemble/predict"))
        .unwrap_or_else(|| panic!("{t}"));
    assert_eq!(predict.value, Value::Counter(2.0));
    assert_eq!(predict.labels.get("status"), Some("200"));
    let Value::Histogram(buckets) = value("quorum_inference_duration_seconds", Some(("stage", "total"))) else {
        panic!("the stage latencies are not a histogram in\n{t}")
    };
    assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count), "{buckets:?}");
    assert_eq!(buckets.last().map(|b| (b.less_than, b.count)), Some((f64::INFINITY, 2.0)));
    assert_eq!(value("quorum_build_info", Some(("version", env!("CARGO_PKG_VERSION")))), Value::Gauge(1.0));
    let Value::Gauge(resident) = value("process_resident_memory_bytes", None) else { panic!("{t}") };
    assert!(resident > 1e6, "resident memory {resident} bytes");
    let Value::Gauge(started) = value("process_start_time_seconds", None) else { panic!("{t}") };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started <= now + 1.0 && started > now - 3600.0, "started {started}, now {now}");
    assert!(matches!(value("process_cpu_seconds_total", None), Value::Counter(c) if c >= 0.0), "{t}");
    for s in &scrape.samples {
        // A histogram's `_sum` and `_count` are documented under its name.
        let family = ["_sum", "_count"].iter().find_map(|x| s.metric.strip_suffix(x)).unwrap_or(&s.metric);
        assert!(
            scrape.docs.contains_key(&s.metric) || scrape.docs.contains_key(family),
            "{} has no HELP line in\n{t}",
            s.metric
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_describes_exactly_the_routes_the_server_answers() {
    let engine = engine_with(&small_configs(), EnsembleConfig::default());
    let (_server, http) = start(engine, loopback(), Extras::default()).await;
    let doc = http.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    // A path the server does not serve is a route miss: what every described
    // operation must not be.
    let miss = http.get("/api/ensemble/no_such_route").await;
    assert_eq!((miss.status, miss.json()["error"]["code"].clone()), (404, "not_found".into()));
    let mut checked = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let a = match method.as_str() {
                "get" => http.get(path).await,
                "post" => http.post(path, "{}").await,
                other => panic!("{other} {path}: the server serves GET and POST only"),
            };
            let code = if a.status == 200 || path == "/metrics" {
                None
            } else {
                a.json()["error"]["code"].as_str().map(str::to_owned)
            };
            assert!(
                a.status != 405 && code.as_deref() != Some("not_found"),
                "{method} {path} is described but answered {} {code:?}",
                a.status
            );
            checked.push(format!("{method} {path}"));
        }
    }
    for op in ["get /api/ensemble/status", "post /api/ensemble/predict", "get /v2/health/ready", "get /openapi.json"] {
        assert!(checked.iter().any(|c| c == op), "{op} not described: {checked:?}");
    }
}

/// Writes `request` on a fresh connection (concurrently with reading) and
/// returns everything the server answers before it closes.
async fn raw_exchange(addr: std::net::SocketAddr, request: Vec<u8>) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may close before reading everything: a write error is expected then.
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut buf)).await;
    drop(writer.await);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn the_engine_loads_a_weights_folder_and_reports_the_missing_models() {
    let configs = small_configs();
    let dir = tempdir("folder");
    save_weights(&dir.join("tlob.safetensors"), &weights(&configs[1], 1.0));
    save_weights(&dir.join("cnn_lstm.safetensors"), &weights(&configs[2], 1.0));
    let engine = bare_engine();
    let report = engine.load_dir(&dir).unwrap();
    let loaded: Vec<_> = report.loaded.iter().map(|(m, _)| m.as_str()).collect();
    let missing: Vec<_> = report.missing.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!((loaded, missing), (vec!["cnn_lstm", "tlob"], vec!["mpd_transformer"]));
    let layout = engine.input_layout();
    assert_eq!((layout.features, layout.lob, layout.aux), (Some([60, 112]), Some([100, 20, 4]), Some(112)));
    // A broken file is an error that names it, and loads nothing more.
    std::fs::write(dir.join("mpd_transformer.safetensors"), b"not safetensors").unwrap();
    let err = engine.load_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("mpd_transformer.safetensors"), "{err}");
    assert!(!engine.is_loaded(quorum::ensemble::ModelType::MpdTransformer));
    assert!(engine.load_dir(&dir.join("nope")).is_err());
    // What `quorum train` writes loads too, the plain name first where both exist.
    std::fs::remove_file(dir.join("mpd_transformer.safetensors")).unwrap();
    save_weights(&dir.join("mpd_transformer_best.safetensors"), &weights(&configs[0], 1.0));
    std::fs::write(dir.join("tlob_best.safetensors"), b"not read: tlob.safetensors is there").unwrap();
    let report = engine.load_dir(&dir).unwrap();
    let loaded: Vec<_> = report.loaded.iter().map(|(_, p)| p.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(loaded, ["cnn_lstm.safetensors", "mpd_transformer_best.safetensors", "tlob.safetensors"]);
}

/// A model repository: each model's latest version, or the pinned one; a
/// model without a version falls back to the folder's flat file; a pin of a
/// version that is not there is an error naming those that are.
#[test]
fn the_engine_loads_a_repositorys_latest_or_pinned_versions() {
    use quorum::model::ModelKind;
    use quorum::weights::Repository;
    let configs = small_configs();
    let dir = tempdir("repository");
    let repo = Repository::new(&dir);
    let scratch = dir.join("scratch.safetensors");
    for scale in [1.0, 2.0] {
        save_weights(&scratch, &weights(&configs[2], scale));
        repo.publish(ModelKind::CnnLstm, &scratch, None, None).unwrap();
    }
    save_weights(&dir.join("tlob.safetensors"), &weights(&configs[1], 1.0));
    let engine = bare_engine();
    let names = |r: &quorum::server::engine::LoadReport| -> Vec<String> {
        r.loaded.iter().map(|(_, p)| p.strip_prefix(&dir).unwrap().display().to_string()).collect()
    };
    let report = engine.load_dir(&dir).unwrap();
    assert_eq!(names(&report), ["cnn_lstm/2/model.safetensors", "tlob.safetensors"]);
    let entry = |e: &quorum::server::engine::Engine| {
        e.models().into_iter().find(|m| m.model_type == quorum::ensemble::ModelType::CnnLstm).unwrap().version
    };
    assert_eq!(entry(&engine), Some(2));
    let report = engine.load_dir_pinned(&dir, &[(ModelKind::CnnLstm, 1)]).unwrap();
    assert_eq!(names(&report), ["cnn_lstm/1/model.safetensors", "tlob.safetensors"]);
    assert_eq!(entry(&engine), Some(1));
    let err = engine.load_dir_pinned(&dir, &[(ModelKind::CnnLstm, 3)]).unwrap_err().to_string();
    assert!(err.contains("no version 3") && err.contains("(complete versions: 1, 2)"), "{err}");
    let err = engine.load_dir_pinned(&dir, &[(ModelKind::Tlob, 1)]).unwrap_err().to_string();
    assert!(err.contains("(complete versions: none)"), "{err}");
}

#[test]
fn quorum_serve_without_weights_serves_and_says_which_models_are_not_loaded() {
    use std::io::BufRead;
    let dir = tempdir("cli");
    save_weights(&dir.join("tlob.safetensors"), &weights(&small_configs()[1], 1.0));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["serve", "--bind", "127.0.0.1:0", "--backend", "cpu", "--duration", "60", "--weights"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines.next().expect("quorum serve prints its address").unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("quorum serve: listening on http://") {
            break rest.split(';').next().unwrap().parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let text = seen.join("\n");
    assert!(text.contains("loaded tlob from"), "{text}");
    assert!(text.contains("not loaded: mpd_transformer") && text.contains("not loaded: cnn_lstm"), "{text}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, ready) = rt.block_on(async {
        let http = Http::new(addr);
        (http.get("/api/ensemble/status").await.status, http.get("/health/ready").await.json())
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert_eq!(ready["models_loaded"], json!(["tlob"]));
    assert_eq!(ready["ready"], true);
}

/// The real launcher (`quorum serve --data DIR`): a small CNN-LSTM trained
/// from a simulated data folder through the HTTP endpoints, its progress
/// readable while it runs, its result in the status when it is over, and its
/// model promoted into serving, where predict runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trained_through_the_api_is_promoted_into_serving() {
    use quorum::market::{simulate_to_parquet, SimConfig};
    let data = std::env::temp_dir().join(format!("quorum_server_train_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let sim = SimConfig { symbol: "SIMUSDT".into(), seed: 3, signal_strength: 2.0, ..SimConfig::default() };
    simulate_to_parquet(&sim, &data.join("raw_lob"), Duration::from_secs(20 * 60), |_, _| {}).unwrap();
    let launcher = Arc::new(quorum::server::DataFolderLauncher::new(&data));
    let extras = Extras { launcher: Some(launcher), ..Extras::default() };
    let (_server, http) = start(bare_engine(), loopback(), extras).await;

    let no_data = json!({"architecture": "cnn_lstm", "symbol": "BTCUSDT"});
    let a = http.post_json("/api/ensemble/training/start", &no_data).await;
    assert_eq!((a.status, a.error()), (400, ("training_rejected".to_owned(), Some("symbol".to_owned()))));
    let bad_model = json!({"architecture": "cnn_lstm", "symbol": "SIMUSDT", "model_config": {"lstm_hidden": 0}});
    let a = http.post_json("/api/ensemble/training/start", &bad_model).await;
    assert_eq!((a.status, a.error().1), (400, Some("model_config.lstm_hidden".to_owned())), "{}", a.text());

    // The checkpoints go under the data folder (a relative path; tests/server_abuse.rs has the refusals).
    let body = json!({
        "architecture": "cnn_lstm", "symbol": "SIMUSDT", "epochs": 2, "batch_size": 64, "learning_rate": 1e-3,
        "walk_forward_splits": 1, "gradient_accumulation_steps": 1, "sequence_length": 20,
        "checkpoint_dir": "ckpt",
        "model_config": {"sequence_length": 20, "conv_channels": [16], "lstm_hidden": 16, "lstm_layers": 1},
    });
    let a = http.post_json("/api/ensemble/training/start", &body).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = http.get("/api/ensemble/training/status").await.json();
        if !last["result"].is_null() || !last["error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["error"], Value::Null, "{last}");
    let result = &last["result"];
    assert_eq!((last["is_training"].clone(), result["completed"].clone()), (json!(false), json!(true)), "{last}");
    assert_eq!(last["current_epoch"], json!(2), "{last}");
    let accuracy = result["best_val_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy) && accuracy > 0.0, "{last}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(result["results_path"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(results["model_path"], result["model_path"]);
    // Published into the data folder's repository as version 1, listed there.
    assert_eq!(result["version"], 1, "{last}");
    let published = data.join("weights/cnn_lstm/1/model.safetensors");
    assert_eq!(result["published_path"], published.display().to_string(), "{last}");
    let models = http.get("/api/ensemble/models").await.json();
    assert_eq!(models["versions"]["cnn_lstm"][0]["version"], 1, "{models}");
    assert_eq!(models["versions"]["tlob"], json!([]), "{models}");

    // Promote it by its version, and predict with it.
    let load = json!({"model_type": "cnn_lstm", "version": 1});
    let a = http.post_json("/api/ensemble/models/load", &load).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        (a.json()["version"].clone(), a.json()["weights_file"].clone()),
        (json!(1), json!(published.display().to_string()))
    );
    // Its checkpoint loads by path too (inside the data folder).
    let load = json!({"model_type": "cnn_lstm", "path": result["model_path"]});
    assert_eq!(http.post_json("/api/ensemble/models/load", &load).await.status, 200);
    let window: Vec<Vec<f32>> =
        (0..20).map(|t| (0..112).map(|j| ((t * 112 + j) % 13) as f32 / 13.0).collect()).collect();
    let a = http.post_json("/api/ensemble/predict", &json!({ "features": window })).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let answer = a.json();
    assert!(answer.to_string().contains("cnn_lstm"), "{answer}");
    let _ = std::fs::remove_dir_all(&data);
}
