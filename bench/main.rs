//! The benchmark suite (`bench/run`): each workload behind the performance figures of
//! docs/benchmarks.md, run with nix-wasm-hook (as the hook and as a builder of Nix's own hook)
//! and with Nix's own hook on the same test bed in the same run, several rounds; writes
//! BENCHMARKS.md with the figures and their ratios. Timings on a shared machine are figures to
//! compare, not assertions: the suite fails only when a build does.

// The test bed harness of the integration tests, shared rather than copied.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

mod latency;
mod makespan;
mod policy_load;
mod policy_scale;
mod replay_mix;
mod report;
mod timeline;
mod transfer;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use report::{Against, Row, Stats, Table};
use support::testbed::Nix;

const USAGE: &str =
    "usage: bench/run [--rounds N] [--nix 2.8|2.26|2.34 ...] [--only makespan,latency,transfer,policy,decision,load] \
                     [--decisions N] [--out FILE]";

struct Args {
    rounds: usize,
    nix: Vec<Nix>,
    only: Vec<String>,
    decisions: usize,
    out: PathBuf,
}

fn parse_nix(v: &str) -> Result<Nix> {
    Ok(match v {
        "2.8" => Nix::V2_8,
        "2.26" => Nix::V2_26,
        "2.34" => Nix::V2_34,
        other => bail!("--nix {other}: expected 2.8, 2.26 or 2.34\n{USAGE}"),
    })
}

fn args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = Args {
        rounds: 3,
        nix: Vec::new(),
        only: Vec::new(),
        decisions: 200,
        out: root.join("BENCHMARKS.md"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            // cargo bench passes it to every benchmark binary.
            "--bench" => {}
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--decisions" => args.decisions = value()?.parse().context("--decisions")?,
            "--nix" => args.nix.push(parse_nix(&value()?)?),
            "--only" => args.only.extend(value()?.split(',').map(String::from)),
            "--out" => args.out = value()?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.nix.is_empty() {
        args.nix.push(Nix::V2_8);
    }
    for o in &args.only {
        if !["makespan", "latency", "transfer", "policy", "decision", "load"].contains(&o.as_str()) {
            bail!("--only {o}: not a workload\n{USAGE}");
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = args()?;
    if let Some(why) = support::testbed::skip_reason() {
        bail!("the benchmarks run on the test bed, which cannot start here: {why}");
    }
    let wanted = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o == w);
    let mut tables: Vec<Table> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let done = |table: Table, tables: &mut Vec<Table>| {
        eprint!("{}", table.summary());
        tables.push(table);
    };
    for &nix in &args.nix {
        if wanted("makespan") {
            for w in &makespan::WORKLOADS {
                eprintln!("makespan: {}, Nix {}", w.title, nix.name());
                let (table, phases) = makespan::run(nix, w, args.rounds);
                notes.extend(phases.into_iter().map(|p| format!("{} — {p}", table.title)));
                done(table, &mut tables);
            }
        }
        if wanted("transfer") {
            eprintln!("transfer, Nix {}", nix.name());
            let (times, memory, phases) = transfer::run(nix, args.rounds);
            notes.extend(phases.into_iter().map(|p| format!("{} — {p}", times.title)));
            done(times, &mut tables);
            done(memory, &mut tables);
        }
    }
    if wanted("latency") {
        eprintln!("decision latency");
        done(latency::run(args.decisions), &mut tables);
    }
    if wanted("policy") {
        eprintln!("policy at scale");
        for table in policy_tables(args.rounds)? {
            done(table, &mut tables);
        }
        eprintln!("replay of small clusters");
        done(replay_mix::run(args.rounds)?, &mut tables);
    }
    // The first table of `policy` alone, for a quick look at the cost of one call.
    if !wanted("policy") && args.only.iter().any(|o| o == "decision") {
        eprintln!("one decision over {DECISION_MACHINES} machines");
        done(
            decision_table(DECISION_MACHINES, policy_scale::decision(DECISION_MACHINES, args.rounds)?),
            &mut tables,
        );
    }
    if wanted("load") {
        eprintln!("policy load, per language");
        for table in policy_load::run(args.rounds)? {
            done(table, &mut tables);
        }
    }
    let text = document(&args, &tables, &notes);
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// `nix-build` of `expr` with `args` (the row `label`), our processes writing their timeline
/// to `timeline` when given: the seconds it took, and its output. A failed build ends the run.
fn timed_build(
    tb: &support::testbed::Testbed,
    label: &str,
    expr: &str,
    args: &[&str],
    timeline: Option<&std::path::Path>,
) -> (f64, std::process::Output) {
    let mut cmd = tb.nix_build_cmd(expr, args);
    if let Some(file) = timeline {
        cmd.env(nix_wasm_hook::core::timeline::VARIABLE, file);
    }
    let t = std::time::Instant::now();
    let out = cmd.output().expect("running nix-build");
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{label}: {}", support::testbed::describe(&out));
    (secs, out)
}

const DECISION_MACHINES: usize = 1000;

fn decision_table(machines: usize, decision_us: policy_scale::DecisionTimes) -> Table {
    Table {
        title: format!("One decision of the default policy over {machines} machines"),
        what: "The Wasm call alone, marshalling included: a fresh policy instance, the request and \
               the machine list lowered into it, its answer lifted back (each round: the median of \
               many calls, and the fastest of them, which a busy machine cannot make smaller), with \
               the engine as a hook process has it (no instance pool; `simulate` and `replay` pool \
               theirs)."
            .into(),
        unit: "µs",
        stats: Stats::Rounds,
        rows: vec![
            Row::new("default policy", decision_us.median).against(Against::Absolute, Some(500.0)),
            Row::new("default policy, fastest call", decision_us.fastest),
        ],
    }
}

fn policy_tables(rounds: usize) -> Result<Vec<Table>> {
    let (machines, derivations) = (DECISION_MACHINES, 100_000);
    let scale = policy_scale::measure(machines, derivations, rounds)?;
    Ok(vec![
        decision_table(machines, scale.decision_us),
        Table {
            title: format!("`simulate` and `replay` of {derivations} derivations on {machines} builders"),
            what: "The whole command, default policy, wall clock; replay is given 100 000 records of \
                   decisions over the same machines."
                .into(),
            unit: "s",
            stats: Stats::Rounds,
            rows: vec![
                Row::new("simulate", scale.simulate_s).against(Against::Absolute, Some(60.0)),
                Row::new("replay of 100 000 recorded decisions", scale.replay_s)
                    .against(Against::Absolute, Some(60.0)),
            ],
        },
    ])
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default()
}

/// Where the figures come from: the machine, the commit, the date.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = first_line(Command::new("uname").arg("-r"));
    let commit = first_line(Command::new("git").args([
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "rev-parse",
        "--short",
        "HEAD",
    ]));
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}; nix-wasm-hook {} (release build), commit {}; {date}",
        env!("CARGO_PKG_VERSION"),
        if commit.is_empty() { "unknown" } else { &commit }
    )
}

fn document(args: &Args, tables: &[Table], notes: &[String]) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Written by `bench/run` (rounds: {}; masters: {}). Ran on: {}.\n\n\
         Every row of a table ran in the same run, on the same test bed, rounds interleaved (each \
         round runs every row once), so the ratios compare like with like; the absolute figures depend \
         on the machine. Nothing here is asserted by the tests.\n\n\
         Run again, as root on Debian 12 with Rust (it starts the test bed it needs, see \
         CONTRIBUTING.md): `bench/run` (about 20 minutes; `bench/run --help` for the options).\n",
        args.rounds,
        args.nix.iter().map(|n| n.name()).collect::<Vec<_>>().join(", "),
        machine()
    );
    out.push_str("## Summary\n\nEvery row with a goal (medians):\n\n| workload | | median | ratio | goal |\n|---|---|---|---|---|\n");
    for line in tables.iter().flat_map(Table::goal_rows) {
        let _ = writeln!(out, "{line}");
    }
    out.push_str("\n## Tables\n\n");
    for table in tables {
        out.push_str(&table.markdown());
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push_str(
            "### Where a build's time goes\n\nFrom the timelines our processes wrote (`NWH_TIMELINE`), the \
             median time from one phase to the next, over every build of the workload:\n\n",
        );
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
