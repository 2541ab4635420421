//! Which of the tests' prerequisites this machine has, as cfgs the tests are marked ignored by
//! (with the reason) when one is missing: a test that cannot run is reported as not run, never
//! as passed. Under the test command in CI (`cargo xtask test` sets `NWH_TEST_COMMAND=1`, and
//! `CI=true`) a prerequisite that command installs (xtask/src/setup.rs) is required instead:
//! its absence fails the build, naming it. A plain `cargo build` in someone's CI is not held to
//! the tests' needs. Lix is never required (the test command does not make its root file
//! system): its tests show as ignored.
//!
//! - `nwh_root`: running as root (namespaces, chroot stores, Nix's sandbox);
//! - `nwh_testbed`: root, and the test bed's programs (Nix, sshd, `ip`, `unshare`);
//! - `nwh_nix_roots`: the root file systems of Nix 2.26 and 2.34 (`testbed/master.sh root`);
//! - `nwh_lix`: Lix's root file system;
//! - `nwh_busybox`: Debian's static busybox (the conformance builds' one program);
//! - `nwh_python_policy`, `nwh_js_policy`: the policies the test command builds in Python and
//!   JavaScript, named by `$NWH_PYTHON_POLICY` and `$NWH_JS_POLICY`.

use std::path::{Path, PathBuf};

fn main() {
    let in_ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
        && std::env::var("NWH_TEST_COMMAND").as_deref() == Ok("1");
    for var in [
        "CI",
        "NWH_TEST_COMMAND",
        "HOME",
        "NWH_NIX_ROOTS",
        "NWH_PYTHON_POLICY",
        "NWH_JS_POLICY",
        "NWH_SKIP_TESTBED",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let root = is_root();
    let roots = std::env::var_os("NWH_NIX_ROOTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nix-wasm-hook/nix-roots")
    });
    let skip_testbed = std::env::var("NWH_SKIP_TESTBED").as_deref() == Ok("1") && !in_ci;
    let testbed_programs = ["/usr/bin/nix-build", "/usr/sbin/sshd", "/usr/bin/ip", "/usr/bin/unshare"];
    // Debian trixie has Nix 2.26, sid 2.34 (testbed/master.sh).
    let nix_roots = ["trixie", "sid"].map(|suite| roots.join(suite).join(".nwh-nix-version"));
    let policy = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let (python, js) = (policy("NWH_PYTHON_POLICY"), policy("NWH_JS_POLICY"));

    let facts: [(&str, bool, String, bool); 7] = [
        ("nwh_root", root, "root".into(), true),
        (
            "nwh_testbed",
            root && !skip_testbed && testbed_programs.iter().all(|p| exists(Path::new(p))),
            format!("root and {}", testbed_programs.join(", ")),
            true,
        ),
        (
            "nwh_nix_roots",
            nix_roots.iter().all(|p| exists(p)),
            format!("{} and {}", nix_roots[0].display(), nix_roots[1].display()),
            true,
        ),
        ("nwh_lix", exists(&roots.join("lix/.nwh-nix-version")), "Lix's root file system".into(), false),
        ("nwh_busybox", exists(Path::new("/bin/busybox")), "/bin/busybox (busybox-static)".into(), true),
        (
            "nwh_python_policy",
            python.as_deref().is_some_and(exists),
            "$NWH_PYTHON_POLICY, the Python policy".into(),
            true,
        ),
        (
            "nwh_js_policy",
            js.as_deref().is_some_and(exists),
            "$NWH_JS_POLICY, the JavaScript policy".into(),
            true,
        ),
    ];
    let mut missing = Vec::new();
    for (cfg, has, what, ci_has) in facts {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if has {
            println!("cargo::rustc-cfg={cfg}");
        } else if ci_has {
            missing.push(what);
        }
    }
    if in_ci && !missing.is_empty() {
        panic!(
            "CI=true, but this machine lacks what the test command installs (run `cargo xtask test`, \
             which sets it up, as root): {}",
            missing.join("; ")
        );
    }
}

/// The effective uid is 0 (`/proc/self/status`: real, effective, saved, filesystem).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Whether `path` exists; a change of it (or of the nearest directory above it that exists,
/// where it would appear) runs this again.
fn exists(path: &Path) -> bool {
    let mut watched = path;
    while !watched.exists() {
        match watched.parent() {
            Some(parent) => watched = parent,
            None => break,
        }
    }
    println!("cargo::rerun-if-changed={}", watched.display());
    path.exists()
}
