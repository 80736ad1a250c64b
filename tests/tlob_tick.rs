//! TLOB's tick (`quorum::model::tick`, docs/models.md "The TLOB tick") against
//! the whole forward: every output, bit for bit, on every tick of a stream,
//! for several symbols at once, with and without the auxiliary features, in
//! every CPU precision this machine runs. The generated weights are the
//! default config's, so the whole forward's 300-row products take the packed,
//! row-blocked paths the tick's 3-row ones do not.

use quorum::backend::Precision;
use quorum::model::tick::TlobTick;
use quorum::model::{ModelConfig, ModelKind, ModelMeta, Outputs, TlobConfig};
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

/// `ticks` ticks past a full window: after each, the tick's outputs equal a
/// whole forward over the same snapshots.
fn tick_matches_whole(be: &Cpu, with_aux: bool, ticks: usize) {
    let config = ModelConfig::default_for(ModelKind::Tlob);
    let ModelConfig::Tlob(c) = &config else { unreachable!() };
    let mut model = Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
    let mut whole = Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap();
    let mut tick = TlobTick::new(&model, SYMBOLS).unwrap();
    let (t, row_len) = (c.sequence_length, c.num_levels * c.lob_features);
    let mut history: Vec<Vec<Vec<f32>>> = Vec::new();
    let (mut out, mut expected) = (Outputs::new(), Outputs::new());
    for n in 0..t + ticks {
        let rows: Vec<Vec<f32>> = (0..SYMBOLS).map(|s| snapshot_row(c, n, s)).collect();
        let shape = vec![SYMBOLS, c.num_levels, c.lob_features];
        tick.push(&mut model, be, &Tensor { shape, data: rows.concat() }).unwrap();
        history.push(rows);
        if n + 1 < t {
            let err = tick.forward_into(&mut model, be, None, &mut out).unwrap_err().to_string();
            assert!(err.contains("needs 100 snapshots"), "{err}");
            continue;
        }
        let a = with_aux.then(|| aux(c, n));
        tick.forward_into(&mut model, be, a.as_ref(), &mut out).unwrap();
        let window = &history[history.len() - t..];
        let mut lob = Vec::with_capacity(SYMBOLS * t * row_len);
        for s in 0..SYMBOLS {
            for rows in window {
                lob.extend_from_slice(&rows[s]);
            }
        }
        let lob = Tensor { shape: vec![SYMBOLS, t, c.num_levels, c.lob_features], data: lob };
        let inputs = Inputs { lob: Some(&lob), aux: a.as_ref(), ..Inputs::default() };
        whole.forward_into(be, &inputs, &mut expected).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        assert!(bits(&out) == bits(&expected), "tick {n} (aux {with_aux}): {out:?} != {expected:?}");
    }
}

#[test]
fn the_tick_has_the_whole_forwards_bits_in_f32() {
    let be = Cpu::new();
    tick_matches_whole(&be, true, 4);
    tick_matches_whole(&be, false, 2);
}

#[test]
fn the_tick_has_the_whole_forwards_bits_in_bf16_and_int8() {
    for precision in [Precision::Bf16, Precision::Int8] {
        match Cpu::with_precision(precision) {
            Ok(be) => tick_matches_whole(&be, true, 3),
            Err(e) => eprintln!("skipped {precision:?} (this CPU lacks it): {e}"),
        }
    }
}

#[test]
fn a_tick_refuses_what_does_not_fit() {
    let be = Cpu::new();
    let tlob = ModelConfig::default_for(ModelKind::Tlob);
    let mut model = Model::from_tensors(&be, tlob.clone(), &generated::params(&tlob), ModelMeta::default()).unwrap();
    assert!(TlobTick::new(&model, 0).err().unwrap().to_string().contains("symbols"));
    let mut tick = TlobTick::new(&model, 2).unwrap();
    // One symbol's row where two were promised: refused, nothing pushed.
    let err = tick.push(&mut model, &be, &Tensor::zeros(vec![1, 20, 4])).unwrap_err().to_string();
    assert!(err.contains("rows") && err.contains("(2, L, F)"), "{err}");
    assert_eq!(tick.filled(), 0);
    // A row of the wrong width.
    assert!(tick.push(&mut model, &be, &Tensor::zeros(vec![2, 20, 3])).is_err());
    assert_eq!(tick.filled(), 0);
    // Another model's tick is refused by name.
    let cnn = ModelConfig::default_for(ModelKind::CnnLstm);
    let other = Model::from_tensors(&be, cnn.clone(), &generated::params(&cnn), ModelMeta::default()).unwrap();
    assert!(TlobTick::new(&other, 1).err().unwrap().to_string().contains("TLOB"));
}
