//! The values the serve protocol carries (docs/serve-protocol.md §4–§6), each with one
//! `read_from` and one `write_to` for a negotiated version, used by both the client and the
//! server. Fields that a protocol version added say from which minor version on they are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};

use nwh_wire::{Limits, Reader, WireError, Writer};

use crate::protocol::has;

/// Path info as `QueryPathInfos` returns it (docs/serve-protocol.md §4). `AddToStoreNar` sends
/// the same facts in another order and spelling (see [`crate::ServeRequest::AddToStoreNar`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathInfo {
    pub deriver: Option<String>,
    pub references: BTreeSet<String>,
    /// What a download would cost; servers send the NAR size.
    pub download_size: u64,
    pub nar_size: u64,
    /// Since 2.4: `sha256:<nix32>` as servers send it (empty from older servers). For
    /// `AddToStoreNar` any spelling of a sha256 that [`nwh_nar::hash::parse_sha256`] reads will
    /// do.
    pub nar_hash: String,
    /// Since 2.4: content address, e.g. `fixed:r:sha256:…`.
    pub ca: Option<String>,
    /// Since 2.4.
    pub sigs: BTreeSet<String>,
}

impl PathInfo {
    /// Reads one path info in the encoding of protocol `version`.
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<PathInfo, WireError> {
        r.bounded(Limits::PATH_INFO, |r| PathInfo::read_bounded(r, version))
    }

    fn read_bounded<R: Read>(r: &mut Reader<R>, version: u64) -> Result<PathInfo, WireError> {
        let deriver = r.read_string()?;
        let references = r.read_string_set()?;
        let download_size = r.read_u64()?;
        let nar_size = r.read_u64()?;
        let mut info = PathInfo {
            deriver: (!deriver.is_empty()).then_some(deriver),
            references,
            download_size,
            nar_size,
            ..PathInfo::default()
        };
        if has(version, 4) {
            info.nar_hash = r.read_string()?;
            let ca = r.read_string()?;
            info.ca = (!ca.is_empty()).then_some(ca);
            info.sigs = r.read_string_set()?;
        }
        Ok(info)
    }

    /// Writes it in the encoding of protocol `version`, as `nix-store --serve` does.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_str(self.deriver.as_deref().unwrap_or(""))?;
        w.write_list(&self.references)?;
        w.write_u64(self.download_size)?;
        w.write_u64(self.nar_size)?;
        if has(version, 4) {
            w.write_str(&self.nar_hash)?;
            w.write_str(self.ca.as_deref().unwrap_or(""))?;
            w.write_list(&self.sigs)?;
        }
        Ok(())
    }
}

/// Settings sent with a build (docs/serve-protocol.md §5). Zero means "no limit" for all three limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildOptions {
    pub max_silent_time: u64,
    pub build_timeout: u64,
    /// Since 2.2.
    pub max_log_size: u64,
    /// Since 2.7: keep the build directory of a failed build on the builder.
    pub keep_failed: bool,
}

/// The two fields of protocol 2.3 to 2.7 for repeated builds (`nrRepeats`,
/// `enforceDeterminism`). Current Nix and Lix servers refuse a non-zero `nr_repeats`, and
/// `enforce_determinism` means nothing without repeats (Nix 2.8 clients send it as 1, later
/// ones as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repeats {
    pub nr_repeats: u64,
    pub enforce_determinism: bool,
}

impl BuildOptions {
    /// Writes the options in the encoding of protocol `version`, with no repeats.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        self.write_with_repeats(w, version, Repeats::default())
    }

    /// Writes the options with the given repeat fields (sent since 2.3).
    pub fn write_with_repeats<W: Write>(
        &self,
        w: &mut Writer<W>,
        version: u64,
        repeats: Repeats,
    ) -> io::Result<()> {
        w.write_u64(self.max_silent_time)?;
        w.write_u64(self.build_timeout)?;
        if has(version, 2) {
            w.write_u64(self.max_log_size)?;
        }
        if has(version, 3) {
            w.write_u64(repeats.nr_repeats)?;
            w.write_bool(repeats.enforce_determinism)?;
        }
        if has(version, 7) {
            w.write_bool(self.keep_failed)?;
        }
        Ok(())
    }

    /// Reads options in the encoding of protocol `version`; the repeat fields come apart.
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<(BuildOptions, Repeats), WireError> {
        let mut options = BuildOptions {
            max_silent_time: r.read_u64()?,
            build_timeout: r.read_u64()?,
            ..BuildOptions::default()
        };
        let mut repeats = Repeats::default();
        if has(version, 2) {
            options.max_log_size = r.read_u64()?;
        }
        if has(version, 3) {
            repeats.nr_repeats = r.read_u64()?;
            repeats.enforce_determinism = r.read_bool()?;
        }
        if has(version, 7) {
            options.keep_failed = r.read_bool()?;
        }
        Ok((options, repeats))
    }
}

/// Outcome of a build as the server reports it (docs/serve-protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Built,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    ResolvesToAlreadyValid,
    NoSubstituters,
    /// A code this side does not know (a newer peer); treated as a failure.
    Unknown(u64),
}

impl BuildStatus {
    pub fn from_code(code: u64) -> BuildStatus {
        use BuildStatus::*;
        match code {
            0 => Built,
            1 => Substituted,
            2 => AlreadyValid,
            3 => PermanentFailure,
            4 => InputRejected,
            5 => OutputRejected,
            6 => TransientFailure,
            7 => CachedFailure,
            8 => TimedOut,
            9 => MiscFailure,
            10 => DependencyFailed,
            11 => LogLimitExceeded,
            12 => NotDeterministic,
            13 => ResolvesToAlreadyValid,
            14 => NoSubstituters,
            n => Unknown(n),
        }
    }

    pub fn code(self) -> u64 {
        use BuildStatus::*;
        match self {
            Built => 0,
            Substituted => 1,
            AlreadyValid => 2,
            PermanentFailure => 3,
            InputRejected => 4,
            OutputRejected => 5,
            TransientFailure => 6,
            CachedFailure => 7,
            TimedOut => 8,
            MiscFailure => 9,
            DependencyFailed => 10,
            LogLimitExceeded => 11,
            NotDeterministic => 12,
            ResolvesToAlreadyValid => 13,
            NoSubstituters => 14,
            Unknown(n) => n,
        }
    }

    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildStatus::Unknown(n) => write!(f, "unknown status {n}"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// Reply of `BuildDerivation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    /// Empty on success.
    pub error_msg: String,
    /// Since 2.3.
    pub times_built: u64,
    /// Since 2.3.
    pub is_non_deterministic: bool,
    /// Since 2.3: Unix seconds.
    pub start_time: u64,
    /// Since 2.3.
    pub stop_time: u64,
    /// Since 2.6, in the 2.6/2.7 encoding: DrvOutput id (`sha256:<drv hash>!<output>`) → JSON
    /// realisation. Only floating content-addressed outputs need it; see
    /// [`BuildResult::built_output_paths`].
    pub built_outputs: BTreeMap<String, String>,
}

/// A `builtOutputs` entry that [`BuildResult::built_output_paths`] could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad builtOutputs entry '{id}': {reason}")]
pub struct BuiltOutputError {
    pub id: String,
    pub reason: String,
}

impl BuildResult {
    /// A result with `status` and nothing else (no times, no built outputs).
    pub fn new(status: BuildStatus, error_msg: impl Into<String>) -> BuildResult {
        BuildResult {
            status,
            error_msg: error_msg.into(),
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            built_outputs: BTreeMap::new(),
        }
    }

    /// A failed build (`status` should be one of the failures) with its message.
    pub fn failure(status: BuildStatus, error_msg: impl Into<String>) -> BuildResult {
        BuildResult::new(status, error_msg)
    }

    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// Reads a result in the encoding of protocol `version` (2.8's is not supported: we never
    /// negotiate it).
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<BuildResult, WireError> {
        let status = BuildStatus::from_code(r.read_u64()?);
        let mut result = BuildResult::new(status, r.read_string()?);
        if has(version, 3) {
            result.times_built = r.read_u64()?;
            result.is_non_deterministic = r.read_bool()?;
            result.start_time = r.read_u64()?;
            result.stop_time = r.read_u64()?;
        }
        if has(version, 6) {
            let n = r.read_u64()?;
            for _ in 0..n {
                let id = r.read_string()?;
                let realisation = r.read_string()?;
                result.built_outputs.insert(id, realisation);
            }
        }
        Ok(result)
    }

    /// Writes the result in the encoding of protocol `version` (at most 2.7).
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_u64(self.status.code())?;
        w.write_str(&self.error_msg)?;
        if has(version, 3) {
            w.write_u64(self.times_built)?;
            w.write_bool(self.is_non_deterministic)?;
            w.write_u64(self.start_time)?;
            w.write_u64(self.stop_time)?;
        }
        if has(version, 6) {
            w.write_u64(self.built_outputs.len() as u64)?;
            for (id, realisation) in &self.built_outputs {
                w.write_str(id)?;
                w.write_str(realisation)?;
            }
        }
        Ok(())
    }

    /// Output name → full output path, from `built_outputs`. The realisation's `outPath` is a
    /// base name (`<hash>-<name>`); `store_dir` (normally `/nix/store`) is put in front.
    pub fn built_output_paths(&self, store_dir: &str) -> Result<BTreeMap<String, String>, BuiltOutputError> {
        let mut out = BTreeMap::new();
        for (id, json) in &self.built_outputs {
            let bad = |reason: &str| BuiltOutputError { id: id.clone(), reason: reason.to_string() };
            let (_, name) = id.rsplit_once('!').ok_or_else(|| bad("no '!' before the output name"))?;
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
            let path = value
                .get("outPath")
                .and_then(|p| p.as_str())
                .ok_or_else(|| bad("no string 'outPath' in the realisation"))?;
            let full = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("{}/{path}", store_dir.trim_end_matches('/'))
            };
            out.insert(name.to_string(), full);
        }
        Ok(out)
    }
}

/// Reply of `BuildPaths`: status 0, or a non-zero status and a message. The status is not a
/// [`BuildStatus`] but what Nix would exit with (1, or 100 plus bits: 1 timed out, 2 hash
/// mismatch, 4 build failure, 8 check mismatch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildPathsResult {
    pub status: u64,
    /// Sent only with a non-zero status.
    pub error_msg: String,
}

impl BuildPathsResult {
    pub fn is_success(&self) -> bool {
        self.status == 0
    }

    pub fn read_from<R: Read>(r: &mut Reader<R>) -> Result<BuildPathsResult, WireError> {
        let status = r.read_u64()?;
        let error_msg = if status != 0 { r.read_string()? } else { String::new() };
        Ok(BuildPathsResult { status, error_msg })
    }

    pub fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.write_u64(self.status)?;
        if self.status != 0 {
            w.write_str(&self.error_msg)?;
        }
        Ok(())
    }
}
