//! Builders on this machine, with the host's real Nix 2.8 as the master (its own store) and
//! chroot stores under a temporary directory as the builders' stores: `ssh://localhost` and
//! `ssh-ng://localhost` lines, whose store program runs here without ssh as Nix's own hook
//! runs it, and local stores (a path), which Nix's hook opens in its own process and ours
//! builds on through `nix-store --serve --write --store …` started here. A builder whose store
//! is the master's own is declined, with the reason, instead of hanging on Nix's output locks.
//! No test bed: everything is on this machine, so this runs wherever Nix and root are.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::hook::OurHook;
use crate::support::testbed::{describe, unique_nonce};
use crate::support::tool::{check_report, run_check, stdout};

/// What the master and the builders' store programs need: no build users (this machine has
/// none), no substituters, and the host's `/bin`, `/usr` and libraries in the sandbox that a
/// chroot store's build runs in (the derivations run /bin/sh).
const SETTINGS: [(&str, &str); 3] =
    [("build-users-group", ""), ("substituters", ""), ("sandbox-paths", "/bin /usr /lib /lib64")];

/// [`SETTINGS`] as `NIX_CONFIG`.
fn nix_config() -> String {
    SETTINGS.iter().map(|(n, v)| format!("{n} = {v}\n")).collect()
}

/// How the master gets [`SETTINGS`]: in its environment, which Nix passes to the hook and the
/// hook to the programs it starts here (an `ssh://localhost` line's program reads no other:
/// it is the builder's own, as from Nix's hook), or as `--option`s, which reach only the
/// settings block the hook reads (and which it passes on to a local store's program, as Nix's
/// hook builds there with them).
#[derive(Clone, Copy, PartialEq)]
enum Settings {
    Environment,
    Options,
}

/// A derivation, never built before, requiring `features`, whose builder says `marker` on its
/// stderr (the build log) and writes it to `$out`, after reading an input of its own (which
/// goes up first).
fn expression(name: &str, marker: &str, features: &[&str]) -> String {
    let nonce = unique_nonce();
    let features: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        r#"derivation {{ name = "{name}"; system = "x86_64-linux"; builder = "/bin/sh";
           requiredSystemFeatures = [ {} ];
           args = [ "-c" "read l < ${{builtins.toFile "nwh-local-input" "{nonce}"}}; echo {marker} >&2; echo {marker} > $out" ]; }}"#,
        features.join(" ")
    )
}

/// `nix-build` of `expr` with our hook and `builders`, never building locally.
fn build(hook: &OurHook, builders: &str, expr: &str, settings: Settings) -> Output {
    let mut c = Command::new("nix-build");
    c.args(hook.remote_only(builders)).args(["--no-out-link", "-E", expr]).env_remove("NIX_CONFIG");
    match settings {
        Settings::Environment => {
            c.env("NIX_CONFIG", nix_config());
        }
        Settings::Options => {
            for (name, value) in SETTINGS {
                c.args(["--option", name, value]);
            }
        }
    }
    c.stdin(Stdio::null()).output().unwrap()
}

/// Whether `path` is valid in the store `store` (none: the master's), as that store says.
fn valid_in(store: Option<&str>, path: &str) -> bool {
    let mut c = Command::new("nix-store");
    if let Some(store) = store {
        c.args(["--store", store]);
    }
    c.args(["--check-validity", path]).env("NIX_CONFIG", nix_config()).stderr(Stdio::null());
    c.status().unwrap().success()
}

/// Builds one derivation requiring `features` on `line`'s builder, whose store is
/// `builder_store`, and checks where it was built and that it came back.
fn builds_here_and_comes_back(line: &str, builder_store: &Path, features: &[&str], settings: Settings) {
    let hook = OurHook::new(&[]);
    let marker = format!("built-here-{}", unique_nonce());
    let out = build(&hook, line, &expression("nwh-local", &marker, features), settings);
    let said = describe(&out);
    assert!(out.status.success(), "{said}");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(path.starts_with("/nix/store/"), "{said}");
    // The builder's log reached Nix's build log, as a remote builder's stderr does.
    assert!(String::from_utf8_lossy(&out.stderr).contains(&marker), "{said}");
    // Valid here, in the master's store, with what the builder wrote.
    assert!(valid_in(None, &path), "{path} is not valid in the master's store\n{said}");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), marker);
    let verify = Command::new("nix-store").args(["--verify-path", &path]).output().unwrap();
    assert!(verify.status.success(), "{}", describe(&verify));
    // Built in the builder's store.
    let store = builder_store.display().to_string();
    assert!(valid_in(Some(&store), &path), "{path} was not built in {store}\n{said}");
    let there = builder_store.join(path.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&there).unwrap().trim(), marker);
    // Without ssh: no master was started.
    assert_eq!(hook.masters(), Vec::<std::path::PathBuf>::new());
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn an_ssh_localhost_builder_runs_its_store_program_here_without_ssh() {
    let stores = tempfile::Builder::new().prefix("nwh-local-").tempdir_in("/tmp").unwrap();
    let b1 = stores.path().join("b1");
    // Percent-encoded, as Nix reads it: the store is `b1` with features of its own, one of
    // which the derivation requires (the store refuses to build it otherwise; the line's own
    // features are the ssh store's, which do not reach the program).
    let line = format!(
        "ssh://localhost?remote-store={}%3Fsystem-features=foo%20bar x86_64-linux - 1 1 bar",
        b1.display()
    );
    builds_here_and_comes_back(&line, &b1, &["bar"], Settings::Environment);
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn an_ssh_ng_localhost_builder_runs_its_daemon_here_without_ssh() {
    let stores = tempfile::Builder::new().prefix("nwh-local-").tempdir_in("/tmp").unwrap();
    let b3 = stores.path().join("b3");
    // A remote-program of several words, as Nix runs it here (2.8 through `bash -c`, 2.34 as a
    // list of words): the program and its first arguments.
    let line = format!(
        "ssh-ng://localhost?remote-program=nix-daemon%20--option%20max-silent-time%20600&remote-store={} x86_64-linux",
        b3.display()
    );
    builds_here_and_comes_back(&line, &b3, &[], Settings::Environment);
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn a_local_store_is_a_builder() {
    let stores = tempfile::Builder::new().prefix("nwh-local-").tempdir_in("/tmp").unwrap();
    let b2 = stores.path().join("b2");
    // The line's feature reaches the store as its system-features, as from Nix's hook: a
    // derivation requiring it builds there. The settings Nix sent reach the store's program
    // (without the sandbox paths the build could not run /bin/sh), with max-jobs 1 though
    // the master's is 0.
    builds_here_and_comes_back(
        &format!("{} x86_64-linux - 1 1 bar", b2.display()),
        &b2,
        &["bar"],
        Settings::Options,
    );
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn a_builder_in_the_master_store_is_declined_with_the_reason() {
    for line in ["ssh://localhost x86_64-linux", "local x86_64-linux", "local?root=/ x86_64-linux"] {
        let hook = OurHook::new(&[]);
        let out = build(&hook, line, &expression("nwh-local-declined", "never", &[]), Settings::Environment);
        let said = describe(&out);
        assert!(!out.status.success(), "{said}");
        assert!(said.contains("the store Nix itself uses here (auto)"), "{line}: {said}");
    }
}

#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn check_probes_a_localhost_builder_and_a_local_store_here() {
    let stores = tempfile::Builder::new().prefix("nwh-local-").tempdir_in("/tmp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, load) = (dir.path().join("state"), dir.path().join("load"));
    let options = format!("state-dir = {state:?}\ncurrent-load = {load:?}\nconnect-timeout = 2\n");
    let builders = format!(
        "ssh://localhost?remote-store={}/b1 x86_64-linux\n{}/b2 x86_64-linux\nlocal x86_64-linux\n",
        stores.path().display(),
        stores.path().display()
    );
    let out = run_check(&options, &builders, &[], None);
    let text = stdout(&out);
    let s = check_report(&text, "(setting 'builders':1)");
    assert!(s.contains("not used: its store program runs on this machine, without ssh"), "{text}");
    assert!(s.contains("serve protocol 2."), "{text}");
    assert!(!s.starts_with("UNUSABLE"), "{text}");
    let s = check_report(&text, "(setting 'builders':2)");
    assert!(s.contains("serve protocol 2.") && !s.starts_with("UNUSABLE"), "{text}");
    let s = check_report(&text, "(setting 'builders':3)");
    assert!(s.starts_with("UNUSABLE") && s.contains("the store Nix itself uses here"), "{text}");
}

/// A builder whose store program is not here is skipped before the build is accepted, as Nix's
/// hook finds it when it starts it, and the build goes to the next one.
#[test]
#[cfg_attr(not(nwh_root), ignore = "needs root: chroot stores build in Nix's sandbox")]
fn a_builder_whose_program_is_not_here_is_skipped_for_the_next() {
    let stores = tempfile::Builder::new().prefix("nwh-local-").tempdir_in("/tmp").unwrap();
    let b4 = stores.path().join("b4");
    let builders = format!(
        "ssh://localhost?remote-program=/nonexistent/nix-store&remote-store={0}/b5 x86_64-linux - 1 9\n\
         {1} x86_64-linux",
        stores.path().display(),
        b4.display()
    );
    let hook = OurHook::new(&[]);
    let out = build(&hook, &builders, &expression("nwh-local-next", "next", &[]), Settings::Environment);
    let said = describe(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("its store program `/nonexistent/nix-store` is not an executable file"), "{said}");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(valid_in(Some(&b4.display().to_string()), &path), "{said}");
}
