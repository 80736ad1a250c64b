//! The file system, carefully.
//!
//! - Writes that a crash cannot leave half-done: the one place that knows
//!   the temporary-name, fsync, rename, fsync-the-folder sequence. Every file
//!   quorum publishes (weights, checkpoints, Parquet tables and day files)
//!   goes through it, and [`remove_dead_writers_temp_files`] is the one
//!   clean-up of what a killed writer left.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A hidden temporary file (`.<name>.tmp-<pid>`) in the folder of the file it
/// will become. Write through the `File` that `create` returns, then
/// `persist` it under its final name; dropped without persisting, it is
/// removed. A process killed meanwhile leaves only the hidden name, which
/// readers skip and [`remove_dead_writers_temp_files`] cleans up (the
/// collector and `simulate --out` call it through
/// `market::store::remove_stale_temp_files` when they start).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    dir: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Creates the folder if needed and the temporary file for `name` in it.
    pub fn create(dir: &Path, name: &str) -> std::io::Result<(TempFile, File)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&path)?;
        Ok((TempFile { path, dir: dir.to_path_buf(), persisted: false }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs `file` (this temporary file, handed back by whatever wrote it),
    /// renames it to `dest` (in the same folder), and fsyncs the folder so the
    /// rename itself is durable. On error the temporary file is removed.
    pub fn persist(mut self, file: File, dest: &Path) -> std::io::Result<()> {
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.path, dest)?;
        self.persisted = true;
        #[cfg(unix)]
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The folder and file name of `path` (the folder `.` for a bare name).
pub fn split_path(path: &Path) -> std::io::Result<(&Path, String)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("path has no file name"))?;
    Ok((dir, name.to_string_lossy().into_owned()))
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || {
        let (dir, name) = split_path(path)?;
        let (tmp, mut file) = TempFile::create(dir, &name)?;
        file.write_all(bytes)?;
        tmp.persist(file, path)
    };
    write().map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// The final name and the writer's pid of a [`TempFile`] name
/// (`.<name>.tmp-<pid>`), `None` for any other name.
pub fn temp_file_owner(file_name: &str) -> Option<(&str, u32)> {
    let (name, pid) = file_name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    if name.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, pid.parse().ok()?))
}

/// Removes from `dir` the [`TempFile`]s whose writer no longer runs and whose
/// final name `wanted` accepts; those of this process or of a live one are
/// kept, and where liveness cannot be checked (no `/proc`) nothing is
/// removed. Returns the removed paths.
pub fn remove_dead_writers_temp_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !Path::new("/proc/self").exists() {
        return Ok(removed);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some((final_name, pid)) = name.to_str().and_then(temp_file_owner) else { continue };
        if wanted(final_name) && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = e.path();
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quorum_fsutil_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_atomic_replaces_whole_files_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.bin")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_temp_file_dropped_unpersisted_is_removed_and_the_old_file_kept() {
        let dir = scratch("drop");
        let path = dir.join("b.bin");
        write_atomic(&path, b"old").unwrap();
        let (tmp, mut file) = TempFile::create(&dir, "b.bin").unwrap();
        file.write_all(b"half a new fi").unwrap();
        let tmp_path = tmp.path().to_path_buf();
        assert!(tmp_path.exists());
        drop(file);
        drop(tmp);
        assert!(!tmp_path.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn temp_file_names_give_their_writer() {
        assert_eq!(temp_file_owner(".a.bin.tmp-42"), Some(("a.bin", 42)));
        assert_eq!(temp_file_owner(".snapshots_1.parquet.tmp-4294967295"), Some(("snapshots_1.parquet", u32::MAX)));
        for other in ["a.bin.tmp-42", ".a.bin", ".a.tmp-", ".a.tmp-4x", ".tmp-42", ".a.tmp-99999999999"] {
            assert_eq!(temp_file_owner(other), None, "{other}");
        }
    }
}
