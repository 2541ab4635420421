//! Nix's serve protocol (`nix-store --serve`, the protocol of `ssh://` builders,
//! docs/serve-protocol.md), synchronous, over any reader/writer pair, from both sides:
//!
//! * [`ServeClient`] talks to a builder's `nix-store --serve`, typically over an ssh child's
//!   stdout/stdin.
//! * [`ServeServer`] is such a builder: what Nix's own build hook talks to when it starts a
//!   `remote-program` (locally for `ssh://localhost`) with `--serve --write`.
//!
//! Both speak protocol 2.7 ([`PROTOCOL_VERSION`]); each reads and writes every field by the
//! negotiated version (the lower of the two sides'), through the one encoding per value in
//! [`messages`] and per command in [`request`]. The protocol has no error frames: a side that
//! fails says why on its stderr and hangs up, and the other sees the connection close.
//!
//! Modules: [`protocol`] (magics, versions, command codes), [`messages`] (the values carried),
//! [`request`] (the commands), [`client`], [`server`], [`error`].

pub mod client;
pub mod error;
pub mod messages;
pub mod protocol;
pub mod request;
pub mod server;

pub use client::ServeClient;
pub use error::{Result, ServeError, ServerError, ServerResult};
pub use messages::{
    BuildOptions, BuildPathsResult, BuildResult, BuildStatus, BuiltOutputError, PathInfo, Repeats,
};
pub use protocol::{
    major, minor, Command, CLIENT_VERSION, PROTOCOL_VERSION, SERVER_VERSION, SERVE_MAGIC_1, SERVE_MAGIC_2,
};
pub use request::{RequestError, ServeRequest};
pub use server::{ExportPayload, NarPayload, NarSink, ServeServer};
