//! Builds really go remote: real Nix 2.8 with our hook on the test bed, over real SSH.

use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, sh_derivation, unique_nonce, Opts, Testbed};
use crate::support::tool::stderr;

/// Which test bed builder a hostname names (`nwhtb-b3` → 3).
fn builder_of(hostname: &str) -> usize {
    hostname
        .trim()
        .strip_prefix("nwhtb-b")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a builder: {hostname:?}"))
}

#[test]
fn one_derivation_is_built_on_a_builder_and_comes_back() {
    let Some(tb) = Testbed::up_or_skip(2, Opts::default()) else { return };
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
    let host = std::fs::read_to_string(path).expect("the output is in the local store");
    let b = builder_of(&host);
    assert!(tb.valid_on(b, path), "{path} is in the store of the builder that built it");
    let check = std::process::Command::new("nix-store").args(["--check-validity", path]).status().unwrap();
    assert!(check.success(), "{path} is valid locally");
    let err = stderr(&out);
    assert!(err.contains(&format!("on 'ssh://root@{}'", tb.addr(b))), "{err}");
}

#[test]
fn a_graph_spreads_over_builders_and_inputs_travel_between_them() {
    let Some(tb) = Testbed::up_or_skip(3, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    // leaves a b c; ab <- a b; bc <- b c; top <- ab bc. Each output lists where its whole
    // sub-graph was built, so the top output shows the path every input travelled.
    let expr = format!(
        r#"let
  mk = name: deps: builtins.derivation {{
    inherit name; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
    deps = deps;
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
    );
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    let top = &out_paths(&out)[0];
    let where_ = std::fs::read_to_string(format!("{top}/where")).unwrap();
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
    let err = stderr(&out);
    assert!(err.matches(" on 'ssh://root@").count() >= 6, "{err}");
}

#[test]
fn a_failing_build_reports_the_builder_message() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let expr = sh_derivation("nwh-fails", None, &[], "echo the-builder-says-boom >&2; exit 3");
    let out = tb.nix_build(&expr, &hook.remote_only(&tb.machine(1)));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("the-builder-says-boom"), "the builder's log reaches Nix: {err}");
    assert!(err.contains(&format!("on 'ssh://root@{}' failed", tb.addr(1))), "{err}");
}

#[test]
fn a_build_that_times_out_on_the_builder_is_reported_as_timed_out() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let expr = sh_derivation("nwh-slow", None, &[], "/bin/sleep 30; echo > $out");
    // `timeout` reaches the builder in the build options; the hook exits 101 (Nix 2.8: TimedOut).
    let line = tb.machine(1);
    let out = tb.nix_build(&expr, &[&hook.remote_only(&line)[..], &["--timeout", "2"]].concat());
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn nothing_to_upload_means_no_waiting_for_the_upload_lock() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    // Another hook is uploading to this builder (or hangs while holding the lock).
    let dir = nwh_slots::LoadDir::open("/nix/var/nix/current-load");
    let uri = format!("ssh://root@{}", tb.addr(1));
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
