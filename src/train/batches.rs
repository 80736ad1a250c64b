//! Sample indices → [`TrainBatch`]es: normalized feature windows `(B, T, F)`
//! for MPD and CNN-LSTM; for TLOB the normalized LOB windows `(B, 100, 20, 4)`
//! and the normalized feature vector as `aux (B, 112)`; targets per set of
//! heads (class id, `target_bps / return_scale`). Plus the seeded shuffle.
//!
//! Buffers are reused: filling a batch clears and refills the tensors it
//! already has, so an epoch allocates once per batch shape.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::features::NUM_FEATURES;
use crate::model::{CnnLstmConfig, LobNormalization, ModelConfig, MpdConfig};
use crate::tensor::Tensor;
use crate::train::dataset::{Dataset, HorizonLabels, Normalizer, TLOB_WINDOW};
use crate::train::net::{HeadTargets, TrainBatch};

/// What one model trains on: its input window and label horizons.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Rows per sample window (the feature window, or TLOB's 100 snapshots).
    pub window: usize,
    /// One per set of heads, in the model's order.
    pub horizons: Vec<usize>,
    /// Which of `horizons` the primary outputs (and the metrics) use.
    pub primary: usize,
    pub tlob: bool,
    /// TLOB with an auxiliary encoder.
    pub aux: bool,
    /// TLOB's input contract (`Window` for the others, unused).
    pub lob_normalization: LobNormalization,
}

impl Task {
    /// MPD / CNN-LSTM: their config's window, one horizon (`horizon`);
    /// TLOB: 100 snapshots, its config's horizons.
    pub fn of(config: &ModelConfig, horizon: usize) -> Result<Task> {
        let input_features = match config {
            ModelConfig::Mpd(c) => c.input_features,
            ModelConfig::CnnLstm(c) => c.input_features,
            ModelConfig::Tlob(_) => NUM_FEATURES,
        };
        if input_features != NUM_FEATURES {
            return Err(Error::config(
                "model.input_features",
                format!("is {input_features}, the feature table has {NUM_FEATURES} columns"),
            ));
        }
        Ok(match config {
            ModelConfig::Mpd(MpdConfig { sequence_length: window, .. })
            | ModelConfig::CnnLstm(CnnLstmConfig { sequence_length: window, .. }) => Task {
                window: *window,
                horizons: vec![horizon],
                primary: 0,
                tlob: false,
                aux: false,
                lob_normalization: LobNormalization::Window,
            },
            ModelConfig::Tlob(c) => {
                if c.sequence_length != TLOB_WINDOW || c.num_levels != 20 || c.lob_features != 4 {
                    return Err(Error::config(
                        "model.sequence_length",
                        format!(
                            "TLOB trains on the collector's {TLOB_WINDOW} × 20 × 4 windows; the config asks for {} × {} × {}",
                            c.sequence_length, c.num_levels, c.lob_features
                        ),
                    ));
                }
                if c.aux_features != 0 && c.aux_features != NUM_FEATURES {
                    return Err(Error::config(
                        "model.aux_features",
                        format!("is {}, the feature vector has {NUM_FEATURES} (or 0 for none)", c.aux_features),
                    ));
                }
                let primary = c.horizons.iter().position(|&h| h == c.primary_horizon).unwrap_or(0);
                Task {
                    window: TLOB_WINDOW,
                    horizons: c.horizons.clone(),
                    primary,
                    tlob: true,
                    aux: c.aux_features > 0,
                    lob_normalization: c.lob_normalization,
                }
            }
        })
    }

    pub fn primary_horizon(&self) -> usize {
        self.horizons[self.primary]
    }
}

/// Everything needed to turn sample rows into batches for one fold.
pub struct Batcher<'a> {
    pub ds: &'a Dataset,
    pub task: &'a Task,
    /// One per horizon of the task.
    pub labels: &'a [HorizonLabels],
    /// α per horizon (fit on this fold's training part when auto).
    pub alphas: &'a [f64],
    pub norm: &'a Normalizer,
    pub return_scale: f64,
}

/// The slot's tensor emptied and reshaped, with room for the whole shape
/// (allocated fallibly: the shape comes from the job's config).
fn refill<'a>(slot: &'a mut Option<Tensor>, shape: Vec<usize>, what: &str) -> Result<&'a mut Vec<f32>> {
    let t = slot.get_or_insert_with(|| Tensor { shape: Vec::new(), data: Vec::new() });
    let n = shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    t.shape = shape;
    t.data.clear();
    if t.data.capacity() < n {
        t.data = crate::tensor::try_vec(n, what)?;
    }
    Ok(&mut t.data)
}

impl Batcher<'_> {
    /// The class id and return target (bps) of row `t` at horizon index `h`.
    pub fn target(&self, t: usize, h: usize) -> Result<(u8, f64)> {
        let l = &self.labels[h];
        let class = l.class(t, self.alphas[h]).ok_or_else(|| {
            Error::input("samples", format!("row {t} has no label at horizon {} (not a sample end)", l.horizon))
        })?;
        Ok((class as u8, l.target_bps[t]))
    }

    /// Fills `out` with the samples ending at `rows`.
    pub fn fill(&self, rows: &[usize], out: &mut TrainBatch) -> Result<()> {
        let b = rows.len();
        out.batch = b;
        let task = self.task;
        if task.tlob {
            out.features = None;
            let lob = refill(&mut out.lob, vec![b, TLOB_WINDOW, 20, 4], "lob")?;
            for &t in rows {
                let input = self
                    .ds
                    .tlob_input_as(t, task.lob_normalization)
                    .map_err(|e| Error::input("lob", e.to_string()))?
                    .ok_or_else(|| Error::input("lob", format!("row {t}: no full window of snapshots")))?;
                lob.extend_from_slice(&input.lob);
            }
            if task.aux {
                let aux = refill(&mut out.aux, vec![b, NUM_FEATURES], "aux")?;
                for &t in rows {
                    let start = aux.len();
                    aux.extend_from_slice(self.ds.row(t));
                    self.norm.apply(&mut aux[start..]);
                }
            } else {
                out.aux = None;
            }
        } else {
            out.lob = None;
            out.aux = None;
            let w = task.window;
            let f = refill(&mut out.features, vec![b, w, NUM_FEATURES], "features")?;
            for &t in rows {
                let win = self
                    .ds
                    .feature_window(t, w)
                    .ok_or_else(|| Error::input("features", format!("row {t}: no full window of {w} rows")))?;
                let start = f.len();
                f.extend_from_slice(win);
                for row in f[start..].chunks_exact_mut(NUM_FEATURES) {
                    self.norm.apply(row);
                }
            }
        }
        out.targets.resize_with(task.horizons.len(), HeadTargets::default);
        for (h, tg) in out.targets.iter_mut().enumerate() {
            tg.class.clear();
            tg.ret.clear();
            for &t in rows {
                let (c, bps) = self.target(t, h)?;
                tg.class.push(c);
                tg.ret.push((bps / self.return_scale) as f32);
            }
        }
        Ok(())
    }
}

/// A generator for one purpose, seeded from the run's seed and a path of
/// indices (fold, epoch, …) by SplitMix64 mixing: independent of any
/// library's `seed_from_u64`, so the same run shuffles the same way.
pub fn rng_for(seed: u64, path: &[u64]) -> ChaCha8Rng {
    let mut s = seed ^ 0x5155_4f52_554d_0001;
    let mut key = [0u8; 32];
    let mut mix = |x: u64| {
        s = s.wrapping_add(x).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for &p in path {
        mix(p);
    }
    for chunk in key.chunks_exact_mut(8) {
        chunk.copy_from_slice(&mix(0).to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A seed for one purpose (e.g. a batch's dropout masks).
pub fn seed_for(seed: u64, path: &[u64]) -> u64 {
    rng_for(seed, path).next_u64()
}

/// Fisher–Yates over `items` with a uniform draw by rejection (no modulo bias).
pub fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let n = (i + 1) as u64;
        let zone = u64::MAX - (u64::MAX % n);
        let j = loop {
            let x = rng.next_u64();
            if x < zone {
                break (x % n) as usize;
            }
        };
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut a, &mut rng_for(7, &[1, 2]));
        shuffle(&mut b, &mut rng_for(7, &[1, 2]));
        assert_eq!(a, b, "same seed and path, same order");
        let mut c: Vec<u32> = (0..1000).collect();
        shuffle(&mut c, &mut rng_for(7, &[1, 3]));
        assert_ne!(a, c, "another epoch, another order");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert_ne!(seed_for(7, &[1]), seed_for(8, &[1]));
    }
}
