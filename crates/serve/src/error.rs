//! Errors of both sides. The client's name the server by its host; the server's say "the client".
//! Neither side of the protocol has error frames: a failing side reports on its stderr and
//! hangs up, so what the other side sees is the connection closing.

use std::io;

use nwh_nar::{ExportError, NarError};
use nwh_wire::WireError;

use crate::protocol::{major, minor, Command, SERVE_MAGIC_1};
use crate::request::RequestError;

/// What went wrong. Variants the caller must tell apart: [`ServeError::CannotConnect`] and
/// [`ServeError::Eof`] (the remote side went away — show ssh's stderr),
/// [`ServeError::ProtocolMismatch`] (something other than `nix-store --serve` answered), and
/// [`ServeError::Wire`] and friends (it answered nonsense).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Nothing came back before the connection closed, or it could not be written to.
    #[error("cannot connect to '{host}'")]
    CannotConnect { host: String },
    /// The greeting was not `nix-store --serve`'s, e.g. shell start-up output or a login
    /// banner. `got` is a printable prefix of what came.
    #[error("'nix-store --serve' protocol mismatch from '{host}', got '{got}'")]
    ProtocolMismatch { host: String, got: String },
    #[error(
        "unsupported 'nix-store --serve' protocol version on '{host}' (it speaks {}.{})",
        major(*version),
        minor(*version)
    )]
    UnsupportedVersion { host: String, version: u64 },
    /// The connection closed (or broke) in the middle of a command: the server failed and
    /// exited; its message is on its stderr.
    #[error("connection to '{host}' closed during {during}")]
    Eof { host: String, during: &'static str },
    /// The server's reply could not be decoded.
    #[error("invalid reply from '{host}' to {during}")]
    Wire {
        host: String,
        during: &'static str,
        #[source]
        source: WireError,
    },
    #[error("'{host}' sent an invalid NAR in reply to {during}")]
    BadNar {
        host: String,
        during: &'static str,
        #[source]
        source: NarError,
    },
    #[error("'{host}' sent an invalid export stream")]
    BadExport {
        host: String,
        #[source]
        source: ExportError,
    },
    /// The reply names a path that was not asked about (or one twice): a server answers
    /// only for what it is asked, and a builder is trusted for nothing else.
    #[error("'{host}' answered {during} with {path:?}, which it was not asked about")]
    Unasked { host: String, during: &'static str, path: String },
    #[error("unexpected reply from '{host}' to {during}: expected {expected}, got {got}")]
    UnexpectedReply { host: String, during: &'static str, expected: u64, got: u64 },
    #[error("I/O error talking to '{host}' during {during}")]
    Io {
        host: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// The negotiated protocol version lacks the command.
    #[error(
        "'{host}' speaks 'nix-store --serve' {}.{}, which has no {command}",
        major(*version),
        minor(*version)
    )]
    Unsupported { host: String, command: &'static str, version: u64 },
    /// The caller's export stream (for `ImportPaths`) is not valid.
    #[error("the export stream to send is invalid")]
    InvalidExport(#[source] ExportError),
    /// The caller's NAR (for `AddToStoreNar`) is not valid, or its reader failed.
    #[error("the NAR of '{path}' to send is invalid")]
    InvalidNar {
        path: String,
        #[source]
        source: NarError,
    },
    #[error("the NAR of '{path}' is {actual} bytes long, but its path info says {expected}")]
    NarSizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("the NAR of '{path}' goes on past the {nar_size} bytes its path info says")]
    NarTooLong { path: String, nar_size: u64 },
    /// The caller's writer of a NAR (for [`crate::ServeClient::send_nar_written`]) failed.
    #[error("making the NAR of '{path}' to send failed")]
    NarWriter {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the NAR of '{path}' has hash {actual}, but its path info says {expected}")]
    NarHashMismatch { path: String, expected: String, actual: String },
    #[error("invalid {what} '{value}' in the path info of '{path}'")]
    InvalidPathInfo { path: String, what: &'static str, value: String },
    /// Writing what the server sent to the caller's writer failed.
    #[error("cannot write the data received from '{host}'")]
    Sink {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("the connection to '{host}' is unusable after an earlier error")]
    Poisoned { host: String },
}

impl ServeError {
    /// True when the remote side went away: the explanation is on ssh's stderr.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ServeError::CannotConnect { .. } | ServeError::Eof { .. })
    }
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// The result of a [`crate::ServeServer`] call.
pub type ServerResult<T, E = ServerError> = std::result::Result<T, E>;

pub(crate) use nwh_wire::greeting::{is_broken_pipe, printable_greeting};

/// What went wrong on the server side ([`crate::ServeServer`]). [`ServerError::Eof`] is the
/// client going away; the variants from [`ServerError::NotAnswered`] on are mistakes of the
/// program using the server, not of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The first word was not the serve protocol's greeting.
    #[error(
        "'nix-store --serve' protocol mismatch: the client began with '{}' ({got:#018x}), not the serve \
         magic {SERVE_MAGIC_1:#x}",
        printable_greeting(&got.to_le_bytes())
    )]
    ProtocolMismatch { got: u64 },
    #[error(
        "the client speaks 'nix-store --serve' protocol {}.{}; only 2.x is supported",
        major(*version),
        minor(*version)
    )]
    UnsupportedVersion { version: u64 },
    /// A command code no Nix server knows: the connection cannot go on, since its arguments
    /// cannot be skipped.
    #[error("the client sent unknown command {code}")]
    UnknownCommand { code: u64 },
    /// The connection closed (or broke) during the handshake, inside a command, or while
    /// a reply was sent.
    #[error("the connection to the client closed during {during}")]
    Eof { during: &'static str },
    /// A request could not be decoded.
    #[error("invalid {during} request from the client")]
    Wire {
        during: &'static str,
        #[source]
        source: WireError,
    },
    /// A request decoded but cannot be served (repeated builds, a bad NAR hash or size).
    #[error("{command} request from the client refused")]
    Refused {
        command: Command,
        #[source]
        source: RequestError,
    },
    #[error("the client sent an invalid NAR for '{path}'")]
    BadNar {
        path: String,
        #[source]
        source: NarError,
    },
    #[error(
        "the NAR the client sent for '{path}' is {actual} bytes long, but its path info says {expected}"
    )]
    NarSizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("the NAR the client sent for '{path}' has hash {actual}, but its path info says {expected}")]
    NarHashMismatch { path: String, expected: String, actual: String },
    /// The NAR did not end within the size its path info gave.
    #[error("the NAR the client sent for '{path}' goes on past the {nar_size} bytes its path info says")]
    NarTooLong { path: String, nar_size: u64 },
    #[error("the client sent an invalid export stream")]
    BadExport(#[source] ExportError),
    /// Writing what the client sent to the caller's writer failed.
    #[error("cannot write the data received from the client")]
    Sink(#[source] io::Error),
    #[error("I/O error talking to the client during {during}")]
    Io {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// The NAR given to [`crate::ServeServer::reply_nar`] is not valid, or its reader failed.
    #[error("the NAR to send to the client in reply to {during} is invalid")]
    InvalidNar {
        during: &'static str,
        #[source]
        source: NarError,
    },
    /// The export stream given to [`crate::ServeServer::reply_export`] is not valid, or its
    /// reader failed.
    #[error("the export stream to send to the client is invalid")]
    InvalidExport(#[source] ExportError),
    /// The last request has not been answered (or its payload not read), so the next one
    /// cannot be read.
    #[error("{command} from the client has not been answered")]
    NotAnswered { command: Command },
    /// A reply (or payload read) that does not belong to the request being answered.
    #[error("{reply} does not answer {command}")]
    WrongReply { reply: &'static str, command: Command },
    #[error("{reply} answers nothing: no request is waiting for a reply")]
    NoRequest { reply: &'static str },
    /// A payload that has been read in part cannot be read again from the start.
    #[error("the payload of {command} has been read in part already")]
    PayloadStarted { command: Command },
    #[error("the connection to the client is unusable after an earlier error")]
    Poisoned,
}

impl ServerError {
    /// True when the client went away.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ServerError::Eof { .. })
    }
}
