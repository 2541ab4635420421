//! The file descriptors Nix hands the hook beyond stdio: fd 4 is the write end of the build
//! log pipe and fd 5 its read end (fd 3 is a namespace fd that leaks from Nix). They arrive
//! without close-on-exec, so every child (an ssh master that outlives us, above all) would
//! keep them open, and Nix waits for EOF on fd 4 before it considers the build done.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::{fcntl_dupfd_cloexec, fcntl_getfd, fcntl_setfd, FdFlags};

const BUILD_LOG: i32 = 4;

fn inherited(fd: i32) -> Option<BorrowedFd<'static>> {
    // SAFETY: fds 3–5 are set up by Nix before exec and nothing in this process closes them
    // (the hook must keep them open until it exits), so a 'static borrow is sound; the fcntl
    // probe below turns "not open" into None before the borrow is used for anything else.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl_getfd(fd).ok().map(|_| fd)
}

/// Marks fds 3–5 close-on-exec, keeping them open for this process.
pub fn protect_inherited() {
    for fd in 3..=5 {
        if let Some(b) = inherited(fd) {
            if let Ok(flags) = fcntl_getfd(b) {
                let _ = fcntl_setfd(b, flags | FdFlags::CLOEXEC);
            }
        }
    }
}

/// A new descriptor for Nix's build log (fd 4), or for stderr when run by hand.
pub fn build_log() -> std::io::Result<OwnedFd> {
    let fd = match inherited(BUILD_LOG) {
        Some(b) => fcntl_dupfd_cloexec(b, 0)?,
        None => fcntl_dupfd_cloexec(std::io::stderr().as_fd(), 0)?,
    };
    Ok(fd)
}

/// A new descriptor for stderr, whatever Nix left open beyond it: where a builder's log goes
/// in builder mode, where stderr is the log Nix's hook reads.
pub fn stderr() -> std::io::Result<OwnedFd> {
    Ok(fcntl_dupfd_cloexec(std::io::stderr().as_fd(), 0)?)
}
