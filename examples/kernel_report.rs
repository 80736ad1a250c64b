//! Prints registers, spills and shared memory per kernel, from `ptxas -v` on
//! the NVRTC-compiled PTX, for an architecture (default sm_90):
//!
//!     tools/install_cuda_wheels.sh && cargo run --release --example kernel_report [sm_80|sm_90]

use quorum::backend::gpu::compile_check::{compile_all, ptxas_stats};
use quorum::backend::gpu::nvrtc::{wheel_ptxas, Nvrtc};
use quorum::backend::ops::{attention, lstm};

fn main() -> anyhow::Result<()> {
    let arch = std::env::args().nth(1).unwrap_or_else(|| "sm_90".into());
    let compute = arch.replace("sm_", "compute_");
    let nv = Nvrtc::load()?;
    let ptxas = wheel_ptxas().ok_or_else(|| anyhow::anyhow!("ptxas not found: run tools/install_cuda_wheels.sh"))?;
    let (major, minor) = nv.version();
    println!("NVRTC {major}.{minor}, ptxas {}, target {arch}", ptxas.display());
    println!(
        "{:<16} {:<22} {:>5} {:>12} {:>12} {:>11} {:>12}",
        "file", "kernel", "regs", "spill st (B)", "spill ld (B)", "stack (B)", "smem (B)"
    );
    for (file, c) in compile_all(&nv, &compute)? {
        for s in ptxas_stats(&ptxas, &c.ptx, &arch)? {
            println!(
                "{file:<16} {:<22} {:>5} {:>12} {:>12} {:>11} {:>12}",
                s.kernel, s.registers, s.spill_stores, s.spill_loads, s.stack_bytes, s.static_smem_bytes
            );
        }
    }
    println!(
        "dynamic shared memory: attention {} B at 100 tokens x hd 32 ({} B at 49); lstm {} B at hidden 256",
        attention::forward_shared_bytes(100, 32),
        attention::forward_shared_bytes(49, 32),
        lstm::forward_cfg(1, 256)?.shared_bytes
    );
    Ok(())
}
