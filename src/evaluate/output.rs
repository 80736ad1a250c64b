//! `decisions.parquet` (one row per decision time, candidate and horizon)
//! and `report.json` (every figure, docs/evaluate.md, "Output").

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, Int8Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use super::candidates::{Calls, WeightPoint};
use super::replay::Replayed;
use super::scoring::{DecisionRow, Horizon, Scored};
use super::{EvaluateError, EvaluateOptions};
use crate::ensemble::ModelType;
use crate::fsutil::{split_path, TempFile};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("candidate", DataType::Utf8, false),
        Field::new("horizon", DataType::UInt32, false),
        Field::new("direction", DataType::Int8, false),
        Field::new("confidence", DataType::Float64, false),
        Field::new("should_trade", DataType::Boolean, false),
        Field::new("label", DataType::Int8, false),
        Field::new("realized_return_bps", DataType::Float64, false),
        Field::new("opened", DataType::Boolean, false),
        Field::new("cost_bps", DataType::Float64, false),
        Field::new("pnl_bps", DataType::Float64, false),
    ]))
}

fn write_err(path: &Path) -> impl Fn(String) -> EvaluateError + '_ {
    move |reason| EvaluateError::Write { path: path.to_path_buf(), reason }
}

const BATCH_ROWS: usize = 65_536;

/// Writes `rows` to `path` atomically.
pub fn write_decisions(path: &Path, rows: &[DecisionRow]) -> Result<(), EvaluateError> {
    let err = write_err(path);
    let (dir, name) = split_path(path).map_err(|e| err(e.to_string()))?;
    let (tmp, file) = TempFile::create(dir, &name).map_err(|e| err(e.to_string()))?;
    let schema = schema();
    let mut w = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| err(e.to_string()))?;
    for chunk in rows.chunks(BATCH_ROWS) {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.ts_ms))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.candidate.as_str()))),
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.horizon))),
            Arc::new(Int8Array::from_iter_values(chunk.iter().map(|r| r.direction))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.confidence))),
            Arc::new(BooleanArray::from(chunk.iter().map(|r| r.should_trade).collect::<Vec<bool>>())),
            Arc::new(Int8Array::from_iter_values(chunk.iter().map(|r| r.label))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.realized_return_bps))),
            Arc::new(BooleanArray::from(chunk.iter().map(|r| r.opened).collect::<Vec<bool>>())),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.cost_bps))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.pnl_bps))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| err(e.to_string()))?;
        w.write(&batch).map_err(|e| err(e.to_string()))?;
    }
    let file = w.into_inner().map_err(|e| err(e.to_string()))?;
    tmp.persist(file, path).map_err(|e| err(e.to_string()))
}

/// Reads a `decisions.parquet` back, checking each column's name and type.
pub fn read_decisions(path: &Path) -> Result<Vec<DecisionRow>, EvaluateError> {
    let bad = |reason: String| EvaluateError::Data(format!("{}: {reason}", path.display()));
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        fn col<'a, T: Array + 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
            let c = b.column_by_name(name).ok_or_else(|| format!("missing column {name}"))?;
            if c.null_count() > 0 {
                return Err(format!("column {name} has nulls"));
            }
            c.as_any().downcast_ref::<T>().ok_or_else(|| format!("column {name} has type {}", c.data_type()))
        }
        let ts = col::<Int64Array>(&batch, "ts_ms").map_err(bad)?;
        let cand = col::<StringArray>(&batch, "candidate").map_err(bad)?;
        let hor = col::<UInt32Array>(&batch, "horizon").map_err(bad)?;
        let dir = col::<Int8Array>(&batch, "direction").map_err(bad)?;
        let conf = col::<Float64Array>(&batch, "confidence").map_err(bad)?;
        let st = col::<BooleanArray>(&batch, "should_trade").map_err(bad)?;
        let label = col::<Int8Array>(&batch, "label").map_err(bad)?;
        let ret = col::<Float64Array>(&batch, "realized_return_bps").map_err(bad)?;
        let opened = col::<BooleanArray>(&batch, "opened").map_err(bad)?;
        let cost = col::<Float64Array>(&batch, "cost_bps").map_err(bad)?;
        let pnl = col::<Float64Array>(&batch, "pnl_bps").map_err(bad)?;
        for i in 0..batch.num_rows() {
            rows.push(DecisionRow {
                ts_ms: ts.value(i),
                candidate: cand.value(i).to_owned(),
                horizon: hor.value(i),
                direction: dir.value(i),
                confidence: conf.value(i),
                should_trade: st.value(i),
                label: label.value(i),
                realized_return_bps: ret.value(i),
                opened: opened.value(i),
                cost_bps: cost.value(i),
                pnl_bps: pnl.value(i),
            });
        }
    }
    Ok(rows)
}

/// Percentiles of one stage's latency, µs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut v: Vec<f64>) -> Latency {
        v.sort_by(f64::total_cmp);
        let at =
            |q: f64| if v.is_empty() { 0.0 } else { v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)] };
        Latency { samples: v.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v.last().copied().unwrap_or(0.0) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// The stored data's first and last snapshot, exchange ms.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The evaluated period `[from_ms, to_ms)`; before it is the fit period.
    pub from_ms: i64,
    pub to_ms: i64,
    pub fit_ticks: usize,
    pub evaluated_ticks: usize,
    /// Evaluated ticks without a decision (warming up after a gap, or no feature vector).
    pub ticks_without_decision: u64,
    pub failed_decisions: u64,
    /// Engine decisions dropped because a loaded model gave none.
    pub dropped_decisions: u64,
    pub gaps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Costs {
    pub cost_per_trade_bps: f64,
    /// `"book"`: the half-spread at entry and at exit from the stored book; else a fixed bps per side.
    pub half_spread: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitSummary {
    pub labelled_ticks: usize,
    /// `[DOWN, NEUTRAL, UP]` at the primary horizon.
    pub class_shares: [f64; 3],
    pub baseline_features: Vec<&'static str>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub symbol: String,
    pub models: Vec<ModelType>,
    pub period: Period,
    pub costs: Costs,
    pub fit: FitSummary,
    /// Engine decisions every candidate answered.
    pub decisions: usize,
    pub horizons: Vec<Horizon>,
    /// Outcomes told to each consensus strategy (at the primary horizon).
    pub outcomes_told: u64,
    /// The adaptive strategy's contributions per model over time (sampled).
    pub adaptive_weights: Vec<WeightPoint>,
    /// Per stage, µs: `features` (feature engine and windows), each model,
    /// `consensus`, `engine` (the engine's whole call), `tick` (snapshot in to decision out).
    pub latency_us: BTreeMap<String, Latency>,
    pub bootstrap: serde_json::Value,
    /// One sentence per comparison.
    pub verdicts: Vec<String>,
}

impl Report {
    pub fn build(opts: &EvaluateOptions, replayed: &Replayed, calls: &Calls, scored: &Scored) -> Report {
        let engine_calls = calls.decisions.iter().map(|&i| &replayed.calls[i]);
        let mut latency: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for c in engine_calls {
            latency.entry("features".into()).or_default().push(c.features_us);
            for (m, us) in &c.decision.timings.models_us {
                latency.entry(m.as_str().into()).or_default().push(*us);
            }
            latency.entry("consensus".into()).or_default().push(c.decision.timings.consensus_us);
            latency.entry("engine".into()).or_default().push(c.decision.timings.total_us);
            latency.entry("tick".into()).or_default().push(c.tick_us);
        }
        Report {
            symbol: opts.symbol.clone(),
            models: calls
                .candidates
                .iter()
                .filter_map(|c| match c {
                    super::Candidate::Model(m) => Some(*m),
                    _ => None,
                })
                .collect(),
            period: Period {
                first_ms: replayed.first_ms,
                last_ms: replayed.last_ms,
                from_ms: replayed.from_ms,
                to_ms: replayed.to_ms,
                fit_ticks: replayed.fit.len(),
                evaluated_ticks: replayed.eval.len(),
                ticks_without_decision: replayed.ticks_without_decision,
                failed_decisions: replayed.failed_decisions,
                dropped_decisions: calls.dropped,
                gaps: replayed.gaps,
            },
            costs: Costs {
                cost_per_trade_bps: opts.cost_bps,
                half_spread: opts.half_spread_bps.map_or_else(|| "book".into(), serde_json::Value::from),
            },
            fit: FitSummary {
                labelled_ticks: calls.fit_labelled_ticks,
                class_shares: calls.fit_class_shares,
                baseline_features: crate::train::baseline::BASELINE_FEATURES.to_vec(),
            },
            decisions: calls.decisions.len(),
            horizons: scored.horizons.clone(),
            outcomes_told: calls.outcomes_told,
            adaptive_weights: calls.adaptive_weights.clone(),
            latency_us: latency.into_iter().map(|(k, v)| (k, Latency::of(v))).collect(),
            bootstrap: serde_json::json!({ "resamples": opts.resamples, "seed": opts.seed, "interval": 0.95 }),
            verdicts: scored.horizons.iter().flat_map(|h| h.comparisons.iter().map(|c| c.verdict.clone())).collect(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), EvaluateError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| write_err(path)(e.to_string()))?;
        crate::fsutil::write_atomic(path, &json).map_err(|e| write_err(path)(e.to_string()))
    }
}
