//! The model repository (docs/models.md, "The model repository"): every
//! trained model kept by version, with a manifest that says where it came
//! from, so `serve` and `evaluate` load what `train` published without any
//! renaming.
//!
//! ```text
//! weights/                      the repository (any folder)
//!   tlob/
//!     1/model.safetensors       a weights file (docs/models.md)
//!     1/manifest.json           written last: a version is complete once it exists
//!     2/...
//!   mpd_transformer/...
//!   cnn_lstm/...
//! ```
//!
//! Versions are 1, 2, 3… per model; the latest is the highest complete one.
//! Publishing claims the next number with `create_dir` (which fails when
//! another publisher took it first, so two trainings never share a version),
//! writes the weights and then the manifest, each atomically. A publish cut
//! short leaves a folder without a manifest: readers skip it, and a pinned
//! load of it says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::ModelKind;

pub const MODEL_FILE: &str = "model.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_FORMAT: &str = "quorum-model-manifest";
/// The repository's folder inside a data folder ([`Repository::of_data_folder`]).
pub const DATA_FOLDER_REPOSITORY: &str = "weights";
/// Largest manifest read (a manifest holds the run's results: a few KiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// How many version numbers a publish tries before giving up (each failure
/// is another publisher having claimed that number meanwhile).
const PUBLISH_ATTEMPTS: u64 = 64;

/// Where a published model came from and how it scored on held-out data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub model_type: ModelKind,
    pub version: u64,
    /// When it was published: RFC 3339 (UTC) and Unix seconds.
    pub published_at: String,
    pub published_unix_s: u64,
    /// The quorum that published it.
    pub quorum_version: String,
    /// The file it was published from (a training's best checkpoint, say).
    pub source: String,
    /// The data it was trained on (`None` for weights imported from elsewhere).
    pub trained_on: Option<TrainedOn>,
    /// The training run's results as its `<model>_results.json` holds them
    /// (docs/training.md, "Results"): held-out metrics per fold and their
    /// mean, the logistic baseline and majority rate on the same samples, the
    /// training and model configs. (JSON here: the weights room does not
    /// know the trainer's types.)
    pub results: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedOn {
    /// The data folder given to `train --data`.
    pub data: String,
    pub symbol: String,
    /// Rows of the dataset (feature rows or snapshots) the run read.
    pub rows: usize,
}

/// One version of one model, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: u64,
    pub published_at: String,
    /// The held-out accuracy (mean over the folds) recorded in the manifest.
    pub accuracy: Option<f64>,
}

/// A model repository rooted at a folder.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Repository { root: root.into() }
    }

    /// The repository of a data folder, `DIR/weights`: where `quorum train
    /// --data DIR` and the server's training jobs publish, and what `serve
    /// --data DIR` and `evaluate --data DIR` load, unless `--weights` says
    /// otherwise.
    pub fn of_data_folder(data: &Path) -> Self {
        Repository::new(data.join(DATA_FOLDER_REPOSITORY))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, kind: ModelKind) -> PathBuf {
        self.root.join(kind.as_str())
    }

    pub fn version_dir(&self, kind: ModelKind, version: u64) -> PathBuf {
        self.model_dir(kind).join(version.to_string())
    }

    /// The weights file of a version (whether or not it exists).
    pub fn model_path(&self, kind: ModelKind, version: u64) -> PathBuf {
        self.version_dir(kind, version).join(MODEL_FILE)
    }

    /// The complete versions of `kind`, ascending (none when its folder is absent).
    pub fn versions(&self, kind: ModelKind) -> Result<Vec<u64>> {
        let dir = self.model_dir(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Io { path: dir.display().to_string(), source }),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
            let Some(version) = entry.file_name().to_str().and_then(parse_version) else { continue };
            if self.is_complete(kind, version) {
                versions.push(version);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    fn is_complete(&self, kind: ModelKind, version: u64) -> bool {
        let dir = self.version_dir(kind, version);
        dir.join(MANIFEST_FILE).is_file() && dir.join(MODEL_FILE).is_file()
    }

    pub fn latest(&self, kind: ModelKind) -> Result<Option<u64>> {
        Ok(self.versions(kind)?.last().copied())
    }

    /// The weights file of `version`, or of the latest version when `None`;
    /// `Ok(None)` when the model has no version at all. A pinned version that
    /// is absent or incomplete is an error naming what exists.
    pub fn resolve(&self, kind: ModelKind, version: Option<u64>) -> Result<Option<(u64, PathBuf)>> {
        let versions = self.versions(kind)?;
        let Some(v) = version else {
            return Ok(versions.last().map(|&v| (v, self.model_path(kind, v))));
        };
        if versions.contains(&v) {
            return Ok(Some((v, self.model_path(kind, v))));
        }
        let why = if self.version_dir(kind, v).is_dir() {
            format!("{} has no {MANIFEST_FILE}: its publish was interrupted", self.version_dir(kind, v).display())
        } else {
            format!("{} has no version {v}", self.model_dir(kind).display())
        };
        Err(Error::config("version", format!("{kind} version {v}: {why} (complete versions: {})", list(&versions))))
    }

    pub fn manifest(&self, kind: ModelKind, version: u64) -> Result<Manifest> {
        let path = self.version_dir(kind, version).join(MANIFEST_FILE);
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let (mut file, len) = fsutil::open_regular(&path).map_err(io)?;
        if len > MAX_MANIFEST_BYTES {
            return Err(Error::input(path.display().to_string(), format!("{len} bytes: over {MAX_MANIFEST_BYTES}")));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
        serde_json::from_str(&text).map_err(|e| Error::input(path.display().to_string(), e.to_string()))
    }

    /// Every complete version of `kind` with its date and held-out accuracy
    /// (a version whose manifest cannot be read is listed without them).
    pub fn list(&self, kind: ModelKind) -> Result<Vec<VersionInfo>> {
        Ok(self
            .versions(kind)?
            .into_iter()
            .map(|version| match self.manifest(kind, version) {
                Ok(m) => VersionInfo {
                    version,
                    published_at: m.published_at,
                    accuracy: m.results.as_ref().and_then(|r| r.pointer("/mean/accuracy")?.as_f64()),
                },
                Err(_) => VersionInfo { version, published_at: String::new(), accuracy: None },
            })
            .collect())
    }

    /// Publishes the weights file at `weights` (checked first: it must hold a
    /// `kind` model) as the next version of `kind`, with a manifest of
    /// `trained_on` and `results`. Returns the new version and its file.
    pub fn publish(
        &self,
        kind: ModelKind,
        weights: &Path,
        trained_on: Option<TrainedOn>,
        results: Option<serde_json::Value>,
    ) -> Result<(u64, PathBuf)> {
        let file = crate::weights::load(weights)?;
        if file.kind() != kind {
            return Err(Error::weights(
                weights.display().to_string(),
                vec![format!("holds a {} model, not {kind}", file.kind())],
            ));
        }
        let bytes =
            std::fs::read(weights).map_err(|source| Error::Io { path: weights.display().to_string(), source })?;
        let model_dir = self.model_dir(kind);
        std::fs::create_dir_all(&model_dir)
            .map_err(|source| Error::Io { path: model_dir.display().to_string(), source })?;
        // Claim a number: `create_dir` fails if another publisher (or an
        // interrupted publish) holds it, and the next one is tried.
        let first = self.highest_claimed(kind)? + 1;
        for version in first..first + PUBLISH_ATTEMPTS {
            let dir = self.version_dir(kind, version);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Io { path: dir.display().to_string(), source }),
            }
            let (published_at, published_unix_s) = now();
            let manifest = Manifest {
                format: MANIFEST_FORMAT.into(),
                model_type: kind,
                version,
                published_at,
                published_unix_s,
                quorum_version: env!("CARGO_PKG_VERSION").into(),
                source: weights.display().to_string(),
                trained_on,
                results,
            };
            let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::input("manifest", e.to_string()))?;
            let path = dir.join(MODEL_FILE);
            fsutil::write_atomic(&path, &bytes)?;
            // Last: the manifest makes the version complete.
            fsutil::write_atomic(&dir.join(MANIFEST_FILE), &json)?;
            return Ok((version, path));
        }
        Err(Error::config(
            "version",
            format!("{}: no free version number in {PUBLISH_ATTEMPTS} tries", model_dir.display()),
        ))
    }

    /// The highest version number of any folder of `kind`, complete or not
    /// (an interrupted publish's number is never reused).
    fn highest_claimed(&self, kind: ModelKind) -> Result<u64> {
        let dir = self.model_dir(kind);
        let entries =
            std::fs::read_dir(&dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
        Ok(entries.filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_version)).max().unwrap_or(0))
    }
}

/// A version folder's name: a positive decimal integer without leading zeros
/// (so each version has one name).
fn parse_version(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The version a path names when it is a repository's weights file
/// (`…/<model>/<version>/model.safetensors`).
pub fn version_of(path: &Path) -> Option<u64> {
    if path.file_name()? != MODEL_FILE {
        return None;
    }
    let version_dir = path.parent()?;
    let model = version_dir.parent()?.file_name()?.to_str()?;
    ModelKind::parse(model).ok()?;
    parse_version(version_dir.file_name()?.to_str()?)
}

/// A `--pin MODEL=VERSION` argument.
pub fn parse_pin(s: &str) -> std::result::Result<(ModelKind, u64), String> {
    let (model, version) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected MODEL=VERSION, e.g. tlob=3"))?;
    let kind = ModelKind::parse(model).map_err(|e| e.to_string())?;
    let version = parse_version(version).ok_or_else(|| format!("{version:?}: a version is 1, 2, 3…"))?;
    Ok((kind, version))
}

fn list(versions: &[u64]) -> String {
    if versions.is_empty() {
        return "none".into();
    }
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn now() -> (String, u64) {
    let t = std::time::SystemTime::now();
    let unix = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (humantime::format_rfc3339_seconds(t).to_string(), unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelConfig, ModelMeta};

    fn weights_file(dir: &Path, kind: ModelKind) -> PathBuf {
        let config = ModelConfig::small(kind);
        let path = dir.join(format!("{kind}_best.safetensors"));
        crate::weights::save(&path, &config, &ModelMeta::default(), &crate::weights::generated::params(&config))
            .unwrap();
        path
    }

    #[test]
    fn publish_numbers_versions_and_resolve_finds_latest_or_pinned() {
        let tmp = tempfile::tempdir().unwrap();
        let src = weights_file(tmp.path(), ModelKind::Tlob);
        let repo = Repository::new(tmp.path().join("weights"));
        assert_eq!(repo.resolve(ModelKind::Tlob, None).unwrap(), None);

        let on = TrainedOn { data: "data".into(), symbol: "SIMUSDT".into(), rows: 1200 };
        let (v1, p1) = repo.publish(ModelKind::Tlob, &src, Some(on.clone()), None).unwrap();
        let (v2, _) = repo.publish(ModelKind::Tlob, &src, None, None).unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&src).unwrap(), "published as is");
        assert_eq!(repo.versions(ModelKind::Tlob).unwrap(), vec![1, 2]);
        assert_eq!(repo.versions(ModelKind::CnnLstm).unwrap(), Vec::<u64>::new());
        assert_eq!(repo.resolve(ModelKind::Tlob, None).unwrap().unwrap().0, 2);
        assert_eq!(repo.resolve(ModelKind::Tlob, Some(1)).unwrap().unwrap(), (1, p1.clone()));
        assert_eq!(version_of(&p1), Some(1));
        assert_eq!(version_of(&src), None);
        assert_eq!(version_of(Path::new("x/lstm/1/model.safetensors")), None, "not a model kind");

        let m = repo.manifest(ModelKind::Tlob, 1).unwrap();
        assert_eq!((m.format.as_str(), m.model_type, m.version), (MANIFEST_FORMAT, ModelKind::Tlob, 1));
        assert_eq!(m.trained_on, Some(on));
        assert_eq!(m.source, src.display().to_string());
        assert!(m.published_at.ends_with('Z') && m.published_unix_s > 1_700_000_000, "{m:?}");

        let e = repo.resolve(ModelKind::Tlob, Some(7)).unwrap_err().to_string();
        assert!(e.contains("no version 7") && e.contains("(complete versions: 1, 2)"), "{e}");
    }

    #[test]
    fn an_interrupted_publish_is_skipped_named_and_its_number_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = weights_file(tmp.path(), ModelKind::CnnLstm);
        let repo = Repository::new(tmp.path().join("weights"));
        repo.publish(ModelKind::CnnLstm, &src, None, None).unwrap();
        // Version 2 cut short after its weights, before its manifest.
        let two = repo.version_dir(ModelKind::CnnLstm, 2);
        std::fs::create_dir_all(&two).unwrap();
        std::fs::copy(&src, two.join(MODEL_FILE)).unwrap();
        // Names that are not versions are ignored.
        for junk in ["03", "latest", ".tmp"] {
            std::fs::create_dir_all(repo.model_dir(ModelKind::CnnLstm).join(junk)).unwrap();
        }
        assert_eq!(repo.versions(ModelKind::CnnLstm).unwrap(), vec![1]);
        assert_eq!(repo.resolve(ModelKind::CnnLstm, None).unwrap().unwrap().0, 1);
        let e = repo.resolve(ModelKind::CnnLstm, Some(2)).unwrap_err().to_string();
        assert!(e.contains("no manifest.json") && e.contains("interrupted"), "{e}");
        assert_eq!(repo.publish(ModelKind::CnnLstm, &src, None, None).unwrap().0, 3);
    }

    #[test]
    fn publish_refuses_a_file_of_another_model_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = weights_file(tmp.path(), ModelKind::CnnLstm);
        let repo = Repository::new(tmp.path().join("weights"));
        let e = repo.publish(ModelKind::Tlob, &src, None, None).unwrap_err().to_string();
        assert!(e.contains("holds a cnn_lstm model, not tlob"), "{e}");
        assert!(!repo.root().exists());
    }

    #[test]
    fn concurrent_publishers_never_share_a_version() {
        let tmp = tempfile::tempdir().unwrap();
        let src = weights_file(tmp.path(), ModelKind::CnnLstm);
        let repo = Repository::new(tmp.path().join("weights"));
        let mut versions: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..4).map(|_| s.spawn(|| repo.publish(ModelKind::CnnLstm, &src, None, None).unwrap().0)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        versions.sort_unstable();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }

    #[test]
    fn pins_parse_or_say_what_is_wrong() {
        assert_eq!(parse_pin("tlob=3"), Ok((ModelKind::Tlob, 3)));
        assert!(parse_pin("tlob").unwrap_err().contains("MODEL=VERSION"));
        assert!(parse_pin("tlob=03").unwrap_err().contains("1, 2, 3"));
        assert!(parse_pin("tlob=0").is_err());
        assert!(parse_pin("lstm=1").unwrap_err().contains("unknown model kind"));
    }
}
