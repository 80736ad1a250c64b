//! Prometheus text exposition, written by hand: a few atomics per series and
//! no registry crate (the usual exporter crates open listeners of their own).
//!
//! Series (all names prefixed `quorum_`):
//! - `http_requests_total{endpoint,method,status}`, `http_request_duration_seconds{endpoint}`;
//! - `inference_duration_seconds{stage}`: `decode`, `consensus`, `total` and one
//!   stage per model (`model_cnn_lstm`, …);
//! - `decisions_total{direction}`;
//! - live mode: `live_ticks_total`, `live_decisions_total`, `live_tick_to_decision_seconds`,
//!   `collector_resyncs_total`, `collector_reconnects_total`, `live_warm`;
//! - training: `training_active`, `training_epoch`, `training_progress_percent`, `training_loss`;
//! - connections: `http_connections_open`, `http_connections_evicted_total`
//!   (idle ones closed to make room), `http_connections_reserve_total` (taken
//!   over the caps, health only), `http_connections_refused_total`,
//!   `http_heads_rejected_total` (malformed or late request heads).
//!
//! Endpoints are the fixed route labels, never raw paths, so a client cannot
//! grow the series without bound.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::ensemble::{Direction, ModelType};
use crate::server::engine::Decision;

/// Upper bounds in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 17] =
    [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram of fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), plus the overflow above the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn observe_us(&self, us: f64) {
        if us.is_finite() && us >= 0.0 {
            self.observe(Duration::from_secs_f64(us * 1e-6));
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
}

/// Figures read at scrape time from the live pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveFigures {
    pub ticks: u64,
    pub decisions: u64,
    pub resyncs: u64,
    pub reconnects: u64,
    pub warm: bool,
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
    pub open: AtomicU64,
    pub evicted: AtomicU64,
    pub reserve: AtomicU64,
    pub refused: AtomicU64,
    pub head_rejected: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub connections: ConnCounters,
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    request_latency: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    pub decode: Histogram,
    pub consensus: Histogram,
    pub total: Histogram,
    models: [Histogram; 3],
    decisions: [AtomicU64; 3],
    pub tick_to_decision: Histogram,
}

fn model_slot(m: ModelType) -> usize {
    ModelType::ALL.iter().position(|&x| x == m).unwrap_or(0).min(2)
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, method: &'static str, status: u16, elapsed: Duration) {
        *self.requests.lock().entry((endpoint, method, status)).or_default() += 1;
        let h = self.request_latency.lock().entry(endpoint).or_default().clone();
        h.observe(elapsed);
    }

    /// The stages and the direction of one decision.
    pub fn decision(&self, d: &Decision) {
        if let Some(us) = d.timings.decode_us {
            self.decode.observe_us(us);
        }
        for (&m, &us) in &d.timings.models_us {
            self.models[model_slot(m)].observe_us(us);
        }
        self.consensus.observe_us(d.timings.consensus_us);
        self.total.observe_us(d.timings.total_us);
        self.decisions[d.result.direction.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, live: Option<LiveFigures>, training: &TrainingFigures) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP quorum_http_requests_total HTTP requests by endpoint, method and status.\n");
        out.push_str("# TYPE quorum_http_requests_total counter\n");
        for ((e, m, s), n) in self.requests.lock().iter() {
            let _ = writeln!(out, "quorum_http_requests_total{{endpoint=\"{e}\",method=\"{m}\",status=\"{s}\"}} {n}");
        }
        let c = &self.connections;
        let _ = writeln!(
            out,
            "# HELP quorum_http_connections_open Connections open now.\n# TYPE quorum_http_connections_open gauge\n\
             quorum_http_connections_open {}",
            c.open.load(Ordering::Relaxed)
        );
        let conn_counters = [
            ("http_connections_evicted_total", "Idle connections closed to make room for new ones.", &c.evicted),
            ("http_connections_reserve_total", "Connections taken over the caps, served health only.", &c.reserve),
            ("http_connections_refused_total", "Connections refused outright (every place busy).", &c.refused),
            (
                "http_heads_rejected_total",
                "Request heads refused before routing (malformed, too large, late).",
                &c.head_rejected,
            ),
        ];
        for (n, help, v) in conn_counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP quorum_{n} {help}\n# TYPE quorum_{n} counter\nquorum_{n} {v}");
        }
        out.push_str("# HELP quorum_http_request_duration_seconds Time from request to answer, by endpoint.\n");
        out.push_str("# TYPE quorum_http_request_duration_seconds histogram\n");
        for (e, h) in self.request_latency.lock().iter() {
            h.render(&mut out, "quorum_http_request_duration_seconds", &format!("endpoint=\"{e}\""));
        }
        out.push_str("# HELP quorum_inference_duration_seconds Time per stage of a decision.\n");
        out.push_str("# TYPE quorum_inference_duration_seconds histogram\n");
        let name = "quorum_inference_duration_seconds";
        self.decode.render(&mut out, name, "stage=\"decode\"");
        for (i, m) in ModelType::ALL.iter().enumerate().take(3) {
            self.models[i].render(&mut out, name, &format!("stage=\"model_{m}\""));
        }
        self.consensus.render(&mut out, name, "stage=\"consensus\"");
        self.total.render(&mut out, name, "stage=\"total\"");
        out.push_str("# HELP quorum_decisions_total Consensus decisions by direction.\n");
        out.push_str("# TYPE quorum_decisions_total counter\n");
        for d in Direction::ALL {
            let n = self.decisions[d.index()].load(Ordering::Relaxed);
            let _ = writeln!(out, "quorum_decisions_total{{direction=\"{d}\"}} {n}");
        }
        if let Some(l) = live {
            let counters = [
                ("live_ticks_total", "Samples of the live book taken.", l.ticks),
                ("live_decisions_total", "Decisions made in live mode.", l.decisions),
                ("collector_resyncs_total", "Order-book resyncs of the live client.", l.resyncs),
                ("collector_reconnects_total", "Reconnects of the live client.", l.reconnects),
            ];
            for (n, help, v) in counters {
                let _ = writeln!(out, "# HELP quorum_{n} {help}\n# TYPE quorum_{n} counter\nquorum_{n} {v}");
            }
            let _ = writeln!(out, "# HELP quorum_live_warm 1 once the feature and book windows are full.");
            let _ = writeln!(out, "# TYPE quorum_live_warm gauge\nquorum_live_warm {}", u8::from(l.warm));
            out.push_str("# HELP quorum_live_tick_to_decision_seconds From a book sample to its published decision.\n");
            out.push_str("# TYPE quorum_live_tick_to_decision_seconds histogram\n");
            self.tick_to_decision.render(&mut out, "quorum_live_tick_to_decision_seconds", "");
        }
        let gauges = [
            ("training_active", "1 while a training job runs.", f64::from(u8::from(training.active))),
            ("training_epoch", "Current epoch of the training job.", training.epoch as f64),
            ("training_progress_percent", "Progress of the training job.", training.progress_percent),
        ];
        for (n, help, v) in gauges {
            let _ = writeln!(out, "# HELP quorum_{n} {help}\n# TYPE quorum_{n} gauge\nquorum_{n} {v}");
        }
        if let Some(loss) = training.loss {
            let _ = writeln!(
                out,
                "# HELP quorum_training_loss Mean training loss of the current epoch.\n# TYPE quorum_training_loss gauge\nquorum_training_loss {loss}"
            );
        }
        out
    }
}

impl crate::server::live::LiveObserver for Metrics {
    fn decision(&self, decision: &Decision, tick_to_decision_us: f64) {
        Metrics::decision(self, decision);
        self.tick_to_decision.observe_us(tick_to_decision_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut s = String::new();
        h.render(&mut s, "x", "a=\"b\"");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.00005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count{a=\"b\"} 3\n"), "{s}");
    }
}
