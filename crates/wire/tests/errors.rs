//! Malformed and hostile input: every failure is an error with a usable offset, never a panic
//! or an allocation sized by the input.

use crate::common;

use std::io::{self, Read};

use common::{fixture, read_after_accept, read_settings_block, read_try};
use nwh_wire::{Item, Limits, Reader, WireError, Writer};

/// Decodes the fixed shape of the `spy-accept` capture: block, two tries, post-accept sets.
fn decode_spy_accept(bytes: &[u8]) -> Result<(), WireError> {
    let mut r = Reader::new(bytes);
    read_settings_block(&mut r)?;
    read_try(&mut r)?;
    read_try(&mut r)?;
    read_after_accept(&mut r)?;
    Ok(())
}

#[test]
fn truncation_at_every_byte_of_capture_is_an_error() {
    let bytes = fixture("spy-accept.stdin.bin");
    decode_spy_accept(&bytes).unwrap();
    for cut in 0..bytes.len() {
        let err = decode_spy_accept(&bytes[..cut]).expect_err("prefix must not decode");
        match err {
            WireError::Truncated { offset, needed, available, .. } => {
                // The error pins down exactly where the input stopped.
                assert_eq!(offset + available, cut as u64, "cut {cut}: {err}");
                assert!(available < needed, "cut {cut}: {err}");
            }
            other => panic!("cut {cut}: unexpected {other}"),
        }
    }
}

#[test]
fn truncation_at_every_byte_of_single_try() {
    let mut w = Writer::new(Vec::new());
    w.write_str("try").unwrap();
    w.write_bool(false).unwrap();
    w.write_str("aarch64-linux").unwrap();
    w.write_str("/nix/store/y9vx4js676i5pdl531daqi8wklqc4kf4-spy-arm.drv").unwrap();
    w.write_list(["benchmark", "kvm", "x"]).unwrap();
    let bytes = w.into_inner();
    for cut in 0..bytes.len() {
        let err = read_try(&mut Reader::new(&bytes[..cut])).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "cut {cut}: {err}");
        // Clean EOF is an item-level notion; at the very start it is what a hook sees when
        // the parent hangs up between requests.
        if cut == 0 {
            assert!(err.is_clean_eof(), "{err}");
        } else if cut % 8 != 0 {
            assert!(!err.is_clean_eof(), "cut {cut}: {err}");
        }
    }
    read_try(&mut Reader::new(&bytes[..])).unwrap();
}

#[test]
fn truncation_message_names_item_and_offset() {
    let mut w = Writer::new(Vec::new());
    w.write_u64(7).unwrap();
    w.write_str("hello world").unwrap();
    let bytes = w.into_inner();
    let mut r = Reader::new(&bytes[..20]);
    r.read_u64().unwrap();
    let err = r.read_string().unwrap_err();
    assert!(
        matches!(err, WireError::Truncated { what: Item::StringData, offset: 16, needed: 11, available: 4 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "truncated input: string contents at byte offset 16 needs 11 bytes, but the input ended after 4"
    );
}

#[test]
fn absurd_string_length_hits_limit() {
    let bytes = u64::MAX.to_le_bytes();
    let err = Reader::new(&bytes[..]).read_bytes().unwrap_err();
    assert!(
        matches!(
            err,
            WireError::TooLong {
                what: Item::StringLength,
                offset: 0,
                len: u64::MAX,
                max: nwh_wire::DEFAULT_MAX_STRING_LEN
            }
        ),
        "{err:?}"
    );
}

#[test]
fn absurd_string_length_without_limit_does_not_allocate_it() {
    // With the limit lifted the length is still not trusted: the read fails on the missing
    // data instead of trying to reserve 16 EiB.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend(b"abc");
    let limits = Limits { max_string_len: u64::MAX, max_list_len: u64::MAX };
    let err = Reader::with_limits(&bytes[..], limits).read_bytes().unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Truncated { what: Item::StringData, offset: 8, needed: u64::MAX, available: 3 }
        ),
        "{err:?}"
    );
}

#[test]
fn absurd_list_count() {
    let bytes = u64::MAX.to_le_bytes();
    let err = Reader::new(&bytes[..]).read_string_list().unwrap_err();
    assert!(matches!(err, WireError::TooLong { what: Item::ListCount, len: u64::MAX, .. }), "{err:?}");

    let limits = Limits { max_string_len: 16, max_list_len: u64::MAX };
    let err = Reader::with_limits(&bytes[..], limits).read_string_list().unwrap_err();
    // The count alone reserves nothing; the first missing element ends the read.
    assert!(
        matches!(err, WireError::Truncated { what: Item::StringLength, offset: 8, available: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn limits_are_inclusive() {
    let mut w = Writer::new(Vec::new());
    w.write_str("12345678").unwrap();
    w.write_list(["a", "b"]).unwrap();
    let bytes = w.into_inner();
    let tight = Limits { max_string_len: 8, max_list_len: 2 };
    let mut r = Reader::with_limits(&bytes[..], tight);
    assert_eq!(r.read_string().unwrap(), "12345678");
    assert_eq!(r.read_string_list().unwrap(), ["a", "b"]);

    let tighter = Limits { max_string_len: 7, max_list_len: 1 };
    let mut r = Reader::with_limits(&bytes[..], tighter);
    assert!(matches!(r.read_string(), Err(WireError::TooLong { len: 8, max: 7, .. })));
    let mut r = Reader::with_limits(&bytes[16..], tighter);
    assert!(matches!(
        r.read_string_list(),
        Err(WireError::TooLong { what: Item::ListCount, offset: 0, len: 2, max: 1 })
    ));
}

#[test]
fn non_zero_padding() {
    let mut bytes = 3u64.to_le_bytes().to_vec();
    bytes.extend(b"try\0\0\x01\0\0");
    let err = Reader::new(&bytes[..]).read_string().unwrap_err();
    assert!(matches!(err, WireError::NonZeroPadding { offset: 11 }), "{err:?}");
}

#[test]
fn invalid_utf8_only_for_text() {
    let mut w = Writer::new(Vec::new());
    w.write_u64(1).unwrap();
    w.write_bytes(b"caf\xe9").unwrap();
    let bytes = w.into_inner();

    let mut r = Reader::new(&bytes[..]);
    r.read_u64().unwrap();
    let err = r.read_string().unwrap_err();
    match &err {
        WireError::InvalidUtf8 { offset, source } => {
            assert_eq!(*offset, 8);
            assert_eq!(source.as_bytes(), b"caf\xe9");
        }
        other => panic!("{other:?}"),
    }
    // The reader stays in step after the error: the whole string was consumed.
    assert_eq!(r.position(), 24);

    let mut r = Reader::new(&bytes[..]);
    r.read_u64().unwrap();
    assert_eq!(r.read_bytes().unwrap(), b"caf\xe9");
}

/// Hands out at most one byte per call and interrupts every other call, like a slow pipe
/// hit by signals.
struct Trickle<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.data.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[0];
        self.data = &self.data[1..];
        Ok(1)
    }
}

#[test]
fn short_reads_and_eintr() {
    let bytes = fixture("spy-features.stdin.bin");
    let mut r = Reader::new(Trickle { data: &bytes, interrupt: false });
    assert_eq!(read_settings_block(&mut r).unwrap().len(), 91);
    let t = read_try(&mut r).unwrap();
    assert_eq!(t.required_features.len(), 2);
    assert_eq!(r.position(), bytes.len() as u64);
}

struct Broken;

impl Read for Broken {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("pipe exploded"))
    }
}

#[test]
fn io_errors_are_reported_with_offset() {
    let err = Reader::new(io::Cursor::new(1u64.to_le_bytes()).chain(Broken)).read_string_list().unwrap_err();
    match err {
        WireError::Io { what: Item::StringLength, offset: 8, ref source } => {
            assert_eq!(source.to_string(), "pipe exploded")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bool_is_any_nonzero() {
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend(0u64.to_le_bytes());
    let mut r = Reader::new(&bytes[..]);
    assert!(r.read_bool().unwrap());
    assert!(!r.read_bool().unwrap());
}

/// `bounded` tightens the limits for one read and gives the reader its own back, whatever the
/// read did; it never loosens them.
#[test]
fn bounded_limits_hold_for_one_read_only() {
    let mut bytes = Vec::new();
    {
        let mut w = Writer::new(&mut bytes);
        w.write_str(&"x".repeat(100)).unwrap();
        w.write_str(&"x".repeat(100)).unwrap();
    }
    let mut r = Reader::with_limits(&bytes[..], Limits { max_string_len: 1000, max_list_len: 10 });
    let tight = Limits { max_string_len: 50, max_list_len: 1 << 20 };
    let err = r.bounded(tight, |r| r.read_string()).unwrap_err();
    assert!(matches!(err, WireError::TooLong { max: 50, .. }), "{err}");
    assert_eq!(r.limits(), Limits { max_string_len: 1000, max_list_len: 10 });
    let mut r = Reader::with_limits(&bytes[..], Limits { max_string_len: 1000, max_list_len: 10 });
    r.bounded(tight, |r| {
        assert_eq!(r.limits().max_list_len, 10, "never looser than the reader's own");
        Ok(())
    })
    .unwrap();
    assert_eq!(r.read_string().unwrap().len(), 100);
}
