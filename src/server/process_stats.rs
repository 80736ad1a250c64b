//! This process's own figures, read from `/proc` at scrape time: the
//! standard `process_*` series every Prometheus client library exports (CPU
//! time, memory, file descriptors, threads, start time), so dashboards built
//! for any exporter work on quorum too. Linux only; elsewhere there are none.

/// One reading; a figure the system would not give is `None` and not exported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let field = |i: usize| fields.as_ref().and_then(|f| f.get(&i)).and_then(|v| v.parse::<u64>().ok());
        let per_tick = |ticks: u64| (ticks_per_second > 0.0).then(|| ticks as f64 / ticks_per_second);
        // Field numbers as in proc(5), counted from 3 (`state`) since the
        // command name, which may hold spaces, is cut off before them.
        let cpu_seconds = field(14).zip(field(15)).and_then(|(user, system)| per_tick(user + system));
        let start_time_seconds =
            field(22).and_then(per_tick).zip(boot_time_seconds()).map(|(since_boot, boot)| boot + since_boot);
        ProcessStats {
            cpu_seconds,
            resident_memory_bytes: field(24).filter(|_| page_bytes > 0).map(|pages| pages * page_bytes as u64),
            virtual_memory_bytes: field(23),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: max_open_files(),
            threads: field(20),
            start_time_seconds,
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> ProcessStats {
        ProcessStats::default()
    }
}

/// `/proc/self/stat`'s fields keyed by their proc(5) number (1-based), after
/// the command name in parentheses, which may itself hold spaces or `)`.
fn stat_fields(stat: &str) -> Option<std::collections::HashMap<usize, String>> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().enumerate().map(|(i, v)| (i + 3, v.to_string())).collect())
}

#[cfg(target_os = "linux")]
fn boot_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse::<f64>().ok()
}

#[cfg(target_os = "linux")]
fn max_open_files() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let f = stat_fields("42 (a b) c)) S 1 42 42 0 -1").unwrap();
        assert_eq!(f[&3], "S");
        assert_eq!(f[&4], "1");
        assert_eq!(f[&8], "-1");
        assert!(stat_fields("no parenthesis").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_threads_and_an_open_file() {
        let s = ProcessStats::read();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20, "{s:?}");
        assert!(s.virtual_memory_bytes.unwrap() >= s.resident_memory_bytes.unwrap(), "{s:?}");
        assert!(s.threads.unwrap() >= 1, "{s:?}");
        assert!(s.open_fds.unwrap() >= 3, "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 86_400.0, "started {started}, now {now}");
    }
}
