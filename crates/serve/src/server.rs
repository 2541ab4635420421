//! The server side: [`ServeServer`] is what `nix-store --serve --write` is to Nix's build hook,
//! over any reader/writer pair (normally stdin and stdout).
//!
//! It decodes requests and encodes replies; serving them (a store, a build) is the caller's
//! part. The loop is:
//!
//! ```text
//! let mut server = ServeServer::handshake(stdin, stdout)?;
//! while let Some(request) = server.next_request()? {
//!     match request { … => server.reply_…(…)?, }
//! }
//! ```
//!
//! Every request gets exactly one reply before the next is read ([`ServerError::NotAnswered`]
//! otherwise), and every reply is flushed. The protocol has no error frames: when a request
//! cannot be served, say why on stderr and end the session (drop the server, exit); the
//! client reports the connection closing. After any error in the middle of a request or a
//! reply the connection is out of step, and further calls return [`ServerError::Poisoned`].

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};

use nwh_nar::export_reader::export_io_error;
use nwh_nar::{copy_export, copy_nar, hash, ExportError, ExportFramer, ExportedPath, NarError, NarSummary};
use nwh_wire::{Limits, Reader, WireError, Writer};

use crate::error::{is_broken_pipe, ServerError, ServerResult as Result};
use crate::messages::{BuildPathsResult, BuildResult, PathInfo};
use crate::protocol::{major, Command, SERVER_VERSION, SERVE_MAGIC_1, SERVE_MAGIC_2};
use crate::request::{RequestError, ServeRequest};

/// Bounds on what a client may send. Strings may be long: a derivation's environment can hold
/// big values (structured attributes travel as one `__json` string). The reader allocates as
/// bytes arrive, so a lying length costs nothing.
const SERVER_LIMITS: Limits = Limits { max_string_len: 64 << 20, max_list_len: 1 << 20 };

const HANDSHAKE: &str = "the handshake";

/// A payload that follows a request and has not been read to its end.
enum Payload {
    None,
    /// `AddToStoreNar`: `left` of `info.nar_size` bytes still to come.
    Nar {
        path: String,
        nar_size: u64,
        nar_hash: String,
        left: u64,
    },
    /// `ImportPaths`: an export stream, as far as it has been read.
    Export(Box<ExportFramer>),
}

/// One connection from a serve-protocol client, after a successful handshake. Both directions
/// are buffered here; pass the raw streams.
pub struct ServeServer<R: Read, W: Write> {
    r: Reader<BufReader<R>>,
    w: Writer<BufWriter<W>>,
    client_version: u64,
    version: u64,
    /// The request read and not answered yet.
    awaiting: Option<Command>,
    payload: Payload,
    poisoned: bool,
}

impl<R: Read, W: Write> fmt::Debug for ServeServer<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeServer")
            .field("client_version", &format_args!("{:#x}", self.client_version))
            .field("version", &format_args!("{:#x}", self.version))
            .field("awaiting", &self.awaiting)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn recv_err(during: &'static str, e: WireError) -> ServerError {
    match e {
        WireError::Truncated { .. } => ServerError::Eof { during },
        WireError::Io { source, .. } if is_broken_pipe(&source) => ServerError::Eof { during },
        WireError::Io { source, .. } => ServerError::Io { during, source },
        source => ServerError::Wire { during, source },
    }
}

fn io_err(during: &'static str, e: io::Error) -> ServerError {
    if is_broken_pipe(&e) {
        ServerError::Eof { during }
    } else {
        ServerError::Io { during, source: e }
    }
}

fn request_err(command: Command, e: RequestError) -> ServerError {
    match e {
        RequestError::Wire(e) => recv_err(command.name(), e),
        source => ServerError::Refused { command, source },
    }
}

/// An error of reading the client's export stream.
fn export_err(e: ExportError) -> ServerError {
    const DURING: &str = "ImportPaths";
    match e {
        ExportError::Sink(source) => ServerError::Sink(source),
        e if e.is_truncated() => ServerError::Eof { during: DURING },
        ExportError::Wire(e @ WireError::Io { .. })
        | ExportError::Nar { source: NarError::Wire(e @ WireError::Io { .. }), .. } => recv_err(DURING, e),
        e => ServerError::BadExport(e),
    }
}

impl<R: Read, W: Write> ServeServer<R, W> {
    /// Takes the client's greeting on `r`/`w`: its magic, then our answer (magic and
    /// [`SERVER_VERSION`], flushed), then its version. The lower of the two versions is used.
    /// A client of another major version than 2 is refused, as is anything that does not
    /// start with the serve protocol's magic.
    pub fn handshake(r: R, w: W) -> Result<Self> {
        let mut r = Reader::with_limits(BufReader::new(r), SERVER_LIMITS);
        let mut w = Writer::new(BufWriter::new(w));
        let magic = r.read_u64().map_err(|e| recv_err(HANDSHAKE, e))?;
        if magic != SERVE_MAGIC_1 {
            return Err(ServerError::ProtocolMismatch { got: magic });
        }
        (|| {
            w.write_u64(SERVE_MAGIC_2)?;
            w.write_u64(SERVER_VERSION)?;
            w.flush()
        })()
        .map_err(|e| io_err(HANDSHAKE, e))?;
        let client_version = r.read_u64().map_err(|e| recv_err(HANDSHAKE, e))?;
        if major(client_version) != 2 {
            return Err(ServerError::UnsupportedVersion { version: client_version });
        }
        Ok(ServeServer {
            r,
            w,
            client_version,
            version: client_version.min(SERVER_VERSION),
            awaiting: None,
            payload: Payload::None,
            poisoned: false,
        })
    }

    /// The version the client offered.
    pub fn client_version(&self) -> u64 {
        self.client_version
    }

    /// The version both sides use: the lower of the client's and ours.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The next request, or `None` when the client has closed the connection between two
    /// requests (the normal end of a session). An unknown command code is an error
    /// ([`ServerError::UnknownCommand`]): its arguments cannot be skipped.
    pub fn next_request(&mut self) -> Result<Option<ServeRequest>> {
        if self.poisoned {
            return Err(ServerError::Poisoned);
        }
        if let Some(command) = self.awaiting {
            return Err(ServerError::NotAnswered { command });
        }
        let code = match self.r.read_u64() {
            Ok(code) => code,
            Err(e) if e.is_clean_eof() => return Ok(None),
            Err(e) => return Err(recv_err("a command code", e)),
        };
        self.poisoned = true;
        let command = Command::from_code(code).ok_or(ServerError::UnknownCommand { code })?;
        let request = ServeRequest::read_args(command, &mut self.r, self.version)
            .map_err(|e| request_err(command, e))?;
        self.payload = match &request {
            ServeRequest::ImportPaths => Payload::Export(Box::default()),
            ServeRequest::AddToStoreNar { path, info, .. } => Payload::Nar {
                path: path.clone(),
                nar_size: info.nar_size,
                nar_hash: info.nar_hash.clone(),
                left: info.nar_size,
            },
            _ => Payload::None,
        };
        self.awaiting = Some(command);
        self.poisoned = false;
        Ok(Some(request))
    }

    /// The same as [`ServeServer::next_request`].
    pub fn next_command(&mut self) -> Result<Option<ServeRequest>> {
        self.next_request()
    }

    /// Runs a reply to one of `commands`: checks that it answers the request read last,
    /// flushes, and marks the request answered. An error on the way poisons the connection.
    fn answer<T>(
        &mut self,
        reply: &'static str,
        commands: &[Command],
        f: impl FnOnce(&mut Self, Command) -> Result<T>,
    ) -> Result<T> {
        let command = self.check(reply, commands)?;
        self.poisoned = true;
        let value = f(self, command)?;
        self.w.flush().map_err(|e| io_err(command.name(), e))?;
        self.awaiting = None;
        self.poisoned = false;
        Ok(value)
    }

    fn check(&self, reply: &'static str, commands: &[Command]) -> Result<Command> {
        if self.poisoned {
            return Err(ServerError::Poisoned);
        }
        match self.awaiting {
            None => Err(ServerError::NoRequest { reply }),
            Some(command) if commands.contains(&command) => Ok(command),
            Some(command) => Err(ServerError::WrongReply { reply, command }),
        }
    }

    fn reply_set<I, S>(&mut self, reply: &'static str, command: Command, paths: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let paths: Vec<S> = paths.into_iter().collect();
        let sorted: BTreeSet<&str> = paths.iter().map(|p| p.as_ref()).collect();
        self.answer(reply, &[command], |s, c| s.w.write_list(&sorted).map_err(|e| io_err(c.name(), e)))
    }

    /// Answers `QueryValidPaths`: which of the asked paths are valid (sent sorted, as a set).
    pub fn reply_valid_paths<I, S>(&mut self, paths: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.reply_set("reply_valid_paths", Command::QueryValidPaths, paths)
    }

    /// Answers `QueryClosure` with the closure (sent sorted, as a set).
    pub fn reply_closure<I, S>(&mut self, paths: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.reply_set("reply_closure", Command::QueryClosure, paths)
    }

    /// Answers `QueryPathInfos`: path and info of each asked path that is valid, in the order
    /// given (Nix's servers go by the sorted request), in the negotiated version's encoding.
    pub fn reply_path_infos(&mut self, infos: &[(String, PathInfo)]) -> Result<()> {
        let version = self.version;
        self.answer("reply_path_infos", &[Command::QueryPathInfos], |s, c| {
            (|| {
                for (path, info) in infos {
                    s.w.write_str(path)?;
                    info.write_to(&mut s.w, version)?;
                }
                s.w.write_str("")
            })()
            .map_err(|e| io_err(c.name(), e))
        })
    }

    /// Answers `DumpStorePath` with the NAR read from `nar`, checked while it is sent: exactly
    /// one NAR is read, nothing after it. Returns its size and hash. If it turns out invalid
    /// part of it has gone out; end the session. Wrap an unbuffered `nar` in a `BufReader`.
    pub fn reply_nar(&mut self, nar: &mut impl Read) -> Result<NarSummary> {
        self.answer("reply_nar", &[Command::DumpStorePath], |s, c| {
            copy_nar(nar, &mut s.w).map_err(|e| match e {
                NarError::Sink(e) => io_err(c.name(), e),
                source => ServerError::InvalidNar { during: c.name(), source },
            })
        })
    }

    /// Answers `DumpStorePath` with a NAR written into the returned sink, e.g. by
    /// [`crate::ServeClient::dump_store_path`] (which checks it while it copies); the bytes are
    /// passed on as they are. [`NarSink::finish`] completes the reply.
    pub fn nar_sink(&mut self) -> NarSink<'_, R, W> {
        let refused = self.check("nar_sink", &[Command::DumpStorePath]).err();
        if refused.is_none() {
            self.poisoned = true;
        }
        NarSink { server: self, refused, written: 0, finished: false }
    }

    /// Answers `ExportPaths` with the export stream read from `export`, checked while it is
    /// sent; returns what it held.
    pub fn reply_export(&mut self, export: &mut impl Read) -> Result<Vec<ExportedPath>> {
        self.answer("reply_export", &[Command::ExportPaths], |s, c| {
            copy_export(export, &mut s.w).map_err(|e| match e {
                ExportError::Sink(e) => io_err(c.name(), e),
                e => ServerError::InvalidExport(e),
            })
        })
    }

    /// Answers `BuildPaths`.
    pub fn reply_build_paths(&mut self, result: &BuildPathsResult) -> Result<()> {
        self.answer("reply_build_paths", &[Command::BuildPaths], |s, c| {
            result.write_to(&mut s.w).map_err(|e| io_err(c.name(), e))
        })
    }

    /// Answers `BuildDerivation`, in the negotiated version's encoding.
    pub fn reply_build_result(&mut self, result: &BuildResult) -> Result<()> {
        let version = self.version;
        self.answer("reply_build_result", &[Command::BuildDerivation], |s, c| {
            result.write_to(&mut s.w, version).map_err(|e| io_err(c.name(), e))
        })
    }

    /// Answers `ImportPaths` or `AddToStoreNar` with the `1` that says the paths were added.
    /// Whatever of the payload has not been read is read first and dropped, as Nix's server
    /// does (an export stream is checked on the way; a NAR is not).
    pub fn reply_ok(&mut self) -> Result<()> {
        self.answer("reply_ok", &[Command::ImportPaths, Command::AddToStoreNar], |s, c| {
            match &mut s.payload {
                Payload::None => {}
                Payload::Nar { left, .. } => {
                    let want = *left;
                    let copied = io::copy(&mut (&mut s.r).take(want), &mut io::sink())
                        .map_err(|e| io_err(c.name(), e))?;
                    *left -= copied;
                    if copied < want {
                        return Err(ServerError::Eof { during: c.name() });
                    }
                }
                Payload::Export(framer) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    while framer.read(&mut s.r, &mut buf).map_err(export_err)? > 0 {}
                }
            }
            s.payload = Payload::None;
            s.w.write_u64(1).map_err(|e| io_err(c.name(), e))
        })
    }

    fn check_payload(&self, reader: &'static str, command: Command) -> Result<()> {
        if self.poisoned {
            return Err(ServerError::Poisoned);
        }
        match self.awaiting {
            Some(c) if c == command => Ok(()),
            Some(c) => Err(ServerError::WrongReply { reply: reader, command: c }),
            None => Err(ServerError::NoRequest { reply: reader }),
        }
    }

    /// The NAR after `AddToStoreNar`, as a reader of exactly the `nar_size` bytes the path
    /// info announced (unchecked: [`ServeServer::read_nar`] checks). Then [`ServeServer::reply_ok`].
    pub fn nar_reader(&mut self) -> Result<NarPayload<'_, R, W>> {
        self.check_payload("nar_reader", Command::AddToStoreNar)?;
        Ok(NarPayload { server: self })
    }

    /// Copies the NAR after `AddToStoreNar` into `out`, checking it: a valid NAR of exactly
    /// the announced size and hash. Then [`ServeServer::reply_ok`]. On error, `out` may hold
    /// part of it.
    pub fn read_nar(&mut self, out: &mut impl Write) -> Result<NarSummary> {
        const DURING: &str = "AddToStoreNar";
        self.check_payload("read_nar", Command::AddToStoreNar)?;
        let Payload::Nar { path, nar_size, nar_hash, left } = &mut self.payload else {
            unreachable!("AddToStoreNar always has a NAR payload")
        };
        if *left != *nar_size {
            return Err(ServerError::PayloadStarted { command: Command::AddToStoreNar });
        }
        self.poisoned = true;
        let mut limited = (&mut self.r).take(*left);
        let result = copy_nar(&mut limited, out);
        let rest = limited.limit();
        *left = rest;
        let summary = result.map_err(|e| match e {
            NarError::Sink(source) => ServerError::Sink(source),
            e if e.is_truncated() && rest == 0 => {
                ServerError::NarTooLong { path: path.clone(), nar_size: *nar_size }
            }
            NarError::Wire(e @ (WireError::Truncated { .. } | WireError::Io { .. })) => recv_err(DURING, e),
            source => ServerError::BadNar { path: path.clone(), source },
        })?;
        if summary.size != *nar_size {
            return Err(ServerError::NarSizeMismatch {
                path: path.clone(),
                expected: *nar_size,
                actual: summary.size,
            });
        }
        // Checked to parse when the request was read.
        if hash::parse_sha256(nar_hash) != Some(summary.sha256) {
            return Err(ServerError::NarHashMismatch {
                path: path.clone(),
                expected: nar_hash.clone(),
                actual: summary.nar_hash(),
            });
        }
        self.poisoned = false;
        Ok(summary)
    }

    /// The export stream after `ImportPaths`, as a reader that stops at the stream's end and
    /// checks it on the way (see [`nwh_nar::ExportReader`]). Then [`ServeServer::reply_ok`].
    pub fn export_reader(&mut self) -> Result<ExportPayload<'_, R, W>> {
        self.check_payload("export_reader", Command::ImportPaths)?;
        Ok(ExportPayload { server: self })
    }

    /// Copies the export stream after `ImportPaths` into `out`, checking it, and returns what
    /// it held. Then [`ServeServer::reply_ok`]. On error, `out` may hold part of it.
    pub fn read_export(&mut self, out: &mut impl Write) -> Result<Vec<ExportedPath>> {
        self.check_payload("read_export", Command::ImportPaths)?;
        let Payload::Export(framer) = &self.payload else {
            unreachable!("ImportPaths always has an export payload")
        };
        if framer.position() != 0 {
            return Err(ServerError::PayloadStarted { command: Command::ImportPaths });
        }
        self.poisoned = true;
        let entries = copy_export(&mut self.r, out).map_err(export_err)?;
        self.payload = Payload::None;
        self.poisoned = false;
        Ok(entries)
    }
}

/// The reply to `DumpStorePath` being written; see [`ServeServer::nar_sink`].
pub struct NarSink<'a, R: Read, W: Write> {
    server: &'a mut ServeServer<R, W>,
    /// Why this reply may not be written (it answers nothing, or the connection is broken).
    refused: Option<ServerError>,
    written: u64,
    finished: bool,
}

impl<R: Read, W: Write> fmt::Debug for NarSink<'_, R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarSink").field("refused", &self.refused).field("written", &self.written).finish()
    }
}

impl<R: Read, W: Write> NarSink<'_, R, W> {
    /// Flushes the NAR to the client and completes the reply.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        if let Some(e) = self.refused.take() {
            return Err(e);
        }
        self.server.w.flush().map_err(|e| io_err(Command::DumpStorePath.name(), e))?;
        self.server.awaiting = None;
        self.server.poisoned = false;
        Ok(())
    }
}

impl<R: Read, W: Write> Write for NarSink<'_, R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.refused {
            return Err(io::Error::other(e.to_string()));
        }
        let n = self.server.w.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.refused {
            return Err(io::Error::other(e.to_string()));
        }
        self.server.w.flush()
    }
}

impl<R: Read, W: Write> Drop for NarSink<'_, R, W> {
    fn drop(&mut self) {
        // Dropped unfinished: nothing sent leaves the request open; a part of a NAR leaves
        // the connection poisoned.
        if !self.finished && self.refused.is_none() && self.written == 0 {
            self.server.poisoned = false;
        }
    }
}

/// The NAR after `AddToStoreNar`; see [`ServeServer::nar_reader`].
pub struct NarPayload<'a, R: Read, W: Write> {
    server: &'a mut ServeServer<R, W>,
}

impl<R: Read, W: Write> fmt::Debug for NarPayload<'_, R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarPayload").field("remaining", &self.remaining()).finish()
    }
}

impl<R: Read, W: Write> NarPayload<'_, R, W> {
    /// Bytes of the NAR not read yet.
    pub fn remaining(&self) -> u64 {
        match self.server.payload {
            Payload::Nar { left, .. } => left,
            _ => 0,
        }
    }
}

impl<R: Read, W: Write> Read for NarPayload<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let server = &mut *self.server;
        let Payload::Nar { left, .. } = &mut server.payload else { return Ok(0) };
        if *left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (*left).min(buf.len() as u64) as usize;
        match server.r.read(&mut buf[..want]) {
            Ok(0) => {
                server.poisoned = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection inside a NAR",
                ))
            }
            Ok(n) => {
                *left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    server.poisoned = true;
                }
                Err(e)
            }
        }
    }
}

/// The export stream after `ImportPaths`; see [`ServeServer::export_reader`].
pub struct ExportPayload<'a, R: Read, W: Write> {
    server: &'a mut ServeServer<R, W>,
}

impl<R: Read, W: Write> fmt::Debug for ExportPayload<'_, R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportPayload").field("entries", &self.entries().len()).finish()
    }
}

impl<R: Read, W: Write> ExportPayload<'_, R, W> {
    /// The paths read completely so far.
    pub fn entries(&self) -> &[ExportedPath] {
        match &self.server.payload {
            Payload::Export(framer) => framer.entries(),
            _ => &[],
        }
    }
}

impl<R: Read, W: Write> Read for ExportPayload<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let server = &mut *self.server;
        let Payload::Export(framer) = &mut server.payload else { return Ok(0) };
        framer.read(&mut server.r, buf).map_err(|e| {
            server.poisoned = true;
            export_io_error(e)
        })
    }
}
