//! Smoke test of the end-to-end test bed itself, with Nix's OWN build hook
//! (the default `build-hook`): if this fails, the test bed is broken, not
//! nix-wasm-hook. Needs root; see `support/testbed.rs` for when it is skipped.

use crate::support::testbed::{self, describe, hostname_drv, out_paths, Opts, Testbed};

/// Build with `--max-jobs 0` (nothing may be built locally) and only builder 1
/// in `builders`; check where it was built and which stores hold the output.
fn build_on_builder_1(tb: &Testbed, line: &str, scheme: &str) {
    assert!(line.starts_with(&format!("{scheme}://root@{} ", tb.addr(1))), "{line}");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 8, "machines line has 8 fields: {line}");
    assert_eq!(fields[2], testbed::SSH_KEY);

    let out = tb.nix_build(
        &hostname_drv(&format!("smoke-{scheme}")),
        &["--max-jobs", "0", "--option", "builders", line],
    );
    assert!(out.status.success(), "nix-build failed:\n{}", describe(&out));
    let paths = out_paths(&out);
    assert_eq!(paths.len(), 1, "one output path expected:\n{}", describe(&out));
    let path = &paths[0];

    // Built remotely on builder 1, copied back to the master's store.
    let content = std::fs::read_to_string(path).expect("output is in the master's store");
    assert_eq!(content, "nwhtb-b1\n", "output of {path}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("'{scheme}://root@{}'", tb.addr(1))),
        "nix-build did not report building on builder 1:\n{stderr}"
    );

    // Valid in builder 1's own store (over ssh), absent from builder 2's.
    let check = tb.ssh(1, &format!("nix-store --check-validity {path}"));
    assert!(check.status.success(), "not valid on builder 1:\n{}", describe(&check));
    assert!(tb.valid_on(1, path));
    assert!(!tb.valid_on(2, path), "{path} must not be in builder 2's store");
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn nix_own_hook_builds_on_builder_1() {
    let Some(tb) = Testbed::up_or_skip(2, Opts::default()) else {
        return;
    };
    assert_eq!(tb.machines_lines().len(), 2);

    // Each builder runs in its own UTS namespace with its own store.
    let host = tb.ssh(2, "cat /proc/sys/kernel/hostname");
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "nwhtb-b2", "{}", describe(&host));

    build_on_builder_1(&tb, &tb.machine(1), "ssh");
    build_on_builder_1(&tb, &tb.machines_lines_ng()[0], "ssh-ng");
}
