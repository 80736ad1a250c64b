//! The file system, carefully.
//!
//! - Writes that a crash cannot leave half-done: the one place that knows
//!   the temporary-name, fsync, rename, fsync-the-folder sequence. Every file
//!   quorum publishes (weights, checkpoints, Parquet tables and day files)
//!   goes through it, and [`remove_dead_writers_temp_files`] is the one
//!   clean-up of what a killed writer left.
//! - Paths that come from a request, confined to a folder of the server's
//!   ([`file_inside`] to read, [`dir_inside`] to write), and files opened
//!   without blocking on a FIFO and only when regular ([`open_regular`]).
//!   See docs/security.md, "Path confinement".

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A hidden temporary file (`.<name>.tmp-<pid>-<n>`, `n` counting this
/// process's temporary files, so two threads writing one file never share
/// one) in the folder of the file it will become. Write through the `File` that `create` returns, then
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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        // create_new: a name left by an earlier process with our pid is never reused half-written.
        let file = File::options().write(true).create_new(true).open(&path)?;
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

/// The final name and the writer's pid of a [`TempFile`] name
/// (`.<final name>.tmp-<pid>-<n>`, or `.<final name>.tmp-<pid>` as written
/// before the counter), `None` for any other name.
pub fn temp_file_owner(name: &str) -> Option<(&str, u32)> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (final_name, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let pid = match tail.split_once('-') {
        Some((pid, n)) if digits(n) => pid,
        Some(_) => return None,
        None => tail,
    };
    if final_name.is_empty() || !digits(pid) {
        return None;
    }
    Some((final_name, pid.parse().ok()?))
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

// ---- paths from requests -------------------------------------------------------

/// Why a path from a request was refused. Deliberately coarse: whether the
/// path is malformed, missing, a link leading out, outside the folder or not
/// a regular file is one answer, so a client learns nothing about what
/// exists outside the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    /// `..`, a path outside the folder (once links are resolved), or
    /// (relative paths only) an absolute one.
    #[error("not a path inside the folder")]
    Outside,
    /// Nothing of the wanted kind there (missing, a folder, a FIFO, a device).
    #[error("nothing of the wanted kind there")]
    Missing,
}

/// Longest path text accepted from a request (bytes).
pub const MAX_REQUEST_PATH_BYTES: usize = 1024;

/// `requested` as plain components below `root`: empty, `..`, a NUL byte or
/// over [`MAX_REQUEST_PATH_BYTES`] are refused, and so is an absolute path
/// unless `absolute_ok` and it starts with `root` (as given or canonical).
fn relative_part(root: &Path, root_canon: &Path, requested: &Path, absolute_ok: bool) -> Result<PathBuf, ConfineError> {
    let bytes = requested.as_os_str().as_encoded_bytes();
    if bytes.is_empty() || bytes.len() > MAX_REQUEST_PATH_BYTES || bytes.contains(&0) {
        return Err(ConfineError::Outside);
    }
    let rel = if requested.is_absolute() {
        if !absolute_ok {
            return Err(ConfineError::Outside);
        }
        requested
            .strip_prefix(root_canon)
            .or_else(|_| requested.strip_prefix(root))
            .map_err(|_| ConfineError::Outside)?
    } else {
        requested
    };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(ConfineError::Outside),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(ConfineError::Outside);
    }
    Ok(out)
}

/// The canonical path of an existing regular file inside `root`, named by
/// `requested`: relative to `root`, or absolute and starting with `root`.
/// Links are resolved and the target must still be inside `root`; `..` is
/// refused outright. Nothing is opened (a FIFO is never touched), and
/// nothing outside `root` is looked at unless a link inside `root` leads
/// there. To read the file, use [`open_regular`] on the answer: it checks
/// the kind again on the open file.
pub fn file_inside(root: &Path, requested: &Path) -> Result<PathBuf, ConfineError> {
    let root_canon = root.canonicalize().map_err(|_| ConfineError::Missing)?;
    let rel = relative_part(root, &root_canon, requested, true)?;
    let path = root_canon.join(rel).canonicalize().map_err(|_| ConfineError::Missing)?;
    if !path.starts_with(&root_canon) {
        return Err(ConfineError::Outside);
    }
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => Ok(path),
        _ => Err(ConfineError::Missing),
    }
}

/// Where a folder named by `requested` (relative, plain components only)
/// lies under `root`, for writing: its part that exists already, links
/// resolved, must be a folder inside `root`. The folder itself need not
/// exist (the writer creates it). Returns it under `root`'s canonical path.
pub fn dir_inside(root: &Path, requested: &Path) -> Result<PathBuf, ConfineError> {
    let root_canon = root.canonicalize().map_err(|_| ConfineError::Missing)?;
    let rel = relative_part(root, &root_canon, requested, false)?;
    let wanted = root_canon.join(&rel);
    // The deepest part that exists decides where the rest goes.
    let mut existing = wanted.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().ok_or(ConfineError::Outside)?;
    }
    let canon = existing.canonicalize().map_err(|_| ConfineError::Missing)?;
    if !canon.starts_with(&root_canon) {
        return Err(ConfineError::Outside);
    }
    if !canon.is_dir() {
        return Err(ConfineError::Missing);
    }
    let rest = wanted.strip_prefix(existing).map_err(|_| ConfineError::Outside)?;
    Ok(canon.join(rest))
}

/// Opens `path` for reading only if it is a regular file, and returns its
/// length. The open never blocks (`O_NONBLOCK`: a FIFO opens at once and is
/// then refused), never makes a terminal ours (`O_NOCTTY`), and the kind is
/// checked on the open file itself, so a swap after an earlier check is
/// caught too.
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok((file, meta.len()))
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
    fn concurrent_writers_of_one_file_never_tear_it() {
        // Each writer writes a file of one repeated byte, of its own length;
        // a reader must only ever see one writer's whole file.
        let dir = scratch("concurrent");
        let path = dir.join("c.bin");
        write_atomic(&path, &[0u8; 10]).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let b = std::fs::read(&path).unwrap();
                    let v = b[0];
                    let want = if v == 0 { 10 } else { 1000 * v as usize };
                    assert!(b.len() == want && b.iter().all(|&x| x == v), "torn: {} bytes, first {v}", b.len());
                    reads += 1;
                }
                reads
            });
            let writers: Vec<_> = (1..=6u8)
                .map(|t| {
                    let path = &path;
                    s.spawn(move || {
                        for _ in 0..40 {
                            write_atomic(path, &vec![t; 1000 * t as usize]).unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
        });
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.bin")], "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn temporary_names_give_their_owner() {
        let dir = scratch("owner");
        let (tmp, _file) = TempFile::create(&dir, "x.parquet").unwrap();
        let name = tmp.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(temp_file_owner(&name), Some(("x.parquet", std::process::id())));
        assert_eq!(temp_file_owner(".x.parquet.tmp-42"), Some(("x.parquet", 42)), "the name before the counter");
        assert_eq!(temp_file_owner(".x.parquet.tmp-42-7"), Some(("x.parquet", 42)));
        assert_eq!(temp_file_owner(".snapshots_1.parquet.tmp-4294967295"), Some(("snapshots_1.parquet", u32::MAX)));
        for not_ours in [
            "x.parquet",
            "x.parquet.tmp-42",
            ".x.parquet",
            ".x.parquet.tmp-",
            ".x.tmp-4a",
            ".x.tmp-42-z",
            ".tmp-42",
            ".x.tmp-99999999999",
        ] {
            assert_eq!(temp_file_owner(not_ours), None, "{not_ours}");
        }
        drop(tmp);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod confine_tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quorum_confine_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn file_inside_takes_regular_files_inside_only() {
        let base = scratch("file");
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("m/1/model.safetensors"), b"x").unwrap();
        std::fs::write(outside.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("m/1/model.safetensors"), root.join("latest")).unwrap();
        let canon = root.join("m/1/model.safetensors").canonicalize().unwrap();
        for ok in ["m/1/model.safetensors", "./m/1/model.safetensors", "latest"] {
            assert_eq!(file_inside(&root, Path::new(ok)), Ok(canon.clone()), "{ok}");
        }
        assert_eq!(file_inside(&root, &root.join("m/1/model.safetensors")), Ok(canon.clone()));
        assert_eq!(file_inside(&root, &canon), Ok(canon.clone()));
        let outside_abs = outside.join("secret");
        for bad in [
            "../outside/secret",
            "m/../../outside/secret",
            outside_abs.to_str().unwrap(),
            "/etc/passwd",
            "out",
            "",
            "a\0b",
        ] {
            assert_eq!(file_inside(&root, Path::new(bad)), Err(ConfineError::Outside), "{bad:?}");
        }
        let long = "a/".repeat(MAX_REQUEST_PATH_BYTES);
        assert_eq!(file_inside(&root, Path::new(&long)), Err(ConfineError::Outside));
        for missing in ["m", "m/1", "nope", "m/1/nope"] {
            assert_eq!(file_inside(&root, Path::new(missing)), Err(ConfineError::Missing), "{missing}");
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn dir_inside_refuses_absolute_parent_and_linked_out_folders() {
        let base = scratch("dir");
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("runs")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        let canon = root.canonicalize().unwrap();
        assert_eq!(dir_inside(&root, Path::new("runs")), Ok(canon.join("runs")));
        assert_eq!(dir_inside(&root, Path::new("runs/a/b")), Ok(canon.join("runs/a/b")));
        assert_eq!(dir_inside(&root, Path::new("new/x")), Ok(canon.join("new/x")));
        for bad in ["/tmp", "../x", "runs/../../x", "link", "link/x", ""] {
            assert_eq!(dir_inside(&root, Path::new(bad)), Err(ConfineError::Outside), "{bad:?}");
        }
        let abs = root.join("runs");
        assert_eq!(dir_inside(&root, &abs), Err(ConfineError::Outside), "absolute paths are refused for output");
        assert_eq!(dir_inside(&root, Path::new("file/x")), Err(ConfineError::Missing));
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn open_regular_refuses_a_fifo_without_blocking_and_folders() {
        let base = scratch("open");
        let fifo = base.join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // With no writer, a blocking open would never return.
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(open_regular(&base).is_err());
        std::fs::write(base.join("f"), b"12345").unwrap();
        assert_eq!(open_regular(&base.join("f")).unwrap().1, 5);
        let _ = std::fs::remove_dir_all(&base);
    }
}
