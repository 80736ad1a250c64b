//! The oracle of the synthetic market (docs/data.md, "Synthetic market"):
//! it knows the simulator's latent state and drift formula, and for every
//! tick predicts the label class that is most probable given them
//! ([`MarketSimulator::forecast`], [`Forecast::predict`]). Its accuracy is
//! the ceiling a model could reach on a planted effect; with every effect
//! off it is the majority-class rate at best.

use super::dataset::{auto_alpha, Direction, HorizonLabels};
use crate::market::simulator::{Forecast, MarketSimulator, SimConfig, SimError};

/// The oracle's score over one simulated stretch.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleScore {
    /// Labelled ticks.
    pub rows: usize,
    /// Auto α (1/3 quantile of |r| over all labelled ticks).
    pub alpha: f64,
    /// Share of labelled ticks where the oracle's class is the label's.
    pub accuracy: f64,
    /// Share of the most frequent class.
    pub majority: f64,
    /// Accuracy of the same oracle told only the volatility regime (its
    /// forecast's mean set to 0): what knowing when the price is still, not
    /// where it goes, is worth. Today's market has volatility regimes, so this
    /// beats the majority class a little even with every effect off.
    pub regime_only: f64,
    /// Shares of DOWN, NEUTRAL, UP among the labels.
    pub shares: [f64; 3],
}

impl OracleScore {
    /// Accuracy minus the majority-class rate.
    pub fn edge(&self) -> f64 {
        self.accuracy - self.majority
    }

    /// Accuracy minus the regime-only oracle's: what the drift is worth.
    pub fn drift_edge(&self) -> f64 {
        self.accuracy - self.regime_only
    }
}

/// Simulates `ticks` steps of `cfg`, labels every tick at `horizon` as
/// docs/training.md does (auto α over the whole stretch) and scores the
/// oracle on them.
pub fn oracle_score(cfg: &SimConfig, ticks: usize, horizon: usize) -> Result<OracleScore, SimError> {
    let mut sim = MarketSimulator::new(cfg.clone())?;
    let tick = cfg.tick_size.to_f64();
    let mut mid = Vec::with_capacity(ticks);
    let mut forecasts: Vec<Forecast> = Vec::with_capacity(ticks);
    for _ in 0..ticks {
        let m = sim.step()?.snapshot.mid().ok_or_else(|| SimError::Internal("a snapshot without a mid".into()))?;
        mid.push(m);
        forecasts.push(sim.forecast(horizon));
    }
    let labels = HorizonLabels::compute(&mid, &vec![0; mid.len()], horizon);
    let alpha = auto_alpha(&labels, 0..mid.len()).map_err(|e| SimError::Internal(e.to_string()))?;
    let (mut rows, mut hits, mut still_hits, mut counts) = (0usize, 0usize, 0usize, [0usize; 3]);
    for t in 0..mid.len() {
        let Some(class) = labels.class(t, alpha) else { continue };
        let class = match class {
            Direction::Down => 0,
            Direction::Neutral => 1,
            Direction::Up => 2,
        };
        rows += 1;
        counts[class] += 1;
        let a = alpha * mid[t] / tick;
        hits += usize::from(forecasts[t].predict(a) == class);
        let no_drift = Forecast { mean_ticks: 0.0, ..forecasts[t] };
        still_hits += usize::from(no_drift.predict(a) == class);
    }
    let n = rows.max(1) as f64;
    Ok(OracleScore {
        rows,
        alpha,
        accuracy: hits as f64 / n,
        regime_only: still_hits as f64 / n,
        majority: *counts.iter().max().unwrap_or(&0) as f64 / n,
        shares: counts.map(|c| c as f64 / n),
    })
}
