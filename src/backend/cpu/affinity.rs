//! Which CPUs a thread may run on (Linux's `sched_{get,set}affinity`), for
//! `serve --cpus` and `--helper-cpu`: a colocated box gives quorum CPUs
//! isolated from everything else, and the batch-1 helper one of them alone.

use std::io;

/// The CPUs the calling thread may run on, in increasing order.
#[cfg(target_os = "linux")]
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes only the set
    // given, of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// Confines the calling thread, and every thread it starts from now on, to
/// `cpus` (each below `CPU_SETSIZE`, 1024).
#[cfg(target_os = "linux")]
pub fn confine(cpus: &[usize]) -> io::Result<()> {
    if let Some(&c) = cpus.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("CPU {c} is past the last one Linux numbers")));
    }
    // SAFETY: as in `allowed`; every CPU is inside the set (checked above).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread is running on now.
#[cfg(target_os = "linux")]
pub fn current() -> Option<usize> {
    // SAFETY: no arguments; -1 on failure.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(not(target_os = "linux"))]
pub fn allowed() -> io::Result<Vec<usize>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "CPU affinity is supported on Linux only"))
}

#[cfg(not(target_os = "linux"))]
pub fn confine(_cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "CPU affinity is supported on Linux only"))
}

#[cfg(not(target_os = "linux"))]
pub fn current() -> Option<usize> {
    None
}
