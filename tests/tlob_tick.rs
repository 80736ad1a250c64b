//! TLOB's token cache (`quorum::model::tick`, docs/models.md "The TLOB
//! tick") against the whole forward: every output, bit for bit, on every
//! tick of a stream of sliding windows, for several symbols at once, with
//! and without the auxiliary features, in every CPU precision this machine
//! runs; and each tick encodes only the new snapshots. The generated weights
//! are the default config's, so the whole forward's 300-row products take the
//! packed, row-blocked paths the tick's 3-row ones do not.

use quorum::backend::Precision;
use quorum::model::{LobNormalization, ModelConfig, ModelKind, ModelMeta, Outputs, TlobConfig};
use quorum::weights::generated;
use quorum::{Cpu, Inputs, Model, Tensor};

const SYMBOLS: usize = 3;

/// A deterministic snapshot row of TLOB inputs: prices a few basis points
/// apart, standardized volumes, and (now and then) missing deep levels as 0.
fn snapshot_row(c: &TlobConfig, tick: usize, symbol: usize) -> Vec<f32> {
    let (l, f) = (c.num_levels, c.lob_features);
    let mut row = vec![0f32; l * f];
    let mut state = (tick as u64 * 7919 + symbol as u64 * 104_729 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state ^= state >> 31;
        state = state.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let depth = if tick.is_multiple_of(5) { l - 3 } else { l };
    for lvl in 0..depth {
        for k in 0..f {
            let side = if k < 2 { -1.0 } else { 1.0 };
            row[lvl * f + k] = if k % 2 == 0 { side * (0.5 + lvl as f32) + 0.3 * next() } else { next() };
        }
    }
    row
}

fn aux(c: &TlobConfig, tick: usize) -> Tensor {
    let a = c.aux_features;
    Tensor {
        shape: vec![SYMBOLS, a],
        data: (0..SYMBOLS * a).map(|i| ((i * 31 + tick * 7) % 97) as f32 / 50.0 - 1.0).collect(),
    }
}

fn bits(out: &Outputs) -> Vec<(String, Vec<u32>)> {
    out.iter().map(|(k, t)| (k.clone(), t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

/// TLOB at the default size under the snapshot normalization, and the same
/// weights with the token cache off.
fn cached_and_whole(be: &Cpu) -> (Model<Cpu>, Model<Cpu>, TlobConfig) {
    let mut config = ModelConfig::default_for(ModelKind::Tlob);
    let ModelConfig::Tlob(c) = &mut config else { unreachable!() };
    c.lob_normalization = LobNormalization::Snapshot;
    let c = c.clone();
    let params = generated::params(&config);
    let cached = Model::from_tensors(be, config.clone(), &params, ModelMeta::default()).unwrap();
    let mut whole = Model::from_tensors(be, config, &params, ModelMeta::default()).unwrap();
    assert!(cached.token_cache().is_some(), "on by default under the snapshot normalization");
    whole.set_token_cache(false);
    (cached, whole, c)
}

/// The windows `(SYMBOLS, T, L, F)` ending at tick `end` of each symbol's stream.
fn windows(c: &TlobConfig, end: usize) -> Tensor {
    let t = c.sequence_length;
    let mut lob = Vec::new();
    for s in 0..SYMBOLS {
        for n in end + 1 - t..=end {
            lob.extend(snapshot_row(c, n, s));
        }
    }
    Tensor::new(vec![SYMBOLS, t, c.num_levels, c.lob_features], lob).unwrap()
}

/// `ticks` ticks of sliding windows: each forward through the cache has the
/// whole forward's bits and, after the first, encodes one row a symbol.
fn tick_matches_whole(be: &Cpu, with_aux: bool, ticks: usize) {
    let (mut cached, mut whole, c) = cached_and_whole(be);
    let (mut out, mut expected) = (Outputs::new(), Outputs::new());
    let t = c.sequence_length;
    for end in t - 1..t - 1 + ticks {
        let lob = windows(&c, end);
        let a = with_aux.then(|| aux(&c, end));
        let inputs = Inputs { lob: Some(&lob), aux: a.as_ref(), ..Inputs::default() };
        let before = cached.token_cache().unwrap().counts();
        cached.forward_into(be, &inputs, &mut out).unwrap();
        let (encoded, reused) = cached.token_cache().unwrap().counts();
        let new = if end == t - 1 { SYMBOLS * t } else { SYMBOLS } as u64;
        assert_eq!((encoded - before.0, reused - before.1), (new, (SYMBOLS * t) as u64 - new), "tick {end}");
        whole.forward_into(be, &inputs, &mut expected).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        assert!(bits(&out) == bits(&expected), "tick {end} (aux {with_aux}): {out:?} != {expected:?}");
    }
    // It holds the rows of the last two forwards, no more.
    assert_eq!(cached.token_cache().unwrap().len(), SYMBOLS * (t + 1));
}

#[test]
fn the_tick_has_the_whole_forwards_bits_in_f32() {
    let be = Cpu::new();
    tick_matches_whole(&be, true, 5);
    tick_matches_whole(&be, false, 3);
}

#[test]
fn the_tick_has_the_whole_forwards_bits_in_bf16_and_int8() {
    for precision in [Precision::Bf16, Precision::Int8] {
        match Cpu::with_precision(precision) {
            Ok(be) => tick_matches_whole(&be, true, 4),
            Err(e) => eprintln!("skipped {precision:?} (this CPU lacks it): {e}"),
        }
    }
}

/// Windows that jump (a symbol's stream restarts, the symbols change order,
/// a window repeats rows), and a refused input in between: still the whole
/// forward's bits, and a refused input leaves nothing wrong behind.
#[test]
fn the_cache_gives_the_whole_forwards_bits_whatever_the_windows() {
    let be = Cpu::new();
    let (mut cached, mut whole, c) = cached_and_whole(&be);
    let (mut out, mut expected) = (Outputs::new(), Outputs::new());
    let mut check = |lob: &Tensor, cached: &mut Model<Cpu>| {
        let a = aux(&c, 0);
        let inputs = Inputs { lob: Some(lob), aux: Some(&a), ..Inputs::default() };
        cached.forward_into(&be, &inputs, &mut out).unwrap();
        whole.forward_into(&be, &inputs, &mut expected).unwrap();
        assert!(bits(&out) == bits(&expected));
    };
    let row = c.sequence_length * c.num_levels * c.lob_features;
    check(&windows(&c, 120), &mut cached);
    // Symbols in another order.
    let mut swapped = windows(&c, 121);
    let first: Vec<f32> = swapped.data[..row].to_vec();
    let last: Vec<f32> = swapped.data[2 * row..].to_vec();
    swapped.data[..row].copy_from_slice(&last);
    swapped.data[2 * row..].copy_from_slice(&first);
    check(&swapped, &mut cached);
    // A window of one snapshot repeated: encoded once at most (it may be held).
    let mut same = windows(&c, 122);
    let one: Vec<f32> = same.data[..80].to_vec();
    for r in same.data.chunks_exact_mut(80) {
        r.copy_from_slice(&one);
    }
    let before = cached.token_cache().unwrap().counts().0;
    check(&same, &mut cached);
    assert!(cached.token_cache().unwrap().counts().0 - before <= 1);
    // A NaN is refused by name and changes nothing.
    let mut bad = windows(&c, 123);
    bad.data[5] = f32::NAN;
    let a = aux(&c, 0);
    let mut scratch = Outputs::new();
    let err = cached.forward_into(&be, &Inputs { lob: Some(&bad), aux: Some(&a), ..Inputs::default() }, &mut scratch);
    assert!(err.unwrap_err().to_string().contains("lob"));
    check(&windows(&c, 123), &mut cached);
    check(&windows(&c, 124), &mut cached);
    // A stream that starts over far ahead.
    check(&windows(&c, 900), &mut cached);
}

#[test]
fn only_tlob_has_a_token_cache_and_window_models_start_without_it() {
    let be = Cpu::new();
    let tlob = ModelConfig::default_for(ModelKind::Tlob);
    let mut model = Model::from_tensors(&be, tlob.clone(), &generated::params(&tlob), ModelMeta::default()).unwrap();
    assert!(model.token_cache().is_none(), "nothing repeats under the window normalization");
    model.set_token_cache(true);
    assert!(model.token_cache().is_some());
    let cnn = ModelConfig::default_for(ModelKind::CnnLstm);
    let mut other = Model::from_tensors(&be, cnn.clone(), &generated::params(&cnn), ModelMeta::default()).unwrap();
    other.set_token_cache(true);
    assert!(other.token_cache().is_none());
}
