//! Acceptance for training (issue 4) and for evaluation (issue 18).
//!
//! Training: on simulator data with a strong planted signal, each model,
//! trained by `MultiModelTrainer` with a small config on the CPU, beats the
//! majority-class rate on the held-out fold by ≥ 10 points on its primary
//! horizon; with `signal_strength = 0` it does not.
//!
//! Evaluation: the models trained on each market are then replayed by
//! `quorum evaluate` on four fresh markets (other seeds, same signal; 25 min,
//! the first 10 the fit period; zero cost). With the signal, on every market,
//! every model's PnL beats doing nothing (always-neutral) and its accuracy
//! beats the majority class, each with a 95 % interval above zero. Without
//! it, the zero-cost PnL differences (whose true value is zero when direction
//! cannot be foreseen) exclude zero in at most 10 % of the distinct
//! comparisons, for 5 % expected: twice that allows for comparisons sharing
//! a candidate.
//!
//! Accuracy against always-neutral is printed, not asserted: it depends on
//! how the evaluated period's volatility matches the fit period's α. On seed
//! 21 the evaluated 15 minutes are 65 % NEUTRAL (a still regime after a busy
//! fit period), and every model is below always-neutral's accuracy (TLOB
//! −9.7 pp [−15.4, −3.1]) while earning +280 bps [+202, +364] more; on the
//! other three seeds every model is above it by 10–38 pp (measured
//! 2026-12-05). Without the signal, 1 of 68 distinct PnL intervals excluded zero.
//!
//! The slowest test of the suite (a few minutes on 2 cores; TLOB most of it):
//! `cargo test --release --test train_acceptance -- --nocapture` shows each
//! epoch and the figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use quorum::ensemble::EnsembleConfig;
use quorum::evaluate::{evaluate, Bound, Candidate, EvaluateOptions, Report};
use quorum::features::{build_from_store, write_feature_table};
use quorum::market::{simulate_to_parquet, SimConfig};
use quorum::model::{ModelConfig, ModelKind};
use quorum::server::engine::Engine;
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
    t.on_line = Some(|line| println!("{line}"));
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

/// The fresh markets evaluation replays: 25 minutes each, the first 10 the
/// fit period (α, the baselines): the volatility regimes last minutes, so a
/// shorter fit sets the NEUTRAL band on one regime and scores another.
const EVALUATION_SEEDS: [u64; 4] = [21, 22, 23, 24];

/// `quorum evaluate` of the models in `models` on a fresh market of `seed`
/// with `signal`, at zero cost (so a PnL difference's null is exactly zero).
fn evaluate_fresh(models: &Path, signal: f64, seed: u64) -> Report {
    let dir = std::env::temp_dir().join(format!("quorum-accept-eval-{signal}-{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sim = SimConfig { symbol: SYMBOL.into(), seed, signal_strength: signal, ..SimConfig::default() };
    simulate_to_parquet(&sim, &dir.join("raw_lob"), Duration::from_secs(25 * 60), |_, _| {}).unwrap();
    let engine = Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default()).unwrap());
    let loaded = engine.load_dir(models).unwrap();
    assert_eq!(loaded.loaded.len(), 3, "the three trained models: {:?}", loaded.missing);
    let opts = EvaluateOptions {
        from: Some(Bound::AfterStart(10 * 60_000)),
        horizons: vec![30],
        cost_bps: 0.0,
        half_spread_bps: Some(0.0),
        resamples: 1000,
        ..EvaluateOptions::new(&dir.join("raw_lob"), SYMBOL)
    };
    let t = std::time::Instant::now();
    let report = evaluate(engine, &opts, &dir.join("report"), &mut |_| {}).unwrap();
    println!("evaluated seed {seed} (signal {signal}) in {:.1} s", t.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    report
}

#[test]
fn each_model_learns_a_planted_signal_and_not_noise_and_evaluate_tells_them_apart() {
    let strong = market(2.0);
    let dead = market(0.0);
    for kind in ModelKind::ALL {
        let (acc, majority) = held_out(kind, &strong, "strong");
        assert!(acc >= majority + 0.10, "{kind}: planted signal, accuracy {acc:.4} vs majority {majority:.4}");
        let (acc0, majority0) = held_out(kind, &dead, "dead");
        assert!(acc0 < majority0 + 0.10, "{kind}: no signal, accuracy {acc0:.4} vs majority {majority0:.4}");
    }

    // With the signal: every model foresees direction (its zero-cost PnL beats
    // doing nothing) and beats the majority class on accuracy, on every market.
    let mut failures = Vec::new();
    for seed in EVALUATION_SEEDS {
        let report = evaluate_fresh(&strong.join("ckpt-strong"), 2.0, seed);
        let h = &report.horizons[0];
        println!("signal, seed {seed}: realized DOWN/NEUTRAL/UP {:?}", h.class_shares);
        for c in &h.comparisons {
            println!("signal, seed {seed}: {}", c.verdict);
        }
        for kind in ModelKind::ALL {
            let against = |baseline: Candidate| {
                h.comparisons
                    .iter()
                    .find(|c| c.second == baseline && c.first.name() == kind.as_str())
                    .unwrap_or_else(|| panic!("no comparison of {kind} with {}", baseline.name()))
            };
            let pnl = against(Candidate::AlwaysNeutral).net_pnl_diff_bps;
            if pnl.low <= 0.0 {
                failures.push(format!("seed {seed}: {kind} vs always_neutral: zero-cost PnL {pnl:?}"));
            }
            let acc = against(Candidate::MajorityClass).accuracy_diff_pp;
            if acc.low <= 0.0 {
                failures.push(format!("seed {seed}: {kind} vs majority_class: accuracy {acc:?}"));
            }
        }
    }

    // Without it: zero-cost PnL differences exclude zero no more often than a 95 % interval should.
    let (mut excluded, mut distinct) = (0usize, 0usize);
    for seed in EVALUATION_SEEDS {
        let report = evaluate_fresh(&dead.join("ckpt-dead"), 0.0, seed);
        let h = &report.horizons[0];
        // A comparison whose two PnL series are the same as another's (the
        // majority class being always-neutral, say) is counted once.
        // (Same first candidate, same difference to the last bit.)
        let mut seen: Vec<(&str, u64)> = Vec::new();
        for c in &h.comparisons {
            let i = c.net_pnl_diff_bps;
            let key = (c.first.name(), i.estimate.to_bits());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            println!("no signal, seed {seed}: {}", c.verdict);
            distinct += 1;
            excluded += usize::from(i.excludes_zero());
        }
    }
    let share = excluded as f64 / distinct as f64;
    println!("no signal: {excluded} of {distinct} distinct zero-cost PnL intervals exclude zero ({share:.3})");
    assert!(failures.is_empty(), "with the signal: {failures:#?}");
    assert!(share <= 0.10, "{excluded} of {distinct} null PnL intervals exclude zero");
}
