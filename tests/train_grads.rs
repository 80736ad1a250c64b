//! Gradients of whole models against PyTorch (tests/fixtures/grads, written
//! by tools/reference/make_grad_goldens.py in float64): one `forward_backward`
//! per case, the loss and every parameter's gradient within models.md's
//! tolerance (relative L2 error ≤ 1e-3 per tensor).

use std::collections::HashMap;
use std::path::Path;

use quorum::model::{ModelConfig, ModelKind};
use quorum::tensor::Tensor;
use quorum::train::{HeadTargets, LossWeights, TrainBatch, TrainNet};
use quorum::weights::read_tensor_file;
use quorum::Cpu;

struct Case {
    config: ModelConfig,
    params: HashMap<String, Tensor>,
    batch: TrainBatch,
    weights: LossWeights,
    loss: f64,
    grads: HashMap<String, Tensor>,
}

fn load(name: &str) -> Case {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grads").join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = read_tensor_file(&bytes, name).unwrap();
    let md = &file.metadata;
    let kind = ModelKind::parse(&md["model"]).unwrap();
    let config = ModelConfig::from_json(kind, &md["config"]).unwrap();
    let w = |k: &str| md[k].parse::<f32>().unwrap();
    let weights =
        LossWeights { direction: w("direction_weight"), confidence: w("confidence_weight"), ret: w("return_weight") };
    let mut params = HashMap::new();
    let mut grads = HashMap::new();
    let mut targets: Vec<HeadTargets> = Vec::new();
    let mut batch = TrainBatch::default();
    for (k, t) in &file.tensors {
        if let Some(n) = k.strip_prefix("param.") {
            params.insert(n.to_string(), t.clone());
        } else if let Some(n) = k.strip_prefix("grad.") {
            grads.insert(n.to_string(), t.clone());
        } else if let Some(n) = k.strip_prefix("input.") {
            batch.batch = t.shape[0];
            match n {
                "features" => batch.features = Some(t.clone()),
                "lob" => batch.lob = Some(t.clone()),
                "aux" => batch.aux = Some(t.clone()),
                other => panic!("unexpected input {other}"),
            }
        }
    }
    for i in 0.. {
        let Some(class) = file.tensors.get(&format!("target.{i}.class")) else { break };
        let ret = &file.tensors[&format!("target.{i}.ret")];
        targets.push(HeadTargets { class: class.data.iter().map(|&c| c as u8).collect(), ret: ret.data.clone() });
    }
    batch.targets = targets;
    let loss = f64::from(file.tensors["output.loss"].data[0]);
    Case { config, params, batch, weights, loss, grads }
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn check(name: &str) {
    let case = load(name);
    let be = Cpu::new();
    let mut net = TrainNet::from_tensors(&be, case.config.clone(), &case.params).unwrap();
    net.zero_grads(&be).unwrap();
    let out = net.forward_backward(&be, &case.batch, case.weights, 7).unwrap();
    assert!(
        (out.loss - case.loss).abs() <= 1e-5 * (1.0 + case.loss.abs()),
        "{name}: loss {} vs PyTorch {}",
        out.loss,
        case.loss
    );
    assert_eq!(out.logits.len(), case.batch.batch);
    let mut worst = (0.0, String::new());
    let mut failures = Vec::new();
    for p in net.params() {
        let want = case.grads.get(&p.name).unwrap_or_else(|| panic!("{name}: no golden gradient for {}", p.name));
        let mut got = vec![0f32; p.numel()];
        quorum::backend::Backend::read(&be, &p.grad, &mut got).unwrap();
        assert_eq!(want.numel(), got.len(), "{name}: {}", p.name);
        let e = rel_l2(&got, &want.data);
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
        if e.is_nan() || e > 1e-3 {
            failures.push(format!("{}: relative L2 error {e:.3e}", p.name));
        }
    }
    assert!(failures.is_empty(), "{name}: gradients off:\n{}", failures.join("\n"));
    eprintln!("{name}: loss {:.6} (PyTorch {:.6}), worst gradient {} at {:.2e}", out.loss, case.loss, worst.1, worst.0);
}

#[test]
fn mpd_with_cls_token_matches_pytorch() {
    check("mpd_cls");
}

#[test]
fn mpd_mean_pooled_matches_pytorch() {
    check("mpd_nocls");
}

#[test]
fn tlob_with_aux_three_horizons_matches_pytorch() {
    check("tlob_aux_3h");
}

#[test]
fn tlob_without_aux_two_horizons_matches_pytorch() {
    check("tlob_noaux_2h");
}

#[test]
fn cnn_lstm_one_layer_matches_pytorch() {
    check("cnn_lstm_1layer");
}

#[test]
fn cnn_lstm_three_layers_matches_pytorch() {
    check("cnn_lstm_3layer");
}
