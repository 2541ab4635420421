//! A synchronous client of `nix-store --serve` (the protocol of `ssh://` builders,
//! closure-transfer.md §3) over any reader/writer pair, typically an ssh child's stdout/stdin.
//!
//! The server has no error frames: when a command fails it prints the message on its stderr
//! and exits, so the client sees the connection close ([`ServeError::Eof`]). The caller has
//! ssh's stderr and should show it with that error. After any error mid-command the
//! connection is out of step; further calls return [`ServeError::Poisoned`].
//!
//! We advertise protocol 2.7, which every Nix since 2.4 and every Lix speaks; Nix 2.3 answers
//! 2.5. Fields are read and written according to the negotiated version (the lower of the
//! two).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};

use nwh_drv::BasicDerivation;
use nwh_nar::{copy_export, copy_nar, hash, ExportError, ExportedPath, NarError, NarSummary};
use nwh_wire::{Reader, WireError, Writer};

pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;

/// The version we advertise: 2.7. Not 2.8, whose `builtOutputs` encoding only Nix ≥ 2.35
/// speaks; and not below 2.6, because Nix 2.4–2.10 servers send `builtOutputs` whatever the
/// client says, so a client that negotiated less would fall out of step.
pub const CLIENT_VERSION: u64 = 0x207;

const CMD_QUERY_VALID_PATHS: u64 = 1;
const CMD_QUERY_PATH_INFOS: u64 = 2;
const CMD_DUMP_STORE_PATH: u64 = 3;
const CMD_IMPORT_PATHS: u64 = 4;
const CMD_EXPORT_PATHS: u64 = 5;
const CMD_BUILD_DERIVATION: u64 = 8;
const CMD_ADD_TO_STORE_NAR: u64 = 9;

/// How much of an unexpected greeting is kept for the error message.
const MAX_GREETING: usize = 4096;

pub fn major(version: u64) -> u64 {
    version >> 8
}

pub fn minor(version: u64) -> u64 {
    version & 0xff
}

/// Path info as `QueryPathInfos` returns it and `AddToStoreNar` takes it (§3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathInfo {
    pub deriver: Option<String>,
    pub references: BTreeSet<String>,
    /// What a download would cost; servers send the NAR size.
    pub download_size: u64,
    pub nar_size: u64,
    /// `sha256:<nix32>` as servers send it (empty from servers older than 2.4). For
    /// `AddToStoreNar` any spelling of a sha256 that [`hash::parse_sha256`] reads will do.
    pub nar_hash: String,
    /// Content address, e.g. `fixed:r:sha256:…`.
    pub ca: Option<String>,
    pub sigs: BTreeSet<String>,
}

impl PathInfo {
    /// Reads one path info in the encoding of protocol `version`.
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<PathInfo, WireError> {
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
        if minor(version) >= 4 {
            info.nar_hash = r.read_string()?;
            let ca = r.read_string()?;
            info.ca = (!ca.is_empty()).then_some(ca);
            info.sigs = r.read_string_set()?;
        }
        Ok(info)
    }
}

/// Settings sent with a build (§3.3). Zero means "no limit" for all three limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildOptions {
    pub max_silent_time: u64,
    pub build_timeout: u64,
    pub max_log_size: u64,
    /// Keep the build directory of a failed build on the builder.
    pub keep_failed: bool,
}

impl BuildOptions {
    /// Writes the options in the encoding of protocol `version`. Repeats are always 0 (current
    /// Nix servers reject anything else), and so is enforce-determinism, which means nothing
    /// without repeats.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>, version: u64) -> io::Result<()> {
        w.write_u64(self.max_silent_time)?;
        w.write_u64(self.build_timeout)?;
        if minor(version) >= 2 {
            w.write_u64(self.max_log_size)?;
        }
        if minor(version) >= 3 {
            w.write_u64(0)?; // nrRepeats
            w.write_bool(false)?; // enforceDeterminism
        }
        if minor(version) >= 7 {
            w.write_bool(self.keep_failed)?;
        }
        Ok(())
    }
}

/// Outcome of a build as the server reports it (§3.5).
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
    /// A code this client does not know (a newer server); treated as a failure.
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
    pub times_built: u64,
    pub is_non_deterministic: bool,
    /// Unix seconds; 0 from servers older than 2.3.
    pub start_time: u64,
    pub stop_time: u64,
    /// The 2.6/2.7 encoding, as received: DrvOutput id (`sha256:<drv hash>!<output>`) → JSON
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
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// Reads a result in the encoding of protocol `version` (2.8's is not supported: we never
    /// negotiate it).
    pub fn read_from<R: Read>(r: &mut Reader<R>, version: u64) -> Result<BuildResult, WireError> {
        let status = BuildStatus::from_code(r.read_u64()?);
        let error_msg = r.read_string()?;
        let mut result = BuildResult {
            status,
            error_msg,
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            built_outputs: BTreeMap::new(),
        };
        if minor(version) >= 3 {
            result.times_built = r.read_u64()?;
            result.is_non_deterministic = r.read_bool()?;
            result.start_time = r.read_u64()?;
            result.stop_time = r.read_u64()?;
        }
        if minor(version) >= 6 {
            let n = r.read_u64()?;
            for _ in 0..n {
                let id = r.read_string()?;
                let realisation = r.read_string()?;
                result.built_outputs.insert(id, realisation);
            }
        }
        Ok(result)
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

fn is_broken_pipe(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// One line, control characters escaped, cut at a sensible length.
fn printable_greeting(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 512 {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// A connection to `nix-store --serve` after a successful handshake.
///
/// Both directions are buffered here; pass the raw pipes. Every command flushes before it
/// waits for the reply.
pub struct ServeClient<R: Read, W: Write> {
    host: String,
    r: Reader<BufReader<R>>,
    w: Writer<BufWriter<W>>,
    remote_version: u64,
    version: u64,
    poisoned: bool,
}

impl<R: Read, W: Write> fmt::Debug for ServeClient<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeClient")
            .field("host", &self.host)
            .field("remote_version", &format_args!("{:#x}", self.remote_version))
            .field("version", &format_args!("{:#x}", self.version))
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<R: Read, W: Write> ServeClient<R, W> {
    /// Greets the server on `r`/`w`. `host` is only used in messages.
    ///
    /// If the greeting is wrong, the writer is dropped (closing the pipe makes the remote
    /// side exit) and what the server sent until it closed (at most 4 KiB are read) goes into
    /// the error, as Nix does; the message shows its first 512 characters. A server that neither closes nor sends anything more then blocks
    /// this call, so run it with a deadline of your own (e.g. ssh's `ConnectTimeout` plus a
    /// watchdog that kills ssh).
    pub fn handshake(host: impl Into<String>, r: R, w: W) -> Result<Self> {
        let host = host.into();
        let mut w = Writer::new(BufWriter::new(w));
        let mut r = Reader::new(BufReader::new(r));
        let sent = (|| {
            w.write_u64(SERVE_MAGIC_1)?;
            w.write_u64(CLIENT_VERSION)?;
            w.flush()
        })();
        if let Err(e) = sent {
            return Err(if is_broken_pipe(&e) {
                ServeError::CannotConnect { host }
            } else {
                ServeError::Io { host, during: "the handshake", source: e }
            });
        }

        let mut greeting = Vec::with_capacity(8);
        let read_err =
            |host: String, e: io::Error| ServeError::Io { host, during: "the handshake", source: e };
        match read_up_to(&mut r, &mut greeting, 8) {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => return Err(ServeError::CannotConnect { host }),
            Err(e) => return Err(read_err(host, e)),
        }
        if greeting.is_empty() {
            return Err(ServeError::CannotConnect { host });
        }
        if greeting.len() < 8 || u64::from_le_bytes(greeting[..8].try_into().unwrap()) != SERVE_MAGIC_2 {
            drop(w);
            // Whatever the read of the rest brings, the message shows what we have.
            let _ = read_up_to(&mut r, &mut greeting, MAX_GREETING);
            return Err(ServeError::ProtocolMismatch { host, got: printable_greeting(&greeting) });
        }

        let remote_version = match r.read_u64() {
            Ok(v) => v,
            Err(WireError::Truncated { .. }) => return Err(ServeError::CannotConnect { host }),
            Err(e) => return Err(ServeError::Wire { host, during: "the handshake", source: e }),
        };
        if major(remote_version) != 2 {
            return Err(ServeError::UnsupportedVersion { host, version: remote_version });
        }
        let version = remote_version.min(CLIENT_VERSION);
        Ok(ServeClient { host, r, w, remote_version, version, poisoned: false })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The version the server announced.
    pub fn remote_version(&self) -> u64 {
        self.remote_version
    }

    /// The version both sides use: the lower of ours ([`CLIENT_VERSION`]) and the server's.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `AddToStoreNar` exists from 2.5 on; older servers need [`ServeClient::import_paths`].
    pub fn supports_add_to_store_nar(&self) -> bool {
        minor(self.version) >= 5
    }

    fn recv_err(&self, during: &'static str, e: WireError) -> ServeError {
        match e {
            WireError::Truncated { .. } => ServeError::Eof { host: self.host.clone(), during },
            WireError::Io { source, .. } if is_broken_pipe(&source) => {
                ServeError::Eof { host: self.host.clone(), during }
            }
            source => ServeError::Wire { host: self.host.clone(), during, source },
        }
    }

    fn send_err(&self, during: &'static str, e: io::Error) -> ServeError {
        if is_broken_pipe(&e) {
            ServeError::Eof { host: self.host.clone(), during }
        } else {
            ServeError::Io { host: self.host.clone(), during, source: e }
        }
    }

    /// Runs one command. The connection counts as broken until the command has finished
    /// cleanly, so an error anywhere in between (ours or the server's) poisons it.
    fn command<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.poisoned {
            return Err(ServeError::Poisoned { host: self.host.clone() });
        }
        self.poisoned = true;
        let value = f(self)?;
        self.poisoned = false;
        Ok(value)
    }

    fn send(
        &mut self,
        during: &'static str,
        f: impl FnOnce(&mut Writer<BufWriter<W>>) -> io::Result<()>,
    ) -> Result<()> {
        f(&mut self.w).map_err(|e| self.send_err(during, e))
    }

    fn flush(&mut self, during: &'static str) -> Result<()> {
        self.w.flush().map_err(|e| self.send_err(during, e))
    }

    fn recv<T>(
        &mut self,
        during: &'static str,
        f: impl FnOnce(&mut Reader<BufReader<R>>) -> Result<T, WireError>,
    ) -> Result<T> {
        f(&mut self.r).map_err(|e| self.recv_err(during, e))
    }

    /// Which of `paths` are valid on the server. `lock` makes them temporary GC roots for
    /// the session; `substitute` lets the server fetch missing ones from its substituters
    /// first (both need `--write`).
    pub fn query_valid_paths<I, S>(
        &mut self,
        paths: I,
        lock: bool,
        substitute: bool,
    ) -> Result<BTreeSet<String>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const DURING: &str = "QueryValidPaths";
        let paths: BTreeSet<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_QUERY_VALID_PATHS)?;
                w.write_bool(lock)?;
                w.write_bool(substitute)?;
                w.write_list(&paths)
            })?;
            c.flush(DURING)?;
            c.recv(DURING, |r| r.read_string_set())
        })
    }

    /// Path infos of those of `paths` that are valid on the server, in the server's order.
    pub fn query_path_infos<I, S>(&mut self, paths: I) -> Result<Vec<(String, PathInfo)>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const DURING: &str = "QueryPathInfos";
        let paths: BTreeSet<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
        let version = self.version;
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_QUERY_PATH_INFOS)?;
                w.write_list(&paths)
            })?;
            c.flush(DURING)?;
            c.recv(DURING, |r| {
                let mut infos = Vec::new();
                loop {
                    let path = r.read_string()?;
                    if path.is_empty() {
                        return Ok(infos);
                    }
                    infos.push((path, PathInfo::read_from(r, version)?));
                }
            })
        })
    }

    /// Streams the NAR of `path` into `out`; returns its size and hash. On error, `out` may
    /// hold part of the NAR. A path the server does not have ends the session
    /// ([`ServeError::Eof`]), so ask [`ServeClient::query_valid_paths`] first.
    pub fn dump_store_path(&mut self, path: &str, out: &mut impl Write) -> Result<NarSummary> {
        const DURING: &str = "DumpStorePath";
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_DUMP_STORE_PATH)?;
                w.write_str(path)
            })?;
            c.flush(DURING)?;
            copy_nar(&mut c.r, out).map_err(|e| c.nar_err(DURING, e))
        })
    }

    fn nar_err(&self, during: &'static str, e: NarError) -> ServeError {
        match e {
            NarError::Wire(e @ (WireError::Truncated { .. } | WireError::Io { .. })) => {
                self.recv_err(during, e)
            }
            NarError::Sink(source) => ServeError::Sink { host: self.host.clone(), source },
            source => ServeError::BadNar { host: self.host.clone(), during, source },
        }
    }

    /// Sends an export stream (`nix-store --export` format, §6) for the server to import;
    /// returns what it contained. The stream is checked while it is sent, and only up to its
    /// end marker is read from `export`.
    pub fn import_paths(&mut self, export: &mut impl Read) -> Result<Vec<ExportedPath>> {
        const DURING: &str = "ImportPaths";
        self.command(|c| {
            c.send(DURING, |w| w.write_u64(CMD_IMPORT_PATHS))?;
            let entries = copy_export(export, &mut c.w).map_err(|e| match e {
                ExportError::Sink(e) => c.send_err(DURING, e),
                e => ServeError::InvalidExport(e),
            })?;
            c.flush(DURING)?;
            let reply = c.recv(DURING, |r| r.read_u64())?;
            if reply != 1 {
                return Err(ServeError::UnexpectedReply {
                    host: c.host.clone(),
                    during: DURING,
                    expected: 1,
                    got: reply,
                });
            }
            Ok(entries)
        })
    }

    /// Has the server export `paths` (it orders them, dependencies first) and copies the
    /// stream, exactly as received, into `out`. Current Nix servers no longer have this
    /// command (Nix 2.8 and Lix do); [`ServeClient::query_path_infos`] and
    /// [`ServeClient::dump_store_path`] work everywhere. On error, `out` may hold part of the
    /// stream.
    pub fn export_paths<I, S>(&mut self, paths: I, out: &mut impl Write) -> Result<Vec<ExportedPath>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const DURING: &str = "ExportPaths";
        let paths: BTreeSet<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_EXPORT_PATHS)?;
                w.write_u64(0)?; // the old "sign" flag, ignored by servers
                w.write_list(&paths)
            })?;
            c.flush(DURING)?;
            copy_export(&mut c.r, out).map_err(|e| match e {
                ExportError::Sink(source) => ServeError::Sink { host: c.host.clone(), source },
                e if e.is_truncated() => ServeError::Eof { host: c.host.clone(), during: DURING },
                ExportError::Wire(e @ WireError::Io { .. })
                | ExportError::Nar { source: NarError::Wire(e @ WireError::Io { .. }), .. } => {
                    c.recv_err(DURING, e)
                }
                source => ServeError::BadExport { host: c.host.clone(), source },
            })
        })
    }

    /// Uploads one store path (protocol ≥ 2.5). `nar` must yield the path's NAR: exactly
    /// `info.nar_size` bytes, hashing to `info.nar_hash`; it is checked while it is sent.
    /// The path is registered without a registration time of ours (the server stamps its
    /// own) and as not "ultimately trusted", as Nix does when copying between stores.
    pub fn add_to_store_nar(&mut self, path: &str, info: &PathInfo, nar: &mut impl Read) -> Result<()> {
        const DURING: &str = "AddToStoreNar";
        if !self.supports_add_to_store_nar() {
            return Err(ServeError::Unsupported {
                host: self.host.clone(),
                command: DURING,
                version: self.version,
            });
        }
        let invalid = |what: &'static str, value: String| ServeError::InvalidPathInfo {
            path: path.to_string(),
            what,
            value,
        };
        if info.nar_size == 0 {
            return Err(invalid("NAR size", "0".into()));
        }
        let expected_hash =
            hash::parse_sha256(&info.nar_hash).ok_or_else(|| invalid("NAR hash", info.nar_hash.clone()))?;
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_ADD_TO_STORE_NAR)?;
                w.write_str(path)?;
                w.write_str(info.deriver.as_deref().unwrap_or(""))?;
                w.write_str(&hash::base16_encode(&expected_hash))?;
                w.write_list(&info.references)?;
                w.write_u64(0)?; // registrationTime: the server's clock
                w.write_u64(info.nar_size)?;
                w.write_bool(false)?; // ultimate
                w.write_list(&info.sigs)?;
                w.write_str(info.ca.as_deref().unwrap_or(""))
            })?;
            // Never more than narSize bytes: the server reads exactly that many.
            let mut limited = nar.take(info.nar_size);
            let summary = copy_nar(&mut limited, &mut c.w).map_err(|e| match e {
                NarError::Sink(e) => c.send_err(DURING, e),
                source => ServeError::InvalidNar { path: path.to_string(), source },
            })?;
            if summary.size != info.nar_size {
                return Err(ServeError::NarSizeMismatch {
                    path: path.to_string(),
                    expected: info.nar_size,
                    actual: summary.size,
                });
            }
            if summary.sha256 != expected_hash {
                return Err(ServeError::NarHashMismatch {
                    path: path.to_string(),
                    expected: info.nar_hash.clone(),
                    actual: summary.nar_hash(),
                });
            }
            c.flush(DURING)?;
            let reply = c.recv(DURING, |r| r.read_u64())?;
            if reply != 1 {
                return Err(ServeError::UnexpectedReply {
                    host: c.host.clone(),
                    during: DURING,
                    expected: 1,
                    got: reply,
                });
            }
            Ok(())
        })
    }

    /// Builds `drv` (sent whole; the server never needs the `.drv` file) and waits for the
    /// result. `drv_path` names it: the server takes the derivation's name from it. The build
    /// log goes to the server's stderr. A failed build is an `Ok` result with a failure
    /// status; an `Err` means the conversation itself failed.
    pub fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &BasicDerivation,
        options: &BuildOptions,
    ) -> Result<BuildResult> {
        const DURING: &str = "BuildDerivation";
        let version = self.version;
        self.command(|c| {
            c.send(DURING, |w| {
                w.write_u64(CMD_BUILD_DERIVATION)?;
                w.write_str(drv_path)?;
                drv.write_to(w)?;
                options.write_to(w, version)
            })?;
            c.flush(DURING)?;
            c.recv(DURING, |r| BuildResult::read_from(r, version))
        })
    }
}

/// Appends to `buf` until it holds `limit` bytes or the input ends.
fn read_up_to(r: &mut impl Read, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let mut chunk = [0u8; 512];
    while buf.len() < limit {
        let want = (limit - buf.len()).min(chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
