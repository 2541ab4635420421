//! Export streams: one made by `nix-store --export` of Nix 2.8 (fixtures/README.md) and ones
//! built with the crate's helpers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nwh_nar::{
    copy_export, copy_nar, write_export_end, write_export_entry_header, write_export_entry_trailer,
    ExportError, NarError, EXPORT_MAGIC,
};
use nwh_wire::WireError;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const H_TXT: &str = "/nix/store/hp4xhizqijy1k440fq06xfq6xpl37pf6-h.txt";
const REF: &str = "/nix/store/in3ba3zzj2x3abahz2m5q8wsxqgjxjqx-nwh-export-ref";
const REF_DRV: &str = "/nix/store/6krkpgpq6zg46rl8km7624z6i65fdy2d-nwh-export-ref.drv";

#[test]
fn nix_export_copies_identically() {
    let stream = std::fs::read(fixture("two-paths.export")).unwrap();
    let mut tail = stream.clone();
    tail.extend_from_slice(b"after");
    let mut r = &tail[..];
    let mut out = Vec::new();
    let entries = copy_export(&mut r, &mut out).unwrap();
    assert_eq!(out, stream);
    assert_eq!(r, b"after");

    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].path, H_TXT);
    assert!(entries[0].references.is_empty());
    assert_eq!(entries[0].deriver, None);
    // `nix-store -q --hash --size` of the same paths in the store they came from.
    assert_eq!(entries[0].nar.size, 120);
    assert_eq!(entries[0].nar.nar_hash(), "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
    assert_eq!(entries[1].path, REF);
    assert_eq!(entries[1].references, BTreeSet::from([H_TXT.to_string()]));
    assert_eq!(entries[1].deriver.as_deref(), Some(REF_DRV));
    assert_eq!(entries[1].nar.size, 576);
    assert_eq!(entries[1].nar.nar_hash(), "sha256:107ia1ycn5p252mrsywx31vanjpbyjq2xza5w8hdcx2jiwqlv9i2");
}

/// Rebuilds the fixture from its parts with the writing helpers.
#[test]
fn helpers_write_what_nix_writes() {
    let stream = std::fs::read(fixture("two-paths.export")).unwrap();
    let entries = copy_export(&mut &stream[..], &mut Vec::new()).unwrap();

    // Cut the NARs out of the fixture: each starts 8 bytes after its entry.
    let mut rest = &stream[8..];
    let mut nar1 = Vec::new();
    copy_nar(&mut rest, &mut nar1).unwrap();
    let after_first = stream.len() - rest.len();
    // magic, path (49 bytes + 7 padding), no references, no deriver, no signature
    let trailer1_len = 8 + (8 + 56) + 8 + 8 + 8;
    let mut rest = &stream[after_first + trailer1_len + 8..];
    let mut nar2 = Vec::new();
    copy_nar(&mut rest, &mut nar2).unwrap();

    let mut built = Vec::new();
    write_export_entry_header(&mut built).unwrap();
    built.extend_from_slice(&nar1);
    write_export_entry_trailer(&mut built, H_TXT, &BTreeSet::new(), None).unwrap();
    write_export_entry_header(&mut built).unwrap();
    built.extend_from_slice(&nar2);
    write_export_entry_trailer(&mut built, REF, &entries[1].references, Some(REF_DRV)).unwrap();
    write_export_end(&mut built).unwrap();
    assert_eq!(built, stream);
}

#[test]
fn empty_stream() {
    let mut out = Vec::new();
    assert!(copy_export(&mut &0u64.to_le_bytes()[..], &mut out).unwrap().is_empty());
    assert_eq!(out, 0u64.to_le_bytes());
}

#[test]
fn legacy_signature_is_copied() {
    let nar = std::fs::read(fixture("hello.nar")).unwrap();
    let mut s = Vec::new();
    write_export_entry_header(&mut s).unwrap();
    s.extend_from_slice(&nar);
    let mut w = nwh_wire::Writer::new(&mut s);
    w.write_u64(EXPORT_MAGIC).unwrap();
    w.write_str(H_TXT).unwrap();
    w.write_u64(0).unwrap();
    w.write_str("").unwrap();
    w.write_u64(1).unwrap();
    w.write_str("old-signature").unwrap();
    w.write_u64(0).unwrap();
    let mut out = Vec::new();
    let entries = copy_export(&mut &s[..], &mut out).unwrap();
    assert_eq!(out, s);
    assert_eq!(entries.len(), 1);
}

#[test]
fn broken_streams() {
    let stream = std::fs::read(fixture("two-paths.export")).unwrap();

    // Cut anywhere: a truncation error, never a hang or panic.
    for cut in 0..stream.len() {
        let err = copy_export(&mut &stream[..cut], &mut Vec::new()).unwrap_err();
        assert!(err.is_truncated(), "cut {cut}: {err}");
    }

    let mut bad = stream.clone();
    bad[0] = 2;
    let err = copy_export(&mut &bad[..], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ExportError::BadMarker { offset: 0, value: 2 }), "{err}");
    assert!(err.to_string().contains("nix-store --export"), "{err}");

    // Magic after the first NAR (8 + 120 bytes in).
    let mut bad = stream.clone();
    bad[128] = b'X';
    let err = copy_export(&mut &bad[..], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ExportError::BadMagic { offset: 128, .. }), "{err}");

    // A bad NAR reports where the NAR starts, and the offset inside it.
    let mut bad = stream.clone();
    bad[8 + 8] = b'X'; // "nix-archive-1" → "Xix-archive-1"
    match copy_export(&mut &bad[..], &mut Vec::new()).unwrap_err() {
        ExportError::Nar { offset: 8, source: NarError::Invalid { offset: 0, .. } } => {}
        other => panic!("{other:?}"),
    }

    // Signature flag (after the first entry's deriver).
    let mut bad = stream.clone();
    let flag_at = 128 + 8 + (8 + 56) + 8 + 8;
    assert_eq!(bad[flag_at..flag_at + 8], [0; 8]);
    bad[flag_at] = 5;
    let err = copy_export(&mut &bad[..], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ExportError::BadSignatureFlag { value: 5, .. }), "{err}");
    if let ExportError::BadSignatureFlag { offset, .. } = err {
        assert_eq!(offset, flag_at as u64);
    }

    let err = copy_export(&mut &[][..], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ExportError::Wire(WireError::Truncated { offset: 0, .. })), "{err}");
}
