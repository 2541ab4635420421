//! Hook mode beyond the captures: bad input, slot locks shared with Nix's own hook, and
//! `--policy`. Driven by the fake parent with synthesized messages.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::support::fake_parent::{put_string, settings_block, try_message, Capture, HookEnv, Reply, Step};
use crate::support::tool::policy_fixture;

const DRV: &str = "/nix/store/0c7w2i7kmf3ljc1vyqrvpxsn6gdn2l3y-hello-2.12.1.drv";

fn base(builders: &str) -> Vec<u8> {
    settings_block(&[
        ("builders", builders),
        ("max-jobs", "1"),
        ("system", "x86_64-linux"),
        ("system-features", "kvm"),
    ])
}

/// Holds a slot lock of `env`'s current-load directory, as another hook building there does.
fn hold_slot(env: &HookEnv, name: &str) -> std::fs::File {
    let held = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(env.current_load().join(name))
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    held
}

/// True when some other open file holds an exclusive flock on `path`.
fn is_locked(path: &Path) -> bool {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
}

fn errors_cleanly(stream: &[u8], words: &[&str]) {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(stream);
    let (code, log, plain) = hook.finish();
    assert_ne!(code, 0, "a broken stream must fail the hook");
    assert!(code != 101 && code < 128, "an error exit, not a panic or a signal: {code}");
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in words {
        assert!(msgs.contains(w), "{msgs:?} lacks {w:?}");
    }
    assert!(!plain.iter().any(|l| l.contains("panicked")), "{plain:?}");
}

#[test]
fn truncated_settings_block_is_a_clear_error() {
    let full = base("ssh://a x86_64-linux");
    for cut in [3, 8, 20, full.len() - 1] {
        errors_cleanly(&full[..cut], &["nix-wasm-hook", "settings"]);
    }
}

#[test]
fn truncated_try_is_a_clear_error() {
    let mut s = base("ssh://a x86_64-linux");
    let t = try_message(true, "x86_64-linux", DRV, &["kvm"]);
    s.extend_from_slice(&t[..t.len() - 5]);
    errors_cleanly(&s, &["required features", DRV]);
}

#[test]
fn absurd_string_length_is_refused_without_allocating() {
    let mut s = base("ssh://a x86_64-linux");
    s.extend_from_slice(&u64::MAX.to_le_bytes());
    errors_cleanly(&s, &["next request"]);
}

#[test]
fn unknown_command_word_is_an_error() {
    let mut s = base("ssh://a x86_64-linux");
    put_string(&mut s, b"frobnicate");
    errors_cleanly(&s, &["'frobnicate'", "only command", "'try'"]);
}

#[test]
fn end_of_input_between_requests_exits_zero() {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&base("ssh://a aarch64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline));
    let (code, _, _) = hook.finish();
    assert_eq!(code, 0);
}

#[test]
fn the_accepted_slot_is_held_until_the_hook_exits() {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&base("ssh://nix@b1 x86_64-linux - 2"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://nix@b1".into())));
    // Nix's own hook names slot files after the URI with '/' replaced by '_'.
    let slot = env.current_load().join("ssh:__nix@b1-0");
    assert!(slot.exists(), "{:?}", std::fs::read_dir(env.current_load()).unwrap().collect::<Vec<_>>());
    assert!(is_locked(&slot), "the slot must stay locked while the build runs");
    assert!(!is_locked(&env.current_load().join("ssh:__nix@b1-1")), "only one slot is taken");
    assert!(!is_locked(&env.current_load().join("main-lock")), "the main lock is released after choosing");
    hook.finish();
    assert!(!is_locked(&slot), "the slot is released when the hook exits");
}

#[test]
fn slots_held_by_nix_own_hook_count_as_load() {
    let env = HookEnv::new();
    // What Nix's build-remote holds while it builds on `ssh://a` (its only slot).
    let held = hold_slot(&env, "ssh:__a-0");
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://a x86_64-linux ; ssh://b x86_64-linux"),
        ("max-jobs", "0"),
        ("system", "x86_64-linux"),
    ]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://b".into())), "a is busy with Nix's build");
    hook.finish();

    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://a x86_64-linux"),
        ("max-jobs", "0"),
        ("system", "x86_64-linux"),
    ]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Postpone), "the only machine is busy and Nix cannot build locally");
    hook.finish();
    drop(held);
}

#[test]
fn a_chosen_policy_decides() {
    let mut env = HookEnv::new();
    env.args = vec!["--policy".into(), policy_fixture("prefer-last")];
    let mut hook = env.start();
    hook.send(&base("ssh://first x86_64-linux ; ssh://last x86_64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://last".into())));
    let (_, log, _) = hook.finish();
    let msgs = crate::support::fake_parent::Hook::messages(&log);
    assert!(!msgs.iter().any(|m| m.contains("default policy")), "{msgs:?}");
}

#[test]
fn a_policy_named_in_the_config_file_decides() {
    let env = HookEnv::new();
    std::fs::write(env.path("hook.toml"), format!("policy = {:?}\n", policy_fixture("prefer-last"))).unwrap();
    let mut hook = env.start();
    hook.send(&base("ssh://first x86_64-linux ; ssh://last x86_64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://last".into())));
    hook.finish();
}

#[test]
fn a_failing_policy_costs_one_warning_and_the_default_decides() {
    let mut env = HookEnv::new();
    env.args = vec!["--policy".into(), policy_fixture("spin")];
    let mut hook = env.start();
    hook.send(&base("ssh://first x86_64-linux ; ssh://last x86_64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://first".into())), "the default's choice");
    let (_, log, _) = hook.finish();
    let msgs = crate::support::fake_parent::Hook::messages(&log);
    let warnings: Vec<_> = msgs.iter().filter(|m| m.contains("spin.wasm")).collect();
    assert_eq!(warnings.len(), 1, "{msgs:?}");
    assert!(
        warnings[0].contains("ran out of fuel") && warnings[0].contains("default policy decided instead")
    );
}

/// The longest stretch for which some process held `path` locked, sampled as another hook
/// would try it, until `done`.
fn longest_hold(path: &Path, done: &AtomicBool) -> Duration {
    let (mut longest, mut since) = (Duration::ZERO, None);
    while !done.load(Ordering::Relaxed) {
        let held = path.exists() && is_locked(path);
        since = match (held, since) {
            (true, None) => Some(Instant::now()),
            (true, Some(t)) => Some(t),
            (false, _) => None,
        };
        longest = longest.max(since.map_or(Duration::ZERO, |t| t.elapsed()));
        std::thread::sleep(Duration::from_millis(20));
    }
    longest
}

/// A policy that sleeps for a minute (`std::thread::sleep` on wasm32-wasip2) is cut off at
/// `policy-timeout-ms`: Nix gets the default's answer long before the minute is out, with one
/// warning, and the main lock Nix's own hook needs for every remote build is not held while
/// the policy sleeps.
#[test]
fn a_sleeping_policy_holds_up_neither_nix_nor_the_main_lock() {
    let mut env = HookEnv::new();
    env.args = vec!["--policy".into(), policy_fixture("sleep")];
    std::fs::write(env.path("hook.toml"), "policy-timeout-ms = 3000\n").unwrap();
    let main_lock: PathBuf = env.current_load().join("main-lock");
    let mut hook = env.start();
    hook.send(&base("ssh://first x86_64-linux ; ssh://last x86_64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    let asked = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || longest_hold(&main_lock, &done))
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reply = hook.reply();
        tx.send((reply, hook.finish().1))
    });
    // Loading the policy, 3 s of sleep and the default's call, with room to spare.
    let answered = rx.recv_timeout(Duration::from_secs(20));
    let took = asked.elapsed();
    done.store(true, Ordering::Relaxed);
    let longest = watcher.join().unwrap();
    let (reply, log) = answered.unwrap_or_else(|_| panic!("no answer after {took:?}"));
    assert!(longest < Duration::from_secs(1), "main-lock was held for {longest:?} while the policy slept");
    assert_eq!(reply, Some(Reply::Accept("ssh://first".into())), "the default's choice");
    let msgs = crate::support::fake_parent::Hook::messages(&log);
    let warnings: Vec<_> = msgs.iter().filter(|m| m.contains("sleep.wasm")).collect();
    assert_eq!(warnings.len(), 1, "{msgs:?}");
    assert!(warnings[0].contains("3s deadline") && warnings[0].contains("default policy decided instead"));
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let env = HookEnv::new();
    std::fs::write(env.path("hook.toml"), "policy-fule = 5\n").unwrap();
    let mut hook = env.start();
    hook.send(&base("ssh://a x86_64-linux"));
    let (code, log, _) = hook.finish();
    assert_eq!(code, 1);
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    assert!(msgs.contains("policy-fule") && msgs.contains("hook.toml"), "{msgs}");
}

#[test]
fn a_store_the_hook_cannot_bring_outputs_into_is_named_and_nothing_is_accepted() {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://b1 x86_64-linux"),
        ("system", "x86_64-linux"),
        ("store", "https://cache.example.org"),
    ]));
    assert_eq!(hook.reply(), Some(Reply::DeclinePermanently));
    let (code, log, _) = hook.finish();
    assert_eq!(code, 0);
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in ["`store` setting", "https://cache.example.org", "must be local"] {
        assert!(msgs.contains(w), "{msgs} lacks {w:?}");
    }
}

#[test]
fn a_relative_machines_file_is_explained() {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&base("@machines"));
    assert_eq!(hook.reply(), Some(Reply::DeclinePermanently));
    let (_, log, _) = hook.finish();
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in ["relative path", "'/'", "'/machines'", "does not exist"] {
        assert!(msgs.contains(w), "{msgs} lacks {w:?}");
    }
}

/// What the hook says, in its `msg` lines and plain lines, after `block` alone.
fn said_after(env: &HookEnv, block: &[u8]) -> (Option<Reply>, String) {
    let mut hook = env.start();
    hook.send(block);
    let reply = hook.reply();
    let (_, log, plain) = hook.finish();
    let mut said = crate::support::fake_parent::Hook::messages(&log);
    said.extend(plain);
    (reply, said.join("\n"))
}

#[test]
fn nixs_default_machines_file_absent_is_not_worth_a_word() {
    // Nix sends its default `builders = @<conf dir>/machines` whatever the user set up; with no
    // such file (a machine without builders) Nix's own hook declines permanently in silence.
    let env = HookEnv::new();
    let default = format!("@{}", env.path("etc-nix/machines").display());
    let (reply, said) = said_after(&env, &base(&default));
    assert_eq!(reply, Some(Reply::DeclinePermanently));
    assert_eq!(said, "", "nothing, as from Nix's own hook");

    // A file the user named, missing, is still worth the warning (Nix says nothing there too;
    // the hook does, since it is almost always a mistake): another file under the default's
    // name, another name, or the default named in nix.conf.
    let other = format!("@{}", env.path("etc-nix/machines.d/big").display());
    let (reply, said) = said_after(&env, &base(&other));
    assert_eq!(reply, Some(Reply::DeclinePermanently));
    assert!(said.contains("machines.d/big' does not exist"), "{said}");
    std::fs::write(env.path("etc-nix/nix.conf"), format!("builders = {default}\n")).unwrap();
    let (_, said) = said_after(&env, &base(&default));
    assert!(said.contains("etc-nix/machines' does not exist"), "named in nix.conf: {said}");
}

#[test]
fn settings_missing_from_the_block_come_from_nix_conf() {
    // Lix ≤ 2.93 sends only overridden settings, so `builders` may be absent from the block.
    let env = HookEnv::new();
    std::fs::write(
        env.path("etc-nix/nix.conf"),
        "# the administrator's machines\nbuilders = ssh://from-conf x86_64-linux ; ssh://other x86_64-linux\nmax-jobs = 0\n",
    )
    .unwrap();
    let mut hook = env.start();
    hook.send(&settings_block(&[("system", "x86_64-linux")]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://from-conf".into())));
    hook.finish();

    // The block wins over nix.conf, and NIX_CONFIG over nix.conf.
    let mut env2 = HookEnv::new();
    std::fs::copy(env.path("etc-nix/nix.conf"), env2.path("etc-nix/nix.conf")).unwrap();
    env2.env.push(("NIX_CONFIG".into(), "builders = ssh://from-env x86_64-linux".into()));
    let mut hook = env2.start();
    hook.send(&settings_block(&[("system", "x86_64-linux")]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://from-env".into())));
    hook.finish();
    let mut hook = env2.start();
    hook.send(&settings_block(&[("system", "x86_64-linux"), ("builders", "ssh://from-block x86_64-linux")]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://from-block".into())));
    hook.finish();
}

#[test]
fn a_relative_nix_remote_systems_is_reported_against_the_variable() {
    let mut env = HookEnv::new();
    env.env.push(("NIX_REMOTE_SYSTEMS".into(), "etc/machines".into()));
    let mut hook = env.start();
    // What Nix 2.8 sends when NIX_REMOTE_SYSTEMS sets the default of `builders`.
    hook.send(&settings_block(&[("builders", "@etc/machines"), ("system", "x86_64-linux")]));
    assert_eq!(hook.reply(), Some(Reply::DeclinePermanently));
    let (_, log, _) = hook.finish();
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in ["NIX_REMOTE_SYSTEMS", "'etc/machines'", "'/etc/machines'"] {
        assert!(msgs.contains(w), "{msgs} lacks {w:?}");
    }
}

#[test]
fn an_error_after_accepting_ends_the_hook_as_nix_s_own_ends_exit_1_and_error_shaped() {
    // Told to answer before connecting, the hook accepts, then cannot reach the builder (port 1
    // of loopback refuses): the error that ends it reads as Nix's own hook's errors do
    // (`error: …`, coloured as Nix colours it), and it exits 1, which Nix counts a
    // `MiscFailure` in every release, as it counts its own hook's.
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&base("ssh://root@127.0.0.1:1 x86_64-linux"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://root@127.0.0.1:1".into())));
    let mut accepted = 0u64.to_le_bytes().to_vec();
    accepted.extend_from_slice(&1u64.to_le_bytes());
    put_string(&mut accepted, b"out");
    hook.send(&accepted);
    let (code, log, _) = hook.finish();
    assert_eq!(code, 1);
    let errors: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .filter(|v| v["action"] == "msg" && v["level"] == 0)
        .collect();
    let last = errors.last().and_then(|v| v["msg"].as_str()).unwrap_or_default();
    assert!(
        last.starts_with("\x1b[31;1merror:\x1b[0m nix-wasm-hook: cannot build on 'ssh://root@127.0.0.1:1'"),
        "{log:?}"
    );
}

#[test]
fn unreachable_builders_are_skipped_before_accepting() {
    // Port 1 on loopback refuses at once: a builder that is down.
    let mut env = HookEnv::new();
    env.connect_first = true;
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://root@127.0.0.1:1 x86_64-linux - 1 2 ; ssh://root@[::1]:1 x86_64-linux"),
        ("max-jobs", "0"),
        ("system", "x86_64-linux"),
    ]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline), "both are down; nothing else fits");
    let (_, log, _) = hook.finish();
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in [
        "cannot build on 'ssh://root@127.0.0.1:1'",
        "Connection refused",
        "cannot build on 'ssh://root@[::1]:1'",
    ] {
        assert!(msgs.contains(w), "{msgs} lacks {w:?}");
    }
    assert!(
        msgs.contains("(setting 'builders':1): unreachable (cannot connect"),
        "the decline says why: {msgs}"
    );
}

/// A capture of Nix 2.34 (tests/fixtures/captures), for its settings block.
fn capture_2_34(name: &str) -> Capture {
    Capture::read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/captures")
            .join(format!("nix-2.34.8-{name}/stdin-1.bin")),
    )
}

#[test]
fn our_flags_as_words_of_build_hook_then_nix_verbosity() {
    // `build-hook = /usr/local/bin/nix-wasm-hook --policy /x.wasm --postpone-wait-ms=0` under
    // `nix-build -vv`: Nix ≥ 2.10 splits the setting into words and adds its verbosity, as
    // the spy-args capture of 2.34 shows (`['/compat/spy-hook.py', '--extra1', 'x2', '5']`).
    let capture = capture_2_34("spy-args");
    let try_raw = match &capture.steps[0] {
        Step::Try { raw, .. } => raw.clone(),
        other => panic!("{other:?}"),
    };
    for verbosity in [5, 3] {
        let mut env = HookEnv::new();
        env.args = vec!["--policy".into(), policy_fixture("prefer-last"), "--postpone-wait-ms=0".into()];
        env.verbosity = verbosity;
        let mut hook = env.start();
        hook.send(
            &capture.settings_block(&[("builders", "ssh://first x86_64-linux ; ssh://last x86_64-linux")]),
        );
        hook.send(&try_raw);
        assert_eq!(
            hook.reply(),
            Some(Reply::Accept("ssh://last".into())),
            "the policy the words name decides"
        );
        hook.finish();

        // The explanation of a decline that Nix builds itself is chatty (5): shown at Nix's
        // -vv, not at its default (3).
        let mut hook = env.start();
        hook.send(&capture.settings_block(&[("builders", "ssh://arm aarch64-linux"), ("max-jobs", "1")]));
        hook.send(&try_raw);
        assert_eq!(hook.reply(), Some(Reply::Decline));
        let (code, log, plain) = hook.finish();
        assert_eq!(code, 0, "{plain:?}");
        let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
        assert_eq!(
            msgs.contains("no remote machine will build"),
            verbosity >= 5,
            "verbosity {verbosity}: {msgs}"
        );
    }
}

/// A settings block Nix really sent (tests/fixtures/captures/`dir`/stdin-1.bin).
fn capture(dir: &str) -> Capture {
    Capture::read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/captures")
            .join(dir)
            .join("stdin-1.bin"),
    )
}

#[test]
fn the_ca_derivations_experiment_lets_nix_build_it_itself_as_the_release_s_own_hook_sees_it() {
    // Nix's local store has the feature `ca-derivations` while that experiment is on, so with
    // the one fitting machine busy and a free local slot, Nix's hook declines and Nix builds
    // it; without the experiment, Nix cannot, and the answer is to wait for the machine. Where
    // the hook sees the experiment depends on the release: Nix 2.8 to 2.14 apply the parent's
    // `experimental-features` from the block; from 2.15 on the hook's own nix.conf and
    // NIX_CONFIG alone count, so an experiment turned on for one build (on the command line)
    // does not reach it, and Nix 2.26 and 2.34's hooks postpone.
    use Reply::{Decline, Postpone};
    let releases = [("2.8", "spy-accept"), ("2.26", "nix-2.26.3-spy-mj1"), ("2.34", "nix-2.34.8-spy-mj1")];
    // (experiments in the block, in the hook's nix.conf, what each release's hook answers)
    let table: [(&str, &str, [Reply; 3]); 4] = [
        ("nix-command ca-derivations", "", [Decline, Postpone, Postpone]),
        ("nix-command ca-derivations", "nix-command ca-derivations", [Decline, Decline, Decline]),
        ("nix-command", "", [Postpone, Postpone, Postpone]),
        ("", "ca-derivations", [Postpone, Decline, Decline]),
    ];
    for (in_block, in_conf, answers) in table {
        for ((release, dir), want) in releases.iter().zip(answers) {
            let mut env = HookEnv::new();
            env.args = vec!["--postpone-wait-ms".into(), "0".into()];
            std::fs::write(env.path("etc-nix/nix.conf"), format!("experimental-features = {in_conf}\n"))
                .unwrap();
            // `ssh://a`'s only slot, held as another hook holds it while building there.
            let held = hold_slot(&env, "ssh:__a-0");
            let mut hook = env.start();
            hook.send(&capture(dir).settings_block(&[
                ("builders", "ssh://a x86_64-linux - 1 1 ca-derivations"),
                ("experimental-features", in_block),
                ("max-jobs", "1"),
                ("system", "x86_64-linux"),
            ]));
            hook.send(&try_message(true, "x86_64-linux", DRV, &["ca-derivations"]));
            assert_eq!(
                hook.reply(),
                Some(want.clone()),
                "Nix {release}, experiments '{in_block}' in the block, '{in_conf}' in nix.conf"
            );
            hook.finish();
            drop(held);
        }
    }
}

/// The reply of Nix's own hook of `release` (the host's Nix 2.8, or 2.26 and 2.34 in the test
/// bed's root file systems) to `stdin`, with `nix_config` as its `NIX_CONFIG` (the hook's own
/// configuration) and the only slot of `ssh://nwh-xp-a` held, as another hook building there
/// holds it.
fn nixs_own_hook_replies(release: &str, stdin: &[u8], nix_config: &str) -> String {
    use crate::support::testbed::{describe, master_script};
    use std::process::{Command, Stdio};
    let (load, mut cmd) = if release == "2.8" {
        let mut cmd = Command::new("/usr/libexec/nix/build-remote");
        cmd.arg("3").env("NIX_CONFIG", nix_config);
        (PathBuf::from("/nix/var/nix/current-load"), cmd)
    } else {
        let made = Command::new("bash").arg(master_script()).args(["root", release]).output().unwrap();
        assert!(made.status.success(), "{}", describe(&made));
        let root = PathBuf::from(String::from_utf8_lossy(&made.stdout).trim());
        let mut cmd = Command::new("bash");
        cmd.arg(master_script()).args(["run", release, "env", &format!("NIX_CONFIG={nix_config}")]);
        cmd.args(["nix", "__build-remote", "3"]);
        (root.join("nix/var/nix/current-load"), cmd)
    };
    std::fs::create_dir_all(&load).unwrap();
    let slot = load.join("ssh:__nwh-xp-a-0");
    let held = OpenOptions::new().create(true).truncate(false).write(true).open(&slot).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut child = cmd
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(held);
    let _ = std::fs::remove_file(&slot);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    err.lines().find_map(|l| l.strip_prefix("# ")).map(str::to_string).unwrap_or_else(|| panic!("{err}"))
}

#[test]
#[cfg_attr(
    not(all(nwh_root, nwh_nix_roots)),
    ignore = "needs root and the root file systems of Nix 2.26 and 2.34: cargo xtask test makes them"
)]
fn the_ca_derivations_answers_are_those_of_each_release_s_own_hook() {
    // The same bytes to Nix's own hook of each release and to ours, the one fitting machine
    // busy: where the experiment is (the block, the hook's own configuration) decides, as the
    // table of the test above says.
    let releases = [("2.8", "spy-accept"), ("2.26", "nix-2.26.3-spy-mj1"), ("2.34", "nix-2.34.8-spy-mj1")];
    for (in_block, in_conf) in [
        ("nix-command ca-derivations", ""),
        ("nix-command ca-derivations", "nix-command ca-derivations"),
        ("nix-command", "ca-derivations"),
    ] {
        for (release, dir) in releases {
            let mut stdin = capture(dir).settings_block(&[
                ("builders", "ssh://nwh-xp-a x86_64-linux - 1 1 ca-derivations"),
                ("experimental-features", in_block),
                ("max-jobs", "1"),
                ("system", "x86_64-linux"),
            ]);
            stdin.extend(try_message(true, "x86_64-linux", DRV, &["ca-derivations"]));
            let nixs = nixs_own_hook_replies(release, &stdin, &format!("experimental-features = {in_conf}"));

            let mut env = HookEnv::new();
            env.args = vec!["--postpone-wait-ms".into(), "0".into()];
            env.env.push(("NIX_CONFIG".into(), format!("experimental-features = {in_conf}")));
            let held = hold_slot(&env, "ssh:__nwh-xp-a-0");
            let mut hook = env.start();
            hook.send(&stdin);
            let ours = match hook.reply() {
                Some(Reply::Decline) => "decline",
                Some(Reply::Postpone) => "postpone",
                other => panic!("{other:?}"),
            };
            hook.finish();
            drop(held);
            eprintln!("Nix {release}, '{in_block}' in the block, '{in_conf}' in NIX_CONFIG: Nix's {nixs}, ours {ours}");
            assert_eq!(ours, nixs, "Nix {release}, '{in_block}' in the block, '{in_conf}' in NIX_CONFIG");
        }
    }
}

#[test]
fn a_floating_derivation_is_accepted_when_its_realisations_can_be_registered() {
    // A floating content-addressed output has no path in the .drv: the hook brings it back
    // from where the builder says it is and registers its realisation under the DrvOutput id
    // it computes, so it accepts the derivation when it can compute that id.
    let env = HookEnv::new();
    let drv = env.path("x-floating.drv");
    std::fs::write(
        &drv,
        r#"Derive([("out","","r:sha256","")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("out","")])"#,
    )
    .unwrap();
    let mut hook = env.start();
    hook.send(&base("ssh://a x86_64-linux - 1 1"));
    hook.send(&try_message(true, "x86_64-linux", &drv.display().to_string(), &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://a".into())));
    hook.finish();

    // With an input derivation (which Nix resolves away before it hands a floating derivation
    // to its hook) the id cannot be computed here: declined, saying why.
    let unresolved = env.path("x-unresolved.drv");
    std::fs::write(
        &unresolved,
        r#"Derive([("out","","r:sha256","")],[("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-dep.drv",["out"])],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("out","")])"#,
    )
    .unwrap();
    let unresolved = unresolved.display().to_string();
    let mut hook = env.start();
    hook.send(&base("ssh://a x86_64-linux - 1 1"));
    hook.send(&try_message(true, "x86_64-linux", &unresolved, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline));
    let (code, log, _) = hook.finish();
    assert_eq!(code, 0);
    let messages = crate::support::fake_parent::Hook::messages(&log).join("\n");
    assert!(
        messages.contains(&format!("declines {unresolved}: it has floating content-addressed outputs"))
            && messages.contains("input derivations"),
        "{messages}"
    );

    // An output with no path that is not floating (deferred) is still declined.
    let deferred = env.path("x-deferred.drv");
    std::fs::write(
        &deferred,
        r#"Derive([("out","","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("out","")])"#,
    )
    .unwrap();
    let deferred = deferred.display().to_string();
    let mut hook = env.start();
    hook.send(&base("ssh://a x86_64-linux - 1 1"));
    hook.send(&try_message(true, "x86_64-linux", &deferred, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline));
    let (_, log, _) = hook.finish();
    let messages = crate::support::fake_parent::Hook::messages(&log).join("\n");
    assert!(messages.contains(&format!("declines {deferred}: its outputs `out` have no path")), "{messages}");
}

/// Whatever fails while the hook places a derivation (here: the current-load directory is a
/// file, so no slot can be read), Nix still gets an answer: a decline, with the reason.
#[test]
fn a_failure_while_placing_is_a_decline_with_the_reason_not_silence() {
    let env = HookEnv::new();
    std::fs::remove_dir(env.current_load()).unwrap();
    std::fs::write(env.current_load(), "not a directory").unwrap();
    let capture = capture_2_34("spy-mj1");
    let mut hook = env.start();
    hook.send(&capture.settings_block(&[("builders", "ssh://a x86_64-linux - 1 1")]));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline));
    let (code, log, plain) = hook.finish();
    assert_eq!(code, 0, "{plain:?}");
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    assert!(msgs.contains(&format!("nix-wasm-hook: declines {DRV}: ")), "{msgs}");
}

/// An options file that is not a regular file (a FIFO nobody writes to) is refused at once,
/// by what it is, instead of blocking the hook for ever.
#[test]
fn an_options_file_that_is_a_fifo_is_refused_not_waited_on() {
    let env = HookEnv::new();
    let fifo = env.path("hook.toml");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o600), 0)
        .unwrap();
    let started = std::time::Instant::now();
    let (code, log, plain) = env.start().finish();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "it did not wait for a writer");
    assert_eq!(code, 1, "{plain:?}");
    let said =
        format!("{}{}", crate::support::fake_parent::Hook::messages(&log).join("\n"), plain.join("\n"));
    assert!(
        said.contains("it is a FIFO (named pipe), not a regular file (an options file must be one)"),
        "{said}"
    );
}

/// Nix sends SIGTERM and, 500 ms later, SIGKILL: the hook must be gone well before.
const STOPPED_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Waits until the hook started with `timeline` (its `NWH_TIMELINE`) has written `phase`.
fn wait_for_mark(timeline: &Path, phase: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(timeline).unwrap_or_default().contains(&format!("\"phase\":\"{phase}\"")) {
        assert!(std::time::Instant::now() < deadline, "the hook never reached {phase}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn stopped_at_once(took: std::time::Duration, code: Option<i32>) {
    assert!(took < STOPPED_WITHIN, "the hook took {took:?} to exit after SIGTERM");
    assert_eq!(code, Some(128 + 15), "it exits with 128 + SIGTERM, having cleaned up");
}

#[test]
fn sigterm_ends_a_hook_waiting_for_a_slot_at_once_holding_nothing() {
    let mut env = HookEnv::new();
    let held = hold_slot(&env, "ssh:__a-0");
    let timeline = env.path("timeline.jsonl");
    env.env.push(("NWH_TIMELINE".into(), timeline.display().to_string()));
    env.args = vec!["--postpone-wait-ms".into(), "60000".into()];
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://a x86_64-linux"),
        ("max-jobs", "0"),
        ("system", "x86_64-linux"),
    ]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    wait_for_mark(&timeline, "decided");
    // Now blocked on the slot's lock, which it waits a minute for.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (took, code) = hook.terminate();
    stopped_at_once(took, code);
    assert!(!is_locked(&env.current_load().join("main-lock")));
    drop(held);
    assert!(!is_locked(&env.current_load().join("ssh:__a-0")), "the slot is free once its holder lets go");
}

#[test]
fn sigterm_ends_an_accepted_hook_at_once_and_frees_its_slot() {
    let env = HookEnv::new();
    let mut hook = env.start();
    hook.send(&base("ssh://nix@b1 x86_64-linux - 2"));
    hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://nix@b1".into())));
    // Holding the slot, it waits for the inputs Nix sends after `# accept`.
    let slot = env.current_load().join("ssh:__nix@b1-0");
    assert!(is_locked(&slot));
    let (took, code) = hook.terminate();
    stopped_at_once(took, code);
    assert!(!is_locked(&slot), "the slot is released");
}

#[test]
fn sigterm_ends_the_builder_front_end_at_once() {
    let mut env = HookEnv::new();
    env.args = ["--serve", "--write", "--machines", "ssh://a x86_64-linux"].map(String::from).into();
    let hook = env.start();
    // It waits for the greeting of Nix's hook on stdin.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (took, code) = hook.terminate();
    stopped_at_once(took, code);
}
