//! Our `ServeClient` against our `ServeServer`, in two threads over a socket pair, for every
//! command at protocol 2.5, 2.6 and 2.7 (the client offering the lower version); and the
//! server's errors: bad greetings, unknown commands, cut-off input, bad payloads, misuse.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use common::{read_fixture, Bytes, Sent};
use nwh_drv::{BasicDerivation, Output};
use nwh_nar::{
    copy_export, copy_nar, write_export_end, write_export_entry_header, write_export_entry_trailer,
};
use nwh_serve::{
    BuildOptions, BuildPathsResult, BuildResult, BuildStatus, Command, PathInfo, RequestError, ServeClient,
    ServeError, ServeRequest, ServeServer, ServerError, SERVER_VERSION, SERVE_MAGIC_1, SERVE_MAGIC_2,
};

const HELLO: &str = "/nix/store/0a6m1r2wkq6ix6lwwgrqkzvcg4j0cb8x-hello";
const TREE: &str = "/nix/store/1b7n2s3xlr7jy7mxxhsrl0wdh5k1dc9y-tree";
const UPLOADED: &str = "/nix/store/2c8p3t4ymsz8kz8nyyitsm1xei6l2fdz-uploaded";
const OUT: &str = "/nix/store/3d9q4v5zn0a9l09pzzjvvn2yfj7m3gf0-built";
const DRV: &str = "/nix/store/4far5w6ap1baml0qa0kwwp3zgk8n4hg1-built.drv";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn info_of(nar: &[u8], references: &[&str], deriver: Option<&str>) -> PathInfo {
    let summary = copy_nar(&mut &nar[..], &mut std::io::sink()).unwrap();
    PathInfo {
        deriver: deriver.map(str::to_string),
        references: set(references),
        download_size: summary.size,
        nar_size: summary.size,
        nar_hash: summary.nar_hash(),
        ca: None,
        sigs: set(&["cache.example-1:c2lnbmF0dXJl"]),
    }
}

/// A builder with a store of a few paths, serving one connection.
struct FakeStore {
    paths: BTreeMap<String, (PathInfo, Vec<u8>)>,
}

impl FakeStore {
    fn new() -> FakeStore {
        let hello = read_fixture("hello.nar");
        let tree =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../nar/tests/fixtures/tree.nar")).unwrap();
        let mut paths = BTreeMap::new();
        paths.insert(HELLO.to_string(), (info_of(&hello, &[], None), hello));
        paths.insert(TREE.to_string(), (info_of(&tree, &[HELLO], Some(DRV)), tree));
        FakeStore { paths }
    }

    fn export(&self, paths: &BTreeSet<String>) -> Vec<u8> {
        let mut out = Vec::new();
        for path in paths {
            let (info, nar) = &self.paths[path];
            write_export_entry_header(&mut out).unwrap();
            out.extend_from_slice(nar);
            write_export_entry_trailer(&mut out, path, &info.references, info.deriver.as_deref()).unwrap();
        }
        write_export_end(&mut out).unwrap();
        out
    }

    /// Serves until the client hangs up; returns the requests, with the version used.
    fn serve(mut self, stream: UnixStream) -> (u64, Vec<ServeRequest>) {
        let mut server = ServeServer::handshake(stream.try_clone().unwrap(), stream).unwrap();
        let version = server.version();
        let mut log = Vec::new();
        while let Some(request) = server.next_request().unwrap() {
            self.answer(&mut server, &request);
            log.push(request);
        }
        (version, log)
    }

    fn answer(&mut self, server: &mut Server, request: &ServeRequest) {
        match request {
            ServeRequest::QueryValidPaths { paths, .. } => {
                server.reply_valid_paths(paths.iter().filter(|p| self.paths.contains_key(*p))).unwrap()
            }
            ServeRequest::QueryPathInfos { paths } => {
                let infos: Vec<(String, PathInfo)> = paths
                    .iter()
                    .filter_map(|p| self.paths.get(p).map(|(info, _)| (p.clone(), info.clone())))
                    .collect();
                server.reply_path_infos(&infos).unwrap();
            }
            ServeRequest::DumpStorePath { path } => {
                let summary = server.reply_nar(&mut &self.paths[path].1[..]).unwrap();
                assert_eq!(summary.size, self.paths[path].0.nar_size);
            }
            ServeRequest::ImportPaths => {
                self.import(server);
                server.reply_ok().unwrap();
            }
            ServeRequest::ExportPaths { paths } => {
                let stream = self.export(paths);
                server.reply_export(&mut &stream[..]).unwrap();
            }
            ServeRequest::BuildPaths { paths, .. } => {
                server.reply_build_paths(&self.build_paths(paths)).unwrap()
            }
            ServeRequest::QueryClosure { paths, .. } => server.reply_closure(self.closure(paths)).unwrap(),
            ServeRequest::BuildDerivation { drv_path, drv, .. } => {
                let result = self.build(drv_path, drv);
                server.reply_build_result(&result).unwrap();
            }
            ServeRequest::AddToStoreNar { path, info, .. } => {
                let mut nar = Vec::new();
                let summary = server.read_nar(&mut nar).unwrap();
                assert_eq!(summary.size, info.nar_size);
                self.paths.insert(path.clone(), (info.clone(), nar));
                server.reply_ok().unwrap();
            }
        }
    }

    /// Takes in the export stream of an ImportPaths.
    fn import(&mut self, server: &mut Server) {
        // Through the reader, checked again on the way into our "store".
        let mut stream = Vec::new();
        server.export_reader().unwrap().read_to_end(&mut stream).unwrap();
        let mut nars = Vec::new();
        let mut rest = &stream[..];
        for entry in copy_export(&mut &stream[..], &mut std::io::sink()).unwrap() {
            rest = &rest[8..];
            let mut nar = Vec::new();
            copy_nar(&mut rest, &mut nar).unwrap();
            // Skip the entry's trailer: magic, path, references, deriver, flag.
            let mut r = nwh_wire::Reader::new(&mut rest);
            r.read_u64().unwrap();
            r.read_string().unwrap();
            r.read_string_list().unwrap();
            r.read_string().unwrap();
            r.read_u64().unwrap();
            nars.push((entry, nar));
        }
        for (entry, nar) in nars {
            let refs: Vec<&str> = entry.references.iter().map(String::as_str).collect();
            let info = info_of(&nar, &refs, entry.deriver.as_deref());
            self.paths.insert(entry.path, (info, nar));
        }
    }

    /// Builds nothing: succeeds when every path is there already.
    fn build_paths(&self, paths: &[String]) -> BuildPathsResult {
        let missing: Vec<&String> = paths.iter().filter(|p| !self.paths.contains_key(*p)).collect();
        if missing.is_empty() {
            BuildPathsResult::default()
        } else {
            BuildPathsResult { status: 1, error_msg: format!("cannot build {missing:?}") }
        }
    }

    fn closure(&self, paths: &BTreeSet<String>) -> BTreeSet<String> {
        let mut closure = BTreeSet::new();
        let mut todo: Vec<String> = paths.iter().cloned().collect();
        while let Some(p) = todo.pop() {
            if let Some((info, _)) = self.paths.get(&p) {
                if closure.insert(p.clone()) {
                    todo.extend(info.references.iter().cloned());
                }
            }
        }
        closure
    }

    /// "Builds" DRV: its output appears in the store, with hello.nar as contents.
    fn build(&mut self, drv_path: &str, drv: &BasicDerivation) -> BuildResult {
        let mut result = BuildResult::new(BuildStatus::Built, "");
        result.times_built = 1;
        result.start_time = 1_700_000_000;
        result.stop_time = 1_700_000_002;
        for (name, out) in &drv.outputs {
            let id = format!("sha256:{}!{name}", "ab".repeat(32));
            let base = out.path.trim_start_matches("/nix/store/");
            result.built_outputs.insert(
                id.clone(),
                format!(r#"{{"dependentRealisations":{{}},"id":"{id}","outPath":"{base}","signatures":[]}}"#),
            );
        }
        assert_eq!(drv_path, DRV);
        let nar = read_fixture("hello.nar");
        self.paths.insert(OUT.to_string(), (info_of(&nar, &[], Some(DRV)), nar));
        result
    }
}

type Server = ServeServer<UnixStream, UnixStream>;
type Client = ServeClient<UnixStream, UnixStream>;

fn basic_drv() -> BasicDerivation {
    BasicDerivation {
        outputs: BTreeMap::from([(
            "out".to_string(),
            Output { path: OUT.to_string(), hash_algo: String::new(), hash: String::new() },
        )]),
        input_srcs: set(&[HELLO, UPLOADED]),
        platform: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), "echo hello > $out".into()],
        env: BTreeMap::from([("out".to_string(), OUT.to_string()), ("name".into(), "built".into())]),
    }
}

/// Every command, client against server, at `offered`.
fn session(offered: u64) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || FakeStore::new().serve(theirs));
    let mut c = ServeClient::handshake_offering("fake", ours.try_clone().unwrap(), ours, offered).unwrap();
    assert_eq!((c.remote_version(), c.version()), (SERVER_VERSION, offered));
    let minor = offered & 0xff;
    let store = FakeStore::new();

    let ask = set(&[HELLO, TREE, UPLOADED]);
    queries(&mut c, &store, &ask, minor);
    downloads(&mut c, &store);
    let info = uploads(&mut c, &store);
    let options =
        BuildOptions { max_silent_time: 60, build_timeout: 3600, max_log_size: 1 << 20, keep_failed: true };
    builds(&mut c, &options, minor);
    drop(c);

    let (version, log) = server.join().unwrap();
    assert_eq!(version, offered);
    check_requests(&log, ask, &info, options, minor);
}

fn queries(c: &mut Client, store: &FakeStore, ask: &BTreeSet<String>, minor: u64) {
    assert_eq!(c.query_valid_paths(ask, true, false).unwrap(), set(&[HELLO, TREE]));
    let infos = c.query_path_infos(ask).unwrap();
    assert_eq!(infos.len(), 2);
    for (path, info) in &infos {
        assert_eq!(*info, store.paths[path].0, "{path} at 2.{minor}");
    }
    assert_eq!(c.query_closure([TREE], false).unwrap(), set(&[HELLO, TREE]));
}

fn downloads(c: &mut Client, store: &FakeStore) {
    let mut nar = Vec::new();
    let summary = c.dump_store_path(TREE, &mut nar).unwrap();
    assert_eq!(nar, store.paths[TREE].1);
    assert_eq!(summary.nar_hash(), store.paths[TREE].0.nar_hash);
    let mut exported = Vec::new();
    let entries = c.export_paths([TREE, HELLO], &mut exported).unwrap();
    assert_eq!(exported, store.export(&set(&[HELLO, TREE])));
    assert_eq!(entries.len(), 2);
}

/// AddToStoreNar, then ImportPaths of what it exported, under a new name; returns the info
/// uploaded with AddToStoreNar.
fn uploads(c: &mut Client, store: &FakeStore) -> PathInfo {
    let nar = read_fixture("hello.nar");
    let info = PathInfo { ca: Some("fixed:r:sha256:x".into()), ..info_of(&nar, &[HELLO], None) };
    c.add_to_store_nar(UPLOADED, &info, &mut &nar[..]).unwrap();
    let mut stream = Vec::new();
    write_export_entry_header(&mut stream).unwrap();
    stream.extend_from_slice(&store.paths[TREE].1);
    write_export_entry_trailer(
        &mut stream,
        "/nix/store/5gbs6x7bq2cbnm1rb1lxxq4ahl9o5ih2-imported",
        &set(&[HELLO]),
        None,
    )
    .unwrap();
    write_export_end(&mut stream).unwrap();
    let imported = c.import_paths(&mut &stream[..]).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        c.query_valid_paths(["/nix/store/5gbs6x7bq2cbnm1rb1lxxq4ahl9o5ih2-imported", UPLOADED], false, false)
            .unwrap()
            .len(),
        2
    );
    info
}

fn builds(c: &mut Client, options: &BuildOptions, minor: u64) {
    let result = c.build_derivation(DRV, &basic_drv(), options).unwrap();
    assert_eq!(result.status, BuildStatus::Built);
    assert_eq!((result.times_built, result.start_time, result.stop_time), (1, 1_700_000_000, 1_700_000_002));
    if minor >= 6 {
        assert_eq!(
            result.built_output_paths("/nix/store").unwrap(),
            BTreeMap::from([("out".into(), OUT.into())])
        );
    } else {
        assert!(result.built_outputs.is_empty());
    }
    assert_eq!(c.build_paths([OUT], options).unwrap(), BuildPathsResult::default());
    let failed = c.build_paths(["/nix/store/x-missing.drv!out"], options).unwrap();
    assert_eq!(
        (failed.status, failed.error_msg.as_str()),
        (1, r#"cannot build ["/nix/store/x-missing.drv!out"]"#)
    );
}

/// What the server received: the session's requests in order, as the client was asked to
/// send them.
fn check_requests(
    log: &[ServeRequest],
    ask: BTreeSet<String>,
    info: &PathInfo,
    options: BuildOptions,
    minor: u64,
) {
    let names: Vec<&str> = log.iter().map(ServeRequest::name).collect();
    assert_eq!(
        names,
        [
            "QueryValidPaths",
            "QueryPathInfos",
            "QueryClosure",
            "DumpStorePath",
            "ExportPaths",
            "AddToStoreNar",
            "ImportPaths",
            "QueryValidPaths",
            "BuildDerivation",
            "BuildPaths",
            "BuildPaths"
        ]
    );
    assert_eq!(log[0], ServeRequest::QueryValidPaths { lock: true, substitute: false, paths: ask });
    let ServeRequest::AddToStoreNar { path, info: got, registration_time, ultimate } = &log[5] else {
        panic!()
    };
    assert_eq!((path.as_str(), *registration_time, *ultimate), (UPLOADED, 0, false));
    // The client sends the hash in base 16; everything else as given.
    assert_eq!(
        got.nar_hash,
        nwh_nar::hash::base16_encode(&nwh_nar::hash::parse_sha256(&info.nar_hash).unwrap())
    );
    assert_eq!(PathInfo { nar_hash: info.nar_hash.clone(), ..got.clone() }, *info);
    // The options as far as the version carries them: keep-failed only from 2.7 on.
    let expected_options = BuildOptions { keep_failed: minor >= 7, ..options };
    assert_eq!(
        log[8],
        ServeRequest::BuildDerivation { drv_path: DRV.into(), drv: basic_drv(), options: expected_options }
    );
    assert_eq!(log[9], ServeRequest::BuildPaths { paths: vec![OUT.into()], options: expected_options });
}

#[test]
fn every_command_at_2_7() {
    session(0x207);
}

#[test]
fn every_command_at_2_6() {
    session(0x206);
}

#[test]
fn every_command_at_2_5() {
    session(0x205);
}

// ---------------------------------------------------------------------------------------
// Errors, with scripted input

fn greeting(version: u64) -> Bytes {
    Bytes::default().u64(SERVE_MAGIC_1).u64(version)
}

type Scripted = ServeServer<Cursor<Vec<u8>>, Sent>;

fn server_with(input: Bytes) -> (Scripted, Sent) {
    let sent = Sent::default();
    (ServeServer::handshake(Cursor::new(input.0), sent.clone()).unwrap(), sent)
}

fn handshake_err(input: &[u8]) -> (ServerError, Sent) {
    let sent = Sent::default();
    (ServeServer::handshake(Cursor::new(input.to_vec()), sent.clone()).unwrap_err(), sent)
}

#[test]
fn handshake() {
    let (s, sent) = server_with(greeting(0x207));
    assert_eq!((s.client_version(), s.version()), (0x207, 0x207));
    assert_eq!(sent.bytes(), Bytes::default().u64(SERVE_MAGIC_2).u64(0x207).0);
    // A newer client gets ours; an older one is met at its version.
    for (offered, used) in [(0x208, 0x207), (0x2ff, 0x207), (0x205, 0x205), (0x200, 0x200)] {
        let (s, _) = server_with(greeting(offered));
        assert_eq!(s.version(), used);
    }
}

#[test]
fn handshake_errors() {
    let (err, sent) = handshake_err(b"GET / HTTP/1.1\r\n");
    assert!(matches!(err, ServerError::ProtocolMismatch { got: 0x5448_202f_2054_4547 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "'nix-store --serve' protocol mismatch: the client began with 'GET / HT' (0x5448202f20544547), \
         not the serve magic 0x390c9deb"
    );
    assert!(sent.bytes().is_empty(), "nothing is answered to a stranger");

    let (err, sent) = handshake_err(&greeting(0x307).0);
    assert!(matches!(err, ServerError::UnsupportedVersion { version: 0x307 }), "{err:?}");
    assert_eq!(err.to_string(), "the client speaks 'nix-store --serve' protocol 3.7; only 2.x is supported");
    // Our greeting went out before the client's version came (as Nix's server does it).
    assert_eq!(sent.bytes(), Bytes::default().u64(SERVE_MAGIC_2).u64(0x207).0);

    for input in [&b""[..], &[0xeb, 0x9d], &SERVE_MAGIC_1.to_le_bytes(), &greeting(0x207).0[..12]] {
        let (err, _) = handshake_err(input);
        assert!(matches!(err, ServerError::Eof { during: "the handshake" }), "{err:?}");
        assert!(err.is_disconnect());
        assert_eq!(err.to_string(), "the connection to the client closed during the handshake");
    }
}

#[test]
fn clean_end_and_unknown_command() {
    let (mut s, _) = server_with(greeting(0x207));
    assert!(s.next_request().unwrap().is_none());
    assert!(s.next_command().unwrap().is_none(), "and again");

    for code in [0, 10, 42, u64::MAX] {
        let (mut s, _) = server_with(greeting(0x207).u64(code).u64(0));
        let err = s.next_request().unwrap_err();
        assert!(matches!(err, ServerError::UnknownCommand { code: c } if c == code), "{err:?}");
        assert_eq!(err.to_string(), format!("the client sent unknown command {code}"));
        assert!(matches!(s.next_request().unwrap_err(), ServerError::Poisoned));
    }
}

/// Every prefix of a real session (Nix 2.34.8's hook building with an upload) ends either
/// cleanly between two requests or with `Eof`: never a panic, never another error.
#[test]
fn truncated_input_is_eof() {
    let full = read_fixture("localhost/nix-2.34.8/session1.client.bin");
    let mut clean_ends = 0;
    for len in 16..full.len() {
        let mut s = ServeServer::handshake(Cursor::new(full[..len].to_vec()), std::io::sink()).unwrap();
        let result = (|| -> Result<(), ServerError> {
            while let Some(request) = s.next_request()? {
                match request {
                    ServeRequest::AddToStoreNar { .. } => {
                        s.read_nar(&mut std::io::sink())?;
                        s.reply_ok()?
                    }
                    ServeRequest::QueryValidPaths { .. } => s.reply_valid_paths::<_, &str>([])?,
                    ServeRequest::QueryPathInfos { .. } => s.reply_path_infos(&[])?,
                    ServeRequest::BuildDerivation { .. } => {
                        s.reply_build_result(&BuildResult::new(BuildStatus::Built, ""))?
                    }
                    ServeRequest::DumpStorePath { .. } => {
                        s.reply_nar(&mut &read_fixture("hello.nar")[..])?;
                    }
                    other => panic!("{other:?}"),
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => clean_ends += 1,
            Err(ServerError::Eof { .. }) => {}
            Err(e) => panic!("cut at {len}: {e:?}"),
        }
    }
    assert_eq!(clean_ends, 8, "one per request boundary");
}

#[test]
fn bad_requests() {
    // Non-zero padding in a path: out of step.
    let mut input = greeting(0x207).u64(3).u64(1).0;
    input.extend_from_slice(b"x\x01\0\0\0\0\0\0");
    let (mut s, _) = server_with(Bytes(input));
    let err = s.next_request().unwrap_err();
    assert!(matches!(err, ServerError::Wire { during: "DumpStorePath", .. }), "{err:?}");
    assert_eq!(err.to_string(), "invalid DumpStorePath request from the client");

    // Repeated builds, as current Nix and Lix servers refuse them.
    let drv = {
        let mut w = nwh_wire::Writer::new(Vec::new());
        basic_drv().write_to(&mut w).unwrap();
        w.into_inner()
    };
    let input = greeting(0x207).u64(8).s(DRV).raw(&drv).u64(0).u64(0).u64(0).u64(2).u64(1).u64(0);
    let (mut s, _) = server_with(input);
    let err = s.next_request().unwrap_err();
    assert!(
        matches!(
            &err,
            ServerError::Refused {
                command: Command::BuildDerivation,
                source: RequestError::Repeats { nr_repeats: 2 }
            }
        ),
        "{err:?}"
    );
    // enforceDeterminism alone (Nix 2.8 sends 1) is fine.
    let input = greeting(0x207).u64(8).s(DRV).raw(&drv).u64(0).u64(0).u64(0).u64(0).u64(1).u64(0);
    let (mut s, _) = server_with(input);
    assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::BuildDerivation { .. })));

    // AddToStoreNar with a hash that is no sha256, or without a size.
    let add = |hash: &str, size: u64| {
        greeting(0x207).u64(9).s(UPLOADED).s("").s(hash).list(&[]).u64(0).u64(size).u64(0).list(&[]).s("")
    };
    let (mut s, _) = server_with(add("md5:abc", 120));
    let err = s.next_request().unwrap_err();
    assert!(
        matches!(&err, ServerError::Refused { source: RequestError::InvalidNarHash(h), .. } if h == "md5:abc")
    );
    let (mut s, _) = server_with(add(&"0".repeat(64), 0));
    assert!(matches!(
        s.next_request().unwrap_err(),
        ServerError::Refused { source: RequestError::ZeroNarSize, .. }
    ));
}

fn add_request(nar: &[u8], hash: &str, size: u64) -> Bytes {
    greeting(0x207)
        .u64(9)
        .s(UPLOADED)
        .s("")
        .s(hash)
        .list(&[])
        .u64(0)
        .u64(size)
        .u64(0)
        .list(&[])
        .s("")
        .raw(nar)
}

const HELLO_HASH: &str = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";

#[test]
fn nar_payloads() {
    let nar = read_fixture("hello.nar");

    // Read whole and checked, answered, and the next request lines up.
    let (mut s, sent) = server_with(add_request(&nar, HELLO_HASH, 120).u64(3).s(HELLO));
    assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::AddToStoreNar { .. })));
    let mut got = Vec::new();
    assert_eq!(s.read_nar(&mut got).unwrap().size, 120);
    assert_eq!(got, nar);
    s.reply_ok().unwrap();
    assert_eq!(s.next_request().unwrap(), Some(ServeRequest::DumpStorePath { path: HELLO.into() }));
    assert_eq!(sent.bytes()[16..], 1u64.to_le_bytes());

    // Read in part through the raw reader: reply_ok drops the rest.
    let (mut s, _) = server_with(add_request(&nar, HELLO_HASH, 120).u64(3).s(HELLO));
    s.next_request().unwrap();
    let mut part = [0u8; 50];
    let mut reader = s.nar_reader().unwrap();
    reader.read_exact(&mut part).unwrap();
    assert_eq!(reader.remaining(), 70);
    assert!(matches!(s.read_nar(&mut Vec::new()).unwrap_err(), ServerError::PayloadStarted { .. }));
    s.reply_ok().unwrap();
    assert_eq!(s.next_request().unwrap(), Some(ServeRequest::DumpStorePath { path: HELLO.into() }));

    // Not read at all: the same.
    let (mut s, _) = server_with(add_request(&nar, HELLO_HASH, 120).u64(3).s(HELLO));
    s.next_request().unwrap();
    s.reply_ok().unwrap();
    assert_eq!(s.next_request().unwrap(), Some(ServeRequest::DumpStorePath { path: HELLO.into() }));

    // The wrong hash, the wrong size, not a NAR, cut off.
    let (mut s, _) = server_with(add_request(&nar, &"0".repeat(64), 120));
    s.next_request().unwrap();
    let err = s.read_nar(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServerError::NarHashMismatch { .. }), "{err:?}");
    assert!(matches!(s.reply_ok().unwrap_err(), ServerError::Poisoned));

    let mut longer = nar.clone();
    longer.extend_from_slice(&[0; 8]);
    let (mut s, _) = server_with(add_request(&longer, HELLO_HASH, 128));
    s.next_request().unwrap();
    let err = s.read_nar(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServerError::NarSizeMismatch { expected: 128, actual: 120, .. }), "{err:?}");

    let (mut s, _) = server_with(add_request(&nar[..100], HELLO_HASH, 100));
    s.next_request().unwrap();
    let err = s.read_nar(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServerError::NarTooLong { nar_size: 100, .. }), "{err:?}");

    let (mut s, _) = server_with(add_request(&[7u8; 120], HELLO_HASH, 120));
    s.next_request().unwrap();
    let err = s.read_nar(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServerError::BadNar { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("the client sent an invalid NAR for '{UPLOADED}'"));

    let (mut s, _) = server_with(add_request(&nar[..60], HELLO_HASH, 120));
    s.next_request().unwrap();
    let err = s.read_nar(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, ServerError::Eof { during: "AddToStoreNar" }), "{err:?}");
    let (mut s, _) = server_with(add_request(&nar[..60], HELLO_HASH, 120));
    s.next_request().unwrap();
    assert!(matches!(s.reply_ok().unwrap_err(), ServerError::Eof { during: "AddToStoreNar" }));
}

#[test]
fn export_payloads() {
    let stream = read_fixture("two-paths.export");
    let input = || greeting(0x207).u64(4).raw(&stream).u64(1).u64(0).u64(0).u64(0);

    // Through the reader: it stops at the stream's end.
    let (mut s, _) = server_with(input());
    assert_eq!(s.next_request().unwrap(), Some(ServeRequest::ImportPaths));
    let mut got = Vec::new();
    let mut reader = s.export_reader().unwrap();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(reader.entries().len(), 2);
    assert_eq!(got, stream);
    s.reply_ok().unwrap();
    assert_eq!(
        s.next_request().unwrap(),
        Some(ServeRequest::QueryValidPaths { lock: false, substitute: false, paths: set(&[]) })
    );

    // Copied and checked.
    let (mut s, _) = server_with(input());
    s.next_request().unwrap();
    let mut got = Vec::new();
    assert_eq!(s.read_export(&mut got).unwrap().len(), 2);
    assert_eq!(got, stream);
    s.reply_ok().unwrap();
    assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::QueryValidPaths { .. })));

    // Not read: reply_ok reads it (checking it) and drops it.
    let (mut s, sent) = server_with(input());
    s.next_request().unwrap();
    s.reply_ok().unwrap();
    assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::QueryValidPaths { .. })));
    assert_eq!(sent.bytes()[16..], 1u64.to_le_bytes());

    // Bad and cut-off streams.
    let mut bad = stream.clone();
    bad[8 + 8] = b'X'; // inside "nix-archive-1"
    let (mut s, _) = server_with(greeting(0x207).u64(4).raw(&bad));
    s.next_request().unwrap();
    assert!(matches!(s.read_export(&mut Vec::new()).unwrap_err(), ServerError::BadExport(_)));
    let (mut s, _) = server_with(greeting(0x207).u64(4).raw(&bad));
    s.next_request().unwrap();
    let err = s.export_reader().unwrap().read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(s.reply_ok().unwrap_err(), ServerError::Poisoned));

    let (mut s, _) = server_with(greeting(0x207).u64(4).raw(&stream[..300]));
    s.next_request().unwrap();
    assert!(matches!(s.reply_ok().unwrap_err(), ServerError::Eof { during: "ImportPaths" }));
}

#[test]
fn replies_must_answer_the_request() {
    let (mut s, sent) = server_with(greeting(0x207).u64(3).s(HELLO).u64(3).s(HELLO));
    let err = s.reply_valid_paths::<_, &str>([]).unwrap_err();
    assert_eq!(err.to_string(), "reply_valid_paths answers nothing: no request is waiting for a reply");
    s.next_request().unwrap();
    let err = s.next_request().unwrap_err();
    assert!(matches!(err, ServerError::NotAnswered { command: Command::DumpStorePath }), "{err:?}");
    assert_eq!(err.to_string(), "DumpStorePath from the client has not been answered");
    let err = s.reply_ok().unwrap_err();
    assert_eq!(err.to_string(), "reply_ok does not answer DumpStorePath");
    assert!(matches!(s.nar_reader().unwrap_err(), ServerError::WrongReply { .. }));
    assert_eq!(sent.bytes().len(), 16, "nothing sent by the refused calls");

    // A sink dropped before anything was written leaves the request open.
    drop(s.nar_sink());
    let mut sink = s.nar_sink();
    sink.write_all(&read_fixture("hello.nar")).unwrap();
    sink.finish().unwrap();
    assert_eq!(sent.bytes()[16..], read_fixture("hello.nar")[..]);
    assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::DumpStorePath { .. })));

    // A sink dropped in the middle of a NAR breaks the connection.
    let mut sink = s.nar_sink();
    sink.write_all(b"nix-archive-1").unwrap();
    drop(sink);
    assert!(matches!(s.next_request().unwrap_err(), ServerError::Poisoned));

    // A sink that answers nothing refuses to write and says why.
    let (mut s, _) = server_with(greeting(0x207));
    let mut sink = s.nar_sink();
    assert!(sink.write_all(b"x").is_err());
    assert!(matches!(sink.finish().unwrap_err(), ServerError::NoRequest { reply: "nar_sink" }));

    // An invalid NAR to send: found while it goes out.
    let (mut s, _) = server_with(greeting(0x207).u64(3).s(HELLO));
    s.next_request().unwrap();
    let err = s.reply_nar(&mut &b"not a nar at all"[..]).unwrap_err();
    assert!(matches!(err, ServerError::InvalidNar { during: "DumpStorePath", .. }), "{err:?}");
}

#[test]
fn replies_follow_the_version() {
    let result = BuildResult {
        times_built: 2,
        start_time: 5,
        stop_time: 6,
        built_outputs: BTreeMap::from([("sha256:aa!out".to_string(), "{}".to_string())]),
        ..BuildResult::new(BuildStatus::PermanentFailure, "it broke")
    };
    let info = PathInfo { nar_hash: "sha256:x".into(), ..PathInfo::default() };
    // status, message; 4 words of times from 2.3; the built outputs from 2.6.
    let built_outputs = 8 + (8 + 16) + (8 + 8);
    // deriver, references, two sizes; hash, ca and signatures from 2.4.
    let hello_path = 8 + 56;
    for (version, result_len, info_len) in [
        (0x202, 8 + 16, 32),
        (0x205, 8 + 16 + 32, 32 + 16 + 8 + 8),
        (0x207, 8 + 16 + 32 + built_outputs, 32 + 16 + 8 + 8),
    ] {
        let drv = {
            let mut w = nwh_wire::Writer::new(Vec::new());
            basic_drv().write_to(&mut w).unwrap();
            BuildOptions::default().write_to(&mut w, version).unwrap();
            w.into_inner()
        };
        let (mut s, sent) = server_with(greeting(version).u64(8).s(DRV).raw(&drv).u64(2).list(&[HELLO]));
        s.next_request().unwrap();
        s.reply_build_result(&result).unwrap();
        assert_eq!(sent.bytes().len() - 16, result_len, "2.{}", version & 0xff);
        let bytes = sent.bytes();
        let mut r = nwh_wire::Reader::new(&bytes[16..]);
        assert_eq!(BuildResult::read_from(&mut r, version).unwrap().error_msg, "it broke");
        assert!(matches!(s.next_request().unwrap(), Some(ServeRequest::QueryPathInfos { .. })));
        let before = sent.bytes().len();
        s.reply_path_infos(&[(HELLO.to_string(), info.clone())]).unwrap();
        // the path, its info, and the empty string that ends the list
        assert_eq!(sent.bytes().len() - before, hello_path + info_len + 8, "2.{}", version & 0xff);
        let bytes = sent.bytes();
        let mut r = nwh_wire::Reader::new(&bytes[before + hello_path..]);
        assert_eq!(
            PathInfo::read_from(&mut r, version).unwrap().nar_hash,
            if version >= 0x204 { "sha256:x" } else { "" }
        );
    }
}

#[test]
fn a_client_that_went_away() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (gone_tx, gone) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut s = ServeServer::handshake(theirs.try_clone().unwrap(), theirs).unwrap();
        let request = s.next_request().unwrap();
        assert!(matches!(request, Some(ServeRequest::DumpStorePath { .. })));
        gone.recv().unwrap();
        s.reply_nar(&mut &read_fixture("hello.nar")[..]).unwrap_err()
    });
    let mut w = nwh_wire::Writer::new(ours.try_clone().unwrap());
    w.write_u64(SERVE_MAGIC_1).unwrap();
    w.write_u64(0x207).unwrap();
    w.write_u64(3).unwrap();
    w.write_str(TREE).unwrap();
    let mut greeting = [0u8; 16];
    (&ours).read_exact(&mut greeting).unwrap();
    drop(w);
    drop(ours);
    gone_tx.send(()).unwrap();
    let err = server.join().unwrap();
    assert!(matches!(err, ServerError::Eof { during: "DumpStorePath" }), "{err:?}");
    assert!(err.is_disconnect());
}

#[test]
fn client_errors_are_still_the_clients() {
    // The split kept the client's error type as it was.
    let err = ServeClient::handshake("h", &b""[..], Vec::new()).unwrap_err();
    assert!(matches!(err, ServeError::CannotConnect { .. }));
}
