//! nix.conf / `NIX_CONFIG` text and the parent's settings block (crates/nixconf): any text is
//! parsed without a panic, every accessor copes with whatever values were accepted, and every
//! warning and error renders.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use nwh_nixconf::{HostDefaults, Settings};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // As NIX_CONFIG. `include`/`!include` read real files (regular ones, bounded): a missing
    // conf dir keeps nix.conf itself out of it.
    let mut settings = fresh();
    match settings.apply_nix_config(&text) {
        Ok(()) => use_all(&settings),
        Err(e) => drop(e.to_string()),
    }

    // As the settings block Nix sends the hook: the same lines, split at the first '='.
    let mut settings = fresh();
    let pairs = text.lines().filter_map(|l| l.split_once('='));
    match settings.apply_block(pairs) {
        Ok(()) => use_all(&settings),
        Err(e) => drop(e.to_string()),
    }
});

fn fresh() -> Settings {
    let host = HostDefaults {
        system: "x86_64-linux".to_owned(),
        extra_platforms: BTreeSet::new(),
        system_features: BTreeSet::from(["kvm".to_owned()]),
        cpus: 2,
    };
    Settings::new("/nonexistent/nix-wasm-hook-fuzz", None, host)
}

/// Every typed accessor: each parses a stored value its own way.
fn use_all(s: &Settings) {
    for w in s.warnings() {
        let _ = w.to_string();
    }
    for (name, _) in s.iter() {
        let _ = s.origin(name).map(ToString::to_string);
    }
    let _ = s.builders();
    let _ = s.max_jobs();
    let _ = s.system();
    let _ = s.extra_platforms();
    let _ = s.system_features();
    let _ = s.experimental_features();
    let _ = s.local_store_features();
    let _ = s.max_silent_time();
    let _ = s.build_timeout();
    let _ = s.max_build_log_size();
    let _ = s.builders_use_substitutes();
}
