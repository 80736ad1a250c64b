//! Gradients of whole models against PyTorch (tests/fixtures/grads, written
//! by tools/reference/make_grad_goldens.py in float64): one `forward_backward`
//! per case, the loss and every parameter's gradient within docs/models.md's
//! tolerance (relative L2 error ≤ 1e-3 per tensor).

#[path = "common/grads.rs"]
mod grads;

use grads::{batch_for, check_golden, grads_of, small_configs, WEIGHTS};
use quorum::backend::{Backend, Precision};
use quorum::model::{Model, ModelConfig, ModelKind, ModelMeta};
use quorum::tensor::Tensor;
use quorum::train::{LossWeights, TrainBatch, TrainNet};
use quorum::{Cpu, Inputs};

fn check(name: &str) {
    check_golden(&Cpu::new(), name, grads::F32);
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

/// use_amp on the CPU (where it has AVX512_BF16): the matrix products in
/// bf16 from the f32 master weights, every golden within the 16-bit bound.
#[test]
fn mixed_precision_gradients_stay_near_pytorch_on_the_cpu() {
    let Ok(cpu) = Cpu::with_precision(Precision::Bf16) else {
        eprintln!("skipped: no AVX512_BF16 here");
        return;
    };
    let worst = grads::GOLDEN_CASES.iter().map(|name| check_golden(&cpu, name, grads::BF16)).fold(0.0, f64::max);
    // bf16 really is in use: the gradients move off the f32 ones by more than f32 rounding.
    assert!(worst > grads::F32.grad, "bf16 gradients as close as f32's ({worst:e}): is the bf16 path running?");
}

/// With dropout on (the goldens have none), finite differences of the loss
/// with the same dropout seed (so the same masks) against the gradient, on
/// the largest-gradient coordinates of every tensor.
///
/// The confidence term is weighted 0 here: its target (argmax == label) is a
/// step function of the weights, and a perturbation that flips an argmax
/// makes a jump finite differences cannot handle. That term's gradient is
/// covered by the goldens above and by train_ops.rs.
#[test]
fn dropout_paths_match_finite_differences() {
    const WEIGHTS: LossWeights = LossWeights { direction: 1.0, confidence: 0.0, ret: 0.3 };
    let be = Cpu::new();
    for config in small_configs(0.3) {
        let kind = config.kind();
        let batch = batch_for(&config, 3, 5);
        let mut net = TrainNet::init(&be, config, 11).unwrap();
        // Non-zero embeddings so every path carries signal.
        for p in net.params_mut() {
            if p.name == "pos_embed" || p.name == "cls_token" {
                let n = p.numel();
                let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.05).collect();
                be.write(&mut p.value, &v).unwrap();
            }
        }
        net.refresh(&be).unwrap();
        net.zero_grads(&be).unwrap();
        let base = net.forward_backward(&be, &batch, WEIGHTS, 99).unwrap();
        let again = net.evaluate(&be, &batch, WEIGHTS).unwrap();
        assert_ne!(base.loss, again.loss, "{kind}: dropout changes the training loss");
        let grads = grads_of(&be, &net);
        let eps = 1e-2f32;
        let (mut num, mut den) = (0f64, 0f64);
        for (pi, g) in grads.iter().enumerate() {
            // The two largest-magnitude coordinates of this tensor.
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &i in idx.iter().take(2) {
                let mut fd = 0f64;
                for sign in [1f32, -1f32] {
                    let p = &mut net.params_mut()[pi];
                    p.value[i] += sign * eps;
                    net.refresh(&be).unwrap();
                    let l = net.forward_backward(&be, &batch, WEIGHTS, 99).unwrap().loss;
                    fd += f64::from(sign) * l / (2.0 * f64::from(eps));
                    let p = &mut net.params_mut()[pi];
                    p.value[i] -= sign * eps;
                }
                net.refresh(&be).unwrap();
                if std::env::var("FD_DEBUG").is_ok() {
                    eprintln!("{kind} {} [{i}]: fd {fd:.6} analytic {:.6}", net.params()[pi].name, g[i]);
                }
                num += (fd - f64::from(g[i])).powi(2);
                den += fd * fd;
            }
        }
        let err = (num / den).sqrt();
        assert!(err < 1e-2, "{kind}: relative L2 error {err:.3e} of the gradient against finite differences");
        eprintln!("{kind}: dropout 0.3, finite differences agree to {err:.2e}");
    }
}

/// Same seed, same data → bit-identical weights and gradients; repeated
/// calls accumulate; evaluate leaves the gradients alone.
#[test]
fn training_is_deterministic_and_accumulates() {
    let be = Cpu::new();
    for config in small_configs(0.1) {
        let kind = config.kind();
        let batch = batch_for(&config, 3, 8);
        let mut a = TrainNet::init(&be, config.clone(), 5).unwrap();
        let mut b = TrainNet::init(&be, config.clone(), 5).unwrap();
        let c = TrainNet::init(&be, config.clone(), 6).unwrap();
        let (ea, eb, ec) = (a.export(&be).unwrap(), b.export(&be).unwrap(), c.export(&be).unwrap());
        assert_eq!(ea, eb, "{kind}: same seed, same weights");
        assert_ne!(ea, ec, "{kind}: another seed, other weights");
        a.zero_grads(&be).unwrap();
        b.zero_grads(&be).unwrap();
        let la = a.forward_backward(&be, &batch, WEIGHTS, 3).unwrap();
        let lb = b.forward_backward(&be, &batch, WEIGHTS, 3).unwrap();
        assert_eq!(la, lb, "{kind}: same step, same outputs");
        let ga = grads_of(&be, &a);
        assert_eq!(ga, grads_of(&be, &b), "{kind}: same step, bit-identical gradients");
        // A single-threaded pool gives the same bits (no scheduling-dependent reductions).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut s = TrainNet::init(&be, config.clone(), 5).unwrap();
        let ls = pool.install(|| {
            s.zero_grads(&be).unwrap();
            s.forward_backward(&be, &batch, WEIGHTS, 3).unwrap()
        });
        assert_eq!(la, ls, "{kind}: one thread, same outputs");
        assert_eq!(ga, grads_of(&be, &s), "{kind}: one thread, bit-identical gradients");
        // evaluate: no gradient change.
        a.evaluate(&be, &batch, WEIGHTS).unwrap();
        assert_eq!(ga, grads_of(&be, &a), "{kind}: evaluate leaves the gradients alone");
        // A second call adds the same gradient again.
        a.forward_backward(&be, &batch, WEIGHTS, 3).unwrap();
        for (g2, g1) in grads_of(&be, &a).iter().zip(&ga) {
            for (x, y) in g2.iter().zip(g1) {
                assert!((x - 2.0 * y).abs() <= 1e-6 * (1.0 + y.abs()), "{kind}: accumulation {x} vs 2×{y}");
            }
        }
    }
}

/// `export` loads into the inference model, whose outputs equal `evaluate`'s.
#[test]
fn export_loads_into_the_inference_model() {
    let be = Cpu::new();
    for config in small_configs(0.1) {
        let kind = config.kind();
        let batch = batch_for(&config, 3, 9);
        let mut net = TrainNet::init(&be, config.clone(), 21).unwrap();
        let out = net.evaluate(&be, &batch, WEIGHTS).unwrap();
        let mut model = Model::from_tensors(&be, config, &net.export(&be).unwrap(), ModelMeta::default()).unwrap();
        let inputs = Inputs { features: batch.features.as_ref(), lob: batch.lob.as_ref(), aux: batch.aux.as_ref() };
        let got = model.forward(&be, &inputs).unwrap();
        for (i, l) in out.logits.iter().enumerate() {
            for (k, v) in l.iter().enumerate() {
                let want = got["direction_logits"].data[i * 3 + k];
                assert!((v - want).abs() < 1e-5, "{kind}: logit {i},{k}: {v} vs {want}");
            }
            assert!((out.confidence[i] - got["confidence"].data[i]).abs() < 1e-6, "{kind}: confidence");
            assert!((out.expected_return[i] - got["expected_return"].data[i]).abs() < 1e-5, "{kind}: return");
        }
    }
}

/// PyTorch's default initialization: U(±1/√fan_in), LayerNorm 1 and 0, zero embeddings.
#[test]
fn init_follows_pytorch_defaults() {
    let be = Cpu::new();
    for config in small_configs(0.0) {
        let net = TrainNet::init(&be, config.clone(), 1).unwrap();
        for p in net.params() {
            let mut v = vec![0f32; p.numel()];
            be.read(&p.value, &mut v).unwrap();
            let leaf = p.name.rsplit('.').next().unwrap();
            if p.name.split('.').any(|s| s.starts_with("norm")) {
                let want = if leaf == "weight" { 1.0 } else { 0.0 };
                assert!(v.iter().all(|&x| x == want), "{}", p.name);
                continue;
            }
            if p.name == "pos_embed" || p.name == "cls_token" {
                assert!(v.iter().all(|&x| x == 0.0), "{}", p.name);
                continue;
            }
            let bound = if p.name.starts_with("lstm.") {
                1.0 / (net.params().iter().find(|q| q.name == "norm.weight").unwrap().numel() as f32).sqrt()
            } else {
                let w = net.params().iter().find(|q| q.name == p.name.replace(".bias", ".weight")).unwrap();
                1.0 / (w.shape[1..].iter().product::<usize>() as f32).sqrt()
            };
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound, "{}: max |v| {max} for bound {bound}", p.name);
            if v.len() >= 16 {
                // 16 uniform draws all inside half the range: odds 2^-16.
                assert!(max > 0.5 * bound, "{}: max |v| {max} for bound {bound}", p.name);
            }
            assert_eq!(p.decay, p.shape.len() >= 2, "{}: weight decay on matrices and kernels only", p.name);
        }
    }
}

/// A few AdamW steps on one batch bring its loss down (the whole loop fits together).
#[test]
fn a_few_adamw_steps_reduce_the_loss() {
    use quorum::backend::{AdamWStep, Train};
    let be = Cpu::new();
    // The first three configs: the last two are path-coverage toys (3 or 4
    // hidden units) too small to fit a batch in 20 steps.
    for config in small_configs(0.0).into_iter().take(3) {
        let kind = config.kind();
        let batch = batch_for(&config, 3, 12);
        let mut net = TrainNet::init(&be, config, 2).unwrap();
        let first = net.evaluate(&be, &batch, WEIGHTS).unwrap().loss;
        let mut state: Vec<(Vec<f32>, Vec<f32>)> =
            net.params().iter().map(|p| (vec![0f32; p.numel()], vec![0f32; p.numel()])).collect();
        for step in 1..=20 {
            net.zero_grads(&be).unwrap();
            net.forward_backward(&be, &batch, WEIGHTS, step).unwrap();
            for (p, (m, v)) in net.params_mut().iter_mut().zip(state.iter_mut()) {
                let s = AdamWStep {
                    lr: 1e-2,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                    step: step as u32,
                    grad_scale: 1.0,
                };
                let n = p.numel();
                be.adamw(&mut p.value, &p.grad, m, v, n, s).unwrap();
            }
            net.refresh(&be).unwrap();
        }
        let last = net.evaluate(&be, &batch, WEIGHTS).unwrap().loss;
        assert!(last < 0.7 * first, "{kind}: loss {first} → {last} after 20 steps on one batch");
    }
}

/// Bad batches are errors naming the input, never panics.
#[test]
fn bad_batches_are_errors_naming_the_input() {
    let be = Cpu::new();
    let configs = small_configs(0.0);
    let mut mpd = TrainNet::init(&be, configs[0].clone(), 1).unwrap();
    let good = batch_for(&configs[0], 3, 1);
    assert!(mpd.forward_backward(&be, &good, WEIGHTS, 1).is_ok());
    let err =
        |net: &mut TrainNet<Cpu>, b: &TrainBatch| net.forward_backward(&be, b, WEIGHTS, 1).unwrap_err().to_string();

    let mut b = good.clone();
    b.features = None;
    assert!(err(&mut mpd, &b).contains("features"), "{}", err(&mut mpd, &b));
    let mut b = good.clone();
    b.features = Some(Tensor::zeros(vec![3, 10, 11]));
    assert!(err(&mut mpd, &b).contains("features"));
    let mut b = good.clone();
    b.batch = 2;
    assert!(err(&mut mpd, &b).contains("features"));
    let mut b = good.clone();
    b.features.as_mut().unwrap().data[5] = f32::NAN;
    assert!(err(&mut mpd, &b).contains("features"));
    let mut b = good.clone();
    b.targets[0].class[1] = 3;
    assert!(err(&mut mpd, &b).contains("class"));
    let mut b = good.clone();
    b.targets[0].ret[2] = f32::INFINITY;
    assert!(err(&mut mpd, &b).contains("ret"));
    let mut b = good.clone();
    b.targets.clear();
    assert!(err(&mut mpd, &b).contains("targets"));
    let mut b = good.clone();
    b.targets[0].class.pop();
    assert!(err(&mut mpd, &b).contains("targets"));
    let mut b = good.clone();
    b.batch = 0;
    assert!(err(&mut mpd, &b).contains("batch"));

    let mut tlob = TrainNet::init(&be, configs[1].clone(), 1).unwrap();
    let good = batch_for(&configs[1], 2, 1);
    let mut b = good.clone();
    b.targets.pop();
    assert!(err(&mut tlob, &b).contains("targets"), "a TLOB batch needs one target set per horizon");
    let mut b = good.clone();
    b.aux = Some(Tensor::zeros(vec![2, 5]));
    assert!(err(&mut tlob, &b).contains("aux"));
    // Without aux the model skips its auxiliary encoder, as at inference.
    let mut b = good;
    b.aux = None;
    assert!(tlob.forward_backward(&be, &b, WEIGHTS, 1).is_ok());

    // Bad parameters: a missing tensor is named.
    let mut t = mpd.export(&be).unwrap();
    t.remove("norm.bias");
    let e = TrainNet::from_tensors(&be, configs[0].clone(), &t).err().expect("missing tensor").to_string();
    assert!(e.contains("norm.bias"), "{e}");
}

/// A smaller batch after a larger one runs in the larger one's tape and
/// gives exactly what a fresh model gives at that size.
#[test]
fn a_smaller_batch_reuses_the_tape_exactly() {
    let be = Cpu::new();
    for config in small_configs(0.2) {
        let kind = config.kind();
        let (big, small) = (batch_for(&config, 5, 1), batch_for(&config, 2, 2));
        let mut used = TrainNet::init(&be, config.clone(), 4).unwrap();
        used.forward_backward(&be, &big, WEIGHTS, 1).unwrap();
        used.zero_grads(&be).unwrap();
        let a = used.forward_backward(&be, &small, WEIGHTS, 2).unwrap();
        let mut fresh = TrainNet::init(&be, config, 4).unwrap();
        let b = fresh.forward_backward(&be, &small, WEIGHTS, 2).unwrap();
        assert_eq!(a, b, "{kind}: outputs");
        assert_eq!(grads_of(&be, &used), grads_of(&be, &fresh), "{kind}: gradients");
        assert_eq!(a.logits.len(), 2);
    }
}

/// At the default sizes the products are split over threads; the split
/// must not change a bit of the result (docs/training.md: same seed, same data →
/// same weights, whatever the pool). Batch 2 by default;
/// `QUORUM_BITS_BATCH=32` checks the training batch size (a few seconds).
#[test]
fn default_sizes_give_the_same_bits_on_one_thread_and_on_all() {
    let be = Cpu::new();
    for kind in ModelKind::ALL {
        let config = ModelConfig::default_for(kind);
        let size: usize = std::env::var("QUORUM_BITS_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        let batch = batch_for(&config, size, 3);
        let run = || {
            let mut net = TrainNet::init(&be, config.clone(), 8).unwrap();
            let out = net.forward_backward(&be, &batch, WEIGHTS, 5).unwrap();
            (out, grads_of(&be, &net))
        };
        let all = run();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
        assert_eq!(all.0, one.0, "{kind}: outputs");
        assert!(all.1 == one.1, "{kind}: gradients differ between one thread and {}", rayon::current_num_threads());
    }
}
