//! `ExportReader` against `copy_export`: the same bytes, paths and errors for Nix's own export
//! stream and for every truncation and many corruptions of a stream with every kind of node.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nwh_nar::{
    copy_export, write_export_end, write_export_entry_header, write_export_entry_trailer, ExportError,
    ExportFramer, ExportReader, ExportedPath,
};
use nwh_wire::Writer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Reads the whole stream through `ExportReader`, `chunk` bytes per read.
fn through_reader(input: &[u8], chunk: usize) -> (Result<Vec<ExportedPath>, String>, Vec<u8>, usize) {
    let mut src = input;
    let mut r = ExportReader::new(&mut src);
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    let result = loop {
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let done = r.is_done();
    let (_, entries) = r.into_parts();
    let left = src.len();
    match result {
        Ok(()) => {
            assert!(done);
            (Ok(entries), out, left)
        }
        Err(e) => {
            let kind = e.kind();
            let inner = e.into_inner().expect("an ExportError inside");
            let export = inner.downcast::<ExportError>().expect("an ExportError inside");
            assert_eq!(
                kind,
                if export.is_truncated() { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::InvalidData }
            );
            (Err(format!("{export:?}")), out, left)
        }
    }
}

fn through_copy(input: &[u8]) -> (Result<Vec<ExportedPath>, String>, Vec<u8>, usize) {
    let mut src = input;
    let mut out = Vec::new();
    let result = copy_export(&mut src, &mut out).map_err(|e| format!("{e:?}"));
    (result, out, src.len())
}

/// Both agree; on success also on the bytes passed on and on where the source was left.
fn agree(input: &[u8], what: &str) {
    agree_in(input, what, &[1, 3, 8, 4096]);
}

fn agree_in(input: &[u8], what: &str, chunks: &[usize]) {
    let (copied, copied_out, copied_left) = through_copy(input);
    for &chunk in chunks {
        let (read, read_out, read_left) = through_reader(input, chunk);
        assert_eq!(read, copied, "{what}, chunk {chunk}");
        if copied.is_ok() {
            assert_eq!(read_out, copied_out, "{what}, chunk {chunk}");
            assert_eq!(read_left, copied_left, "{what}, chunk {chunk}");
        } else {
            // What was handed out is a prefix of the input.
            assert_eq!(read_out[..], input[..read_out.len()], "{what}, chunk {chunk}");
        }
    }
}

#[test]
fn nix_export_read_identically_and_no_further() {
    let stream = std::fs::read(fixture("two-paths.export")).unwrap();
    let mut tail = stream.clone();
    tail.extend_from_slice(b"after");
    for chunk in [1, 7, 64 * 1024] {
        let (entries, out, left) = through_reader(&tail, chunk);
        assert_eq!(out, stream);
        assert_eq!(left, 5);
        assert_eq!(entries.unwrap(), copy_export(&mut &stream[..], &mut io::sink()).unwrap());
    }
}

/// One stream with every kind of node, a signature and an empty entry list around.
fn rich_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for (i, nar) in ["hello.nar", "symlink.nar", "empty-dir.nar", "tree.nar"].iter().enumerate() {
        write_export_entry_header(&mut s).unwrap();
        s.extend_from_slice(&std::fs::read(fixture(nar)).unwrap());
        let path = format!("/nix/store/{}-p{i}", "0".repeat(32));
        let refs = vec![format!("/nix/store/{}-r", "1".repeat(32))];
        if i == 2 {
            // A legacy signature by hand.
            let mut w = Writer::new(&mut s);
            w.write_u64(0x4558_494e).unwrap();
            w.write_str(&path).unwrap();
            w.write_list(&refs).unwrap();
            w.write_str("").unwrap();
            w.write_u64(1).unwrap();
            w.write_str("legacy-signature").unwrap();
        } else {
            write_export_entry_trailer(&mut s, &path, &refs, Some("/nix/store/x-d.drv")).unwrap();
        }
    }
    write_export_end(&mut s).unwrap();
    s
}

#[test]
fn every_kind_of_node() {
    let stream = rich_stream();
    agree(&stream, "whole");
    let (entries, _, _) = through_reader(&stream, 5);
    let entries = entries.unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[0].nar.nar_hash(),
        std::fs::read_to_string(fixture("hello.nar.sha256"))
            .unwrap()
            .lines()
            .nth(1)
            .map(|h| format!("sha256:{h}"))
            .unwrap()
    );
}

#[test]
fn every_truncation_agrees() {
    let stream = rich_stream();
    for len in 0..stream.len() {
        agree(&stream[..len], &format!("cut at {len}"));
    }
}

#[test]
fn corruptions_agree() {
    let stream = rich_stream();
    for pos in 0..stream.len() {
        for change in [|b: u8| b ^ 0xff, |b: u8| b.wrapping_add(1), |_| 0, |_| b')'] {
            let mut bad = stream.clone();
            bad[pos] = change(bad[pos]);
            if bad != stream {
                agree_in(&bad, &format!("byte {pos} changed"), &[3, 4096]);
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_alike() {
    let mut nar = Writer::new(Vec::new());
    nar.write_str("nix-archive-1").unwrap();
    for _ in 0..300 {
        for t in ["(", "type", "directory", "entry", "(", "name", "d", "node"] {
            nar.write_str(t).unwrap();
        }
    }
    let mut s = Vec::new();
    write_export_entry_header(&mut s).unwrap();
    s.extend_from_slice(&nar.into_inner());
    agree(&s, "deep");
    let (result, _, _) = through_reader(&s, 64);
    assert!(result.unwrap_err().contains("TooDeep"));
}

#[test]
fn the_framer_keeps_its_place_between_sources() {
    // The state lives outside the source: read half through one borrow, half through another.
    let stream = std::fs::read(fixture("two-paths.export")).unwrap();
    let mut src = &stream[..];
    let mut framer = ExportFramer::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 100];
    for _ in 0..3 {
        let n = framer.read(&mut src, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    let mut again = &mut src;
    loop {
        let n = framer.read(&mut again, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, stream);
    assert!(framer.is_done());
    assert_eq!(framer.position(), stream.len() as u64);
    assert_eq!(framer.entries().len(), 2);
    // After the end, nothing more.
    assert_eq!(framer.read(&mut &b"more"[..], &mut buf).unwrap(), 0);
}
