//! An `ssh-ng://` builder whose daemon does not trust the hook's user: it refuses to build an
//! input-addressed derivation from the derivation we send, so the hook does what current Nix's
//! hook does — send the derivation's closure (content-addressed, so accepted without a
//! signature) and ask for the build by path. Against the real `nix-daemon --stdio
//! --force-untrusted` of Nix 2.34 (the test bed's sid root file system), with a store of its
//! own; the derivation comes from this machine's store, as in hook mode.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use nix_wasm_hook::core::log::{Level, Logger};
use nix_wasm_hook::transfer::store::StoreConn;
use nwh_daemon::DaemonClient;
use nwh_serve::BuildOptions;

use crate::support::testbed::{describe, master_script};

/// `nix-daemon --stdio --force-untrusted` of Nix 2.34 on an empty store of its own, as a
/// child on our pipes.
fn untrusted_daemon(
    work: &std::path::Path,
) -> (std::process::Child, std::io::PipeReader, std::io::PipeWriter) {
    let conf = work.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(work.join("store")).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "build-users-group =\nsubstituters =\nsandbox = false\nextra-experimental-features = daemon-trust-override\n",
    )
    .unwrap();
    let (our_out, their_out) = std::io::pipe().unwrap();
    let (their_in, our_in) = std::io::pipe().unwrap();
    // master.sh's root is entered in a private mount namespace already; the daemon's own
    // namespace gets the empty store over /nix, leaving the root's store alone.
    let script = r#"mount --bind "$0" /nix && exec nix-daemon --stdio --force-untrusted"#;
    let child = Command::new("bash")
        .arg(master_script())
        .args(["run", "2.34", "env"])
        .arg(format!("NIX_CONF_DIR={}", conf.display()))
        .args(["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script])
        .arg(work.join("store"))
        .stdin(their_in)
        .stdout(their_out)
        .stderr(Stdio::from(std::fs::File::create(work.join("daemon.stderr")).unwrap()))
        .spawn()
        .unwrap();
    (child, our_out, our_in)
}

#[test]
#[cfg_attr(
    not(all(nwh_root, nwh_nix_roots)),
    ignore = "needs root and the root file system of Nix 2.34: cargo xtask test makes it"
)]
fn an_untrusting_daemon_builds_the_derivation_it_is_sent_by_path() {
    let made = Command::new("bash").arg(master_script()).args(["root", "2.34"]).output().unwrap();
    assert!(made.status.success(), "{}", describe(&made));
    // Under /tmp, which master.sh binds into the root file system.
    let work = tempfile::Builder::new().prefix("nwh-untrusted-").tempdir_in("/tmp").unwrap();
    let nonce = crate::support::testbed::unique_nonce();
    let expr = format!(
        r#"derivation {{ name = "nwh-untrusted"; nonce = "{nonce}"; system = "x86_64-linux"; builder = "/bin/sh";
           args = [ "-c" "read l < ${{builtins.toFile "nwh-untrusted-input" "hello\n"}}; echo $l > $out" ]; }}"#
    );
    let inst = Command::new("nix-instantiate")
        .args(["--option", "build-users-group", "", "-E", &expr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(inst.status.success(), "{}", describe(&inst));
    let drv_path = String::from_utf8_lossy(&inst.stdout).trim().to_string();
    let drv = nwh_drv::Derivation::read(&drv_path).unwrap();
    let output = drv.output_paths()["out"].clone();

    let (mut child, out, inp) = untrusted_daemon(work.path());
    let log = std::fs::File::create(work.path().join("build.log")).unwrap();
    let client = DaemonClient::handshake("untrusted", out, inp).unwrap();
    assert_eq!(client.trusted(), Some(false), "the daemon says it does not trust us");
    let mut store = StoreConn::Daemon { client, log };
    let logger = Logger::new(false, Level::Error);
    // What the hook's build options are with `--max-build-log-size 1000000 --keep-failed`;
    // they go with a build over the serve protocol only.
    let options =
        BuildOptions { max_silent_time: 0, build_timeout: 5, max_log_size: 1_000_000, keep_failed: true };
    // Asked for by path: where Nix's hook says nothing of a kept build directory.
    assert!(store.builds_by_path(&drv.to_basic(&drv.input_srcs)));
    let result = store.build(&drv_path, &drv.to_basic(&drv.input_srcs), &options, &logger).unwrap();
    assert!(
        result.status.is_success(),
        "{result:?}; daemon: {}",
        std::fs::read_to_string(work.path().join("daemon.stderr")).unwrap()
    );
    // We sent the daemon no settings, as Nix's own hook sends none: a daemon that does not
    // trust us warns of every restricted one it is sent (`max-build-log-size`, say), which
    // Nix's hook never makes it do. Both logs hold what the daemon said.
    let said = std::fs::read_to_string(work.path().join("build.log")).unwrap()
        + &std::fs::read_to_string(work.path().join("daemon.stderr")).unwrap();
    assert!(!said.contains("ignoring the client-specified setting"), "{said}");
    assert!(!said.contains("restricted setting"), "{said}");
    // The daemon has the derivation and its input, as sent, and built the output itself.
    let wanted: BTreeSet<String> =
        [drv_path.clone(), output.clone()].into_iter().chain(drv.input_srcs.iter().cloned()).collect();
    assert_eq!(store.query_valid_paths(&wanted, false).unwrap(), wanted);
    let mut nar = Vec::new();
    store.dump(&output, &mut nar).unwrap();
    assert!(nar.windows(6).any(|w| w == b"hello\n"), "the output holds what the input held");
    drop(store);
    let _ = child.wait();

    // Why: asked for the derivation as sent, the same daemon refuses, in its words.
    let (mut child, out, inp) = untrusted_daemon(&work.path().join("again"));
    let mut client = DaemonClient::handshake("untrusted", out, inp).unwrap();
    let refused = client
        .build_derivation(
            &drv_path,
            &drv.to_basic(&drv.input_srcs),
            nwh_daemon::BuildMode::Normal,
            &mut |_| {},
        )
        .unwrap_err();
    assert!(refused.to_string().contains("not privileged to build input-addressed derivations"), "{refused}");
    drop(client);
    let _ = child.wait();
}
