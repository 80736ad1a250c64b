//! File writes that a crash cannot leave half-done: the one place that knows
//! the temporary-name, fsync, rename, fsync-the-folder sequence. Every file
//! quorum publishes (weights, checkpoints, Parquet tables and day files) goes
//! through it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A hidden temporary file (`.<name>.tmp-<pid>-<n>`, `n` counting this
/// process's temporary files, so two threads writing one file never share
/// one) in the folder of the file it will become. Write through the `File` that `create` returns, then
/// `persist` it under its final name; dropped without persisting, it is
/// removed. A process killed meanwhile leaves only the hidden name, which
/// readers skip (and `market::store::remove_stale_temp_files` cleans up).
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

/// The pid of the process that made a temporary file named `name` (a
/// [`TempFile`]: `.<final name>.tmp-<pid>-<n>`, or `.tmp-<pid>` as written
/// before the counter), with the final name it was meant to get.
pub fn temp_file_owner(name: &str) -> Option<(&str, u32)> {
    let (final_name, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let pid = tail.split_once('-').map_or(tail, |(pid, n)| if n.parse::<u64>().is_ok() { pid } else { "" });
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
        assert_eq!(temp_file_owner(".x.parquet.tmp-42"), Some(("x.parquet", 42)));
        assert_eq!(temp_file_owner(".x.parquet.tmp-42-7"), Some(("x.parquet", 42)));
        for not_ours in ["x.parquet", ".x.parquet", ".x.parquet.tmp-", ".x.tmp-4a", ".x.tmp-42-z"] {
            assert_eq!(temp_file_owner(not_ours), None, "{not_ours}");
        }
        drop(tmp);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
