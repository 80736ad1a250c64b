//! The whole pipeline on real data: the 11 minutes of BTCUSDT recorded by
//! hftbacktest (read from ../shared/data/binance/ or $QUORUM_BINANCE_DATA;
//! the test says so and passes when it is absent) are imported, turned into
//! the 112 features, cut into windows, and run through the three models.

#[path = "common/fixtures.rs"]
mod fixtures;

use quorum::features::build_from_store;
use quorum::market::{import_files, read_snapshots, ImportOptions, RecordFormat};
use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::train::data::load_data;
use quorum::train::dataset::{FEATURE_WINDOW, TLOB_WINDOW};
use quorum::weights::generated;
use quorum::{Cpu, Inputs, Model, Tensor};

#[test]
fn imported_btcusdt_gives_features_and_every_model_runs_on_its_windows() {
    let Some(dir) = fixtures::shared_binance_data() else {
        println!("skipped: ../shared/data/binance (or $QUORUM_BINANCE_DATA) is absent");
        return;
    };
    let root = std::env::temp_dir().join(format!("quorum-real-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let raw = root.join("raw_lob");
    let files = [dir.join("spot_btcusdt_20240808.gz"), dir.join("spot_btcusdt_20240809.gz")];
    let report =
        import_files(&ImportOptions::new(RecordFormat::Hftbacktest, "BTCUSDT", &raw), &files, &mut |_| {}).unwrap();
    assert_eq!(report.gaps, 0);

    // The features: 200 one-second candles of warm-up fit in the 11 minutes.
    let snapshots = read_snapshots(&raw, "BTCUSDT").unwrap().count();
    let built = build_from_store(&raw, "BTCUSDT", false, |_| {}).unwrap();
    println!(
        "{snapshots} snapshots, {} feature rows, {} ticks warming up, {} rejected",
        built.table.len(),
        built.stats.warming_up,
        built.stats.rejected()
    );
    assert_eq!(built.stats.rejected(), 0, "real books are all accepted: {:?}", built.stats);
    assert!(!built.table.is_empty(), "rows come out after the warm-up");
    assert_eq!(built.table.len() as u64 + built.stats.warming_up, snapshots as u64, "every tick is a row or warm-up");

    // The windows, and the three models (docs/models.md's default sizes,
    // generated weights) on eight of them spread over the recording.
    let (data, _) = load_data(None, Some(&raw), "BTCUSDT", true).unwrap();
    let ends: Vec<usize> = (0..data.len()).filter(|&t| data.window_fits(t, TLOB_WINDOW)).collect();
    assert!(ends.len() > 1000, "{} windows", ends.len());
    let picks: Vec<usize> = (0..8).map(|i| ends[i * (ends.len() - 1) / 7]).collect();
    let be = Cpu::new();
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let mut model =
            Model::from_tensors(&be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
        let n = picks.len();
        let (features, lob, aux) = match kind {
            ModelKind::Tlob => {
                let mut lob = Vec::new();
                let mut aux = Vec::new();
                for &t in &picks {
                    let input = data.tlob_input(t).unwrap().expect("the TLOB window fits");
                    lob.extend(input.lob);
                    aux.extend_from_slice(input.aux);
                }
                (
                    None,
                    Some(Tensor::new(vec![n, 100, 20, 4], lob).unwrap()),
                    Some(Tensor::new(vec![n, 112], aux).unwrap()),
                )
            }
            _ => {
                let mut x = Vec::new();
                for &t in &picks {
                    x.extend_from_slice(data.feature_window(t, FEATURE_WINDOW).expect("the feature window fits"));
                }
                (Some(Tensor::new(vec![n, FEATURE_WINDOW, 112], x).unwrap()), None, None)
            }
        };
        let out =
            model.forward(&be, &Inputs { features: features.as_ref(), lob: lob.as_ref(), aux: aux.as_ref() }).unwrap();
        let logits = &out["direction_logits"];
        assert_eq!(logits.shape, vec![n, 3], "{kind}");
        for (name, t) in &out {
            assert!(t.data.iter().all(|v| v.is_finite()), "{kind}: {name} has a non-finite value on real data");
        }
        let distinct = logits
            .data
            .chunks(3)
            .map(|r| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect::<std::collections::BTreeSet<_>>();
        assert!(distinct.len() > 1, "{kind}: different windows give different outputs");
    }
    tlob_windows_share_no_normalized_snapshot(&raw);
    let _ = std::fs::remove_dir_all(&root);
}

/// Why a live TLOB tick does not reuse the encodings of the 99 snapshots it
/// shares with the previous tick (issue #19's "tick cache"; docs/models.md,
/// "A TLOB tick recomputes its window"): the window is normalized as a
/// whole, prices against its last mid and volumes by its own mean and std,
/// so a snapshot's normalized row changes from one tick to the next. On the
/// real recording, count the shared rows whose values stayed the same.
fn tlob_windows_share_no_normalized_snapshot(raw: &std::path::Path) {
    use quorum::market::{read_snapshots, RawLOBSequence, Snapshot};
    const ROW: usize = 20 * 4;
    let snaps: Vec<Snapshot> = read_snapshots(raw, "BTCUSDT").unwrap().collect::<Result<_, _>>().unwrap();
    let mut prev: Option<Vec<f32>> = None;
    let (mut shared, mut same, mut same_prices) = (0usize, 0usize, 0usize);
    for w in snaps.windows(TLOB_WINDOW) {
        let cur = RawLOBSequence::new(w.to_vec()).unwrap().to_normalized_tensor();
        if let Some(p) = &prev {
            for r in 0..TLOB_WINDOW - 1 {
                let (old, new) = (&p[(r + 1) * ROW..(r + 2) * ROW], &cur[r * ROW..(r + 1) * ROW]);
                shared += 1;
                same += usize::from(old.iter().zip(new).all(|(a, b)| a.to_bits() == b.to_bits()));
                // Columns 0 and 2 of each level are the bid and ask prices.
                let prices = |v: &[f32]| v.chunks(4).map(|l| [l[0].to_bits(), l[2].to_bits()]).collect::<Vec<_>>();
                same_prices += usize::from(prices(old) == prices(new));
            }
        }
        prev = Some(cur);
    }
    println!(
        "TLOB windows: {shared} snapshot rows shared by consecutive windows, {same} unchanged after \
         normalization, {same_prices} with unchanged prices"
    );
    assert!(shared > 100_000, "{shared} shared rows");
    assert!(same * 1000 < shared, "{same} of {shared} shared rows kept their values: a tick cache would pay");
}
