//! Where the test fixtures are (`tests/fixtures/` of the source tree).
//!
//! A test binary may run far from the tree it was built in: tools/gpu_check.sh
//! carries the GPU test binaries to another machine with the fixtures beside
//! them. In order: `QUORUM_FIXTURES` (a folder holding `models/`, `grads/`,
//! `talib/`); the source tree the binary was built from, if it is still
//! there; a `fixtures/` folder beside the executable or one of its parents.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixtures folder of this run (see the module comment).
pub fn fixtures_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    resolve(std::env::var_os("QUORUM_FIXTURES").map(PathBuf::from), Path::new(env!("CARGO_MANIFEST_DIR")), &exe)
}

/// `fixtures_dir` on given inputs: the variable's value, the source tree, the executable.
pub fn resolve(var: Option<PathBuf>, source_tree: &Path, exe: &Path) -> PathBuf {
    if let Some(dir) = var.filter(|d| !d.as_os_str().is_empty()) {
        return dir;
    }
    let built_from = source_tree.join("tests/fixtures");
    if built_from.is_dir() {
        return built_from;
    }
    exe.ancestors().skip(1).map(|d| d.join("fixtures")).find(|d| d.is_dir()).unwrap_or(built_from)
}

/// The folder of the full Binance recordings (`$QUORUM_BINANCE_DATA`, else
/// `../shared/data/binance` beside the source tree), if this machine has them.
/// Tests that read it say so and pass when it is absent.
pub fn shared_binance_data() -> Option<PathBuf> {
    let dir = std::env::var_os("QUORUM_BINANCE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/binance"));
    dir.join("spot_btcusdt_20240808.gz").is_file().then_some(dir)
}
