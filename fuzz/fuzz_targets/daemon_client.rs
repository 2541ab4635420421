//! The worker-protocol (nix-daemon) client (crates/daemon `DaemonClient`) reading a daemon's
//! replies and log frames: the handshake (feature exchange, version, trust flag, start-up log
//! frames), then the operations the script names (see `split_script`), each reading its log
//! frames (`STDERR_*`, error frames included) and its reply from the fuzzed stream. No panic;
//! every log message is formatted. What the client sends goes nowhere.
#![no_main]

use std::collections::BTreeSet;
use std::io;

use libfuzzer_sys::fuzz_target;
use nix_wasm_hook_fuzz::{split_script, tiny_nar};
use nwh_daemon::{BuildMode, DaemonClient, LogMessage, Options, PathInfo, Upload};
use nwh_drv::BasicDerivation;

const PATH: &str = "/nix/store/00000000000000000000000000000000-a";
const DRV: &str = "/nix/store/00000000000000000000000000000000-a.drv";

fuzz_target!(|data: &[u8]| {
    let (script, replies) = split_script(data);
    let mut log = |m: LogMessage| drop(format!("{m:?}"));
    let Ok(mut client) = DaemonClient::handshake_logged("fuzz", replies, io::sink(), &mut log) else {
        return;
    };
    let paths = BTreeSet::from([PATH.to_owned()]);
    let (nar, summary) = tiny_nar();
    let info = PathInfo { nar_hash: summary.sha256_base16(), nar_size: summary.size, ..PathInfo::default() };
    for op in script {
        let ok = match op {
            b'S' => client.set_options(&Options::default(), &mut log).is_ok(),
            b'V' => client.query_valid_paths(&paths, false, &mut log).is_ok(),
            b'I' => client.query_path_info(PATH, &mut log).is_ok(),
            b'N' => client.nar_from_path(PATH, &mut io::sink(), &mut log).is_ok(),
            b'A' => client.add_to_store_nar(PATH, &info, &mut &nar[..], &mut log).is_ok(),
            b'M' => {
                let mut uploads = [Upload { path: PATH.to_owned(), info: info.clone(), nar: &mut &nar[..] }];
                client.add_multiple_to_store(&mut uploads, &mut log).is_ok()
            }
            b'B' => {
                let drv = BasicDerivation::default();
                client.build_derivation(DRV, &drv, BuildMode::Normal, &mut log).is_ok()
            }
            b'W' => {
                client.build_paths_with_results(&[format!("{DRV}!*")], BuildMode::Normal, &mut log).is_ok()
            }
            _ => true,
        };
        // A failed operation leaves the connection unusable, as it would be in the hook.
        if !ok {
            break;
        }
    }
});
