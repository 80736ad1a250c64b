//! Every kernel of kernels/*.cu compiled by NVIDIA's NVRTC for sm_80 and
//! sm_90 (cubin, and PTX as the fallback path), with no error and no warning;
//! `ptxas -v` on the sm_90 PTX must report no register spills.
//!
//! NVRTC and ptxas come from NVIDIA's PyPI wheels: run
//! `tools/install_cuda_wheels.sh` first. Without them this test FAILS (it
//! never passes silently).

use quorum::backend::gpu::compile_check::{compile_all, ptxas_stats};
use quorum::backend::gpu::nvrtc::{wheel_ptxas, Nvrtc};
use quorum::backend::gpu::Kernel;

fn nvrtc() -> Nvrtc {
    Nvrtc::load().unwrap_or_else(|e| panic!("{e}\n=> run tools/install_cuda_wheels.sh to install NVRTC and ptxas"))
}

#[test]
fn every_kernel_compiles_to_cubin_for_sm80_and_sm90_without_warnings() {
    let nv = nvrtc();
    eprintln!("NVRTC {:?} from {}", nv.version(), nv.path().display());
    for arch in ["sm_80", "sm_90"] {
        let out = compile_all(&nv, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for (file, c) in &out {
            assert!(c.log.is_empty(), "{arch} {file}: NVRTC log not empty:\n{}", c.log);
            let cubin = c.cubin.as_ref().expect("sm_ arch gives a cubin");
            assert!(cubin.starts_with(b"\x7fELF"), "{arch} {file}: cubin is not an ELF image");
        }
        for k in Kernel::ALL {
            let (_, c) = out.iter().find(|(f, _)| *f == k.source_file()).expect("source compiled");
            let ptx = String::from_utf8_lossy(&c.ptx);
            assert!(ptx.contains(&format!(".entry {}(", k.symbol())), "{arch}: {} missing from the PTX", k.symbol());
        }
    }
}

#[test]
fn ptx_for_compute80_and_no_spills_on_sm90() {
    let nv = nvrtc();
    let ptxas = wheel_ptxas().unwrap_or_else(|| panic!("ptxas not found => run tools/install_cuda_wheels.sh"));
    for arch in ["compute_80", "compute_90"] {
        let out = compile_all(&nv, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for (file, c) in &out {
            assert!(c.log.is_empty(), "{arch} {file}: NVRTC log not empty:\n{}", c.log);
            assert!(c.cubin.is_none() && !c.ptx.is_empty(), "{arch} {file}: PTX only");
        }
        if arch != "compute_90" {
            continue;
        }
        let mut seen = Vec::new();
        for (file, c) in &out {
            for s in ptxas_stats(&ptxas, &c.ptx, "sm_90").unwrap_or_else(|e| panic!("{file}: {e}")) {
                eprintln!(
                    "{file:16} {:24} {:3} regs {:6} B smem {} B stack",
                    s.kernel, s.registers, s.static_smem_bytes, s.stack_bytes
                );
                assert_eq!((s.spill_stores, s.spill_loads), (0, 0), "{}: spills on sm_90", s.kernel);
                assert!(s.registers > 0, "{}: ptxas reported no registers", s.kernel);
                seen.push(s.kernel);
            }
        }
        for k in Kernel::ALL {
            assert!(seen.iter().any(|s| s == k.symbol()), "ptxas did not report {}", k.symbol());
        }
    }
}
