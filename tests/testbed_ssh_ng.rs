//! `ssh-ng://` builders beside `ssh://` ones, and behind builder mode. (Every build of
//! `testbed_build` also runs with all builders on `ssh-ng://`.)

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, graph_of_six, out_paths, six_valid_outputs, Nix, Opts, Testbed};
use crate::support::tool::stderr;

on_every_nix!(
    a_graph_over_a_mix_of_ssh_and_ssh_ng_builders_lands_valid,
    builder_mode_dispatches_to_ssh_ng_builders,
);

/// Builder 1 over `ssh://`, the others over `ssh-ng://`.
fn mixed(tb: &Testbed) -> String {
    let ng = tb.machines_lines_ng();
    let mut lines = vec![tb.machine(1)];
    lines.extend(ng[1..].iter().cloned());
    lines.join("\n")
}

fn a_graph_over_a_mix_of_ssh_and_ssh_ng_builders_lands_valid(nix: Nix) {
    let Some(tb) = Testbed::up_or_skip(3, Opts::default()) else { return };
    let tb = tb.with_master(nix);
    let hook = OurHook::new(&[]);
    let out = tb.nix_build(&graph_of_six(), &hook.remote_only(&mixed(&tb)));
    assert!(out.status.success(), "{}", describe(&out));
    let places = six_valid_outputs(&tb, &out_paths(&out)[0]);
    let hosts: std::collections::BTreeSet<&String> = places.values().collect();
    assert!(hosts.len() >= 2, "spread over the builders: {places:?}");
    let err = stderr(&out);
    assert!(
        err.contains(" on 'ssh://root@") && err.contains(" on 'ssh-ng://root@"),
        "both protocols built: {err}"
    );
}

fn builder_mode_dispatches_to_ssh_ng_builders(nix: Nix) {
    let Some(tb) = Testbed::up_or_skip(3, Opts::default()) else { return };
    let tb = tb.with_master(nix);
    let ours = OurHook::as_builder(&tb.machines_lines_ng().join("\n"), &[]);
    let line = ours.builder_line(12, "-");
    let out = tb.nix_build(&graph_of_six(), &["--max-jobs", "0", "--option", "builders", &line]);
    assert!(out.status.success(), "{}", describe(&out));
    let places = six_valid_outputs(&tb, &out_paths(&out)[0]);
    assert!(
        places.values().all(|h| h.starts_with("nwhtb-b")),
        "every derivation ran on a real builder: {places:?}"
    );
}
