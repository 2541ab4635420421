//! The constants of the worker protocol: greeting magics, versions, operation codes and the
//! codes of the frames the daemon sends before each reply.

use std::fmt;

/// What a client sends first.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// What the daemon answers.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// The version we offer: 1.38, what every Nix from 2.24 to at least 2.35 speaks (newer Nix
/// keeps 1.38 and negotiates additions as named features instead, of which we ask for none,
/// so a current daemon uses the plain 1.38 encodings with us). Nix 2.8 speaks 1.34; every
/// field this crate reads or writes is gated on the negotiated version, the lower of the two.
pub const PROTOCOL_VERSION: u64 = 0x126;

/// The oldest daemon we talk to, the same bound as current Nix's (Nix 2.3 speaks 1.21).
/// Operations that a version lacks fail with [`crate::DaemonError::Unsupported`].
pub const MINIMUM_VERSION: u64 = 0x112;

/// A log line (string).
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
/// The daemon wants data from the client (operations before 1.23 only).
pub const STDERR_READ: u64 = 0x6461_7461;
/// The daemon sends data for a client-side sink (operations we do not use).
pub const STDERR_WRITE: u64 = 0x6461_7416;
/// The end of the frames: the reply follows.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// The operation failed: an error follows, and no reply.
pub const STDERR_ERROR: u64 = 0x6378_7470;
/// Since 1.20.
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
/// Since 1.20.
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
/// Since 1.20.
pub const STDERR_RESULT: u64 = 0x5253_4c54;

// Version words: `major << 8 | minor`, major 1 for every worker protocol so far.
pub(crate) use nwh_wire::version::has;
pub use nwh_wire::version::{major, minor};

/// The operations this crate sends, by their code on the wire. The daemon knows many more
/// (store queries, garbage collection, roots); a builder needs only these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    SetOptions,
    QueryPathInfo,
    QueryValidPaths,
    BuildDerivation,
    NarFromPath,
    /// Since 1.23 with the NAR framed (the only form this crate sends).
    AddToStoreNar,
    /// Since 1.32.
    AddMultipleToStore,
    /// Since 1.34.
    BuildPathsWithResults,
    /// Records a realisation of a floating content-addressed output in the daemon's store;
    /// since 1.27 (the realisation as JSON since 1.31, before as its id and path).
    RegisterDrvOutput,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::SetOptions,
        Op::QueryPathInfo,
        Op::QueryValidPaths,
        Op::BuildDerivation,
        Op::NarFromPath,
        Op::AddToStoreNar,
        Op::AddMultipleToStore,
        Op::BuildPathsWithResults,
        Op::RegisterDrvOutput,
    ];

    pub fn code(self) -> u64 {
        match self {
            Op::SetOptions => 19,
            Op::QueryPathInfo => 26,
            Op::QueryValidPaths => 31,
            Op::BuildDerivation => 36,
            Op::NarFromPath => 38,
            Op::AddToStoreNar => 39,
            Op::AddMultipleToStore => 44,
            Op::BuildPathsWithResults => 46,
            Op::RegisterDrvOutput => 42,
        }
    }

    pub fn from_code(code: u64) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.code() == code)
    }

    /// The first protocol minor version that has the operation in the form sent here.
    pub fn since(self) -> u64 {
        match self {
            Op::AddToStoreNar => 23,
            Op::AddMultipleToStore => 32,
            Op::BuildPathsWithResults => 34,
            Op::RegisterDrvOutput => 27,
            _ => 0,
        }
    }

    /// The name Nix's sources use, e.g. `QueryValidPaths`.
    pub fn name(self) -> &'static str {
        match self {
            Op::SetOptions => "SetOptions",
            Op::QueryPathInfo => "QueryPathInfo",
            Op::QueryValidPaths => "QueryValidPaths",
            Op::BuildDerivation => "BuildDerivation",
            Op::NarFromPath => "NarFromPath",
            Op::AddToStoreNar => "AddToStoreNar",
            Op::AddMultipleToStore => "AddMultipleToStore",
            Op::BuildPathsWithResults => "BuildPathsWithResults",
            Op::RegisterDrvOutput => "RegisterDrvOutput",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
