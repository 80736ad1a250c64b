//! The request gate against web pages (docs/security.md, "HTTP"): a page the
//! operator visits can send requests to loopback, so before a request reaches
//! an endpoint:
//! - **Origin**: a request that carries an `Origin` header (every cross-origin
//!   `fetch`, every form POST) is refused unless that origin was allowed
//!   (`--allow-origin`); allowed origins get the CORS headers and preflights;
//! - **Host**: the `Host` (or the absolute URI's authority) must be a name the
//!   server was bound as: the bound address, loopback names when bound to
//!   loopback, the address the client connected to, or a name given with
//!   `--allow-host`. This refuses DNS rebinding (a page whose own name now
//!   resolves to 127.0.0.1), reads included. The health probes are exempt:
//!   load balancers probe by address and they reveal nothing;
//! - **Content-Type**: a POST body must be declared `application/json` (the
//!   predict endpoint also takes `application/octet-stream`): the types a page
//!   can send without a preflight (`text/plain`, forms) are refused.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};

use super::error::ApiError;

/// What a connection's requests are checked against.
#[derive(Clone, Copy, Debug)]
pub struct ConnCtx {
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's address the client connected to (the bound one, or the
    /// interface's when bound to 0.0.0.0 / ::).
    pub local: SocketAddr,
    /// Taken over the connection caps: only the health probes are served.
    pub reserve: bool,
}

/// The `Host` names a server answers to.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    bound: SocketAddr,
    /// `--allow-host` entries: a lowercase name, and the port it must come with (any when `None`).
    extra: Vec<(String, Option<u16>)>,
}

/// A `--allow-host` entry, `name` or `name:port` (`[v6]:port`), checked and lowercased.
pub fn parse_allowed_host(entry: &str) -> Result<(String, Option<u16>), String> {
    let (name, port) = split_host(entry).ok_or_else(|| {
        format!("{entry:?} is not a host name, NAME or NAME:PORT (letters, digits, '-', '.'; [IPv6] in brackets)")
    })?;
    Ok((name, port))
}

/// `Host` split into a lowercase name (an IPv6 literal keeps its brackets)
/// and an optional port; `None` when it is not a well-formed host.
fn split_host(h: &str) -> Option<(String, Option<u16>)> {
    let parse_port = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        (format!("[{}]", ip.to_ascii_lowercase()), port)
    } else {
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(parse_port(p)?)),
            None => (h, None),
        };
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
        if name.is_empty() || name.len() > 253 || !name.bytes().all(ok) {
            return None;
        }
        (name.to_ascii_lowercase(), port)
    };
    Some((name, port))
}

/// The IP address a host name spells, if it is a literal.
fn literal(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse().ok(),
        None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

impl HostPolicy {
    /// `bound` is the address actually bound (its port resolved); `allow`
    /// the `--allow-host` entries (already checked by the config).
    pub fn new(bound: SocketAddr, allow: &[String]) -> HostPolicy {
        let extra = allow.iter().filter_map(|e| parse_allowed_host(e).ok()).collect();
        HostPolicy { bound, extra }
    }

    fn loopback_or_any(&self) -> bool {
        self.bound.ip().is_loopback() || self.bound.ip().is_unspecified()
    }

    /// Whether `host` (a `Host` header or a URI authority) names this server
    /// for a client connected to `local`.
    pub fn accepts(&self, host: &str, local: SocketAddr) -> bool {
        let Some((name, port)) = split_host(host) else { return false };
        if self.extra.iter().any(|(n, p)| *n == name && (p.is_none() || *p == port)) {
            return true;
        }
        // Without a port, HTTP means 80.
        if port.unwrap_or(80) != self.bound.port() {
            return false;
        }
        match literal(&name) {
            Some(ip) => {
                ip == self.bound.ip() || ip == local.ip() || (ip.is_loopback() && self.bound.ip().is_loopback())
            }
            None => name == "localhost" && self.loopback_or_any(),
        }
    }

    /// The names accepted, for the error message.
    fn describe(&self, local: SocketAddr) -> String {
        let port = self.bound.port();
        let mut names: Vec<String> = Vec::new();
        if self.loopback_or_any() {
            names.push(format!("localhost:{port}"));
        }
        for ip in [self.bound.ip(), local.ip()] {
            if !ip.is_unspecified() {
                let s = SocketAddr::new(ip, port).to_string();
                if !names.contains(&s) {
                    names.push(s);
                }
            }
        }
        names.extend(self.extra.iter().map(|(n, p)| p.map_or_else(|| n.clone(), |p| format!("{n}:{p}"))));
        names.join(", ")
    }

    /// Checks a request's `Host` (and its URI's authority, when it is in absolute form).
    pub fn check<B>(&self, req: &Request<B>, local: SocketAddr) -> Result<(), ApiError> {
        let refuse = |given: &str| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host {given:?} is not a name this server was bound as (accepted: {}); a name in front of it \
                     (a proxy, a DNS name) must be given with --allow-host",
                    self.describe(local)
                ),
            )
            .with_field("Host")
        };
        if let Some(authority) = req.uri().authority() {
            if !self.accepts(authority.as_str(), local) {
                return Err(refuse(authority.as_str()));
            }
        }
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h,
            (None, _) if req.uri().authority().is_some() => return Ok(()),
            (None, _) => {
                return Err(ApiError::bad(
                    "missing_header",
                    "Host",
                    format!("the request has no Host header: send Host: {}", self.describe(local)),
                ))
            }
            (Some(_), Some(_)) => return Err(ApiError::bad("invalid_header", "Host", "more than one Host header")),
        };
        let text = host.to_str().map_err(|_| refuse("<not ASCII>"))?;
        if self.accepts(text, local) {
            Ok(())
        } else {
            Err(refuse(text))
        }
    }
}

/// `--allow-origin` entries, as browsers send them: `scheme://host[:port]`.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

/// A `--allow-origin` entry checked and normalized (lowercase, no trailing `/`).
pub fn parse_allowed_origin(entry: &str) -> Result<String, String> {
    let e = entry.trim_end_matches('/').to_ascii_lowercase();
    let host = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
    match host {
        Some(h) if split_host(h).is_some() => Ok(e),
        _ => Err(format!(
            "{entry:?} is not an origin: scheme://host[:port], e.g. http://localhost:3000 (no path, no wildcard)"
        )),
    }
}

impl OriginPolicy {
    pub fn new(allow: &[String]) -> OriginPolicy {
        OriginPolicy { allowed: allow.iter().filter_map(|e| parse_allowed_origin(e).ok()).collect() }
    }

    /// `Ok(None)` without an `Origin`; `Ok(Some(origin))` for an allowed one
    /// (to echo in `Access-Control-Allow-Origin`); an error for any other.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
        let mut all = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = all.next() else { return Ok(None) };
        let text = origin.to_str().unwrap_or("<not ASCII>");
        let allowed =
            all.next().is_none() && self.allowed.iter().any(|a| a.eq_ignore_ascii_case(text.trim_end_matches('/')));
        if allowed {
            return Ok(Some(origin.clone()));
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "cross-origin requests are refused (Origin {text:?}): a web page must not drive this server; \
                 to let a page you trust call it, start the server with --allow-origin {}",
                if text.starts_with("http") { text } else { "<scheme://host:port>" }
            ),
        )
        .with_field("Origin"))
    }
}

/// How a POST body is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// `application/octet-stream`: the predict endpoint's little-endian f32 body.
    Binary,
}

/// The declared body type of a POST: `application/json` (any parameters,
/// any case), or `application/octet-stream` where `binary_ok`; anything
/// else, or nothing, is 415.
pub fn body_kind(headers: &HeaderMap, binary_ok: bool) -> Result<BodyKind, ApiError> {
    let wanted = if binary_ok {
        "Content-Type: application/json (or application/octet-stream for the binary body)"
    } else {
        "Content-Type: application/json"
    };
    let refuse = |what: String| {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", format!("{what}: send {wanted}"))
            .with_field("Content-Type")
    };
    let mut all = headers.get_all(header::CONTENT_TYPE).iter();
    let ct = match (all.next(), all.next()) {
        (None, _) => return Err(refuse("the request has no Content-Type".into())),
        (Some(_), Some(_)) => return Err(refuse("more than one Content-Type".into())),
        (Some(ct), None) => ct,
    };
    let text = ct.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyKind::Json)
    } else if binary_ok && essence.eq_ignore_ascii_case("application/octet-stream") {
        Ok(BodyKind::Binary)
    } else {
        Err(refuse(format!("Content-Type {text:?} is not taken here")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_are_the_bound_names() {
        let p = HostPolicy::new(at("127.0.0.1:8000"), &["quorum.internal".into(), "proxy:443".into()]);
        let local = at("127.0.0.1:8000");
        for ok in ["127.0.0.1:8000", "localhost:8000", "LocalHost:8000", "[::1]:8000", "quorum.internal", "proxy:443"] {
            assert!(p.accepts(ok, local), "{ok}");
        }
        for bad in ["evil.example:8000", "127.0.0.1:8001", "localhost", "proxy:80", "", "a b:8000", "[::1", "x:99999"] {
            assert!(!p.accepts(bad, local), "{bad}");
        }
        // Bound to every interface: the address connected to, and loopback names.
        let any = HostPolicy::new(at("0.0.0.0:80"), &[]);
        assert!(any.accepts("10.1.2.3", at("10.1.2.3:80")));
        assert!(any.accepts("localhost", at("127.0.0.1:80")));
        assert!(!any.accepts("10.1.2.4:80", at("10.1.2.3:80")));
        assert!(!any.accepts("evil.example", at("10.1.2.3:80")));
        // A specific address: that one only.
        let lan = HostPolicy::new(at("10.0.0.5:8000"), &[]);
        assert!(lan.accepts("10.0.0.5:8000", at("10.0.0.5:8000")));
        assert!(!lan.accepts("localhost:8000", at("10.0.0.5:8000")));
        assert!(parse_allowed_host("bad host").is_err());
    }

    #[test]
    fn origins_and_content_types() {
        assert_eq!(parse_allowed_origin("HTTP://LocalHost:3000/").unwrap(), "http://localhost:3000");
        for bad in ["localhost:3000", "http://x/path", "*", "http://*"] {
            assert!(parse_allowed_origin(bad).is_err(), "{bad}");
        }
        let p = OriginPolicy::new(&["http://localhost:3000".into()]);
        let mut h = HeaderMap::new();
        assert!(p.check(&h).unwrap().is_none());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://localhost:3000"));
        assert!(p.check(&h).unwrap().is_some());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(p.check(&h).unwrap_err().status, StatusCode::FORBIDDEN);

        let mut h = HeaderMap::new();
        assert!(body_kind(&h, false).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/Json ; charset=utf-8"));
        assert_eq!(body_kind(&h, false).unwrap(), BodyKind::Json);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        assert!(body_kind(&h, false).is_err());
        assert_eq!(body_kind(&h, true).unwrap(), BodyKind::Binary);
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert_eq!(body_kind(&h, true).unwrap_err().field.as_deref(), Some("Content-Type"), "{bad}");
        }
    }
}
