//! `nwh_nar::restore` (crates/nar): a NAR unpacked into a fresh temporary directory, then
//! dumped back with `nwh_nar::dump::dump`, must give the bytes that were unpacked.
//!
//! Safe to fuzz: entry names are checked (no `/`, `.`, `..`, NUL, sorted and unique) before
//! anything is created, files are made with `create_new`, nothing is written through a
//! symlink, nesting is bounded by `MAX_DEPTH`, and a file's contents are bounded by the input
//! (libFuzzer's `-max_len`). Everything lands under the temporary directory, removed after
//! each run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nwh_nar::{dump::dump, restore};

fuzz_target!(|data: &[u8]| {
    // Most inputs are rejected at the magic: skip the file system for them.
    if !data.starts_with(b"\x0d\0\0\0\0\0\0\0nix-archive-1") {
        return;
    }
    let dir = tempfile::Builder::new().prefix("nwh-fuzz-restore-").tempdir().expect("a temp dir");
    let dest = dir.path().join("out");
    let Ok(summary) = restore(&mut &data[..], &dest) else { return };
    let mut dumped = Vec::new();
    let size = dump(&dest, &mut dumped).expect("a restored tree can be dumped");
    assert_eq!(size, summary.size);
    assert_eq!(dumped, data[..summary.size as usize], "restore then dump gives the NAR back");
});
