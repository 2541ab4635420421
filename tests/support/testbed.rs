//! Harness for the end-to-end test bed (`testbed/testbed.sh`, see `testbed/README.md`).
//! Topic modules of the integration-test binary use it as `crate::support::testbed`.
//!
//! [`Testbed::up`] takes an exclusive `flock` on [`TESTS_LOCK`] (the test bed
//! uses fixed addresses, so only one test in one process may use it at a time,
//! whatever threads or processes cargo runs), brings up a fresh test bed and
//! returns a guard that always brings it down again in `Drop`, on panic too.
//!
//! Skipping: outside CI a test that needs the test bed is skipped (with a
//! printed reason) when we are not root or `NWH_SKIP_TESTBED=1`. In CI
//! (`CI=true`) it is never skipped: if the test bed cannot start, it fails.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Held (exclusive `flock`) for the whole life of a [`Testbed`]. Deliberately
/// not the lock file that `testbed.sh` itself takes for each command.
pub const TESTS_LOCK: &str = "/run/nwh-testbed.tests.lock";
/// Address prefix of the test bed: builder `i` is `10.78.0.(10+i)`.
pub const NET: &str = "10.78.0";
/// Client key that every builder accepts (column 3 of the machines lines).
pub const SSH_KEY: &str = "/var/lib/nwh-testbed/ssh/id_ed25519";
/// Seconds after which [`Testbed::nix_build`] kills `nix-build`.
pub const NIX_BUILD_TIMEOUT_SECS: u32 = 300;

/// The Nix that plays the master: the host's own, or Debian's Nix of another suite in a root
/// file system beside the host (`testbed/master.sh`, made once and reused). The builders are
/// the host's Nix 2.8 whichever master asks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nix {
    /// Debian 12's nix-bin, the host's.
    V2_8,
    /// Debian 13 (trixie).
    V2_26,
    /// Debian sid: 2.34.8 when this was written; sid moves, and the tests print what it has.
    V2_34,
    /// Lix, from a root file system someone built (Debian has no Lix): 2.95.3 when this was
    /// written. Its hook speaks no hook protocol we know (Cap'n Proto since 2.94), so only
    /// builder mode is tested with it, and only where that root exists.
    Lix,
}

impl Nix {
    /// The version as `testbed/master.sh` names it.
    pub fn name(self) -> &'static str {
        match self {
            Nix::V2_8 => "2.8",
            Nix::V2_26 => "2.26",
            Nix::V2_34 => "2.34",
            Nix::Lix => "lix",
        }
    }

    /// Why this master cannot be had here, if it cannot: only a Lix root may be missing,
    /// because nothing can make it unattended (in CI too, where it is then skipped, loudly).
    pub fn missing(self) -> Option<String> {
        if self != Nix::Lix {
            return None;
        }
        let roots = std::env::var_os("NWH_NIX_ROOTS").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nix-wasm-hook/nix-roots")
        });
        let probe = roots.join("lix/.nwh-nix-version");
        (!probe.is_file()).then(|| {
            format!("no Lix root file system ({} is missing; see testbed/master.sh)", probe.display())
        })
    }
}

/// Runs a test body once per Nix master, as one test per version: `on_every_nix!(f, g)` makes
/// `nix_2_8::f`, `nix_2_26::f`, `nix_2_34::f`, … calling `f(Nix::V2_8)` and so on.
#[macro_export]
macro_rules! on_every_nix {
    ($($test:ident),* $(,)?) => {
        mod nix_2_8 { $( #[test] #[cfg_attr(not(nwh_testbed), ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up")] fn $test() { super::$test($crate::support::testbed::Nix::V2_8) } )* }
        mod nix_2_26 { $( #[test] #[cfg_attr(not(all(nwh_testbed, nwh_nix_roots)), ignore = "needs root, the test bed and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test($crate::support::testbed::Nix::V2_26) } )* }
        mod nix_2_34 { $( #[test] #[cfg_attr(not(all(nwh_testbed, nwh_nix_roots)), ignore = "needs root, the test bed and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test($crate::support::testbed::Nix::V2_34) } )* }
    };
}

/// The oldest and the newest Nix of the test bed only (`nix_2_8::f`, `nix_2_34::f`): for
/// tests whose every case costs builds with two hooks, where what lies between adds nothing.
#[macro_export]
macro_rules! on_the_oldest_and_newest_nix {
    ($($test:ident),* $(,)?) => {
        mod nix_2_8 { $( #[test] #[cfg_attr(not(nwh_testbed), ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up")] fn $test() { super::$test($crate::support::testbed::Nix::V2_8) } )* }
        mod nix_2_34 { $( #[test] #[cfg_attr(not(all(nwh_testbed, nwh_nix_roots)), ignore = "needs root, the test bed and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test($crate::support::testbed::Nix::V2_34) } )* }
    };
}

/// [`on_every_nix!`] and Lix too (`lix::f`, calling `f(Nix::Lix)`), for what Lix can be
/// asked to do: builder mode.
#[macro_export]
macro_rules! on_every_nix_and_lix {
    ($($test:ident),* $(,)?) => {
        $crate::on_every_nix!($($test),*);
        mod lix { $( #[test] #[cfg_attr(not(all(nwh_testbed, nwh_lix)), ignore = "needs Lix's root file system (testbed/master.sh root lix), which the test command does not make")] fn $test() { super::$test($crate::support::testbed::Nix::Lix) } )* }
    };
}

/// How the builders are reached: the scheme of their machines lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `ssh://`: the serve protocol, `nix-store --serve --write`.
    Ssh,
    /// `ssh-ng://`: the worker protocol, `nix-daemon --stdio`.
    SshNg,
}

impl Proto {
    pub fn scheme(self) -> &'static str {
        match self {
            Proto::Ssh => "ssh",
            Proto::SshNg => "ssh-ng",
        }
    }
}

/// [`on_every_nix!`] times both protocols: `nix_2_8::ssh::f`, `nix_2_8::ssh_ng::f`, … calling
/// `f(Nix::V2_8, Proto::Ssh)` and so on.
#[macro_export]
macro_rules! on_every_nix_and_protocol {
    ($($test:ident),* $(,)?) => {
        $crate::on_every_nix_and_protocol!(@nix nix_2_8 V2_8 $($test),*);
        $crate::on_every_nix_and_protocol!(@nix nix_2_26 V2_26 $($test),*);
        $crate::on_every_nix_and_protocol!(@nix nix_2_34 V2_34 $($test),*);
    };
    (@nix $module:ident $nix:ident $($test:ident),*) => {
        mod $module {
            mod ssh { $( #[test] #[cfg_attr(not(nwh_testbed), ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up")] fn $test() {
                super::super::$test($crate::support::testbed::Nix::$nix, $crate::support::testbed::Proto::Ssh)
            } )* }
            mod ssh_ng { $( #[test] #[cfg_attr(not(nwh_testbed), ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up")] fn $test() {
                super::super::$test($crate::support::testbed::Nix::$nix, $crate::support::testbed::Proto::SshNg)
            } )* }
        }
    };
}

/// What Nix itself prints when no machine, local or remote, can take a derivation.
pub fn nothing_can_build(nix: Nix) -> &'static str {
    match nix {
        Nix::V2_8 => "unable to start any build",
        Nix::V2_26 => "Unable to start any build",
        Nix::V2_34 => "Cannot build '",
        Nix::Lix => "unable to start any build",
    }
}

/// `testbed/master.sh`.
pub fn master_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("testbed").join("master.sh")
}

/// `argv` run by `nix`'s master (`testbed/master.sh run`): in its root file system (the host's
/// own for 2.8), with cwd `/`, the hook binary and the tests' temporary files (and `/tmp`) at the
/// same paths as here. Needs no test bed.
pub fn master_cmd(nix: Nix, argv: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(master_script()).args(["run", nix.name()]).args(argv);
    let hook_dir = Path::new(env!("CARGO_BIN_EXE_nix-wasm-hook")).parent().unwrap().to_path_buf();
    let binds = [hook_dir, PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    cmd.env("NWH_MASTER_BIND", binds.map(|p| p.display().to_string()).join(":"));
    cmd.current_dir("/").stdin(Stdio::null());
    cmd
}

/// `up` parameters. Each is a list with one value per builder; the last value
/// repeats. `None` means the default (`1`, `1`, `-`, `-`).
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Comma list of speed factors (integers), e.g. `"1,2,4"`.
    pub speeds: Option<String>,
    /// Comma list of maxJobs values, e.g. `"2"`.
    pub jobs: Option<String>,
    /// Space-separated list of supportedFeatures fields, e.g. `"kvm,big-parallel -"`.
    pub features: Option<String>,
    /// Space-separated list of mandatoryFeatures fields.
    pub mandatory: Option<String>,
}

/// Path of `testbed/testbed.sh` (the repo root is the parent of the `host` crate).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("testbed").join("testbed.sh")
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn is_root() -> bool {
    // /proc/self/status "Uid:\treal\teffective\t..."
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Why a test bed test should be skipped here, or `None` if it must run.
/// Never skips in CI.
pub fn skip_reason() -> Option<String> {
    if in_ci() {
        if std::env::var("NWH_SKIP_TESTBED").as_deref() == Ok("1") {
            eprintln!("testbed: NWH_SKIP_TESTBED=1 is ignored in CI (CI=true)");
        }
        return None;
    }
    if std::env::var("NWH_SKIP_TESTBED").as_deref() == Ok("1") {
        return Some("NWH_SKIP_TESTBED=1".into());
    }
    if !is_root() {
        return Some("the test bed needs root (network/mount namespaces, sshd)".into());
    }
    None
}

/// Run `testbed.sh ARGS...` with no stdin; stdout and stderr are captured.
pub fn run_script<I, S>(args: I, envs: &[(&str, String)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Describe an `Output` for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The store paths that `nix-build --no-out-link` printed on stdout.
pub fn out_paths(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/nix/store/"))
        .map(String::from)
        .collect()
}

/// A string that differs on every call (also across test runs), so that a
/// derivation using it is never already valid in the master's store, which
/// outlives the test bed.
pub fn unique_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{t}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A trivial derivation whose output is the hostname of the machine that built
/// it (`nwhtb-b<i>` on builder i), followed by a newline. Never cached.
pub fn hostname_drv(name: &str) -> String {
    sh_derivation(name, None, &[], "read h < /proc/sys/kernel/hostname; echo $h > $out")
}

/// A derivation that runs `script` with /bin/sh (no PATH: call binaries by absolute path),
/// for `system` (the current one when None) and with `features` required. Never cached.
pub fn sh_derivation(name: &str, system: Option<&str>, features: &[&str], script: &str) -> String {
    let system = system.map_or("builtins.currentSystem".to_string(), |s| format!("\"{s}\""));
    let features = features.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(" ");
    format!(
        r#"builtins.derivation {{
  name = "{name}"; nonce = "{nonce}"; system = {system}; builder = "/bin/sh";
  requiredSystemFeatures = [ {features} ];
  args = [ "-c" "{script}" ];
}}"#,
        nonce = unique_nonce()
    )
}

/// `n` independent derivations `{name}-{i}`, each running `script(i)` as [`sh_derivation`]
/// does, as one Nix list. Never cached.
pub fn sh_derivations(n: usize, name: &str, script: impl Fn(usize) -> String) -> String {
    let drvs: Vec<String> = (0..n)
        .map(|i| format!("({})", sh_derivation(&format!("{name}-{i}"), None, &[], &script(i))))
        .collect();
    format!("[ {} ]", drvs.join("\n"))
}

/// The demo's graph: leaves a b c; ab <- a b; bc <- b c; top <- ab bc (`nwh-*`), each taking
/// a second. Each output's `where` lists where its whole sub-graph was built (`name host` per
/// line, shared inputs more than once), so the top output shows where every input travelled.
/// Never cached.
pub fn graph_of_six() -> String {
    format!(
        r#"let
  mk = name: deps: builtins.derivation {{
    inherit name deps; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" ''
      read h < /proc/sys/kernel/hostname
      for d in $deps; do /bin/cat $d/where >> $out.tmp 2>/dev/null || true; done
      /bin/mkdir $out; echo "${{name}} $h" >> $out.tmp; /bin/mv $out.tmp $out/where
      /bin/sleep 1
    '' ];
  }};
  a = mk "nwh-a" [ ]; b = mk "nwh-b" [ ]; c = mk "nwh-c" [ ];
  ab = mk "nwh-ab" [ a b ]; bc = mk "nwh-bc" [ b c ];
in mk "nwh-top" [ ab bc ]"#,
        nonce = unique_nonce()
    )
}

/// After a build of [`graph_of_six`] whose top output is `top`: every output of the graph is
/// valid and intact on the master; returns where each of the six derivations was built (by
/// name: inputs shared by two derivations appear twice in the output, each ran once).
pub fn six_valid_outputs(tb: &Testbed, top: &str) -> std::collections::BTreeMap<String, String> {
    let deriver = tb.master_store(&["--query", "--deriver", top]);
    let drv = String::from_utf8_lossy(&deriver.stdout).trim().to_string();
    let closure = tb.master_store(&["--query", "--requisites", "--include-outputs", &drv]);
    let closure = String::from_utf8_lossy(&closure.stdout).into_owned();
    let outputs: Vec<&str> = closure.lines().filter(|p| !p.ends_with(".drv")).collect();
    assert_eq!(outputs.len(), 6, "{closure}");
    for path in outputs {
        let verify = tb.master_store(&["--verify-path", path]);
        assert!(verify.status.success(), "{path}: {}", describe(&verify));
    }
    let where_ = std::fs::read_to_string(tb.master_path(&format!("{top}/where"))).unwrap();
    let places: std::collections::BTreeMap<String, String> = where_
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    assert_eq!(places.len(), 6, "{where_}");
    places
}

/// A running test bed. Dropping it brings the test bed down.
pub struct Testbed {
    n: usize,
    machines: Vec<String>,
    machines_ng: Vec<String>,
    /// Which of the two lists [`Testbed::machines_lines`] and [`Testbed::machine`] give.
    proto: Proto,
    /// `--option NAME VALUE` settings the master's nix-build needs (`testbed.sh nix-conf`).
    master_options: Vec<(String, String)>,
    master: Nix,
    /// Where the master's file system starts: `/` for the host's Nix.
    master_root: PathBuf,
    // Dropped (unlocked) only after `Drop::drop` has run `down`.
    _lock: File,
}

impl Testbed {
    /// [`Testbed::up`], for a test the host's build script did not mark ignored (it does when
    /// this machine has no test bed): one that gets here and finds none here fails, saying why,
    /// rather than pass without having run. (`Option` for the callers' `else { return }`,
    /// which is never taken.)
    pub fn up_or_skip(n: usize, opts: Opts) -> Option<Testbed> {
        if let Some(why) = skip_reason() {
            panic!("the test bed cannot run here ({why}), though this test was not marked ignored");
        }
        Some(Testbed::up(n, opts))
    }

    /// [`Testbed::up_or_skip`] with `nix` as the master (a failure when it cannot be had
    /// here: the build script marks such tests ignored).
    pub fn up_or_skip_as(nix: Nix, n: usize, opts: Opts) -> Option<Testbed> {
        if let Some(why) = nix.missing() {
            panic!(
                "Nix {} cannot be the master here ({why}), though this test was not marked ignored",
                nix.name()
            );
        }
        Some(Testbed::up_or_skip(n, opts)?.with_master(nix))
    }

    /// Lock, clean up whatever an earlier run left, and start `n` builders.
    /// Panics (with the script's output) if the test bed cannot start.
    pub fn up(n: usize, opts: Opts) -> Testbed {
        assert!((1..=32).contains(&n), "Testbed::up: 1 <= n <= 32");
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .open(TESTS_LOCK)
            .unwrap_or_else(|e| panic!("cannot open {TESTS_LOCK}: {e} (not root?)"));
        let t = Instant::now();
        lock.lock().unwrap_or_else(|e| panic!("cannot flock {TESTS_LOCK}: {e}"));
        let waited = t.elapsed();
        if waited.as_secs_f64() > 1.0 {
            eprintln!("testbed: waited {waited:.1?} for {TESTS_LOCK}");
        }

        // A fresh test bed for every user: no builder state from earlier tests.
        let down = run_script(["down"], &[]);
        assert!(down.status.success(), "testbed.sh down (before up) failed:\n{}", describe(&down));

        let envs = [
            ("TESTBED_SPEEDS", opts.speeds.clone().unwrap_or_else(|| "1".into())),
            ("TESTBED_JOBS", opts.jobs.clone().unwrap_or_else(|| "1".into())),
            ("TESTBED_FEATURES", opts.features.clone().unwrap_or_else(|| "-".into())),
            ("TESTBED_MANDATORY", opts.mandatory.clone().unwrap_or_else(|| "-".into())),
        ];
        let t = Instant::now();
        let up = run_script(["up".to_string(), n.to_string()], &envs);
        if !up.status.success() {
            // Leave nothing behind, then fail loudly.
            let down = run_script(["down"], &[]);
            panic!("testbed.sh up {n} failed:\n{}\n(down afterwards: {})", describe(&up), describe(&down));
        }
        eprintln!("testbed: up {n} took {:.1?}", t.elapsed());

        // From here on the guard exists, so a panic below still brings it down.
        let mut tb = Testbed {
            n,
            machines: Vec::new(),
            machines_ng: Vec::new(),
            proto: Proto::Ssh,
            master_options: Vec::new(),
            master: Nix::V2_8,
            master_root: PathBuf::from("/"),
            _lock: lock,
        };
        tb.machines = text(&up.stdout).lines().map(String::from).collect();
        assert_eq!(tb.machines.len(), n, "machines lines:\n{}", describe(&up));
        tb.machines_ng = tb.script_ok(["machines", "ssh-ng"]).lines().map(String::from).collect();
        tb.master_options = tb
            .script_ok(["nix-conf"])
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        tb
    }

    /// The same test bed with `nix` as the master from now on. Its root file system is made
    /// first if this machine has none yet (about two minutes, from Debian's archive).
    pub fn with_master(mut self, nix: Nix) -> Testbed {
        let out = Command::new("bash")
            .arg(master_script())
            .args(["root", nix.name()])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run testbed/master.sh");
        assert!(out.status.success(), "testbed/master.sh root {} failed:\n{}", nix.name(), describe(&out));
        self.master_root = PathBuf::from(text(&out.stdout).trim());
        self.master = nix;
        let version = self.master_cmd(&["nix-store", "--version"]).output().unwrap();
        eprintln!("testbed: the master is {}", text(&version.stdout).trim());
        self
    }

    /// The master's Nix.
    pub fn master(&self) -> Nix {
        self.master
    }

    /// `argv` run as the master would run it: in its root file system, with cwd `/`, the
    /// hook binary and the tests' temporary files at the same paths as here.
    pub fn master_cmd(&self, argv: &[&str]) -> Command {
        master_cmd(self.master, argv)
    }

    /// Where a path of the master's file system is seen from here.
    pub fn master_path(&self, path: &str) -> PathBuf {
        self.master_root.join(path.trim_start_matches('/'))
    }

    /// `nix-store ARGS` on the master's store.
    pub fn master_store(&self, args: &[&str]) -> Output {
        let argv: Vec<&str> = ["nix-store"].into_iter().chain(args.iter().copied()).collect();
        self.master_cmd(&argv).output().expect("cannot run nix-store on the master")
    }

    fn script_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = run_script(args, &[]);
        assert!(out.status.success(), "testbed.sh failed:\n{}", describe(&out));
        text(&out.stdout)
    }

    /// Number of builders.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The machines lines in the test bed's protocol ([`Testbed::with_protocol`], `ssh://`
    /// unless set), builder 1 first (fields: URI, system, key, maxJobs, speedFactor,
    /// supportedFeatures, mandatoryFeatures, base64 host key).
    pub fn machines_lines(&self) -> Vec<String> {
        match self.proto {
            Proto::Ssh => self.machines.clone(),
            Proto::SshNg => self.machines_ng.clone(),
        }
    }

    /// The lines with `ssh-ng://` URIs, whatever the protocol.
    pub fn machines_lines_ng(&self) -> Vec<String> {
        self.machines_ng.clone()
    }

    /// Machines line of builder `i` (1-based), in the test bed's protocol.
    pub fn machine(&self, i: usize) -> String {
        self.machines_lines()[i - 1].clone()
    }

    /// Store URI of builder `i`, as the hook and Nix name it in messages.
    pub fn uri(&self, i: usize) -> String {
        format!("{}://root@{}", self.proto.scheme(), self.addr(i))
    }

    /// The same test bed with builders reached by `proto`.
    pub fn with_protocol(mut self, proto: Proto) -> Testbed {
        self.proto = proto;
        self
    }

    /// Address of builder `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{NET}.{}", 10 + i)
    }

    /// `--option NAME VALUE` pairs the master's nix-build needs.
    pub fn master_options(&self) -> &[(String, String)] {
        &self.master_options
    }

    /// `nix-build --no-out-link` with cwd `/`, the master options, then
    /// `extra_args`, then `-E expr`; not yet run. It runs under `timeout`
    /// ([`NIX_BUILD_TIMEOUT_SECS`]). Add arguments or environment as needed.
    pub fn nix_build_cmd(&self, expr: &str, extra_args: &[&str]) -> Command {
        self.nix_build_cmd_within(NIX_BUILD_TIMEOUT_SECS, expr, extra_args)
    }

    /// [`Testbed::nix_build_cmd`] stopped (SIGTERM) after `secs`: for builds that are meant
    /// to wait forever.
    pub fn nix_build_cmd_within(&self, secs: u32, expr: &str, extra_args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", &secs.to_string()]);
        if self.master != Nix::V2_8 {
            let inner = self.master_cmd(&[]);
            cmd.arg(inner.get_program()).args(inner.get_args());
            cmd.envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
        }
        cmd.arg("nix-build").arg("--no-out-link");
        for (k, v) in &self.master_options {
            cmd.args(["--option", k, v]);
        }
        cmd.args(extra_args)
            .arg("-E")
            .arg(expr)
            .current_dir("/")
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_CONF_DIR")
            .env_remove("NIX_REMOTE_SYSTEMS")
            .env_remove("NIX_SSHOPTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run `nix-build` (see [`Testbed::nix_build_cmd`]) and return its output.
    /// A typical `extra_args`: `["--max-jobs", "0", "--option", "builders", &line]`,
    /// plus `"--option", "build-hook", "/abs/path"` for our own hook.
    pub fn nix_build(&self, expr: &str, extra_args: &[&str]) -> Output {
        let t = Instant::now();
        let out = self
            .nix_build_cmd(expr, extra_args)
            .output()
            .expect("cannot run nix-build (is nix-bin installed? testbed.sh up installs it)");
        eprintln!("testbed: nix-build took {:.2?} ({})", t.elapsed(), out.status);
        out
    }

    /// `ssh` to builder `i` as root and run `cmd` (a shell command line).
    pub fn ssh(&self, i: usize, cmd: &str) -> Output {
        run_script(["ssh".to_string(), i.to_string(), cmd.to_string()], &[])
    }

    /// Run a program inside builder `i`'s namespaces (no ssh).
    pub fn exec(&self, i: usize, argv: &[&str]) -> Output {
        let mut args = vec!["exec".to_string(), i.to_string()];
        args.extend(argv.iter().map(|s| s.to_string()));
        run_script(args, &[])
    }

    /// Is `path` valid in builder `i`'s store?
    pub fn valid_on(&self, i: usize, path: &str) -> bool {
        self.exec(i, &["nix-store", "--check-validity", path]).status.success()
    }

    /// Fault injection: stop builder `i` (connections are refused).
    pub fn builder_stop(&self, i: usize) {
        self.script_ok(["builder-stop".to_string(), i.to_string()]);
    }
    /// Start a stopped builder again (same store and host key).
    pub fn builder_start(&self, i: usize) {
        self.script_ok(["builder-start".to_string(), i.to_string()]);
    }
    /// Fault injection: SIGSTOP builder `i` (TCP connects, no SSH banner).
    pub fn builder_freeze(&self, i: usize) {
        self.script_ok(["builder-freeze".to_string(), i.to_string()]);
    }
    /// SIGCONT builder `i`.
    pub fn builder_thaw(&self, i: usize) {
        self.script_ok(["builder-thaw".to_string(), i.to_string()]);
    }
    /// Fault injection: builder `i`'s link down in its namespace (packets vanish, no reset).
    pub fn link_down(&self, i: usize) {
        self.script_ok(["link-down".to_string(), i.to_string()]);
    }
    /// Builder `i`'s link up again.
    pub fn link_up(&self, i: usize) {
        self.script_ok(["link-up".to_string(), i.to_string()]);
    }

    /// `testbed.sh status` output.
    pub fn status(&self) -> Output {
        run_script(["status"], &[])
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let t = Instant::now();
        let out = run_script(["down"], &[]);
        eprintln!("testbed: down took {:.1?} ({})", t.elapsed(), out.status);
        if !out.status.success() {
            let msg = format!("testbed.sh down failed:\n{}", describe(&out));
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}
