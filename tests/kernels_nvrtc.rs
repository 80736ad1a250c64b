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

/// CUDA 13's NVRTC as its wheel lays it out (`nvidia/cu13/lib`), which
/// tools/install_cuda_wheels.sh puts in a folder of its own.
fn cuda13_wheels() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("QUORUM_CUDA13_WHEELS") {
        return d.into();
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/".into());
    home.join(".cache/quorum/cuda13-wheels")
}

/// NVRTC 13 opens `libnvrtc-builtins.so.13.0` by name, which the loader finds
/// only on its path; a CUDA 13 machine's library is found by full path, so
/// the builtins beside it must be loaded first (nvrtc.rs). Not on the loader
/// path here, this compile fails ("failed to open libnvrtc-builtins") unless
/// that is done.
#[test]
fn cuda_13_nvrtc_is_found_in_its_wheel_layout_and_compiles_every_kernel() {
    use quorum::backend::gpu::nvrtc::SearchRoots;
    let root = cuda13_wheels();
    let roots = SearchRoots { wheel_roots: vec![root.clone()], ..Default::default() };
    let first = roots.candidates().into_iter().next().expect("a candidate");
    assert_eq!(
        first,
        root.join("nvidia/cu13/lib/libnvrtc.so.13"),
        "NVRTC 13 not installed => run tools/install_cuda_wheels.sh"
    );
    let nv = Nvrtc::load_from(&first).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nv.version().0, 13);
    let out = compile_all(&nv, "sm_90").unwrap_or_else(|e| panic!("NVRTC 13, sm_90: {e}"));
    for (file, c) in &out {
        assert!(c.log.is_empty(), "NVRTC 13 {file}: log not empty:\n{}", c.log);
        assert!(c.cubin.as_ref().is_some_and(|b| b.starts_with(b"\x7fELF")), "NVRTC 13 {file}: no cubin");
    }
}

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
