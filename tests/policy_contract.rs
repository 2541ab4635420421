//! The contract as policy authors meet it: versions, and the messages that refuse a component
//! that is not a usable policy (checked word for word). The components are built from source
//! in policies/testing (see tests/fixtures/policies/README.md).

use std::path::PathBuf;

use nix_wasm_hook::core::policy::{cache::Cache, Limits, Policies, Policy};
use nwh_decision::{DecidedBy, Decision, MachineView, Request};

use crate::support::tool::policy_fixture_path;

/// The whole message a refused policy gets, as the hook prints it.
fn refusal(name: &str) -> String {
    let err = Policy::from_file(&policy_fixture_path(name), &Cache::disabled()).err().expect("refused");
    format!("{err:#}").replace(&policy_fixture_path(name).display().to_string(), &format!("{name}.wasm"))
}

fn machine(uri: &str, in_use: u32, down: Option<&str>) -> MachineView {
    MachineView {
        uri: uri.into(),
        systems: vec!["x86_64-linux".into()],
        max_jobs: 1,
        speed_factor: 1.0,
        supported_features: vec![],
        mandatory_features: vec![],
        slots_in_use: in_use,
        enabled: down.is_none(),
        down_reason: down.map(str::to_string),
        facts: Default::default(),
    }
}

fn request() -> Request {
    Request {
        drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
        system: "x86_64-linux".into(),
        required_features: vec![],
        am_willing: false,
        could_build_locally: false,
        local: Default::default(),
    }
}

/// The default decides with Nix's rules alone: it stays on contract 0.2, which has no facts
/// to lower.
#[test]
fn the_default_policy_speaks_the_contract_before_facts() {
    let p = Policy::default_policy(&Cache::disabled()).unwrap();
    assert_eq!(p.contract_version(), "0.2");
}

/// Contract 0.3 hands a policy every fact as the host holds it: present or absent, each
/// field and each age, for every machine and for the local one. The `facts` policy answers
/// with what it received, printed by the decision model it was built from.
#[test]
fn a_policy_of_the_current_contract_gets_every_fact_as_the_host_holds_it() {
    use nwh_decision::facts::{Amount, Count, Facts, History, Load, Pressure, Rate};
    let p = Policy::from_file(&policy_fixture_path("facts"), &Cache::disabled()).unwrap();
    assert_eq!(p.contract_version(), "0.3");
    let all = Facts {
        load: Some(Load { avg1: 0.25, avg5: 1.5, avg15: 12.0, cores: 64, age_ms: 1 }),
        pressure: Some(Pressure { cpu: 3.07, memory: 0.0, io: 99.99, age_ms: 2 }),
        free_store_bytes: Some(Amount { bytes: u64::MAX, age_ms: 3 }),
        builds_running: Some(Count { value: 7, age_ms: 4 }),
        recent_failures: Some(Count { value: 0, age_ms: 5 }),
        missing_input_bytes: Some(Amount { bytes: 123_456_789_012, age_ms: 6 }),
        transfer_rate: Some(Rate { value: 1.25e8, samples: 3, age_ms: 7 }),
        relative_speed: Some(Rate { value: 0.1 + 0.2, samples: 40, age_ms: 8 }),
        past_builds: Some(History { builds: 2, mean_ms: 61_000, last_ms: 59_999, age_ms: u64::MAX }),
    };
    let only_load = Facts { load: all.load, ..Facts::default() };
    let only_history = Facts { past_builds: all.past_builds, ..Facts::default() };
    let machines: Vec<MachineView> = [all.clone(), Facts::default(), only_load, only_history]
        .into_iter()
        .enumerate()
        .map(|(i, facts)| MachineView { facts, ..machine(&format!("ssh://m{i}"), 0, None) })
        .collect();
    let local = nwh_decision::LocalView { max_jobs: 3, speed_factor: 2.5, facts: all };
    let req = Request { local: local.clone(), ..request() };
    let answer = p.call(&req, &machines).unwrap().answer;
    assert_eq!(answer.decision, Decision::Decline);
    for (i, m) in machines.iter().enumerate() {
        let expected = format!("local: {local:?}; machine: {:?}", m.facts);
        assert_eq!(answer.reason_for(i as u32), Some(expected.as_str()), "machine {i}");
    }
}

#[test]
fn a_policy_built_for_an_older_minor_version_keeps_working() {
    let p = Policy::from_file(&policy_fixture_path("old-minor"), &Cache::disabled()).unwrap();
    assert_eq!(p.contract_version(), "0.1");
    let (policies, warning) =
        Policies::load(Some(&policy_fixture_path("old-minor")), Limits::default(), &Cache::disabled())
            .unwrap();
    assert!(warning.is_none());
    let machines =
        [machine("ssh://a", 0, None), machine("ssh://b", 0, None), machine("ssh://c", 0, Some("gone"))];
    let d = policies.decide(&request(), &machines);
    // It ranks last-listed first: it decided, not the default (which would take `a`).
    assert_eq!(d.by, DecidedBy::Policy);
    assert_eq!(d.answer.decision, Decision::Try(vec![1, 0]));
}

#[test]
fn the_current_contract_tells_the_policy_why_a_machine_is_down() {
    let (policies, _) = Policies::load(None, Limits::default(), &Cache::disabled()).unwrap();
    let machines = [machine("ssh://a", 0, Some("cannot connect to 'a': Connection refused"))];
    let d = policies.decide(&request(), &machines);
    assert_eq!(d.answer.decision, Decision::Decline);
    assert_eq!(d.answer.reason_for(0), Some("cannot connect to 'a': Connection refused"));
}

#[test]
fn a_policy_for_an_unknown_major_version_is_refused_naming_both_versions() {
    assert_eq!(
        refusal("future-major"),
        "policy future-major.wasm cannot be used: it was built for version 1.0.0 of `nix-wasm-hook:policy`, \
         and this hook speaks 0.3.x, 0.2.x and 0.1.x: rebuild it against this hook's wit/policy.wit, or use a hook \
         that speaks 1.0.0"
    );
}

#[test]
fn a_component_of_another_world_is_refused_naming_what_it_exports() {
    assert_eq!(
        refusal("wrong-world"),
        "policy wrong-world.wasm cannot be used: it does not export the interface `nix-wasm-hook:policy/policy` \
         (world `policy-world` of wit/policy.wit, version 0.3.0); it exports `example:other/thing@0.1.0`"
    );
}

#[test]
fn a_policy_without_decide_is_refused_naming_the_function() {
    assert_eq!(
        refusal("no-decide"),
        "policy no-decide.wasm cannot be used: its `nix-wasm-hook:policy/policy@0.3.0` has no function \
         `decide`, which every policy must export as `decide: func(request: request, machines: list<machine>) \
         -> answer`; it has `decide-later`"
    );
}

#[test]
fn a_policy_importing_a_capability_is_refused_naming_it() {
    assert_eq!(
        refusal("foreign-import"),
        "policy foreign-import.wasm cannot be used: it imports `evil:net/socket`, which the hook does not \
         provide: a policy gets no capabilities, only an empty WASI 0.2 (cli, io, clocks, random, filesystem, \
         sockets) for toolchains that need one"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, b"this is not wasm").unwrap();
    let msg = format!("{:#}", Policy::from_file(&path, &Cache::disabled()).err().unwrap());
    assert!(msg.contains("cannot be used: it is not a valid Wasm component"), "{msg}");
}

#[test]
fn the_template_builds_with_one_command_and_decides() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policy-template");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-template");
    // The one command of examples/policy-template/README.md.
    let status = std::process::Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success());
    let wasm = target.join("wasm32-wasip2/release/my_policy.wasm");
    let (policies, warning) = Policies::load(Some(&wasm), Limits::default(), &Cache::disabled()).unwrap();
    assert!(warning.is_none(), "{warning:?}");
    let machines = [machine("ssh://slow-1", 0, None), machine("ssh://fast-1", 0, None)];
    let d = policies.decide(&request(), &machines);
    assert_eq!(d.by, DecidedBy::Policy);
    assert_eq!(d.answer.decision, Decision::Try(vec![1, 0]), "the template avoids `slow` machines");
}
