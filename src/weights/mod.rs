//! Weights files: safetensors in and out, per docs/models.md "The weights file".
//!
//! Loading checks everything at once — the metadata, every tensor's name,
//! shape, dtype and values — and reports all problems of a file in one error,
//! so a user fixing an export sees the whole list the first time.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{normalizer_specs, param_specs, ModelConfig, ModelKind, ModelMeta};
use crate::tensor::Tensor;

pub mod repository;

pub use repository::Repository;

pub const FORMAT: &str = "quorum-model";
pub const FORMAT_VERSION: &str = "1";

/// A weights file read into host memory and checked against its own config.
#[derive(Clone, Debug)]
pub struct WeightsFile {
    pub config: ModelConfig,
    pub meta: ModelMeta,
    pub tensors: HashMap<String, Tensor>,
}

impl WeightsFile {
    pub fn kind(&self) -> ModelKind {
        self.config.kind()
    }
}

/// Largest weights file [`load`] reads (1 GiB; docs/models.md's default models are
/// under 100 MB). The server's limit is `ServerConfig::max_weights_bytes`
/// (`quorum serve --max-weights-mb`).
pub const MAX_WEIGHTS_FILE_BYTES: u64 = 1 << 30;

/// Reads and checks a weights file of at most [`MAX_WEIGHTS_FILE_BYTES`].
pub fn load(path: &Path) -> Result<WeightsFile> {
    load_limited(path, MAX_WEIGHTS_FILE_BYTES)
}

/// Reads and checks a weights file of at most `max_bytes` (see [`read_safetensors`]).
pub fn load_limited(path: &Path, max_bytes: u64) -> Result<WeightsFile> {
    let bytes = read_safetensors(path, max_bytes)?;
    parse(&bytes, &path.display().to_string())
}

/// The bytes of the safetensors file at `path`, read only once it proved a
/// regular file (opened without blocking: a FIFO or a device is refused,
/// `fsutil::open_regular`) of at most `max_bytes`, whose header is readable
/// and describes exactly the file's length. The read itself is bounded by
/// that length, and its buffer allocated fallibly, so a file that lies about
/// its size or grows meanwhile cannot make it read without end.
pub fn read_safetensors(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let label = path.display().to_string();
    let fail = |m: String| Error::weights(label.clone(), vec![m]);
    let io = |source| Error::Io { path: label.clone(), source };
    let (file, len) = fsutil::open_regular(path).map_err(io)?;
    if len > max_bytes {
        return Err(fail(format!(
            "the file is {len} bytes, over the limit of {max_bytes} bytes (raise it with quorum serve --max-weights-mb)"
        )));
    }
    if len < 8 {
        return Err(fail(format!("the file is {len} bytes: too short for a safetensors header")));
    }
    let mut reader = file.take(len);
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).map_err(io)?;
    let header_len = u64::from_le_bytes(head);
    if header_len > len - 8 {
        return Err(fail(format!("the header says it is {header_len} bytes, but the file has only {len} bytes")));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|e| fail(format!("cannot allocate {len} bytes to read the file: {e}")))?;
    bytes.extend_from_slice(&head);
    (&mut reader).take(header_len).read_to_end(&mut bytes).map_err(io)?;
    let data_len = data_len(&bytes[8..]).map_err(|e| fail(format!("unreadable header: {e}")))?;
    let described = 8u64.saturating_add(header_len).saturating_add(data_len);
    if described != len {
        return Err(fail(format!(
            "the header describes {described} bytes but the file has {len} (truncated, or something appended?)"
        )));
    }
    reader.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 != len {
        return Err(fail(format!("the file changed while it was read ({} of {len} bytes)", bytes.len())));
    }
    Ok(bytes)
}

/// The length of the data a safetensors header describes: the largest end
/// of its tensors' `data_offsets`.
fn data_len(header: &[u8]) -> std::result::Result<u64, String> {
    let map: HashMap<String, serde_json::Value> = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut end = 0u64;
    for (name, entry) in &map {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry.get("data_offsets").and_then(|o| o.as_array()).filter(|o| o.len() == 2);
        match offsets.and_then(|o| o[1].as_u64()) {
            Some(e) => end = end.max(e),
            None => return Err(format!("tensor {name:?} has no data_offsets [begin, end]")),
        }
    }
    Ok(end)
}

/// Any safetensors file as named f32 tensors plus its metadata map
/// (F32, F16 and BF16 are read; f16/bf16 are widened).
pub struct TensorFile {
    pub metadata: HashMap<String, String>,
    pub tensors: HashMap<String, Tensor>,
}

/// Reads a safetensors file of f32/f16/bf16 tensors (model inputs, outputs,
/// optimizer state); `label` names it in errors.
pub fn read_tensor_file(bytes: &[u8], label: &str) -> Result<TensorFile> {
    let (file, problems) = read_lenient(bytes, label)?;
    if !problems.is_empty() {
        return Err(Error::weights(label, problems));
    }
    Ok(file)
}

/// Like `read_tensor_file`, but returns per-tensor problems instead of failing on them.
fn read_lenient(bytes: &[u8], label: &str) -> Result<(TensorFile, Vec<String>)> {
    let fail = |e: String| Error::weights(label, vec![e]);
    let st = SafeTensors::deserialize(bytes).map_err(|e| match pytorch_pickle(bytes) {
        Some(kind) => fail(format!(
            "this is {kind} (what torch.save writes), not safetensors: load it in Python and save the state \
             dict with safetensors.torch.save_file(model.state_dict(), path, metadata(model)) \
             (metadata() is in tools/reference/quorum_ref.py; README, \"Weights from PyTorch\")"
        )),
        None => fail(format!("not a readable safetensors file (truncated or corrupt?): {e}")),
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fail(format!("unreadable header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        match to_f32(&view) {
            Ok(data) => {
                tensors.insert(name.clone(), Tensor { shape: view.shape().to_vec(), data });
            }
            Err(e) => problems.push(format!("tensor {name}: {e}")),
        }
    }
    Ok((TensorFile { metadata, tensors }, problems))
}

/// What a file that is not safetensors looks like when PyTorch wrote it:
/// `torch.save`'s zip archive (since 1.6) or a bare pickle (protocol 2–5).
fn pytorch_pickle(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [b'P', b'K', 3, 4, ..] => Some("a zip archive, as a PyTorch .pt/.pth checkpoint is"),
        [0x80, 2..=5, ..] => Some("a Python pickle, as an old PyTorch .pt/.pth checkpoint is"),
        _ => None,
    }
}

/// A state dict saved from a wrapper (`nn.DataParallel`'s `module.`, a
/// Lightning module's `model.`): every name carries the prefix, and without
/// it the names are the model's. The fix, as one problem line.
fn wrapper_prefix_hint(config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Option<String> {
    let specs = param_specs(config);
    ["module.", "model."].into_iter().find_map(|prefix| {
        let stripped: Vec<&str> = tensors.keys().filter_map(|k| k.strip_prefix(prefix)).collect();
        let all_prefixed = !tensors.is_empty() && stripped.len() == tensors.len();
        (all_prefixed && stripped.iter().any(|k| specs.get(k).is_some())).then(|| {
            format!(
                "every tensor name starts with `{prefix}` (a wrapper's state dict): save the inner model's, or strip \
                 it: {{k.removeprefix(\"{prefix}\"): v for k, v in state_dict.items()}}"
            )
        })
    })
}

/// Parses a weights file from memory; `label` names it in errors.
pub fn parse(bytes: &[u8], label: &str) -> Result<WeightsFile> {
    let fail = |problems: Vec<String>| Error::weights(label, problems);
    let (TensorFile { metadata: md, tensors }, tensor_problems) = read_lenient(bytes, label)?;

    let mut problems = Vec::new();
    match md.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        other => problems.push(format!("metadata format is {other:?}, expected \"{FORMAT}\"")),
    }
    match md.get("format_version").map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        other => problems.push(format!("metadata format_version is {other:?}, expected \"{FORMAT_VERSION}\"")),
    }
    if !md.contains_key("format") && !md.contains_key("model") {
        problems.push(
            "saved without quorum's metadata: save with safetensors.torch.save_file(state_dict, path, \
             metadata(model)), metadata() from tools/reference/quorum_ref.py (README, \"Weights from PyTorch\")"
                .to_string(),
        );
    }
    let config = match md.get("model") {
        None => Err("metadata has no `model`".to_string()),
        Some(m) => ModelKind::parse(m).map_err(|e| format!("metadata {e}")).and_then(|kind| match md.get("config") {
            None => Err("metadata has no `config`".to_string()),
            Some(json) => ModelConfig::from_json(kind, json).map_err(|e| format!("metadata config: {e}")),
        }),
    };
    let mut meta = ModelMeta::default();
    if let Some(s) = md.get("return_scale") {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => meta.return_scale = v,
            _ => problems.push(format!("metadata return_scale {s:?} is not a positive number")),
        }
    }
    if let Some(s) = md.get("horizon") {
        match s.parse::<u64>() {
            Ok(v) if v > 0 => meta.horizon = Some(v),
            _ => problems.push(format!("metadata horizon {s:?} is not a positive integer")),
        }
    }

    problems.extend(tensor_problems);
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            problems.insert(0, e);
            return Err(fail(problems));
        }
    };
    problems.extend(wrapper_prefix_hint(&config, &tensors));
    problems.extend(check(&config, &tensors));
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    Ok(WeightsFile { config, meta, tensors })
}

/// Every problem of `tensors` against `config`: missing, unexpected and
/// mis-shaped tensors, a half-present normalizer, non-finite values.
pub fn check(config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let specs = param_specs(config);
    let norms = normalizer_specs(config);
    let mut problems = Vec::new();
    for (name, shape) in &specs.0 {
        match tensors.get(name) {
            None => problems.push(format!("missing tensor {name} {shape:?}")),
            Some(t) if t.shape != *shape => {
                problems.push(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape))
            }
            Some(_) => {}
        }
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if specs.get(name).is_none() {
            match norms.get(name) {
                None => problems.push(format!("unexpected tensor {name} {:?}", t.shape)),
                Some(shape) if t.shape != shape => {
                    problems.push(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape))
                }
                Some(_) => {}
            }
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            problems.push(format!("tensor {name} has a non-finite value {} at flat index {i}", t.data[i]));
        }
    }
    for prefix in ["input_norm", "aux_norm"] {
        let (m, s) = (format!("{prefix}.mean"), format!("{prefix}.std"));
        if tensors.contains_key(&m) != tensors.contains_key(&s) {
            problems.push(format!("{prefix} needs both {m} and {s}"));
        }
        if let Some(t) = tensors.get(&s) {
            if t.data.iter().any(|&v| v < 0.0) {
                problems.push(format!("tensor {s} has a negative standard deviation"));
            }
        }
    }
    problems
}

fn to_f32(view: &TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(format!("dtype {other:?} is not supported (F32, F16 or BF16)")),
    })
}

/// The `__metadata__` map of a weights file for `config` and `meta`.
pub fn metadata(config: &ModelConfig, meta: &ModelMeta) -> HashMap<String, String> {
    let mut md = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("model".to_string(), config.kind().as_str().to_string()),
        ("config".to_string(), config.to_json()),
        ("return_scale".to_string(), meta.return_scale.to_string()),
    ]);
    if let Some(h) = meta.horizon {
        md.insert("horizon".to_string(), h.to_string());
    }
    md
}

/// Serializes named f32 tensors with a metadata map to safetensors bytes.
/// The order of `tensors` does not matter: safetensors sorts them itself.
pub fn to_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::input(name, e.to_string()))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::input("tensors", e.to_string()))
}

/// Writes a model's weights file atomically after checking it like `load` would.
pub fn save(path: &Path, config: &ModelConfig, meta: &ModelMeta, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let problems = check(config, tensors);
    if !problems.is_empty() {
        return Err(Error::weights(path.display().to_string(), problems));
    }
    let bytes = to_bytes(tensors, metadata(config, meta))?;
    fsutil::write_atomic(path, &bytes)
}

/// The tiny deterministic weight generator shared with
/// `tools/reference/quorum_ref.py` (`generated_tensor`): SplitMix64 seeded by
/// the FNV-1a hash of the tensor name, `c + (2u − 1)·a` per element in f64,
/// rounded to f32. It stands in for megabytes of committed weights.
pub mod generated {
    use super::*;

    fn fnv1a64(name: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }
    }

    pub fn tensor(name: &str, shape: &[usize]) -> Tensor {
        let numel: usize = shape.iter().product();
        let (c, a) = if shape.len() == 1 && name.contains("norm") && name.ends_with(".weight") {
            (1.0, 0.1)
        } else if name.ends_with("cls_token") || name.ends_with("pos_embed") {
            (0.0, 0.5)
        } else if shape.len() >= 2 {
            (0.0, 1.0 / ((numel / shape[0]) as f64).sqrt())
        } else {
            (0.0, 0.1)
        };
        let mut rng = SplitMix64(fnv1a64(name));
        let data = (0..numel).map(|_| (c + (2.0 * rng.uniform() - 1.0) * a) as f32).collect();
        Tensor { shape: shape.to_vec(), data }
    }

    /// Every parameter of `config`, generated.
    pub fn params(config: &ModelConfig) -> HashMap<String, Tensor> {
        param_specs(config).0.iter().map(|(name, shape)| (name.clone(), tensor(name, shape))).collect()
    }
}
