//! The trainer (docs/training.md) on simulator data: loading, batches, bad
//! input, the baseline, and the loop itself (early stopping, resume bit for
//! bit, determinism, progress, checkpoints, the results JSON).
//!
//! The loop runs here with `Tiny`, a small learner implementing `Net`
//! (multinomial logistic regression on the window's last feature vector,
//! with a real gradient and the real AdamW), so the loop's own behaviour is
//! tested in seconds; the real models (`TrainNet`) go through the same loop
//! in tests/train_acceptance.rs and tests/train_cli.rs, and their gradients
//! are checked in tests/train_grads.rs. `Tiny`'s parameters are those of a
//! tiny CNN-LSTM config, so its checkpoints are real weights files that
//! `Model::load` reads; it only trains `conv.0.*` (a `(3, 112, 1)` kernel is
//! a 3 × 112 matrix) and leaves the rest as initialized.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use quorum::features::{build_from_store, write_feature_table, FEATURE_NAMES, NUM_FEATURES};
use quorum::market::{simulate_to_parquet, SimConfig};
use quorum::model::{CnnLstmConfig, LobNormalization, ModelConfig, ModelKind};
use quorum::train::baseline::LogisticRegression;
use quorum::train::batches::{Batcher, Task};
use quorum::train::data::load_data;
use quorum::train::trainer::read_results;
use quorum::train::{
    purge_ticks, resolve_alpha, walk_forward, Alpha, Dataset, LossOut, LossWeights, MultiModelTrainer, Net, Normalizer,
    Param, ProgressHandle, TrainBatch, TrainingConfig,
};
use quorum::{Cpu, Error, Tensor};

const SYMBOL: &str = "SIMUSDT";

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quorum-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `<dir>/raw_lob` (the simulator's store) and `<dir>/features/SIMUSDT.parquet`
/// for 30 minutes of market at `signal` (16,000 feature rows after warm-up).
/// The "strong" market uses the simulator's strongest signal (2).
fn market(signal: f64, seed: u64) -> PathBuf {
    let dir = tempdir(&format!("market-{signal}-{seed}"));
    let sim = SimConfig { symbol: SYMBOL.into(), seed, signal_strength: signal, ..SimConfig::default() };
    simulate_to_parquet(&sim, &dir.join("raw_lob"), Duration::from_secs(30 * 60), |_, _| {}).unwrap();
    let built = build_from_store(&dir.join("raw_lob"), SYMBOL, false, |_| {}).unwrap();
    write_feature_table(&dir.join("features").join(format!("{SYMBOL}.parquet")), SYMBOL, &built.table).unwrap();
    dir
}

fn strong_market() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| market(2.0, 11))
}

fn dead_market() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| market(0.0, 11))
}

fn strong_dataset() -> &'static Dataset {
    static DS: OnceLock<Dataset> = OnceLock::new();
    DS.get_or_init(|| {
        let d = strong_market();
        load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL, false).unwrap().0
    })
}

// ---- the tiny learner ----------------------------------------------------------

const WINDOW: usize = 10;

fn tiny_config() -> ModelConfig {
    ModelConfig::CnnLstm(CnnLstmConfig {
        sequence_length: WINDOW,
        conv_channels: vec![3],
        conv_kernel: 1,
        lstm_hidden: 2,
        lstm_layers: 1,
        dropout: 0.0,
        ..CnnLstmConfig::default()
    })
}

/// What a test asks of the learner (per thread: tests run in parallel).
#[derive(Default)]
struct Hook {
    /// Request a stop through this handle after this many training batches.
    stop_after: Option<(ProgressHandle, usize)>,
    /// Request a stop during the validation of this (1-based, counted over the run) epoch.
    stop_at_validation: Option<(ProgressHandle, usize)>,
    /// Validation losses to report instead of the real ones, one per evaluation pass.
    scripted_val_loss: Option<Vec<f64>>,
    batches: usize,
    validations: usize,
    evaluate_calls_in_pass: usize,
    /// Progress snapshots seen while training (is_training, architecture).
    seen_training: Vec<(bool, String)>,
    progress: Option<ProgressHandle>,
}

thread_local! {
    static HOOK: RefCell<Hook> = RefCell::new(Hook::default());
}

fn set_hook(h: Hook) {
    HOOK.with(|c| *c.borrow_mut() = h);
}

struct Tiny {
    params: Vec<Param<Cpu>>,
    w: usize,
    b: usize,
    valid_rows: usize,
}

fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

impl Tiny {
    fn build(config: &ModelConfig, mut values: impl FnMut(&str, &[usize]) -> Vec<f32>) -> Tiny {
        let specs = quorum::model::param_specs(config).0;
        let params: Vec<Param<Cpu>> = specs
            .iter()
            .map(|(name, shape)| {
                let value = values(name, shape);
                Param {
                    name: name.clone(),
                    shape: shape.clone(),
                    grad: vec![0.0; value.len()],
                    value,
                    decay: shape.len() >= 2,
                }
            })
            .collect();
        let w = params.iter().position(|p| p.name == "conv.0.weight").unwrap();
        let b = params.iter().position(|p| p.name == "conv.0.bias").unwrap();
        Tiny { params, w, b, valid_rows: 0 }
    }

    /// Mean cross-entropy of the batch; adds its gradient when `grad`.
    fn run(&mut self, batch: &TrainBatch, grad: bool) -> LossOut {
        let f = batch.features.as_ref().expect("features");
        let (n, t) = (f.shape[0], f.shape[1]);
        let mut out = LossOut::default();
        let mut loss = 0.0;
        for i in 0..n {
            let x = &f.data[(i * t + t - 1) * NUM_FEATURES..(i * t + t) * NUM_FEATURES];
            let mut z = [0.0f64; 3];
            for (c, zc) in z.iter_mut().enumerate() {
                let row = &self.params[self.w].value[c * NUM_FEATURES..(c + 1) * NUM_FEATURES];
                *zc = f64::from(self.params[self.b].value[c])
                    + row.iter().zip(x).map(|(w, v)| f64::from(*w) * f64::from(*v)).sum::<f64>();
            }
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let y = batch.targets[0].class[i] as usize;
            loss -= (e[y] / s).ln();
            out.logits.push([z[0] as f32, z[1] as f32, z[2] as f32]);
            out.confidence.push(0.5);
            out.expected_return.push(0.0);
            if grad {
                for (c, ec) in e.iter().enumerate() {
                    let g = (ec / s - if c == y { 1.0 } else { 0.0 }) / n as f64;
                    self.params[self.b].grad[c] += g as f32;
                    for (gw, v) in self.params[self.w].grad[c * NUM_FEATURES..(c + 1) * NUM_FEATURES].iter_mut().zip(x)
                    {
                        *gw += (g * f64::from(*v)) as f32;
                    }
                }
            }
        }
        out.loss = loss / n as f64;
        out
    }
}

impl Net<Cpu> for Tiny {
    fn init(_be: &Cpu, config: ModelConfig, seed: u64) -> quorum::Result<Self> {
        let mut s = seed;
        Ok(Tiny::build(&config, |name, shape| {
            let n: usize = shape.iter().product();
            if name.starts_with("conv.0.") {
                (0..n).map(|_| ((splitmix(&mut s) - 0.5) * 0.02) as f32).collect()
            } else {
                quorum::weights::generated::tensor(name, shape).data
            }
        }))
    }

    fn from_tensors(_be: &Cpu, config: ModelConfig, tensors: &HashMap<String, Tensor>) -> quorum::Result<Self> {
        Ok(Tiny::build(&config, |name, _| tensors[name].data.clone()))
    }

    fn forward_backward(
        &mut self,
        _be: &Cpu,
        batch: &TrainBatch,
        _w: LossWeights,
        _seed: u64,
    ) -> quorum::Result<LossOut> {
        HOOK.with(|c| {
            let mut h = c.borrow_mut();
            h.batches += 1;
            h.evaluate_calls_in_pass = 0;
            if let Some(p) = h.progress.clone() {
                let s = p.snapshot();
                h.seen_training.push((s.is_training, s.architecture));
            }
            if let Some((handle, n)) = &h.stop_after {
                if h.batches == *n {
                    handle.request_stop();
                }
            }
        });
        Ok(self.run(batch, true))
    }

    fn evaluate(&mut self, _be: &Cpu, batch: &TrainBatch, _w: LossWeights) -> quorum::Result<LossOut> {
        let mut out = self.run(batch, false);
        HOOK.with(|c| {
            let mut h = c.borrow_mut();
            if h.evaluate_calls_in_pass == 0 {
                h.validations += 1;
                if let Some((handle, n)) = &h.stop_at_validation {
                    if h.validations == *n {
                        handle.request_stop();
                    }
                }
            }
            h.evaluate_calls_in_pass += 1;
            if let Some(script) = &h.scripted_val_loss {
                out.loss = script[(h.validations - 1).min(script.len() - 1)];
            }
        });
        self.valid_rows += batch.batch;
        Ok(out)
    }

    fn zero_grads(&mut self, _be: &Cpu) -> quorum::Result<()> {
        for p in &mut self.params {
            p.grad.iter_mut().for_each(|g| *g = 0.0);
        }
        Ok(())
    }

    fn params(&self) -> &[Param<Cpu>] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [Param<Cpu>] {
        &mut self.params
    }

    fn refresh(&mut self, _be: &Cpu) -> quorum::Result<()> {
        Ok(())
    }

    fn export(&self, _be: &Cpu) -> quorum::Result<HashMap<String, Tensor>> {
        Ok(self
            .params
            .iter()
            .map(|p| (p.name.clone(), Tensor { shape: p.shape.clone(), data: p.value.clone() }))
            .collect())
    }
}

fn tiny_training(dir: &Path) -> TrainingConfig {
    TrainingConfig {
        architecture: ModelKind::CnnLstm,
        sequence_length: WINDOW,
        batch_size: 128,
        learning_rate: 3e-3,
        epochs: 3,
        early_stopping_patience: 0,
        walk_forward_splits: 2,
        gradient_accumulation_steps: 2,
        horizon: 20,
        checkpoint_dir: dir.display().to_string(),
        save_best_only: false,
        model: Some(tiny_config()),
        ..TrainingConfig::default()
    }
}

fn trainer(be: &Cpu, cfg: TrainingConfig) -> MultiModelTrainer<'_, Cpu, Tiny> {
    let d = strong_market();
    let mut t = MultiModelTrainer::<Cpu, Tiny>::new(be, cfg).unwrap();
    t.load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL).unwrap();
    t
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A weights file's tensors as exact bits (the file's header orders its
/// metadata map arbitrarily, so the bytes are not compared).
type Bits = std::collections::BTreeMap<String, (Vec<usize>, Vec<u32>)>;

fn weights_bits(p: &Path) -> Bits {
    let w = quorum::weights::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    w.tensors.into_iter().map(|(k, t)| (k, (t.shape, t.data.iter().map(|v| v.to_bits()).collect()))).collect()
}

fn same_bits(a: &Bits, b: &Bits, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: tensor names");
    for (k, (sa, va)) in a {
        let (sb, vb) = &b[k];
        assert_eq!(sa, sb, "{what}: shape of {k}");
        if let Some(i) = (0..va.len()).find(|&i| va[i] != vb[i]) {
            panic!("{what}: {k}[{i}] is {} vs {}", f32::from_bits(va[i]), f32::from_bits(vb[i]));
        }
    }
}

// ---- data and batches ------------------------------------------------------------

#[test]
fn simulator_output_loads_with_exact_mids_and_without_the_raw_store() {
    let d = strong_market();
    let (ds, src) = load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL, false).unwrap();
    assert_eq!((ds.len(), src.rows), (16_000, 16_000), "30 minutes at 100 ms minus the 200-candle warm-up");
    assert!(ds.snapshots.is_empty());
    // The simulator starts at 100.00 with a 0.01 tick: mids are exact half ticks.
    assert!(ds.mid.iter().all(|m| (m * 200.0 - (m * 200.0).round()).abs() < 1e-6));
    // Features only: mids rebuilt from mid_return up to a factor; the labels agree.
    let (alone, _) = load_data(Some(&d.join("features")), None, SYMBOL, false).unwrap();
    assert_eq!(alone.ts_ms, ds.ts_ms);
    let (a, b) = (ds.labels(20), alone.labels(20));
    let alpha = resolve_alpha(Alpha::Auto, &a, 0..8000).unwrap();
    let same = (0..ds.len()).filter(|&t| a.class(t, alpha) == b.class(t, alpha)).count();
    assert!(same >= ds.len() - 5, "{same} of {} labels agree", ds.len());
    let max_diff = (0..ds.len()).filter(|&t| a.has(t)).map(|t| (a.r[t] - b.r[t]).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-9, "r differs by {max_diff}");
    // With snapshots (TLOB): one per row, joined by the feature builder's source index.
    let (with, _) = load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL, true).unwrap();
    assert_eq!(with.snapshots.len(), with.len());
    assert_eq!(with.snapshots[0].ts_exchange_ms, with.ts_ms[0]);
}

#[test]
fn a_stale_feature_table_is_refused() {
    let d = strong_market();
    let other = tempdir("stale");
    // The dead market's table beside the strong market's raw store.
    std::fs::create_dir_all(other.join("features")).unwrap();
    std::fs::copy(
        dead_market().join("features").join(format!("{SYMBOL}.parquet")),
        other.join("features").join(format!("{SYMBOL}.parquet")),
    )
    .unwrap();
    let err =
        load_data(Some(&other.join("features")), Some(&d.join("raw_lob")), SYMBOL, false).unwrap_err().to_string();
    assert!(err.contains("does not match the raw store") && err.contains("quorum features"), "{err}");
}

#[test]
fn batches_hold_normalized_windows_and_targets() {
    let ds = strong_dataset();
    let task = Task::of(&tiny_config(), 20).unwrap();
    assert_eq!((task.window, task.horizons.clone()), (WINDOW, vec![20]));
    let labels = vec![ds.labels(20)];
    let ends = ds.sample_ends(WINDOW, &labels);
    let folds = walk_forward(ds.len(), 2, 0.2, purge_ticks(&[20], WINDOW)).unwrap();
    let norm = Normalizer::fit_fold(ds, &folds[0]);
    let alphas = [resolve_alpha(Alpha::Auto, &labels[0], folds[0].train.clone()).unwrap()];
    let b = Batcher { ds, task: &task, labels: &labels, alphas: &alphas, norm: &norm, return_scale: 10.0 };
    let rows = [ends[0], ends[100], ends[7]];
    let mut batch = TrainBatch::default();
    b.fill(&rows, &mut batch).unwrap();
    let f = batch.features.as_ref().unwrap();
    assert_eq!(f.shape, vec![3, WINDOW, NUM_FEATURES]);
    assert!(batch.lob.is_none() && batch.aux.is_none());
    // Sample 1, time step 4, feature 43 (imbalance_1).
    let (t, j) = (rows[1] + 1 - WINDOW + 4, 43);
    let want = ((f64::from(ds.row(t)[j]) - norm.mean[j]) / norm.std[j]) as f32;
    assert_eq!(f.data[(WINDOW + 4) * NUM_FEATURES + j], want);
    assert_eq!(batch.targets.len(), 1);
    for (i, &t) in rows.iter().enumerate() {
        let class = labels[0].class(t, alphas[0]).unwrap() as u8;
        assert_eq!(batch.targets[0].class[i], class);
        assert_eq!(batch.targets[0].ret[i], (labels[0].target_bps[t] / 10.0) as f32);
    }
    // Refilling reuses the buffers and shrinks to the new batch.
    let ptr = f.data.as_ptr();
    b.fill(&rows[..2], &mut batch).unwrap();
    assert_eq!(batch.features.as_ref().unwrap().shape, vec![2, WINDOW, NUM_FEATURES]);
    assert_eq!(batch.features.as_ref().unwrap().data.as_ptr(), ptr);
    // A row that is not a sample end is an error, not a wrong label.
    let last = ds.len() - 1;
    assert!(b.fill(&[last], &mut batch).unwrap_err().to_string().contains("no label"));
}

#[test]
fn tlob_batches_hold_lob_windows_aux_and_every_horizon() {
    let d = strong_market();
    let (ds, _) = load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL, true).unwrap();
    let cfg = ModelConfig::default_for(ModelKind::Tlob);
    let task = Task::of(&cfg, 20).unwrap();
    assert_eq!((task.window, task.horizons.clone(), task.primary), (100, vec![10, 30, 50], 1));
    let labels: Vec<_> = task.horizons.iter().map(|&h| ds.labels(h)).collect();
    let ends = ds.sample_ends(100, &labels);
    let folds = walk_forward(ds.len(), 1, 0.2, purge_ticks(&task.horizons, 100)).unwrap();
    let norm = Normalizer::fit_fold(&ds, &folds[0]);
    let alphas: Vec<f64> =
        labels.iter().map(|l| resolve_alpha(Alpha::Auto, l, folds[0].train.clone()).unwrap()).collect();
    let b = Batcher { ds: &ds, task: &task, labels: &labels, alphas: &alphas, norm: &norm, return_scale: 10.0 };
    let rows = [ends[3], ends[50]];
    let mut batch = TrainBatch::default();
    b.fill(&rows, &mut batch).unwrap();
    let lob = batch.lob.as_ref().unwrap();
    assert_eq!(lob.shape, vec![2, 100, 20, 4]);
    assert_eq!(&lob.data[100 * 80..], &ds.tlob_input(rows[1]).unwrap().unwrap().lob[..]);
    // A model of the snapshot contract trains on the snapshot tensor.
    let mut snap_cfg = cfg.clone();
    if let ModelConfig::Tlob(c) = &mut snap_cfg {
        c.lob_normalization = LobNormalization::Snapshot;
    }
    let snap_task = Task::of(&snap_cfg, 20).unwrap();
    let mut snap_batch = TrainBatch::default();
    Batcher { task: &snap_task, ..b }.fill(&rows, &mut snap_batch).unwrap();
    let snap_lob = &snap_batch.lob.as_ref().unwrap().data;
    let want = ds.tlob_input_as(rows[1], LobNormalization::Snapshot).unwrap().unwrap().lob;
    assert_eq!(&snap_lob[100 * 80..], &want[..]);
    assert_ne!(&snap_lob[100 * 80..], &lob.data[100 * 80..], "the two contracts give different tensors");
    let aux = batch.aux.as_ref().unwrap();
    assert_eq!(aux.shape, vec![2, NUM_FEATURES]);
    let want = ((f64::from(ds.row(rows[0])[5]) - norm.mean[5]) / norm.std[5]) as f32;
    assert_eq!(aux.data[5], want);
    assert_eq!(batch.targets.len(), 3);
    assert_eq!(batch.targets[2].class[1], labels[2].class(rows[1], alphas[2]).unwrap() as u8);
}

// ---- bad input: clear errors before any training, nothing written ------------

#[test]
fn bad_input_is_refused_before_training_and_writes_nothing() {
    let be = Cpu::new();
    let ckpt = tempdir("bad-ckpt").join("never");
    let base = tiny_training(&ckpt);
    let field = |cfg: TrainingConfig| match MultiModelTrainer::<Cpu, Tiny>::new(&be, cfg) {
        Err(Error::Config { field, .. }) => field,
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("accepted a bad config"),
    };
    assert_eq!(field(TrainingConfig { batch_size: 0, ..base.clone() }), "batch_size");
    assert_eq!(field(TrainingConfig { learning_rate: -1e-4, ..base.clone() }), "learning_rate");
    let mut wide = base.clone();
    if let Some(ModelConfig::CnnLstm(c)) = &mut wide.model {
        c.input_features = 100;
    }
    assert_eq!(field(wide), "model.input_features");

    // An empty data folder.
    let empty = tempdir("empty");
    let mut t = MultiModelTrainer::<Cpu, Tiny>::new(&be, base.clone()).unwrap();
    let err = t.load_data(Some(&empty.join("features")), Some(&empty), SYMBOL).unwrap_err().to_string();
    assert!(err.contains(&empty.join(SYMBOL).display().to_string()) && err.contains("no snapshot files"), "{err}");
    let err = t.load_data(Some(&empty.join("features")), None, SYMBOL).unwrap_err().to_string();
    assert!(err.contains("nothing to train on"), "{err}");
    // Training without data is an error too.
    assert!(t.train_walk_forward().unwrap_err().to_string().contains("load_data"));

    // TLOB without the LOB folder: refused at load_data, naming lob_path.
    let d = strong_market();
    let tlob = TrainingConfig {
        architecture: ModelKind::Tlob,
        sequence_length: 100,
        model: None,
        checkpoint_dir: ckpt.display().to_string(),
        ..TrainingConfig::default()
    };
    let mut t = MultiModelTrainer::<Cpu, Tiny>::new(&be, tlob).unwrap();
    match t.load_data(Some(&d.join("features")), None, SYMBOL) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "lob_path");
            assert!(reason.contains("raw LOB folder"), "{reason}");
        }
        other => panic!("expected a lob_path error, got {:?}", other.err()),
    }
    // Too many splits for the data: the error names the field.
    let mut t = MultiModelTrainer::<Cpu, Tiny>::new(&be, TrainingConfig { walk_forward_splits: 400, ..base }).unwrap();
    let err = t.load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL).unwrap_err();
    assert!(matches!(&err, Error::Config { field, .. } if field == "walk_forward_splits"), "{err}");
    assert!(!ckpt.exists(), "nothing may be written for refused input");
}

// ---- the baseline ----------------------------------------------------------------

/// The baseline's validation accuracy and majority-class rate on the last of
/// 2 folds, horizon 20, auto α.
fn baseline_on(ds: &Dataset) -> (f64, f64) {
    let labels = ds.labels(20);
    let ends = ds.sample_ends(WINDOW, std::slice::from_ref(&labels));
    let folds = walk_forward(ds.len(), 2, 0.2, purge_ticks(&[20], WINDOW)).unwrap();
    let fold = &folds[1];
    let alpha = resolve_alpha(Alpha::Auto, &labels, fold.train.clone()).unwrap();
    let (train, valid) = (fold.train_samples(&ends), fold.valid_samples(&ends));
    let y = |rows: &[usize]| rows.iter().map(|&t| labels.class(t, alpha).unwrap() as u8).collect::<Vec<_>>();
    let norm = Normalizer::fit_fold(ds, fold);
    let lr = LogisticRegression::fit(ds, &norm, &train, &y(&train));
    let ret: Vec<f64> = valid.iter().map(|&t| labels.target_bps[t]).collect();
    let m = lr.score(ds, &valid, &y(&valid), &ret);
    (m.accuracy, m.majority_class_rate)
}

#[test]
fn the_baseline_learns_a_planted_signal_and_not_noise() {
    let (acc, majority) = baseline_on(strong_dataset());
    // A linear model of one tick's order flow: measured +9 points at signal 2
    // (+7 at signal 1); ≤ +1.2 points at signal 0 over seeds 11–13.
    println!("signal 2: baseline accuracy {acc:.4}, majority {majority:.4}");
    assert!(acc >= majority + 0.05, "planted signal: accuracy {acc:.4} vs majority {majority:.4}");
    let d = dead_market();
    let (dead, _) = load_data(Some(&d.join("features")), Some(&d.join("raw_lob")), SYMBOL, false).unwrap();
    let (acc0, majority0) = baseline_on(&dead);
    println!("signal 0: baseline accuracy {acc0:.4}, majority {majority0:.4}");
    assert!(acc0 <= majority0 + 0.02, "no signal: accuracy {acc0:.4} vs majority {majority0:.4}");
    assert!(FEATURE_NAMES.contains(&"ofi_10"));
}

// ---- the loop ----------------------------------------------------------------------

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "a temporary file was left behind: {name}");
    }
}

#[test]
fn the_loop_learns_writes_results_and_a_loadable_model() {
    let be = Cpu::new();
    let dir = tempdir("full");
    let progress = ProgressHandle::new();
    set_hook(Hook { progress: Some(progress.clone()), ..Hook::default() });
    let mut t = trainer(&be, tiny_training(&dir)).with_progress(progress.clone());
    t.on_line = Some(|line| println!("{line}")); // the log lines, for `--nocapture`
    let r = t.train_walk_forward().unwrap();
    assert!(r.completed);
    assert_eq!(r.folds.len(), 2);
    for f in &r.folds {
        assert_eq!(f.epochs.len(), 3);
        assert!(!f.stopped_early);
        let best = f.best().unwrap();
        assert_eq!(f.best_val_loss, Some(best.val_loss));
        assert!(f.epochs.iter().all(|e| e.val_loss >= best.val_loss));
        // The learner (logistic regression on the last vector of a 10-tick window)
        // learns the planted signal: training loss falls below ln 3 and the
        // validation predictions correlate with the labels (MCC; accuracy alone
        // is close to the majority rate on the small first fold, which it overfits).
        assert!(f.epochs[2].train_loss < f.epochs[0].train_loss, "{:?}", f.epochs);
        assert!(best.train_loss < 3f64.ln());
        assert!(best.metrics.mcc > 0.05, "{best:?}");
        assert_eq!(best.metrics.samples as usize, f.valid_samples);
        assert_eq!(f.valid_samples, f.epochs[0].metrics.confusion.iter().flatten().sum::<u64>() as usize);
        assert!(f.baseline.accuracy > f.baseline.majority_class_rate);
        // The schedule: 2 micro-batches a step, the epoch's remainder its own step.
        let steps = f.train_samples.div_ceil(128).div_ceil(2) as u64;
        assert_eq!(f.epochs.iter().map(|e| e.optimizer_steps).collect::<Vec<_>>(), vec![steps, 2 * steps, 3 * steps]);
        assert!((f.epochs[2].learning_rate - 3e-4).abs() < 1e-12, "the last step is at 10% of the peak");
    }
    assert_eq!(r.folds[1].train_rows[0], 0);
    assert!(r.folds[0].train_samples < r.folds[1].train_samples, "expanding window");
    assert_eq!(r.best_val_loss, r.folds[1].best_val_loss);
    assert_eq!(r.best_val_accuracy, r.folds[1].best_val_accuracy);

    // The JSON on disk, by the names of docs/training.md, "Results".
    let json: serde_json::Value = serde_json::from_slice(&bytes(&t.paths().results)).unwrap();
    for key in ["best_val_accuracy", "best_val_loss", "training_time_seconds", "model_path", "folds", "mean"] {
        assert!(json.get(key).is_some(), "results lack {key}");
    }
    let e = &json["folds"][0]["epochs"][1];
    for key in
        ["train_loss", "val_loss", "accuracy", "f1_macro", "mcc", "confusion", "profit_factor", "majority_class_rate"]
    {
        assert!(e.get(key).is_some(), "an epoch lacks {key}: {e}");
    }
    assert_eq!(e["confusion"].as_array().unwrap().len(), 3);
    assert!(json["folds"][1]["baseline"]["accuracy"].is_f64());
    assert!(json["mean"]["baseline_accuracy"].is_f64());
    assert_eq!(read_results(&t.paths().results).unwrap(), r);

    // The model: the last fold's best epoch, with its normalizer, loadable by the engine.
    assert_eq!(PathBuf::from(&r.model_path), t.paths().best);
    let w = quorum::weights::load(&t.paths().best).unwrap();
    assert!(w.tensors.contains_key("input_norm.mean") && w.tensors.contains_key("input_norm.std"));
    assert_eq!((w.meta.return_scale, w.meta.horizon), (10.0, Some(20)));
    quorum::Model::load(&be, &t.paths().best).unwrap();
    // Not save_best_only: `last` and the state stay; no temporary files.
    assert!(t.paths().last.exists() && t.paths().optim.exists() && t.paths().state.exists());
    no_temp_files(&dir);

    // Progress: seen as training while it ran, finished at the end.
    let seen = HOOK.with(|c| c.borrow().seen_training.clone());
    assert!(!seen.is_empty() && seen.iter().all(|(on, arch)| *on && arch == "cnn_lstm"));
    let p = progress.snapshot();
    assert!(!p.is_training);
    assert_eq!((p.fold, p.folds, p.current_epoch, p.total_epochs), (2, 2, 3, 3));
    assert_eq!(p.progress_percent, 100.0);
    assert!(p.samples_per_second > 0.0 && p.best_loss.is_some() && p.current_loss.is_some());
}

#[test]
fn save_best_only_keeps_only_the_best_model() {
    let be = Cpu::new();
    let dir = tempdir("best-only");
    set_hook(Hook::default());
    let cfg = TrainingConfig { save_best_only: true, epochs: 1, walk_forward_splits: 1, ..tiny_training(&dir) };
    let mut t = trainer(&be, cfg);
    let r = t.train_walk_forward().unwrap();
    assert!(r.completed && t.paths().best.exists() && t.paths().results.exists());
    assert!(!t.paths().last.exists() && !t.paths().optim.exists() && !t.paths().state.exists());
    no_temp_files(&dir);
    // Resuming a completed run (e.g. `train --architecture all --resume` after a
    // stop in the second model) returns its results without training again.
    let cfg = TrainingConfig { save_best_only: true, epochs: 1, walk_forward_splits: 1, ..tiny_training(&dir) };
    let mut again = trainer(&be, cfg.clone());
    again.resume = true;
    let before = HOOK.with(|c| c.borrow().batches);
    assert_eq!(again.train_walk_forward().unwrap(), r);
    assert_eq!(HOOK.with(|c| c.borrow().batches), before, "no batch was trained");
    // Other settings are not that run: no state to resume from.
    let mut other = trainer(&be, TrainingConfig { seed: 7, ..cfg });
    other.resume = true;
    assert!(other.train_walk_forward().unwrap_err().to_string().contains("no training state"));
}

#[test]
fn early_stopping_keeps_the_best_epoch() {
    let be = Cpu::new();
    let dir = tempdir("early");
    // Validation losses by epoch: best at epoch 2, then two worse ones → stop after epoch 4.
    set_hook(Hook { scripted_val_loss: Some(vec![1.0, 0.9, 0.95, 0.97, 0.5, 0.4]), ..Hook::default() });
    let cfg = TrainingConfig { epochs: 6, early_stopping_patience: 2, walk_forward_splits: 1, ..tiny_training(&dir) };
    let mut t = trainer(&be, cfg);
    let r = t.train_walk_forward().unwrap();
    let f = &r.folds[0];
    // The validation loss is the sample-weighted mean of the batches' losses.
    let losses: Vec<f64> = f.epochs.iter().map(|e| e.val_loss).collect();
    assert_eq!(losses.len(), 4, "{losses:?}");
    for (got, want) in losses.iter().zip([1.0, 0.9, 0.95, 0.97]) {
        assert!((got - want).abs() < 1e-12, "{losses:?}");
    }
    assert!(f.stopped_early);
    assert_eq!((f.best_epoch, f.best_val_loss), (2, Some(losses[1])));
    assert_eq!(r.best_val_loss, Some(losses[1]));
    // The best file holds epoch 2's weights: a run of 6 epochs without early
    // stopping whose best is also epoch 2 has the same best file.
    let dir2 = tempdir("early-2");
    let cfg2 = TrainingConfig { epochs: 6, early_stopping_patience: 0, walk_forward_splits: 1, ..tiny_training(&dir2) };
    set_hook(Hook { scripted_val_loss: Some(vec![1.0, 0.9, 1.5, 1.5, 1.5, 1.5]), ..Hook::default() });
    let mut t2 = trainer(&be, cfg2);
    let r2 = t2.train_walk_forward().unwrap();
    assert_eq!((r2.folds[0].epochs.len(), r2.folds[0].best_epoch), (6, 2));
    same_bits(&weights_bits(&t.paths().best), &weights_bits(&t2.paths().best), "both best files are epoch 2's model");
    assert_ne!(weights_bits(&t2.paths().best), weights_bits(&t2.paths().last), "epoch 6 differs from epoch 2");
}

/// Runs to the end and returns (best file, last file, results) bytes/values.
fn full_run(tag: &str, seed: u64) -> (Bits, Bits, quorum::train::report::Results) {
    let be = Cpu::new();
    let dir = tempdir(tag);
    set_hook(Hook::default());
    let mut t = trainer(&be, TrainingConfig { seed, ..tiny_training(&dir) });
    let r = t.train_walk_forward().unwrap();
    (weights_bits(&t.paths().best), weights_bits(&t.paths().last), r)
}

fn same_figures(a: &quorum::train::report::Results, b: &quorum::train::report::Results) {
    assert_eq!(a.folds.len(), b.folds.len());
    for (fa, fb) in a.folds.iter().zip(&b.folds) {
        assert_eq!(fa.best_epoch, fb.best_epoch);
        assert_eq!(fa.baseline, fb.baseline);
        assert_eq!(fa.epochs, fb.epochs, "every epoch's figures, bit for bit");
    }
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let (best_a, last_a, ra) = full_run("seed-a", 42);
    let (best_b, last_b, rb) = full_run("seed-b", 42);
    same_bits(&best_a, &best_b, "best");
    same_bits(&last_a, &last_b, "last");
    same_figures(&ra, &rb);
    let (best_c, _, _) = full_run("seed-c", 43);
    assert!(best_a != best_c, "another seed, other weights");
}

fn resumed_run(tag: &str, hook: impl Fn(&ProgressHandle) -> Hook) -> (Bits, Bits, quorum::train::report::Results) {
    let be = Cpu::new();
    let dir = tempdir(tag);
    let progress = ProgressHandle::new();
    set_hook(hook(&progress));
    let mut t = trainer(&be, tiny_training(&dir)).with_progress(progress.clone());
    let first = t.train_walk_forward().unwrap();
    assert!(!first.completed, "the stop request ends the run");
    assert!(!progress.snapshot().is_training);
    assert!(t.paths().state.exists() && t.paths().last.exists() && t.paths().optim.exists());
    no_temp_files(&dir);
    // A new process, in effect: a new trainer resuming from the files.
    set_hook(Hook::default());
    let mut t2 = trainer(&be, tiny_training(&dir));
    t2.resume = true;
    let r = t2.train_walk_forward().unwrap();
    assert!(r.completed);
    (weights_bits(&t2.paths().best), weights_bits(&t2.paths().last), r)
}

#[test]
fn stop_after_epoch_2_and_resume_gives_the_same_weights_bit_for_bit() {
    let (best, last, r) = full_run("resume-ref", 42);
    // Stop requested during epoch 2's validation: the run saves at the end of epoch 2.
    let (best2, last2, r2) =
        resumed_run("resume-epoch", |p| Hook { stop_at_validation: Some((p.clone(), 2)), ..Hook::default() });
    same_bits(&best, &best2, "best");
    same_bits(&last, &last2, "last");
    same_figures(&r, &r2);
}

#[test]
fn stop_mid_epoch_and_resume_gives_the_same_weights_bit_for_bit() {
    let (best, last, r) = full_run("resume-ref-mid", 42);
    // 37 micro-batches in: mid-epoch of fold 1 (an odd count: the stop waits for
    // the accumulation to finish, so no half-accumulated gradient is lost).
    let (best2, last2, r2) =
        resumed_run("resume-mid", |p| Hook { stop_after: Some((p.clone(), 37)), ..Hook::default() });
    same_bits(&best, &best2, "best");
    same_bits(&last, &last2, "last");
    same_figures(&r, &r2);
    // And in fold 2 (fold 1 is 3 epochs of 42 micro-batches), past the fold boundary.
    let (best3, last3, r3) =
        resumed_run("resume-fold2", |p| Hook { stop_after: Some((p.clone(), 200)), ..Hook::default() });
    assert!(r3.folds[0].train_samples.div_ceil(128) * 3 < 200);
    same_bits(&best, &best3, "best");
    same_bits(&last, &last3, "last");
    same_figures(&r, &r3);
}

#[test]
fn resume_refuses_other_settings_and_mismatched_files() {
    let be = Cpu::new();
    let dir = tempdir("resume-bad");
    let progress = ProgressHandle::new();
    set_hook(Hook { stop_after: Some((progress.clone(), 10)), ..Hook::default() });
    let mut t = trainer(&be, tiny_training(&dir)).with_progress(progress);
    assert!(!t.train_walk_forward().unwrap().completed);
    set_hook(Hook::default());
    // Another learning rate: refused, naming the field.
    let mut other = trainer(&be, TrainingConfig { learning_rate: 1e-2, ..tiny_training(&dir) });
    other.resume = true;
    match other.train_walk_forward() {
        Err(Error::Config { field, .. }) => assert_eq!(field, "learning_rate"),
        r => panic!("expected a config error, got {:?}", r.map(|r| r.completed)),
    }
    // The state no longer matches the optimizer file (as after a crash between writes).
    let state_path = t.paths().state.clone();
    let mut state: serde_json::Value = serde_json::from_slice(&bytes(&state_path)).unwrap();
    state["seq"] = serde_json::json!(state["seq"].as_u64().unwrap() + 5);
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let mut again = trainer(&be, tiny_training(&dir));
    again.resume = true;
    let err = again.train_walk_forward().unwrap_err().to_string();
    assert!(err.contains("checkpoint save") && err.contains("_last"), "{err}");
    // Nothing to resume from.
    let mut none = trainer(&be, tiny_training(&tempdir("resume-none")));
    none.resume = true;
    assert!(none.train_walk_forward().unwrap_err().to_string().contains("no training state"));
}

#[test]
fn accumulating_two_half_batches_steps_like_one_whole_batch() {
    use quorum::train::optim::AdamW;
    let be = Cpu::new();
    let ds = strong_dataset();
    let task = Task::of(&tiny_config(), 20).unwrap();
    let labels = vec![ds.labels(20)];
    let ends = ds.sample_ends(WINDOW, &labels);
    let folds = walk_forward(ds.len(), 1, 0.2, purge_ticks(&[20], WINDOW)).unwrap();
    let norm = Normalizer::fit_fold(ds, &folds[0]);
    let alphas = [resolve_alpha(Alpha::Auto, &labels[0], folds[0].train.clone()).unwrap()];
    let b = Batcher { ds, task: &task, labels: &labels, alphas: &alphas, norm: &norm, return_scale: 10.0 };
    let w = LossWeights { direction: 1.0, confidence: 0.5, ret: 0.3 };
    let rows = &ends[..128];
    let (mut whole, mut halves) = (TrainBatch::default(), [TrainBatch::default(), TrainBatch::default()]);
    b.fill(rows, &mut whole).unwrap();
    b.fill(&rows[..64], &mut halves[0]).unwrap();
    b.fill(&rows[64..], &mut halves[1]).unwrap();
    set_hook(Hook::default());

    let mut one = Tiny::init(&be, tiny_config(), 1).unwrap();
    let mut opt1 = AdamW::new(&be, one.params(), 0.01, 0.5).unwrap();
    one.forward_backward(&be, &whole, w, 0).unwrap();
    let i1 = opt1.step(&be, one.params_mut(), 1, 1e-2).unwrap();

    let mut two = Tiny::init(&be, tiny_config(), 1).unwrap();
    let mut opt2 = AdamW::new(&be, two.params(), 0.01, 0.5).unwrap();
    for h in &halves {
        two.forward_backward(&be, h, w, 0).unwrap();
    }
    let i2 = opt2.step(&be, two.params_mut(), 2, 1e-2).unwrap();
    // The mean of two equal halves' mean gradients is the whole batch's mean gradient.
    assert!((i1.grad_norm - i2.grad_norm).abs() < 1e-5 * i1.grad_norm, "{i1:?} vs {i2:?}");
    assert!(i1.clip < 1.0, "the clip is exercised: {i1:?}");
    let (p1, p2) = (&one.params()[one.w].value, &two.params()[two.w].value);
    let max = p1.iter().zip(p2).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-6, "weights differ by {max}");
    // And a step that forgot to divide by the micro-batches would not match.
    let mut wrong = Tiny::init(&be, tiny_config(), 1).unwrap();
    let mut opt3 = AdamW::new(&be, wrong.params(), 0.01, 0.5).unwrap();
    for h in &halves {
        wrong.forward_backward(&be, h, w, 0).unwrap();
    }
    let i3 = opt3.step(&be, wrong.params_mut(), 1, 1e-2).unwrap();
    assert!((i3.grad_norm - 2.0 * i1.grad_norm).abs() < 1e-4 * i1.grad_norm);
}
