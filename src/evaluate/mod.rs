//! `quorum evaluate`: does the ensemble pay? A stored period is replayed
//! through the live path itself ([`crate::server::live::LiveState`]: the
//! streaming feature engine, the windows, the loaded models, the engine), and
//! at every decision time each candidate says what it would do: each model
//! alone, each of the five consensus strategies, a logistic regression on
//! order flow, the majority class of the fit period, and always-neutral.
//! Every candidate is scored on exactly the same decisions, at each horizon,
//! net of costs, with paired block-bootstrap intervals (docs/evaluate.md).
//!
//! The parts, one job each:
//! - [`replay`]: stored snapshots and trades → ticks and the engine's decisions;
//! - [`candidates`]: one decision → every candidate's call (the consensus
//!   strategies fed the outcomes as they become known, as `/outcome` would);
//! - [`scoring`]: calls and labels → the decisions table and each candidate's metrics;
//! - [`stats`]: paired block bootstrap and McNemar's test;
//! - [`output`]: `decisions.parquet` and `report.json`;
//! - [`html`]: `report.html`, the page to look at.

pub mod candidates;
pub mod html;
pub mod output;
pub mod replay;
pub mod scoring;
pub mod stats;

use std::path::{Path, PathBuf};

use crate::server::engine::Engine;

pub use candidates::{Candidate, CandidateCall};
pub use output::{read_decisions, write_decisions, Report};
pub use scoring::{DecisionRow, Horizon, TradingMetrics};

/// What `quorum evaluate` was asked.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// The store `collect`, `simulate` or `import` wrote (`<data>/<SYMBOL>/<day>/…`).
    pub data: PathBuf,
    pub symbol: String,
    /// Decisions from this time on; default: the middle of the stored data.
    pub from: Option<Bound>,
    /// Decisions before this time; default: the end of the data.
    pub to: Option<Bound>,
    /// Label horizons in ticks; the first is the one the consensus strategies learn from.
    pub horizons: Vec<usize>,
    /// The label threshold α; `None`: fit on the fit period as training does.
    pub alpha: Option<f64>,
    /// Fixed cost per trade (fees, both sides), basis points.
    pub cost_bps: f64,
    /// A fixed half-spread per side in basis points instead of the book's own.
    pub half_spread_bps: Option<f64>,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// Ticks between samples in the store (the collector's 100 ms).
    pub interval_ms: i64,
}

impl EvaluateOptions {
    pub fn new(data: &Path, symbol: &str) -> EvaluateOptions {
        EvaluateOptions {
            data: data.to_path_buf(),
            symbol: symbol.to_owned(),
            from: None,
            to: None,
            horizons: vec![30],
            alpha: None,
            cost_bps: 1.0,
            half_spread_bps: None,
            resamples: 1000,
            seed: 7,
            interval_ms: 100,
        }
    }

    fn check(&self) -> Result<(), EvaluateError> {
        let bad = |field: &'static str, reason: String| Err(EvaluateError::Option { field, reason });
        if !crate::market::is_exchange_symbol(&self.symbol) {
            return bad("symbol", format!("{:?} {}", self.symbol, crate::market::EXCHANGE_SYMBOL_RULE));
        }
        if self.horizons.is_empty() || self.horizons.iter().any(|&k| !(1..=100_000).contains(&k)) {
            return bad("horizons", format!("{:?}: one or more horizons, each in 1..=100000 ticks", self.horizons));
        }
        if let Some(a) = self.alpha.filter(|a| !(a.is_finite() && *a >= 0.0)) {
            return bad("alpha", format!("{a} must be finite and ≥ 0"));
        }
        if !(self.cost_bps.is_finite() && self.cost_bps >= 0.0) {
            return bad("cost_bps", format!("{} must be finite and ≥ 0", self.cost_bps));
        }
        if let Some(h) = self.half_spread_bps.filter(|h| !(h.is_finite() && *h >= 0.0)) {
            return bad("half_spread_bps", format!("{h} must be finite and ≥ 0"));
        }
        if !(100..=100_000).contains(&self.resamples) {
            return bad("resamples", format!("{} is not in 100..=100000", self.resamples));
        }
        if self.interval_ms <= 0 {
            return bad("interval_ms", format!("{} must be positive", self.interval_ms));
        }
        Ok(())
    }
}

/// A time bound of the evaluated period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Exchange time, Unix milliseconds.
    At(i64),
    /// This many milliseconds after the first stored snapshot.
    AfterStart(i64),
}

impl Bound {
    /// `1723111200000` (Unix ms) or `+30m` (after the data's start; `s`, `m`, `h`).
    pub fn parse(s: &str) -> Result<Bound, String> {
        if let Some(rest) = s.strip_prefix('+') {
            let d = crate::market::parse_duration(rest).map_err(|e| format!("{s:?}: {e}"))?;
            return Ok(Bound::AfterStart(d.as_millis().min(i64::MAX as u128) as i64));
        }
        s.parse::<i64>()
            .map(Bound::At)
            .map_err(|_| format!("{s:?} is neither Unix milliseconds nor +DURATION after the data's start (+30m)"))
    }

    pub fn resolve(self, first_ms: i64) -> i64 {
        match self {
            Bound::At(ms) => ms,
            Bound::AfterStart(ms) => first_ms.saturating_add(ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("evaluate option {field}: {reason}")]
    Option { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] crate::market::StoreError),
    #[error("{0}")]
    Data(String),
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Replays, scores and writes `decisions.parquet`, `report.json` and `report.html` into
/// `out`. `engine` holds the loaded models and the ensemble config the
/// consensus strategies start from. `progress` hears one line now and then.
pub fn evaluate(
    engine: std::sync::Arc<Engine>,
    opts: &EvaluateOptions,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, EvaluateError> {
    opts.check()?;
    if engine.loaded_models().is_empty() {
        return Err(EvaluateError::Data(
            "no model is loaded: --weights DIR holds none of the three weights files".into(),
        ));
    }
    let replayed = replay::replay(engine.clone(), opts, progress)?;
    let calls = candidates::calls(&engine, &replayed, opts)?;
    progress(&format!("scoring {} decisions × {} candidates", calls.decisions.len(), calls.candidates.len()));
    let scored = scoring::score(&replayed, &calls, opts)?;
    let report = Report::build(opts, &replayed, &calls, &scored);
    std::fs::create_dir_all(out)
        .map_err(|e| EvaluateError::Write { path: out.to_path_buf(), reason: e.to_string() })?;
    write_decisions(&out.join("decisions.parquet"), &scored.rows)?;
    report.write(&out.join("report.json"))?;
    let page = html::render(&report, &replayed, &calls.decisions, &scored.rows);
    let path = out.join("report.html");
    crate::fsutil::write_atomic(&path, page.as_bytes())
        .map_err(|e| EvaluateError::Write { path: path.clone(), reason: e.to_string() })?;
    Ok(report)
}
