//! The `/metrics` series, kept in a `prometheus-client` registry and
//! written in the Prometheus text format (0.0.4) that every scraper reads.
//! The crate has no listener of its own: the series are served on our
//! `/metrics` route, behind the same connection guard as the API.
//!
//! Series (ours prefixed `quorum_`, names unchanged from the hand-written
//! exposition this replaced, so existing scrapes keep working):
//! - `http_requests_total{endpoint,method,status}`, `http_request_duration_seconds{endpoint}`;
//! - `inference_duration_seconds{stage}`: `decode`, `consensus`, `total` and one
//!   stage per model (`model_cnn_lstm`, …);
//! - `decisions_total{direction}`;
//! - live mode: `live_ticks_total`, `live_decisions_total`, `live_tick_to_decision_seconds`,
//!   `collector_resyncs_total`, `collector_reconnects_total`, `live_warm` (every
//!   symbol added up), and per followed symbol `live_symbol_warm{symbol}`,
//!   `live_symbol_decisions_total{symbol}`;
//! - training: `training_active`, `training_epoch`, `training_progress_percent`, `training_loss`;
//! - connections: `http_connections_open`, `http_connections_evicted_total`
//!   (idle ones closed to make room), `http_connections_reserve_total` (taken
//!   over the caps, health only), `http_connections_refused_total`,
//!   `http_heads_rejected_total` (malformed or late request heads);
//! - `build_info{version}` (always 1: the labels are the information);
//! - the standard, unprefixed `process_*` series (server/process_stats.rs).
//!
//! Endpoints are the fixed route labels, never raw paths, so a client cannot
//! grow the series without bound. Figures owned by other parts (live mode,
//! the training job, the process) are read at scrape time and written as
//! constants beside the registry's own series.

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::process_stats::ProcessStats;
use crate::ensemble::{Direction, ModelType};
use crate::server::engine::Decision;

/// The `Content-Type` of what `Metrics::render` writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 17] =
    [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Records a duration given in microseconds; a negative or non-finite one is
/// a clock oddity, not a latency, and is dropped.
fn observe_us(h: &Histogram, us: f64) {
    if us.is_finite() && us >= 0.0 {
        h.observe(us * 1e-6);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: String,
}

/// Figures read at scrape time from the live pipeline (all symbols added up,
/// and each symbol's own).
#[derive(Debug, Clone, Default)]
pub struct LiveFigures {
    pub ticks: u64,
    pub decisions: u64,
    pub resyncs: u64,
    pub reconnects: u64,
    pub per_symbol: Vec<SymbolFigures>,
}

/// One followed symbol's figures, as `{symbol="…"}` series.
#[derive(Debug, Clone, Default)]
pub struct SymbolFigures {
    pub symbol: String,
    pub decisions: u64,
    pub warm: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SymbolLabel {
    symbol: String,
}

/// Figures read at scrape time from the training job.
#[derive(Debug, Clone, Default)]
pub struct TrainingFigures {
    pub active: bool,
    pub epoch: usize,
    pub progress_percent: f64,
    pub loss: Option<f64>,
}

/// The connection layer's figures (server/conn.rs).
#[derive(Default)]
pub struct ConnCounters {
    pub open: Gauge,
    pub evicted: Counter,
    pub reserve: Counter,
    pub refused: Counter,
    pub head_rejected: Counter,
}

/// Every series the server updates as it works; cheap handles onto shared
/// atomics, so recording is lock-free but for a family's first use of a label set.
pub struct Metrics {
    pub connections: ConnCounters,
    requests: Family<RequestLabels, Counter>,
    request_latency: LatencyFamily<EndpointLabel>,
    stages: LatencyFamily<StageLabel>,
    decode: Histogram,
    consensus: Histogram,
    total: Histogram,
    /// One per `ModelType::ALL`, in its order.
    models: Vec<Histogram>,
    decision_family: Family<DirectionLabel, Counter>,
    /// One per `Direction::ALL`, indexed by `Direction::index`.
    decisions: Vec<Counter>,
    pub tick_to_decision: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let stages: LatencyFamily<StageLabel> = Family::new_with_constructor(latency_histogram);
        // Every stage and direction is created up front, so each shows (at
        // zero) from the first scrape and recording never allocates a label.
        let stage = |name: String| stages.get_or_create_owned(&StageLabel { stage: name });
        let decision_family: Family<DirectionLabel, Counter> = Family::default();
        let mut decisions = vec![Counter::default(); Direction::ALL.len()];
        for d in Direction::ALL {
            decisions[d.index()] = decision_family.get_or_create_owned(&DirectionLabel { direction: d.to_string() });
        }
        Metrics {
            connections: ConnCounters::default(),
            requests: Family::default(),
            request_latency: Family::new_with_constructor(latency_histogram),
            decode: stage("decode".into()),
            models: ModelType::ALL.iter().map(|m| stage(format!("model_{m}"))).collect(),
            consensus: stage("consensus".into()),
            total: stage("total".into()),
            stages,
            decision_family,
            decisions,
            tick_to_decision: latency_histogram(),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, method: &'static str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint, method, status }).inc();
        self.request_latency.get_or_create(&EndpointLabel { endpoint }).observe(elapsed.as_secs_f64());
    }

    /// The stages and the direction of one decision.
    pub fn decision(&self, d: &Decision) {
        if let Some(us) = d.timings.decode_us {
            observe_us(&self.decode, us);
        }
        for (&m, &us) in &d.timings.models_us {
            if let Some(i) = ModelType::ALL.iter().position(|&x| x == m) {
                observe_us(&self.models[i], us);
            }
        }
        observe_us(&self.consensus, d.timings.consensus_us);
        observe_us(&self.total, d.timings.total_us);
        self.decisions[d.result.direction.index()].inc();
    }

    /// The whole exposition: the registry's series, then the figures read now
    /// from live mode, the training job and the process.
    pub fn render(&self, live: Option<LiveFigures>, training: &TrainingFigures) -> String {
        let mut root = Registry::default();
        process_series(&mut root, &ProcessStats::read());
        let r = root.sub_registry_with_prefix("quorum");
        r.register("build", "The quorum build serving", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        r.register("http_requests", "HTTP requests by endpoint, method and status", self.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "Time from request to answer, by endpoint",
            self.request_latency.clone(),
        );
        let c = &self.connections;
        r.register("http_connections_open", "Connections open now", c.open.clone());
        r.register("http_connections_evicted", "Idle connections closed to make room for new ones", c.evicted.clone());
        r.register(
            "http_connections_reserve",
            "Connections taken over the caps, served health only",
            c.reserve.clone(),
        );
        r.register("http_connections_refused", "Connections refused outright (every place busy)", c.refused.clone());
        r.register(
            "http_heads_rejected",
            "Request heads refused before routing (malformed, too large, late)",
            c.head_rejected.clone(),
        );
        r.register("inference_duration_seconds", "Time per stage of a decision", self.stages.clone());
        r.register("decisions", "Consensus decisions by direction", self.decision_family.clone());
        if let Some(l) = live {
            r.register("live_ticks", "Samples of the live book taken", ConstCounter::new(l.ticks));
            r.register("live_decisions", "Decisions made in live mode", ConstCounter::new(l.decisions));
            r.register("collector_resyncs", "Order-book resyncs of the live client", ConstCounter::new(l.resyncs));
            r.register("collector_reconnects", "Reconnects of the live client", ConstCounter::new(l.reconnects));
            let all_warm = l.per_symbol.iter().all(|f| f.warm);
            r.register(
                "live_warm",
                "1 once every symbol's feature and book windows are full",
                ConstGauge::new(i64::from(all_warm)),
            );
            let warm = Family::<SymbolLabel, Gauge>::default();
            let decisions = Family::<SymbolLabel, Counter>::default();
            for f in &l.per_symbol {
                let label = SymbolLabel { symbol: f.symbol.clone() };
                warm.get_or_create(&label).set(i64::from(f.warm));
                decisions.get_or_create(&label).inc_by(f.decisions);
            }
            r.register("live_symbol_warm", "1 once this symbol's windows are full", warm);
            r.register("live_symbol_decisions", "Decisions made for this symbol in live mode", decisions);
            r.register(
                "live_tick_to_decision_seconds",
                "From a book sample to its decision, ready to publish",
                self.tick_to_decision.clone(),
            );
        }
        r.register("training_active", "1 while a training job runs", ConstGauge::new(i64::from(training.active)));
        r.register("training_epoch", "Current epoch of the training job", ConstGauge::new(training.epoch as i64));
        r.register(
            "training_progress_percent",
            "Progress of the training job",
            ConstGauge::new(training.progress_percent),
        );
        if let Some(loss) = training.loss {
            r.register("training_loss", "Mean training loss of the current epoch", ConstGauge::new(loss));
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a metric's encoding, and a scrape must not take the server down.
        if let Err(e) = prometheus_text::encode(&mut out, &root) {
            tracing::error!(error = %e, "encoding /metrics failed");
        }
        out
    }
}

/// The standard `process_*` series, under the names every client library uses.
fn process_series(r: &mut Registry, s: &ProcessStats) {
    if let Some(v) = s.cpu_seconds {
        r.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", ConstCounter::new(v));
    }
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory size in bytes", s.resident_memory_bytes),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes", s.virtual_memory_bytes),
        ("process_open_fds", "Number of open file descriptors", s.open_fds),
        ("process_max_fds", "Maximum number of open file descriptors", s.max_fds),
        ("process_threads", "Number of OS threads in the process", s.threads),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            r.register(name, help, ConstGauge::new(v));
        }
    }
    if let Some(v) = s.start_time_seconds {
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            ConstGauge::new(v),
        );
    }
}

impl crate::server::live::LiveObserver for Metrics {
    fn decision(&self, decision: &Decision, tick_to_decision_us: f64) {
        Metrics::decision(self, decision);
        observe_us(&self.tick_to_decision, tick_to_decision_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_cumulative_buckets_with_sum_and_count() {
        let m = Metrics::default();
        m.request("predict", "POST", 200, Duration::from_micros(30));
        m.request("predict", "POST", 200, Duration::from_millis(3));
        m.request("predict", "POST", 200, Duration::from_secs(20));
        let s = m.render(None, &TrainingFigures::default());
        let name = "quorum_http_request_duration_seconds";
        assert!(s.contains(&format!("{name}_bucket{{endpoint=\"predict\",le=\"5e-05\"}} 1\n")), "{s}");
        assert!(s.contains(&format!("{name}_bucket{{endpoint=\"predict\",le=\"0.005\"}} 2\n")), "{s}");
        assert!(s.contains(&format!("{name}_bucket{{endpoint=\"predict\",le=\"10\"}} 2\n")), "{s}");
        assert!(s.contains(&format!("{name}_bucket{{endpoint=\"predict\",le=\"+Inf\"}} 3\n")), "{s}");
        assert!(s.contains(&format!("{name}_count{{endpoint=\"predict\"}} 3\n")), "{s}");
        assert!(
            s.contains("quorum_http_requests_total{endpoint=\"predict\",method=\"POST\",status=\"200\"} 3\n"),
            "{s}"
        );
    }

    #[test]
    fn live_series_appear_only_in_live_mode() {
        let m = Metrics::default();
        let off = m.render(None, &TrainingFigures::default());
        assert!(!off.contains("quorum_live_"), "{off}");
        let symbol = |s: &str, decisions, warm| SymbolFigures { symbol: s.into(), decisions, warm };
        let per_symbol = vec![symbol("AAAUSDT", 5, true), symbol("BBBUSDT", 0, false)];
        let live = LiveFigures { ticks: 7, per_symbol, ..LiveFigures::default() };
        let on = m.render(Some(live), &TrainingFigures::default());
        assert!(on.contains("quorum_live_ticks_total 7\n"), "{on}");
        assert!(on.contains("quorum_live_warm 0\n"), "{on}");
        assert!(on.contains("quorum_live_symbol_warm{symbol=\"AAAUSDT\"} 1\n"), "{on}");
        assert!(on.contains("quorum_live_symbol_warm{symbol=\"BBBUSDT\"} 0\n"), "{on}");
        assert!(on.contains("quorum_live_symbol_decisions_total{symbol=\"AAAUSDT\"} 5\n"), "{on}");
    }
}
