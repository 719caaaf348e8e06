//! Facts about this machine and process for the log header and the statistics block (host name,
//! memory, load, CPU time), read from `/proc` on Linux; elsewhere they read as zero or "unknown".

use std::fs;

use super::report::ProcessFigures;

/// The machine's host name.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Resident memory of this process in MiB.
pub fn memory_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Number of CPU cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// "0.13 0.19 0.17 1/1178 on 8 cores", as imapsync's "Load end is".
pub fn load() -> String {
    let avg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = avg.split_whitespace().take(4).collect();
    let shown = if fields.is_empty() {
        "unknown".to_string()
    } else {
        fields.join(" ")
    };
    format!("{shown} on {} cores", cores())
}

/// User plus system CPU seconds of this process (clock ticks assumed to be 100 Hz).
pub fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The figures of the statistics block, given the memory measured at start.
pub fn process_figures(memory_start_mib: f64) -> ProcessFigures {
    ProcessFigures {
        memory_start_mib,
        memory_end_mib: memory_mib(),
        load: load(),
        cpu_secs: cpu_secs(),
        cores: cores(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_plausible() {
        assert!(!hostname().is_empty());
        assert!(load().ends_with(" cores"));
        assert!(memory_mib() >= 0.0);
        assert!(cpu_secs() >= 0.0);
        assert!(cores() >= 1);
    }
}
