//! A fake Nix parent: plays Nix's side of the build-hook protocol against the real binary,
//! with the bytes Nix 2.8, 2.26 and 2.34 really sent (tests/fixtures/captures), so protocol
//! tests are fast and need no Nix. The end-to-end tests on the test bed are what show
//! compatibility.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// A recorded stdin stream split into what Nix sent at each step.
#[derive(Clone, Debug)]
pub struct Capture {
    pub settings: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub enum Step {
    /// A `try` message (raw bytes) and its decoded fields.
    Try { raw: Vec<u8>, system: String, drv_path: String, features: Vec<String>, am_willing: bool },
    /// The inputs and wanted outputs sent after `# accept` (raw bytes).
    Accepted { raw: Vec<u8>, inputs: Vec<String>, outputs: Vec<String> },
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.b[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        let s = String::from_utf8(self.b[self.pos..self.pos + n].to_vec()).unwrap();
        self.pos += n.div_ceil(8) * 8;
        s
    }
    fn strings(&mut self) -> Vec<String> {
        (0..self.u64()).map(|_| self.string()).collect()
    }
    fn at_try(&self) -> bool {
        self.b.len() >= self.pos + 16
            && self.b[self.pos..self.pos + 16] == *b"\x03\0\0\0\0\0\0\0try\0\0\0\0\0"
    }
}

impl Capture {
    pub fn read(path: &Path) -> Capture {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut c = Cursor { b: &bytes, pos: 0 };
        let mut settings = Vec::new();
        while c.u64() == 1 {
            let name = c.string();
            settings.push((name, c.string()));
        }
        let mut steps = Vec::new();
        while c.pos < bytes.len() {
            let start = c.pos;
            if c.at_try() {
                c.string();
                let am_willing = c.u64() == 1;
                let system = c.string();
                let drv_path = c.string();
                let features = c.strings();
                steps.push(Step::Try {
                    raw: bytes[start..c.pos].to_vec(),
                    system,
                    drv_path,
                    features,
                    am_willing,
                });
            } else {
                let inputs = c.strings();
                let outputs = c.strings();
                steps.push(Step::Accepted { raw: bytes[start..c.pos].to_vec(), inputs, outputs });
            }
        }
        Capture { settings, steps }
    }

    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The settings block with some values replaced (or added), encoded as Nix does.
    pub fn settings_block(&self, overrides: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (n, v) in &self.settings {
            let v = overrides.iter().find(|(o, _)| o == n).map(|(_, v)| *v).unwrap_or(v);
            seen.push(n.as_str());
            record(&mut out, n, v);
        }
        for (n, v) in overrides {
            if !seen.contains(n) {
                record(&mut out, n, v);
            }
        }
        out.extend_from_slice(&0u64.to_le_bytes());
        out
    }
}

/// A settings block holding just `pairs`, encoded as Nix does.
pub fn settings_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in pairs {
        record(&mut out, n, v);
    }
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

fn record(out: &mut Vec<u8>, n: &str, v: &str) {
    out.extend_from_slice(&1u64.to_le_bytes());
    put_string(out, n.as_bytes());
    put_string(out, v.as_bytes());
}

pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

pub fn try_message(am_willing: bool, system: &str, drv: &str, features: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    put_string(&mut out, b"try");
    out.extend_from_slice(&(am_willing as u64).to_le_bytes());
    put_string(&mut out, system.as_bytes());
    put_string(&mut out, drv.as_bytes());
    out.extend_from_slice(&(features.len() as u64).to_le_bytes());
    for f in features {
        put_string(&mut out, f.as_bytes());
    }
    out
}

/// What the hook said for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Accept(String),
    Decline,
    DeclinePermanently,
    Postpone,
}

/// The hook under test, started as Nix starts it: cwd `/`, stdout and stderr one pipe,
/// verbosity as the last argument, a private nix.conf dir and current-load dir.
pub struct Hook {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<std::io::PipeReader>,
    /// `@nix` lines seen so far (log messages), in order.
    pub log: Vec<String>,
    /// Plain lines seen so far (Nix copies them to its stderr).
    pub plain: Vec<String>,
}

/// One policy cache for every hook the tests start, so the default policy is compiled once
/// per test run, as it is once per machine in real use.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-cache")
}

pub struct HookEnv {
    pub dir: tempfile::TempDir,
    /// Connect to the chosen builder before `# accept`, as in real use. Off by default here:
    /// these tests are about replies, and their machines do not exist.
    pub connect_first: bool,
    /// Words from `build-hook` after the path (Nix ≥ 2.10 passes them before the verbosity).
    pub args: Vec<String>,
    /// Nix's verbosity, the last argument (3 unless `-v` or `--quiet`).
    pub verbosity: u32,
    pub env: Vec<(String, String)>,
}

impl HookEnv {
    pub fn new() -> HookEnv {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc-nix")).unwrap();
        std::fs::create_dir_all(dir.path().join("current-load")).unwrap();
        HookEnv { dir, connect_first: false, args: Vec::new(), verbosity: 3, env: Vec::new() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn current_load(&self) -> PathBuf {
        self.path("current-load")
    }

    pub fn start(&self) -> Hook {
        let (reader, writer) = std::io::pipe().unwrap();
        let writer2 = writer.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"));
        cmd.current_dir("/")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("NIX_CONF_DIR", self.path("etc-nix"))
            .arg("--config")
            .arg(self.path("hook.toml"))
            .arg("--current-load")
            .arg(self.current_load())
            .arg("--cache-dir")
            .arg(shared_cache())
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--connect-timeout")
            .arg("2")
            .args(if self.connect_first { &[][..] } else { &["--connect-before-accept", "false"][..] })
            .args(&self.args)
            .arg(self.verbosity.to_string())
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(writer2);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if !self.path("hook.toml").exists() {
            std::fs::write(self.path("hook.toml"), "").unwrap();
        }
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let stdin = child.stdin.take();
        Hook { child, stdin, out: BufReader::new(reader), log: Vec::new(), plain: Vec::new() }
    }
}

impl Hook {
    /// Writes to the hook's stdin. A hook that has already exited (a bad options file ends it
    /// before it reads anything) closes the pipe: that is not the test's failure, as it is not
    /// Nix's, and the exit code and messages tell what happened.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        match stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads lines as Nix does until a `# ` reply (and, on accept, the machine line).
    /// Returns None at EOF.
    pub fn reply(&mut self) -> Option<Reply> {
        loop {
            let line = self.line()?;
            if let Some(json) = line.strip_prefix("@nix ") {
                self.log.push(json.to_string());
                continue;
            }
            let Some(reply) = line.strip_prefix("# ") else {
                self.plain.push(line);
                continue;
            };
            return Some(match reply {
                "accept" => Reply::Accept(self.line().expect("a machine line after '# accept'")),
                "decline" => Reply::Decline,
                "decline-permanently" => Reply::DeclinePermanently,
                "postpone" => Reply::Postpone,
                other => panic!("bad hook reply '{other}'"),
            });
        }
    }

    fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        if self.out.read_line(&mut s).unwrap() == 0 {
            return None;
        }
        Some(s.trim_end_matches('\n').to_string())
    }

    /// Closes stdin, drains the rest of the output and returns the exit code.
    pub fn finish(mut self) -> (i32, Vec<String>, Vec<String>) {
        self.close_stdin();
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        for line in rest.lines() {
            match line.strip_prefix("@nix ") {
                Some(j) => self.log.push(j.to_string()),
                None => self.plain.push(line.to_string()),
            }
        }
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.log, self.plain)
    }

    /// SIGTERM to the hook alone (it is in the test's process group), as Nix stops its hook;
    /// waits for it to end: how long that took from the signal, and its exit code.
    pub fn terminate(mut self) -> (std::time::Duration, Option<i32>) {
        use rustix::process::{kill_process, Pid, Signal};
        let pid = Pid::from_raw(self.child.id() as i32).unwrap();
        let sent = std::time::Instant::now();
        kill_process(pid, Signal::TERM).unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (sent.elapsed(), status.code());
            }
            if sent.elapsed() > std::time::Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("the hook is still running 10 s after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The text of every `msg` log line.
    pub fn messages(log: &[String]) -> Vec<String> {
        log.iter()
            .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .filter(|v| v["action"] == "msg")
            .map(|v| v["msg"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}
