//! The process's resident memory, read from the kernel (Linux `/proc`); zero elsewhere.
//!
//! `reset_peak` asks the kernel to restart its high-water mark (`VmHWM`) so a run's peak is
//! its own and not the process's lifetime; where that is refused, peaks are the lifetime's.

/// Current resident set size in bytes.
pub fn current_bytes() -> u64 {
    read_status_kb("VmRSS:").map_or(0, |kb| kb * 1024)
}

/// Peak resident set size in bytes since the process started or the last `reset_peak`.
pub fn peak_bytes() -> u64 {
    read_status_kb("VmHWM:").map_or(0, |kb| kb * 1024)
}

/// Restarts the kernel's peak-RSS mark (writes 5 to /proc/self/clear_refs).
pub fn reset_peak() {
    #[cfg(target_os = "linux")]
    {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

fn read_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}
