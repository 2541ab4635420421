//! SSH to a builder: one multiplexed master per builder, shared by every hook process on this
//! machine through a control socket keyed by how we connect, so that a new hook answers
//! without a fresh SSH handshake (Nix's own hook spends ~0.4 s connecting per build while the
//! whole scheduler waits, NixOS/nix#3651). A target that runs here ([`Via::Here`]: an
//! `ssh://localhost` or `ssh-ng://localhost` line, or a local store) has no master: its store
//! program is started as a child of the hook, on the same pipes, as Nix does without ssh.
//!
//! # Where the control sockets are
//!
//! Whoever can connect to a control socket runs commands on the builder as the hook's user
//! (root under the daemon), so the sockets live in a directory only that user can reach; and a
//! Unix socket's path holds at most 107 bytes (ssh binds a temporary name 17 bytes longer
//! first), so that directory's path is short whatever the state directory's is:
//! `<runtime>/<16 hex>`, where `<runtime>` is `/run/nix-wasm-hook` for root and
//! `/tmp/nwh-<uid>` for another user, and the 16 hex digits are the start of the SHA-256 of the
//! state directory's real path (every hook with the same `state-dir` finds the same one; two
//! state directories never share one). The state directory gets a link `control` to it, for
//! people and scripts; the hook never follows it.
//!
//! Another local user cannot take it over: `<runtime>` and the directory in it are used only
//! when `nwh_files::private` finds them, without following links, owned by the hook's user,
//! mode 0700 (nobody else may even look up names in them), reached through directories only
//! root or we can change. Only root can make anything in `/run`; in `/tmp` another user can make
//! `/tmp/nwh-<uid>` before us, and such a directory (or a link there, or one others can open) is
//! refused, with its owner and mode and the fix, never used: ssh then fails for that hook with
//! that reason, rather than give its sockets to someone else. The warm-session keeper's socket
//! ([`super::warm`]) lives beside the control sockets.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nwh_files::private::{Access, PrivateDir};

use super::target::{Target, Via};
use sha2::{Digest, Sha256};

/// SSH settings that are not in the machines file.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// The hook's state directory: the control sockets' directory is named after it.
    pub state: PathBuf,
    /// Where the control sockets' directories are made ([`runtime_dir`] but in tests).
    pub runtime: PathBuf,
    pub connect_timeout: Duration,
    pub persist: Duration,
}

/// Control sockets of the hook's state directory, where every hook finds them.
impl From<&nwh_options::Options> for SshOptions {
    fn from(opts: &nwh_options::Options) -> SshOptions {
        SshOptions {
            state: opts.state_dir(),
            runtime: runtime_dir(),
            connect_timeout: opts.connect_timeout(),
            persist: Duration::from_secs(600),
        }
    }
}

/// Where the directories of control sockets are made: `/run/nix-wasm-hook` for root (only root
/// can make anything in `/run`), `/tmp/nwh-<uid>` for another user.
pub fn runtime_dir() -> PathBuf {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/nix-wasm-hook")
    } else {
        PathBuf::from(format!("/tmp/nwh-{}", uid.as_raw()))
    }
}

/// The name, in the link the state directory has to it, of the control sockets' directory.
pub const CONTROL_LINK: &str = "control";

/// The directory of the control sockets (and of the keeper's socket) of `opts.state`, made
/// when absent, checked as only ours ([module docs](self)).
pub fn control_dir(opts: &SshOptions) -> Result<PrivateDir> {
    let state = PrivateDir::create(&opts.state, Access::Secret)
        .context("the hook's state directory (option state-dir) cannot hold SSH control sockets")?;
    let runtime = PrivateDir::create(&opts.runtime, Access::Secret)
        .context("the directory of the hook's SSH control sockets cannot be used")?;
    let name =
        nwh_nar::hash::base16_encode(&Sha256::digest(state.path().as_os_str().as_encoded_bytes())[..8]);
    let dir = runtime
        .subdir(&name, Access::Secret)
        .context("the directory of the hook's SSH control sockets cannot be used")?;
    link_from_state(&state, dir.path());
    Ok(dir)
}

/// `STATE/control` → the control sockets' directory, for people and scripts (ending the
/// masters a test or demo started); made again only when it points elsewhere.
fn link_from_state(state: &PrivateDir, to: &Path) {
    if rustix::fs::readlinkat(state, CONTROL_LINK, Vec::new())
        .is_ok_and(|l| l.as_bytes() == to.as_os_str().as_encoded_bytes())
    {
        return;
    }
    let _ = state.remove(CONTROL_LINK);
    let _ = rustix::fs::symlinkat(to, state, CONTROL_LINK);
}

/// A live master for one builder; for a target that runs here, only the way to start its
/// store program.
#[derive(Clone, Debug)]
pub struct Connection {
    pub target: Target,
    /// The control socket; none for a target that runs here.
    pub socket: Option<PathBuf>,
    /// Settings for the store program of a local store, started here (`NIX_CONFIG` lines,
    /// after the inherited ones): see [`Connection::with_settings`].
    pub nix_config: Vec<String>,
}

/// Why a builder could not be reached, in ssh's own words.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to '{host}': {reason}")]
pub struct Unreachable {
    pub host: String,
    pub reason: String,
}

/// Returns a running master for `target`, reusing one another hook process started; for a
/// target that runs here, nothing to start.
pub fn connect(target: &Target, opts: &SshOptions) -> Result<Connection> {
    if target.via == Via::Here {
        // Found before the build is accepted, as Nix's hook starts it before it accepts: a
        // builder whose program is not here is skipped for the next one, not a failed build.
        let words = nwh_machines::program_words(&target.remote_program);
        let program = words.first().copied().unwrap_or_default();
        if !findable(program) {
            return Err(Unreachable {
                host: target.display(),
                reason: format!(
                    "its store program `{program}` is not an executable file{}",
                    if program.contains('/') { String::new() } else { " in the PATH".to_string() }
                ),
            }
            .into());
        }
        // A local store's program gets what Nix's hook sets for one ([`Connection::with_settings`]).
        let nix_config = if target.is_local_store() { vec!["max-jobs = 1".into()] } else { Vec::new() };
        return Ok(Connection { target: target.clone(), socket: None, nix_config });
    }
    // Whoever can reach a control socket runs commands on the builder as us.
    let dir = control_dir(opts)?;
    let name = target.key();
    let socket = dir.join(&format!("{name}.sock"));
    // One process launches while the others wait, so a builder gets one master, not several.
    let lock = dir.open_lock(&format!("{name}.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let conn = Connection { target: target.clone(), socket: Some(socket.clone()), nix_config: Vec::new() };
    if alive(&socket) {
        return Ok(conn);
    }
    dir.remove(&format!("{name}.sock"))?;
    launch(target, opts, &dir, &name, &socket)?;
    drop(lock);
    Ok(conn)
}

/// Whether `program` names an executable file: as a path, or in the PATH as `execvp` looks.
fn findable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.is_empty() {
        return false;
    }
    if program.contains('/') {
        return executable(Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|dir| executable(&dir.join(program)))
}

fn ssh_base(target: &Target, socket: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-S").arg(socket);
    if let Some(u) = &target.user {
        c.arg("-l").arg(u);
    }
    if let Some(p) = target.port {
        c.arg("-p").arg(p.to_string());
    }
    c
}

impl Connection {
    /// `e`, with why the connection went when the master is gone: ssh gave the builder up
    /// (its keepalives went unanswered for a minute, the network went down), in ssh's own
    /// words from the master's log. A build that failed so would otherwise say only that the
    /// connection closed.
    pub fn with_loss(&self, e: anyhow::Error) -> anyhow::Error {
        let Some(socket) = &self.socket else { return e };
        if alive(socket) {
            return e;
        }
        let said = fs::read_to_string(socket.with_extension("log")).unwrap_or_default();
        let last = said.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("its ssh master ended");
        e.context(format!("the SSH connection to '{}' was lost: {last}", self.target.display()))
    }
}

/// A master listens on its control socket while it lives; a socket file left by one that died
/// refuses the connection. (Asking with `ssh -O check` costs a process, ~15 ms a build on a
/// busy machine.)
fn alive(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

fn launch(target: &Target, opts: &SshOptions, dir: &PrivateDir, name: &str, socket: &Path) -> Result<()> {
    let log = dir.join(&format!("{name}.log"));
    dir.remove(&format!("{name}.log"))?;
    let mut c = ssh_base(target, socket);
    c.args(["-M", "-f", "-N", "-x", "-a"])
        .arg("-E")
        .arg(&log)
        .arg("-o")
        .arg(format!("ControlPersist={}", opts.persist.as_secs().max(1)))
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("ConnectTimeout={}", opts.connect_timeout.as_secs().max(1)))
        .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "TCPKeepAlive=yes"]);
    if let Some(k) = &target.key {
        c.args(["-o", "IdentitiesOnly=yes"]).arg("-i").arg(k);
    }
    if target.compress {
        c.arg("-C");
    }
    if let Some(line) = &target.host_key {
        let known = format!("{name}.known_hosts");
        dir.write_atomically(&known, format!("{} {line}\n", target.known_hosts_name()).as_bytes())?;
        let path = dir.join(&known);
        c.arg("-o").arg(format!("UserKnownHostsFile={}", path.display()));
    }
    // `--` so that no host name is ever read as an option; no command, so no shell remotely.
    c.arg("--").arg(&target.host);
    // The master outlives this process; it must not hold Nix's pipes (stdio is null here, and
    // fds 3–5 were made close-on-exec at start), or Nix would wait for EOF forever.
    let status =
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().context("running ssh")?;
    if status.success() && socket.exists() {
        return Ok(());
    }
    let said = fs::read_to_string(&log).unwrap_or_default();
    if let (Some(expected), Some(offered)) = (&target.host_key, offered_fingerprint(&said)) {
        return Err(Unreachable {
            host: target.display(),
            reason: format!(
                "its host key is {offered}, but the machines file (column 8) expects {}; if the builder \
                 was reinstalled, put its new key (base64 of its /etc/ssh/ssh_host_*_key.pub line) in that column",
                fingerprint(expected).unwrap_or_else(|| "an unreadable key".into())
            ),
        }
        .into());
    }
    // ssh's banner of @ signs says nothing; its sentences do.
    let reason = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect::<Vec<_>>()
        .join(" ");
    let reason = match (reason.is_empty(), super::advice::advice(&reason, target)) {
        (true, _) => format!("ssh exited with {status}"),
        (false, Some(advice)) => format!("{reason} — {advice}"),
        (false, None) => reason,
    };
    Err(Unreachable { host: target.display(), reason }.into())
}

/// A command running on the builder (or here, for a target that runs here), with our ends of
/// its stdin and stdout as plain blocking pipes; its stderr goes where the caller said (fd 4,
/// the build log, for builds).
pub struct Remote {
    pub stdin: std::io::PipeWriter,
    pub stdout: std::io::PipeReader,
    child: RemoteChild,
}

enum RemoteChild {
    Ssh(Box<(openssh::Child<std::sync::Arc<openssh::Session>>, tokio::runtime::Runtime)>),
    Here(std::process::Child),
}

impl Connection {
    /// Starts `program args…` on the builder through the master, or here as a child. Arguments
    /// are escaped by the openssh crate, and a child here gets them as they are, without a
    /// shell: nothing from the machines file reaches a shell unquoted.
    pub fn spawn(&self, program: &str, args: &[&str], stderr: OwnedFd) -> Result<Remote> {
        match &self.socket {
            Some(socket) => spawn_through(socket, program, args, stderr),
            None => spawn_here(program, args, stderr, &self.nix_config),
        }
    }

    /// This master with the settings Nix sent the hook (its settings block) for the store
    /// program of a local store, as Nix's own hook builds on a local store in its own process,
    /// with its parent's settings: each one set in the block, but `builders`, `build-hook`,
    /// `store` and `max-jobs`, and `max-jobs = 1` (Nix's hook sets it so, "to make tests with
    /// local?root= work": a `max-jobs = 0` master still builds there). A value of more than one
    /// line is left out (`NIX_CONFIG` is read by lines). An `ssh://localhost` line's program
    /// gets none of them, as from Nix: it is the builder's own, reading its own configuration.
    pub fn with_settings(&self, settings: &nwh_nixconf::Settings) -> Connection {
        if !self.target.is_local_store() {
            return self.clone();
        }
        let mut lines: Vec<String> = settings
            .iter()
            .filter(|(name, _)| settings.origin(name) == Some(&nwh_nixconf::Origin::Block))
            .filter(|(name, value)| {
                !matches!(*name, "builders" | "build-hook" | "store" | "max-jobs") && !value.contains('\n')
            })
            .map(|(name, value)| format!("{name} = {value}"))
            .collect();
        lines.push("max-jobs = 1".into());
        Connection { nix_config: lines, ..self.clone() }
    }
}

/// `program args…` here, as a child on our pipes, in `/` (where Nix starts its hook), with
/// `nix_config` after the inherited `NIX_CONFIG`; `program` is split into words, as Nix does.
fn spawn_here(program: &str, args: &[&str], stderr: OwnedFd, nix_config: &[String]) -> Result<Remote> {
    let (our_out, their_out) = std::io::pipe()?;
    let (their_in, our_in) = std::io::pipe()?;
    let mut config: Vec<String> = std::env::var("NIX_CONFIG").ok().into_iter().collect();
    config.extend(nix_config.iter().cloned());
    // Words, as Nix runs a remote-program here (2.8 through `bash -c`, 2.34 as a list).
    let words = nwh_machines::program_words(program);
    let (program, leading) = words.split_first().context("an empty remote-program")?;
    let mut command = Command::new(program);
    command.args(leading);
    if !config.is_empty() {
        command.env("NIX_CONFIG", config.join("\n"));
    }
    let child = command
        .args(args)
        .current_dir("/")
        .stdin(their_in)
        .stdout(their_out)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting `{program}` here"))?;
    Ok(Remote { stdin: our_in, stdout: our_out, child: RemoteChild::Here(child) })
}

/// [`Connection::spawn`] through the master listening on `socket`.
pub fn spawn_through(socket: &Path, program: &str, args: &[&str], stderr: OwnedFd) -> Result<Remote> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let session =
        std::sync::Arc::new(openssh::Session::resume_mux(socket.to_path_buf().into_boxed_path(), None));
    let (our_out, their_out) = std::io::pipe()?;
    let (their_in, our_in) = std::io::pipe()?;
    let child = runtime.block_on(async {
        openssh::Session::to_command(session.clone(), program)
            .args(args)
            .stdin(OwnedFd::from(their_in))
            .stdout(OwnedFd::from(their_out))
            .stderr(stderr)
            .spawn()
            .await
    })?;
    Ok(Remote { stdin: our_in, stdout: our_out, child: RemoteChild::Ssh(Box::new((child, runtime))) })
}

impl Remote {
    /// Closes stdin and waits for the remote command to end.
    pub fn finish(self) -> Result<std::process::ExitStatus> {
        let Remote { stdin, stdout, child } = self;
        drop(stdin);
        drop(stdout);
        match child {
            RemoteChild::Ssh(ssh) => {
                let (child, runtime) = *ssh;
                Ok(runtime.block_on(child.wait())?)
            }
            RemoteChild::Here(mut child) => Ok(child.wait()?),
        }
    }
}

/// OpenSSH's fingerprint of a key line (`ssh-ed25519 AAAA… [comment]`): SHA256 of the key
/// blob, base64 without padding.
pub fn fingerprint(key_line: &str) -> Option<String> {
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD.decode(key_line.split_whitespace().nth(1)?).ok()?;
    Some(format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))))
}

/// The fingerprint ssh reports for the key the host offered when it does not match.
fn offered_fingerprint(ssh_log: &str) -> Option<String> {
    if !ssh_log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return None;
    }
    let word = ssh_log.split_whitespace().find(|w| w.starts_with("SHA256:"))?;
    Some(word.trim_end_matches('.').to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // `ssh-keygen -lf` of this key prints SHA256:ZP9ekP0qMv2GCDfDy3e/MxuGDv2qMmThoqbT1xZ3oHA.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr3iInSmWdR8tapsb9+3p6bE38cY3SnEQYfcb6aXGCJ";
        let fp = fingerprint(line).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .args(["-lf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        if let Ok(mut child) = out {
            child.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
            let text = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
            assert!(text.contains(&fp), "{text} vs {fp}");
        }
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='));
    }
}
