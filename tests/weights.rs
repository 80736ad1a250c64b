//! Weights files: round trips, f16/bf16 widening, and every kind of bad file
//! giving one clear error that lists all of its problems.

use std::collections::{BTreeMap, HashMap};

use quorum::model::{CnnLstmConfig, ModelConfig, ModelKind, ModelMeta, MpdConfig, TlobConfig};
use quorum::weights::{self, generated};
use quorum::{Cpu, Error, Inputs, Model, Tensor};

fn small_mpd() -> ModelConfig {
    ModelConfig::Mpd(MpdConfig {
        input_features: 24,
        sequence_length: 20,
        patch_size: (5, 6),
        embed_dim: 32,
        num_layers: 2,
        num_heads: 4,
        ..MpdConfig::default()
    })
}

fn bytes_of(config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Vec<u8> {
    let ordered: BTreeMap<String, Tensor> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    weights::to_bytes(&ordered, weights::metadata(config, &ModelMeta::default())).unwrap()
}

fn problems(bytes: &[u8]) -> Vec<String> {
    match weights::parse(bytes, "test.safetensors") {
        Err(Error::Weights { problems, .. }) => problems,
        Err(other) => panic!("expected a weights error, got {other}"),
        Ok(_) => panic!("expected a weights error, the file loaded"),
    }
}

#[test]
fn save_then_load_round_trips_tensors_config_and_meta() {
    let config = small_mpd();
    let mut tensors = generated::params(&config);
    tensors.insert("input_norm.mean".into(), Tensor::new(vec![24], vec![0.5; 24]).unwrap());
    tensors.insert("input_norm.std".into(), Tensor::new(vec![24], vec![2.0; 24]).unwrap());
    let dir = tempdir();
    let path = dir.join("mpd.safetensors");
    let meta = ModelMeta { return_scale: 12.5, horizon: Some(30) };
    weights::save(&path, &config, &meta, &tensors).unwrap();
    let back = weights::load(&path).unwrap();
    assert_eq!(back.config, config);
    assert_eq!(back.meta, meta);
    assert_eq!(back.tensors, tensors);
}

#[test]
fn one_error_lists_missing_unexpected_and_misshaped_tensors() {
    let config = small_mpd();
    let mut t = generated::params(&config);
    t.remove("blocks.1.mlp.fc2.bias");
    t.insert("blocks.7.attn.qkv.weight".into(), Tensor::zeros(vec![2, 2]));
    t.insert("norm.weight".into(), Tensor::zeros(vec![31]));
    let p = problems(&bytes_of(&config, &t));
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.iter().any(|s| s.contains("missing tensor blocks.1.mlp.fc2.bias")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("unexpected tensor blocks.7.attn.qkv.weight")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("norm.weight has shape [31], expected [32]")), "{p:?}");
}

#[test]
fn a_file_claiming_the_wrong_model_is_rejected() {
    let mpd = small_mpd();
    let tensors = generated::params(&mpd);
    // The tensors are an MPD's, the metadata says TLOB.
    let ordered: BTreeMap<String, Tensor> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let tlob = ModelConfig::Tlob(TlobConfig::default());
    let bytes = weights::to_bytes(&ordered, weights::metadata(&tlob, &ModelMeta::default())).unwrap();
    let p = problems(&bytes);
    assert!(p.iter().any(|s| s.contains("missing tensor spatial.convs.0.weight")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("unexpected tensor patch_embed.proj.weight")), "{p:?}");

    let mut md = weights::metadata(&mpd, &ModelMeta::default());
    md.insert("model".into(), "resnet".into());
    let p = problems(&weights::to_bytes(&ordered, md).unwrap());
    assert!(p[0].contains("unknown model kind \"resnet\""), "{p:?}");
}

#[test]
fn missing_or_wrong_format_metadata_is_named() {
    let config = small_mpd();
    let ordered: BTreeMap<String, Tensor> = generated::params(&config).into_iter().collect();
    let mut md = weights::metadata(&config, &ModelMeta::default());
    md.remove("format");
    md.insert("format_version".into(), "2".into());
    md.insert("return_scale".into(), "-1".into());
    let p = problems(&weights::to_bytes(&ordered, md).unwrap());
    assert!(p.iter().any(|s| s.contains("metadata format is None")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("format_version is Some(\"2\")")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("return_scale \"-1\"")), "{p:?}");
}

#[test]
fn files_from_pytorch_that_need_converting_say_how() {
    let config = small_mpd();
    // torch.save's zip archive and an old-style pickle.
    for (bytes, kind) in [(&b"PK\x03\x04archive/data.pkl..."[..], "zip archive"), (&b"\x80\x02}q\x00(X"[..], "pickle")]
    {
        let p = problems(bytes);
        assert!(p[0].contains(kind) && p[0].contains("safetensors.torch.save_file"), "{p:?}");
    }
    // A state dict saved without quorum's metadata.
    let ordered: BTreeMap<String, Tensor> = generated::params(&config).into_iter().collect();
    let p = problems(&weights::to_bytes(&ordered, HashMap::new()).unwrap());
    assert!(p.iter().any(|s| s.contains("without quorum's metadata") && s.contains("quorum_ref.py")), "{p:?}");
    // A wrapper's state dict: every name under `module.`.
    for prefix in ["module.", "model."] {
        let wrapped: BTreeMap<String, Tensor> =
            generated::params(&config).into_iter().map(|(k, t)| (format!("{prefix}{k}"), t)).collect();
        let p = problems(&weights::to_bytes(&wrapped, weights::metadata(&config, &ModelMeta::default())).unwrap());
        assert!(p[0].contains(&format!("starts with `{prefix}`")), "{p:?}");
    }
    // A correct file gets none of these hints.
    assert!(weights::parse(&bytes_of(&config, &generated::params(&config)), "ok").is_ok());
}

#[test]
fn truncated_and_garbage_files_are_clear_errors() {
    let config = small_mpd();
    let bytes = bytes_of(&config, &generated::params(&config));
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let p = problems(&bytes[..cut]);
        assert!(p[0].contains("not a readable safetensors file"), "cut at {cut}: {p:?}");
    }
    let p = problems(b"definitely not safetensors, just some text that is long enough");
    assert!(p[0].contains("not a readable safetensors file"), "{p:?}");
    let missing = weights::load(std::path::Path::new("/nonexistent/quorum/weights.safetensors")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/quorum/weights.safetensors"), "{missing}");
}

#[test]
fn non_finite_weights_and_half_normalizers_are_rejected() {
    let config = small_mpd();
    let mut t = generated::params(&config);
    t.get_mut("pos_embed").unwrap().data[5] = f32::NAN;
    t.insert("input_norm.mean".into(), Tensor::zeros(vec![24]));
    let p = problems(&bytes_of(&config, &t));
    assert!(p.iter().any(|s| s.contains("pos_embed has a non-finite value NaN at flat index 5")), "{p:?}");
    assert!(p.iter().any(|s| s.contains("input_norm needs both")), "{p:?}");
}

#[test]
fn f16_and_bf16_files_load_widened() {
    use safetensors::tensor::{Dtype, TensorView};
    let config = ModelConfig::CnnLstm(CnnLstmConfig {
        input_features: 8,
        sequence_length: 5,
        conv_channels: vec![6],
        lstm_hidden: 4,
        lstm_layers: 1,
        ..CnnLstmConfig::default()
    });
    let tensors = generated::params(&config);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let encoded: BTreeMap<String, (Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(k, t)| {
                let bytes = t
                    .data
                    .iter()
                    .flat_map(|&v| match dtype {
                        Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                (k.clone(), (t.shape.clone(), bytes))
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = encoded
            .iter()
            .map(|(k, (shape, b))| (k.clone(), TensorView::new(dtype, shape.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, Some(weights::metadata(&config, &ModelMeta::default()))).unwrap();
        let file = weights::parse(&bytes, "half.safetensors").unwrap();
        for (k, t) in &tensors {
            let widened: Vec<f32> = t
                .data
                .iter()
                .map(|&v| match dtype {
                    Dtype::F16 => half::f16::from_f32(v).to_f32(),
                    _ => half::bf16::from_f32(v).to_f32(),
                })
                .collect();
            assert_eq!(file.tensors[k].data, widened, "{dtype:?} {k}");
        }
    }
}

#[test]
fn invalid_configs_name_their_field() {
    let cases: Vec<(ModelKind, &str, &str)> = vec![
        (ModelKind::MpdTransformer, r#"{"sequence_length": 61}"#, "patch_size.0"),
        (ModelKind::MpdTransformer, r#"{"input_features": 100}"#, "patch_size.1"),
        (ModelKind::MpdTransformer, r#"{"num_heads": 7}"#, "num_heads"),
        (ModelKind::MpdTransformer, r#"{"num_classes": 4}"#, "num_classes"),
        (ModelKind::MpdTransformer, r#"{"embed_dim": 0}"#, "embed_dim"),
        (ModelKind::MpdTransformer, r#"{"mlp_ratio": 4.001}"#, "mlp_ratio"),
        (ModelKind::MpdTransformer, r#"{"patch_size": [10, 0]}"#, "patch_size.1"),
        (ModelKind::MpdTransformer, r#"{"embedding": 3}"#, "unknown field"),
        (ModelKind::Tlob, r#"{"primary_horizon": 20}"#, "primary_horizon"),
        (ModelKind::Tlob, r#"{"temporal_kernels": [3, 4]}"#, "temporal_kernels[1]"),
        (ModelKind::Tlob, r#"{"spatial_kernel": 2}"#, "spatial_kernel"),
        (ModelKind::Tlob, r#"{"horizons": [10, 10], "primary_horizon": 10}"#, "horizons"),
        (ModelKind::Tlob, r#"{"spatial_channels": []}"#, "spatial_channels"),
        (ModelKind::CnnLstm, r#"{"lstm_layers": 0}"#, "lstm_layers"),
        (ModelKind::CnnLstm, r#"{"dropout": 1.0}"#, "dropout"),
        (ModelKind::CnnLstm, r#"{"conv_channels": [128, 0]}"#, "conv_channels[1]"),
    ];
    for (kind, json, field) in cases {
        let err = ModelConfig::from_json(kind, json).expect_err(json).to_string();
        assert!(err.contains(field), "{kind} {json}: {err}");
    }
    for kind in ModelKind::ALL {
        ModelConfig::from_json(kind, "{}").expect("defaults are valid");
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let be = Cpu::new();
    let config = small_mpd();
    let mut model = Model::from_tensors(&be, config, &generated::params(&small_mpd()), ModelMeta::default()).unwrap();
    let good = Tensor::zeros(vec![2, 20, 24]);
    assert!(model.forward(&be, &Inputs { features: Some(&good), ..Inputs::default() }).is_ok());
    let wrong = Tensor::zeros(vec![2, 24, 20]);
    let e = model.forward(&be, &Inputs { features: Some(&wrong), ..Inputs::default() }).unwrap_err().to_string();
    assert!(e.contains("features") && e.contains("[2, 24, 20]"), "{e}");
    let empty = Tensor::zeros(vec![0, 20, 24]);
    assert!(model.forward(&be, &Inputs { features: Some(&empty), ..Inputs::default() }).is_err());
    let mut nan = good.clone();
    nan.data[17] = f32::NAN;
    let e = model.forward(&be, &Inputs { features: Some(&nan), ..Inputs::default() }).unwrap_err().to_string();
    assert!(e.contains("features") && e.contains("index 17"), "{e}");
    let e = model.forward(&be, &Inputs::default()).unwrap_err().to_string();
    assert!(e.contains("features") && e.contains("required"), "{e}");

    let tlob_cfg = ModelConfig::Tlob(TlobConfig {
        num_levels: 4,
        sequence_length: 6,
        spatial_channels: vec![4],
        temporal_hidden: 8,
        num_temporal_layers: 1,
        num_heads: 2,
        aux_features: 0,
        ..TlobConfig::default()
    });
    let mut tlob =
        Model::from_tensors(&be, tlob_cfg.clone(), &generated::params(&tlob_cfg), ModelMeta::default()).unwrap();
    let lob = Tensor::zeros(vec![1, 6, 4, 4]);
    let aux = Tensor::zeros(vec![1, 112]);
    let e = tlob.forward(&be, &Inputs { lob: Some(&lob), aux: Some(&aux), features: None }).unwrap_err().to_string();
    assert!(e.contains("aux") && e.contains("no auxiliary encoder"), "{e}");
    assert!(tlob.forward(&be, &Inputs { lob: Some(&lob), ..Inputs::default() }).is_ok());
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "quorum-weights-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
