//! Each fixture file is its own test: `good/` files must parse without errors, `bad/` files
//! with at least one; `NAME.expect` beside each lists, in order, the machines
//! (`machine LINE: <Machine::line()>`) and the diagnostics (`warning|error LINE:COL <words of
//! the message>`) that parsing it must give, nothing more.

use crate::common;

use std::path::{Path, PathBuf};

use common::{ctx, fixture, render};
use nwh_machines::parse_file;

fn check(name: &str) {
    let path = fixture(name);
    let expect_path = expect_file(&path);
    let expect =
        std::fs::read_to_string(&expect_path).unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let m = parse_file(&path, &ctx());
    let shown = render(&m);

    let mut want_machines = Vec::new();
    let mut want_diags = Vec::new();
    for line in expect.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("machine ") {
            let (n, text) = rest.split_once(": ").expect("machine LINE: TEXT");
            want_machines.push((n.parse::<u32>().unwrap(), text.to_owned()));
        } else {
            let (severity, rest) = line.split_once(' ').expect("SEVERITY LINE:COL WORDS");
            let (pos, words) = rest.split_once(' ').expect("SEVERITY LINE:COL WORDS");
            want_diags.push((severity.to_owned(), pos.to_owned(), words.to_owned()));
        }
    }

    let got_machines: Vec<_> = m.machines.iter().map(|b| (b.origin.line, b.line())).collect();
    assert_eq!(got_machines, want_machines, "machines of {name}; diagnostics:\n{shown}");
    let location = path.display().to_string();
    assert!(m.machines.iter().all(|b| b.origin.location == location));

    assert_eq!(m.diagnostics.len(), want_diags.len(), "diagnostics of {name}:\n{shown}");
    for (d, (severity, pos, words)) in m.diagnostics.iter().zip(&want_diags) {
        assert_eq!(d.severity.to_string(), *severity, "{d}");
        assert_eq!(format!("{}:{}", d.line, d.column), *pos, "{d}");
        assert_eq!(d.location, location, "{d}");
        assert!(d.message.contains(words.as_str()), "message lacks {words:?}:\n{d}");
    }

    let errors = m.diagnostics.iter().filter(|d| d.is_error()).count();
    if name.starts_with("good/") {
        assert_eq!(errors, 0, "a good fixture must parse without errors:\n{shown}");
    } else {
        assert!(errors > 0, "a bad fixture must give at least one error");
    }
}

fn expect_file(path: &Path) -> PathBuf {
    path.with_extension("expect")
}

macro_rules! fixtures {
    ($($test:ident => $name:literal,)*) => {
        $( #[test] fn $test() { check($name); } )*

        /// A fixture added without a test line here would silently never run.
        #[test]
        fn every_fixture_has_a_test_and_an_expect_file() {
            let listed = [$($name),*];
            for dir in ["good", "bad"] {
                for entry in std::fs::read_dir(fixture(dir)).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|e| e == "expect") {
                        continue;
                    }
                    let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
                    assert!(listed.contains(&name.as_str()), "{name} has no test in fixtures.rs");
                    assert!(expect_file(&path).exists(), "{name} has no .expect file");
                }
            }
        }
    };
}

fixtures! {
    good_three_kinds => "good/three-kinds.machines",
    good_legacy_remote_systems => "good/legacy-remote-systems.conf",
    good_defaults => "good/defaults.machines",
    good_comments => "good/comments.machines",
    good_semicolons => "good/semicolons.machines",
    good_uris => "good/uris.machines",
    good_crlf => "good/crlf.machines",
    good_numbers => "good/numbers.machines",
    bad_mixed => "bad/mixed.machines",
}
