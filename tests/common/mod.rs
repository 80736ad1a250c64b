//! Helpers shared by the integration tests: reading golden cases and
//! comparing outputs with docs/models.md's tolerances.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use quorum::model::{Model, ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Backend, Tensor};
use safetensors::SafeTensors;

pub mod fixtures;

pub fn fixture(name: &str) -> PathBuf {
    fixtures::fixtures_dir().join("models").join(name)
}

/// A golden case written by tools/reference/make_goldens.py.
pub struct Golden {
    pub name: String,
    pub kind: ModelKind,
    pub config: ModelConfig,
    pub generated_weights: bool,
    pub inputs: BTreeMap<String, Tensor>,
    pub outputs: BTreeMap<String, Tensor>,
}

pub fn read_tensors(path: &PathBuf) -> (HashMap<String, String>, BTreeMap<String, Tensor>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("fixture header");
    let md = header.metadata().clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    (md, out)
}

pub fn golden(name: &str) -> Golden {
    let (md, tensors) = read_tensors(&fixture(&format!("{name}.safetensors")));
    let kind = ModelKind::parse(&md["model"]).unwrap();
    let config = ModelConfig::from_json(kind, &md["config"]).unwrap();
    let mut inputs = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    for (k, v) in tensors {
        if let Some(n) = k.strip_prefix("input.") {
            inputs.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("output.") {
            outputs.insert(n.to_string(), v);
        }
    }
    Golden { name: name.into(), kind, config, generated_weights: md["weights"] == "generated", inputs, outputs }
}

impl Golden {
    /// The model of this case on `be`: from its PyTorch-saved weights file, or
    /// from the shared deterministic generator.
    pub fn model<B: Backend>(&self, be: &B) -> Model<B> {
        if self.generated_weights {
            let params = generated::params(&self.config);
            Model::from_tensors(be, self.config.clone(), &params, ModelMeta::default()).unwrap()
        } else {
            Model::load(be, &fixture(&format!("{}.weights.safetensors", self.name))).unwrap()
        }
    }

    pub fn inputs(&self) -> quorum::Inputs<'_> {
        quorum::Inputs {
            features: self.inputs.get("features"),
            lob: self.inputs.get("lob"),
            aux: self.inputs.get("aux"),
        }
    }
}

/// docs/models.md's f32 tolerances: logits and returns within 1e-4·(1 + max|ref|),
/// confidences within 1e-5 absolute. Returns the worst ratio of error to
/// tolerance (≤ 1 passes) for reporting.
pub fn assert_close(case: &str, name: &str, got: &Tensor, want: &Tensor, f16: bool) -> f64 {
    assert_eq!(got.shape, want.shape, "{case}: {name} shape");
    let max_ref = want.data.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let tol = if name.starts_with("confidence") {
        if f16 {
            1e-2
        } else {
            1e-5
        }
    } else if f16 {
        3e-2 * (1.0 + max_ref)
    } else {
        1e-4 * (1.0 + max_ref)
    };
    let worst = got.data.iter().zip(&want.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0f64, f64::max);
    assert!(
        worst <= tol,
        "{case}: {name}: max abs diff {worst:e} > tolerance {tol:e}\n got  {:?}\n want {:?}",
        &got.data[..got.data.len().min(6)],
        &want.data[..want.data.len().min(6)]
    );
    worst / tol
}

pub const ALL_CASES: [&str; 10] = [
    "mpd_default",
    "mpd_small_cls",
    "mpd_small_nocls_norm",
    "tlob_default",
    "tlob_small_noaux_2h",
    "tlob_small_aux_norm",
    "tlob_small_aux_unused",
    "cnn_lstm_default",
    "cnn_lstm_small_1layer",
    "cnn_lstm_small_3layer_norm",
];

/// Runs golden case `name` on `be` and checks every output: the same names as
/// PyTorch's, the same shapes, docs/models.md's f32 tolerances. Returns the worst
/// error-to-tolerance ratio, for reporting.
pub fn check_golden<B: Backend>(be: &B, name: &str) -> f64 {
    check_golden_within(be, name, false)
}

/// `check_golden` within docs/models.md's f16/bf16 column (`half`) or its f32 one.
pub fn check_golden_within<B: Backend>(be: &B, name: &str, half: bool) -> f64 {
    let g = golden(name);
    let mut model = g.model(be);
    assert_eq!(model.kind(), g.kind);
    let out = model.forward(be, &g.inputs()).unwrap();
    let got: Vec<&String> = out.keys().collect();
    let want: Vec<&String> = g.outputs.keys().collect();
    assert_eq!(got, want, "{name}: output names");
    let mut worst = 0f64;
    for (k, want) in &g.outputs {
        worst = worst.max(assert_close(name, k, &out[k], want, half));
    }
    worst
}

/// A golden case on `be` in int8, held to docs/models.md's int8 bounds
/// against the f32 golden: the class probabilities (softmax of each
/// `direction*` output), `confidence` and `expected_return` within 0.02,
/// absolute, and every output finite. Returns the outputs.
#[allow(dead_code)] // used by the emulator's and the GPU's model tests
pub fn check_golden_int8<B: Backend>(be: &B, name: &str) -> BTreeMap<String, Tensor> {
    const BOUND: f32 = 0.02;
    let softmax = |l: &[f32]| {
        let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = l.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect::<Vec<f32>>()
    };
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let g = golden(name);
    let got = g.model(be).forward(be, &g.inputs()).unwrap();
    for (k, want) in &g.outputs {
        let (a, b) = (&got[k].data, &want.data);
        assert!(a.iter().all(|v| v.is_finite()), "{name} {k}: not finite");
        let diff = if k.starts_with("direction") {
            a.chunks(3).zip(b.chunks(3)).map(|(x, y)| worst(&softmax(x), &softmax(y))).fold(0f32, f32::max)
        } else {
            worst(a, b)
        };
        eprintln!("{name} {k}: int8 - f32 {diff:.5} (probabilities for directions)");
        assert!(diff <= BOUND, "{name} {k}: int8 differs from f32 by {diff} > {BOUND}");
    }
    got
}

/// Sample `b` of a golden case's inputs, as a batch of one.
pub fn one_sample(g: &Golden, b: usize) -> BTreeMap<String, Tensor> {
    g.inputs.iter().map(|(k, t)| (k.clone(), sample(t, b))).collect()
}

/// Row `b` of a `(batch, …)` tensor as a batch of one.
pub fn sample(t: &Tensor, b: usize) -> Tensor {
    let per = t.numel() / t.shape[0];
    let mut shape = t.shape.clone();
    shape[0] = 1;
    Tensor::new(shape, t.data[b * per..(b + 1) * per].to_vec()).unwrap()
}

/// One `#[test]` per golden case of `ALL_CASES`, each calling `$check(name)`.
#[allow(unused_macros)] // used by some of the test binaries that include this module
macro_rules! golden_case_tests {
    ($check:path) => {
        #[test]
        fn mpd_default() {
            $check("mpd_default");
        }
        #[test]
        fn mpd_small_cls() {
            $check("mpd_small_cls");
        }
        #[test]
        fn mpd_small_without_cls_with_normalizer() {
            $check("mpd_small_nocls_norm");
        }
        #[test]
        fn tlob_default() {
            $check("tlob_default");
        }
        #[test]
        fn tlob_small_without_aux_two_horizons() {
            $check("tlob_small_noaux_2h");
        }
        #[test]
        fn tlob_small_with_aux_and_aux_normalizer() {
            $check("tlob_small_aux_norm");
        }
        #[test]
        fn tlob_with_aux_weights_run_without_aux() {
            $check("tlob_small_aux_unused");
        }
        #[test]
        fn cnn_lstm_default() {
            $check("cnn_lstm_default");
        }
        #[test]
        fn cnn_lstm_one_layer() {
            $check("cnn_lstm_small_1layer");
        }
        #[test]
        fn cnn_lstm_three_layers_with_normalizer() {
            $check("cnn_lstm_small_3layer_norm");
        }
    };
}
#[allow(unused_imports)]
pub(crate) use golden_case_tests;

/// `g.inputs` with every value scaled and shifted by `k`: a different input
/// of the same shape, so a replay that ignored its input would show.
fn varied(g: &Golden, k: f32) -> BTreeMap<String, Tensor> {
    g.inputs
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().enumerate().map(|(i, v)| v * (1.0 + 0.1 * k) + 0.01 * k * (i % 7) as f32);
            (name.clone(), Tensor::new(t.shape.clone(), data.collect()).unwrap())
        })
        .collect()
}

/// The model inputs among `t` (without `aux` unless `with_aux`).
pub fn inputs_of(t: &BTreeMap<String, Tensor>, with_aux: bool) -> quorum::Inputs<'_> {
    quorum::Inputs { features: t.get("features"), lob: t.get("lob"), aux: if with_aux { t.get("aux") } else { None } }
}

/// A recorded forward (a CUDA graph, or the emulator's): the second call at
/// a shape is recorded, later ones replay it; every result is bit-identical
/// to running the ops one by one on the same input, through changes of shape
/// (batch size, TLOB with and without aux) that must drop the recording.
pub fn check_recorded_replays<B: Backend>(be: &B) {
    for name in ["mpd_small_cls", "tlob_small_aux_norm", "cnn_lstm_small_3layer_norm"] {
        let g = golden(name);
        let mut recorded = g.model(be);
        let mut direct = g.model(be);
        direct.set_graphs(false);
        let has_aux = g.inputs.contains_key("aux");
        // (variation, aux, first sample only)
        let mut plan = vec![(0.0, true, false), (1.0, true, false), (2.0, true, false), (3.0, true, false)];
        plan.extend([(4.0, true, true), (5.0, true, true), (6.0, true, true), (7.0, true, false), (8.0, true, false)]);
        if has_aux {
            plan.extend([(9.0, false, false), (10.0, false, false), (11.0, false, false), (12.0, true, false)]);
        }
        for (k, with_aux, first_only) in plan {
            let mut inputs = varied(&g, k);
            if first_only {
                for t in inputs.values_mut() {
                    let per = t.numel() / t.shape[0];
                    t.shape[0] = 1;
                    t.data.truncate(per);
                }
            }
            let want = direct.forward(be, &inputs_of(&inputs, with_aux)).unwrap();
            let got = recorded.forward(be, &inputs_of(&inputs, with_aux)).unwrap();
            assert_eq!(got, want, "{name}, variation {k}");
        }
        // Every call after the first of a run at one shape replays: runs of 4, 3, 2 (and 3 without aux, 1 back with it).
        let want_replays = if has_aux { 3 + 2 + 1 + 2 } else { 3 + 2 + 1 };
        assert_eq!(recorded.graph_replays(), want_replays, "{name}");
        assert_eq!(direct.graph_replays(), 0);
    }
}

/// Models sharing one backend across threads, as the engine's do: each
/// thread's forwards (recorded from the second on) give what the same model
/// gives alone with its launches one by one. On a GPU backend a capture
/// belongs to the device's stream, not to the thread that began it, so
/// without the backend keeping other threads off the stream meanwhile, one
/// model's launches would land in another's graph.
pub fn check_concurrent_models<B: Backend + Sync>(be: &B, records: bool) {
    const NAMES: [&str; 3] = ["mpd_small_cls", "tlob_small_aux_norm", "cnn_lstm_small_3layer_norm"];
    // Pairs of calls at one shape, the shape changing between pairs: the
    // second call of each pair records a new graph (and replays it), so every
    // thread captures again and again while the others run.
    const CALLS: usize = 12;
    let cases: Vec<Golden> = NAMES.iter().map(|n| golden(n)).collect();
    let inputs: Vec<Vec<BTreeMap<String, Tensor>>> = cases
        .iter()
        .map(|g| {
            (0..CALLS)
                .map(|k| {
                    let mut i = varied(g, k as f32);
                    if (k / 2) % 2 == 1 {
                        i.values_mut().for_each(|t| *t = sample(t, 0));
                    }
                    i
                })
                .collect()
        })
        .collect();
    let want: Vec<Vec<quorum::Outputs>> = cases
        .iter()
        .zip(&inputs)
        .map(|(g, ins)| {
            let mut alone = g.model(be);
            alone.set_graphs(false);
            ins.iter().map(|i| alone.forward(be, &inputs_of(i, true)).unwrap()).collect()
        })
        .collect();
    std::thread::scope(|s| {
        for ((g, ins), want) in cases.iter().zip(&inputs).zip(&want) {
            s.spawn(move || {
                let mut model = g.model(be);
                for (k, (i, w)) in ins.iter().zip(want).enumerate() {
                    let got = model.forward(be, &inputs_of(i, true)).unwrap();
                    assert_eq!(&got, w, "{} call {k} beside the other models", g.name);
                }
                let replays = if records { CALLS as u64 / 2 } else { 0 };
                assert_eq!(model.graph_replays(), replays, "{}: the second call of each pair replays", g.name);
            });
        }
    });
}
