//! The `train` subcommand: walk-forward training of one architecture or all
//! three (docs/training.md), on the folder layout `quorum simulate` / `collect` /
//! `features` produce.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use quorum::backend::select::Device;
use quorum::backend::Train;
use quorum::model::{ModelConfig, ModelKind};
use quorum::train::report::Results;
use quorum::train::{MultiModelTrainer, ProgressHandle, TrainNet, TrainingConfig};
use quorum::weights::Repository;

/// What `--architecture` names: one model, or the three in turn.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    #[value(name = "mpd_transformer")]
    MpdTransformer,
    Tlob,
    #[value(name = "cnn_lstm")]
    CnnLstm,
    /// The three in turn.
    All,
}

impl Architecture {
    fn kinds(self) -> Vec<ModelKind> {
        match self {
            Architecture::MpdTransformer => vec![ModelKind::MpdTransformer],
            Architecture::Tlob => vec![ModelKind::Tlob],
            Architecture::CnnLstm => vec![ModelKind::CnnLstm],
            Architecture::All => ModelKind::ALL.to_vec(),
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    pub architecture: Architecture,
    /// The data folder: `DIR/raw_lob/<SYMBOL>/<day>/*.parquet` (the collector's
    /// store; `DIR/<SYMBOL>/…` directly, as `quorum simulate --out DIR` writes,
    /// works too) and optionally `DIR/features/<SYMBOL>.parquet` (`quorum features`).
    #[arg(long)]
    pub data: PathBuf,
    /// The symbol; default: the one symbol the store holds (several: name one).
    #[arg(long)]
    pub symbol: Option<String>,
    /// A TrainingConfig as JSON (the training-start request body); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model configs as JSON: `{"mpd_transformer": {...}, "tlob": {...}, "cnn_lstm": {...}}`
    /// (any subset), or one config when training one architecture. Default: docs/models.md's sizes.
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// A negative value is let through to be refused by name, not taken for a flag.
    #[arg(long, allow_hyphen_values = true)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub walk_forward_splits: Option<usize>,
    #[arg(long)]
    pub early_stopping_patience: Option<usize>,
    /// The label horizon (ticks) of MPD's and CNN-LSTM's outputs.
    #[arg(long)]
    pub horizon: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the run's checkpoints go (resume reads them there). Default: checkpoints/.
    #[arg(long)]
    pub checkpoint_dir: Option<String>,
    /// The model repository each completed model is published into, as its
    /// next version (`<model>/<version>/model.safetensors` and a manifest of
    /// its data and held-out results). Default: DATA/weights, where `serve
    /// --data` and `evaluate --data` look.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// docs/training.md's use_amp (the default): matrix products in bf16 from
    /// f32 master weights (on the CPU where it has AVX512_BF16, else ignored).
    #[arg(long, overrides_with = "no_amp")]
    pub use_amp: bool,
    /// Train in f32 throughout (use_amp off), overriding --config's use_amp.
    #[arg(long, overrides_with = "use_amp")]
    pub no_amp: bool,
    /// Continue the run whose checkpoint is in the checkpoint folder.
    #[arg(long)]
    pub resume: bool,
    /// Where to train: auto (CUDA when a device answers, else the CPU), cpu,
    /// cuda (the GPU kernels, device 0) or emu (the same kernels run by the
    /// CPU emulator: slow, for checking the GPU path without a GPU).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub backend: Device,
}

/// The trainer's epoch lines on stdout, and on a terminal a progress bar
/// (stderr) redrawn in place while an epoch runs.
pub fn show_progress<B: Train>(trainer: &mut MultiModelTrainer<B, TrainNet<B>>) {
    use std::io::IsTerminal;
    trainer.on_line = Some(|line| println!("{line}"));
    if std::io::stderr().is_terminal() {
        trainer.on_bar = Some(super::progress::epoch_bar);
    }
}

fn model_configs(path: &Path, kinds: &[ModelKind]) -> Result<Vec<(ModelKind, ModelConfig)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--model-config {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--model-config {}: not JSON", path.display()))?;
    let keyed = value.as_object().is_some_and(|o| o.keys().any(|k| ModelKind::parse(k).is_ok()));
    let mut out = Vec::new();
    if keyed {
        for (k, v) in value.as_object().into_iter().flatten() {
            let kind = ModelKind::parse(k).with_context(|| format!("--model-config {}", path.display()))?;
            let cfg = ModelConfig::from_json(kind, &v.to_string())
                .with_context(|| format!("--model-config {}: {k}", path.display()))?;
            out.push((kind, cfg));
        }
    } else {
        let [kind] = kinds else {
            bail!(
                "--model-config {}: with --architecture all, key the configs by architecture \
                 ({{\"mpd_transformer\": {{...}}, ...}})",
                path.display()
            );
        };
        let cfg = ModelConfig::from_json(*kind, &text).with_context(|| format!("--model-config {}", path.display()))?;
        out.push((*kind, cfg));
    }
    Ok(out)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let base = base_config(&args)?;
    let device = args.backend.open()?;
    // use_amp on a CPU without AVX512_BF16: f32, and the trainer notes that
    // use_amp was ignored.
    let precision = device.training_precision(base.use_amp);
    quorum::on_device!(device, precision, be => train_on(&be, &args, base))
}

/// The TrainingConfig of `--config` (or the defaults) with the flags applied.
fn base_config(args: &TrainArgs) -> Result<TrainingConfig> {
    let mut base = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?;
            serde_json::from_str::<TrainingConfig>(&text).with_context(|| format!("--config {}", p.display()))?
        }
        None => TrainingConfig::default(),
    };
    if let Some(v) = args.epochs {
        base.epochs = v;
    }
    if let Some(v) = args.batch_size {
        base.batch_size = v;
    }
    if let Some(v) = args.learning_rate {
        base.learning_rate = v;
    }
    if let Some(v) = args.walk_forward_splits {
        base.walk_forward_splits = v;
    }
    if let Some(v) = args.early_stopping_patience {
        base.early_stopping_patience = v;
    }
    if let Some(v) = args.horizon {
        base.horizon = v;
    }
    if let Some(v) = args.seed {
        base.seed = v;
    }
    if let Some(v) = &args.checkpoint_dir {
        base.checkpoint_dir = v.clone();
    }
    if args.use_amp {
        base.use_amp = true;
    }
    if args.no_amp {
        base.use_amp = false;
    }
    Ok(base)
}

fn train_on<B: Train>(be: &B, args: &TrainArgs, base: TrainingConfig) -> Result<()> {
    let kinds = args.architecture.kinds();
    let overrides = match &args.model_config {
        Some(p) => model_configs(p, &kinds)?,
        None => Vec::new(),
    };
    let symbol = quorum::train::data::symbol_or_sole(&args.data, args.symbol.as_deref())?;
    let (raw, features) = quorum::train::data::data_folder(&args.data, &symbol)
        .with_context(|| format!("--data {}", args.data.display()))?;

    // Every architecture's config is checked before the first one trains.
    let mut configs = Vec::with_capacity(kinds.len());
    for &kind in &kinds {
        let mut cfg = TrainingConfig { architecture: kind, ..base.clone() };
        cfg.model = overrides.iter().find(|(k, _)| *k == kind).map(|(_, c)| c.clone());
        match cfg.model_config() {
            ModelConfig::Mpd(c) => cfg.sequence_length = c.sequence_length,
            ModelConfig::CnnLstm(c) => cfg.sequence_length = c.sequence_length,
            ModelConfig::Tlob(_) => {}
        }
        cfg.validate().with_context(|| format!("{kind}"))?;
        if kind == ModelKind::Tlob && raw.is_none() {
            bail!(
                "tlob: trains on the raw order-book snapshots, and --data {} has no raw LOB folder \
                 ({}/raw_lob/{}/ or {}/{}/)",
                args.data.display(),
                args.data.display(),
                symbol,
                args.data.display(),
                symbol
            );
        }
        configs.push(cfg);
    }

    let repository = match &args.weights {
        Some(dir) => Repository::new(dir),
        None => Repository::of_data_folder(&args.data),
    };
    let progress = ProgressHandle::new();
    stop_on_ctrl_c(progress.clone());
    let mut all: Vec<(ModelKind, Results, Option<PathBuf>)> = Vec::new();
    for cfg in configs {
        let kind = cfg.architecture;
        println!(
            "== {kind}: {} on {} ({}), checkpoints in {}",
            symbol,
            args.data.display(),
            be.name(),
            cfg.checkpoint_dir
        );
        let mut trainer = MultiModelTrainer::<B, TrainNet<B>>::new(be, cfg)
            .with_context(|| kind.to_string())?
            .with_progress(progress.clone());
        show_progress(&mut trainer);
        // With `all`, a model the stopped run never reached has no checkpoint:
        // it starts. For one model, --resume without a checkpoint stays an error.
        let reached = trainer.paths().state.exists() || trainer.paths().results.exists();
        trainer.resume = args.resume && (kinds.len() == 1 || reached);
        if args.resume && !trainer.resume {
            println!("{kind}: no checkpoint yet, starting");
        }
        trainer.load_data(Some(&features), raw.as_deref(), &symbol).with_context(|| kind.to_string())?;
        let results = trainer.train_walk_forward().with_context(|| kind.to_string())?;
        println!("{kind}: results in {}", trainer.paths().results.display());
        let stopped = !results.completed;
        let published = if stopped {
            None
        } else {
            let (version, path) =
                trainer.publish(&repository, &args.data, &results).with_context(|| format!("{kind}: publishing"))?;
            println!("{kind}: published as version {version}: {}", path.display());
            Some(path)
        };
        all.push((kind, results, published));
        if stopped {
            println!("stopped by request; resume with the same command and --resume");
            break;
        }
    }
    if all.len() > 1 {
        println!("\n| model           | val accuracy | val loss | mean accuracy | baseline | majority | model file |");
        println!("|-----------------|-------------:|---------:|--------------:|---------:|---------:|------------|");
        for (kind, r, published) in &all {
            println!(
                "| {:15} | {:11.2}% | {:8.4} | {:12.2}% | {:7.2}% | {:7.2}% | {} |",
                kind.as_str(),
                100.0 * r.best_val_accuracy,
                r.best_val_loss.unwrap_or(f64::NAN),
                100.0 * r.mean.accuracy,
                100.0 * r.mean.baseline_accuracy,
                100.0 * r.mean.majority_class_rate,
                published.as_ref().map_or_else(|| r.model_path.clone(), |p| p.display().to_string())
            );
        }
    }
    Ok(())
}

/// Ctrl-C asks the run to stop; it saves a checkpoint at the next optimizer step.
fn stop_on_ctrl_c(progress: ProgressHandle) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!(
                    "Ctrl-C: stopping after the current optimizer step (a checkpoint is saved); again to abort"
                );
                progress.request_stop();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    });
}
