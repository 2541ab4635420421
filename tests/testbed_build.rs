//! Builds really go remote: real Nix with our hook on the test bed, over real SSH, with every
//! Nix version as the master and builders reached over `ssh://` and over `ssh-ng://`
//! (`on_every_nix_and_protocol!`); the builders are the host's Nix 2.8.

use std::process::Child;

use crate::on_every_nix_and_protocol;
use crate::support::hook::OurHook;
use crate::support::procs;
use crate::support::testbed::{
    describe, graph_of_six, out_paths, sh_derivation, unique_nonce, Nix, Opts, Proto, Testbed,
};
use crate::support::tool::stderr;

on_every_nix_and_protocol!(
    one_derivation_is_built_on_a_builder_and_comes_back,
    a_graph_spreads_over_builders_and_inputs_travel_between_them,
    two_outputs_come_back_registered_with_their_references,
    a_failing_build_reports_the_builder_message,
    a_build_that_times_out_on_the_builder_is_reported_as_timed_out,
    a_failed_build_ends_as_with_nixs_own_hook,
    a_hook_killed_while_unpacking_leaves_nothing_valid_and_the_next_build_works,
    a_failed_unpacking_is_removed_and_the_next_build_works,
);

/// Which test bed builder a hostname names (`nwhtb-b3` → 3).
fn builder_of(hostname: &str) -> usize {
    hostname
        .trim()
        .strip_prefix("nwhtb-b")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a builder: {hostname:?}"))
}

fn up(n: usize, nix: Nix, proto: Proto) -> Option<Testbed> {
    Some(Testbed::up_or_skip(n, Opts::default())?.with_master(nix).with_protocol(proto))
}

/// The path is valid in the master's store and its contents hash to what was registered.
fn assert_verified(tb: &Testbed, path: &str) {
    let out = tb.master_store(&["--verify-path", path]);
    assert!(out.status.success(), "{path} is valid and intact on the master: {}", describe(&out));
}

fn one_derivation_is_built_on_a_builder_and_comes_back(nix: Nix, proto: Proto) {
    let Some(tb) = up(2, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let expr = sh_derivation(
        "nwh-one",
        None,
        &[],
        "read h < /proc/sys/kernel/hostname; echo $h > $out; echo built on $h",
    );
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    let path = &out_paths(&out)[0];
    let host = std::fs::read_to_string(tb.master_path(path)).expect("the output is in the local store");
    let b = builder_of(&host);
    assert!(tb.valid_on(b, path), "{path} is in the store of the builder that built it");
    assert_verified(&tb, path);
    let err = stderr(&out);
    assert!(err.contains(&format!("on '{}'", tb.uri(b))), "{err}");
}

fn a_graph_spreads_over_builders_and_inputs_travel_between_them(nix: Nix, proto: Proto) {
    let Some(tb) = up(3, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let expr = graph_of_six();
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    let top = &out_paths(&out)[0];
    let where_ = std::fs::read_to_string(tb.master_path(&format!("{top}/where"))).unwrap();
    let places: std::collections::BTreeMap<&str, usize> =
        where_.lines().map(|l| l.split_once(' ').map(|(n, h)| (n, builder_of(h))).unwrap()).collect();
    assert_eq!(places.len(), 6, "{where_}");
    let used: std::collections::BTreeSet<_> = places.values().collect();
    assert!(used.len() >= 2, "the graph should spread over builders: {where_}");
    // Some derivation was built on a builder other than one of its inputs': that input was
    // shipped from this machine to the builder.
    let shipped =
        [("nwh-ab", ["nwh-a", "nwh-b"]), ("nwh-bc", ["nwh-b", "nwh-c"]), ("nwh-top", ["nwh-ab", "nwh-bc"])]
            .iter()
            .any(|(d, ins)| ins.iter().any(|i| places[i] != places[d]));
    assert!(shipped, "no input travelled between builders: {where_}");
    // Every output of the graph is valid and intact in the master's store.
    let deriver = tb.master_store(&["--query", "--deriver", top]);
    let drv = String::from_utf8_lossy(&deriver.stdout).trim().to_string();
    let closure = tb.master_store(&["--query", "--requisites", "--include-outputs", &drv]);
    assert!(closure.status.success(), "{}", describe(&closure));
    let closure = String::from_utf8_lossy(&closure.stdout).into_owned();
    let outputs: Vec<&str> = closure.lines().filter(|p| !p.ends_with(".drv")).collect();
    assert_eq!(outputs.len(), 6, "{closure}");
    for path in outputs {
        assert_verified(&tb, path);
    }
    let err = stderr(&out);
    assert!(err.matches(&format!(" on '{}://root@", proto.scheme())).count() >= 6, "{err}");
}

/// Two outputs, one referring to the other and to an input: registered together, with the
/// references the builder found.
fn two_outputs_come_back_registered_with_their_references(nix: Nix, proto: Proto) {
    let Some(tb) = up(1, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    let expr = format!(
        r#"let
  dep = builtins.derivation {{
    name = "nwh-dep"; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo dep > $out" ];
  }};
  two = builtins.derivation {{
    name = "nwh-two"; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
    outputs = [ "out" "doc" ]; inherit dep;
    args = [ "-c" "echo $dep > $out; echo $out > $doc" ];
  }};
in [ two.out two.doc ]"#,
        nonce = unique_nonce()
    );
    let out = tb.nix_build(&expr, &hook.remote_only(&tb.machine(1)));
    assert!(out.status.success(), "{}", describe(&out));
    let paths = out_paths(&out);
    assert_eq!(paths.len(), 2, "{}", describe(&out));
    let (out_path, doc) =
        if paths[0].ends_with("-doc") { (&paths[1], &paths[0]) } else { (&paths[0], &paths[1]) };
    for p in [out_path, doc] {
        assert_verified(&tb, p);
    }
    let references = |p: &str| {
        let q = tb.master_store(&["--query", "--references", p]);
        assert!(q.status.success(), "{}", describe(&q));
        String::from_utf8_lossy(&q.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(references(doc), [out_path.as_str()], "doc refers to out");
    let dep = std::fs::read_to_string(tb.master_path(out_path)).unwrap().trim().to_string();
    assert_eq!(references(out_path), [dep], "out refers to the input it names");
    let deriver = tb.master_store(&["--query", "--deriver", out_path]);
    assert!(
        String::from_utf8_lossy(&deriver.stdout).trim().ends_with("-nwh-two.drv"),
        "{}",
        describe(&deriver)
    );
}

fn a_failing_build_reports_the_builder_message(nix: Nix, proto: Proto) {
    let Some(tb) = up(1, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    let expr = sh_derivation("nwh-fails", None, &[], "echo the-builder-says-boom >&2; exit 3");
    let out = tb.nix_build(&expr, &hook.remote_only(&tb.machine(1)));
    assert_eq!(out.status.code(), Some(1), "as with Nix's own hook: {}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("the-builder-says-boom"), "the builder's log reaches Nix: {err}");
    assert!(err.contains("error: build of '"), "{err}");
    assert!(err.contains(&format!("on '{}' failed", tb.uri(1))), "{err}");
}

fn a_build_that_times_out_on_the_builder_is_reported_as_timed_out(nix: Nix, proto: Proto) {
    let Some(tb) = up(1, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    // Well past the timeout (Nix looks at it about once a second), and no longer: over
    // `ssh-ng://` the build runs to its end.
    let expr = sh_derivation("nwh-slow", None, &[], "/bin/sleep 5; echo > $out");
    let line = tb.machine(1);
    let out = tb.nix_build(&expr, &[&hook.remote_only(&line)[..], &["--timeout", "2"]].concat());
    let err = stderr(&out);
    match proto {
        // `timeout` reaches the builder in the build options, as from Nix's own hook; the
        // hook then exits 1 as Nix's does, which Nix counts a `MiscFailure`.
        Proto::Ssh => {
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            assert!(err.contains("timed out"), "{err}");
        }
        // Nix's own hook sends a daemon no settings, so the builder's own `timeout` (none
        // here) applies; ours neither.
        Proto::SshNg => assert!(out.status.success(), "{}", describe(&out)),
    }
}

/// `nix-build` of `expr` through `hook` (ours, or Nix's own when `None`) to the test bed's
/// builder 1, with `extra` arguments.
fn build_through(tb: &Testbed, hook: Option<&OurHook>, expr: &str, extra: &[&str]) -> std::process::Output {
    let line = tb.machine(1);
    let mut args: Vec<&str> = match hook {
        Some(h) => h.remote_only(&line).to_vec(),
        None => vec!["--max-jobs", "0", "--option", "builders", &line],
    };
    args.extend_from_slice(extra);
    tb.nix_build(expr, &args)
}

/// A failed remote build, plainly and under `--keep-failed`, through our hook and through
/// Nix's own: nix-build ends with the same status (1: Nix counts its hook's exit 1 a
/// `MiscFailure`, where our former 100 made it a `PermanentFailure` and nix-build exit 100 on
/// Nix 2.8 to 2.28), the failure reads as Nix's `error: build of '…' on '…' failed: …`, and the
/// note that the build directory was kept on the builder comes where Nix's own hook gives it
/// (Nix 2.30 and later).
fn a_failed_build_ends_as_with_nixs_own_hook(nix: Nix, proto: Proto) {
    let Some(tb) = up(1, nix, proto) else { return };
    let ours = OurHook::new(&[]);
    let kept = "The failed build directory was kept on the remote builder due to `--keep-failed`.";
    for extra in [&[][..], &["--keep-failed"][..]] {
        let mut ended = Vec::new();
        for hook in [None, Some(&ours)] {
            let who = if hook.is_some() { "our hook" } else { "Nix's own hook" };
            let expr = sh_derivation("nwh-fails-alike", None, &[], "echo the-builder-says-boom >&2; exit 3");
            let out = build_through(&tb, hook, &expr, extra);
            let err = stderr(&out);
            assert!(err.contains("error: build of '"), "{who} {extra:?}: {err}");
            assert!(err.contains(&format!("' on '{}' failed: ", tb.uri(1))), "{who} {extra:?}: {err}");
            // The builder's own note, in the build log Nix shows, says it kept the directory:
            // `keep-failed` reached it (over `ssh://`, in the build options).
            ended.push((out.status.code(), err.contains(kept), err.contains("keeping build directory")));
        }
        eprintln!(
            "{extra:?}: Nix's own hook, then ours: (exit, says it kept the directory, the builder kept it) {ended:?}"
        );
        assert_eq!(ended[0], ended[1], "{extra:?}: as with Nix's own hook");
        assert_eq!(ended[0].0, Some(1), "{extra:?}");
        if extra.is_empty() {
            assert!(!ended[0].1 && !ended[0].2, "nothing kept, nothing said");
        } else if proto == Proto::Ssh {
            assert!(ended[0].2, "keep-failed reaches an ssh:// builder");
        }
    }
}

/// The size of [`big_output`]'s file: unpacking it takes some hundreds of milliseconds, and
/// the test interrupts it within a few (a hook killed too late would have made the output
/// valid, or left it whole: both fail the test).
const BIG_MIB: u64 = 64;

/// A derivation with one large output, so that unpacking it takes long enough to interrupt.
fn big_output(nonce: &str) -> String {
    format!(
        r#"builtins.derivation {{
  name = "nwh-big"; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; /bin/dd if=/dev/zero of=$out/zeros bs=1M count={BIG_MIB} 2>/dev/null; echo done > $out/end" ];
}}"#
    )
}

/// The output path of `expr` (one output), from the master's `nix-instantiate`.
fn output_of(tb: &Testbed, expr: &str) -> String {
    let drv = tb.master_cmd(&["nix-instantiate", "-E", expr]).output().unwrap();
    assert!(drv.status.success(), "{}", describe(&drv));
    let drv = String::from_utf8_lossy(&drv.stdout).trim().to_string();
    let out = tb.master_store(&["--query", "--outputs", &drv]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The processes that take part in unpacking an output under `child` (our nix-build), once
/// the unpacking has begun (its file is on disk): the hook, and the SSH master that carries
/// its conversation with the builder's store.
struct Unpacking {
    hook: u32,
    master: u32,
}

fn unpacking_under(child: &mut Child, tb: &Testbed, hook: &OurHook, path: &str) -> Unpacking {
    let (pid, _, _) = procs::wait_for_descendant(child, "our hook", |argv| {
        argv.first().is_some_and(|a| a == env!("CARGO_BIN_EXE_nix-wasm-hook"))
    });
    let file = tb.master_path(&format!("{path}/zeros"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !file.exists() {
        assert!(child.try_wait().unwrap().is_none(), "nix-build ended before {path} was unpacked");
        assert!(std::time::Instant::now() < deadline, "{path} was never unpacked");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let masters = hook.master_pids();
    assert_eq!(masters.len(), 1, "one builder, one SSH master: {masters:?}");
    Unpacking { hook: pid, master: masters[0] }
}

/// Kill `victim(unpacking)` while the output is unpacked; then the output must not be valid,
/// `after` must hold, and the same derivation must build again.
fn interrupt_unpacking(
    nix: Nix,
    proto: Proto,
    victim: impl Fn(Unpacking) -> u32,
    after: impl Fn(&Testbed, &str),
) {
    let Some(tb) = up(1, nix, proto) else { return };
    let hook = OurHook::new(&[]);
    let expr = big_output(&unique_nonce());
    let path = output_of(&tb, &expr);
    let line = tb.machine(1);
    let mut child = tb.nix_build_cmd(&expr, &hook.remote_only(&line)).spawn().unwrap();
    procs::kill(victim(unpacking_under(&mut child, &tb, &hook, &path)));
    let first = child.wait_with_output().unwrap();
    assert!(!first.status.success(), "the interrupted build fails: {}", describe(&first));
    let valid = tb.master_store(&["--check-validity", &path]);
    assert!(!valid.status.success(), "{path} must not be valid after an interrupted unpacking");
    after(&tb, &path);

    let again = tb.nix_build(&expr, &hook.remote_only(&line));
    assert!(again.status.success(), "the next build of the same derivation works: {}", describe(&again));
    assert_eq!(out_paths(&again), [path.as_str()]);
    assert_verified(&tb, &path);
    let end = std::fs::read_to_string(tb.master_path(&format!("{path}/end"))).unwrap();
    assert_eq!(end, "done\n");
    // The master's store outlives the test bed.
    let _ = tb.master_store(&["--delete", &path]);
}

/// Nix kills its hook with SIGKILL when it is interrupted: the half-unpacked output stays on
/// disk, invalid, and the next hook removes it before unpacking again.
fn a_hook_killed_while_unpacking_leaves_nothing_valid_and_the_next_build_works(nix: Nix, proto: Proto) {
    interrupt_unpacking(
        nix,
        proto,
        |u| u.hook,
        |tb, path| {
            // Half unpacked indeed: the kill came before the file was whole.
            let zeros = tb.master_path(&format!("{path}/zeros"));
            let len = std::fs::metadata(&zeros).map_or(0, |m| m.len());
            eprintln!("testbed: {len} of {} bytes were unpacked when the hook was killed", BIG_MIB << 20);
            assert!(
                len < BIG_MIB << 20,
                "{} was whole ({len} bytes) when the hook was killed",
                zeros.display()
            );
        },
    );
}

/// When the unpacking fails (here: the stream from the builder breaks off with its SSH
/// connection), the hook removes what it unpacked before it reports.
fn a_failed_unpacking_is_removed_and_the_next_build_works(nix: Nix, proto: Proto) {
    interrupt_unpacking(
        nix,
        proto,
        |u| u.master,
        |tb, path| {
            assert!(
                std::fs::symlink_metadata(tb.master_path(path)).is_err(),
                "the hook removed the half-unpacked {path}"
            );
        },
    );
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn nothing_to_upload_means_no_waiting_for_the_upload_lock() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    // Another hook is uploading to this builder (or hangs while holding the lock).
    let dir = nwh_slots::LoadDir::open("/nix/var/nix/current-load");
    let uri = tb.uri(1);
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.upload_lock_path(&uri))
        .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let expr = sh_derivation("nwh-no-inputs", None, &[], "echo > $out");
    let mut cmd = tb.nix_build_cmd(&expr, &hook.remote_only(&tb.machine(1)));
    let mut child = cmd.spawn().unwrap();
    // Generous: the build takes well under a second; waiting on the lock would never end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(held);
    assert!(status.is_some_and(|s| s.success()), "the build waited for an upload lock it did not need");
}
