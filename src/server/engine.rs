//! The serving engine: the three models on one backend, the prediction
//! adapter and the shared consensus, behind `&self` methods that any number
//! of threads may call at once.
//!
//! * **Loading.** [`Engine::load_dir`] takes each model's latest version (or
//!   a pinned one) from a model repository (`weights::Repository`: what
//!   `quorum train` publishes); for a model without a version there, the
//!   folder's `<model>.safetensors` (a PyTorch export), or where that is
//!   absent a checkpoint folder's `<model>_best.safetensors`. A missing model
//!   stays unloaded (reported), a broken file is an error.
//! * **Hot swap.** Each loaded model sits in an `Arc`; a request clones the
//!   `Arc`s it needs under a short read lock and runs on them. Loading new
//!   weights builds the model first, outside any lock, then swaps the pointer:
//!   requests already running finish on the old model, which is dropped when
//!   the last of them lets go. No request is refused or stalled by a swap.
//! * **Concurrency.** A model's activations are preallocated and reused
//!   (`Model::forward_into`), so one model runs one request at a time (its own
//!   mutex); different models, and the consensus, run concurrently.
//! * **Input layout.** The inputs' shapes come from the loaded configs
//!   ([`InputLayout`]); MPD and CNN-LSTM share the feature window, so a model
//!   whose window disagrees with the other loaded one is refused at load.
//!
//! One decision ([`Decision`]) carries the consensus result, each model's own
//! prediction, why any model was left out, and the time spent per stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::backend::select::OpenDevice;
use crate::backend::{Backend, Precision};
use crate::ensemble::{
    unix_now_s, EnsembleConfig, EnsembleConsensus, EnsembleError, EnsembleResult, ModelPrediction, ModelType,
    PredictionAdapter, RawModelOutput,
};
/// TLOB's input contract, as `InputLayout` gives it to live mode.
pub use crate::model::LobNormalization;
use crate::model::{Inputs, Model, ModelConfig, ModelKind, Outputs};
use crate::tensor::Tensor;
use crate::weights::repository::{self, Repository};
use crate::weights::{self, WeightsFile};

/// The ensemble's name for a model kind.
pub fn model_type(kind: ModelKind) -> ModelType {
    match kind {
        ModelKind::MpdTransformer => ModelType::MpdTransformer,
        ModelKind::Tlob => ModelType::Tlob,
        ModelKind::CnnLstm => ModelType::CnnLstm,
    }
}

/// The model kind of an ensemble member.
pub fn model_kind(model: ModelType) -> ModelKind {
    match model {
        ModelType::MpdTransformer => ModelKind::MpdTransformer,
        ModelType::Tlob => ModelKind::Tlob,
        ModelType::CnnLstm => ModelKind::CnnLstm,
    }
}

/// The weights file of `model` in a weights folder.
pub fn weights_file_name(model: ModelType) -> String {
    format!("{}.safetensors", model.as_str())
}

/// Errors of the engine. Each names the field at fault; `code()` and
/// `field()` are what the server puts in its error body.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An input is missing, mis-shaped or not finite.
    #[error("{field}: {reason}")]
    Input { field: String, reason: String },
    /// The consensus refused its input or call (it changed nothing).
    #[error(transparent)]
    Ensemble(#[from] EnsembleError),
    /// A weights file could not be loaded, or does not fit.
    #[error("{field}: {reason}")]
    Load { field: &'static str, reason: String },
    /// Inputs were given but no loaded model can run on them.
    #[error("no model is loaded: load weights first (POST /api/ensemble/models/load or --weights)")]
    NoModels,
}

impl EngineError {
    pub fn input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        EngineError::Input { field: field.into(), reason: reason.into() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Input { .. } => "invalid_input",
            EngineError::Ensemble(e) => e.code(),
            EngineError::Load { .. } => "invalid_weights",
            EngineError::NoModels => "no_models_loaded",
        }
    }

    pub fn field(&self) -> Option<String> {
        match self {
            EngineError::Input { field, .. } => Some(field.clone()),
            EngineError::Ensemble(e) => e.field().map(str::to_owned),
            EngineError::Load { field, .. } => Some((*field).to_owned()),
            EngineError::NoModels => None,
        }
    }
}

/// The shapes of one sample's inputs (no batch axis), from the loaded models.
/// `None`: no loaded model reads that input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InputLayout {
    /// `[sequence_length, input_features]` of MPD and CNN-LSTM.
    pub features: Option<[usize; 2]>,
    /// `[sequence_length, num_levels, lob_features]` of TLOB.
    pub lob: Option<[usize; 3]>,
    /// TLOB's `aux_features` (when > 0).
    pub aux: Option<usize>,
    /// How TLOB's `lob` is normalized (its input contract).
    pub lob_normalization: LobNormalization,
}

impl InputLayout {
    pub fn features_len(&self) -> usize {
        self.features.map_or(0, |[a, b]| a * b)
    }
    pub fn lob_len(&self) -> usize {
        self.lob.map_or(0, |[a, b, c]| a * b * c)
    }
    pub fn aux_len(&self) -> usize {
        self.aux.unwrap_or(0)
    }
    /// f32 values of a binary request: features, then lob, then aux.
    pub fn total_len(&self) -> usize {
        self.features_len() + self.lob_len() + self.aux_len()
    }
    pub fn is_empty(&self) -> bool {
        self.total_len() == 0
    }
}

/// One sample's inputs, flat and row-major (no batch axis); any may be absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineInputs {
    pub features: Option<Vec<f32>>,
    pub lob: Option<Vec<f32>>,
    pub aux: Option<Vec<f32>>,
}

/// Why a model gave no prediction for a request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Skip {
    /// `not_loaded`, `not_in_ensemble`, `missing_input` or `failed`.
    pub reason: &'static str,
    pub detail: String,
}

/// Time per stage of one decision, in µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StageTimes {
    /// Parsing the request (set by the server; absent for library calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_us: Option<f64>,
    /// Each model's forward pass plus its adapter.
    pub models_us: BTreeMap<ModelType, f64>,
    pub consensus_us: f64,
    /// From the call into the engine to the decision.
    pub total_us: f64,
}

/// One decision: the consensus result plus what went into it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decision {
    #[serde(flatten)]
    pub result: EnsembleResult,
    /// Each model's own prediction, in canonical model order.
    pub predictions: Vec<ModelPrediction>,
    /// Models that gave no prediction, and why.
    pub skipped: BTreeMap<ModelType, Skip>,
    pub timings: StageTimes,
}

/// One loaded model, behind the engine's type erasure of the backend.
trait Runner: Send + Sync {
    /// One forward over a batch; one output per sample, in order.
    fn run(&self, inputs: &Inputs<'_>) -> crate::Result<Vec<RawModelOutput>>;
}

struct Loaded<B: Backend> {
    be: Arc<B>,
    /// The model and its reused output tensors: one forward at a time.
    state: Mutex<(Model<B>, Outputs)>,
}

impl<B: Backend> Runner for Loaded<B> {
    fn run(&self, inputs: &Inputs<'_>) -> crate::Result<Vec<RawModelOutput>> {
        let mut guard = self.state.lock();
        let (model, out) = &mut *guard;
        model.forward_into(&self.be, inputs, out)?;
        let output = |name: &str| -> crate::Result<&Tensor> {
            out.get(name)
                .filter(|t| t.shape.len() == 2 && t.shape[0] > 0)
                .ok_or_else(|| crate::Error::input(name, "the model produced no such output"))
        };
        let (logits, confidence, expected) =
            (output("direction_logits")?, output("confidence")?, output("expected_return")?);
        let (batch, classes) = (logits.shape[0], logits.shape[1]);
        if classes < 3 {
            return Err(crate::Error::input("direction_logits", "fewer than 3 classes"));
        }
        if confidence.data.len() != batch || expected.data.len() != batch {
            return Err(crate::Error::input("confidence", "not one value per sample"));
        }
        Ok((0..batch)
            .map(|i| {
                let l = &logits.data[i * classes..];
                RawModelOutput {
                    direction_logits: [l[0], l[1], l[2]],
                    confidence: confidence.data[i],
                    expected_return: expected.data[i],
                }
            })
            .collect())
    }
}

/// Builds runners on one backend (the engine is not generic over it).
trait Build: Send + Sync {
    fn build(&self, file: &WeightsFile) -> crate::Result<Box<dyn Runner>>;
    fn name(&self) -> &'static str;
}

struct OnBackend<B: Backend>(Arc<B>);

impl<B: Backend + 'static> Build for OnBackend<B> {
    fn build(&self, file: &WeightsFile) -> crate::Result<Box<dyn Runner>> {
        let model = Model::from_tensors(&*self.0, file.config.clone(), &file.tensors, file.meta.clone())?;
        Ok(Box::new(Loaded { be: self.0.clone(), state: Mutex::new((model, Outputs::new())) }))
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// A loaded model and what the API reports about it.
struct Slot {
    runner: Box<dyn Runner>,
    config: ModelConfig,
    adapter: PredictionAdapter,
    source: Option<PathBuf>,
    /// The repository version of `source`, when it is one.
    version: Option<u64>,
    param_count: usize,
    loaded_at: f64,
}

impl Slot {
    fn features_shape(&self) -> Option<[usize; 2]> {
        match &self.config {
            ModelConfig::Mpd(c) => Some([c.sequence_length, c.input_features]),
            ModelConfig::CnnLstm(c) => Some([c.sequence_length, c.input_features]),
            ModelConfig::Tlob(_) => None,
        }
    }
}

/// One model's line in `GET /api/ensemble/models`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelEntry {
    pub model_type: ModelType,
    /// In the consensus config (a loaded model outside it is never run).
    pub in_ensemble: bool,
    pub enabled: Option<bool>,
    pub weight: Option<f64>,
    pub min_confidence: Option<f64>,
    pub loaded: bool,
    /// The weights file it was loaded from (`None` when built in memory).
    pub weights_file: Option<String>,
    /// Its version in the model repository, when it was loaded from one.
    pub version: Option<u64>,
    pub parameters: Option<usize>,
    pub backend: Option<&'static str>,
    pub return_scale: Option<f64>,
    /// Unix seconds of the last load.
    pub loaded_at: Option<f64>,
    pub accuracy: Option<f64>,
    pub profit_factor: Option<f64>,
    pub performance_reports: u64,
}

/// What [`Engine::load_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub loaded: Vec<(ModelType, PathBuf)>,
    /// Files that do not exist (in a repository: model folders without a
    /// complete version): those models stay unloaded.
    pub missing: Vec<(ModelType, PathBuf)>,
}

pub struct Engine {
    builder: Box<dyn Build>,
    consensus: EnsembleConsensus,
    /// Indexed like `ModelType::ALL`. Cloned (a few `Arc`s) per request.
    slots: RwLock<Vec<Option<Arc<Slot>>>>,
    /// Serializes loads, so the layout check and the swap see the same slots.
    load_lock: Mutex<()>,
}

fn index_of(model: ModelType) -> usize {
    ModelType::ALL.iter().position(|&m| m == model).expect("every model type is in ModelType::ALL")
}

fn us_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

impl Engine {
    /// An engine with no model loaded, on `backend`, with the consensus of `config`.
    pub fn new<B: Backend + 'static>(backend: B, config: EnsembleConfig) -> Result<Engine, EngineError> {
        Ok(Engine {
            builder: Box::new(OnBackend(Arc::new(backend))),
            consensus: EnsembleConsensus::new(config)?,
            slots: RwLock::new(vec![None; ModelType::ALL.len()]),
            load_lock: Mutex::new(()),
        })
    }

    /// An engine with no model loaded on an opened device at `precision`:
    /// how the CLI and the server make one.
    pub fn on(device: OpenDevice, precision: Precision, config: EnsembleConfig) -> crate::Result<Engine> {
        let engine = crate::on_device!(device, precision, be => Engine::new(be, config));
        engine.map_err(|e| crate::Error::config("ensemble config", e.to_string()))
    }

    /// The shared consensus (its own methods are thread-safe).
    pub fn consensus(&self) -> &EnsembleConsensus {
        &self.consensus
    }

    pub fn backend_name(&self) -> &'static str {
        self.builder.name()
    }

    /// Loads every model found in `dir`, each repository model at its latest
    /// version (see the module docs).
    pub fn load_dir(&self, dir: &Path) -> Result<LoadReport, EngineError> {
        self.load_dir_pinned(dir, &[])
    }

    /// [`Engine::load_dir`], with the repository versions in `pins` instead
    /// of the latest (`serve --pin tlob=3`); a pinned version that is not
    /// there is an error naming the versions that are.
    pub fn load_dir_pinned(&self, dir: &Path, pins: &[(ModelKind, u64)]) -> Result<LoadReport, EngineError> {
        if !dir.is_dir() {
            return Err(EngineError::Load { field: "weights", reason: format!("{} is not a folder", dir.display()) });
        }
        let repository = Repository::new(dir);
        let mut report = LoadReport::default();
        for &model in ModelType::ALL {
            let kind = model_kind(model);
            let pin = pins.iter().find(|(k, _)| *k == kind).map(|&(_, v)| v);
            let published = repository
                .resolve(kind, pin)
                .map_err(|e| EngineError::Load { field: "version", reason: e.to_string() })?;
            // A model with no version in the repository: the flat files.
            let path = published.map(|(_, path)| path).unwrap_or_else(|| {
                let named = dir.join(weights_file_name(model));
                let trained = dir.join(format!("{}_best.safetensors", model.as_str()));
                if !named.is_file() && trained.is_file() {
                    trained
                } else {
                    named
                }
            });
            if path.is_file() {
                self.load_file(model, &path)?;
                report.loaded.push((model, path));
            } else {
                report.missing.push((model, path));
            }
        }
        Ok(report)
    }

    /// Loads (or hot-swaps) `model` from a weights file; the file must hold
    /// that kind of model and fit the other loaded models' inputs.
    pub fn load_file(&self, model: ModelType, path: &Path) -> Result<ModelEntry, EngineError> {
        self.load_file_limited(model, path, weights::MAX_WEIGHTS_FILE_BYTES)
    }

    /// [`Engine::load_file`] of a file of at most `max_bytes` (checked before reading).
    pub fn load_file_limited(&self, model: ModelType, path: &Path, max_bytes: u64) -> Result<ModelEntry, EngineError> {
        let file = weights::load_limited(path, max_bytes)
            .map_err(|e| EngineError::Load { field: "path", reason: e.to_string() })?;
        self.install(model, file, Some(path.to_path_buf()))
    }

    /// Loads the three models at their default configs with the built-in
    /// deterministic, untrained weights (`serve --demo-weights`,
    /// `evaluate --demo-weights`): the real shapes and costs, no training.
    pub fn load_builtin_weights(&self) -> Result<(), EngineError> {
        self.load_builtin_weights_as(LobNormalization::Window)
    }

    /// As `load_builtin_weights`, TLOB under the input contract `lob` (the
    /// weights do not depend on it).
    pub fn load_builtin_weights_as(&self, lob: LobNormalization) -> Result<(), EngineError> {
        for kind in ModelKind::ALL {
            let mut config = ModelConfig::default_for(kind);
            if let ModelConfig::Tlob(c) = &mut config {
                c.lob_normalization = lob;
            }
            let tensors = weights::generated::params(&config);
            let meta = crate::model::ModelMeta::default();
            self.load_weights(model_type(kind), WeightsFile { config, meta, tensors })?;
        }
        Ok(())
    }

    /// Loads (or hot-swaps) `model` from weights already in memory.
    pub fn load_weights(&self, model: ModelType, file: WeightsFile) -> Result<ModelEntry, EngineError> {
        self.install(model, file, None)
    }

    fn install(&self, model: ModelType, file: WeightsFile, source: Option<PathBuf>) -> Result<ModelEntry, EngineError> {
        if model_type(file.kind()) != model {
            return Err(EngineError::Load {
                field: "model_type",
                reason: format!("the weights file holds a {} model, not {model}", file.kind()),
            });
        }
        let adapter = PredictionAdapter::new(file.meta.return_scale)
            .map_err(|e| EngineError::Load { field: "return_scale", reason: e.to_string() })?;
        // The slow part (reading, checking, uploading) happens before any lock.
        let runner =
            self.builder.build(&file).map_err(|e| EngineError::Load { field: "path", reason: e.to_string() })?;
        let param_count = crate::model::param_specs(&file.config).count();
        let version = source.as_deref().and_then(repository::version_of);
        let slot = Arc::new(Slot {
            runner,
            config: file.config,
            adapter,
            source,
            version,
            param_count,
            loaded_at: unix_now_s(),
        });
        let _serial = self.load_lock.lock();
        if let Some(shape) = slot.features_shape() {
            let slots = self.slots.read();
            let clash = slots.iter().enumerate().filter(|(i, _)| *i != index_of(model)).find_map(|(_, s)| {
                s.as_ref().and_then(|s| s.features_shape().filter(|&o| o != shape).map(|o| (s.config.kind(), o)))
            });
            if let Some((other, o)) = clash {
                return Err(EngineError::Load {
                    field: "config",
                    reason: format!(
                        "its feature window is {shape:?} but the loaded {other} reads {o:?}: both share one features input"
                    ),
                });
            }
        }
        // The swap: requests that already cloned the old Arc finish on it.
        self.slots.write()[index_of(model)] = Some(slot);
        Ok(self.entry(model))
    }

    /// Unloads `model`; requests already running on it finish.
    pub fn unload(&self, model: ModelType) -> bool {
        let _serial = self.load_lock.lock();
        self.slots.write()[index_of(model)].take().is_some()
    }

    pub fn is_loaded(&self, model: ModelType) -> bool {
        self.slots.read()[index_of(model)].is_some()
    }

    /// The models loaded now.
    pub fn loaded_models(&self) -> Vec<ModelType> {
        let slots = self.slots.read();
        ModelType::ALL.iter().copied().filter(|&m| slots[index_of(m)].is_some()).collect()
    }

    /// The inputs' shapes for the models loaded now.
    pub fn input_layout(&self) -> InputLayout {
        layout_of(&self.slots.read())
    }

    /// Every model of the consensus config, then any loaded model outside it.
    pub fn models(&self) -> Vec<ModelEntry> {
        let config = self.consensus.config();
        let loaded = self.loaded_models();
        let mut out: Vec<ModelEntry> = config.model_weights.iter().map(|mw| self.entry(mw.model_type)).collect();
        for m in loaded {
            if config.model(m).is_none() {
                out.push(self.entry(m));
            }
        }
        out
    }

    /// One model's entry (also for a model neither configured nor loaded).
    pub fn entry(&self, model: ModelType) -> ModelEntry {
        let config = self.consensus.config();
        let mw = config.model(model);
        let status = self.consensus.model_status(model).ok();
        let slot = self.slots.read()[index_of(model)].clone();
        ModelEntry {
            model_type: model,
            in_ensemble: mw.is_some(),
            enabled: mw.map(|m| m.enabled),
            weight: mw.map(|m| m.weight),
            min_confidence: mw.map(|m| m.min_confidence),
            loaded: slot.is_some(),
            weights_file: slot.as_ref().and_then(|s| s.source.as_ref()).map(|p| p.display().to_string()),
            version: slot.as_ref().and_then(|s| s.version),
            parameters: slot.as_ref().map(|s| s.param_count),
            backend: slot.as_ref().map(|_| self.builder.name()),
            return_scale: slot.as_ref().map(|s| s.adapter.return_scale()),
            loaded_at: slot.as_ref().map(|s| s.loaded_at),
            accuracy: status.as_ref().and_then(|s| s.accuracy),
            profit_factor: status.as_ref().and_then(|s| s.profit_factor),
            performance_reports: status.map_or(0, |s| s.performance_reports),
        }
    }

    /// Consensus only: `predictions` as given (docs/consensus.md validation applies).
    pub fn predict_consensus(&self, predictions: &[ModelPrediction]) -> Result<Decision, EngineError> {
        let t0 = Instant::now();
        let result = self.consensus.predict(predictions)?;
        let consensus_us = us_since(t0);
        let mut predictions = predictions.to_vec();
        predictions.sort_by_key(|p| p.model_type);
        Ok(Decision {
            result,
            predictions,
            skipped: BTreeMap::new(),
            timings: StageTimes { decode_us: None, models_us: BTreeMap::new(), consensus_us, total_us: us_since(t0) },
        })
    }

    /// Runs every loaded model of the ensemble whose input is given, then the
    /// consensus. Inputs are checked against [`Engine::input_layout`] first:
    /// a bad input is an error and nothing runs.
    pub fn predict(&self, inputs: EngineInputs) -> Result<Decision, EngineError> {
        self.predict_many(vec![inputs]).pop().expect("predict_many answers once per sample")
    }

    /// One decision per sample (live mode: one per symbol), each exactly what
    /// [`Engine::predict`] would decide on it alone, with every model run
    /// **once** over all the samples that have its input (batch = samples):
    /// at a tick, a desk's dozens of symbols cost one forward per model, not
    /// dozens. A sample whose inputs are refused gets its error and stays out
    /// of the batch; the others go on. A model's time in each decision's
    /// `timings` is its batched forward, shared by the samples in it.
    ///
    /// The answers equal single-sample runs bit for bit because every op
    /// treats a sample's rows alone (tested per op in `tests/models.rs` and
    /// for whole decisions in `tests/server_live.rs`).
    pub fn predict_many(&self, samples: Vec<EngineInputs>) -> Vec<Result<Decision, EngineError>> {
        let t0 = Instant::now();
        let slots = self.slots.read().clone();
        let layout = layout_of(&slots);
        let no_models = slots.iter().all(Option::is_none);
        let checked: Vec<Result<Checked, EngineError>> =
            samples.into_iter().map(|s| Checked::new(s, &layout, no_models)).collect();

        let config = self.consensus.config();
        let mut predictions: Vec<Vec<ModelPrediction>> = vec![Vec::new(); checked.len()];
        let mut skipped: Vec<BTreeMap<ModelType, Skip>> = vec![BTreeMap::new(); checked.len()];
        let mut models_us = BTreeMap::new();
        let valid: Vec<usize> = (0..checked.len()).filter(|&i| checked[i].is_ok()).collect();
        for (&model, slot) in ModelType::ALL.iter().zip(&slots) {
            let skip_all = |skipped: &mut Vec<BTreeMap<ModelType, Skip>>, reason, detail: &str| {
                for &i in &valid {
                    skipped[i].insert(model, Skip { reason, detail: detail.into() });
                }
            };
            let Some(slot) = slot else {
                if config.model(model).is_some() {
                    skip_all(&mut skipped, "not_loaded", "no weights loaded");
                }
                continue;
            };
            if config.model(model).is_none() {
                skip_all(&mut skipped, "not_in_ensemble", "the consensus config does not name it");
                continue;
            }
            // The samples this model runs on, in groups of one op list each
            // (a TLOB with an aux encoder runs with and without aux).
            let mut groups: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
            for &i in &valid {
                let c = checked[i].as_ref().expect("valid");
                match c.input_for(&slot.config) {
                    Err(name) => {
                        skipped[i]
                            .insert(model, Skip { reason: "missing_input", detail: format!("{name} was not given") });
                    }
                    Ok(with_aux) => groups[usize::from(with_aux)].push(i),
                }
            }
            let t = Instant::now();
            for group in groups.iter().filter(|g| !g.is_empty()) {
                let members: Vec<&Checked> = group.iter().map(|&i| checked[i].as_ref().expect("valid")).collect();
                let outcome = Checked::stacked(&members, &slot.config, |inputs| slot.runner.run(inputs));
                for (k, &i) in group.iter().enumerate() {
                    let prediction = outcome.as_ref().map_err(|e| e.to_string()).and_then(|raws| {
                        slot.adapter.to_prediction(model, &raws[k], unix_now_s()).map_err(|e| e.to_string())
                    });
                    match prediction {
                        Ok(p) => predictions[i].push(p),
                        // An internal failure of one model (a backend error, a
                        // non-finite output) leaves it out rather than failing the
                        // whole decision; the answer says so.
                        Err(detail) => {
                            skipped[i].insert(model, Skip { reason: "failed", detail });
                        }
                    }
                }
            }
            if groups.iter().any(|g| !g.is_empty()) {
                models_us.insert(model, us_since(t));
            }
        }
        checked
            .into_iter()
            .zip(predictions.into_iter().zip(skipped))
            .map(|(c, (predictions, skipped))| {
                c?;
                let tc = Instant::now();
                let result = self.consensus.predict(&predictions)?;
                let consensus_us = us_since(tc);
                Ok(Decision {
                    result,
                    predictions,
                    skipped,
                    timings: StageTimes {
                        decode_us: None,
                        models_us: models_us.clone(),
                        consensus_us,
                        total_us: us_since(t0),
                    },
                })
            })
            .collect()
    }
}

/// One sample's inputs, checked against the loaded models' layout (batch 1 each).
struct Checked {
    features: Option<Tensor>,
    lob: Option<Tensor>,
    aux: Option<Tensor>,
}

impl Checked {
    fn new(inputs: EngineInputs, layout: &InputLayout, no_models: bool) -> Result<Checked, EngineError> {
        if inputs.features.is_none() && inputs.lob.is_none() && inputs.aux.is_none() {
            return Err(EngineError::input("features", "no input given (features, lob or aux)"));
        }
        if no_models {
            return Err(EngineError::NoModels);
        }
        Ok(Checked {
            features: check_input("features", inputs.features, layout.features.map(|s| s.to_vec()))?,
            lob: check_input("lob", inputs.lob, layout.lob.map(|s| s.to_vec()))?,
            aux: check_input("aux", inputs.aux, layout.aux.map(|a| vec![a]))?,
        })
    }

    /// Whether this sample runs on a model of `config`: `Ok(with aux)`, or
    /// the name of the input it lacks.
    fn input_for(&self, config: &ModelConfig) -> Result<bool, &'static str> {
        match config {
            ModelConfig::Tlob(c) if self.lob.is_some() => Ok(c.aux_features > 0 && self.aux.is_some()),
            ModelConfig::Tlob(_) => Err("lob"),
            _ if self.features.is_some() => Ok(false),
            _ => Err("features"),
        }
    }

    /// The `[features, lob, aux]` a model of `config` reads from this sample.
    fn parts(&self, config: &ModelConfig) -> [Option<&Tensor>; 3] {
        match config {
            ModelConfig::Tlob(c) => [None, self.lob.as_ref(), self.aux.as_ref().filter(|_| c.aux_features > 0)],
            _ => [self.features.as_ref(), None, None],
        }
    }

    /// Runs `f` on the samples' inputs for a model of `config`, stacked into
    /// one batch (a lone sample's tensors as they are, without a copy).
    fn stacked<T>(samples: &[&Checked], config: &ModelConfig, f: impl FnOnce(&Inputs<'_>) -> T) -> T {
        if let [one] = samples {
            let [features, lob, aux] = one.parts(config);
            return f(&Inputs { features, lob, aux });
        }
        let stack = |k: usize| -> Option<Tensor> {
            let first = samples[0].parts(config)[k]?;
            let mut shape = first.shape.clone();
            shape[0] = samples.len();
            let mut data = Vec::with_capacity(first.data.len() * samples.len());
            for s in samples {
                data.extend_from_slice(&s.parts(config)[k].expect("a group shares its inputs").data);
            }
            Some(Tensor { shape, data })
        };
        let [features, lob, aux] = [stack(0), stack(1), stack(2)];
        f(&Inputs { features: features.as_ref(), lob: lob.as_ref(), aux: aux.as_ref() })
    }
}

fn layout_of(slots: &[Option<Arc<Slot>>]) -> InputLayout {
    let mut layout = InputLayout::default();
    for slot in slots.iter().flatten() {
        match &slot.config {
            ModelConfig::Tlob(c) => {
                layout.lob = Some([c.sequence_length, c.num_levels, c.lob_features]);
                layout.aux = (c.aux_features > 0).then_some(c.aux_features);
                layout.lob_normalization = c.lob_normalization;
            }
            _ => layout.features = layout.features.or(slot.features_shape()),
        }
    }
    layout
}

/// `data` as a batch-1 tensor of `shape`, checking its length and values.
/// An input no loaded model reads is ignored (`Ok(None)`).
fn check_input(name: &str, data: Option<Vec<f32>>, shape: Option<Vec<usize>>) -> Result<Option<Tensor>, EngineError> {
    let (Some(data), Some(shape)) = (data, shape) else {
        return Ok(None);
    };
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(EngineError::input(
            name,
            format!("expected {n} values (shape {shape:?} of the loaded model), got {}", data.len()),
        ));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(EngineError::input(index_path(name, &shape, i), format!("{} is not finite", data[i])));
    }
    let mut full = Vec::with_capacity(shape.len() + 1);
    full.push(1);
    full.extend_from_slice(&shape);
    Ok(Some(Tensor { shape: full, data }))
}

/// `features[3][7]` for flat index `i` of a row-major `shape`.
pub fn index_path(name: &str, shape: &[usize], mut i: usize) -> String {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        idx[k] = i % d.max(1);
        i /= d.max(1);
    }
    let mut s = name.to_owned();
    for k in idx {
        s.push_str(&format!("[{k}]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_are_row_major() {
        assert_eq!(index_path("features", &[60, 112], 0), "features[0][0]");
        assert_eq!(index_path("features", &[60, 112], 112 * 3 + 7), "features[3][7]");
        assert_eq!(index_path("lob", &[100, 20, 4], 4 * 20 + 4 + 2), "lob[1][1][2]");
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }
}
