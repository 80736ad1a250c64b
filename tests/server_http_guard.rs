//! The HTTP transport held against a hostile web page and a greedy or broken
//! client (issue 15, items 4, 5 and 7): POSTs need a JSON content type,
//! cross-origin requests and foreign `Host` names are refused, one client
//! cannot starve the others or health, and every rejection (including the
//! ones made while parsing the request head) carries the JSON error body.
//!
//! Loopback only; every test opens tens of sockets at most and bounds every
//! wait with a timeout.

mod server_util;

use std::net::SocketAddr;
use std::time::Duration;

use quorum::server::{Extras, Server, ServerConfig};
use serde_json::Value;
use server_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(config: ServerConfig) -> (Server, Http) {
    let server = Server::start(config, bare_engine(), Extras::default()).await.unwrap();
    let http = Http::new(server.local_addr());
    (server, http)
}

/// One HTTP response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: not JSON: {self:?}"))
    }
    /// `(code, field)` of a JSON error answer, checked to carry a message.
    fn error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {self:?}");
        (e["code"].as_str().unwrap_or("").to_owned(), e["field"].as_str().map(str::to_owned))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads one response (head, then `Content-Length` bytes of body) within 5 s,
/// never past it (a pipelined next answer stays in the socket); `None` when
/// the server closed without answering.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Raw> {
    let read = async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.ok()?);
        }
        let head = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Some(Raw { status, head, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.unwrap_or(None)
}

/// Sends `request` on a fresh connection (writing while reading: the server
/// may answer and close before it has read everything) and reads the answer.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> Option<Raw> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let answer = read_response(&mut rd).await;
    drop(writer.await);
    answer
}

fn get(path: &str, host: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

fn post(addr: SocketAddr, path: &str, extra: &str, body: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

async fn strategy(http: &Http) -> Value {
    http.get("/api/ensemble/status").await.json()["strategy"].clone()
}

// ---- item 4: a web page must not drive the API ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_without_a_json_content_type_are_refused_and_change_nothing() {
    let (server, http) = start(loopback()).await;
    let addr = server.local_addr();
    let body = r#"{"strategy": "majority"}"#;
    // What a page can send without a preflight: text/plain, a form, multipart; and no type at all.
    for ct in ["Content-Type: text/plain\r\n", "Content-Type: application/x-www-form-urlencoded\r\n", ""] {
        let a = raw(addr, post(addr, "/api/ensemble/strategy", ct, body)).await.expect("an answer");
        assert_eq!(a.status, 415, "{ct:?}: {a:?}");
        assert_eq!(a.error(), ("unsupported_media_type".into(), Some("Content-Type".into())), "{ct:?}");
        assert!(a.json()["error"]["message"].as_str().unwrap().contains("application/json"), "{a:?}");
    }
    let multipart = "Content-Type: multipart/form-data; boundary=x\r\n";
    let a = raw(addr, post(addr, "/api/ensemble/strategy", multipart, body)).await.unwrap();
    assert_eq!(a.status, 415, "{a:?}");
    let text = "Content-Type: text/plain;charset=UTF-8\r\n";
    let preds = r#"{"predictions": []}"#;
    let a = raw(addr, post(addr, "/api/ensemble/predict", text, preds)).await.unwrap();
    assert_eq!((a.status, a.error().1.as_deref()), (415, Some("Content-Type")), "{a:?}");
    let a = raw(addr, post(addr, "/api/ensemble/training/stop", "", "")).await.unwrap();
    assert_eq!((a.status, a.error().1.as_deref()), (415, Some("Content-Type")), "{a:?}");
    assert_eq!(strategy(&http).await, "weighted_voting", "a refused POST changed the strategy");

    // JSON with parameters, in any case, is JSON.
    let ct = "Content-Type: Application/JSON; charset=utf-8\r\n";
    let a = raw(addr, post(addr, "/api/ensemble/strategy", ct, body)).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(strategy(&http).await, "majority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_requests_are_refused() {
    let (server, http) = start(loopback()).await;
    let addr = server.local_addr();
    let origin = "Origin: http://evil.example\r\nContent-Type: application/json\r\n";
    let a = raw(addr, post(addr, "/api/ensemble/strategy", origin, r#"{"strategy": "majority"}"#)).await.unwrap();
    assert_eq!((a.status, a.error()), (403, ("origin_not_allowed".into(), Some("Origin".into()))), "{a:?}");
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("--allow-origin"), "{a:?}");
    // Reads too: a page must not read the state either.
    let a = raw(addr, get("/api/ensemble/status", &addr.to_string(), "Origin: http://evil.example\r\n")).await;
    assert_eq!(a.as_ref().map(|a| a.status), Some(403), "{a:?}");
    // `null` (a sandboxed frame, a file:// page) is an origin like any other.
    let a = raw(addr, get("/api/ensemble/models", &addr.to_string(), "Origin: null\r\n")).await.unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(strategy(&http).await, "weighted_voting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_names_the_server_was_bound_as_are_accepted_as_host() {
    let (server, http) = start(loopback()).await;
    let addr = server.local_addr();
    let port = addr.port();
    for host in
        [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("LOCALHOST:{port}"), format!("[::1]:{port}")]
    {
        let a = raw(addr, get("/api/ensemble/status", &host, "")).await.unwrap();
        assert_eq!(a.status, 200, "{host}: {a:?}");
    }
    // DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
    for host in [format!("evil.example:{port}"), "evil.example".into(), format!("127.0.0.1:{}", port ^ 1)] {
        let a = raw(addr, get("/api/ensemble/status", &host, "")).await.unwrap();
        assert_eq!((a.status, a.error()), (403, ("host_not_allowed".into(), Some("Host".into()))), "{host}: {a:?}");
        assert!(a.json()["error"]["message"].as_str().unwrap().contains("--allow-host"), "{a:?}");
        let a = raw(addr, get("/metrics", &host, "")).await.unwrap();
        assert_eq!(a.status, 403, "{host}: {a:?}");
    }
    let rebound = format!("POST /api/ensemble/strategy HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n{{\"strategy\": \"majority\"}}");
    let a = raw(addr, rebound.into_bytes()).await.unwrap();
    assert_eq!(a.status, 403, "{a:?}");
    // HTTP/1.1 without Host is malformed.
    let a = raw(addr, b"GET /api/ensemble/status HTTP/1.1\r\n\r\n".to_vec()).await.unwrap();
    assert_eq!((a.status, a.error().1.as_deref()), (400, Some("Host")), "{a:?}");
    // Liveness answers whatever the name (load balancers probe by address).
    let a = raw(addr, get("/health/live", "evil.example", "")).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(strategy(&http).await, "weighted_voting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_and_hosts_are_served_with_cors() {
    let config = ServerConfig {
        allow_origins: vec!["http://localhost:3000".into()],
        allow_hosts: vec!["quorum.internal".into()],
        ..loopback()
    };
    let (server, http) = start(config).await;
    let addr = server.local_addr();
    let trusted = "Origin: http://localhost:3000\r\nContent-Type: application/json\r\n";
    let a = raw(addr, post(addr, "/api/ensemble/strategy", trusted, r#"{"strategy": "majority"}"#)).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("access-control-allow-origin").as_deref(), Some("http://localhost:3000"), "{a:?}");
    assert_eq!(a.header("vary").as_deref(), Some("Origin"), "{a:?}");
    assert_eq!(strategy(&http).await, "majority");
    // The browser's preflight of that POST.
    let preflight = "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n\
                     Access-Control-Request-Headers: content-type\r\n";
    let host = addr.to_string();
    let a =
        raw(addr, format!("OPTIONS /api/ensemble/strategy HTTP/1.1\r\nHost: {host}\r\n{preflight}\r\n").into_bytes())
            .await
            .unwrap();
    assert_eq!(a.status, 204, "{a:?}");
    assert!(a.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{a:?}");
    assert!(a.header("access-control-allow-headers").is_some_and(|h| h.contains("Content-Type")), "{a:?}");
    let evil = "Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n";
    let a = raw(addr, format!("OPTIONS /api/ensemble/strategy HTTP/1.1\r\nHost: {host}\r\n{evil}\r\n").into_bytes())
        .await
        .unwrap();
    assert_eq!((a.status, a.error().1.as_deref()), (403, Some("Origin")), "{a:?}");
    // A name given with allow_hosts, with any port; others still refused.
    for (h, want) in [("quorum.internal", 200), ("Quorum.Internal:8443", 200), ("other.internal", 403)] {
        let a = raw(addr, get("/api/ensemble/status", h, "")).await.unwrap();
        assert_eq!(a.status, want, "{h}: {a:?}");
    }
    // Malformed entries are refused when the server starts, naming the flag.
    for (origins, hosts) in [(vec!["localhost:3000"], vec![]), (vec!["http://x/path"], vec![]), (vec![], vec!["a b"])] {
        let config = ServerConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..loopback()
        };
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("allow_origin") || e.contains("allow_host"), "{e}");
    }
}

// ---- item 5: one client must not starve the others or health ------------------------------

/// Opens `n` connections that each finish one request and then sit idle (keep-alive).
async fn idle_keep_alive(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&get("/health/live", &addr.to_string(), "")).await.unwrap();
        let a = read_response(&mut s).await;
        assert_eq!(a.map(|a| a.status), Some(200));
        out.push(s);
    }
    out
}

/// A GET on a new connection, answered within 2 s (a liveness bound, not a timing).
async fn probe(addr: SocketAddr, path: &str) -> Option<Raw> {
    tokio::time::timeout(Duration::from_secs(2), raw(addr, get(path, &addr.to_string(), ""))).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_idle_connections_fill_the_server() {
    // Idle sockets are not reaped by time during the test: only pressure may close them.
    let config = ServerConfig { max_connections: 8, header_timeout: Duration::from_secs(30), ..loopback() };
    let (server, _http) = start(config).await;
    let addr = server.local_addr();
    let _idle = idle_keep_alive(addr, 8).await;
    // And as many again that connect and never send a byte.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..3 {
        let a = probe(addr, "/health/live").await;
        assert_eq!(a.map(|a| a.status), Some(200), "health must answer while idle connections fill every place");
        let a = probe(addr, "/api/ensemble/status").await;
        assert_eq!(a.map(|a| a.status), Some(200), "an idle connection must make room for a new client");
    }
}

/// `n` connections that each send a POST's head and half its body, then stall:
/// each holds a request in progress until the body timeout.
async fn stalled_uploads(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"strategy\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        out.push(s);
    }
    // Let the server take them in (their heads read, their requests begun).
    tokio::time::sleep(Duration::from_millis(500)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_when_every_connection_is_busy_and_the_api_says_why() {
    let config = ServerConfig { max_connections: 4, body_timeout: Duration::from_secs(30), ..loopback() };
    let (server, _http) = start(config).await;
    let addr = server.local_addr();
    let _busy = stalled_uploads(addr, 4).await;
    for _ in 0..3 {
        let a = probe(addr, "/health/live").await;
        assert_eq!(a.map(|a| a.status), Some(200), "health must answer while every place is busy");
        let a = probe(addr, "/health/ready").await;
        assert_eq!(a.map(|a| a.status), Some(503), "ready answers too (no model loaded here)");
    }
    let a = probe(addr, "/api/ensemble/status").await.expect("an answer, not a hang");
    assert_eq!((a.status, a.error().0.as_str()), (503, "too_many_connections"), "{a:?}");
    assert_eq!(a.header("connection").as_deref(), Some("close"), "{a:?}");
}

/// A connection from another loopback address (127.0.0.2): another client.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_over_its_cap_closes_its_own_idle_connections_and_leaves_room_for_others() {
    let config = ServerConfig {
        max_connections: 64,
        max_connections_per_ip: 4,
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        ..loopback()
    };
    let (server, _http) = start(config).await;
    let addr = server.local_addr();
    // Idle connections over the client's cap: its own longest-idle one is closed to make room.
    let mut idle = idle_keep_alive(addr, 4).await;
    let a = probe(addr, "/api/ensemble/status").await;
    assert_eq!(a.map(|a| a.status), Some(200), "a fifth connection of the client is served");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle[0].read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "its longest-idle connection was closed: {closed:?}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Busy connections up to the cap: the client's next connection gets health only...
    let _busy = stalled_uploads(addr, 4).await;
    let a = probe(addr, "/api/ensemble/status").await.expect("an answer");
    assert_eq!((a.status, a.error().0.as_str()), (503, "too_many_connections"), "{a:?}");
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("4 per client address"), "{a:?}");
    assert_eq!(probe(addr, "/health/live").await.map(|a| a.status), Some(200));
    // ... while another client is served as usual.
    let mut other = connect_from("127.0.0.2", addr).await;
    other.write_all(&get("/api/ensemble/status", &addr.to_string(), "")).await.unwrap();
    assert_eq!(read_response(&mut other).await.map(|a| a.status), Some(200), "another client is not starved");
    let m = probe(addr, "/metrics").await;
    assert!(m.is_none() || m.as_ref().is_some_and(|m| m.status == 503), "the capped client gets no metrics either");
    other.write_all(&get("/metrics", &addr.to_string(), "")).await.unwrap();
    let metrics = read_response(&mut other).await.unwrap().body;
    let count = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(count("quorum_http_connections_evicted_total ") >= 1, "{metrics}");
    assert!(count("quorum_http_connections_reserve_total ") >= 2, "{metrics}");
    assert!(count("quorum_http_connections_open ") >= 5, "{metrics}");
}

// ---- item 7: every rejection carries the JSON error ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_made_while_parsing_the_head_carry_the_json_error() {
    let (server, http) = start(loopback()).await;
    let addr = server.local_addr();
    let big = "a".repeat(20 << 10);
    let many: String = (0..120).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let json_ct = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "two Content-Lengths that differ",
            post(addr, "/api/ensemble/strategy", &format!("{json_ct}Content-Length: 3\r\n"), "{}"),
            400,
            "invalid_header",
            "Content-Length",
        ),
        (
            "a Content-Length that is no number",
            format!("POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\n{json_ct}Content-Length: 2x\r\n\r\n{{}}")
                .into_bytes(),
            400,
            "invalid_header",
            "Content-Length",
        ),
        (
            "a negative Content-Length",
            format!("POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\n{json_ct}Content-Length: -1\r\n\r\n")
                .into_bytes(),
            400,
            "invalid_header",
            "Content-Length",
        ),
        (
            "a transfer coding other than chunked",
            format!("POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\n{json_ct}Transfer-Encoding: gzip\r\n\r\n")
                .into_bytes(),
            400,
            "invalid_header",
            "Transfer-Encoding",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /api/ensemble/strategy HTTP/1.0\r\nHost: {addr}\r\n{json_ct}Transfer-Encoding: chunked\r\n\r\n"
            )
            .into_bytes(),
            400,
            "invalid_header",
            "Transfer-Encoding",
        ),
        (
            "headers over the size limit",
            get("/health/live", &addr.to_string(), &format!("X-Big: {big}\r\n")),
            431,
            "headers_too_large",
            "headers",
        ),
        ("too many headers", get("/health/live", &addr.to_string(), &many), 431, "headers_too_large", "headers"),
        (
            "a header name with a space",
            get("/health/live", &addr.to_string(), "Bad Name: 1\r\n"),
            400,
            "invalid_header",
            "headers",
        ),
        (
            "a control character in a value",
            get("/health/live", &addr.to_string(), "X-Bad: a\x01b\r\n"),
            400,
            "invalid_header",
            "X-Bad",
        ),
        (
            "a control character in the target",
            get("/health/\x7flive", &addr.to_string(), ""),
            400,
            "invalid_uri",
            "uri",
        ),
        ("a target that is no URI", get("http://", &addr.to_string(), ""), 400, "invalid_uri", "uri"),
        (
            "a method that is no token",
            format!("G@T / HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
            400,
            "invalid_method",
            "method",
        ),
        ("HTTP/2 over HTTP/1", b"GET / HTTP/2.0\r\n\r\n".to_vec(), 400, "invalid_version", "version"),
    ];
    for (what, request, status, code, field) in cases {
        let a = raw(addr, request).await.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert_eq!(a.status, status, "{what}: {a:?}");
        assert!(a.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{what}: {a:?}");
        assert_eq!(a.error(), (code.to_owned(), Some(field.to_owned())), "{what}: {a:?}");
    }
    assert_eq!(http.get("/health/live").await.status, 200, "the server still serves");
    assert_eq!(strategy(&http).await, "weighted_voting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_not_sent_in_time_gets_408_with_the_json_error() {
    let config = ServerConfig { header_timeout: Duration::from_millis(300), ..loopback() };
    let (server, _http) = start(config).await;
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /api/ensemble/status HTTP/1.1\r\nHost: {addr}\r\nAcc").as_bytes()).await.unwrap();
    let a = read_response(&mut s).await.expect("a 408, not a silent close");
    assert_eq!((a.status, a.error()), (408, ("header_timeout".into(), Some("headers".into()))), "{a:?}");
    // The same after a first request on a kept-alive connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&get("/health/live", &addr.to_string(), "")).await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|a| a.status), Some(200));
    s.write_all(b"GET /health/live HTTP/1.1\r\n").await.unwrap();
    let a = read_response(&mut s).await.expect("a 408 on a kept-alive connection");
    assert_eq!(a.status, 408, "{a:?}");
    // A connection that never sends a byte is closed without an answer (nothing was asked).
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), quiet.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed, silently: {:?}", String::from_utf8_lossy(&buf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_name_the_duplicate_and_the_unknown_key() {
    let (_server, http) = start(loopback()).await;
    let pred = |extra: &str| {
        format!(
            r#"{{"predictions": [{{{extra}"direction": "up", "confidence": 0.7, "probabilities": [0.1, 0.2, 0.7], "expected_return": 0.001, "timestamp": 0}}]}}"#
        )
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "/api/ensemble/models/enable",
            r#"{"model_type": "tlob", "enabled": true, "enabled": false}"#.into(),
            "duplicate_field",
            "enabled",
        ),
        (
            "/api/ensemble/strategy",
            r#"{"strategy": "majority", "strategy": "adaptive"}"#.into(),
            "duplicate_field",
            "strategy",
        ),
        (
            "/api/ensemble/predict",
            pred(r#""model_type": "tlob", "confidence": 0.9, "#),
            "duplicate_field",
            "predictions[0].confidence",
        ),
        // A misspelt key is named, not the key it was meant to be.
        ("/api/ensemble/predict", pred(r#""model_typ": "tlob", "#), "unknown_field", "predictions[0].model_typ"),
        ("/api/ensemble/models/enable", r#"{"model_type": "tlob", "enabld": true}"#.into(), "unknown_field", "enabld"),
        (
            "/api/ensemble/training/start",
            r#"{"architecture": "tlob", "symbl": "BTCUSDT"}"#.into(),
            "unknown_field",
            "symbl",
        ),
        (
            "/api/ensemble/training/start",
            r#"{"architecture": "tlob", "symbol": "BTCUSDT", "epochs": 1, "epochs": 2}"#.into(),
            "duplicate_field",
            "epochs",
        ),
    ];
    for (path, body, code, field) in &cases {
        let a = http.post(path, body).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.text());
        assert_eq!(a.error(), ((*code).to_owned(), Some((*field).to_owned())), "{path} {body}: {}", a.text());
    }
    assert_eq!(strategy(&http).await, "weighted_voting");
}

/// The head gate frames requests as hyper does: pipelined requests, bodies
/// in pieces, `Expect: 100-continue` and chunked bodies all work through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pass_the_head_gate_pipelined_in_pieces_and_chunked() {
    let (server, http) = start(loopback()).await;
    let addr = server.local_addr();
    let json = "Content-Type: application/json\r\n";
    // Two requests in one write, then a malformed third: answered in order.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut two = post(addr, "/api/ensemble/strategy", json, r#"{"strategy": "majority"}"#);
    two.extend(get("/api/ensemble/status", &addr.to_string(), ""));
    two.extend(format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\nContent-Length: x\r\n\r\n").into_bytes());
    s.write_all(&two).await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|a| a.status), Some(200));
    let status = read_response(&mut s).await.unwrap();
    assert_eq!(status.json()["strategy"], "majority", "{status:?}");
    let bad = read_response(&mut s).await.expect("the malformed third is answered too");
    assert_eq!((bad.status, bad.error().1.as_deref()), (400, Some("Content-Length")), "{bad:?}");

    // A head and a body sent a few bytes at a time.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = post(addr, "/api/ensemble/strategy", json, r#"{"strategy": "adaptive"}"#);
    for piece in request.chunks(7) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_response(&mut s).await.map(|a| a.status), Some(200));
    // Then a second request on the same connection.
    s.write_all(&get("/api/ensemble/status", &addr.to_string(), "")).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().json()["strategy"], "adaptive");

    // Expect: 100-continue (curl sends it for bodies over 1 kB).
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"strategy": "majority"}"#;
    let head = format!(
        "POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\n{json}Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut cont = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut cont)).await.unwrap().unwrap();
    assert!(cont.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"), "{:?}", String::from_utf8_lossy(&cont));
    s.write_all(body.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|a| a.status), Some(200));

    // A chunked body: served, and the connection closed after its answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunked = format!(
        "POST /api/ensemble/strategy HTTP/1.1\r\nHost: {addr}\r\n{json}Transfer-Encoding: chunked\r\n\r\n\
         a\r\n{{\"strategy\r\ne\r\n\": \"adaptive\"}}\r\n0\r\n\r\n"
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    let a = read_response(&mut s).await.unwrap();
    assert_eq!((a.status, a.header("connection").as_deref()), (200, Some("close")), "{a:?}");
    assert_eq!(strategy(&http).await, "adaptive");
}
