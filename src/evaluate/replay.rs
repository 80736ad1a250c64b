//! The stored period through the live path: every snapshot (with the trades
//! up to its time) goes to [`LiveState::advance`], exactly as live mode's
//! sampler feeds it; in the evaluated period every warm tick that also has
//! a feature vector (the logistic baseline reads it) goes to
//! [`LiveState::decide`], the engine's decision as `serve --live` makes it.
//!
//! Before `from` is the fit period: it warms the pipeline up, so decisions
//! start at `from`, and its ticks (mids, feature vectors) fit what must be
//! fit before the evaluated period: α, the baseline, the majority class.
//! A gap in the store (more than 3 intervals between snapshots) empties the
//! windows, as a resync does live (docs/training.md, "Samples").

use std::sync::Arc;
use std::time::Instant;

use super::{EvaluateError, EvaluateOptions};
use crate::features::NUM_FEATURES;
use crate::market::{read_snapshots, read_trades, Snapshot, Trade};
use crate::server::engine::{Decision, Engine};
use crate::server::live::{LiveHub, LiveState};

/// The ticks of one period: exchange time, mid and half-spread (bps of the mid).
#[derive(Debug, Clone, Default)]
pub struct Ticks {
    pub ts_ms: Vec<i64>,
    pub mid: Vec<f64>,
    pub half_spread_bps: Vec<f64>,
}

impl Ticks {
    fn push(&mut self, snap: &Snapshot) {
        let mid = snap.mid().unwrap_or(f64::NAN);
        let spread = snap.asks[0].price - snap.bids[0].price;
        self.ts_ms.push(snap.ts_exchange_ms);
        self.mid.push(mid);
        self.half_spread_bps.push(spread / 2.0 / mid * 10_000.0);
    }

    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }
}

/// One decision of the engine in the evaluated period.
#[derive(Debug, Clone)]
pub struct EngineCall {
    /// Index into [`Replayed::eval`].
    pub tick: usize,
    pub decision: Decision,
    /// The tick's feature vector (the baseline's input).
    pub features: [f32; NUM_FEATURES],
    /// Time spent in the feature engine and windows on this tick, µs.
    pub features_us: f64,
    /// From the start of the tick to the decision, µs (live mode's `tick_to_decision_us`).
    pub tick_us: f64,
}

/// What the replay saw.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub first_ms: i64,
    pub last_ms: i64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub fit: Ticks,
    /// Row-major feature vectors of the fit ticks that have one, and which tick each is.
    pub fit_features: Vec<f32>,
    pub fit_feature_ticks: Vec<usize>,
    pub eval: Ticks,
    pub calls: Vec<EngineCall>,
    /// Evaluated ticks that were not warm (warm-up after a gap), or warm without a feature vector.
    pub ticks_without_decision: u64,
    /// Warm ticks where the engine gave no decision (an error, logged by live mode).
    pub failed_decisions: u64,
    /// Times the windows were emptied by a gap in the store.
    pub gaps: u64,
}

/// Exchange times of the first and last stored snapshot.
fn span(opts: &EvaluateOptions) -> Result<(i64, i64), EvaluateError> {
    let mut first = None;
    let mut last = 0;
    for s in read_snapshots(&opts.data, &opts.symbol)? {
        let s = s?;
        first.get_or_insert(s.ts_exchange_ms);
        last = s.ts_exchange_ms;
    }
    let first = first
        .ok_or_else(|| EvaluateError::Data(format!("no snapshots of {} under {}", opts.symbol, opts.data.display())))?;
    Ok((first, last))
}

pub fn replay(
    engine: Arc<Engine>,
    opts: &EvaluateOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Replayed, EvaluateError> {
    let (first_ms, last_ms) = span(opts)?;
    let from_ms = opts.from.map_or(first_ms + (last_ms - first_ms) / 2, |b| b.resolve(first_ms));
    let to_ms = opts.to.map_or(last_ms + 1, |b| b.resolve(first_ms));
    if from_ms >= to_ms || from_ms > last_ms || to_ms <= first_ms {
        return Err(EvaluateError::Data(format!(
            "the evaluated period [{from_ms}, {to_ms}) ms holds no stored snapshot (the store spans [{first_ms}, {last_ms}] ms)"
        )));
    }
    progress(&format!(
        "fit period {:.1} min, evaluated period {:.1} min",
        (from_ms - first_ms).max(0) as f64 / 60_000.0,
        (to_ms.min(last_ms + 1) - from_ms.max(first_ms)) as f64 / 60_000.0
    ));
    let hub = LiveHub::new(&opts.symbol, 1);
    let mut state = LiveState::new(engine, hub, None);
    let mut out = Replayed { first_ms, last_ms, from_ms, to_ms, ..Replayed::default() };
    let mut trades = read_trades(&opts.data, &opts.symbol)?.peekable();
    let mut batch: Vec<Trade> = Vec::new();
    let mut prev_ms: Option<i64> = None;
    let started = Instant::now();
    let mut ticks = 0u64;
    for snap in read_snapshots(&opts.data, &opts.symbol)? {
        let snap = snap?;
        if snap.ts_exchange_ms >= to_ms {
            break;
        }
        batch.clear();
        while let Some(t) = trades.next_if(|t| t.as_ref().map_or(true, |t| t.ts_exchange_ms <= snap.ts_exchange_ms)) {
            batch.push(t?);
        }
        if prev_ms.is_some_and(|p| snap.ts_exchange_ms - p > 3 * opts.interval_ms) {
            state.break_windows();
            out.gaps += 1;
        }
        prev_ms = Some(snap.ts_exchange_ms);
        let tick_start = Instant::now();
        let advanced = state.advance(&batch, &snap);
        let features_us = tick_start.elapsed().as_secs_f64() * 1e6;
        ticks += 1;
        if ticks.is_multiple_of(10_000) {
            progress(&format!(
                "replayed {ticks} ticks ({:.1} min of data) in {:.0} s, {} decisions",
                (snap.ts_exchange_ms - first_ms) as f64 / 60_000.0,
                started.elapsed().as_secs_f64(),
                out.calls.len()
            ));
        }
        if snap.ts_exchange_ms < from_ms {
            if let Some(row) = advanced.features {
                out.fit_feature_ticks.push(out.fit.len());
                out.fit_features.extend_from_slice(&row);
            }
            out.fit.push(&snap);
            continue;
        }
        let tick = out.eval.len();
        out.eval.push(&snap);
        let Some(features) = advanced.features.filter(|_| advanced.warm) else {
            out.ticks_without_decision += 1;
            continue;
        };
        match state.decide(&snap, tick_start) {
            Some((_, decision)) => {
                let tick_us = tick_start.elapsed().as_secs_f64() * 1e6;
                out.calls.push(EngineCall { tick, decision, features, features_us, tick_us });
            }
            None => out.failed_decisions += 1,
        }
    }
    progress(&format!(
        "replayed {ticks} ticks in {:.1} s: {} fit, {} evaluated, {} decisions",
        started.elapsed().as_secs_f64(),
        out.fit.len(),
        out.eval.len(),
        out.calls.len()
    ));
    if out.calls.is_empty() {
        return Err(EvaluateError::Data(format!(
            "no decision in the evaluated period: {} ticks, none warm with a feature vector (the features need \
             200 one-second candles of warm-up and the models their windows; put --from later)",
            out.eval.len()
        )));
    }
    Ok(out)
}
