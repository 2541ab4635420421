//! What the tests need on the machine, made so before they run: the test command does its own
//! set-up on a fresh Debian machine, so that the one command README.md gives passes there.
//!
//! As root (a CI machine, the test bed's home): Debian's packages the tests run (Nix 2.8 as the
//! master and on the builders, sshd and ssh, `ip`, `unshare`, debootstrap for the newer Nix
//! masters, the static busybox of the conformance builds, Python and Node for the policies in
//! those languages), installed when missing; the Rust targets and components; and the root file
//! systems of Debian's newer Nix (2.26, 2.34), made once outside the checkout and reused. Not as
//! root, nothing can be installed: what is missing is named, and the tests that need it say so.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

/// Debian packages the tests use, each with what for.
const PACKAGES: &[(&str, &str)] = &[
    ("nix-bin", "Nix 2.8: the master and the builders of the test bed"),
    ("openssh-server", "the test bed's builders"),
    ("openssh-client", "reaching the builders"),
    ("iproute2", "the test bed's network namespaces"),
    ("util-linux", "unshare, for the namespaces"),
    ("procps", "finding the test bed's processes"),
    ("debootstrap", "the root file systems of Nix 2.26 and 2.34"),
    ("busybox-static", "the one program of the conformance builds"),
];

pub fn run(repo: &Path) -> Result<()> {
    let root = is_root();
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !succeeds(Command::new("dpkg").args(["-s", p])))
        .collect();
    // The Python and C policies are built with componentize-py and zig (the ziglang wheel),
    // installed pinned into a venv: a Python 3 with venv and pip.
    if !succeeds(Command::new("python3").args(["-m", "venv", "--help"])) {
        missing.extend(["python3", "python3-venv", "python3-pip"]);
    }
    // The JavaScript policy is built with componentize-js from npm.
    if !succeeds(Command::new("npm").arg("--version")) {
        missing.extend(["nodejs", "npm"]);
    }
    if !missing.is_empty() {
        if root {
            eprintln!("xtask: installing {}", missing.join(" "));
            apt(&["update", "-qq"])?;
            let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
            install.extend(&missing);
            apt(&install)?;
        } else {
            eprintln!(
                "xtask: missing (as root this command installs them; the tests that need them say so): {}",
                missing.join(" ")
            );
        }
    }
    rustup(&["target", "add", "wasm32-unknown-unknown", "wasm32-wasip2"])?;
    rustup(&["component", "add", "clippy", "rustfmt"])?;
    if root {
        nix_roots(repo)?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    ensure!(status.success(), "apt-get {} failed: {status}", args.join(" "));
    Ok(())
}

fn rustup(args: &[&str]) -> Result<()> {
    let out = Command::new("rustup").args(args).stdin(Stdio::null()).output().context("running rustup")?;
    ensure!(
        out.status.success(),
        "rustup {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Debian trixie's and sid's Nix in root file systems beside the host (`testbed/master.sh
/// root`), both at once: each is a debootstrap of some minutes when cold, nothing when made.
fn nix_roots(repo: &Path) -> Result<()> {
    let script = repo.join("testbed/master.sh");
    let children = ["2.26", "2.34"].map(|version| {
        let child = Command::new("bash")
            .arg(&script)
            .args(["root", version])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("running {} root {version}", script.display()));
        (version, child)
    });
    for (version, child) in children {
        let status = child?.wait()?;
        ensure!(status.success(), "making the root file system of Nix {version} failed: {status}");
    }
    Ok(())
}
