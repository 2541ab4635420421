//! The warm-session keeper (`nix-wasm-hook --warm-sessions DIR`) on its own: one per
//! directory, and it ends by itself once nothing has asked it for its idle time (a minute; a
//! few seconds here, through `--warm-idle-ms`), taking its socket with it, so that no process
//! lingers after the builds are over. It runs as root and starts programs on the builders, so
//! it serves only its own user, only in a directory only that user can change, and starts only
//! the store program the hook set up, through a control socket of its own directory: the
//! attacker is played by uid 65534 (`setpriv`), or by requests naming something else.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix_wasm_hook::transfer::warm::{FLAG, IDLE, IDLE_FLAG};

fn keeper(dir: &Path) -> std::process::Child {
    keeper_cmd(dir).spawn().unwrap()
}

fn keeper_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"));
    cmd.arg(FLAG).arg(dir).stdin(Stdio::null());
    cmd
}

/// The idle time of the keeper of [`one_keeper_per_directory_and_it_ends_when_idle`]: long
/// enough for a second keeper to start and end first on a loaded machine, short enough not to
/// wait the production minute ([`IDLE`]).
const SHORT_IDLE: Duration = Duration::from_secs(10);

/// Waits up to `limit` for `child` to end; its status, or None (and it is killed) when it
/// did not.
fn ended_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn one_keeper_per_directory_and_it_ends_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    assert!(SHORT_IDLE < IDLE);
    let started = Instant::now();
    let mut first =
        keeper_cmd(dir.path()).arg(IDLE_FLAG).arg(SHORT_IDLE.as_millis().to_string()).spawn().unwrap();
    let socket = dir.path().join("warm.sock");
    // It listens, then records its pid (atomically): both, before it is asked anything.
    let pid_file = dir.path().join("warm.pid");
    while !socket.exists() || !pid_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the keeper never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(dir.path().join("warm.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(pid, first.id());

    // A second keeper of the same directory ends at once, leaving the first one serving.
    let mut second = keeper(dir.path());
    let status = ended_within(&mut second, Duration::from_secs(10)).expect("a second keeper ended at once");
    assert!(status.success(), "{status}");
    assert!(first.try_wait().unwrap().is_none(), "the first keeper still serves");

    let status = ended_within(&mut first, SHORT_IDLE + Duration::from_secs(15))
        .expect("the keeper ended by itself once idle for its idle time");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() >= SHORT_IDLE, "it did not end before its idle time passed");
    assert!(!socket.exists(), "its socket went with it");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A keeper serving `dir` (made 0700), once it listens; it is ended when dropped, so that a
/// failing test leaves no process behind.
struct Keeper(std::process::Child);

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening_keeper(dir: &Path) -> Keeper {
    chmod(dir, 0o700);
    let keeper = Keeper(keeper(dir));
    let started = Instant::now();
    while !dir.join("warm.sock").exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the keeper never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    keeper
}

/// What a hook sets up for a master: its control socket's name, and beside it the store
/// program it runs there (`NAME.store`, as the hook records it).
const CONTROL: &str = "0123456789abcdef0123.sock";
const STORE: &str = r#"{"program":"nix-store","args":["--serve","--write"]}"#;

fn ask(socket: &Path, program: &str, args: &[&str]) -> String {
    let ask = serde_json::json!({"socket": socket, "program": program, "args": args, "host": "builder"});
    format!("{ask}\n")
}

/// A stand-in for an ssh master's control socket, counting who connected to it (what the
/// keeper does first to start a program on the builder); each is dropped at once, so that the
/// keeper gives up on it and answers.
struct FakeMaster(Arc<AtomicUsize>);

impl FakeMaster {
    fn at(path: &Path) -> FakeMaster {
        let listener = UnixListener::bind(path).unwrap();
        let reached = Arc::new(AtomicUsize::new(0));
        let count = reached.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        FakeMaster(reached)
    }

    /// Whether someone connected since the last call, waiting up to `wait`.
    fn reached_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.0.swap(0, Ordering::SeqCst) > 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends `line` to the keeper at `socket` as a hook does (with a build log's descriptor) and
/// returns what came back before the keeper closed or `wait` passed.
fn request(socket: &Path, line: &str) -> String {
    let stream = UnixStream::connect(socket).unwrap();
    let log = std::fs::File::open("/dev/null").unwrap();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    let fds = [log.as_fd()];
    assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
    let bytes = [std::io::IoSlice::new(line.as_bytes())];
    rustix::net::sendmsg(&stream, &bytes, &mut control, rustix::net::SendFlags::empty()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = (&stream).read_to_string(&mut reply);
    reply
}

#[test]
fn the_keeper_starts_only_the_store_program_set_up_through_its_own_control_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let _keeper = listening_keeper(dir.path());
    let socket = dir.path().join("warm.sock");
    let control = dir.path().join(CONTROL);
    std::fs::write(dir.path().join(CONTROL.replace(".sock", ".store")), STORE).unwrap();
    chmod(&dir.path().join(CONTROL.replace(".sock", ".store")), 0o600);
    let master = FakeMaster::at(&control);
    let foreign = FakeMaster::at(&elsewhere.path().join(CONTROL));

    let reply = request(&socket, &ask(&elsewhere.path().join(CONTROL), "nix-store", &["--serve", "--write"]));
    let reached = foreign.reached_within(Duration::from_secs(3));
    assert!(!reached, "a control socket outside its directory was used");
    assert_eq!(reply, "", "refused without an answer");

    for (program, args) in
        [("sh", &["-c", "touch /tmp/nix-wasm-hook-pwned"][..]), ("nix-store", &["--serve"][..])]
    {
        let reply = request(&socket, &ask(&control, program, args));
        assert!(!master.reached_within(Duration::from_secs(3)), "{program} {args:?} was started");
        assert_eq!(reply, "");
    }

    // The program the hook set up is started (the stand-in master does not answer, so the
    // keeper says it has no session, and the hook would open its own).
    let reply = request(&socket, &ask(&control, "nix-store", &["--serve", "--write"]));
    assert!(master.reached_within(Duration::from_secs(10)), "the store program set up was not started");
    assert_eq!(reply, "{\"version\":null}\n");
}

/// `python3` connecting to `socket` as uid 65534 and sending `line` with a descriptor, as a
/// hook would; what it got back (`b''` or `closed`: the keeper closed without a word).
fn request_as_nobody(socket: &Path, line: &str) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
try:
    socket.send_fds(s, [sys.argv[2].encode()], [2])
    print(repr(s.recv(4096)))
except OSError:
    print("closed")
"#;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c", script])
        .arg(socket)
        .arg(line)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .expect("setpriv (util-linux) and python3 play the other user");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn another_user_who_reaches_the_keepers_socket_is_not_served() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: playing another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _keeper = listening_keeper(dir.path());
    let control = dir.path().join(CONTROL);
    std::fs::write(dir.path().join(CONTROL.replace(".sock", ".store")), STORE).unwrap();
    chmod(&dir.path().join(CONTROL.replace(".sock", ".store")), 0o600);
    let master = FakeMaster::at(&control);
    // The socket made reachable to the other user (another name for it, in a directory it can
    // enter, and a mode that lets it connect): the peer's uid is what must stop it.
    let open = tempfile::tempdir().unwrap();
    chmod(open.path(), 0o755);
    let reachable: PathBuf = open.path().join("warm.sock");
    std::fs::hard_link(dir.path().join("warm.sock"), &reachable).unwrap();
    chmod(&reachable, 0o666);

    let line = ask(&control, "nix-store", &["--serve", "--write"]);
    let got = request_as_nobody(&reachable, &line);
    assert!(got == "b''" || got == "closed", "uid 65534 got an answer: {got}");
    assert!(!master.reached_within(Duration::from_secs(3)), "a program was started for uid 65534");

    // Its own user, the same request, is served.
    assert_eq!(request(&reachable, &line), "{\"version\":null}\n");
    assert!(master.reached_within(Duration::from_secs(10)));
}

/// Runs a keeper for `dir` and returns its stderr once it ended (within 10 s) or `None` if it
/// kept running.
fn refusal(dir: &Path) -> Option<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .arg("--warm-sessions")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = ended_within(&mut child, Duration::from_secs(10))?;
    assert!(!status.success(), "{status}");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    Some(err)
}

#[test]
fn the_keeper_refuses_a_directory_others_can_change_saying_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let err = refusal(dir.path()).expect("the keeper refused the directory");
    let path = dir.path().display().to_string();
    assert!(
        err.contains(&path) && err.contains("mode 0777") && err.contains(&format!("`chmod 700 {path}`")),
        "{err}"
    );
    assert!(!dir.path().join("warm.sock").exists());
    if rustix::process::geteuid().is_root() {
        chmod(dir.path(), 0o700);
        lchown(dir.path(), Some(65534), Some(65534)).unwrap();
        let err = refusal(dir.path()).expect("the keeper refused the directory");
        assert!(err.contains("belongs to uid 65534") && err.contains(&format!("`chown 0 {path}`")), "{err}");
        assert!(!dir.path().join("warm.sock").exists());
    }
}

/// `python3` as uid 65534 listening on `dir/warm.sock`; prints `ready`, then what the first
/// connection sent (`b''`: nothing) or `nobody came`.
fn listen_as_nobody(dir: &Path) -> std::process::Child {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
s.settimeout(10)
try:
    c, _ = s.accept()
    c.settimeout(10)
    print(repr(c.recv(4096)))
except socket.timeout:
    print("nobody came")
"#;
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c", script])
        .arg(dir.join("warm.sock"))
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) and python3 play the other user")
}

#[test]
fn a_hook_lends_nothing_to_a_keeper_of_another_user() {
    use nix_wasm_hook::transfer::ssh::Connection;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: playing another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    let open = tempfile::tempdir().unwrap();
    chmod(open.path(), 0o777);
    let mut theirs = listen_as_nobody(open.path());
    let mut out = std::io::BufReader::new(theirs.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    // Their listening socket where the hook looks for its keeper.
    std::fs::rename(open.path().join("warm.sock"), dir.path().join("warm.sock")).unwrap();

    let target = crate::support::target::serve_target("builder");
    let master = Connection { target, socket: Some(dir.path().join(CONTROL)), nix_config: Vec::new() };
    let log = std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let lent = nix_wasm_hook::transfer::warm::borrow(&master, "nix-store", &["--serve", "--write"], &log);
    assert!(lent.is_none());
    let mut said = String::new();
    out.read_to_string(&mut said).unwrap();
    let _ = theirs.wait();
    assert_eq!(said.trim(), "b''", "the hook told another user's keeper something");
}
