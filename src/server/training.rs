//! The training endpoints' side of the server: a [`TrainingLauncher`] (the
//! trainer plugs in here) and the one job that may run at a time.

use parking_lot::Mutex;
use serde::Serialize;

use crate::train::{Progress, ProgressHandle, TrainingConfig};

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
}

/// The current (or last) job.
#[derive(Clone)]
pub struct Job {
    pub id: u64,
    pub symbol: String,
    pub handle: ProgressHandle,
}

/// What the status endpoint answers: Progress's fields plus the job's id and symbol.
#[derive(Serialize)]
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
