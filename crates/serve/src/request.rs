//! The commands a client sends (docs/serve-protocol.md §3), decoded: [`ServeRequest::write_to`] is
//! what [`crate::ServeClient`] sends and [`ServeRequest::read_args`] what [`crate::ServeServer`]
//! takes, so both sides share one encoding.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use nwh_drv::BasicDerivation;
use nwh_nar::hash;
use nwh_wire::{Reader, WireError, Writer};

use crate::messages::{BuildOptions, PathInfo};
use crate::protocol::Command;

/// One command with its arguments. The payloads that follow two of them (an export stream
/// after `ImportPaths`, a NAR after `AddToStoreNar`) are not part of it: the server streams
/// them (see [`crate::ServeServer::export_reader`] and [`crate::ServeServer::nar_reader`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeRequest {
    /// Which of `paths` are valid. `lock` makes them temporary GC roots for the session,
    /// `substitute` lets the server substitute missing ones first (both only with `--write`).
    QueryValidPaths { lock: bool, substitute: bool, paths: BTreeSet<String> },
    /// The path infos of those of `paths` that are valid.
    QueryPathInfos { paths: BTreeSet<String> },
    /// The NAR of `path`.
    DumpStorePath { path: String },
    /// An export stream follows (`nix-store --export` format); the reply is `1` once it is
    /// imported. No Nix or Lix client sends this to a server of protocol 2.5 or later; Hydra
    /// does.
    ImportPaths,
    /// The export stream of `paths`, dependencies first. (An ignored word, once a "sign" flag,
    /// comes before the paths; it is sent as 0.) Current Nix servers no longer have it.
    ExportPaths { paths: BTreeSet<String> },
    /// Build or substitute `paths` (store paths, or `drv!out1,out2`); the reply is a
    /// [`crate::BuildPathsResult`].
    BuildPaths { paths: Vec<String>, options: BuildOptions },
    /// The closure of `paths` (with `include_outputs`, also of derivations' outputs).
    QueryClosure { include_outputs: bool, paths: BTreeSet<String> },
    /// Build `drv`, named by `drv_path` (the server takes the derivation's name from it); the
    /// reply is a [`crate::BuildResult`].
    BuildDerivation { drv_path: String, drv: BasicDerivation, options: BuildOptions },
    /// Since 2.5: add `path`; exactly `info.nar_size` bytes of NAR follow. `info.nar_hash` is
    /// as the client spelled it (Nix sends base 16 without a prefix; it has been checked to be
    /// a sha256 in some spelling); `info.download_size` is not sent and is set to the NAR size.
    /// `registration_time` is the client's (Unix seconds; 0 lets the server stamp its own),
    /// `ultimate` whether the client built the path itself.
    AddToStoreNar { path: String, info: PathInfo, registration_time: u64, ultimate: bool },
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Nix clients send a non-zero count only when `repeat` is set; current Nix and Lix
    /// servers refuse it the same way.
    #[error("repeated builds were asked for (nrRepeats = {nr_repeats}), which are not implemented")]
    Repeats { nr_repeats: u64 },
    #[error("invalid NAR hash '{0}' (not a sha256)")]
    InvalidNarHash(String),
    #[error("NAR size 0 (the path info is too old to have one)")]
    ZeroNarSize,
}

impl ServeRequest {
    pub fn command(&self) -> Command {
        match self {
            ServeRequest::QueryValidPaths { .. } => Command::QueryValidPaths,
            ServeRequest::QueryPathInfos { .. } => Command::QueryPathInfos,
            ServeRequest::DumpStorePath { .. } => Command::DumpStorePath,
            ServeRequest::ImportPaths => Command::ImportPaths,
            ServeRequest::ExportPaths { .. } => Command::ExportPaths,
            ServeRequest::BuildPaths { .. } => Command::BuildPaths,
            ServeRequest::QueryClosure { .. } => Command::QueryClosure,
            ServeRequest::BuildDerivation { .. } => Command::BuildDerivation,
            ServeRequest::AddToStoreNar { .. } => Command::AddToStoreNar,
        }
    }

    /// The command's name, e.g. `QueryValidPaths`.
    pub fn name(&self) -> &'static str {
        self.command().name()
    }

    /// Writes the command code and its arguments in the encoding of protocol `version`.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_u64(self.command().code())?;
        match self {
            ServeRequest::QueryValidPaths { lock, substitute, paths } => {
                w.write_bool(*lock)?;
                w.write_bool(*substitute)?;
                w.write_list(paths)
            }
            ServeRequest::QueryPathInfos { paths } => w.write_list(paths),
            ServeRequest::DumpStorePath { path } => w.write_str(path),
            ServeRequest::ImportPaths => Ok(()),
            ServeRequest::ExportPaths { paths } => {
                w.write_u64(0)?;
                w.write_list(paths)
            }
            ServeRequest::BuildPaths { paths, options } => {
                w.write_list(paths)?;
                options.write_to(w, version)
            }
            ServeRequest::QueryClosure { include_outputs, paths } => {
                w.write_bool(*include_outputs)?;
                w.write_list(paths)
            }
            ServeRequest::BuildDerivation { drv_path, drv, options } => {
                w.write_str(drv_path)?;
                drv.write_to(w)?;
                options.write_to(w, version)
            }
            ServeRequest::AddToStoreNar { path, info, registration_time, ultimate } => {
                w.write_str(path)?;
                w.write_str(info.deriver.as_deref().unwrap_or(""))?;
                w.write_str(&info.nar_hash)?;
                w.write_list(&info.references)?;
                w.write_u64(*registration_time)?;
                w.write_u64(info.nar_size)?;
                w.write_bool(*ultimate)?;
                w.write_list(&info.sigs)?;
                w.write_str(info.ca.as_deref().unwrap_or(""))
            }
        }
    }

    /// Reads the arguments of `command`, whose code has been read, in the encoding of protocol
    /// `version`. Every command is taken at every version, as Nix's servers do.
    pub fn read_args<R: Read>(
        command: Command,
        r: &mut Reader<R>,
        version: u64,
    ) -> Result<ServeRequest, RequestError> {
        let build_options = |r: &mut Reader<R>| -> Result<BuildOptions, RequestError> {
            // enforceDeterminism means nothing without repeats; current servers ignore it too.
            let (options, repeats) = BuildOptions::read_from(r, version)?;
            if repeats.nr_repeats != 0 {
                return Err(RequestError::Repeats { nr_repeats: repeats.nr_repeats });
            }
            Ok(options)
        };
        Ok(match command {
            Command::QueryValidPaths => ServeRequest::QueryValidPaths {
                lock: r.read_bool()?,
                substitute: r.read_bool()?,
                paths: r.read_string_set()?,
            },
            Command::QueryPathInfos => ServeRequest::QueryPathInfos { paths: r.read_string_set()? },
            Command::DumpStorePath => ServeRequest::DumpStorePath { path: r.read_string()? },
            Command::ImportPaths => ServeRequest::ImportPaths,
            Command::ExportPaths => {
                r.read_u64()?; // the old "sign" flag
                ServeRequest::ExportPaths { paths: r.read_string_set()? }
            }
            Command::BuildPaths => {
                let paths = r.read_string_list()?;
                ServeRequest::BuildPaths { paths, options: build_options(r)? }
            }
            Command::QueryClosure => {
                ServeRequest::QueryClosure { include_outputs: r.read_bool()?, paths: r.read_string_set()? }
            }
            Command::BuildDerivation => {
                let drv_path = r.read_string()?;
                let drv = BasicDerivation::read_from(r)?;
                ServeRequest::BuildDerivation { drv_path, drv, options: build_options(r)? }
            }
            Command::AddToStoreNar => {
                let path = r.read_string()?;
                let deriver = r.read_string()?;
                let nar_hash = r.read_string()?;
                let references = r.read_string_set()?;
                let registration_time = r.read_u64()?;
                let nar_size = r.read_u64()?;
                let ultimate = r.read_bool()?;
                let sigs = r.read_string_set()?;
                let ca = r.read_string()?;
                if hash::parse_sha256(&nar_hash).is_none() {
                    return Err(RequestError::InvalidNarHash(nar_hash));
                }
                if nar_size == 0 {
                    return Err(RequestError::ZeroNarSize);
                }
                let info = PathInfo {
                    deriver: (!deriver.is_empty()).then_some(deriver),
                    references,
                    download_size: nar_size,
                    nar_size,
                    nar_hash,
                    ca: (!ca.is_empty()).then_some(ca),
                    sigs,
                };
                ServeRequest::AddToStoreNar { path, info, registration_time, ultimate }
            }
        })
    }
}
