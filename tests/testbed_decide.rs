//! Real Nix 2.8 on the test bed with `--option build-hook` set to our binary: what Nix does
//! with our replies, and what the user sees in Nix's own output.

use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, sh_derivation, Opts, Testbed};
use crate::support::tool::stderr;

fn drv(name: &str, system: &str, features: &[&str]) -> String {
    sh_derivation(name, Some(system), features, "read h < /proc/sys/kernel/hostname; echo $h > $out")
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_system_no_builder_has_is_declined_and_built_locally() {
    let Some(tb) = Testbed::up_or_skip(2, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    // i686-linux is one of the master's extra-platforms; the builders are x86_64-linux only.
    // -vv puts Nix at chatty, where our explanation of a harmless decline is shown.
    let out = tb.nix_build(
        &drv("nwh-local-i686", "i686-linux", &[]),
        &["-vv", "--max-jobs", "1", "--option", "builders", &builders, "--option", "build-hook", &hook.path],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{}", describe(&out));
    let paths = out_paths(&out);
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(std::fs::read_to_string(&paths[0]).unwrap(), here, "built on the master");
    assert!(!err.contains(" on 'ssh://"), "nothing was sent to a builder:\n{err}");
    assert!(err.contains("nix-wasm-hook: no remote machine will build"), "{err}");
    for i in 1..=2 {
        let line = format!("ssh://root@{} (setting 'builders':{i}): system `i686-linux` is not among its systems (x86_64-linux)", tb.addr(i));
        assert!(err.contains(&line), "missing {line:?} in\n{err}");
    }
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn with_max_jobs_0_and_no_fitting_machine_nix_fails_and_we_say_why_per_machine() {
    let opts = Opts { mandatory: Some("- benchmark".into()), ..Opts::default() };
    let Some(tb) = Testbed::up_or_skip(2, opts) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let out = tb.nix_build(&drv("nwh-needs-gpu", "x86_64-linux", &["gpu"]), &hook.remote_only(&builders));
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(err.contains("unable to start any build"), "Nix's own error:\n{err}");
    assert!(err.contains("nix-wasm-hook: no remote machine will build"), "{err}");
    assert!(err.contains("required features gpu"), "{err}");
    let b1 = format!(
        "ssh://root@{} (setting 'builders':1): does not support the required feature `gpu`",
        tb.addr(1)
    );
    assert!(err.contains(&b1), "missing {b1:?} in\n{err}");
    let b2 = format!("ssh://root@{} (setting 'builders':2): does not support the required feature `gpu`; mandatory feature `benchmark` is not among the derivation's required features", tb.addr(2));
    assert!(err.contains(&b2), "missing {b2:?} in\n{err}");
    assert!(err.contains("this machine cannot build it either (max-jobs 0"), "{err}");
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_relative_nix_remote_systems_is_explained_in_nix_output() {
    // The story this project started from: NIX_REMOTE_SYSTEMS=machines, resolved against `/`.
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let mut cmd = tb.nix_build_cmd(
        &drv("nwh-relative", "x86_64-linux", &[]),
        &["--max-jobs", "0", "--option", "build-hook", &hook.path],
    );
    cmd.env("NIX_REMOTE_SYSTEMS", "machines");
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    for w in [
        "NIX_REMOTE_SYSTEMS entry 'machines' is a relative path",
        "working directory at '/'",
        "'/machines'",
        "does not exist",
    ] {
        assert!(err.contains(w), "missing {w:?} in\n{err}");
    }
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn the_faster_idle_builder_gets_the_build() {
    let Some(tb) = Testbed::up_or_skip(2, Opts { speeds: Some("1,2".into()), ..Opts::default() }) else {
        return;
    };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let out = tb.nix_build(&drv("nwh-faster", "x86_64-linux", &[]), &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    // Nix prints the machine line we sent after `# accept`.
    let err = stderr(&out);
    assert!(err.contains(&format!("' on 'ssh://root@{}'", tb.addr(2))), "{err}");
    assert_eq!(std::fs::read_to_string(&out_paths(&out)[0]).unwrap(), "nwhtb-b2\n");
}
