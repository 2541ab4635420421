//! The serve-protocol client (crates/serve `ServeClient`) reading a server's replies: the
//! handshake, then the operations the script names (see `split_script`), each reading its
//! reply from the fuzzed stream. No panic; a `BuildResult` read is also asked for its built
//! outputs (a JSON field). What the client sends goes nowhere.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use nix_wasm_hook_fuzz::{split_script, tiny_nar};
use nwh_drv::BasicDerivation;
use nwh_serve::{BuildOptions, PathInfo, ServeClient};

const PATH: &str = "/nix/store/00000000000000000000000000000000-a";
const DRV: &str = "/nix/store/00000000000000000000000000000000-a.drv";

fuzz_target!(|data: &[u8]| {
    let (script, replies) = split_script(data);
    let Ok(mut client) = ServeClient::handshake("fuzz", replies, io::sink()) else { return };
    let options = BuildOptions::default();
    for op in script {
        let ok = match op {
            b'V' => client.query_valid_paths([PATH], false, false).is_ok(),
            b'I' => client.query_path_infos([PATH]).is_ok(),
            b'D' => client.dump_store_path(PATH, &mut io::sink()).is_ok(),
            b'B' => match client.build_derivation(DRV, &BasicDerivation::default(), &options) {
                Ok(result) => {
                    let _ = result.built_output_paths("/nix/store");
                    true
                }
                Err(_) => false,
            },
            b'P' => client.build_paths([DRV], &options).is_ok(),
            b'C' => client.query_closure([PATH], true).is_ok(),
            b'E' => client.export_paths([PATH], &mut io::sink()).is_ok(),
            b'M' => client.import_paths(&mut &0u64.to_le_bytes()[..]).is_ok(),
            b'A' => {
                let (nar, summary) = tiny_nar();
                let info = PathInfo {
                    nar_size: summary.size,
                    download_size: summary.size,
                    nar_hash: summary.nar_hash(),
                    ..PathInfo::default()
                };
                client.add_to_store_nar(PATH, &info, &mut &nar[..]).is_ok()
            }
            _ => true,
        };
        // A failed operation leaves the connection unusable, as it would be in the hook.
        if !ok {
            break;
        }
    }
});
