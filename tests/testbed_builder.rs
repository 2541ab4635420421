//! Builder mode: Nix's own hook, no `build-hook` setting, one `ssh://localhost?remote-program=`
//! line naming our binary, which dispatches to the test bed's real builders. With every Nix
//! version as the master.

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, sh_derivation, unique_nonce, Nix, Opts, Testbed};
use crate::support::tool::stderr;

on_every_nix!(
    a_graph_is_dispatched_to_the_real_builders_and_lands_valid,
    a_failing_build_fails_with_the_builders_words,
    a_build_no_real_builder_can_take_fails_at_once_with_the_reasons,
);

/// Nix's own hook with `builders` as its only machine, never building locally.
fn through(line: &str) -> [&str; 5] {
    ["--max-jobs", "0", "--option", "builders", line]
}

fn up(n: usize, opts: Opts, nix: Nix) -> Option<Testbed> {
    Some(Testbed::up_or_skip(n, opts)?.with_master(nix))
}

fn a_graph_is_dispatched_to_the_real_builders_and_lands_valid(nix: Nix) {
    let Some(tb) = up(3, Opts::default(), nix) else { return };
    let ours = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    let line = ours.builder_line(3, "-");
    let expr = format!(
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
    );
    let out = tb.nix_build(&expr, &through(&line));
    assert!(out.status.success(), "{}", describe(&out));
    let top = &out_paths(&out)[0];
    let where_ = std::fs::read_to_string(tb.master_path(&format!("{top}/where"))).unwrap();
    // Inputs shared by two derivations appear twice; each derivation ran once.
    let places: std::collections::BTreeMap<&str, &str> =
        where_.lines().filter_map(|l| l.split_once(' ')).collect();
    let hosts: std::collections::BTreeSet<&str> = places.values().copied().collect();
    assert_eq!(places.len(), 6, "{where_}");
    assert!(
        hosts.iter().all(|h| h.starts_with("nwhtb-b")),
        "every derivation ran on a real builder: {where_}"
    );
    assert!(hosts.len() >= 2, "our policy spread the graph over the real builders: {where_}");
    // Nix imported every output itself; each is valid and intact.
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
    // Nix's hook chose our line; we chose the real builders.
    let err = stderr(&out);
    assert!(err.contains("ssh://localhost?remote-program="), "{err}");
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
