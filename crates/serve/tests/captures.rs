//! What Nix's own build hook really sends to an `ssh://localhost` builder, recorded with Nix
//! 2.8.0, 2.26.3 and 2.34.8 (fixtures/localhost/*/README.md): each capture decoded by
//! `ServeServer` into the exact sequence of requests, each request re-encoded to the bytes
//! Nix sent, and our server's replies (given the facts the real `nix-store --serve` had)
//! compared byte for byte with what that server answered.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Cursor, Write};

use common::{fixture, read_fixture, Sent};
use nwh_drv::Derivation;
use nwh_nar::copy_nar;
use nwh_serve::{
    BuildOptions, BuildResult, BuildStatus, PathInfo, Repeats, ServeRequest, ServeServer, CLIENT_VERSION,
};
use nwh_wire::{Reader, Writer};

const DEP_DRV: &str = "/nix/store/8zm2lh3vnip3d5r0wgqzfa06cyagr4n0-nwh-lh-dep.drv";
const DEP: &str = "/nix/store/qn6i2sp7by13h8bmw1rsljcqns9g4p35-nwh-lh-dep";
const TOP_DRV: &str = "/nix/store/9ar1qzr7dg2w77blrdwq7gn0bqqvf1c7-nwh-lh-top.drv";
const TOP: &str = "/nix/store/a5dyzmjqic3k6sr311hg42lv85bj3wjh-nwh-lh-top";
const TOP_DOC: &str = "/nix/store/jxwr4mbwybjpfczr2zcj1cb2y2zqmwl4-nwh-lh-top-doc";
const INPUT: &str = "/nix/store/y7wycm3xsy02jh5094hxcdfkgjmg4s22-nwh-lh-input";
/// `nix-store -q --hash` of INPUT, in the base 16 that AddToStoreNar carries.
const INPUT_HASH: &str = "f8482a5580c09565b3927b95e290e97dc4106ddd40d3dd7b5cb47b695b458d15";
const INPUT_CA: &str = "fixed:r:sha256:05cd8mdnjyxlbixxvls0vmni1i3xx68f55bvjarnb5f0h1ajlj7q";

const VERSIONS: [&str; 4] = ["nix-2.8.0", "nix-2.26.3", "nix-2.34.8", "lix-2.95.3"];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn capture(version: &str, session: u32, side: &str) -> Vec<u8> {
    read_fixture(&format!("localhost/{version}/session{session}.{side}.bin"))
}

fn drv(name: &str) -> Derivation {
    Derivation::read(fixture(&format!("localhost/{name}"))).unwrap()
}

/// A request without the parts a test does not spell out: the derivation and the NAR.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Valid(BTreeSet<String>),
    Infos(BTreeSet<String>),
    Dump(String),
    Add(String),
    Build(String),
}

/// Decodes a whole client stream with our server, reading every NAR payload (checked against
/// its announced size and hash) and answering with nothing in particular.
fn decode(version: &str, session: u32) -> (Vec<ServeRequest>, u64) {
    let input = capture(version, session, "client");
    let mut server = ServeServer::handshake(Cursor::new(input), std::io::sink()).unwrap();
    let client_version = server.client_version();
    let mut requests = Vec::new();
    while let Some(request) = server.next_request().unwrap() {
        match &request {
            ServeRequest::AddToStoreNar { info, .. } => {
                let summary = server.read_nar(&mut std::io::sink()).unwrap();
                assert_eq!(summary.size, info.nar_size);
                server.reply_ok().unwrap();
            }
            ServeRequest::QueryValidPaths { .. } => server.reply_valid_paths::<_, &str>([]).unwrap(),
            ServeRequest::QueryPathInfos { .. } => server.reply_path_infos(&[]).unwrap(),
            ServeRequest::BuildDerivation { .. } => {
                server.reply_build_result(&BuildResult::new(BuildStatus::Built, "")).unwrap()
            }
            ServeRequest::DumpStorePath { .. } => {
                server.reply_nar(&mut &read_fixture("hello.nar")[..]).unwrap();
            }
            other => panic!("{version}: Nix's hook sent {}", other.name()),
        }
        requests.push(request);
    }
    (requests, client_version)
}

fn seen(requests: &[ServeRequest]) -> Vec<Seen> {
    requests
        .iter()
        .map(|r| match r {
            ServeRequest::QueryValidPaths { paths, .. } => Seen::Valid(paths.clone()),
            ServeRequest::QueryPathInfos { paths } => Seen::Infos(paths.clone()),
            ServeRequest::DumpStorePath { path } => Seen::Dump(path.clone()),
            ServeRequest::AddToStoreNar { path, .. } => Seen::Add(path.clone()),
            ServeRequest::BuildDerivation { drv_path, .. } => Seen::Build(drv_path.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn every_hook_greets_with_2_7() {
    for version in VERSIONS {
        for session in [0, 1] {
            let (_, client_version) = decode(version, session);
            assert_eq!(client_version, CLIENT_VERSION, "{version}");
        }
    }
}

/// Building `dep` (no inputs): an empty QueryValidPaths, the build, then the output's info and
/// NAR. The same on every version.
#[test]
fn building_without_inputs() {
    for version in VERSIONS {
        let (requests, _) = decode(version, 0);
        assert_eq!(
            seen(&requests),
            [
                Seen::Valid(set(&[])),
                Seen::Build(DEP_DRV.into()),
                Seen::Infos(set(&[DEP])),
                Seen::Dump(DEP.into()),
            ],
            "{version}"
        );
        let ServeRequest::QueryValidPaths { lock, substitute, .. } = &requests[0] else { unreachable!() };
        assert!(!lock && !substitute, "{version}");
    }
}

/// Building `top`: the builder has `dep`'s output (it built it) but not the source, which is
/// uploaded with AddToStoreNar (2.26 and 2.34 first ask for its path info once more); then the
/// build, then each output's info and NAR, one request per path.
#[test]
fn building_with_an_upload() {
    for version in VERSIONS {
        let (requests, _) = decode(version, 1);
        let mut expected = vec![Seen::Valid(set(&[DEP, INPUT]))];
        if version != "nix-2.8.0" {
            expected.push(Seen::Infos(set(&[INPUT])));
        }
        expected.extend([
            Seen::Add(INPUT.into()),
            Seen::Build(TOP_DRV.into()),
            Seen::Infos(set(&[TOP])),
            Seen::Infos(set(&[TOP_DOC])),
            Seen::Dump(TOP.into()),
            Seen::Dump(TOP_DOC.into()),
        ]);
        assert_eq!(seen(&requests), expected, "{version}");

        let add = requests.iter().find(|r| matches!(r, ServeRequest::AddToStoreNar { .. })).unwrap();
        let ServeRequest::AddToStoreNar { info, registration_time, ultimate, .. } = add else {
            unreachable!()
        };
        assert_eq!(info.nar_hash, INPUT_HASH, "{version}");
        assert_eq!(info.nar_size, 136, "{version}");
        assert_eq!(info.ca.as_deref(), Some(INPUT_CA), "{version}");
        assert_eq!(info.deriver, None, "{version}");
        assert!(info.references.is_empty() && info.sigs.is_empty(), "{version}");
        // Every version sends the path's registration time in the master's store (ours is 0).
        assert!(*registration_time > 1_700_000_000, "{version}");
        assert!(!ultimate, "{version}");
    }
}

/// The derivation sent is exactly `Derivation::to_basic` of the `.drv` with the input closure
/// as sources, and the options are all zero: the defaults of `max-silent-time`, `timeout`,
/// `max-build-log-size`, `keep-failed`.
#[test]
fn build_derivation_is_to_basic_of_the_drv() {
    for version in VERSIONS {
        for (session, name, closure) in [(0, "dep.drv", set(&[])), (1, "top.drv", set(&[DEP, INPUT]))] {
            let (requests, _) = decode(version, session);
            let build = requests.iter().find(|r| matches!(r, ServeRequest::BuildDerivation { .. })).unwrap();
            let ServeRequest::BuildDerivation { drv: sent, options, .. } = build else { unreachable!() };
            assert_eq!(*sent, drv(name).to_basic(&closure), "{version} {name}");
            assert_eq!(*options, BuildOptions::default(), "{version} {name}");
        }
    }
}

/// Each decoded request, written again by `ServeRequest::write_to`, gives the bytes Nix sent,
/// except one word of 2.8's BuildOptions (enforceDeterminism = 1, which we do not keep).
#[test]
fn requests_re_encode_to_nix_bytes() {
    for version in VERSIONS {
        for session in [0, 1] {
            let input = capture(version, session, "client");
            let (requests, _) = decode(version, session);
            let mut w = Writer::new(Vec::new());
            w.write_u64(0x390c_9deb).unwrap();
            w.write_u64(0x207).unwrap();
            for request in &requests {
                match request {
                    ServeRequest::BuildDerivation { drv_path, drv, options } if version == "nix-2.8.0" => {
                        // What 2.8 sends, spelled out: the repeat fields as Nix 2.8 fills them.
                        w.write_u64(8).unwrap();
                        w.write_str(drv_path).unwrap();
                        drv.write_to(&mut w).unwrap();
                        let repeats = Repeats { nr_repeats: 0, enforce_determinism: true };
                        options.write_with_repeats(&mut w, 0x207, repeats).unwrap();
                    }
                    other => other.write_to(&mut w, 0x207).unwrap(),
                }
                if let ServeRequest::AddToStoreNar { info, .. } = request {
                    // The NAR itself, cut from the capture where it stands.
                    let at = w.position() as usize;
                    w.get_mut().write_all(&input[at..at + info.nar_size as usize]).unwrap();
                }
            }
            assert_eq!(w.into_inner(), input, "{version} session {session}");
        }
    }
}

/// Replays each session against our server, answering with what the real
/// `nix-store --serve` answered (decoded with the client's readers): our server must send
/// exactly the bytes the real one sent.
#[test]
fn our_replies_are_nix_store_serve_bytes() {
    for version in VERSIONS {
        for session in [0, 1] {
            let input = capture(version, session, "client");
            let real = capture(version, session, "server");
            let sent = Sent::default();
            let mut server = ServeServer::handshake(Cursor::new(input), sent.clone()).unwrap();
            let mut replies = Reader::new(&real[..]);
            assert_eq!(replies.read_u64().unwrap(), 0x5452_eecb);
            assert_eq!(replies.read_u64().unwrap(), 0x207, "{version}: the real server speaks 2.7");
            let v = server.version();
            let mut names = Vec::new();
            while let Some(request) = server.next_request().unwrap() {
                names.push(request.name());
                match request {
                    ServeRequest::QueryValidPaths { .. } => {
                        server.reply_valid_paths(replies.read_string_set().unwrap()).unwrap()
                    }
                    ServeRequest::QueryPathInfos { .. } => {
                        let mut infos = Vec::new();
                        loop {
                            let path = replies.read_string().unwrap();
                            if path.is_empty() {
                                break;
                            }
                            infos.push((path, PathInfo::read_from(&mut replies, v).unwrap()));
                        }
                        server.reply_path_infos(&infos).unwrap();
                    }
                    ServeRequest::DumpStorePath { .. } => {
                        let mut nar = Vec::new();
                        copy_nar(&mut replies, &mut nar).unwrap();
                        server.reply_nar(&mut &nar[..]).unwrap();
                    }
                    ServeRequest::AddToStoreNar { .. } => {
                        assert_eq!(replies.read_u64().unwrap(), 1);
                        server.read_nar(&mut std::io::sink()).unwrap();
                        server.reply_ok().unwrap();
                    }
                    ServeRequest::BuildDerivation { .. } => {
                        let result = BuildResult::read_from(&mut replies, v).unwrap();
                        assert_eq!(result.status, BuildStatus::Built, "{version}");
                        if version == "nix-2.34.8" {
                            // 2.34's server no longer fills these in (it sends zeros).
                            assert_eq!((result.times_built, result.start_time, result.stop_time), (0, 0, 0));
                        } else {
                            assert_eq!(result.times_built, 1, "{version}");
                            assert!(result.start_time > 1_700_000_000, "{version}");
                            assert!(result.stop_time >= result.start_time, "{version}");
                        }
                        // builtOutputs: one entry per output, naming its path.
                        let outputs = result.built_output_paths("/nix/store").unwrap();
                        let expected = if session == 0 {
                            vec![("out", DEP)]
                        } else {
                            vec![("doc", TOP_DOC), ("out", TOP)]
                        };
                        assert_eq!(
                            outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
                            expected,
                            "{version}"
                        );
                        server.reply_build_result(&result).unwrap();
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(replies.position(), real.len() as u64, "{version} session {session}: {names:?}");
            assert_eq!(sent.bytes(), real, "{version} session {session}: {names:?}");
        }
    }
}
