//! Real stdin of a hook as sent by Nix 2.8 (testbed captures `spy-accept` and `spy-features`,
//! copied into tests/fixtures so the tests stand alone).

use crate::common;

use std::collections::BTreeSet;

use common::{fixture, read_after_accept, read_settings_block, read_try, Try};
use nwh_wire::{Reader, Writer};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `name = value` lines as printed by the capturing spy hook.
fn expected_settings() -> Vec<(String, String)> {
    let text = String::from_utf8(fixture("spy-accept.settings.txt")).unwrap();
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn spy_accept_whole_session() {
    let bytes = fixture("spy-accept.stdin.bin");
    assert_eq!(bytes.len(), 5104);
    let mut r = Reader::new(&bytes[..]);

    let settings = read_settings_block(&mut r).unwrap();
    assert_eq!(r.position(), 4688);
    assert_eq!(settings.len(), 91);
    assert_eq!(settings, expected_settings());
    // Nix sends every setting, in name order.
    assert!(settings.windows(2).all(|w| w[0].0 < w[1].0));
    let get = |k: &str| settings.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("builders"), Some("ssh://dummy x86_64-linux"));
    assert_eq!(get("max-jobs"), Some("1"));
    assert_eq!(get("system"), Some("x86_64-linux"));
    assert_eq!(get("system-features"), Some("benchmark big-parallel kvm nixos-test"));
    assert_eq!(get("access-tokens"), Some(""));

    let first = read_try(&mut r).unwrap();
    assert_eq!(
        first,
        Try {
            am_willing: true,
            needed_system: "x86_64-linux".into(),
            drv_path: "/nix/store/798q36j47p1d06l4kpi7prwfkmji0r55-dep.drv".into(),
            required_features: BTreeSet::new(),
        }
    );
    assert_eq!(r.position(), 4808);

    let second = read_try(&mut r).unwrap();
    assert_eq!(second.drv_path, "/nix/store/gx07bf5bkwph84wwj1vilza5k5hlxjq6-top.drv");
    assert!(second.am_willing);
    assert_eq!(r.position(), 4928);

    let (inputs, wanted) = read_after_accept(&mut r).unwrap();
    assert_eq!(
        inputs,
        set(&[
            "/nix/store/b6d1034h5lvqigq22ggkb2hj1bxl4pm0-input-src.txt",
            "/nix/store/ignp5mp80lpsc2wgs2y2qbg7xidi05wx-dep",
        ])
    );
    assert_eq!(wanted, set(&["doc", "out"]));
    assert_eq!(r.position(), 5104);
    assert!(r.read_u64().unwrap_err().is_clean_eof());
}

#[test]
fn spy_features_try_with_required_features() {
    let bytes = fixture("spy-features.stdin.bin");
    let mut r = Reader::new(&bytes[..]);
    let settings = read_settings_block(&mut r).unwrap();
    assert_eq!(settings.len(), 91);
    assert_eq!(r.position(), 4688);
    let t = read_try(&mut r).unwrap();
    assert_eq!(
        t,
        Try {
            am_willing: true,
            needed_system: "x86_64-linux".into(),
            drv_path: "/nix/store/n5ap0d5mpr6rx1h81kgaic5z2im19jzp-spy-feat.drv".into(),
            required_features: set(&["big-parallel", "kvm"]),
        }
    );
    assert_eq!(r.position(), 4848);
    // The parent closed the pipe after the decline: the hook's next read is a clean EOF.
    assert!(r.read_string().unwrap_err().is_clean_eof());
}

#[test]
fn reencoding_capture_reproduces_it() {
    let bytes = fixture("spy-accept.stdin.bin");
    let mut r = Reader::new(&bytes[..]);
    let settings = read_settings_block(&mut r).unwrap();
    let tries = [read_try(&mut r).unwrap(), read_try(&mut r).unwrap()];
    let (inputs, wanted) = read_after_accept(&mut r).unwrap();

    let mut w = Writer::new(Vec::new());
    for (k, v) in &settings {
        w.write_bool(true).unwrap();
        w.write_str(k).unwrap();
        w.write_str(v).unwrap();
    }
    w.write_bool(false).unwrap();
    for t in &tries {
        w.write_str("try").unwrap();
        w.write_bool(t.am_willing).unwrap();
        w.write_str(&t.needed_system).unwrap();
        w.write_str(&t.drv_path).unwrap();
        w.write_list(&t.required_features).unwrap();
    }
    w.write_list(&inputs).unwrap();
    w.write_list(&wanted).unwrap();
    assert_eq!(w.into_inner(), bytes);
}
