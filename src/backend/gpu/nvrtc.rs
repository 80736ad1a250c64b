//! NVIDIA's run-time compiler, loaded dynamically (libloading): the crate
//! builds and runs without CUDA, and "no NVRTC" is an error, not a panic.
//!
//! Used to compile the embedded kernel sources (sources.rs) for the device's
//! architecture, and by the compile checks (tests/kernels_nvrtc.rs,
//! examples/kernel_report.rs). NVRTC is taken from, in order: QUORUM_NVRTC
//! (a path to libnvrtc.so), the wheels folder tools/install_cuda_wheels.sh
//! fills, then the system's library path.

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

impl Nvrtc {
    /// Candidate library paths, in the order `load` tries them.
    pub fn candidates() -> Vec<PathBuf> {
        let mut c = Vec::new();
        if let Some(p) = std::env::var_os("QUORUM_NVRTC") {
            c.push(PathBuf::from(p));
        }
        c.push(wheels_dir().join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        c.push(PathBuf::from("libnvrtc.so.12"));
        c.push(PathBuf::from("libnvrtc.so"));
        c
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
            "NVRTC not found (run tools/install_cuda_wheels.sh, or set QUORUM_NVRTC); tried: {}",
            tried.join("; ")
        )))
    }

    pub fn load_from(path: &Path) -> Result<Self> {
        // SAFETY: loading NVRTC runs its initializers, which have no
        // preconditions; each symbol is given its documented C signature.
        unsafe {
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
