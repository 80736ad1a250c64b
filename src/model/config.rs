//! Model configs exactly as spec/models.md names them, with its defaults.
//!
//! Configs are serde (the weights file stores them as JSON in its metadata);
//! missing fields take the defaults, unknown fields are errors, and
//! `validate` rejects every inconsistent config with the field's name.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    MpdTransformer,
    Tlob,
    CnnLstm,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::MpdTransformer, ModelKind::Tlob, ModelKind::CnnLstm];

    pub fn as_str(&self) -> &'static str {
        match self {
            ModelKind::MpdTransformer => "mpd_transformer",
            ModelKind::Tlob => "tlob",
            ModelKind::CnnLstm => "cnn_lstm",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        ModelKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::config("model", format!("unknown model kind {s:?} (expected mpd_transformer, tlob or cnn_lstm)"))
        })
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MpdConfig {
    pub input_features: usize,
    pub sequence_length: usize,
    pub patch_size: (usize, usize),
    pub embed_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub dropout: f64,
    pub num_classes: usize,
    pub use_cls_token: bool,
}

impl Default for MpdConfig {
    fn default() -> Self {
        MpdConfig {
            input_features: 112,
            sequence_length: 60,
            patch_size: (10, 14),
            embed_dim: 256,
            num_layers: 6,
            num_heads: 8,
            mlp_ratio: 4.0,
            dropout: 0.1,
            num_classes: 3,
            use_cls_token: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlobConfig {
    pub num_levels: usize,
    pub lob_features: usize,
    pub sequence_length: usize,
    pub spatial_channels: Vec<usize>,
    pub spatial_kernel: usize,
    pub temporal_kernels: Vec<usize>,
    pub temporal_hidden: usize,
    pub num_temporal_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub dropout: f64,
    pub num_classes: usize,
    pub horizons: Vec<usize>,
    pub primary_horizon: usize,
    pub aux_features: usize,
}

impl Default for TlobConfig {
    fn default() -> Self {
        TlobConfig {
            num_levels: 20,
            lob_features: 4,
            sequence_length: 100,
            spatial_channels: vec![32, 64, 128],
            spatial_kernel: 3,
            temporal_kernels: vec![3, 5, 7],
            temporal_hidden: 128,
            num_temporal_layers: 4,
            num_heads: 4,
            mlp_ratio: 4.0,
            dropout: 0.1,
            num_classes: 3,
            horizons: vec![10, 30, 50],
            primary_horizon: 30,
            aux_features: 112,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnLstmConfig {
    pub input_features: usize,
    pub sequence_length: usize,
    pub conv_channels: Vec<usize>,
    pub conv_kernel: usize,
    pub lstm_hidden: usize,
    pub lstm_layers: usize,
    pub dropout: f64,
    pub num_classes: usize,
}

impl Default for CnnLstmConfig {
    fn default() -> Self {
        CnnLstmConfig {
            input_features: 112,
            sequence_length: 60,
            conv_channels: vec![128, 128],
            conv_kernel: 3,
            lstm_hidden: 256,
            lstm_layers: 2,
            dropout: 0.1,
            num_classes: 3,
        }
    }
}

/// One of the three configs, tagged by its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Mpd(MpdConfig),
    Tlob(TlobConfig),
    CnnLstm(CnnLstmConfig),
}

impl ModelConfig {
    pub fn default_for(kind: ModelKind) -> Self {
        match kind {
            ModelKind::MpdTransformer => ModelConfig::Mpd(MpdConfig::default()),
            ModelKind::Tlob => ModelConfig::Tlob(TlobConfig::default()),
            ModelKind::CnnLstm => ModelConfig::CnnLstm(CnnLstmConfig::default()),
        }
    }

    /// Small configs of each kind, quick to train on 2 cores (about a minute
    /// each on an hour of 100 ms data): the demo's models and the planted-
    /// signal acceptance test's.
    pub fn small(kind: ModelKind) -> Self {
        match kind {
            ModelKind::MpdTransformer => ModelConfig::Mpd(MpdConfig {
                sequence_length: 20,
                embed_dim: 32,
                num_layers: 2,
                num_heads: 4,
                mlp_ratio: 2.0,
                ..MpdConfig::default()
            }),
            ModelKind::Tlob => ModelConfig::Tlob(TlobConfig {
                spatial_channels: vec![8, 16],
                temporal_hidden: 32,
                num_temporal_layers: 1,
                num_heads: 4,
                mlp_ratio: 2.0,
                ..TlobConfig::default()
            }),
            ModelKind::CnnLstm => ModelConfig::CnnLstm(CnnLstmConfig {
                sequence_length: 20,
                conv_channels: vec![32],
                lstm_hidden: 32,
                lstm_layers: 1,
                ..CnnLstmConfig::default()
            }),
        }
    }

    /// The model's input window: feature vectors (MPD, CNN-LSTM) or snapshots (TLOB).
    pub fn sequence_length(&self) -> usize {
        match self {
            ModelConfig::Mpd(c) => c.sequence_length,
            ModelConfig::Tlob(c) => c.sequence_length,
            ModelConfig::CnnLstm(c) => c.sequence_length,
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Mpd(_) => ModelKind::MpdTransformer,
            ModelConfig::Tlob(_) => ModelKind::Tlob,
            ModelConfig::CnnLstm(_) => ModelKind::CnnLstm,
        }
    }

    /// Parses `json` as the config of `kind` and validates it.
    pub fn from_json(kind: ModelKind, json: &str) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::config(format!("{kind}.config"), e.to_string());
        let cfg = match kind {
            ModelKind::MpdTransformer => ModelConfig::Mpd(serde_json::from_str(json).map_err(bad)?),
            ModelKind::Tlob => ModelConfig::Tlob(serde_json::from_str(json).map_err(bad)?),
            ModelKind::CnnLstm => ModelConfig::CnnLstm(serde_json::from_str(json).map_err(bad)?),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        match self {
            ModelConfig::Mpd(c) => serde_json::to_string(c),
            ModelConfig::Tlob(c) => serde_json::to_string(c),
            ModelConfig::CnnLstm(c) => serde_json::to_string(c),
        }
        .expect("configs always serialize")
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Mpd(c) => c.validate(),
            ModelConfig::Tlob(c) => c.validate(),
            ModelConfig::CnnLstm(c) => c.validate(),
        }
    }
}

fn nonzero(kind: &str, field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::config(format!("{kind}.{field}"), "must be > 0"));
    }
    Ok(())
}

fn check_classes(kind: &str, v: usize) -> Result<()> {
    if v != 3 {
        return Err(Error::config(format!("{kind}.num_classes"), format!("must be 3 (DOWN, NEUTRAL, UP), got {v}")));
    }
    Ok(())
}

fn check_dropout(kind: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config(format!("{kind}.dropout"), format!("must be in [0, 1), got {p}")));
    }
    Ok(())
}

/// `mlp_ratio · dim` as the MLP width; it must be a positive integer.
pub(crate) fn mlp_hidden(kind: &str, ratio: f64, dim: usize) -> Result<usize> {
    let h = ratio * dim as f64;
    if !h.is_finite() || ratio <= 0.0 || h.fract() != 0.0 {
        return Err(Error::config(
            format!("{kind}.mlp_ratio"),
            format!("mlp_ratio × dim = {ratio} × {dim} = {h} must be a positive integer"),
        ));
    }
    Ok(h as usize)
}

fn check_kernel(kind: &str, field: &str, k: usize) -> Result<()> {
    if k == 0 || k.is_multiple_of(2) {
        return Err(Error::config(format!("{kind}.{field}"), format!("kernel sizes must be odd and > 0, got {k}")));
    }
    Ok(())
}

impl MpdConfig {
    pub fn validate(&self) -> Result<()> {
        const K: &str = "mpd_transformer";
        nonzero(K, "input_features", self.input_features)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        nonzero(K, "patch_size.0", self.patch_size.0)?;
        nonzero(K, "patch_size.1", self.patch_size.1)?;
        nonzero(K, "embed_dim", self.embed_dim)?;
        nonzero(K, "num_layers", self.num_layers)?;
        nonzero(K, "num_heads", self.num_heads)?;
        check_classes(K, self.num_classes)?;
        check_dropout(K, self.dropout)?;
        if !self.sequence_length.is_multiple_of(self.patch_size.0) {
            return Err(Error::config(
                format!("{K}.patch_size.0"),
                format!("sequence_length {} is not a multiple of {}", self.sequence_length, self.patch_size.0),
            ));
        }
        if !self.input_features.is_multiple_of(self.patch_size.1) {
            return Err(Error::config(
                format!("{K}.patch_size.1"),
                format!("input_features {} is not a multiple of {}", self.input_features, self.patch_size.1),
            ));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                format!("{K}.num_heads"),
                format!("embed_dim {} is not a multiple of num_heads {}", self.embed_dim, self.num_heads),
            ));
        }
        mlp_hidden(K, self.mlp_ratio, self.embed_dim)?;
        Ok(())
    }

    pub fn patches(&self) -> usize {
        (self.sequence_length / self.patch_size.0) * (self.input_features / self.patch_size.1)
    }

    pub fn tokens(&self) -> usize {
        self.patches() + usize::from(self.use_cls_token)
    }
}

impl TlobConfig {
    pub fn validate(&self) -> Result<()> {
        const K: &str = "tlob";
        nonzero(K, "num_levels", self.num_levels)?;
        nonzero(K, "lob_features", self.lob_features)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        nonzero(K, "temporal_hidden", self.temporal_hidden)?;
        nonzero(K, "num_temporal_layers", self.num_temporal_layers)?;
        nonzero(K, "num_heads", self.num_heads)?;
        check_classes(K, self.num_classes)?;
        check_dropout(K, self.dropout)?;
        if self.spatial_channels.is_empty() {
            return Err(Error::config(format!("{K}.spatial_channels"), "needs at least one conv layer"));
        }
        for (i, &c) in self.spatial_channels.iter().enumerate() {
            nonzero(K, &format!("spatial_channels[{i}]"), c)?;
        }
        check_kernel(K, "spatial_kernel", self.spatial_kernel)?;
        if self.temporal_kernels.is_empty() {
            return Err(Error::config(format!("{K}.temporal_kernels"), "needs at least one branch"));
        }
        for (i, &k) in self.temporal_kernels.iter().enumerate() {
            check_kernel(K, &format!("temporal_kernels[{i}]"), k)?;
        }
        if !self.temporal_hidden.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                format!("{K}.num_heads"),
                format!("temporal_hidden {} is not a multiple of num_heads {}", self.temporal_hidden, self.num_heads),
            ));
        }
        mlp_hidden(K, self.mlp_ratio, self.temporal_hidden)?;
        if self.horizons.is_empty() {
            return Err(Error::config(format!("{K}.horizons"), "needs at least one horizon"));
        }
        for (i, &h) in self.horizons.iter().enumerate() {
            nonzero(K, &format!("horizons[{i}]"), h)?;
            if self.horizons[..i].contains(&h) {
                return Err(Error::config(format!("{K}.horizons"), format!("horizon {h} is listed twice")));
            }
        }
        if !self.horizons.contains(&self.primary_horizon) {
            return Err(Error::config(
                format!("{K}.primary_horizon"),
                format!("{} is not one of horizons {:?}", self.primary_horizon, self.horizons),
            ));
        }
        Ok(())
    }
}

impl CnnLstmConfig {
    pub fn validate(&self) -> Result<()> {
        const K: &str = "cnn_lstm";
        nonzero(K, "input_features", self.input_features)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        nonzero(K, "lstm_hidden", self.lstm_hidden)?;
        nonzero(K, "lstm_layers", self.lstm_layers)?;
        check_classes(K, self.num_classes)?;
        check_dropout(K, self.dropout)?;
        check_kernel(K, "conv_kernel", self.conv_kernel)?;
        for (i, &c) in self.conv_channels.iter().enumerate() {
            nonzero(K, &format!("conv_channels[{i}]"), c)?;
        }
        Ok(())
    }

    /// The LSTM's input width: the last conv's channels (the features if no conv).
    pub fn lstm_input(&self) -> usize {
        self.conv_channels.last().copied().unwrap_or(self.input_features)
    }
}
