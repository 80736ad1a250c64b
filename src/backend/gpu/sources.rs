//! The kernel sources (and PTX, when build.rs found nvcc) embedded in the
//! crate, for compiling with NVRTC at run time and for the compile checks.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

pub use generated::{COMMON, HEADERS, PTX, SOURCES};

/// The source of one `.cu` file, by file name.
pub fn source(file: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == file).map(|(_, s)| *s)
}

/// Headers the kernels include, by the name they include them as. NVRTC is
/// handed these instead of an include path, so it needs no files on disk.
/// The emulator header is only included under QUORUM_EMU, never by NVRTC.
pub fn headers() -> &'static [(&'static str, &'static str)] {
    HEADERS
}
