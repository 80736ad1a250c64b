//! Compiling every embedded kernel with NVRTC, and reading `ptxas -v`'s
//! resource usage: the checks of docs/kernels.md, "The checks", shared by
//! tests/kernels_nvrtc.rs and examples/kernel_report.rs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::nvrtc::{Compiled, Nvrtc};
use super::sources;
use crate::error::{Error, Result};

fn err(reason: String) -> Error {
    Error::Backend { backend: "compile-check".into(), reason }
}

/// NVRTC options for an architecture: `sm_90` gives a cubin (and PTX),
/// `compute_90` PTX only.
pub fn options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()]
}

/// Every `.cu` file compiled for `arch`: (file name, output).
pub fn compile_all(nv: &Nvrtc, arch: &str) -> Result<Vec<(&'static str, Compiled)>> {
    let opts = options(arch);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    sources::SOURCES.iter().map(|(name, src)| Ok((*name, nv.compile(name, src, sources::headers(), &opts)?))).collect()
}

/// One kernel's resources as ptxas reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub kernel: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_bytes: u32,
    pub static_smem_bytes: u32,
}

/// Runs `ptxas -v` on PTX for `arch` (e.g. `sm_90`) and parses its report.
pub fn ptxas_stats(ptxas: &Path, ptx: &[u8], arch: &str) -> Result<Vec<KernelStats>> {
    let dir = std::env::temp_dir().join(format!("quorum-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let out = dir.join("k.cubin");
    let mut child = Command::new(ptxas)
        .args(["-v", &format!("-arch={arch}"), "-o"])
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{}: {e}", ptxas.display())))?;
    child.stdin.take().expect("piped").write_all(ptx).map_err(|e| err(format!("ptxas stdin: {e}")))?;
    let o = child.wait_with_output().map_err(|e| err(format!("ptxas: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(err(format!("ptxas failed:\n{text}")));
    }
    if text.contains("warning") {
        return Err(err(format!("ptxas warned:\n{text}")));
    }
    Ok(parse_ptxas(&text))
}

/// Parses ptxas -v's report (one "Compiling entry function" section per kernel).
pub fn parse_ptxas(text: &str) -> Vec<KernelStats> {
    let num_before = |line: &str, unit: &str| -> u32 {
        line.find(unit).and_then(|i| line[..i].split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let mut out: Vec<KernelStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelStats { kernel: name, ..Default::default() });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes stack frame") {
                k.stack_bytes = num_before(line, "bytes stack frame");
                k.spill_stores = num_before(line, "bytes spill stores");
                k.spill_loads = num_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = num_before(line, "registers");
                k.static_smem_bytes = num_before(line, "bytes smem");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ptxas_report() {
        let text = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'quorum_linear' for 'sm_90'\n\
            ptxas info    : Function properties for quorum_linear\n\
            \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
            ptxas info    : Used 64 registers, 8448 bytes smem, 400 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'quorum_pool' for 'sm_90'\n\
            ptxas info    : Function properties for quorum_pool\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 12 registers, 384 bytes cmem[0]\n";
        let s = parse_ptxas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            KernelStats {
                kernel: "quorum_linear".into(),
                registers: 64,
                spill_stores: 4,
                spill_loads: 12,
                stack_bytes: 8,
                static_smem_bytes: 8448
            }
        );
        assert_eq!((s[1].registers, s[1].static_smem_bytes, s[1].spill_loads), (12, 0, 0));
    }
}
