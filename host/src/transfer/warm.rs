//! Warm sessions: one long-lived local process (`nix-wasm-hook --warm-sessions DIR`) keeps
//! builders' `nix-store --serve --write` sessions open between builds and lends them to the
//! hook processes, one build at a time. Without it every build starts a store program on its
//! builder: some 40 ms before the build can begin, and some 20 ms of the builder's CPU (most of
//! it dynamic linking), which with many small builds is what bounds how many a machine
//! dispatches per second.
//!
//! It starts itself: a hook that finds no one listening on `DIR/warm.sock` starts it, detached
//! (its own process group, so that Nix killing the hook's group leaves it), and opens its own
//! session this time. It stops after [`IDLE`] without a request, when nothing is lent (a
//! shorter or longer time with [`IDLE_FLAG`], which only the tests give: a hook never does). A
//! hook that cannot reach it, or is refused, opens its own session: nothing depends on it.
//!
//! The conversation on the socket, one connection per lent session:
//! - hook: one JSON line ([`Ask`]), with its build log's descriptor (`SCM_RIGHTS`), where the
//!   session's stderr (the build's log lines) goes while it is lent;
//! - keeper: one JSON line ([`Lend`]) with the session's stdin and stdout descriptors, after
//!   checking that the session still answers;
//! - hook, when done: `returned\n` if every command ended cleanly. Closing without it (an
//!   error, or the hook killed mid-build) ends the session instead: its state is unknown.
//!
//! Only the serve protocol (`ssh://`) is lent: a daemon connection's handshake leaves state
//! (features, trust) that a second process would have to be told. Nor is a store program that
//! runs here, without ssh (an `ssh://localhost` line, a local store): it starts without a
//! connection to make, and it reads the settings of the build that starts it, which a warm
//! session started for another build would not have.
//!
//! The keeper starts programs on builders as its user (root under the daemon), so it serves
//! only its own user (the peer's uid on each connection, `SO_PEERCRED`), in a directory
//! checked as secret, and starts only what the hook set up there: the control socket must be
//! one in that directory, and the program and arguments those the hook recorded beside it
//! (`NAME.store`, written by the hook, checked as ours when read). A hook likewise lends its
//! build log to, and believes, only a keeper of its own user.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, PipeReader, PipeWriter, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};

use nwh_files::private::{Access, PrivateDir};

use super::ssh::{Connection, Remote};

/// How long the keeper stays without a request before it ends (and its sessions with it).
pub const IDLE: Duration = Duration::from_secs(60);

/// The flag that makes the binary the keeper.
pub const FLAG: &str = "--warm-sessions";

/// With [`FLAG`]: the keeper's idle time in milliseconds instead of [`IDLE`]. Only for the
/// tests, which would otherwise wait a minute to see it end by itself; it changes when the
/// keeper ends, nothing of whom it serves or what it starts.
pub const IDLE_FLAG: &str = "--warm-idle-ms";

/// What a hook asks for: a session of `program args…` through the master at `socket`.
#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    socket: PathBuf,
    program: String,
    args: Vec<String>,
    host: String,
}

/// Idle sessions kept per kind at most. No more are ever idle than were lent at once, which
/// the builder's slots bound; this only bounds a machines file with absurd max-jobs.
const KEEP: usize = 64;

/// The keeper's answer: the version the server announced at the handshake, or none when it
/// could not open a session (the hook then opens its own, and meets the cause itself).
#[derive(Debug, Serialize, Deserialize)]
struct Lend {
    version: Option<u64>,
}

/// The keeper's socket, in the directory of the control sockets.
const SOCKET: &str = "warm.sock";

/// The store program (and its arguments) the hook set up for a master: the only one the keeper
/// starts through it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct StoreProgram {
    program: String,
    args: Vec<String>,
}

/// The record beside control socket `NAME.sock`, when that is a control socket's name.
fn record_name(socket: &Path) -> Option<String> {
    let stem = socket.file_name()?.to_str()?.strip_suffix(".sock")?;
    let hex = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| format!("{stem}.store"))
}

/// Records what the hook runs through `ask.socket`, unless it is recorded already.
fn record(dir: &PrivateDir, ask: &Ask) -> Result<()> {
    let name = record_name(&ask.socket).context("not a control socket's name")?;
    let wanted = StoreProgram { program: ask.program.clone(), args: ask.args.clone() };
    if recorded(dir, &name).ok().flatten().as_ref() != Some(&wanted) {
        dir.write_atomically(&name, &serde_json::to_vec(&wanted)?)?;
    }
    Ok(())
}

fn recorded(dir: &PrivateDir, name: &str) -> Result<Option<StoreProgram>> {
    let Some(mut file) = dir.open_own(name)? else { return Ok(None) };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(serde_json::from_str(&text)?))
}

/// Whether the other end of `stream` runs as our user: the only one the keeper serves, and the
/// only keeper a hook lends its build log to.
fn peer_is_us(stream: &UnixStream) -> bool {
    rustix::net::sockopt::socket_peercred(stream).is_ok_and(|peer| peer.uid == rustix::process::geteuid())
}

/// A session lent to this process: talk on `stdin`/`stdout`, then [`Lease::give_back`].
pub struct Lent {
    pub stdin: PipeWriter,
    pub stdout: PipeReader,
    pub version: u64,
    pub lease: Lease,
}

/// The connection that holds a lent session; dropping it without [`Lease::give_back`] ends
/// the session.
pub struct Lease(UnixStream);

impl Lease {
    /// The session is clean (every command ended where the protocol expects): the keeper may
    /// lend it again.
    pub fn give_back(mut self) {
        let _ = self.0.write_all(b"returned\n");
    }
}

/// Borrows a warm session for `master`'s builder, its stderr going to `log`; `None` when the
/// keeper is not there (it is started for the next build) or cannot lend one.
pub fn borrow(conn: &Connection, program: &str, args: &[&str], log: &OwnedFd) -> Option<Lent> {
    let socket = conn.socket.as_ref()?;
    let dir = PrivateDir::open(socket.parent()?, Access::Secret).ok()?;
    let ask = Ask {
        socket: socket.clone(),
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        host: conn.target.display(),
    };
    record(&dir, &ask).ok()?;
    let mut stream = match UnixStream::connect(dir.join(SOCKET)) {
        Ok(s) => s,
        Err(_) => {
            start_keeper(dir.path());
            return None;
        }
    };
    if !peer_is_us(&stream) {
        return None;
    }
    let line = format!("{}\n", serde_json::to_string(&ask).ok()?);
    send_with_fds(&stream, line.as_bytes(), &[log.as_fd()]).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let (reply, mut fds) = recv_line_with_fds(&mut stream).ok()?;
    let lend: Lend = serde_json::from_str(&reply).ok()?;
    let version = lend.version?;
    if fds.len() != 2 {
        return None;
    }
    let stdout = PipeReader::from(fds.pop()?);
    let stdin = PipeWriter::from(fds.pop()?);
    stream.set_read_timeout(None).ok()?;
    Some(Lent { stdin, stdout, version, lease: Lease(stream) })
}

/// Starts the keeper for `dir`, detached, unless one is starting already.
fn start_keeper(dir: &Path) {
    let Ok(exe) = std::env::current_exe() else { return };
    // Its own process group: Nix ends a hook by killing the hook's group.
    let _ = std::process::Command::new(exe)
        .arg(FLAG)
        .arg(dir)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    anyhow::ensure!(control.push(SendAncillaryMessage::ScmRights(fds)), "too many descriptors to send");
    let sent = rustix::net::sendmsg(stream, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)?;
    anyhow::ensure!(sent == bytes.len(), "a short message on the warm-session socket");
    Ok(())
}

/// One line (up to 4 KiB, sent in one message) and the descriptors that came with it.
fn recv_line_with_fds(stream: &mut UnixStream) -> Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &*stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let text = std::str::from_utf8(&buf[..got.bytes]).context("a message that is not text")?;
    let Some(line) = text.strip_suffix('\n') else { bail!("a message that is not one line") };
    Ok((line.to_string(), fds))
}

/// One session the keeper holds: the remote program, our ends of its stdin and stdout, and
/// where its stderr goes (the borrower's build log, or nowhere between builds).
struct Session {
    remote: Remote,
    version: u64,
    log: Arc<LogRelay>,
}

/// A session's stderr on its way to the borrower's build log. Only the relay thread writes to
/// the log, and a borrower's log is let go only through it: what the builder said before the
/// borrower was done (a failed build's "keeping build directory" comes just before its result)
/// may still be in the pipe, unread, when the borrower gives the session back.
struct LogRelay {
    state: Mutex<RelayState>,
    changed: Condvar,
    /// A byte here asks the relay thread to pass on what is in the pipe and let the log go.
    wake: Mutex<PipeWriter>,
}

#[derive(Default)]
struct RelayState {
    log: Option<File>,
    letting_go: bool,
    /// The session's stderr closed: the relay thread is gone.
    ended: bool,
}

impl LogRelay {
    /// Relays `stderr` by a thread of its own, to no log until one is lent.
    fn start(stderr: PipeReader) -> Result<Arc<LogRelay>> {
        let (wake_r, wake_w) = std::io::pipe()?;
        let log =
            Arc::new(LogRelay { state: Mutex::default(), changed: Condvar::new(), wake: Mutex::new(wake_w) });
        let to = log.clone();
        std::thread::spawn(move || {
            relay(stderr, wake_r, &to);
            to.end();
        });
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's stderr goes to `log` from now on.
    fn lend_to(&self, log: File) {
        self.lock().log = Some(log);
    }

    /// Returns once everything the session wrote to its stderr so far is in the borrower's
    /// log, and the log is let go (its last descriptor here closed: Nix reads the log until
    /// every writer has closed it).
    fn let_go(&self) {
        let mut state = self.lock();
        state.letting_go = true;
        if state.ended || self.wake.lock().unwrap_or_else(|p| p.into_inner()).write_all(b"\n").is_err() {
            state.log = None;
            return;
        }
        // The relay thread takes its time only when the log's reader is slow; past this the
        // log is let go anyway, and the rest of what the builder said is lost.
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(5), |s| s.letting_go && !s.ended)
            .unwrap_or_else(|p| p.into_inner());
        state.log = None;
        state.letting_go = false;
    }

    fn write(&self, bytes: &[u8]) {
        if let Some(log) = self.lock().log.as_mut() {
            let _ = log.write_all(bytes);
        }
    }

    fn let_go_now(&self) {
        let mut state = self.lock();
        // A wake-up left from a hand-over that timed out must not take the next borrower's log.
        if !state.letting_go {
            return;
        }
        state.log = None;
        state.letting_go = false;
        self.changed.notify_all();
    }

    fn end(&self) {
        let mut state = self.lock();
        (state.log, state.ended) = (None, true);
        self.changed.notify_all();
    }
}

type Idle = Arc<Mutex<HashMap<String, Vec<Session>>>>;

/// The keeper: runs until `idle_for` ([`IDLE`] unless a test says otherwise) passes without a
/// request and nothing is lent. Another keeper of `dir` already running makes this one end at
/// once.
pub fn keep(dir: &Path, idle_for: Duration) -> Result<()> {
    let dir = Arc::new(
        PrivateDir::open(dir, Access::Secret).context("the warm-session keeper cannot use its directory")?,
    );
    let lock = dir.open_lock("warm.lock").context("opening the keeper's lock")?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(());
    }
    let listener = listen(&dir)?;
    // Who to stop, for whoever started the hook (the tests end what they started).
    let _ = dir.write_atomically("warm.pid", format!("{}\n", std::process::id()).as_bytes());
    let idle: Idle = Arc::default();
    let activity = Arc::new(Mutex::new((Instant::now(), 0usize)));
    end_when_idle(dir.clone(), activity.clone(), idle_for);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // Anyone else who reached the socket (a mode loosened, a descriptor passed on) would
        // have us start programs on the builders as our user: closed without a word.
        if !peer_is_us(&stream) {
            continue;
        }
        {
            let mut a = activity.lock().unwrap_or_else(|p| p.into_inner());
            *a = (Instant::now(), a.1 + 1);
        }
        let (idle, activity, dir) = (idle.clone(), activity.clone(), dir.clone());
        std::thread::spawn(move || {
            let _ = lend(stream, &idle, &dir);
            let mut a = activity.lock().unwrap_or_else(|p| p.into_inner());
            *a = (Instant::now(), a.1 - 1);
        });
    }
    drop(lock);
    Ok(())
}

/// The keeper's socket, new, open to us alone (its directory is already).
fn listen(dir: &PrivateDir) -> Result<UnixListener> {
    dir.remove(SOCKET)?;
    let path = dir.join(SOCKET);
    let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// Ends the process once nothing is lent and `idle_for` has passed without a request.
fn end_when_idle(dir: Arc<PrivateDir>, activity: Arc<Mutex<(Instant, usize)>>, idle_for: Duration) {
    // A second is precise enough for a minute; a test's shorter idle time is looked at more
    // often, so that the keeper ends close to it.
    let every = (idle_for / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        let (last, lent) = *activity.lock().unwrap_or_else(|p| p.into_inner());
        if lent == 0 && last.elapsed() >= idle_for {
            // Whoever connects after this finds no one and starts a new keeper.
            let _ = dir.remove(SOCKET);
            std::process::exit(0);
        }
    });
}

/// The control socket to open a session through, when `ask` is for what the hook set up in
/// `dir`: a control socket there, and the store program recorded beside it. Anything else
/// (another directory, another program or arguments) is refused, whoever asks.
fn permitted(dir: &PrivateDir, ask: &Ask) -> Result<PathBuf> {
    let name = record_name(&ask.socket)
        .with_context(|| format!("{} is not a control socket's name", ask.socket.display()))?;
    let socket = dir.join(ask.socket.file_name().context("no file name")?.to_str().context("not UTF-8")?);
    anyhow::ensure!(ask.socket == socket, "{} is not in {}", ask.socket.display(), dir.path().display());
    let asked = StoreProgram { program: ask.program.clone(), args: ask.args.clone() };
    anyhow::ensure!(
        recorded(dir, &name)?.as_ref() == Some(&asked),
        "{asked:?} is not the store program set up for {}",
        socket.display()
    );
    Ok(socket)
}

/// Serves one borrower: a session (an idle one that still answers, or a new one), held until
/// it is given back or the borrower goes.
fn lend(mut stream: UnixStream, idle: &Idle, dir: &PrivateDir) -> Result<()> {
    let (line, mut fds) = recv_line_with_fds(&mut stream)?;
    let ask: Ask = serde_json::from_str(&line)?;
    let socket = permitted(dir, &ask)?;
    let log = File::from(fds.pop().context("no build log came with the request")?);
    let key = serde_json::to_string(&(&socket, &ask.program, &ask.args))?;
    let session = match take_idle(idle, &key, &ask) {
        Some(s) => s,
        None => match open(&socket, &ask) {
            Ok(s) => s,
            Err(_) => {
                let reply = serde_json::to_string(&Lend { version: None })?;
                stream.write_all(format!("{reply}\n").as_bytes())?;
                return Ok(());
            }
        },
    };
    session.log.lend_to(log);
    let reply = serde_json::to_string(&Lend { version: Some(session.version) })?;
    send_with_fds(
        &stream,
        format!("{reply}\n").as_bytes(),
        &[session.remote.stdin.as_fd(), session.remote.stdout.as_fd()],
    )?;
    let mut said = String::new();
    let _ = BufReader::new(&stream).read_line(&mut said);
    session.log.let_go();
    if said == "returned\n" {
        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(key).or_default();
        if kept.len() < KEEP {
            kept.push(session);
            return Ok(());
        }
    }
    let _ = session.remote.finish();
    Ok(())
}

/// An idle session of this kind that still answers; those that do not are ended.
fn take_idle(idle: &Idle, key: &str, ask: &Ask) -> Option<Session> {
    loop {
        let session = idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key)?.pop()?;
        if answers(&session, &ask.host) {
            return Some(session);
        }
        let _ = session.remote.finish();
    }
}

/// A round trip on the session: a builder that went away since is found here, not by the
/// borrower in the middle of its build.
fn answers(session: &Session, host: &str) -> bool {
    let (Ok(r), Ok(w)) = (session.remote.stdout.try_clone(), session.remote.stdin.try_clone()) else {
        return false;
    };
    let mut client = nwh_serve::ServeClient::resume(host, r, w, session.version);
    client.query_valid_paths(std::iter::empty::<&str>(), false, false).is_ok() && client.is_clean()
}

/// A new session: the remote program started through the master, greeted, its stderr relayed
/// by a thread to whoever borrows it.
fn open(socket: &Path, ask: &Ask) -> Result<Session> {
    let (err_r, err_w) = std::io::pipe()?;
    let args: Vec<&str> = ask.args.iter().map(String::as_str).collect();
    let remote = super::ssh::spawn_through(socket, &ask.program, &args, OwnedFd::from(err_w))?;
    let client =
        nwh_serve::ServeClient::handshake(&ask.host, remote.stdout.try_clone()?, remote.stdin.try_clone()?)?;
    let version = client.remote_version();
    Ok(Session { remote, version, log: LogRelay::start(err_r)? })
}

/// Copies the session's stderr to the current borrower's build log until the session ends;
/// when asked on `wake`, passes on what the pipe holds and lets the borrower's log go.
fn relay(mut from: PipeReader, mut wake: PipeReader, to: &LogRelay) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut buf = [0u8; 8192];
    // Passes on one read's worth; false when the session's stderr has closed.
    let mut pass_on = |from: &mut PipeReader| match from.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            to.write(&buf[..n]);
            true
        }
    };
    let readable = |fd: &PipeReader| {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        poll(&mut fds, Some(&rustix::fs::Timespec { tv_sec: 0, tv_nsec: 0 })).is_ok_and(|n| n > 0)
    };
    loop {
        let mut fds = [PollFd::new(&from, PollFlags::IN), PollFd::new(&wake, PollFlags::IN)];
        if poll(&mut fds, None).is_err() {
            continue;
        }
        let (said, asked) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if said && !pass_on(&mut from) {
            return;
        }
        if asked {
            if !matches!(wake.read(&mut [0; 16]), Ok(1..)) {
                return;
            }
            while readable(&from) {
                if !pass_on(&mut from) {
                    return;
                }
            }
            to.let_go_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the builder said just before the borrower was done reaches the borrower's log,
    /// however late the relay thread runs: the line Nix shows for a failed build ("keeping
    /// build directory") came last and was lost when the keeper let the log go first.
    #[test]
    fn what_the_builder_said_before_the_return_reaches_the_log() {
        for round in 0..200 {
            let (stderr, mut builder) = std::io::pipe().unwrap();
            let relay = LogRelay::start(stderr).unwrap();
            let log = tempfile::tempfile().unwrap();
            relay.lend_to(log.try_clone().unwrap());
            let said = format!("note: keeping build directory '/tmp/nix-build-{round}'\n");
            builder.write_all(said.as_bytes()).unwrap();
            relay.let_go();
            // Said after the return: goes nowhere.
            builder.write_all(b"between builds\n").unwrap();
            let mut got = String::new();
            let mut log = log;
            std::io::Seek::rewind(&mut log).unwrap();
            log.read_to_string(&mut got).unwrap();
            assert_eq!(got, said, "round {round}");
        }
    }

    /// A wake-up left over from a hand-over that gave up waiting does not take the next
    /// borrower's log.
    #[test]
    fn a_stale_wake_up_leaves_the_next_borrowers_log_alone() {
        let (stderr, mut builder) = std::io::pipe().unwrap();
        let relay = LogRelay::start(stderr).unwrap();
        let log = tempfile::tempfile().unwrap();
        relay.lend_to(log.try_clone().unwrap());
        relay.wake.lock().unwrap().write_all(b"\n").unwrap();
        builder.write_all(b"building\n").unwrap();
        let mut got = String::new();
        let mut log = log;
        let waited = Instant::now();
        while got.is_empty() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
            std::io::Seek::rewind(&mut log).unwrap();
            log.read_to_string(&mut got).unwrap();
        }
        assert_eq!(got, "building\n");
        assert!(relay.lock().log.is_some());
    }

    /// A session whose stderr has closed (its builder gone) lets the log go at once.
    #[test]
    fn a_session_that_ended_lets_the_log_go_at_once() {
        let (stderr, builder) = std::io::pipe().unwrap();
        let relay = LogRelay::start(stderr).unwrap();
        drop(builder);
        while !relay.lock().ended {
            std::thread::sleep(Duration::from_millis(1));
        }
        relay.lend_to(tempfile::tempfile().unwrap());
        let started = Instant::now();
        relay.let_go();
        assert!(relay.lock().log.is_none());
        // Not after waiting for the thread that is gone (the let-go's 5 s time-out).
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
