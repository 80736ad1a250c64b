//! `quorum train`: bad input is refused with a message that names the
//! problem, before anything is trained or written.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use quorum::market::{simulate_to_parquet, SimConfig};

fn quorum(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .expect("the quorum binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quorum-train-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let sim = SimConfig { symbol: "SIMUSDT".into(), ..SimConfig::default() };
    simulate_to_parquet(&sim, &d.join("raw_lob"), Duration::from_secs(60), |_, _| {}).unwrap();
    d
}

#[test]
fn train_refuses_bad_input_by_name_and_writes_nothing() {
    let data = data_dir("bad");
    let ckpt = data.join("ckpt");
    let d = data.to_str().unwrap();
    let c = ckpt.to_str().unwrap();
    let base = ["train", "--data", d, "--symbol", "SIMUSDT", "--checkpoint-dir", c];
    let run = |extra: &[&str]| quorum(&[&base[..], extra].concat());

    let (ok, text) = run(&["--architecture", "all", "--backend", "cuda"]);
    if !quorum::backend::gpu::cuda::driver_present() {
        // No GPU here: opening the device is the error, named, before anything is read.
        assert!(!ok && text.contains("--backend cuda") && text.contains("no CUDA driver"), "{text}");
    }
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--batch-size", "0"]);
    assert!(!ok && text.contains("batch_size"), "{text}");
    let (ok, text) = run(&["--architecture", "mpd_transformer", "--learning-rate", "-0.001"]);
    assert!(!ok && text.contains("learning_rate"), "{text}");
    let (ok, text) = run(&["--architecture", "lstm"]);
    assert!(!ok && text.contains("unknown model kind"), "{text}");

    // A model config with a bad field, keyed by architecture.
    let mc = data.join("models.json");
    std::fs::write(&mc, r#"{"cnn_lstm": {"lstm_hidden": 0}}"#).unwrap();
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--model-config", mc.to_str().unwrap()]);
    assert!(!ok && text.contains("cnn_lstm.lstm_hidden"), "{text}");

    // TLOB needs the raw LOB folder: a data folder with only features is refused up front.
    let only_features = data.join("only-features");
    std::fs::create_dir_all(only_features.join("features")).unwrap();
    let (ok, text) = quorum(&[
        "train",
        "--architecture",
        "tlob",
        "--data",
        only_features.to_str().unwrap(),
        "--symbol",
        "SIMUSDT",
        "--checkpoint-dir",
        c,
    ]);
    assert!(!ok && text.contains("raw LOB folder"), "{text}");

    // One minute of market is shorter than the 200-candle warm-up: no rows.
    let (ok, text) = run(&["--architecture", "cnn_lstm"]);
    assert!(!ok && text.contains("no feature rows"), "{text}");
    let (ok, text) = quorum(&["train", "--architecture", "cnn_lstm", "--data", "/nonexistent/quorum", "--symbol", "X"]);
    assert!(!ok && text.contains("/nonexistent/quorum"), "{text}");
    assert!(!ckpt.exists(), "nothing is written for refused input");
}
