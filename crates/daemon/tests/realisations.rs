//! `RegisterDrvOutput` against real Nix: a realisation registered through `nix-daemon --stdio`
//! on a chroot store (processed in the daemon's own process, trusted), then read back by Nix
//! itself with `nix realisation info`, which computes the output's DrvOutput id on its own, so
//! the test also checks our id ([`Derivation::drv_output_ids`]) against Nix's. With the host's
//! Nix (2.8, protocol 1.34) and, where the test bed's root file system can be had, Nix 2.34
//! (protocol 1.38) through `testbed/master.sh run 2.34` (which binds /tmp).
//!
//! Needs root and Nix: otherwise it prints `SKIPPED: …` and passes, except in CI
//! (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nwh_daemon::{DaemonClient, DaemonError, Realisation};
use nwh_drv::Derivation;

fn skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let nix = Command::new("nix-daemon").arg("--version").output().is_ok_and(|o| o.status.success());
    let reason = match (root, nix) {
        (false, _) => Some("not root (master.sh and the chroot stores need it)".to_string()),
        (_, false) => Some("nix-daemon is not installed".to_string()),
        _ => None,
    };
    if let Some(reason) = &reason {
        if matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")) {
            panic!("{reason}, and CI=true: the real-Nix test must run in CI");
        }
    }
    reason
}

/// Which Nix runs the commands: the host's, or 2.34 in the test bed's root file system.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nix {
    Host,
    V2_34,
}

fn master_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testbed/master.sh")
}

struct Work {
    dir: tempfile::TempDir,
    nix: Nix,
}

impl Work {
    fn new(nix: Nix) -> Work {
        // Under /tmp, which master.sh binds into the root file system.
        let dir = tempfile::Builder::new().prefix("nwh-realisation-").tempdir_in("/tmp").unwrap();
        for (conf, features) in [("conf", "nix-command ca-derivations"), ("conf-no-ca", "nix-command")] {
            std::fs::create_dir_all(dir.path().join(conf)).unwrap();
            std::fs::write(
                dir.path().join(conf).join("nix.conf"),
                format!(
                    "build-users-group =\nsubstituters =\nsandbox = false\nexperimental-features = {features}\n"
                ),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Work { dir, nix }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `program args…` of this Nix, configured by `conf` (with or without `ca-derivations`).
    fn cmd(&self, conf: &str, program: &str) -> Command {
        let mut cmd = match self.nix {
            Nix::Host => Command::new(program),
            Nix::V2_34 => {
                let mut c = Command::new("bash");
                c.arg(master_script()).args(["run", "2.34", program]);
                c
            }
        };
        let conf = self.dir.path().join(conf);
        cmd.env("NIX_CONF_DIR", &conf)
            .env("NIX_USER_CONF_FILES", conf.join("nix.conf"))
            .env("HOME", self.dir.path().join("home"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE")
            .arg("--store")
            .arg(self.store())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd("conf", program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?} ({:?}): {}", self.nix, describe(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn daemon(
        &self,
        conf: &str,
    ) -> (std::process::Child, DaemonClient<std::process::ChildStdout, std::process::ChildStdin>) {
        let mut child = self
            .cmd(conf, "nix-daemon")
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (out, inp) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let client = DaemonClient::handshake("nix-daemon", out, inp).unwrap();
        (child, client)
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn registered_realisation_is_nixs(nix: Nix) {
    let w = Work::new(nix);
    std::fs::write(
        w.dir.path().join("ca.nix"),
        r#"builtins.derivation { name = "nwh-realisation"; system = "x86_64-linux"; builder = "/bin/sh";
             args = [ "-c" "echo hi > $out; echo dev > $dev" ]; outputs = [ "out" "dev" ];
             __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; }"#,
    )
    .unwrap();
    let drv_path =
        w.run("nix-instantiate", &[w.dir.path().join("ca.nix").to_str().unwrap()]).trim().to_string();
    let drv = Derivation::read(w.store().join(drv_path.trim_start_matches('/'))).unwrap();
    assert!(drv.has_floating_outputs());
    let ids = drv.drv_output_ids().unwrap();
    // Two paths made valid to stand for the outputs (Nix checks only that they are valid).
    let mut paths = Vec::new();
    for name in ["nwh-realisation", "nwh-realisation-dev"] {
        let file = w.dir.path().join(name);
        std::fs::write(&file, format!("{name}\n")).unwrap();
        paths.push(w.run("nix-store", &["--add", file.to_str().unwrap()]).trim().to_string());
    }

    // Without ca-derivations the daemon's store refuses, in its words; the connection goes on.
    let (mut child, mut c) = w.daemon("conf-no-ca");
    let realisation = Realisation { id: ids["out"].clone(), out_path: paths[0].clone() };
    let err = c.register_drv_output(&realisation, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Remote { .. }) && err.to_string().contains("ca-derivations"), "{err}");
    eprintln!("{nix:?} without ca-derivations: {err}");
    drop(c);
    let _ = child.wait();

    let (mut child, mut c) = w.daemon("conf");
    let version = c.version();
    c.register_drv_output(&realisation, &mut |_| {}).unwrap();
    let dev = Realisation { id: ids["dev"].clone(), out_path: paths[1].clone() };
    c.register_drv_output(&dev, &mut |_| {}).unwrap();
    // The same again is accepted; another path for the same id is not.
    c.register_drv_output(&realisation, &mut |_| {}).unwrap();
    let other = Realisation { id: ids["out"].clone(), out_path: paths[1].clone() };
    let err = c.register_drv_output(&other, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    eprintln!("{nix:?}, another path: {err}");
    // A path that is not valid is refused.
    let invalid = Realisation {
        id: ids["out"].replace("!out", "!lib"),
        out_path: "/nix/store/00000000000000000000000000000000-x".into(),
    };
    let err = c.register_drv_output(&invalid, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Remote { .. }), "{err:?}");
    eprintln!("{nix:?}, a path not valid: {err}");
    drop(c);
    let status = child.wait().unwrap();
    assert!(status.success(), "nix-daemon exited with {status}");

    // Nix finds them under the ids it computes itself.
    let installable = match nix {
        Nix::Host => drv_path.clone(),
        Nix::V2_34 => format!("{drv_path}^*"),
    };
    let info = w.run("nix", &["realisation", "info", &installable]);
    let mut lines: Vec<&str> = info.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [format!("{} {}", ids["dev"], paths[1]), format!("{} {}", ids["out"], paths[0])],
        "{nix:?} (protocol {version:#x})"
    );
    eprintln!("{nix:?}: protocol {version:#x}, registered {ids:?}");
}

#[test]
fn registered_with_the_host_nix() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    registered_realisation_is_nixs(Nix::Host);
}

#[test]
fn registered_with_nix_2_34() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let root = Command::new("bash").arg(master_script()).args(["root", "2.34"]).output().unwrap();
    if !root.status.success() {
        let why = format!("no Nix 2.34 root file system: {}", describe(&root));
        if matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")) {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    registered_realisation_is_nixs(Nix::V2_34);
}
