//! The worked examples of docs/hook-protocol.md §11, rebuilt byte by byte from its listing.

use crate::common;

use std::collections::BTreeSet;

use common::{read_settings_block, read_try, Try};
use nwh_wire::{Reader, Writer};

const DRV: &str = "/nix/store/0c7w2i7kmf3ljc1vyqrvpxsn6gdn2l3y-hello-2.12.1.drv";

fn hex_row(row: &str) -> Vec<u8> {
    row.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

/// The 168-byte `try` request, from the listing. The listing elides the middle of the store
/// path after its first 8 bytes; those rows are filled from the path itself.
fn spec_try_bytes() -> Vec<u8> {
    let rows: &[(usize, &str)] = &[
        (0x00, "03 00 00 00 00 00 00 00"),
        (0x08, "74 72 79 00 00 00 00 00"),
        (0x10, "01 00 00 00 00 00 00 00"),
        (0x18, "0c 00 00 00 00 00 00 00"),
        (0x20, "78 38 36 5f 36 34 2d 6c"),
        (0x28, "69 6e 75 78 00 00 00 00"),
        (0x30, "3c 00 00 00 00 00 00 00"),
        (0x38, "2f 6e 69 78 2f 73 74 6f"),
        (0x70, "2e 64 72 76 00 00 00 00"),
        (0x78, "02 00 00 00 00 00 00 00"),
        (0x80, "0c 00 00 00 00 00 00 00"),
        (0x88, "62 69 67 2d 70 61 72 61"),
        (0x90, "6c 6c 65 6c 00 00 00 00"),
        (0x98, "03 00 00 00 00 00 00 00"),
        (0xa0, "6b 76 6d 00 00 00 00 00"),
    ];
    let mut out = vec![0xffu8; 168];
    for (off, row) in rows {
        out[*off..off + 8].copy_from_slice(&hex_row(row));
    }
    // The elided 52 bytes: path bytes 8..60 sit at 0x40..0x74, overlapping ".drv" already set.
    out[0x40..0x40 + 52].copy_from_slice(&DRV.as_bytes()[8..60]);
    assert_eq!(&out[0x70..0x78], &hex_row("2e 64 72 76 00 00 00 00")[..]);
    assert!(!out.contains(&0xff), "every byte of the listing was filled in");
    out
}

fn expected_try() -> Try {
    Try {
        am_willing: true,
        needed_system: "x86_64-linux".into(),
        drv_path: DRV.into(),
        required_features: ["kvm", "big-parallel"].map(String::from).into(),
    }
}

#[test]
fn drv_path_is_60_bytes() {
    assert_eq!(DRV.len(), 60);
}

#[test]
fn decodes_spec_try_request() {
    let bytes = spec_try_bytes();
    assert_eq!(bytes.len(), 168);
    let mut r = Reader::new(&bytes[..]);
    assert_eq!(read_try(&mut r).unwrap(), expected_try());
    assert_eq!(r.position(), 168);
    assert!(r.read_string().unwrap_err().is_clean_eof());
}

#[test]
fn encodes_spec_try_request() {
    let t = expected_try();
    let mut w = Writer::new(Vec::new());
    w.write_str("try").unwrap();
    w.write_bool(t.am_willing).unwrap();
    w.write_str(&t.needed_system).unwrap();
    w.write_str(&t.drv_path).unwrap();
    w.write_list(&t.required_features).unwrap();
    assert_eq!(w.position(), 168);
    assert_eq!(w.into_inner(), spec_try_bytes());
}

#[test]
fn spec_settings_block() {
    // `01×8 | 08×8 "builders" | 12×8 "@/etc/nix/machines"+6 pad | 01×8 | 08×8 "max-jobs" |
    //  01×8 "4"+7 pad | 00×8`, with the counts in hex.
    let mut expected = Vec::new();
    let n = |v: u64| v.to_le_bytes();
    expected.extend(n(1));
    expected.extend(n(0x08));
    expected.extend(b"builders");
    expected.extend(n(0x12));
    expected.extend(b"@/etc/nix/machines\0\0\0\0\0\0");
    expected.extend(n(1));
    expected.extend(n(0x08));
    expected.extend(b"max-jobs");
    expected.extend(n(0x01));
    expected.extend(b"4\0\0\0\0\0\0\0");
    expected.extend(n(0));

    let mut w = Writer::new(Vec::new());
    for (k, v) in [("builders", "@/etc/nix/machines"), ("max-jobs", "4")] {
        w.write_bool(true).unwrap();
        w.write_str(k).unwrap();
        w.write_str(v).unwrap();
    }
    w.write_bool(false).unwrap();
    assert_eq!(w.into_inner(), expected);

    let mut r = Reader::new(&expected[..]);
    let block = read_settings_block(&mut r).unwrap();
    assert_eq!(
        block,
        vec![
            ("builders".to_string(), "@/etc/nix/machines".to_string()),
            ("max-jobs".to_string(), "4".to_string()),
        ]
    );
    assert_eq!(r.position(), expected.len() as u64);
}

#[test]
fn set_written_from_btreeset_is_sorted() {
    let set: BTreeSet<&str> = ["kvm", "big-parallel", "benchmark"].into();
    let mut w = Writer::new(Vec::new());
    w.write_list(&set).unwrap();
    let bytes = w.into_inner();
    let list = Reader::new(&bytes[..]).read_string_list().unwrap();
    assert_eq!(list, ["benchmark", "big-parallel", "kvm"]);
}
