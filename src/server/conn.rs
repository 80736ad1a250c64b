//! The connection layer under hyper (docs/security.md, "HTTP"):
//!
//! - [`Registry`]: who holds the connections. At most `max_connections`, and
//!   `max_connections_per_ip` per client address (an IPv6 client is its /64).
//!   A connection over either cap first closes the longest-idle connection
//!   (no request in progress) of that client, or of anyone for the global
//!   cap; if every one is busy it is taken into a small reserve
//!   (`health_reserve`) where only the health probes are served (the rest get
//!   a JSON 503), so health answers however the API is loaded; past that it
//!   is answered 503 and closed at once. The accept loop never waits.
//! - [`Gate`]: the socket as hyper sees it. It reads each request head itself
//!   before hyper does, bounded in size and time, and checks it as hyper
//!   would (httparse, method, URI, `Content-Length`, `Transfer-Encoding`), so
//!   that a malformed head is answered with the API's JSON error body instead
//!   of hyper's empty one, and a head not complete within `header_timeout`
//!   gets a JSON 408. Only checked heads reach hyper; bodies pass through,
//!   counted by their `Content-Length` to find the next head (after a chunked
//!   body the connection is closed after its answer instead).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use hyper::StatusCode;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use super::prometheus::Metrics;

/// What one connection shares with the registry and its requests.
pub(crate) struct ConnInfo {
    /// Requests of this connection being answered (their answer not yet all handed to hyper).
    busy: AtomicUsize,
    /// Since when no request has been in progress.
    idle_since: Mutex<Instant>,
    /// The gate's read waker, woken when the last request ends.
    waker: Mutex<Option<Waker>>,
    /// The registry wants this connection closed (it is idle and its place is needed).
    pub evict: Notify,
    /// The gate handed hyper an end of input (idle timeout, or an error answer to send).
    pub closing: Notify,
}

/// A request in progress; dropped when its answer is all handed to hyper.
pub(crate) struct BusyGuard(Arc<ConnInfo>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock() = Instant::now();
            if let Some(w) = self.0.waker.lock().take() {
                w.wake();
            }
        }
    }
}

impl ConnInfo {
    pub fn new() -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            waker: Mutex::new(None),
            evict: Notify::new(),
            closing: Notify::new(),
        })
    }

    pub fn begin(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// When it became idle; `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        (!self.is_busy()).then(|| *self.idle_since.lock())
    }
}

// ---- the registry ------------------------------------------------------------------------

/// A client for the per-client cap: an IPv4 address, or an IPv6 /64 (one
/// host commonly holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Serves the whole API.
    Normal,
    /// Over the caps: health probes only.
    Reserve,
}

struct Entry {
    client: ClientKey,
    info: Arc<ConnInfo>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    normal: HashMap<u64, Entry>,
    reserve: HashMap<u64, Entry>,
    per_client: HashMap<ClientKey, usize>,
}

pub(crate) struct Registry {
    table: Mutex<Table>,
    max: usize,
    per_client: usize,
    reserve: usize,
    metrics: Arc<Metrics>,
}

/// A place held by one connection; dropping it gives the place back.
pub(crate) struct Slot {
    registry: Arc<Registry>,
    id: u64,
    pub pool: Pool,
    pub info: Arc<ConnInfo>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.release(self.id, self.pool);
    }
}

impl Registry {
    pub fn new(max: usize, per_client: usize, reserve: usize, metrics: Arc<Metrics>) -> Arc<Registry> {
        Arc::new(Registry { table: Mutex::new(Table::default()), max, per_client, reserve, metrics })
    }

    /// A place for a new connection of `client`, making room by closing an
    /// idle connection where needed; `None` when there is none at all.
    pub fn admit(self: &Arc<Self>, client: ClientKey) -> Option<Slot> {
        let mut t = self.table.lock();
        let mine = t.per_client.get(&client).copied().unwrap_or(0);
        let normal = if mine >= self.per_client {
            self.evict(&mut t, Pool::Normal, Some(client))
        } else if t.normal.len() >= self.max {
            self.evict(&mut t, Pool::Normal, None)
        } else {
            true
        };
        let pool = if normal {
            Pool::Normal
        } else if t.reserve.len() < self.reserve || self.evict(&mut t, Pool::Reserve, None) {
            Pool::Reserve
        } else {
            return None;
        };
        let id = t.next_id;
        t.next_id += 1;
        let info = ConnInfo::new();
        let entry = Entry { client, info: info.clone() };
        match pool {
            Pool::Normal => {
                t.normal.insert(id, entry);
                *t.per_client.entry(client).or_default() += 1;
            }
            Pool::Reserve => {
                t.reserve.insert(id, entry);
                self.metrics.connections.reserve.inc();
            }
        }
        self.metrics.connections.open.set((t.normal.len() + t.reserve.len()) as i64);
        Some(Slot { registry: self.clone(), id, pool, info })
    }

    /// Closes the longest-idle connection of `pool` (of `client` only, when
    /// given) and frees its place at once; false when every one is busy.
    fn evict(&self, t: &mut Table, pool: Pool, client: Option<ClientKey>) -> bool {
        let map = match pool {
            Pool::Normal => &t.normal,
            Pool::Reserve => &t.reserve,
        };
        let victim = map
            .iter()
            .filter(|(_, e)| client.is_none_or(|c| e.client == c))
            .filter_map(|(id, e)| Some((e.info.idle_since()?, *id)))
            .min()
            .map(|(_, id)| id);
        let Some(id) = victim else { return false };
        let Some(entry) = Self::remove(t, id, pool) else { return false };
        entry.info.evict.notify_one();
        self.metrics.connections.evicted.inc();
        true
    }

    fn remove(t: &mut Table, id: u64, pool: Pool) -> Option<Entry> {
        let entry = match pool {
            Pool::Normal => t.normal.remove(&id)?,
            Pool::Reserve => t.reserve.remove(&id)?,
        };
        if pool == Pool::Normal {
            if let Some(n) = t.per_client.get_mut(&entry.client) {
                *n -= 1;
                if *n == 0 {
                    t.per_client.remove(&entry.client);
                }
            }
        }
        Some(entry)
    }

    fn release(&self, id: u64, pool: Pool) {
        let mut t = self.table.lock();
        Self::remove(&mut t, id, pool);
        self.metrics.connections.open.set((t.normal.len() + t.reserve.len()) as i64);
    }

    /// The answer to a connection refused outright, and its close: what the
    /// client already sent is read first, so closing does not reset the answer away.
    pub fn refuse(&self, stream: TcpStream) {
        self.metrics.connections.refused.inc();
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", self.full_message());
        let Ok(std) = stream.into_std() else { return };
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match io::Read::read(&mut &std, &mut sink) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        let _ = io::Write::write(&mut &std, &answer_bytes(&e));
        let _ = std.shutdown(std::net::Shutdown::Write);
    }

    fn full_message(&self) -> String {
        full_message(self.max, self.per_client)
    }
}

/// Why a connection over the caps is not served.
pub(crate) fn full_message(max: usize, per_client: usize) -> String {
    format!(
        "every connection is in use (at most {max} connections, {per_client} per client address): retry later, and \
         reuse a kept-alive connection rather than opening more"
    )
}

// ---- the gate ----------------------------------------------------------------------------

/// Limits on request heads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (or reading) a request head.
    Head,
    /// This many body bytes before the next head.
    Body(u64),
    /// Everything goes to hyper unchecked (after a chunked body or a CONNECT,
    /// whose answer closes the connection).
    Through,
}

/// An error answer written when hyper closes the connection.
struct Reply {
    bytes: Vec<u8>,
    written: usize,
    shut: bool,
    drained: usize,
    /// Bounds the writing and the lingering read.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The socket under hyper; see the module doc.
pub(crate) struct Gate {
    stream: TcpStream,
    /// Read from the socket, not yet handed to hyper.
    buf: Vec<u8>,
    /// How many leading bytes of `buf` hyper may have.
    approved: usize,
    phase: Phase,
    /// How much of a partial head in `buf` was already looked through for its end.
    scanned: usize,
    limits: HeadLimits,
    info: Arc<ConnInfo>,
    metrics: Arc<Metrics>,
    timer: Option<Pin<Box<Sleep>>>,
    /// An error answer decided, handed to hyper as an end of input once no request is in progress.
    failed: Option<Vec<u8>>,
    /// hyper has been given its end of input.
    eof: bool,
    reply: Option<Reply>,
}

const READ_CHUNK: usize = 16 << 10;
/// After an error answer: how long, and how much, the rest of what the client sends is read and dropped.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

impl Gate {
    pub fn new(stream: TcpStream, info: Arc<ConnInfo>, limits: HeadLimits, metrics: Arc<Metrics>) -> Gate {
        Gate {
            stream,
            buf: Vec::new(),
            approved: 0,
            phase: Phase::Head,
            scanned: 0,
            limits,
            info,
            metrics,
            timer: None,
            failed: None,
            eof: false,
            reply: None,
        }
    }

    /// Reads at most `max` more bytes from the socket into `buf`.
    fn fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let mut tmp = [0u8; READ_CHUNK];
        let lim = max.clamp(1, READ_CHUNK);
        let mut rb = ReadBuf::new(&mut tmp[..lim]);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb))?;
        self.buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(rb.filled().len()))
    }

    fn fail(&mut self, e: &ApiError) {
        self.metrics.connections.head_rejected.inc();
        self.failed = Some(answer_bytes(e));
        self.buf.clear();
        self.approved = 0;
    }

    /// Hands hyper its end of input (once no request is in progress, so a
    /// pipelined request before this one still gets its answer).
    fn end_input(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.info.is_busy() {
            *self.info.waker.lock() = Some(cx.waker().clone());
            if self.info.is_busy() {
                return Poll::Pending;
            }
        }
        self.eof = true;
        if let Some(bytes) = self.failed.take() {
            self.reply = Some(Reply { bytes, written: 0, shut: false, drained: 0, deadline: None });
        }
        self.info.closing.notify_one();
        Poll::Ready(Ok(()))
    }

    /// Polls the head deadline: `idle_since + timeout`, running only while no request is in progress.
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(since) = self.info.idle_since() else {
            self.timer = None;
            *self.info.waker.lock() = Some(cx.waker().clone());
            return false;
        };
        let deadline = since + self.limits.timeout;
        match &mut self.timer {
            Some(t) if t.deadline() == deadline => {}
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    fn poll_read_gated(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            if self.failed.is_some() {
                return self.end_input(cx);
            }
            if self.approved > 0 {
                let n = self.approved.min(out.remaining());
                out.put_slice(&self.buf[..n]);
                self.buf.drain(..n);
                self.approved -= n;
                return Poll::Ready(Ok(()));
            }
            match self.phase {
                Phase::Through => {
                    if !self.buf.is_empty() {
                        self.approved = self.buf.len();
                        continue;
                    }
                    return Pin::new(&mut self.stream).poll_read(cx, out);
                }
                Phase::Body(0) => self.phase = Phase::Head,
                Phase::Body(rest) => {
                    if self.buf.is_empty() {
                        let want = usize::try_from(rest).unwrap_or(usize::MAX).min(out.remaining());
                        if ready!(self.fill(cx, want))? == 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    let n = usize::try_from(rest).unwrap_or(usize::MAX).min(self.buf.len());
                    self.approved = n;
                    self.phase = Phase::Body(rest - n as u64);
                }
                Phase::Head => match scan_head(&self.buf, &self.limits, self.scanned) {
                    Scan::Complete { len, next } => {
                        self.approved = len;
                        self.phase = next;
                        self.scanned = 0;
                        self.timer = None;
                    }
                    Scan::Invalid(e) => self.fail(&e),
                    Scan::Partial => {
                        self.scanned = self.buf.len();
                        let room = self.limits.max_bytes + 1 - self.buf.len();
                        match self.fill(cx, room) {
                            // The client went away: hyper sees the end of input (a partial head is dropped).
                            Poll::Ready(Ok(0)) => {
                                self.buf.clear();
                                return self.end_input(cx);
                            }
                            Poll::Ready(Ok(_)) => continue,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => {
                                if !self.head_timed_out(cx) {
                                    return Poll::Pending;
                                }
                                if self.buf.iter().any(|b| !matches!(b, b'\r' | b'\n')) {
                                    let e = ApiError::new(
                                        StatusCode::REQUEST_TIMEOUT,
                                        "header_timeout",
                                        format!("the request head did not arrive within {:?}", self.limits.timeout),
                                    )
                                    .with_field("headers");
                                    self.fail(&e);
                                } else {
                                    // Idle: closed without an answer, as nothing was asked.
                                    self.buf.clear();
                                    return self.end_input(cx);
                                }
                            }
                        }
                    }
                },
            }
        }
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(r) = self.reply.as_mut() else { return Poll::Ready(Ok(())) };
        let deadline = r.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        while r.written < r.bytes.len() {
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &r.bytes[r.written..])) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(())),
                Ok(n) => r.written += n,
            }
        }
        if !r.shut {
            let _ = ready!(Pin::new(&mut self.stream).poll_flush(cx));
            let _ = ready!(Pin::new(&mut self.stream).poll_shutdown(cx));
            r.shut = true;
        }
        // A lingering close: what the client still sends is read and dropped,
        // so that closing does not reset the connection before it read the answer.
        let mut sink = [0u8; READ_CHUNK];
        while r.drained < LINGER_BYTES {
            let mut rb = ReadBuf::new(&mut sink);
            match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb)) {
                Ok(()) if !rb.filled().is_empty() => r.drained += rb.filled().len(),
                _ => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Gate {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_gated(cx, out)
    }
}

impl AsyncWrite for Gate {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.reply.is_some() {
            return me.poll_reply(cx);
        }
        Pin::new(&mut me.stream).poll_shutdown(cx)
    }
}

/// A whole HTTP/1.1 answer carrying `e`'s JSON body, closing the connection.
pub(crate) fn answer_bytes(e: &ApiError) -> Vec<u8> {
    let body = e.to_json();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        e.status.as_u16(),
        e.status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

// ---- request heads -----------------------------------------------------------------------

enum Scan {
    Partial,
    Complete { len: usize, next: Phase },
    Invalid(ApiError),
}

fn too_large(limits: &HeadLimits, what: String) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!("{what} (at most {} bytes and {} header lines)", limits.max_bytes, limits.max_headers),
    )
    .with_field("headers")
}

/// Whether `buf` holds the end of a head (an empty line, as httparse reads
/// it) past its first `from` bytes, which were looked through already.
fn has_head_end(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(2).min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Checks the head at the start of `buf` as hyper's server would parse it,
/// and says how its body is framed. `scanned`: how much of `buf` was found
/// without the head's end before.
fn scan_head(buf: &[u8], limits: &HeadLimits, scanned: usize) -> Scan {
    if buf.is_empty() {
        return Scan::Partial;
    }
    let over = buf.len() > limits.max_bytes;
    // Parse only once an empty line is in: a head sent a byte at a time is not re-parsed per byte.
    if !over && !has_head_end(buf, scanned) {
        return Scan::Partial;
    }
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if over => {
            Scan::Invalid(too_large(limits, "the request head is too large".into()))
        }
        Ok(httparse::Status::Partial) => Scan::Partial,
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => {
            Scan::Invalid(too_large(limits, format!("the request head is {len} bytes")))
        }
        Ok(httparse::Status::Complete(len)) => match check_head(&req) {
            Ok(next) => Scan::Complete { len, next },
            Err(e) => Scan::Invalid(e),
        },
        Err(httparse::Error::TooManyHeaders) => {
            Scan::Invalid(too_large(limits, format!("the request has more than {} header lines", limits.max_headers)))
        }
        Err(httparse::Error::Token) if req.method.is_none() => Scan::Invalid(bad_method(buf)),
        Err(httparse::Error::Token) => {
            Scan::Invalid(bad_uri("the request target has a character not allowed in a URI"))
        }
        Err(httparse::Error::Version) => Scan::Invalid(bad_version()),
        Err(_) => Scan::Invalid(diagnose_headers(buf)),
    }
}

fn bad_method(buf: &[u8]) -> ApiError {
    let method: String =
        String::from_utf8_lossy(buf.split(|&b| b == b' ').next().unwrap_or(b"")).chars().take(32).collect();
    ApiError::bad("invalid_method", "method", format!("{method:?} is not an HTTP method: this API takes GET and POST"))
}

fn bad_uri(why: &str) -> ApiError {
    ApiError::bad("invalid_uri", "uri", format!("{why}: send a path such as /api/ensemble/status"))
}

fn bad_version() -> ApiError {
    ApiError::bad(
        "invalid_version",
        "version",
        "this server speaks HTTP/1.1 and HTTP/1.0 (not HTTP/2 or anything else) in the request line",
    )
}

fn bad_header(field: &str, why: String) -> ApiError {
    ApiError::bad("invalid_header", field, why)
}

/// Hyper's own checks of a parsed head, with the field at fault named;
/// the body's framing when it passes.
fn check_head(req: &httparse::Request<'_, '_>) -> Result<Phase, ApiError> {
    let method = req.method.unwrap_or("");
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|_| bad_method(method.as_bytes()))?;
    let path = req.path.unwrap_or("");
    hyper::Uri::try_from(path).map_err(|e| bad_uri(&format!("the request target {path:.64?} is not a URI ({e})")))?;
    let http11 = req.version == Some(1);
    let (mut content_length, mut chunked, mut te, mut hosts) = (None::<u64>, false, false, 0);
    for h in req.headers.iter() {
        hyper::header::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad_header("headers", format!("{:.64?} is not a header name", h.name)))?;
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(bad_header(
                    "Transfer-Encoding",
                    "an HTTP/1.0 request cannot have a Transfer-Encoding: send Content-Length".into(),
                ));
            }
            te = true;
            content_length = None;
            // As hyper: chunked must be the last coding of the last Transfer-Encoding line.
            chunked = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") && !te {
            let n = digits(h.value).filter(|&n| n <= u64::MAX - 2).ok_or_else(|| {
                bad_header(
                    "Content-Length",
                    format!(
                        "{:.32?} is not a length: send the body's size in bytes, digits only",
                        String::from_utf8_lossy(h.value)
                    ),
                )
            })?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(bad_header(
                    "Content-Length",
                    format!(
                        "two Content-Length headers that differ ({} and {n}): send one",
                        content_length.unwrap_or(0)
                    ),
                ));
            }
            content_length = Some(n);
        }
    }
    if te && !chunked {
        return Err(bad_header(
            "Transfer-Encoding",
            "only chunked is understood, as the last transfer coding: send Content-Length or chunked".into(),
        ));
    }
    if hosts > 1 {
        return Err(bad_header("Host", "more than one Host header".into()));
    }
    if te || method == hyper::Method::CONNECT {
        return Ok(Phase::Through);
    }
    Ok(Phase::Body(content_length.unwrap_or(0)))
}

/// A decimal length as hyper reads it: ASCII digits only, no sign, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(
        0u64,
        |n, &b| if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None },
    )
}

/// Which header line httparse refused, for the error's field.
fn diagnose_headers(buf: &[u8]) -> ApiError {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut lines = buf.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // Leading empty lines, then the request line.
    let _request_line = lines.by_ref().find(|l| !l.is_empty());
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return bad_header("headers", format!("header line {} has no ':'", i + 1));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| token(b)) {
            let shown: String = String::from_utf8_lossy(name).chars().take(64).collect();
            return bad_header(
                "headers",
                format!("{shown:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only, no spaces)"),
            );
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            let name = String::from_utf8_lossy(name).into_owned();
            return bad_header(&name, format!("the value of {name} has a control character"));
        }
    }
    bad_header(
        "headers",
        "the request head is malformed (line endings or characters): send CRLF-terminated lines".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits { max_bytes: 1024, max_headers: 8, timeout: Duration::from_secs(1) }
    }

    fn scan(s: &str) -> Result<(usize, Phase), (u16, &'static str, Option<String>)> {
        match scan_head(s.as_bytes(), &limits(), 0) {
            Scan::Complete { len, next } => Ok((len, next)),
            Scan::Partial => Err((0, "partial", None)),
            Scan::Invalid(e) => Err((e.status.as_u16(), e.code, e.field)),
        }
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan(get), Ok((get.len(), Phase::Body(0))));
        assert_eq!(scan(&format!("{get}GET")), Ok((get.len(), Phase::Body(0))));
        let post = "POST / HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(scan(post), Ok((post.len(), Phase::Body(12))));
        let chunked = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(scan(chunked).map(|x| x.1), Ok(Phase::Through));
        assert_eq!(scan("\r\nGET / HTTP/1.0\n\n").map(|x| x.1), Ok(Phase::Body(0)));
        assert_eq!(scan("GET / HTTP/1.1\r\nHost: a\r\n"), Err((0, "partial", None)));
    }

    #[test]
    fn bad_heads_name_what_is_wrong() {
        let f = |s: &str| scan(s).unwrap_err();
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").2.as_deref(),
            Some("Content-Length")
        );
        assert_eq!(f("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n").2.as_deref(), Some("Content-Length"));
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n").2.as_deref(),
            Some("Content-Length")
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").2.as_deref(),
            Some("Transfer-Encoding")
        );
        assert_eq!(f("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").2.as_deref(), Some("Transfer-Encoding"));
        assert_eq!(f("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").2.as_deref(), Some("Host"));
        assert_eq!(f("G(T / HTTP/1.1\r\n\r\n").1, "invalid_method");
        assert_eq!(f("GET /\x01 HTTP/1.1\r\n\r\n").1, "invalid_uri");
        assert_eq!(f("GET / HTTP/3\r\n\r\n").1, "invalid_version");
        assert_eq!(f("GET / HTTP/1.1\r\nA B: 1\r\n\r\n").2.as_deref(), Some("headers"));
        assert_eq!(f("GET / HTTP/1.1\r\nX-Y: a\x02\r\n\r\n").2.as_deref(), Some("X-Y"));
        let many: String = (0..9).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(f(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0, 431);
        assert_eq!(f(&format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000))).0, 431);
        assert_eq!(digits(b"007"), Some(7));
        assert_eq!(digits(b""), None);
    }

    #[test]
    fn clients_are_addresses_and_ipv6_slash_64s() {
        let a = ClientKey::of("2001:db8::1".parse().unwrap());
        assert_eq!(a, ClientKey::of("2001:db8::ffff:1".parse().unwrap()));
        assert_ne!(a, ClientKey::of("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(ClientKey::of("::ffff:10.0.0.1".parse().unwrap()), ClientKey::of("10.0.0.1".parse().unwrap()));
    }
}
