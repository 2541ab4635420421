//! Waiting for a slot without polling, in order of arrival.
//!
//! Nix's own hook never waits: it answers `postpone` and asks again after
//! `build-poll-interval`. A front-end that must wait (builder mode, where Nix has already
//! handed the build over) waits here instead:
//!
//! - [`LoadDir::wait_turn`] queues the waiters for one set of machines first come, first
//!   served. Each waiter takes the next number under `queue-<name>.lock` and holds an
//!   exclusive lock on its own file `queue-<name>-<n>` until it has a slot; it waits with a
//!   blocking lock on its predecessor's file. A waiter that dies releases its lock with its
//!   process, so the next one moves up and nothing is left held.
//! - [`LoadDir::wait_for_a_free_slot`] blocks the head of the queue until a build ends on one
//!   of those machines: one thread per slot file blocks in `flock`, and the first to get its
//!   lock releases it and wakes the caller, who then measures and chooses again, and claims
//!   a slot under the main lock (another hook may take that slot first, and the choice is the
//!   policy's).
//!   [`LoadDir::wait_for_a_free_slot_until`] does the same for at most a while: the hook
//!   front-end's short wait before it must answer `postpone`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::{lock_error, open_lock_file, try_lock, LoadDir, Result};

/// A place at the head of a queue, held until dropped: drop it once the slot is taken (or the
/// wait is given up), and the next waiter moves up.
#[derive(Debug)]
#[must_use = "the next waiter moves up as soon as this is dropped"]
pub struct Turn {
    _file: File,
    number: u64,
}

impl Turn {
    /// This waiter's number in its queue (1 for the first waiter the queue ever had).
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl LoadDir {
    /// Joins the queue `name` (a name safe in a file name, e.g. a hash of the machines waited
    /// for) and blocks until every waiter that joined before has left it.
    pub fn wait_turn(&self, name: &str) -> Result<Turn> {
        let (mine, number) = {
            let counter_path = self.path().join(format!("queue-{name}.lock"));
            let counter = open_lock_file(&counter_path)?;
            blocking_lock(&counter, &counter_path)?;
            let last = std::fs::read_to_string(&counter_path).ok().and_then(|t| t.trim().parse::<u64>().ok());
            let number = last.unwrap_or(0) + 1;
            let path = self.queue_path(name, number);
            let mine = open_lock_file(&path)?;
            // Nobody else has this number, so the lock is free; taken before the counter is
            // released, so the next waiter never finds it unlocked while we still wait.
            try_lock(&mine, &path)?;
            std::fs::write(&counter_path, format!("{number}\n"))
                .map_err(|source| crate::SlotError::Open { path: counter_path.clone(), source })?;
            (mine, number)
        };
        if number > 1 {
            let before = self.queue_path(name, number - 1);
            let file = open_lock_file(&before)?;
            blocking_lock(&file, &before)?;
            // The predecessor has left; its file is nobody's now.
            let _ = std::fs::remove_file(&before);
        }
        Ok(Turn { _file: mine, number })
    }

    /// Blocks until one of `slots` (machine URI and max-jobs) has a slot nobody holds, then
    /// returns without holding it.
    pub fn wait_for_a_free_slot(&self, slots: &[(String, u32)]) -> Result<()> {
        self.wait_for_a_free_slot_until(slots, None).map(drop)
    }

    /// [`LoadDir::wait_for_a_free_slot`], giving up at `deadline`: true when a slot freed,
    /// false when the deadline came first. A hook that may wait only so long before it must
    /// answer Nix is woken the moment a build ends, not at its next look.
    pub fn wait_for_a_free_slot_until(
        &self,
        slots: &[(String, u32)],
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let (tx, rx) = mpsc::channel();
        let mut waiting = 0;
        for (uri, max_jobs) in slots {
            for slot in 0..*max_jobs {
                let path = self.slot_path(uri, slot);
                let file = open_lock_file(&path)?;
                let tx = tx.clone();
                waiting += 1;
                // Detached: a thread whose slot frees after the caller moved on takes the
                // lock and releases it at once, which other hooks see as a slot free.
                std::thread::spawn(move || {
                    let got = blocking_lock(&file, &path);
                    drop(file);
                    let _ = tx.send(got);
                });
            }
        }
        drop(tx);
        if waiting == 0 {
            return Ok(true);
        }
        let got = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(locked) => locked.map(|()| true),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(true),
        }
    }

    fn queue_path(&self, name: &str, number: u64) -> PathBuf {
        self.path().join(format!("queue-{name}-{number}"))
    }
}

fn blocking_lock(file: &File, path: &Path) -> Result<()> {
    loop {
        match rustix::fs::flock(file, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(lock_error(path.to_owned(), e)),
        }
    }
}
