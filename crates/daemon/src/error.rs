//! The client's errors. They name the builder by its host and the operation by Nix's name
//! for it. Unlike the serve protocol, the worker protocol has error frames: a daemon that
//! fails an operation says why in [`DaemonError::Remote`], in its own words, and the
//! connection usually stays usable.

use std::io;

use nwh_nar::NarError;

use crate::messages::{DecodeError, RemoteError};
use crate::protocol::{major, minor};

/// What went wrong. Variants the caller must tell apart: [`DaemonError::CannotConnect`] and
/// [`DaemonError::Eof`] (the remote side went away — show ssh's stderr),
/// [`DaemonError::ProtocolMismatch`] (something other than `nix-daemon` answered),
/// [`DaemonError::Remote`] (the daemon refused or failed the operation; show its message),
/// and [`DaemonError::BadReply`] and friends (it answered nonsense).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Nothing came back before the connection closed, or it could not be written to.
    #[error("cannot connect to '{host}'")]
    CannotConnect { host: String },
    /// The greeting was not the daemon's, e.g. shell start-up output or a login banner.
    /// `got` is a printable prefix of what came.
    #[error("'nix-daemon' protocol mismatch from '{host}', got '{got}'")]
    ProtocolMismatch { host: String, got: String },
    #[error(
        "unsupported 'nix-daemon' protocol version on '{host}' (it speaks {}.{})",
        major(*version),
        minor(*version)
    )]
    UnsupportedVersion { host: String, version: u64 },
    /// The daemon answered the operation with an error frame. The message is the daemon's,
    /// unchanged (it may hold ANSI colours).
    #[error("{during} on '{host}' failed: {error}")]
    Remote { host: String, during: &'static str, error: RemoteError },
    /// The connection closed (or broke) in the middle of an operation: the daemon (or ssh)
    /// exited; the reason is on ssh's stderr.
    #[error("connection to '{host}' closed during {during}")]
    Eof { host: String, during: &'static str },
    /// What the daemon sent could not be decoded.
    #[error("invalid reply from '{host}' to {during}")]
    BadReply {
        host: String,
        during: &'static str,
        #[source]
        source: DecodeError,
    },
    /// A frame that the operation cannot have (the daemon asked for data, or sent data for a
    /// sink, in an operation that has neither).
    #[error("unexpected {frame} frame from '{host}' during {during}")]
    UnexpectedFrame { host: String, during: &'static str, frame: &'static str },
    #[error("'{host}' sent an invalid NAR in reply to {during}")]
    BadNar {
        host: String,
        during: &'static str,
        #[source]
        source: NarError,
    },
    #[error("I/O error talking to '{host}' during {during}")]
    Io {
        host: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// The negotiated protocol version lacks the operation.
    #[error("'{host}' speaks 'nix-daemon' protocol {}.{}, which has no {op}", major(*version), minor(*version))]
    Unsupported { host: String, op: &'static str, version: u64 },
    /// The caller's NAR is not valid, or its reader failed.
    #[error("the NAR of '{path}' to send is invalid")]
    InvalidNar {
        path: String,
        #[source]
        source: NarError,
    },
    #[error("the NAR of '{path}' is {actual} bytes long, but its path info says {expected}")]
    NarSizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("the NAR of '{path}' has hash {actual}, but its path info says {expected}")]
    NarHashMismatch { path: String, expected: String, actual: String },
    #[error("invalid {what} '{value}' in the path info of '{path}'")]
    InvalidPathInfo { path: String, what: &'static str, value: String },
    /// Writing what the daemon sent to the caller's writer failed.
    #[error("cannot write the data received from '{host}'")]
    Sink {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("the connection to '{host}' is unusable after an earlier error")]
    Poisoned { host: String },
}

impl DaemonError {
    /// True when the remote side went away: the explanation is on ssh's stderr.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, DaemonError::CannotConnect { .. } | DaemonError::Eof { .. })
    }

    /// The daemon's own error, if that is what this is.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            DaemonError::Remote { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

pub(crate) use nwh_wire::greeting::{is_broken_pipe, printable_greeting};
