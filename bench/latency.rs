//! Decision latency: from the hook's start to its reply, as Nix sees it. Each decision is a
//! new hook process given the settings block and one `try` message, the same bytes for ours
//! and for Nix's own hook (`build-remote`, the host's Nix), alternately. A decline (no machine
//! builds the system) and an accept (a free builder; ours connects through its SSH master,
//! warm after the first decision; Nix's hook opens a new connection, as it always does).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::report::{Against, Row, Stats, Table};
use crate::support::fake_parent::{shared_cache, try_message, Capture};
use crate::support::hook::OurHook;
use crate::support::testbed::{describe, unique_nonce, Nix, Opts, Testbed};

/// Nix 2.8's hook: the `nix` binary under the name it dispatches on.
const NIX_HOOK: &str = "/usr/libexec/nix/build-remote";

/// What Nix 2.8 sent its hook, recorded (tests/fixtures/captures/real-hook-ssh).
fn settings(builders: &str) -> Vec<u8> {
    let capture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/captures/real-hook-ssh/stdin-1.bin");
    Capture::read(&capture).settings_block(&[("builders", builders)])
}

/// Starts `argv`, writes `input`, and returns the milliseconds until its `# ` reply and the
/// reply; then closes its stdin (as Nix does when it is done with a hook) and reaps it.
fn decide(argv: &[String], input: &[u8]) -> (f64, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    let t = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .env_remove("NIX_REMOTE")
        .env_remove("NIX_CONFIG")
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", argv[0]));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(reader);
    let mut said = String::new();
    let (ms, reply) = loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("{} ended without a reply; it said:\n{said}", argv[0]);
        }
        if let Some(reply) = line.strip_prefix("# ") {
            break (t.elapsed().as_secs_f64() * 1000.0, reply.trim().to_string());
        }
        said.push_str(&line);
    };
    drop(stdin);
    let _ = std::io::copy(&mut out, &mut std::io::sink());
    let _ = child.wait();
    (ms, reply)
}

pub fn run(decisions: usize) -> Table {
    let tb = Testbed::up(1, Opts::default()).with_master(Nix::V2_8);
    let builders = tb.machines_lines().join("\n");
    let drv = instantiate(&tb);
    let hook = OurHook::new(&[]);
    let ours: Vec<String> = [
        env!("CARGO_BIN_EXE_nix-wasm-hook").into(),
        "--state-dir".into(),
        hook.state().display().to_string(),
        "--cache-dir".into(),
        shared_cache().display().to_string(),
        "3".into(),
    ]
    .into();
    let nix = vec![NIX_HOOK.to_string(), "3".to_string()];
    let settings = settings(&builders);
    let request =
        |willing: bool, system: &str| [settings.clone(), try_message(willing, system, &drv, &[])].concat();
    let kinds = [("decline", request(true, "aarch64-linux")), ("accept", request(false, "x86_64-linux"))];
    let mut rows = Vec::new();
    for (kind, input) in &kinds {
        // The first of each warms the policy cache and our SSH master, as a running machine has them.
        decide(&ours, input);
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..decisions {
            for (argv, into) in [(&nix, &mut theirs), (&ours, &mut mine)] {
                let (ms, reply) = decide(argv, input);
                assert!(
                    reply.starts_with(kind),
                    "{} answered `{reply}` to a request meant for {kind}",
                    argv[0]
                );
                into.push(ms);
            }
        }
        let reference = if *kind == "decline" { "decline: Nix's own hook" } else { "accept: Nix's own hook" };
        rows.push(Row::new(reference, theirs));
        let label = format!("{kind}: nix-wasm-hook");
        rows.push(Row::new(label, mine).against(Against::Row(reference), Some(0.25)));
    }
    Table {
        title: "Decision latency, Nix 2.8's hook protocol".into(),
        what: format!(
            "From starting the hook to its reply, {decisions} decisions of each kind, each a new process \
             given the settings block Nix 2.8 sends and one request (the same bytes for both hooks): \
             decline (no builder for the system) and accept (one free builder; ours reaches it over its \
             warm SSH master, Nix's hook connects anew, as it always does). Ratios compare medians."
        ),
        unit: "ms",
        stats: Stats::Samples,
        rows,
    }
}

/// A derivation on the master, for the requests to name (a hook may read it).
fn instantiate(tb: &Testbed) -> String {
    let expr = format!(
        r#"builtins.derivation {{ name = "nwh-latency"; nonce = "{}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }}"#,
        unique_nonce()
    );
    let out = tb.master_cmd(&["nix-instantiate", "-E", &expr]).output().expect("running nix-instantiate");
    assert!(out.status.success(), "{}", describe(&out));
    let drv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(PathBuf::from(&drv).exists(), "{drv}");
    drv
}
