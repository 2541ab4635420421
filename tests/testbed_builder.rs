//! Builder mode: Nix's own hook, no `build-hook` setting, one `ssh://localhost?remote-program=`
//! line naming our binary, which dispatches to the test bed's real builders. With every Nix
//! version as the master, and Lix where a Lix root file system is there.

use crate::on_every_nix_and_lix;
use crate::support::hook::OurHook;
use crate::support::procs;
use crate::support::testbed::{
    describe, graph_of_six, out_paths, sh_derivation, six_valid_outputs, unique_nonce, Nix, Opts, Testbed,
};
use crate::support::tool::stderr;

on_every_nix_and_lix!(
    a_graph_is_dispatched_to_the_real_builders_and_lands_valid,
    a_failing_build_fails_with_the_builders_words,
    a_build_no_real_builder_can_take_fails_at_once_with_the_reasons,
    a_full_cluster_queues_and_drains_in_order_of_arrival,
    the_builder_killed_mid_build_leaves_both_stores_consistent_and_no_slot_held,
    a_real_builder_that_is_down_is_skipped_and_remembered,
    the_next_build_borrows_the_session_the_last_one_used,
);

/// Nix's own hook with `builders` as its only machine, never building locally.
fn through(line: &str) -> [&str; 5] {
    ["--max-jobs", "0", "--option", "builders", line]
}

fn up(n: usize, opts: Opts, nix: Nix) -> Option<Testbed> {
    Testbed::up_or_skip_as(nix, n, opts)
}

fn a_graph_is_dispatched_to_the_real_builders_and_lands_valid(nix: Nix) {
    let Some(tb) = up(3, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    let line = ours.builder_line(3, "-");
    let expr = graph_of_six();
    let out = tb.nix_build(&expr, &through(&line));
    assert!(out.status.success(), "{}", describe(&out));
    // Nix imported every output itself; each is valid and intact.
    let places = six_valid_outputs(&tb, &out_paths(&out)[0]);
    let hosts: std::collections::BTreeSet<&String> = places.values().collect();
    assert!(
        hosts.iter().all(|h| h.starts_with("nwhtb-b")),
        "every derivation ran on a real builder: {places:?}"
    );
    assert!(hosts.len() >= 2, "our policy spread the graph over the real builders: {places:?}");
    // Nix's hook chose our line; we chose the real builders.
    let err = stderr(&out);
    assert!(err.contains("ssh://localhost?remote-program="), "{err}");
}

/// Nix's hook kills this builder as it closes the connection, so the session to the real
/// builder goes back to the keeper of warm sessions as soon as Nix has fetched the outputs: the
/// later builds use the same store program there.
fn the_next_build_borrows_the_session_the_last_one_used(nix: Nix) {
    let Some(tb) = up(1, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machine(1), &[]);
    let line = ours.builder_line(1, "-");
    let build = |name: &str| {
        let expr = sh_derivation(name, None, &[], "read h < /proc/sys/kernel/hostname; echo $h > $out");
        let out = tb.nix_build(&expr, &through(&line));
        assert!(out.status.success(), "{}", describe(&out));
    };
    // The first build starts the keeper; the second leaves it a session.
    build("nwh-warm-builder-a");
    build("nwh-warm-builder-b");
    let kept = procs::serve_programs();
    assert_eq!(kept.len(), 1, "one session kept between builds: {kept:?}");
    build("nwh-warm-builder-c");
    build("nwh-warm-builder-d");
    assert_eq!(procs::serve_programs(), kept, "the later builds used the kept session");
}

fn a_failing_build_fails_with_the_builders_words(nix: Nix) {
    let Some(tb) = up(1, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machine(1), &[]);
    let line = ours.builder_line(1, "-");
    let expr = sh_derivation("nwh-fails", None, &[], "echo the-builder-says-boom >&2; exit 3");
    let out = tb.nix_build(&expr, &through(&line));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("the-builder-says-boom"), "the real builder's log reaches Nix: {err}");
    assert!(err.contains(&format!("on 'ssh://root@{}'", tb.addr(1))), "the real builder is named: {err}");
}

fn a_build_no_real_builder_can_take_fails_at_once_with_the_reasons(nix: Nix) {
    let Some(tb) = up(1, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machine(1), &[]);
    // Our line promises `kvm`, which no real builder behind it has.
    let line = ours.builder_line(1, "kvm");
    let expr = sh_derivation("nwh-kvm", None, &["kvm"], "echo > $out");
    let started = std::time::Instant::now();
    let out = tb.nix_build(&expr, &through(&line));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(started.elapsed().as_secs() < 60, "failed at once, not after waiting");
    let err = stderr(&out);
    for words in
        [format!("ssh://root@{} (", tb.addr(1)), "does not support the required feature `kvm`".into()]
    {
        assert!(err.contains(&words), "missing {words:?} in\n{err}");
    }
}

/// One real slot, four builds handed over at once: they wait inside our builder, one after
/// the other, in the order they arrived, and Nix never postpones.
fn a_full_cluster_queues_and_drains_in_order_of_arrival(nix: Nix) {
    let Some(tb) = up(1, Opts::default(), nix) else { return };
    let trace = tempfile::NamedTempFile::new().unwrap();
    let trace_arg = trace.path().display().to_string();
    let ours = OurHook::as_builder(&tb.machine(1), &["--trace", &trace_arg]);
    let line = ours.builder_line(4, "-");
    let nonce = unique_nonce();
    let drvs: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#"(builtins.derivation {{ name = "nwh-q-{i}"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "read s < /proc/uptime; /bin/sleep 1; read e < /proc/uptime; echo $s $e > $out" ]; }})"#
            )
        })
        .collect();
    let out = tb.nix_build(&format!("[ {} ]", drvs.join("\n")), &through(&line));
    assert!(out.status.success(), "{}", describe(&out));
    // The one slot ran them one at a time.
    let mut spans: Vec<(f64, f64)> = out_paths(&out)
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(tb.master_path(p)).unwrap();
            let t: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).step_by(2).collect();
            (t[0], t[1])
        })
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(spans.len(), 4);
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "builds overlapped on one slot: {spans:?}");
    }
    // Those that waited were placed in the order they started waiting.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(trace.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let drv = |r: &serde_json::Value| r["request"]["drv_path"].as_str().unwrap().to_string();
    let kind = |r: &serde_json::Value| r["outcome"]["kind"].as_str().unwrap().to_string();
    let mut waited: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| kind(r) == "waited") {
        if !waited.contains(&drv(r)) {
            waited.push(drv(r));
        }
    }
    let placed: Vec<String> =
        records.iter().filter(|r| kind(r) == "accepted").map(drv).filter(|d| waited.contains(d)).collect();
    assert!(waited.len() >= 2, "builds waited in the builder: {records:?}");
    assert_eq!(placed, waited, "first come, first served");
    assert!(!records.iter().any(|r| kind(r) == "postponed"), "nothing was postponed");
    // Builder mode's trace is a trace like any other: `replay` decides every record as recorded.
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .arg("replay")
        .arg(trace.path())
        .args(["--against", "recorded", "--fail-on-diff"])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", describe(&replay));
    assert!(!stderr(&out).contains("postpone"), "{}", describe(&out));
}

/// Nix kills the builder (here: SIGKILL to our process) while the build runs on the real
/// builder: the build fails, nothing is valid on the master, no slot stays held, the real
/// builder's store verifies, and the next build of the derivation works.
fn the_builder_killed_mid_build_leaves_both_stores_consistent_and_no_slot_held(nix: Nix) {
    let Some(tb) = up(1, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machine(1), &[]);
    let line = ours.builder_line(1, "-");
    // The kill comes within milliseconds of the slot being taken; a build done by then would
    // succeed, and fail the test.
    let expr = sh_derivation("nwh-killed", None, &[], "/bin/sleep 1; echo done > $out");
    let mut child = tb.nix_build_cmd(&expr, &through(&line)).spawn().unwrap();
    let (builder, _, _) = procs::wait_for_descendant(&mut child, "our builder", |argv| {
        argv.iter().any(|a| a == "--serve") && argv.iter().any(|a| a.ends_with("nix-wasm-hook"))
    });
    // Killed once the build runs there: its slot is held.
    let load = nwh_slots::LoadDir::open(tb.master_path("/nix/var/nix/current-load"));
    let uri = format!("ssh://root@{}", tb.addr(1));
    let in_use = || {
        let main = load.lock_main().unwrap();
        load.scan(&main, &uri, 1).unwrap().in_use
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while in_use() == 0 {
        assert!(std::time::Instant::now() < deadline, "the build never took the real builder's slot");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    procs::kill(builder);
    let first = child.wait_with_output().unwrap();
    assert!(!first.status.success(), "{}", describe(&first));
    assert_eq!(in_use(), 0, "no slot is held after the builder died");
    let verify = tb.exec(1, &["nix-store", "--verify"]);
    assert!(verify.status.success(), "the real builder's store is consistent: {}", describe(&verify));

    let again = tb.nix_build(&expr, &through(&line));
    assert!(again.status.success(), "{}", describe(&again));
    let path = &out_paths(&again)[0];
    assert!(tb.master_store(&["--verify-path", path]).status.success());
}

/// A real builder that refuses connections: skipped for the next one, said in ssh's words in
/// Nix's output, and remembered, so that later builds do not try it again, as in hook mode.
fn a_real_builder_that_is_down_is_skipped_and_remembered(nix: Nix) {
    let Some(tb) = up(2, Opts::default(), nix) else { return };
    tb.builder_stop(1);
    let ours = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    let line = ours.builder_line(8, "-");
    let refused = format!("cannot build on 'ssh://root@{}'", tb.addr(1));
    let builds = |what: &str| {
        let nonce = unique_nonce();
        let drvs: Vec<String> = (0..4)
            .map(|i| {
                format!(
                    r#"(builtins.derivation {{ name = "nwh-{what}-{i}"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "read h < /proc/sys/kernel/hostname; echo $h > $out" ]; }})"#
                )
            })
            .collect();
        let out = tb.nix_build(&format!("[ {} ]", drvs.join("\n")), &through(&line));
        assert!(out.status.success(), "every build completes: {}", describe(&out));
        for p in out_paths(&out) {
            let host = std::fs::read_to_string(tb.master_path(&p)).unwrap();
            assert_eq!(host.trim(), "nwhtb-b2", "{p} was built on the builder that is up");
        }
        stderr(&out)
    };
    let first = builds("down");
    assert!(first.contains(&refused) && first.contains("Connection refused"), "{first}");
    // Builds that started together may each have found it down; later ones skip it.
    let later = builds("still-down");
    assert!(!later.contains(&refused), "the builder was remembered as down: {later}");
}
