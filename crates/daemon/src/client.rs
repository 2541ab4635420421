//! The client side: [`DaemonClient`] speaks to `nix-daemon --stdio` over any reader/writer
//! pair, typically an ssh child's stdout/stdin.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};

use nwh_drv::BasicDerivation;
use nwh_nar::{copy_nar, hash, NarError, NarSummary};
use nwh_wire::greeting::read_up_to;
use nwh_wire::{Limits, Reader, WireError, Writer};

use crate::error::{is_broken_pipe, printable_greeting, DaemonError, Result};
use crate::framed::FramedWriter;
use crate::messages::{
    read_trust, BuildMode, BuildResult, DecodeError, Frame, LogMessage, Options, PathInfo, Realisation,
    RemoteError,
};
use crate::protocol::{
    has, major, Op, MINIMUM_VERSION, PROTOCOL_VERSION, STDERR_ERROR, WORKER_MAGIC_1, WORKER_MAGIC_2,
};

/// How much of an unexpected greeting is kept for the error message.
const MAX_GREETING: usize = 4096;

const HANDSHAKE: &str = "the handshake";

/// One store path to upload with [`DaemonClient::add_multiple_to_store`]: its path info and
/// a reader that yields its NAR.
pub struct Upload<'a> {
    pub path: String,
    pub info: PathInfo,
    pub nar: &'a mut dyn Read,
}

/// A connection to `nix-daemon` after a successful handshake.
///
/// Both directions are buffered here; pass the raw pipes. Every operation flushes before it
/// waits for the daemon. Every operation takes `log`, which receives each log frame the
/// daemon sends while it works (build output included), in order, as it arrives.
///
/// The daemon may log while a NAR is being uploaded; Nix's client reads those frames in
/// between, this one only after the upload. A daemon logs next to nothing then, but one
/// that wrote more than a pipe buffer's worth at that point would stall both sides.
pub struct DaemonClient<R: Read, W: Write> {
    host: String,
    r: Reader<BufReader<R>>,
    w: Writer<BufWriter<W>>,
    remote_version: u64,
    version: u64,
    features: BTreeSet<String>,
    daemon_version: Option<String>,
    trusted: Option<bool>,
    /// An operation is under way or ended half-way.
    poisoned: bool,
    /// The connection is out of step for good (set where an error frame alone would leave
    /// it usable).
    broken: bool,
}

impl<R: Read, W: Write> fmt::Debug for DaemonClient<R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonClient")
            .field("host", &self.host)
            .field("remote_version", &format_args!("{:#x}", self.remote_version))
            .field("version", &format_args!("{:#x}", self.version))
            .field("daemon_version", &self.daemon_version)
            .field("trusted", &self.trusted)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<R: Read, W: Write> DaemonClient<R, W> {
    /// Greets the daemon on `r`/`w`; log frames sent during the greeting (start-up warnings)
    /// are dropped. `host` is only used in messages.
    pub fn handshake(host: impl Into<String>, r: R, w: W) -> Result<Self> {
        Self::handshake_logged(host, r, w, &mut |_| {})
    }

    /// Greets the daemon, passing the log frames it sends at the end of the greeting (e.g.
    /// warnings about its configuration) to `log`.
    ///
    /// If the greeting is wrong, the writer is dropped (closing the pipe makes the remote side
    /// exit) and what came until the connection closed (at most 4 KiB) goes into the error,
    /// as Nix does. A remote side that neither closes nor sends anything blocks this call, so
    /// run it with a deadline of your own.
    pub fn handshake_logged(
        host: impl Into<String>,
        r: R,
        w: W,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<Self> {
        let host = host.into();
        let mut w = Writer::new(BufWriter::new(w));
        let mut r = Reader::new(BufReader::new(r));

        if let Err(e) = send_magic(&mut w) {
            return Err(connection_failure(host, e));
        }
        let mut greeting = Vec::with_capacity(8);
        if let Err(e) = read_up_to(&mut r, &mut greeting, 8) {
            return Err(connection_failure(host, e));
        }
        if greeting.is_empty() {
            return Err(DaemonError::CannotConnect { host });
        }
        if greeting.len() < 8 || u64::from_le_bytes(greeting[..8].try_into().unwrap()) != WORKER_MAGIC_2 {
            drop(w);
            // Whatever the read of the rest brings, the message shows what we have.
            let _ = read_up_to(&mut r, &mut greeting, MAX_GREETING);
            return Err(DaemonError::ProtocolMismatch { host, got: printable_greeting(&greeting) });
        }
        let remote_version = match r.read_u64() {
            Ok(v) => v,
            Err(WireError::Truncated { .. }) => return Err(DaemonError::CannotConnect { host }),
            Err(e) => return Err(DaemonError::BadReply { host, during: HANDSHAKE, source: e.into() }),
        };
        if major(remote_version) != 1 || remote_version < MINIMUM_VERSION {
            return Err(DaemonError::UnsupportedVersion { host, version: remote_version });
        }

        let mut client = DaemonClient {
            host,
            r,
            w,
            remote_version,
            version: remote_version.min(PROTOCOL_VERSION),
            features: BTreeSet::new(),
            daemon_version: None,
            trusted: None,
            poisoned: false,
            broken: false,
        };
        client.negotiate(log)?;
        Ok(client)
    }

    /// The rest of the handshake, once both sides know the version they speak.
    fn negotiate(&mut self, log: &mut dyn FnMut(LogMessage)) -> Result<()> {
        let version = self.version;
        if has(version, 38) {
            // We ask for no optional features: those of current Nix change encodings we do
            // not need to change, or add operations a builder does not use.
            self.send(HANDSHAKE, |w| w.write_list(std::iter::empty::<&str>()))?;
            self.flush(HANDSHAKE)?;
            self.features = self.recv(HANDSHAKE, |r| Ok(r.read_string_set()?))?;
        }
        self.send(HANDSHAKE, |w| {
            if has(version, 14) {
                w.write_u64(0)?; // obsolete: no CPU affinity
            }
            if has(version, 11) {
                w.write_bool(false)?; // obsolete: reserveSpace
            }
            Ok(())
        })?;
        self.flush(HANDSHAKE)?;
        if has(version, 33) {
            self.daemon_version = Some(self.recv(HANDSHAKE, |r| Ok(r.read_string()?))?);
        }
        if has(version, 35) {
            self.trusted = self.recv(HANDSHAKE, read_trust)?;
        }
        self.process_stderr(HANDSHAKE, log)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The version the daemon announced.
    pub fn remote_version(&self) -> u64 {
        self.remote_version
    }

    /// The version both sides use: the lower of [`PROTOCOL_VERSION`] and the daemon's.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The optional features the daemon offered (since 1.38; we use none of them).
    pub fn daemon_features(&self) -> &BTreeSet<String> {
        &self.features
    }

    /// The daemon's Nix version, e.g. `2.34.8` (since 1.33).
    pub fn daemon_version(&self) -> Option<&str> {
        self.daemon_version.as_deref()
    }

    /// Whether the daemon trusts us (since 1.35; `None`: it did not say). An untrusted
    /// client may not build input-addressed derivations with
    /// [`DaemonClient::build_derivation`], and its uploads must be signed by a key the
    /// builder trusts or be content-addressed.
    pub fn trusted(&self) -> Option<bool> {
        self.trusted
    }

    /// Bounds for strings and lists read from now on (default: [`Limits::default`]).
    pub fn set_limits(&mut self, limits: Limits) {
        self.r.set_limits(limits);
    }

    fn recv_err(&self, during: &'static str, e: DecodeError) -> DaemonError {
        match e {
            DecodeError::Wire(WireError::Truncated { .. }) => {
                DaemonError::Eof { host: self.host.clone(), during }
            }
            DecodeError::Wire(WireError::Io { source, .. }) if is_broken_pipe(&source) => {
                DaemonError::Eof { host: self.host.clone(), during }
            }
            DecodeError::Wire(WireError::Io { source, .. }) => {
                DaemonError::Io { host: self.host.clone(), during, source }
            }
            source => DaemonError::BadReply { host: self.host.clone(), during, source },
        }
    }

    fn send_err(&self, during: &'static str, e: io::Error) -> DaemonError {
        if is_broken_pipe(&e) {
            DaemonError::Eof { host: self.host.clone(), during }
        } else {
            DaemonError::Io { host: self.host.clone(), during, source: e }
        }
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
        f: impl FnOnce(&mut Reader<BufReader<R>>) -> Result<T, DecodeError>,
    ) -> Result<T> {
        f(&mut self.r).map_err(|e| self.recv_err(during, e))
    }

    /// Reads frames up to `STDERR_LAST`, passing log messages to `log`; an error frame ends
    /// the operation with [`DaemonError::Remote`].
    fn process_stderr(&mut self, during: &'static str, log: &mut dyn FnMut(LogMessage)) -> Result<()> {
        let version = self.version;
        loop {
            match self.recv(during, |r| Frame::read_from(r, version))? {
                Frame::Log(message) => log(message),
                Frame::Last => return Ok(()),
                Frame::Error(error) => {
                    return Err(DaemonError::Remote { host: self.host.clone(), during, error })
                }
                Frame::Read(_) => {
                    return Err(DaemonError::UnexpectedFrame {
                        host: self.host.clone(),
                        during,
                        frame: "STDERR_READ",
                    })
                }
                Frame::Write(_) => {
                    return Err(DaemonError::UnexpectedFrame {
                        host: self.host.clone(),
                        during,
                        frame: "STDERR_WRITE",
                    })
                }
            }
        }
    }

    /// Runs one operation. The connection counts as broken until the operation has ended
    /// cleanly or with the daemon's error frame (after which the daemon reads the next
    /// operation), so any other error poisons it.
    fn op<T>(&mut self, op: Op, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.poisoned || self.broken {
            return Err(DaemonError::Poisoned { host: self.host.clone() });
        }
        if !has(self.version, op.since()) {
            return Err(DaemonError::Unsupported {
                host: self.host.clone(),
                op: op.name(),
                version: self.version,
            });
        }
        self.poisoned = true;
        let result = (|| {
            self.send(op.name(), |w| w.write_u64(op.code()))?;
            f(self)
        })();
        if matches!(result, Ok(_) | Err(DaemonError::Remote { .. })) {
            self.poisoned = false;
        }
        result
    }

    /// Sends the settings for the builds of this connection. Nix's `ssh-ng://` store never
    /// does (the builder's own configuration applies); see [`Options`].
    pub fn set_options(&mut self, options: &Options, log: &mut dyn FnMut(LogMessage)) -> Result<()> {
        const DURING: &str = "SetOptions";
        self.op(Op::SetOptions, |c| {
            c.send(DURING, |w| options.write_to(w))?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)
        })
    }

    /// Which of `paths` are valid on the daemon. `substitute` (sent since 1.27) lets it fetch
    /// missing ones from its substituters first.
    pub fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        substitute: bool,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<BTreeSet<String>> {
        const DURING: &str = "QueryValidPaths";
        let version = self.version;
        self.op(Op::QueryValidPaths, |c| {
            c.send(DURING, |w| {
                w.write_list(paths)?;
                if has(version, 27) {
                    w.write_bool(substitute)?;
                }
                Ok(())
            })?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)?;
            c.recv(DURING, |r| Ok(r.read_string_set()?))
        })
    }

    /// The path info of `path`, or `None` if the daemon does not have it.
    pub fn query_path_info(
        &mut self,
        path: &str,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<Option<PathInfo>> {
        const DURING: &str = "QueryPathInfo";
        let version = self.version;
        self.op(Op::QueryPathInfo, |c| {
            c.send(DURING, |w| w.write_str(path))?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)?;
            // Every version we speak (≥ 1.18) says whether the path is valid first.
            c.recv(DURING, |r| {
                if !r.read_bool()? {
                    return Ok(None);
                }
                Ok(Some(PathInfo::read_from(r, version)?))
            })
        })
    }

    /// Streams the NAR of `path` into `sink`; returns its size and hash. On error, `sink` may
    /// hold part of the NAR. A path the daemon does not have is a [`DaemonError::Remote`]
    /// after which the connection is closed (the daemon hangs up), so ask
    /// [`DaemonClient::query_path_info`] first.
    pub fn nar_from_path(
        &mut self,
        path: &str,
        sink: &mut dyn Write,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<NarSummary> {
        const DURING: &str = "NarFromPath";
        self.op(Op::NarFromPath, |c| {
            c.send(DURING, |w| w.write_str(path))?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)?;
            // The daemon ends the frames before it dumps the path, so a path it cannot dump
            // (one it does not have) brings an error frame where the NAR should go on, after
            // which the daemon hangs up: Nix 2.34 sends it first, Nix 2.8 after the NAR's magic
            // string. Neither place can hold the frame code in a NAR (a NAR starts with the
            // length of its magic, 13, and goes on with a token), so look at both. An error
            // deeper in the NAR (a file vanishing while it is dumped) is a `BadNar`.
            let mut prefix = Vec::with_capacity(32);
            let first = c.recv(DURING, |r| Ok(r.read_u64()?))?;
            let mut maybe_error = first;
            prefix.extend_from_slice(&first.to_le_bytes());
            if first == 13 {
                let mut magic = [0u8; 16];
                c.recv(DURING, |r| {
                    Ok(r.read_exact(&mut magic).map_err(|e| wire_read_err(e, r.position()))?)
                })?;
                prefix.extend_from_slice(&magic);
                if &magic[..13] == b"nix-archive-1" {
                    maybe_error = c.recv(DURING, |r| Ok(r.read_u64()?))?;
                    prefix.extend_from_slice(&maybe_error.to_le_bytes());
                }
            }
            if maybe_error == STDERR_ERROR {
                let version = c.version;
                c.broken = true;
                let error = c.recv(DURING, |r| RemoteError::read_from(r, version))?;
                return Err(DaemonError::Remote { host: c.host.clone(), during: DURING, error });
            }
            // The NAR follows the frames as it is, unframed and unpadded: only parsing it
            // tells where it ends.
            let mut nar = (&prefix[..]).chain(&mut c.r);
            copy_nar(&mut nar, sink).map_err(|e| match e {
                NarError::Wire(e @ (WireError::Truncated { .. } | WireError::Io { .. })) => {
                    c.recv_err(DURING, e.into())
                }
                NarError::Sink(source) => DaemonError::Sink { host: c.host.clone(), source },
                source => DaemonError::BadNar { host: c.host.clone(), during: DURING, source },
            })
        })
    }

    /// The path info as it goes on the wire: checked, the hash in base 16 as Nix sends it.
    fn outgoing_info(path: &str, info: &PathInfo) -> Result<(PathInfo, [u8; 32])> {
        let invalid = |what: &'static str, value: String| DaemonError::InvalidPathInfo {
            path: path.to_string(),
            what,
            value,
        };
        if info.nar_size == 0 {
            return Err(invalid("NAR size", "0".into()));
        }
        let sha = info.nar_sha256().ok_or_else(|| invalid("NAR hash", info.nar_hash.clone()))?;
        Ok((PathInfo { nar_hash: hash::base16_encode(&sha), ..info.clone() }, sha))
    }

    /// Copies one NAR into `out`, never more than `info.nar_size` bytes, and checks it
    /// against `info`.
    fn send_nar(
        path: &str,
        info: &PathInfo,
        expected: &[u8; 32],
        nar: &mut dyn Read,
        out: &mut impl Write,
    ) -> std::result::Result<(), SendNarError> {
        // copy_nar reads in small pieces; the buffer never reads past the NAR, thanks to `take`.
        let mut limited = BufReader::new(nar.take(info.nar_size));
        let summary = copy_nar(&mut limited, out).map_err(|e| match e {
            NarError::Sink(e) => SendNarError::Write(e),
            source => SendNarError::Ours(DaemonError::InvalidNar { path: path.to_string(), source }),
        })?;
        if summary.size != info.nar_size {
            return Err(SendNarError::Ours(DaemonError::NarSizeMismatch {
                path: path.to_string(),
                expected: info.nar_size,
                actual: summary.size,
            }));
        }
        if &summary.sha256 != expected {
            return Err(SendNarError::Ours(DaemonError::NarHashMismatch {
                path: path.to_string(),
                expected: info.nar_hash.clone(),
                actual: summary.nar_hash(),
            }));
        }
        Ok(())
    }

    /// Ends an upload whose sending failed. A daemon that gave up on the data first sends
    /// its error and closes; its words explain the failure better than a broken pipe.
    fn after_failed_upload(
        &mut self,
        during: &'static str,
        e: SendNarError,
        log: &mut dyn FnMut(LogMessage),
    ) -> DaemonError {
        self.broken = true;
        match e {
            SendNarError::Ours(e) => e,
            SendNarError::Write(e) if is_broken_pipe(&e) => match self.process_stderr(during, log) {
                Err(remote @ DaemonError::Remote { .. }) => remote,
                _ => self.send_err(during, e),
            },
            SendNarError::Write(e) => self.send_err(during, e),
        }
    }

    /// Uploads one store path (protocol ≥ 1.23, the NAR framed). `nar` must yield the path's
    /// NAR: exactly `info.nar_size` bytes hashing to `info.nar_hash`; it is checked while it
    /// is sent, and a mismatch makes the connection unusable. Sent as Nix's `copyPaths` does:
    /// no repair, signatures not checked (a daemon ignores that for untrusted clients) and
    /// with `info`'s registration time and `ultimate` flag as given.
    pub fn add_to_store_nar(
        &mut self,
        path: &str,
        info: &PathInfo,
        nar: &mut dyn Read,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<()> {
        const DURING: &str = "AddToStoreNar";
        let (wire_info, sha) = Self::outgoing_info(path, info)?;
        let version = self.version;
        self.op(Op::AddToStoreNar, |c| {
            c.send(DURING, |w| {
                w.write_str(path)?;
                wire_info.write_to(w, version)?;
                w.write_bool(false)?; // repair
                w.write_bool(true) // dontCheckSigs
            })?;
            let sent = (|| {
                let mut framed = FramedWriter::new(&mut c.w);
                Self::send_nar(path, info, &sha, nar, &mut framed)?;
                framed.finish().map_err(SendNarError::Write)?;
                c.w.flush().map_err(SendNarError::Write)
            })();
            if let Err(e) = sent {
                return Err(c.after_failed_upload(DURING, e, log));
            }
            c.process_stderr(DURING, log)
        })
    }

    /// Uploads several store paths in one framed stream (protocol ≥ 1.32), as Nix's
    /// `copyPaths` does with `ssh-ng://` builders. List them references first: the daemon
    /// adds them in the order given. Checked and sent like
    /// [`DaemonClient::add_to_store_nar`].
    pub fn add_multiple_to_store(
        &mut self,
        uploads: &mut [Upload<'_>],
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<()> {
        const DURING: &str = "AddMultipleToStore";
        let mut checked = Vec::with_capacity(uploads.len());
        for upload in uploads.iter() {
            checked.push(Self::outgoing_info(&upload.path, &upload.info)?);
        }
        self.op(Op::AddMultipleToStore, |c| {
            c.send(DURING, |w| {
                w.write_bool(false)?; // repair
                w.write_bool(true) // dontCheckSigs
            })?;
            let sent = (|| {
                let mut w = Writer::new(FramedWriter::new(&mut c.w));
                w.write_u64(uploads.len() as u64).map_err(SendNarError::Write)?;
                for (upload, (wire_info, sha)) in uploads.iter_mut().zip(&checked) {
                    w.write_str(&upload.path).map_err(SendNarError::Write)?;
                    // Inside the stream, path infos always have the 1.16 form.
                    wire_info.write_to(&mut w, 0x110).map_err(SendNarError::Write)?;
                    Self::send_nar(&upload.path, &upload.info, sha, upload.nar, &mut w)?;
                }
                w.into_inner().finish().map_err(SendNarError::Write)?;
                c.w.flush().map_err(SendNarError::Write)
            })();
            if let Err(e) = sent {
                return Err(c.after_failed_upload(DURING, e, log));
            }
            c.process_stderr(DURING, log)
        })
    }

    /// Builds `drv` (sent whole; the daemon never needs the `.drv` file) and waits for the
    /// result. `drv_path` names it: the daemon takes the derivation's name from it. A failed
    /// build is an `Ok` result with a failure status; an `Err` means the operation itself
    /// failed, e.g. an untrusted client asking for an input-addressed derivation (the daemon
    /// refuses: see [`DaemonClient::build_paths_with_results`]).
    pub fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &BasicDerivation,
        mode: BuildMode,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<BuildResult> {
        const DURING: &str = "BuildDerivation";
        let version = self.version;
        self.op(Op::BuildDerivation, |c| {
            c.send(DURING, |w| {
                w.write_str(drv_path)?;
                drv.write_to(w)?;
                w.write_u64(mode.code())
            })?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)?;
            c.recv(DURING, |r| BuildResult::read_from(r, version))
        })
    }

    /// Records `realisation` in the daemon's store (Nix's `registerDrvOutput`), as Nix's hook
    /// does for each floating content-addressed output it copied back. The daemon's store must
    /// have `ca-derivations` among its experimental features and the path valid; otherwise it
    /// answers with an error, which comes back as [`DaemonError::Remote`].
    pub fn register_drv_output(
        &mut self,
        realisation: &Realisation,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<()> {
        const DURING: &str = "RegisterDrvOutput";
        let version = self.version;
        self.op(Op::RegisterDrvOutput, |c| {
            c.send(DURING, |w| realisation.write_to(w, version))?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)
        })
    }

    /// Builds derived paths (protocol ≥ 1.34): `/nix/store/…-x.drv!*` for all outputs of a
    /// derivation the daemon has (`!out,doc` for some), or an opaque store path to
    /// substitute. This is what Nix's hook does with a daemon that does not trust it and an
    /// input-addressed derivation: it uploads the `.drv` closure first, so the daemon builds
    /// from derivations in its own store. Returns each path with its result, in the daemon's
    /// order.
    pub fn build_paths_with_results(
        &mut self,
        paths: &[String],
        mode: BuildMode,
        log: &mut dyn FnMut(LogMessage),
    ) -> Result<Vec<(String, BuildResult)>> {
        const DURING: &str = "BuildPathsWithResults";
        let version = self.version;
        self.op(Op::BuildPathsWithResults, |c| {
            c.send(DURING, |w| {
                w.write_list(paths)?;
                w.write_u64(mode.code())
            })?;
            c.flush(DURING)?;
            c.process_stderr(DURING, log)?;
            c.recv(DURING, |r| {
                let offset = r.position();
                let count = r.read_u64()?;
                let max = r.limits().max_list_len;
                if count > max {
                    return Err(WireError::TooLong {
                        what: nwh_wire::Item::ListCount,
                        offset,
                        len: count,
                        max,
                    }
                    .into());
                }
                let mut results = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    let path = r.read_string()?;
                    results.push((path, BuildResult::read_from(r, version)?));
                }
                Ok(results)
            })
        })
    }
}

/// Why sending a NAR stopped: the connection (`Write`), or the caller's NAR (`Ours`).
enum SendNarError {
    Write(io::Error),
    Ours(DaemonError),
}

impl From<io::Error> for SendNarError {
    fn from(e: io::Error) -> Self {
        SendNarError::Write(e)
    }
}

/// A failed raw read as the wire reader would report it (an early end is a truncation).
fn wire_read_err(e: io::Error, offset: u64) -> WireError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        WireError::Truncated { what: nwh_wire::Item::StringData, offset, needed: 16, available: 0 }
    } else {
        WireError::Io { what: nwh_wire::Item::StringData, offset, source: e }
    }
}

fn send_magic<W: Write>(w: &mut Writer<W>) -> io::Result<()> {
    w.write_u64(WORKER_MAGIC_1)?;
    w.write_u64(PROTOCOL_VERSION)?;
    w.flush()
}

/// A broken pipe during the greeting is no daemon at the other end (ssh failed, or the
/// remote command did not start): the caller must tell that from a daemon that misbehaves.
fn connection_failure(host: String, e: io::Error) -> DaemonError {
    if is_broken_pipe(&e) {
        DaemonError::CannotConnect { host }
    } else {
        DaemonError::Io { host, during: HANDSHAKE, source: e }
    }
}
