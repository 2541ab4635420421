//! Every valid form of a machine line and of the `builders` value.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{ctx, parse, render, LOCAL};
use nwh_machines::{parse_builders, HostKey, Origin, BUILDERS_SETTING};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn clean(value: &str) -> nwh_machines::Machines {
    let m = parse(value);
    assert!(m.diagnostics.is_empty(), "unexpected diagnostics:\n{}", render(&m));
    m
}

#[test]
fn eight_columns() {
    // base64 of "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey".
    let key = "c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUtleQ==";
    let m = clean(&format!(
        "ssh://nix@b1 x86_64-linux,i686-linux /dev/null 16 4 kvm,big-parallel benchmark {key}"
    ));
    let b = &m.machines[0];
    assert_eq!(b.uri, "ssh://nix@b1");
    assert_eq!(b.systems, ["x86_64-linux", "i686-linux"]);
    assert_eq!(b.ssh_key, Some(PathBuf::from("/dev/null")));
    assert_eq!(b.max_jobs, 16);
    assert_eq!(b.speed_factor, 4.0);
    assert_eq!(b.supported_features, set(&["kvm", "big-parallel"]));
    assert_eq!(b.mandatory_features, set(&["benchmark"]));
    assert_eq!(
        b.host_key,
        Some(HostKey { base64: key.to_owned(), line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey".to_owned() })
    );
    assert_eq!(b.origin, Origin { location: BUILDERS_SETTING.to_owned(), line: 1 });
}

#[test]
fn defaults_when_columns_are_missing() {
    let m = clean("ssh://b1");
    let b = &m.machines[0];
    assert_eq!(b.systems, [LOCAL]);
    assert_eq!(b.ssh_key, None);
    assert_eq!(b.max_jobs, 1);
    assert_eq!(b.speed_factor, 1.0);
    assert!(b.supported_features.is_empty() && b.mandatory_features.is_empty());
    assert_eq!(b.host_key, None);
}

#[test]
fn dash_means_default_in_every_column() {
    let dashes = clean("ssh://b1 - - - - - - -");
    let missing = clean("ssh://b1");
    assert_eq!(dashes.machines, missing.machines);
    // A dash in the middle keeps later columns in place.
    let m = clean("ssh://b1 - - 3 - kvm");
    assert_eq!((m.machines[0].max_jobs, m.machines[0].systems.clone()), (3, vec![LOCAL.to_owned()]));
    assert_eq!(m.machines[0].supported_features, set(&["kvm"]));
}

#[test]
fn local_system_comes_from_the_context() {
    let mut c = ctx();
    c.local_system = "aarch64-darwin".to_owned();
    let m = parse_builders("ssh://mac", BUILDERS_SETTING, &c);
    assert_eq!(m.machines[0].systems, ["aarch64-darwin"]);
}

#[test]
fn comma_lists_drop_empty_items_and_duplicates() {
    let m = clean("b1 x86_64-linux,,x86_64-linux,i686-linux - 1 1 kvm,,kvm ,benchmark");
    assert_eq!(m.machines[0].systems, ["x86_64-linux", "i686-linux"]);
    assert_eq!(m.machines[0].supported_features, set(&["kvm"]));
    assert_eq!(m.machines[0].mandatory_features, set(&["benchmark"]));
}

#[test]
fn max_jobs_zero_is_kept() {
    assert_eq!(clean("b1 - - 0").machines[0].max_jobs, 0);
}

#[test]
fn float_speed_factor() {
    assert_eq!(clean("b1 - - 1 4.5").machines[0].speed_factor, 4.5);
    assert_eq!(clean("b1 - - 1 0.25").machines[0].speed_factor, 0.25);
}

#[test]
fn speed_factor_zero_becomes_one() {
    assert_eq!(clean("b1 - - 1 0").machines[0].speed_factor, 1.0);
}

#[test]
fn semicolons_separate_entries_on_one_line() {
    let m = clean("ssh://mac aarch64-darwin ; ssh://b2 x86_64-linux - 4;;b3");
    let uris: Vec<_> = m.machines.iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(uris, ["ssh://mac", "ssh://b2", "ssh://b3"]);
    assert!(m.machines.iter().all(|b| b.origin.line == 1));
    assert_eq!(m.machines[1].max_jobs, 4);
}

#[test]
fn comments_and_blank_lines() {
    let m = clean("# builders\n\nb1 x86_64-linux # the fast one\n#b2\nb3#no space needed\n");
    let got: Vec<_> = m.machines.iter().map(|b| (b.uri.as_str(), b.origin.line)).collect();
    assert_eq!(got, [("ssh://b1", 3), ("ssh://b3", 5)]);
    assert_eq!(m.machines[0].systems, ["x86_64-linux"]);
}

#[test]
fn indented_comments_are_comments() {
    // Accepted (old Nix rejected them, which is a warning, see diagnostics tests).
    let m = parse("b1\n   # indented\n\t#tabbed\nb2");
    assert_eq!(m.machines.len(), 2);
    assert!(m.diagnostics.iter().all(|d| !d.is_error()), "{}", render(&m));
}

#[test]
fn tabs_and_runs_of_spaces_separate_columns() {
    let m = clean("b1\tx86_64-linux \t - \t 8\r");
    assert_eq!(m.machines[0].max_jobs, 8);
}

#[test]
fn bare_hosts_get_ssh_scheme() {
    let m = clean("nix@b1\nb2:2222\nbuilder.example.org\n[fe80::1]");
    let uris: Vec<_> = m.machines.iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(uris, ["ssh://nix@b1", "ssh://b2:2222", "ssh://builder.example.org", "ssh://[fe80::1]"]);
}

#[test]
fn store_uris_are_kept_as_written() {
    let m = clean("ssh-ng://nix@b1\nssh://b2?remote-program=/run/current-system/sw/bin/nix-store\n/srv/store\nunix:///run/other.sock\nlocal?root=/tmp/other\n?x=1");
    let uris: Vec<_> = m.machines.iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "ssh-ng://nix@b1",
            "ssh://b2?remote-program=/run/current-system/sw/bin/nix-store",
            "/srv/store",
            "unix:///run/other.sock",
            "local?root=/tmp/other",
            "?x=1",
        ]
    );
}

#[test]
fn localhost_with_another_store_is_fine() {
    clean("ssh://localhost?remote-store=/tmp/other-store");
}

#[test]
fn builder_mode_line_is_fine_and_recognised() {
    let line = "ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook x86_64-linux - 32 1 kvm";
    clean(line);
    let m = parse(line);
    assert_eq!(m.machines[0].builder_mode_program().as_deref(), Some("/usr/local/bin/nix-wasm-hook"));
    assert_eq!(m.machines[0].runs_here().as_deref(), Some("/usr/local/bin/nix-wasm-hook"));
    // Percent-decoded, as Nix decodes it, name and value.
    let m = parse("ssh://localhost?remote%2Dprogram=/usr/local/bin/nix%2Dwasm%2Dhook x86_64-linux");
    assert_eq!(m.machines[0].builder_mode_program().as_deref(), Some("/usr/local/bin/nix-wasm-hook"));
    // Words, as Nix runs it: the program is the first.
    let m = parse("ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook%20--config%20/etc/x.toml");
    assert_eq!(m.machines[0].builder_mode_program().as_deref(), Some("/usr/local/bin/nix-wasm-hook"));
    // Nix fakes ssh for ssh-ng:// as well: it would run `nix-wasm-hook --stdio` here.
    let m = parse("ssh-ng://localhost?remote-program=/usr/local/bin/nix-wasm-hook");
    assert_eq!(m.machines[0].builder_mode_program().as_deref(), Some("/usr/local/bin/nix-wasm-hook"));
}

#[test]
fn only_a_bare_localhost_runs_here() {
    // Nix fakes ssh only when the authority is exactly `localhost`.
    for (line, here) in [
        ("ssh://localhost", Some("nix-store")),
        ("ssh-ng://localhost", Some("nix-daemon")),
        ("ssh://localhost?remote-program=/opt/nix%20store&remote-program=/x", Some("/opt/nix store")),
        ("ssh://root@localhost?remote-program=/usr/local/bin/nix-wasm-hook", None),
        ("ssh://localhost:22?remote-program=/usr/local/bin/nix-wasm-hook", None),
        ("ssh-ng://root@localhost?remote-program=/usr/local/bin/nix-wasm-hook", None),
        ("ssh://b1?remote-program=/usr/local/bin/nix-wasm-hook", None),
        ("/tmp/store", None),
    ] {
        let m = parse(line);
        assert_eq!(m.machines[0].runs_here().as_deref(), here, "{line}");
        assert_eq!(m.machines[0].builder_mode_program(), None, "{line}");
    }
}

#[test]
fn legacy_remote_systems_conf_line() {
    // From the Nix 1.11 manual (build-remote.pl).
    let m = parse("nix@scratchy.labs.cs.uu.nl  i686-linux  /home/nix/.ssh/id_scratchy_auto  8 1 kvm");
    assert!(m.diagnostics.iter().all(|d| !d.is_error()), "{}", render(&m));
    let b = &m.machines[0];
    assert_eq!(b.uri, "ssh://nix@scratchy.labs.cs.uu.nl");
    assert_eq!(b.systems, ["i686-linux"]);
    assert_eq!(b.ssh_key, Some(PathBuf::from("/home/nix/.ssh/id_scratchy_auto")));
    assert_eq!((b.max_jobs, b.speed_factor), (8, 1.0));
    assert_eq!(b.supported_features, set(&["kvm"]));
}

#[test]
fn host_key_without_padding_and_with_trailing_newline() {
    // base64 of "ssh-ed25519 AAAA root@b1\n" (as `base64 -w0 key.pub` gives), padding stripped.
    let m = clean("b1 - - - - - - c3NoLWVkMjU1MTkgQUFBQSByb290QGIxCg");
    assert_eq!(m.machines[0].host_key.as_ref().unwrap().line, "ssh-ed25519 AAAA root@b1");
}

#[test]
fn empty_value_means_no_builders() {
    let m = clean("");
    assert!(m.machines.is_empty());
    let blank = parse(" \n\n");
    assert!(blank.machines.is_empty());
    assert!(blank.diagnostics.iter().all(|d| !d.is_error()), "{}", render(&blank));
}

#[test]
fn line_renders_what_was_understood() {
    let m = clean("nix@b1 - - 4 2.5 kvm - c3NoLWVkMjU1MTkgQUFBQSByb290QGIxCg==");
    assert_eq!(
        m.machines[0].line(),
        "ssh://nix@b1 x86_64-linux - 4 2.5 kvm - c3NoLWVkMjU1MTkgQUFBQSByb290QGIxCg=="
    );
    assert_eq!(clean("b2").machines[0].line(), "ssh://b2 x86_64-linux - 1 1");
    // What line() prints parses back to the same machine.
    let again = clean(&m.machines[0].line());
    assert_eq!(again.machines[0].host_key, m.machines[0].host_key);
    assert_eq!(again.machines[0].supported_features, m.machines[0].supported_features);
}

/// What messages show as "what the hook understood" means the same machine again, also for
/// the two odd lists the fuzzer found: the one item `-`, and no system at all.
#[test]
fn line_gives_back_odd_lists() {
    let ctx = nwh_machines::ParseContext::new("x86_64-linux");
    for (text, line) in [
        ("b1 , - 1 1 -,- -,-", "ssh://b1 , - 1 1 -, -,"),
        ("b2 x86_64-linux - 1 1 kvm", "ssh://b2 x86_64-linux - 1 1 kvm"),
    ] {
        let parsed = nwh_machines::parse_builders(text, "test", &ctx);
        let m = &parsed.machines[0];
        assert_eq!(m.line(), line);
        let again = nwh_machines::parse_builders(&m.line(), "test", &ctx);
        assert_eq!(again.machines[0].systems, m.systems, "{line}");
        assert_eq!(again.machines[0].supported_features, m.supported_features, "{line}");
        assert_eq!(again.machines[0].mandatory_features, m.mandatory_features, "{line}");
    }
}
