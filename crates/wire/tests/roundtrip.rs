use std::collections::BTreeSet;

use nwh_wire::{encoded_string_len, Reader, Writer};

#[test]
fn integers() {
    let values = [0, 1, 0xff, 0x0102_0304_0506_0708, u64::MAX];
    let mut w = Writer::new(Vec::new());
    for v in values {
        w.write_u64(v).unwrap();
    }
    let bytes = w.into_inner();
    assert_eq!(bytes.len(), 8 * values.len());
    assert_eq!(&bytes[24..32], &[8, 7, 6, 5, 4, 3, 2, 1], "little-endian");
    let mut r = Reader::new(&bytes[..]);
    for v in values {
        assert_eq!(r.read_u64().unwrap(), v);
    }
}

#[test]
fn strings_of_every_padding() {
    for len in 0..=33 {
        let s: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let mut w = Writer::new(Vec::new());
        w.write_str(&s).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() as u64, encoded_string_len(len as u64));
        assert_eq!(bytes.len() % 8, 0);
        assert!(bytes[8 + len..].iter().all(|&b| b == 0));
        let mut r = Reader::new(&bytes[..]);
        assert_eq!(r.read_string().unwrap(), s);
        assert_eq!(r.position(), bytes.len() as u64);
    }
}

#[test]
fn binary_bytes() {
    let data: Vec<u8> = (0..=255).collect();
    let mut w = Writer::new(Vec::new());
    w.write_bytes(&data).unwrap();
    w.write_bytes(b"").unwrap();
    let bytes = w.into_inner();
    let mut r = Reader::new(&bytes[..]);
    assert_eq!(r.read_bytes().unwrap(), data);
    assert_eq!(r.read_bytes().unwrap(), b"");
}

#[test]
fn lists_and_sets() {
    let list = vec!["b".to_string(), "a".into(), "a".into(), "".into()];
    let set: BTreeSet<String> = ["x86_64-linux", "i686-linux"].map(String::from).into();
    let mut w = Writer::new(Vec::new());
    w.write_list(&list).unwrap();
    w.write_list(&set).unwrap();
    w.write_list(Vec::<Vec<u8>>::new()).unwrap();
    w.write_list([b"\xff\x00".as_slice()]).unwrap();
    w.write_bool(true).unwrap();
    w.write_bool(false).unwrap();
    let end = w.position();
    let bytes = w.into_inner();
    assert_eq!(end, bytes.len() as u64);

    let mut r = Reader::new(&bytes[..]);
    assert_eq!(r.read_string_list().unwrap(), list);
    assert_eq!(r.read_string_set().unwrap(), set);
    assert!(r.read_bytes_list().unwrap().is_empty());
    assert_eq!(r.read_bytes_list().unwrap(), vec![b"\xff\x00".to_vec()]);
    assert!(r.read_bool().unwrap());
    assert!(!r.read_bool().unwrap());
    assert_eq!(r.position(), end);
}

#[test]
fn set_reader_normalises_order_and_duplicates() {
    let mut w = Writer::new(Vec::new());
    w.write_list(["kvm", "big-parallel", "kvm"]).unwrap();
    let bytes = w.into_inner();
    let set = Reader::new(&bytes[..]).read_string_set().unwrap();
    assert_eq!(set.into_iter().collect::<Vec<_>>(), ["big-parallel", "kvm"]);
}

#[test]
fn into_inner_leaves_stream_at_item_boundary() {
    let mut w = Writer::new(Vec::new());
    w.write_str("try").unwrap();
    let mut bytes = w.into_inner();
    bytes.extend(b"rest");
    let mut r = Reader::new(std::io::Cursor::new(bytes));
    r.read_string().unwrap();
    let cur = r.into_inner();
    assert_eq!(&cur.get_ref()[cur.position() as usize..], b"rest");
}
