//! Policies that misbehave, built from source in policies/testing (committed as
//! tests/fixtures/policies/*.wasm, rebuilt and compared by CI): each one ends in the default
//! policy's answer with one warning that says what went wrong.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix_wasm_hook::core::policy::{cache::Cache, Decided, Limits, Policies, Policy};
use nix_wasm_hook::core::schedule::{Placement, Scheduler};
use nwh_decision::{DecidedBy, Decision, LocalMachine, MachineView, Request};

use crate::support::tool::policy_fixture_path;

fn machine(uri: &str, system: &str, in_use: u32) -> MachineView {
    MachineView {
        uri: uri.into(),
        systems: vec![system.into()],
        max_jobs: 2,
        speed_factor: 1.0,
        supported_features: vec![],
        mandatory_features: vec![],
        slots_in_use: in_use,
        enabled: true,
        down_reason: None,
        facts: Default::default(),
    }
}

fn request() -> Request {
    Request {
        drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
        system: "x86_64-linux".into(),
        required_features: vec![],
        am_willing: true,
        could_build_locally: true,
        local: Default::default(),
    }
}

fn machines() -> Vec<MachineView> {
    vec![
        machine("ssh://a", "x86_64-linux", 1),
        machine("ssh://arm", "aarch64-linux", 0),
        machine("ssh://b", "x86_64-linux", 0),
    ]
}

/// The default's answer for `machines()`: the idle x86 machine.
const DEFAULT_CHOICE: &[u32] = &[2, 0];

fn load(name: &str, limits: Limits) -> (Policies, Option<String>) {
    let cache = Cache::at(tempfile::tempdir().unwrap().keep());
    Policies::load(Some(&policy_fixture_path(name)), limits, &cache).unwrap()
}

fn falls_back(name: &str, limits: Limits, words: &[&str]) {
    let (policies, load_warning) = load(name, limits);
    assert!(load_warning.is_none(), "{name} should load: {load_warning:?}");
    let d = policies.decide(&request(), &machines());
    assert_eq!(d.by, DecidedBy::Default, "{name}");
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()), "{name}");
    let w = d.warning.unwrap_or_else(|| panic!("{name}: no warning"));
    for word in words {
        assert!(w.contains(word), "{name}: warning {w:?} lacks {word:?}");
    }
    assert_eq!(w.lines().count(), 1, "{name}: one line, not a backtrace: {w}");
}

#[test]
fn the_default_policy_decides_like_nix() {
    let (policies, _) = Policies::load(None, Limits::default(), &Cache::disabled()).unwrap();
    let d = policies.decide(&request(), &machines());
    assert_eq!(d.by, DecidedBy::Default);
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()));
    assert!(d.warning.is_none());
    let why = d.answer.reason_for(1).expect("a reason for the aarch64 machine");
    assert!(why.contains("aarch64-linux"), "{why}");
}

/// Nix gets an answer even when the embedded default cannot give one: its rules run natively,
/// and they answer exactly as its Wasm does. (The default does not fail on any input within the
/// stated bounds, so a policy that traps stands in for it here.)
#[test]
fn when_the_default_policy_itself_fails_its_rules_decide_natively() {
    let (wasm, _) = Policies::load(None, Limits::default(), &Cache::disabled()).unwrap();
    let wasm = wasm.decide(&request(), &machines());
    let failing = Policies {
        chosen: None,
        default: Policy::from_file(&policy_fixture_path("trap"), &Cache::disabled()).unwrap(),
    };
    let d = failing.decide(&request(), &machines());
    assert_eq!(d.by, DecidedBy::Default);
    assert_eq!(d.answer, wasm.answer, "the native rules answer as the Wasm default does");
    let w = d.warning.expect("one warning says the default failed");
    for word in ["embedded default policy failed", "it trapped", "natively"] {
        assert!(w.contains(word), "warning {w:?} lacks {word:?}");
    }
    assert_eq!(w.lines().count(), 1, "{w}");
}

/// A failing policy and a failing default: still an answer, and one warning that names both.
#[test]
fn a_failing_policy_over_a_failing_default_still_gets_an_answer() {
    let failing = Policies {
        chosen: Some(Policy::from_file(&policy_fixture_path("spin"), &Cache::disabled()).unwrap()),
        default: Policy::from_file(&policy_fixture_path("trap"), &Cache::disabled()).unwrap(),
    };
    let d = failing.decide(&request(), &machines());
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()));
    let w = d.warning.expect("a warning");
    assert!(w.contains("spin.wasm failed") && w.contains("embedded default policy failed"), "{w}");
    assert_eq!(w.lines().count(), 1, "{w}");
}

/// The default's budget grows with its input: at the bound on machines, each with many
/// features, the Wasm default decides by itself (no warning), under the default limits.
#[test]
fn the_default_policy_decides_the_most_machines_a_file_may_list_by_itself() {
    let machines: Vec<MachineView> = (0..nwh_machines::MAX_MACHINES)
        .map(|i| MachineView {
            uri: format!("ssh://builder{i:05}.example.org"),
            systems: vec!["x86_64-linux".into(), "aarch64-linux".into()],
            max_jobs: 8,
            speed_factor: 1.0 + (i % 4) as f64,
            supported_features: (0..32).map(|f| format!("feature-{f}")).collect(),
            mandatory_features: vec![],
            slots_in_use: (i % 8) as u32 / 2,
            enabled: true,
            down_reason: None,
            facts: Default::default(),
        })
        .collect();
    let required = ["feature-3", "feature-9", "feature-17", "feature-31"];
    let req = Request { required_features: required.map(String::from).to_vec(), ..request() };
    // The deadline is wall-clock: a debug build among parallel tests may take longer than the
    // release hook's 200 ms, and time is not what this test is about.
    let limits = Limits { deadline: std::time::Duration::from_secs(30), ..Limits::default() };
    let (policies, _) = Policies::load(None, limits, &Cache::disabled()).unwrap();
    let d = policies.decide(&req, &machines);
    assert_eq!((d.by, d.warning), (DecidedBy::Default, None));
    eprintln!("fuel {} for {} machines", d.fuel_used, machines.len());
    assert!(
        d.fuel_used > Limits::default().fuel,
        "a budget beyond the configured one was needed: {}",
        d.fuel_used
    );
    // Idle machines first (1 in 8 is idle at speed 2, 1 in 8 at speed 1), then in file order.
    let Decision::Try(ranking) = d.answer.decision else { panic!("{:?}", d.answer.decision) };
    assert_eq!(ranking[..2], [1, 9]);
}

#[test]
fn a_policy_that_loops_forever_runs_out_of_fuel() {
    falls_back(
        "spin",
        Limits::default(),
        &["spin.wasm", "ran out of fuel", "default policy decided instead"],
    );
}

#[test]
fn a_policy_that_loops_hits_the_deadline_when_fuel_is_ample() {
    let limits =
        Limits { fuel: u64::MAX / 2, deadline: std::time::Duration::from_millis(50), ..Limits::default() };
    falls_back("spin", limits, &["spin.wasm", "deadline"]);
}

#[test]
fn a_policy_that_allocates_without_end_hits_the_memory_limit() {
    falls_back("hog", Limits::default(), &["hog.wasm", "memory limit of 67108864 bytes"]);
}

/// A policy that answers far more than it was asked: a million rejections, or one 100 MiB
/// reason. Its answer is refused (or its memory limit stops it first), one warning says why,
/// the default decides.
#[test]
fn a_policy_that_floods_its_answer() {
    // Making a million rejections costs more than the default fuel: with room for them (and
    // for a 100 MiB string), the answer itself is refused.
    let roomy =
        Limits { fuel: 2_000_000_000, memory: 512 << 20, deadline: std::time::Duration::from_secs(20) };
    falls_back("flood", roomy, &["flood.wasm", "it gave 1000000 reasons for 3 machines"]);
    let (policies, _) = load("flood", roomy);
    let req =
        Request { drv_path: "/nix/store/00000000000000000000000000000000-reason.drv".into(), ..request() };
    let d = policies.decide(&req, &machines());
    assert_eq!(d.by, DecidedBy::Default);
    let w = d.warning.expect("a warning");
    assert!(w.contains("its reason for machine #0 is 104857600 bytes long; a reason is at most 4096"), "{w}");
    // Within the default limits, the policy cannot even make them.
    let (policies, _) = load("flood", Limits::default());
    let w = policies.decide(&req, &machines()).warning.expect("a warning");
    assert!(w.contains("memory limit of 67108864 bytes"), "{w}");
    let w = policies.decide(&request(), &machines()).warning.expect("a warning");
    assert!(w.contains("ran out of fuel"), "{w}");
}

/// A policy that is slow only on some inputs: those fall back within the deadline, each with
/// its warning; the others are its own answers.
#[test]
fn a_policy_slow_on_some_inputs_falls_back_on_those_only() {
    let (policies, _) = load("moody", Limits::default());
    let fast = policies.decide(&request(), &machines());
    assert_eq!((fast.by, fast.warning.as_deref()), (DecidedBy::Policy, None));
    let slow =
        Request { drv_path: "/nix/store/00000000000000000000000000000000-slow.drv".into(), ..request() };
    let started = std::time::Instant::now();
    let d = policies.decide(&slow, &machines());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded by fuel and the deadline");
    assert_eq!(d.by, DecidedBy::Default);
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()));
    let w = d.warning.expect("a warning");
    assert!(w.contains("moody.wasm failed on /nix/store/00000000000000000000000000000000-slow.drv"), "{w}");
    let again = policies.decide(&request(), &machines());
    assert_eq!(again.by, DecidedBy::Policy, "a slow request leaves nothing behind for the next");
}

#[test]
fn a_policy_that_traps() {
    falls_back(
        "trap",
        Limits::default(),
        &["trap.wasm", "it trapped: wasm `unreachable` instruction executed"],
    );
}

#[test]
fn a_policy_that_names_a_machine_that_does_not_exist() {
    falls_back("phantom", Limits::default(), &["phantom.wasm", "there are only 3 machines"]);
}

#[test]
fn a_policy_that_names_a_machine_that_does_not_fit() {
    falls_back("misfit", Limits::default(), &["misfit.wasm", "ssh://arm", "does not fit"]);
}

#[test]
fn another_policy_changes_the_choice() {
    let (policies, warning) = load("prefer-last", Limits::default());
    assert!(warning.is_none(), "{warning:?}");
    let d = policies.decide(&request(), &machines());
    assert_eq!(d.by, DecidedBy::Policy);
    assert_eq!(d.answer.decision, Decision::Try(vec![2, 0]));
    let mut ms = machines();
    ms[0].slots_in_use = 0;
    let d = policies.decide(&request(), &ms);
    // The default would take `a` (first listed of two idle machines); this one takes `b`.
    assert_eq!(d.answer.decision, Decision::Try(vec![2, 0]));
}

#[test]
fn a_wasi_policy_runs_in_an_empty_world() {
    // `snoop` imports WASI and looks for environment variables, files, the real clock and
    // real randomness; it declines when it finds any of them.
    std::env::set_var("NWH_SECRET", "leaked");
    let (policies, warning) = load("snoop", Limits::default());
    assert!(warning.is_none(), "{warning:?}");
    let d = policies.decide(&request(), &machines());
    assert_eq!(d.by, DecidedBy::Policy);
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()), "{:?}", d.answer);
}

#[test]
fn a_policy_importing_anything_else_is_refused_by_name() {
    let err =
        Policy::from_file(&policy_fixture_path("foreign-import"), &Cache::disabled()).err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("`evil:net/socket"), "{msg}");
    assert!(msg.contains("foreign-import.wasm"), "{msg}");
    let (policies, warning) = load("foreign-import", Limits::default());
    assert!(policies.chosen.is_none());
    assert!(warning.unwrap().contains("the default policy decides instead"));
}

#[test]
fn compiled_policies_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path().to_path_buf());
    Policy::from_file(&policy_fixture_path("prefer-last"), &cache).unwrap();
    let images: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].extension().unwrap(), "cwasm");
    // A second load maps the image instead of compiling; a corrupt image is a miss.
    let bytes = std::fs::read(policy_fixture_path("prefer-last")).unwrap();
    let sha = nix_wasm_hook::core::policy::cache::sha256_hex(&bytes);
    let (_, source) =
        cache.load(nix_wasm_hook::core::policy::engine::shared().unwrap(), &bytes, &sha).unwrap();
    assert_eq!(source, nix_wasm_hook::core::policy::cache::Source::Cached);
    std::fs::write(&images[0], b"not an image").unwrap();
    let (_, source) =
        cache.load(nix_wasm_hook::core::policy::engine::shared().unwrap(), &bytes, &sha).unwrap();
    assert_eq!(source, nix_wasm_hook::core::policy::cache::Source::Compiled);
}

/// A waiting policy's deadline: time for a debug build among parallel tests to instantiate it
/// and start waiting, far short of the minute it asks for.
const WAIT_DEADLINE: Duration = Duration::from_millis(500);

/// How long a test waits for the decision of a policy that waits: its deadline, the default's
/// call and a loaded machine's delays, with room to spare. A correctness bound, not a speed
/// target: without one, the policy holds the hook for a minute, or for ever.
const WAIT_BOUND: Duration = Duration::from_secs(10);

fn drv(name: &str) -> String {
    format!("/nix/store/00000000000000000000000000000000-{name}.drv")
}

/// `policies.decide` on a thread of its own: the decision, or None when it has not come
/// within `bound` (the thread is then left to end when it will).
fn decide_within(policies: &Arc<Policies>, req: Request, bound: Duration) -> Option<Decided> {
    let (tx, rx) = mpsc::channel();
    let policies = Arc::clone(policies);
    std::thread::spawn(move || tx.send(policies.decide(&req, &machines())));
    rx.recv_timeout(bound).ok()
}

/// The epoch deadline stops Wasm code, not a WASI call that waits: a policy that sleeps
/// (`std::thread::sleep`, a minute), polls a clock for a minute, or blocks on an instant that
/// never comes is stopped by its deadline all the same, and the warning names the call.
#[test]
fn a_policy_that_waits_in_wasi_is_stopped_at_its_deadline() {
    let (policies, warning) = load("sleep", Limits { deadline: WAIT_DEADLINE, ..Limits::default() });
    assert!(warning.is_none(), "sleep.wasm should load: {warning:?}");
    let policies = Arc::new(policies);
    for (name, call) in [
        // std's sleep on wasm32-wasip2: a clock subscription and a block on it.
        ("nap", "`wasi:io/poll.[method]pollable.block`"),
        ("poll", "`wasi:io/poll.poll`"),
        ("forever", "`wasi:io/poll.[method]pollable.block`"),
    ] {
        let started = Instant::now();
        let d = decide_within(&policies, Request { drv_path: drv(name), ..request() }, WAIT_BOUND)
            .unwrap_or_else(|| {
                panic!("{name}: no decision within {WAIT_BOUND:?}, deadline {WAIT_DEADLINE:?}")
            });
        let took = started.elapsed();
        assert!(took >= WAIT_DEADLINE, "{name}: it waited until its deadline, not less: {took:?}");
        assert_eq!(d.by, DecidedBy::Default, "{name}");
        assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()), "{name}");
        let w = d.warning.unwrap_or_else(|| panic!("{name}: no warning"));
        for word in
            [&format!("sleep.wasm failed on {}", drv(name)), call, "500ms deadline", "decided instead"]
        {
            assert!(w.contains(word), "{name}: warning {w:?} lacks {word:?}");
        }
        assert_eq!(w.lines().count(), 1, "{name}: one line: {w}");
    }
}

/// A policy's stdin is closed: reading it gives end-of-file at once, and waiting for it to be
/// readable returns at once. The policy then decides by itself.
#[test]
fn a_policy_reading_stdin_finds_it_closed_at_once() {
    let (policies, _) = load("sleep", Limits { deadline: WAIT_DEADLINE, ..Limits::default() });
    let d = decide_within(&Arc::new(policies), Request { drv_path: drv("stdin"), ..request() }, WAIT_BOUND)
        .expect("a decision");
    assert_eq!((d.by, d.warning.as_deref()), (DecidedBy::Policy, None));
    assert_eq!(d.answer.decision, Decision::Try(DEFAULT_CHOICE.to_vec()));
}

/// What a [`Scheduler`] replied, in words, and its warning.
type Outcome = (String, Option<String>);

/// A scheduler over two idle machines of one slot each, `ssh://a` and `ssh://b` (the default
/// ranks them in that order), in the current-load directory `dir`, deciding with `policy` for a
/// derivation named `name` on a thread of its own.
fn schedule_in_background(
    dir: &std::path::Path,
    policy: &str,
    limits: Limits,
    name: &str,
) -> mpsc::Receiver<Outcome> {
    let (policies, _) = load(policy, limits);
    let ctx = nwh_machines::ParseContext::new("x86_64-linux");
    let machines =
        nwh_machines::parse_builders("ssh://a x86_64-linux - 1 ; ssh://b x86_64-linux - 1", "test", &ctx);
    let local = LocalMachine {
        max_jobs: 1,
        system: "x86_64-linux".into(),
        extra_platforms: vec![],
        features: Default::default(),
    };
    let load = nwh_slots::LoadDir::open(dir);
    let mut scheduler = Scheduler::new(machines.machines, load, policies, local, None);
    let offer = nwh_decision::Request {
        am_willing: true,
        system: "x86_64-linux".into(),
        drv_path: drv(name),
        required_features: vec![],
        could_build_locally: false,
        local: Default::default(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let scheduled = scheduler.decide(&offer).unwrap();
        let reply = match &scheduled.placement {
            Placement::Placed(placed) => format!("accept {}", placed.uri),
            Placement::Declined { .. } => "decline".into(),
            Placement::Postponed { .. } => "postpone".into(),
        };
        tx.send((reply, scheduled.decided.warning))
    });
    rx
}

/// A build slot of `uri` in `dir`, taken as another hook takes one: under the main lock.
fn take_slot(dir: &std::path::Path, uri: &str) -> nwh_slots::SlotLock {
    let load = nwh_slots::LoadDir::open(dir);
    let main = load.lock_main().unwrap();
    load.scan(&main, uri, 1).unwrap().free.expect("a free slot")
}

/// The main lock of the current-load directory is Nix's own hook's too: every remote build of
/// the machine waits for it. It is taken to measure the loads and to claim the slot, not while
/// the policy decides: while a policy sleeps until its deadline, another hook takes the lock at
/// once. The decision still claims a free slot, the default's choice.
#[test]
fn the_main_lock_is_free_while_the_policy_decides() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { deadline: Duration::from_secs(3), ..Limits::default() };
    let decided = schedule_in_background(dir.path(), "sleep", limits, "nap");
    // The loads are measured in a few milliseconds; the policy then sleeps for three seconds.
    std::thread::sleep(Duration::from_secs(1));
    let other_hook = nwh_slots::LoadDir::open(dir.path());
    let (locked_tx, locked_rx) = mpsc::channel();
    std::thread::spawn(move || locked_tx.send(other_hook.lock_main().map(drop).is_ok()));
    let took_it = locked_rx.recv_timeout(Duration::from_millis(500));
    assert!(decided.try_recv().is_err(), "the policy was still deciding when the lock was tried");
    assert_eq!(took_it, Ok(true), "another hook could not take the main lock while the policy decided");
    let (reply, warning) = decided.recv_timeout(WAIT_BOUND).expect("a decision");
    assert_eq!(reply, "accept ssh://a", "the default's choice, its slot claimed");
    let w = warning.expect("one warning");
    assert!(w.contains("sleep.wasm") && w.contains("3s deadline"), "{w}");
}

/// Another hook takes the slot of the policy's first choice while the policy decides: the
/// build goes to the next machine of its ranking that still has a free slot.
#[test]
fn a_slot_taken_while_the_policy_decides_goes_to_the_next_ranked_machine() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { deadline: Duration::from_secs(2), ..Limits::default() };
    let decided = schedule_in_background(dir.path(), "sleep", limits, "nap");
    std::thread::sleep(Duration::from_millis(700));
    let _taken = take_slot(dir.path(), "ssh://a");
    let (reply, warning) = decided.recv_timeout(WAIT_BOUND).expect("a decision");
    assert_eq!(reply, "accept ssh://b");
    assert!(warning.is_some_and(|w| w.contains("2s deadline")));
}

/// Other hooks take every slot the policy ranked while it decides: it is asked again on the
/// new loads, and its answer to those stands (the default declines a busy cluster when Nix
/// can build the derivation now). Still one warning.
#[test]
fn when_every_ranked_slot_is_taken_meanwhile_the_policy_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { deadline: Duration::from_secs(2), ..Limits::default() };
    let decided = schedule_in_background(dir.path(), "sleep", limits, "nap");
    std::thread::sleep(Duration::from_millis(700));
    let _taken = [take_slot(dir.path(), "ssh://a"), take_slot(dir.path(), "ssh://b")];
    let (reply, warning) = decided.recv_timeout(WAIT_BOUND).expect("a decision");
    assert_eq!(reply, "decline");
    let w = warning.expect("one warning");
    assert_eq!(w.matches("sleep.wasm failed").count(), 1, "{w}");
}
