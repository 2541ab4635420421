//! The hook's options file (crates/options): any text is read without a panic; what is
//! accepted is accepted as flags too (one check for both), and every accessor copes with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nwh_options::{Options, Spelling};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Options::parse(&text) {
        Ok(opts) => {
            // A value the file accepts is one the command line accepts.
            assert!(opts.check(Spelling::Flag).is_ok(), "{opts:?}");
            let opts = Options::default().overlay(opts.clone());
            let _ = (opts.connect_timeout(), opts.postpone_wait(), opts.trace_max_bytes());
            let _ = (
                opts.state_dir(),
                opts.current_load_dir(std::path::Path::new("/nix/var/nix")),
                opts.connect_before_accept(),
            );
        }
        Err(e) => drop(format!("{e:#}")),
    }
});
