//! `Emu`: the CUDA kernels compiled for the CPU with `kernels/emu/` (build.rs)
//! and launched through the same parameter structs and launch
//! configurations as on a GPU. Device memory is host memory.
//!
//! The blocks of a grid are split into ranges run in parallel on rayon's
//! threads; within a block the emulator runs the threads as fibers on one OS
//! thread (kernels/emu/emu.cpp), so results are exact and reproducible.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::device::emu_entries::entry;
use super::device::{Device, Kernel, LaunchConfig, StreamGate};
use super::params::KernelParams;
use crate::error::{Error, Result};

/// `QuorumEmuLaunch` of kernels/emu/cuda_emu.h.
#[repr(C)]
struct EmuLaunch {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    block_begin: u64,
    block_end: u64,
    order: c_int,
    err: *mut c_char,
    err_len: usize,
}

/// The size of the C parameter struct of `k`, as the C++ compiler laid it out.
pub fn c_params_size(k: Kernel) -> usize {
    // SAFETY: a pure function of the emulator library returning sizeof.
    unsafe { (entry(k).1)() }
}

/// Checks that `P`'s size is its kernel's C struct's, and names the kernel
/// (for the tests' list of every parameter struct).
#[cfg(test)]
pub(crate) fn c_size_agrees<P: KernelParams>() -> Kernel {
    assert_eq!(c_params_size(P::KERNEL), std::mem::size_of::<P>(), "{:?}", P::KERNEL);
    P::KERNEL
}

/// In which order the emulator runs the threads of a block between barriers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadOrder {
    /// Forward in even blocks, reverse in odd ones: both directions of a
    /// missing barrier show up in one launch.
    #[default]
    Alternate,
    Forward,
    Reverse,
}

/// A device buffer of the emulator: host memory, kept apart from CPU buffers by type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmuBuf(Vec<f32>);

/// The emulated device with its one stream. Clones share the stream (and so
/// any capture under way), as handles to one CUDA device and stream would.
#[derive(Clone, Debug, Default)]
pub struct Emu {
    order: ThreadOrder,
    stream: Arc<EmuStream>,
}

/// A launch recorded during capture: the kernel run with a copy of its parameters.
type RecordedLaunch = Arc<dyn Fn(&Emu) -> Result<()> + Send + Sync>;

/// The emulator's CUDA graph: launches recorded in order.
pub struct EmuGraph {
    launches: Vec<RecordedLaunch>,
}

impl EmuGraph {
    pub fn len(&self) -> usize {
        self.launches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
    }
}

/// The stream's capture, following CUDA's rules: it belongs to the stream,
/// not to a thread, so whatever reaches the stream while it is on is
/// recorded (a launch) or breaks it (anything else).
#[derive(Default)]
struct EmuStream {
    gate: StreamGate,
    capture: Mutex<Option<Capture>>,
}

impl std::fmt::Debug for EmuStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuStream").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Capture {
    launches: Vec<RecordedLaunch>,
    /// Why the capture can no longer give a graph (CUDA's
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`), if something broke it.
    invalidated: Option<String>,
}

impl EmuStream {
    fn capture(&self) -> std::sync::MutexGuard<'_, Option<Capture>> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy or a wait on the stream: an error while capturing, and the
    /// capture is then invalidated, as CUDA does.
    fn not_capturing(&self, op: &str) -> Result<()> {
        match self.capture().as_mut() {
            None => Ok(()),
            Some(c) => {
                let reason = format!("{op}: operation not permitted when the stream is capturing");
                c.invalidated.get_or_insert(reason.clone());
                Err(emu_err(reason))
            }
        }
    }
}

impl Emu {
    pub fn new() -> Self {
        Emu::default()
    }

    pub fn with_order(order: ThreadOrder) -> Self {
        Emu { order, stream: Arc::default() }
    }
}

fn emu_err(reason: String) -> Error {
    Error::Backend { backend: "emu".into(), reason }
}

impl Device for Emu {
    type Mem = EmuBuf;
    type Graph = EmuGraph;

    fn name(&self) -> &'static str {
        "emu"
    }

    /// Fallible, as device memory is: a size the memory cannot hold is an error.
    fn alloc(&self, len: usize) -> Result<EmuBuf> {
        let _pass = self.stream.gate.enter();
        self.stream.not_capturing("alloc")?;
        Ok(EmuBuf(crate::tensor::try_zeros(len, "emu buffer")?))
    }

    fn upload(&self, data: &[f32]) -> Result<EmuBuf> {
        let _pass = self.stream.gate.enter();
        self.stream.not_capturing("upload")?;
        Ok(EmuBuf(crate::tensor::try_copy(data, "emu buffer")?))
    }

    fn write(&self, dst: &mut EmuBuf, src: &[f32]) -> Result<()> {
        let _pass = self.stream.gate.enter();
        self.stream.not_capturing("write")?;
        dst.0[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, src: &EmuBuf, dst: &mut [f32]) -> Result<()> {
        let _pass = self.stream.gate.enter();
        self.stream.not_capturing("read")?;
        dst.copy_from_slice(&src.0[..dst.len()]);
        Ok(())
    }

    fn len(&self, m: &EmuBuf) -> usize {
        m.0.len()
    }

    fn ptr(&self, m: &EmuBuf) -> u64 {
        m.0.as_ptr() as u64
    }

    fn ptr_mut(&self, m: &mut EmuBuf) -> u64 {
        m.0.as_mut_ptr() as u64
    }

    unsafe fn launch<P: KernelParams>(&self, cfg: LaunchConfig, params: &P) -> Result<()> {
        if cfg.blocks() == 0 || cfg.threads_per_block() == 0 {
            // CUDA refuses these ("invalid configuration argument"): an op
            // must skip a zero-sized problem itself (`launch_nonempty`), and
            // the emulator holds it to that.
            return Err(emu_err(format!(
                "{:?}: an empty launch (grid {:?}, block {:?}), which CUDA refuses",
                P::KERNEL,
                cfg.grid,
                cfg.block
            )));
        }
        let _pass = self.stream.gate.enter();
        let params = *params;
        if let Some(c) = self.stream.capture().as_mut() {
            c.launches.push(Arc::new(move |emu: &Emu| {
                // SAFETY: replay's contract: the recorded pointers are still live.
                unsafe { emu.run(cfg, &params) }
            }));
            return Ok(());
        }
        // SAFETY: the caller's guarantee (Device::launch).
        unsafe { self.run(cfg, &params) }
    }

    fn begin_capture(&self) -> Result<()> {
        self.stream.gate.begin(|| {
            let mut c = self.stream.capture();
            if c.is_some() {
                return Err(emu_err("begin_capture: the stream is already capturing".into()));
            }
            *c = Some(Capture::default());
            Ok(())
        })
    }

    fn end_capture(&self) -> Result<EmuGraph> {
        self.stream.gate.end(|| {
            let c =
                self.stream.capture().take().ok_or_else(|| emu_err("end_capture: no capture in progress".into()))?;
            match c.invalidated {
                Some(why) => Err(emu_err(format!("end_capture: the capture was invalidated ({why})"))),
                None => Ok(EmuGraph { launches: c.launches }),
            }
        })
    }

    fn replay(&self, graph: &EmuGraph) -> Result<()> {
        let _pass = self.stream.gate.enter();
        // A graph launched into a capturing stream becomes part of the capture.
        if let Some(c) = self.stream.capture().as_mut() {
            c.launches.extend(graph.launches.iter().cloned());
            return Ok(());
        }
        graph.launches.iter().try_for_each(|launch| launch(self))
    }
}

impl Emu {
    /// Runs one kernel launch to completion.
    ///
    /// # Safety
    /// As `Device::launch`.
    unsafe fn run<P: KernelParams>(&self, cfg: LaunchConfig, params: &P) -> Result<()> {
        let (run, size) = entry(P::KERNEL);
        if size() != std::mem::size_of::<P>() {
            return Err(emu_err(format!(
                "{:?}: parameter struct is {} bytes in Rust, {} in C",
                P::KERNEL,
                std::mem::size_of::<P>(),
                size()
            )));
        }
        let blocks = cfg.blocks();
        if blocks == 0 {
            return Ok(());
        }
        // A few ranges per thread, so an unlucky split does not idle a core.
        let ranges = (rayon::current_num_threads() as u64 * 4).min(blocks);
        let per = blocks.div_ceil(ranges);
        let order = match self.order {
            ThreadOrder::Alternate => 0,
            ThreadOrder::Forward => 1,
            ThreadOrder::Reverse => 2,
        };
        let params_addr = params as *const P as usize;
        let failure = (0..blocks.div_ceil(per)).into_par_iter().find_map_any(|i| {
            let mut msg = [0 as c_char; 512];
            let l = EmuLaunch {
                grid: cfg.grid,
                block: cfg.block,
                shared_bytes: cfg.shared_bytes,
                block_begin: i * per,
                block_end: ((i + 1) * per).min(blocks),
                order,
                err: msg.as_mut_ptr(),
                err_len: msg.len(),
            };
            // SAFETY: the caller guarantees the pointers in `params`; `l`
            // and `msg` outlive the call.
            let rc = unsafe { run(&l as *const EmuLaunch as *const c_void, params_addr as *const c_void) };
            (rc != 0).then(|| {
                // SAFETY: the emulator NUL-terminates what it writes into msg.
                unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned()
            })
        });
        match failure {
            Some(m) => Err(emu_err(format!("{:?}: {m}", P::KERNEL))),
            None => Ok(()),
        }
    }
}

/// The emulator's own test kernels (kernels/emu/selftest.cu), for tests that
/// show it catches what it should: a missing barrier, a divergent barrier,
/// and that the warp collectives follow CUDA's rules.
pub mod selftest {
    use super::*;

    #[repr(C)]
    struct Params {
        input: *const f32,
        out: *mut f32,
        n: c_int,
    }

    extern "C" {
        fn quorum_emu_launch_emu_selftest_reverse(l: *const EmuLaunch, p: *const Params) -> c_int;
        fn quorum_emu_launch_emu_selftest_reverse_broken(l: *const EmuLaunch, p: *const Params) -> c_int;
        fn quorum_emu_launch_emu_selftest_divergent(l: *const EmuLaunch, p: *const Params) -> c_int;
        fn quorum_emu_launch_emu_selftest_warp(l: *const EmuLaunch, p: *const Params) -> c_int;
        fn quorum_emu_launch_emu_selftest_atomics(l: *const EmuLaunch, p: *const Params) -> c_int;
    }

    type SelfTestFn = unsafe extern "C" fn(*const EmuLaunch, *const Params) -> c_int;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SelfTest {
        /// Reverses each block's slice through shared memory (correct).
        Reverse,
        /// The same without its `__syncthreads`.
        ReverseMissingBarrier,
        /// Half the block reaches a `__syncthreads`.
        DivergentBarrier,
        /// One block; per thread 7 outputs of warp collectives.
        Warp,
        /// Float and int atomics from every thread of the grid into out[0..3]
        /// (out must start as [0, -inf, 0 as int bits]).
        Atomics,
    }

    /// Runs a self-test kernel on `grid` blocks of `block` threads over
    /// `input`, returning its output (`out_len` values, NaN where unwritten).
    pub fn run(
        which: SelfTest,
        order: ThreadOrder,
        grid: u32,
        block: u32,
        input: &[f32],
        out_len: usize,
    ) -> Result<Vec<f32>> {
        let mut out = vec![f32::NAN; out_len];
        if which == SelfTest::Atomics && out_len >= 3 {
            out[..3].copy_from_slice(&[0.0, f32::NEG_INFINITY, 0.0]);
        }
        let p = Params { input: input.as_ptr(), out: out.as_mut_ptr(), n: input.len() as c_int };
        let order = match order {
            ThreadOrder::Alternate => 0,
            ThreadOrder::Forward => 1,
            ThreadOrder::Reverse => 2,
        };
        let f: SelfTestFn = match which {
            SelfTest::Reverse => quorum_emu_launch_emu_selftest_reverse,
            SelfTest::ReverseMissingBarrier => quorum_emu_launch_emu_selftest_reverse_broken,
            SelfTest::DivergentBarrier => quorum_emu_launch_emu_selftest_divergent,
            SelfTest::Warp => quorum_emu_launch_emu_selftest_warp,
            SelfTest::Atomics => quorum_emu_launch_emu_selftest_atomics,
        };
        let need_in = (grid * block) as usize;
        let need_out = match which {
            SelfTest::Warp => 7 * need_in,
            SelfTest::DivergentBarrier => block as usize,
            SelfTest::Atomics => 3,
            _ => need_in,
        };
        if input.len() < need_in || out_len < need_out || block > 1024 {
            return Err(emu_err(format!("selftest {which:?}: buffers too small for {grid}x{block}")));
        }
        // One block per range, on rayon's threads: atomics really race.
        let (p_addr, f_addr) = (&p as *const Params as usize, f as usize);
        let failure = (0..grid as u64).into_par_iter().find_map_any(|b| {
            let mut msg = [0 as c_char; 512];
            let lb = EmuLaunch {
                grid: [grid, 1, 1],
                block: [block, 1, 1],
                shared_bytes: 0,
                block_begin: b,
                block_end: b + 1,
                order,
                err: msg.as_mut_ptr(),
                err_len: msg.len(),
            };
            // SAFETY: f_addr is one of the entry points above; input and out
            // hold every index the kernel touches (checked above).
            let rc = unsafe {
                let f: SelfTestFn = std::mem::transmute(f_addr);
                f(&lb, p_addr as *const Params)
            };
            // SAFETY: NUL-terminated by the emulator.
            (rc != 0).then(|| unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned())
        });
        match failure {
            Some(m) => Err(emu_err(format!("selftest {which:?}: {m}"))),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::params::*;

    /// Every kernel's Rust parameter struct has the size the C++ compiler
    /// gives its C struct, and every kernel of the registry has one (a new
    /// kernel without its Rust struct fails here). Each module lists its
    /// structs by type only: the kernel comes from `KernelParams::KERNEL`.
    #[test]
    fn an_empty_launch_is_refused_as_cuda_refuses_it() {
        let emu = Emu::new();
        for (grid, block) in [([0, 1, 1], [32, 1, 1]), ([2, 0, 1], [32, 1, 1]), ([1, 1, 1], [0, 1, 1])] {
            let cfg = LaunchConfig { grid, block, shared_bytes: 0 };
            // SAFETY: refused before anything runs (null pointers never read).
            let e = unsafe { emu.launch(cfg, &MmaCheckParams::default()) }.unwrap_err().to_string();
            assert!(e.contains("MmaCheck") && e.contains("empty launch"), "{e}");
        }
    }

    #[test]
    fn every_kernel_has_a_rust_parameter_struct_of_its_c_size() {
        let mut checked = vec![
            c_size_agrees::<MmaCheckParams>(),
            c_size_agrees::<F16<MmaCheckParams>>(),
            c_size_agrees::<Int8<MmaCheckParams>>(),
            c_size_agrees::<HalfRoundTripParams>(),
        ];
        checked.extend(crate::backend::ops::parameter_structs_checked());
        let mut registry = Kernel::ALL.to_vec();
        let key = |k: &Kernel| k.symbol();
        checked.sort_by_key(key);
        registry.sort_by_key(key);
        assert_eq!(checked, registry);
    }
}
