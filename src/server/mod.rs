//! The HTTP server of docs/api.md on hyper 1 (HTTP/1.1) and tokio.
//!
//! Safety rails, each against a way one client could hurt the others
//! (docs/security.md, "HTTP", lists them with their defaults):
//! - loopback only unless `allow_remote`, and then a bearer token for every POST;
//! - a request gate against web pages ([`guard`]): POST bodies must be
//!   declared JSON (or the binary predict type), cross-origin requests are
//!   refused unless allowed, and the `Host` must be a name the server was
//!   bound as (no DNS rebinding);
//! - a body size limit (`Content-Length` checked before reading, and the
//!   read itself capped), a header read timeout and a body read timeout, so
//!   a client that stalls mid-request is dropped and holds nothing for long;
//! - request heads read and checked before hyper sees them ([`conn`]): size
//!   and line limits, and every malformed head answered with the JSON error;
//! - a connection cap, a per-client cap, idle connections closed to make
//!   room, and a reserve where health is served when every place is busy;
//!   a cap on requests being worked on at once (others wait a little, then
//!   get 503);
//! - TCP_NODELAY on every accepted socket (answers are small);
//! - inference and weight loading run on the blocking pool, never on the
//!   threads that serve sockets; loads only from the weights folder (and the
//!   training output), one at a time, with a timeout;
//! - training jobs within documented size bounds and a memory budget
//!   (docs/security.md, "Limits").
//!
//! Modules: [`routes`] (the endpoints), [`guard`] (origin, host, content
//! type), [`codec`] (JSON and binary bodies), [`metrics`] (Prometheus text),
//! [`error`] (the error body), [`training`] (the launcher the trainer plugs
//! into); `conn` (the connection registry and the head gate).

pub mod codec;
mod conn;
pub mod engine;
pub mod error;
pub mod guard;
pub mod live;
mod openapi;
mod process_stats;
pub mod prometheus;
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

use crate::server::engine::Engine;
use crate::server::live::LiveHub;
pub use error::ApiError;
pub use prometheus::Metrics;
pub use training::{DataFolderLauncher, LaunchError, TrainingLauncher};

/// The server's settings; the defaults are docs/api.md's.
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
    /// Open connections at most. A connection over it closes the
    /// longest-idle one to make room, or goes to the health reserve.
    pub max_connections: usize,
    /// Open connections of one client address (IPv6: one /64) at most; over
    /// it, that client's longest-idle connection is closed to make room.
    pub max_connections_per_ip: usize,
    /// Connections taken over the caps when every place is busy, on which
    /// only `/health/live` and `/health/ready` are served (the rest: 503).
    pub health_reserve: usize,
    /// Largest request head (request line and headers), in bytes (431 over it).
    pub max_header_bytes: usize,
    /// Header lines of a request at most (431 over it).
    pub max_headers: usize,
    /// Origins (`scheme://host[:port]`) whose pages may call the API; a
    /// request with any other `Origin` is refused.
    pub allow_origins: Vec<String>,
    /// `Host` names accepted besides the ones the server is bound as
    /// (`name` with any port, or `name:port`): a proxy's or a DNS name.
    pub allow_hosts: Vec<String>,
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
            max_connections_per_ip: 128,
            health_reserve: 16,
            max_header_bytes: 16 << 10,
            max_headers: 100,
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
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
        if self.max_body_bytes == 0
            || self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.health_reserve == 0
            || self.max_in_flight == 0
            || self.max_streams == 0
        {
            return bad("max_*", "limits must be positive");
        }
        if !(1024..=256 << 10).contains(&self.max_header_bytes) {
            return bad("max_header_bytes", "must be between 1 KiB and 256 KiB");
        }
        if !(1..=100).contains(&self.max_headers) {
            return bad("max_headers", "must be between 1 and 100");
        }
        for o in &self.allow_origins {
            guard::parse_allowed_origin(o).map_err(|reason| ServerError::Config { field: "allow_origin", reason })?;
        }
        for h in &self.allow_hosts {
            guard::parse_allowed_host(h).map_err(|reason| ServerError::Config { field: "allow_host", reason })?;
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
    /// The `Host` names this server answers to (from the address bound and `allow_hosts`).
    pub hosts: guard::HostPolicy,
    /// The origins whose pages may call it (`allow_origins`).
    pub origins: guard::OriginPolicy,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// Live mode's hubs, one per symbol (empty: live mode is off).
    pub live: Vec<Arc<LiveHub>>,
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
    /// Live mode's hubs, one per symbol (`LiveRunner::hubs`); empty when off.
    pub live: Vec<Arc<LiveHub>>,
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
            hosts: guard::HostPolicy::new(addr, &config.allow_hosts),
            origins: guard::OriginPolicy::new(&config.allow_origins),
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
    let c = &state.config;
    let registry =
        conn::Registry::new(c.max_connections, c.max_connections_per_ip, c.health_reserve, state.metrics.clone());
    let mut tasks = JoinSet::new();
    loop {
        // Never waits for a place: a connection over the caps makes room or is
        // answered at once (conn::Registry), so health stays reachable.
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; backing off 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = registry.admit(conn::ClientKey::of(peer.ip())) else {
            registry.refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(state.config.bind);
        let state = state.clone();
        let stop = shutdown.clone();
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_connection(
            stream,
            guard::ConnCtx { peer, local, reserve: slot.pool == conn::Pool::Reserve },
            slot,
            state,
            stop,
        ));
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

/// One connection: hyper over the head gate, closed when the server stops,
/// when the registry needs its place (idle only), or once the gate ended it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    ctx: guard::ConnCtx,
    slot: conn::Slot,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &state.config;
    let limits =
        conn::HeadLimits { max_bytes: c.max_header_bytes, max_headers: c.max_headers, timeout: c.header_timeout };
    let info = slot.info.clone();
    let gate = conn::Gate::new(stream, info.clone(), limits, state.metrics.clone());
    let svc_info = info.clone();
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        let busy = svc_info.begin();
        let state = svc_state.clone();
        async move {
            let resp = routes::handle(state, ctx, req).await?;
            // The connection counts as busy until hyper has taken the whole answer.
            Ok::<_, std::convert::Infallible>(resp.map(|body| routes::Body::new(Tracked { body, _busy: busy })))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // The gate times heads out itself (with a 408); hyper's timer only backs it up.
        .header_read_timeout(c.header_timeout + Duration::from_secs(5))
        .max_headers(c.max_headers)
        .keep_alive(slot.pool == conn::Pool::Normal)
        .serve_connection(TokioIo::new(gate), svc);
    tokio::pin!(conn);
    let grace = Duration::from_secs(5);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        }
        _ = info.evict.notified() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        }
        _ = info.closing.notified() => {
            let _ = tokio::time::timeout(grace, conn).await;
        }
    }
    drop(slot);
}

/// A response body that keeps its connection counted busy until it is dropped.
struct Tracked {
    body: routes::Body,
    _busy: conn::BusyGuard,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
