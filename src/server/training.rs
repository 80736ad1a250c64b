//! The training endpoints' side of the server: a [`TrainingLauncher`] (the
//! trainer plugs in here) and the one job that may run at a time.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;

use crate::backend::select::Device;
use crate::backend::Train;
use crate::fsutil;
use crate::train::data::data_folder;
use crate::train::{JobResult, MultiModelTrainer, Progress, ProgressHandle, TrainingConfig};
use crate::weights::Repository;

/// Why a launcher refused a job (bad symbol, no data, …). Answered as 400
/// `training_rejected` naming `field`.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchError {
    pub field: Option<String>,
    pub message: String,
}

/// Starts training jobs for `POST /api/ensemble/training/start`.
///
/// The contract: `start` returns quickly (the job runs on its own thread or
/// task) with the job's [`ProgressHandle`], whose `is_training` is already
/// `true`; the job sets it to `false` when it is over (finished, failed or
/// stopped after `request_stop`, having saved a checkpoint), leaving its
/// last figures in place: they are the "last job's result" of the status
/// endpoint.
pub trait TrainingLauncher: Send + Sync {
    fn start(&self, config: TrainingConfig, symbol: String) -> Result<ProgressHandle, LaunchError>;

    /// The folder the jobs write their output under, if any: the server's
    /// `POST /models/load` reads from it too (besides the weights folder), so
    /// a trained model can be promoted by its `model_path`.
    fn output_root(&self) -> Option<PathBuf> {
        None
    }

    /// The model repository completed jobs publish into, if any: the server
    /// lists and loads its versions when it has no `weights_dir` of its own.
    fn repository(&self) -> Option<PathBuf> {
        None
    }
}

/// The current (or last) job.
#[derive(Clone)]
pub struct Job {
    pub id: u64,
    pub symbol: String,
    pub handle: ProgressHandle,
}

/// What the status endpoint answers: Progress's fields plus the job's id and symbol.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    #[serde(flatten)]
    pub progress: Progress,
    pub job_id: Option<u64>,
    pub symbol: Option<String>,
}

#[derive(Default)]
pub struct TrainingSlot {
    job: Mutex<Option<Job>>,
    next_id: Mutex<u64>,
}

pub enum StartError {
    Running(Job),
    Launch(LaunchError),
}

impl TrainingSlot {
    /// Starts a job unless one runs; the check and the start are one step.
    pub fn start(
        &self,
        launcher: &dyn TrainingLauncher,
        config: TrainingConfig,
        symbol: String,
    ) -> Result<Job, StartError> {
        let mut job = self.job.lock();
        if let Some(j) = job.as_ref().filter(|j| j.handle.snapshot().is_training) {
            return Err(StartError::Running(j.clone()));
        }
        let handle = launcher.start(config, symbol.clone()).map_err(StartError::Launch)?;
        let id = {
            let mut n = self.next_id.lock();
            *n += 1;
            *n
        };
        let j = Job { id, symbol, handle };
        *job = Some(j.clone());
        Ok(j)
    }

    pub fn current(&self) -> Option<Job> {
        self.job.lock().clone()
    }

    pub fn status(&self) -> JobStatus {
        match self.current() {
            Some(j) => JobStatus { progress: j.handle.snapshot(), job_id: Some(j.id), symbol: Some(j.symbol) },
            None => JobStatus { progress: Progress::default(), job_id: None, symbol: None },
        }
    }
}

/// The launcher `quorum serve --data DIR` plugs in: trains on the serving
/// backend (a `Device`, opened again by each job: a CUDA job gets its own
/// context beside the serving engine's), on a thread of its own, from `DIR` laid out
/// as `quorum train --data` reads it. The job's `checkpoint_dir` is a
/// relative path under `DIR` (`fsutil::dir_inside`: no `..`, no absolute
/// path, no link leading out; default `DIR/checkpoints/`). When the job is
/// over, its `result` (the model to promote with `POST
/// /api/ensemble/models/load`) or `error` is in the status; a job that fails
/// in any way, a panic included, ends with an `error` and the server goes on.
pub struct DataFolderLauncher {
    data_dir: PathBuf,
    backend: Device,
    repository: PathBuf,
}

impl DataFolderLauncher {
    /// Trains on the CPU and publishes into `DIR/weights`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let repository = Repository::of_data_folder(&data_dir).root().to_path_buf();
        DataFolderLauncher { data_dir, backend: Device::Cpu, repository }
    }

    pub fn on(mut self, backend: Device) -> Self {
        self.backend = backend;
        self
    }

    /// Publishes completed models into `repository` (the server's `--weights`).
    pub fn publishing_to(mut self, repository: impl Into<PathBuf>) -> Self {
        self.repository = repository.into();
        self
    }
}

/// One training job from start to result, on `be`: a completed run is
/// published into `repository` as its model's next version.
fn run_job<B: Train>(
    be: &B,
    config: TrainingConfig,
    job: &ProgressHandle,
    data: &DataPaths,
    symbol: &str,
) -> crate::Result<JobResult> {
    let mut t = MultiModelTrainer::<B>::new(be, config)?.with_progress(job.clone());
    t.load_data(Some(&data.features), Some(&data.raw), symbol)?;
    let r = t.train_walk_forward()?;
    let published =
        if r.completed { Some(t.publish(&Repository::new(&data.repository), &data.folder, &r)?) } else { None };
    Ok(JobResult {
        model_path: r.model_path.clone(),
        results_path: t.paths().results.display().to_string(),
        best_val_accuracy: r.best_val_accuracy,
        best_val_loss: r.best_val_loss,
        training_time_seconds: r.training_time_seconds,
        completed: r.completed,
        version: published.as_ref().map(|(v, _)| *v),
        published_path: published.map(|(_, p)| p.display().to_string()),
    })
}

/// Where a job reads and writes.
struct DataPaths {
    folder: PathBuf,
    features: PathBuf,
    raw: PathBuf,
    repository: PathBuf,
}

impl TrainingLauncher for DataFolderLauncher {
    fn output_root(&self) -> Option<PathBuf> {
        Some(self.data_dir.clone())
    }

    fn repository(&self) -> Option<PathBuf> {
        Some(self.repository.clone())
    }

    fn start(&self, mut config: TrainingConfig, symbol: String) -> Result<ProgressHandle, LaunchError> {
        let refuse = |field: &str, message: String| LaunchError { field: Some(field.into()), message };
        let (raw, features) =
            data_folder(&self.data_dir, &symbol).map_err(|e| refuse("symbol", format!("the server's data: {e}")))?;
        let Some(raw) = raw.filter(|r| r.join(&symbol).is_dir()) else {
            return Err(refuse(
                "symbol",
                format!("no raw order book for {symbol} under the server's data folder {}", self.data_dir.display()),
            ));
        };
        // Output only under the data folder, checked before anything is written.
        let out = fsutil::dir_inside(&self.data_dir, Path::new(&config.checkpoint_dir))
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .ok_or_else(|| {
                refuse(
                    "checkpoint_dir",
                    format!(
                        "{:?} is not a folder inside the server's data folder: give a relative path without `..` \
                         (e.g. \"checkpoints\"); it is created under the data folder",
                        config.checkpoint_dir
                    ),
                )
            })?;
        config.checkpoint_dir = out;
        let handle = ProgressHandle::new();
        let architecture = config.architecture.as_str().to_string();
        handle.update(|p| {
            p.is_training = true;
            p.architecture = architecture;
            p.total_epochs = config.epochs;
        });
        let job = handle.clone();
        let backend = self.backend;
        let paths = DataPaths { folder: self.data_dir.clone(), features, raw, repository: self.repository.clone() };
        std::thread::Builder::new()
            .name(format!("train-{symbol}"))
            .spawn(move || {
                // Every line the job logs (the trainer's epochs included) carries these fields.
                let span = tracing::info_span!("training_job", %symbol, architecture = config.architecture.as_str());
                let _in_span = span.enter();
                tracing::info!(epochs = config.epochs, backend = ?backend, "training started");
                // A panic anywhere in the job is the job's error, not a thread
                // gone silently with `is_training` stuck at true.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> crate::Result<JobResult> {
                    let device = backend.open()?;
                    let precision = device.training_precision(config.use_amp);
                    crate::on_device!(device, precision, be => run_job(&be, config, &job, &paths, &symbol))
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown".into());
                    Err(crate::Error::Backend { backend: "training job".into(), reason: format!("panicked: {what}") })
                });
                match &outcome {
                    Ok(r) => tracing::info!(
                        best_val_accuracy = r.best_val_accuracy,
                        completed = r.completed,
                        model = %r.model_path,
                        "training finished"
                    ),
                    Err(e) => tracing::error!(error = %e, "training failed"),
                }
                job.update(|p| {
                    match outcome {
                        Ok(r) => p.result = Some(r),
                        Err(e) => p.error = Some(e.to_string()),
                    }
                    p.is_training = false;
                });
            })
            .map_err(|e| LaunchError { field: None, message: format!("cannot start the training thread: {e}") })?;
        Ok(handle)
    }
}
