//! Labels, windows, walk-forward splits and the normalizer (docs/training.md).

use quorum::features::NUM_FEATURES;
use quorum::market::{Level, Snapshot};
use quorum::train::{
    auto_alpha, gap_starts, purge_ticks, resolve_alpha, walk_forward, Alpha, Dataset, Direction, HorizonLabels,
    Normalizer, FEATURE_WINDOW, TLOB_WINDOW,
};

fn near(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` rows every 100 ms with gaps (> 300 ms) before the rows in `gaps`,
/// a random-walk mid, and feature values `row · 1000 + column`.
fn dataset(n: usize, gaps: &[usize], seed: u64, with_snapshots: bool) -> Dataset {
    let mut rng = Rng(seed);
    let mut ts = Vec::with_capacity(n);
    let mut t = 1_000_000i64;
    let mut mid = Vec::with_capacity(n);
    let mut m = 100.0;
    for i in 0..n {
        t += if gaps.contains(&i) { 301 } else { 100 };
        ts.push(t);
        m *= 1.0 + (rng.f() - 0.5) * 1e-3;
        mid.push(m);
    }
    let features = (0..n * NUM_FEATURES).map(|k| ((k / NUM_FEATURES) * 1000 + k % NUM_FEATURES) as f32).collect();
    let snaps = if with_snapshots {
        (0..n)
            .map(|i| {
                let mut s = Snapshot::empty(ts[i], 0, 0);
                for j in 0..20 {
                    s.bids[j] = Level::new(mid[i] - 0.005 - 0.01 * j as f64, 1.0 + j as f64);
                    s.asks[j] = Level::new(mid[i] + 0.005 + 0.01 * j as f64, 2.0 + j as f64);
                }
                s
            })
            .collect()
    } else {
        Vec::new()
    };
    Dataset::new(ts, mid, features, snaps, 100).unwrap()
}

#[test]
fn labels_with_a_fixed_alpha_by_hand() {
    let ts: Vec<i64> = (0..8).map(|i| i * 100).collect();
    let mid = vec![100.0, 101.0, 103.0, 100.0, 99.0, 99.0, 99.0, 100.0];
    let ds = Dataset::new(ts, mid, vec![0.0; 8 * NUM_FEATURES], vec![], 100).unwrap();
    let l = ds.labels(2);
    // t = 0: m⁺ = (101 + 103) / 2 = 102, r = 0.02; target ln(103/100).
    near(l.r[0], 0.02, "r[0]");
    near(l.target_bps[0], (1.03f64).ln() * 1e4, "target[0]");
    // t = 2: m⁺ = (100 + 99) / 2 = 99.5, r = −3.5/103.
    near(l.r[2], -3.5 / 103.0, "r[2]");
    // t = 4: m⁺ = 99, r = 0 → NEUTRAL at any α ≥ 0.
    near(l.r[4], 0.0, "r[4]");
    // No label without k future ticks.
    assert!(l.has(5) && !l.has(6) && !l.has(7));
    let alpha = 0.01;
    assert_eq!(l.class(0, alpha), Some(Direction::Up));
    assert_eq!(l.class(2, alpha), Some(Direction::Down));
    assert_eq!(l.class(4, alpha), Some(Direction::Neutral));
    assert_eq!(l.class(7, alpha), None);
    // α above |r| makes it neutral; the boundary is strict (r > α for UP).
    assert_eq!(l.class(0, 0.03), Some(Direction::Neutral));
    assert_eq!(Direction::classify(0.02, 0.02), Direction::Neutral);
    assert_eq!(Direction::classify(-0.02, 0.02), Direction::Neutral);
    assert_eq!((Direction::Down.class_id(), Direction::Neutral.class_id(), Direction::Up.class_id()), (0, 1, 2));
    assert_eq!(resolve_alpha(Alpha::Fixed(0.01), &l, 0..8), Ok(0.01));
    assert!(resolve_alpha(Alpha::Fixed(f64::NAN), &l, 0..8).is_err());
}

#[test]
fn labels_never_span_a_gap() {
    // A gap before row 5: labels at rows 3 and 4 (k = 2) would cross it.
    let ds = dataset(10, &[5], 1, false);
    assert_eq!(gap_starts(&ds.ts_ms, 100), vec![5]);
    let l = ds.labels(2);
    let has: Vec<bool> = (0..10).map(|t| l.has(t)).collect();
    assert_eq!(has, [true, true, true, false, false, true, true, true, false, false]);
    // Exactly 3 × interval apart is not a gap.
    let ts = vec![0, 300, 600];
    let d2 = Dataset::new(ts, vec![1.0, 1.0, 1.0], vec![0.0; 3 * NUM_FEATURES], vec![], 100).unwrap();
    assert!(gap_starts(&d2.ts_ms, 100).is_empty());
    assert!(d2.labels(2).has(0));
}

#[test]
fn auto_alpha_balances_classes_on_the_training_part_only() {
    let n = 30_000;
    let ds = dataset(n, &[], 7, false);
    let l = ds.labels(10);
    let train = 0..20_000;
    let alpha = auto_alpha(&l, train.clone()).unwrap();
    assert_eq!(resolve_alpha(Alpha::Auto, &l, train.clone()), Ok(alpha));
    let mut counts = [0usize; 3];
    for t in train.clone() {
        if let Some(d) = l.class(t, alpha) {
            counts[d.class_id()] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    for (c, name) in counts.iter().zip(["DOWN", "NEUTRAL", "UP"]) {
        let share = *c as f64 / total as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.03, "{name}: {share:.3} of the training labels ({counts:?})");
    }
    // Fit on training rows only: changing the validation part's mids
    // (wildly) leaves α unchanged …
    let mut mid2 = ds.mid.clone();
    for m in &mut mid2[20_000..] {
        *m *= 1.0 + 0.05 * (*m - 100.0).signum();
    }
    let d2 = Dataset::new(ds.ts_ms.clone(), mid2, ds.features.clone(), vec![], 100).unwrap();
    // … except the last k training rows, whose labels look into the next part
    // (the purge drops those from training samples).
    let l2 = d2.labels(10);
    assert_eq!(auto_alpha(&l2, 0..20_000 - 10).unwrap(), auto_alpha(&l, 0..20_000 - 10).unwrap());
    // … while fitting on the validation part would give another α.
    assert_ne!(auto_alpha(&l2, 20_000..n - 10).unwrap(), alpha);
    // No labelled row: an error naming the horizon.
    assert!(auto_alpha(&l, n - 5..n).is_err());
}

#[test]
fn windows_never_span_gaps() {
    let gaps = [150, 170, 400];
    let ds = dataset(600, &gaps, 3, true);
    let labels: Vec<HorizonLabels> = [1, 5, 10].iter().map(|&k| ds.labels(k)).collect();
    for window in [FEATURE_WINDOW, TLOB_WINDOW] {
        let ends = ds.sample_ends(window, &labels);
        assert!(!ends.is_empty());
        for &t in &ends {
            for i in t + 1 - window..t {
                assert!(ds.ts_ms[i + 1] - ds.ts_ms[i] <= 300, "window {window} at {t} spans a gap at {i}");
            }
            // The labels' futures stay in the run too.
            for i in t..t + 10 {
                assert!(ds.ts_ms[i + 1] - ds.ts_ms[i] <= 300, "label at {t} spans a gap at {i}");
            }
        }
        // Every eligible end is found: the first after each gap is gap + window − 1.
        assert!(ends.contains(&(400 + window - 1)));
        assert!(!ends.contains(&(400 + window - 2)));
        assert!(!ends.contains(&(399)), "its labels would cross the gap at 400");
        assert!(ends.contains(&(399 - 10)));
        // Between gaps 150 and 170 no window of 60 fits.
        assert!(!ends.iter().any(|&t| (150..170 + window - 1).contains(&t)));
    }
    // The MPD window: 60 consecutive feature rows ending at t, zero-copy.
    let t = 300;
    let w = ds.feature_window(t, FEATURE_WINDOW).unwrap();
    assert_eq!(w.len(), FEATURE_WINDOW * NUM_FEATURES);
    assert_eq!(w[0], ((t + 1 - FEATURE_WINDOW) * 1000) as f32);
    assert_eq!(w[w.len() - 1], (t * 1000 + NUM_FEATURES - 1) as f32);
    assert!(ds.feature_window(180, FEATURE_WINDOW).is_none(), "spans the gap at 170");
    // The TLOB sample: (100, 20, 4) normalized snapshots + aux = row t.
    let tl = ds.tlob_input(t).unwrap().unwrap();
    let (lob, aux) = (tl.lob, tl.aux);
    assert_eq!(lob.len(), 100 * 20 * 4);
    assert_eq!(aux, ds.row(t));
    // Bid price of level 0 in the last snapshot, bps from its own mid: −0.5 bp.
    let last = 99 * 80;
    assert!((lob[last] as f64 - (-0.005 / ds.mid[t] * 1e4)).abs() < 1e-4);
    assert!(ds.tlob_input(450).unwrap().is_none(), "spans the gap at 400");
}

#[test]
fn walk_forward_purges_and_never_leaks() {
    let n = 10_000;
    let horizons = [10, 50, 100];
    let purge = purge_ticks(&horizons, FEATURE_WINDOW);
    assert_eq!(purge, 160);
    let folds = walk_forward(n, 4, 0.2, purge).unwrap();
    assert_eq!(folds.len(), 4);
    let ds = dataset(n, &[], 5, false);
    let labels: Vec<HorizonLabels> = horizons.iter().map(|&k| ds.labels(k)).collect();
    let ends = ds.sample_ends(FEATURE_WINDOW, &labels);
    for (i, f) in folds.iter().enumerate() {
        let b = |j: usize| j * n / 5;
        assert_eq!(f.index, i + 1);
        assert_eq!(f.valid, b(i + 1)..b(i + 2), "fold {} validates on block {}", i + 1, i + 1);
        assert_eq!(f.train, 0..b(i + 1) - purge, "fold {} trains on the blocks before, purged", i + 1);
        let tr = f.train_samples(&ends);
        let va = f.valid_samples(&ends);
        assert!(!tr.is_empty() && !va.is_empty());
        // Every training label ends before any validation window starts.
        let last_label = tr.iter().map(|t| t + 100).max().unwrap();
        let first_window = va.iter().map(|t| t + 1 - FEATURE_WINDOW).min().unwrap();
        assert!(last_label < first_window, "fold {}: label to {last_label}, window from {first_window}", f.index);
        assert!(tr.iter().all(|t| !va.contains(t)));
        if i > 0 {
            assert!(f.train.end > folds[i - 1].train.end, "expanding");
        }
    }
    // S = 1: the last v fraction, with the same purge.
    let one = walk_forward(n, 1, 0.2, purge).unwrap();
    assert_eq!(one[0].valid, 8_000..n);
    assert_eq!(one[0].train, 0..8_000 - purge);
    // Bad settings are errors naming the field.
    let e = walk_forward(n, 0, 0.2, purge).unwrap_err().to_string();
    assert!(e.contains("walk_forward_splits"), "{e}");
    let e = walk_forward(n, 1, 1.5, purge).unwrap_err().to_string();
    assert!(e.contains("validation_fraction"), "{e}");
    assert!(walk_forward(300, 5, 0.2, purge).is_err(), "folds emptied by the purge");
}

#[test]
fn normalizer_uses_training_rows_only() {
    let n = 1_000;
    let ds = dataset(n, &[], 9, false);
    let folds = walk_forward(n, 1, 0.3, 70).unwrap();
    let f = &folds[0];
    let norm = Normalizer::fit_fold(&ds, f);
    // Feature j of row r is r·1000 + j: the mean over rows 0..m is known.
    let m = f.train.end as f64;
    near(norm.mean[0], (m - 1.0) / 2.0 * 1000.0, "mean of feature 0");
    near(norm.mean[5], (m - 1.0) / 2.0 * 1000.0 + 5.0, "mean of feature 5");
    let sd = ((m * m - 1.0) / 12.0).sqrt() * 1000.0;
    assert!((norm.std[0] - sd).abs() < 1e-6 * sd, "std {} vs {sd}", norm.std[0]);
    // Changing validation rows changes nothing.
    let mut feats = ds.features.clone();
    for v in &mut feats[f.valid.start * NUM_FEATURES..] {
        *v = 1e6;
    }
    let d2 = Dataset::new(ds.ts_ms.clone(), ds.mid.clone(), feats, vec![], 100).unwrap();
    assert_eq!(Normalizer::fit_fold(&d2, f), norm);
    // Fitting over all rows would not be the same (the test can fail).
    assert_ne!(Normalizer::fit(&d2.features, NUM_FEATURES, 0..n), norm);
    // std 0 → 1; apply standardizes.
    let constant = vec![3.0f32; 10 * 4];
    let c = Normalizer::fit(&constant, 4, 0..10);
    assert_eq!(c.std, vec![1.0; 4]);
    let mut row = [3.0f32, 3.0, 3.0, 5.0];
    c.apply(&mut row);
    assert_eq!(row, [0.0, 0.0, 0.0, 2.0]);
}

#[test]
fn dataset_checks_its_fields() {
    let e = Dataset::new(vec![0, 100], vec![1.0], vec![0.0; 2 * NUM_FEATURES], vec![], 100).unwrap_err();
    assert!(e.to_string().contains("mid"), "{e}");
    let e = Dataset::new(vec![100, 0], vec![1.0, 1.0], vec![0.0; 2 * NUM_FEATURES], vec![], 100).unwrap_err();
    assert!(e.to_string().contains("ts_ms"), "{e}");
    let e = Dataset::new(vec![0, 100], vec![1.0, 1.0], vec![0.0; NUM_FEATURES], vec![], 100).unwrap_err();
    assert!(e.to_string().contains("features"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Any valid split: blocks in order, purge respected, no training row at
    /// or after its validation part, validation parts tile the tail.
    #[test]
    fn walk_forward_never_leaks(n in 500usize..20_000, splits in 1usize..8, v in 0.05f64..0.5, purge in 0usize..200) {
        let Ok(folds) = walk_forward(n, splits, v, purge) else { return Ok(()) };
        proptest::prop_assert_eq!(folds.len(), splits);
        for (i, f) in folds.iter().enumerate() {
            proptest::prop_assert_eq!(f.train.start, 0);
            proptest::prop_assert!(f.train.end + purge <= f.valid.start);
            proptest::prop_assert!(f.valid.end <= n && !f.valid.is_empty() && !f.train.is_empty());
            if i > 0 {
                proptest::prop_assert_eq!(folds[i - 1].valid.end, f.valid.start);
            }
        }
        proptest::prop_assert_eq!(folds[splits - 1].valid.end, n);
    }
}

#[test]
fn sliding_arrays_keep_the_last_n() {
    let mut s = quorum::features::candle_features::Sliding::new(5);
    for i in 0..23usize {
        s.push(i as f64);
        let want: Vec<f64> = ((i + 1).saturating_sub(5)..=i).map(|k| k as f64).collect();
        assert_eq!(s.view(), &want[..], "after pushing {i}");
    }
}
