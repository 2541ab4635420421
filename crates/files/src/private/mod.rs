//! Directories only the hook's user can change, and the files in them. The hook runs as root
//! inside nix-daemon: whatever another local user could put in its state or cache directory
//! (a socket to talk to, a file to load machine code from, a link to write through) it would
//! act on as root. So a directory is used only after it is found (without following a link
//! another user made) to be owned by the hook's user, closed to others' writing (and, when its
//! contents are secret, to their reading), and reached only through directories others cannot
//! change. Files in it are opened without following links and checked through the descriptor
//! that is then used, and new ones are made under names nobody can guess, exclusively.
//!
//! ```
//! use nwh_files::private::{Access, PrivateDir};
//! let tmp = tempfile::tempdir().unwrap();
//! let dir = PrivateDir::create(&tmp.path().join("state"), Access::Secret).unwrap();
//! dir.write_atomically("record", b"42\n").unwrap();
//! let mut f = dir.open_own("record").unwrap().expect("it is there");
//! let mut text = String::new();
//! std::io::Read::read_to_string(&mut f, &mut text).unwrap();
//! assert_eq!(text, "42\n");
//! ```

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

mod error;
mod walk;

pub use error::{Kind, PrivateError, Who};
use walk::{describe, euid, io, not_a};

/// What others may do in a directory besides nothing: read it, or not even that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Others may read and enter it (compiled policies: not secret, only not to be changed).
    Readable,
    /// Others get nothing (control sockets, whose users can run commands on the builders).
    Secret,
}

/// A directory verified as only ours, held open: names in it are looked up relative to it,
/// so what was checked is what is used.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    /// The directory at `path`, made (0700, with any missing parents) when absent.
    pub fn create(path: &Path, access: Access) -> Result<PrivateDir, PrivateError> {
        PrivateDir::verified(walk::directory(path, true)?, access)
    }

    /// The directory at `path`, which must exist.
    pub fn open(path: &Path, access: Access) -> Result<PrivateDir, PrivateError> {
        PrivateDir::verified(walk::directory(path, false)?, access)
    }

    fn verified(found: walk::Found, access: Access) -> Result<PrivateDir, PrivateError> {
        let found = if access == Access::Secret { closed_to_readers(found)? } else { found };
        check_own(&found.path, &found.stat, Kind::Directory, access == Access::Secret)?;
        Ok(PrivateDir { path: found.path, fd: found.fd })
    }

    /// The directory `name` in this one, made (0700) when absent.
    pub fn subdir(&self, name: &str, access: Access) -> Result<PrivateDir, PrivateError> {
        let path = self.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io("creating", &path, e)),
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .map_err(|e| self.refused(name, e, Kind::Directory))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io("checking", &path, e))?;
        PrivateDir::verified(walk::Found { path, fd, stat }, access)
    }

    /// The path the directory really has (links resolved): for what only takes a path, such
    /// as ssh's control socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The file `name`, for reading, when it is there and ours: a regular file owned by us that
    /// others cannot write. A link is not followed and is an error, as is a file of another.
    pub fn open_own(&self, name: &str) -> Result<Option<File>, PrivateError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.refused(name, e, Kind::File)),
            Ok(fd) => Ok(Some(checked_file(fd, &self.join(name))?)),
        }
    }

    /// The file `name`, made (0600) when absent, for locking and writing.
    pub fn open_lock(&self, name: &str) -> Result<File, PrivateError> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.refused(name, e, Kind::File))?;
        checked_file(fd, &self.join(name))
    }

    /// Puts `bytes` at `name` whole: written (0600) under a name nobody can guess, created
    /// exclusively, then renamed over `name`, so a reader sees the old file or the new one and
    /// nothing planted at either name is written through.
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), PrivateError> {
        let (temp, file) = self.create_temp(name)?;
        let mut file = File::from(file);
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        let result = match written {
            Ok(()) => rustix::fs::renameat(&self.fd, &temp, &self.fd, name)
                .map_err(|e| io("renaming to", &self.join(name), e)),
            Err(error) => Err(PrivateError::Io { doing: "writing", path: self.join(&temp), error }),
        };
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &temp, AtFlags::empty());
        }
        result
    }

    /// A new file for `name`'s contents: `.NAME.RANDOM.tmp`, created here and nowhere else.
    fn create_temp(&self, name: &str) -> Result<(String, OwnedFd), PrivateError> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut last = Errno::EXIST;
        for _ in 0..8 {
            let temp = format!(".{name}.{:016x}{:016x}.tmp", unguessable(), unguessable());
            match rustix::fs::openat(&self.fd, &temp, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((temp, fd)),
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(e) => return Err(io("creating", &self.join(&temp), e)),
            }
        }
        Err(io("creating a temporary file in", &self.path, last))
    }

    /// Removes `name` (a file or socket), if it is there.
    pub fn remove(&self, name: &str) -> Result<(), PrivateError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io("removing", &self.join(name), e)),
        }
    }

    /// Why `name` could not be opened: a link or a directory in its place is named as such.
    fn refused(&self, name: &str, e: Errno, expected: Kind) -> PrivateError {
        let path = self.join(name);
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => PrivateError::Link { path },
            Ok(st) if matches!(e, Errno::NOTDIR | Errno::ISDIR) => not_a(&path, describe(&st), expected),
            _ => io("opening", &path, e),
        }
    }
}

impl AsFd for PrivateDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens `path` to append to it, for a file the hook is told to write (a decision trace, a
/// timeline) in a directory that need not be its own: the directory and those above it must be
/// ones others cannot change, the file is created 0600 and not through a link, and an existing
/// one must be a regular file of ours that others cannot write.
pub fn open_append(path: &Path) -> Result<File, PrivateError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(not_a(path, "not a file name", Kind::File));
    };
    let dir = walk::directory(parent, false)?;
    walk::check_parent(&dir.fd, &dir.path, path)?;
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let dir = PrivateDir { path: dir.path, fd: dir.fd };
    let name = name.to_str().ok_or_else(|| not_a(path, "not a UTF-8 name", Kind::File))?;
    let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| dir.refused(name, e, Kind::File))?;
    checked_file(fd, path)
}

/// A regular file, ours, that others cannot write: checked on the descriptor that is used.
fn checked_file(fd: OwnedFd, path: &Path) -> Result<File, PrivateError> {
    let st = rustix::fs::fstat(&fd).map_err(|e| io("checking", path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_a(path, describe(&st), Kind::File));
    }
    check_own(path, &st, Kind::File, false)?;
    // Opened non-blocking so that a FIFO put in its place could not hold us; a regular file
    // reads and writes the same either way, but the flag goes.
    if let Ok(flags) = rustix::fs::fcntl_getfl(&fd) {
        let _ = rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK);
    }
    Ok(File::from(fd))
}

/// A directory of ours that others could read but never change, made secret: what `mkdir`
/// under the usual umask gives (0755), as a state directory made by hand (or by an older
/// nix-wasm-hook) is. Nothing in it can be another user's, so closing it is enough; a directory others
/// could write to is left for [`check_own`] to refuse.
fn closed_to_readers(found: walk::Found) -> Result<walk::Found, PrivateError> {
    let mode = found.stat.st_mode & 0o7777;
    if found.stat.st_uid != euid() || mode & 0o022 != 0 || mode & 0o077 == 0 {
        return Ok(found);
    }
    // By path: the descriptor is O_PATH, and the directories above were checked to be ones
    // others cannot change, so the path still names what was checked.
    rustix::fs::chmod(&found.path, Mode::from_raw_mode(mode & 0o7700))
        .map_err(|e| io("closing", &found.path, e))?;
    let stat = rustix::fs::fstat(&found.fd).map_err(|e| io("checking", &found.path, e))?;
    Ok(walk::Found { stat, ..found })
}

/// Ours, and closed to others' writing (and to all their access when `secret`).
fn check_own(path: &Path, st: &Stat, kind: Kind, secret: bool) -> Result<(), PrivateError> {
    let us = euid();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != us {
        return Err(PrivateError::NotOurs {
            path: path.to_path_buf(),
            kind,
            owner: Who(st.st_uid),
            us: Who(us),
            mode,
        });
    }
    let closed = if secret { 0o077 } else { 0o022 };
    if mode & closed != 0 {
        return Err(PrivateError::TooOpen {
            path: path.to_path_buf(),
            kind,
            owner: Who(st.st_uid),
            mode,
            secret,
        });
    }
    Ok(())
}

/// 64 bits another user cannot predict: std's hasher keys come from the OS's randomness once
/// per thread.
fn unguessable() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests;
