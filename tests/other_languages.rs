//! Policies in other languages: policies/python (componentize-py) and policies/c (wit-bindgen's
//! C generator, `zig cc`), built from source by `cargo xtask build-other-policies`. They
//! implement the default policy's rules, so they must give exactly its answers (choice and
//! rejections, indices and words) with `DecidedBy::Policy`, never by falling back.
//!
//! The C component is committed (tests/fixtures/policies/c.wasm; its build is reproducible and
//! `check-policies` compares it). The Python component is not (componentize-py's output differs
//! from build to build): `cargo xtask test` builds it under the target directory and names it in
//! `$NWH_PYTHON_POLICY`. Without that variable (a plain `cargo test`) the Python tests say so
//! and pass, except under CI, where they fail.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix_wasm_hook::core::policy::cache::Cache;
use nix_wasm_hook::core::policy::{engine, Limits, Policies};
use nix_wasm_hook::core::schedule;
use nwh_decision::{DecidedBy, MachineView, Request};

use crate::support::decision_table;
use crate::support::tool::{js_policy, python_policy};

fn c_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies/c.wasm")
}

/// The policies loaded once per test process: the tests that use the Python component share
/// one compilation of it (a miss costs ~15 s in release, minutes in a debug build).
static C_LOADED: OnceLock<Policies> = OnceLock::new();
static PYTHON_LOADED: OnceLock<Policies> = OnceLock::new();
static JS_LOADED: OnceLock<Policies> = OnceLock::new();

fn loaded(cell: &'static OnceLock<Policies>, path: &Path) -> &'static Policies {
    cell.get_or_init(|| load(path))
}

/// Loads `path` with the default behind it; the shared cache keeps the compiled component
/// between test runs.
fn load(path: &Path) -> Policies {
    let cache = Cache::at(crate::support::fake_parent::shared_cache());
    let (policies, warning) = Policies::load(Some(&path.to_path_buf()), Limits::default(), &cache).unwrap();
    assert!(warning.is_none(), "{} must load: {warning:?}", path.display());
    assert!(policies.chosen.is_some());
    policies
}

fn default_only() -> Policies {
    let cache = Cache::at(crate::support::fake_parent::shared_cache());
    Policies::load(None, Limits::default(), &cache).unwrap().0
}

/// One request and the machines it is decided on.
struct Case {
    name: String,
    request: Request,
    machines: Vec<MachineView>,
}

/// The decision table's cases, with the policy's inputs built directly: `busy` becomes
/// `slots-in-use`.
fn table_cases() -> Vec<Case> {
    decision_table::load()
        .into_iter()
        .map(|c| {
            let machines = decision_table::machines(&c)
                .iter()
                .enumerate()
                .map(|(i, m)| schedule::view(m, c.busy.get(i).copied().unwrap_or(0), None))
                .collect();
            let request = Request {
                drv_path: "/nix/store/00000000000000000000000000000000-case.drv".into(),
                could_build_locally: decision_table::local(&c).could_build(&c.system, &c.features),
                system: c.system,
                required_features: c.features,
                am_willing: c.am_willing,
                local: Default::default(),
            };
            Case { name: c.name, request, machines }
        })
        .collect()
}

fn machine(uri: &str, systems: &[&str], max_jobs: u32, speed: f64, in_use: u32) -> MachineView {
    MachineView {
        uri: uri.into(),
        systems: systems.iter().map(|s| s.to_string()).collect(),
        max_jobs,
        speed_factor: speed,
        supported_features: vec![],
        mandatory_features: vec![],
        slots_in_use: in_use,
        enabled: true,
        down_reason: None,
        facts: Default::default(),
    }
}

fn request(system: &str, features: &[&str], am_willing: bool, could: bool) -> Request {
    Request {
        drv_path: "/nix/store/00000000000000000000000000000000-edge.drv".into(),
        system: system.into(),
        required_features: features.iter().map(|s| s.to_string()).collect(),
        am_willing,
        could_build_locally: could,
        local: Default::default(),
    }
}

/// What the table does not reach: disabled machines (with and without the host's reason),
/// odd speed factors (NaN, 0, -0, infinite, subnormal), max-jobs 0, more slots in use than
/// max-jobs, no systems, every rule broken at once, an empty list, non-ASCII words.
fn edge_cases() -> Vec<Case> {
    const X86: &str = "x86_64-linux";
    let mut cases = Vec::new();
    let mut add = |name: &str, request: Request, machines: Vec<MachineView>| {
        cases.push(Case { name: name.into(), request, machines });
    };
    add("empty machine list", request(X86, &[], true, true), vec![]);
    let mut down = machine("ssh://down", &[X86], 2, 1.0, 0);
    down.enabled = false;
    down.down_reason = Some("ssh: connect to host down port 22: Connection refused".into());
    let mut disabled = machine("ssh://disabled", &[X86], 2, 1.0, 0);
    disabled.enabled = false;
    add(
        "disabled, with and without the host's reason",
        request(X86, &[], false, false),
        vec![down.clone(), disabled.clone(), machine("ssh://up", &[X86], 1, 1.0, 0)],
    );
    add("only disabled machines decline", request(X86, &[], false, false), vec![down, disabled]);
    add(
        "odd speed factors",
        request(X86, &[], true, true),
        vec![
            machine("ssh://nan", &[X86], 4, f64::NAN, 0),
            machine("ssh://zero-busy", &[X86], 4, 0.0, 1),
            machine("ssh://zero-idle", &[X86], 4, 0.0, 0),
            machine("ssh://neg-zero", &[X86], 4, -0.0, 2),
            machine("ssh://inf", &[X86], 8, f64::INFINITY, 5),
            machine("ssh://inf-2", &[X86], 8, f64::INFINITY, 4),
            machine("ssh://tiny", &[X86], 8, 1e-320, 3),
            machine("ssh://tiny-2", &[X86], 8, 1e-320, 1),
            machine("ssh://ok", &[X86], 4, 1.0, 3),
            machine("ssh://nan-busy", &[X86], 4, f64::NAN, 2),
        ],
    );
    add(
        "max-jobs 0, over-full, one slot, no systems",
        request(X86, &[], false, false),
        vec![
            machine("ssh://never", &[X86], 0, 1.0, 0),
            machine("ssh://over", &[X86], 2, 1.0, 7),
            machine("ssh://single", &[X86], 1, 1.0, 1),
            machine("ssh://nothing", &[], 1, 1.0, 0),
        ],
    );
    let mut everything = machine("ssh://wrong", &["aarch64-linux", "armv7l-linux"], 1, 1.0, 0);
    everything.enabled = false;
    everything.mandatory_features = vec!["benchmark".into(), "große-Maschine".into()];
    everything.supported_features = vec!["kvm".into()];
    add(
        "every rule broken at once, non-ASCII names",
        request("x86_64-linux", &["kvm", "nixos-test", "ünïcode"], true, false),
        vec![everything, machine("ssh://büro", &["builtin"], 1, 1.0, 0)],
    );
    let mut mandatory = machine("ssh://bench", &[X86], 2, 2.0, 1);
    mandatory.mandatory_features = vec!["benchmark".into()];
    mandatory.supported_features = vec!["big-parallel".into()];
    add(
        "builtin goes anywhere, mandatory features still apply",
        request("builtin", &["benchmark"], true, false),
        vec![mandatory, machine("ssh://arm", &["aarch64-linux"], 2, 1.0, 0)],
    );
    add(
        "five equal machines keep file order",
        request(X86, &[], true, true),
        (0..5).map(|i| machine(&format!("ssh://m{i}"), &[X86], 2, 1.5, 1)).collect(),
    );
    cases
}

/// A small deterministic generator, so the random cases need no dependency and are the same
/// on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn pick(&mut self, pool: &[&str], percent: u64) -> Vec<String> {
        pool.iter().filter(|_| self.next(100) < percent).map(|s| s.to_string()).collect()
    }
}

fn random_cases(count: usize) -> Vec<Case> {
    let systems = ["x86_64-linux", "aarch64-linux", "builtin"];
    let features = ["kvm", "big-parallel", "benchmark", "nixos-test"];
    let speeds = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 0.0, f64::NAN];
    let mut rng = Lcg(7);
    (0..count)
        .map(|case| {
            let n = rng.next(8) as usize;
            let machines = (0..n)
                .map(|i| {
                    let max_jobs = rng.next(5) as u32;
                    let enabled = rng.next(10) != 0;
                    MachineView {
                        uri: format!("ssh://m{i}"),
                        systems: rng.pick(&systems[..2], 70),
                        max_jobs,
                        speed_factor: speeds[rng.next(speeds.len() as u64) as usize],
                        supported_features: rng.pick(&features, 40),
                        mandatory_features: rng.pick(&features, 8),
                        slots_in_use: rng.next(u64::from(max_jobs) + 2) as u32,
                        enabled,
                        down_reason: (!enabled && rng.next(2) == 0).then(|| format!("down #{i}")),
                        facts: Default::default(),
                    }
                })
                .collect();
            let mut required_features = rng.pick(&features, 25);
            required_features.sort();
            let request = Request {
                drv_path: format!("/nix/store/00000000000000000000000000000000-random-{case}.drv"),
                system: systems[rng.next(3) as usize].to_string(),
                required_features,
                am_willing: rng.next(2) == 0,
                could_build_locally: rng.next(2) == 0,
                local: Default::default(),
            };
            Case { name: format!("random #{case}"), request, machines }
        })
        .collect()
}

/// Every case goes to `policy` and to the default alone; the answers must be equal, and the
/// policy must have decided (no fall-back, no warning).
fn same_answers_as_the_default(language: &Policies, policy: &Path, cases: &[Case]) {
    let default = default_only();
    let mut differences = Vec::new();
    let mut fuel = 0u64;
    for case in cases {
        let expected = default.decide(&case.request, &case.machines);
        assert_eq!(expected.by, DecidedBy::Default);
        let got = language.decide(&case.request, &case.machines);
        assert_eq!(got.by, DecidedBy::Policy, "{}: {}: {:?}", policy.display(), case.name, got.warning);
        assert!(got.warning.is_none(), "{}: {:?}", case.name, got.warning);
        fuel = fuel.max(got.fuel_used);
        if got.answer != expected.answer {
            differences.push(format!(
                "{}:\n    default: {:?}\n    policy:  {:?}",
                case.name, expected.answer, got.answer
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{}: {} of {} cases differ from the default:\n{}",
        policy.display(),
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
    println!(
        "{}: {} cases, same answers as the default; most fuel per decision {fuel}",
        policy.display(),
        cases.len()
    );
}

fn all_cases() -> Vec<Case> {
    let table = table_cases();
    assert!(table.len() >= 40, "the decision table must hold at least 40 cases");
    let mut cases = table;
    cases.extend(edge_cases());
    cases.extend(random_cases(300));
    cases
}

#[test]
fn the_c_policy_decides_exactly_as_the_default() {
    let c = c_policy();
    same_answers_as_the_default(loaded(&C_LOADED, &c), &c, &all_cases());
}

#[test]
#[cfg_attr(
    not(nwh_python_policy),
    ignore = "needs $NWH_PYTHON_POLICY: cargo xtask test builds the Python policy"
)]
fn the_python_policy_decides_exactly_as_the_default() {
    let python = python_policy();
    same_answers_as_the_default(loaded(&PYTHON_LOADED, &python), &python, &all_cases());
}

#[test]
#[cfg_attr(
    not(nwh_js_policy),
    ignore = "needs $NWH_JS_POLICY: cargo xtask test builds the JavaScript policy"
)]
fn the_js_policy_decides_exactly_as_the_default() {
    let js = js_policy();
    same_answers_as_the_default(loaded(&JS_LOADED, &js), &js, &all_cases());
}

#[test]
#[cfg_attr(
    not(nwh_js_policy),
    ignore = "needs $NWH_JS_POLICY: cargo xtask test builds the JavaScript policy"
)]
fn the_js_policy_imports_only_wasi_and_no_network() {
    let js = js_policy();
    loaded(&JS_LOADED, &js);
    let names = imports(&js);
    assert!(names.iter().all(|n| n.starts_with("wasi:") && !n.starts_with("wasi:http/")), "{names:?}");
}

/// The top-level imports of a component, read through the shared cache (a hit once the
/// component is loaded).
fn imports(path: &Path) -> Vec<String> {
    let engine = engine::shared().unwrap();
    let cache = Cache::at(crate::support::fake_parent::shared_cache());
    let bytes = std::fs::read(path).unwrap();
    let sha = nix_wasm_hook::core::policy::cache::sha256_hex(&bytes);
    let (component, _) = cache.load(engine, &bytes, &sha).unwrap();
    component.component_type().imports(engine).map(|(name, _)| name.to_string()).collect()
}

#[test]
#[cfg_attr(
    not(nwh_python_policy),
    ignore = "needs $NWH_PYTHON_POLICY: cargo xtask test builds the Python policy"
)]
fn the_python_policy_imports_wasi_and_still_decides_in_the_empty_world() {
    let python = python_policy();
    let policies = loaded(&PYTHON_LOADED, &python);
    let names = imports(&python);
    assert!(names.iter().any(|n| n.starts_with("wasi:cli/")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("wasi:filesystem/")), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("wasi:")), "only WASI: {names:?}");
    // The host's WASI has no files, environment, arguments or network, and a fixed clock
    // (tests/policy_limits.rs checks that with `snoop`): the policy still answers, itself.
    let policy = policies.chosen.as_ref().unwrap();
    let machines = vec![
        machine("ssh://a", &["x86_64-linux"], 2, 1.0, 1),
        machine("ssh://arm", &["aarch64-linux"], 2, 1.0, 0),
        machine("ssh://b", &["x86_64-linux"], 2, 1.0, 0),
    ];
    let call = policy.call(&request("x86_64-linux", &[], true, true), &machines).unwrap();
    assert_eq!(call.answer.decision, nwh_decision::Decision::Try(vec![2, 0]));
    assert!(call.logs.is_empty(), "it printed: {}", call.logs);
    println!(
        "python: {} WASI imports; one decision: {} fuel, peak memory {} KiB",
        names.len(),
        call.fuel_used,
        call.peak_memory / 1024
    );
}

#[test]
fn the_c_policy_imports_nothing() {
    let c = c_policy();
    loaded(&C_LOADED, &c);
    assert_eq!(imports(&c), Vec::<String>::new());
}
