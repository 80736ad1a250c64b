//! The endpoints of docs/api.md, every one listed in `ROUTES` below and
//! documented there with its bodies and errors.
//!
//! Every handler validates its whole input before it changes anything, so an
//! error answer always means "nothing changed".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::codec::{decode_binary, flatten2, flatten3, from_json, from_json_object, from_value};
use super::error::ApiError;
use super::guard::{body_kind, BodyKind, ConnCtx};
use super::prometheus::{LiveFigures, SymbolFigures, TrainingFigures};
use super::training::StartError;
use super::AppState;
use crate::ensemble::{ConsensusStrategy, Direction, ModelPrediction, ModelStatus, ModelType};
use crate::fsutil;
use crate::market::{is_exchange_symbol, EXCHANGE_SYMBOL_RULE};
use crate::server::engine::{model_kind, EngineError, EngineInputs, ModelEntry};
use crate::server::live::{LiveEntry, LiveHub};
use crate::train::TrainingConfig;
use crate::weights::repository::{self, Repository, VersionInfo};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One endpoint: its path, method and label in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Status,
    Models,
    Enable,
    Weight,
    Load,
    Strategy,
    TrainStart,
    TrainStatus,
    TrainStop,
    Performance,
    Predict,
    Outcome,
    Layout,
    LiveLatest,
    LiveHistory,
    LiveStream,
    LiveStatus,
    HealthLive,
    HealthReady,
    Metrics,
    OpenApi,
}

/// Every served path. The health probes answer under KServe's open
/// inference protocol (v2) paths too, so a v2-speaking orchestrator needs no
/// custom probe config.
pub(super) static ROUTES: [(Route, Method, &str); 23] = [
    (Route::Status, Method::GET, "/api/ensemble/status"),
    (Route::Models, Method::GET, "/api/ensemble/models"),
    (Route::Enable, Method::POST, "/api/ensemble/models/enable"),
    (Route::Weight, Method::POST, "/api/ensemble/models/weight"),
    (Route::Load, Method::POST, "/api/ensemble/models/load"),
    (Route::Strategy, Method::POST, "/api/ensemble/strategy"),
    (Route::TrainStart, Method::POST, "/api/ensemble/training/start"),
    (Route::TrainStatus, Method::GET, "/api/ensemble/training/status"),
    (Route::TrainStop, Method::POST, "/api/ensemble/training/stop"),
    (Route::Performance, Method::POST, "/api/ensemble/performance/update"),
    (Route::Predict, Method::POST, "/api/ensemble/predict"),
    (Route::Outcome, Method::POST, "/api/ensemble/outcome"),
    (Route::Layout, Method::GET, "/api/ensemble/predict/layout"),
    (Route::LiveLatest, Method::GET, "/api/ensemble/live/latest"),
    (Route::LiveHistory, Method::GET, "/api/ensemble/live/history"),
    (Route::LiveStream, Method::GET, "/api/ensemble/live/stream"),
    (Route::LiveStatus, Method::GET, "/api/ensemble/live/status"),
    (Route::HealthLive, Method::GET, "/health/live"),
    (Route::HealthReady, Method::GET, "/health/ready"),
    (Route::HealthLive, Method::GET, "/v2/health/live"),
    (Route::HealthReady, Method::GET, "/v2/health/ready"),
    (Route::Metrics, Method::GET, "/metrics"),
    (Route::OpenApi, Method::GET, "/openapi.json"),
];

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Every request: gate, route, guard, answer, count.
pub async fn handle(state: Arc<AppState>, conn: ConnCtx, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = method_label(req.method());
    let found = ROUTES.iter().find(|(_, _, p)| *p == req.uri().path());
    let label = found.map_or("other", |(_, _, p)| *p);
    // The head gate does not follow a chunked body (nor a CONNECT): the connection ends with this answer.
    let close_after = req.method() == Method::CONNECT || req.headers().contains_key(header::TRANSFER_ENCODING);
    let origin = state.origins.check(req.headers());
    // A span per request: what the handlers log carries the method and route.
    let span = tracing::debug_span!("request", method, path = label);
    let resp = match gate(&state, &conn, found.map(|(r, _, _)| *r), &req, &origin) {
        Err(e) => Err(e),
        Ok(Some(preflight)) => Ok(preflight),
        Ok(None) => route(&state, found, req).instrument(span.clone()).await,
    };
    let mut resp = resp.unwrap_or_else(|e| error_response(&e));
    if let Ok(Some(o)) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    let closing = close_after
        || conn.reserve
        || matches!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT);
    if closing {
        // 413/408: the rest of that body is never read, so no bytes may be left
        // that belong to no request; a chunked body (or CONNECT), which the head
        // gate does not follow; a connection taken over the caps.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    state.metrics.request(label, method, resp.status().as_u16(), start.elapsed());
    tracing::debug!(parent: &span, status = resp.status().as_u16(), us = start.elapsed().as_micros() as u64, "answered");
    Ok(resp)
}

/// The request gate (guard.rs): a page's origin, a rebound `Host`, a
/// connection taken over the caps; answers an allowed origin's preflight.
fn gate(
    state: &AppState,
    conn: &ConnCtx,
    route: Option<Route>,
    req: &Request<Incoming>,
    origin: &Result<Option<HeaderValue>, ApiError>,
) -> Result<Option<Response<Body>>, ApiError> {
    let allowed_origin = origin.clone()?;
    let health = matches!(route, Some(Route::HealthLive | Route::HealthReady));
    if !health {
        state.hosts.check(req, conn.local)?;
        if conn.reserve {
            let c = &state.config;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                super::conn::full_message(c.max_connections, c.max_connections_per_ip),
            ));
        }
    }
    if req.method() == Method::OPTIONS && allowed_origin.is_some() && route.is_some() {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type, Authorization"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return Ok(Some(r));
    }
    Ok(None)
}

async fn route(
    state: &Arc<AppState>,
    found: Option<&'static (Route, Method, &'static str)>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match found {
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no endpoint {}", req.uri().path()))),
        Some((_, m, p)) if m != req.method() => {
            let mut r = error_response(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{p} takes {m}"),
            ));
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(m.as_str()));
            Ok(r)
        }
        Some((route, _, _)) => guarded(state, *route, req).await,
    }
}

/// Auth and the declared body type for POSTs, then a place among the
/// requests in flight (not for health, metrics and the event stream, which
/// must answer even under load).
async fn guarded(state: &Arc<AppState>, route: Route, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let mut kind = BodyKind::Json;
    if req.method() == Method::POST {
        check_token(state, &req)?;
        // Before the body is read: a page's text/plain or form POST is refused unread.
        kind = body_kind(req.headers(), route == Route::Predict)?;
    }
    match route {
        Route::HealthLive => return json(StatusCode::OK, &Liveness { status: "ok" }),
        Route::OpenApi => return Ok(json_text(StatusCode::OK, super::openapi::json().to_owned())),
        Route::HealthReady => return ready(state),
        Route::Metrics => return metrics(state),
        Route::LiveStream => return live_stream(state, req.uri().query()),
        _ => {}
    }
    // The body is read before taking a place, so a client that sends it
    // slowly holds no place that others wait for (only its own connection).
    let (parts, body, req) = if req.method() == Method::POST {
        let (parts, body) = read_body(state, req).await?;
        (Some(parts), body, None)
    } else {
        (None, Bytes::new(), Some(req))
    };
    let _permit = tokio::time::timeout(state.config.queue_timeout, state.in_flight.acquire())
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight"))?
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"))?;
    let query = req.as_ref().and_then(|r| r.uri().query());
    let e = &state.engine;
    match route {
        Route::Status => json(StatusCode::OK, &e.consensus().get_status()),
        Route::Models => json(
            StatusCode::OK,
            &ModelsBody { models: e.models(), backend: e.backend_name(), versions: repository_versions(state) },
        ),
        Route::Layout => json(StatusCode::OK, &layout_body(state)),
        Route::TrainStatus => json(StatusCode::OK, &state.training.status()),
        Route::LiveLatest => live_latest(state, query),
        Route::LiveHistory => live_history(state, query),
        Route::LiveStatus => json(StatusCode::OK, &live_hub_only(state, query)?.status()),
        post => match &parts {
            Some(_) => post_route(state, post, kind, body).await,
            None => {
                Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint takes POST"))
            }
        },
    }
}

async fn post_route(
    state: &Arc<AppState>,
    route: Route,
    kind: BodyKind,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let e = &state.engine;
    if route == Route::Predict {
        return predict(state, kind, body).await;
    }
    match route {
        Route::Enable => {
            let b: EnableBody = from_json(&body)?;
            e.consensus().set_enabled(b.model_type, b.enabled)?;
            json(StatusCode::OK, &e.entry(b.model_type))
        }
        Route::Weight => {
            let b: WeightBody = from_json(&body)?;
            e.consensus().update_weight(b.model_type, b.weight)?;
            json(StatusCode::OK, &e.entry(b.model_type))
        }
        Route::Strategy => {
            let b: StrategyBody = from_json(&body)?;
            e.consensus().set_strategy(b.strategy);
            json(StatusCode::OK, &e.consensus().get_status())
        }
        Route::Performance => {
            let b: PerformanceBody = from_json(&body)?;
            e.consensus().update_model_performance(b.model_type, b.accuracy, b.profit_factor)?;
            json(StatusCode::OK, &e.entry(b.model_type))
        }
        Route::Outcome => {
            let b: OutcomeBody = from_json(&body)?;
            e.consensus().record_outcome(b.result_id, b.realized_direction, b.realized_return)?;
            let status = e.consensus().get_status();
            json(StatusCode::OK, &OutcomeRecorded { result_id: b.result_id, recorded: true, models: status.models })
        }
        Route::Load => {
            let b: LoadBody = from_json(&body)?;
            let path = match (b.path, b.version) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad("invalid_value", "version", "give a path or a version, not both"))
                }
                (None, None) => {
                    return Err(ApiError::bad(
                        "missing_field",
                        "version",
                        "give a version of the model repository (or a path inside the weights folder)",
                    ))
                }
                (Some(p), None) if p.is_empty() => {
                    return Err(ApiError::bad("invalid_value", "path", "must not be empty"))
                }
                (Some(p), None) => p,
                (None, Some(v)) => repository_path(state, b.model_type, v)?,
            };
            load_model(state, b.model_type, path).await
        }
        Route::TrainStart => training_start(state, &body),
        Route::TrainStop => {
            let job = state.training.current().filter(|j| j.handle.snapshot().is_training).ok_or_else(|| {
                ApiError::new(StatusCode::CONFLICT, "no_training_running", "no training job is running")
            })?;
            job.handle.request_stop();
            let mut status = serde_json::to_value(state.training.status()).unwrap_or_default();
            status["stop_requested"] = true.into();
            json(StatusCode::ACCEPTED, &status)
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")),
    }
}

/// `GET /health/live`: the process answers.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Liveness {
    status: &'static str,
}

/// `GET /health/ready` (200 when ready, else 503 with the same body).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// At least one model loaded, and live mode (when on) warm.
    ready: bool,
    models_loaded: Vec<ModelType>,
    models_not_loaded: Vec<ModelType>,
    /// Every followed symbol warm; `null` when live mode is off.
    live_warm: Option<bool>,
    /// The followed symbols whose windows are still filling (empty once warm).
    live_not_warm: Vec<String>,
}

/// `GET /api/ensemble/models`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ModelsBody {
    models: Vec<ModelEntry>,
    /// The backend the models run on (`cpu`, `cuda`, `emu`).
    backend: &'static str,
    /// Each model's published versions in the server's repository; `{}` without one.
    versions: BTreeMap<ModelType, Vec<VersionInfo>>,
}

/// `POST /api/ensemble/outcome`: the outcome was scored; every model's status after it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OutcomeRecorded {
    result_id: u64,
    recorded: bool,
    models: BTreeMap<ModelType, ModelStatus>,
}

/// `GET /api/ensemble/predict/layout`: the shapes `predict` takes, and the
/// binary body's layout (features, then lob, then aux, little-endian f32).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct LayoutBody {
    /// `[T, F]` of MPD and CNN-LSTM; `null` when neither is loaded.
    features: Option<[usize; 2]>,
    /// `[T, L, 4]` of TLOB; `null` when it is not loaded.
    lob: Option<[usize; 3]>,
    /// TLOB's auxiliary vector length, when it has one.
    aux: Option<usize>,
    /// How TLOB's `lob` must be normalized (docs/data.md, "The TLOB input
    /// tensor"); `null` when it is not loaded.
    lob_normalization: Option<crate::model::LobNormalization>,
    binary_f32_counts: [usize; 3],
    binary_bytes: usize,
}

/// `POST /api/ensemble/training/start`: `TrainingConfig`'s fields (each
/// optional, defaults as documented) beside these two. The handler reads the
/// body itself (so a misspelt key is named as unknown before a missing
/// `symbol`); this type only describes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct TrainingStartBody {
    /// The data folder's symbol to train on, e.g. `BTCUSDT`.
    symbol: String,
    /// The model's own config (docs/models.md), e.g. a small model for a quick run.
    #[schema(value_type = Option<Object>)]
    model_config: Option<serde_json::Value>,
    #[serde(flatten)]
    config: TrainingConfig,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnableBody {
    model_type: ModelType,
    enabled: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WeightBody {
    model_type: ModelType,
    weight: f64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StrategyBody {
    strategy: ConsensusStrategy,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PerformanceBody {
    model_type: ModelType,
    accuracy: f64,
    profit_factor: f64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OutcomeBody {
    result_id: u64,
    realized_direction: Direction,
    realized_return: f64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoadBody {
    model_type: ModelType,
    /// A version of the model repository (the server's weights folder)…
    version: Option<u64>,
    /// …or a file inside the weights folder (or the training output).
    path: Option<String>,
}

/// The server's model repository: its weights folder, else the one its
/// training jobs publish into.
fn repository_root(state: &AppState) -> Option<PathBuf> {
    state.config.weights_dir.clone().or_else(|| state.launcher.as_ref()?.repository())
}

/// Every model's published versions in the server's repository (`{}` without
/// one); a model whose folder cannot be read is listed empty.
fn repository_versions(state: &AppState) -> BTreeMap<ModelType, Vec<VersionInfo>> {
    let Some(root) = repository_root(state) else { return BTreeMap::new() };
    let repo = Repository::new(root);
    ModelType::ALL.iter().map(|&m| (m, repo.list(model_kind(m)).unwrap_or_default())).collect()
}

/// The weights file of `version` of `model` in the server's repository, as a
/// path relative to it (then read under the same confinement as any path).
fn repository_path(state: &AppState, model: ModelType, version: u64) -> Result<String, ApiError> {
    let root = repository_root(state).ok_or_else(|| {
        ApiError::bad(
            "invalid_value",
            "version",
            "this server has no model repository: start it with --weights DIR (or --data DIR, whose repository is \
             DIR/weights)",
        )
    })?;
    let kind = model_kind(model);
    match Repository::new(root).resolve(kind, Some(version)) {
        Ok(_) => Ok(format!("{}/{version}/{}", kind.as_str(), repository::MODEL_FILE)),
        // The error names the repository's versions, never a path outside it.
        Err(crate::Error::Config { reason, .. }) => Err(ApiError::bad("invalid_value", "version", reason)),
        Err(e) => Err(ApiError::bad("invalid_value", "version", e.to_string())),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PredictBody {
    predictions: Option<Vec<ModelPrediction>>,
    features: Option<Vec<Vec<f32>>>,
    lob: Option<Vec<Vec<Vec<f32>>>>,
    aux: Option<Vec<f32>>,
}

/// Runs `f` on the blocking pool (inference, loading: CPU and disk work).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("worker failed: {e}")))
}

/// `POST /models/load`: only a regular file inside the weights folder (the
/// model repository, whose versions it names by number; or
/// the training jobs' output folder) is read, one load at a time, on the
/// blocking pool, answered within `load_timeout`. Every path that is refused
/// gets one answer, whatever lies at it, so a client learns nothing about
/// files outside those folders.
async fn load_model(state: &Arc<AppState>, model: ModelType, path: String) -> Result<Response<Body>, ApiError> {
    // The repository first: a version's path is relative to it.
    let roots: Vec<PathBuf> =
        repository_root(state).into_iter().chain(state.launcher.as_ref().and_then(|l| l.output_root())).collect();
    if roots.is_empty() {
        return Err(ApiError::bad(
            "invalid_weights",
            "path",
            "this server loads weights only from its weights folder, and it was started without one: \
             start it with --weights DIR and give a path inside DIR",
        ));
    }
    let timeout = state.config.load_timeout;
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "load_busy",
            format!("another load has been running for over {timeout:?}; try again later"),
        )
    };
    let permit = tokio::time::timeout(timeout, state.loads.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"))?;
    let engine = state.engine.clone();
    let max_bytes = state.config.max_weights_bytes;
    let task = tokio::task::spawn_blocking(move || {
        // Held until the load is over, even after the request timed out.
        let _permit = permit;
        let requested = Path::new(&path);
        let found = roots.iter().find_map(|root| fsutil::file_inside(root, requested).ok()).ok_or_else(|| {
            ApiError::bad(
                "invalid_weights",
                "path",
                format!(
                    "no regular file {:?} inside the weights folder (or the training output): give a path \
                     relative to the folder given to --weights, without `..`",
                    path
                ),
            )
        })?;
        engine.load_file_limited(model, &found, max_bytes).map_err(ApiError::from)
    });
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "load_timeout",
            format!("the load did not finish within {timeout:?}; it goes on, and takes effect if it succeeds"),
        )),
        Ok(Err(e)) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the load failed: {e}")))
        }
        Ok(Ok(entry)) => json(StatusCode::OK, &entry?),
    }
}

async fn predict(state: &Arc<AppState>, kind: BodyKind, body: Bytes) -> Result<Response<Body>, ApiError> {
    let t0 = Instant::now();
    let binary = kind == BodyKind::Binary;
    let engine = state.engine.clone();
    let mut decision = if binary {
        let layout = engine.input_layout();
        if layout.is_empty() {
            return Err(EngineError::NoModels.into());
        }
        let inputs = decode_binary(&body, &layout)?;
        let decode_us = t0.elapsed().as_secs_f64() * 1e6;
        let mut d = blocking(move || engine.predict(inputs)).await??;
        d.timings.decode_us = Some(decode_us);
        d
    } else {
        let b: PredictBody = from_json(&body)?;
        let has_inputs = b.features.is_some() || b.lob.is_some() || b.aux.is_some();
        match b.predictions {
            Some(_) if has_inputs => {
                return Err(ApiError::bad(
                    "invalid_input",
                    "predictions",
                    "give either predictions (consensus only) or features/lob/aux (run the models), not both",
                ))
            }
            Some(preds) => {
                let decode_us = t0.elapsed().as_secs_f64() * 1e6;
                let mut d = engine.predict_consensus(&preds).map_err(|e| name_prediction(e, &preds))?;
                d.timings.decode_us = Some(decode_us);
                d
            }
            None if !has_inputs => {
                return Err(ApiError::bad(
                    "missing_field",
                    "predictions",
                    "give predictions (consensus only) or features/lob/aux (run the models)",
                ))
            }
            None => {
                let layout = engine.input_layout();
                let inputs = EngineInputs {
                    features: b
                        .features
                        .map(|f| flatten2("features", f, layout.features.map(|[_, w]| w)))
                        .transpose()?,
                    lob: b.lob.map(|l| flatten3("lob", l, layout.lob.map(|[_, n, k]| [n, k]))).transpose()?,
                    aux: b.aux,
                };
                let decode_us = t0.elapsed().as_secs_f64() * 1e6;
                let mut d = blocking(move || engine.predict(inputs)).await??;
                d.timings.decode_us = Some(decode_us);
                d
            }
        }
    };
    decision.timings.total_us = t0.elapsed().as_secs_f64() * 1e6;
    state.metrics.decision(&decision);
    json(StatusCode::OK, &decision)
}

/// A consensus error about one model's prediction, with the field named as
/// `predictions[i].confidence`.
fn name_prediction(e: EngineError, preds: &[ModelPrediction]) -> ApiError {
    let model = match &e {
        EngineError::Ensemble(inner) => inner.model(),
        _ => None,
    };
    let mut api: ApiError = e.into();
    if let (Some(m), Some(field)) = (model, api.field.clone()) {
        if let Some(i) = preds.iter().position(|p| p.model_type == m) {
            api.field = Some(format!("predictions[{i}].{field}"));
        }
    }
    api
}

fn training_start(state: &Arc<AppState>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let mut obj = from_json_object(body)?;
    let symbol = obj.remove("symbol");
    // The model's own config (docs/models.md, a small model for a quick run), beside the TrainingConfig fields.
    let model = obj.remove("model_config");
    // The TrainingConfig fields first: a misspelt key (`symbl`) is named as unknown, not as a missing `symbol`.
    let mut config: TrainingConfig = from_value(serde_json::Value::Object(obj))?;
    let symbol = match symbol {
        None => return Err(ApiError::bad("missing_field", "symbol", "missing field `symbol`")),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => return Err(ApiError::bad("invalid_type", "symbol", format!("expected a string, got {other}"))),
    };
    if !is_exchange_symbol(&symbol) {
        return Err(ApiError::bad("invalid_value", "symbol", EXCHANGE_SYMBOL_RULE));
    }
    if let Some(m) = model {
        if !m.is_object() {
            return Err(ApiError::bad("invalid_type", "model_config", format!("expected an object, got {m}")));
        }
        config.model =
            Some(crate::model::ModelConfig::from_json(config.architecture, &m.to_string()).map_err(|e| match e {
                crate::Error::Config { field, reason } => {
                    // `cnn_lstm.lstm_hidden` → `model_config.lstm_hidden` (`cnn_lstm.config`: the JSON itself).
                    let inner = field.split_once('.').map(|(_, f)| f).filter(|f| *f != "config");
                    let api_field = inner.map_or_else(|| "model_config".to_owned(), |f| format!("model_config.{f}"));
                    ApiError::bad("invalid_value", api_field, format!("{field}: {reason}"))
                }
                other => ApiError::bad("invalid_value", "model_config", other.to_string()),
            })?);
    }
    config.validate().map_err(|e| match e {
        crate::Error::Config { field, reason } => ApiError::bad("invalid_value", field, reason),
        other => ApiError::bad("invalid_value", "body", other.to_string()),
    })?;
    check_memory_budget(state, &config)?;
    let launcher = state.launcher.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "training_unavailable", "this server was started without a trainer")
    })?;
    match state.training.start(launcher.as_ref(), config, symbol.to_ascii_uppercase()) {
        Ok(_) => json(StatusCode::ACCEPTED, &state.training.status()),
        Err(StartError::Running(job)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "training_running",
            format!("job {} ({}) is still training; stop it first", job.id, job.symbol),
        )),
        Err(StartError::Launch(e)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "training_rejected",
            message: e.message,
            field: e.field,
        }),
    }
}

/// Refuses a job whose estimated memory (`train::memory::estimate`) is over
/// the server's `training_memory_budget`, naming what to lower.
fn check_memory_budget(state: &AppState, config: &TrainingConfig) -> Result<(), ApiError> {
    let need = crate::train::memory::estimate(config);
    let budget = state.config.training_memory_budget;
    if need.total() <= budget {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    let field = if need.params_bytes > budget / 2 { "model_config" } else { "batch_size" };
    Err(ApiError::bad(
        "over_memory_budget",
        field,
        format!(
            "the job is estimated to need {} MiB ({} MiB for the parameters and optimizer state, {} MiB for the \
             activations of a batch of {}), over this server's training memory budget of {} MiB: lower batch_size \
             or the model's sizes, or start the server with a larger --training-memory-mb",
            mib(need.total()),
            mib(need.params_bytes),
            mib(need.activations_bytes),
            config.batch_size,
            mib(budget)
        ),
    ))
}

fn layout_body(state: &AppState) -> LayoutBody {
    let l = state.engine.input_layout();
    LayoutBody {
        features: l.features,
        lob: l.lob,
        aux: l.aux,
        lob_normalization: l.lob.map(|_| l.lob_normalization),
        binary_f32_counts: [l.features_len(), l.lob_len(), l.aux_len()],
        binary_bytes: 4 * l.total_len(),
    }
}

fn ready(state: &AppState) -> Result<Response<Body>, ApiError> {
    let loaded = state.engine.loaded_models();
    let not_loaded: Vec<ModelType> = ModelType::ALL.iter().copied().filter(|m| !loaded.contains(m)).collect();
    let live_not_warm: Vec<String> =
        state.live.iter().filter(|l| !l.is_warm()).map(|l| l.symbol().to_owned()).collect();
    let live_warm = (!state.live.is_empty()).then_some(live_not_warm.is_empty());
    let ready = !loaded.is_empty() && live_warm.unwrap_or(true);
    let body = Readiness { ready, models_loaded: loaded, models_not_loaded: not_loaded, live_warm, live_not_warm };
    json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
}

fn metrics(state: &AppState) -> Result<Response<Body>, ApiError> {
    let live = (!state.live.is_empty()).then(|| {
        // Each hub read once: its own series, and the totals from them.
        let counters: Vec<_> = state.live.iter().map(|l| (l, l.counters())).collect();
        let c: crate::server::live::LiveCounters = counters.iter().map(|(_, c)| *c).sum();
        LiveFigures {
            ticks: c.ticks,
            decisions: c.decisions,
            resyncs: c.resyncs,
            reconnects: c.reconnects,
            // Bounded by the symbols followed (at most MAX_LIVE_SYMBOLS), never by requests.
            per_symbol: counters
                .iter()
                .map(|(l, c)| SymbolFigures {
                    symbol: l.symbol().to_owned(),
                    decisions: c.decisions,
                    warm: l.is_warm(),
                })
                .collect(),
        }
    });
    let p = state.training.status().progress;
    let training = TrainingFigures {
        active: p.is_training,
        epoch: p.current_epoch,
        progress_percent: p.progress_percent,
        loss: p.current_loss,
    };
    let text = state.metrics.render(live, &training);
    let mut r = Response::new(full(text));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(super::prometheus::CONTENT_TYPE));
    Ok(r)
}

/// The hub of the symbol a live endpoint's `symbol` query names; with one
/// symbol served, the parameter may be left out. The other query
/// parameters are handed back as `(name, value)` for the endpoint to read.
fn live_hub<'s, 'q>(
    state: &'s AppState,
    query: Option<&'q str>,
) -> Result<(&'s Arc<LiveHub>, QueryPairs<'q>), ApiError> {
    let hubs = &state.live;
    if hubs.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "live_mode_off",
            "live mode is off (start with --simulate or --live SYMBOL[,SYMBOL...])",
        ));
    }
    let mut symbol = None;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("symbol", v)) => symbol = Some(v),
            Some((k, v)) => rest.push((k, v)),
            None => return Err(ApiError::bad("invalid_value", pair, "query parameters are name=value")),
        }
    }
    let served = || hubs.iter().map(|h| h.symbol()).collect::<Vec<_>>().join(", ");
    let hub = match (symbol, &hubs[..]) {
        (None, [one]) => one,
        (None, _) => {
            return Err(ApiError::bad(
                "missing_field",
                "symbol",
                format!("live mode follows {} symbols ({}): name one with ?symbol=", hubs.len(), served()),
            ));
        }
        (Some(name), _) => hubs.iter().find(|h| h.symbol().eq_ignore_ascii_case(name)).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_symbol",
                format!("live mode does not follow {name:?}; it follows {}", served()),
            )
        })?,
    };
    Ok((hub, rest))
}

/// A query's `name=value` pairs, in order.
type QueryPairs<'q> = Vec<(&'q str, &'q str)>;

/// [`live_hub`] for an endpoint that takes no other query parameter.
fn live_hub_only<'s>(state: &'s AppState, query: Option<&str>) -> Result<&'s Arc<LiveHub>, ApiError> {
    let (hub, rest) = live_hub(state, query)?;
    match rest.first() {
        Some((k, _)) => Err(ApiError::bad("unknown_field", *k, "the only query parameter is symbol")),
        None => Ok(hub),
    }
}

fn live_latest(state: &AppState, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let hub = live_hub_only(state, query)?;
    let entry = hub.latest().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "warming_up", "no live decision yet: the windows are filling")
    })?;
    Ok(json_text(StatusCode::OK, entry.json.to_string()))
}

fn live_history(state: &AppState, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let (hub, rest) = live_hub(state, query)?;
    let mut limit = 100usize;
    for (k, v) in rest {
        match k {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| ApiError::bad("invalid_value", "limit", "must be a positive integer"))?;
            }
            _ => return Err(ApiError::bad("unknown_field", k, "the query parameters are limit and symbol")),
        }
    }
    let entries = hub.history(limit);
    let mut s = String::with_capacity(entries.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    s.push('[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&e.json);
    }
    s.push(']');
    Ok(json_text(StatusCode::OK, s))
}

/// Server-sent events: one `decision` event per live decision (`id:` is the
/// result id), a comment every 15 s so dead peers are noticed, and a
/// `lagged` event when this subscriber fell behind and lost some.
fn live_stream(state: &Arc<AppState>, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let hub = live_hub_only(state, query)?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_streams", "the event stream has no free place")
    })?;
    let rx = hub.subscribe();
    let first = Bytes::from_static(b": connected\n\n");
    let init = (rx, permit, Some(first), state.stopping.clone());
    let stream = futures_util::stream::unfold(init, |(mut rx, permit, first, mut stop)| async move {
        if let Some(b) = first {
            return Some((Ok(Frame::data(b)), (rx, permit, None, stop)));
        }
        if *stop.borrow() {
            return None;
        }
        let next = tokio::select! {
            // The server is stopping: end the stream so the connection can close.
            _ = stop.changed() => return None,
            r = tokio::time::timeout(Duration::from_secs(15), rx.recv()) => r,
        };
        let bytes = match next {
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Ok(entry)) => sse_event(&entry),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                Bytes::from(format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n"))
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, permit, None, stop)))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

fn sse_event(entry: &LiveEntry) -> Bytes {
    // The JSON is one line (serde_json never emits raw newlines), as SSE needs.
    Bytes::from(format!("id: {}\nevent: decision\ndata: {}\n\n", entry.id, entry.json))
}

/// Constant-time comparison of the bearer token.
fn check_token(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = state.config.token.as_deref() else {
        return Ok(());
    };
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_owned()).with_field("Authorization");
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("this server needs Authorization: Bearer <token> on every POST"))?;
    let given = given.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
    let want = token.as_bytes();
    let diff = given.iter().zip(want).fold(given.len() ^ want.len(), |acc, (a, b)| acc | usize::from(a ^ b));
    if diff != 0 {
        return Err(unauthorized("the bearer token is wrong"));
    }
    Ok(())
}

/// The whole body, within the size limit and the body timeout.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let max = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is over {max} bytes"))
            .with_field("body")
    };
    let (parts, body) = req.into_parts();
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        if len.parse::<u64>().map_or(true, |n| n > max as u64) {
            return Err(too_large());
        }
    }
    let collected =
        tokio::time::timeout(state.config.body_timeout, Limited::new(body, max).collect()).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {:?}", state.config.body_timeout),
            )
        })?;
    match collected {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::bad("invalid_body", "body", format!("reading the body: {e}"))),
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    BodyExt::boxed_unsync(Full::new(s.into()))
}

fn json_text(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    let text = serde_json::to_string(value).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("answer not serializable: {e}"))
    })?;
    Ok(json_text(status, text))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_text(e.status, e.to_json())
}
