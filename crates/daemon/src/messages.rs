//! The values the worker protocol carries, each with one `read_from` and one `write_to` for a
//! negotiated version. Fields that a protocol version added say from which minor version on
//! they are sent. The writers exist for the client's requests and, for the daemon's side, so
//! that tests can produce what a daemon of any version would send.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};

use nwh_nar::hash;
use nwh_serve::BuildStatus;
use nwh_wire::{Limits, Reader, WireError, Writer};

use crate::protocol::{
    has, STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_READ, STDERR_RESULT, STDERR_START_ACTIVITY,
    STDERR_STOP_ACTIVITY, STDERR_WRITE,
};

/// Why a value from the daemon could not be decoded: the wire encoding itself, or a value
/// that the encoding allows but the protocol does not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A frame code that is none of the `STDERR_*` ones: the two sides are out of step.
    #[error("unknown frame {code:#x} at byte offset {offset}")]
    UnknownFrame { code: u64, offset: u64 },
    #[error("unknown log field type {code} at byte offset {offset}")]
    UnknownFieldType { code: u64, offset: u64 },
    /// A value out of its range, e.g. a trust flag of 3.
    #[error("invalid {what} {value} at byte offset {offset}")]
    BadValue { what: &'static str, value: u64, offset: u64 },
    /// An error frame not in the shape every Nix sends.
    #[error("invalid error frame at byte offset {offset}: {reason}")]
    BadError { offset: u64, reason: String },
}

impl DecodeError {
    /// True when the input ended (the daemon went away) rather than being wrong.
    pub fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Wire(WireError::Truncated { .. }))
    }
}

fn read_int_as<R: Read>(r: &mut Reader<R>, what: &'static str, max: u64) -> Result<u64, DecodeError> {
    let offset = r.position();
    let value = r.read_u64()?;
    if value > max {
        return Err(DecodeError::BadValue { what, value, offset });
    }
    Ok(value)
}

/// Text from the daemon: log lines and messages may hold any bytes (a build's output);
/// invalid UTF-8 is replaced, everything else, ANSI escapes included, is kept as sent.
fn read_text<R: Read>(r: &mut Reader<R>) -> Result<String, WireError> {
    let bytes = r.read_bytes()?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// One typed field of an activity or result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(u64),
    String(String),
}

impl Field {
    fn read_list<R: Read>(r: &mut Reader<R>) -> Result<Vec<Field>, DecodeError> {
        let offset = r.position();
        let count = r.read_u64()?;
        let max = r.limits().max_list_len;
        if count > max {
            return Err(
                WireError::TooLong { what: nwh_wire::Item::ListCount, offset, len: count, max }.into()
            );
        }
        let mut fields = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let offset = r.position();
            match r.read_u64()? {
                0 => fields.push(Field::Int(r.read_u64()?)),
                1 => fields.push(Field::String(read_text(r)?)),
                code => return Err(DecodeError::UnknownFieldType { code, offset }),
            }
        }
        Ok(fields)
    }

    fn write_list<W: Write>(fields: &[Field], w: &mut Writer<W>) -> io::Result<()> {
        w.write_u64(fields.len() as u64)?;
        for field in fields {
            match field {
                Field::Int(n) => {
                    w.write_u64(0)?;
                    w.write_u64(*n)?;
                }
                Field::String(s) => {
                    w.write_u64(1)?;
                    w.write_str(s)?;
                }
            }
        }
        Ok(())
    }
}

/// What the daemon logs while it works on an operation, for the caller to show or forward.
/// Levels, activity types and result types are Nix's numbers (`Verbosity`, `ActivityType`,
/// `ResultType`), passed on as they are so that a newer daemon's new kinds survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogMessage {
    /// A log line, with its newline, exactly as the daemon's logger printed it.
    Next(String),
    /// Since 1.20.
    StartActivity { id: u64, level: u64, activity_type: u64, text: String, fields: Vec<Field>, parent: u64 },
    /// Since 1.20.
    StopActivity { id: u64 },
    /// Since 1.20: progress, a build's log line (type 101 with the line as a string field), …
    Result { id: u64, result_type: u64, fields: Vec<Field> },
}

/// The error the daemon sent in place of a reply. Its message is the daemon's own words,
/// ANSI colours and all; since 1.26 it also carries a verbosity level and the traces that
/// Nix shows with `--show-trace`, before that only an exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub message: String,
    /// Since 1.26 (0 = error).
    pub level: u64,
    /// Since 1.26.
    pub traces: Vec<String>,
    /// Before 1.26 only: the status the daemon would have exited with.
    pub exit_status: Option<u64>,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.trim_end())?;
        for trace in &self.traces {
            write!(f, "\n… {}", trace.trim_end())?;
        }
        Ok(())
    }
}

impl RemoteError {
    /// A plain error, as a daemon's `Error(msg)` would send it.
    pub fn new(message: impl Into<String>) -> RemoteError {
        RemoteError { message: message.into(), level: 0, traces: Vec::new(), exit_status: None }
    }

    /// Reads the error that follows `STDERR_ERROR` in the encoding of protocol `version`.
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<RemoteError, DecodeError> {
        if !has(version, 26) {
            let message = read_text(r)?;
            let exit_status = Some(r.read_u64()?);
            return Ok(RemoteError { message, level: 0, traces: Vec::new(), exit_status });
        }
        let offset = r.position();
        let bad = |reason: String| DecodeError::BadError { offset, reason };
        let kind = read_text(r)?;
        if kind != "Error" {
            return Err(bad(format!("type '{kind}', not 'Error'")));
        }
        let level = r.read_u64()?;
        let _name = read_text(r)?; // always "Error", unused
        let message = read_text(r)?;
        // Positions have never been sent: a non-zero flag would be followed by a format that
        // no Nix defines.
        if r.read_u64()? != 0 {
            return Err(bad("an error position".into()));
        }
        let count = r.read_u64()?;
        if count > r.limits().max_list_len {
            return Err(bad(format!("{count} traces")));
        }
        let mut traces = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            if r.read_u64()? != 0 {
                return Err(bad("a trace position".into()));
            }
            traces.push(read_text(r)?);
        }
        Ok(RemoteError { message, level, traces, exit_status: None })
    }

    /// Writes it as a daemon speaking protocol `version` does (after `STDERR_ERROR`).
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        if !has(version, 26) {
            w.write_str(&self.message)?;
            return w.write_u64(self.exit_status.unwrap_or(1));
        }
        w.write_str("Error")?;
        w.write_u64(self.level)?;
        w.write_str("Error")?;
        w.write_str(&self.message)?;
        w.write_u64(0)?;
        w.write_u64(self.traces.len() as u64)?;
        for trace in &self.traces {
            w.write_u64(0)?;
            w.write_str(trace)?;
        }
        Ok(())
    }
}

/// One frame of what the daemon sends between a request and its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Log(LogMessage),
    /// The reply follows.
    Last,
    /// The operation failed; no reply follows.
    Error(RemoteError),
    /// The daemon asks for up to this many bytes (only operations before 1.23 do).
    Read(u64),
    /// Data for the client's sink (only operations this crate does not send).
    Write(Vec<u8>),
}

impl Frame {
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<Frame, DecodeError> {
        let offset = r.position();
        let frame = match r.read_u64()? {
            STDERR_NEXT => Frame::Log(LogMessage::Next(read_text(r)?)),
            STDERR_START_ACTIVITY => Frame::Log(LogMessage::StartActivity {
                id: r.read_u64()?,
                level: r.read_u64()?,
                activity_type: r.read_u64()?,
                text: read_text(r)?,
                fields: Field::read_list(r)?,
                parent: r.read_u64()?,
            }),
            STDERR_STOP_ACTIVITY => Frame::Log(LogMessage::StopActivity { id: r.read_u64()? }),
            STDERR_RESULT => Frame::Log(LogMessage::Result {
                id: r.read_u64()?,
                result_type: r.read_u64()?,
                fields: Field::read_list(r)?,
            }),
            STDERR_LAST => Frame::Last,
            STDERR_ERROR => Frame::Error(RemoteError::read_from(r, version)?),
            STDERR_READ => Frame::Read(r.read_u64()?),
            STDERR_WRITE => Frame::Write(r.read_bytes()?),
            code => return Err(DecodeError::UnknownFrame { code, offset }),
        };
        Ok(frame)
    }

    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        match self {
            Frame::Log(LogMessage::Next(text)) => {
                w.write_u64(STDERR_NEXT)?;
                w.write_str(text)
            }
            Frame::Log(LogMessage::StartActivity { id, level, activity_type, text, fields, parent }) => {
                w.write_u64(STDERR_START_ACTIVITY)?;
                w.write_u64(*id)?;
                w.write_u64(*level)?;
                w.write_u64(*activity_type)?;
                w.write_str(text)?;
                Field::write_list(fields, w)?;
                w.write_u64(*parent)
            }
            Frame::Log(LogMessage::StopActivity { id }) => {
                w.write_u64(STDERR_STOP_ACTIVITY)?;
                w.write_u64(*id)
            }
            Frame::Log(LogMessage::Result { id, result_type, fields }) => {
                w.write_u64(STDERR_RESULT)?;
                w.write_u64(*id)?;
                w.write_u64(*result_type)?;
                Field::write_list(fields, w)
            }
            Frame::Last => w.write_u64(STDERR_LAST),
            Frame::Error(e) => {
                w.write_u64(STDERR_ERROR)?;
                e.write_to(w, version)
            }
            Frame::Read(n) => {
                w.write_u64(STDERR_READ)?;
                w.write_u64(*n)
            }
            Frame::Write(data) => {
                w.write_u64(STDERR_WRITE)?;
                w.write_bytes(data)
            }
        }
    }
}

/// Path info as `QueryPathInfo` returns it and `AddToStoreNar` / `AddMultipleToStore` send
/// it (Nix's `UnkeyedValidPathInfo`). Not the serve protocol's [`nwh_serve::PathInfo`]: this
/// one has the registration time and the "ultimate" flag, no download size, and other field
/// order and spellings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathInfo {
    pub deriver: Option<String>,
    /// Daemons send base 16 without a prefix. When sending, any spelling of a sha256 that
    /// [`nwh_nar::hash::parse_sha256`] reads will do (it goes out in base 16).
    pub nar_hash: String,
    pub references: BTreeSet<String>,
    /// Unix seconds.
    pub registration_time: u64,
    pub nar_size: u64,
    /// Since 1.16: built on the machine that has it, not copied or substituted. A daemon
    /// clears it for untrusted clients.
    pub ultimate: bool,
    /// Since 1.16.
    pub sigs: BTreeSet<String>,
    /// Since 1.16: content address, e.g. `fixed:r:sha256:…`.
    pub ca: Option<String>,
}

impl PathInfo {
    /// The NAR hash as bytes, if it is a sha256 in a spelling Nix accepts.
    pub fn nar_sha256(&self) -> Option<[u8; 32]> {
        hash::parse_sha256(&self.nar_hash)
    }

    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<PathInfo, WireError> {
        r.bounded(Limits::PATH_INFO, |r| PathInfo::read_bounded(r, version))
    }

    fn read_bounded<R: Read>(r: &mut Reader<R>, version: u64) -> Result<PathInfo, WireError> {
        let deriver = r.read_string()?;
        let mut info = PathInfo {
            deriver: (!deriver.is_empty()).then_some(deriver),
            nar_hash: r.read_string()?,
            references: r.read_string_set()?,
            registration_time: r.read_u64()?,
            nar_size: r.read_u64()?,
            ..PathInfo::default()
        };
        if has(version, 16) {
            info.ultimate = r.read_bool()?;
            info.sigs = r.read_string_set()?;
            let ca = r.read_string()?;
            info.ca = (!ca.is_empty()).then_some(ca);
        }
        Ok(info)
    }

    /// Writes it in the encoding of protocol `version`, the hash as it is (callers that send
    /// it normalise it to base 16 first, as Nix does).
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_str(self.deriver.as_deref().unwrap_or(""))?;
        w.write_str(&self.nar_hash)?;
        w.write_list(&self.references)?;
        w.write_u64(self.registration_time)?;
        w.write_u64(self.nar_size)?;
        if has(version, 16) {
            w.write_bool(self.ultimate)?;
            w.write_list(&self.sigs)?;
            w.write_str(self.ca.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }
}

/// Nix's verbosity levels, for [`Options::verbosity`].
pub mod verbosity {
    pub const ERROR: u64 = 0;
    pub const WARN: u64 = 1;
    pub const NOTICE: u64 = 2;
    pub const INFO: u64 = 3;
    pub const TALKATIVE: u64 = 4;
    pub const CHATTY: u64 = 5;
    pub const DEBUG: u64 = 6;
    pub const VOMIT: u64 = 7;
}

/// The settings `SetOptions` sends. Nix's `ssh-ng://` store never sends them (its
/// `setOptions` is empty, so a builder uses its own configuration); a local client of the
/// daemon sends them once per connection. An untrusted client's `overrides` are ignored by
/// the daemon except for a few harmless settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub keep_failed: bool,
    pub keep_going: bool,
    pub try_fallback: bool,
    /// How much the daemon logs to us; see [`verbosity`].
    pub verbosity: u64,
    pub max_build_jobs: u64,
    /// Seconds; 0 = no limit.
    pub max_silent_time: u64,
    /// Whether build logs come back (Nix sends this as the level `ERROR` for yes, `VOMIT` for
    /// no, and the daemon only compares it with `ERROR`).
    pub verbose_build: bool,
    /// 0 = all cores.
    pub build_cores: u64,
    pub use_substitutes: bool,
    /// Any other setting by name, as text (e.g. `"max-log-size" → "0"`).
    pub overrides: BTreeMap<String, String>,
}

impl Default for Options {
    /// Nix's defaults, except that substitution is off: a builder should not fetch what it was
    /// sent to build.
    fn default() -> Self {
        Options {
            keep_failed: false,
            keep_going: false,
            try_fallback: false,
            verbosity: verbosity::INFO,
            max_build_jobs: 1,
            max_silent_time: 0,
            verbose_build: true,
            build_cores: 0,
            use_substitutes: false,
            overrides: BTreeMap::new(),
        }
    }
}

impl Options {
    /// The arguments of `SetOptions` (the same in every version since 1.12).
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.write_bool(self.keep_failed)?;
        w.write_bool(self.keep_going)?;
        w.write_bool(self.try_fallback)?;
        w.write_u64(self.verbosity)?;
        w.write_u64(self.max_build_jobs)?;
        w.write_u64(self.max_silent_time)?;
        w.write_bool(true)?; // obsolete: use the build hook
        w.write_u64(if self.verbose_build { verbosity::ERROR } else { verbosity::VOMIT })?;
        w.write_u64(0)?; // obsolete: log type
        w.write_u64(0)?; // obsolete: print build trace
        w.write_u64(self.build_cores)?;
        w.write_bool(self.use_substitutes)?;
        w.write_u64(self.overrides.len() as u64)?;
        for (name, value) in &self.overrides {
            w.write_str(name)?;
            w.write_str(value)?;
        }
        Ok(())
    }
}

/// How a build treats outputs that exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildMode {
    #[default]
    Normal,
    /// Rebuild and replace corrupt outputs (trusted clients only).
    Repair,
    /// Rebuild and compare with the existing outputs.
    Check,
}

impl BuildMode {
    pub fn code(self) -> u64 {
        match self {
            BuildMode::Normal => 0,
            BuildMode::Repair => 1,
            BuildMode::Check => 2,
        }
    }

    pub fn from_code(code: u64) -> Option<BuildMode> {
        match code {
            0 => Some(BuildMode::Normal),
            1 => Some(BuildMode::Repair),
            2 => Some(BuildMode::Check),
            _ => None,
        }
    }
}

/// Reply of `BuildDerivation` (and, with its path, of `BuildPathsWithResults`). The status
/// codes are the serve protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    /// Empty on success.
    pub error_msg: String,
    /// Since 1.29.
    pub times_built: u64,
    /// Since 1.29.
    pub is_non_deterministic: bool,
    /// Since 1.29: Unix seconds.
    pub start_time: u64,
    /// Since 1.29.
    pub stop_time: u64,
    /// Since 1.37: CPU time of the build in user mode, microseconds, if the daemon measured
    /// it.
    pub cpu_user: Option<u64>,
    /// Since 1.37.
    pub cpu_system: Option<u64>,
    /// Since 1.28: DrvOutput id (`sha256:<hash>!<output>`) → JSON realisation, the same
    /// form as the serve protocol's 2.6/2.7 `builtOutputs`. Daemons from Nix 2.35 on put a
    /// dummy hash in the id; only the output name and `outPath` mean anything.
    pub built_outputs: BTreeMap<String, String>,
}

impl BuildResult {
    /// A result with `status` and nothing else.
    pub fn new(status: BuildStatus, error_msg: impl Into<String>) -> BuildResult {
        BuildResult {
            status,
            error_msg: error_msg.into(),
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            cpu_user: None,
            cpu_system: None,
            built_outputs: BTreeMap::new(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The same result as the serve protocol has it (without the CPU times), for code that
    /// handles builds on both kinds of builder.
    pub fn to_serve(&self) -> nwh_serve::BuildResult {
        nwh_serve::BuildResult {
            status: self.status,
            error_msg: self.error_msg.clone(),
            times_built: self.times_built,
            is_non_deterministic: self.is_non_deterministic,
            start_time: self.start_time,
            stop_time: self.stop_time,
            built_outputs: self.built_outputs.clone(),
        }
    }

    /// Output name → full output path, from `built_outputs`; see
    /// [`nwh_serve::BuildResult::built_output_paths`].
    pub fn built_output_paths(
        &self,
        store_dir: &str,
    ) -> Result<BTreeMap<String, String>, nwh_serve::BuiltOutputError> {
        self.to_serve().built_output_paths(store_dir)
    }

    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<BuildResult, DecodeError> {
        let status = BuildStatus::from_code(r.read_u64()?);
        let mut result = BuildResult::new(status, read_text(r)?);
        if has(version, 29) {
            result.times_built = r.read_u64()?;
            result.is_non_deterministic = r.read_bool()?;
            result.start_time = r.read_u64()?;
            result.stop_time = r.read_u64()?;
        }
        if has(version, 37) {
            result.cpu_user = read_duration(r)?;
            result.cpu_system = read_duration(r)?;
        }
        if has(version, 28) {
            let offset = r.position();
            let count = r.read_u64()?;
            let max = r.limits().max_list_len;
            if count > max {
                return Err(
                    WireError::TooLong { what: nwh_wire::Item::ListCount, offset, len: count, max }.into()
                );
            }
            for _ in 0..count {
                let id = r.read_string()?;
                let realisation = r.read_string()?;
                result.built_outputs.insert(id, realisation);
            }
        }
        Ok(result)
    }

    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_u64(self.status.code())?;
        w.write_str(&self.error_msg)?;
        if has(version, 29) {
            w.write_u64(self.times_built)?;
            w.write_bool(self.is_non_deterministic)?;
            w.write_u64(self.start_time)?;
            w.write_u64(self.stop_time)?;
        }
        if has(version, 37) {
            write_duration(w, self.cpu_user)?;
            write_duration(w, self.cpu_system)?;
        }
        if has(version, 28) {
            w.write_u64(self.built_outputs.len() as u64)?;
            for (id, realisation) in &self.built_outputs {
                w.write_str(id)?;
                w.write_str(realisation)?;
            }
        }
        Ok(())
    }
}

/// An optional duration: a tag (0 none, 1 some), then the microseconds as a non-negative
/// signed 64-bit number.
/// The realisation of a floating content-addressed output, as `RegisterDrvOutput` takes it:
/// the output's DrvOutput id (`sha256:<hash modulo>!<output>`, see
/// `nwh_drv::Derivation::drv_output_ids`) and the store path it was built at. No signatures
/// and no dependent realisations: a resolved derivation, the only kind a hook builds, has
/// none, and Nix 2.34 no longer keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realisation {
    pub id: String,
    /// Full store path (`/nix/store/…`); the wire carries its base name.
    pub out_path: String,
}

impl Realisation {
    fn base_name(&self) -> &str {
        self.out_path.rsplit_once('/').map_or(self.out_path.as_str(), |(_, base)| base)
    }

    /// The JSON Nix reads (2.8 `Realisation::fromJSON`, 2.34 the `Realisation` JSON form):
    /// `outPath` as a base name, keys in the order Nix 2.34 writes them.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"dependentRealisations":{{}},"id":{},"outPath":{},"signatures":[]}}"#,
            json_string(&self.id),
            json_string(self.base_name())
        )
    }

    /// `RegisterDrvOutput`'s argument: since 1.31 the JSON as one string; before, the id and
    /// the base name of the path as two strings.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        if has(version, 31) {
            w.write_str(&self.to_json())
        } else {
            w.write_str(&self.id)?;
            w.write_str(self.base_name())
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn read_duration<R: Read>(r: &mut Reader<R>) -> Result<Option<u64>, DecodeError> {
    match read_int_as(r, "optional tag", 1)? {
        0 => Ok(None),
        _ => Ok(Some(read_int_as(r, "duration", i64::MAX as u64)?)),
    }
}

fn write_duration<W: Write>(w: &mut Writer<W>, micros: Option<u64>) -> io::Result<()> {
    match micros {
        None => w.write_u64(0),
        Some(n) => {
            w.write_u64(1)?;
            w.write_u64(n)
        }
    }
}

/// Reads the trust flag of the handshake (since 1.35): 0 unknown, 1 trusted, 2 not trusted.
pub(crate) fn read_trust<R: Read>(r: &mut Reader<R>) -> Result<Option<bool>, DecodeError> {
    Ok(match read_int_as(r, "trust flag", 2)? {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    })
}
