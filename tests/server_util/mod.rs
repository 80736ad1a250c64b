//! Helpers of the server tests (and the server bench): small models with the
//! real input shapes, weights files, and a plain HTTP/1.1 client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use quorum::ensemble::EnsembleConfig;
use quorum::model::{CnnLstmConfig, ModelConfig, ModelMeta, MpdConfig, TlobConfig};
use quorum::server::engine::{model_type, Engine};
use quorum::weights::{generated, WeightsFile};
use quorum::{Cpu, Tensor};

/// The three models, small inside but with the live feed's shapes:
/// features (60, 112), lob (100, 20, 4), aux 112.
pub fn small_configs() -> Vec<ModelConfig> {
    vec![
        ModelConfig::Mpd(MpdConfig { embed_dim: 32, num_layers: 1, num_heads: 2, ..MpdConfig::default() }),
        ModelConfig::Tlob(TlobConfig {
            spatial_channels: vec![8, 8],
            temporal_hidden: 16,
            num_temporal_layers: 1,
            num_heads: 2,
            ..TlobConfig::default()
        }),
        ModelConfig::CnnLstm(CnnLstmConfig {
            conv_channels: vec![16],
            lstm_hidden: 16,
            lstm_layers: 1,
            ..CnnLstmConfig::default()
        }),
    ]
}

/// Generated weights of `config`, every tensor times `scale` (so two scales
/// give two different models of the same kind).
pub fn weights(config: &ModelConfig, scale: f32) -> WeightsFile {
    let tensors: HashMap<String, Tensor> = generated::params(config)
        .into_iter()
        .map(|(k, mut t)| {
            t.data.iter_mut().for_each(|x| *x *= scale);
            (k, t)
        })
        .collect();
    WeightsFile { config: config.clone(), meta: ModelMeta::default(), tensors }
}

pub fn save_weights(path: &Path, file: &WeightsFile) {
    quorum::weights::save(path, &file.config, &file.meta, &file.tensors).unwrap();
}

/// An engine on the CPU with the three small models loaded.
pub fn engine_with(configs: &[ModelConfig], ensemble: EnsembleConfig) -> Arc<Engine> {
    let engine = Engine::new(Cpu::new(), ensemble).unwrap();
    for c in configs {
        engine.load_weights(model_type(c.kind()), weights(c, 1.0)).unwrap();
    }
    Arc::new(engine)
}

pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quorum-server-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A real HTTP/1.1 client (hyper's, keep-alive).
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    pub token: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `(code, field)` of an error answer.
    pub fn error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {v}");
        (e["code"].as_str().unwrap_or("").to_owned(), e["field"].as_str().map(str::to_owned))
    }
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
        conn.set_nodelay(true);
        Http { addr, client: Client::builder(TokioExecutor::new()).build(conn), token: None }
    }

    pub async fn send(&self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut req = hyper::Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self.client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer { status, content_type, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.send("POST", path, Some("application/json"), body.as_bytes().to_vec()).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.post(path, &body.to_string()).await
    }

    pub async fn post_binary(&self, path: &str, floats: &[f32]) -> Answer {
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        self.send("POST", path, Some("application/octet-stream"), bytes).await
    }
}

/// Deterministic inputs of the live shapes: features (60×112), lob (100×20×4), aux (112).
pub fn inputs(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let f = (0..60 * 112).map(|_| next()).collect();
    let l = (0..100 * 20 * 4).map(|_| next()).collect();
    let a = (0..112).map(|_| next()).collect();
    (f, l, a)
}

/// The JSON predict body of flat inputs.
pub fn inputs_json(f: &[f32], l: &[f32], a: &[f32]) -> serde_json::Value {
    let features: Vec<&[f32]> = f.chunks(112).collect();
    let lob: Vec<Vec<&[f32]>> = l.chunks(80).map(|t| t.chunks(4).collect()).collect();
    serde_json::json!({"features": features, "lob": lob, "aux": a})
}

/// A server config on a free loopback port, otherwise the defaults.
pub fn loopback() -> quorum::server::ServerConfig {
    quorum::server::ServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() }
}

/// An engine with no model loaded, on the CPU.
pub fn bare_engine() -> Arc<Engine> {
    Arc::new(Engine::new(Cpu::new(), EnsembleConfig::default()).unwrap())
}

/// Starts a server and a client of it.
pub async fn start(
    engine: Arc<Engine>,
    config: quorum::server::ServerConfig,
    extras: quorum::server::Extras,
) -> (quorum::server::Server, Http) {
    let server = quorum::server::Server::start(config, engine, extras).await.unwrap();
    let http = Http::new(server.local_addr());
    (server, http)
}
