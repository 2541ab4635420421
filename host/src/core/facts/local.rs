//! The machine Nix runs on, measured from its own files when a policy of contract 0.3 is
//! asked: some tens of microseconds, so measured anew for each request (age 0).

use std::path::Path;

use nwh_decision::facts::{Amount, Facts};

use super::read;

/// What can be read here now: load and cores, pressure where the kernel has it, and the free
/// space of the file system that holds `store` (where outputs land).
pub fn measure(store: &Path) -> Facts {
    let file = |path: &str| std::fs::read_to_string(path).ok();
    let cores = file("/sys/devices/system/cpu/online")
        .and_then(|l| read::online_cpus(&l))
        .or_else(|| std::thread::available_parallelism().ok().and_then(|n| u32::try_from(n.get()).ok()));
    let load = match (file("/proc/loadavg"), cores) {
        (Some(text), Some(cores)) => read::load(&text, cores, 0),
        _ => None,
    };
    let pressure =
        match (file("/proc/pressure/cpu"), file("/proc/pressure/memory"), file("/proc/pressure/io")) {
            (Some(cpu), Some(memory), Some(io)) => read::pressure(&cpu, &memory, &io, 0),
            _ => None,
        };
    let free_store_bytes = rustix::fs::statvfs(store)
        .ok()
        .map(|s| Amount { bytes: s.f_bavail.saturating_mul(s.f_frsize), age_ms: 0 });
    Facts { load, pressure, free_store_bytes, ..Facts::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has a load, cores and a file system; pressure only where the kernel was
    /// built with it, which this test does not assume.
    #[test]
    fn this_machine_is_measured() {
        let facts = measure(Path::new("/"));
        let load = facts.load.expect("/proc/loadavg and the online CPUs");
        assert!(load.cores >= 1 && load.avg1 >= 0.0 && load.age_ms == 0, "{load:?}");
        assert!(facts.free_store_bytes.is_some_and(|a| a.bytes > 0), "{facts:?}");
        if Path::new("/proc/pressure/cpu").exists() {
            assert!(facts.pressure.is_some(), "{facts:?}");
        }
        assert_eq!(facts.missing_input_bytes, None, "Nix built the inputs here");
    }
}
