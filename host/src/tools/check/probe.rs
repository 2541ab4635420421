//! Checking builders as the hook uses them: with its SSH, a bounded number at once, each
//! within a deadline; what each line declares compared with what the builder's Nix is.

use crate::transfer::local_store::LocalStore;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Result;
use nwh_machines::Machine;

use super::builder_line;
use super::report::{Report, Status};
use crate::transfer::ssh::{self, Connection, SshOptions};
use crate::transfer::target::{self, Target};

/// How many builders are checked at once: each check is an ssh connection (and processes on
/// both ends), so a machines file of thousands must not open thousands at a time.
const AT_ONCE: usize = 16;

/// Every builder, [`AT_ONCE`] at a time, each within a deadline from when its check starts: a
/// builder that accepts the connection but never answers (a frozen machine, a hung
/// `nix-store`) must not hang `check`. A check past its deadline is left running (the process
/// ends after the report), reported as such, and another worker takes its place. A
/// builder-mode line is checked against `real`, the real builders behind it. A builder whose
/// store is the master's own (`master_store`, the one Nix's `store` setting names) is unusable.
pub(super) fn check_all(
    machines: &[Machine],
    ssh_opts: &SshOptions,
    real: Option<&nwh_machines::Machines>,
    master_store: &LocalStore,
) -> Vec<Report> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Instant;

    enum Event {
        Started(usize),
        Done(usize, Box<Report>),
    }
    let limit = ssh_opts.connect_timeout + CHECK_GRACE;
    let shared = Arc::new((
        machines.to_vec(),
        (ssh_opts.clone(), master_store.clone()),
        real.cloned(),
        AtomicUsize::new(0),
    ));
    let (tx, rx) = mpsc::channel();
    let worker = || {
        let (shared, tx) = (Arc::clone(&shared), tx.clone());
        std::thread::spawn(move || {
            let (machines, (opts, master_store), real, next) = &*shared;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(m) = machines.get(i) else { return };
                if tx.send(Event::Started(i)).is_err() {
                    return;
                }
                // The whole remote-program, as Nix runs it: the program and its words.
                let report = match m.builder_mode_program().and(m.runs_here()) {
                    Some(program) => builder_line::check(m, &program, real.as_ref()),
                    None => check_machine(m, opts, master_store),
                };
                if tx.send(Event::Done(i, Box::new(report))).is_err() {
                    return;
                }
            }
        });
    };
    for _ in 0..AT_ONCE.min(machines.len()) {
        worker();
    }
    let mut reports: Vec<Option<Report>> = machines.iter().map(|_| None).collect();
    let mut running: Vec<(usize, Instant)> = Vec::new();
    let mut left = machines.len();
    while left > 0 {
        let wait =
            running.iter().map(|(_, since)| (*since + limit).saturating_duration_since(Instant::now())).min();
        match rx.recv_timeout(wait.unwrap_or(limit)) {
            Ok(Event::Started(i)) => running.push((i, Instant::now())),
            Ok(Event::Done(i, report)) => {
                running.retain(|(r, _)| *r != i);
                if reports[i].is_none() {
                    reports[i] = Some(*report);
                    left -= 1;
                }
            }
            Err(_) => {
                let now = Instant::now();
                for (i, _) in running.iter().filter(|(_, since)| now >= *since + limit) {
                    reports[*i] = Some(no_answer(&machines[*i], limit));
                    left -= 1;
                    worker();
                }
                running.retain(|(_, since)| now < *since + limit);
            }
        }
    }
    reports.into_iter().map(|r| r.expect("every machine has a report")).collect()
}

fn no_answer(m: &Machine, limit: std::time::Duration) -> Report {
    let mut r = Report::new(m);
    r.add(
        Status::Unusable,
        format!("no answer within {} s: the connection or Nix on the builder hangs", limit.as_secs()),
        "is the builder overloaded or stopped (a frozen VM)? Does `ssh HOST nix-store --version` return?",
    );
    r
}

/// How long a builder's checks may take once connected (handshakes and three commands).
const CHECK_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

fn check_machine(m: &Machine, ssh_opts: &SshOptions, master_store: &LocalStore) -> Report {
    let mut r = Report::new(m);
    let Some(target) = target_of(m, &mut r) else { return r };
    if let Some(why) = target.on_master_store(master_store) {
        r.add(Status::Unusable, why, format!("remove {} or give it a store of its own", r.line));
        return r;
    }
    let ng = target.protocol == target::Protocol::Daemon;
    r.facts.host_key = match target.via {
        target::Via::Ssh => host_key_source(&target, &mut r),
        // As the hook runs it, and Nix's own hook: a child here, on the same pipes.
        target::Via::Here => "not used: its store program runs on this machine, without ssh".into(),
    };
    let key_unknown = r.status == Status::Unusable;
    let conn = match ssh::connect(&target, ssh_opts) {
        Ok(conn) => conn,
        // ssh's words would only repeat the problem already named.
        Err(e) if key_unknown && format!("{e:#}").contains("Host key verification failed") => return r,
        Err(e) => {
            r.add(Status::Unusable, format!("{e:#}"), "");
            return r;
        }
    };
    if ng {
        check_daemon(&conn, &target, &mut r);
    } else {
        check_serve(&conn, &target, &mut r);
    }
    // A daemon's `nix-store` sits beside it, as `nix` does beside `nix-store`.
    let program =
        if ng { sibling(&target.remote_program, "nix-store") } else { target.remote_program.clone() };
    check_version(&conn, &program, &mut r);
    // A local store's features are the line's own: the hook passes them as its
    // `system-features`, as Nix's hook does, whatever the configuration says.
    if !target.is_local_store() {
        compare_config(m, &conn, &program, &mut r);
    }
    r
}

/// Where and how the hook would reach `m`, with what its line says wrong before connecting;
/// none when it cannot be reached at all.
fn target_of(m: &Machine, r: &mut Report) -> Option<Target> {
    if m.builder_mode_program().is_some() {
        r.add(Status::Unusable, target::BUILDER_MODE_LINE, format!("remove {} from this list", r.line));
        return None;
    }
    if m.max_jobs == 0 {
        r.add(
            Status::Warning,
            "max-jobs (column 4) is 0: it never takes a build, and derivations only it can build wait forever",
            format!("set column 4 of {} to 1 or more", r.line),
        );
    }
    match Target::from_machine(m) {
        Ok(t) => Some(t),
        Err(e) => {
            r.add(
                Status::Unusable,
                format!("{e:#}"),
                "use an ssh:// or ssh-ng:// URI or a local store, with the parameters named",
            );
            None
        }
    }
}

/// An ssh-ng builder: its nix-daemon answers, and trusts the user the hook logs in as.
fn check_daemon(conn: &Connection, target: &Target, r: &mut Report) {
    let greeting = match daemon_handshake(conn, target) {
        Ok(greeting) => greeting,
        Err(e) => {
            r.add(
                Status::Unusable,
                format!("`{} --stdio` does not answer: {e:#}", target.remote_program),
                INSTALL_FIX,
            );
            return;
        }
    };
    r.facts.protocol = Some(greeting.describe());
    if greeting.trusted == Some(false) {
        let user = target.user.clone().unwrap_or_else(|| "root".into());
        r.add(
            Status::Warning,
            format!(
                "the builder's nix-daemon does not trust {user}, the user the hook logs in as: \
                 derivations are sent and built by path, as Nix's hook does, but inputs built \
                 on this machine are refused unless signed by a key the builder trusts"
            ),
            format!("add {user} to `trusted-users` in the builder's nix.conf and restart its nix-daemon"),
        );
    }
}

/// An ssh builder: its `nix-store --serve` answers.
fn check_serve(conn: &Connection, target: &Target, r: &mut Report) {
    match serve_handshake(conn, target) {
        Ok(v) => r.facts.protocol = Some(format!("serve protocol {}.{}", v >> 8, v & 0xff)),
        Err(e) => r.add(
            Status::Unusable,
            format!("`{} --serve` does not answer: {e:#}", target.remote_program),
            INSTALL_FIX,
        ),
    }
}

/// Which Nix the builder runs, as its `nix-store --version` says.
fn check_version(conn: &Connection, program: &str, r: &mut Report) {
    match run_remote(conn, program, &["--version"]) {
        // `nix-store (Nix) 2.8.0` → `Nix 2.8.0`; Lix says `nix-store (Lix, like Nix) 2.93.0`.
        Ok(v) => {
            let v = v.trim();
            let flavour = if v.contains("Lix") { "Lix" } else { "Nix" };
            r.facts.nix_version = Some(format!("{flavour} {}", v.rsplit(' ').next().unwrap_or(v)));
        }
        Err(e) => r.add(Status::Warning, format!("`{program} --version` failed: {e:#}"), ""),
    }
}

const INSTALL_FIX: &str = "is Nix installed on the builder, and on the PATH of a non-interactive ssh \
    session (`ssh HOST nix-store --version`)? If not, give its path with ?remote-program=/nix/var/nix/profiles/default/bin/nix-store in the URI";

/// Where the host key comes from, as ssh will look for it; a key only the invoking user's
/// own known_hosts has (the classic "works for me, not for the daemon") is a problem.
fn host_key_source(target: &Target, r: &mut Report) -> String {
    if let Some(line) = &target.host_key {
        return format!("column 8 ({})", ssh::fingerprint(line).unwrap_or_else(|| "unreadable".into()));
    }
    let name = match target.port {
        Some(p) if p != 22 => format!("[{}]:{p}", target.host),
        _ => target.host.clone(),
    };
    let own_home = home(&rustix::process::geteuid().as_raw().to_string());
    let own = own_home.as_ref().map(|h| format!("{h}/.ssh/known_hosts"));
    let files: Vec<String> = own.iter().cloned().chain(["/etc/ssh/ssh_known_hosts".to_string()]).collect();
    if let Some(f) = files.iter().find(|f| known_in(&name, f)) {
        return f.clone();
    }
    let mut problem = format!("the host key of {name} is in neither {}", files.join(" nor "));
    if let Some(user) = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty() && u != "root") {
        if let Some(h) = home(&user) {
            let theirs = format!("{h}/.ssh/known_hosts");
            if known_in(&name, &theirs) {
                problem += &format!(
                    "; {user}'s own {theirs} has it (you accepted it as yourself, but the hook runs ssh as root)"
                );
            }
        }
    }
    r.add(
        Status::Unusable,
        problem,
        format!(
            "put the key in column 8 of {} (`ssh-keyscan -t ed25519 {} | cut -d' ' -f2- | base64 -w0`), or \
             accept it once as root (`sudo ssh {} true`)",
            r.line,
            target.host,
            target.display()
        ),
    );
    "none known".into()
}

fn known_in(name: &str, file: &str) -> bool {
    Path::new(file).exists()
        && std::process::Command::new("ssh-keygen")
            .args(["-F", name, "-f", file])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The home directory of a user, by name or by uid: ssh takes it from the password database,
/// not from $HOME.
fn home(user_or_uid: &str) -> Option<String> {
    home_in(&std::fs::read_to_string("/etc/passwd").ok()?, user_or_uid)
}

fn home_in(passwd: &str, user_or_uid: &str) -> Option<String> {
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && (f[0] == user_or_uid || f[2] == user_or_uid))?;
    Some(entry[5].to_string())
}

fn stderr_pipe() -> Result<(OwnedFd, std::io::PipeReader)> {
    let (r, w) = std::io::pipe()?;
    Ok((OwnedFd::from(w), r))
}

fn serve_handshake(conn: &Connection, target: &Target) -> Result<u64> {
    let (err_w, mut err_r) = stderr_pipe()?;
    let remote = conn.spawn(&target.remote_program, &target.store_args(false), err_w)?;
    let (stdout, stdin) = (remote.stdout.try_clone()?, remote.stdin.try_clone()?);
    let result =
        nwh_serve::ServeClient::handshake(target.display(), stdout, stdin).map(|c| c.remote_version());
    let _ = remote.finish();
    result.map_err(|e| with_what_it_said(e, &mut err_r))
}

/// A failed greeting, with what the remote program wrote on its stderr (why it failed).
fn with_what_it_said(e: impl std::fmt::Display, stderr: &mut std::io::PipeReader) -> anyhow::Error {
    let mut said = String::new();
    let _ = stderr.read_to_string(&mut said);
    anyhow::anyhow!(
        "{e}{}",
        if said.trim().is_empty() { String::new() } else { format!(": {}", said.trim()) }
    )
}

/// What a daemon said of itself in the worker protocol's greeting.
struct DaemonGreeting {
    version: u64,
    trusted: Option<bool>,
}

impl DaemonGreeting {
    fn describe(&self) -> String {
        let trust = match self.trusted {
            Some(true) => ", trusted",
            Some(false) => ", not trusted",
            None => "",
        };
        format!("nix-daemon protocol {}.{}{trust}", self.version >> 8, self.version & 0xff)
    }
}

/// The worker protocol's greeting (`nix-daemon --stdio`, what ssh-ng:// speaks).
fn daemon_handshake(conn: &Connection, target: &Target) -> Result<DaemonGreeting> {
    let (err_w, mut err_r) = stderr_pipe()?;
    let remote = conn.spawn(&target.remote_program, &target.store_args(false), err_w)?;
    let (stdout, stdin) = (remote.stdout.try_clone()?, remote.stdin.try_clone()?);
    let greeting = nwh_daemon::DaemonClient::handshake(target.display(), stdout, stdin)
        .map(|c| DaemonGreeting { version: c.remote_version(), trusted: c.trusted() });
    let _ = remote.finish();
    greeting.map_err(|e| with_what_it_said(e, &mut err_r))
}

/// Runs a command through the master and returns its standard output; its standard error
/// becomes the error when it fails.
fn run_remote(conn: &Connection, program: &str, args: &[&str]) -> Result<String> {
    let (err_w, mut err_r) = stderr_pipe()?;
    let mut remote = conn.spawn(program, args, err_w)?;
    let mut out = String::new();
    remote.stdout.read_to_string(&mut out)?;
    let status = remote.finish()?;
    let mut said = String::new();
    let _ = err_r.read_to_string(&mut said);
    anyhow::ensure!(status.success(), "{} ({status})", said.lines().next().unwrap_or("no message"));
    Ok(out)
}

/// The program `name` in the directory of `program` when that is given as a path (Nix's
/// commands are installed side by side), else `name` from the PATH.
fn sibling(program: &str, name: &str) -> String {
    match program.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// The builder's `system`, `extra-platforms` and `system-features`, against the line.
fn compare_config(m: &Machine, conn: &Connection, program: &str, r: &mut Report) {
    let nix = sibling(program, "nix");
    let json = match run_remote(
        conn,
        &nix,
        &["--extra-experimental-features", "nix-command", "show-config", "--json"],
    ) {
        Ok(j) => j,
        Err(e) => {
            r.add(
                Status::Warning,
                format!("could not read the builder's configuration (`{nix} show-config --json`): {e:#}"),
                "the systems and features of the line were not checked",
            );
            return;
        }
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&json) else {
        r.add(Status::Warning, "the builder's `nix show-config --json` is not JSON", "");
        return;
    };
    let value = |name: &str| -> Vec<String> {
        match &config[name]["value"] {
            serde_json::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    let system = value("system").into_iter().next();
    let extra = value("extra-platforms");
    let features: BTreeSet<String> = value("system-features").into_iter().collect();
    let systems: BTreeSet<&str> = system.iter().chain(&extra).map(String::as_str).collect();
    for s in &m.systems {
        if !systems.contains(s.as_str()) {
            let hint = crate::core::hints::nearest(s, systems.iter().copied())
                .map_or(String::new(), |n| format!(" (did you mean `{n}`?)"));
            r.add(
                Status::Warning,
                format!(
                    "the line declares system `{s}`, which the builder does not build (it builds {}); builds for it would fail there",
                    systems.iter().copied().collect::<Vec<_>>().join(", ")
                ),
                format!("remove `{s}` from column 2 of {}{hint}, or add it to the builder's extra-platforms", r.line),
            );
        }
    }
    for f in m.supported_features.iter().chain(&m.mandatory_features) {
        if !features.contains(f) {
            let hint = crate::core::hints::nearest(f, features.iter().map(String::as_str))
                .map_or(String::new(), |n| format!(" (did you mean `{n}`?)"));
            r.add(
                Status::Warning,
                format!(
                    "the line declares feature `{f}`, which the builder's system-features lack ({}); builds requiring it would fail there",
                    features.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                format!("correct columns 6–7 of {}{hint}, or add `{f}` to the builder's system-features", r.line),
            );
        }
    }
    r.facts.system = system;
    r.facts.extra_platforms = extra;
    r.facts.system_features = features.into_iter().collect();
}

#[cfg(test)]
mod tests {
    use super::home_in;

    #[test]
    fn homes_by_name_or_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\n";
        assert_eq!(home_in(passwd, "alice").as_deref(), Some("/home/alice"));
        assert_eq!(home_in(passwd, "0").as_deref(), Some("/root"));
        assert_eq!(home_in(passwd, "bob"), None);
    }
}
