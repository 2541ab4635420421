//! The hook against the bytes Nix 2.8, 2.26 and 2.34 really sent (tests/fixtures/captures/*).
//! Each capture directory holds an `expect.toml` with the replies our hook must give, under
//! the recorded settings or with some of them replaced; every capture is checked, and a
//! capture without expectations fails the suite.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::fake_parent::{Capture, HookEnv, Reply, Step};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Settings replaced in the recorded block (e.g. `builders`, `max-jobs`).
    #[serde(default)]
    settings: std::collections::BTreeMap<String, String>,
    /// One reply per `try`, in order: `accept <uri>`, `decline`, `decline-permanently`, `postpone`.
    replies: Vec<String>,
    exit: i32,
    /// Words that must appear in the `@nix` messages the hook logs.
    #[serde(default)]
    messages_contain: Vec<String>,
    /// Words that must not.
    #[serde(default)]
    messages_lack: Vec<String>,
    /// Nix's verbosity, the hook's last argument (default 3: `nix-build` without `-v`).
    verbosity: Option<u32>,
    /// How many warnings (level 1) the hook logs; not counted when absent.
    warnings: Option<usize>,
    /// The hook quotes what Nix does next (`… fails with "…"`), and that Nix printed it: the
    /// quote is in the capture's `nix-build.stderr`.
    #[serde(default)]
    quotes_nix: bool,
}

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures")
}

fn parse_reply(s: &str) -> Reply {
    match s.split_once(' ') {
        Some(("accept", uri)) => Reply::Accept(uri.to_string()),
        _ => match s {
            "decline" => Reply::Decline,
            "decline-permanently" => Reply::DeclinePermanently,
            "postpone" => Reply::Postpone,
            other => panic!("unknown reply '{other}' in expect.toml"),
        },
    }
}

/// Plays Nix's side of one case; returns a description of every mismatch.
fn play(dir: &Path, capture: &Capture, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut env = HookEnv::new();
    if let Some(v) = case.verbosity {
        env.verbosity = v;
    }
    let mut hook = env.start();
    let overrides: Vec<(&str, &str)> = case.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    hook.send(&capture.settings_block(&overrides));
    let mut expected = case.replies.iter().map(|r| parse_reply(r));
    let mut steps = capture.steps.iter().peekable();
    if case.replies.first().map(String::as_str) == Some("decline-permanently") {
        // Sent before any `try`, as Nix's own hook does; Nix then kills the hook.
        let got = hook.reply();
        if got != Some(Reply::DeclinePermanently) {
            problems.push(format!("{}: expected decline-permanently before any try, got {got:?}", case.name));
        }
        expected.next();
        assert!(expected.next().is_none(), "{}: nothing can follow decline-permanently", case.name);
    }
    for want in expected {
        let Some(step) = steps.by_ref().find(|s| matches!(s, Step::Try { .. })) else {
            problems.push(format!("{}: more replies expected than the capture has tries", case.name));
            break;
        };
        let Step::Try { raw, drv_path, .. } = step else { unreachable!() };
        hook.send(raw);
        let got = hook.reply();
        if got.as_ref() != Some(&want) {
            problems.push(format!("{}: for {drv_path} expected {want:?}, got {got:?}", case.name));
            break;
        }
        if let Reply::Accept(_) = want {
            match steps.by_ref().find(|s| matches!(s, Step::Accepted { .. })) {
                Some(Step::Accepted { raw, .. }) => hook.send(raw),
                // The spy declined here, so Nix sent nothing; send what Nix sends for a
                // derivation without inputs.
                _ => hook.send(&no_inputs_only_out()),
            }
            break;
        }
    }
    let (code, log, _plain) = hook.finish();
    if code != case.exit {
        problems.push(format!("{}: exit code {code}, expected {}", case.name, case.exit));
    }
    let messages = crate::support::fake_parent::Hook::messages(&log).join("\n");
    for w in &case.messages_contain {
        if !messages.contains(w.as_str()) {
            problems.push(format!("{}: messages lack {w:?}; they were:\n{messages}", case.name));
        }
    }
    for w in &case.messages_lack {
        if messages.contains(w.as_str()) {
            problems.push(format!("{}: messages contain {w:?}; they were:\n{messages}", case.name));
        }
    }
    if let Some(n) = case.warnings {
        let warnings = warnings(&log);
        if warnings.len() != n {
            problems.push(format!(
                "{}: {} warning(s), expected {n}: {warnings:#?}",
                case.name,
                warnings.len()
            ));
        }
    }
    if case.quotes_nix {
        problems.extend(quote_problem(dir, &messages).map(|p| format!("{}: {p}", case.name)));
    }
    problems
}

/// The `msg` lines at Nix's warning level.
fn warnings(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .filter(|v| v["action"] == "msg" && v["level"] == 1)
        .map(|v| v["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Why the hook's quote of Nix's next words is not what that Nix printed, if it is not.
fn quote_problem(dir: &Path, messages: &str) -> Option<String> {
    let Some((_, rest)) = messages.split_once("fails with \"") else {
        return Some(format!("no quote of Nix's words in the messages:\n{messages}"));
    };
    let quote = rest.split('"').next().unwrap_or_default();
    let printed = std::fs::read_to_string(dir.join("nix-build.stderr")).expect("nix-build.stderr");
    // Nix indents and wraps its error over lines; and 2.21 to 2.29 capitalise "Unable to start
    // any build", which their settings block does not tell apart from 2.8's lowercase.
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    (!flat(&printed).contains(&flat(quote)))
        .then(|| format!("Nix did not print {quote:?}; it printed:\n{printed}"))
}

fn no_inputs_only_out() -> Vec<u8> {
    let mut b = 0u64.to_le_bytes().to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    crate::support::fake_parent::put_string(&mut b, b"out");
    b
}

fn check_capture(name: &str) {
    let dir = captures_dir().join(name);
    let expect: Expect = toml::from_str(&std::fs::read_to_string(dir.join("expect.toml")).unwrap())
        .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"));
    let mut problems = Vec::new();
    let mut streams: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    streams.sort();
    assert!(!streams.is_empty(), "{name} has no stdin-*.bin");
    for stream in &streams {
        let capture = Capture::read(stream);
        for case in &expect.case {
            problems
                .extend(play(&dir, &capture, case).into_iter().map(|p| format!("{}: {p}", stream.display())));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

macro_rules! captures {
    ($($test:ident => $dir:literal),* $(,)?) => {
        $( #[test] fn $test() { check_capture($dir); } )*

        #[test]
        fn every_capture_has_a_test() {
            let known = [$($dir),*];
            for entry in std::fs::read_dir(captures_dir()).unwrap() {
                let entry = entry.unwrap();
                if !entry.file_type().unwrap().is_dir() {
                    continue;
                }
                let name = entry.file_name().into_string().unwrap();
                assert!(known.contains(&name.as_str()), "capture {name} has no test in tests/protocol.rs");
            }
        }
    };
}

captures! {
    spy_accept => "spy-accept",
    spy_accept_exit1 => "spy-accept-exit1",
    spy_decline => "spy-decline",
    spy_decline_permanently => "spy-decline-permanently",
    spy_features => "spy-features",
    spy_maxjobs0_decline => "spy-maxjobs0-decline",
    spy_other_system => "spy-other-system",
    spy_postpone => "spy-postpone",
    spy_testbed_machines => "spy-testbed-machines",
    real_hook_build_fails => "real-hook-build-fails",
    real_hook_dead_machine => "real-hook-dead-machine",
    real_hook_ssh => "real-hook-ssh",
    real_hook_ssh_deps => "real-hook-ssh-deps",
    real_hook_ssh_ng => "real-hook-ssh-ng",
    nix_2_26_3_spy_accept_deps => "nix-2.26.3-spy-accept-deps",
    nix_2_26_3_spy_accept0 => "nix-2.26.3-spy-accept0",
    nix_2_26_3_spy_args => "nix-2.26.3-spy-args",
    nix_2_26_3_spy_features => "nix-2.26.3-spy-features",
    nix_2_26_3_spy_mj0 => "nix-2.26.3-spy-mj0",
    nix_2_26_3_spy_mj1 => "nix-2.26.3-spy-mj1",
    nix_2_34_8_spy_accept_deps => "nix-2.34.8-spy-accept-deps",
    nix_2_34_8_spy_accept0 => "nix-2.34.8-spy-accept0",
    nix_2_34_8_spy_accept1 => "nix-2.34.8-spy-accept1",
    nix_2_34_8_spy_args => "nix-2.34.8-spy-args",
    nix_2_34_8_spy_features => "nix-2.34.8-spy-features",
    nix_2_34_8_spy_mj0 => "nix-2.34.8-spy-mj0",
    nix_2_34_8_spy_mj1 => "nix-2.34.8-spy-mj1",
}

#[test]
fn captured_streams_decode_as_recorded() {
    // The spy's transcript says what Nix sent; our reader of the fixture must agree.
    let c = Capture::read(&captures_dir().join("spy-features/stdin-1.bin"));
    assert_eq!(c.settings.len(), 91);
    assert_eq!(c.setting("builders"), Some("ssh://dummy x86_64-linux"));
    match &c.steps[0] {
        Step::Try { system, features, am_willing, .. } => {
            assert_eq!(system, "x86_64-linux");
            assert_eq!(features, &["big-parallel", "kvm"]);
            assert!(*am_willing);
        }
        other => panic!("{other:?}"),
    }
    // Nix 2.34 sends 31 settings more than 2.8, among them a JSON value.
    let c = Capture::read(&captures_dir().join("nix-2.34.8-spy-features/stdin-1.bin"));
    assert_eq!(c.settings.len(), 122);
    assert_eq!(c.setting("external-builders"), Some("[]"));
    assert_eq!(c.setting("max-free"), Some("9223372036854775807"));
    match &c.steps[..] {
        [Step::Try { features, am_willing, .. }] => {
            assert_eq!(features, &["big-parallel", "kvm"]);
            assert!(!*am_willing, "max-jobs 0");
        }
        other => panic!("{other:?}"),
    }
    let c = Capture::read(&captures_dir().join("spy-accept/stdin-1.bin"));
    let accepted: Vec<_> = c.steps.iter().filter(|s| matches!(s, Step::Accepted { .. })).collect();
    match accepted[..] {
        [Step::Accepted { inputs, outputs, .. }] => {
            assert_eq!(inputs.len(), 2);
            assert_eq!(outputs, &["doc", "out"]);
        }
        _ => panic!("{accepted:?}"),
    }
}
