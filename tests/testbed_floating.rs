//! Floating content-addressed derivations (`ca-derivations`) built on the test bed's builders
//! (Nix 2.8) through our hook, by Nix 2.8, 2.26 and 2.34 as masters, over the serve
//! protocol (`ssh://`) and the worker protocol (`ssh-ng://`): the outputs come back into the
//! master's store (a chroot store, so the machine's own is not touched) and their realisations
//! are registered there, so that Nix finds them and builds what depends on them. The graph: `a`
//! (two outputs, `out` referring to itself) and `b`, which uses both of `a`'s outputs and reaches
//! the hook resolved.

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, unique_nonce, Nix, Opts, Testbed};

on_every_nix!(floating_derivations_come_back_with_their_realisations,);

const CA: &str = "nix-command ca-derivations";

fn graph() -> String {
    format!(
        r#"let
  ca = {{ nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
          __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; }};
  a = builtins.derivation (ca // {{
    name = "nwhtb-floating-a"; outputs = [ "out" "dev" ];
    args = [ "-c" "read h < /proc/sys/kernel/hostname; /bin/mkdir $out; echo $out > $out/me; echo $h > $out/where; echo dev > $dev" ];
  }});
in builtins.derivation (ca // {{
  name = "nwhtb-floating-b";
  args = [ "-c" "read h < /proc/sys/kernel/hostname; /bin/mkdir $out; echo $h > $out/where; /bin/cat ${{a}}/where > $out/a-where; echo ${{a.dev}} > $out/dev" ];
}})"#,
        nonce = unique_nonce()
    )
}

fn floating_derivations_come_back_with_their_realisations(nix: Nix) {
    // Nix sends a floating derivation only to machines with the `ca-derivations` feature.
    let opts = Opts { features: Some("ca-derivations".into()), ..Opts::default() };
    let Some(tb) = Testbed::up_or_skip_as(nix, 2, opts) else { return };
    // The builders' Nix refuses floating outputs without the experiment: on in root's own
    // nix.conf of each (the test bed's builders are made afresh for every test).
    for i in 1..=tb.n() {
        let on = tb.ssh(
            i,
            "mkdir -p /root/.config/nix && echo 'extra-experimental-features = ca-derivations' > /root/.config/nix/nix.conf",
        );
        assert!(on.status.success(), "{}", describe(&on));
    }
    let hook = OurHook::new(&[]);
    for (kind, lines) in [("ssh", tb.machines_lines()), ("ssh-ng", tb.machines_lines_ng())] {
        let root = tempfile::Builder::new().prefix("nwh-floating-").tempdir_in("/tmp").unwrap();
        let store = root.path().to_str().unwrap();
        let builders = lines.join("\n");
        let mut args = hook.remote_only(&builders).to_vec();
        args.extend(["--store", store, "--option", "extra-experimental-features", CA]);
        let expr = graph();
        let out = tb.nix_build(&expr, &args);
        assert!(out.status.success(), "{nix:?} over {kind}: {}", describe(&out));
        let b = &out_paths(&out)[0];
        let on_disk = |path: &str, file: &str| {
            std::fs::read_to_string(root.path().join(path.trim_start_matches('/')).join(file))
                .unwrap_or_else(|e| panic!("{path}/{file} in {store}: {e}"))
        };
        // Both ran on a builder, and `b` got `a`'s outputs there.
        assert!(on_disk(b, "where").starts_with("nwhtb-b"), "{kind}: {}", on_disk(b, "where"));
        assert!(on_disk(b, "a-where").starts_with("nwhtb-b"), "{kind}");
        let dev = on_disk(b, "dev").trim().to_string();
        assert!(dev.ends_with("-nwhtb-floating-a-dev"), "{kind}: {dev}");
        // Valid in the master's store, with their realisations: Nix finds `b` by them.
        let verified = tb.master_store(&["--store", store, "--verify-path", b, &dev]);
        assert!(verified.status.success(), "{kind}: {}", describe(&verified));
        let info = realisations(&tb, nix, store, &expr);
        assert!(info.lines().any(|l| l.ends_with(&format!("!out {b}"))), "{kind}: {info}");
        eprintln!("{nix:?} over {kind}: built {b}; realisation {}", info.trim());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("declines"), "{kind}: {err}");

        // Another derivation (another id) whose output has contents already valid here: it
        // is not fetched again, but checked against what is here, and its realisation
        // registered under its own id.
        let same = |nonce: &str| {
            format!(
                r#"builtins.derivation {{ name = "nwhtb-floating-same"; nonce = "{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo same > $out" ];
  __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; }}"#
            )
        };
        let mut paths = Vec::new();
        for nonce in [unique_nonce(), unique_nonce()] {
            let out = tb.nix_build(&same(&nonce), &args);
            assert!(out.status.success(), "{nix:?} over {kind}, {nonce}: {}", describe(&out));
            paths.push(out_paths(&out)[0].clone());
            let info = realisations(&tb, nix, store, &same(&nonce));
            assert!(
                info.lines().any(|l| l.ends_with(&format!("!out {}", paths.last().unwrap()))),
                "{kind}: {info}"
            );
            eprintln!("{nix:?} over {kind}, {nonce}: {}", info.trim());
        }
        assert_eq!(paths[0], paths[1], "the same contents, the same path");
    }
}

/// What `nix realisation info` says of the outputs of the derivation `expr` instantiates in the
/// chroot store `store`, by the master's own Nix (2.8 takes the `.drv`, later ones `drv^*`).
fn realisations(tb: &Testbed, nix: Nix, store: &str, expr: &str) -> String {
    let instantiate =
        ["nix-instantiate", "--store", store, "--option", "extra-experimental-features", CA, "-E", expr];
    let drv = tb.master_cmd(&instantiate).output().unwrap();
    assert!(drv.status.success(), "{}", describe(&drv));
    let drv = String::from_utf8_lossy(&drv.stdout).trim().to_string();
    let installable = if nix == Nix::V2_8 { drv } else { format!("{drv}^*") };
    let info =
        ["nix", "--extra-experimental-features", CA, "realisation", "info", "--store", store, &installable];
    let info = tb.master_cmd(&info).output().unwrap();
    assert!(info.status.success(), "{}", describe(&info));
    String::from_utf8_lossy(&info.stdout).into_owned()
}
