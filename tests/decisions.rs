//! The decision table (tests/fixtures/decisions.toml): every case goes through the real path:
//! the machines parser, slot locks in a real current-load directory (busy slots are held by
//! this test, as another hook would hold them), and the embedded default policy component.

use std::collections::BTreeSet;
use std::path::Path;

use nix_wasm_hook::policy::{cache::Cache, Limits, Policies};
use nix_wasm_hook::schedule::{Local, Reply, Scheduler, Try};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Case {
    name: String,
    machines: Vec<String>,
    #[serde(default)]
    busy: Vec<u32>,
    system: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default = "yes")]
    am_willing: bool,
    #[serde(default = "one")]
    local_max_jobs: u32,
    expect: String,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

fn local(max_jobs: u32) -> Local {
    Local {
        max_jobs,
        system: "x86_64-linux".into(),
        extra_platforms: vec!["i686-linux".into()],
        features: ["benchmark", "big-parallel", "kvm", "nixos-test"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    }
}

fn run(case: &Case) -> String {
    let ctx = nwh_machines::ParseContext { local_system: "x86_64-linux".into(), cwd: "/".into() };
    let parsed = nwh_machines::parse_builders(&case.machines.join("\n"), "decisions.toml", &ctx);
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{}: {:?}", case.name, parsed.diagnostics);
    let dir = tempfile::tempdir().unwrap();
    let load = nwh_slots::LoadDir::open(dir.path());
    // Slots held by "other hooks": keep them locked for the whole decision.
    let mut held = Vec::new();
    for (m, &n) in parsed.machines.iter().zip(&case.busy) {
        for _ in 0..n {
            let main = load.lock_main().unwrap();
            let scan = load.scan(&main, &m.uri, m.max_jobs).unwrap();
            held.push(scan.free.expect("the table holds at most max-jobs slots"));
        }
    }
    let cache = Cache::at(crate::support::fake_parent::shared_cache());
    let (policies, warning) = Policies::load(None, Limits::default(), &cache).unwrap();
    assert!(warning.is_none());
    let mut s = Scheduler::new(parsed.machines, load, policies, local(case.local_max_jobs));
    let t = Try {
        am_willing: case.am_willing,
        system: case.system.clone(),
        drv_path: "/nix/store/00000000000000000000000000000000-case.drv".into(),
        required_features: case.features.clone(),
    };
    let outcome = s.decide(&t).unwrap();
    match outcome.reply {
        Reply::Accept { machine, .. } => format!("accept {}", s.machines[machine].uri),
        Reply::Decline => "decline".into(),
        Reply::Postpone => "postpone".into(),
    }
}

#[test]
fn decision_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/decisions.toml");
    let table: Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(table.case.len() >= 40, "the table must hold at least 40 cases");
    let failures: Vec<String> = table
        .case
        .iter()
        .filter_map(|c| {
            let got = run(c);
            (got != c.expect).then(|| format!("{}: expected `{}`, got `{got}`", c.name, c.expect))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        table.case.len(),
        failures.join("\n")
    );
}
