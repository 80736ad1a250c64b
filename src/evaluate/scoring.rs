//! Calls and labels → the decisions table and every candidate's metrics, at
//! each horizon, each candidate on exactly the same decisions (those with a
//! label at that horizon).
//!
//! Trading (docs/evaluate.md, "Trading"): a candidate that would trade
//! (`should_trade`, not NEUTRAL) while flat opens a position at the decision's
//! mid and closes it k ticks later at that tick's mid; it opens nothing until
//! then (non-overlapping positions). A trade's net result in basis points is
//! `sign · ln(mid[t+k] / mid[t]) · 10⁴ − cost`, the cost being the fixed
//! cost per trade plus the half-spread paid on entry and on exit (the book's
//! own at t and at t+k, or a fixed half-spread).

use serde::Serialize;

use super::candidates::{Calls, Candidate};
use super::replay::Replayed;
use super::stats::{block_bootstrap, block_length, comparison_block_length, mcnemar, Interval, McNemar};
use super::{EvaluateError, EvaluateOptions};
use crate::ensemble::{ConsensusStrategy, Direction};
use crate::train::scores::MetricsAcc;

/// One row of `decisions.parquet`: one decision time, one candidate, one horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    pub ts_ms: i64,
    pub candidate: String,
    pub horizon: u32,
    /// −1 DOWN, 0 NEUTRAL, +1 UP.
    pub direction: i8,
    pub confidence: f64,
    pub should_trade: bool,
    /// The realized class at this horizon, −1 / 0 / +1.
    pub label: i8,
    /// `ln(mid[t+k] / mid[t])` in basis points.
    pub realized_return_bps: f64,
    /// Whether a position was opened here (wanted to trade and was flat).
    pub opened: bool,
    /// What a trade opened here costs, bps (whether or not one was).
    pub cost_bps: f64,
    /// Net result of the position opened here, bps; 0 when none was.
    pub pnl_bps: f64,
}

/// Accuracy, macro-F1, MCC and the confusion matrix (train's definitions, docs/training.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub accuracy: f64,
    pub f1_macro: f64,
    pub mcc: f64,
    /// `confusion[true][predicted]`, classes `[DOWN, NEUTRAL, UP]`.
    pub confusion: [[u64; 3]; 3],
}

/// The results of acting on a candidate's calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradingMetrics {
    pub trades: u64,
    pub net_pnl_bps: f64,
    pub costs_bps: f64,
    /// Share of trades with a positive net result.
    pub hit_rate: Option<f64>,
    /// Sum of winning trades over the sum of losing ones; `None` without a losing trade.
    pub profit_factor: Option<f64>,
    /// Mean over standard deviation of the trades' net results; `None` under 2 trades or no spread.
    pub sharpe_per_trade: Option<f64>,
    /// Largest fall of the cumulative net result from a previous peak (≥ 0).
    pub max_drawdown_bps: f64,
}

impl TradingMetrics {
    /// From the net results of the trades, in time order.
    pub fn of(pnls: &[f64], costs_bps: f64) -> TradingMetrics {
        let n = pnls.len();
        // `+ 0.0`: the empty sum is −0.0, printed as "-0.0" for a candidate that never traded.
        let net: f64 = pnls.iter().sum::<f64>() + 0.0;
        let wins: f64 = pnls.iter().filter(|p| **p > 0.0).sum();
        let losses: f64 = -pnls.iter().filter(|p| **p < 0.0).sum::<f64>();
        let mean = if n > 0 { net / n as f64 } else { 0.0 };
        let var = if n > 1 { pnls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let (mut equity, mut peak, mut drawdown) = (0.0f64, 0.0f64, 0.0f64);
        for p in pnls {
            equity += p;
            peak = peak.max(equity);
            drawdown = drawdown.max(peak - equity);
        }
        TradingMetrics {
            trades: n as u64,
            net_pnl_bps: net,
            costs_bps,
            hit_rate: (n > 0).then(|| pnls.iter().filter(|p| **p > 0.0).count() as f64 / n as f64),
            profit_factor: (losses > 0.0).then(|| wins / losses),
            sharpe_per_trade: (n > 1 && var > 0.0).then(|| mean / var.sqrt()),
            max_drawdown_bps: drawdown,
        }
    }
}

/// One bin of a reliability diagram: stated confidence against realized hit rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    pub low: f64,
    pub high: f64,
    pub decisions: u64,
    pub mean_confidence: f64,
    pub hit_rate: f64,
}

/// One candidate at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateScore {
    pub candidate: Candidate,
    pub group: &'static str,
    pub classification: ClassMetrics,
    pub trading: TradingMetrics,
    pub reliability: Vec<ReliabilityBin>,
}

/// A paired comparison of two candidates on the same decisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub first: Candidate,
    pub second: Candidate,
    pub why: &'static str,
    /// First minus second, percentage points.
    pub accuracy_diff_pp: Interval,
    /// First minus second, total net bps over the period.
    pub net_pnl_diff_bps: Interval,
    /// The bootstrap's block length for each difference, decisions
    /// ([`comparison_block_length`]: the label overlap or the series' own
    /// autocorrelation, whichever asks for longer blocks).
    pub accuracy_block: usize,
    pub pnl_block: usize,
    pub mcnemar: McNemar,
    /// One sentence: is either difference distinguishable from zero at 95 %?
    pub verdict: String,
}

/// Everything at one horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Horizon {
    pub horizon: usize,
    pub alpha: f64,
    /// Decisions with a label at this horizon (every candidate scored on these).
    pub decisions: usize,
    /// Realized class shares over those decisions `[DOWN, NEUTRAL, UP]`.
    pub class_shares: [f64; 3],
    /// The shortest bootstrap block here (the label overlap); each comparison
    /// may use longer ones.
    pub block_length: usize,
    pub scores: Vec<CandidateScore>,
    pub comparisons: Vec<Comparison>,
}

pub struct Scored {
    pub rows: Vec<DecisionRow>,
    pub horizons: Vec<Horizon>,
}

fn signed(d: Direction) -> i8 {
    match d {
        Direction::Down => -1,
        Direction::Neutral => 0,
        Direction::Up => 1,
    }
}

const RELIABILITY_BINS: usize = 10;

fn reliability(conf_hit: &[(f64, bool)]) -> Vec<ReliabilityBin> {
    let mut bins: Vec<(u64, f64, u64)> = vec![(0, 0.0, 0); RELIABILITY_BINS];
    for &(c, hit) in conf_hit {
        let b = ((c * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += c;
        bins[b].2 += u64::from(hit);
    }
    bins.iter()
        .enumerate()
        .filter(|(_, b)| b.0 > 0)
        .map(|(i, &(n, sum, hits))| ReliabilityBin {
            low: i as f64 / RELIABILITY_BINS as f64,
            high: (i + 1) as f64 / RELIABILITY_BINS as f64,
            decisions: n,
            mean_confidence: sum / n as f64,
            hit_rate: hits as f64 / n as f64,
        })
        .collect()
}

/// Per candidate, the paired series the comparisons resample.
struct Series {
    correct: Vec<bool>,
    pnl: Vec<f64>,
}

pub fn score(replayed: &Replayed, calls: &Calls, opts: &EvaluateOptions) -> Result<Scored, EvaluateError> {
    let n_cand = calls.candidates.len();
    let mut rows = Vec::with_capacity(calls.decisions.len() * n_cand * opts.horizons.len());
    let mut horizons = Vec::new();
    for (h, &k) in opts.horizons.iter().enumerate() {
        let labels = &calls.labels;
        let eval = &replayed.eval;
        // The decisions with a label at this horizon, shared by every candidate.
        let kept: Vec<(usize, usize, Direction)> = calls
            .decisions
            .iter()
            .enumerate()
            .filter_map(|(d, &ci)| {
                let t = replayed.calls[ci].tick;
                labels.class(h, t).map(|c| (d, t, c))
            })
            .collect();
        if kept.is_empty() {
            return Err(EvaluateError::Data(format!(
                "no decision has a label at horizon {k}: the evaluated period is shorter than {k} ticks after its first decision"
            )));
        }
        let half_spread = |t: usize| opts.half_spread_bps.unwrap_or(eval.half_spread_bps[t]);
        let mut shares = [0u64; 3];
        for &(_, _, c) in &kept {
            shares[c.index()] += 1;
        }
        let mut scores = Vec::with_capacity(n_cand);
        let mut series = Vec::with_capacity(n_cand);
        for (c, &candidate) in calls.candidates.iter().enumerate() {
            let mut acc = MetricsAcc::new();
            let mut busy_until = 0usize;
            let mut pnls = Vec::new();
            let mut costs = 0.0;
            let mut s = Series { correct: Vec::with_capacity(kept.len()), pnl: Vec::with_capacity(kept.len()) };
            let mut conf_hit = Vec::with_capacity(kept.len());
            for &(d, t, label) in &kept {
                let call = calls.calls[d][c];
                let ret = labels.eval[h].target_bps[t];
                let cost = opts.cost_bps + half_spread(t) + half_spread(t + k);
                let opened = call.should_trade && call.direction != Direction::Neutral && t >= busy_until;
                let pnl = if opened {
                    busy_until = t + k;
                    let p = call.direction.sign() * ret - cost;
                    pnls.push(p);
                    costs += cost;
                    p
                } else {
                    0.0
                };
                acc.push(label.index(), call.direction.index(), ret);
                s.correct.push(call.direction == label);
                s.pnl.push(pnl);
                conf_hit.push((call.confidence, call.direction == label));
                rows.push(DecisionRow {
                    ts_ms: eval.ts_ms[t],
                    candidate: candidate.name().to_owned(),
                    horizon: k as u32,
                    direction: signed(call.direction),
                    confidence: call.confidence,
                    should_trade: call.should_trade,
                    label: signed(label),
                    realized_return_bps: ret,
                    opened,
                    cost_bps: cost,
                    pnl_bps: pnl,
                });
            }
            let m = acc.finish();
            scores.push(CandidateScore {
                candidate,
                group: candidate.group(),
                classification: ClassMetrics {
                    accuracy: m.accuracy,
                    f1_macro: m.f1_macro,
                    mcc: m.mcc,
                    confusion: m.confusion,
                },
                trading: TradingMetrics::of(&pnls, costs),
                reliability: reliability(&conf_hit),
            });
            series.push(s);
        }
        let block = block_length(k, kept.len());
        let comparisons = compare(&calls.candidates, calls.engine_strategy, &scores, &series, opts, k);
        let total = kept.len() as f64;
        horizons.push(Horizon {
            horizon: k,
            alpha: labels.alpha[h],
            decisions: kept.len(),
            class_shares: shares.map(|n| n as f64 / total),
            block_length: block,
            scores,
            comparisons,
        });
    }
    Ok(Scored { rows, horizons })
}

/// The comparisons the report makes: each consensus strategy against the best
/// single model (by accuracy at this horizon), adaptive against fixed weights,
/// each model against the logistic baseline, and each model and the
/// engine's own strategy against doing nothing and against the majority class.
fn compare(
    candidates: &[Candidate],
    engine_strategy: ConsensusStrategy,
    scores: &[CandidateScore],
    series: &[Series],
    opts: &EvaluateOptions,
    horizon: usize,
) -> Vec<Comparison> {
    let index = |c: Candidate| candidates.iter().position(|&x| x == c);
    let models: Vec<usize> = (0..candidates.len()).filter(|&i| matches!(candidates[i], Candidate::Model(_))).collect();
    let best_model = models
        .iter()
        .copied()
        .max_by(|&a, &b| scores[a].classification.accuracy.total_cmp(&scores[b].classification.accuracy));
    let mut pairs: Vec<(usize, usize, &'static str)> = Vec::new();
    if let Some(best) = best_model {
        for s in ConsensusStrategy::ALL {
            if let Some(i) = index(Candidate::Consensus(s)) {
                pairs.push((i, best, "the ensemble against its best single member (chosen on this period)"));
            }
        }
    }
    if let (Some(a), Some(w)) = (
        index(Candidate::Consensus(ConsensusStrategy::Adaptive)),
        index(Candidate::Consensus(ConsensusStrategy::WeightedVoting)),
    ) {
        pairs.push((a, w, "adaptive weights against the fixed weights"));
    }
    if let Some(lr) = index(Candidate::LogisticRegression) {
        for &m in &models {
            pairs.push((m, lr, "a model against the logistic regression on order flow"));
        }
    }
    let mut bar_raisers = models.clone();
    bar_raisers.extend(index(Candidate::Consensus(engine_strategy)));
    for (baseline, why) in [
        (Candidate::AlwaysNeutral, "against doing nothing (always neutral)"),
        (Candidate::MajorityClass, "against the fit period's majority class"),
    ] {
        if let Some(b) = index(baseline) {
            for &m in &bar_raisers {
                pairs.push((m, b, why));
            }
        }
    }
    let n = series.first().map_or(0, |s| s.pnl.len()) as f64;
    pairs
        .into_iter()
        .enumerate()
        .map(|(p, (a, b, why))| {
            let seed = opts.seed.wrapping_add(p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let as_f = |s: &Series| s.correct.iter().map(|&c| f64::from(u8::from(c))).collect::<Vec<f64>>();
            let (right_a, right_b) = (as_f(&series[a]), as_f(&series[b]));
            let accuracy_block = comparison_block_length(&right_a, &right_b, horizon);
            let pnl_block = comparison_block_length(&series[a].pnl, &series[b].pnl, horizon);
            let acc = block_bootstrap(&right_a, &right_b, accuracy_block, opts.resamples, seed).scaled(100.0);
            let pnl = block_bootstrap(&series[a].pnl, &series[b].pnl, pnl_block, opts.resamples, seed ^ 1).scaled(n);
            let mcnemar = mcnemar(&series[a].correct, &series[b].correct);
            let (fa, fb) = (candidates[a].name(), candidates[b].name());
            let say = |i: &Interval, what: &str, unit: &str| {
                let verdict = if i.excludes_zero() {
                    "distinguishable from zero at 95 %"
                } else {
                    "not distinguishable from zero at 95 %"
                };
                format!("{what} {:+.2} {unit} [{:+.2}, {:+.2}], {verdict}", i.estimate, i.low, i.high)
            };
            let verdict = format!(
                "{fa} vs {fb} at {horizon} ticks: {}; {}.",
                say(&acc, "accuracy", "pp"),
                say(&pnl, "net PnL", "bps")
            );
            Comparison {
                first: candidates[a],
                second: candidates[b],
                why,
                accuracy_diff_pp: acc,
                net_pnl_diff_bps: pnl,
                accuracy_block,
                pnl_block,
                mcnemar,
                verdict,
            }
        })
        .collect()
}
