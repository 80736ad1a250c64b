//! The baseline reported beside each model: multinomial logistic regression
//! on the order-flow and imbalance features at the sample's tick (no window),
//! trained on a fold's training samples and scored on its validation samples
//! with the same labels. If a deep model does not beat this, it has learned
//! nothing the book's imbalance did not already say.
//!
//! Fitting: the inputs standardized by the fold's normalizer; softmax
//! cross-entropy plus a small L2 penalty on the weights, full-batch gradient
//! descent from zero with step `2 / d` (the loss's curvature is at most
//! `λmax(cov)/2 ≤ d/2` for `d` standardized inputs, so this step is stable),
//! a fixed number of iterations. Deterministic, no RNG.

use crate::features::feature_index;
use crate::train::dataset::{Dataset, Normalizer};
use crate::train::scores::{compute, Metrics};

/// The order-flow / imbalance columns of docs/features.md the baseline sees.
pub const BASELINE_FEATURES: [&str; 9] = [
    "microprice_offset",
    "imbalance_1",
    "imbalance_5",
    "imbalance_10",
    "imbalance_all",
    "ofi_1",
    "ofi_10",
    "taker_buy_ratio",
    "buy_ratio_10",
];

const ITERATIONS: usize = 400;
const L2: f64 = 1e-4;

/// A fitted multinomial logistic regression.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    /// Feature column indices (into the 112).
    pub columns: Vec<usize>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// `(3, d)` row-major.
    pub weights: Vec<f64>,
    pub bias: [f64; 3],
}

fn columns() -> Vec<usize> {
    BASELINE_FEATURES.iter().map(|n| feature_index(n).expect("baseline features are feature names")).collect()
}

fn softmax(z: &mut [f64; 3]) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for v in z.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in z.iter_mut() {
        *v /= s;
    }
}

impl LogisticRegression {
    /// The standardized inputs of a feature vector (the 112 columns).
    fn inputs(&self, row: &[f32], x: &mut [f64]) {
        for (k, &c) in self.columns.iter().enumerate() {
            x[k] = (f64::from(row[c]) - self.mean[k]) / self.std[k];
        }
    }

    fn logits(&self, x: &[f64]) -> [f64; 3] {
        let d = self.columns.len();
        let mut z = self.bias;
        for (c, zc) in z.iter_mut().enumerate() {
            *zc += self.weights[c * d..(c + 1) * d].iter().zip(x).map(|(w, v)| w * v).sum::<f64>();
        }
        z
    }

    /// Fits on `rows` (sample ends) with their classes `y` (0..3).
    pub fn fit(ds: &Dataset, norm: &Normalizer, rows: &[usize], y: &[u8]) -> LogisticRegression {
        let rows: Vec<&[f32]> = rows.iter().map(|&t| ds.row(t)).collect();
        Self::fit_rows(norm, &rows, y)
    }

    /// Fits on feature vectors (112 columns each) with their classes `y` (0..3).
    pub fn fit_rows(norm: &Normalizer, rows: &[&[f32]], y: &[u8]) -> LogisticRegression {
        let columns = columns();
        let d = columns.len();
        let mut lr = LogisticRegression {
            mean: columns.iter().map(|&c| norm.mean[c]).collect(),
            std: columns.iter().map(|&c| norm.std[c]).collect(),
            columns,
            weights: vec![0.0; 3 * d],
            bias: [0.0; 3],
        };
        if rows.is_empty() {
            return lr;
        }
        let n = rows.len();
        let mut xs = vec![0.0; n * d];
        for (i, row) in rows.iter().enumerate() {
            lr.inputs(row, &mut xs[i * d..(i + 1) * d]);
        }
        let step = 2.0 / d as f64;
        let mut gw = vec![0.0; 3 * d];
        for _ in 0..ITERATIONS {
            gw.iter_mut().for_each(|g| *g = 0.0);
            let mut gb = [0.0; 3];
            for (i, x) in xs.chunks_exact(d).enumerate() {
                let mut p = lr.logits(x);
                softmax(&mut p);
                p[y[i] as usize] -= 1.0;
                for c in 0..3 {
                    gb[c] += p[c];
                    for (g, v) in gw[c * d..(c + 1) * d].iter_mut().zip(x) {
                        *g += p[c] * v;
                    }
                }
            }
            for (w, g) in lr.weights.iter_mut().zip(&gw) {
                *w -= step * (g / n as f64 + L2 * *w);
            }
            for (b, g) in lr.bias.iter_mut().zip(gb) {
                *b -= step * g / n as f64;
            }
        }
        lr
    }

    /// The predicted class of row `t`.
    pub fn predict(&self, ds: &Dataset, t: usize) -> usize {
        self.predict_row(ds.row(t))
    }

    /// The class probabilities `[DOWN, NEUTRAL, UP]` of a feature vector.
    pub fn probabilities(&self, row: &[f32]) -> [f64; 3] {
        let mut x = vec![0.0; self.columns.len()];
        self.inputs(row, &mut x);
        let mut z = self.logits(&x);
        softmax(&mut z);
        z
    }

    /// The predicted class of a feature vector (the first on a tie).
    pub fn predict_row(&self, row: &[f32]) -> usize {
        let mut x = vec![0.0; self.columns.len()];
        self.inputs(row, &mut x);
        let z = self.logits(&x);
        let mut best = 0;
        for c in 1..3 {
            if z[c] > z[best] {
                best = c;
            }
        }
        best
    }

    /// Metrics on `rows` with classes `y` and returns `ret`.
    pub fn score(&self, ds: &Dataset, rows: &[usize], y: &[u8], ret: &[f64]) -> Metrics {
        compute(rows.iter().enumerate().map(|(i, &t)| (y[i] as usize, self.predict(ds, t), ret[i])))
    }
}
