//! The server under abuse (issue 15): requests that used to take the process
//! down, read or write outside its folders, or yield an invalid decision.
//! Each test reproduces one probe and checks the answer is a clear 4xx (or a
//! valid decision), that nothing changed and that the server keeps serving.

mod server_util;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quorum::server::{DataFolderLauncher, Extras, LaunchError, ServerConfig, TrainingLauncher};
use quorum::train::{ProgressHandle, TrainingConfig};
use serde_json::{json, Value};
use server_util::*;

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
/// the default job, naming the budget.
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

/// The small CNN-LSTM's weights, every tensor times `scale`, at `path`.
fn write_model(path: &Path, scale: f32) {
    save_weights(path, &weights(&small_configs()[2], scale));
}

/// The error message with `requested` taken out: what a client learns
/// beyond the path it sent.
fn message_without(a: &Answer, requested: &str) -> String {
    a.json()["error"]["message"].as_str().unwrap().replace(requested, "<path>")
}

/// Opens the FIFO for reading and writing (which never blocks on Linux) so a
/// reader stuck in `open` on it is released, whatever the test found.
struct FifoRelease(PathBuf);

impl Drop for FifoRelease {
    fn drop(&mut self) {
        let _ = std::fs::OpenOptions::new().read(true).write(true).open(&self.0);
    }
}

/// Issue 15.2: `POST /models/load` reads only regular files inside the
/// weights folder; everything else gets one answer that says nothing about
/// what lies outside, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_loads_are_confined_to_the_weights_folder() {
    let root = tempdir("abuse-load");
    let (dir, outside) = (root.join("weights"), root.join("outside"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    write_model(&dir.join("cnn.safetensors"), 1.0);
    write_model(&outside.join("cnn.safetensors"), 0.5);
    std::os::unix::fs::symlink(outside.join("cnn.safetensors"), dir.join("escape.safetensors")).unwrap();
    std::os::unix::fs::symlink(dir.join("cnn.safetensors"), dir.join("sub").join("inside.safetensors")).unwrap();
    let fifo = dir.join("pipe.safetensors");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let _release = FifoRelease(fifo.clone());

    let config = ServerConfig { weights_dir: Some(dir.clone()), ..loopback() };
    let (_server, http) = start(bare_engine(), config, Extras::default()).await;
    let load = |p: &str| json!({"model_type": "cnn_lstm", "path": p});

    // Inside: by a relative path, by the absolute one, through a link that stays inside.
    let a = http.post_json("/api/ensemble/models/load", &load("cnn.safetensors")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let canonical = dir.join("cnn.safetensors").canonicalize().unwrap();
    assert_eq!(a.json()["weights_file"], canonical.to_str().unwrap());
    let a = http.post_json("/api/ensemble/models/load", &load(canonical.to_str().unwrap())).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = http.post_json("/api/ensemble/models/load", &load("sub/inside.safetensors")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let before = http.get("/api/ensemble/models").await.json();

    let outside_file = outside.join("cnn.safetensors");
    let refused = [
        outside_file.to_str().unwrap().to_owned(),
        outside.join("missing.safetensors").to_str().unwrap().to_owned(),
        "/etc/passwd".to_owned(),
        "/etc/no-such-file".to_owned(),
        "../outside/cnn.safetensors".to_owned(),
        "../outside/missing.safetensors".to_owned(),
        format!("{}/../outside/cnn.safetensors", dir.display()),
        "escape.safetensors".to_owned(),
        "pipe.safetensors".to_owned(),
        "sub".to_owned(),
        "missing.safetensors".to_owned(),
        "/dev/zero".to_owned(),
        "/proc/self/environ".to_owned(),
    ];
    let mut messages = Vec::new();
    for p in &refused {
        let a = http.post_json("/api/ensemble/models/load", &load(p)).await;
        assert_eq!(a.status, 400, "{p}: {}", a.text());
        assert_eq!(a.error().1.as_deref(), Some("path"), "{p}: {}", a.text());
        messages.push((p, a.error().0, message_without(&a, p)));
    }
    let (first_code, first_message) = (&messages[0].1, &messages[0].2);
    for (p, code, message) in &messages {
        assert_eq!((code, message), (first_code, first_message), "{p} is told apart from {}", refused[0]);
    }
    assert!(first_message.contains("weights folder"), "the message says where loads come from: {first_message}");
    let mut after = http.get("/api/ensemble/models").await.json();
    let mut before = before;
    for v in [&mut before, &mut after] {
        v["backend"] = Value::Null;
    }
    assert_eq!(after, before, "a refused load changed the models");
    assert_eq!(http.get("/health/live").await.status, 200);
}

/// Issue 15.2: a server started without a weights folder loads nothing by
/// path, and says how to give it one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_weights_folder_loading_by_path_is_refused() {
    let dir = tempdir("abuse-noweights");
    write_model(&dir.join("cnn.safetensors"), 1.0);
    let (_server, http) = start(bare_engine(), loopback(), Extras::default()).await;
    let path = dir.join("cnn.safetensors");
    let a = http.post_json("/api/ensemble/models/load", &json!({"model_type": "cnn_lstm", "path": path})).await;
    assert_eq!((a.status, a.error().1.as_deref()), (400, Some("path")), "{}", a.text());
    assert!(a.text().contains("--weights"), "{}", a.text());
}

/// Issue 15.2: a file is checked against its safetensors header and the
/// size limit before it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_files_are_size_checked_before_reading() {
    let dir = tempdir("abuse-size");
    write_model(&dir.join("cnn.safetensors"), 1.0);
    let bytes = std::fs::read(dir.join("cnn.safetensors")).unwrap();
    // A header that promises more data than the file holds.
    std::fs::write(dir.join("short.safetensors"), &bytes[..bytes.len() - 4]).unwrap();
    // A header length far beyond the file.
    let mut lying = u64::MAX.to_le_bytes().to_vec();
    lying.extend_from_slice(b"{}");
    std::fs::write(dir.join("lying.safetensors"), &lying).unwrap();
    let config = ServerConfig { weights_dir: Some(dir.clone()), max_weights_bytes: bytes.len() as u64, ..loopback() };
    let (_server, http) = start(bare_engine(), config, Extras::default()).await;
    let load = |p: &str| json!({"model_type": "cnn_lstm", "path": p});

    let a = http.post_json("/api/ensemble/models/load", &load("short.safetensors")).await;
    assert_eq!((a.status, a.error()), (400, ("invalid_weights".into(), Some("path".into()))), "{}", a.text());
    assert!(a.text().contains("header"), "{}", a.text());
    let a = http.post_json("/api/ensemble/models/load", &load("lying.safetensors")).await;
    assert_eq!((a.status, a.error()), (400, ("invalid_weights".into(), Some("path".into()))), "{}", a.text());
    assert!(a.text().contains("header"), "{}", a.text());

    // One byte over the server's limit: refused, naming the limit.
    let mut big = bytes.clone();
    big.push(b' ');
    std::fs::write(dir.join("big.safetensors"), &big).unwrap();
    let a = http.post_json("/api/ensemble/models/load", &load("big.safetensors")).await;
    assert_eq!((a.status, a.error()), (400, ("invalid_weights".into(), Some("path".into()))), "{}", a.text());
    assert!(a.text().contains("--max-weights-mb"), "{}", a.text());
    let a = http.post_json("/api/ensemble/models/load", &load("cnn.safetensors")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// Issue 15.3: `checkpoint_dir` is a relative path under the server's data
/// folder; anything else is refused naming the field, and nothing is
/// created outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_output_is_confined_to_the_data_folder() {
    let root = tempdir("abuse-ckpt");
    let (data, outside) = (root.join("data"), root.join("outside"));
    std::fs::create_dir_all(data.join("raw_lob").join("SIMUSDT")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
    let launcher = Arc::new(DataFolderLauncher::new(&data));
    let extras = Extras { launcher: Some(launcher), ..Extras::default() };
    let (_server, http) = start(bare_engine(), loopback(), extras).await;
    let body = |dir: &str| {
        json!({"architecture": "cnn_lstm", "symbol": "SIMUSDT", "epochs": 1, "sequence_length": 20, "checkpoint_dir": dir,
               "model_config": {"sequence_length": 20, "conv_channels": [8], "lstm_hidden": 8, "lstm_layers": 1}})
    };
    let escape = outside.join("ckpt");
    let refused = [
        escape.to_str().unwrap().to_owned(),
        "../outside/ckpt".to_owned(),
        "ckpt/../../outside/ckpt".to_owned(),
        "link/ckpt".to_owned(),
        "link".to_owned(),
        "/tmp".to_owned(),
    ];
    for dir in &refused {
        let a = http.post_json("/api/ensemble/training/start", &body(dir)).await;
        assert_eq!(a.status, 400, "{dir}: {}", a.text());
        assert_eq!(a.error().1.as_deref(), Some("checkpoint_dir"), "{dir}: {}", a.text());
        assert!(a.text().contains("data folder"), "{dir}: {}", a.text());
    }
    let outside_entries: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(outside_entries.is_empty(), "a refused job wrote outside: {outside_entries:?}");
    assert_eq!(http.get("/api/ensemble/training/status").await.json()["job_id"], Value::Null);

    // A relative folder is taken under the data folder (the job then fails on the empty data: a job error).
    let a = http.post_json("/api/ensemble/training/start", &body("runs/ckpt")).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let mut last = Value::Null;
    for _ in 0..600 {
        last = http.get("/api/ensemble/training/status").await.json();
        if last["is_training"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["is_training"], false, "{last}");
    assert!(last["error"].is_string(), "no data: the job ends with an error: {last}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    assert_eq!(http.get("/health/live").await.status, 200);
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
