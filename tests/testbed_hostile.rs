//! A builder that lies (testbed/hostile-builder), against our hook, our builder front-end and
//! Nix's own hook on the same test bed. A builder is trusted for the contents of the outputs
//! it was asked to build and for nothing else (docs/security.md): each attack changes one
//! answer of a real store, and afterwards nothing outside those outputs has changed.

use std::path::Path;
use std::process::Output;

use crate::on_the_oldest_and_newest_nix;
use crate::support::hook::OurHook;
use crate::support::hostile::Hostile;
use crate::support::testbed::{describe, sh_derivation, unique_nonce, Nix, Opts, Proto, Testbed};
use crate::support::tool::stderr;

on_the_oldest_and_newest_nix!(
    a_builders_store_that_lies_about_a_nar_size_is_cut_off_in_both_protocols,
    a_builders_store_with_other_contents_for_a_fixed_output_is_refused_in_both_protocols,
    a_path_outside_the_store_is_never_created,
    a_directory_outside_the_store_is_never_replaced,
    a_valid_path_is_never_unpacked_over,
    an_output_never_built_is_never_made_valid,
    a_reference_with_a_newline_forges_no_record,
    a_nar_longer_than_announced_is_cut_off_there,
    a_fixed_output_with_other_contents_is_refused,
    a_floating_output_with_other_contents_is_refused,
    a_nar_entry_named_dotdot_is_never_unpacked,
    a_path_info_past_any_real_count_is_refused,
    the_builder_front_end_relays_only_the_outputs_asked_for,
);

/// Who talks to the hostile builder.
#[derive(Clone, Copy, Debug)]
enum Front {
    OurHook,
    NixsOwnHook,
    /// Nix's own hook, with our builder front-end between it and the hostile builder.
    OurBuilderFrontEnd,
}

/// Builds `expr` through `front` with the hostile builder `line` as the only machine.
fn attempt(tb: &Testbed, front: Front, line: &str, expr: &str) -> Output {
    let remote_only =
        |builders: &str| tb.nix_build(expr, &["--max-jobs", "0", "--option", "builders", builders]);
    let out = match front {
        Front::OurHook => {
            let hook = OurHook::new(&[]);
            tb.nix_build(expr, &hook.remote_only(line))
        }
        Front::NixsOwnHook => remote_only(line),
        Front::OurBuilderFrontEnd => {
            let ours = OurHook::as_builder(line, &[]);
            remote_only(&ours.builder_line(1, "-"))
        }
    };
    eprintln!("{front:?}: {}", describe(&out));
    out
}

fn echo_drv(name: &str) -> String {
    sh_derivation(name, None, &[], "echo built > $out")
}

fn up(nix: Nix) -> Option<(Testbed, Hostile)> {
    Some((Testbed::up_or_skip_as(nix, 1, Opts::default())?, Hostile::new()))
}

/// Our hook refused the answer, naming the builder and why.
fn refused_by_us(tb: &Testbed, out: &Output, why: &str) {
    assert!(!out.status.success(), "{}", describe(out));
    let err = stderr(out);
    assert!(err.contains(why), "expected {why:?} in\n{err}");
    assert!(err.contains(&tb.addr(1)), "the builder is named:\n{err}");
}

fn a_path_outside_the_store_is_never_created(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    for front in [Front::OurHook, Front::NixsOwnHook] {
        let victim = format!("/root/nwh-planted-{}", unique_nonce());
        let line = hostile.line(&tb, 1, &["extra-path", &victim]);
        let out = attempt(&tb, front, &line, &echo_drv("nwh-hostile-outside"));
        assert!(!tb.master_path(&victim).exists(), "{front:?}: {victim} was created");
        assert!(!out.status.success(), "{front:?} accepted the answer: {}", describe(&out));
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "which it was not asked");
        }
    }
}

fn a_directory_outside_the_store_is_never_replaced(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    for front in [Front::OurHook, Front::NixsOwnHook] {
        let victim = format!("/root/nwh-victim-{}", unique_nonce());
        let here = tb.master_path(&victim);
        std::fs::create_dir_all(&here).unwrap();
        std::fs::write(here.join("kept"), "mine").unwrap();
        let line = hostile.line(&tb, 1, &["extra-path", &victim]);
        let out = attempt(&tb, front, &line, &echo_drv("nwh-hostile-dir"));
        assert_eq!(std::fs::read_to_string(here.join("kept")).ok().as_deref(), Some("mine"), "{front:?}");
        assert!(!out.status.success(), "{front:?}: {}", describe(&out));
        std::fs::remove_dir_all(&here).unwrap();
    }
}

/// A path of this store, valid, added here: `nix-store --add` of a file with `contents`.
fn valid_path(tb: &Testbed, contents: &str) -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join(format!("nwh-valid-{}", unique_nonce()));
    std::fs::write(&file, contents).unwrap();
    let out = tb.master_store(&["--add", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn intact(tb: &Testbed, path: &str, contents: &str) -> bool {
    tb.master_store(&["--verify-path", path]).status.success()
        && std::fs::read_to_string(tb.master_path(path)).ok().as_deref() == Some(contents)
}

fn a_valid_path_is_never_unpacked_over(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    for front in [Front::OurHook, Front::NixsOwnHook] {
        let victim = valid_path(&tb, "the local store's own bytes\n");
        let line = hostile.line(&tb, 1, &["extra-path", &victim]);
        let out = attempt(&tb, front, &line, &echo_drv("nwh-hostile-valid"));
        assert!(intact(&tb, &victim, "the local store's own bytes\n"), "{front:?}: {victim} was changed");
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "which it was not asked");
        }
    }
}

/// The output path of a derivation that is instantiated here and never built.
fn never_built_output(tb: &Testbed) -> String {
    let expr = echo_drv("nwh-never-built");
    let drv = tb.master_cmd(&["nix-instantiate", "-E", &expr]).output().unwrap();
    assert!(drv.status.success(), "{}", describe(&drv));
    let drv = String::from_utf8(drv.stdout).unwrap().trim().to_string();
    let out = tb.master_store(&["--query", "--outputs", &drv]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn an_output_never_built_is_never_made_valid(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    for front in [Front::OurHook, Front::NixsOwnHook] {
        let victim = never_built_output(&tb);
        let line = hostile.line(&tb, 1, &["extra-path", &victim]);
        let out = attempt(&tb, front, &line, &echo_drv("nwh-hostile-never-built"));
        assert!(
            !tb.master_store(&["--check-validity", &victim]).status.success(),
            "{front:?}: {victim} is valid"
        );
        assert!(!tb.master_path(&victim).exists(), "{front:?}: {victim} is on disk");
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "which it was not asked");
        }
    }
}

/// The build's output path as nix-build printed it, or as the derivation names it.
fn output_of(tb: &Testbed, expr: &str) -> String {
    let drv = tb.master_cmd(&["nix-instantiate", "-E", expr]).output().unwrap();
    let drv = String::from_utf8(drv.stdout).unwrap().trim().to_string();
    let out = tb.master_store(&["--query", "--outputs", &drv]);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The output is not valid; where our hook unpacked it, it is not on disk either (Nix's own
/// hook leaves what it refused to import on disk, invalid, for its garbage collector).
fn not_landed(tb: &Testbed, front: Front, path: &str) {
    assert!(!path.is_empty());
    assert!(!tb.master_store(&["--check-validity", path]).status.success(), "{front:?}: {path} is valid");
    if let Front::OurHook = front {
        assert!(!Path::new(&tb.master_path(path)).exists(), "{front:?}: {path} is on disk");
    }
}

fn a_reference_with_a_newline_forges_no_record(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let line = hostile.line(&tb, 1, &["newline-reference"]);
    for front in [Front::OurHook, Front::NixsOwnHook, Front::OurBuilderFrontEnd] {
        let expr = echo_drv("nwh-hostile-newline");
        let out = attempt(&tb, front, &line, &expr);
        not_landed(&tb, front, &output_of(&tb, &expr));
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "not of this store");
        }
    }
}

fn a_nar_longer_than_announced_is_cut_off_there(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let line = hostile.line(&tb, 1, &["short-announcement"]);
    for front in [Front::OurHook, Front::NixsOwnHook, Front::OurBuilderFrontEnd] {
        let expr = echo_drv("nwh-hostile-short");
        let out = attempt(&tb, front, &line, &expr);
        assert!(!out.status.success(), "{front:?}: {}", describe(&out));
        not_landed(&tb, front, &output_of(&tb, &expr));
        if let Front::OurHook | Front::OurBuilderFrontEnd = front {
            assert!(stderr(&out).contains("refused there"), "{front:?}: {}", stderr(&out));
        }
    }
}

/// A fixed-output derivation of the file `hello` (flat sha256), named afresh.
fn fixed_hello() -> String {
    format!(
        r#"builtins.derivation {{
  name = "nwh-fixed-{}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "printf hello > $out" ];
  outputHashMode = "flat"; outputHashAlgo = "sha256";
  outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
}}"#,
        unique_nonce()
    )
}

/// Our hook and our builder front-end check a fixed output against its hash. Nix's own hook
/// does not (2.8 and 2.34 register the other contents): it is not asserted on here, what it
/// did is printed (the path is fixed by the hash, so each run names a fresh one).
fn a_fixed_output_with_other_contents_is_refused(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let line = hostile.line(&tb, 1, &["other-contents"]);
    let honest = hostile.line(&tb, 1, &["honest"]);
    for front in [Front::OurHook, Front::OurBuilderFrontEnd] {
        let expr = fixed_hello();
        let out = attempt(&tb, front, &line, &expr);
        not_landed(&tb, front, &output_of(&tb, &expr));
        refused_by_us(&tb, &out, "other contents for the fixed output");
        // The control: the same derivation through the honest relay lands.
        let out = attempt(&tb, front, &honest, &expr);
        assert!(out.status.success(), "{front:?} through the honest relay: {}", describe(&out));
    }
    let out = attempt(&tb, Front::NixsOwnHook, &line, &fixed_hello());
    eprintln!("Nix's own hook with other contents for a fixed output: {}", out.status);
}

/// Our hook and our builder front-end check the path a builder names for a floating
/// content-addressed output against the contents it sends: other contents (with a path info
/// that matches them) under the path the real build got are refused before anything is valid,
/// and no realisation is registered. The builder has the `ca-derivations` experiment and
/// feature, as Nix needs to send it such a build (and our front-end's line has the feature).
fn a_floating_output_with_other_contents_is_refused(nix: Nix) {
    let opts = Opts { features: Some("ca-derivations".into()), ..Opts::default() };
    let Some(tb) = Testbed::up_or_skip_as(nix, 1, opts) else { return };
    let hostile = Hostile::new();
    let on = tb.ssh(
        1,
        "mkdir -p /root/.config/nix && echo 'extra-experimental-features = ca-derivations' > /root/.config/nix/nix.conf",
    );
    assert!(on.status.success(), "{}", describe(&on));
    let floating = || {
        format!(
            // Contents of their own, so that no run finds the output valid already (its
            // contents would then be checked here, and the lie never sent).
            r#"builtins.derivation {{ name = "nwh-hostile-floating"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo {} > $out" ];
  __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; }}"#,
            unique_nonce()
        )
    };
    let ca = ["--option", "extra-experimental-features", "nix-command ca-derivations"];
    let build = |front: Front, line: &str, expr: &str| {
        let (ours, builders) = match front {
            Front::OurBuilderFrontEnd => {
                let ours = OurHook::as_builder(line, &[]);
                let builders = ours.builder_line(1, "ca-derivations");
                (ours, builders)
            }
            _ => (OurHook::new(&[]), line.to_string()),
        };
        let mut args = match front {
            Front::OurHook => ours.remote_only(&builders).to_vec(),
            _ => vec!["--max-jobs", "0", "--option", "builders", &builders],
        };
        args.extend(ca);
        // From 2.15 Nix's own hook takes no experiment from the settings block (what `--option`
        // sets): it needs `ca-derivations` from the configuration to register a realisation.
        let mut cmd = tb.nix_build_cmd(expr, &args);
        cmd.env("NIX_CONFIG", "extra-experimental-features = nix-command ca-derivations");
        let out = cmd.output().unwrap();
        eprintln!("{front:?}: {}", describe(&out));
        out
    };
    for front in [Front::OurHook, Front::OurBuilderFrontEnd] {
        let expr = floating();
        let out = build(front, &hostile.line(&tb, 1, &["other-contents"]), &expr);
        refused_by_us(&tb, &out, "but what it sent for it is");
        // Nothing was registered for it: Nix knows no realisation of the derivation.
        let drv = tb.master_cmd(&["nix-instantiate", ca[0], ca[1], ca[2], "-E", &expr]).output().unwrap();
        let drv = String::from_utf8_lossy(&drv.stdout).trim().to_string();
        let installable = if nix == Nix::V2_8 { drv.clone() } else { format!("{drv}^*") };
        let info = tb
            .master_cmd(&["nix", "--extra-experimental-features", ca[2], "realisation", "info", &installable])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&info.stdout).contains("!out /"), "{front:?}: {}", describe(&info));
        // The control: the same derivation through the honest relay lands.
        let out = build(front, &hostile.line(&tb, 1, &["honest"]), &expr);
        assert!(out.status.success(), "{front:?} through the honest relay: {}", describe(&out));
    }
}

fn the_builder_front_end_relays_only_the_outputs_asked_for(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let victim = valid_path(&tb, "kept as it is\n");
    let outside = format!("/root/nwh-planted-{}", unique_nonce());
    for attack in [["extra-path", victim.as_str()], ["extra-path", outside.as_str()]] {
        let line = hostile.line(&tb, 1, &attack);
        let out = attempt(&tb, Front::OurBuilderFrontEnd, &line, &echo_drv("nwh-hostile-front-end"));
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(stderr(&out).contains("which it was not asked"), "{}", stderr(&out));
    }
    assert!(intact(&tb, &victim, "kept as it is\n"));
    assert!(!tb.master_path(&outside).exists());
}

// A builder whose own store lies, for both protocols: what the relay cannot reach over
// `ssh-ng://` (the worker protocol asks for one path at a time, so only what its store says of
// that path can lie). Builder 1's store is given the output before the build, registered with
// what the attack says; asked to build, the builder finds it valid and sends what it has.

/// Makes `path` valid in builder 1's store as one file holding `contents`, registered with its
/// real NAR hash and a NAR size `size_delta` bytes off.
fn plant_on_builder(tb: &Testbed, path: &str, contents: &str, size_delta: i64) {
    let script = format!(
        "set -e; printf %s '{contents}' > {path}; \
         h=$(nix-store --dump {path} | sha256sum | cut -d' ' -f1); s=$(nix-store --dump {path} | wc -c); \
         printf '%s\\n%s\\n%s\\n\\n0\\n' {path} $h $((s + {size_delta})) | nix-store --register-validity --hash-given"
    );
    let out = tb.exec(1, &["sh", "-c", &script]);
    assert!(out.status.success(), "planting {path} on builder 1: {}", describe(&out));
    assert!(tb.valid_on(1, path));
}

fn through_both_protocols(tb: &Testbed, attack: impl Fn(&Testbed, Proto, Front)) {
    for proto in [Proto::Ssh, Proto::SshNg] {
        for front in [Front::OurHook, Front::NixsOwnHook, Front::OurBuilderFrontEnd] {
            attack(tb, proto, front);
        }
    }
}

fn line_of(tb: &Testbed, proto: Proto) -> String {
    match proto {
        Proto::Ssh => tb.machines_lines()[0].clone(),
        Proto::SshNg => tb.machines_lines_ng()[0].clone(),
    }
}

fn a_builders_store_that_lies_about_a_nar_size_is_cut_off_in_both_protocols(nix: Nix) {
    let Some((tb, _)) = up(nix) else { return };
    through_both_protocols(&tb, |tb, proto, front| {
        let expr = echo_drv("nwh-lying-store");
        let output = output_of(tb, &expr);
        plant_on_builder(tb, &output, "planted", -8);
        let out = attempt(tb, front, &line_of(tb, proto), &expr);
        assert!(!out.status.success(), "{proto:?} {front:?}: {}", describe(&out));
        not_landed(tb, front, &output);
        if let Front::OurHook | Front::OurBuilderFrontEnd = front {
            assert!(stderr(&out).contains("refused there"), "{proto:?} {front:?}: {}", stderr(&out));
        }
    });
}

fn a_builders_store_with_other_contents_for_a_fixed_output_is_refused_in_both_protocols(nix: Nix) {
    let Some((tb, _)) = up(nix) else { return };
    through_both_protocols(&tb, |tb, proto, front| {
        let expr = fixed_hello();
        let output = output_of(tb, &expr);
        plant_on_builder(tb, &output, "planted", 0);
        let out = attempt(tb, front, &line_of(tb, proto), &expr);
        if let Front::NixsOwnHook = front {
            eprintln!("Nix's own hook, {proto:?}, other contents for a fixed output: {}", out.status);
            return;
        }
        not_landed(tb, front, &output);
        refused_by_us(tb, &out, "other contents for the fixed output");
    });
}

fn a_nar_entry_named_dotdot_is_never_unpacked(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let line = hostile.line(&tb, 1, &["dotdot-entry"]);
    for front in [Front::OurHook, Front::NixsOwnHook, Front::OurBuilderFrontEnd] {
        let expr = echo_drv("nwh-hostile-dotdot");
        let output = output_of(&tb, &expr);
        let out = attempt(&tb, front, &line, &expr);
        assert!(!out.status.success(), "{front:?}: {}", describe(&out));
        not_landed(&tb, front, &output);
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "invalid directory entry name '..'");
        }
    }
}

fn a_path_info_past_any_real_count_is_refused(nix: Nix) {
    let Some((tb, hostile)) = up(nix) else { return };
    let line = hostile.line(&tb, 1, &["many-references"]);
    for front in [Front::OurHook, Front::NixsOwnHook, Front::OurBuilderFrontEnd] {
        let expr = echo_drv("nwh-hostile-many");
        let output = output_of(&tb, &expr);
        let out = attempt(&tb, front, &line, &expr);
        // Nix's own hook refuses the references as not valid here; ours before reading them.
        assert!(!out.status.success(), "{front:?}: {}", describe(&out));
        not_landed(&tb, front, &output);
        if let Front::OurHook = front {
            refused_by_us(&tb, &out, "65536");
        }
    }
}
