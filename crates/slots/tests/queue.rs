//! Waiting in turn for a slot: first come, first served, no polling, and a waiter that dies
//! holds nothing. Each waiter opens the directory on its own, as separate processes would
//! (flock locks belong to open file descriptions).

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nwh_slots::LoadDir;

fn load_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("current-load");
    LoadDir::open(&path);
    (tmp, path)
}

/// The queue's counter: how many waiters have joined so far.
fn joined(dir: &std::path::Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join(format!("queue-{name}.lock")))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn waiters_get_their_turn_in_order_of_arrival() {
    let (_tmp, path) = load_dir();
    let first = LoadDir::open(&path).wait_turn("q").unwrap();
    assert_eq!(first.number(), 1);
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for who in ["second", "third"] {
        let (p, tx) = (path.clone(), tx.clone());
        let before = joined(&path, "q");
        handles.push(std::thread::spawn(move || {
            let turn = LoadDir::open(&p).wait_turn("q").unwrap();
            tx.send((who, turn)).unwrap();
        }));
        // The next one joins only after this one has its number.
        until("the waiter has joined", || joined(&path, "q") == before + 1);
    }
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "nobody moves up while the first waits");
    drop(first);
    let (who, second) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((who, second.number()), ("second", 2));
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "the third waits for the second");
    drop(second);
    let (who, third) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((who, third.number()), ("third", 3));
    for h in handles {
        h.join().unwrap();
    }
    // The files of waiters that left are gone; only the last one's stays for its successor.
    let left: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("queue-q-"))
        .collect();
    assert_eq!(left, ["queue-q-3"]);
}

#[test]
fn a_waiter_that_dies_holds_nothing() {
    let Some(flock) = ["/usr/bin/flock", "/bin/flock"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: util-linux flock is not installed");
        return;
    };
    let (_tmp, path) = load_dir();
    drop(LoadDir::open(&path).wait_turn("q").unwrap());
    // Waiter 2 is another process, stopped for ever while it waits.
    std::fs::write(path.join("queue-q.lock"), "2\n").unwrap();
    // --no-fork: the process that holds the lock is the one killed below, no child of it.
    let mut other = Command::new(flock)
        .arg("--no-fork")
        .arg(path.join("queue-q-2"))
        .args(["sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    until("the other waiter holds its place", || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("queue-q-2"))
            .unwrap();
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    });
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let waiter =
        std::thread::spawn(move || tx.send(LoadDir::open(&p).wait_turn("q").unwrap().number()).unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "waits behind the other process");
    other.kill().unwrap();
    other.wait().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 3);
    waiter.join().unwrap();
}

#[test]
fn the_head_wakes_when_a_slot_frees() {
    let (_tmp, path) = load_dir();
    let holder = LoadDir::open(&path);
    let main = holder.lock_main().unwrap();
    let a = holder.scan(&main, "ssh://a", 1).unwrap().free.unwrap();
    let b0 = holder.scan(&main, "ssh://b", 2).unwrap().free.unwrap();
    let b1 = holder.scan(&main, "ssh://b", 2).unwrap().free.unwrap();
    drop(main);
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let machines = [("ssh://a".to_string(), 1), ("ssh://b".to_string(), 2)];
        tx.send(LoadDir::open(&p).wait_for_a_free_slot(&machines).is_ok()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "every slot is held");
    drop(b1);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    // The waiter does not keep the slot it saw free.
    let main = holder.lock_main().unwrap();
    assert_eq!(holder.scan(&main, "ssh://b", 2).unwrap().in_use, 1);
    drop((a, b0));
}

#[test]
fn a_wait_with_a_deadline_ends_at_it_or_when_a_slot_frees() {
    let (_tmp, path) = load_dir();
    let holder = LoadDir::open(&path);
    let main = holder.lock_main().unwrap();
    let a = holder.scan(&main, "ssh://a", 1).unwrap().free.unwrap();
    drop(main);
    let machines = [("ssh://a".to_string(), 1)];
    let waiter = LoadDir::open(&path);
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_millis(200);
    assert!(!waiter.wait_for_a_free_slot_until(&machines, Some(deadline)).unwrap(), "the slot stays held");
    assert!(started.elapsed() >= Duration::from_millis(200));

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let far = std::time::Instant::now() + Duration::from_secs(60);
        let woke = waiter.wait_for_a_free_slot_until(&machines, Some(far)).unwrap();
        tx.send((woke, std::time::Instant::now())).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let freed = std::time::Instant::now();
    drop(a);
    let (woke, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(woke);
    // Woken by the lock, not by a later look: well before the deadline a minute away.
    assert!(at.duration_since(freed) < Duration::from_secs(5));
}
