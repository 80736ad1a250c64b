//! `RawLOBSequence`: the last `sequence_length` snapshots, and the TLOB input
//! tensor built from them (docs/data.md, "The TLOB input tensor").

use super::types::{Snapshot, NUM_LEVELS};

/// Features per level: `[bid_price, bid_volume, ask_price, ask_volume]`.
pub const FEATURES_PER_LEVEL: usize = 4;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequenceError {
    #[error("a sequence needs at least one snapshot")]
    Empty,
    #[error("the last snapshot has no mid price (bid_px_0 or ask_px_0 is missing)")]
    NoReferenceMid,
    #[error("the last snapshot's mid price {0} is not finite and positive")]
    BadReferenceMid(f64),
}

/// A run of consecutive snapshots, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLOBSequence {
    snapshots: Vec<Snapshot>,
}

impl RawLOBSequence {
    /// Requires at least one snapshot and a usable mid in the last one.
    pub fn new(snapshots: Vec<Snapshot>) -> Result<RawLOBSequence, SequenceError> {
        let last = snapshots.last().ok_or(SequenceError::Empty)?;
        let mid = last.mid().ok_or(SequenceError::NoReferenceMid)?;
        if !mid.is_finite() || mid <= 0.0 {
            return Err(SequenceError::BadReferenceMid(mid));
        }
        Ok(RawLOBSequence { snapshots })
    }

    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// `[len, NUM_LEVELS, 4]`: `(100, 20, 4)` for the default sequence length.
    pub fn tensor_shape(&self) -> [usize; 3] {
        [self.snapshots.len(), NUM_LEVELS, FEATURES_PER_LEVEL]
    }

    /// The reference mid: the last snapshot's `(bid_px_0 + ask_px_0) / 2`.
    pub fn mid_ref(&self) -> f64 {
        // `new` guarantees a last snapshot with a mid.
        self.snapshots.last().and_then(|s| s.mid()).unwrap_or(f64::NAN)
    }

    /// The TLOB input, row-major `[t][level][feature]` with features
    /// `[bid_price, bid_volume, ask_price, ask_volume]`:
    /// - prices: `1e4 · (px / mid_ref − 1)` (basis points from the last mid);
    /// - volumes: `ln(1 + qty)`, standardized over all the sequence's present
    ///   volume entries (both sides, all levels): `(x − mean) / (std + 1e-8)`,
    ///   `std` the population standard deviation (ddof = 0);
    /// - missing levels (NaN) are 0 in all their features.
    ///
    /// Computed in f64, stored as f32.
    pub fn to_normalized_tensor(&self) -> Vec<f32> {
        let mid_ref = self.mid_ref();
        let n = self.snapshots.len() * NUM_LEVELS * FEATURES_PER_LEVEL;
        let mut out = vec![0f32; n];
        let volume = volume_scale(&self.snapshots);
        let price = |px: f64| (1e4 * (px / mid_ref - 1.0)) as f32;
        for (s, rows) in self.snapshots.iter().zip(out.chunks_exact_mut(SNAPSHOT_ROW)) {
            write_levels(s, price, &volume, rows);
        }
        out
    }

    /// The TLOB input under the `snapshot` normalization (a model's
    /// `lob_normalization`; `to_normalized_tensor` is the `window` one), same layout as
    /// `to_normalized_tensor`: each snapshot's rows by [`snapshot_rows`] from
    /// it and the one before it (for the first, `before`: the snapshot just
    /// before the window in the same stream, if there is one).
    pub fn to_snapshot_tensor(&self, before: Option<&Snapshot>) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.snapshots.len() * SNAPSHOT_ROW);
        let mut prev = before;
        for s in &self.snapshots {
            out.extend_from_slice(&snapshot_rows(prev, s));
            prev = Some(s);
        }
        out
    }
}

/// Values of one snapshot in the TLOB input: `NUM_LEVELS × 4`.
pub const SNAPSHOT_ROW: usize = NUM_LEVELS * FEATURES_PER_LEVEL;

/// One snapshot's TLOB input under the `snapshot` normalization, from it and
/// the snapshot before it in the stream (`prev`, `None` at a stream's start
/// or after a gap), `[level][feature]` as in `to_normalized_tensor`:
/// - prices: `1e4 · (px / ref − 1)`, `ref` the previous snapshot's mid (so a
///   row holds the move since the last snapshot as well as the book's shape),
///   or this snapshot's own mid when there is no previous one or it has no
///   mid; all prices 0 when neither has one;
/// - volumes: `ln(1 + qty)` standardized over this snapshot's present volume
///   entries (both sides, all levels), `(x − mean) / (std + 1e-8)`, ddof = 0;
/// - missing levels (NaN) are 0 in all their features.
///
/// It reads nothing else, so a snapshot's rows are the same in every window
/// that holds it. Computed in f64, stored as f32.
pub fn snapshot_rows(prev: Option<&Snapshot>, s: &Snapshot) -> [f32; SNAPSHOT_ROW] {
    let mut out = [0f32; SNAPSHOT_ROW];
    let reference = prev.and_then(|p| p.mid()).or_else(|| s.mid()).filter(|m| m.is_finite() && *m > 0.0);
    let price = |px: f64| reference.map_or(0.0, |r| (1e4 * (px / r - 1.0)) as f32);
    write_levels(s, price, volume_scale(std::slice::from_ref(s)), &mut out);
    out
}

/// A quantity's standardized volume, `(ln(1 + q) − mean) / (std + 1e-8)` (0
/// for a NaN), the statistics over the present volume entries of
/// `snapshots` (both sides, all levels; population std, two passes for
/// accuracy): what both normalizations scale volumes by.
fn volume_scale(snapshots: &[Snapshot]) -> impl Fn(f64) -> f32 {
    let (mut count, mut sum) = (0usize, 0f64);
    for v in snapshots.iter().flat_map(log_volumes) {
        sum += v;
        count += 1;
    }
    let mean = if count > 0 { sum / count as f64 } else { 0.0 };
    let sq: f64 = snapshots.iter().flat_map(log_volumes).map(|v| (v - mean) * (v - mean)).sum();
    let denom = if count > 0 { (sq / count as f64).sqrt() } else { 0.0 } + 1e-8;
    move |q: f64| if q.is_nan() { 0.0 } else { ((q.ln_1p() - mean) / denom) as f32 }
}

/// `s`'s levels into `out` (`[level][feature]`, zeros to start with): each
/// present level's prices by `price` and volumes by `volume`; a missing
/// level (NaN price) keeps its zeros.
fn write_levels(s: &Snapshot, price: impl Fn(f64) -> f32, volume: impl Fn(f64) -> f32, out: &mut [f32]) {
    for lvl in 0..NUM_LEVELS {
        let o = lvl * FEATURES_PER_LEVEL;
        for (side, l) in [(0, s.bids[lvl]), (2, s.asks[lvl])] {
            if !l.price.is_nan() {
                out[o + side] = price(l.price);
                out[o + side + 1] = volume(l.quantity);
            }
        }
    }
}

/// `ln(1 + qty)` of every present level (price and quantity not NaN), both sides.
fn log_volumes(s: &Snapshot) -> impl Iterator<Item = f64> + '_ {
    s.bids.iter().chain(s.asks.iter()).filter(|l| !l.price.is_nan() && !l.quantity.is_nan()).map(|l| l.quantity.ln_1p())
}
