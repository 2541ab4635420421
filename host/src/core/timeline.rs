//! When each phase of a process happened, to find where a build's time goes: with
//! `NWH_TIMELINE=FILE` in its environment, a process appends one JSON line to FILE per phase it
//! reaches, `{"pid", "drv", "phase", "us", "peak_rss_kib"}` (unix microseconds; the process's
//! peak resident memory so far). A line at once, not one at the end, because Nix kills a builder
//! it is done with. Measurement only: without the variable nothing is written.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that names the file.
pub const VARIABLE: &str = "NWH_TIMELINE";

/// The file, and the derivation the marks are about once it is known.
static TIMELINE: Mutex<Option<(std::ffi::OsString, Option<String>)>> = Mutex::new(None);

/// Starts the timeline of this process, when the variable asks for one.
pub fn start() {
    if let Some(file) = std::env::var_os(VARIABLE) {
        *lock() = Some((file, None));
        mark("start");
    }
}

/// The derivation the marks are about.
pub fn derivation(drv_path: &str) {
    if let Some((_, drv)) = lock().as_mut() {
        *drv = Some(drv_path.to_string());
    }
}

/// This process reached `phase` now. A file that cannot be written loses the measurement only.
pub fn mark(phase: &'static str) {
    let guard = lock();
    let Some((file, drv)) = guard.as_ref() else { return };
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let line = serde_json::json!({
        "pid": std::process::id(), "drv": drv, "phase": phase, "us": us, "peak_rss_kib": peak_rss_kib()
    });
    // Created 0600 and never through a link: the hook runs as root, and the file's directory
    // may be one other users write to.
    if let Ok(mut f) = nwh_files::private::open_append(std::path::Path::new(file)) {
        // One write per line: concurrent processes append whole lines.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// `VmHWM` of /proc/self/status: the most this process has held in memory so far.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn lock() -> std::sync::MutexGuard<'static, Option<(std::ffi::OsString, Option<String>)>> {
    TIMELINE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
