//! The constants of the serve protocol: greeting magics, versions, command codes
//! (docs/serve-protocol.md §2, §3).

use std::fmt;

/// What a client sends first.
pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
/// What a server answers.
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;

/// The version we speak, as client and as server: 2.7, the version of every Nix from 2.4 to
/// 2.34 and of every Lix. Not 2.8, whose `builtOutputs` encoding only Nix ≥ 2.35 speaks (a 2.8
/// peer then uses 2.7 with us); and as a client not below 2.6, because Nix 2.4–2.10 servers
/// send `builtOutputs` whatever the client says, so a client that negotiated less would fall
/// out of step.
pub const PROTOCOL_VERSION: u64 = 0x207;

/// The version [`crate::ServeClient`] offers.
pub const CLIENT_VERSION: u64 = PROTOCOL_VERSION;

/// The version [`crate::ServeServer`] answers with. Current Nix clients refuse servers below
/// 2.5, Lix clients below 2.4.
pub const SERVER_VERSION: u64 = PROTOCOL_VERSION;

// Version words: `major << 8 | minor`, major 2 for every serve protocol so far.
pub(crate) use nwh_wire::version::has;
pub use nwh_wire::version::{major, minor};

/// A serve-protocol command, by its code on the wire. Every Nix and Lix server knows the same
/// nine; current Nix servers have dropped `ExportPaths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    QueryValidPaths,
    QueryPathInfos,
    DumpStorePath,
    ImportPaths,
    ExportPaths,
    BuildPaths,
    QueryClosure,
    BuildDerivation,
    /// Since 2.5.
    AddToStoreNar,
}

impl Command {
    pub const ALL: [Command; 9] = [
        Command::QueryValidPaths,
        Command::QueryPathInfos,
        Command::DumpStorePath,
        Command::ImportPaths,
        Command::ExportPaths,
        Command::BuildPaths,
        Command::QueryClosure,
        Command::BuildDerivation,
        Command::AddToStoreNar,
    ];

    pub fn code(self) -> u64 {
        match self {
            Command::QueryValidPaths => 1,
            Command::QueryPathInfos => 2,
            Command::DumpStorePath => 3,
            Command::ImportPaths => 4,
            Command::ExportPaths => 5,
            Command::BuildPaths => 6,
            Command::QueryClosure => 7,
            Command::BuildDerivation => 8,
            Command::AddToStoreNar => 9,
        }
    }

    pub fn from_code(code: u64) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The name Nix's sources use, e.g. `QueryValidPaths`.
    pub fn name(self) -> &'static str {
        match self {
            Command::QueryValidPaths => "QueryValidPaths",
            Command::QueryPathInfos => "QueryPathInfos",
            Command::DumpStorePath => "DumpStorePath",
            Command::ImportPaths => "ImportPaths",
            Command::ExportPaths => "ExportPaths",
            Command::BuildPaths => "BuildPaths",
            Command::QueryClosure => "QueryClosure",
            Command::BuildDerivation => "BuildDerivation",
            Command::AddToStoreNar => "AddToStoreNar",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
