//! How much memory a training job needs, estimated from its config before it
//! starts, so the server can refuse a job over its budget
//! (`ServerConfig::training_memory_budget`, `quorum serve
//! --training-memory-mb`) instead of starting one that would exhaust the
//! machine.
//!
//! The estimate is deliberately generous and simple, an upper-side figure
//! rather than an exact count:
//! - parameters: [`BYTES_PER_PARAMETER`] per parameter (f32 value and
//!   gradient, AdamW's two moments, the backend's prepared layout, and the
//!   host copies of initialization, the best epoch and the export);
//! - activations: per sample, the floats each layer's training forward keeps
//!   for the backward (inputs, pre- and post-activation values, attention
//!   scores), times [`ACTIVATION_COPIES`] (the tape, the gradients flowing
//!   back and the scratch beside them), times `batch_size`.
//!
//! The data set itself (read from the data folder, not sized by the request)
//! is not part of the estimate. All arithmetic saturates, so no config can
//! overflow it.

use crate::model::{param_specs, ModelConfig};
use crate::train::TrainingConfig;

/// Bytes of memory per model parameter while training (8 f32 copies).
pub const BYTES_PER_PARAMETER: u64 = 32;
/// Copies of the forward's activations alive at once while training.
pub const ACTIVATION_COPIES: u64 = 3;

/// A job's estimated memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Parameters, gradients, optimizer state and their copies.
    pub params_bytes: u64,
    /// The activations of one micro-batch of `batch_size` samples.
    pub activations_bytes: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.params_bytes.saturating_add(self.activations_bytes)
    }
}

/// Saturating product of sizes.
fn prod(xs: &[usize]) -> u64 {
    xs.iter().fold(1u64, |acc, &x| acc.saturating_mul(x as u64))
}

/// Floats one sample's training forward keeps (see the module docs).
fn activations_per_sample(model: &ModelConfig) -> u64 {
    // A transformer block over `t` tokens of width `d`, MLP `h`, `heads`
    // heads: norms, qkv, attention output and projection, MLP in and out,
    // residuals, and the attention scores before and after the softmax.
    let block = |t: usize, d: usize, h: usize, heads: usize| {
        prod(&[t, d])
            .saturating_mul(8)
            .saturating_add(prod(&[t, h]).saturating_mul(2))
            .saturating_add(prod(&[2, heads, t, t]))
    };
    let mlp = |ratio: f64, d: usize| (ratio.max(0.0) * d as f64).min(u64::MAX as f64) as usize;
    match model {
        ModelConfig::Mpd(c) => {
            let patches =
                (c.sequence_length / c.patch_size.0.max(1)).saturating_mul(c.input_features / c.patch_size.1.max(1));
            let t = patches.saturating_add(usize::from(c.use_cls_token));
            let input = prod(&[c.sequence_length, c.input_features]).saturating_mul(2);
            let layers =
                block(t, c.embed_dim, mlp(c.mlp_ratio, c.embed_dim), c.num_heads).saturating_mul(c.num_layers as u64);
            input.saturating_add(layers).saturating_add(prod(&[t, c.embed_dim]).saturating_mul(2))
        }
        ModelConfig::Tlob(c) => {
            let (s, l, d) = (c.sequence_length, c.num_levels, c.temporal_hidden);
            let input = prod(&[s, l, c.lob_features]);
            let spatial = c.spatial_channels.iter().fold(0u64, |acc, &ch| acc.saturating_add(prod(&[3, s, l, ch])));
            let branches = prod(&[3, c.temporal_kernels.len(), s, d]).saturating_add(prod(&[2, s, d]));
            let layers = block(s, d, mlp(c.mlp_ratio, d), c.num_heads).saturating_mul(c.num_temporal_layers as u64);
            let aux = prod(&[4, c.aux_features.max(d)]);
            input.saturating_add(spatial).saturating_add(branches).saturating_add(layers).saturating_add(aux)
        }
        ModelConfig::CnnLstm(c) => {
            let s = c.sequence_length;
            let input = prod(&[s, c.input_features]);
            let conv = c.conv_channels.iter().fold(0u64, |acc, &ch| acc.saturating_add(prod(&[3, s, ch])));
            // Gates before and after their nonlinearities, the cell and the hidden state.
            let lstm = prod(&[10, s, c.lstm_hidden]).saturating_mul(c.lstm_layers as u64);
            input.saturating_add(conv).saturating_add(lstm)
        }
    }
}

/// The memory `config`'s job is expected to need (see the module docs), for
/// a config that passed [`TrainingConfig::validate`] (whose bounds keep every
/// size far from overflowing; the sums and products here saturate anyway).
pub fn estimate(config: &TrainingConfig) -> MemoryEstimate {
    let model = config.model_config();
    let params = param_specs(&model).0.iter().fold(0u64, |acc, (_, shape)| acc.saturating_add(prod(shape)));
    let params_bytes = params.saturating_mul(BYTES_PER_PARAMETER);
    let activations_bytes = activations_per_sample(&model)
        .saturating_mul(config.batch_size as u64)
        .saturating_mul(4)
        .saturating_mul(ACTIVATION_COPIES);
    MemoryEstimate { params_bytes, activations_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CnnLstmConfig, ModelKind, MpdConfig};

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_default_jobs_fit_the_default_budget_and_grow_with_their_sizes() {
        for kind in ModelKind::ALL {
            let config = TrainingConfig { architecture: kind, ..TrainingConfig::default() };
            let e = estimate(&config);
            assert!(e.params_bytes > 0 && e.activations_bytes > 0, "{kind}: {e:?}");
            assert!(e.total() < 2 * GIB, "{kind}: the default job is estimated at {e:?}");
            let double = estimate(&TrainingConfig { batch_size: 2 * config.batch_size, ..config.clone() });
            assert_eq!(double.activations_bytes, 2 * e.activations_bytes, "{kind}");
            assert_eq!(double.params_bytes, e.params_bytes, "{kind}");
        }
    }

    #[test]
    fn the_probes_lstm_is_estimated_in_terabytes_without_overflow() {
        // The probe of issue 15 (refused by the bounds first; the estimate must still be sane).
        let model = ModelConfig::CnnLstm(CnnLstmConfig { lstm_hidden: 2_000_000, ..CnnLstmConfig::default() });
        let config =
            TrainingConfig { architecture: ModelKind::CnnLstm, model: Some(model), ..TrainingConfig::default() };
        assert!(estimate(&config).params_bytes > 1000 * GIB);
        // Sizes whose attention scores overflow a u64 saturate instead.
        let model = ModelConfig::Mpd(MpdConfig {
            sequence_length: 1 << 20,
            input_features: 1 << 20,
            patch_size: (1, 1),
            embed_dim: 1 << 20,
            ..MpdConfig::default()
        });
        let config = TrainingConfig { model: Some(model), batch_size: 1 << 20, ..TrainingConfig::default() };
        assert_eq!(estimate(&config).total(), u64::MAX);
    }
}
