//! `nix-wasm-hook simulate`: small clusters and workloads whose schedule can be worked out by
//! hand (so the figures can be asserted exactly), determinism for a seed, the real policy
//! components deciding, and clear errors for bad input.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::tool::{policy_fixture, run_tool, stderr, stdout};

/// A temporary directory holding `machines` and `workload.toml`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(machines: &str, workload: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("machines"), machines).unwrap();
        std::fs::write(dir.path().join("workload.toml"), workload).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn simulate(&self, extra: &[&str]) -> Output {
        let (m, w) = (self.path("machines"), self.path("workload.toml"));
        let mut args = vec!["--machines", &m, "--workload", &w];
        args.extend_from_slice(extra);
        run_tool("simulate", &args)
    }

    /// `--json`, which must succeed (every derivation built).
    fn json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.simulate(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
    }
}

fn where_built(result: &Value) -> Vec<(String, String)> {
    result["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["on"].as_str().unwrap_or("-").to_string()))
        .collect()
}

/// One fast machine with two slots, one slow with two: Nix's `load / speed` sends the second
/// of two independent builds to the idle slow machine; fastest-first keeps it on the fast one.
const FAST_AND_SLOW: &str = "ssh://fast x86_64-linux - 2 4\nssh://slow x86_64-linux - 2 1\n";
const TWO_BUILDS: &str =
    "[[derivation]]\nname = \"one\"\nseconds = 40\n\n[[derivation]]\nname = \"two\"\nseconds = 40\n";

#[test]
fn the_default_follows_nix_and_another_policy_changes_the_makespan() {
    let case = Case::new(FAST_AND_SLOW, TWO_BUILDS);
    let fastest = policy_fixture("fastest-first");
    let v = case.json(&["--against", &fastest]);
    let (default, other) = (&v["results"][0], &v["results"][1]);
    assert_eq!(default["policy"], "the default policy");
    assert_eq!(
        where_built(default),
        [("one".into(), "ssh://fast".into()), ("two".into(), "ssh://slow".into())]
    );
    assert_eq!(default["makespan_s"], 40.0);
    assert_eq!(
        where_built(other),
        [("one".into(), "ssh://fast".into()), ("two".into(), "ssh://fast".into())]
    );
    assert_eq!(other["makespan_s"], 10.0);
    // Busy slot time over the slots' capacity: 10 s of 2 × 40 s on the fast machine.
    assert_eq!(default["builders"][0]["utilisation"], 0.125);
    assert_eq!(default["builders"][1]["utilisation"], 0.5);
    assert_eq!(default["decisions"], 2);

    let text = stdout(&case.simulate(&["--against", &fastest]));
    let makespan = text.lines().find(|l| l.starts_with("makespan")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(makespan.split_whitespace().collect::<Vec<_>>(), ["makespan", "40.0s", "10.0s"], "{text}");
    assert!(text.contains("A: default (") && text.contains("B: fastest-first.wasm ("), "{text}");
}

#[test]
fn true_speed_sets_the_clock_while_the_policy_sees_the_declared_one() {
    let case = Case::new(FAST_AND_SLOW, TWO_BUILDS);
    // The "fast" machine is in truth slower than the slow one: the default still picks it first.
    let v = case.json(&["--true-speed", "ssh://fast=0.5"]);
    let r = &v["results"][0];
    assert_eq!(where_built(r), [("one".into(), "ssh://fast".into()), ("two".into(), "ssh://slow".into())]);
    assert_eq!(r["makespan_s"], 80.0);
    assert_eq!(v["machines"][0]["true_speed"], 0.5);
    assert_eq!(v["machines"][0]["speed_factor"], 4.0);
}

#[test]
fn closures_travel_once_per_builder_and_outputs_come_back() {
    // 100 MiB/s. `lib` → a: 10 s, then its 200 MiB output home (2 s). `blocker` → b: 30 s,
    // then 100 MiB home (1 s). `app` needs both; at 31 s both machines are free and a, listed
    // first, takes it: it has `lib` already and gets `blocker` (1 s) before building (5 s).
    let machines = "ssh://a x86_64-linux - 1 1\nssh://b x86_64-linux - 1 1\n";
    let workload = "[[derivation]]\nname = \"lib\"\nseconds = 10\noutput-mib = 200\n\n\
                    [[derivation]]\nname = \"blocker\"\nseconds = 30\noutput-mib = 100\n\n\
                    [[derivation]]\nname = \"app\"\nseconds = 5\ndeps = [\"lib\", \"blocker\"]\n";
    let case = Case::new(machines, workload);
    let r = &case.json(&[])["results"][0];
    assert_eq!(
        where_built(r),
        [
            ("lib".into(), "ssh://a".into()),
            ("blocker".into(), "ssh://b".into()),
            ("app".into(), "ssh://a".into())
        ]
    );
    assert_eq!(r["builds"][0]["end_s"], 12.0);
    assert_eq!(r["builds"][2]["ready_s"], 31.0);
    assert_eq!(r["builds"][2]["end_s"], 37.0);
    assert_eq!(r["makespan_s"], 37.0);
    assert_eq!(r["builders"][0]["transfer_bytes"], 300 * 1024 * 1024);
    assert_eq!(r["builders"][0]["transfer_s"], 3.0);
    assert_eq!(r["builders"][1]["transfer_bytes"], 100 * 1024 * 1024);
}

#[test]
fn waiting_is_the_time_from_ready_to_started() {
    // One slot, three independent builds of 10 s: they wait 0, 10 and 20 s.
    let workload = "[[derivation]]\nname = \"a\"\nseconds = 10\n[[derivation]]\nname = \"b\"\nseconds = 10\n\
                    [[derivation]]\nname = \"c\"\nseconds = 10\n";
    let case = Case::new("ssh://only x86_64-linux - 1 1\n", workload);
    let r = &case.json(&[])["results"][0];
    assert_eq!(r["makespan_s"], 30.0);
    assert_eq!(r["waiting_mean_s"], 10.0);
    assert_eq!(r["waiting_max_s"], 20.0);
    assert_eq!(r["builders"][0]["utilisation"], 1.0);
}

#[test]
fn a_derivation_nothing_can_build_is_reported_with_its_dependents() {
    let workload = "[[derivation]]\nname = \"arm-tool\"\nseconds = 10\nsystem = \"aarch64-linux\"\n\n\
                    [[derivation]]\nname = \"uses-it\"\nseconds = 10\ndeps = [\"arm-tool\"]\n\n\
                    [[derivation]]\nname = \"fine\"\nseconds = 10\n";
    let case = Case::new("ssh://x86 x86_64-linux - 1 1\n", workload);
    let out = case.simulate(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["built", "1", "of", "3"]),
        "{text}"
    );
    assert!(
        text.contains(
            "A: not built: arm-tool: declined, and this machine cannot build it either \
             (ssh://x86: system `aarch64-linux` is not among its systems (x86_64-linux))"
        ),
        "{text}"
    );
    assert!(text.contains("A: not built: uses-it: its dependency `arm-tool` was not built"), "{text}");
}

#[test]
fn a_machine_that_never_takes_a_build_leaves_work_waiting_forever() {
    let case = Case::new("ssh://zero x86_64-linux - 0 1\n", TWO_BUILDS);
    let out = case.simulate(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "A: 2 derivation(s) waited forever (one, two): no machine with a free slot ever took them"
        ),
        "{text}"
    );
}

#[test]
fn local_builds_take_what_the_policy_declines() {
    // No remote machine builds aarch64, but the local machine does when it has a slot.
    let workload = "[[derivation]]\nname = \"native\"\nseconds = 8\nsystem = \"aarch64-linux\"\n";
    let case = Case::new("ssh://x86 x86_64-linux - 1 1\n", workload);
    let v = case.json(&["--local-jobs", "1", "--system", "aarch64-linux", "--local-speed", "2"]);
    let r = &v["results"][0];
    assert_eq!(where_built(r), [("native".into(), "local".into())]);
    assert_eq!(r["makespan_s"], 4.0);
    assert_eq!(r["local_builds"], 1);
}

#[test]
fn a_failing_policy_costs_a_warning_and_the_default_decides() {
    let case = Case::new(FAST_AND_SLOW, TWO_BUILDS);
    let out = case.simulate(&["--policy", &policy_fixture("trap")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let warning = text.lines().find(|l| l.starts_with("A: the policy failed 2 time(s); the first: policy "));
    let warning = warning.unwrap_or_else(|| panic!("one line names the failures: {text}"));
    assert!(warning.contains("trap.wasm failed on /nix/store/"), "{warning}");
    assert!(warning.ends_with("-one.drv: it trapped: wasm `unreachable` instruction executed; the default policy decided instead"), "{warning}");
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["makespan", "40.0s"]),
        "{text}"
    );
}

#[test]
fn a_seed_gives_the_same_run_and_another_seed_another() {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    std::fs::write(&machines, "ssh://b1 - - 2 1\nssh://b2 - - 2 2\nssh://b3 - - 4 4\n").unwrap();
    let m = machines.display().to_string();
    let run = |seed: &str| {
        let out = run_tool(
            "simulate",
            &["--machines", &m, "--generate", "150", "--seed", seed, "--json", "--true-speed", "ssh://b3=2"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        out.stdout
    };
    let first = run("11");
    assert_eq!(first, run("11"), "the same seed must give the same bytes");
    assert_ne!(first, run("12"));
    let v: Value = serde_json::from_slice(&first).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["built"], 150);
    let cp = v["workload"]["critical_path_s"].as_f64().unwrap();
    assert!(r["makespan_s"].as_f64().unwrap() >= cp / 4.0, "no faster than the critical path: {v}");
}

#[test]
fn the_c_policy_schedules_exactly_as_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    std::fs::write(&machines, "ssh://b1 - - 2 1\nssh://b2 - - 1 2 big-parallel\nssh://b3 - - 3 1.5\n")
        .unwrap();
    let m = machines.display().to_string();
    let c = policy_fixture("c");
    let out = run_tool(
        "simulate",
        &[
            "--machines",
            &m,
            "--generate",
            "120",
            "--seed",
            "3",
            "--json",
            "--policy",
            &c,
            "--against",
            "default",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (a, b) = (&v["results"][0], &v["results"][1]);
    assert_eq!(a["fell_back"], 0, "the C policy decided every time itself");
    for key in ["makespan_s", "builds", "builders", "decisions", "postponed"] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn bad_input_is_named() {
    let case = Case::new(FAST_AND_SLOW, TWO_BUILDS);
    let out = case.simulate(&["--true-speed", "ssh://fats=2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "--true-speed ssh://fats=2: no machine `ssh://fats` in {}; it lists ssh://fast, ssh://slow",
            case.path("machines")
        )),
        "{}",
        stderr(&out)
    );

    let case = Case::new(FAST_AND_SLOW, "[[derivation]]\nname = \"a\"\nseconds = 1\ndeps = [\"b\"]\n");
    let out = case.simulate(&[]);
    assert_eq!(out.status.code(), Some(2));
    let wanted =
        format!("{}:4:9: `a` depends on `b`, which is not defined in this file", case.path("workload.toml"));
    assert!(stderr(&out).contains(&wanted), "{}", stderr(&out));

    let case = Case::new("ssh://ok - - 1 1\nssh://bad - - many 1\n", TWO_BUILDS);
    let out = case.simulate(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:2:", case.path("machines"))), "the bad line is named: {err}");
    assert!(err.contains("1 line(s) could not be read (see above); fix them first"), "{err}");
    assert!(Path::new(&case.path("machines")).exists());
}

/// The comparison shown in README.md is what `simulate` prints today.
#[test]
fn the_readme_comparison_is_current() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let command = "nix-wasm-hook simulate --machines examples/simulate/machines --generate 300 --seed 1 \\\n    --policy tests/fixtures/policies/fastest-first.wasm --against default\n```\n```\n";
    let start = readme.find(command).expect("README.md shows the simulate command") + command.len();
    let shown = &readme[start..start + readme[start..].find("```").unwrap()];
    let out = run_tool(
        "simulate",
        &[
            "--machines",
            "examples/simulate/machines",
            "--generate",
            "300",
            "--seed",
            "1",
            "--policy",
            "tests/fixtures/policies/fastest-first.wasm",
            "--against",
            "default",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), shown, "update README.md with this output");
}
