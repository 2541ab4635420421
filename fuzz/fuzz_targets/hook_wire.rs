//! The hook protocol's input (what Nix writes to the hook's stdin), decoded with crates/wire in
//! the order and with the limits of the host's `Session` (host/src/front_end/protocol.rs): the settings
//! block (`1, name, value` records ended by `0`), laid over nix.conf defaults as the hook does
//! (crates/nixconf `apply_block`), then `try` requests (`"try"`, amWilling, system, drv path,
//! required features), each followed either by the next `try` or by the input paths and
//! wanted outputs Nix sends after `# accept`.
//!
//! `Session` itself lives in the host crate, which links wasmtime: instrumenting that is too
//! slow to build for CI (docs/fuzzing.md), so its read sequence is replayed here on the same
//! reader. No panic, and every record read re-encodes to exactly the bytes it came from.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use nwh_nixconf::{HostDefaults, Settings};
use nwh_wire::{Limits, Reader, Writer};

/// host/src/front_end/protocol.rs: MAX_STRING and MAX_LIST.
const LIMITS: Limits = Limits { max_string_len: 1 << 20, max_list_len: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::with_limits(data, LIMITS);
    let Some(settings) = settings_block(&mut r, data) else { return };
    let host = HostDefaults {
        system: "x86_64-linux".to_owned(),
        extra_platforms: BTreeSet::new(),
        system_features: BTreeSet::new(),
        cpus: 2,
    };
    let mut conf = Settings::new("/nonexistent/nix-wasm-hook-fuzz", None, host);
    if conf.apply_block(settings.iter().map(|(k, v)| (k, v))).is_ok() {
        let _ = (conf.builders(), conf.max_jobs(), conf.system_features(), conf.max_silent_time());
    }
    while try_request(&mut r, data) {}
});

fn settings_block(r: &mut Reader<&[u8]>, data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut settings = Vec::new();
    loop {
        match r.read_u64().ok()? {
            0 => break,
            1 => settings.push((r.read_string().ok()?, r.read_string().ok()?)),
            _ => return None,
        }
    }
    let mut again = Vec::new();
    let mut w = Writer::new(&mut again);
    for (name, value) in &settings {
        w.write_u64(1).unwrap();
        w.write_str(name).unwrap();
        w.write_str(value).unwrap();
    }
    w.write_u64(0).unwrap();
    assert_eq!(again, data[..r.position() as usize]);
    Some(settings)
}

/// One `try` and, unless another `try` follows, the `# accept` payload. False at the end.
fn try_request(r: &mut Reader<&[u8]>, data: &[u8]) -> bool {
    let start = r.position() as usize;
    match r.read_string() {
        Ok(word) if word == "try" => {}
        _ => return false,
    }
    // `Session` reads amWilling with `read_bool` (any non-zero word is true); the word itself
    // is kept here so that the re-encoding can be compared.
    let (Ok(am_willing), Ok(system), Ok(drv_path), Ok(features)) =
        (r.read_u64(), r.read_string(), r.read_string(), r.read_string_list())
    else {
        return false;
    };
    let mut again = Vec::new();
    let mut w = Writer::new(&mut again);
    w.write_str("try").unwrap();
    w.write_u64(am_willing).unwrap();
    w.write_str(&system).unwrap();
    w.write_str(&drv_path).unwrap();
    w.write_list(&features).unwrap();
    assert_eq!(again, data[start..r.position() as usize]);

    // The hook knows whether it accepted; here the input says: another `try` next means it
    // did not. The peek reads a copy of the rest of the input.
    let rest: &[u8] = r.get_ref();
    if Reader::with_limits(rest, LIMITS).read_string().is_ok_and(|w| w == "try") {
        return true;
    }
    // After `# accept` the hook reads these two lists and then builds: nothing else follows.
    let _ = (r.read_string_list(), r.read_string_list());
    false
}
