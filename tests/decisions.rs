//! The decision table (tests/fixtures/decisions.toml): every case goes through the real path:
//! the machines parser, slot locks in a real current-load directory (busy slots are held by
//! this test, as another hook would hold them), and the embedded default policy component.

use nix_wasm_hook::core::policy::{cache::Cache, Limits, Policies};
use nix_wasm_hook::core::schedule::{Placement, Scheduler};
use nwh_decision::Request;

use crate::support::decision_table::{self, Case};

fn run(case: &Case) -> String {
    let machines = decision_table::machines(case);
    let dir = tempfile::tempdir().unwrap();
    let load = nwh_slots::LoadDir::open(dir.path());
    // Slots held by "other hooks": keep them locked for the whole decision.
    let mut held = Vec::new();
    for (m, &n) in machines.iter().zip(&case.busy) {
        for _ in 0..n {
            let main = load.lock_main().unwrap();
            let scan = load.scan(&main, &m.uri, m.max_jobs).unwrap();
            held.push(scan.free.expect("the table holds at most max-jobs slots"));
        }
    }
    let cache = Cache::at(crate::support::fake_parent::shared_cache());
    let (policies, warning) = Policies::load(None, Limits::default(), &cache).unwrap();
    assert!(warning.is_none());
    let mut s = Scheduler::new(machines, load, policies, decision_table::local(case), None);
    let offer = Request {
        am_willing: case.am_willing,
        system: case.system.clone(),
        drv_path: "/nix/store/00000000000000000000000000000000-case.drv".into(),
        required_features: case.features.clone(),
        could_build_locally: false,
        local: Default::default(),
    };
    match s.decide(&offer).unwrap().placement {
        Placement::Placed(placed) => format!("accept {}", placed.uri),
        Placement::Declined { .. } => "decline".into(),
        Placement::Postponed { .. } => "postpone".into(),
    }
}

#[test]
fn decision_table() {
    let cases = decision_table::load();
    assert!(cases.len() >= 40, "the table must hold at least 40 cases");
    let failures: Vec<String> = cases
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
        cases.len(),
        failures.join("\n")
    );
}
