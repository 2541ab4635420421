//! Nix stopping the hook. Nix 2.3x ends its hook (and the builder front-end, a child of its own
//! hook) by sending SIGTERM to the hook's process group, and SIGKILL half a second later. Left
//! to its default action, SIGTERM ended the process at once: the kernel let go of its slot
//! locks, but outputs it had unpacked and not registered stayed in the store as invalid paths
//! until the next build of the same derivation removed them. Here a thread waits for SIGTERM,
//! SIGINT and SIGHUP, and on the first one removes those outputs and exits, within [`BUDGET`].
//!
//! Why each step is safe:
//! - Removing only what [`crate::transfer::register`] recorded as unpacked here and not valid:
//!   Nix holds the output locks while its hook runs, so no other process writes or registers
//!   those paths, and a path that became valid is never touched (the record says which paths
//!   a registration may have made valid, and those are asked about first).
//! - Waiting for a registration under way rather than racing it: `nix-store --load-db` is in the hook's process group, so Nix's SIGTERM ends it too and the
//!   wait is short; when the signal came to this process alone it finishes, and the paths are
//!   valid. Either way the database, not a guess, says what is left to remove.
//! - A bound on every wait: whatever cannot be done within [`BUDGET`] is left as a SIGKILL
//!   leaves it (invalid remains, which the next attempt removes before it unpacks); nothing is
//!   ever removed late, once Nix may have released the output locks.
//! - Exiting from this thread with the locks still held: the thread unpacking and the one
//!   registering stay parked on them, so nothing is written or registered after the removal.
//! - Sessions: a session lent by the keeper of warm sessions is given back only by a process
//!   that is not stopping ([`requested`]); exiting closes the lease without the word that
//!   returns it, and the keeper ends that session. Slot and upload locks are `flock`s, which
//!   the kernel releases with the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// How long stopping may take, from the signal to the exit: Nix's SIGKILL follows its SIGTERM
/// after 500 ms, and what is left past this bound is left for the next attempt.
pub const BUDGET: Duration = Duration::from_millis(400);

static STOPPING: AtomicBool = AtomicBool::new(false);

/// True once a stop signal arrived: what this process has not finished it will not finish.
pub fn requested() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Handles SIGTERM, SIGINT and SIGHUP from now on, for the hook and the builder front-end
/// (the tools keep the default action: there is nothing of theirs to undo).
pub fn on_signals() -> Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).context("handling SIGTERM")?;
    std::thread::Builder::new()
        .name("stop".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stop(signal);
            }
        })
        .context("starting the thread that handles SIGTERM")?;
    Ok(())
}

/// Undoes what can be undone within [`BUDGET`] and exits with 128 + the signal's number, as
/// a shell reports a process the signal ended.
fn stop(signal: i32) -> ! {
    let deadline = Instant::now() + BUDGET;
    STOPPING.store(true, Ordering::SeqCst);
    // Held until the process is gone: see the module's documentation.
    let _held = crate::transfer::register::stop(deadline);
    crate::core::timeline::mark("stopped");
    std::process::exit(128 + signal)
}
