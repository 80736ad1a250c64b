//! The Binance spot market-data client: the combined stream
//! `<symbol>@depth@100ms/<symbol>@aggTrade` over WebSocket, kept in sync with
//! the REST depth snapshot by the book's rules (docs/data.md).
//!
//! One task ([`run_client`]) owns the connection. It
//! - connects (TCP_NODELAY; rustls with ring's provider for `wss://`), with a
//!   connect timeout;
//! - buffers diff events in the book until the first one arrives, then fetches
//!   `/api/v3/depth` concurrently with the stream and loads it (the book drops
//!   events with `u <= lastUpdateId` and checks that the first applied event
//!   spans `lastUpdateId + 1`; a snapshot older than the stream is fetched again);
//! - on a gap, a message it cannot parse or an event the book refuses, clears
//!   the book (no level survives) and resyncs from a new snapshot;
//! - answers pings (tungstenite queues the pong and flushes it on the next
//!   read), reconnects when the stream is silent for `stale_after` (the
//!   watchdog), at once on `serverShutdown`, before Binance's 24-hour cut
//!   (`max_connection_age`), and after any disconnect, with capped exponential
//!   backoff and full jitter;
//! - honours `Retry-After` on REST 429/418.
//!
//! Every event keeps the exchange's time (`E`) and the local receive time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::binance::{parse_combined, parse_depth_snapshot, BinanceError, DepthSnapshot, StreamEvent};
use super::book::{BookError, DiffOutcome, OrderBook, SyncReport};
use super::recording::FrameRecorder;
use super::types::Trade;

/// Binance spot's WebSocket base URL.
pub const BINANCE_WS_URL: &str = "wss://stream.binance.com:9443";
/// Binance spot's REST base URL.
pub const BINANCE_REST_URL: &str = "https://api.binance.com";

/// Largest REST response body accepted (a 5000-level snapshot is ~300 kB).
const MAX_BODY_BYTES: usize = 16 << 20;

/// The exchange's base URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `wss://host:port` or `ws://host:port` (no path).
    pub ws_url: String,
    /// `https://host` or `http://host:port` (no path).
    pub rest_url: String,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint { ws_url: BINANCE_WS_URL.into(), rest_url: BINANCE_REST_URL.into() }
    }
}

impl Endpoint {
    pub fn new(ws_url: impl Into<String>, rest_url: impl Into<String>) -> Endpoint {
        Endpoint { ws_url: ws_url.into(), rest_url: rest_url.into() }
    }

    /// `<ws>/stream?streams=<sym>@depth@100ms/<sym>@aggTrade` (stream names are lowercase).
    pub fn stream_url(&self, symbol: &str) -> String {
        let s = symbol.to_ascii_lowercase();
        format!("{}/stream?streams={s}@depth@100ms/{s}@aggTrade", self.ws_url.trim_end_matches('/'))
    }

    /// `<rest>/api/v3/depth?symbol=<SYM>&limit=<limit>` (symbols are uppercase).
    pub fn depth_url(&self, symbol: &str, limit: usize) -> String {
        format!(
            "{}/api/v3/depth?symbol={}&limit={limit}",
            self.rest_url.trim_end_matches('/'),
            symbol.to_ascii_uppercase()
        )
    }
}

/// Timing and size knobs of the client. The defaults suit Binance.
#[derive(Clone, Debug)]
pub struct ClientTuning {
    /// Levels a side asked of `/api/v3/depth` (Binance: at most 5000).
    pub snapshot_limit: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The watchdog: a connected stream silent (no data message) this long is reconnected.
    pub stale_after: Duration,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`, with full jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Reconnect before Binance's 24-hour cut.
    pub max_connection_age: Duration,
    /// Snapshots in a row that fail to sync (too old, gap, refused) before reconnecting.
    pub max_sync_attempts: u32,
    /// Certificates trusted for `wss://` and `https://` besides the public
    /// (webpki) roots: a private CA in front of a colocated gateway, or a test
    /// exchange's own certificate.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for ClientTuning {
    fn default() -> Self {
        ClientTuning {
            snapshot_limit: 1000,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            stale_after: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(23 * 3600 + 50 * 60),
            max_sync_attempts: 10,
            extra_roots: Vec::new(),
        }
    }
}

/// Why a connection ended or a request failed. Messages name the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("WebSocket connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("WebSocket connect to {url}: no handshake within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    #[error("WebSocket stream: {0}")]
    Stream(String),
    #[error("WebSocket stream: closed by the server")]
    Closed,
    #[error("WebSocket stream: silent for {0:?} (staleness watchdog)")]
    Stale(Duration),
    #[error("REST {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("REST {url}: HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    /// A 4xx answer that asking again will not change (not 408, 418 or 429).
    #[error("{url}: HTTP {status} {body}; the server refuses the request and retrying will not change that (is the symbol right?)")]
    Refused { url: String, status: u16, body: String },
    #[error("REST {url}: HTTP {status} (rate limit), Retry-After {retry_after:?}")]
    RateLimited { url: String, status: u16, retry_after: Duration },
    #[error("REST depth snapshot: {0}")]
    Snapshot(#[from] BinanceError),
    #[error("book sync failed {attempts} times in a row, last: {last}")]
    SyncFailed { attempts: u32, last: String },
}

impl ClientError {
    /// An error that retrying cannot cure: the client stops instead of reconnecting.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// Whether an HTTP status refuses the request for good (a 4xx other than
/// 408 timeout, 418 ban and 429 rate limit, which pass).
fn refuses_for_good(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 418 | 429)
}

/// At most 200 characters of a refusal's body, for the message.
fn body_excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Counters of the client, readable while it runs.
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Data messages received (any stream).
    pub messages: AtomicU64,
    /// Diff-depth events received.
    pub depth_events: AtomicU64,
    /// Diff-depth events applied to a synced book.
    pub events_applied: AtomicU64,
    pub trades: AtomicU64,
    /// Resyncs: the book was cleared and a new snapshot loaded (after a gap,
    /// a parse error, a refused event or a reconnect).
    pub resyncs: AtomicU64,
    pub gaps: AtomicU64,
    pub parse_errors: AtomicU64,
    /// Connections opened after the first.
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub stale_timeouts: AtomicU64,
    pub server_shutdowns: AtomicU64,
    pub snapshots_fetched: AtomicU64,
    pub snapshots_too_old: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Snapshots the book refused (crossed, invalid).
    pub rejected_books: AtomicU64,
}

/// A plain copy of [`ClientCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub messages: u64,
    pub depth_events: u64,
    pub events_applied: u64,
    pub trades: u64,
    pub resyncs: u64,
    pub gaps: u64,
    pub parse_errors: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub stale_timeouts: u64,
    pub server_shutdowns: u64,
    pub snapshots_fetched: u64,
    pub snapshots_too_old: u64,
    pub rate_limited: u64,
    pub rejected_books: u64,
}

impl ClientCounters {
    pub fn stats(&self) -> ClientStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            messages: g(&self.messages),
            depth_events: g(&self.depth_events),
            events_applied: g(&self.events_applied),
            trades: g(&self.trades),
            resyncs: g(&self.resyncs),
            gaps: g(&self.gaps),
            parse_errors: g(&self.parse_errors),
            reconnects: g(&self.reconnects),
            connect_failures: g(&self.connect_failures),
            stale_timeouts: g(&self.stale_timeouts),
            server_shutdowns: g(&self.server_shutdowns),
            snapshots_fetched: g(&self.snapshots_fetched),
            snapshots_too_old: g(&self.snapshots_too_old),
            rate_limited: g(&self.rate_limited),
            rejected_books: g(&self.rejected_books),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The maintained book and the times of its last applied event.
#[derive(Debug)]
pub struct LiveBook {
    pub book: OrderBook,
    /// `E` of the last applied diff event (0 before any).
    pub last_event_ms: i64,
    /// Local receive time (ns since the epoch) of the last applied diff event.
    pub last_recv_ns: i64,
    /// `E` and receive time of the last diff event received (applied or buffered).
    pub last_seen_ms: i64,
    pub last_seen_recv_ns: i64,
}

/// State shared between the client task and its readers.
#[derive(Debug)]
pub struct ClientShared {
    pub symbol: String,
    pub live: Mutex<LiveBook>,
    /// Trades received and not yet taken by the collector.
    pub trades: Mutex<Vec<Trade>>,
    pub counters: ClientCounters,
    /// Where every frame goes as received (`collect --record-frames`), if anywhere.
    pub recorder: Mutex<Option<FrameRecorder>>,
}

impl ClientShared {
    pub fn new(symbol: &str) -> ClientShared {
        ClientShared {
            symbol: symbol.to_owned(),
            live: Mutex::new(LiveBook {
                book: OrderBook::new(symbol),
                last_event_ms: 0,
                last_recv_ns: 0,
                last_seen_ms: 0,
                last_seen_recv_ns: 0,
            }),
            trades: Mutex::new(Vec::new()),
            counters: ClientCounters::default(),
            recorder: Mutex::new(None),
        }
    }
}

/// Local wall-clock time in ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Installs ring's rustls crypto provider as the process default (once; a
/// provider installed before is kept).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a text message asks of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageAction {
    Continue,
    /// The book is unsynchronized and holds events: fetch a snapshot (if none is under way).
    NeedSnapshot,
    /// Clear the book and resync from a new snapshot.
    Resync(String),
    /// A sequence gap: the book discarded its levels (and kept the event for
    /// the next snapshot); resync from a new snapshot.
    Gap(String),
    /// `serverShutdown`: reconnect now.
    ServerShutdown,
}

fn is_server_shutdown(text: &str) -> bool {
    if !text.contains("serverShutdown") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    let is =
        |x: Option<&serde_json::Value>| x.and_then(|e| e.get("e")).and_then(|e| e.as_str()) == Some("serverShutdown");
    is(Some(&v)) || is(v.get("data")) || is(v.get("event"))
}

/// Handles one text message of the combined stream: parses it and applies it
/// to the shared book and trade list. Never panics on any input.
pub fn handle_text(shared: &ClientShared, text: &str, recv_ns: i64) -> MessageAction {
    let c = &shared.counters;
    if let Some(recorder) = shared.recorder.lock().as_ref() {
        recorder.record(recv_ns, text);
    }
    if is_server_shutdown(text) {
        bump(&c.server_shutdowns);
        return MessageAction::ServerShutdown;
    }
    match parse_combined(text) {
        Ok(m) => handle_event(shared, m.event, recv_ns),
        Err(e) => {
            bump(&c.parse_errors);
            MessageAction::Resync(format!("unparseable message: {e}"))
        }
    }
}

/// Applies one parsed stream event received at `recv_ns` (local time, ns
/// since the epoch) to the shared book and trade list: the book's sequence
/// rules, the times of the last event, the counters. The live connection and
/// `quorum import` (recorded frames) both go through here.
pub fn handle_event(shared: &ClientShared, event: StreamEvent, recv_ns: i64) -> MessageAction {
    let c = &shared.counters;
    bump(&c.messages);
    match event {
        StreamEvent::Depth(ev) => {
            bump(&c.depth_events);
            let mut live = shared.live.lock();
            if live.book.symbol().eq_ignore_ascii_case(&ev.symbol) {
                live.last_seen_ms = ev.event_time_ms;
                live.last_seen_recv_ns = recv_ns;
            }
            match live.book.apply_diff(&ev) {
                Ok(DiffOutcome::Applied) => {
                    bump(&c.events_applied);
                    live.last_event_ms = ev.event_time_ms;
                    live.last_recv_ns = recv_ns;
                    MessageAction::Continue
                }
                Ok(DiffOutcome::Stale) => MessageAction::Continue,
                Ok(DiffOutcome::Buffered) => MessageAction::NeedSnapshot,
                Err(e @ BookError::Gap { .. }) => {
                    bump(&c.gaps);
                    MessageAction::Gap(e.to_string())
                }
                Err(e) => {
                    bump(&c.parse_errors);
                    MessageAction::Resync(format!("refused event: {e}"))
                }
            }
        }
        StreamEvent::AggTrade(t) => {
            if t.symbol.eq_ignore_ascii_case(&shared.symbol) {
                bump(&c.trades);
                shared.trades.lock().push(t.to_trade());
            }
            MessageAction::Continue
        }
        StreamEvent::Trade(t) => {
            if t.symbol.eq_ignore_ascii_case(&shared.symbol) {
                bump(&c.trades);
                shared.trades.lock().push(t.to_trade());
            }
            MessageAction::Continue
        }
        StreamEvent::BookTicker(_) | StreamEvent::Other => MessageAction::Continue,
    }
}

/// Loads a REST depth snapshot into the shared book (which replays the
/// buffered events by the book's rules) and counts the outcome. On success
/// the book's times become those of the last event received, and a load
/// after an earlier one (`synced_once`) counts as a resync. The live
/// connection and `quorum import` both go through here.
pub fn load_snapshot(
    shared: &ClientShared,
    snap: &DepthSnapshot,
    synced_once: &mut bool,
) -> Result<SyncReport, BookError> {
    let c = &shared.counters;
    bump(&c.snapshots_fetched);
    let result = {
        let mut live = shared.live.lock();
        let r = live.book.apply_snapshot(snap);
        if r.is_ok() {
            // Every buffered event is in the book now: its time is the last one received.
            live.last_event_ms = live.last_seen_ms;
            live.last_recv_ns = live.last_seen_recv_ns;
        }
        r
    };
    match &result {
        Ok(_) => {
            if *synced_once {
                bump(&c.resyncs);
            }
            *synced_once = true;
        }
        Err(BookError::SnapshotTooOld { .. }) => bump(&c.snapshots_too_old),
        Err(BookError::Gap { .. }) => bump(&c.gaps),
        Err(_) => bump(&c.rejected_books),
    }
    result
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The TLS config of both the WebSocket and the REST connections: ring's
/// provider, the public roots plus `extra_roots`.
fn tls_config(tuning: &ClientTuning) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let tls_err = |reason: String| ClientError::Http { url: "<TLS config>".into(), reason };
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for (i, cert) in tuning.extra_roots.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| tls_err(format!("extra_roots[{i}]: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn http_client(tuning: &ClientTuning, tls: Arc<rustls::ClientConfig>) -> Result<HttpClient, ClientError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(tuning.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// `Retry-After` in seconds (Binance sends whole seconds); 1 s when absent or unreadable.
fn retry_after(headers: &hyper::HeaderMap) -> Duration {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
}

/// GETs and parses the REST depth snapshot.
async fn fetch_snapshot(
    client: HttpClient,
    url: String,
    request_timeout: Duration,
) -> Result<ReceivedSnapshot, ClientError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ClientError::Url { url: url.clone(), reason: e.to_string() })?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, "quorum")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Url { url: url.clone(), reason: e.to_string() })?;
    let http_err = |reason: String| ClientError::Http { url: url.clone(), reason };
    let resp = timeout(request_timeout, client.request(req))
        .await
        .map_err(|_| http_err(format!("no response within {request_timeout:?}")))?
        .map_err(|e| http_err(e.to_string()))?;
    let status = resp.status().as_u16();
    if status == 429 || status == 418 {
        return Err(ClientError::RateLimited { url, status, retry_after: retry_after(resp.headers()) });
    }
    if refuses_for_good(status) {
        let body = timeout(request_timeout, Limited::new(resp.into_body(), 4096).collect()).await;
        let body = match body {
            Ok(Ok(b)) => body_excerpt(&b.to_bytes()),
            _ => String::new(),
        };
        return Err(ClientError::Refused { url, status, body });
    }
    if !resp.status().is_success() {
        return Err(ClientError::HttpStatus { url, status });
    }
    let body = timeout(request_timeout, Limited::new(resp.into_body(), MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| http_err(format!("body not complete within {request_timeout:?}")))?
        .map_err(|e| http_err(format!("reading the body: {e}")))?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|e| http_err(format!("body is not UTF-8: {e}")))?;
    Ok(ReceivedSnapshot { snapshot: parse_depth_snapshot(text)?, body: text.to_owned() })
}

/// A REST depth snapshot and the body it was read from (for the frame recorder).
struct ReceivedSnapshot {
    snapshot: DepthSnapshot,
    body: String,
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, initial · 2^attempt)]`,
/// at least 10 ms.
pub fn backoff_delay(tuning: &ClientTuning, attempt: u32, jitter: &mut u64) -> Duration {
    let cap = tuning.backoff_initial.saturating_mul(1u32 << attempt.min(20)).min(tuning.backoff_max);
    // SplitMix64 step for the jitter.
    *jitter = jitter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *jitter;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let frac = (z >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(frac).max(Duration::from_millis(10))
}

enum ActionKind {
    Resync,
    Other,
}

enum SessionEnd {
    Stopped,
    /// Reconnect at once (serverShutdown, connection age).
    Reconnect,
}

type SnapshotFuture = Pin<Box<dyn Future<Output = Result<ReceivedSnapshot, ClientError>> + Send>>;

struct Session<'a> {
    symbol: &'a str,
    endpoint: &'a Endpoint,
    tuning: &'a ClientTuning,
    tls: &'a Arc<rustls::ClientConfig>,
    shared: &'a ClientShared,
    http: &'a HttpClient,
    /// Whether any sync happened before (so the next one counts as a resync).
    synced_once: &'a mut bool,
    /// Set once the session has synced (resets the backoff).
    healthy: bool,
}

impl Session<'_> {
    fn snapshot_future(&self, delay: Duration) -> SnapshotFuture {
        let client = self.http.clone();
        let url = self.endpoint.depth_url(self.symbol, self.tuning.snapshot_limit);
        let t = self.tuning.request_timeout;
        Box::pin(async move {
            if !delay.is_zero() {
                sleep(delay).await;
            }
            fetch_snapshot(client, url, t).await
        })
    }

    /// Clears the book (levels and buffer): no level survives a resync.
    fn clear_book(&self) {
        let mut live = self.shared.live.lock();
        live.book.clear();
    }

    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> Result<SessionEnd, ClientError> {
        let url = self.endpoint.stream_url(self.symbol);
        let tls = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let connect = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, Some(tls));
        let (mut ws, _) = tokio::select! {
            r = timeout(self.tuning.connect_timeout, connect) => r
                .map_err(|_| ClientError::ConnectTimeout { url: url.clone(), timeout: self.tuning.connect_timeout })?
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) if refuses_for_good(resp.status().as_u16()) => {
                        ClientError::Refused {
                            url: url.clone(),
                            status: resp.status().as_u16(),
                            body: body_excerpt(resp.body().as_deref().unwrap_or_default()),
                        }
                    }
                    e => ClientError::Connect { url: url.clone(), reason: e.to_string() },
                })?,
            _ = stop.changed() => return Ok(SessionEnd::Stopped),
        };
        self.clear_book();
        let connected_at = Instant::now();
        let mut last_data = Instant::now();
        let mut pending: Option<SnapshotFuture> = None;
        let mut failed_syncs = 0u32;
        loop {
            if *stop.borrow() {
                return Ok(SessionEnd::Stopped);
            }
            if connected_at.elapsed() >= self.tuning.max_connection_age {
                return Ok(SessionEnd::Reconnect);
            }
            let deadline = last_data + self.tuning.stale_after;
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(SessionEnd::Stopped),
                snap = async { match pending.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    pending = None;
                    match snap {
                        Ok(ReceivedSnapshot { snapshot: snap, body }) => {
                            if let Some(recorder) = self.shared.recorder.lock().as_ref() {
                                recorder.record(now_ns(), &body);
                            }
                            match load_snapshot(self.shared, &snap, self.synced_once) {
                                Ok(_) => {
                                    self.healthy = true;
                                    failed_syncs = 0;
                                }
                                Err(e) => {
                                    failed_syncs += 1;
                                    if failed_syncs >= self.tuning.max_sync_attempts {
                                        return Err(ClientError::SyncFailed { attempts: failed_syncs, last: e.to_string() });
                                    }
                                    tracing::warn!(symbol = %self.symbol, error = %e, "snapshot not usable; fetching a newer one");
                                    pending = Some(self.snapshot_future(Duration::from_millis(50 * u64::from(failed_syncs))));
                                }
                            }
                        }
                        Err(ClientError::RateLimited { url, status, retry_after }) => {
                            bump(&self.shared.counters.rate_limited);
                            tracing::warn!(symbol = %self.symbol, %url, %status, ?retry_after, "REST rate limited; waiting as Retry-After says");
                            pending = Some(self.snapshot_future(retry_after));
                        }
                        Err(e) => return Err(e),
                    }
                }
                msg = tokio::time::timeout_at(deadline, ws.next()) => {
                    let msg = match msg {
                        Err(_) => {
                            bump(&self.shared.counters.stale_timeouts);
                            return Err(ClientError::Stale(self.tuning.stale_after));
                        }
                        Ok(None) => return Err(ClientError::Closed),
                        Ok(Some(Err(e))) => return Err(ClientError::Stream(e.to_string())),
                        Ok(Some(Ok(m))) => m,
                    };
                    let action = match msg {
                        Message::Text(t) => {
                            last_data = Instant::now();
                            handle_text(self.shared, t.as_str(), now_ns())
                        }
                        Message::Binary(_) => {
                            last_data = Instant::now();
                            bump(&self.shared.counters.parse_errors);
                            MessageAction::Resync("unexpected binary message".into())
                        }
                        Message::Close(_) => return Err(ClientError::Closed),
                        // Pings are answered by tungstenite; they do not feed the watchdog.
                        _ => MessageAction::Continue,
                    };
                    let action_kind = match action {
                        MessageAction::Resync(_) => ActionKind::Resync,
                        _ => ActionKind::Other,
                    };
                    match action {
                        MessageAction::Continue => {}
                        MessageAction::NeedSnapshot => {
                            if pending.is_none() {
                                pending = Some(self.snapshot_future(Duration::ZERO));
                            }
                        }
                        MessageAction::Resync(reason) | MessageAction::Gap(reason) => {
                            tracing::warn!(symbol = %self.symbol, "resync: {reason}");
                            // A gap already discarded the levels and kept the event
                            // for the next snapshot; anything else clears all.
                            if matches!(action_kind, ActionKind::Resync) {
                                self.clear_book();
                            }
                            if pending.is_none() {
                                pending = Some(self.snapshot_future(Duration::ZERO));
                            }
                        }
                        MessageAction::ServerShutdown => {
                            tracing::info!(symbol = %self.symbol, "serverShutdown: reconnecting now");
                            let _ = ws.close(None).await;
                            return Ok(SessionEnd::Reconnect);
                        }
                    }
                }
            }
        }
    }
}

/// Runs the client until `stop` turns true: connects, syncs, reconnects.
/// The book in `shared` is cleared at every (re)connection.
pub async fn run_client(
    endpoint: Endpoint,
    tuning: ClientTuning,
    shared: Arc<ClientShared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    install_crypto_provider();
    let tls = tls_config(&tuning)?;
    let http = http_client(&tuning, tls.clone())?;
    let symbol = shared.symbol.clone();
    let mut synced_once = false;
    let mut attempt = 0u32;
    let mut jitter = now_ns() as u64 ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut first = true;
    loop {
        if *stop.borrow() {
            break;
        }
        if !first {
            bump(&shared.counters.reconnects);
        }
        first = false;
        let mut session = Session {
            symbol: &symbol,
            endpoint: &endpoint,
            tuning: &tuning,
            shared: &shared,
            http: &http,
            tls: &tls,
            synced_once: &mut synced_once,
            healthy: false,
        };
        let result = session.run(&mut stop).await;
        let healthy = session.healthy;
        // Whatever ended the connection, its book is no longer maintained.
        shared.live.lock().book.clear();
        match result {
            Ok(SessionEnd::Stopped) => break,
            Ok(SessionEnd::Reconnect) => {
                attempt = 0;
                continue;
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(%symbol, error = %e, "stopping");
                return Err(e);
            }
            Err(e) => {
                if matches!(e, ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }) {
                    bump(&shared.counters.connect_failures);
                }
                if healthy {
                    attempt = 0;
                }
                let delay = backoff_delay(&tuning, attempt, &mut jitter);
                attempt = attempt.saturating_add(1);
                tracing::warn!(%symbol, error = %e, ?delay, "reconnecting");
                tokio::select! {
                    _ = sleep(delay) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_binance_conventions() {
        let ep = Endpoint::default();
        assert_eq!(
            ep.stream_url("BTCUSDT"),
            "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade"
        );
        assert_eq!(ep.depth_url("btcusdt", 1000), "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000");
        let local = Endpoint::new("ws://127.0.0.1:9000/", "http://127.0.0.1:9000/");
        assert_eq!(
            local.stream_url("SIMUSDT"),
            "ws://127.0.0.1:9000/stream?streams=simusdt@depth@100ms/simusdt@aggTrade"
        );
        assert_eq!(local.depth_url("SIMUSDT", 5), "http://127.0.0.1:9000/api/v3/depth?symbol=SIMUSDT&limit=5");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let t = ClientTuning {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..ClientTuning::default()
        };
        let mut j = 7;
        let mut distinct = std::collections::BTreeSet::new();
        for attempt in 0..40 {
            let d = backoff_delay(&t, attempt, &mut j);
            let cap = Duration::from_millis(100).saturating_mul(1 << attempt.min(20)).min(t.backoff_max);
            assert!(d <= cap.max(Duration::from_millis(10)), "attempt {attempt}: {d:?} > {cap:?}");
            distinct.insert(d);
        }
        assert!(distinct.len() > 20, "jitter varies the delay");
    }

    #[test]
    fn server_shutdown_is_recognised_in_any_wrapping() {
        assert!(is_server_shutdown(r#"{"e":"serverShutdown","E":1}"#));
        assert!(is_server_shutdown(r#"{"stream":"x","data":{"e":"serverShutdown","E":1}}"#));
        assert!(is_server_shutdown(r#"{"event":{"e":"serverShutdown","E":1}}"#));
        assert!(!is_server_shutdown(r#"{"e":"serverShutdown""#));
        assert!(!is_server_shutdown(r#"{"stream":"serverShutdown","data":{"e":"aggTrade"}}"#));
    }

    #[test]
    fn retry_after_defaults_to_one_second() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        h.insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }
}
