//! SSH to a builder: one multiplexed master per builder, shared by every hook process on this
//! machine through a control socket keyed by how we connect, so that a new hook answers
//! without a fresh SSH handshake (Nix's own hook spends ~0.4 s connecting per build while the
//! whole scheduler waits, NixOS/nix#3651).

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nwh_files::private::{Access, PrivateDir};

use super::target::Target;
use sha2::{Digest, Sha256};

/// SSH settings that are not in the machines file.
#[derive(Clone, Debug)]
pub struct SshOptions {
    pub dir: PathBuf,
    pub connect_timeout: Duration,
    pub persist: Duration,
}

/// Control sockets in the hook's state directory, where every hook finds them.
impl From<&nwh_options::Options> for SshOptions {
    fn from(opts: &nwh_options::Options) -> SshOptions {
        SshOptions {
            dir: opts.state_dir().join("ssh"),
            connect_timeout: opts.connect_timeout(),
            persist: Duration::from_secs(600),
        }
    }
}

/// A live master for one builder.
pub struct Master {
    pub target: Target,
    pub socket: PathBuf,
}

/// Why a builder could not be reached, in ssh's own words.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to '{host}': {reason}")]
pub struct Unreachable {
    pub host: String,
    pub reason: String,
}

/// Returns a running master for `target`, reusing one another hook process started.
pub fn master(target: &Target, opts: &SshOptions) -> Result<Master> {
    // Whoever can reach a control socket runs commands on the builder as us.
    let dir = crate::state_dir::subdir(&opts.dir, Access::Secret)
        .context("the hook's state directory (option state-dir) cannot hold SSH control sockets")?;
    let name = target.key();
    let socket = dir.join(&format!("{name}.sock"));
    // One process launches while the others wait, so a builder gets one master, not several.
    let lock = dir.open_lock(&format!("{name}.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    if alive(&socket) {
        return Ok(Master { target: target.clone(), socket });
    }
    dir.remove(&format!("{name}.sock"))?;
    launch(target, opts, &dir, &name, &socket)?;
    drop(lock);
    Ok(Master { target: target.clone(), socket })
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

impl Master {
    /// `e`, with why the connection went when the master is gone: ssh gave the builder up
    /// (its keepalives went unanswered for a minute, the network went down), in ssh's own
    /// words from the master's log. A build that failed so would otherwise say only that the
    /// connection closed.
    pub fn with_loss(&self, e: anyhow::Error) -> anyhow::Error {
        if alive(&self.socket) {
            return e;
        }
        let said = fs::read_to_string(self.socket.with_extension("log")).unwrap_or_default();
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

/// A command running on the builder, with our ends of its stdin and stdout as plain
/// blocking pipes; its stderr goes where the caller said (fd 4, the build log, for builds).
pub struct Remote {
    pub stdin: std::io::PipeWriter,
    pub stdout: std::io::PipeReader,
    child: openssh::Child<std::sync::Arc<openssh::Session>>,
    runtime: tokio::runtime::Runtime,
}

impl Master {
    /// Starts `program args…` on the builder through the master. Arguments are escaped by the
    /// openssh crate: nothing from the machines file reaches a shell unquoted.
    pub fn spawn(&self, program: &str, args: &[&str], stderr: OwnedFd) -> Result<Remote> {
        spawn_through(&self.socket, program, args, stderr)
    }
}

/// [`Master::spawn`] through the master listening on `socket`.
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
    Ok(Remote { stdin: our_in, stdout: our_out, child, runtime })
}

impl Remote {
    /// Closes stdin and waits for the remote command to end.
    pub fn finish(self) -> Result<std::process::ExitStatus> {
        let Remote { stdin, stdout, child, runtime } = self;
        drop(stdin);
        drop(stdout);
        Ok(runtime.block_on(child.wait())?)
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
