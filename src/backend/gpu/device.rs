//! What `Gpu<D>` needs from a device: memory, and launching a kernel by name
//! with one parameter struct and a launch configuration. `Emu` (the CPU
//! emulator) and `Cuda` (cudarc) implement it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use super::params::KernelParams;
use crate::error::Result;

/// Every kernel entry point of `kernels/*.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Standardize,
    BroadcastAdd,
    Pool,
    LayerNorm,
    Linear,
    Conv1d,
    PatchEmbed,
    Attention,
    Lstm,
    Heads,
    /// mma_check.cu: a one-warp check of the bf16 tensor-core helper.
    MmaCheck,
    /// gemm.cu's bf16-weight tensor-core variants (`Precision::Bf16`).
    LinearBf16,
    Conv1dBf16,
    PatchEmbedBf16,
    /// The IEEE f16 twins (`Precision::F16`).
    LinearF16,
    Conv1dF16,
    PatchEmbedF16,
    /// mma_check.cu with f16 operands.
    MmaCheckF16,
    /// mma_check.cu: the 16-bit float conversions, element by element.
    HalfRoundTrip,
    /// train_layout.cu: transposes on the device (re-preparing weights after a step).
    SwapLastAxes,
    /// train_layout.cu: f32 master weights packed into the 16-bit GEMM layout (use_amp).
    PackHalf,
    // Training, elementwise, optimizer and heads (train_elementwise.cu, heads_train.cu):
    // (entries below this line)
    TrainMap,
    DropoutMask,
    AdamW,
    SumSquares,
    BiasPartials,
    BiasFinish,
    BroadcastAddBackward,
    PoolBackward,
    HeadsLoss,
    HeadsParamGrads,
    // Training, the GEMM family and LayerNorm (train_gemm.cu, layernorm_backward.cu):
    // (entries below this line)
    LinearDw,
    LinearDx,
    Conv1dDw,
    Conv1dDx,
    PatchEmbedDw,
    GemmBiasGrad,
    LayerNormDx,
    LayerNormDparams,
    // Training, attention and the LSTM (attention_train.cu, lstm_train.cu):
    // (entries below this line)
    /// attention_train.cu: the forward keeping the probabilities, and the
    /// backward's two passes (a warp per query row, a warp per key).
    AttentionTrain,
    AttentionDq,
    AttentionDkv,
    /// lstm_train.cu: the recurrence keeping c and the gates, BPTT, and dW_hh.
    LstmTrain,
    LstmBackward,
    LstmDw,
}

impl Kernel {
    pub const ALL: &'static [Kernel] = &[
        Kernel::Standardize,
        Kernel::BroadcastAdd,
        Kernel::Pool,
        Kernel::LayerNorm,
        Kernel::Linear,
        Kernel::Conv1d,
        Kernel::PatchEmbed,
        Kernel::Attention,
        Kernel::Lstm,
        Kernel::Heads,
        Kernel::MmaCheck,
        Kernel::LinearBf16,
        Kernel::Conv1dBf16,
        Kernel::PatchEmbedBf16,
        Kernel::LinearF16,
        Kernel::Conv1dF16,
        Kernel::PatchEmbedF16,
        Kernel::MmaCheckF16,
        Kernel::HalfRoundTrip,
        Kernel::SwapLastAxes,
        Kernel::PackHalf,
        // Training, elementwise, optimizer and heads:
        // (entries below this line)
        Kernel::TrainMap,
        Kernel::DropoutMask,
        Kernel::AdamW,
        Kernel::SumSquares,
        Kernel::BiasPartials,
        Kernel::BiasFinish,
        Kernel::BroadcastAddBackward,
        Kernel::PoolBackward,
        Kernel::HeadsLoss,
        Kernel::HeadsParamGrads,
        // Training, the GEMM family and LayerNorm:
        // (entries below this line)
        Kernel::LinearDw,
        Kernel::LinearDx,
        Kernel::Conv1dDw,
        Kernel::Conv1dDx,
        Kernel::PatchEmbedDw,
        Kernel::GemmBiasGrad,
        Kernel::LayerNormDx,
        Kernel::LayerNormDparams,
        // Training, attention and the LSTM:
        // (entries below this line)
        Kernel::AttentionTrain,
        Kernel::AttentionDq,
        Kernel::AttentionDkv,
        Kernel::LstmTrain,
        Kernel::LstmBackward,
        Kernel::LstmDw,
    ];

    /// The `extern "C"` symbol of the kernel in its `.cu` file.
    pub fn symbol(self) -> &'static str {
        match self {
            Kernel::Standardize => "quorum_standardize",
            Kernel::BroadcastAdd => "quorum_broadcast_add",
            Kernel::Pool => "quorum_pool",
            Kernel::LayerNorm => "quorum_layernorm",
            Kernel::Linear => "quorum_linear",
            Kernel::Conv1d => "quorum_conv1d",
            Kernel::PatchEmbed => "quorum_patch_embed",
            Kernel::Attention => "quorum_attention",
            Kernel::Lstm => "quorum_lstm",
            Kernel::Heads => "quorum_heads",
            Kernel::MmaCheck => "quorum_mma_check",
            Kernel::LinearBf16 => "quorum_linear_bf16",
            Kernel::Conv1dBf16 => "quorum_conv1d_bf16",
            Kernel::PatchEmbedBf16 => "quorum_patch_embed_bf16",
            Kernel::LinearF16 => "quorum_linear_f16",
            Kernel::Conv1dF16 => "quorum_conv1d_f16",
            Kernel::PatchEmbedF16 => "quorum_patch_embed_f16",
            Kernel::MmaCheckF16 => "quorum_mma_check_f16",
            Kernel::HalfRoundTrip => "quorum_half_round_trip",
            Kernel::SwapLastAxes => "quorum_swap_last_axes",
            Kernel::PackHalf => "quorum_pack_half",
            // Training, elementwise, optimizer and heads:
            // (entries below this line)
            Kernel::TrainMap => "quorum_train_map",
            Kernel::DropoutMask => "quorum_dropout_mask",
            Kernel::AdamW => "quorum_adamw",
            Kernel::SumSquares => "quorum_sum_squares",
            Kernel::BiasPartials => "quorum_bias_partials",
            Kernel::BiasFinish => "quorum_bias_finish",
            Kernel::BroadcastAddBackward => "quorum_broadcast_add_backward",
            Kernel::PoolBackward => "quorum_pool_backward",
            Kernel::HeadsLoss => "quorum_heads_loss",
            Kernel::HeadsParamGrads => "quorum_heads_param_grads",
            // Training, the GEMM family and LayerNorm:
            // (entries below this line)
            Kernel::LinearDw => "quorum_linear_dw",
            Kernel::LinearDx => "quorum_linear_dx",
            Kernel::Conv1dDw => "quorum_conv1d_dw",
            Kernel::Conv1dDx => "quorum_conv1d_dx",
            Kernel::PatchEmbedDw => "quorum_patch_embed_dw",
            Kernel::GemmBiasGrad => "quorum_gemm_bias_grad",
            Kernel::LayerNormDx => "quorum_layernorm_dx",
            Kernel::LayerNormDparams => "quorum_layernorm_dparams",
            // Training, attention and the LSTM:
            // (entries below this line)
            Kernel::AttentionTrain => "quorum_attention_train",
            Kernel::AttentionDq => "quorum_attention_dq",
            Kernel::AttentionDkv => "quorum_attention_dkv",
            Kernel::LstmTrain => "quorum_lstm_train",
            Kernel::LstmBackward => "quorum_lstm_backward",
            Kernel::LstmDw => "quorum_lstm_dw",
        }
    }

    /// The `.cu` file (under `kernels/`) that defines it.
    pub fn source_file(self) -> &'static str {
        match self {
            Kernel::Standardize | Kernel::BroadcastAdd | Kernel::Pool => "elementwise.cu",
            Kernel::LayerNorm => "layernorm.cu",
            Kernel::Linear
            | Kernel::Conv1d
            | Kernel::PatchEmbed
            | Kernel::LinearBf16
            | Kernel::Conv1dBf16
            | Kernel::PatchEmbedBf16
            | Kernel::LinearF16
            | Kernel::Conv1dF16
            | Kernel::PatchEmbedF16 => "gemm.cu",
            Kernel::Attention => "attention.cu",
            Kernel::Lstm => "lstm.cu",
            Kernel::Heads => "heads.cu",
            Kernel::MmaCheck | Kernel::MmaCheckF16 | Kernel::HalfRoundTrip => "mma_check.cu",
            Kernel::SwapLastAxes | Kernel::PackHalf => "train_layout.cu",
            // Training, elementwise, optimizer and heads:
            // (entries below this line)
            Kernel::TrainMap
            | Kernel::DropoutMask
            | Kernel::AdamW
            | Kernel::SumSquares
            | Kernel::BiasPartials
            | Kernel::BiasFinish
            | Kernel::BroadcastAddBackward
            | Kernel::PoolBackward => "train_elementwise.cu",
            Kernel::HeadsLoss | Kernel::HeadsParamGrads => "heads_train.cu",
            // Training, the GEMM family and LayerNorm:
            // (entries below this line)
            Kernel::LinearDw
            | Kernel::LinearDx
            | Kernel::Conv1dDw
            | Kernel::Conv1dDx
            | Kernel::PatchEmbedDw
            | Kernel::GemmBiasGrad => "train_gemm.cu",
            Kernel::LayerNormDx | Kernel::LayerNormDparams => "layernorm_backward.cu",
            // Training, attention and the LSTM:
            // (entries below this line)
            Kernel::AttentionTrain | Kernel::AttentionDq | Kernel::AttentionDkv => "attention_train.cu",
            Kernel::LstmTrain | Kernel::LstmBackward | Kernel::LstmDw => "lstm_train.cu",
        }
    }
}

/// Grid and block sizes (x, y, z) and dynamic shared memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl LaunchConfig {
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| g as u64).product()
    }
    pub fn threads_per_block(&self) -> u32 {
        self.block.iter().product()
    }
}

pub trait Device: Send + Sync {
    /// A buffer of f32 in device memory.
    type Mem: Send + Sync;
    /// A recorded sequence of launches (a CUDA graph), replayed as one.
    type Graph: Send + Sync;

    fn name(&self) -> &'static str;
    fn alloc(&self, len: usize) -> Result<Self::Mem>;
    fn upload(&self, data: &[f32]) -> Result<Self::Mem>;
    /// Overwrites the start of `dst` with `src` (the caller checked the length).
    fn write(&self, dst: &mut Self::Mem, src: &[f32]) -> Result<()>;
    /// Copies the start of `src` into all of `dst` (the caller checked the length).
    fn read(&self, src: &Self::Mem, dst: &mut [f32]) -> Result<()>;
    /// Number of f32 the buffer holds.
    fn len(&self, m: &Self::Mem) -> usize;
    /// The device address of a buffer the kernel only reads.
    fn ptr(&self, m: &Self::Mem) -> u64;
    /// The device address of a buffer the kernel writes.
    fn ptr_mut(&self, m: &mut Self::Mem) -> u64;

    /// Runs `P::KERNEL` with `params` and waits for it (the emulator) or
    /// queues it on the device's stream (CUDA).
    ///
    /// # Safety
    /// Every pointer in `params` must be a buffer of this device, large enough
    /// for every access the kernel makes at this configuration, and written
    /// buffers must not be aliased by anything Rust reads meanwhile.
    unsafe fn launch<P: KernelParams>(&self, cfg: LaunchConfig, params: &P) -> Result<()>;

    /// From now until `end_capture`, this thread's launches are recorded,
    /// not run (CUDA stream capture). CUDA records every launch queued on a
    /// capturing stream, whichever thread queues it, so every other thread's
    /// use of the device waits until the capture ends ([`StreamGate`]).
    /// Nothing but launches may happen while capturing: no allocation, no
    /// copy (on the device, a copy or a wait invalidates the capture).
    fn begin_capture(&self) -> Result<()>;
    /// Stops recording and returns what was recorded, ready to replay. Ends
    /// the capture (and lets the other threads on) even when it fails.
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Runs a recorded sequence again, reading the buffers' current contents:
    /// every pointer it was recorded with must still be live and unmoved.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}

/// Makes one thread's stream capture exclusive on a device with one stream.
///
/// CUDA captures into a graph every operation queued on the capturing
/// stream, from any thread. The engine shares one device between models that
/// run on different threads, so without this gate a second model's launches
/// (or its copies, or a wait, which invalidates the capture) would land in
/// the first model's graph. Every stream operation goes through
/// [`StreamGate::enter`]: while another thread captures, or waits to, it
/// waits; the capturing thread itself passes. A capture starts once the
/// operations already in flight on other threads are done (and no new one
/// starts meanwhile, so a busy stream cannot starve a capture).
#[derive(Debug, Default)]
pub struct StreamGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// The thread capturing now, if any.
    capturer: Option<ThreadId>,
    /// Operations of other threads under way (queued, not yet returned).
    in_flight: usize,
    /// Threads waiting in `begin` for the stream.
    waiting_to_capture: usize,
}

/// Held for one stream operation; lets a waiting capture start when dropped.
pub struct GatePass<'a> {
    gate: Option<&'a StreamGate>,
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.gate {
            let mut st = gate.lock();
            st.in_flight -= 1;
            if st.in_flight == 0 {
                gate.changed.notify_all();
            }
        }
    }
}

impl StreamGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is two plain fields, valid after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other thread is capturing, then holds the stream for
    /// one operation. The capturing thread passes at once.
    pub fn enter(&self) -> GatePass<'_> {
        let me = std::thread::current().id();
        let mut st = self.lock();
        loop {
            match st.capturer {
                Some(t) if t == me => return GatePass { gate: None },
                None if st.waiting_to_capture == 0 => {
                    st.in_flight += 1;
                    return GatePass { gate: Some(self) };
                }
                _ => st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Whether the calling thread is the one capturing.
    pub fn capturing_here(&self) -> bool {
        self.lock().capturer == Some(std::thread::current().id())
    }

    /// Makes the calling thread the capturer, once no other thread captures
    /// and no other thread's operation is under way. `run` starts the
    /// capture on the device; if it fails, the gate opens again.
    pub fn begin(&self, run: impl FnOnce() -> Result<()>) -> Result<()> {
        let me = std::thread::current().id();
        let mut st = self.lock();
        if st.capturer == Some(me) {
            return Err(crate::error::Error::Backend {
                backend: "gpu".into(),
                reason: "begin_capture: this thread is already capturing".into(),
            });
        }
        st.waiting_to_capture += 1;
        while st.capturer.is_some() || st.in_flight > 0 {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.waiting_to_capture -= 1;
        st.capturer = Some(me);
        drop(st);
        let started = run();
        if started.is_err() {
            self.release();
        }
        started
    }

    /// Ends the calling thread's capture (after `run`, which ends it on the
    /// device, whatever `run` returns) and lets the waiting threads on.
    pub fn end<T>(&self, run: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.capturing_here() {
            return Err(crate::error::Error::Backend {
                backend: "gpu".into(),
                reason: "end_capture: this thread is not capturing".into(),
            });
        }
        let out = run();
        self.release();
        out
    }

    fn release(&self) {
        self.lock().capturer = None;
        self.changed.notify_all();
    }
}
