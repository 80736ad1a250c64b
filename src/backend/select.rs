//! The one place a backend is chosen: `--backend` as the user names it
//! ([`Device`]), opened once ([`OpenDevice`]), and the one way to run code on
//! it ([`on_device!`](crate::on_device)). The CLI, the server, training jobs
//! and the engine all go through here, so `auto` means the same everywhere
//! and asking for CUDA where there is none fails the same way everywhere.

use crate::backend::gpu::{Cuda, Emu, Gpu};
use crate::backend::Precision;
use crate::{Cpu, Error, Result};

/// The backend a command runs on, as `--backend` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// CUDA when a device answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    /// The GPU kernels run by the CPU emulator (slow; for checking the GPU path).
    Emu,
}

/// A [`Device`] opened: `auto` resolved, a CUDA context created.
pub enum OpenDevice {
    Cpu,
    Emu,
    Cuda(Cuda),
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Emu => "emu",
        }
    }

    /// Opens the device. `auto` is CUDA when device 0 answers, else the CPU;
    /// `cuda` on a machine without one is an error that says why, never a
    /// silent fallback. A CUDA device's description (name, driver, NVRTC
    /// library) goes to stderr, so every run says what it ran on.
    pub fn open(self) -> Result<OpenDevice> {
        let opened = match self {
            Device::Cpu => OpenDevice::Cpu,
            Device::Emu => OpenDevice::Emu,
            Device::Cuda => OpenDevice::Cuda(Cuda::new(0).map_err(|e| match e {
                Error::Backend { backend, reason } => Error::Backend {
                    backend,
                    reason: format!("{reason} (asked for by --backend cuda; --backend auto falls back to the CPU)"),
                },
                other => other,
            })?),
            Device::Auto => Cuda::new(0).map_or(OpenDevice::Cpu, OpenDevice::Cuda),
        };
        if let OpenDevice::Cuda(dev) = &opened {
            tracing::info!("{}", dev.describe());
        }
        Ok(opened)
    }
}

impl OpenDevice {
    /// Which device this is (never `Auto`): what a later job opens again
    /// for itself (a training job gets its own CUDA context and stream,
    /// beside the serving engine's).
    pub fn device(&self) -> Device {
        match self {
            OpenDevice::Cpu => Device::Cpu,
            OpenDevice::Emu => Device::Emu,
            OpenDevice::Cuda(_) => Device::Cuda,
        }
    }

    /// The precision a training job runs at here: `use_amp` asks for bf16
    /// products from f32 master weights, which the GPU backends have and
    /// the CPU has where it has AVX512_BF16 (its forward, input-gradient
    /// and weight-gradient products; docs/training.md). A CPU without it
    /// trains in f32, and its trainer says that it ignored `use_amp`.
    pub fn training_precision(&self, use_amp: bool) -> Precision {
        match self {
            OpenDevice::Cpu if Cpu::with_precision(Precision::Bf16).is_err() => Precision::F32,
            OpenDevice::Cpu | OpenDevice::Emu | OpenDevice::Cuda(_) => Precision::for_training(use_amp),
        }
    }
}

/// The CPU backend at `precision` (f16 is refused: no CPU path has it).
pub fn cpu(precision: Precision) -> Result<Cpu> {
    Cpu::with_precision(precision)
}

/// The emulated GPU backend at `precision`.
pub fn emu(precision: Precision) -> Result<Gpu<Emu>> {
    Gpu::with_precision(Emu::new(), precision)
}

/// Runs `$body` with `$be` bound to the backend (owned) of an [`OpenDevice`]
/// at a [`Precision`]; evaluates to the body's value; `?` on a backend's
/// refusal of a precision (f16 on the CPU, int8 on a CPU without VNNI). Each arm is its own
/// monomorphized copy (the models are generic over `Backend`), which is why
/// this is a macro and not a function taking a closure.
///
/// ```no_run
/// # fn main() -> quorum::Result<()> {
/// use quorum::backend::{select::Device, Backend, Precision};
/// let name = quorum::on_device!(Device::Auto.open()?, Precision::F32, be => be.name());
/// println!("running on {name}");
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! on_device {
    ($open:expr, $precision:expr, $be:ident => $body:expr) => {{
        let precision: $crate::backend::Precision = $precision;
        match $open {
            $crate::backend::select::OpenDevice::Cpu => {
                let $be = $crate::backend::select::cpu(precision)?;
                $body
            }
            $crate::backend::select::OpenDevice::Emu => {
                let $be = $crate::backend::select::emu(precision)?;
                $body
            }
            $crate::backend::select::OpenDevice::Cuda(dev) => {
                let $be = $crate::backend::gpu::Gpu::with_precision(dev, precision)?;
                $body
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    #[test]
    fn each_device_opens_the_backend_it_names() {
        let name = |d: Device| -> Result<&'static str> { Ok(on_device!(d.open()?, Precision::F32, be => be.name())) };
        assert_eq!(name(Device::Cpu).unwrap(), Cpu::new().name());
        assert_eq!(name(Device::Emu).unwrap(), emu(Precision::F32).unwrap().name());
        assert_ne!(Cpu::new().name(), emu(Precision::F32).unwrap().name());
    }

    #[test]
    fn auto_is_a_concrete_device_once_opened() {
        let open = Device::Auto.open().unwrap();
        assert_ne!(open.device(), Device::Auto);
        // Without a CUDA driver (CI), auto is the CPU; asking for CUDA there is an error naming the flag.
        if Cuda::new(0).is_err() {
            assert_eq!(open.device(), Device::Cpu);
            let err = Device::Cuda.open().err().expect("no CUDA device here").to_string();
            assert!(err.contains("--backend cuda") && err.contains("--backend auto"), "{err}");
        }
    }

    #[test]
    fn the_cpu_refuses_f16_and_trains_with_bf16_products_only_where_it_has_them() {
        let err = (|| -> Result<()> { on_device!(OpenDevice::Cpu, Precision::F16, _be => Ok(())) })();
        assert!(err.is_err());
        // use_amp: bf16 where the CPU has AVX512_BF16 (a bf16 Cpu opens
        // there and nowhere else), f32 elsewhere; without use_amp, f32.
        let amp = if Cpu::with_precision(Precision::Bf16).is_ok() { Precision::Bf16 } else { Precision::F32 };
        assert_eq!(OpenDevice::Cpu.training_precision(true), amp);
        assert_eq!(OpenDevice::Cpu.training_precision(false), Precision::F32);
        assert_eq!(OpenDevice::Emu.training_precision(true), Precision::Bf16);
        assert_eq!(OpenDevice::Emu.training_precision(false), Precision::F32);
    }
}
