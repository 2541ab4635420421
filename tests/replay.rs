//! Decision traces and `replay`: every trace in tests/fixtures/traces is replayed as its
//! `.toml` says (a trace without one fails the suite), the test bed records a real trace that
//! must replay to the same decisions, and the trace never holds key material.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde::Deserialize;
use serde_json::Value;

use crate::support::fake_parent::{settings_block, try_message, HookEnv, Reply};
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, out_paths, unique_nonce, Opts, Testbed, SSH_KEY};
use crate::support::tool::{policy_fixture, run_tool, stderr, stdout, try_policy_fixture};

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces")
}

/// `nix-wasm-hook replay ARGS`, with the tests' shared policy cache.
fn replay(args: &[&str]) -> Output {
    run_tool("replay", args)
}

/// The record objects and the summary object of `replay --json`; every line must parse.
fn json_lines(o: &Output) -> (Vec<Value>, Value) {
    let mut values: Vec<Value> = stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = values.pop().expect("a summary line");
    assert!(summary.get("summary").is_some(), "the last line is the summary: {summary}");
    (values, summary["summary"].clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    records: u64,
    replay: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// `default`, a component in tests/fixtures/policies, or `python` (the Python policy that
    /// `cargo xtask test` builds).
    policy: String,
    /// `recorded`, `default` or a component in tests/fixtures/policies.
    against: String,
    /// Record numbers whose answers differ, exactly.
    differ: Vec<u64>,
    /// Records on which `policy` failed and the default decided instead.
    #[serde(default)]
    fell_back: u64,
}

/// The replays of the trace `name`'s `.toml`: those with the policies in other languages
/// (`python`, `js`, which only the test command builds) when `other_languages`, else the others.
fn check_trace(name: &str, other_languages: bool) {
    let trace = traces_dir().join(format!("{name}.jsonl"));
    let expect: Expect =
        toml::from_str(&std::fs::read_to_string(traces_dir().join(format!("{name}.toml"))).unwrap())
            .unwrap_or_else(|e| panic!("{name}.toml: {e}"));
    let mut problems = Vec::new();
    for case in &expect.replay {
        if matches!(case.policy.as_str(), "python" | "js") != other_languages {
            continue;
        }
        let trace = trace.display().to_string();
        let mut args = vec!["--json", trace.as_str(), "--fail-on-diff"];
        let (policy, against);
        if case.policy != "default" {
            policy = try_policy_fixture(&case.policy);
            args.extend(["--policy", policy.as_str()]);
        }
        against = match case.against.as_str() {
            "recorded" | "default" => case.against.clone(),
            other => policy_fixture(other),
        };
        args.extend(["--against", against.as_str()]);
        let out = replay(&args);
        let what = format!("{name}: {} against {}", case.policy, case.against);
        let want_code = if case.differ.is_empty() { 0 } else { 1 };
        if out.status.code() != Some(want_code) {
            problems.push(format!(
                "{what}: exit {:?}, expected {want_code}\n{}",
                out.status.code(),
                describe(&out)
            ));
            continue;
        }
        let (records, summary) = json_lines(&out);
        let differing: Vec<u64> =
            records.iter().filter(|r| r["same"] == false).map(|r| r["record"].as_u64().unwrap()).collect();
        if records.len() as u64 != expect.records || summary["records"] != expect.records {
            problems.push(format!("{what}: {} records, expected {}", records.len(), expect.records));
        }
        if differing != case.differ || summary["differing"] != serde_json::json!(case.differ) {
            problems.push(format!("{what}: records {differing:?} differ, expected {:?}", case.differ));
        }
        let fell_back =
            records.iter().filter(|r| r["a"]["decided_by"] == "default" && !r["a"]["warning"].is_null());
        if fell_back.count() as u64 != case.fell_back || summary["a"]["fell_back"] != case.fell_back {
            problems.push(format!(
                "{what}: fell back {} times, expected {}",
                summary["a"]["fell_back"], case.fell_back
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

macro_rules! traces {
    ($($test:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $test() { check_trace($name, false); } )*

        mod in_other_languages {
            $(
                #[test]
                #[cfg_attr(
                    not(all(nwh_python_policy, nwh_js_policy)),
                    ignore = "needs $NWH_PYTHON_POLICY and $NWH_JS_POLICY: cargo xtask test builds those policies"
                )]
                fn $test() { super::check_trace($name, true); }
            )*
        }

        #[test]
        fn every_trace_has_a_test() {
            let known = [$($name),*];
            for entry in std::fs::read_dir(traces_dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|x| x == "jsonl") {
                    let name = path.file_stem().unwrap().to_str().unwrap().to_string();
                    assert!(known.contains(&name.as_str()), "trace {name} has no test in tests/replay.rs");
                    assert!(path.with_extension("toml").exists(), "trace {name} has no {name}.toml");
                }
            }
        }
    };
}

traces! {
    trace_prefer_last_differs => "prefer-last-differs",
    trace_testbed_graph => "testbed-graph",
}

#[test]
fn differences_are_listed_by_record_with_both_answers() {
    let trace = traces_dir().join("prefer-last-differs.jsonl").display().to_string();
    let out = replay(&[&trace, "--against", &policy_fixture("prefer-last")]);
    assert_eq!(out.status.code(), Some(0), "without --fail-on-diff a difference is no failure");
    let text = stdout(&out);
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("record ")).collect();
    assert_eq!(
        listed,
        [
            "record 1 two-idle: A try ssh://b1, ssh://b2 | B try ssh://b2, ssh://b1",
            "record 4 two-of-three: A try ssh://b1, ssh://b3 | B try ssh://b3, ssh://b1",
            "record 7 kvm-two-idle: A try ssh://b1, ssh://b2 | B try ssh://b2, ssh://b1",
        ],
        "{text}"
    );
    assert!(text.starts_with("A: the default policy (sha256 "), "{text}");
    assert!(text.contains("\nB: policy /") && text.contains("prefer-last.wasm (sha256 "), "{text}");
    assert!(text.ends_with("10 records: 7 same, 3 differ\n"), "{text}");
}

#[test]
fn each_decision_is_one_line() {
    let trace = traces_dir().join("prefer-last-differs.jsonl").display().to_string();
    let out = replay(&[&trace, "--policy", &policy_fixture("prefer-last")]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 10 + 1, "{text}");
    for (want, line) in [
        ("1  two-idle  x86_64-linux  -  try ssh://b2, ssh://b1  fuel ", lines[1]),
        ("3  no-system  i686-linux  -  decline  fuel ", lines[3]),
        ("6  all-busy  x86_64-linux  -  postpone  fuel ", lines[6]),
        ("7  kvm-two-idle  x86_64-linux  kvm  try ssh://b2, ssh://b1  fuel ", lines[7]),
    ] {
        assert!(line.starts_with(want), "{line:?} should start with {want:?}");
    }
    assert_eq!(lines[11], "10 records");
}

#[test]
fn a_failing_policy_is_replaced_by_the_default_and_each_record_says_so() {
    let trace = traces_dir().join("prefer-last-differs.jsonl").display().to_string();
    let out = replay(&[&trace, "--policy", &policy_fixture("trap"), "--against", "recorded"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let said =
        text.lines().filter(|l| l.contains(": A: policy ") && l.contains("trap.wasm failed on")).count();
    assert_eq!(said, 10, "{text}");
    assert!(text.ends_with("10 records: 10 same, 0 differ; A failed on 10 and the default decided instead\n"));
}

#[test]
fn exit_codes() {
    let trace = traces_dir().join("prefer-last-differs.jsonl").display().to_string();
    let last = policy_fixture("prefer-last");
    let code = |args: &[&str]| replay(args).status.code();
    assert_eq!(code(&[&trace, "--against", &last, "--fail-on-diff"]), Some(1), "differences");
    assert_eq!(code(&[&trace, "--against", &last]), Some(0), "differences, but no --fail-on-diff");
    assert_eq!(code(&[&trace, "--against", "recorded", "--fail-on-diff"]), Some(0), "no difference");
    assert_eq!(code(&[&trace, "--policy", &last, "--against", &last, "--fail-on-diff"]), Some(0));
    assert_eq!(code(&[&trace, "--fail-on-diff"]), Some(2), "--fail-on-diff needs --against");
    assert_eq!(code(&[]), Some(2), "no trace");

    let missing = replay(&["/nonexistent/trace.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/trace.jsonl"), "{}", stderr(&missing));

    let refused = replay(&[&trace, "--policy", &policy_fixture("foreign-import")]);
    assert_eq!(refused.status.code(), Some(2), "a policy that cannot be loaded is an error, not the default");
    assert!(stderr(&refused).contains("evil:net/socket"), "{}", stderr(&refused));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jsonl");
    let good = std::fs::read_to_string(&trace).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&broken, format!("{first}\n\n{}\n", &first[..first.len() / 2])).unwrap();
    let out = replay(&[broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:3: not a nix-wasm-hook trace record", broken.display())),
        "{}",
        stderr(&out)
    );
}

/// A trace is read a bounded line at a time, and an error quotes a bounded part of it: a line
/// with a huge field, or no line end at all, costs neither the memory nor the terminal.
#[test]
fn huge_lines_are_refused_and_errors_quote_a_bounded_part() {
    let dir = tempfile::tempdir().unwrap();
    let field = dir.path().join("field.jsonl");
    std::fs::write(&field, format!("{{\"v\": 1, \"request\": \"{}\"}}\n", "x".repeat(50 << 20))).unwrap();
    let out = replay(&[field.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("{}:1: not a nix-wasm-hook trace record", field.display())),
        "{}",
        &said[..said.len().min(2000)]
    );
    assert!(said.len() < 2000, "the error quotes {} bytes", said.len());

    let endless = dir.path().join("endless.jsonl");
    let mut f = std::fs::File::create(&endless).unwrap();
    let block = vec![b'{'; 1 << 20];
    for _ in 0..(nwh_trace::MAX_LINE >> 20) + 1 {
        std::io::Write::write_all(&mut f, &block).unwrap();
    }
    drop(f);
    let out = replay(&[endless.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:1: the line is longer than 64 MiB", endless.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn json_output_is_one_object_per_record_and_a_summary() {
    let trace = traces_dir().join("prefer-last-differs.jsonl").display().to_string();
    let out =
        replay(&["--json", &trace, "--policy", &policy_fixture("prefer-last"), "--against", "recorded"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (records, summary) = json_lines(&out);
    assert_eq!(records.len(), 10);
    let first = &records[0];
    assert_eq!(first["record"], 1);
    assert_eq!(first["drv"], "two-idle");
    assert_eq!(first["system"], "x86_64-linux");
    assert_eq!(first["a"]["answer"], "try ssh://b2, ssh://b1");
    assert_eq!(first["a"]["choice"], serde_json::json!({"kind": "try", "machines": [1, 0]}));
    assert_eq!(first["a"]["decided_by"], "policy");
    assert!(first["a"]["fuel"].as_u64().unwrap() > 0);
    assert_eq!(first["b"]["answer"], "try ssh://b1, ssh://b2");
    assert_eq!(first["same"], false);
    assert_eq!(records[2]["a"]["answer"], "decline");
    assert_eq!(summary["records"], 10);
    assert_eq!(summary["same"], 7);
    assert_eq!(summary["differ"], 3);
    assert_eq!(summary["differing"], serde_json::json!([1, 4, 7]));
    assert_eq!(summary["b"]["label"], "recorded");
}

const DRV: &str = "/nix/store/0c7w2i7kmf3ljc1vyqrvpxsn6gdn2l3y-hello-2.12.1.drv";

fn read_trace(path: &Path) -> Vec<nwh_trace::Record> {
    nwh_trace::Reader::open(path).unwrap().map(|r| r.unwrap().1).collect()
}

#[test]
fn a_trace_never_holds_key_material() {
    use base64::Engine as _;
    let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let host_key_b64 = base64::engine::general_purpose::STANDARD.encode(host_key);
    let key = "/root/nwh-secret-dir/id_nwh_secret";
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    // Port 1 on loopback refuses at once: both builders fail to connect, then nothing is left.
    let builders = format!(
        "ssh://root@127.0.0.1:1 x86_64-linux {key} 1 2 - - {host_key_b64} ; \
         ssh://root@[::1]:1 x86_64-linux {key} 1 1 - - {host_key_b64}"
    );
    let mut env = HookEnv::new();
    env.args = vec!["--trace".into(), trace.display().to_string()];
    env.connect_first = true;
    let mut hook = env.start();
    hook.send(&settings_block(&[("builders", &builders), ("max-jobs", "0"), ("system", "x86_64-linux")]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Decline));
    let (_, log, _) = hook.finish();
    // The hook itself did use the key and talk about it: the test is not vacuous.
    let msgs = crate::support::fake_parent::Hook::messages(&log).join("\n");
    assert!(msgs.contains("cannot build on 'ssh://root@127.0.0.1:1'"), "{msgs}");
    // And an accepted one, without connecting (a fresh state: these builders are now known down).
    let mut env2 = HookEnv::new();
    env2.args = env.args.clone();
    let mut hook = env2.start();
    hook.send(&settings_block(&[("builders", &builders), ("max-jobs", "0"), ("system", "x86_64-linux")]));
    hook.send(&try_message(false, "x86_64-linux", DRV, &[]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://root@127.0.0.1:1".into())));
    hook.finish();

    let text = std::fs::read_to_string(&trace).unwrap();
    let forbidden =
        [key, "nwh-secret", "id_nwh_secret", host_key, &host_key[12..], &host_key_b64, &host_key_b64[..40]];
    for f in forbidden {
        assert!(!text.contains(f), "the trace holds {f:?}:\n{text}");
    }
    let recs = read_trace(&trace);
    let reason =
        recs[1].machines[0].down_reason.as_deref().expect("ssh's words reach the policy and the trace");
    // What ssh said is kept (the key material in such words is redacted, see
    // `ssh_words_in_down_reasons_lose_their_key_material`).
    assert!(reason.contains("Connection refused"), "{reason}");
    let outcomes: Vec<String> = recs.iter().map(|r| serde_json::to_string(&r.outcome).unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            r#"{"kind":"connection-failed","uri":"ssh://root@127.0.0.1:1"}"#,
            r#"{"kind":"connection-failed","uri":"ssh://root@[::1]:1"}"#,
            r#"{"kind":"declined"}"#,
            r#"{"kind":"accepted","uri":"ssh://root@127.0.0.1:1"}"#,
        ]
    );
}

/// ssh's words about a failed connection reach the policy as a down reason, and the trace
/// records what the policy saw; whatever ssh quotes of the key file or host key is redacted.
#[test]
fn ssh_words_in_down_reasons_lose_their_key_material() {
    use base64::Engine as _;
    use nix_wasm_hook::core::policy::Decided;
    use nwh_decision::DecidedBy;
    use nwh_decision::{Answer, Decision, MachineView, Request};
    let host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let host_key_b64 = base64::engine::general_purpose::STANDARD.encode(host_key);
    let key = "/etc/nix/keys/builder_ed25519";
    let ctx = nwh_machines::ParseContext { local_system: "x86_64-linux".into(), cwd: "/".into() };
    let line = format!("ssh://b1 x86_64-linux {key} 1 1 - - {host_key_b64}");
    let machines = nwh_machines::parse_builders(&line, "test", &ctx).machines;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.jsonl");
    let policy = nwh_trace::PolicyId { name: "p".into(), sha256: "0".repeat(64) };
    let mut w =
        nix_wasm_hook::core::trace::Writer::new(path.clone(), 1 << 20, policy).with_secrets(&machines);
    let said = format!(
        "unreachable (Warning: Identity file {key} not accessible: No such file or directory. \
         Offending key {} in known hosts; its host key is SHA256:ZP9ekP0qMv2GCDfDy3e/MxuGDv2qMmThoqbT1xZ3oHA, \
         column 8 says {host_key_b64})",
        &host_key[12..]
    );
    let view = MachineView {
        uri: "ssh://b1".into(),
        systems: vec!["x86_64-linux".into()],
        max_jobs: 1,
        speed_factor: 1.0,
        supported_features: vec![],
        mandatory_features: vec![],
        slots_in_use: 0,
        enabled: false,
        down_reason: Some(said),
        facts: Default::default(),
    };
    let request = Request {
        drv_path: DRV.into(),
        system: "x86_64-linux".into(),
        required_features: vec![],
        am_willing: false,
        could_build_locally: false,
        local: Default::default(),
    };
    let decided = Decided {
        answer: Answer { decision: Decision::Decline, rejected: vec![(0, "down".into())] },
        by: DecidedBy::Default,
        fuel_used: 1,
        micros: 1,
        warning: None,
    };
    let when = std::time::SystemTime::now();
    assert_eq!(w.record(when, &request, &[view], &decided, nwh_trace::Outcome::Declined), None);
    let text = std::fs::read_to_string(&path).unwrap();
    for f in [key, "builder_ed25519", &host_key[12..], &host_key_b64, "ZP9ekP0qMv2GCDfDy3e"] {
        assert!(!text.contains(f), "the trace holds {f:?}:\n{text}");
    }
    let reason = read_trace(&path)[0].machines[0].down_reason.clone().unwrap();
    assert_eq!(
        reason,
        "unreachable (Warning: Identity file [redacted] not accessible: No such file or directory. \
         Offending key [redacted] in known hosts; its host key is SHA256:[redacted], column 8 says [redacted])"
    );
}

#[test]
fn a_hook_records_what_its_policy_saw_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let mut env = HookEnv::new();
    env.args =
        vec!["--policy".into(), policy_fixture("prefer-last"), "--trace".into(), trace.display().to_string()];
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://first x86_64-linux - 2 ; ssh://last x86_64-linux,aarch64-linux - 1 3 kvm"),
        ("max-jobs", "1"),
        ("system", "x86_64-linux"),
        ("system-features", "kvm"),
    ]));
    hook.send(&try_message(true, "x86_64-linux", DRV, &["kvm"]));
    assert_eq!(hook.reply(), Some(Reply::Accept("ssh://last".into())));
    hook.finish();
    let recs = read_trace(&trace);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.v, 1);
    assert!(r.time.ends_with('Z') && r.time.len() == "2025-01-02T03:04:05.678Z".len(), "{}", r.time);
    assert_eq!(r.request.drv_path, DRV);
    assert_eq!(r.request.required_features, ["kvm"]);
    assert!(r.request.am_willing && r.request.could_build_locally);
    assert_eq!(r.machines.len(), 2);
    assert_eq!(r.machines[1].uri, "ssh://last");
    assert_eq!(r.machines[1].systems, ["x86_64-linux", "aarch64-linux"]);
    assert_eq!(r.machines[1].speed_factor, 3.0);
    assert_eq!(r.machines[0].max_jobs, 2);
    assert!(r.policy.name.ends_with("prefer-last.wasm"), "{}", r.policy.name);
    assert_eq!(r.policy.sha256.len(), 64);
    assert_eq!(r.answer.decision, nwh_decision::Decision::Try(vec![1]));
    assert_eq!(r.answer.reason_for(0), Some("does not support the required feature `kvm`"));
    assert_eq!(r.decided_by, nwh_decision::DecidedBy::Policy);
    assert!(r.warning.is_none());
    assert!(r.fuel > 0 && r.micros > 0);
    assert_eq!(r.outcome, nwh_trace::Outcome::Accepted { uri: "ssh://last".into() });
}

/// A policy of contract 0.3 is told of the machine Nix runs on: its `max-jobs`, the
/// `local-speed-factor` option and what the hook measured there just then; the trace keeps it.
/// The default policy (0.2) has no use for facts, and none are measured for it.
#[test]
fn a_policy_of_the_current_contract_is_told_of_the_local_machine() {
    for (policy, told) in [(Some("facts"), true), (None, false)] {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace.jsonl");
        let mut env = HookEnv::new();
        env.args =
            vec!["--trace".into(), trace.display().to_string(), "--local-speed-factor".into(), "2.5".into()];
        if let Some(p) = policy {
            env.args.extend(["--policy".into(), policy_fixture(p)]);
        }
        let mut hook = env.start();
        hook.send(&settings_block(&[
            ("builders", "ssh://b aarch64-linux"),
            ("max-jobs", "3"),
            ("system", "x86_64-linux"),
        ]));
        hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
        assert_eq!(hook.reply(), Some(Reply::Decline));
        hook.finish();
        let r = &read_trace(&trace)[0];
        assert_eq!((r.request.local.max_jobs, r.request.local.speed_factor), (3, 2.5));
        let facts = &r.request.local.facts;
        if !told {
            assert!(facts.is_empty(), "{facts:?}");
            continue;
        }
        let load = facts.load.expect("the load measured here");
        assert!(load.cores >= 1 && load.age_ms == 0, "{load:?}");
        assert!(facts.free_store_bytes.is_some(), "{facts:?}");
        // What the policy received, as it printed it: the same as the trace says.
        let said = r.answer.reason_for(0).unwrap();
        assert_eq!(said, format!("local: {:?}; machine: {:?}", r.request.local, r.machines[0].facts));
    }
}

#[test]
fn a_trace_that_cannot_be_written_costs_one_warning_not_the_build() {
    let mut env = HookEnv::new();
    env.args = vec!["--trace".into(), "/nonexistent-dir/trace.jsonl".into()];
    let mut hook = env.start();
    hook.send(&settings_block(&[
        ("builders", "ssh://a aarch64-linux"),
        ("max-jobs", "1"),
        ("system", "x86_64-linux"),
    ]));
    for _ in 0..3 {
        hook.send(&try_message(true, "x86_64-linux", DRV, &[]));
        assert_eq!(hook.reply(), Some(Reply::Decline));
    }
    let (code, log, _) = hook.finish();
    assert_eq!(code, 0);
    let msgs = crate::support::fake_parent::Hook::messages(&log);
    let warnings: Vec<_> = msgs.iter().filter(|m| m.contains("decision trace")).collect();
    assert_eq!(warnings.len(), 1, "{msgs:?}");
    assert!(warnings[0].contains("/nonexistent-dir/trace.jsonl") && warnings[0].contains("builds go on"));
}

#[test]
fn the_trace_rotates_and_keeps_one_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let old = dir.path().join("trace.jsonl.1");
    let mut env = HookEnv::new();
    // Any record is bigger than 1 byte: every hook finds the file full and rotates first.
    env.args = vec!["--trace".into(), trace.display().to_string(), "--trace-max-bytes".into(), "1".into()];
    for name in ["a", "b", "c"] {
        let mut hook = env.start();
        hook.send(&settings_block(&[
            ("builders", "ssh://a aarch64-linux"),
            ("max-jobs", "1"),
            ("system", "x86_64-linux"),
        ]));
        hook.send(&try_message(
            true,
            "x86_64-linux",
            &format!("/nix/store/{}-{name}.drv", "x".repeat(32)),
            &[],
        ));
        assert_eq!(hook.reply(), Some(Reply::Decline));
        hook.finish();
    }
    let names = |p: &Path| read_trace(p).iter().map(|r| r.request.drv_path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&trace), [format!("/nix/store/{}-c.drv", "x".repeat(32))]);
    assert_eq!(names(&old), [format!("/nix/store/{}-b.drv", "x".repeat(32))]);
    assert!(!dir.path().join("trace.jsonl.2").exists());
}

#[test]
fn concurrent_writers_neither_interleave_nor_lose_the_full_file_when_rotating() {
    use nwh_trace as trace;
    let sample = read_trace(&traces_dir().join("prefer-last-differs.jsonl")).remove(0);
    let line_len = serde_json::to_vec(&sample).unwrap().len() as u64 + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.jsonl");
    let max = 50 * line_len;
    let (writers, each) = (8, 300);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (path, mut rec) = (path.clone(), sample.clone());
            s.spawn(move || {
                for i in 0..each {
                    rec.pid = w * 1000 + i;
                    trace::append(&path, max, &rec).unwrap();
                }
            });
        }
    });
    let old = trace::rotated(&path);
    for p in [&path, &old] {
        // Every line is whole: a torn or interleaved one would not parse.
        assert!(!read_trace(p).is_empty());
    }
    let old_len = std::fs::metadata(&old).unwrap().len();
    assert!(old_len >= max, "the kept file is a full one ({old_len} < {max}), not a fresh one moved over it");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < max + writers as u64 * line_len, "{len}");
}

/// Real Nix and real SSH: a graph on three builders, recorded and replayed. Set
/// `NWH_KEEP_TRACE=PATH` to keep the trace (tests/fixtures/traces/testbed-graph.jsonl is one).
#[test]
#[cfg_attr(
    not(nwh_testbed),
    ignore = "needs root and the test bed (nix-build, sshd, ip, unshare): cargo xtask test sets it up"
)]
fn testbed_a_recorded_graph_replays_to_the_same_decisions() {
    let Some(tb) = Testbed::up_or_skip(3, Opts::default()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let hook = OurHook::new(&["--trace", trace.to_str().unwrap()]);
    let builders = tb.machines_lines().join("\n");
    let expr = format!(
        r#"let
  mk = name: deps: builtins.derivation {{
    inherit name; nonce = "{nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
    deps = deps;
    args = [ "-c" "read h < /proc/sys/kernel/hostname; echo $h $deps > $out; /bin/sleep 1" ];
  }};
  a = mk "nwh-leaf-a" [ ]; b = mk "nwh-leaf-b" [ ]; c = mk "nwh-leaf-c" [ ]; d = mk "nwh-leaf-d" [ ];
  ab = mk "nwh-mid-ab" [ a b ]; cd = mk "nwh-mid-cd" [ c d ];
in mk "nwh-top" [ ab cd ]"#,
        nonce = unique_nonce()
    );
    let out = tb.nix_build(&expr, &hook.remote_only(&builders));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(out_paths(&out).len(), 1);
    if let Some(keep) = std::env::var_os("NWH_KEEP_TRACE") {
        std::fs::copy(&trace, keep).unwrap();
    }

    let recs = read_trace(&trace);
    let accepted = recs.iter().filter(|r| matches!(r.outcome, nwh_trace::Outcome::Accepted { .. }));
    assert_eq!(accepted.count(), 7, "one accept per derivation");
    for r in &recs {
        assert_eq!(r.machines.len(), 3);
        if let nwh_trace::Outcome::Accepted { uri } = &r.outcome {
            let nwh_decision::Decision::Try(ranking) = &r.answer.decision else { panic!("{r:?}") };
            assert_eq!(&r.machines[ranking[0] as usize].uri, uri, "the hook took the policy's first choice");
        }
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(!text.contains(SSH_KEY) && !text.contains("id_ed25519"), "no key path in the trace");
    for line in tb.machines_lines() {
        let host_key = line.split(' ').nth(7).unwrap();
        assert!(!text.contains(host_key), "no host key in the trace");
    }

    let out = replay(&[trace.to_str().unwrap(), "--against", "recorded", "--fail-on-diff"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).ends_with(&format!("{n} records: {n} same, 0 differ\n", n = recs.len())),
        "{}",
        stdout(&out)
    );
}
