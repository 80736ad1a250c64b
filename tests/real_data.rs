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
    snapshot_normalized_tlob_ticks_as_its_whole_forward(&data);
    let _ = std::fs::remove_dir_all(&root);
}

/// Why a TLOB of the `window` normalization has no token cache
/// (docs/models.md, "The TLOB tick"): the window is normalized as a whole,
/// prices against its last mid and volumes by its own mean and std, so a
/// snapshot's normalized row changes from one tick to the next. On the real
/// recording, count the shared rows whose values stayed the same.
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

/// The `snapshot` normalization on the real recording: a snapshot's rows
/// are the same in every window that holds it (each window of the dataset is
/// its snapshots' own rows), so on consecutive windows the token cache
/// encodes one new snapshot a tick, and its outputs have the whole
/// forward's bits at every tick checked.
fn snapshot_normalized_tlob_ticks_as_its_whole_forward(data: &quorum::train::dataset::Dataset) {
    use quorum::market::{snapshot_rows, SNAPSHOT_ROW};
    use quorum::model::{LobNormalization, Outputs};
    let mut config = ModelConfig::default_for(ModelKind::Tlob);
    if let ModelConfig::Tlob(c) = &mut config {
        c.lob_normalization = LobNormalization::Snapshot;
    }
    let be = Cpu::new();
    let params = generated::params(&config);
    let mut cached = Model::from_tensors(&be, config.clone(), &params, ModelMeta::default()).unwrap();
    let mut whole = Model::from_tensors(&be, config.clone(), &params, ModelMeta::default()).unwrap();
    whole.set_token_cache(false);
    // The stream's rows, each from its snapshot and the one before it in the same run.
    let rows = |t: usize| snapshot_rows(data.window_fits(t, 2).then(|| &data.snapshots[t - 1]), &data.snapshots[t]);
    let start = (0..data.len()).find(|&t| data.window_fits(t + 300, 301)).expect("a run of 300 snapshots");
    let (mut out, mut expected, mut checked) = (Outputs::new(), Outputs::new(), 0);
    for t in start + TLOB_WINDOW..start + 300 {
        let input = data.tlob_input_as(t, LobNormalization::Snapshot).unwrap().expect("the window fits");
        for (i, r) in input.lob.chunks(SNAPSHOT_ROW).enumerate() {
            let own = rows(t + 1 - TLOB_WINDOW + i);
            assert!(r.iter().zip(&own).all(|(a, b)| a.to_bits() == b.to_bits()), "row {i} of the window at {t}");
        }
        let lob = Tensor::new(vec![1, 100, 20, 4], input.lob).unwrap();
        let aux = Tensor::new(vec![1, 112], input.aux.to_vec()).unwrap();
        let inputs = Inputs { lob: Some(&lob), aux: Some(&aux), ..Inputs::default() };
        let before = cached.token_cache().unwrap().counts().0;
        cached.forward_into(&be, &inputs, &mut out).unwrap();
        let encoded = cached.token_cache().unwrap().counts().0 - before;
        // A window of the same snapshots as another (a quiet book) may find
        // even its newest row held.
        assert!(encoded <= if t == start + TLOB_WINDOW { 100 } else { 1 }, "{encoded} rows encoded at {t}");
        if (t - start) % 40 == 0 {
            whole.forward_into(&be, &inputs, &mut expected).unwrap();
            for (name, v) in &expected {
                let got = &out[name].data;
                assert!(v.data.iter().zip(got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} at {t}");
            }
            checked += 1;
        }
    }
    let (encoded, reused) = cached.token_cache().unwrap().counts();
    println!("snapshot-normalized TLOB on the real stream: {encoded} rows encoded, {reused} reused; {checked} ticks had the whole forward's bits");
    assert!(checked >= 4, "{checked} ticks checked");
}
