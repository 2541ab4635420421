//! The serve-protocol server (crates/serve `ServeServer`) reading a client's requests: the
//! handshake, then every request until the stream ends or is refused, each answered with an
//! empty reply (payloads — the export stream after `ImportPaths`, the NAR after
//! `AddToStoreNar` — are read and checked). No panic, and every request decoded re-encodes
//! (`ServeRequest::write_to`) to bytes that decode to the same request.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use nix_wasm_hook_fuzz::tiny_nar;
use nwh_serve::{BuildPathsResult, BuildResult, BuildStatus, ServeRequest, ServeServer};
use nwh_wire::{Reader, Writer};

fuzz_target!(|data: &[u8]| {
    let Ok(mut server) = ServeServer::handshake(data, io::sink()) else { return };
    let version = server.version();
    while let Ok(Some(request)) = server.next_request() {
        check_re_encoding(&request, version);
        let answered = match request {
            ServeRequest::QueryValidPaths { .. } => server.reply_valid_paths(Vec::<String>::new()),
            ServeRequest::QueryPathInfos { .. } => server.reply_path_infos(&[]),
            ServeRequest::DumpStorePath { .. } => server.reply_nar(&mut &tiny_nar().0[..]).map(drop),
            ServeRequest::ImportPaths => server.read_export(&mut io::sink()).and_then(|_| server.reply_ok()),
            ServeRequest::ExportPaths { .. } => server.reply_export(&mut &0u64.to_le_bytes()[..]).map(drop),
            ServeRequest::BuildPaths { .. } => server.reply_build_paths(&BuildPathsResult::default()),
            ServeRequest::QueryClosure { .. } => server.reply_closure(Vec::<String>::new()),
            ServeRequest::BuildDerivation { .. } => {
                server.reply_build_result(&BuildResult::new(BuildStatus::Built, ""))
            }
            ServeRequest::AddToStoreNar { .. } => server.read_nar(&mut io::sink()).and_then(|_| server.reply_ok()),
        };
        if answered.is_err() {
            break;
        }
    }
});

fn check_re_encoding(request: &ServeRequest, version: u64) {
    let mut bytes = Vec::new();
    request.write_to(&mut Writer::new(&mut bytes), version).expect("writing to a Vec");
    let mut r = Reader::new(&bytes[..]);
    let code = r.read_u64().expect("the command code");
    assert_eq!(code, request.command().code());
    let again = ServeRequest::read_args(request.command(), &mut r, version).expect("re-encoded request decodes");
    assert_eq!(&again, request);
    assert_eq!(r.position(), bytes.len() as u64, "nothing left over");
}
