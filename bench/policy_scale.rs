//! The policy at scale: one decision of the default policy over many
//! machines, and `simulate` and `replay` of many decisions on such a cluster.
//!
//! The cluster is generated (a fixed generator: every run measures the same machines):
//! `x86_64-linux` builders, one in seven also `aarch64-linux`, a third with `big-parallel`,
//! 1 to 8 slots, speeds 1 to 4. Every builder can take every derivation of the workload: a
//! builder that never can (a mandatory feature, say) keeps a free slot, which makes
//! `simulate`, as Nix, ask again about every waiting derivation whenever a build ends, and
//! the decisions would number many times the derivations.
//!
//! - `decision_us`: `Policy::call` alone (instantiation, lowering, the guest, lifting), the
//!   median and the fastest call of each round, on a prepared request and the machines as
//!   `simulate` shows them, some slots in use: the policy ranks nearly all of them and rejects
//!   the rest with a reason.
//! - `simulate_s`: the release binary's `simulate --generate N` on that cluster, wall time.
//! - `replay_s`: the release binary's `replay -` over N records on that cluster, streamed on
//!   its standard input, wall time. A record of a thousand machines is ~170 KiB of JSON, so a
//!   trace of 100 000 would not fit on the test VM's disk; the records are written as the
//!   hook writes them (the same request as `simulate` makes for each derivation, the slot
//!   counts varying from record to record), by a thread that does little more than copy
//!   bytes, so that the time is replay's own: reading, parsing, deciding, printing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use nix_wasm_hook::core::policy::{cache::Cache, Policy};
use nwh_decision::DecidedBy;
use nwh_decision::{Answer, Decision, MachineView, Request};
use nwh_trace::{Outcome, PolicyId, Record};

/// Microseconds per decision of the default policy over `machines` machines, one value per round
/// (each round: the median of many calls on a prepared request), and the wall seconds of a
/// `simulate` of `derivations` derivations on `machines` builders, and of a `replay` of as many
/// records on them.
#[derive(Clone, Debug)]
pub struct PolicyScale {
    pub decision_us: DecisionTimes,
    pub simulate_s: Vec<f64>,
    pub replay_s: Vec<f64>,
}

/// One decision's microseconds, one value per round: the median of the round's calls, and the
/// fastest of them, which the noise of a shared machine cannot make smaller (what compares two
/// builds best).
#[derive(Clone, Debug, Default)]
pub struct DecisionTimes {
    pub median: Vec<f64>,
    pub fastest: Vec<f64>,
}

/// Calls timed per round of `decision_us`.
const CALLS_PER_ROUND: usize = 101;

const SYSTEM: &str = "x86_64-linux";

pub fn measure(machines: usize, derivations: usize, rounds: usize) -> Result<PolicyScale> {
    ensure!(machines > 0 && rounds > 0, "measure needs at least one machine and one round");
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let machines_file = dir.path().join("machines");
    std::fs::write(&machines_file, machines_text(machines)).context("writing the machines file")?;
    // The hook's default limits whatever /etc says on this machine, and a cache of compiled
    // policies of its own, warmed before anything is timed.
    let config = dir.path().join("options.toml");
    let cache = dir.path().join("cache");
    std::fs::write(&config, format!("cache-dir = {:?}\n", cache.display().to_string()))
        .context("writing the options file")?;

    let views = machine_views(&machines_file)?;
    let decision_us = decisions(&views, rounds)?;

    let simulate = |n: usize| {
        let n = n.to_string();
        let args =
            ["simulate", "--config", path(&config)?, "--machines", path(&machines_file)?, "--generate", &n];
        timed(&args, None)
    };
    simulate(1)?;
    let mut simulate_s = Vec::with_capacity(rounds);
    let mut replay_s = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        simulate_s.push(simulate(derivations)?);
        let trace = TraceStream { views: &views, records: derivations };
        replay_s.push(timed(&["replay", "--config", path(&config)?, "-"], Some(trace))?);
    }
    Ok(PolicyScale { decision_us, simulate_s, replay_s })
}

/// Microseconds per decision of the default policy over `machines` generated machines, one
/// value per round: the `decision_us` of [`measure`] alone.
pub fn decision(machines: usize, rounds: usize) -> Result<DecisionTimes> {
    ensure!(machines > 0 && rounds > 0, "decision needs at least one machine and one round");
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let machines_file = dir.path().join("machines");
    std::fs::write(&machines_file, machines_text(machines)).context("writing the machines file")?;
    decisions(&machine_views(&machines_file)?, rounds)
}

fn decisions(views: &[MachineView], rounds: usize) -> Result<DecisionTimes> {
    let policy = Policy::default_policy(&Cache::disabled())?;
    let request = request_for(42);
    let mut times = DecisionTimes::default();
    for _ in 0..rounds {
        let (median, fastest) = decision_us(&policy, &request, views)?;
        times.median.push(median);
        times.fastest.push(fastest);
    }
    Ok(times)
}

/// The median and the fastest of `CALLS_PER_ROUND` calls, in microseconds, after one call that
/// is not counted (cold caches).
fn decision_us(policy: &Policy, request: &Request, views: &[MachineView]) -> Result<(f64, f64)> {
    let failed = |e| anyhow::anyhow!("the default policy failed: {e}");
    policy.call(request, views).map_err(failed)?;
    let mut us: Vec<f64> = (0..CALLS_PER_ROUND)
        .map(|_| {
            let started = Instant::now();
            let call = policy.call(request, views);
            let took = started.elapsed().as_secs_f64() * 1e6;
            call.map(|_| took).map_err(failed)
        })
        .collect::<Result<_>>()?;
    us.sort_by(f64::total_cmp);
    Ok((us[us.len() / 2], us[0]))
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Runs the hook binary with `args` (its input: `trace`, else nothing; its output thrown
/// away) and returns its wall time in seconds; it must succeed.
pub fn timed(args: &[&str], trace: Option<TraceStream>) -> Result<f64> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nix-wasm-hook"))
        .args(args)
        .stdin(if trace.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nix-wasm-hook")?;
    let stdin = child.stdin.take();
    let (out, took) = std::thread::scope(|s| -> Result<_> {
        let writer = trace.zip(stdin).map(|(trace, stdin)| s.spawn(move || trace.write_to(stdin)));
        let out = child.wait_with_output().context("running nix-wasm-hook")?;
        let took = started.elapsed().as_secs_f64();
        if let Some(w) = writer {
            w.join().map_err(|_| anyhow::anyhow!("the trace writer panicked"))??;
        }
        Ok((out, took))
    })?;
    ensure!(
        out.status.success(),
        "nix-wasm-hook {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// `records` trace records on `views`, written as JSON lines.
pub struct TraceStream<'a> {
    views: &'a [MachineView],
    records: usize,
}

impl TraceStream<'_> {
    /// Writes the records. The machines' JSON is made once per slot pattern (a few), and a
    /// record is its request and answer around one of them, so that writing costs replay's
    /// side of the pipe next to nothing.
    fn write_to(self, to: impl Write) -> Result<()> {
        const PATTERNS: usize = 8;
        let machines: Vec<String> = (0..PATTERNS)
            .map(|p| {
                let views: Vec<MachineView> = self
                    .views
                    .iter()
                    .enumerate()
                    .map(|(i, v)| MachineView { slots_in_use: in_use(i + p, v.max_jobs), ..v.clone() })
                    .collect();
                serde_json::to_string(&views)
            })
            .collect::<Result<_, _>>()?;
        let mut to = std::io::BufWriter::with_capacity(1 << 20, to);
        for n in 0..self.records {
            let record = Record {
                v: nwh_trace::VERSION,
                time: "2026-01-01T00:00:00.000Z".into(),
                pid: 1000 + n as u32,
                request: request_for(n),
                machines: Vec::new(),
                policy: PolicyId { name: "the default policy".into(), sha256: "0".repeat(64) },
                answer: Answer { decision: Decision::Postpone, rejected: Vec::new() },
                decided_by: DecidedBy::Default,
                warning: None,
                fuel: 0,
                micros: 0,
                outcome: Outcome::Postponed,
            };
            let line = serde_json::to_string(&record)?;
            let (before, after) =
                line.split_once("\"machines\":[]").context("a record names its machines")?;
            let written = to
                .write_all(before.as_bytes())
                .and_then(|()| to.write_all(b"\"machines\":"))
                .and_then(|()| to.write_all(machines[n % PATTERNS].as_bytes()))
                .and_then(|()| to.write_all(after.as_bytes()))
                .and_then(|()| to.write_all(b"\n"));
            // Replay stops reading when it fails; its own error is the one to report.
            if written.is_err() {
                return Ok(());
            }
        }
        let _ = to.flush();
        Ok(())
    }
}

/// Slots in use on machine `i` of `max_jobs`: none to about half, so that nearly every
/// machine is free, as in a `simulate` of a large cluster.
fn in_use(i: usize, max_jobs: u32) -> u32 {
    (i as u32 * 7) % (max_jobs + 1) / 2
}

/// The machines of `file` as `simulate` shows them to the policy.
fn machine_views(file: &Path) -> Result<Vec<MachineView>> {
    let ctx = nwh_machines::ParseContext { local_system: SYSTEM.into(), cwd: std::env::current_dir()? };
    let parsed = nwh_machines::parse_file(file, &ctx);
    ensure!(parsed.diagnostics.is_empty(), "the generated machines file has diagnostics");
    Ok(parsed
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| nix_wasm_hook::core::schedule::view(m, in_use(i, m.max_jobs), None))
        .collect())
}

/// The request `simulate` makes for derivation `n` of a generated workload.
fn request_for(n: usize) -> Request {
    Request {
        drv_path: nix_wasm_hook::tools::simulate::engine::drv_path(&format!("pkg-{n:04}")),
        system: SYSTEM.into(),
        required_features: Vec::new(),
        am_willing: false,
        could_build_locally: false,
        local: Default::default(),
    }
}

/// `n` builders in the machines-file format, the same for the same `n`.
pub fn machines_text(n: usize) -> String {
    use std::fmt::Write as _;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |below: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    let mut text = String::new();
    for i in 0..n {
        let systems = if next(7) == 0 { "x86_64-linux,aarch64-linux" } else { SYSTEM };
        let jobs = 1 + next(8);
        let speed = [1, 1, 2, 3, 4][next(5) as usize];
        let supported = if next(3) == 0 { "big-parallel" } else { "-" };
        let _ = writeln!(text, "ssh://builder{i:04}.example.org {systems} - {jobs} {speed} {supported}");
    }
    text
}
