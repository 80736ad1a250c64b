//! NVIDIA's run-time compiler, loaded dynamically (libloading): the crate
//! builds and runs without CUDA, and "no NVRTC" is an error, not a panic.
//!
//! Used to compile the embedded kernel sources (sources.rs) for the device's
//! architecture, and by the compile checks (tests/kernels_nvrtc.rs,
//! examples/kernel_report.rs). Where NVRTC is looked for, in order
//! ([`Nvrtc::candidates`]): `QUORUM_NVRTC` (a path to the library); the
//! wheels folder tools/install_cuda_wheels.sh fills; a toolkit under
//! `CUDA_HOME`, `CUDA_PATH` or `/usr/local/cuda*`; the `nvidia` wheels of a
//! Python environment (`VIRTUAL_ENV`, PyTorch's usual prefixes), both the
//! CUDA 12 layout (`nvidia/cuda_nvrtc/lib/libnvrtc.so.12`) and the CUDA 13 one
//! (`nvidia/cu13/lib/libnvrtc.so.13`); then the loader's path by name.
//!
//! NVRTC opens its builtins library (`libnvrtc-builtins.so.<major>.<minor>`)
//! by name at compile time, which finds it only on the loader path. When the
//! library is found by full path, the builtins beside it are loaded first,
//! so NVRTC's own lookup finds them already loaded (by their soname).

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

type Prog = *mut c_void;

/// The folder tools/install_cuda_wheels.sh installs NVIDIA's wheels into.
pub fn wheels_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUORUM_CUDA_WHEELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    home.join(".cache/quorum/cuda-wheels")
}

/// `ptxas` from the nvcc wheel, if installed.
pub fn wheel_ptxas() -> Option<PathBuf> {
    Some(wheels_dir().join("nvidia/cuda_nvcc/bin/ptxas")).filter(|p| p.is_file())
}

fn err(reason: String) -> Error {
    Error::Backend { backend: "nvrtc".into(), reason }
}

/// The output of one compilation.
pub struct Compiled {
    /// NVRTC's log: empty on a clean compile; warnings otherwise.
    pub log: String,
    pub ptx: Vec<u8>,
    /// Present when compiled for a real architecture (`sm_XX`).
    pub cubin: Option<Vec<u8>>,
}

pub struct Nvrtc {
    // The function pointers below point into this library: keep it loaded.
    _lib: libloading::Library,
    /// The builtins loaded beside it by path (see the module comment).
    _builtins: Option<libloading::Library>,
    path: PathBuf,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
    create: unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    log: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    ptx_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    ptx: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    cubin_size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
    cubin: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut Prog) -> c_int,
}

/// Where to look for NVRTC: the environment and the folders to search, so
/// that the search can be tested on a made-up layout.
#[derive(Clone, Debug, Default)]
pub struct SearchRoots {
    /// `QUORUM_NVRTC`: an explicit library path, tried first.
    pub explicit: Option<PathBuf>,
    /// Folders holding NVIDIA's `nvidia/...` wheel tree (ours, a Python
    /// environment's site-packages).
    pub wheel_roots: Vec<PathBuf>,
    /// CUDA toolkit roots (`/usr/local/cuda`).
    pub toolkits: Vec<PathBuf>,
}

/// The library names of the NVRTC majors we can use, newest first.
const SONAMES: [&str; 2] = ["libnvrtc.so.13", "libnvrtc.so.12"];

impl SearchRoots {
    /// This process's: from the environment and the usual install prefixes.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut wheel_roots = vec![wheels_dir()];
        let mut prefixes: Vec<PathBuf> = var("VIRTUAL_ENV").into_iter().collect();
        prefixes.extend(["/opt/torch/.venv", "/opt/conda", "/usr/local", "/usr"].map(PathBuf::from));
        for prefix in prefixes {
            wheel_roots.extend(site_packages(&prefix));
        }
        let mut toolkits: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"].iter().filter_map(|k| var(k)).collect();
        toolkits.push(PathBuf::from("/usr/local/cuda"));
        // Versioned installs (/usr/local/cuda-13.0), newest first.
        let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/local")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("cuda-")))
            .collect();
        versioned.sort();
        toolkits.extend(versioned.into_iter().rev());
        SearchRoots { explicit: var("QUORUM_NVRTC"), wheel_roots, toolkits }
    }

    /// Candidate library paths, in the order `Nvrtc::load` tries them: the
    /// explicit path, then existing files under the roots (newest major
    /// first within each root), then the bare names for the loader's path.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for root in &self.wheel_roots {
            files.push(root.join("nvidia/cu13/lib").join(SONAMES[0]));
            files.push(root.join("nvidia/cuda_nvrtc/lib").join(SONAMES[1]));
        }
        for root in &self.toolkits {
            for lib in ["lib64", "targets/x86_64-linux/lib", "lib"] {
                files.extend(SONAMES.iter().map(|n| root.join(lib).join(n)));
            }
        }
        let mut c: Vec<PathBuf> = self.explicit.iter().cloned().collect();
        for f in files {
            if f.is_file() && !c.contains(&f) {
                c.push(f);
            }
        }
        c.extend(SONAMES.iter().chain(&["libnvrtc.so"]).map(PathBuf::from));
        c
    }
}

/// `<prefix>/lib/python3.*/{site,dist}-packages` folders that exist.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("python3") {
                for sub in ["site-packages", "dist-packages"] {
                    let d = e.path().join(sub);
                    if d.is_dir() {
                        out.push(d);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// The builtins library NVRTC will ask for, beside a library found by path:
/// `libnvrtc-builtins.so.<major>.<minor>` (any minor; the newest name sorts last).
fn builtins_beside(lib: &Path) -> Option<PathBuf> {
    let dir = lib.parent().filter(|d| !d.as_os_str().is_empty())?;
    let major = lib.file_name()?.to_str()?.strip_prefix("libnvrtc.so.")?;
    let prefix = format!("libnvrtc-builtins.so.{major}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

impl Nvrtc {
    /// Candidate library paths, in the order `load` tries them (see the
    /// module comment).
    pub fn candidates() -> Vec<PathBuf> {
        SearchRoots::from_env().candidates()
    }

    /// Loads the first NVRTC found; the error lists where it looked.
    pub fn load() -> Result<Self> {
        let mut tried = Vec::new();
        for p in Self::candidates() {
            match Self::load_from(&p) {
                Ok(n) => return Ok(n),
                Err(e) => tried.push(format!("{}: {e}", p.display())),
            }
        }
        Err(err(format!(
            "NVRTC not found (run tools/install_cuda_wheels.sh, or set QUORUM_NVRTC to a libnvrtc.so.12 or .13); tried: {}",
            tried.join("; ")
        )))
    }

    pub fn load_from(path: &Path) -> Result<Self> {
        // SAFETY: loading NVRTC runs its initializers, which have no
        // preconditions; each symbol is given its documented C signature.
        unsafe {
            let builtins = match builtins_beside(path) {
                Some(b) => Some(libloading::Library::new(&b).map_err(|e| err(format!("{}: {e}", b.display())))?),
                None => None,
            };
            let lib = libloading::Library::new(path).map_err(|e| err(e.to_string()))?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| err(format!("{}: {e}", String::from_utf8_lossy($name))))?
                };
            }
            Ok(Nvrtc {
                path: path.to_path_buf(),
                version: sym!(b"nvrtcVersion\0"),
                create: sym!(b"nvrtcCreateProgram\0"),
                compile: sym!(b"nvrtcCompileProgram\0"),
                log_size: sym!(b"nvrtcGetProgramLogSize\0"),
                log: sym!(b"nvrtcGetProgramLog\0"),
                ptx_size: sym!(b"nvrtcGetPTXSize\0"),
                ptx: sym!(b"nvrtcGetPTX\0"),
                cubin_size: sym!(b"nvrtcGetCUBINSize\0"),
                cubin: sym!(b"nvrtcGetCUBIN\0"),
                destroy: sym!(b"nvrtcDestroyProgram\0"),
                _lib: lib,
                _builtins: builtins,
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// NVRTC's (major, minor) version.
    pub fn version(&self) -> (i32, i32) {
        let (mut a, mut b) = (0, 0);
        // SAFETY: two out-pointers to ints.
        unsafe { (self.version)(&mut a, &mut b) };
        (a, b)
    }

    /// Compiles one source with in-memory headers (`(include name, text)`) and
    /// options such as `--gpu-architecture=sm_90`. A compile error is an Err
    /// carrying the log; warnings come back in `Compiled::log`.
    pub fn compile(&self, name: &str, src: &str, headers: &[(&str, &str)], opts: &[&str]) -> Result<Compiled> {
        let cs = |s: &str| CString::new(s).map_err(|_| err(format!("{name}: NUL in a string")));
        let (src_c, name_c) = (cs(src)?, cs(name)?);
        let hdr_text: Vec<CString> = headers.iter().map(|h| cs(h.1)).collect::<Result<_>>()?;
        let hdr_name: Vec<CString> = headers.iter().map(|h| cs(h.0)).collect::<Result<_>>()?;
        let hdr_text_p: Vec<*const c_char> = hdr_text.iter().map(|c| c.as_ptr()).collect();
        let hdr_name_p: Vec<*const c_char> = hdr_name.iter().map(|c| c.as_ptr()).collect();
        let opts_c: Vec<CString> = opts.iter().map(|o| cs(o)).collect::<Result<_>>()?;
        let opts_p: Vec<*const c_char> = opts_c.iter().map(|c| c.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: every pointer is to a live NUL-terminated string or array of
        // them with the counts given; prog is destroyed on every path below.
        unsafe {
            let rc = (self.create)(
                &mut prog,
                src_c.as_ptr(),
                name_c.as_ptr(),
                headers.len() as c_int,
                hdr_text_p.as_ptr(),
                hdr_name_p.as_ptr(),
            );
            if rc != 0 {
                return Err(err(format!("{name}: nvrtcCreateProgram failed ({rc})")));
            }
            let rc = (self.compile)(prog, opts_p.len() as c_int, opts_p.as_ptr());
            let log = self.read(prog, self.log_size, self.log).map(|mut l| {
                while l.last() == Some(&0) {
                    l.pop();
                }
                String::from_utf8_lossy(&l).trim().to_string()
            });
            let out = match (rc, log) {
                (0, Ok(log)) => {
                    let ptx = self.read(prog, self.ptx_size, self.ptx);
                    let is_sm = opts.iter().any(|o| o.contains("=sm_"));
                    let cubin = if is_sm { Some(self.read(prog, self.cubin_size, self.cubin)) } else { None };
                    match (ptx, cubin.transpose()) {
                        (Ok(mut ptx), Ok(cubin)) => {
                            while ptx.last() == Some(&0) {
                                ptx.pop();
                            }
                            Ok(Compiled { log, ptx, cubin })
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                }
                (rc, log) => Err(err(format!("{name}: compile failed ({rc}):\n{}", log.unwrap_or_default()))),
            };
            (self.destroy)(&mut prog);
            out
        }
    }

    /// Reads one of the program's outputs through its size/get pair.
    unsafe fn read(
        &self,
        prog: Prog,
        size: unsafe extern "C" fn(Prog, *mut usize) -> c_int,
        get: unsafe extern "C" fn(Prog, *mut c_char) -> c_int,
    ) -> Result<Vec<u8>> {
        let mut n = 0usize;
        if size(prog, &mut n) != 0 {
            return Err(err("nvrtc: size query failed".into()));
        }
        let mut buf = vec![0u8; n];
        if n > 0 && get(prog, buf.as_mut_ptr() as *mut c_char) != 0 {
            return Err(err("nvrtc: output query failed".into()));
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn cuda_13_and_12_layouts_are_found_newest_first() {
        let root = std::env::temp_dir().join(format!("quorum_nvrtc_layouts_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (ours, torch, toolkit) = (root.join("ours"), root.join("venv/site-packages"), root.join("cuda-13.0"));
        touch(&ours.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        touch(&torch.join("nvidia/cu13/lib/libnvrtc.so.13"));
        touch(&torch.join("nvidia/cu13/lib/libnvrtc-builtins.so.13.0"));
        touch(&toolkit.join("targets/x86_64-linux/lib/libnvrtc.so.13"));
        let roots = SearchRoots {
            explicit: Some(root.join("explicit.so")),
            wheel_roots: vec![ours.clone(), torch.clone()],
            toolkits: vec![root.join("absent"), toolkit.clone()],
        };
        let names: Vec<PathBuf> = SONAMES.iter().chain(&["libnvrtc.so"]).map(PathBuf::from).collect();
        let mut want = vec![
            root.join("explicit.so"),
            ours.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"),
            torch.join("nvidia/cu13/lib/libnvrtc.so.13"),
            toolkit.join("targets/x86_64-linux/lib/libnvrtc.so.13"),
        ];
        want.extend(names);
        assert_eq!(roots.candidates(), want);
        assert_eq!(
            builtins_beside(&torch.join("nvidia/cu13/lib/libnvrtc.so.13")),
            Some(torch.join("nvidia/cu13/lib/libnvrtc-builtins.so.13.0"))
        );
        assert_eq!(builtins_beside(&ours.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12")), None);
        assert_eq!(builtins_beside(Path::new("libnvrtc.so.13")), None, "a bare name is the loader's business");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn site_packages_of_a_prefix_are_listed() {
        let root = std::env::temp_dir().join(format!("quorum_nvrtc_prefix_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/python3.12/site-packages")).unwrap();
        std::fs::create_dir_all(root.join("lib/python3.11/dist-packages")).unwrap();
        std::fs::create_dir_all(root.join("lib/perl5")).unwrap();
        assert_eq!(
            site_packages(&root),
            vec![root.join("lib/python3.11/dist-packages"), root.join("lib/python3.12/site-packages")]
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
