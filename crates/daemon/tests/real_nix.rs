//! The client against the machine's real `nix-daemon --stdio` (Nix 2.8 on Debian 12) over
//! pipes, with a chroot store under a temporary directory (`--store DIR/remote`), as an
//! `ssh-ng://…?remote-store=` builder runs it. The derivation to build is instantiated by
//! `nix-instantiate` into a second chroot store (DIR/local). Nix builds in a chroot store only
//! inside its sandbox, which gets `/bin`, `/lib*` and `/usr` for the `/bin/sh` builder.
//!
//! Needs root (the daemon's sandbox) and Nix: otherwise it prints `SKIPPED: …` and passes,
//! except in CI (`CI=true`), where it fails.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::read_fixture;
use nwh_daemon::{BuildMode, BuildStatus, DaemonClient, DaemonError, LogMessage, Options, PathInfo};
use nwh_drv::Derivation;

fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    });
    let reason = if uid.as_deref() != Some("0") {
        Some("not root: nix-daemon's sandbox (needed to build in a chroot store) needs root".to_string())
    } else if !Command::new("nix-daemon")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        Some("nix-daemon is not installed".to_string())
    } else {
        None
    };
    if let Some(reason) = &reason {
        if matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")) {
            panic!("{reason}, and CI=true: the real-Nix test must run in CI");
        }
    }
    reason
}

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("nwh-daemon-e2e-").tempdir_in("/tmp").unwrap().keep();
        for d in ["conf", "home", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let sandbox_paths: Vec<&str> =
            ["/bin", "/lib", "/lib64", "/usr"].into_iter().filter(|p| Path::new(p).exists()).collect();
        std::fs::write(
            dir.join("conf/nix.conf"),
            format!(
                "build-users-group =\nsubstituters =\nsandbox = true\nsandbox-paths = {}\n",
                sandbox_paths.join(" ")
            ),
        )
        .unwrap();
        Sandbox { dir }
    }

    fn nix(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONF_DIR", self.dir.join("conf"))
            .env("NIX_USER_CONF_FILES", self.dir.join("conf/nix.conf"))
            .env("NIX_STATE_DIR", self.dir.join("state"))
            .env("HOME", self.dir.join("home"))
            .env("XDG_CACHE_HOME", self.dir.join("home/.cache"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE")
            .current_dir(&self.dir);
        cmd
    }

    fn daemon(&self) -> (Child, ChildStdout, ChildStdin) {
        let mut child = self
            .nix("nix-daemon")
            .arg("--stdio")
            .arg("--store")
            .arg(self.dir.join("remote"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        (child, stdout, stdin)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        fn writable(p: &Path) {
            let Ok(meta) = std::fs::symlink_metadata(p) else { return };
            if meta.is_dir() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                if let Ok(entries) = std::fs::read_dir(p) {
                    for e in entries.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Client = DaemonClient<ChildStdout, ChildStdin>;

#[test]
fn against_the_real_daemon() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let sb = Sandbox::new();
    let (mut child, stdout, stdin) = sb.daemon();
    let mut logs: Vec<LogMessage> = Vec::new();
    let mut log = |m: LogMessage| logs.push(m);
    let mut c = DaemonClient::handshake("nix-daemon", stdout, stdin).unwrap();
    let daemon_version = c.daemon_version().map(str::to_string);
    let host_nix = String::from_utf8(sb.nix("nix-daemon").arg("--version").output().unwrap().stdout).unwrap();
    assert!(host_nix.contains(daemon_version.as_deref().unwrap()), "{host_nix} vs {daemon_version:?}");
    assert!(c.version() >= 0x122, "{:#x}", c.version());

    c.set_options(&Options::default(), &mut log).unwrap();
    let path = upload_and_read_back(&mut c, &mut log);
    let drv_path = build_a_trivial_derivation(&sb, &mut c, &mut log);
    missing_path_is_the_daemons_error(&mut c, &mut log);

    assert!(matches!(c.query_path_info(&path, &mut log), Err(DaemonError::Poisoned { .. })));
    // The build was logged to us.
    let texts: Vec<String> = logs
        .iter()
        .filter_map(|m| match m {
            LogMessage::Next(s) => Some(s.clone()),
            LogMessage::StartActivity { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(texts.iter().any(|t| t.contains(&format!("building '{drv_path}'"))), "{texts:?}");

    drop(c);
    let status = child.wait().unwrap();
    assert!(status.success(), "nix-daemon exited with {status}");
}

/// Uploads a small NAR under a made-up input-addressed path (a trusted client may) and
/// checks what the daemon says about it and sends back; returns the path.
fn upload_and_read_back(c: &mut Client, log: &mut dyn FnMut(LogMessage)) -> String {
    let nar = read_fixture("hello.nar");
    let summary = nwh_nar::copy_nar(&mut &nar[..], &mut std::io::sink()).unwrap();
    let path = "/nix/store/00000000000000000000000000000000-nwh-daemon-hello".to_string();
    let wanted: BTreeSet<String> = [path.clone()].into_iter().collect();
    assert!(c.query_valid_paths(&wanted, false, log).unwrap().is_empty());
    assert_eq!(c.query_path_info(&path, log).unwrap(), None);
    let info = PathInfo { nar_hash: summary.nar_hash(), nar_size: summary.size, ..PathInfo::default() };
    c.add_to_store_nar(&path, &info, &mut &nar[..], log).unwrap();
    assert_eq!(c.query_valid_paths(&wanted, false, log).unwrap(), wanted);
    let got = c.query_path_info(&path, log).unwrap().expect("the uploaded path is valid");
    assert_eq!(got.nar_size, summary.size);
    assert_eq!(got.nar_hash, summary.sha256_base16());
    assert!(got.registration_time > 0, "the daemon stamps its own time");
    let mut back = Vec::new();
    let back_summary = c.nar_from_path(&path, &mut back, log).unwrap();
    assert_eq!(back, nar);
    assert_eq!(back_summary, summary);
    path
}

/// A trivial derivation, instantiated into another chroot store, built by the daemon;
/// returns its .drv path.
fn build_a_trivial_derivation(sb: &Sandbox, c: &mut Client, log: &mut dyn FnMut(LogMessage)) -> String {
    std::fs::write(
        sb.dir.join("hi.nix"),
        "builtins.derivation { name = \"nwh-daemon-hi\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [ \"-c\" \"echo hi > $out\" ]; }",
    )
    .unwrap();
    let out =
        sb.nix("nix-instantiate").arg("--store").arg(sb.dir.join("local")).arg("hi.nix").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drv_path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let drv = Derivation::read(sb.dir.join("local").join(drv_path.trim_start_matches('/'))).unwrap();
    let result =
        c.build_derivation(&drv_path, &drv.to_basic(&BTreeSet::new()), BuildMode::Normal, log).unwrap();
    assert_eq!(result.status, BuildStatus::Built, "{}", result.error_msg);
    let out_path = drv.output_paths()["out"].clone();
    let built = sb.dir.join("remote").join(out_path.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&built).unwrap(), "hi\n");
    assert!(result.stop_time >= result.start_time && result.start_time > 0);
    let paths = result.built_output_paths("/nix/store").unwrap();
    assert!(paths.is_empty() || paths["out"] == out_path, "{paths:?}");
    drv_path
}

/// The daemon's own error, in its words. It comes where the NAR would, and the daemon hangs
/// up after it.
fn missing_path_is_the_daemons_error(c: &mut Client, log: &mut dyn FnMut(LogMessage)) {
    let missing = "/nix/store/11111111111111111111111111111111-nwh-missing";
    let err = c.nar_from_path(missing, &mut Vec::new(), log).unwrap_err();
    match &err {
        DaemonError::Remote { during, error, .. } => {
            assert_eq!(*during, "NarFromPath");
            assert!(error.message.contains(missing), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
}
