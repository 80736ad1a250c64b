//! Model configs exactly as docs/models.md names them, with its defaults.
//!
//! Configs are serde (the weights file stores them as JSON in its metadata);
//! missing fields take the defaults, unknown fields are errors, and
//! `validate` rejects every inconsistent config with the field's name.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
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

/// How TLOB's `lob` input is normalized (docs/data.md, "The TLOB input
/// tensor"): the input contract a model was trained on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LobNormalization {
    /// The window as a whole: prices from the last snapshot's mid, volumes
    /// by the window's statistics. Every row changes on every tick.
    #[default]
    Window,
    /// Each snapshot on its own: prices from the previous snapshot's mid,
    /// volumes by the snapshot's own statistics. A row never changes once
    /// made, so a live tick reuses the other snapshots' encodings
    /// (`model::tick`).
    Snapshot,
}

impl LobNormalization {
    pub fn is_window(&self) -> bool {
        *self == LobNormalization::Window
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
    /// Left out of the JSON when `window`, so files of the window contract
    /// read the same in builds from before the field.
    #[serde(skip_serializing_if = "LobNormalization::is_window")]
    pub lob_normalization: LobNormalization,
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
            lob_normalization: LobNormalization::Window,
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

/// Upper bounds of every size in a model config, far above docs/models.md's
/// defaults (listed in docs/security.md, "Limits"). A config beyond them, from
/// a training request or a weights file's metadata, is refused naming the
/// field; what fits within them is then up to the training memory budget (and,
/// for weights files, the file size limit). Compile-time constants: change
/// them here.
pub mod limits {
    /// `input_features`, `aux_features` (default 112).
    pub const MAX_FEATURES: usize = 4096;
    /// `sequence_length` (defaults 60 and 100).
    pub const MAX_SEQUENCE_LENGTH: usize = 4096;
    /// Widths: `embed_dim`, `temporal_hidden`, `lstm_hidden`, each of
    /// `conv_channels` and `spatial_channels` (defaults 32 to 256).
    pub const MAX_WIDTH: usize = 4096;
    /// `num_layers`, `num_temporal_layers`, `lstm_layers`, and how many
    /// `conv_channels` / `spatial_channels` (defaults 1 to 6).
    pub const MAX_LAYERS: usize = 64;
    /// `num_heads` (defaults 4 and 8).
    pub const MAX_HEADS: usize = 64;
    /// `mlp_ratio` (default 4).
    pub const MAX_MLP_RATIO: f64 = 16.0;
    /// MPD's tokens, `(sequence_length / patch_size.0) · (input_features /
    /// patch_size.1)` (default 48): attention is quadratic in them.
    pub const MAX_PATCHES: usize = 4096;
    /// Kernel sizes: `conv_kernel`, `spatial_kernel`, each of `temporal_kernels` (defaults 3 to 7).
    pub const MAX_KERNEL: usize = 63;
    /// TLOB's `num_levels` (default 20).
    pub const MAX_LEVELS: usize = 1000;
    /// TLOB's `lob_features` (default 4).
    pub const MAX_LOB_FEATURES: usize = 64;
    /// How many `temporal_kernels` and `horizons` (default 3).
    pub const MAX_BRANCHES: usize = 16;
    /// Each of TLOB's `horizons`, in ticks (defaults 10 to 50).
    pub const MAX_HORIZON: usize = 1_000_000;
}

/// `v` must be at most `max`.
fn at_most(kind: &str, field: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(Error::config(format!("{kind}.{field}"), format!("must be at most {max}, got {v}")));
    }
    Ok(())
}

/// A list of sizes: at most `max_len` entries, each in `1..=max`.
fn sizes(kind: &str, field: &str, values: &[usize], max_len: usize, max: usize) -> Result<()> {
    if values.len() > max_len {
        return Err(Error::config(
            format!("{kind}.{field}"),
            format!("must have at most {max_len} entries, got {}", values.len()),
        ));
    }
    for (i, &v) in values.iter().enumerate() {
        nonzero(kind, &format!("{field}[{i}]"), v)?;
        at_most(kind, &format!("{field}[{i}]"), v, max)?;
    }
    Ok(())
}

fn check_mlp_ratio(kind: &str, ratio: f64) -> Result<()> {
    if ratio > limits::MAX_MLP_RATIO {
        return Err(Error::config(
            format!("{kind}.mlp_ratio"),
            format!("must be at most {}, got {ratio}", limits::MAX_MLP_RATIO),
        ));
    }
    Ok(())
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
    at_most(kind, field, k, limits::MAX_KERNEL)?;
    if k == 0 || k.is_multiple_of(2) {
        return Err(Error::config(format!("{kind}.{field}"), format!("kernel sizes must be odd and > 0, got {k}")));
    }
    Ok(())
}

impl MpdConfig {
    pub fn validate(&self) -> Result<()> {
        const K: &str = "mpd_transformer";
        use limits::*;
        nonzero(K, "input_features", self.input_features)?;
        at_most(K, "input_features", self.input_features, MAX_FEATURES)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        at_most(K, "sequence_length", self.sequence_length, MAX_SEQUENCE_LENGTH)?;
        nonzero(K, "patch_size.0", self.patch_size.0)?;
        nonzero(K, "patch_size.1", self.patch_size.1)?;
        nonzero(K, "embed_dim", self.embed_dim)?;
        at_most(K, "embed_dim", self.embed_dim, MAX_WIDTH)?;
        nonzero(K, "num_layers", self.num_layers)?;
        at_most(K, "num_layers", self.num_layers, MAX_LAYERS)?;
        nonzero(K, "num_heads", self.num_heads)?;
        at_most(K, "num_heads", self.num_heads, MAX_HEADS)?;
        check_mlp_ratio(K, self.mlp_ratio)?;
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
        if self.patches() > MAX_PATCHES {
            return Err(Error::config(
                format!("{K}.patch_size"),
                format!(
                    "gives {} patches ({} × {}), must give at most {MAX_PATCHES}: use larger patches",
                    self.patches(),
                    self.sequence_length / self.patch_size.0,
                    self.input_features / self.patch_size.1
                ),
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
        use limits::*;
        nonzero(K, "num_levels", self.num_levels)?;
        at_most(K, "num_levels", self.num_levels, MAX_LEVELS)?;
        nonzero(K, "lob_features", self.lob_features)?;
        at_most(K, "lob_features", self.lob_features, MAX_LOB_FEATURES)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        at_most(K, "sequence_length", self.sequence_length, MAX_SEQUENCE_LENGTH)?;
        nonzero(K, "temporal_hidden", self.temporal_hidden)?;
        at_most(K, "temporal_hidden", self.temporal_hidden, MAX_WIDTH)?;
        nonzero(K, "num_temporal_layers", self.num_temporal_layers)?;
        at_most(K, "num_temporal_layers", self.num_temporal_layers, MAX_LAYERS)?;
        nonzero(K, "num_heads", self.num_heads)?;
        at_most(K, "num_heads", self.num_heads, MAX_HEADS)?;
        at_most(K, "aux_features", self.aux_features, MAX_FEATURES)?;
        check_mlp_ratio(K, self.mlp_ratio)?;
        check_classes(K, self.num_classes)?;
        check_dropout(K, self.dropout)?;
        if self.spatial_channels.is_empty() {
            return Err(Error::config(format!("{K}.spatial_channels"), "needs at least one conv layer"));
        }
        sizes(K, "spatial_channels", &self.spatial_channels, MAX_LAYERS, MAX_WIDTH)?;
        check_kernel(K, "spatial_kernel", self.spatial_kernel)?;
        if self.temporal_kernels.is_empty() {
            return Err(Error::config(format!("{K}.temporal_kernels"), "needs at least one branch"));
        }
        if self.temporal_kernels.len() > MAX_BRANCHES {
            return Err(Error::config(
                format!("{K}.temporal_kernels"),
                format!("must have at most {MAX_BRANCHES} entries, got {}", self.temporal_kernels.len()),
            ));
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
        sizes(K, "horizons", &self.horizons, MAX_BRANCHES, MAX_HORIZON)?;
        for (i, &h) in self.horizons.iter().enumerate() {
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
        use limits::*;
        nonzero(K, "input_features", self.input_features)?;
        at_most(K, "input_features", self.input_features, MAX_FEATURES)?;
        nonzero(K, "sequence_length", self.sequence_length)?;
        at_most(K, "sequence_length", self.sequence_length, MAX_SEQUENCE_LENGTH)?;
        nonzero(K, "lstm_hidden", self.lstm_hidden)?;
        at_most(K, "lstm_hidden", self.lstm_hidden, MAX_WIDTH)?;
        nonzero(K, "lstm_layers", self.lstm_layers)?;
        at_most(K, "lstm_layers", self.lstm_layers, MAX_LAYERS)?;
        check_classes(K, self.num_classes)?;
        check_dropout(K, self.dropout)?;
        check_kernel(K, "conv_kernel", self.conv_kernel)?;
        sizes(K, "conv_channels", &self.conv_channels, MAX_LAYERS, MAX_WIDTH)?;
        Ok(())
    }

    /// The LSTM's input width: the last conv's channels (the features if no conv).
    pub fn lstm_input(&self) -> usize {
        self.conv_channels.last().copied().unwrap_or(self.input_features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(kind: ModelKind, json: &str) -> String {
        match ModelConfig::from_json(kind, json) {
            Err(Error::Config { field, reason }) => {
                assert!(reason.contains("at most"), "{json}: {reason}");
                field
            }
            other => panic!("{json}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_and_small_configs_are_within_the_bounds() {
        for kind in ModelKind::ALL {
            ModelConfig::default_for(kind).validate().unwrap();
            ModelConfig::small(kind).validate().unwrap();
        }
    }

    #[test]
    fn every_size_has_an_upper_bound_named_in_the_error() {
        use ModelKind::*;
        let cases: Vec<(ModelKind, String, &str)> = vec![
            (CnnLstm, r#"{"lstm_hidden": 2000000}"#.into(), "cnn_lstm.lstm_hidden"),
            (CnnLstm, r#"{"lstm_layers": 65}"#.into(), "cnn_lstm.lstm_layers"),
            (CnnLstm, r#"{"input_features": 4097}"#.into(), "cnn_lstm.input_features"),
            (CnnLstm, r#"{"sequence_length": 4097}"#.into(), "cnn_lstm.sequence_length"),
            (CnnLstm, r#"{"conv_kernel": 65}"#.into(), "cnn_lstm.conv_kernel"),
            (CnnLstm, r#"{"conv_channels": [4097]}"#.into(), "cnn_lstm.conv_channels[0]"),
            (CnnLstm, format!(r#"{{"conv_channels": {:?}}}"#, vec![8; 65]), "cnn_lstm.conv_channels"),
            (MpdTransformer, r#"{"embed_dim": 8192}"#.into(), "mpd_transformer.embed_dim"),
            (MpdTransformer, r#"{"num_layers": 65}"#.into(), "mpd_transformer.num_layers"),
            (MpdTransformer, r#"{"num_heads": 128, "embed_dim": 256}"#.into(), "mpd_transformer.num_heads"),
            (MpdTransformer, r#"{"mlp_ratio": 17.0}"#.into(), "mpd_transformer.mlp_ratio"),
            (MpdTransformer, r#"{"patch_size": [1, 1]}"#.into(), "mpd_transformer.patch_size"),
            (Tlob, r#"{"num_levels": 1001}"#.into(), "tlob.num_levels"),
            (Tlob, r#"{"lob_features": 65}"#.into(), "tlob.lob_features"),
            (Tlob, r#"{"temporal_hidden": 4100, "num_heads": 4}"#.into(), "tlob.temporal_hidden"),
            (Tlob, r#"{"num_temporal_layers": 65}"#.into(), "tlob.num_temporal_layers"),
            (Tlob, r#"{"aux_features": 4097}"#.into(), "tlob.aux_features"),
            (Tlob, r#"{"spatial_channels": [8, 5000]}"#.into(), "tlob.spatial_channels[1]"),
            (Tlob, r#"{"spatial_kernel": 101}"#.into(), "tlob.spatial_kernel"),
            (Tlob, format!(r#"{{"temporal_kernels": {:?}}}"#, vec![3; 17]), "tlob.temporal_kernels"),
            (Tlob, r#"{"temporal_kernels": [3, 99]}"#.into(), "tlob.temporal_kernels[1]"),
            (Tlob, r#"{"horizons": [10, 1000001], "primary_horizon": 10}"#.into(), "tlob.horizons[1]"),
            (
                Tlob,
                format!(r#"{{"horizons": {:?}, "primary_horizon": 1}}"#, (1..=17).collect::<Vec<_>>()),
                "tlob.horizons",
            ),
        ];
        for (kind, json, field) in &cases {
            assert_eq!(field_of(*kind, json), *field, "{json}");
        }
    }

    #[test]
    fn the_lob_normalization_is_read_written_and_left_out_when_window() {
        let ModelConfig::Tlob(c) =
            ModelConfig::from_json(ModelKind::Tlob, r#"{"lob_normalization": "snapshot"}"#).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(c.lob_normalization, LobNormalization::Snapshot);
        let json = ModelConfig::Tlob(c.clone()).to_json();
        assert!(json.contains(r#""lob_normalization":"snapshot""#), "{json}");
        assert_eq!(ModelConfig::from_json(ModelKind::Tlob, &json).unwrap(), ModelConfig::Tlob(c));
        // The window contract is the default, and stays out of the file.
        let window = ModelConfig::default_for(ModelKind::Tlob);
        assert!(!window.to_json().contains("lob_normalization"));
        match ModelConfig::from_json(ModelKind::Tlob, r#"{"lob_normalization": "tick"}"#) {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "tlob.config");
                assert!(reason.contains("unknown variant `tick`") && reason.contains("snapshot"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
