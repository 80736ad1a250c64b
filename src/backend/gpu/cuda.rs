//! `Cuda`: a real GPU through cudarc (the CUDA driver loaded at run time).
//!
//! The crate builds and runs with no CUDA installed: `Cuda::new` probes for
//! the driver library first (cudarc panics on a missing library otherwise)
//! and turns "no CUDA" into an error the CLI can print.
//!
//! Kernel images, per `.cu` file, in order of preference:
//! 1. PTX built by build.rs with nvcc for this device's arch (rare: NVIDIA's
//!    wheels have no nvcc);
//! 2. a CUBIN compiled by NVRTC for this device's exact arch, cached on disk
//!    keyed by a hash of the sources, the arch and NVRTC's version (a 12.x
//!    cubin runs on any R525+ driver, where NVRTC 12.9's PTX 8.8 would need a
//!    12.9-era driver to JIT).
//!
//! Event tracking is disabled right after the context is created: every op
//! runs on one stream, and per-buffer events would break stream capture, which
//! records a model's forward into a CUDA graph (`Device::begin_capture`).
//! Capture belongs to the stream, so a [`StreamGate`] holds every other
//! thread's stream operations back while one thread captures.
//!
//! `cargo test --release --features gpu-tests` (or `tools/gpu_check.sh`)
//! runs the kernel and model tests on a GPU.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::device::{Device, Kernel, LaunchConfig, StreamGate};
use super::nvrtc::Nvrtc;
use super::params::KernelParams;
use super::sources;
use crate::error::{Error, Result};

fn err(reason: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "cuda".into(), reason: reason.to_string() }
}

/// A kernel parameter struct as cudarc's kernel argument, passed by value.
#[repr(transparent)]
struct Arg<P>(P);
// SAFETY: every KernelParams is #[repr(C)] plain data (pointers as u64 and
// ints) with the layout of the kernel's C struct.
unsafe impl<P: KernelParams> DeviceRepr for Arg<P> {}

/// An instantiated CUDA graph of our stream.
pub struct CudaGraphExec(CudaGraph);
// SAFETY: the graph is only launched through `Device::replay`, onto the one
// stream it was captured from; the driver API is thread-safe, and a model
// replays under `&mut self`, so one graph is never launched concurrently.
unsafe impl Send for CudaGraphExec {}
unsafe impl Sync for CudaGraphExec {}

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<Kernel, CudaFunction>,
    arch: String,
    /// The NVRTC library the kernels were compiled with (None: all from PTX
    /// built by nvcc, or all from the disk cache).
    nvrtc: Option<PathBuf>,
    gate: StreamGate,
}

/// Whether a CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library.
    unsafe { sys::is_culib_present() }
}

impl Cuda {
    /// Opens device `ordinal` and loads every kernel.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(err("no CUDA driver found (libcuda.so could not be loaded)"));
        }
        let ctx = CudaContext::new(ordinal).map_err(err)?;
        // SAFETY: all our work is on one stream; see the module comment.
        unsafe { ctx.disable_event_tracking() };
        // Our own stream, not the legacy default one, which cannot be captured
        // into a CUDA graph.
        let stream = ctx.new_stream().map_err(err)?;
        let attr = |a| ctx.attribute(a).map_err(err);
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let arch = format!("sm_{major}{minor}");
        let mut functions = HashMap::new();
        let mut nvrtc: Option<Nvrtc> = None;
        for (file, _) in sources::SOURCES {
            let image = match sources::PTX.iter().find(|(f, a, _)| f == file && *a == arch) {
                Some((_, _, ptx)) => Ptx::from_src(*ptx),
                None => Ptx::from_binary(cached_cubin(&mut nvrtc, file, &arch)?),
            };
            let module = ctx.load_module(image).map_err(|e| err(format!("loading {file} for {arch}: {e}")))?;
            for k in Kernel::ALL.iter().filter(|k| k.source_file() == *file) {
                functions.insert(*k, module.load_function(k.symbol()).map_err(err)?);
            }
        }
        let nvrtc = nvrtc.map(|n| n.path().to_path_buf());
        Ok(Cuda { ctx, stream, functions, arch, nvrtc, gate: StreamGate::default() })
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// One line for logs: the device, its architecture, and where its
    /// kernels came from (which NVRTC library, or the disk cache).
    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|e| format!("(name unavailable: {e})"));
        let kernels = match &self.nvrtc {
            Some(p) => format!("kernels compiled by NVRTC {}", p.display()),
            None => format!("kernels from the cache {}", cache_dir().display()),
        };
        format!("CUDA device {} ({name}, {}), {kernels}", self.ctx.ordinal(), self.arch)
    }

    /// The NVRTC library this device's kernels were compiled with, when any
    /// were compiled in this process (not all found in the disk cache).
    pub fn nvrtc_path(&self) -> Option<&std::path::Path> {
        self.nvrtc.as_deref()
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(err)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

/// FNV-1a: a hash that is the same in every build (the cache key must not
/// change with the Rust version).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for &b in p.iter() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUORUM_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/quorum/kernels")
}

/// The CUBIN of one `.cu` file for `arch`, from the disk cache or NVRTC
/// (loaded into `nv` on first need).
fn cached_cubin(nv: &mut Option<Nvrtc>, file: &str, arch: &str) -> Result<Vec<u8>> {
    let src = sources::source(file).ok_or_else(|| err(format!("no embedded source {file}")))?;
    if nv.is_none() {
        *nv = Some(Nvrtc::load()?);
    }
    let nv = nv.as_ref().expect("loaded above");
    let (maj, min) = nv.version();
    let key = fnv1a(&[
        src.as_bytes(),
        &sources::HEADERS.iter().flat_map(|h| h.1.bytes()).collect::<Vec<u8>>(),
        arch.as_bytes(),
        format!("{maj}.{min}").as_bytes(),
    ]);
    let path = cache_dir().join(format!("{file}.{arch}.nvrtc{maj}.{min}.{key:016x}.cubin"));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let opts = super::compile_check::options(arch);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let out = nv.compile(file, src, sources::headers(), &opts)?;
    let cubin = out.cubin.ok_or_else(|| err(format!("NVRTC gave no cubin for {file} on {arch}")))?;
    // A cache that cannot be written only costs a recompile next time.
    if std::fs::create_dir_all(cache_dir()).is_ok() {
        let _ = crate::fsutil::write_atomic(&path, &cubin);
    }
    Ok(cubin)
}

impl Device for Cuda {
    type Mem = CudaSlice<f32>;
    type Graph = CudaGraphExec;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        let _pass = self.gate.enter();
        self.stream.alloc_zeros(len.max(1)).map_err(err)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        let _pass = self.gate.enter();
        if data.is_empty() {
            return self.stream.alloc_zeros(1).map_err(err);
        }
        self.stream.clone_htod(data).map_err(err)
    }

    fn write(&self, dst: &mut CudaSlice<f32>, src: &[f32]) -> Result<()> {
        let _pass = self.gate.enter();
        if src.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(..src.len());
        self.stream.memcpy_htod(src, &mut view).map_err(err)
    }

    fn read(&self, src: &CudaSlice<f32>, dst: &mut [f32]) -> Result<()> {
        let _pass = self.gate.enter();
        if dst.is_empty() {
            return Ok(());
        }
        let view = src.slice(..dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(err)?;
        self.stream.synchronize().map_err(err)
    }

    fn len(&self, m: &CudaSlice<f32>) -> usize {
        m.len()
    }

    fn ptr(&self, m: &CudaSlice<f32>) -> u64 {
        // With event tracking off the guard records nothing.
        m.device_ptr(&self.stream).0
    }

    fn ptr_mut(&self, m: &mut CudaSlice<f32>) -> u64 {
        m.device_ptr_mut(&self.stream).0
    }

    unsafe fn launch<P: KernelParams>(&self, cfg: LaunchConfig, params: &P) -> Result<()> {
        if cfg.blocks() == 0 {
            return Ok(());
        }
        let f = self.functions.get(&P::KERNEL).ok_or_else(|| err(format!("{:?} not loaded", P::KERNEL)))?;
        let _pass = self.gate.enter();
        let arg = Arg(*params);
        let mut b = self.stream.launch_builder(f);
        b.arg(&arg);
        let c = cudarc::driver::LaunchConfig {
            grid_dim: (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
            block_dim: (cfg.block[0], cfg.block[1], cfg.block[2]),
            shared_mem_bytes: cfg.shared_bytes,
        };
        // SAFETY: the caller guarantees the pointers in `params` (Device::launch).
        unsafe { b.launch(c) }.map_err(|e| err(format!("{:?}: {e}", P::KERNEL)))?;
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        self.gate.begin(|| {
            // Thread-local mode: an unsafe API call (a synchronous copy, say)
            // from another thread meanwhile is not made illegal by our
            // capture; the gate keeps other threads off our stream anyway.
            self.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| err(format!("begin_capture: {e}")))
        })
    }

    fn end_capture(&self) -> Result<CudaGraphExec> {
        self.gate.end(|| match self.stream.end_capture(INSTANTIATE_FLAGS) {
            Ok(Some(g)) => {
                // Upload now, so the first replay is as fast as the rest
                // (cuGraphInstantiateWithFlags takes no upload flag).
                g.upload().map_err(|e| err(format!("graph upload: {e}")))?;
                Ok(CudaGraphExec(g))
            }
            Ok(None) => Err(err("end_capture: nothing was captured")),
            Err(e) => Err(err(format!("end_capture: {e}"))),
        })
    }

    fn replay(&self, graph: &CudaGraphExec) -> Result<()> {
        let _pass = self.gate.enter();
        graph.0.launch().map_err(|e| err(format!("graph replay: {e}")))
    }
}

/// The flags cudarc hands to `cuGraphInstantiateWithFlags`. cuda.h allows
/// only AUTO_FREE_ON_LAUNCH, DEVICE_LAUNCH and USE_NODE_PRIORITY there;
/// UPLOAD is valid with `cuGraphInstantiateWithParams` alone and makes the
/// instantiation fail with CUDA_ERROR_INVALID_VALUE.
const INSTANTIATE_FLAGS: sys::CUgraphInstantiate_flags = sys::CUgraphInstantiate_flags(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_instantiation_flags_are_ones_cu_graph_instantiate_with_flags_takes() {
        use sys::CUgraphInstantiate_flags as F;
        let allowed = F::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH.0
            | F::CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH.0
            | F::CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY.0;
        assert_eq!(
            INSTANTIATE_FLAGS.0 & !allowed,
            0,
            "flags {:#x} include one only WithParams takes",
            INSTANTIATE_FLAGS.0
        );
    }

    #[test]
    fn cache_key_is_stable_and_sensitive() {
        assert_eq!(fnv1a(&[b"a", b"b"]), fnv1a(&[b"a", b"b"]));
        assert_ne!(fnv1a(&[b"ab"]), fnv1a(&[b"a", b"b"]), "part boundaries count");
        assert_ne!(fnv1a(&[b"x", b"sm_80"]), fnv1a(&[b"x", b"sm_90"]));
    }
}
