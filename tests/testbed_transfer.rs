//! The transfer on the test bed: features routing, builders that are down or frozen, a big
//! input streamed, host keys, and arguments that must never reach a shell.

use std::collections::BTreeMap;

use crate::support::hook::OurHook;
use crate::support::procs;
use crate::support::testbed::{describe, out_paths, sh_derivation, unique_nonce, Opts, Testbed};
use crate::support::tool::stderr;

fn host_of(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn drv(name: &str, features: &[&str], script: &str) -> String {
    sh_derivation(name, None, features, script)
}

const HOSTNAME: &str = "read h < /proc/sys/kernel/hostname; echo $h > $out";

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn required_and_mandatory_features_route_builds() {
    // b1 supports kvm; b2 only takes derivations that ask for benchmark; b3 is plain.
    let opts =
        Opts { features: Some("kvm - -".into()), mandatory: Some("- benchmark -".into()), ..Opts::default() };
    let Some(tb) = Testbed::up_or_skip(3, opts) else { return };
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let expr = format!(
        "[ ({}) ({}) ({}) ]",
        drv("nwh-kvm", &["kvm"], HOSTNAME),
        drv("nwh-bench", &["benchmark"], HOSTNAME),
        drv("nwh-plain", &[], HOSTNAME)
    );
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    let hosts: Vec<String> = out_paths(&out).iter().map(|p| host_of(p)).collect();
    assert_eq!(hosts[0], "nwhtb-b1", "kvm only on b1");
    assert_eq!(hosts[1], "nwhtb-b2", "benchmark is mandatory on b2 and requested");
    assert_ne!(hosts[2], "nwhtb-b2", "b2 takes only derivations that ask for benchmark");
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn stopped_and_frozen_builders_are_skipped_and_remembered() {
    let Some(tb) = Testbed::up_or_skip(4, Opts::default()) else { return };
    let hook = OurHook::new(&["--connect-timeout", "2"]);
    tb.builder_stop(1);
    tb.builder_freeze(2);
    let builders = tb.machines_lines().join("\n");
    let drvs: Vec<String> =
        (0..8).map(|i| format!("({})", drv(&format!("nwh-survive-{i}"), &[], HOSTNAME))).collect();
    let expr = format!("[ {} ]", drvs.join(" "));
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    tb.builder_thaw(2);
    assert!(out.status.success(), "every build completes: {}", describe(&out));
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for p in out_paths(&out) {
        *per_host.entry(host_of(&p)).or_default() += 1;
    }
    assert!(per_host.keys().all(|h| h == "nwhtb-b3" || h == "nwhtb-b4"), "{per_host:?}");
    let err = stderr(&out);
    // The first hook that finds each builder down says so, in ssh's words; the next ones
    // skip it without waiting (the reason is said once).
    let refused = format!("cannot build on 'ssh://root@{}'", tb.addr(1));
    let frozen = format!("cannot build on 'ssh://root@{}'", tb.addr(2));
    assert_eq!(err.matches(&refused).count(), 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    let advice = format!("nothing accepts connections on port 22 of {}: is sshd running there", tb.addr(1));
    assert!(err.contains(&advice), "missing {advice:?} in\n{err}");
    assert_eq!(err.matches(&frozen).count(), 1, "{err}");
    assert!(err.to_lowercase().contains("timed out"), "{err}");
    let advice = format!("root@{} did not answer in time: is it up (a VM still booting?)", tb.addr(2));
    assert!(err.contains(&advice), "missing {advice:?} in\n{err}");
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_64_mib_input_is_streamed_not_held() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap();
    let expr = format!(
        r#"builtins.derivation {{
  name = "nwh-big"; nonce = "{}"; system = builtins.currentSystem; builder = "/bin/sh";
  big = builtins.path {{ path = {}; name = "nwh-big-input-{}"; }};
  args = [ "-c" "/usr/bin/wc -c < $big > $out" ];
}}"#,
        unique_nonce(),
        big.display(),
        unique_nonce()
    );
    // -vvvv (talkative) shows the hook's summary line with its peak memory; a tiny build
    // first gives the hook's own baseline (the Wasm engine and policy included).
    let peak = |expr: &str, name: &str| -> (u64, String) {
        let line = tb.machine(1);
        let out = tb.nix_build(expr, &[&["-vvvv"][..], &hook.remote_only(&line)].concat());
        assert!(out.status.success(), "{}", describe(&out));
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("nix-wasm-hook: built") && l.contains(name))
            .unwrap_or_else(|| panic!("{err}"))
            .to_string();
        let kib = line.rsplit("peak memory ").next().unwrap().trim_end_matches(" KiB").parse().unwrap();
        if name == "nwh-big" {
            assert_eq!(host_of(&out_paths(&out)[0]), (64u64 << 20).to_string());
            assert!(line.contains("(1 paths uploaded"), "{line}");
        }
        (kib, line)
    };
    let (base, _) = peak(&drv("nwh-tiny", &[], HOSTNAME), "nwh-tiny");
    let (big, line) = peak(&expr, "nwh-big");
    eprintln!("MEMORY hook peak {big} KiB for a 65536 KiB input; {base} KiB for an empty build ({line})");
    assert!(big < base + 16 * 1024, "the hook held {} KiB more for a 64 MiB input: {line}", big - base);
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_host_key_that_differs_is_refused_with_both_fingerprints() {
    let Some(tb) = Testbed::up_or_skip(2, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    // Builder 1's line with builder 2's host key.
    let mut fields: Vec<String> = tb.machine(1).split(' ').map(str::to_string).collect();
    fields[7] = tb.machine(2).split(' ').nth(7).unwrap().to_string();
    let line = fields.join(" ");
    let out = tb.nix_build(&drv("nwh-hostkey", &[], HOSTNAME), &hook.remote_only(&line));
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    let key_of = |i: usize| {
        use base64::Engine;
        let b64 = tb.machine(i).split(' ').nth(7).unwrap().to_string();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
    };
    let expected = nix_wasm_hook::transfer::ssh::fingerprint(&key_of(2)).unwrap();
    let offered = nix_wasm_hook::transfer::ssh::fingerprint(&key_of(1)).unwrap();
    assert!(
        err.contains(&format!(
            "its host key is {offered}, but the machines file (column 8) expects {expected}"
        )),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn nothing_from_the_machines_file_reaches_a_shell() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let base = tb.machine(1);
    let rest: Vec<&str> = base.splitn(2, ' ').collect();
    for (i, uri) in [
        format!("ssh://root@{}?remote-program=nix-store;touch${{IFS}}/tmp/nwh-pwned-1", tb.addr(1)),
        format!("ssh://root@{}?remote-program=nix-store%20--version;touch%20/tmp/nwh-pwned-2", tb.addr(1)),
        format!("ssh://root@{}?remote-store=local';touch${{IFS}}/tmp/nwh-pwned-3;'", tb.addr(1)),
        format!("ssh://root@{}'$(touch${{IFS}}/tmp/nwh-pwned-4)'", tb.addr(1)),
    ]
    .iter()
    .enumerate()
    {
        let line = format!("{uri} {}", rest[1]);
        let out = tb.nix_build(&drv(&format!("nwh-inject-{i}"), &[], HOSTNAME), &hook.remote_only(&line));
        let n = i + 1;
        assert!(!out.status.success(), "{uri} must not build: {}", describe(&out));
        assert!(
            !std::path::Path::new(&format!("/tmp/nwh-pwned-{n}")).exists(),
            "{uri} ran a command locally"
        );
        let remote = tb.exec(1, &["/bin/sh", "-c", &format!("test -e /tmp/nwh-pwned-{n}")]);
        assert!(!remote.status.success(), "{uri} ran a command on the builder");
    }
}

/// Builds `name` (its output: the builder's host name) on builder 1 through `hook`.
fn build_on_b1(tb: &Testbed, hook: &OurHook, name: &str) -> std::process::Output {
    let out = tb.nix_build(&drv(name, &[], HOSTNAME), &hook.remote_only(&tb.machine(1)));
    assert!(out.status.success(), "{}", describe(&out));
    out
}

#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn the_next_hook_reuses_the_warm_connection() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let master_pid = || {
        let sockets = hook.masters();
        assert_eq!(sockets.len(), 1, "one master per builder: {sockets:?}");
        let pids = hook.master_pids();
        assert_eq!(pids.len(), 1, "the master of {sockets:?} is running");
        pids[0]
    };
    build_on_b1(&tb, &hook, "nwh-warm-1");
    let first = master_pid();
    build_on_b1(&tb, &hook, "nwh-warm-2");
    assert_eq!(master_pid(), first, "the second build went through the same master");
}

/// PIDs of the builders' store programs started for the serve protocol.
fn keeper_pid(hook: &OurHook) -> Option<u32> {
    let text = std::fs::read_to_string(hook.control().join("warm.pid")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The store program a build used on its builder is kept for the next build: the second hook
/// starts the keeper of warm sessions, and from then on builds borrow the session it keeps.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn the_next_build_borrows_the_store_program_the_last_one_used() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let build = |name: &str| {
        let out = build_on_b1(&tb, &hook, name);
        assert_eq!(host_of(&out_paths(&out)[0]), "nwhtb-b1");
    };
    build("nwh-warm-a");
    build("nwh-warm-b");
    let kept = procs::serve_programs();
    assert_eq!(kept.len(), 1, "one session kept between builds: {kept:?}");
    build("nwh-warm-c");
    build("nwh-warm-d");
    assert_eq!(procs::serve_programs(), kept, "the later builds used the kept session");
}

/// Nothing depends on the keeper: killed, the next build opens its own session, and a new
/// keeper takes over from there.
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn a_build_works_without_the_keeper_of_warm_sessions() {
    let Some(tb) = Testbed::up_or_skip(1, Opts::default()) else { return };
    let hook = OurHook::new(&[]);
    let within_10_s = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    build_on_b1(&tb, &hook, "nwh-keeper-a");
    build_on_b1(&tb, &hook, "nwh-keeper-b");
    let keeper = keeper_pid(&hook).expect("the first hook started a keeper");
    procs::kill(keeper);
    within_10_s("the keeper did not end", &|| {
        !std::path::Path::new(&format!("/proc/{keeper}/cmdline")).exists()
    });
    build_on_b1(&tb, &hook, "nwh-keeper-c");
    within_10_s("no new keeper started", &|| keeper_pid(&hook).is_some_and(|p| p != keeper));
    build_on_b1(&tb, &hook, "nwh-keeper-d");
}
