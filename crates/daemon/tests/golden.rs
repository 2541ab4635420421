//! Whole conversations of Nix's own build hook with a real `nix-daemon --stdio` on an
//! `ssh-ng://` builder (fixtures/README.md): the recorded daemon side is replayed to our
//! client, which performs the same operations, and what it sends must be what Nix's client
//! sent, byte for byte. Replaying decodes every frame the daemon sent.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use common::{decode_client, read_fixture, server_version, Drip, Request, Sent};
use nwh_daemon::{BuildStatus, DaemonClient, LogMessage, Upload, PROTOCOL_VERSION};

struct Replayed {
    client: Vec<u8>,
    sent: Vec<u8>,
    logs: Vec<LogMessage>,
    daemon_version: Option<String>,
    trusted: Option<bool>,
    version: u64,
    results: Vec<(String, BuildStatus)>,
    /// Path → (NarFromPath's hash, QueryPathInfo's hash, NAR size).
    nars: Vec<(String, String, u64)>,
    infos: Vec<(String, Option<nwh_daemon::PathInfo>)>,
    /// The paths uploaded with `AddMultipleToStore`.
    uploaded: Vec<String>,
}

/// Replays `dir/session<n>` and checks that the whole daemon stream was consumed.
fn replay(dir: &str, n: u32) -> Replayed {
    let client_bytes = read_fixture(&format!("{dir}/session{n}.client.bin"));
    let server_bytes = read_fixture(&format!("{dir}/session{n}.server.bin"));
    let (greeting, requests) = decode_client(&client_bytes, server_version(&server_bytes));
    assert_eq!(greeting.cpu_affinity, 0);
    assert_eq!(greeting.reserve_space, 0);
    assert!(greeting.features.is_empty(), "{:?}", greeting.features);

    let (drip, consumed) = Drip::new(server_bytes.clone());
    let sent = Sent::default();
    let mut logs = Vec::new();
    let mut log = |m: LogMessage| logs.push(m);
    let mut c = DaemonClient::handshake_logged("localhost", drip, sent.clone(), &mut log).unwrap();
    let mut out = Replayed {
        client: client_bytes.clone(),
        sent: Vec::new(),
        logs: Vec::new(),
        daemon_version: c.daemon_version().map(str::to_string),
        trusted: c.trusted(),
        version: c.version(),
        results: Vec::new(),
        nars: Vec::new(),
        infos: Vec::new(),
        uploaded: Vec::new(),
    };
    let mut hashes = BTreeMap::new();
    for request in requests {
        perform(&mut c, request, &mut log, &mut out, &mut hashes);
    }
    drop(c);
    out.logs = logs;
    out.sent = sent.bytes();
    assert_eq!(
        consumed.load(Ordering::SeqCst),
        server_bytes.len(),
        "{dir}/session{n}: daemon bytes left over"
    );
    out
}

/// Performs one recorded request of Nix's client with ours, noting in `out` what came back;
/// `hashes` keeps QueryPathInfo's answers for the NarFromPath that follows.
fn perform(
    c: &mut DaemonClient<Drip, Sent>,
    request: Request,
    log: &mut dyn FnMut(LogMessage),
    out: &mut Replayed,
    hashes: &mut BTreeMap<String, (String, u64)>,
) {
    match request {
        Request::QueryValidPaths { paths, substitute } => {
            let paths: BTreeSet<String> = paths.into_iter().collect();
            c.query_valid_paths(&paths, substitute.unwrap_or(false), log).unwrap();
        }
        Request::AddMultipleToStore { repair, dont_check_sigs, uploads, frames } => {
            assert!(!repair && dont_check_sigs);
            assert!(frames.len() <= 1, "{frames:?}");
            out.uploaded.extend(uploads.iter().map(|u| u.path.clone()));
            let mut readers: Vec<&[u8]> = uploads.iter().map(|u| &u.nar[..]).collect();
            let mut list: Vec<Upload> = uploads
                .iter()
                .zip(readers.iter_mut())
                .map(|(u, nar)| Upload { path: u.path.clone(), info: u.info.clone(), nar })
                .collect();
            c.add_multiple_to_store(&mut list, log).unwrap();
        }
        Request::AddToStoreNar { path, info, nar, .. } => {
            c.add_to_store_nar(&path, &info, &mut &nar[..], log).unwrap();
        }
        Request::BuildDerivation { drv_path, drv, mode } => {
            let result = c.build_derivation(&drv_path, &drv, mode, log).unwrap();
            out.results.push((drv_path, result.status));
        }
        Request::BuildPathsWithResults { paths, mode } => {
            for (path, result) in c.build_paths_with_results(&paths, mode, log).unwrap() {
                out.results.push((path, result.status));
            }
        }
        Request::QueryPathInfo { path } => {
            let info = c.query_path_info(&path, log).unwrap();
            if let Some(info) = &info {
                hashes.insert(path.clone(), (info.nar_hash.clone(), info.nar_size));
            }
            out.infos.push((path, info));
        }
        Request::NarFromPath { path } => {
            let mut nar = Vec::new();
            let summary = c.nar_from_path(&path, &mut nar, log).unwrap();
            assert_eq!(nar.len() as u64, summary.size);
            let (info_hash, info_size) =
                hashes.get(&path).cloned().expect("NarFromPath before QueryPathInfo");
            assert_eq!(info_size, summary.size, "{path}");
            out.nars.push((path, info_hash, summary.size));
            assert_eq!(out.nars.last().unwrap().1, summary.sha256_base16());
        }
    }
}

/// Our client's bytes with the one word where they must differ from Nix's: the version
/// offered. Nix 2.8 offers 1.34, we offer 1.38 (and Nix 2.34 offers 1.38 too).
fn assert_same_bytes(r: &Replayed, nix_offered: u64) {
    let mut expect = r.client.clone();
    assert_eq!(u64::from_le_bytes(expect[8..16].try_into().unwrap()), nix_offered);
    expect[8..16].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    assert_eq!(r.sent.len(), expect.len());
    if let Some(i) = r.sent.iter().zip(&expect).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}: ours {:02x?}, Nix's {:02x?}", &r.sent[i..], &expect[i..]);
    }
}

fn texts(logs: &[LogMessage]) -> Vec<String> {
    logs.iter()
        .filter_map(|m| match m {
            LogMessage::Next(s) => Some(s.clone()),
            LogMessage::StartActivity { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

const DEP_DRV: &str = "/nix/store/krbhkd5cccx5wqnj2gqq8qnxzby8gsq2-nwh-ng-dep.drv";
const TOP_DRV: &str = "/nix/store/xdbqqv4ypf0510bz6xxifkhp0gy08n4z-nwh-ng-top.drv";
const DEP: &str = "/nix/store/l6ch6jq57brf7qcglg3qf9n1d9w7mvfb-nwh-ng-dep";
const TOP: &str = "/nix/store/phhkp0zrxcsn6ij2xyzw8p5bb94bwfrj-nwh-ng-top";
const TOP_DOC: &str = "/nix/store/7hlikr91ywl8mx5mj6jx8c8gpkgsw3aj-nwh-ng-top-doc";
const INPUT: &str = "/nix/store/102jicnngcwzprgb0y2dd5mxi0ym1m0d-nwh-ng-input";

fn check_common(dir: &str) -> (Replayed, Replayed) {
    let s0 = replay(dir, 0);
    let s1 = replay(dir, 1);
    // Both sessions fetched what they built, hashes as QueryPathInfo gave them.
    assert_eq!(s0.nars.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), [DEP]);
    assert_eq!(s1.nars.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), [TOP_DOC, TOP]);
    for s in [&s0, &s1] {
        for (path, info) in &s.infos {
            let info = info.as_ref().unwrap_or_else(|| panic!("{path} not valid on the builder"));
            assert_eq!(info.nar_hash.len(), 64, "base 16: {}", info.nar_hash);
            assert!(info.registration_time > 1_600_000_000);
            assert!(info.ca.is_none() && info.sigs.is_empty());
        }
        assert!(s.results.iter().all(|(_, status)| status.is_success()), "{:?}", s.results);
    }
    let top_info = s1.infos.iter().find(|(p, _)| p == TOP).unwrap().1.clone().unwrap();
    // `top` copies its inputs' contents, not their paths: no references.
    assert!(top_info.references.is_empty(), "{:?}", top_info.references);
    assert_eq!(top_info.deriver.as_deref(), Some(TOP_DRV));
    (s0, s1)
}

#[test]
fn nix_2_8() {
    let (s0, s1) = check_common("nix-2.8.0");
    for s in [&s0, &s1] {
        assert_same_bytes(s, 0x122);
        assert_eq!(s.version, 0x122);
        assert_eq!(s.daemon_version.as_deref(), Some("2.8.0"));
        assert_eq!(s.trusted, None, "1.34 has no trust flag");
    }
    assert_eq!(s0.results, [(DEP_DRV.to_string(), BuildStatus::Built)]);
    assert_eq!(s1.results, [(TOP_DRV.to_string(), BuildStatus::Built)]);
    let t = texts(&s0.logs).join("");
    assert!(t.contains(&format!("building '{DEP_DRV}'")), "{t}");
}

#[test]
fn nix_2_34() {
    let (s0, s1) = check_common("nix-2.34.8");
    for s in [&s0, &s1] {
        assert_same_bytes(s, 0x126);
        assert_eq!(s.version, 0x126);
        assert_eq!(s.daemon_version.as_deref(), Some("2.34.8"));
        assert_eq!(s.trusted, Some(true));
    }
    assert_eq!(s0.results, [(DEP_DRV.to_string(), BuildStatus::Built)]);
    assert_eq!(s1.results, [(TOP_DRV.to_string(), BuildStatus::Built)]);
    assert_eq!(s1.uploaded, [INPUT]);
    let t = texts(&s1.logs).join("");
    assert!(t.contains(&format!("building '{TOP_DRV}'")), "{t}");
}

/// `nix-daemon --force-untrusted`: the hook uploads the `.drv` closure and asks for
/// `BuildPathsWithResults` of `drv!*` instead of `BuildDerivation`.
#[test]
fn nix_2_34_untrusted() {
    let (s0, s1) = check_common("nix-2.34.8-untrusted");
    for s in [&s0, &s1] {
        assert_same_bytes(s, 0x126);
        assert_eq!(s.trusted, Some(false));
    }
    assert_eq!(s0.results, [(format!("{DEP_DRV}!*"), BuildStatus::Built)]);
    assert_eq!(s1.results, [(format!("{TOP_DRV}!*"), BuildStatus::Built)]);
}
