//! The master's store is the one Nix's `store` setting names: with `--store /some/root` (a
//! chroot store, how users without root and Nix's own tests build) the hook reads the `.drv`
//! there, sends inputs from there, registers the outputs there and takes the slots in that
//! store's `current-load`, as Nix's own hook does; the machine's own `/nix/store` is not
//! touched. Real Nix, the oldest and the newest, over the test bed's builders.

use crate::on_the_oldest_and_newest_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, graph_of_six, out_paths, Nix, Opts, Testbed};

on_the_oldest_and_newest_nix!(
    a_chroot_store_master_builds_remotely_into_its_own_store,
    the_builder_front_end_shares_the_chroot_store_named_by_remote_store,
);

/// A chroot store under /tmp, which the newer masters' root file systems share with the host.
fn chroot_store() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("nwh-chroot-store-").tempdir_in("/tmp").unwrap()
}

/// `path` is valid and intact in the chroot store `root`, and absent from the machine's own.
fn assert_only_in(tb: &Testbed, root: &std::path::Path, path: &str) {
    let store = root.to_str().unwrap();
    let verified = tb.master_store(&["--store", store, "--verify-path", path]);
    assert!(
        verified.status.success(),
        "{path} is valid and intact in the chroot store: {}",
        describe(&verified)
    );
    assert!(!tb.master_path(path).exists(), "{path} was not put into the machine's own store");
}

fn a_chroot_store_master_builds_remotely_into_its_own_store(nix: Nix) {
    let Some(tb) = Testbed::up_or_skip_as(nix, 2, Opts::default()) else { return };
    let root = chroot_store();
    let store = root.path().to_str().unwrap();
    let hook = OurHook::new(&[]);
    let builders = tb.machines_lines().join("\n");
    let mut args = hook.remote_only(&builders).to_vec();
    args.extend(["--store", store]);
    let out = tb.nix_build(&graph_of_six(), &args);
    assert!(out.status.success(), "{}", describe(&out));
    let top = &out_paths(&out)[0];
    // Every derivation ran on a builder (`--max-jobs 0`), and the inputs of the upper ones
    // came from the chroot store, where the lower ones' outputs had been registered.
    let where_ = std::fs::read_to_string(root.path().join(top.trim_start_matches('/')).join("where"))
        .expect("the output is in the chroot store");
    assert!(where_.lines().all(|l| l.contains(" nwhtb-b")), "{where_}");
    let names: std::collections::BTreeSet<_> = where_.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(names.len(), 6, "{where_}");
    assert_only_in(&tb, root.path(), top);
    // The slots were those of the chroot store, where Nix's own hook takes them for it.
    let load = root.path().join("nix/var/nix/current-load");
    let slots: Vec<_> = std::fs::read_dir(&load)
        .unwrap_or_else(|e| panic!("{}: {e}", load.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(slots.iter().any(|s| s.starts_with("ssh")), "slot files in {}: {slots:?}", load.display());
}

/// Nix's own hook on a chroot-store master, with our builder front-end as its builder on the
/// same store (`remote-store`, which Nix passes as `--store`): it finds the inputs there, so Nix
/// copies nothing to it, and Nix imports the outputs into that store.
fn the_builder_front_end_shares_the_chroot_store_named_by_remote_store(nix: Nix) {
    let Some(tb) = Testbed::up_or_skip_as(nix, 2, Opts::default()) else { return };
    let root = chroot_store();
    let store = root.path().to_str().unwrap();
    let ours = OurHook::as_builder(&tb.machines_lines().join("\n"), &[]);
    let line = ours.builder_line(4, "-").replacen(
        " x86_64-linux",
        &format!("&remote-store={store} x86_64-linux"),
        1,
    );
    let out =
        tb.nix_build(&graph_of_six(), &["--max-jobs", "0", "--option", "builders", &line, "--store", store]);
    assert!(out.status.success(), "{}", describe(&out));
    let top = &out_paths(&out)[0];
    let where_ =
        std::fs::read_to_string(root.path().join(top.trim_start_matches('/')).join("where")).unwrap();
    assert!(
        where_.lines().all(|l| l.contains(" nwhtb-b")),
        "every derivation ran on a real builder: {where_}"
    );
    assert_only_in(&tb, root.path(), top);
    let err = crate::support::tool::stderr(&out);
    let uploads = err.lines().filter(|l| l.contains("copying") && l.contains(" to 'ssh://localhost"));
    assert_eq!(uploads.count(), 0, "nothing was copied to a builder that shares the store: {err}");
}
