//! Checkpoints (docs/training.md, "Checkpoints"): the model as a weights file per
//! docs/models.md (with its normalizer and `return_scale` / `horizon`), the AdamW
//! state as a second safetensors file, and the run's position as JSON.
//!
//! Files under `checkpoint_dir`, for architecture `A`:
//! - `A_best.safetensors`: the current fold's best epoch so far (at the end,
//!   the last fold's: the returned model, `model_path`);
//! - `A_last.safetensors`, `A_last.optim.safetensors`: the model and
//!   optimizer where training stopped (end of an epoch, or a stop request);
//! - `A_state.json`: fold, epoch, batch, early-stopping counters, results so
//!   far — what resuming needs besides the two files above;
//! - `A_results.json`: the results (also written while training runs).
//!
//! Every file is written atomically (`fsutil::write_atomic`: temporary name,
//! fsync, rename, fsync the folder). A save writes the two `last` files and
//! then the state; all three carry the save's sequence number, and resuming
//! refuses files whose numbers disagree (a crash between the writes), naming
//! them, rather than resuming from a mix.
//!
//! With `save_best_only` the `last` files and the state exist only while the
//! run is unfinished (resuming needs them) and are removed when it completes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelMeta};
use crate::tensor::Tensor;
use crate::train::dataset::Normalizer;
use crate::train::report::Results;
use crate::weights;

pub const STATE_FORMAT: &str = "quorum-train-state";
const SEQ_KEY: &str = "checkpoint_seq";

/// The checkpoint files of one architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPaths {
    pub best: PathBuf,
    pub last: PathBuf,
    pub optim: PathBuf,
    pub state: PathBuf,
    pub results: PathBuf,
}

impl CheckpointPaths {
    pub fn new(dir: &Path, architecture: &str) -> Self {
        CheckpointPaths {
            best: dir.join(format!("{architecture}_best.safetensors")),
            last: dir.join(format!("{architecture}_last.safetensors")),
            optim: dir.join(format!("{architecture}_last.optim.safetensors")),
            state: dir.join(format!("{architecture}_state.json")),
            results: dir.join(format!("{architecture}_results.json")),
        }
    }
}

/// Where a run is, between optimizer steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub format: String,
    pub seq: u64,
    /// The run's training config and model config (JSON): resuming with
    /// other settings is refused.
    pub config: serde_json::Value,
    pub model_config: serde_json::Value,
    pub symbol: String,
    pub rows: usize,
    /// 0-based index of the fold in progress.
    pub fold: usize,
    /// 1-based epoch in progress.
    pub epoch: usize,
    /// The next batch of that epoch (0 = the epoch has not started).
    pub batch: usize,
    /// Whether the fold starts from a fresh initialization (no `last` model).
    pub fresh_fold: bool,
    /// The epoch's training loss so far (sum over samples) and sample count.
    pub loss_sum: f64,
    pub loss_count: usize,
    pub best_val_loss: Option<f64>,
    pub best_epoch: usize,
    pub epochs_without_improvement: usize,
    pub elapsed_seconds: f64,
    pub results: Results,
}

/// The normalizer as docs/models.md's tensors: `input_norm.*` for the feature
/// window models, `aux_norm.*` for TLOB with an auxiliary encoder.
pub fn normalizer_tensors(config: &ModelConfig, norm: &Normalizer) -> HashMap<String, Tensor> {
    let prefix = match config {
        ModelConfig::Tlob(c) if c.aux_features == 0 => return HashMap::new(),
        ModelConfig::Tlob(_) => "aux_norm",
        _ => "input_norm",
    };
    let t = |v: &[f64]| Tensor { shape: vec![v.len()], data: v.iter().map(|&x| x as f32).collect() };
    HashMap::from([(format!("{prefix}.mean"), t(&norm.mean)), (format!("{prefix}.std"), t(&norm.std))])
}

/// Writes a weights file (checked as `weights::load` would check it) with
/// the model's metadata and, when given, the save's sequence number.
pub fn save_weights(
    path: &Path,
    config: &ModelConfig,
    meta: &ModelMeta,
    tensors: &HashMap<String, Tensor>,
    seq: Option<u64>,
) -> Result<()> {
    let problems = weights::check(config, tensors);
    if !problems.is_empty() {
        return Err(Error::weights(path.display().to_string(), problems));
    }
    let mut md = weights::metadata(config, meta);
    if let Some(s) = seq {
        md.insert(SEQ_KEY.into(), s.to_string());
    }
    crate::fsutil::write_atomic(path, &weights::to_bytes(tensors, md)?)
}

/// The sequence number in a safetensors file's metadata.
pub fn file_seq(path: &Path) -> Result<Option<u64>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let f = weights::read_tensor_file(&bytes, &path.display().to_string())?;
    Ok(f.metadata.get(SEQ_KEY).and_then(|s| s.parse().ok()))
}

/// A weights file's model tensors (the normalizer left out: the trainable
/// net holds parameters only).
pub fn load_params(path: &Path, config: &ModelConfig) -> Result<HashMap<String, Tensor>> {
    let file = weights::load(path)?;
    if file.config != *config {
        return Err(Error::weights(
            path.display().to_string(),
            vec![format!("holds a {} config that differs from this run's", file.kind())],
        ));
    }
    Ok(file.tensors.into_iter().filter(|(k, _)| !k.starts_with("input_norm.") && !k.starts_with("aux_norm.")).collect())
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::input(path.display().to_string(), e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
}

pub fn read_state(path: &Path) -> Result<RunState> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let state: RunState = serde_json::from_str(&text)
        .map_err(|e| Error::input(path.display().to_string(), format!("not a training state file: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(Error::input(
            path.display().to_string(),
            format!("format is {:?}, expected {STATE_FORMAT:?}", state.format),
        ));
    }
    Ok(state)
}

/// The top-level keys whose values differ between two JSON objects.
pub fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return if a == b { vec![] } else { vec!["(whole value)".into()] };
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}
