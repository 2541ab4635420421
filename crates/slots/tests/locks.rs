//! Slot locking as other hooks on the host see it. flock(2) locks belong to an open file
//! description, so two `LoadDir`s in one process conflict exactly like two processes do;
//! the child-process tests check the real cross-process case.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use nwh_slots::{escape_uri, LoadDir};

const URI: &str = "ssh://nix@b1";

fn load_dir() -> (tempfile::TempDir, LoadDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = LoadDir::open(tmp.path().join("current-load"));
    (tmp, dir)
}

#[test]
fn open_creates_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("current-load");
    let dir = LoadDir::open(&path);
    assert!(path.is_dir());
    assert_eq!(dir.path(), path);
    // Opening again (directory exists) is fine, and so is a parent that does not exist:
    // the error only shows up when locking.
    LoadDir::open(&path);
    let missing = LoadDir::open(tmp.path().join("no/such/dir"));
    let err = missing.lock_main().unwrap_err();
    assert!(err.to_string().contains("main-lock"), "{err}");
}

#[test]
fn names_match_nix() {
    let (_tmp, dir) = load_dir();
    let cases = [
        ("ssh://nix@b1", 0, "ssh:__nix@b1-0"),
        ("ssh://nix@b1", 3, "ssh:__nix@b1-3"),
        ("ssh-ng://builder.example.com", 1, "ssh-ng:__builder.example.com-1"),
        ("ssh://root@[fe80::1%eth0]", 0, "ssh:__root@[fe80::1%eth0]-0"),
        ("unix:///run/nix/daemon", 2, "unix:___run_nix_daemon-2"),
        ("ssh://b1?ssh-key=/root/.ssh/id", 0, "ssh:__b1?ssh-key=_root_.ssh_id-0"),
        ("local", 0, "local-0"),
    ];
    for (uri, slot, name) in cases {
        assert_eq!(dir.slot_path(uri, slot), dir.path().join(name), "{uri}");
    }
    assert_eq!(dir.main_lock_path(), dir.path().join("main-lock"));
    assert_eq!(dir.upload_lock_path("ssh://nix@b1"), dir.path().join("ssh:__nix@b1.upload-lock"));
    assert_eq!(escape_uri("ssh-ng://a/b/c"), "ssh-ng:__a_b_c");
}

#[test]
fn empty_machine_scan() {
    let (_tmp, dir) = load_dir();
    let main = dir.lock_main().unwrap();
    let scan = dir.scan(&main, URI, 3).unwrap();
    assert_eq!(scan.in_use, 0);
    let slot = scan.free.expect("a free slot");
    assert_eq!(slot.slot(), 0);
    assert_eq!(slot.path(), dir.path().join("ssh:__nix@b1-0"));
    // All slot files exist, and like Nix's they are private to the owner.
    for i in 0..3 {
        let meta = std::fs::metadata(dir.slot_path(URI, i)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o077, 0, "slot {i}");
    }
}

#[test]
fn max_jobs_zero_is_always_full() {
    let (_tmp, dir) = load_dir();
    let main = dir.lock_main().unwrap();
    let scan = dir.scan(&main, URI, 0).unwrap();
    assert_eq!(scan.in_use, 0);
    assert!(scan.free.is_none());
    assert!(!dir.slot_path(URI, 0).exists());
}

#[test]
fn two_handles_see_each_others_slots() {
    let (_tmp, a) = load_dir();
    let b = LoadDir::open(a.path());

    let held_by_a = {
        let main = a.lock_main().unwrap();
        let scan = a.scan(&main, URI, 3).unwrap();
        assert_eq!(scan.in_use, 0);
        scan.free.unwrap()
    };
    assert_eq!(held_by_a.slot(), 0);

    let held_by_b = {
        let main = b.lock_main().unwrap();
        let scan = b.scan(&main, URI, 3).unwrap();
        assert_eq!(scan.in_use, 1);
        scan.free.unwrap()
    };
    assert_eq!(held_by_b.slot(), 1);

    // The scan released slot 2 again after finding it free: a third party can take it.
    {
        let main = a.lock_main().unwrap();
        let scan = a.scan(&main, URI, 3).unwrap();
        assert_eq!(scan.in_use, 2);
        let third = scan.free.unwrap();
        assert_eq!(third.slot(), 2);

        let full = a.scan(&main, URI, 3).unwrap();
        assert_eq!(full.in_use, 3);
        assert!(full.free.is_none());
    }

    // Dropping a SlotLock frees exactly that slot.
    drop(held_by_a);
    let main = b.lock_main().unwrap();
    let scan = b.scan(&main, URI, 3).unwrap();
    assert_eq!(scan.in_use, 1);
    assert_eq!(scan.free.unwrap().slot(), 0);
}

#[test]
fn machines_are_counted_separately() {
    let (_tmp, dir) = load_dir();
    let main = dir.lock_main().unwrap();
    let _b1 = dir.scan(&main, "ssh://b1", 2).unwrap().free.unwrap();
    let b2 = dir.scan(&main, "ssh://b2", 2).unwrap();
    assert_eq!(b2.in_use, 0);
    assert_eq!(dir.scan(&main, "ssh://b1", 2).unwrap().in_use, 1);
}

#[test]
fn shrinking_max_jobs_ignores_higher_slots() {
    let (_tmp, dir) = load_dir();
    let other = LoadDir::open(dir.path());
    let main = other.lock_main().unwrap();
    let held: Vec<_> = (0..3).map(|_| other.scan(&main, URI, 3).unwrap().free.unwrap()).collect();
    assert_eq!(held.iter().map(|s| s.slot()).collect::<Vec<_>>(), [0, 1, 2]);
    drop(main);
    // A machines file edited down to 2 jobs only looks at slots 0 and 1, like Nix.
    let main = dir.lock_main().unwrap();
    let scan = dir.scan(&main, URI, 2).unwrap();
    assert_eq!(scan.in_use, 2);
    assert!(scan.free.is_none());
}

#[test]
fn main_lock_is_exclusive_and_blocking() {
    let (_tmp, dir) = load_dir();
    let first = dir.lock_main().unwrap();
    let (tx, rx) = mpsc::channel();
    let other = LoadDir::open(dir.path());
    let waiter = std::thread::spawn(move || {
        let lock = other.lock_main().unwrap();
        tx.send(()).unwrap();
        drop(lock);
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "second main lock must wait");
    drop(first);
    rx.recv_timeout(Duration::from_secs(10)).expect("second main lock acquired after release");
    waiter.join().unwrap();
}

#[test]
fn touch_updates_times() {
    let (_tmp, dir) = load_dir();
    let main = dir.lock_main().unwrap();
    let slot = dir.scan(&main, URI, 1).unwrap().free.unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(slot.path())
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(old).set_accessed(old))
        .unwrap();
    assert_eq!(std::fs::metadata(slot.path()).unwrap().modified().unwrap(), old);

    let before = SystemTime::now() - Duration::from_secs(5);
    slot.touch().unwrap();
    let meta = std::fs::metadata(slot.path()).unwrap();
    assert!(meta.modified().unwrap() >= before);
    assert!(meta.accessed().unwrap() >= before);
}

/// Not a test of its own: the body of the child process spawned by
/// `lock_held_by_child_process_counts`. It takes a slot through the crate's own API, reports
/// it, and keeps it until its stdin closes.
#[test]
fn child_holder() {
    let Some(dir) = std::env::var_os("NWH_SLOTS_TEST_HOLD_DIR") else {
        return;
    };
    let dir = LoadDir::open(dir);
    let main = dir.lock_main().unwrap();
    let slot = dir.scan(&main, URI, 4).unwrap().free.unwrap();
    drop(main);
    // libtest has already printed "test locks::child_holder ... " without a newline.
    println!("\nholding {}", slot.slot());
    std::io::stdout().flush().unwrap();
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
}

/// Waits for a stdout line of the child starting with `prefix` (it prints one once it holds
/// its lock; libtest may print other lines first). Lines are read on a helper thread so a
/// misbehaving child fails the test after a while instead of hanging it.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the awaited line: a closed pipe would make the child's later
        // output fail with EPIPE.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child never printed {prefix:?}: {e}");
            }
        }
    }
}

/// Closes the child's stdin (its signal to exit) and reaps it.
fn finish(mut child: Child) {
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn lock_held_by_child_process_counts() {
    let (_tmp, dir) = load_dir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "locks::child_holder", "--nocapture", "--test-threads=1"])
        .env("NWH_SLOTS_TEST_HOLD_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_for_line(&mut child, "holding").trim(), "holding 0");

    {
        let main = dir.lock_main().unwrap();
        let scan = dir.scan(&main, URI, 4).unwrap();
        assert_eq!(scan.in_use, 1);
        assert_eq!(scan.free.unwrap().slot(), 1);
    }

    finish(child);
    // The lock died with the process, with no cleanup.
    let main = dir.lock_main().unwrap();
    assert_eq!(dir.scan(&main, URI, 4).unwrap().in_use, 0);
}

fn util_linux_flock() -> Option<&'static Path> {
    ["/usr/bin/flock", "/bin/flock"].into_iter().map(Path::new).find(|p| p.exists())
}

/// util-linux `flock` uses flock(2), as Nix does. If this crate used fcntl record locks the
/// two would not conflict, and the load would be invisible.
#[test]
fn lock_held_by_util_linux_flock_counts() {
    let Some(flock) = util_linux_flock() else {
        eprintln!("skipped: util-linux flock not installed");
        return;
    };
    let (_tmp, dir) = load_dir();
    let slot1 = dir.slot_path(URI, 1);
    let mut child = Command::new(flock)
        .arg(&slot1)
        .args(["sh", "-c", "echo locked; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "locked");

    {
        let main = dir.lock_main().unwrap();
        let scan = dir.scan(&main, URI, 3).unwrap();
        assert_eq!(scan.in_use, 1);
        assert_eq!(scan.free.unwrap().slot(), 0);
    }

    // And the other way round: while we hold slot 0, `flock -n` on it must fail.
    let main = dir.lock_main().unwrap();
    let ours = dir.scan(&main, URI, 3).unwrap().free.unwrap();
    assert_eq!(ours.slot(), 0);
    let status = Command::new(flock).args(["-n", "-E", "42"]).arg(ours.path()).arg("true").status().unwrap();
    assert_eq!(status.code(), Some(42));

    finish(child);
}

/// The main lock is also flock(2): util-linux `flock` holding it makes our scan wait.
#[test]
fn main_lock_interoperates_with_util_linux_flock() {
    let Some(flock) = util_linux_flock() else {
        eprintln!("skipped: util-linux flock not installed");
        return;
    };
    let (_tmp, dir) = load_dir();
    let mut child = Command::new(flock)
        .arg(dir.main_lock_path())
        .args(["sh", "-c", "echo locked; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "locked");

    let (tx, rx) = mpsc::channel();
    let d = dir.clone();
    let waiter = std::thread::spawn(move || {
        let lock = d.lock_main().unwrap();
        tx.send(()).unwrap();
        drop(lock);
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    finish(child);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
}
