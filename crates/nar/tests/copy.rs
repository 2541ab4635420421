//! `copy_nar` against NARs made by Nix 2.8 (`nix-store --dump`, fixtures/README.md) and against
//! broken ones.

use crate::common;

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use common::Nar;
use nwh_nar::{copy_nar, hash, NarError, NarSummary, Problem, MAX_DEPTH};
use nwh_wire::{Item, WireError};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn copy(bytes: &[u8]) -> (Result<NarSummary, NarError>, Vec<u8>) {
    let mut out = Vec::new();
    let mut r = bytes;
    let res = copy_nar(&mut r, &mut out);
    (res, out)
}

fn invalid(bytes: &[u8]) -> (u64, Problem) {
    match copy(bytes).0 {
        Err(NarError::Invalid { offset, problem }) => (offset, problem),
        other => panic!("expected an invalid-NAR error, got {other:?}"),
    }
}

/// docs/nar.md §3: a regular file containing `hello\n` is 120 bytes.
#[test]
fn hello_example_byte_for_byte() {
    let mut expect = Vec::new();
    let mut put = |n: u64, s: &[u8]| {
        expect.extend_from_slice(&n.to_le_bytes());
        expect.extend_from_slice(s);
        expect.resize(expect.len().div_ceil(8) * 8, 0);
    };
    put(13, b"nix-archive-1");
    put(1, b"(");
    put(4, b"type");
    put(7, b"regular");
    put(8, b"contents");
    put(6, b"hello\n");
    put(1, b")");
    assert_eq!(expect.len(), 120);

    let from_nix = std::fs::read(fixture("hello.nar")).unwrap();
    assert_eq!(from_nix, expect, "nix-store --dump of hello\\n differs from the spec's example");

    let (res, out) = copy(&expect);
    let summary = res.unwrap();
    assert_eq!(out, expect);
    assert_eq!(summary.size, 120);
    assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&expect)));
    // The same path's narHash as Nix 2.8 reports it (`nix-store -q --hash`, fixtures/README.md).
    assert_eq!(summary.nar_hash(), "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
}

#[test]
fn nix_dumps_copy_identically_with_nix_hash() {
    for name in ["hello", "symlink", "empty-dir", "tree"] {
        let nar = std::fs::read(fixture(&format!("{name}.nar"))).unwrap();
        let hashes = std::fs::read_to_string(fixture(&format!("{name}.nar.sha256"))).unwrap();
        let mut lines = hashes.lines();
        let (base16, base32) = (lines.next().unwrap(), lines.next().unwrap());

        let mut out = Vec::new();
        let mut r = BufReader::new(std::fs::File::open(fixture(&format!("{name}.nar"))).unwrap());
        let summary = copy_nar(&mut r, &mut out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out, nar, "{name}");
        assert_eq!(summary.size, nar.len() as u64, "{name}");
        assert_eq!(summary.sha256_base16(), base16, "{name}");
        assert_eq!(summary.nar_hash(), format!("sha256:{base32}"), "{name}");
        assert_eq!(hash::parse_sha256(base32), Some(summary.sha256));
        assert_eq!(hash::parse_sha256(base16), Some(summary.sha256));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn reads_nothing_after_the_nar() {
    let mut stream = std::fs::read(fixture("tree.nar")).unwrap();
    let nar_len = stream.len();
    stream.extend_from_slice(b"NEXT ITEM");
    let mut r = &stream[..];
    let mut out = Vec::new();
    let summary = copy_nar(&mut r, &mut out).unwrap();
    assert_eq!(summary.size, nar_len as u64);
    assert_eq!(r, b"NEXT ITEM");
    assert_eq!(out, &stream[..nar_len]);
}

#[test]
fn truncated_anywhere_is_an_error_at_or_before_the_cut() {
    let nar = std::fs::read(fixture("tree.nar")).unwrap();
    for cut in 0..nar.len() {
        let (res, out) = copy(&nar[..cut]);
        let err = res.expect_err("truncated NAR accepted");
        assert!(err.is_truncated(), "cut {cut}: {err}");
        let offset = err.offset().unwrap();
        assert!(offset <= cut as u64, "cut {cut}: offset {offset}");
        // What was written is exactly what was read.
        assert_eq!(out, &nar[..cut], "cut {cut}");
    }
    let err = copy(&[]).0.unwrap_err();
    assert!(matches!(err, NarError::Wire(WireError::Truncated { offset: 0, available: 0, .. })), "{err}");
}

#[test]
fn truncated_contents_report_the_contents() {
    let mut n = Nar::new();
    n.s("(").s("type").s("regular").s("contents");
    let len_at = n.len();
    n.u64(1000).raw(&[7u8; 100]);
    let err = copy(&n.bytes()).0.unwrap_err();
    match err {
        NarError::Wire(WireError::Truncated { what: Item::StringData, offset, needed, available }) => {
            assert_eq!((offset, needed, available), (len_at + 8, 1000, 100));
        }
        other => panic!("{other:?}"),
    }

    // A huge claimed length costs nothing but the bytes that actually arrive.
    let mut n = Nar::new();
    n.s("(").s("type").s("regular").s("contents").u64(u64::MAX / 2).raw(b"abc");
    assert!(copy(&n.bytes()).0.unwrap_err().is_truncated());
}

#[test]
fn wrong_magic() {
    let mut n = Nar(nwh_wire::Writer::new(Vec::new()));
    n.s("nix-archive-2");
    let (offset, problem) = invalid(&n.bytes());
    assert_eq!(offset, 0);
    assert_eq!(problem, Problem::Expected { expected: "'nix-archive-1'", found: "'nix-archive-2'".into() });

    // Garbage whose first word is a huge length is not believed.
    let (offset, problem) = invalid(b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk");
    assert_eq!(offset, 0);
    assert!(matches!(problem, Problem::Expected { expected: "'nix-archive-1'", .. }), "{problem:?}");
    assert!(problem.to_string().contains("a string of 9223372036854775807 bytes"), "{problem}");
}

#[test]
fn unknown_node_type_and_misplaced_tokens() {
    let mut n = Nar::new();
    n.s("(").s("type");
    let at = n.len();
    n.s("fifo").s(")");
    let (offset, problem) = invalid(&n.bytes());
    assert_eq!(offset, at);
    assert_eq!(problem.to_string(), "expected 'regular', 'symlink' or 'directory', found 'fifo'");

    let mut n = Nar::new();
    n.s("(").s("type").s("regular");
    let at = n.len();
    n.s("target").s("x").s(")");
    assert_eq!(invalid(&n.bytes()).0, at);

    // A node that ends without contents is not canonical.
    let mut n = Nar::new();
    n.s("(").s("type").s("regular");
    let at = n.len();
    n.s(")");
    let (offset, problem) = invalid(&n.bytes());
    assert_eq!(offset, at);
    assert_eq!(problem.to_string(), "expected 'executable' or 'contents', found ')'");

    let mut n = Nar::new();
    n.s("(").s("type").s("regular").s("executable").s("");
    let at = n.len();
    n.s("executable").s("").s("contents").s("x").s(")");
    assert_eq!(
        invalid(&n.bytes()),
        (at, Problem::Expected { expected: "'contents'", found: "'executable'".into() })
    );

    let mut n = Nar::new();
    n.s("(").s("type").s("regular").s("executable");
    let at = n.len();
    n.s("yes").s("contents").s("x").s(")");
    assert_eq!(invalid(&n.bytes()), (at, Problem::NonEmptyExecutableMarker));

    // Unprintable bytes are escaped in messages.
    let mut n = Nar::new();
    let at = n.len();
    n.s(b"\x01(\n");
    let (offset, problem) = invalid(&n.bytes());
    assert_eq!(offset, at);
    assert_eq!(problem.to_string(), "expected '(', found '\\x01(\\n'");
}

#[test]
fn directory_entries_must_be_sorted_unique_and_plain() {
    fn dir_with(names: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut n = Nar::new();
        n.dir_start();
        let mut name_offsets = Vec::new();
        for name in names {
            n.s("entry").s("(").s("name");
            name_offsets.push(n.len());
            n.s(name).s("node").file(b"", false).close();
        }
        n.close();
        (n.bytes(), name_offsets)
    }

    let (ok, _) = dir_with(&[b"A", b"B", b"a", b"a.b", b"b"]);
    assert_eq!(copy(&ok).0.unwrap().size, ok.len() as u64);

    let (nar, at) = dir_with(&[b"a", b"c", b"b"]);
    assert_eq!(invalid(&nar), (at[2], Problem::Unsorted { previous: "c".into(), name: "b".into() }));

    let (nar, at) = dir_with(&[b"a", b"a"]);
    let (offset, problem) = invalid(&nar);
    assert_eq!((offset, &problem), (at[1], &Problem::Unsorted { previous: "a".into(), name: "a".into() }));
    assert!(problem.to_string().contains("sorted and unique"));

    for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"nul\0byte"] {
        let (nar, at) = dir_with(&[b"0", bad]);
        let (offset, problem) = invalid(&nar);
        assert_eq!(offset, at[1], "{bad:?}");
        assert!(matches!(problem, Problem::BadEntryName { .. }), "{bad:?}: {problem:?}");
    }

    let long = vec![b'x'; 256];
    let (nar, at) = dir_with(&[&long]);
    assert_eq!(invalid(&nar), (at[0], Problem::TooLong { what: "entry name", len: 256, max: 255 }));
    let (nar, _) = dir_with(&[&long[..255]]);
    copy(&nar).0.unwrap();

    // Something other than an entry inside a directory.
    let mut n = Nar::new();
    n.dir_start();
    let at = n.len();
    n.s("contents");
    assert_eq!(
        invalid(&n.bytes()),
        (at, Problem::Expected { expected: "'entry' or ')'", found: "'contents'".into() })
    );
}

#[test]
fn symlink_targets() {
    let mut n = Nar::new();
    n.s("(").s("type").s("symlink").s("target");
    let at = n.len();
    n.s("").s(")");
    assert_eq!(invalid(&n.bytes()), (at, Problem::BadSymlinkTarget { target: String::new() }));

    let mut n = Nar::new();
    n.symlink(&[b'a'; 4095]);
    copy(&n.bytes()).0.unwrap();

    let mut n = Nar::new();
    n.s("(").s("type").s("symlink").s("target");
    let at = n.len();
    n.s([b'a'; 4096]).s(")");
    assert_eq!(invalid(&n.bytes()), (at, Problem::TooLong { what: "symlink target", len: 4096, max: 4095 }));
}

#[test]
fn nesting_depth_is_bounded() {
    fn nested(depth: usize) -> Vec<u8> {
        let mut n = Nar::new();
        for _ in 0..depth {
            n.dir_start().entry_start("d");
        }
        n.file(b"leaf", true);
        for _ in 0..depth {
            n.close().close();
        }
        n.bytes()
    }
    copy(&nested(MAX_DEPTH)).0.unwrap();
    let (_, problem) = invalid(&nested(MAX_DEPTH + 1));
    assert_eq!(problem, Problem::TooDeep);
}

#[test]
fn non_zero_padding() {
    let mut nar = std::fs::read(fixture("hello.nar")).unwrap();
    // The two padding bytes after "hello\n" start at 0x66.
    nar[0x67] = 1;
    match copy(&nar).0.unwrap_err() {
        NarError::Wire(WireError::NonZeroPadding { offset }) => assert_eq!(offset, 0x66),
        other => panic!("{other:?}"),
    }
    let mut nar = std::fs::read(fixture("hello.nar")).unwrap();
    nar[0x15] = b' '; // padding after "nix-archive-1"
    match copy(&nar).0.unwrap_err() {
        NarError::Wire(WireError::NonZeroPadding { offset }) => assert_eq!(offset, 0x15),
        other => panic!("{other:?}"),
    }
}

/// Accepts `limit` bytes, then fails.
struct FailingSink {
    limit: usize,
    got: Vec<u8>,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.got.len() + buf.len() > self.limit {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "sink is full"));
        }
        self.got.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_sink_is_reported_as_such() {
    let nar = std::fs::read(fixture("tree.nar")).unwrap();
    for limit in [0, 100, nar.len() - 1] {
        let mut sink = FailingSink { limit, got: Vec::new() };
        let err = copy_nar(&mut &nar[..], &mut sink).unwrap_err();
        match err {
            NarError::Sink(e) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
}

/// A source that returns one byte per read: the parser must not depend on read sizes.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn short_reads() {
    let nar = std::fs::read(fixture("tree.nar")).unwrap();
    let mut out = Vec::new();
    let summary = copy_nar(&mut Trickle(&nar), &mut out).unwrap();
    assert_eq!(out, nar);
    assert_eq!(summary.size, nar.len() as u64);
}

#[test]
fn hash_spellings() {
    let digest: [u8; 32] = Sha256::digest(b"").into();
    // `nix-hash --type sha256 --to-base32 e3b0c442…` on Nix 2.8.
    assert_eq!(hash::nix32_encode(&digest), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
    assert_eq!(
        hash::parse_sha256("sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
        Some(digest)
    );
    assert_eq!(hash::parse_sha256("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="), Some(digest));
    assert_eq!(
        hash::parse_sha256("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        Some(digest)
    );
    // The same hash in the nix32 and SRI forms of Nix's serve-protocol test data
    // (unkeyed-valid-path-info-2.4).
    assert_eq!(
        hash::parse_sha256("sha256:09ymwqf5i9q7d4dm7x4pjjcqqj0qrcp5lnznbh42gfsci5hcbqqm"),
        hash::parse_sha256("sha256-FePFYIlMuycIXPZbWi7LGEiMmZSX9FMbaQenWBzm1Sc="),
    );
    assert!(hash::parse_sha256("sha256:09ymwqf5i9q7d4dm7x4pjjcqqj0qrcp5lnznbh42gfsci5hcbqqm").is_some());
    assert_eq!(hash::parse_sha256("md5:abc"), None);
    assert_eq!(hash::parse_sha256(""), None);
    for _ in 0..3 {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let s = hash::nix32_encode(&bytes);
        assert_eq!(hash::nix32_decode::<32>(&s), Some(bytes));
    }
}
