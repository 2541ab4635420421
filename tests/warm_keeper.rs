//! The warm-session keeper (`nix-wasm-hook --warm-sessions DIR`) on its own: one per
//! directory, and it ends by itself once nothing has asked it for a minute, taking its socket
//! with it, so that no process lingers after the builds are over.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix_wasm_hook::transfer::warm::IDLE;

fn keeper(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .arg("--warm-sessions")
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits up to `limit` for `child` to end; its status, or None (and it is killed) when it
/// did not.
fn ended_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn one_keeper_per_directory_and_it_ends_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = keeper(dir.path());
    let socket = dir.path().join("warm.sock");
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the keeper never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(dir.path().join("warm.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(pid, first.id());

    // A second keeper of the same directory ends at once, leaving the first one serving.
    let mut second = keeper(dir.path());
    let status = ended_within(&mut second, Duration::from_secs(10)).expect("a second keeper ended at once");
    assert!(status.success(), "{status}");
    assert!(first.try_wait().unwrap().is_none(), "the first keeper still serves");

    let status = ended_within(&mut first, IDLE + Duration::from_secs(15))
        .expect("the keeper ended by itself once idle for a minute");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() >= IDLE, "it did not end before IDLE passed");
    assert!(!socket.exists(), "its socket went with it");
}
