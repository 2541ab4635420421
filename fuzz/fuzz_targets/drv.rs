//! The .drv parser (crates/drv): any bytes parse or fail without a panic, and a derivation
//! that parses prints (`to_aterm`) as text that parses to the same derivation and prints the
//! same again. (Byte-for-byte equality with the input holds only for Nix's own sorted
//! output; the parser also takes unsorted lists, so the fuzzer checks the fixed point.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use nwh_drv::Derivation;

fuzz_target!(|data: &[u8]| {
    let drv = match Derivation::parse(data) {
        Ok(drv) => drv,
        Err(e) => {
            assert!(e.offset() <= data.len(), "{e} is past the end ({} bytes)", data.len());
            return;
        }
    };
    let printed = drv.to_aterm();
    let again = Derivation::parse(printed.as_bytes()).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(again, drv);
    assert_eq!(again.to_aterm(), printed);
    // The serve-protocol form is built from it too.
    let _ = drv.to_basic(&Default::default()).to_aterm();
});
