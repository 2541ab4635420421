//! The client side: [`ServeClient`] speaks to `nix-store --serve` (or [`crate::ServeServer`])
//! over any reader/writer pair, typically an ssh child's stdout/stdin.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};

use nwh_drv::BasicDerivation;
use nwh_nar::{copy_export, copy_nar, hash, ExportError, ExportedPath, NarError, NarSummary};
use nwh_wire::greeting::read_up_to;
use nwh_wire::{Reader, WireError, Writer};

use crate::error::{is_broken_pipe, printable_greeting, Result, ServeError};
use crate::messages::{BuildOptions, BuildPathsResult, BuildResult, PathInfo};
use crate::protocol::{major, minor, CLIENT_VERSION, SERVE_MAGIC_1, SERVE_MAGIC_2};
use crate::request::ServeRequest;

/// How much of an unexpected greeting is kept for the error message.
const MAX_GREETING: usize = 4096;

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
    /// Uploads sent whose replies have not been read yet ([`ServeClient::send_nar`]).
    unanswered: u64,
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
    /// the error, as Nix does; the message shows its first 512 characters. A server that
    /// neither closes nor sends anything more then blocks this call, so run it with a deadline of your own (e.g. ssh's `ConnectTimeout` plus a
    /// watchdog that kills ssh).
    pub fn handshake(host: impl Into<String>, r: R, w: W) -> Result<Self> {
        Self::handshake_offering(host, r, w, CLIENT_VERSION)
    }

    /// [`ServeClient::handshake`], offering protocol `version` instead of [`CLIENT_VERSION`]
    /// (the lower of it and the server's is used). Only for tests: below 2.6, Nix 2.4–2.10
    /// servers answer `BuildDerivation` in an encoding the client then does not expect.
    pub fn handshake_offering(host: impl Into<String>, r: R, w: W, version: u64) -> Result<Self> {
        let host = host.into();
        let mut w = Writer::new(BufWriter::new(w));
        let mut r = Reader::new(BufReader::new(r));
        let sent = (|| {
            w.write_u64(SERVE_MAGIC_1)?;
            w.write_u64(version)?;
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
        let version = remote_version.min(version);
        Ok(ServeClient { host, r, w, remote_version, version, poisoned: false, unanswered: 0 })
    }

    /// A connection whose handshake another [`ServeClient`] made (on other handles to the
    /// same pipes), for a session that outlives the process that opened it: `remote_version`
    /// is what the server announced then.
    pub fn resume(host: impl Into<String>, r: R, w: W, remote_version: u64) -> Self {
        ServeClient {
            host: host.into(),
            r: Reader::new(BufReader::new(r)),
            w: Writer::new(BufWriter::new(w)),
            remote_version,
            version: remote_version.min(CLIENT_VERSION),
            poisoned: false,
            unanswered: 0,
        }
    }

    /// Every command so far ended where the protocol expects, so the next one can be sent
    /// (another user of the session included).
    pub fn is_clean(&self) -> bool {
        !self.poisoned
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The version the server announced.
    pub fn remote_version(&self) -> u64 {
        self.remote_version
    }

    /// The version both sides use: the lower of the one offered ([`CLIENT_VERSION`]) and the
    /// server's.
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

    fn unasked(&self, during: &'static str, path: &str) -> ServeError {
        ServeError::Unasked { host: self.host.clone(), during, path: path.to_string() }
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
        if self.unanswered > 0 {
            self.wait_for_uploads()?;
        }
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

    fn send_request(&mut self, request: &ServeRequest) -> Result<()> {
        let version = self.version;
        self.send(request.name(), |w| request.write_to(w, version))
    }

    /// The `1` with which the server says a transfer to it is done.
    fn expect_done(&mut self, during: &'static str) -> Result<()> {
        let reply = self.recv(during, |r| r.read_u64())?;
        if reply != 1 {
            return Err(ServeError::UnexpectedReply {
                host: self.host.clone(),
                during,
                expected: 1,
                got: reply,
            });
        }
        Ok(())
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
            c.send_request(&ServeRequest::QueryValidPaths { lock, substitute, paths: paths.clone() })?;
            c.flush(DURING)?;
            let valid = c.recv(DURING, |r| r.read_string_set())?;
            match valid.difference(&paths).next() {
                Some(path) => Err(c.unasked(DURING, path)),
                None => Ok(valid),
            }
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
            c.send_request(&ServeRequest::QueryPathInfos { paths: paths.clone() })?;
            c.flush(DURING)?;
            // Each entry must answer a path asked for, once: this also bounds the list,
            // which has no count of its own, by the question.
            let mut unanswered = paths;
            let mut infos = Vec::new();
            loop {
                let path = c.recv(DURING, |r| r.read_string())?;
                if path.is_empty() {
                    return Ok(infos);
                }
                if !unanswered.remove(&path) {
                    return Err(c.unasked(DURING, &path));
                }
                let info = c.recv(DURING, |r| PathInfo::read_from(r, version))?;
                infos.push((path, info));
            }
        })
    }

    /// Streams the NAR of `path` into `out`; returns its size and hash. On error, `out` may
    /// hold part of the NAR. A path the server does not have ends the session
    /// ([`ServeError::Eof`]), so ask [`ServeClient::query_valid_paths`] first.
    pub fn dump_store_path(&mut self, path: &str, out: &mut impl Write) -> Result<NarSummary> {
        const DURING: &str = "DumpStorePath";
        self.command(|c| {
            c.send_request(&ServeRequest::DumpStorePath { path: path.to_string() })?;
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

    /// Sends an export stream (`nix-store --export` format, docs/nar.md §4) for the server to import;
    /// returns what it contained. The stream is checked while it is sent, and only up to its
    /// end marker is read from `export`.
    pub fn import_paths(&mut self, export: &mut impl Read) -> Result<Vec<ExportedPath>> {
        const DURING: &str = "ImportPaths";
        self.command(|c| {
            c.send_request(&ServeRequest::ImportPaths)?;
            let entries = copy_export(export, &mut c.w).map_err(|e| match e {
                ExportError::Sink(e) => c.send_err(DURING, e),
                e => ServeError::InvalidExport(e),
            })?;
            c.flush(DURING)?;
            c.expect_done(DURING)?;
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
            c.send_request(&ServeRequest::ExportPaths { paths })?;
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
        self.send_nar(path, info, nar)?;
        self.wait_for_uploads()
    }

    /// [`ServeClient::add_to_store_nar`] without waiting for the server's reply: the server
    /// stores this path while the next one is on its way (it takes commands in order, so
    /// send references first). [`ServeClient::wait_for_uploads`] reads the replies; so does
    /// the next other command.
    pub fn send_nar(&mut self, path: &str, info: &PathInfo, nar: &mut impl Read) -> Result<()> {
        let (request, expected_hash) = self.add_to_store_nar_request(path, info)?;
        self.poisoned = true;
        let sent = self.send_checked_nar(&request, path, info, &expected_hash, nar);
        match sent {
            Ok(()) => self.unanswered += 1,
            Err(_) => self.unanswered = 0,
        }
        sent
    }

    /// The `AddToStoreNar` request for `path` and the NAR hash it names, once the path info
    /// and the connection allow it.
    fn add_to_store_nar_request(&self, path: &str, info: &PathInfo) -> Result<(ServeRequest, [u8; 32])> {
        if !self.supports_add_to_store_nar() {
            return Err(ServeError::Unsupported {
                host: self.host.clone(),
                command: "AddToStoreNar",
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
        // Uploads waiting for their replies leave the connection "poisoned" (unusable for
        // anything else) until they are read; a failed one leaves it so for good.
        if self.poisoned && self.unanswered == 0 {
            return Err(ServeError::Poisoned { host: self.host.clone() });
        }
        let request = ServeRequest::AddToStoreNar {
            path: path.to_string(),
            info: PathInfo { nar_hash: hash::base16_encode(&expected_hash), ..info.clone() },
            registration_time: 0, // the server's clock
            ultimate: false,
        };
        Ok((request, expected_hash))
    }

    /// [`ServeClient::send_nar`] for a NAR made here: `write` writes it straight into the
    /// connection (no pipe, no thread, no second pass over the bytes). Only its size is checked
    /// on this side: never more than `info.nar_size` bytes go out, and fewer is an error. Its
    /// hash is checked where it matters, by the builder's store, which refuses a NAR whose hash
    /// is not the path info's (as Nix does with every NAR it imports).
    pub fn send_nar_written(
        &mut self,
        path: &str,
        info: &PathInfo,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        const DURING: &str = "AddToStoreNar";
        let (request, _) = self.add_to_store_nar_request(path, info)?;
        self.poisoned = true;
        let sent = self.send_request(&request).and_then(|()| {
            let mut bounded =
                Bounded { inner: &mut self.w, left: info.nar_size, sink: None, too_long: false };
            let written = write(&mut bounded);
            let (left, sink, too_long) = (bounded.left, bounded.sink.take(), bounded.too_long);
            match written {
                Err(_) if too_long => {
                    Err(ServeError::NarTooLong { path: path.to_string(), nar_size: info.nar_size })
                }
                Err(e) => Err(match sink {
                    Some(e) => self.send_err(DURING, e),
                    None => ServeError::NarWriter { path: path.to_string(), source: e },
                }),
                Ok(()) if left > 0 => Err(ServeError::NarSizeMismatch {
                    path: path.to_string(),
                    expected: info.nar_size,
                    actual: info.nar_size - left,
                }),
                Ok(()) => Ok(()),
            }
        });
        match sent {
            Ok(()) => self.unanswered += 1,
            Err(_) => self.unanswered = 0,
        }
        sent
    }

    fn send_checked_nar(
        &mut self,
        request: &ServeRequest,
        path: &str,
        info: &PathInfo,
        expected_hash: &[u8; 32],
        nar: &mut impl Read,
    ) -> Result<()> {
        const DURING: &str = "AddToStoreNar";
        self.send_request(request)?;
        // Never more than narSize bytes: the server reads exactly that many.
        let mut limited = nar.take(info.nar_size);
        let summary = copy_nar(&mut limited, &mut self.w).map_err(|e| match e {
            NarError::Sink(e) => self.send_err(DURING, e),
            source => ServeError::InvalidNar { path: path.to_string(), source },
        })?;
        if summary.size != info.nar_size {
            return Err(ServeError::NarSizeMismatch {
                path: path.to_string(),
                expected: info.nar_size,
                actual: summary.size,
            });
        }
        if summary.sha256 != *expected_hash {
            return Err(ServeError::NarHashMismatch {
                path: path.to_string(),
                expected: info.nar_hash.clone(),
                actual: summary.nar_hash(),
            });
        }
        Ok(())
    }

    /// Reads the server's reply to every upload sent with [`ServeClient::send_nar`].
    pub fn wait_for_uploads(&mut self) -> Result<()> {
        const DURING: &str = "AddToStoreNar";
        if self.unanswered == 0 {
            return Ok(());
        }
        let answered = (|| {
            self.flush(DURING)?;
            while self.unanswered > 0 {
                self.expect_done(DURING)?;
                self.unanswered -= 1;
            }
            Ok(())
        })();
        match answered {
            Ok(()) => self.poisoned = false,
            Err(_) => self.unanswered = 0,
        }
        answered
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
        let request = ServeRequest::BuildDerivation {
            drv_path: drv_path.to_string(),
            drv: drv.clone(),
            options: *options,
        };
        self.command(|c| {
            c.send_request(&request)?;
            c.flush(DURING)?;
            c.recv(DURING, |r| BuildResult::read_from(r, version))
        })
    }

    /// Builds (or substitutes) `paths` on the server: store paths, or `drv!out1,out2` for
    /// outputs of a derivation the server has. A failure is an `Ok` result with a non-zero
    /// status; an `Err` means the conversation itself failed.
    pub fn build_paths<I, S>(&mut self, paths: I, options: &BuildOptions) -> Result<BuildPathsResult>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const DURING: &str = "BuildPaths";
        let paths: Vec<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
        self.command(|c| {
            c.send_request(&ServeRequest::BuildPaths { paths, options: *options })?;
            c.flush(DURING)?;
            c.recv(DURING, BuildPathsResult::read_from)
        })
    }

    /// The closure of `paths` on the server (with `include_outputs`, derivations' outputs and
    /// their closures too).
    pub fn query_closure<I, S>(&mut self, paths: I, include_outputs: bool) -> Result<BTreeSet<String>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        const DURING: &str = "QueryClosure";
        let paths: BTreeSet<String> = paths.into_iter().map(|p| p.as_ref().to_string()).collect();
        self.command(|c| {
            c.send_request(&ServeRequest::QueryClosure { include_outputs, paths })?;
            c.flush(DURING)?;
            c.recv(DURING, |r| r.read_string_set())
        })
    }
}

/// The connection as [`ServeClient::send_nar_written`] lends it to the NAR's writer: it lets
/// at most `left` bytes through and keeps the connection's own error, so that a failure is
/// told apart from the writer's.
struct Bounded<'a, W: Write> {
    inner: &'a mut W,
    left: u64,
    sink: Option<io::Error>,
    too_long: bool,
}

impl<W: Write> Bounded<'_, W> {
    fn sink_failed(&mut self, e: io::Error) -> io::Error {
        let kind = e.kind();
        self.sink = Some(e);
        io::Error::new(kind, "the connection failed")
    }
}

impl<W: Write> Write for Bounded<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.too_long = true;
            return Err(io::Error::other("the NAR goes on past its size"));
        }
        match self.inner.write(buf) {
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => Err(self.sink_failed(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.sink_failed(e))
    }
}
