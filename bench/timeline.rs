//! Reading the timelines our processes write under `NWH_TIMELINE` (host/src/core/timeline.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;

struct Mark {
    phase: String,
    us: f64,
    peak_rss_kib: Option<f64>,
}

/// Every process's marks, by pid, over all `files` (a missing file has none).
fn processes(files: &[PathBuf]) -> BTreeMap<u64, Vec<Mark>> {
    let mut processes: BTreeMap<u64, Vec<Mark>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a timeline line is JSON");
            let mark = Mark {
                phase: v["phase"].as_str().unwrap_or_default().to_string(),
                us: v["us"].as_f64().unwrap_or_default(),
                peak_rss_kib: v["peak_rss_kib"].as_f64(),
            };
            processes.entry(v["pid"].as_u64().unwrap_or_default()).or_default().push(mark);
        }
    }
    processes
}

/// The median time between consecutive phases over the processes that built something, in
/// milliseconds (`settings 1.2 ms, policy 30.1 ms, …`), and how many there were.
pub fn phases(files: &[PathBuf]) -> String {
    let mut gaps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut builds = 0;
    for marks in processes(files).values().filter(|m| m.iter().any(|m| m.phase == "built")) {
        builds += 1;
        for pair in marks.windows(2) {
            let phase = pair[1].phase.clone();
            if !order.contains(&phase) {
                order.push(phase.clone());
            }
            gaps.entry(phase).or_default().push((pair[1].us - pair[0].us) / 1000.0);
        }
    }
    let parts: Vec<String> =
        order.iter().map(|p| format!("{p} {:.1} ms", crate::report::median(&gaps[p]))).collect();
    format!("{builds} builds; median time from the phase before: {}", parts.join(", "))
}

/// The highest peak resident memory any process reached, in MiB.
pub fn peak_rss_mib(files: &[PathBuf]) -> Option<f64> {
    processes(files)
        .values()
        .flatten()
        .filter_map(|m| m.peak_rss_kib)
        .max_by(f64::total_cmp)
        .map(|kib| kib / 1024.0)
}
