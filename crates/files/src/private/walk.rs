//! Finding a directory by name without letting another user steer the lookup: each name is
//! looked up in the directory opened before it (openat), never by a whole path again, and
//! every directory looked into must be one that only root or we can change. A symbolic link is
//! followed only when root or we own it and it lies in such a directory (`/var/run` is one);
//! one planted by another user is refused.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::error::{Kind, PrivateError, Who};

/// More links than this on the way is a loop, as for the kernel.
const MAX_LINKS: usize = 40;

/// A directory found, opened (`O_PATH`: usable for the `*at` calls, needs no read access) with
/// the path it really has, every link resolved.
pub(crate) struct Found {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub stat: Stat,
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens the directory `path` names. Every directory looked into on the way must pass
/// [`check_parent`]; with `create`, a missing directory is made (0700), inside one that did.
pub(crate) fn directory(path: &Path, create: bool) -> Result<Found, PrivateError> {
    if !path.is_absolute() {
        return Err(PrivateError::Relative { path: path.to_path_buf() });
    }
    let root = open_dir(rustix::fs::CWD, Path::new("/"), Path::new("/"))?;
    let mut opened: Vec<OwnedFd> = vec![root];
    let mut names: Vec<OsString> = Vec::new();
    let mut todo = pending(path);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if names.pop().is_some() {
                opened.pop();
            }
            continue;
        }
        let here = joined(&names);
        let dir = opened.last().expect("the root stays opened");
        check_parent(dir.as_fd(), &here, path)?;
        let entry = here.join(&name);
        match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) if create && links < MAX_LINKS => {
                // Counted as a link: a directory removed as often as it is made cannot loop us.
                links += 1;
                make_dir(dir.as_fd(), &entry)?;
                todo.push(name);
            }
            Err(e) => return Err(io("looking up", &entry, e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(PrivateError::TooManyLinks { path: path.to_path_buf() });
                }
                let target = trusted_link(dir.as_fd(), &entry, &st)?;
                if target.is_absolute() {
                    opened.truncate(1);
                    names.clear();
                }
                todo.extend(pending(&target));
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                opened.push(open_dir(dir.as_fd(), Path::new(&name), &entry)?);
                names.push(name);
            }
            Ok(st) => return Err(not_a(&entry, describe(&st), Kind::Directory)),
        }
    }
    let fd = opened.pop().expect("the root stays opened");
    let stat = rustix::fs::fstat(&fd).map_err(|e| io("checking", path, e))?;
    Ok(Found { path: joined(&names), fd, stat })
}

/// The names of `path` still to look up, the first one last (popped first).
fn pending(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    names.reverse();
    names
}

fn joined(names: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(names);
    p
}

/// A directory that others may not change: only root or we own it (an owner can always
/// change a directory), and group and others cannot write to it, unless it has the sticky bit,
/// with which nobody may rename or remove what another user made in it.
pub(crate) fn check_parent(dir: impl AsFd, path: &Path, of: &Path) -> Result<(), PrivateError> {
    let st = rustix::fs::fstat(dir).map_err(|e| io("checking", path, e))?;
    let us = euid();
    let writable_by_others = st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0;
    if (st.st_uid == 0 || st.st_uid == us) && !writable_by_others {
        return Ok(());
    }
    Err(PrivateError::UnsafeParent {
        path: path.to_path_buf(),
        of: of.to_path_buf(),
        owner: Who(st.st_uid),
        us: Who(us),
        mode: st.st_mode & 0o7777,
    })
}

/// Where the link `entry` leads, when root or we own it (its directory passed already).
fn trusted_link(dir: impl AsFd, entry: &Path, st: &Stat) -> Result<PathBuf, PrivateError> {
    let us = euid();
    if st.st_uid != 0 && st.st_uid != us {
        return Err(PrivateError::ForeignLink {
            path: entry.to_path_buf(),
            owner: Who(st.st_uid),
            us: Who(us),
        });
    }
    let name = entry.file_name().unwrap_or_default();
    let target =
        rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| io("reading the link", entry, e))?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

fn make_dir(dir: impl AsFd, entry: &Path) -> Result<(), PrivateError> {
    let name = entry.file_name().unwrap_or_default();
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(io("creating", entry, e)),
    }
}

/// Opens the directory `name` in `dir`; whatever was swapped in since it was looked at, a link
/// or a file, is refused here rather than followed.
fn open_dir(dir: impl AsFd, name: &Path, entry: &Path) -> Result<OwnedFd, PrivateError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => {
            not_a(entry, "something else by the time it was opened", Kind::Directory)
        }
        e => io("opening", entry, e),
    })
}

pub(crate) fn not_a(path: &Path, is: &'static str, expected: Kind) -> PrivateError {
    PrivateError::WrongType { path: path.to_path_buf(), is, expected }
}

pub(crate) fn io(doing: &'static str, path: &Path, e: Errno) -> PrivateError {
    PrivateError::Io { doing, path: path.to_path_buf(), error: e.into() }
}

/// What a file type is, as errors say it.
pub(crate) fn describe(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}
