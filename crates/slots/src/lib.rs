//! Build-slot accounting in the `current-load` directory (docs/scheduling.md §4).
//!
//! Nix's own build hook counts a remote machine's load as the number of its slot files that
//! some process holds an exclusive `flock(2)` on. Using the same directory, the same file
//! names and the same kind of lock lets this hook and Nix's run side by side and see each
//! other's builds. Locks die with the process, so nothing ever needs cleaning up.
//!
//! Typical use, mirroring one scheduling round:
//!
//! ```no_run
//! # fn main() -> Result<(), nwh_slots::SlotError> {
//! let dir = nwh_slots::LoadDir::open(nwh_slots::default_dir());
//! let main = dir.lock_main()?;
//! let scan = dir.scan(&main, "ssh://nix@b1", 4)?;
//! if let Some(slot) = scan.free {
//!     slot.touch()?;
//!     drop(main);
//!     // ... connect; on accept keep `slot` alive until the process exits.
//! #   drop(slot);
//! }
//! # Ok(()) }
//! ```

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Timespec, Timestamps, UTIME_NOW};
use rustix::io::Errno;

mod queue;
pub use queue::Turn;

/// Nix's compiled-in state directory.
pub const DEFAULT_STATE_DIR: &str = "/nix/var/nix";

/// `current-load` under `state_dir`.
pub fn dir_for_state_dir(state_dir: impl AsRef<Path>) -> PathBuf {
    state_dir.as_ref().join("current-load")
}

/// The directory Nix's hook uses for the default local store: `$NIX_STATE_DIR/current-load`,
/// or `/nix/var/nix/current-load`. An empty `NIX_STATE_DIR` counts as unset, as in Nix.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("NIX_STATE_DIR") {
        Some(dir) if !dir.is_empty() => dir_for_state_dir(dir),
        _ => dir_for_state_dir(DEFAULT_STATE_DIR),
    }
}

/// The store URI as it appears in lock file names: every `/` becomes `_`.
///
/// Nix applies this to the URI as its machines parser normalised it, so the caller must pass
/// that same form (e.g. `ssh://nix@b1`, not `nix@b1`) or the two hooks will count different
/// files.
pub fn escape_uri(uri: &str) -> String {
    uri.replace('/', "_")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    #[error("cannot open lock file '{}'", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock '{}'", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot update the timestamps of '{}'", path.display())]
    Touch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = SlotError> = std::result::Result<T, E>;

/// The `current-load` directory.
#[derive(Debug, Clone)]
pub struct LoadDir {
    path: PathBuf,
}

impl LoadDir {
    /// Creates the directory (mode 0777 before umask) if needed. Creation errors are ignored
    /// like Nix does: the directory usually exists already, and if it is really unusable the
    /// first lock reports it with a clearer path.
    pub fn open(path: impl Into<PathBuf>) -> LoadDir {
        let path = path.into();
        let _ = DirBuilder::new().mode(0o777).create(&path);
        LoadDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn main_lock_path(&self) -> PathBuf {
        self.path.join("main-lock")
    }

    /// `<dir>/<E>-<slot>`, Nix's slot file name.
    pub fn slot_path(&self, uri: &str, slot: u32) -> PathBuf {
        self.path.join(format!("{}-{slot}", escape_uri(uri)))
    }

    /// `<dir>/<E>.upload-lock`, taken by Nix's hook around copying inputs to a machine.
    pub fn upload_lock_path(&self, uri: &str) -> PathBuf {
        self.path.join(format!("{}.upload-lock", escape_uri(uri)))
    }

    /// Takes `main-lock`, blocking until other hooks finish their scan. Hold it only while
    /// scanning and claiming a slot, never while connecting or while a policy decides: every
    /// other hook on the host waits.
    pub fn lock_main(&self) -> Result<MainLock> {
        let path = self.main_lock_path();
        let file = open_lock_file(&path)?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(lock_error(path, e)),
            }
        }
        Ok(MainLock { _file: file, dir: self.path.clone() })
    }

    /// Counts the slots of `uri` that someone holds and grabs the first free one.
    ///
    /// Slots are `0..max_jobs`; with `max_jobs == 0` the machine is always full. Free slots
    /// after the first are released again at once so other hooks can still take them. The
    /// `MainLock` is required because counting and taking must be atomic with respect to
    /// other hooks, or two of them could both see the same machine as idle.
    pub fn scan(&self, main: &MainLock, uri: &str, max_jobs: u32) -> Result<Scan> {
        debug_assert_eq!(main.dir, self.path, "main lock of a different directory");
        let mut in_use = 0;
        let mut free = None;
        for slot in 0..max_jobs {
            let path = self.slot_path(uri, slot);
            let file = open_lock_file(&path)?;
            if try_lock(&file, &path)? {
                if free.is_none() {
                    free = Some(SlotLock { file, path, slot });
                }
                // Any other free slot is unlocked by dropping (closing) its file here.
            } else {
                in_use += 1;
            }
        }
        Ok(Scan { in_use, free })
    }
}

/// Proof that `main-lock` is held; released when dropped.
#[derive(Debug)]
#[must_use = "the main lock is released as soon as this is dropped"]
pub struct MainLock {
    _file: File,
    dir: PathBuf,
}

/// Outcome of [`LoadDir::scan`] for one machine.
#[derive(Debug)]
#[must_use]
pub struct Scan {
    /// Slots locked by some process (this one included, through other open files).
    pub in_use: u32,
    /// The lowest-numbered free slot, now locked by us; `None` when the machine is full.
    pub free: Option<SlotLock>,
}

/// A held slot. The lock lasts as long as this value: after accepting a build, keep it until
/// the hook exits so other hooks count the build as load.
#[derive(Debug)]
#[must_use = "the slot is released as soon as this is dropped"]
pub struct SlotLock {
    file: File,
    path: PathBuf,
    slot: u32,
}

impl SlotLock {
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the slot file's access and modification times to now, as Nix does for the slot it
    /// picks, so the files show when a machine was last chosen. `UTIME_NOW` needs only write
    /// access, not ownership, which matters when another user's hook created the file.
    pub fn touch(&self) -> Result<()> {
        let now = Timespec { tv_sec: 0, tv_nsec: UTIME_NOW };
        let times = Timestamps { last_access: now, last_modification: now };
        rustix::fs::futimens(&self.file, &times)
            .map_err(|e| SlotError::Touch { path: self.path.clone(), source: e.into() })
    }
}

/// Opens like Nix's `openLockFile`: read-write, created 0600. std sets `O_CLOEXEC`, which
/// keeps the lock out of `ssh` and other children; a long-lived child holding the fd would
/// otherwise keep the slot busy after the hook exits.
fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| SlotError::Open { path: path.to_owned(), source })
}

fn try_lock(file: &File, path: &Path) -> Result<bool> {
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(lock_error(path.to_owned(), e)),
        }
    }
}

fn lock_error(path: PathBuf, e: Errno) -> SlotError {
    SlotError::Lock { path, source: e.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape() {
        assert_eq!(escape_uri("ssh://nix@b1"), "ssh:__nix@b1");
        assert_eq!(escape_uri("local"), "local");
    }

    #[test]
    fn dir_layout() {
        assert_eq!(dir_for_state_dir("/nix/var/nix"), Path::new("/nix/var/nix/current-load"));
    }
}
