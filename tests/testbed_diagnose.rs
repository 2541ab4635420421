//! The causes users lose days to (docs/hook-protocol.md §2, docs/scheduling.md §5), provoked
//! on the test bed with real Nix 2.8: each must be named inside Nix's own output, next to
//! Nix's error, with the fix.

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, nothing_can_build, sh_derivation, Nix, Opts, Testbed};
use crate::support::tool::stderr;

on_every_nix!(a_feature_no_builder_has_gets_the_nearest_name);

fn drv(name: &str, features: &[&str]) -> String {
    sh_derivation(name, Some("x86_64-linux"), features, "echo > $out")
}

/// Users test `ssh builder` as themselves; the daemon's hook runs ssh as root, whose
/// known_hosts lacks the builder (NixOS/nix#2030).
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_host_key_root_does_not_know_is_named_with_the_fix() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let known = std::process::Command::new("ssh-keygen").args(["-F", &tb.addr(1)]).output().unwrap();
    assert!(
        !known.status.success(),
        "root's known_hosts already has {0}, so the unknown host key this test provokes cannot be: \
         `ssh-keygen -R {0}` (a fresh machine's root knows no test-bed host)",
        tb.addr(1)
    );
    // The test bed's line without column 8 (the host key): ssh falls back to root's files.
    let line = tb.machine(1);
    let without_key = line.split(' ').take(7).collect::<Vec<_>>().join(" ");
    let hook = OurHook::new(&["--connect-timeout", "5"]);
    let out = tb.nix_build(&drv("nwh-unknown-key", &[]), &hook.remote_only(&without_key));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    for words in [
        format!("cannot build on 'ssh://root@{}'", tb.addr(1)),
        "Host key verification failed".to_string(),
        format!("the host key of root@{} is not known to the user ssh ran as, root (uid 0)", tb.addr(1)),
        "Fix: put the builder's key in column 8 of its machines line".to_string(),
        format!("`sudo ssh root@{} true`", tb.addr(1)),
    ] {
        assert!(err.contains(&words), "missing {words:?} in\n{err}");
    }
}

/// A typo in a feature name that no builder has: Nix says only "unable to start any build"
/// (2.34: "Cannot build … local builds are disabled"), next to which the hook names the cause.
fn a_feature_no_builder_has_gets_the_nearest_name(nix: Nix) {
    let opts = Opts { features: Some("kvm,big-parallel".into()), ..Opts::default() };
    let Some(tb) = Testbed::up_or_skip(1, opts) else { return };
    let tb = tb.with_master(nix);
    let hook = OurHook::new(&[]);
    let out = tb.nix_build(&drv("nwh-typo", &["big-paralel"]), &hook.remote_only(&tb.machine(1)));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains(nothing_can_build(nix)), "Nix's own error:\n{err}");
    for words in [
        format!(
            "ssh://root@{} (setting 'builders':1): does not support the required feature `big-paralel`",
            tb.addr(1)
        ),
        "hint: no machine supports the required feature `big-paralel`; did you mean `big-parallel`?"
            .to_string(),
    ] {
        assert!(err.contains(&words), "missing {words:?} in\n{err}");
    }
}

/// A builder with max-jobs 0 that alone could build a derivation: Nix's rule postpones, for
/// ever, without a word.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_machine_with_max_jobs_0_is_named_while_nix_waits() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let mut columns: Vec<String> = tb.machine(1).split(' ').map(str::to_string).collect();
    columns[3] = "0".into();
    let line = columns.join(" ");
    let out = tb.nix_build_cmd_within(25, &drv("nwh-never", &[]), &hook.remote_only(&line)).output().unwrap();
    assert_eq!(out.status.code(), Some(124), "still waiting when stopped: {}", describe(&out));
    let err = stderr(&out);
    for words in [
        "waits and will wait forever: the only machines that can build it (system x86_64-linux) have max-jobs 0".to_string(),
        format!("ssh://root@{} (setting 'builders':1): max-jobs is 0", tb.addr(1)),
        "fix: set column 4 (max-jobs) of those lines to 1 or more".to_string(),
    ] {
        assert!(err.contains(&words), "missing {words:?} in\n{err}");
    }
}

/// `builders = 5` (a job count in the wrong setting) becomes host `ssh://5` in Nix, and every
/// build waits for a connection timeout (NixOS/nix#4703).
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_number_for_builders_is_named_as_a_job_count() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let out = tb.nix_build(&drv("nwh-five", &[]), &hook.remote_only("5"));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    for words in [
        "setting 'builders':1:1: warning: host '5' is a bare number",
        "every build then waits for a connection timeout",
        "fix: if you meant a job count, set 'max-jobs = 5' instead of 'builders'",
    ] {
        assert!(err.contains(words), "missing {words:?} in\n{err}");
    }
}

/// A store parameter the hook does not know: it never picks the machine (no connection
/// attempt, no backoff) and names the parameter next to Nix's error.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn an_unknown_store_parameter_is_named_and_no_connection_tried() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let line = tb.machines_lines_ng()[0].replacen(' ', "?frobnicate=1 ", 1);
    let out = tb.nix_build(&drv("nwh-param", &[]), &hook.remote_only(&line));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    let words = format!(
        "ssh-ng://root@{}?frobnicate=1 (setting 'builders':1): ssh-ng://root@{}?frobnicate=1: the store parameter `frobnicate` is not one this hook knows",
        tb.addr(1),
        tb.addr(1)
    );
    assert!(err.contains(&words), "missing {words:?} in\n{err}");
    assert!(!err.contains("cannot build on"), "no connection was tried: {err}");
    assert!(hook.masters().is_empty(), "no SSH master was started");
}
