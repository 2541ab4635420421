//! The machines file / `builders` value (crates/machines): any text parses without a panic,
//! every diagnostic renders, and every machine the parser accepts is printed by
//! `Machine::line` as a line that parses back to the same machine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nwh_machines::{parse_builders, Machine, ParseContext, BUILDERS_SETTING, REMOTE_SYSTEMS_ENV};

fuzz_target!(|data: &[u8]| {
    // The hook gets the value as a string; lossy decoding keeps every input useful.
    let text = String::from_utf8_lossy(data);
    let ctx = ParseContext::new("x86_64-linux");
    // `@file` entries read real files: only regular ones, bounded by nwh_files, so an
    // include of a device or a huge file is an error, not a hang.
    for source in [BUILDERS_SETTING, REMOTE_SYSTEMS_ENV] {
        let parsed = parse_builders(&text, source, &ctx);
        for d in &parsed.diagnostics {
            let _ = d.to_string();
        }
        for m in &parsed.machines {
            check_line(m, &ctx);
        }
    }
});

/// `line()` is what messages show as "what the hook understood": it must mean the same.
fn check_line(m: &Machine, ctx: &ParseContext) {
    let line = m.line();
    let again = parse_builders(&line, BUILDERS_SETTING, ctx);
    assert_eq!(again.machines.len(), 1, "line {line:?} of {m:?} gives {again:?}");
    let mut back = again.machines[0].clone();
    back.origin = m.origin.clone();
    assert_eq!(&back, m, "line {line:?}");
}
