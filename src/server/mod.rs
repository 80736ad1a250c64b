//! The HTTP server of spec/api.md on hyper 1 (HTTP/1.1) and tokio.
//!
//! Safety rails, each against a way one client could hurt the others:
//! - loopback only unless `allow_remote`, and then a bearer token for every POST;
//! - a body size limit (`Content-Length` checked before reading, and the
//!   read itself capped), a header read timeout and a body read timeout, so
//!   a client that stalls mid-request is dropped and holds nothing for long;
//! - a connection cap and a cap on requests being worked on at once (others
//!   wait a little, then get 503);
//! - TCP_NODELAY on every accepted socket (answers are small);
//! - inference and weight loading run on the blocking pool, never on the
//!   threads that serve sockets; loads only from the weights folder (and the
//!   training output), one at a time, with a timeout;
//! - training jobs within documented size bounds and a memory budget
//!   (docs/security.md, "Limits").
//!
//! Modules: [`routes`] (the endpoints), [`codec`] (JSON and binary bodies),
//! [`metrics`] (Prometheus text), [`error`] (the error body), [`training`]
//! (the launcher the trainer plugs into).

pub mod codec;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod training;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::engine::Engine;
use crate::live::LiveHub;
pub use error::ApiError;
pub use metrics::Metrics;
pub use training::{DataFolderLauncher, LaunchError, TrainOn, TrainingLauncher};

/// The server's settings; the defaults are api.md's.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Binding a non-loopback address needs this (and a token).
    pub allow_remote: bool,
    /// When set, every POST needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once the headers are in.
    pub body_timeout: Duration,
    /// Open connections at most; further ones wait to be accepted.
    pub max_connections: usize,
    /// Requests worked on at once at most.
    pub max_in_flight: usize,
    /// How long a request waits for a place before 503.
    pub queue_timeout: Duration,
    /// Server-sent-event subscribers at most.
    pub max_streams: usize,
    /// The folder `POST /models/load` reads weights from (`--weights`); the
    /// path a request gives must name a regular file inside it
    /// (`fsutil::file_inside`). `None`: loading by path reads only the
    /// training jobs' output (under `--data`), if any.
    pub weights_dir: Option<PathBuf>,
    /// Largest weights file a load reads, in bytes (`--max-weights-mb`,
    /// default 1 GiB); checked against the file's size before reading.
    pub max_weights_bytes: u64,
    /// How long `POST /models/load` waits for a load (default 30 s) before
    /// answering 503; loads run one at a time on the blocking pool.
    pub load_timeout: Duration,
    /// Memory a training job may be estimated to need, in bytes
    /// (`--training-memory-mb`, default 4 GiB; `train::memory::estimate`);
    /// a job over it is refused before it starts.
    pub training_memory_budget: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            allow_remote: false,
            token: None,
            // A JSON predict body of 60×112 + 100×20×4 + 112 numbers is ~200 kB.
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_in_flight: 64,
            queue_timeout: Duration::from_secs(2),
            max_streams: 64,
            weights_dir: None,
            max_weights_bytes: crate::weights::MAX_WEIGHTS_FILE_BYTES,
            load_timeout: Duration::from_secs(30),
            training_memory_budget: 4 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |field, reason: &str| Err(ServerError::Config { field, reason: reason.into() });
        if !self.bind.ip().is_loopback() {
            if !self.allow_remote {
                return bad("bind", "a non-loopback address needs --allow-remote (and --token)");
            }
            if self.token.is_none() {
                return bad("token", "binding a non-loopback address needs a token for every POST");
            }
        }
        if let Some(t) = &self.token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("token", "must be at least 16 characters, with no spaces or control characters");
            }
        }
        if self.max_body_bytes == 0 || self.max_connections == 0 || self.max_in_flight == 0 || self.max_streams == 0 {
            return bad("max_*", "limits must be positive");
        }
        if self.max_weights_bytes == 0 || self.training_memory_budget == 0 {
            return bad("max_*", "limits must be positive");
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() || self.load_timeout.is_zero() {
            return bad("*_timeout", "timeouts must be positive");
        }
        Ok(())
    }
}

/// Everything a request handler can reach.
pub struct AppState {
    pub config: ServerConfig,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub live: Option<Arc<LiveHub>>,
    pub launcher: Option<Arc<dyn TrainingLauncher>>,
    pub training: training::TrainingSlot,
    pub in_flight: Semaphore,
    pub streams: Arc<Semaphore>,
    /// One weights load at a time (a stuck one holds it, so stuck loads never pile up).
    pub loads: Arc<Semaphore>,
    /// Turns true when the server stops: event streams end on it.
    pub stopping: watch::Receiver<bool>,
}

/// A running server; dropping it stops accepting.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What the server serves besides the engine.
#[derive(Default)]
pub struct Extras {
    pub live: Option<Arc<LiveHub>>,
    pub launcher: Option<Arc<dyn TrainingLauncher>>,
    /// Shared with the live pipeline's observer, so live decisions count too.
    pub metrics: Option<Arc<Metrics>>,
}

impl Server {
    /// Binds and starts serving (port 0 takes any free port).
    pub async fn start(config: ServerConfig, engine: Arc<Engine>, extras: Extras) -> Result<Server, ServerError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.bind, source })?;
        let (shutdown, rx) = watch::channel(false);
        let state = Arc::new(AppState {
            stopping: rx.clone(),
            in_flight: Semaphore::new(config.max_in_flight),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            loads: Arc::new(Semaphore::new(1)),
            config,
            engine,
            metrics: extras.metrics.unwrap_or_default(),
            live: extras.live,
            launcher: extras.launcher,
            training: training::TrainingSlot::default(),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone(), rx));
        Ok(Server { addr, state, shutdown, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, lets requests in progress finish (up to 5 s) and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(state.config.max_connections));
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    eprintln!("[server] accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut stop = shutdown.clone();
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let header_timeout = state.config.header_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| routes::handle(state.clone(), peer, req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}
