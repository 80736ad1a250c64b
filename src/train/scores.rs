//! Classification and trading metrics of docs/training.md's results: accuracy,
//! F1 macro, Matthews correlation (multiclass), the confusion matrix, and the
//! profit factor of trading the predicted direction.
//!
//! Conventions where the formulas are undefined (each one documented here so
//! the JSON is never silently misleading):
//! - F1 macro averages over the classes that occur in the labels or the
//!   predictions (scikit-learn's default label set); a class with no true and
//!   no predicted sample does not drag the mean to 0. No samples → 0.
//! - MCC uses the multiclass form (Gorodkin 2004, as scikit-learn): 0 when a
//!   denominator term is 0 (e.g. everything predicted as one class).
//! - The profit factor is `None` when there are no trades or no losing
//!   trade (gross loss 0): the figure is undefined there; `gross_gain`,
//!   `gross_loss` and `trades` are reported beside it.

use serde::{Deserialize, Serialize};

/// Classes in the models' order `[DOWN, NEUTRAL, UP]`.
pub const NUM_CLASSES: usize = 3;
const DOWN: usize = 0;
const UP: usize = 2;

/// `confusion[true][predicted]` counts.
pub type Confusion = [[u64; NUM_CLASSES]; NUM_CLASSES];

/// The metrics of one set of predictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub samples: u64,
    pub accuracy: f64,
    pub f1_macro: f64,
    pub mcc: f64,
    /// `confusion[true][predicted]`, classes `[DOWN, NEUTRAL, UP]`.
    pub confusion: Confusion,
    /// The share of the most frequent true class (what always guessing it scores).
    pub majority_class_rate: f64,
    pub trades: u64,
    pub gross_gain: f64,
    pub gross_loss: f64,
    pub profit_factor: Option<f64>,
}

/// Accumulates predictions and computes [`Metrics`].
#[derive(Clone, Debug, Default)]
pub struct MetricsAcc {
    confusion: Confusion,
    trades: u64,
    gain: f64,
    loss: f64,
}

impl MetricsAcc {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample: its true class, the predicted class, and the realized
    /// return (any unit; the profit factor is a ratio).
    pub fn push(&mut self, truth: usize, predicted: usize, ret: f64) {
        self.confusion[truth][predicted] += 1;
        let pnl = match predicted {
            UP => ret,
            DOWN => -ret,
            _ => return,
        };
        self.trades += 1;
        if pnl > 0.0 {
            self.gain += pnl;
        } else {
            self.loss -= pnl;
        }
    }

    pub fn finish(&self) -> Metrics {
        let c = &self.confusion;
        let n: u64 = c.iter().flatten().sum();
        let truth: Vec<u64> = (0..NUM_CLASSES).map(|k| c[k].iter().sum()).collect();
        let pred: Vec<u64> = (0..NUM_CLASSES).map(|k| (0..NUM_CLASSES).map(|t| c[t][k]).sum()).collect();
        let correct: u64 = (0..NUM_CLASSES).map(|k| c[k][k]).sum();
        let frac = |a: u64| if n == 0 { 0.0 } else { a as f64 / n as f64 };

        let mut f1_sum = 0.0;
        let mut f1_classes = 0;
        for k in 0..NUM_CLASSES {
            if truth[k] + pred[k] == 0 {
                continue;
            }
            f1_classes += 1;
            // F1 = 2·tp / (2·tp + fp + fn) = 2·tp / (truth + pred).
            f1_sum += 2.0 * c[k][k] as f64 / (truth[k] + pred[k]) as f64;
        }
        let f1_macro = if f1_classes == 0 { 0.0 } else { f1_sum / f1_classes as f64 };

        let (s, cc) = (n as f64, correct as f64);
        let pt: f64 = (0..NUM_CLASSES).map(|k| pred[k] as f64 * truth[k] as f64).sum();
        let pp: f64 = pred.iter().map(|&p| (p as f64).powi(2)).sum();
        let tt: f64 = truth.iter().map(|&t| (t as f64).powi(2)).sum();
        let den = ((s * s - pp) * (s * s - tt)).sqrt();
        let mcc = if den > 0.0 { (cc * s - pt) / den } else { 0.0 };

        let profit_factor = (self.trades > 0 && self.loss > 0.0).then(|| self.gain / self.loss);
        Metrics {
            samples: n,
            accuracy: frac(correct),
            f1_macro,
            mcc,
            confusion: *c,
            majority_class_rate: frac(truth.iter().copied().max().unwrap_or(0)),
            trades: self.trades,
            gross_gain: self.gain,
            gross_loss: self.loss,
            profit_factor,
        }
    }
}

/// The index of the largest logit (the first on a tie, as `argmax`).
pub fn argmax3(l: &[f32; 3]) -> usize {
    let mut best = 0;
    for k in 1..3 {
        if l[k] > l[best] {
            best = k;
        }
    }
    best
}

/// Metrics of `(truth, predicted, return)` triples.
pub fn compute(samples: impl IntoIterator<Item = (usize, usize, f64)>) -> Metrics {
    let mut acc = MetricsAcc::new();
    for (t, p, r) in samples {
        acc.push(t, p, r);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() < 1e-12, "{what}: got {a}, want {b}");
    }

    #[test]
    fn a_hand_computed_case() {
        // truth/pred pairs: (0,0) (0,2) (1,1) (1,1) (1,0) (2,2) (2,2) (2,1)
        // returns:           -2    +1    0     0    -1    +3    -1    +5
        let s =
            [(0, 0, -2.0), (0, 2, 1.0), (1, 1, 0.0), (1, 1, 0.0), (1, 0, -1.0), (2, 2, 3.0), (2, 2, -1.0), (2, 1, 5.0)];
        let m = compute(s);
        assert_eq!(m.confusion, [[1, 0, 1], [1, 2, 0], [0, 1, 2]]);
        near(m.accuracy, 5.0 / 8.0, "accuracy");
        // F1: DOWN 2·1/(2+2) = 0.5, NEUTRAL 2·2/(3+3) = 2/3, UP 2·2/(3+3) = 2/3.
        near(m.f1_macro, (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0, "f1");
        // MCC: c = 5, s = 8, t = (2,3,3), p = (2,3,3):
        // (5·8 − (4+9+9)) / sqrt((64 − 22)(64 − 22)) = 18 / 42.
        near(m.mcc, 18.0 / 42.0, "mcc");
        near(m.majority_class_rate, 3.0 / 8.0, "majority");
        // Trades (pred UP or DOWN): DOWN on −2 → +2, UP on +1 → +1, DOWN on −1 → +1,
        // UP on +3 → +3, UP on −1 → −1. Gains 7, losses 1.
        assert_eq!(m.trades, 5);
        near(m.gross_gain, 7.0, "gain");
        near(m.gross_loss, 1.0, "loss");
        assert_eq!(m.profit_factor, Some(7.0));
    }

    #[test]
    fn perfect_and_inverted_binary_mcc() {
        let perfect = compute([(0, 0, 1.0), (2, 2, 1.0), (0, 0, 1.0), (2, 2, 1.0)]);
        near(perfect.mcc, 1.0, "perfect mcc");
        near(perfect.f1_macro, 1.0, "perfect f1 over the two present classes");
        let inverted = compute([(0, 2, 1.0), (2, 0, 1.0), (0, 2, 1.0), (2, 0, 1.0)]);
        near(inverted.mcc, -1.0, "inverted mcc");
        near(inverted.accuracy, 0.0, "inverted accuracy");
    }

    #[test]
    fn degenerate_cases() {
        // No samples at all.
        let empty = compute([]);
        assert_eq!((empty.samples, empty.accuracy, empty.f1_macro, empty.mcc), (0, 0.0, 0.0, 0.0));
        assert_eq!(empty.profit_factor, None);
        // Everything predicted NEUTRAL: no trades, MCC's denominator is 0.
        let neutral = compute([(0, 1, -3.0), (1, 1, 0.0), (2, 1, 4.0)]);
        assert_eq!((neutral.trades, neutral.profit_factor), (0, None));
        near(neutral.mcc, 0.0, "one predicted class");
        near(neutral.accuracy, 1.0 / 3.0, "accuracy");
        // F1: DOWN 0, NEUTRAL 2·1/(1+3) = 0.5, UP 0 → mean 1/6.
        near(neutral.f1_macro, 0.5 / 3.0, "f1");
        // One true class, predicted right: accuracy 1, MCC 0 (undefined), F1 1.
        let one = compute([(2, 2, 1.0), (2, 2, 2.0)]);
        near(one.accuracy, 1.0, "one class accuracy");
        near(one.mcc, 0.0, "one class mcc");
        near(one.f1_macro, 1.0, "one class f1");
        near(one.majority_class_rate, 1.0, "majority");
        // Only winning trades: gross loss 0, the factor is undefined (not infinite).
        assert_eq!((one.trades, one.profit_factor), (2, None));
        near(one.gross_gain, 3.0, "gain");
        // A zero return on a trade counts as a trade but neither gain nor loss.
        let flat = compute([(1, 2, 0.0), (0, 0, -1.0), (2, 0, 2.0)]);
        assert_eq!(flat.trades, 3);
        assert_eq!(flat.profit_factor, Some(0.5));
    }

    #[test]
    fn argmax_takes_the_first_on_ties() {
        assert_eq!(argmax3(&[1.0, 1.0, 0.0]), 0);
        assert_eq!(argmax3(&[0.0, 2.0, 2.0]), 1);
        assert_eq!(argmax3(&[0.0, -1.0, 3.0]), 2);
    }
}
