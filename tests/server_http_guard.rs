//! The HTTP transport held against a hostile web page and a greedy or broken
//! client (issue 15, items 4, 5 and 7): POSTs need a JSON content type,
//! cross-origin requests and foreign `Host` names are refused, and JSON
//! errors name the repeated or misspelt key.
//!
//! Loopback only; every test opens tens of sockets at most and bounds every
//! wait with a timeout.

mod server_util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quorum::engine::Engine;
use quorum::ensemble::EnsembleConfig;
use quorum::server::{Extras, Server, ServerConfig};
use quorum::Cpu;
use serde_json::Value;
use server_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn loopback() -> ServerConfig {
    ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() }
}

fn bare_engine() -> Arc<Engine> {
    Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default()).unwrap())
}

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

// ---- item 7: every rejection carries the JSON error ---------------------------------------

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
