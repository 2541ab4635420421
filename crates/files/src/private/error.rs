//! Why a directory or file was not trusted, each in words that name the path, who owns it,
//! its mode, and what to run to make it right.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A user as the errors name one: `uid 65534 (nobody)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who(pub u32);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match user_name(self.0) {
            Some(name) => write!(f, "uid {} ({name})", self.0),
            None => write!(f, "uid {}", self.0),
        }
    }
}

/// The name `/etc/passwd` gives `uid`; only ever looked up for an error message.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// What was checked, as an error names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Directory => "directory",
            Kind::File => "file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{} is a relative path: give an absolute one", path.display())]
    Relative { path: PathBuf },
    #[error(
        "the {kind} {} belongs to {owner} (mode {mode:04o}), not to {us}, which this hook runs as: \
         {owner} could change what the hook finds there; if it is the hook's, run `chown {} {}`, \
         else give the hook a {kind} of its own",
        path.display(), us.0, path.display()
    )]
    NotOurs { path: PathBuf, kind: Kind, owner: Who, us: Who, mode: u32 },
    #[error(
        "the {kind} {} (owner {owner}, mode {mode:04o}) lets other users {}: run `chmod {} {}`",
        path.display(),
        if *secret { "in" } else { "write to it" },
        fix(*kind, *secret),
        path.display()
    )]
    TooOpen { path: PathBuf, kind: Kind, owner: Who, mode: u32, secret: bool },
    #[error(
        "{} (owner {owner}, mode {mode:04o}), on the way to {}, can be changed by users other than \
         root and {us}, who could put another directory in place of what the hook uses: run \
         `chmod go-w {}` (or `chmod +t {}` if others must create files there, as in /tmp), or \
         choose a place whose parents only root can change",
        path.display(), of.display(), path.display(), path.display()
    )]
    UnsafeParent { path: PathBuf, of: PathBuf, owner: Who, us: Who, mode: u32 },
    #[error(
        "{} is a symbolic link owned by {owner}, neither root nor {us}: it is not followed; remove \
         it, or name the directory it should lead to",
        path.display()
    )]
    ForeignLink { path: PathBuf, owner: Who, us: Who },
    #[error("{} is a symbolic link, which the hook does not follow there: remove it", path.display())]
    Link { path: PathBuf },
    #[error("{} is {is}, not a {expected}", path.display())]
    WrongType { path: PathBuf, is: &'static str, expected: Kind },
    #[error("{}: too many symbolic links on the way", path.display())]
    TooManyLinks { path: PathBuf },
    #[error("{doing} {}: {error}", path.display())]
    Io { doing: &'static str, path: PathBuf, error: io::Error },
}

/// The `chmod` that closes a directory or file to others.
fn fix(kind: Kind, secret: bool) -> &'static str {
    match (kind, secret) {
        (Kind::Directory, true) => "700",
        (Kind::File, true) => "600",
        (_, false) => "go-w",
    }
}

/// For callers whose errors are [`io::Error`]s: the words are kept, and the kind of a failed
/// system call (a missing file stays `NotFound`).
impl From<PrivateError> for io::Error {
    fn from(e: PrivateError) -> io::Error {
        let kind = match &e {
            PrivateError::Io { error, .. } => error.kind(),
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}
