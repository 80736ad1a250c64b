//! `MultiModelTrainer`: walk-forward training of one architecture
//! (docs/training.md), generic over the backend and over the trainable net.
//!
//! Per fold (the purged expanding splits of docs/training.md, "Walk-forward"), from a fresh initialization
//! with the run's `seed`: the normalizer and auto α are fit on the fold's
//! training part; each epoch shuffles the training samples (ChaCha8 seeded by
//! seed, fold, epoch), runs micro-batches of `batch_size`, steps AdamW every
//! `gradient_accumulation_steps` micro-batches (and once for a remainder at
//! the epoch's end), validates on the fold's validation part in time order,
//! and keeps the epoch with the lowest validation loss; `early_stopping_patience`
//! epochs without a lower one end the fold (0 turns early stopping off). The
//! logistic-regression baseline is fit per fold beside it.
//!
//! Determinism: the shuffle, the dropout seeds (seed, fold, epoch, batch)
//! and the initialization depend only on the seed and the position, so a run
//! stopped and resumed from its checkpoint takes exactly the steps of an
//! uninterrupted one.
//!
//! The net is anything implementing [`Net`]: the real [`TrainNet`], or a
//! small learner in tests (so the loop's own behaviour is tested fast).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::Train;
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelMeta};
use crate::tensor::Tensor;
use crate::train::baseline::LogisticRegression;
use crate::train::batches::{rng_for, seed_for, shuffle, Batcher, Task};
use crate::train::checkpoint::{self, CheckpointPaths, RunState, STATE_FORMAT};
use crate::train::config::TrainingConfig;
use crate::train::data::{load_data, DataSource};
use crate::train::dataset::{
    purge_ticks, resolve_alpha, walk_forward, Alpha, Dataset, Fold, HorizonLabels, Normalizer,
};
use crate::train::net::{LossOut, LossWeights, Param, TrainBatch, TrainNet};
use crate::train::optim::{lr_at, AdamW};
use crate::train::progress::ProgressHandle;
use crate::train::report::{EpochResult, FoldResult, Results};
use crate::train::scores::{argmax3, MetricsAcc};
use crate::weights::repository::{Repository, TrainedOn};

/// What the trainer needs from a trainable model (the contract of
/// [`TrainNet`], whose methods these forward to).
pub trait Net<B: Train>: Sized {
    fn init(be: &B, config: ModelConfig, seed: u64) -> Result<Self>;
    fn from_tensors(be: &B, config: ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<Self>;
    /// Adds the gradient of the batch's mean loss into the grads.
    fn forward_backward(&mut self, be: &B, batch: &TrainBatch, w: LossWeights, dropout_seed: u64) -> Result<LossOut>;
    fn evaluate(&mut self, be: &B, batch: &TrainBatch, w: LossWeights) -> Result<LossOut>;
    fn zero_grads(&mut self, be: &B) -> Result<()>;
    fn params(&self) -> &[Param<B>];
    fn params_mut(&mut self) -> &mut [Param<B>];
    /// After the optimizer changed the values.
    fn refresh(&mut self, be: &B) -> Result<()>;
    /// docs/models.md's tensors.
    fn export(&self, be: &B) -> Result<HashMap<String, Tensor>>;
}

impl<B: Train> Net<B> for TrainNet<B> {
    fn init(be: &B, config: ModelConfig, seed: u64) -> Result<Self> {
        TrainNet::init(be, config, seed)
    }
    fn from_tensors(be: &B, config: ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        TrainNet::from_tensors(be, config, tensors)
    }
    fn forward_backward(&mut self, be: &B, batch: &TrainBatch, w: LossWeights, dropout_seed: u64) -> Result<LossOut> {
        TrainNet::forward_backward(self, be, batch, w, dropout_seed)
    }
    fn evaluate(&mut self, be: &B, batch: &TrainBatch, w: LossWeights) -> Result<LossOut> {
        TrainNet::evaluate(self, be, batch, w)
    }
    fn zero_grads(&mut self, be: &B) -> Result<()> {
        TrainNet::zero_grads(self, be)
    }
    fn params(&self) -> &[Param<B>] {
        TrainNet::params(self)
    }
    fn params_mut(&mut self) -> &mut [Param<B>] {
        TrainNet::params_mut(self)
    }
    fn refresh(&mut self, be: &B) -> Result<()> {
        TrainNet::refresh(self, be)
    }
    fn export(&self, be: &B) -> Result<HashMap<String, Tensor>> {
        TrainNet::export(self, be)
    }
}

/// A fold, its samples and what was fit on its training part.
struct FoldPlan {
    fold: Fold,
    train: Vec<usize>,
    valid: Vec<usize>,
    alphas: Vec<f64>,
    norm: Normalizer,
}

/// The data of a run after `load_data`.
struct Prepared {
    ds: Dataset,
    source: DataSource,
    labels: Vec<HorizonLabels>,
    folds: Vec<FoldPlan>,
}

/// How a fold's epoch loop ended.
enum FoldEnd {
    Done,
    Stopped,
}

pub struct MultiModelTrainer<'b, B: Train, N: Net<B> = TrainNet<B>> {
    be: &'b B,
    config: TrainingConfig,
    model: ModelConfig,
    task: Task,
    data: Option<Prepared>,
    progress: ProgressHandle,
    /// Where each finished epoch's line goes (the CLI prints it); without
    /// one it is logged at info (a server's training job, inside its span).
    pub on_line: Option<fn(&str)>,
    /// Redraws a progress bar while an epoch runs (`Some(text)`) and clears
    /// it (`None`); the CLI sets it on a terminal.
    pub on_bar: Option<fn(Option<&str>)>,
    /// Resume from the checkpoint in `checkpoint_dir` instead of starting over.
    pub resume: bool,
    paths: CheckpointPaths,
    notes: Vec<String>,
    _net: std::marker::PhantomData<N>,
}

impl<'b, B: Train, N: Net<B>> MultiModelTrainer<'b, B, N> {
    /// Checks the config (every field, and the model config against the
    /// training task) before anything else happens.
    pub fn new(be: &'b B, config: TrainingConfig) -> Result<Self> {
        config.validate()?;
        let model = config.model_config();
        let task = Task::of(&model, config.horizon)?;
        let paths = CheckpointPaths::new(Path::new(&config.checkpoint_dir), config.architecture.as_str());
        Ok(MultiModelTrainer {
            be,
            config,
            model,
            task,
            data: None,
            progress: ProgressHandle::new(),
            on_line: None,
            on_bar: None,
            resume: false,
            paths,
            notes: Vec::new(),
            _net: std::marker::PhantomData,
        })
    }

    pub fn config(&self) -> &TrainingConfig {
        &self.config
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    pub fn paths(&self) -> &CheckpointPaths {
        &self.paths
    }

    /// Shares progress (and the stop flag) with a server or a test.
    pub fn with_progress(mut self, progress: ProgressHandle) -> Self {
        self.progress = progress;
        self
    }

    pub fn progress(&self) -> &ProgressHandle {
        &self.progress
    }

    fn log(&self, line: &str) {
        match self.on_line {
            Some(print) => print(line),
            None => tracing::info!("{line}"),
        }
    }

    /// `load_data(features_path, lob_path, symbol)` (docs/training.md, "Data"): reads the
    /// feature table (a file, or a folder with `<SYMBOL>.parquet`) and the raw
    /// snapshot store (see [`crate::train::data`]), then plans the folds. TLOB
    /// needs `lob_path`; a missing one is an error here, before any training.
    pub fn load_data(&mut self, features_path: Option<&Path>, lob_path: Option<&Path>, symbol: &str) -> Result<()> {
        let (ds, source) = load_data(features_path, lob_path, symbol, self.task.tlob)?;
        self.set_dataset(ds, source)
    }

    /// Uses an in-memory dataset (tests, or data already loaded).
    pub fn set_dataset(&mut self, ds: Dataset, source: DataSource) -> Result<()> {
        if self.task.tlob && ds.snapshots.is_empty() {
            return Err(Error::config("lob_path", "TLOB needs the raw snapshots; the dataset has none"));
        }
        let labels: Vec<HorizonLabels> = self.task.horizons.iter().map(|&h| ds.labels(h)).collect();
        let ends = ds.sample_ends(self.task.window, &labels);
        let purge = purge_ticks(&self.task.horizons, self.task.window);
        let folds = walk_forward(ds.len(), self.config.walk_forward_splits, self.config.validation_split, purge)
            .map_err(|e| {
                Error::config("walk_forward_splits", format!("{e} ({} rows of {})", ds.len(), source.symbol))
            })?;
        let alpha = self.config.alpha.map_or(Alpha::Auto, Alpha::Fixed);
        let mut plans = Vec::with_capacity(folds.len());
        for fold in folds {
            let (train, valid) = (fold.train_samples(&ends), fold.valid_samples(&ends));
            if train.is_empty() || valid.is_empty() {
                return Err(Error::config(
                    "walk_forward_splits",
                    format!(
                        "fold {} has {} training and {} validation samples ({} rows, window {}, horizons {:?}): \
                         use more data or fewer splits",
                        fold.index,
                        train.len(),
                        valid.len(),
                        ds.len(),
                        self.task.window,
                        self.task.horizons
                    ),
                ));
            }
            let alphas = labels
                .iter()
                .map(|l| resolve_alpha(alpha, l, fold.train.clone()).map_err(|e| Error::config("alpha", e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            let norm = Normalizer::fit_fold(&ds, &fold);
            plans.push(FoldPlan { fold, train, valid, alphas, norm });
        }
        self.data = Some(Prepared { ds, source, labels, folds: plans });
        Ok(())
    }

    /// What the printed losses are made of (docs/training.md, "Loss"): not
    /// plain cross-entropy, so a reader can compare them with their own.
    fn loss_description(&self) -> String {
        let w = self.loss_weights();
        let horizons = self.task.horizons.len();
        let per = if horizons > 1 { format!(", averaged over {horizons} horizons") } else { String::new() };
        format!(
            "loss = {} × CE(direction) + {} × BCE(confidence) + {} × Huber(return){per}",
            w.direction, w.confidence, w.ret
        )
    }

    fn loss_weights(&self) -> LossWeights {
        LossWeights {
            direction: self.config.direction_weight as f32,
            confidence: self.config.confidence_weight as f32,
            ret: self.config.return_weight as f32,
        }
    }

    fn meta(&self) -> ModelMeta {
        ModelMeta { return_scale: self.config.return_scale, horizon: Some(self.task.primary_horizon() as u64) }
    }

    fn config_json(&self) -> (serde_json::Value, serde_json::Value) {
        let c = serde_json::to_value(&self.config).expect("TrainingConfig serializes");
        let m = serde_json::from_str(&self.model.to_json()).expect("model configs serialize");
        (c, m)
    }

    fn new_results(&self, symbol: &str) -> Results {
        let (config, model_config) = self.config_json();
        Results {
            architecture: self.config.architecture.as_str().into(),
            symbol: symbol.into(),
            backend: self.be.name().into(),
            horizon: self.task.primary_horizon(),
            horizons: self.task.horizons.clone(),
            best_val_accuracy: 0.0,
            best_val_loss: None,
            training_time_seconds: 0.0,
            model_path: self.paths.best.display().to_string(),
            completed: false,
            folds: Vec::new(),
            mean: Default::default(),
            config,
            model_config,
            notes: self.notes.clone(),
        }
    }

    /// The model file of the run's result.
    pub fn model_path(&self) -> PathBuf {
        self.paths.best.clone()
    }

    /// Publishes the run's model (`model_path`) into `repository` as the
    /// next version of its architecture, with a manifest of the data it was
    /// trained on (`data_folder`, the symbol, the rows read) and `results`.
    /// Only a completed run is published: a stopped one is still resumable.
    pub fn publish(&self, repository: &Repository, data_folder: &Path, results: &Results) -> Result<(u64, PathBuf)> {
        if !results.completed {
            return Err(Error::config(
                "results",
                "the run stopped before it completed: resume it (its checkpoint is saved) before publishing",
            ));
        }
        let trained_on = self.data.as_ref().map(|d| TrainedOn {
            data: data_folder.display().to_string(),
            symbol: d.source.symbol.clone(),
            rows: d.source.rows,
        });
        let results = serde_json::to_value(results).map_err(|e| Error::input("results", e.to_string()))?;
        repository.publish(self.config.architecture, &self.paths.best, trained_on, Some(results))
    }

    /// Runs (or resumes) every fold; returns the results (`completed` is
    /// false when a stop request ended the run — a checkpoint was saved).
    pub fn train_walk_forward(&mut self) -> Result<Results> {
        let data = self.data.take().ok_or_else(|| Error::config("data", "call load_data before train_walk_forward"))?;
        let out = self.run(&data);
        self.data = Some(data);
        if out.is_err() {
            self.progress.update(|p| p.is_training = false);
        }
        out
    }

    /// With `resume`: the results of a run that already completed (its state
    /// file is gone with `save_best_only`), if they are this run's.
    fn completed_before(&self, data: &Prepared) -> Option<Results> {
        if !self.resume || self.paths.state.exists() || !self.paths.results.exists() {
            return None;
        }
        let r = read_results(&self.paths.results).ok()?;
        let (config, model_config) = self.config_json();
        (r.completed && r.config == config && r.model_config == model_config && r.symbol == data.source.symbol)
            .then_some(r)
    }

    fn start_state(&self, data: &Prepared) -> Result<RunState> {
        let (config, model_config) = self.config_json();
        let fresh = RunState {
            format: STATE_FORMAT.into(),
            seq: 0,
            config,
            model_config,
            symbol: data.source.symbol.clone(),
            rows: data.ds.len(),
            fold: 0,
            epoch: 1,
            batch: 0,
            fresh_fold: true,
            loss_sum: 0.0,
            loss_count: 0,
            best_val_loss: None,
            best_epoch: 0,
            epochs_without_improvement: 0,
            elapsed_seconds: 0.0,
            results: self.new_results(&data.source.symbol),
        };
        if !self.resume {
            return Ok(fresh);
        }
        let path = &self.paths.state;
        if !path.exists() {
            return Err(Error::input(path.display().to_string(), "--resume: no training state to resume from"));
        }
        let state = checkpoint::read_state(path)?;
        let mut diffs: Vec<String> = checkpoint::differing_keys(&state.config, &fresh.config);
        diffs.extend(
            checkpoint::differing_keys(&state.model_config, &fresh.model_config)
                .into_iter()
                .map(|k| format!("model.{k}")),
        );
        if !diffs.is_empty() {
            return Err(Error::config(
                diffs[0].clone(),
                format!(
                    "differs from the checkpoint's run in {} (resume with the same settings): {}",
                    path.display(),
                    diffs.join(", ")
                ),
            ));
        }
        if state.symbol != fresh.symbol || state.rows != fresh.rows {
            return Err(Error::input(
                path.display().to_string(),
                format!(
                    "the checkpoint trained on {} rows of {}, the data now has {} rows of {}",
                    state.rows, state.symbol, fresh.rows, fresh.symbol
                ),
            ));
        }
        if state.fold > data.folds.len() {
            return Err(Error::input(path.display().to_string(), "fold index past the last fold"));
        }
        if !state.fresh_fold {
            for p in [&self.paths.last, &self.paths.optim] {
                let seq = checkpoint::file_seq(p)?;
                if seq != Some(state.seq) {
                    return Err(Error::input(
                        p.display().to_string(),
                        format!(
                            "is from checkpoint save {seq:?}, the state is from save {} (a crash between writes?)",
                            state.seq
                        ),
                    ));
                }
            }
        }
        Ok(state)
    }

    fn run(&mut self, data: &Prepared) -> Result<Results> {
        let note = match (self.config.use_amp, self.be.mixed_precision()) {
            (true, None) => Some(format!("use_amp is ignored on {}: training runs in f32 throughout", self.be.name())),
            (_, Some(h)) => Some(format!(
                "mixed precision on {}: matrix products in {h} from f32 master weights \
                 (docs/training.md, use_amp, says which); the rest in f32",
                self.be.name()
            )),
            (false, None) => None,
        };
        if let Some(note) = note {
            self.log(&format!("note: {note}"));
            self.notes.push(note);
        }
        if let Some(done) = self.completed_before(data) {
            self.log(&format!(
                "{}: this run already completed ({}); nothing to resume",
                self.config.architecture,
                self.paths.results.display()
            ));
            return Ok(done);
        }
        let mut st = self.start_state(data)?;
        st.results.notes = self.notes.clone();
        let started = Instant::now();
        let elapsed_before = st.elapsed_seconds;
        let folds = data.folds.len();
        let batches = |f: &FoldPlan| f.train.len().div_ceil(self.config.batch_size);
        let total_units: usize = data.folds.iter().map(|f| batches(f) * self.config.epochs).sum();
        let mut done_units: usize =
            data.folds[..st.fold.min(folds)].iter().map(|f| batches(f) * self.config.epochs).sum();
        if st.fold < folds {
            done_units += (st.epoch - 1) * batches(&data.folds[st.fold]) + st.batch;
        }
        let arch = self.config.architecture.as_str().to_string();
        self.progress.update(|p| {
            p.is_training = true;
            p.architecture = arch.clone();
            p.total_epochs = self.config.epochs;
            p.folds = folds;
            p.fold = st.fold + 1;
            p.current_epoch = 0;
            p.current_loss = None;
            p.best_loss = st.best_val_loss;
            p.progress_percent = 100.0 * done_units as f64 / total_units.max(1) as f64;
            p.samples_per_second = 0.0;
            p.eta_seconds = None;
        });
        let mut meter =
            Meter { start: Instant::now(), samples: 0, units_at_start: done_units, done_units, total_units };

        while st.fold < folds {
            let plan = &data.folds[st.fold];
            let mut end = self.run_fold(data, plan, &mut st, &mut meter, started, elapsed_before)?;
            match end {
                FoldEnd::Stopped => {}
                FoldEnd::Done => {
                    meter.done_units = data.folds[..=st.fold].iter().map(|f| batches(f) * self.config.epochs).sum();
                    st.fold += 1;
                    st.epoch = 1;
                    st.batch = 0;
                    st.fresh_fold = true;
                    st.loss_sum = 0.0;
                    st.loss_count = 0;
                    st.best_val_loss = None;
                    st.best_epoch = 0;
                    st.epochs_without_improvement = 0;
                    if st.fold < folds {
                        // A fold boundary is a resumable point of its own.
                        self.save_state(&mut st, started, elapsed_before, None::<&N>, None)?;
                        if self.progress.stop_requested() {
                            end = FoldEnd::Stopped;
                        }
                    }
                }
            }
            if let FoldEnd::Stopped = end {
                st.results.training_time_seconds = elapsed_before + started.elapsed().as_secs_f64();
                st.results.summarize();
                checkpoint::write_json(&self.paths.results, &st.results)?;
                self.progress.update(|p| p.is_training = false);
                self.log(&format!(
                    "stopped; checkpoint saved in {} (resume with --resume)",
                    self.config.checkpoint_dir
                ));
                return Ok(st.results);
            }
        }
        st.results.completed = true;
        st.results.training_time_seconds = elapsed_before + started.elapsed().as_secs_f64();
        st.results.summarize();
        checkpoint::write_json(&self.paths.results, &st.results)?;
        if self.config.save_best_only {
            for p in [&self.paths.last, &self.paths.optim, &self.paths.state] {
                let _ = std::fs::remove_file(p);
            }
        } else {
            st.seq += 1;
            st.elapsed_seconds = st.results.training_time_seconds;
            checkpoint::write_json(&self.paths.state, &st)?;
        }
        self.progress.update(|p| {
            p.is_training = false;
            p.progress_percent = 100.0;
            p.eta_seconds = Some(0.0);
        });
        self.log(&format!(
            "{}: done in {:.0} s; model {} (fold {} best epoch: val loss {:.4}, accuracy {:.2}%); mean over folds: accuracy {:.2}% (baseline {:.2}%, majority {:.2}%)",
            self.config.architecture,
            st.results.training_time_seconds,
            st.results.model_path,
            folds,
            st.results.best_val_loss.unwrap_or(f64::NAN),
            100.0 * st.results.best_val_accuracy,
            100.0 * st.results.mean.accuracy,
            100.0 * st.results.mean.baseline_accuracy,
            100.0 * st.results.mean.majority_class_rate,
        ));
        Ok(st.results)
    }

    /// Writes the `last` model and optimizer (when given) and the state.
    fn save_state(
        &self,
        st: &mut RunState,
        started: Instant,
        elapsed_before: f64,
        net: Option<&N>,
        opt: Option<(&AdamW<B>, &Normalizer)>,
    ) -> Result<()> {
        st.seq += 1;
        st.elapsed_seconds = elapsed_before + started.elapsed().as_secs_f64();
        if let (Some(net), Some((opt, norm))) = (net, opt) {
            let mut tensors = net.export(self.be)?;
            tensors.extend(checkpoint::normalizer_tensors(&self.model, norm));
            checkpoint::save_weights(&self.paths.last, &self.model, &self.meta(), &tensors, Some(st.seq))?;
            opt.save_with_seq(self.be, net.params(), &self.paths.optim, st.seq)?;
        }
        checkpoint::write_json(&self.paths.state, st)
    }

    fn save_best(&self, net: &N, norm: &Normalizer) -> Result<()> {
        let mut tensors = net.export(self.be)?;
        tensors.extend(checkpoint::normalizer_tensors(&self.model, norm));
        checkpoint::save_weights(&self.paths.best, &self.model, &self.meta(), &tensors, None)
    }

    fn batcher<'a>(&'a self, data: &'a Prepared, plan: &'a FoldPlan) -> Batcher<'a> {
        Batcher {
            ds: &data.ds,
            task: &self.task,
            labels: &data.labels,
            alphas: &plan.alphas,
            norm: &plan.norm,
            return_scale: self.config.return_scale,
        }
    }

    fn baseline(&self, data: &Prepared, plan: &FoldPlan) -> Result<crate::train::scores::Metrics> {
        let b = self.batcher(data, plan);
        let h = self.task.primary;
        let targets = |rows: &[usize]| -> Result<(Vec<u8>, Vec<f64>)> {
            let mut y = Vec::with_capacity(rows.len());
            let mut r = Vec::with_capacity(rows.len());
            for &t in rows {
                let (c, bps) = b.target(t, h)?;
                y.push(c);
                r.push(bps);
            }
            Ok((y, r))
        };
        let (ty, _) = targets(&plan.train)?;
        let lr = LogisticRegression::fit(&data.ds, &plan.norm, &plan.train, &ty);
        let (vy, vr) = targets(&plan.valid)?;
        Ok(lr.score(&data.ds, &plan.valid, &vy, &vr))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_fold(
        &self,
        data: &Prepared,
        plan: &FoldPlan,
        st: &mut RunState,
        meter: &mut Meter,
        started: Instant,
        elapsed_before: f64,
    ) -> Result<FoldEnd> {
        let be = self.be;
        let cfg = &self.config;
        let folds = data.folds.len();
        let fold_no = plan.fold.index;
        let (mut net, mut opt) = if st.fresh_fold {
            let net = N::init(be, self.model.clone(), cfg.seed)?;
            let opt = AdamW::new(be, net.params(), cfg.weight_decay, cfg.max_grad_norm)?;
            (net, opt)
        } else {
            let params = checkpoint::load_params(&self.paths.last, &self.model)?;
            let net = N::from_tensors(be, self.model.clone(), &params)?;
            let opt = AdamW::load(be, net.params(), &self.paths.optim, cfg.weight_decay, cfg.max_grad_norm)?;
            (net, opt)
        };
        net.zero_grads(be)?;
        if st.results.folds.len() == st.fold {
            let baseline = self.baseline(data, plan)?;
            // α for people (3 significant figures); report.json keeps it exact.
            let alphas: Vec<String> = plan.alphas.iter().map(|a| format!("{a:.2e}")).collect();
            self.log(&format!(
                "{} fold {fold_no}/{folds}: {} training samples (rows {:?}), {} validation samples (rows {:?}), α [{}]; \
                 baseline (logistic regression on order flow): accuracy {:.2}%, majority class {:.2}%; {}",
                cfg.architecture,
                plan.train.len(),
                plan.fold.train,
                plan.valid.len(),
                plan.fold.valid,
                alphas.join(", "),
                100.0 * baseline.accuracy,
                100.0 * baseline.majority_class_rate,
                self.loss_description()
            ));
            st.results.folds.push(FoldResult {
                fold: fold_no,
                train_rows: [plan.fold.train.start, plan.fold.train.end],
                valid_rows: [plan.fold.valid.start, plan.fold.valid.end],
                train_samples: plan.train.len(),
                valid_samples: plan.valid.len(),
                alpha: plan.alphas.clone(),
                epochs: Vec::new(),
                best_epoch: 0,
                best_val_loss: None,
                best_val_accuracy: 0.0,
                stopped_early: false,
                baseline,
            });
        }
        st.fresh_fold = false;
        let batcher = self.batcher(data, plan);
        let bs = cfg.batch_size;
        let accum = cfg.gradient_accumulation_steps;
        let n_batches = plan.train.len().div_ceil(bs);
        let steps_per_epoch = n_batches.div_ceil(accum) as u64;
        let total_steps = steps_per_epoch * cfg.epochs as u64;
        let weights = self.loss_weights();
        let mut batch = TrainBatch::default();
        let bar = self.on_bar;
        let patience = cfg.early_stopping_patience;
        if patience > 0 && st.epochs_without_improvement >= patience {
            // Resumed from the save at the end of the epoch that stopped this
            // fold early (a crash before the fold-boundary save): it is done.
            return Ok(FoldEnd::Done);
        }

        while st.epoch <= cfg.epochs {
            let epoch = st.epoch;
            let mut order = plan.train.clone();
            shuffle(&mut order, &mut rng_for(cfg.seed, &[fold_no as u64, epoch as u64]));
            let mut micro = 0;
            let mut last_lr = 0.0;
            let mut last_draw = Instant::now();
            self.progress.update(|p| {
                p.fold = fold_no;
                p.current_epoch = epoch;
                p.best_loss = st.best_val_loss;
            });
            while st.batch < n_batches {
                let bi = st.batch;
                let rows = &order[bi * bs..((bi + 1) * bs).min(order.len())];
                batcher.fill(rows, &mut batch)?;
                let dropout_seed = seed_for(cfg.seed, &[fold_no as u64, epoch as u64, bi as u64]);
                let out = net.forward_backward(be, &batch, weights, dropout_seed)?;
                if !out.loss.is_finite() {
                    return Err(Error::input(
                        "loss",
                        format!("is {} at fold {fold_no} epoch {epoch} batch {bi}: training diverged", out.loss),
                    ));
                }
                st.loss_sum += out.loss * rows.len() as f64;
                st.loss_count += rows.len();
                micro += 1;
                st.batch += 1;
                meter.samples += rows.len();
                meter.done_units += 1;
                if micro == accum || st.batch == n_batches {
                    let lr = lr_at(cfg.learning_rate, opt.step + 1, total_steps);
                    opt.step(be, net.params_mut(), micro, lr)?;
                    net.refresh(be)?;
                    net.zero_grads(be)?;
                    micro = 0;
                    last_lr = lr;
                    let current = st.loss_sum / st.loss_count.max(1) as f64;
                    self.progress.update(|p| meter.fill(p, Some(current)));
                    if let Some(draw) = bar.filter(|_| last_draw.elapsed().as_secs_f64() > 0.5) {
                        last_draw = Instant::now();
                        draw(Some(&format!(
                            "{} fold {fold_no}/{folds} epoch {epoch}/{}: {:>5.1}% loss {current:.4} ",
                            cfg.architecture,
                            cfg.epochs,
                            100.0 * st.batch as f64 / n_batches as f64
                        )));
                    }
                    if self.progress.stop_requested() && st.batch < n_batches {
                        self.save_state(st, started, elapsed_before, Some(&net), Some((&opt, &plan.norm)))?;
                        return Ok(FoldEnd::Stopped);
                    }
                }
            }
            let train_loss = st.loss_sum / st.loss_count.max(1) as f64;
            let (val_loss, metrics) = self.validate(&mut net, &batcher, plan, &mut batch)?;
            let improved = st.best_val_loss.is_none_or(|b| val_loss < b);
            if improved {
                st.best_val_loss = Some(val_loss);
                st.best_epoch = epoch;
                st.epochs_without_improvement = 0;
                self.save_best(&net, &plan.norm)?;
            } else {
                st.epochs_without_improvement += 1;
            }
            let fr = st.results.folds.last_mut().expect("the fold's result was pushed");
            fr.epochs.push(EpochResult {
                epoch,
                train_loss,
                val_loss,
                learning_rate: last_lr,
                optimizer_steps: opt.step,
                metrics: metrics.clone(),
            });
            fr.best_epoch = st.best_epoch;
            fr.best_val_loss = st.best_val_loss;
            fr.best_val_accuracy = fr.best().map_or(0.0, |e| e.metrics.accuracy);
            let early = patience > 0 && st.epochs_without_improvement >= patience && epoch < cfg.epochs;
            fr.stopped_early = early;
            if let Some(draw) = bar {
                draw(None);
            }
            self.log(&format!(
                "{} fold {fold_no}/{folds} epoch {epoch}/{}: train loss {train_loss:.4}, val loss {val_loss:.4}{}, \
                 accuracy {:.2}%, F1 {:.3}, MCC {:.3}, profit factor {} (gross of costs, overlapping horizons), \
                 lr {last_lr:.2e}, {:.0} samples/s",
                cfg.architecture,
                cfg.epochs,
                if improved { " (best)" } else { "" },
                100.0 * metrics.accuracy,
                metrics.f1_macro,
                metrics.mcc,
                metrics.profit_factor.map_or("n/a".into(), |p| format!("{p:.3}")),
                meter.rate(),
            ));
            st.epoch += 1;
            st.batch = 0;
            st.loss_sum = 0.0;
            st.loss_count = 0;
            st.results.training_time_seconds = elapsed_before + started.elapsed().as_secs_f64();
            st.results.summarize();
            self.progress.update(|p| {
                meter.fill(p, Some(train_loss));
                p.best_loss = st.best_val_loss;
            });
            self.save_state(st, started, elapsed_before, Some(&net), Some((&opt, &plan.norm)))?;
            checkpoint::write_json(&self.paths.results, &st.results)?;
            if early {
                self.log(&format!(
                    "{} fold {fold_no}: no better validation loss for {patience} epochs; best epoch {}",
                    cfg.architecture, st.best_epoch
                ));
                break;
            }
            if self.progress.stop_requested() {
                if st.epoch > cfg.epochs {
                    // The fold is complete anyway: let the caller move on and stop at the next check.
                    break;
                }
                return Ok(FoldEnd::Stopped);
            }
        }
        Ok(FoldEnd::Done)
    }

    /// Validation loss (mean over samples) and metrics on the primary horizon.
    fn validate(
        &self,
        net: &mut N,
        batcher: &Batcher<'_>,
        plan: &FoldPlan,
        batch: &mut TrainBatch,
    ) -> Result<(f64, crate::train::scores::Metrics)> {
        let weights = self.loss_weights();
        let h = self.task.primary;
        let mut acc = MetricsAcc::new();
        let (mut sum, mut n) = (0.0, 0usize);
        for rows in plan.valid.chunks(self.config.batch_size) {
            batcher.fill(rows, batch)?;
            let out = net.evaluate(self.be, batch, weights)?;
            if out.logits.len() != rows.len() {
                return Err(Error::input("logits", format!("{} rows for a batch of {}", out.logits.len(), rows.len())));
            }
            sum += out.loss * rows.len() as f64;
            n += rows.len();
            for (i, &t) in rows.iter().enumerate() {
                let (c, bps) = batcher.target(t, h)?;
                acc.push(c as usize, argmax3(&out.logits[i]), bps);
            }
        }
        Ok((sum / n.max(1) as f64, acc.finish()))
    }
}

/// Throughput and progress figures of the current process.
struct Meter {
    start: Instant,
    samples: usize,
    units_at_start: usize,
    done_units: usize,
    total_units: usize,
}

impl Meter {
    fn rate(&self) -> f64 {
        self.samples as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    fn fill(&self, p: &mut crate::train::progress::Progress, loss: Option<f64>) {
        p.current_loss = loss;
        p.samples_per_second = self.rate();
        let done = self.done_units.min(self.total_units);
        p.progress_percent = 100.0 * done as f64 / self.total_units.max(1) as f64;
        let units_here = done.saturating_sub(self.units_at_start);
        p.eta_seconds = (units_here > 0)
            .then(|| self.start.elapsed().as_secs_f64() / units_here as f64 * (self.total_units - done) as f64);
    }
}

/// The results file of a finished (or stopped) run, read back.
pub fn read_results(path: &Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    serde_json::from_str(&text).map_err(|e| Error::input(path.display().to_string(), e.to_string()))
}
