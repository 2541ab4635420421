//! `@file` includes, `parse_file` and `NIX_REMOTE_SYSTEMS`.

use crate::common;

use std::fs;
use std::path::Path;

use common::{ctx, error, parse, render, single, warning, Want};
use nwh_machines::{
    builders_from_remote_systems_env, parse_builders, parse_file, Origin, ParseContext, REMOTE_SYSTEMS_ENV,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn origins(m: &nwh_machines::Machines) -> Vec<(String, String, u32)> {
    m.machines.iter().map(|b| (b.uri.clone(), b.origin.location.clone(), b.origin.line)).collect()
}

#[test]
fn nested_includes_keep_their_own_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let c = write(dir.path(), "c", "\n\nc1 - - - - - - - extra\n");
    let b = write(dir.path(), "b", &format!("# b\nb1\n@{c}\nb2"));
    let a = write(dir.path(), "a", &format!("a1 ;@{b} # include b\na2\n"));
    let m = parse(&format!("top ;@{a}"));
    let s = |x: &str| x.to_owned();
    assert_eq!(
        origins(&m),
        [
            (s("ssh://top"), s("setting 'builders'"), 1),
            (s("ssh://a1"), a.clone(), 1),
            (s("ssh://b1"), b.clone(), 2),
            (s("ssh://c1"), c.clone(), 3),
            (s("ssh://b2"), b.clone(), 4),
            (s("ssh://a2"), a.clone(), 2),
        ]
    );
    // A diagnostic inside an included file is placed in that file.
    let d = single(&m);
    assert_eq!((d.location.as_str(), d.line, d.column), (c.as_str(), 3, 18), "{d}");
}

#[test]
fn include_with_space_after_at() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a", "a1");
    let m = parse(&format!("@  {a}"));
    assert_eq!(m.machines.len(), 1, "{}", render(&m));
}

#[test]
fn include_cycle_is_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a").display().to_string();
    let b = write(dir.path(), "b", &format!("b1\n\n@{a_path}\n"));
    let a = write(dir.path(), "a", &format!("a1\n@{b}\n"));
    let m = parse(&format!("@{a}"));
    assert_eq!(origins(&m).len(), 2, "both files are still read once: {:?}", origins(&m));
    Want {
        location: &b,
        expected: &["tree", "read once"],
        fix: &[&format!("remove the '@{a}' entry from {b}")],
        ..error(3, 1, &["include cycle", &format!("{a} -> {b} -> {a}")])
    }
    .check(single(&m));
}

#[test]
fn file_including_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a").display().to_string();
    write(dir.path(), "a", &format!("a1 ;@{a_path}"));
    let m = parse_file(Path::new(&a_path), &ctx());
    assert_eq!(m.machines.len(), 1);
    Want {
        location: &a_path,
        expected: &["read once"],
        fix: &["remove the '@"],
        ..error(1, 5, &["include cycle", &format!("{a_path} -> {a_path}")])
    }
    .check(single(&m));
}

#[test]
fn relative_include() {
    let m = parse("b1\n@machines");
    assert_eq!(m.machines.len(), 1);
    Want {
        expected: &["absolute path"],
        fix: &["realpath machines", "absolute path"],
        ..error(
            2,
            2,
            &[
                "'machines' is a relative path",
                "working directory at '/'",
                "'/machines'",
                "does not exist",
                "not read",
            ],
        )
    }
    .check(single(&m));
}

#[test]
fn relative_include_is_not_read_even_if_it_resolves() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "machines", "b1");
    let c = ParseContext { cwd: dir.path().to_owned(), ..ctx() };
    let m = parse_builders("@./machines", "setting 'builders'", &c);
    assert!(m.machines.is_empty());
    let d = single(&m);
    assert!(
        d.message.contains(&format!("'{}' (which exists)", dir.path().join("./machines").display())),
        "{d}"
    );
}

#[test]
fn tilde_include_is_relative() {
    one_include_error("@~/machines", &["'~/machines' is a relative path", "'~' is not expanded"]);
}

fn one_include_error(value: &str, message: &[&str]) {
    let m = parse(value);
    Want { expected: &["absolute"], fix: &["absolute path"], ..error(1, 2, message) }.check(single(&m));
}

#[test]
fn missing_absolute_include_is_a_warning() {
    let m = parse("b1 ;@/nonexistent/nix/machines");
    assert_eq!(m.machines.len(), 1);
    Want {
        expected: &["existing machines file"],
        fix: &["create '/nonexistent/nix/machines'", "remove the '@/nonexistent/nix/machines' entry"],
        ..warning(1, 6, &["'/nonexistent/nix/machines' does not exist", "silently"])
    }
    .check(single(&m));
}

#[test]
fn the_missing_file_warning_is_known_by_its_path() {
    let m = parse("b1 ;@/nonexistent/nix/machines");
    let d = single(&m);
    assert!(d.is_missing_file("/nonexistent/nix/machines"));
    assert!(!d.is_missing_file("/nonexistent/nix"), "another path, a prefix of this one");
    assert!(!d.is_missing_file("/nonexistent/nix/machines.d"));
    // A file that exists but cannot be read is not "missing": that stays an error to tell.
    let dir = tempfile::tempdir().unwrap();
    let m = parse(&format!("@{}", dir.path().display()));
    assert!(!single(&m).is_missing_file(&dir.path().display().to_string()));
}

#[test]
fn unreadable_include_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("machines.d");
    fs::create_dir(&sub).unwrap();
    let sub = sub.display().to_string();
    let m = parse(&format!("b1\n@{sub}"));
    assert_eq!(m.machines.len(), 1, "the rest still serves");
    Want {
        expected: &["readable regular file"],
        fix: &["not a directory"],
        ..error(2, 2, &[&format!("cannot read machines file '{sub}'"), "directory", "skipped"])
    }
    .check(single(&m));
}

#[test]
fn lone_at_sign() {
    let m = parse("@ # nothing");
    Want {
        expected: &["absolute path"],
        fix: &["'@/etc/nix/machines.d/NAME'"],
        ..error(1, 1, &["'@' is not followed by a file name"])
    }
    .check(single(&m));
}

#[test]
fn parse_file_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "machines", "# comment\nb1 - - 2 ; b2\n");
    let m = parse_file(Path::new(&a), &ctx());
    assert!(m.diagnostics.is_empty(), "{}", render(&m));
    assert_eq!(m.machines[1].origin, Origin { location: a.clone(), line: 2 });
    // A relative path is the caller's choice, taken relative to the context's cwd.
    let c = ParseContext { cwd: dir.path().to_owned(), ..ctx() };
    assert_eq!(parse_file(Path::new("machines"), &c).machines.len(), 2);
}

#[test]
fn parse_file_of_a_missing_file_is_an_error() {
    let m = parse_file(Path::new("/nonexistent/machines"), &ctx());
    let d = single(&m);
    assert!(d.is_error());
    assert_eq!((d.location.as_str(), d.line), ("/nonexistent/machines", 0));
    assert_eq!(
        d.to_string(),
        "/nonexistent/machines: error: cannot read machines file '/nonexistent/machines': no such file"
    );
}

#[test]
fn non_utf8_bytes_in_comments_do_not_cost_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    fs::write(&path, b"# caf\xe9\nb1\n").unwrap();
    let m = parse_file(&path, &ctx());
    assert_eq!(m.machines.len(), 1, "{}", render(&m));
}

// ---- NIX_REMOTE_SYSTEMS ----

#[test]
fn remote_systems_env_becomes_include_lines() {
    assert_eq!(builders_from_remote_systems_env("/etc/a:/etc/b"), "@/etc/a\n@/etc/b");
    assert_eq!(builders_from_remote_systems_env("::/etc/a:"), "@/etc/a");
    assert_eq!(builders_from_remote_systems_env(""), "");
}

#[test]
fn remote_systems_env_reads_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a", "a1");
    let b = write(dir.path(), "b", "b1\nb2");
    let value = builders_from_remote_systems_env(&format!("{a}:{b}"));
    let m = parse_builders(&value, REMOTE_SYSTEMS_ENV, &ctx());
    assert_eq!(m.machines.len(), 3);
    // Several files never worked with Nix <= 2.23 and Lix: say so.
    Want {
        location: REMOTE_SYSTEMS_ENV,
        expected: &["one file"],
        fix: &["include the others", "'builders'"],
        ..warning(2, 1, &["names 2 files", "Nix ≤ 2.23 and Lix", "none of them"])
    }
    .check(single(&m));
}

#[test]
fn remote_systems_env_relative_entry() {
    let value = builders_from_remote_systems_env("conf/remote-systems.conf");
    let m = parse_builders(&value, REMOTE_SYSTEMS_ENV, &ctx());
    Want {
        location: REMOTE_SYSTEMS_ENV,
        expected: &["absolute path"],
        fix: &["realpath conf/remote-systems.conf"],
        ..error(
            1,
            2,
            &[
                "NIX_REMOTE_SYSTEMS entry 'conf/remote-systems.conf' is a relative path",
                "working directory at '/'",
                "'/conf/remote-systems.conf'",
            ],
        )
    }
    .check(single(&m));
}

#[test]
fn remote_systems_env_missing_file() {
    let value = builders_from_remote_systems_env("/nonexistent/remote-systems.conf");
    let m = parse_builders(&value, REMOTE_SYSTEMS_ENV, &ctx());
    Want {
        location: REMOTE_SYSTEMS_ENV,
        expected: &["existing"],
        fix: &["remove '/nonexistent/remote-systems.conf' from NIX_REMOTE_SYSTEMS"],
        ..warning(1, 2, &["does not exist"])
    }
    .check(single(&m));
}
