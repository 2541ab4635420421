//! Real `.drv` files written by Nix 2.8 (see fixtures/README.md for how they were made).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nwh_drv::{BasicDerivation, Derivation, Found, Output, ParseError};
use nwh_wire::{Reader, Writer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> (Vec<u8>, Derivation) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let drv = Derivation::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    (bytes, drv)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("drv") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let drv = Derivation::read(&path).unwrap();
        assert_eq!(
            drv.to_aterm().as_bytes(),
            &bytes[..],
            "{} does not print back identically",
            path.display()
        );
        assert_eq!(drv.to_string(), drv.to_aterm());
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} fixtures found");
}

#[test]
fn simple() {
    let (_, drv) = load("simple.drv");
    assert_eq!(drv.outputs.len(), 1);
    let out = &drv.outputs["out"];
    assert_eq!(out.path, "/nix/store/1n682pr5z6glkngm6z5iv2cf74wrv2nv-nwh-drvtest-simple");
    assert_eq!(out.hash_algo, "");
    assert_eq!(out.hash, "");
    assert!(!out.is_fixed());
    assert!(drv.input_drvs.is_empty());
    assert!(drv.input_srcs.is_empty());
    assert_eq!(drv.platform, "x86_64-linux");
    assert_eq!(drv.builder, "/bin/sh");
    assert_eq!(drv.args, ["-c", "echo hi > $out"]);
    assert_eq!(drv.env["name"], "nwh-drvtest-simple");
    assert_eq!(drv.env["out"], out.path);
    assert_eq!(drv.env.len(), 4);
}

#[test]
fn input_derivations_and_sources() {
    let (_, drv) = load("with-input-drvs.drv");
    assert_eq!(drv.input_drvs.len(), 1);
    assert_eq!(
        drv.input_drvs["/nix/store/qb0g9f9rxd7r2brix2mx9cgaq41969vj-nwh-drvtest-dep.drv"],
        set(&["out"])
    );
    assert_eq!(drv.input_srcs, set(&["/nix/store/321dz3ryzh8vh3szdxr3hkdliy3w7l2j-src.txt"]));

    let (_, uses) = load("uses-multi-output.drv");
    assert_eq!(
        uses.input_drvs["/nix/store/f1wb44lshxdhrlsrh2zqkfgqh4cmfm8v-nwh-drvtest-multi.drv"],
        set(&["dev", "lib"])
    );
}

#[test]
fn multiple_outputs() {
    let (_, drv) = load("multi-output.drv");
    let paths = drv.output_paths();
    assert_eq!(paths.keys().map(String::as_str).collect::<Vec<_>>(), ["dev", "lib", "out"]);
    assert_eq!(paths["dev"], "/nix/store/qg2z0rj7jmjv3mayg6xbqsg1rj81zbih-nwh-drvtest-multi-dev");
    assert_eq!(paths["lib"], "/nix/store/agp8ik3pgnpyxdgd57jhkhh2xzbhcvbl-nwh-drvtest-multi-lib");
    assert_eq!(paths["out"], "/nix/store/j3w21j7dyz2020vn7s3qmxb6kk5bsncm-nwh-drvtest-multi");
    assert_eq!(drv.env["outputs"], "out dev lib");
}

#[test]
fn escapes_in_strings() {
    let (_, drv) = load("escapes.drv");
    assert_eq!(drv.args[1], r#"echo "quoted" 'single' \\backslash\\ > $out"#);
    assert_eq!(drv.env["text"], "line1\nline2\r\n\ttabbed \"q\" back\\slash $dollar");
    assert_eq!(drv.env["unicode"], "héllo ✓");
}

#[test]
fn fixed_output() {
    let (_, drv) = load("fixed-output-recursive.drv");
    let out = &drv.outputs["out"];
    assert_eq!(out.hash_algo, "r:sha256");
    assert_eq!(out.hash, "0".repeat(64));
    assert!(out.is_fixed());
    assert_eq!(drv.env["outputHashMode"], "recursive");

    let (_, flat) = load("fixed-output-flat.drv");
    let out = &flat.outputs["out"];
    assert_eq!(out.hash_algo, "sha256");
    assert_eq!(out.hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert!(out.is_fixed());
}

#[test]
fn floating_content_addressed_output_has_no_path() {
    let (_, drv) = load("floating-ca.drv");
    assert_eq!(
        drv.outputs["out"],
        Output { path: String::new(), hash_algo: "r:sha256".into(), hash: String::new() }
    );
    assert!(!drv.outputs["out"].is_fixed());
    assert!(drv.output_paths().is_empty());
}

#[test]
fn structured_attrs_and_empty_lists() {
    let (_, drv) = load("structured-attrs.drv");
    assert!(drv.env["__json"].starts_with(r#"{"builder":"/bin/sh","list":[1,"two",{"three":3}]"#));
    let (_, drv) = load("no-args.drv");
    assert!(drv.args.is_empty());
    assert_eq!(drv.env["emptystr"], "");
}

#[test]
fn to_basic_replaces_sources_only_with_input_derivations() {
    let closure = set(&[
        "/nix/store/321dz3ryzh8vh3szdxr3hkdliy3w7l2j-src.txt",
        "/nix/store/lfir929pd4cv5ixrx46f64l130m0hyw9-nwh-drvtest-dep",
    ]);
    let (_, drv) = load("with-input-drvs.drv");
    let basic = drv.to_basic(&closure);
    assert_eq!(basic.input_srcs, closure);
    assert_eq!(basic.outputs, drv.outputs);
    assert_eq!(basic.env, drv.env);
    assert_eq!(basic.args, drv.args);
    assert_eq!(basic.output_paths(), drv.output_paths());

    // No input derivations: the sources stay, whatever closure is passed.
    let (_, drv) = load("source-only.drv");
    let basic = drv.to_basic(&set(&["/nix/store/00000000000000000000000000000000-other"]));
    assert_eq!(basic.input_srcs, drv.input_srcs);
    let aterm = basic.to_aterm();
    assert_eq!(aterm, drv.to_aterm(), "without input drvs the basic drv prints as the original");
}

/// The serve-protocol form (docs/serve-protocol.md §5), written out by hand.
#[test]
fn basic_derivation_wire_form() {
    let (_, drv) = load("multi-output.drv");
    let basic = drv.to_basic(&set(&["/nix/store/x-unused"]));
    let mut w = Writer::new(Vec::new());
    basic.write_to(&mut w).unwrap();
    let bytes = w.into_inner();

    let mut expect = Writer::new(Vec::new());
    expect.write_u64(3).unwrap();
    for (name, path) in [
        ("dev", "/nix/store/qg2z0rj7jmjv3mayg6xbqsg1rj81zbih-nwh-drvtest-multi-dev"),
        ("lib", "/nix/store/agp8ik3pgnpyxdgd57jhkhh2xzbhcvbl-nwh-drvtest-multi-lib"),
        ("out", "/nix/store/j3w21j7dyz2020vn7s3qmxb6kk5bsncm-nwh-drvtest-multi"),
    ] {
        expect.write_str(name).unwrap();
        expect.write_str(path).unwrap();
        expect.write_str("").unwrap();
        expect.write_str("").unwrap();
    }
    expect.write_u64(0).unwrap(); // no input derivations → sources kept (none)
    expect.write_str("x86_64-linux").unwrap();
    expect.write_str("/bin/sh").unwrap();
    expect.write_list(["-c", "echo > $out; echo > $dev; echo > $lib"]).unwrap();
    expect.write_u64(7).unwrap();
    for (k, v) in [
        ("builder", "/bin/sh"),
        ("dev", "/nix/store/qg2z0rj7jmjv3mayg6xbqsg1rj81zbih-nwh-drvtest-multi-dev"),
        ("lib", "/nix/store/agp8ik3pgnpyxdgd57jhkhh2xzbhcvbl-nwh-drvtest-multi-lib"),
        ("name", "nwh-drvtest-multi"),
        ("out", "/nix/store/j3w21j7dyz2020vn7s3qmxb6kk5bsncm-nwh-drvtest-multi"),
        ("outputs", "out dev lib"),
        ("system", "x86_64-linux"),
    ] {
        expect.write_str(k).unwrap();
        expect.write_str(v).unwrap();
    }
    assert_eq!(bytes, expect.into_inner());

    // And it decodes with the generic reader, field by field.
    let (_, fixed) = load("fixed-output-recursive.drv");
    let mut w = Writer::new(Vec::new());
    fixed.to_basic(&BTreeSet::new()).write_to(&mut w).unwrap();
    let bytes = w.into_inner();
    let mut r = Reader::new(&bytes[..]);
    assert_eq!(r.read_u64().unwrap(), 1);
    assert_eq!(r.read_string().unwrap(), "out");
    assert_eq!(r.read_string().unwrap(), "/nix/store/cnbkcc5nrgricb4imw8n1qjvi4liw829-nwh-drvtest-fixed");
    assert_eq!(r.read_string().unwrap(), "r:sha256");
    assert_eq!(r.read_string().unwrap(), "0".repeat(64));
    assert!(r.read_string_list().unwrap().is_empty());
    assert_eq!(r.read_string().unwrap(), "x86_64-linux");
    assert_eq!(r.read_string().unwrap(), "/bin/sh");
    assert_eq!(r.read_string_list().unwrap(), ["-c", "mkdir $out; echo fixed > $out/f"]);
    let n = r.read_u64().unwrap();
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(r.read_string().unwrap());
        r.read_string().unwrap();
    }
    assert_eq!(keys, ["builder", "name", "out", "outputHash", "outputHashAlgo", "outputHashMode", "system"]);
    assert_eq!(r.position(), bytes.len() as u64);
}

/// `read_from` takes back exactly what `write_to` wrote, for every fixture, and stops there.
#[test]
fn basic_derivation_round_trips() {
    for name in [
        "simple.drv",
        "escapes.drv",
        "fixed-output-flat.drv",
        "fixed-output-recursive.drv",
        "floating-ca.drv",
        "multi-output.drv",
        "no-args.drv",
        "source-only.drv",
        "structured-attrs.drv",
        "uses-multi-output.drv",
        "with-input-drvs.drv",
    ] {
        let (_, drv) = load(name);
        let basic = drv.to_basic(&set(&["/nix/store/00000000000000000000000000000000-closure"]));
        let mut w = Writer::new(Vec::new());
        basic.write_to(&mut w).unwrap();
        let mut bytes = w.into_inner();
        let len = bytes.len() as u64;
        bytes.extend_from_slice(b"next");
        let mut r = Reader::new(&bytes[..]);
        assert_eq!(BasicDerivation::read_from(&mut r).unwrap(), basic, "{name}");
        assert_eq!(r.position(), len, "{name}");
        // Cut anywhere: an error, never a panic or a wrong derivation.
        for cut in [0, 8, len / 2, len - 1] {
            assert!(
                BasicDerivation::read_from(&mut Reader::new(&bytes[..cut as usize])).is_err(),
                "{name} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_newline_is_tolerated() {
    let (mut bytes, drv) = load("simple.drv");
    bytes.push(b'\n');
    assert_eq!(Derivation::parse(&bytes).unwrap(), drv);
}

fn err(input: &str) -> ParseError {
    Derivation::parse(input.as_bytes()).expect_err(input)
}

#[test]
fn errors_name_offset_and_expectation() {
    let good = std::fs::read_to_string(fixture("simple.drv")).unwrap();

    let e = err("");
    assert_eq!(e, ParseError::Expected { offset: 0, expected: "Derive(", found: Found::EndOfInput });
    assert_eq!(e.to_string(), "expected Derive( at byte offset 0, found end of input");

    // Cut off anywhere: an error at (or before) the cut, never a panic.
    for cut in 0..good.len() {
        let e = Derivation::parse(&good.as_bytes()[..cut]).expect_err("truncated input parsed");
        assert!(e.offset() <= cut, "cut {cut}: {e}");
    }

    let e = err("Derive([(\"out\" \"/p\",\"\",\"\")],[],[],\"s\",\"b\",[],[])");
    assert_eq!(e, ParseError::Expected { offset: 14, expected: ",", found: Found::Byte(b' ') });
    assert_eq!(e.to_string(), "expected , at byte offset 14, found ' '");

    let e = err("Derive([],[],[],\"s\",\"b\",[\"a\"\"b\"],[])");
    assert_eq!(e, ParseError::Expected { offset: 28, expected: "',' or ']'", found: Found::Byte(b'"') });

    let e = err("Derive([],[],[],\"s\",\"b\",[],[])x");
    assert_eq!(e, ParseError::TrailingData { offset: 30 });

    let e = err("Derive([],[],[\"relative\"],\"s\",\"b\",[],[])");
    assert!(matches!(e, ParseError::NotAPath { offset: 14, what: "input source", .. }), "{e}");

    let e = err("Derive([(\"out\",\"nix/store/x\",\"\",\"\")],[],[],\"s\",\"b\",[],[])");
    assert!(matches!(e, ParseError::NotAPath { offset: 15, what: "output path", .. }), "{e}");

    let e = err("Derive([],[],[],\"s\",\"b\",[],[(\"a\",\"1\"),(\"a\",\"2\")])");
    assert_eq!(e, ParseError::Duplicate { offset: 39, what: "environment variable", key: "a".into() });

    let e = err("Derive([(\"out\",\"\",\"\",\"\"),(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"b\",[],[])");
    assert!(matches!(e, ParseError::Duplicate { what: "output", .. }), "{e}");

    let e = err("Derive([],[],[],\"s\",\"b\",[],[(\"a\",\"unterminated)])");
    assert!(matches!(e, ParseError::Expected { expected: "'\"' closing the string", .. }), "{e}");

    let mut bad_utf8 = b"Derive([],[],[],\"s\",\"b\",[\"".to_vec();
    bad_utf8.extend_from_slice(&[0xff, b'"', b']', b',', b'[', b']', b')']);
    assert_eq!(Derivation::parse(&bad_utf8).unwrap_err(), ParseError::InvalidUtf8 { offset: 25 });

    let e = err("DrvWithVersion(\"xp-dyn-drv\",[],[],[],\"s\",\"b\",[],[])");
    assert!(matches!(e, ParseError::UnsupportedFormat { offset: 15, .. }), "{e}");
    assert!(e.to_string().contains("xp-dyn-drv"), "{e}");

    let e = err("Derive([],[(\"/nix/store/x.drv\",([\"out\"],[]))],[],\"s\",\"b\",[],[])");
    assert!(matches!(e, ParseError::UnsupportedFormat { .. }), "{e}");
}

#[test]
fn unknown_escapes_stand_for_themselves() {
    let drv = Derivation::parse(br#"Derive([],[],[],"s","b",["\a\$"],[])"#).unwrap();
    assert_eq!(drv.args, ["a$"]);
}

#[test]
fn read_error_names_the_file() {
    let e = Derivation::read("/nonexistent/x.drv").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.drv"), "{e}");
}
