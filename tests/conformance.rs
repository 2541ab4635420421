//! Conformance with Nix's own hook: the scenarios of Nix's functional remote-build tests
//! (`tests/functional/build-remote*.sh` in Nix 2.34), rewritten here, each run on the same Nix
//! with Nix's own hook, with ours, and (where there are builders) with Nix's own hook whose one
//! builder is our builder front-end, and each outcome of ours compared with Nix's: the exit
//! status, which store paths are valid in which store (the master's and each builder's), in
//! which store each derivation was built, the master's build logs, and the phrase that matters
//! in what Nix printed. One test per scenario and Nix: `nix_2_8::…` with the host's Nix,
//! `nix_2_26::…` and `nix_2_34::…` in Debian's root file systems (`testbed/master.sh`).
//!
//! As in Nix's tests, no SSH and no network are involved: every store is a chroot store in a
//! fresh directory under /tmp (`--store /tmp/…/machine0` for the master), and the builders are
//! `ssh://localhost?remote-store=…`, `ssh-ng://localhost?remote-store=…` (which Nix runs as a
//! local `nix-store --serve` or `nix-daemon --stdio`, without ssh) and a store path used as a
//! builder (which Nix's hook opens in-process). A chroot store always builds in Nix's sandbox,
//! where the only program is a static busybox (Debian's `busybox-static`), copied into the
//! stores as an input of every derivation.
//!
//! "Built in store S" means: the output is valid in S and *ultimately trusted* there (Nix marks
//! so what it built itself, never what it was sent), which needs nothing from the derivations
//! themselves, so the fixed-output hashes stay those of Nix's tests.
//!
//! Not replayed: `build-remote-with-mounted-ssh-ng.sh`, where `--store mounted-ssh-ng://…`
//! sends the whole build to that store's daemon, which builds it under its own settings with no
//! builders; what a hook does there is `no_builders_at_all`.
//!
//! Its own test target (not a module of `integration`): it needs no test bed, builds in a
//! fraction of the time, and `cargo test --test conformance` runs the suite alone. The hook
//! is set with `--option build-hook` on the command line, which every release honours (2.25 –
//! 2.33 ignore it only in `nix.conf`); Nix's own hook is its default (no `build-hook` anywhere).
//! `NWH_CONFORMANCE_ONLY_NIX=1` runs only the half with Nix's own hook (the harness checked
//! against Nix alone); `NWH_CONFORMANCE_SELF_CHECK=1` runs Nix's own hook in both halves, the
//! second time set as ours is, and so checks the comparison itself.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use support::hook::OurHook;
use support::testbed::{describe, master_cmd, Nix};

/// One test per scenario and Nix release: `nix_2_8::f`, `nix_2_26::f`, `nix_2_34::f`; the
/// scenarios after `from 2.15:` only on the releases that have what they need (an untrusting
/// `nix-daemon --force-untrusted`, from 2.15: 2.8 has none, so they are not tests there).
macro_rules! on_every_nix_release {
    ($($test:ident),* $(,)? ; from 2.15: $($later:ident),* $(,)?) => {
        mod nix_2_8 { $( #[test] #[cfg_attr(not(all(nwh_root, nwh_busybox)), ignore = "needs root (chroot stores build in Nix's sandbox) and /bin/busybox: cargo xtask test installs busybox-static")] fn $test() { super::$test(super::Nix::V2_8) } )* }
        mod nix_2_26 { $( #[test] #[cfg_attr(not(all(nwh_root, nwh_busybox, nwh_nix_roots)), ignore = "needs root, /bin/busybox and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test(super::Nix::V2_26) } )* $( #[test] #[cfg_attr(not(all(nwh_root, nwh_busybox, nwh_nix_roots)), ignore = "needs root, /bin/busybox and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $later() { super::$later(super::Nix::V2_26) } )* }
        mod nix_2_34 { $( #[test] #[cfg_attr(not(all(nwh_root, nwh_busybox, nwh_nix_roots)), ignore = "needs root, /bin/busybox and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $test() { super::$test(super::Nix::V2_34) } )* $( #[test] #[cfg_attr(not(all(nwh_root, nwh_busybox, nwh_nix_roots)), ignore = "needs root, /bin/busybox and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them")] fn $later() { super::$later(super::Nix::V2_34) } )* }
    };
}

on_every_nix_release!(
    input_addressed_graph_on_three_kinds_of_builder,
    input_addressed_graph_with_the_masters_store_behind_a_daemon,
    fixed_output_graph_on_three_kinds_of_builder,
    floating_content_addressed_graph_on_three_kinds_of_builder,
    keep_failed_on_a_remote_builder,
    one_serve_builder_that_trusts_us,
    one_daemon_builder_that_trusts_us,
    no_builders_at_all;
    from 2.15:
    one_daemon_builder_that_does_not_trust_us,
    one_daemon_builder_that_does_not_trust_us_fixed_output,
    an_unsigned_input_refused_by_a_daemon_that_does_not_trust_us,
);

const GRAPH_NIX: &str = include_str!("fixtures/conformance/graph.nix");
const FAILING_NIX: &str = include_str!("fixtures/conformance/failing.nix");
/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Seconds after which a build is stopped (each takes one or two).
const BUILD_TIMEOUT_SECS: u32 = 120;

/// Which hook Nix runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hook {
    /// Nix's own: no `build-hook` setting.
    Nixs,
    /// Ours, as `--option build-hook <our wrapper>`.
    Ours,
    /// Nix's own, whose one builder is ours (builder mode: `ssh://localhost?remote-program=<our
    /// wrapper>&remote-store=<the master's store>`, with every feature of the scenario's
    /// builders), dispatching to the scenario's builders.
    OursAsBuilder,
}

/// Why this test cannot run here, if it cannot: a failure, since the host's build script marks
/// the tests ignored on a machine without root or busybox.
fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        Some("needs root (chroot stores build in Nix's sandbox; testbed/master.sh)".to_string())
    } else if !Path::new(BUSYBOX).is_file() {
        Some(format!("{BUSYBOX} is missing: apt-get install busybox-static (cargo xtask test does)"))
    } else {
        None
    }
}

/// A scenario: a set of stores in one directory, the builders, and the build.
#[derive(Clone)]
struct Scenario {
    /// The master's store, a directory name under the run's directory.
    master: &'static str,
    /// Every store whose contents are compared, the master's first.
    stores: &'static [&'static str],
    /// The `builders` value; `{dir}` stands for the run's directory.
    builders: &'static str,
    /// The file to build (`graph.nix` or `failing.nix`) and `nix-build` arguments after it.
    file: &'static str,
    args: Vec<String>,
    /// More `nix.conf` lines (all processes read it: the master, the hooks, the builders).
    conf: Vec<String>,
    /// A program to put in the run's directory as `untrusting-daemon` (`{dir}/untrusting-daemon`).
    untrusting_daemon: bool,
    /// A build before the one under test, with Nix's own hook whatever the run: `nix-build`
    /// arguments after the file.
    before: Option<Vec<String>>,
    /// The phrases whose presence in what Nix printed is compared.
    phrases: Vec<&'static str>,
    /// Whether the scenario is run with ours as a builder of Nix's own hook too: not when it
    /// is about having no builders at all.
    builder_mode: bool,
    /// Whether the master's store is reached through a `nix-daemon` serving it (`--store
    /// unix://…`), as on every multi-user install: the daemon runs the hook, with its own
    /// `store` setting, and the client's `builders` and `build-hook` (it trusts root).
    through_daemon: bool,
}

/// The three builders of `build-remote.sh`: `ssh://localhost` with a chroot store that has
/// feature foo, a chroot store as a builder with bar, `ssh-ng://localhost` with baz.
const THREE_BUILDERS: &str = "ssh://localhost?remote-store={dir}/machine1?system-features=foo - - 1 1 foo; \
     {dir}/machine2 - - 1 1 bar; \
     ssh-ng://localhost?remote-store={dir}/machine3?system-features=baz - - 1 1 baz";
/// The same for floating content-addressed derivations: each builder also has `ca-derivations`
/// (the percent-encoded space separates the features of the inner store URI).
const THREE_BUILDERS_CA: &str =
    "ssh://localhost?remote-store={dir}/machine1?system-features=foo%20ca-derivations - - 1 1 foo,ca-derivations; \
     {dir}/machine2 - - 1 1 bar,ca-derivations; \
     ssh-ng://localhost?remote-store={dir}/machine3?system-features=baz%20ca-derivations - - 1 1 baz,ca-derivations";
/// What each build of the graph prints: the builder's log, which Nix shows as it comes.
const GRAPH_LOG_LINES: &[&str] =
    &["conf-log-conf-one", "conf-log-conf-two", "conf-log-conf-three", "conf-log-conf-top"];
const GRAPH_STORES: &[&str] = &["machine0", "machine1", "machine2", "machine3"];
const TRUSTLESS_STORES: &[&str] = &["local", "remote"];

impl Scenario {
    fn graph(kind: &str) -> Scenario {
        Scenario {
            master: "machine0",
            stores: GRAPH_STORES,
            builders: if kind == "floating" { THREE_BUILDERS_CA } else { THREE_BUILDERS },
            file: "graph.nix",
            args: vec!["--argstr".into(), "kind".into(), kind.into()],
            conf: Vec::new(),
            untrusting_daemon: false,
            before: None,
            phrases: GRAPH_LOG_LINES.to_vec(),
            builder_mode: true,
            through_daemon: false,
        }
    }

    /// `build-remote-trustless.sh`: one builder, `PROTO://localhost` running `program` on the
    /// chroot store `remote`, with every feature of the graph; the master's store is `local`.
    fn trustless(builders: &'static str, kind: &str) -> Scenario {
        Scenario {
            master: "local",
            stores: TRUSTLESS_STORES,
            builders,
            file: "graph.nix",
            args: vec!["--argstr".into(), "kind".into(), kind.into()],
            conf: Vec::new(),
            untrusting_daemon: builders.contains("untrusting-daemon"),
            before: None,
            phrases: GRAPH_LOG_LINES.to_vec(),
            builder_mode: true,
            through_daemon: false,
        }
    }
}

/// What one run of a scenario left and said.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// `nix-build`'s exit status.
    exit: Option<i32>,
    /// Per store: each valid path by name (without its hash), and whether it was built there.
    stores: BTreeMap<String, BTreeMap<String, bool>>,
    /// The derivations (by name) whose build log the master keeps, with the line their build
    /// printed in it.
    logs: BTreeSet<String>,
    /// What the top of the graph holds in the master's store, when it is there.
    top: Option<String>,
    /// Each phrase of the scenario, and whether Nix's output had it.
    phrases: BTreeMap<String, bool>,
    /// Lines that the `post-build-hook` wrote (when the scenario sets one).
    post_build_hook_runs: usize,
    /// What the failed build left in its kept build directory (`--keep-failed`), if it was found.
    kept: Option<String>,
}

impl Outcome {
    /// Names of the outputs of the graph built in `store`.
    fn built_in(&self, store: &str) -> BTreeSet<String> {
        self.stores
            .get(store)
            .map(|paths| {
                paths
                    .iter()
                    .filter(|(n, built)| **built && !n.ends_with(".drv"))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn valid_in(&self, store: &str) -> BTreeSet<String> {
        self.stores.get(store).map(|paths| paths.keys().cloned().collect()).unwrap_or_default()
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// One run: the scenario's stores made afresh, the build with `hook`, the outcome read.
struct Run {
    nix: Nix,
    hook: Hook,
    dir: tempfile::TempDir,
    output: Output,
    outcome: Outcome,
    /// Whether a process of ours ran during the build.
    ours_ran: bool,
}

impl Run {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Everything a failed comparison should show.
    fn report(&self) -> String {
        format!(
            "--- Nix {} with {:?} hook, in {} ---\n{}\n{:#?}",
            self.nix.name(),
            self.hook,
            self.path().display(),
            describe(&self.output),
            self.outcome
        )
    }
}

fn run(nix: Nix, hook: Hook, scenario: &Scenario) -> Run {
    let dir = tempfile::Builder::new().prefix("nwh-conf-").tempdir_in("/tmp").unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::create_dir_all(dir.path().join("tools")).unwrap();
    std::fs::copy(BUSYBOX, dir.path().join("tools/busybox")).unwrap();
    std::fs::write(dir.path().join("graph.nix"), GRAPH_NIX).unwrap();
    std::fs::write(dir.path().join("failing.nix"), FAILING_NIX).unwrap();
    let mut conf = vec![
        "build-users-group =".to_string(),
        "substituters =".to_string(),
        "experimental-features = nix-command".to_string(),
    ];
    conf.extend(scenario.conf.iter().map(|l| l.replace("{dir}", &d)));
    std::fs::write(dir.path().join("etc/nix.conf"), conf.join("\n") + "\n").unwrap();
    if scenario.conf.iter().any(|l| l.starts_with("post-build-hook")) {
        executable(
            &dir.path().join("post-build-hook"),
            &format!("#!/bin/sh\necho \"$DRV_PATH\" >> {d}/post-build-hook.runs\n"),
        );
    }
    if scenario.untrusting_daemon {
        // Nix's nix-daemon-untrusting.sh: a daemon that treats every client as untrusted.
        executable(
            &dir.path().join("untrusting-daemon"),
            "#!/bin/sh\nexec nix-daemon --force-untrusted \"$@\"\n",
        );
    }

    if let Some(before) = &scenario.before {
        let mut args: Vec<String> = vec!["--store".into(), format!("{d}/{}", scenario.master)];
        args.push(format!("{d}/{}", scenario.file));
        args.extend(["--arg".into(), "tools".into(), format!("{d}/tools")]);
        args.extend(before.iter().cloned());
        let out = nix_build(nix, dir.path(), &args);
        assert!(out.status.success(), "the build before the scenario's failed:\n{}", describe(&out));
    }

    let builders = scenario.builders.replace("{dir}", &d);
    let our_hook = match hook {
        Hook::OursAsBuilder => OurHook::as_builder(&builders, &[]),
        _ => OurHook::new(&[]),
    };
    let builders = match hook {
        Hook::OursAsBuilder => format!(
            "ssh://localhost?remote-program={}&remote-store={d}/{} - - 3 1 {}",
            our_hook.path,
            scenario.master,
            features_of(&builders)
        ),
        _ => builders,
    };
    let store = match scenario.through_daemon {
        // `root`: a client of a daemon reads some store files itself (the `.drv` after the
        // build, from 2.26), where they are on disk.
        true => format!("unix://{d}/{DAEMON_SOCKET}?root={d}/{}", scenario.master),
        false => format!("{d}/{}", scenario.master),
    };
    let mut args: Vec<String> = vec![
        "--max-jobs".into(),
        "0".into(),
        "--store".into(),
        store,
        "--option".into(),
        "builders".into(),
        builders,
    ];
    if hook == Hook::Ours {
        args.extend(["--option".into(), "build-hook".into(), our_hook_setting(nix, &our_hook)]);
    }
    args.push(format!("{d}/{}", scenario.file));
    args.extend(["--arg".into(), "tools".into(), format!("{d}/tools")]);
    args.extend(scenario.args.iter().map(|a| a.replace("{dir}", &d)));
    let t = Instant::now();
    let output = match scenario.through_daemon {
        true => nix_build_through_daemon(nix, dir.path(), scenario.master, &args),
        false => nix_build(nix, dir.path(), &args),
    };
    eprintln!(
        "conformance: Nix {} with {hook:?} hook: nix-build took {:.2?} ({})",
        nix.name(),
        t.elapsed(),
        output.status
    );

    let outcome = read_outcome(nix, dir.path(), scenario, &output);
    let ours_ran =
        std::fs::read_to_string(dir.path().join("timeline.jsonl")).is_ok_and(|t| t.contains("\"start\""));
    Run { nix, hook, dir, output, outcome, ours_ran }
}

/// Every feature of the machines `builders` (Nix's syntax), as a machines line's column.
fn features_of(builders: &str) -> String {
    let features: BTreeSet<&str> = builders
        .split([';', '\n'])
        .filter_map(|line| line.split_whitespace().nth(5))
        .flat_map(|column| column.split(','))
        .filter(|f| *f != "-")
        .collect();
    features.into_iter().collect::<Vec<_>>().join(",")
}

/// The `build-hook` value of the run with ours: our wrapper; or, for the harness's self-check
/// (`NWH_CONFORMANCE_SELF_CHECK=1`), Nix's own hook given the same way, so that every
/// comparison must hold (whatever differs then is the harness's, or Nix's nondeterminism).
fn our_hook_setting(nix: Nix, ours: &OurHook) -> String {
    if !self_check() {
        return ours.path.clone();
    }
    match nix {
        // Debian's defaults: 2.8 runs a path, later releases `nix` with a hidden subcommand.
        Nix::V2_8 => "/usr/libexec/nix/build-remote".into(),
        _ => "/usr/bin/nix __build-remote".into(),
    }
}

fn self_check() -> bool {
    std::env::var("NWH_CONFORMANCE_SELF_CHECK").as_deref() == Ok("1")
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The environment every Nix process of a run sees: the run's `nix.conf` (Nix's tests do the
/// same with `NIX_CONF_DIR`) and its temporary directory (where a kept build directory goes).
fn run_env(cmd: &mut Command, dir: &Path) {
    for var in ["NIX_REMOTE", "NIX_CONFIG", "NIX_REMOTE_SYSTEMS", "NIX_SSHOPTS", "NIX_PATH", "NIX_STORE_DIR"]
    {
        cmd.env_remove(var);
    }
    cmd.env("NIX_CONF_DIR", dir.join("etc")).env("TMPDIR", dir.join("tmp"));
    // Our processes (and only ours) mark their start there: proof that ours was run at all.
    cmd.env(nix_wasm_hook::core::timeline::VARIABLE, dir.join("timeline.jsonl"));
}

/// `nix-build --no-out-link ARGS` by `nix`'s master, under `timeout`.
fn nix_build(nix: Nix, dir: &Path, args: &[String]) -> Output {
    let mut argv: Vec<&str> = vec!["timeout", "--kill-after=10"];
    let secs = BUILD_TIMEOUT_SECS.to_string();
    argv.push(&secs);
    argv.extend(["nix-build", "--no-out-link"]);
    argv.extend(args.iter().map(String::as_str));
    let mut cmd = master_cmd(nix, &argv);
    run_env(&mut cmd, dir);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().expect("cannot run nix-build through testbed/master.sh")
}

/// The socket of the daemon serving the master's store, in the run's directory.
const DAEMON_SOCKET: &str = "daemon.socket";

/// `nix-build --no-out-link ARGS` by `nix`'s master, a client of a `nix-daemon` serving the
/// store `master` (under the run's directory) that the same command starts and ends; the
/// daemon's own messages go to `daemon.log` there.
fn nix_build_through_daemon(nix: Nix, dir: &Path, master: &str, args: &[String]) -> Output {
    let d = dir.display();
    let script = format!(
        "NIX_DAEMON_SOCKET_PATH={d}/{DAEMON_SOCKET} nix-daemon --option store {d}/{master} 2>{d}/daemon.log & daemon=$!
         n=0; while [ ! -S {d}/{DAEMON_SOCKET} ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
         timeout --kill-after=10 {BUILD_TIMEOUT_SECS} nix-build --no-out-link \"$@\"; status=$?
         kill $daemon; wait $daemon; exit $status"
    );
    let mut argv: Vec<&str> = vec!["sh", "-c", &script, "sh"];
    argv.extend(args.iter().map(String::as_str));
    let mut cmd = master_cmd(nix, &argv);
    run_env(&mut cmd, dir);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().expect("cannot run nix-daemon and nix-build through testbed/master.sh")
}

/// Reads, with the master's own Nix, every store's valid paths and the master's logs.
fn read_outcome(nix: Nix, dir: &Path, scenario: &Scenario, output: &Output) -> Outcome {
    let d = dir.display().to_string();
    // One entry into the master's root for all the questions: a section per answer.
    let mut script = String::new();
    for store in scenario.stores {
        script.push_str(&format!(
            "echo '=== store {store}'; nix path-info --json --all --store {d}/{store} 2>/dev/null; echo\n"
        ));
    }
    script.push_str(&format!(
        "for f in {d}/{m}/nix/store/*-conf-*.drv; do [ -e \"$f\" ] || continue; b=${{f##*/}}; \
         if nix-store --store {d}/{m} --read-log /nix/store/$b 2>/dev/null | grep -q conf-log-; then \
         echo \"=== log $b\"; fi; done\n",
        m = scenario.master
    ));
    let mut cmd = master_cmd(nix, &["sh", "-c", &script]);
    run_env(&mut cmd, dir);
    let read = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    assert!(read.status.success(), "reading the stores failed:\n{}", describe(&read));
    let text = String::from_utf8_lossy(&read.stdout).into_owned();

    let mut stores = BTreeMap::new();
    let mut logs = BTreeSet::new();
    let mut section: Option<String> = None;
    let mut body = String::new();
    let mut flush = |section: &Option<String>, body: &str| {
        if let Some(store) = section {
            stores.insert(store.clone(), valid_paths(body));
        }
    };
    for line in text.lines() {
        if let Some(store) = line.strip_prefix("=== store ") {
            flush(&section, &body);
            section = Some(store.to_string());
            body.clear();
        } else if let Some(drv) = line.strip_prefix("=== log ") {
            flush(&section, &body);
            section = None;
            body.clear();
            logs.insert(name_of(drv).trim_end_matches(".drv").to_string());
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    flush(&section, &body);

    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let top = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/nix/store/") && l.ends_with("-conf-top"))
        .and_then(|p| {
            std::fs::read_to_string(dir.join(scenario.master).join(p.trim_start_matches('/'))).ok()
        });
    let phrases = scenario.phrases.iter().map(|p| (p.to_string(), stderr.contains(p))).collect();
    let post_build_hook_runs =
        std::fs::read_to_string(dir.join("post-build-hook.runs")).map(|t| t.lines().count()).unwrap_or(0);
    Outcome {
        exit: output.status.code(),
        stores,
        logs,
        top,
        phrases,
        post_build_hook_runs,
        kept: kept(&stderr),
    }
}

/// `/nix/store/<hash>-<name>` → `<name>`.
fn name_of(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// `nix path-info --json --all`: a list of objects with `path` (Nix 2.8), or an object keyed by
/// path (later). Name → ultimately trusted (built in that store).
fn valid_paths(json: &str) -> BTreeMap<String, bool> {
    let json = json.trim();
    if json.is_empty() {
        return BTreeMap::new();
    }
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("nix path-info --json: {e}:\n{json}"));
    let entries: Vec<(String, &serde_json::Value)> = match &value {
        serde_json::Value::Array(list) => {
            list.iter().map(|v| (v["path"].as_str().unwrap_or_default().to_string(), v)).collect()
        }
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        other => panic!("nix path-info --json gave {other}"),
    };
    entries
        .into_iter()
        .map(|(path, info)| (name_of(&path).to_string(), info["ultimate"].as_bool().unwrap_or(false)))
        .collect()
}

/// The file `kept` in the build directory that Nix says it kept (`note: keeping build
/// directory '…'`, double quotes in 2.34), or in its `build` subdirectory.
fn kept(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains("keeping build directory"))?;
    let quoted = line.split_once("keeping build directory ")?.1;
    let dir = quoted.trim_matches(|c| c == '\'' || c == '"' || c == ' ');
    let dir = PathBuf::from(dir);
    [dir.join("kept"), dir.join("build/kept")].iter().find_map(|p| std::fs::read_to_string(p).ok())
}

/// Runs the scenario with Nix's own hook, checks that with `expect_nixs` (the harness against
/// Nix itself), then with ours as the hook and, where the scenario allows, as the one builder of
/// Nix's own hook, and returns them all for the comparison.
fn runs(nix: Nix, scenario: &Scenario, expect_nixs: impl Fn(&Outcome)) -> (Run, Vec<Run>) {
    if let Some(why) = skip_reason() {
        panic!("cannot run here ({why}), though this test was not marked ignored");
    }
    let nixs = run(nix, Hook::Nixs, scenario);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| expect_nixs(&nixs.outcome)));
    if let Err(e) = checked {
        eprintln!("{}", nixs.report());
        std::panic::resume_unwind(e);
    }
    if std::env::var("NWH_CONFORMANCE_ONLY_NIX").as_deref() == Ok("1") {
        eprintln!("conformance: NWH_CONFORMANCE_ONLY_NIX=1: our hook not run");
        return (nixs, Vec::new());
    }
    assert!(!nixs.ours_ran, "our hook ran where Nix's own should have\n{}", nixs.report());
    let ours = run(nix, Hook::Ours, scenario);
    // Were `--option build-hook` ignored, Nix's own hook would run again and every comparison
    // would hold for nothing.
    assert!(
        ours.ours_ran || self_check(),
        "Nix {} did not run our hook (`--option build-hook` ignored?)\n{}",
        nix.name(),
        ours.report()
    );
    let mut ours = vec![ours];
    // The self-check has no builder mode of Nix's to stand in for ours.
    if scenario.builder_mode && !self_check() {
        let as_builder = run(nix, Hook::OursAsBuilder, scenario);
        assert!(as_builder.ours_ran, "Nix's hook did not run our builder front-end\n{}", as_builder.report());
        ours.push(as_builder);
    }
    (nixs, ours)
}

/// The whole outcome of ours is that of Nix's own hook. The message starts with what differs.
fn assert_same(nixs: &Run, ours: &Run) {
    let (n, o) = (&nixs.outcome, &ours.outcome);
    let mut differs = Vec::new();
    if n.exit != o.exit {
        differs.push(format!("exit status: Nix's hook {:?}, ours {:?}", n.exit, o.exit));
    }
    for store in n.stores.keys().chain(o.stores.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (n.stores.get(store), o.stores.get(store));
        if a != b {
            differs.push(format!("store {store}: Nix's hook {a:?}, ours {b:?}"));
        }
    }
    if n.logs != o.logs {
        differs.push(format!("the master's logs: Nix's hook {:?}, ours {:?}", n.logs, o.logs));
    }
    if n.top != o.top {
        differs.push(format!("the top output: Nix's hook {:?}, ours {:?}", n.top, o.top));
    }
    if n.phrases != o.phrases {
        differs.push(format!("phrases: Nix's hook {:?}, ours {:?}", n.phrases, o.phrases));
    }
    if n.post_build_hook_runs != o.post_build_hook_runs {
        differs.push(format!(
            "post-build-hook runs: Nix's hook {}, ours {}",
            n.post_build_hook_runs, o.post_build_hook_runs
        ));
    }
    if n.kept != o.kept {
        differs.push(format!("kept build directory: Nix's hook {:?}, ours {:?}", n.kept, o.kept));
    }
    assert!(
        differs.is_empty(),
        "the outcome with {:?} differs from that with Nix's own hook:\n  {}\n{}\n{}",
        ours.hook,
        differs.join("\n  "),
        nixs.report(),
        ours.report()
    );
}

/// The scenario with Nix's own hook and with ours (as the hook, and as a builder of Nix's
/// hook): the same outcome.
fn conforms(nix: Nix, scenario: &Scenario, expect_nixs: impl Fn(&Outcome)) {
    let (nixs, ours) = runs(nix, scenario, expect_nixs);
    for ours in &ours {
        assert_same(&nixs, ours);
    }
}

/// What every successful build of the graph leaves on the master: the four outputs, valid,
/// none built there, the top holding `FOO BAR BAZ`.
fn graph_built_remotely(o: &Outcome, master: &str) {
    assert_eq!(o.exit, Some(0));
    assert_eq!(o.top.as_deref(), Some("FOO BAR BAZ\n"));
    assert!(o.phrases.values().all(|had| *had), "not every build log shown: {:?}", o.phrases);
    let outputs = names(&["conf-one", "conf-two", "conf-three", "conf-top"]);
    assert!(o.valid_in(master).is_superset(&outputs), "{:?}", o.valid_in(master));
    assert!(o.built_in(master).is_empty(), "built on the master: {:?}", o.built_in(master));
}

/// `build-remote.sh` on the three builders: each derivation goes to the one builder with its
/// feature; the top (no feature) to the first, `ssh://localhost`, which wins the tie.
fn graph_on_three_builders(o: &Outcome) {
    graph_built_remotely(o, "machine0");
    assert_eq!(o.built_in("machine1"), names(&["conf-one", "conf-top"]));
    assert_eq!(o.built_in("machine2"), names(&["conf-two"]));
    assert_eq!(o.built_in("machine3"), names(&["conf-three"]));
    // The master keeps the log of every remote build (`nix log` in Nix's test).
    assert_eq!(o.logs, names(&["conf-one", "conf-two", "conf-three", "conf-top"]));
}

/// `build-remote-input-addressed.sh`, with its `post-build-hook`: the three builders, and the
/// hook run twice per derivation, on the builder (which reads the same `nix.conf`) and on the
/// master.
fn input_addressed_graph_on_three_kinds_of_builder(nix: Nix) {
    let mut scenario = Scenario::graph("input-addressed");
    scenario.conf.push("post-build-hook = {dir}/post-build-hook".into());
    conforms(nix, &scenario, |o| {
        graph_on_three_builders(o);
        assert_eq!(o.post_build_hook_runs, 8);
    });
}

/// Not one of Nix's scenarios, but how most masters run: the graph of
/// `build-remote-input-addressed.sh` built by a client whose store is a `nix-daemon` serving
/// the master's chroot store, so that the daemon runs the hook (as root, with the `store` it
/// serves) and the client sees the build logs through it.
fn input_addressed_graph_with_the_masters_store_behind_a_daemon(nix: Nix) {
    let mut scenario = Scenario::graph("input-addressed");
    scenario.through_daemon = true;
    conforms(nix, &scenario, graph_on_three_builders);
}

/// `build-remote-content-addressed-fixed.sh`: the same graph, every output fixed by its hash.
fn fixed_output_graph_on_three_kinds_of_builder(nix: Nix) {
    conforms(nix, &Scenario::graph("fixed"), graph_on_three_builders);
}

/// `build-remote-content-addressed-floating.sh`: the graph content-addressed, the output paths
/// known only after the build (`ca-derivations`), every builder with that feature. Ours brings
/// each output back from where the builder says it is and registers its realisation, as Nix's
/// own hook does (docs/compatibility.md, "Floating content-addressed derivations").
fn floating_content_addressed_graph_on_three_kinds_of_builder(nix: Nix) {
    let mut scenario = Scenario::graph("floating");
    scenario.conf.push("extra-experimental-features = ca-derivations".into());
    conforms(nix, &scenario, graph_on_three_builders);
}

/// `build-remote.sh`'s last part: a failing build with `--keep-failed` goes to the first
/// builder, which keeps its build directory (a local directory: the builder is `localhost`);
/// Nix prints where, and the file the build left is there.
fn keep_failed_on_a_remote_builder(nix: Nix) {
    let mut scenario = Scenario::graph("input-addressed");
    scenario.file = "failing.nix";
    scenario.args = vec!["--keep-failed".into()];
    scenario.phrases = vec!["keeping build directory", "conf-failing-now"];
    if nix == Nix::V2_34 {
        // Since 2.30 (read), Nix's hook says so itself.
        scenario.phrases.push("The failed build directory was kept on the remote builder due to");
    }
    conforms(nix, &scenario, |o| {
        // 1 on 2.34 too, where a build that fails locally exits 100: the hook's error is no
        // build failure of the master's.
        assert_eq!(o.exit, Some(1));
        assert!(o.phrases.values().all(|had| *had), "{:?}", o.phrases);
        assert_eq!(o.kept.as_deref(), Some("conf-kept\n"));
    });
}

/// After `build-remote-trustless.sh`: everything built on the one builder, `FOO BAR BAZ` on
/// both sides.
fn graph_on_one_builder(o: &Outcome) {
    graph_built_remotely(o, "local");
    assert_eq!(o.built_in("remote"), names(&["conf-one", "conf-two", "conf-three", "conf-top"]));
}

/// `build-remote-trustless-should-pass-0.sh`: `ssh://localhost` with `remote-program=nix-store`
/// and a percent-encoded `remote-store` (its features `foo bar baz`).
fn one_serve_builder_that_trusts_us(nix: Nix) {
    conforms(
        nix,
        &Scenario::trustless(
            "ssh://localhost?remote-program=nix-store&remote-store={dir}/remote%3Fsystem-features=foo%20bar%20baz - - 1 1 foo,bar,baz",
            "input-addressed",
        ),
        graph_on_one_builder,
    );
}

/// `build-remote-trustless-should-pass-1.sh`: the same over `ssh-ng://`, `nix-daemon`.
fn one_daemon_builder_that_trusts_us(nix: Nix) {
    conforms(
        nix,
        &Scenario::trustless(
            "ssh-ng://localhost?remote-program=nix-daemon&remote-store={dir}/remote%3Fsystem-features=foo%20bar%20baz - - 1 1 foo,bar,baz",
            "input-addressed",
        ),
        graph_on_one_builder,
    );
}

const UNTRUSTING: &str = "ssh-ng://localhost?remote-program={dir}/untrusting-daemon&remote-store={dir}/remote%3Fsystem-features=foo%20bar%20baz - - 1 1 foo,bar,baz";

/// `build-remote-trustless-should-pass-2.sh`: a daemon that does not trust us
/// (`--force-untrusted`, the `daemon-trust-override` experiment): the hook sends the
/// derivations' closure and has them built by path.
fn one_daemon_builder_that_does_not_trust_us(nix: Nix) {
    let mut scenario = Scenario::trustless(UNTRUSTING, "input-addressed");
    scenario.conf.push("extra-experimental-features = daemon-trust-override".into());
    conforms(nix, &scenario, graph_on_one_builder);
}

/// `build-remote-trustless-should-pass-3.sh`: the same daemon, fixed-output derivations.
fn one_daemon_builder_that_does_not_trust_us_fixed_output(nix: Nix) {
    let mut scenario = Scenario::trustless(UNTRUSTING, "fixed");
    scenario.conf.push("extra-experimental-features = daemon-trust-override".into());
    conforms(nix, &scenario, graph_on_one_builder);
}

/// `build-remote-trustless-should-fail-0.sh`: `two` built on the master first, so it is an
/// input-addressed path without a signature, which a daemon that does not trust us refuses.
fn an_unsigned_input_refused_by_a_daemon_that_does_not_trust_us(nix: Nix) {
    let mut scenario = Scenario::trustless(UNTRUSTING, "input-addressed");
    scenario.conf.push("extra-experimental-features = daemon-trust-override".into());
    scenario.before =
        Some(vec!["-A".into(), "two".into(), "--option".into(), "system-features".into(), "bar".into()]);
    scenario.phrases = vec!["lacks a signature by a trusted key"];
    conforms(nix, &scenario, |o| {
        assert_eq!(o.exit, Some(1));
        assert!(o.phrases.values().all(|had| *had), "{:?}", o.phrases);
        assert_eq!(o.built_in("local"), names(&["conf-two"]));
        assert!(!o.valid_in("remote").contains("conf-two"), "{:?}", o.valid_in("remote"));
        assert!(!o.valid_in("local").contains("conf-top"));
    });
}

/// Not one of Nix's scenarios, but what each of them assumes: with no builders at all (none set,
/// no machines file) the hook declines for good without a word and Nix builds locally.
fn no_builders_at_all(nix: Nix) {
    let mut scenario = Scenario::graph("input-addressed");
    scenario.builders = "";
    scenario.builder_mode = false;
    scenario.args.extend(["-A".into(), "two".into(), "--max-jobs".into(), "1".into()]);
    scenario.args.extend(["--option".into(), "system-features".into(), "bar".into()]);
    scenario.phrases = vec!["machines", "warning", "nix-wasm-hook"];
    conforms(nix, &scenario, |o| {
        assert_eq!(o.exit, Some(0));
        assert_eq!(o.built_in("machine0"), names(&["conf-two"]));
        assert!(o.phrases.values().all(|had| !*had), "{:?}", o.phrases);
    });
}
