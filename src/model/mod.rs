//! The three models, each written once (its definition, one forward for
//! inference and training, its backward: `mpd.rs`, `tlob.rs`, `cnn_lstm.rs`
//! over `def`, `run` and `tape`), and the inference model.
//!
//! A `Model<B>` holds one model's definition and the buffers its forward
//! reads on a backend, its optional input normalizer, and activations planned
//! for the last shape seen.
//! `forward_into` writes the named outputs of docs/models.md into host tensors that
//! are reused from call to call, so steady-state inference allocates nothing.
//!
//! A forward is three phases: stage (check the inputs, plan the activations
//! on a new shape, write the inputs), compute (only compute ops), emit (read
//! the heads). On a
//! backend that records (a CUDA graph), the compute phase of the second call
//! at the same shape is recorded, and every later call at that shape replays
//! the recording: one launch instead of dozens, which is most of the batch-1
//! latency on a GPU. The activations do not move while their shape holds, so
//! the recorded pointers stay valid; a new shape drops the recording.

pub mod cnn_lstm;
pub mod config;
pub mod def;
pub mod mpd;
pub mod run;
pub mod tape;
pub mod tick;
pub mod tlob;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use config::{CnnLstmConfig, LobNormalization, ModelConfig, ModelKind, MpdConfig, TlobConfig};
use def::Loaded;
pub use def::ParamSpecs;
use run::{Acts, Architecture, Infer};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::weights::{self, WeightsFile};

/// The inputs a forward pass may use; each model takes what it needs
/// (`features` for MPD and CNN-LSTM; `lob` and optionally `aux` for TLOB).
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    pub features: Option<&'a Tensor>,
    pub lob: Option<&'a Tensor>,
    pub aux: Option<&'a Tensor>,
}

impl<'a> Inputs<'a> {
    fn require(&self, name: &str, model: &str) -> Result<&'a Tensor> {
        let t = match name {
            "features" => self.features,
            "lob" => self.lob,
            _ => self.aux,
        };
        t.ok_or_else(|| Error::input(name, format!("required by {model} but not given")))
    }
}

/// Named output tensors (`direction_logits`, `confidence`, …), reused across calls.
pub type Outputs = BTreeMap<String, Tensor>;

/// `(mean, std)` buffers applied as `(x − mean) / std` before the model.
pub struct Normalizers<B: Backend> {
    pub input: Option<(B::Buf, B::Buf)>,
    pub aux: Option<(B::Buf, B::Buf)>,
}

/// What the weights file says beyond the tensors (docs/models.md, "The weights file").
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    /// The heads' `expected_return` is `bps / return_scale` (docs/training.md).
    pub return_scale: f64,
    /// The label horizon, in ticks, of the primary outputs, when recorded.
    pub horizon: Option<u64>,
}

impl Default for ModelMeta {
    fn default() -> Self {
        ModelMeta { return_scale: 10.0, horizon: None }
    }
}

/// One of the three definitions.
// One per model, made once and never moved on a hot path: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    Mpd(mpd::Mpd),
    Tlob(tlob::Tlob),
    CnnLstm(cnn_lstm::CnnLstm),
}

/// `$body` with `$n` bound to the definition inside `$net`, whichever it is.
macro_rules! with_net {
    ($net:expr, $n:ident => $body:expr) => {
        match $net {
            $crate::model::Net::Mpd($n) => $body,
            $crate::model::Net::Tlob($n) => $body,
            $crate::model::Net::CnnLstm($n) => $body,
        }
    };
}

pub(crate) use with_net;

impl Net {
    /// The definition of a config.
    pub fn new(config: &ModelConfig) -> Self {
        match config {
            ModelConfig::Mpd(c) => Net::Mpd(mpd::Mpd::new(c)),
            ModelConfig::Tlob(c) => Net::Tlob(tlob::Tlob::new(c)),
            ModelConfig::CnnLstm(c) => Net::CnnLstm(cnn_lstm::CnnLstm::new(c)),
        }
    }

    pub fn def(&self) -> &def::Def {
        with_net!(self, n => n.def())
    }
}

pub struct Model<B: Backend> {
    config: ModelConfig,
    meta: ModelMeta,
    param_count: usize,
    norms: Normalizers<B>,
    net: Net,
    /// The buffers the definition's forward reads (`def::Def::load`).
    weights: Loaded<B>,
    acts: Acts<B>,
    /// TLOB's `Encode` passes plan apart, so a tick's two passes
    /// (`model::tick`) each replay their own plan.
    encode_acts: Acts<B>,
    /// TLOB's snapshot tokens kept between forwards (`model::tick`): on by
    /// default under the `snapshot` input normalization.
    token_cache: Option<tick::TokenCache>,
    graphs: Graphs<B>,
}

/// What the op list of a forward depends on (besides the weights): the
/// batch size (the activations' size) and, for TLOB, whether the auxiliary
/// encoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunShape {
    pub batch: usize,
    pub aux: bool,
    pub part: Part,
}

impl RunShape {
    /// A whole forward of `batch` samples.
    pub fn whole(batch: usize, aux: bool) -> Self {
        RunShape { batch, aux, part: Part::Whole }
    }

    /// What the activation plan depends on besides the batch.
    fn key(&self) -> u64 {
        u64::from(self.aux) | (self.part as u64) << 1
    }
}

/// Which part of a forward a pass runs. Only TLOB splits (its tick,
/// `model::tick`): `Encode` takes `(batch, L, F)` snapshots to `(batch, D)`
/// tokens (spatial CNN and projection, one snapshot per sample), `Tokens`
/// takes `(batch, T, D)` tokens to the heads (everything after). `Whole`
/// is the two in one pass, with the same ops on the same rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole = 0,
    Encode = 1,
    Tokens = 2,
}

/// The recorded compute phase and when to record it, per part of the
/// forward (`Part as usize`: a TLOB tick's two passes each keep theirs).
struct Graphs<B: Backend> {
    enabled: bool,
    /// The shape and arena plan of the part's previous pass: a second one
    /// at both is recorded.
    last: [Option<(RunShape, u64)>; 3],
    /// A recording, valid for its shape while its arena keeps that plan
    /// (`Whole` and `Tokens` share an arena: one's new plan moves the
    /// other's buffers).
    recorded: [Option<(RunShape, u64, B::Graph)>; 3],
    replays: u64,
}

/// The expected parameters of a config (docs/models.md's names and shapes).
pub fn param_specs(config: &ModelConfig) -> ParamSpecs {
    with_net!(Net::new(config), n => n.def.specs)
}

/// The optional normalizer tensors a model of this config may carry.
pub fn normalizer_specs(config: &ModelConfig) -> ParamSpecs {
    let mut s = ParamSpecs::default();
    match config {
        ModelConfig::Mpd(MpdConfig { input_features: f, .. })
        | ModelConfig::CnnLstm(CnnLstmConfig { input_features: f, .. }) => {
            s.push("input_norm.mean", &[*f]);
            s.push("input_norm.std", &[*f]);
        }
        ModelConfig::Tlob(c) if c.aux_features > 0 => {
            s.push("aux_norm.mean", &[c.aux_features]);
            s.push("aux_norm.std", &[c.aux_features]);
        }
        ModelConfig::Tlob(_) => {}
    }
    s
}

/// The names of a config's outputs, in a stable order.
pub fn output_names(config: &ModelConfig) -> Vec<String> {
    let mut names = vec!["direction_logits".to_string(), "confidence".into(), "expected_return".into()];
    if let ModelConfig::Tlob(c) = config {
        for &h in &c.horizons {
            names.extend(horizon_names(h));
        }
    }
    names
}

impl<B: Backend> Model<B> {
    /// Builds a model from host tensors already checked against the config
    /// (see `weights::check`): uploads them and relabels where a layer says so.
    pub fn from_tensors(
        be: &B,
        config: ModelConfig,
        tensors: &HashMap<String, Tensor>,
        meta: ModelMeta,
    ) -> Result<Self> {
        config.validate()?;
        let net = Net::new(&config);
        let weights = net.def().load(be, tensors)?;
        let norm = |prefix: &str| -> Result<Option<(B::Buf, B::Buf)>> {
            let (Some(mean), Some(std)) =
                (tensors.get(&format!("{prefix}.mean")), tensors.get(&format!("{prefix}.std")))
            else {
                return Ok(None);
            };
            // docs/models.md: a std of 0 counts as 1.
            let std: Vec<f32> = std.data.iter().map(|&s| if s == 0.0 { 1.0 } else { s }).collect();
            Ok(Some((be.upload(&mean.data)?, be.upload(&std)?)))
        };
        let norms = Normalizers { input: norm("input_norm")?, aux: norm("aux_norm")? };
        let graphs = Graphs { enabled: true, last: [None; 3], recorded: [None, None, None], replays: 0 };
        let (acts, encode_acts) = (Acts::default(), Acts::default());
        let param_count = net.def().specs.count();
        let token_cache = match &config {
            ModelConfig::Tlob(c) if c.lob_normalization == LobNormalization::Snapshot => {
                Some(tick::TokenCache::new(c.num_levels * c.lob_features, c.temporal_hidden))
            }
            _ => None,
        };
        Ok(Model { param_count, config, meta, norms, net, weights, acts, encode_acts, token_cache, graphs })
    }

    /// Loads a weights file (docs/models.md's format), checking every tensor.
    pub fn load(be: &B, path: &Path) -> Result<Self> {
        let file = weights::load(path)?;
        Self::from_file(be, file)
    }

    pub fn from_file(be: &B, file: WeightsFile) -> Result<Self> {
        Self::from_tensors(be, file.config, &file.tensors, file.meta)
    }

    pub fn kind(&self) -> ModelKind {
        self.config.kind()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn param_count(&self) -> usize {
        self.param_count
    }

    pub fn output_names(&self) -> Vec<String> {
        output_names(&self.config)
    }

    /// Runs the model; outputs are written into `out`, reusing its tensors.
    /// A TLOB with its token cache on encodes only the snapshots its last
    /// two forwards did not see (same bits; `model::tick`).
    pub fn forward_into(&mut self, be: &B, inputs: &Inputs<'_>, out: &mut Outputs) -> Result<()> {
        if self.token_cache.is_some() {
            return self.forward_cached(be, inputs, out);
        }
        let Model { net, weights, acts, norms, .. } = self;
        let shape = with_net!(&*net, n => {
            let (shape, data) = n.inputs(inputs)?;
            stage(be, weights, acts, norms, shape, data, n)?;
            shape
        });
        self.run_compute(be, shape)?;
        self.emit(be, out)
    }

    /// Turns TLOB's token cache on or off (a model that is not TLOB has
    /// none). On by default under the `snapshot` normalization; under
    /// `window` it is exact too, but finds nothing to reuse.
    pub fn set_token_cache(&mut self, enabled: bool) {
        self.token_cache = match (&self.config, enabled) {
            (ModelConfig::Tlob(c), true) => self
                .token_cache
                .take()
                .or_else(|| Some(tick::TokenCache::new(c.num_levels * c.lob_features, c.temporal_hidden))),
            _ => None,
        };
    }

    pub fn token_cache(&self) -> Option<&tick::TokenCache> {
        self.token_cache.as_ref()
    }

    /// `forward_into` through the token cache: look every window row up,
    /// encode the missing ones in one pass, run the rest from the tokens.
    fn forward_cached(&mut self, be: &B, inputs: &Inputs<'_>, out: &mut Outputs) -> Result<()> {
        let Net::Tlob(n) = &self.net else { unreachable!("only TLOB keeps a token cache") };
        let ((shape, [lob, aux]), c) = (n.inputs(inputs)?, n.config());
        let (lob, steps, levels, features) =
            (lob.expect("TLOB's lob"), c.sequence_length, c.num_levels, c.lob_features);
        let mut cache = self.token_cache.take().expect("checked by forward_into");
        cache.look_up(&lob.data, shape.batch, levels, features);
        let mut ran = Ok(());
        if !cache.missing_slots.is_empty() {
            ran = self.encode_snapshots_into(be, &cache.missing, &mut cache.encoded);
        }
        if ran.is_ok() {
            cache.fill(shape.batch, steps);
            ran = self.forward_tokens_into(be, &cache.window_tokens, aux, out);
        }
        // A failed pass may leave new slots without their tokens.
        if ran.is_err() {
            cache.clear();
        }
        cache.evict();
        self.token_cache = Some(cache);
        ran
    }

    /// TLOB's first part: each of `lob (n, L, F)`'s snapshots encoded on its
    /// own into a token, `out (n, D)` (reused when of that shape). A
    /// snapshot's token has the same bits as in a whole forward
    /// (`model::tick` keeps them).
    pub fn encode_snapshots_into(&mut self, be: &B, lob: &Tensor, out: &mut Tensor) -> Result<()> {
        let Net::Tlob(n) = &self.net else {
            return Err(Error::input("lob", format!("only tlob encodes snapshots, this model is {}", self.kind())));
        };
        let shape = n.encode_inputs(lob)?;
        stage(be, &self.weights, &mut self.encode_acts, &self.norms, shape, [Some(lob), None], n)?;
        let d = n.config().temporal_hidden;
        self.run_compute(be, shape)?;
        if out.shape != [shape.batch, d] {
            *out = Tensor::zeros(vec![shape.batch, d]);
        }
        let tokens = self.encode_acts.tokens.expect("an encode pass ends at its tokens");
        be.read(self.encode_acts.arena.get(tokens), &mut out.data)
    }

    /// TLOB's second part: the forward from `tokens (B, T, D)` (each window's
    /// snapshot tokens, oldest first) and the optional `aux (B, A)` to the
    /// outputs, as `forward_into` from the snapshots those tokens encode.
    pub fn forward_tokens_into(
        &mut self,
        be: &B,
        tokens: &Tensor,
        aux: Option<&Tensor>,
        out: &mut Outputs,
    ) -> Result<()> {
        let Net::Tlob(n) = &self.net else {
            return Err(Error::input("tokens", format!("only tlob runs from tokens, this model is {}", self.kind())));
        };
        let (shape, data) = n.tokens_inputs(tokens, aux)?;
        stage(be, &self.weights, &mut self.acts, &self.norms, shape, data, n)?;
        self.run_compute(be, shape)?;
        self.emit(be, out)
    }

    /// Reads the heads' outputs into the named outputs (TLOB: each
    /// horizon's, and the primary one's again under the plain names).
    fn emit(&self, be: &B, out: &mut Outputs) -> Result<()> {
        let a = &self.acts;
        let bufs = |i: usize| a.heads[i].map(|h| a.arena.get(h));
        match (&self.net, &self.config) {
            (Net::Tlob(n), ModelConfig::Tlob(c)) => {
                for (i, (names, h)) in n.head_names.iter().zip(&c.horizons).enumerate() {
                    write_heads(be, bufs(i), a.batch, c.num_classes, [&names[0], &names[1], &names[2]], out)?;
                    if *h == c.primary_horizon {
                        write_heads(be, bufs(i), a.batch, c.num_classes, PRIMARY, out)?;
                    }
                }
                Ok(())
            }
            (_, ModelConfig::Mpd(MpdConfig { num_classes, .. }))
            | (_, ModelConfig::CnnLstm(CnnLstmConfig { num_classes, .. }))
            | (_, ModelConfig::Tlob(TlobConfig { num_classes, .. })) => {
                write_heads(be, bufs(0), a.batch, *num_classes, PRIMARY, out)
            }
        }
    }

    /// The compute phase: replayed, recorded then replayed, or run.
    fn run_compute(&mut self, be: &B, shape: RunShape) -> Result<()> {
        let g = &mut self.graphs;
        let acts = if shape.part == Part::Encode { &mut self.encode_acts } else { &mut self.acts };
        let (part, epoch) = (shape.part as usize, acts.arena.epoch());
        if g.recorded[part].as_ref().is_some_and(|(s, e, _)| (*s, *e) != (shape, epoch)) {
            g.recorded[part] = None;
        }
        if let Some((_, _, graph)) = &g.recorded[part] {
            be.replay(graph)?;
            g.replays += 1;
            return Ok(());
        }
        let record = g.enabled && g.last[part] == Some((shape, epoch)) && be.begin_capture()?;
        g.last[part] = Some((shape, epoch));
        let (weights, norms) = (&self.weights, &self.norms);
        let ran = with_net!(&self.net, n => pass(be, weights, acts, norms, shape, n, false));
        if !record {
            return ran;
        }
        // End the capture whatever happened, so the backend is not left recording.
        let graph = be.end_capture();
        ran?;
        let graph = graph?;
        be.replay(&graph)?;
        g.recorded[part] = Some((shape, epoch, graph));
        g.replays += 1;
        Ok(())
    }

    /// Whether forwards may be recorded and replayed (on by default; the CPU
    /// backend never records). Turning it off drops any recording.
    pub fn set_graphs(&mut self, enabled: bool) {
        self.graphs.enabled = enabled;
        if !enabled {
            self.graphs.recorded = [None, None, None];
        }
    }

    /// How many forwards ran as a replay of a recording.
    pub fn graph_replays(&self) -> u64 {
        self.graphs.replays
    }

    pub fn forward(&mut self, be: &B, inputs: &Inputs<'_>) -> Result<Outputs> {
        let mut out = Outputs::new();
        self.forward_into(be, inputs, &mut out)?;
        Ok(out)
    }
}

/// The batch size of `t`, checking that it is `(batch, dims…)` with batch ≥ 1
/// and finite values.
fn batch_of(t: &Tensor, name: &str, dims: &[usize]) -> Result<usize> {
    if t.shape.len() != dims.len() + 1 || t.shape[1..] != *dims || t.shape[0] == 0 {
        return Err(Error::input(name, format!("expected shape (batch ≥ 1, {dims:?}), got {:?}", t.shape)));
    }
    t.expect_finite(name)?;
    Ok(t.shape[0])
}

fn mlp_width(ratio: f64, dim: usize) -> usize {
    (ratio * dim as f64) as usize
}

/// The primary outputs' names (every model has them).
const PRIMARY: [&str; 3] = ["direction_logits", "confidence", "expected_return"];

/// A TLOB horizon's output names.
fn horizon_names(h: usize) -> [String; 3] {
    [format!("direction_{h}"), format!("confidence_{h}"), format!("expected_return_{h}")]
}

/// The stage phase of a definition's forward: on a new shape, a dry pass
/// plans the activations (the only allocations); then the inputs are written.
fn stage<B: Backend>(
    be: &B,
    weights: &Loaded<B>,
    acts: &mut Acts<B>,
    norms: &Normalizers<B>,
    shape: RunShape,
    data: [Option<&Tensor>; 2],
    net: &impl Architecture,
) -> Result<()> {
    if acts.arena.needs_plan(shape.batch, shape.key()) {
        acts.batch = shape.batch;
        acts.inputs = [None; 2];
        pass(be, weights, acts, norms, shape, net, true)?;
    }
    for (t, a) in data.iter().zip(acts.inputs) {
        if let (Some(t), Some(a)) = (t, a) {
            be.write(acts.arena.get_mut(a), &t.data)?;
        }
    }
    Ok(())
}

/// One pass of a definition's forward over the arena: a dry one plans, the
/// compute phase replays the plan (only compute ops).
fn pass<B: Backend>(
    be: &B,
    weights: &Loaded<B>,
    acts: &mut Acts<B>,
    norms: &Normalizers<B>,
    shape: RunShape,
    net: &impl Architecture,
    dry: bool,
) -> Result<()> {
    acts.arena.begin(shape.batch, shape.key());
    let (w, sets, aux) = (&weights.w[..], &weights.sets[..], shape.aux);
    net.forward(&mut Infer { be, w, sets, aux, part: shape.part, acts: &mut *acts, norms, dry })?;
    acts.arena.end();
    Ok(())
}

/// Copies one set of heads' outputs into `out` under `names` (logits,
/// confidence, expected return), reusing tensors already of the right shape.
fn write_heads<B: Backend>(
    be: &B,
    h: [&B::Buf; 3],
    batch: usize,
    classes: usize,
    names: [&str; 3],
    out: &mut Outputs,
) -> Result<()> {
    for (name, buf, cols) in [(names[0], h[0], classes), (names[1], h[1], 1), (names[2], h[2], 1)] {
        match out.get_mut(name) {
            Some(t) if t.shape == [batch, cols] => be.read(buf, &mut t.data)?,
            _ => {
                let mut t = Tensor::zeros(vec![batch, cols]);
                be.read(buf, &mut t.data)?;
                out.insert(name.to_string(), t);
            }
        }
    }
    Ok(())
}
