//! Encodings per protocol version, against bytes written out by hand from Nix's sources
//! (worker-protocol.cc, serialise.cc, daemon.cc), and scripted conversations for the
//! handshake and the error paths.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use common::{Bytes, Sent};
use nwh_daemon::protocol::{STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_RESULT, STDERR_START_ACTIVITY};
use nwh_daemon::{
    BuildResult, BuildStatus, DaemonClient, DaemonError, Field, Frame, LogMessage, Options, RemoteError,
    WORKER_MAGIC_1, WORKER_MAGIC_2,
};
use nwh_wire::{Reader, Writer};

fn encode(f: impl FnOnce(&mut Writer<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut Writer::new(&mut out));
    out
}

fn sample_result() -> BuildResult {
    BuildResult {
        status: BuildStatus::Built,
        error_msg: String::new(),
        times_built: 1,
        is_non_deterministic: false,
        start_time: 30,
        stop_time: 50,
        cpu_user: Some(500_000_000),
        cpu_system: None,
        built_outputs: BTreeMap::from([(
            "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0!out".to_string(),
            r#"{"outPath":"abc-x"}"#.to_string(),
        )]),
    }
}

#[test]
fn build_result_per_version() {
    let r = sample_result();
    let head = Bytes::default().u64(0).str("");
    let times = |b: Bytes| b.u64(1).u64(0).u64(30).u64(50);
    let outputs = |b: Bytes| {
        b.u64(1)
            .str("sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0!out")
            .str(r#"{"outPath":"abc-x"}"#)
    };
    let cases = [
        (0x11b, head.clone().0),                                                // 1.27
        (0x11c, outputs(head.clone()).0),                                       // 1.28
        (0x122, outputs(times(head.clone())).0),                                // 1.34
        (0x125, outputs(times(head.clone()).u64(1).u64(500_000_000).u64(0)).0), // 1.37
        (0x126, outputs(times(head.clone()).u64(1).u64(500_000_000).u64(0)).0), // 1.38
    ];
    for (version, bytes) in cases {
        assert_eq!(encode(|w| r.write_to(w, version).unwrap()), bytes, "version {version:#x}");
        let back = BuildResult::read_from(&mut Reader::new(&bytes[..]), version).unwrap();
        let mut expect = r.clone();
        if version < 0x11d {
            (expect.times_built, expect.start_time, expect.stop_time) = (0, 0, 0);
        }
        if version < 0x125 {
            expect.cpu_user = None;
        }
        if version < 0x11c {
            expect.built_outputs.clear();
        }
        assert_eq!(back, expect, "version {version:#x}");
    }
    assert_eq!(
        r.built_output_paths("/nix/store").unwrap(),
        BTreeMap::from([("out".to_string(), "/nix/store/abc-x".to_string())])
    );
    // A duration tag other than 0 or 1 is refused, as Nix does.
    let bad = times(head).u64(2).0;
    assert!(BuildResult::read_from(&mut Reader::new(&bad[..]), 0x125).is_err());
}

#[test]
fn error_frame_per_version() {
    let e = RemoteError {
        message: "\u{1b}[31;1merror:\u{1b}[0m builder failed".into(),
        level: 0,
        traces: vec!["while building x".into()],
        exit_status: None,
    };
    // Since 1.26: "Error", level, "Error", message, no position, traces (position, hint).
    let new = Bytes::default()
        .u64(STDERR_ERROR)
        .str("Error")
        .u64(0)
        .str("Error")
        .str("\u{1b}[31;1merror:\u{1b}[0m builder failed")
        .u64(0)
        .u64(1)
        .u64(0)
        .str("while building x")
        .0;
    assert_eq!(encode(|w| Frame::Error(e.clone()).write_to(w, 0x126).unwrap()), new);
    assert_eq!(Frame::read_from(&mut Reader::new(&new[..]), 0x122).unwrap(), Frame::Error(e.clone()));
    // Before: the message and an exit status.
    let old = Bytes::default().u64(STDERR_ERROR).str("it failed").u64(100).0;
    let back = Frame::read_from(&mut Reader::new(&old[..]), 0x119).unwrap();
    assert_eq!(
        back,
        Frame::Error(RemoteError {
            message: "it failed".into(),
            level: 0,
            traces: vec![],
            exit_status: Some(100)
        })
    );
    // A position (never sent by any Nix) cannot be decoded.
    let pos = Bytes::default().u64(STDERR_ERROR).str("Error").u64(0).str("Error").str("m").u64(1).0;
    assert!(Frame::read_from(&mut Reader::new(&pos[..]), 0x126).is_err());
    assert_eq!(e.to_string(), "\u{1b}[31;1merror:\u{1b}[0m builder failed\n… while building x");
}

#[test]
fn log_frames() {
    let bytes = Bytes::default()
        .u64(STDERR_START_ACTIVITY)
        .u64(7)
        .u64(3)
        .u64(105)
        .str("building '/nix/store/x.drv'")
        .u64(2)
        .u64(1)
        .str("/nix/store/x.drv")
        .u64(0)
        .u64(1)
        .u64(0)
        .u64(STDERR_RESULT)
        .u64(7)
        .u64(101)
        .u64(1)
        .u64(1)
        .str("hi")
        .u64(STDERR_NEXT)
        .str("warning: x\n")
        .u64(0x1234)
        .0;
    let mut r = Reader::new(&bytes[..]);
    let start = Frame::read_from(&mut r, 0x126).unwrap();
    assert_eq!(
        start,
        Frame::Log(LogMessage::StartActivity {
            id: 7,
            level: 3,
            activity_type: 105,
            text: "building '/nix/store/x.drv'".into(),
            fields: vec![Field::String("/nix/store/x.drv".into()), Field::Int(1)],
            parent: 0,
        })
    );
    let result = Frame::read_from(&mut r, 0x126).unwrap();
    assert_eq!(
        result,
        Frame::Log(LogMessage::Result { id: 7, result_type: 101, fields: vec![Field::String("hi".into())] })
    );
    let next = Frame::read_from(&mut r, 0x126).unwrap();
    assert_eq!(next, Frame::Log(LogMessage::Next("warning: x\n".into())));
    assert!(Frame::read_from(&mut r, 0x126).is_err(), "unknown frame code");
    // Each re-encodes to the same bytes.
    let again = encode(|w| {
        for f in [&start, &result, &next] {
            f.write_to(w, 0x126).unwrap();
        }
    });
    assert_eq!(again[..], bytes[..bytes.len() - 8]);
}

#[test]
fn set_options_encoding() {
    let mut o = Options { build_cores: 4, max_silent_time: 60, ..Options::default() };
    o.overrides.insert("max-log-size".into(), "0".into());
    let expect = Bytes::default()
        .u64(0)
        .u64(0)
        .u64(0)
        .u64(3)
        .u64(1)
        .u64(60)
        .u64(1) // useBuildHook, obsolete
        .u64(0) // verbose build: lvlError
        .u64(0)
        .u64(0)
        .u64(4)
        .u64(0)
        .u64(1)
        .str("max-log-size")
        .str("0")
        .0;
    assert_eq!(encode(|w| o.write_to(w).unwrap()), expect);
}

type Scripted = DaemonClient<Cursor<Vec<u8>>, Sent>;

fn connect(server: Vec<u8>) -> (Result<Scripted, DaemonError>, Sent) {
    let sent = Sent::default();
    (DaemonClient::handshake("builder.example", Cursor::new(server), sent.clone()), sent)
}

#[test]
fn handshake_1_34_and_1_38() {
    // A Nix 2.8 daemon: no features, its version, no trust flag.
    let server = Bytes::default().u64(WORKER_MAGIC_2).u64(0x122).str("2.8.0").u64(STDERR_LAST).0;
    let (c, sent) = connect(server);
    let c = c.unwrap();
    assert_eq!((c.version(), c.daemon_version(), c.trusted()), (0x122, Some("2.8.0"), None));
    assert_eq!(sent.bytes(), Bytes::default().u64(WORKER_MAGIC_1).u64(0x126).u64(0).u64(0).0);

    // A current daemon: features both ways, then version and trust.
    let server = Bytes::default()
        .u64(WORKER_MAGIC_2)
        .u64(0x126)
        .strs(&["realisation-with-path-not-hash"])
        .str("2.35.2")
        .u64(2)
        .u64(STDERR_LAST)
        .0;
    let (c, sent) = connect(server);
    let c = c.unwrap();
    assert_eq!((c.version(), c.daemon_version(), c.trusted()), (0x126, Some("2.35.2"), Some(false)));
    assert_eq!(c.daemon_features(), &BTreeSet::from(["realisation-with-path-not-hash".to_string()]));
    assert_eq!(sent.bytes(), Bytes::default().u64(WORKER_MAGIC_1).u64(0x126).u64(0).u64(0).u64(0).0);

    // A newer minor version is answered with ours.
    let server = Bytes::default().u64(WORKER_MAGIC_2).u64(0x12a).u64(0).str("9").u64(1).u64(STDERR_LAST).0;
    assert_eq!(connect(server).0.unwrap().version(), 0x126);
}

#[test]
fn handshake_errors() {
    let (err, _) = connect(Vec::new());
    assert!(matches!(err.unwrap_err(), DaemonError::CannotConnect { .. }));
    let (err, _) = connect(b"Welcome!\nnix-daemon: command not found\n".to_vec());
    assert_eq!(
        err.unwrap_err().to_string(),
        "'nix-daemon' protocol mismatch from 'builder.example', got 'Welcome!\\nnix-daemon: command not found'"
    );
    let (err, _) = connect(Bytes::default().u64(WORKER_MAGIC_2).u64(0x20a).0);
    assert!(matches!(err.unwrap_err(), DaemonError::UnsupportedVersion { version: 0x20a, .. }));
    let (err, _) = connect(Bytes::default().u64(WORKER_MAGIC_2).u64(0x111).0);
    assert!(matches!(err.unwrap_err(), DaemonError::UnsupportedVersion { version: 0x111, .. }));
    // Closed half-way through.
    let (err, _) = connect(Bytes::default().u64(WORKER_MAGIC_2).u64(0x122).u64(5).0);
    let err = err.unwrap_err();
    assert!(err.is_disconnect(), "{err:?}");
    // A trust flag out of range.
    let (err, _) = connect(Bytes::default().u64(WORKER_MAGIC_2).u64(0x123).str("2.18").u64(3).0);
    assert!(matches!(err.unwrap_err(), DaemonError::BadReply { .. }));
    // A start-up error from the daemon, in its words.
    let server = Bytes::default()
        .u64(WORKER_MAGIC_2)
        .u64(0x122)
        .str("2.8.0")
        .u64(STDERR_ERROR)
        .str("Error")
        .u64(0)
        .str("Error")
        .str("cannot open store")
        .u64(0)
        .u64(0)
        .0;
    let err = connect(server).0.unwrap_err();
    assert_eq!(err.remote().map(|e| e.message.as_str()), Some("cannot open store"));
}

/// After the daemon's error frame the connection goes on; after a cut-off reply it is
/// poisoned; an operation the version lacks is refused without a word sent.
#[test]
fn errors_during_operations() {
    let paths = BTreeSet::from(["/nix/store/00000000000000000000000000000000-x".to_string()]);
    let server = Bytes::default()
        .u64(WORKER_MAGIC_2)
        .u64(0x122)
        .str("2.8.0")
        .u64(STDERR_LAST)
        .u64(STDERR_NEXT)
        .str("a log line\n")
        .u64(STDERR_ERROR)
        .str("Error")
        .u64(0)
        .str("Error")
        .str("path is not valid")
        .u64(0)
        .u64(0)
        .u64(STDERR_LAST)
        .u64(1) // a set of one path, cut off
        .0;
    let (c, _) = connect(server);
    let mut c = c.unwrap();
    let mut logs = Vec::new();
    let err = c.query_valid_paths(&paths, false, &mut |m| logs.push(m)).unwrap_err();
    assert_eq!(err.to_string(), "QueryValidPaths on 'builder.example' failed: path is not valid");
    assert_eq!(logs, [LogMessage::Next("a log line\n".into())]);
    let err = c.query_valid_paths(&paths, false, &mut |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "connection to 'builder.example' closed during QueryValidPaths");
    let err = c.query_valid_paths(&paths, false, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Poisoned { .. }));

    let server = Bytes::default().u64(WORKER_MAGIC_2).u64(0x11f).u64(STDERR_LAST).0; // 1.31: no version string
    let (c, sent) = connect(server);
    let mut c = c.unwrap();
    let before = sent.bytes().len();
    let err = c.add_multiple_to_store(&mut [], &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Unsupported { op: "AddMultipleToStore", version: 0x11f, .. }));
    assert_eq!(sent.bytes().len(), before);
}

/// `RegisterDrvOutput` (42): since 1.31 the realisation as one JSON string, `outPath` a base
/// name (daemon.cc and `Realisation::fromJSON` of Nix 2.8, the `Realisation` JSON of 2.34);
/// before, the id and the base name as two strings; before 1.27 not sent at all.
#[test]
fn register_drv_output_per_version() {
    use nwh_daemon::Realisation;
    let realisation = Realisation {
        id: "sha256:092b9758d0e28c67a6bb7fa7e5854c04059f5860075cddea1279e0920b245cd9!out".into(),
        out_path: "/nix/store/h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating".into(),
    };
    let json = r#"{"dependentRealisations":{},"id":"sha256:092b9758d0e28c67a6bb7fa7e5854c04059f5860075cddea1279e0920b245cd9!out","outPath":"h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating","signatures":[]}"#;
    assert_eq!(realisation.to_json(), json);
    let quoted = Realisation { id: "a\"b\\c\n".into(), out_path: "x".into() };
    assert!(quoted.to_json().contains(r#""id":"a\"b\\c\u000a""#), "{}", quoted.to_json());

    for (version, args) in [
        (0x122, Bytes::default().str(json).0),
        (0x126, Bytes::default().str(json).0),
        (
            0x11e,
            Bytes::default()
                .str(&realisation.id)
                .str("h5fi5f9xr3z7rxxj66jj4w7cxgyvqv8i-nwh-drvtest-floating")
                .0,
        ),
    ] {
        // The daemon's side of the handshake by version: features (1.38), its version (1.33),
        // the trust flag (1.35); then the end of the handshake and of the operation.
        let mut server = Bytes::default().u64(WORKER_MAGIC_2).u64(version);
        if version >= 0x126 {
            server = server.strs(&[]);
        }
        if version >= 0x121 {
            server = server.str("2.x");
        }
        if version >= 0x123 {
            server = server.u64(1);
        }
        let server = server.u64(STDERR_LAST).u64(STDERR_LAST).0;
        let (c, sent) = connect(server);
        let mut c = c.unwrap();
        let greeting = sent.bytes().len();
        c.register_drv_output(&realisation, &mut |_| {}).unwrap();
        let expect = [Bytes::default().u64(42).0, args].concat();
        assert_eq!(sent.bytes()[greeting..], expect[..], "{version:#x}");
    }

    // A daemon older than 1.27 has no such operation: refused, nothing sent.
    let (c, sent) = connect(Bytes::default().u64(WORKER_MAGIC_2).u64(0x11a).u64(STDERR_LAST).0);
    let mut c = c.unwrap();
    let greeting = sent.bytes().len();
    let err = c.register_drv_output(&realisation, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Unsupported { .. }), "{err:?}");
    assert_eq!(sent.bytes().len(), greeting);
}
