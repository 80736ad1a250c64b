//! What the model benches share: the default models with generated weights
//! (the values do not change the work done) and deterministic inputs.

use quorum::model::{ModelConfig, ModelKind, ModelMeta};
use quorum::weights::generated;
use quorum::{Backend, Model, Tensor};

/// `features`, `lob`, `aux` for `kind` at `batch` (TLOB takes lob and aux).
pub fn inputs(kind: ModelKind, batch: usize) -> (Option<Tensor>, Option<Tensor>, Option<Tensor>) {
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()).unwrap()
    };
    match kind {
        ModelKind::Tlob => (None, Some(fill(vec![batch, 100, 20, 4])), Some(fill(vec![batch, 112]))),
        _ => (Some(fill(vec![batch, 60, 112])), None, None),
    }
}

/// `kind` at docs/models.md's default config, generated weights.
pub fn default_model<B: Backend>(be: &B, kind: ModelKind) -> Model<B> {
    let config = ModelConfig::default_for(kind);
    Model::from_tensors(be, config.clone(), &generated::params(&config), ModelMeta::default()).unwrap()
}
