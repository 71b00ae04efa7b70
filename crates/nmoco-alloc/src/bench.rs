//! Small helpers the benchmarks share: size overrides from the environment and process
//! resource figures read from `/proc` (Linux; `NaN` elsewhere or when unreadable).

/// The value of environment variable `name` parsed as `usize`, or `default` when it is unset
/// or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size (`VmHWM` of `/proc/self/status`) in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system, all threads) of this process in seconds, from `/proc/self/stat`
/// (assumes the usual 100 clock ticks per second). On a shared machine this is steadier than
/// wall-clock time.
pub fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut = f.get(11)?.parse::<f64>().ok()?;
            let st = f.get(12)?.parse::<f64>().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_figures_are_read() {
        let rss = peak_rss_mb();
        assert!(rss.is_finite() && rss > 0.0, "{rss}");
        let cpu = cpu_s();
        assert!(cpu.is_finite() && cpu >= 0.0, "{cpu}");
    }
}
