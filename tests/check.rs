//! `nix-wasm-hook check` of a builder-mode setup, without the test bed: the builder-mode line's
//! program is started here as Nix's hook starts it, and the line is compared with the real
//! builders behind it. (The test bed's `testbed_check` connects to real builders.)

use std::process::Output;

use crate::support::hook::OurHook;
use crate::support::tool::{check_report, run_check, stderr, stdout};

/// `check` of `builders`, with `options` beside private state and load directories.
fn check(builders: &str, options: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (state, load) = (dir.path().join("state"), dir.path().join("load"));
    let options = format!("state-dir = {state:?}\ncurrent-load = {load:?}\nconnect-timeout = 2\n{options}");
    run_check(&options, builders, &[], None)
}

#[test]
fn a_builder_mode_line_is_compared_with_the_real_builders_behind_it() {
    // Port 1 of loopback refuses at once: a real builder that is down.
    let real = "ssh://root@127.0.0.1:1 x86_64-linux - 2 1 kvm";
    let builder = OurHook::as_builder(real, &[]);
    let machines = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(machines.path(), real).unwrap();
    let line = format!(
        "ssh://localhost?remote-program={} x86_64-linux,aarch64-linux - 2 1 big-parallel",
        builder.path
    );
    let out = check(&line, &format!("machines = \"@{}\"\n", machines.path().display()));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "the real builder is down: {text}{}", stderr(&out));

    let s = check_report(&text, "(setting 'builders':1)");
    assert!(s.starts_with("WARNING   ssh://localhost?remote-program="), "{text}");
    // Started as Nix starts it, it greeted as a builder.
    assert!(s.contains("not used: Nix runs it on this machine, without ssh"), "{s}");
    assert!(s.contains(&format!("nix-wasm-hook {} (serve protocol 2.", env!("CARGO_PKG_VERSION"))), "{s}");
    for words in [
        "problem: the line declares system `aarch64-linux`, which no real builder builds (x86_64-linux): such builds fail at once",
        "problem: the line declares feature `big-parallel`, which no real builder has (kvm)",
        "problem: real builders have feature `kvm`, but the line does not declare it: Nix never sends builds requiring it here",
        "problem: max-jobs (column 4) is 2, and the real builders have 2 slots",
        "fix: set column 4 of setting 'builders':1 to 8 (four times the real slots)",
    ] {
        assert!(s.contains(words), "missing {words:?} in\n{s}");
    }
    // The line is not mistaken for "this machine as a builder", which would hang.
    assert!(!text.contains("setting 'builders':1:1: warning"), "{text}");

    assert!(text.contains("behind it, the real builders of nix-wasm-hook option 'machines':"), "{text}");
    let s = check_report(&text, &format!("({}:1)", machines.path().display()));
    assert!(s.starts_with("UNUSABLE  ssh://root@127.0.0.1:1 "), "{text}");
    assert!(s.contains("Connection refused"), "{s}");
    assert!(text.contains("2 builder(s): 1 usable, 1 unusable"), "{text}");
}

#[test]
fn a_builder_mode_line_without_real_builders_is_unusable() {
    // Neither the program's own options (the wrapper passes none, and there is no
    // /etc/nix/nix-wasm-hook.toml here) nor check's name any.
    let builder = OurHook::new(&[]);
    let line = format!("ssh://localhost?remote-program={} x86_64-linux - 8 1", builder.path);
    let out = check(&line, "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let s = check_report(&text, "(setting 'builders':1)");
    assert!(s.starts_with("UNUSABLE  ssh://localhost?remote-program="), "{text}");
    for words in [
        "--serve --write`, as Nix's hook starts it, does not serve: after greeting it stopped (exit status: 1)",
        "builder mode (--serve) needs the real builders",
        "problem: builder mode needs the real builders, and nix-wasm-hook option 'machines' is not set",
        "fix: set `machines = \"@/etc/nix/nix-wasm-hook.machines\"` in /etc/nix/nix-wasm-hook.toml",
    ] {
        assert!(s.contains(words), "missing {words:?} in\n{s}");
    }
}

#[test]
fn a_machines_option_nothing_reads_is_noted() {
    let out = check("", "machines = \"ssh://b1\"\n");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains(
            "note: nix-wasm-hook option 'machines' is read only in builder mode, and no line of `builders` runs nix-wasm-hook"
        ),
        "{text}"
    );
}

/// Many builders are checked a bounded number at a time, and every one gets its report, in
/// the order of the machines file.
#[test]
fn many_builders_are_checked_a_few_at_a_time_and_each_is_reported() {
    // Loopback ports that refuse at once: builders that are down, each its own line.
    let builders: Vec<String> =
        (0..40).map(|i| format!("ssh://root@127.0.0.1:{} x86_64-linux", 1 + i)).collect();
    let out = check(&builders.join("\n"), "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("40 builder(s): 0 usable, 40 unusable"), "{text}");
    let mut at = 0;
    for i in 0..40 {
        let line = format!("UNUSABLE  ssh://root@127.0.0.1:{} ", 1 + i);
        let found = text[at..].find(&line).unwrap_or_else(|| panic!("{line:?} not in order in\n{text}"));
        at += found + line.len();
    }
}

#[test]
fn nixs_default_machines_file_absent_is_a_note_not_a_warning() {
    // No `--builders`: `check` reads `builders` as the hook does, at its default here.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hook.toml");
    let state = dir.path().join("state");
    std::fs::write(&config, format!("state-dir = {state:?}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .current_dir("/")
        .env_remove("NIX_CONFIG")
        .env_remove("NIX_REMOTE_SYSTEMS")
        .env("NIX_CONF_DIR", dir.path())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = stdout(&out);
    let default = dir.path().join("machines");
    assert!(
        text.contains(&format!("note: Nix's default machines file '{}' does not exist", default.display())),
        "{text}{}",
        stderr(&out)
    );
    assert!(!text.contains(": warning: machines file"), "{text}");

    // Named with `--builders`, the same file keeps its warning.
    let named = format!("@{}", default.display());
    let out = run_check(&format!("state-dir = {state:?}\n"), &named, &[], None);
    assert!(stdout(&out).contains(": warning: machines file"), "{}", stdout(&out));
}

#[test]
fn a_builder_mode_line_over_ssh_ng_is_unusable_and_says_to_write_ssh() {
    let builder = OurHook::as_builder("ssh://root@127.0.0.1:1 x86_64-linux", &[]);
    let out = check(&format!("ssh-ng://localhost?remote-program={} x86_64-linux - 8", builder.path), "");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let s = check_report(&text, "(setting 'builders':1)");
    assert!(s.starts_with("UNUSABLE  ssh-ng://localhost?remote-program="), "{text}");
    assert!(s.contains("--stdio` (the worker protocol), which nix-wasm-hook does not serve"), "{s}");
    assert!(s.contains("write ssh://localhost instead of ssh-ng://localhost"), "{s}");
}
