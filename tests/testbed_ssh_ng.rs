//! `ssh-ng://` builders beside `ssh://` ones, and behind builder mode. (Every build of
//! `testbed_build` also runs with all builders on `ssh-ng://`.)

use crate::on_every_nix;
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, graph_of_six, out_paths, Nix, Opts, Testbed};
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

/// Every output of the build of `top` (its deriver's closure) is valid and intact on the
/// master; returns the hosts that built the graph's six derivations.
fn six_valid_outputs(tb: &Testbed, top: &str) -> std::collections::BTreeSet<String> {
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
    let where_ = std::fs::read_to_string(tb.master_path(&format!("{top}/where"))).unwrap();
    where_.lines().filter_map(|l| l.split_once(' ')).map(|(_, host)| host.to_string()).collect()
}

fn a_graph_over_a_mix_of_ssh_and_ssh_ng_builders_lands_valid(nix: Nix) {
    let Some(tb) = Testbed::up_or_skip(3, Opts::default()) else { return };
    let tb = tb.with_master(nix);
    let hook = OurHook::new(&[]);
    let out = tb.nix_build(&graph_of_six(), &hook.remote_only(&mixed(&tb)));
    assert!(out.status.success(), "{}", describe(&out));
    let hosts = six_valid_outputs(&tb, &out_paths(&out)[0]);
    assert!(hosts.len() >= 2, "spread over the builders: {hosts:?}");
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
    let hosts = six_valid_outputs(&tb, &out_paths(&out)[0]);
    assert!(
        hosts.iter().all(|h| h.starts_with("nwhtb-b")),
        "every derivation ran on a real builder: {hosts:?}"
    );
}
