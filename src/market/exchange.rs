//! The loopback exchange: the [`MarketSimulator`] (or a recording,
//! [`ReplayFeed`]) served over Binance's spot protocol on one TCP port (tests,
//! `quorum simulate --serve` and `--replay`):
//! - WebSocket combined streams at `/stream?streams=<sym>@depth@100ms/<sym>@aggTrade`
//!   (either stream alone works too), pinging every `ping_interval` and
//!   dropping a connection that sends no pong within `pong_timeout`;
//! - the REST depth snapshot at `/api/v3/depth?symbol=<SYM>&limit=<n>`.
//!
//! Faults are injected at given diff-event numbers ([`ScheduledFault`]). The
//! simulator's true top-of-book after every tick is logged by update id
//! ([`TruthLog`]) so tests can compare a collector's books with it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::binance::{combined_json, DepthSnapshot};
use super::client::Endpoint;
use super::replay::{FeedStep, ReplayFeed};
use super::simulator::{MarketSimulator, SimConfig, SimError};
use super::types::Snapshot;

/// A fault the exchange injects.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The diff event is not sent.
    DropDiff,
    /// The diff event is sent twice.
    DuplicateDiff,
    /// The diff event is sent after the next one.
    ReorderDiffs,
    /// Every open stream is closed (a close frame) before the event.
    CloseSocket,
    /// A truncated, unparseable message is sent in place of the event.
    MalformedJson,
    /// Every open stream sends nothing (drops its messages) for this long.
    Stall(Duration),
    /// A `serverShutdown` event is sent before the event (the stream stays open).
    ServerShutdown,
    /// Every open stream is closed, and the next REST snapshot served is this
    /// many ticks older than the stream.
    StaleSnapshot { ticks_old: usize },
    /// Every open stream is closed, and the next REST request gets HTTP 429
    /// with `Retry-After: retry_after_secs`.
    RateLimit { retry_after_secs: u64 },
    /// Like `RateLimit`, with HTTP 418: Binance's answer to a client that kept
    /// going after 429s (an IP ban for `Retry-After` seconds).
    IpBan { retry_after_secs: u64 },
}

/// A fault injected at the `at_event`-th diff event generated (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledFault {
    pub at_event: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    pub sim: SimConfig,
    /// Wall-clock time between ticks.
    pub tick_interval: Duration,
    /// Do not tick before the first WebSocket client connects.
    pub wait_for_client: bool,
    /// Stop ticking after this many ticks (`None`: run until shut down).
    pub max_ticks: Option<u64>,
    pub faults: Vec<ScheduledFault>,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Update ids kept in the truth log (oldest dropped first; ~700 bytes each).
    pub truth_capacity: usize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            sim: SimConfig::default(),
            tick_interval: Duration::from_millis(100),
            wait_for_client: false,
            max_ticks: None,
            faults: Vec::new(),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            truth_capacity: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("exchange config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// The simulator's true top-[`NUM_LEVELS`](super::types::NUM_LEVELS) book after
/// each tick, by update id (ticks without an event share their id and book).
#[derive(Debug, Default)]
pub struct TruthLog {
    map: Mutex<BTreeMap<u64, Snapshot>>,
    capacity: usize,
}

impl TruthLog {
    fn insert(&self, snap: Snapshot) {
        let mut m = self.map.lock();
        m.insert(snap.last_update_id, snap);
        while m.len() > self.capacity.max(1) {
            m.pop_first();
        }
    }

    /// The true book at update id `id`.
    pub fn get(&self, id: u64) -> Option<Snapshot> {
        self.map.lock().get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest update id.
    pub fn last_id(&self) -> Option<u64> {
        self.map.lock().last_key_value().map(|(k, _)| *k)
    }
}

/// What the exchange has done.
#[derive(Debug, Default)]
pub struct ExchangeCounters {
    pub ticks: AtomicU64,
    pub depth_events: AtomicU64,
    pub ws_connections: AtomicU64,
    pub rest_requests: AtomicU64,
    pub faults_fired: AtomicU64,
    /// Update id of the book when the last fault fired.
    pub last_fault_update_id: AtomicU64,
}

#[derive(Clone, Debug)]
enum Item {
    Text(Utf8Bytes),
    Close,
    Stall(Duration),
}

/// REST state: recent snapshots and armed faults.
#[derive(Default)]
struct RestState {
    /// The last few ticks' full books, newest last.
    history: VecDeque<DepthSnapshot>,
    stale_next: Option<usize>,
    /// The status (429 or 418) and `Retry-After` of the next REST answer.
    rate_limit_next: Option<(u16, u64)>,
}

const REST_HISTORY: usize = 64;

struct Inner {
    cfg: ExchangeConfig,
    /// The served symbol, uppercase (the simulator's or the recording's).
    symbol: String,
    stream_depth: String,
    stream_trade: String,
    tx: broadcast::Sender<Item>,
    rest: Mutex<RestState>,
    truth: Arc<TruthLog>,
    counters: Arc<ExchangeCounters>,
    client_seen: Notify,
    has_client: AtomicBool,
}

/// A running loopback exchange.
pub struct LoopbackExchange {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LoopbackExchange {
    /// Binds `bind` (use port 0 for any free port) and starts serving the simulator.
    pub async fn start(bind: SocketAddr, cfg: ExchangeConfig) -> Result<LoopbackExchange, ExchangeError> {
        let sim = MarketSimulator::new(cfg.sim.clone())?;
        let feed = Feed::Sim { sim: Box::new(sim), first: true };
        LoopbackExchange::start_feed(bind, cfg, feed).await
    }

    /// Binds `bind` and serves a recording (`cfg.sim` is not used; the
    /// faults, pings and truth log work as with the simulator).
    pub async fn start_replay(
        bind: SocketAddr,
        cfg: ExchangeConfig,
        replay: ReplayFeed,
    ) -> Result<LoopbackExchange, ExchangeError> {
        LoopbackExchange::start_feed(bind, cfg, Feed::Replay(Box::new(replay))).await
    }

    async fn start_feed(bind: SocketAddr, cfg: ExchangeConfig, feed: Feed) -> Result<LoopbackExchange, ExchangeError> {
        if cfg.tick_interval.is_zero() {
            return Err(ExchangeError::Config { field: "tick_interval", reason: "must be positive".into() });
        }
        let listener = TcpListener::bind(bind).await.map_err(|source| ExchangeError::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(|source| ExchangeError::Bind { addr: bind, source })?;
        let (tx, _) = broadcast::channel(8192);
        let symbol = feed.symbol().to_ascii_uppercase();
        let sym = symbol.to_ascii_lowercase();
        let truth = Arc::new(TruthLog { map: Mutex::new(BTreeMap::new()), capacity: cfg.truth_capacity });
        let mut rest = RestState::default();
        if let Feed::Sim { sim, .. } = &feed {
            truth.insert(*sim.snapshot());
            rest.history.push_back(sim.rest_snapshot(sim.config().depth));
        }
        let inner = Arc::new(Inner {
            stream_depth: format!("{sym}@depth@100ms"),
            stream_trade: format!("{sym}@aggTrade"),
            symbol,
            cfg,
            tx,
            rest: Mutex::new(rest),
            truth,
            counters: Arc::new(ExchangeCounters::default()),
            client_seen: Notify::new(),
            has_client: AtomicBool::new(false),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(listener, inner.clone(), shutdown_rx.clone())),
            tokio::spawn(tick_loop(feed, inner.clone(), shutdown_rx)),
        ];
        Ok(LoopbackExchange { addr, inner, shutdown, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR` and `http://ADDR`.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(format!("ws://{}", self.addr), format!("http://{}", self.addr))
    }

    pub fn truth(&self) -> Arc<TruthLog> {
        self.inner.truth.clone()
    }

    pub fn counters(&self) -> Arc<ExchangeCounters> {
        self.inner.counters.clone()
    }

    /// Stops ticking and serving, and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for LoopbackExchange {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn text(s: String) -> Item {
    Item::Text(Utf8Bytes::from(s))
}

/// What the exchange serves: the simulator, one tick per `tick_interval`,
/// or a recording at its own pace.
enum Feed {
    Sim { sim: Box<MarketSimulator>, first: bool },
    Replay(Box<ReplayFeed>),
}

impl Feed {
    fn symbol(&self) -> &str {
        match self {
            Feed::Sim { sim, .. } => &sim.config().symbol,
            Feed::Replay(r) => r.symbol(),
        }
    }

    /// The next step, `Ok(None)` when the market has ended.
    fn next_step(&mut self, cfg: &ExchangeConfig) -> Result<Option<FeedStep>, SimError> {
        match self {
            Feed::Replay(r) => Ok(r.next_step()),
            Feed::Sim { sim, first } => {
                if cfg.max_ticks.is_some_and(|m| sim.ticks() >= m) {
                    return Ok(None);
                }
                let wait = if std::mem::take(first) { Duration::ZERO } else { cfg.tick_interval };
                let depth_levels = sim.config().depth;
                let tick = sim.step()?;
                let truth = *tick.snapshot;
                let depth = tick.depth_update.map(|d| (d.to_json(), truth.last_update_id));
                let trades = tick.trades.iter().map(|t| t.to_json()).collect();
                Ok(Some(FeedStep {
                    wait,
                    truth: Some(truth),
                    rest: Some(sim.rest_snapshot(depth_levels)),
                    depth,
                    trades,
                    event_ms: truth.ts_exchange_ms,
                }))
            }
        }
    }
}

async fn tick_loop(mut feed: Feed, inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    if inner.cfg.wait_for_client && !inner.has_client.load(Ordering::Acquire) {
        tokio::select! {
            _ = inner.client_seen.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
    let mut held: Option<Item> = None;
    let mut next_at = Instant::now();
    loop {
        let step = match feed.next_step(&inner.cfg) {
            Ok(Some(step)) => step,
            Ok(None) => {
                // The market has ended: keep serving connections until shut down.
                let _ = shutdown.changed().await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "exchange: simulator stopped");
                return;
            }
        };
        // A late step does not make the next ones burst (tokio's `MissedTickBehavior::Delay`).
        next_at = (next_at + step.wait).max(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(next_at) => {}
            _ = shutdown.changed() => return,
        }
        // The truth and the REST book first: whatever a client sees next is consistent with them.
        if let Some(truth) = step.truth {
            inner.truth.insert(truth);
        }
        inner.counters.ticks.fetch_add(1, Ordering::Relaxed);
        if let Some(book) = step.rest {
            let mut rest = inner.rest.lock();
            rest.history.push_back(book);
            while rest.history.len() > REST_HISTORY {
                rest.history.pop_front();
            }
        }
        let tx = &inner.tx;
        for t in &step.trades {
            let _ = tx.send(text(combined_json(&inner.stream_trade, t)));
        }
        let Some((payload, update_id)) = step.depth else {
            continue;
        };
        let msg = combined_json(&inner.stream_depth, &payload);
        let n = inner.counters.depth_events.fetch_add(1, Ordering::Relaxed) + 1;
        let mut send_event = true;
        let mut send_twice = false;
        let mut hold = false;
        for f in inner.cfg.faults.iter().filter(|f| f.at_event == n) {
            inner.counters.faults_fired.fetch_add(1, Ordering::Relaxed);
            inner.counters.last_fault_update_id.store(update_id, Ordering::Relaxed);
            tracing::info!(fault = ?f.fault, diff_event = n, update_id, "exchange: injecting a fault");
            match &f.fault {
                Fault::DropDiff => send_event = false,
                Fault::DuplicateDiff => send_twice = true,
                Fault::ReorderDiffs => hold = true,
                Fault::CloseSocket => {
                    let _ = tx.send(Item::Close);
                }
                Fault::MalformedJson => {
                    send_event = false;
                    let cut = msg.len() / 2;
                    let _ = tx.send(text(msg.get(..cut).unwrap_or("{").to_owned()));
                }
                Fault::Stall(d) => {
                    let _ = tx.send(Item::Stall(*d));
                }
                Fault::ServerShutdown => {
                    let ms = step.event_ms;
                    let _ = tx.send(text(format!("{{\"e\":\"serverShutdown\",\"E\":{ms}}}")));
                }
                Fault::StaleSnapshot { ticks_old } => {
                    inner.rest.lock().stale_next = Some(*ticks_old);
                    let _ = tx.send(Item::Close);
                }
                Fault::RateLimit { retry_after_secs } => {
                    inner.rest.lock().rate_limit_next = Some((429, *retry_after_secs));
                    let _ = tx.send(Item::Close);
                }
                Fault::IpBan { retry_after_secs } => {
                    inner.rest.lock().rate_limit_next = Some((418, *retry_after_secs));
                    let _ = tx.send(Item::Close);
                }
            }
        }
        let item = text(msg);
        if hold {
            held = Some(item);
            continue;
        }
        if send_event {
            let _ = tx.send(item.clone());
            if send_twice {
                let _ = tx.send(item);
            }
        }
        if let Some(h) = held.take() {
            let _ = tx.send(h);
        }
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "exchange: accept failed");
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, inner, shutdown).await {
                tracing::debug!(error = %e, "exchange: connection ended");
            }
        });
    }
}

/// Peeks at the request line to tell a WebSocket upgrade from a REST request.
async fn request_path(stream: &TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            let mut parts = line.split_whitespace();
            let _method = parts.next();
            return Ok(parts.next().map(str::to_owned));
        }
        if n == buf.len() || Instant::now() > deadline {
            return Ok(None);
        }
        sleep(Duration::from_millis(2)).await;
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let Some(path) = request_path(&stream).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if path.starts_with("/api/v3/depth") {
        serve_rest(&mut stream, &inner, &path).await.map_err(|e| e.to_string())
    } else {
        serve_ws(stream, inner, shutdown).await
    }
}

fn query_param<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

async fn serve_rest(stream: &mut TcpStream, inner: &Inner, path: &str) -> std::io::Result<()> {
    // Read the request head (bounded) before answering.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    inner.counters.rest_requests.fetch_add(1, Ordering::Relaxed);
    let symbol_ok = query_param(path, "symbol").is_some_and(|s| s.eq_ignore_ascii_case(&inner.symbol));
    let limit = query_param(path, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100);
    let (status, extra, body) = if !symbol_ok {
        let msg = format!("Invalid symbol. This exchange serves {}.", inner.symbol);
        ("400 Bad Request", String::new(), format!("{{\"code\":-1121,\"msg\":\"{msg}\"}}"))
    } else {
        let mut rest = inner.rest.lock();
        if let Some((status, secs)) = rest.rate_limit_next.take() {
            let line = if status == 418 { "418 I'm a teapot" } else { "429 Too Many Requests" };
            (line, format!("Retry-After: {secs}\r\n"), "{\"code\":-1003,\"msg\":\"Too many requests.\"}".to_owned())
        } else {
            let back = rest.stale_next.take().unwrap_or(0);
            let idx = rest.history.len().saturating_sub(1 + back);
            let mut snap = rest.history.get(idx).cloned().unwrap_or(DepthSnapshot {
                last_update_id: 0,
                bids: Vec::new(),
                asks: Vec::new(),
            });
            snap.bids.truncate(limit.max(1));
            snap.asks.truncate(limit.max(1));
            ("200 OK", String::new(), snap.to_json())
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn serve_ws(stream: TcpStream, inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
    let mut want_depth = false;
    let mut want_trade = false;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let path = req.uri().path();
        let streams: Vec<String> = if path == "/stream" {
            query_param(req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""), "streams")
                .map(|s| s.split('/').map(str::to_owned).collect())
                .unwrap_or_default()
        } else if let Some(s) = path.strip_prefix("/ws/") {
            vec![s.to_owned()]
        } else {
            Vec::new()
        };
        want_depth = streams.iter().any(|s| *s == inner.stream_depth);
        want_trade = streams.iter().any(|s| *s == inner.stream_trade);
        if !want_depth && !want_trade {
            let mut r = ErrorResponse::new(Some(format!(
                "unknown streams {streams:?}; this exchange serves {} and {}",
                inner.stream_depth, inner.stream_trade
            )));
            *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
            return Err(r);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback).await.map_err(|e| e.to_string())?;
    let mut rx = inner.tx.subscribe();
    inner.counters.ws_connections.fetch_add(1, Ordering::Relaxed);
    if !inner.has_client.swap(true, Ordering::AcqRel) {
        inner.client_seen.notify_one();
    }
    let (mut sink, mut source) = ws.split();
    let mut ping = tokio::time::interval(inner.cfg.ping_interval);
    ping.tick().await;
    let mut last_pong = Instant::now();
    let mut stalled_until: Option<Instant> = None;
    let depth_tag = format!("\"stream\":\"{}\"", inner.stream_depth);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Ok(Item::Text(t)) => {
                    if stalled_until.is_some_and(|u| Instant::now() < u) {
                        continue;
                    }
                    let is_depth = t.as_str().contains(&depth_tag);
                    let is_trade = !is_depth && t.as_str().contains("\"e\":\"aggTrade\"");
                    if (is_depth && !want_depth) || (is_trade && !want_trade) {
                        continue;
                    }
                    if sink.send(Message::Text(t)).await.is_err() {
                        break;
                    }
                }
                Ok(Item::Close) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                Ok(Item::Stall(d)) => stalled_until = Some(Instant::now() + d),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(behind = n, "exchange: a client fell behind; closing it");
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = source.next() => match msg {
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > inner.cfg.pong_timeout {
                    tracing::warn!(timeout = ?inner.cfg.pong_timeout, "exchange: no pong in time; closing");
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
        }
    }
    Ok(())
}
