//! Acceptance for training (issue 4): on simulator data with a strong planted
//! signal, each model, trained by `MultiModelTrainer` with a small config on
//! the CPU, beats the majority-class rate on the held-out fold by ≥ 10 points
//! on its primary horizon; with `signal_strength = 0` it does not.
//!
//! The slowest test of the suite (a few minutes on 2 cores; TLOB most of it):
//! `cargo test --release --test train_acceptance -- --nocapture` shows each
//! epoch and the figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum::features::{build_from_store, write_feature_table};
use quorum::market::{simulate_to_parquet, SimConfig};
use quorum::model::{ModelConfig, ModelKind};
use quorum::train::{MultiModelTrainer, TrainingConfig};
use quorum::Cpu;

const SYMBOL: &str = "SIMUSDT";

fn market(signal: f64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorum-accept-{signal}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sim = SimConfig { symbol: SYMBOL.into(), seed: 5, signal_strength: signal, ..SimConfig::default() };
    simulate_to_parquet(&sim, &dir.join("raw_lob"), Duration::from_secs(60 * 60), |_, _| {}).unwrap();
    let built = build_from_store(&dir.join("raw_lob"), SYMBOL, false, |_| {}).unwrap();
    write_feature_table(&dir.join("features").join(format!("{SYMBOL}.parquet")), SYMBOL, &built.table).unwrap();
    dir
}

/// (held-out accuracy, majority-class rate) of `kind` trained on `data`.
fn held_out(kind: ModelKind, data: &Path, tag: &str) -> (f64, f64) {
    let model = ModelConfig::small(kind);
    let sequence_length = model.sequence_length();
    let cfg = TrainingConfig {
        architecture: kind,
        sequence_length,
        batch_size: 64,
        learning_rate: 1e-3,
        epochs: 6,
        early_stopping_patience: 3,
        walk_forward_splits: 1,
        validation_split: 0.2,
        gradient_accumulation_steps: 1,
        horizon: 30,
        checkpoint_dir: data.join(format!("ckpt-{tag}")).display().to_string(),
        model: Some(model),
        ..TrainingConfig::default()
    };
    let be = Cpu::new();
    let mut t = MultiModelTrainer::<Cpu>::new(&be, cfg).unwrap();
    t.print = true;
    t.load_data(Some(&data.join("features")), Some(&data.join("raw_lob")), SYMBOL).unwrap();
    let r = t.train_walk_forward().unwrap();
    let fold = r.folds.last().unwrap();
    let best = fold.best().unwrap();
    println!(
        "{kind} ({tag}): held-out accuracy {:.4}, majority {:.4}, baseline {:.4}",
        best.metrics.accuracy, best.metrics.majority_class_rate, fold.baseline.accuracy
    );
    (best.metrics.accuracy, best.metrics.majority_class_rate)
}

#[test]
fn each_model_learns_a_planted_signal_and_not_noise() {
    let strong = market(2.0);
    let dead = market(0.0);
    for kind in ModelKind::ALL {
        let (acc, majority) = held_out(kind, &strong, "strong");
        assert!(acc >= majority + 0.10, "{kind}: planted signal, accuracy {acc:.4} vs majority {majority:.4}");
        let (acc0, majority0) = held_out(kind, &dead, "dead");
        assert!(acc0 < majority0 + 0.10, "{kind}: no signal, accuracy {acc0:.4} vs majority {majority0:.4}");
    }
}
