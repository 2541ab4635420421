//! Nix's worker protocol, the protocol of `nix-daemon` and so of `ssh-ng://` builders (whose
//! remote command is `nix-daemon --stdio`, plus `--store X` for `remote-store=X`), as a
//! synchronous client over any reader/writer pair: [`DaemonClient`].
//!
//! It offers protocol 1.38 ([`PROTOCOL_VERSION`]) with no optional features and reads and
//! writes every field by the negotiated version (Nix 2.8 speaks 1.34, Nix 2.24 to 2.35
//! 1.38). Each operation is a code and its arguments; the daemon answers with log frames,
//! then either `STDERR_LAST` and the reply or `STDERR_ERROR` and an error. The log frames go
//! to a callback as [`LogMessage`]s, the error becomes [`DaemonError::Remote`].
//!
//! Modules: [`protocol`] (magics, versions, operation and frame codes), [`messages`] (the
//! values carried), [`framed`] (the framed stream NAR uploads use), [`client`], [`error`].

pub mod client;
pub mod error;
pub mod framed;
pub mod messages;
pub mod protocol;

pub use client::{DaemonClient, Upload};
pub use error::{DaemonError, Result};
pub use messages::{
    verbosity, BuildMode, BuildResult, DecodeError, Field, Frame, LogMessage, Options, PathInfo, Realisation,
    RemoteError,
};
pub use nwh_serve::BuildStatus;
pub use protocol::{major, minor, Op, MINIMUM_VERSION, PROTOCOL_VERSION, WORKER_MAGIC_1, WORKER_MAGIC_2};
