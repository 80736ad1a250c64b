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
    // The backend is one of the named devices, as on every other command;
    // auto is accepted (it gets as far as the config check here).
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--backend", "gpu"]);
    assert!(!ok && ["auto", "cpu", "cuda", "emu"].iter().all(|d| text.contains(d)), "{text}");
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--backend", "auto", "--batch-size", "0"]);
    assert!(!ok && text.contains("batch_size") && !text.contains("--backend"), "{text}");
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--batch-size", "0"]);
    assert!(!ok && text.contains("batch_size"), "{text}");
    let (ok, text) = run(&["--architecture", "mpd_transformer", "--learning-rate", "-0.001"]);
    assert!(!ok && text.contains("learning_rate"), "{text}");
    // --architecture is a value enum: a typo is refused with the names listed.
    let (ok, text) = run(&["--architecture", "lstm"]);
    assert!(!ok && ["mpd_transformer", "tlob", "cnn_lstm", "all"].iter().all(|a| text.contains(a)), "{text}");
    // --use-amp and --no-amp are flags that take no value.
    let (ok, text) = run(&["--architecture", "cnn_lstm", "--use-amp", "false"]);
    assert!(!ok && text.contains("unexpected argument 'false'"), "{text}");

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

/// `--backend emu` trains through the GPU kernels (run by the emulator) and
/// ends where the CPU ends: the same data, seed and config give the same
/// folds and weights within f32 rounding of a few hundred steps.
#[test]
fn training_on_the_emulated_gpu_ends_where_the_cpu_does() {
    let data = std::env::temp_dir().join(format!("quorum-train-cli-emu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let sim = SimConfig { symbol: "SIMUSDT".into(), signal_strength: 2.0, ..SimConfig::default() };
    simulate_to_parquet(&sim, &data.join("raw_lob"), Duration::from_secs(8 * 60), |_, _| {}).unwrap();
    let mc = data.join("model.json");
    std::fs::write(&mc, r#"{"sequence_length": 10, "conv_channels": [8], "lstm_hidden": 8, "lstm_layers": 1}"#)
        .unwrap();
    let run = |backend: &str| {
        let ckpt = data.join(format!("ckpt-{backend}"));
        let (ok, text) = quorum(&[
            "train",
            "--architecture",
            "cnn_lstm",
            "--data",
            data.to_str().unwrap(),
            "--symbol",
            "SIMUSDT",
            "--model-config",
            mc.to_str().unwrap(),
            "--epochs",
            "2",
            "--walk-forward-splits",
            "2",
            "--seed",
            "4",
            "--backend",
            backend,
            // f32 on both: the comparison is of the kernels, not of bf16 rounding.
            "--no-amp",
            "--checkpoint-dir",
            ckpt.to_str().unwrap(),
        ]);
        assert!(ok, "--backend {backend}:\n{text}");
        let results: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ckpt.join("cnn_lstm_results.json")).unwrap()).unwrap();
        let model = results["model_path"].as_str().unwrap().to_string();
        let tensors = quorum::weights::read_tensor_file(&std::fs::read(&model).unwrap(), &model).unwrap().tensors;
        (results, tensors)
    };
    let (cpu, cpu_w) = run("cpu");
    let (emu, emu_w) = run("emu");
    assert_eq!(emu["backend"], "emu");
    assert_eq!(cpu["folds"].as_array().unwrap().len(), emu["folds"].as_array().unwrap().len());
    let acc = |r: &serde_json::Value| r["best_val_accuracy"].as_f64().unwrap();
    assert!((acc(&cpu) - acc(&emu)).abs() <= 0.01, "accuracy {} (cpu) vs {} (emu)", acc(&cpu), acc(&emu));
    let names = |w: &std::collections::HashMap<String, quorum::Tensor>| {
        let mut n: Vec<String> = w.keys().cloned().collect();
        n.sort();
        n
    };
    assert_eq!(names(&cpu_w), names(&emu_w));
    for (name, a) in &cpu_w {
        let b = &emu_w[name];
        let num: f64 = a.data.iter().zip(&b.data).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let den: f64 = a.data.iter().map(|x| f64::from(*x).powi(2)).sum();
        let e = (num / den.max(1e-30)).sqrt();
        assert!(e <= 1e-3, "{name}: the emulated GPU's weights are off the CPU's by {e:e}");
    }
}
