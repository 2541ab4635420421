//! `replay` of 100 000 records of small clusters (1 to 16 machines, 8.5 on average, ~200 MiB
//! of trace, the same on every run): the default policy alone, against the recorded answers,
//! another policy against the default, and JSON out. The trace is written once, to a file,
//! before anything is timed.

use std::io::Write;

use anyhow::{Context, Result};
use nwh_decision::DecidedBy;
use nwh_decision::{Answer, Decision, MachineView, Request};
use nwh_trace::{Outcome, PolicyId, Record};

use crate::policy_scale::timed;
use crate::report::{Row, Stats, Table};
use crate::support::tool::policy_fixture;

const RECORDS: u64 = 100_000;

pub fn run(rounds: usize) -> Result<Table> {
    let dir = tempfile::tempdir().context("a scratch directory")?;
    let trace = dir.path().join("trace.jsonl");
    write_trace(&trace)?;
    let trace = trace.display().to_string();
    let last = policy_fixture("prefer-last");
    let runs: [(&str, Vec<&str>); 4] = [
        ("`replay T` (the default policy)", vec!["replay", &trace]),
        ("`replay T --against recorded`", vec!["replay", &trace, "--against", "recorded"]),
        (
            "`replay T --policy prefer-last --against default`",
            vec!["replay", &trace, "--policy", &last, "--against", "default"],
        ),
        ("`replay T --json --against recorded`", vec!["replay", &trace, "--json", "--against", "recorded"]),
    ];
    let mut seconds = vec![Vec::new(); runs.len()];
    for _ in 0..rounds {
        for (i, (_, args)) in runs.iter().enumerate() {
            seconds[i].push(timed(args, None)?);
        }
    }
    Ok(Table {
        title: format!("`replay` of {RECORDS} records of 1 to 16 machines"),
        what: "A trace as many small clusters make it (8.5 machines a record on average, ~200 MiB), \
               replayed by the release binary; wall clock, output thrown away."
            .into(),
        unit: "s",
        stats: Stats::Rounds,
        rows: runs.iter().zip(seconds).map(|((label, _), s)| Row::new(*label, s)).collect(),
    })
}

/// The trace: a fixed generator, so every run replays the same records.
fn write_trace(path: &std::path::Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).context("creating the trace")?);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    const SYSTEMS: [&str; 2] = ["x86_64-linux", "aarch64-linux"];
    const FEATURES: [&str; 3] = ["kvm", "big-parallel", "benchmark"];
    for i in 0..RECORDS {
        let machines: Vec<MachineView> = (0..1 + next(16))
            .map(|m| {
                let max_jobs = 1 + next(8) as u32;
                MachineView {
                    uri: format!("ssh://builder{m}.example.org"),
                    systems: if next(4) == 0 {
                        SYSTEMS.iter().map(|s| s.to_string()).collect()
                    } else {
                        vec![SYSTEMS[0].into()]
                    },
                    max_jobs,
                    speed_factor: (1 + next(4)) as f64,
                    supported_features: FEATURES[..next(3) as usize].iter().map(|s| s.to_string()).collect(),
                    mandatory_features: vec![],
                    slots_in_use: next(u64::from(max_jobs) + 1) as u32,
                    enabled: true,
                    down_reason: None,
                    facts: Default::default(),
                }
            })
            .collect();
        let record = Record {
            v: nwh_trace::VERSION,
            time: "2025-01-02T03:04:05.678Z".into(),
            pid: 1000 + (i / 3) as u32,
            request: Request {
                drv_path: format!("/nix/store/{i:032}-pkg-{i}.drv"),
                system: SYSTEMS[usize::from(next(5) == 0)].into(),
                required_features: if next(4) == 0 {
                    vec![FEATURES[next(2) as usize].into()]
                } else {
                    vec![]
                },
                am_willing: next(2) == 0,
                could_build_locally: next(2) == 0,
                local: Default::default(),
            },
            machines,
            policy: PolicyId { name: "the default policy".into(), sha256: "0".repeat(64) },
            answer: Answer { decision: Decision::Decline, rejected: vec![] },
            decided_by: DecidedBy::Default,
            warning: None,
            fuel: 0,
            micros: 0,
            outcome: Outcome::Declined,
        };
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
