//! `nix-wasm-hook simulate`: how fast would a cluster build a workload with a given policy?
//! A discrete-event simulation (see `engine`) that asks the real policy component, through the
//! same `Policies::decide` as the hook, at every decision; deterministic for a given input.
//! This is the command (its arguments, the cluster and workload they name); [`engine`]
//! simulates, [`print`] shows the result.

pub mod engine;
mod print;
pub mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::core::policy::{cache::Cache, Limits, Policies};
use engine::{Builder, Cluster};
use nwh_decision::LocalMachine;
use nwh_options::Options;
use print::{print_text, to_json};
use workload::Workload;

/// Simulate building a workload on a cluster with a policy: makespan, utilisation, waiting.
///
/// A discrete-event simulation of a workload (a file, or generated from a seed) over the
/// machines of a machines file, with each builder's true speed, driving the real policy
/// component decision by decision (docs/simulate.md). Exit status: 0 when every derivation
/// was built, 1 when some could not be, 2 on bad input.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The machines, in Nix's machines-file format (one line per builder).
    #[arg(long, value_name = "FILE")]
    pub machines: PathBuf,
    /// The workload: a TOML file of `[[derivation]]` tables (see docs/simulate.md).
    #[arg(long, value_name = "FILE", required_unless_present = "generate", conflicts_with = "generate")]
    pub workload: Option<PathBuf>,
    /// Generate a workload of N derivations instead, shaped like a package set.
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1, requires = "generate")]
    pub seed: u64,
    /// A builder's true speed, when it differs from its declared speed factor (which is all
    /// the policy sees); repeat for several builders.
    #[arg(long = "true-speed", value_name = "URI=FACTOR")]
    pub true_speed: Vec<String>,
    /// MiB per second between the local store and each builder.
    #[arg(long, value_name = "MIB_PER_S", default_value_t = 100.0)]
    pub bandwidth: f64,
    /// Nix's own max-jobs on the local machine (0: everything must be built remotely).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub local_jobs: u32,
    /// The local machine's speed, relative to the workload's durations.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub local_speed: f64,
    /// The local system: the default of the machines file's systems column and of the
    /// derivations' system.
    #[arg(long, value_name = "SYSTEM", default_value = "x86_64-linux")]
    pub system: String,
    /// The policy component; the embedded default when absent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Also simulate with another policy component (or `default`) and report side by side.
    #[arg(long, value_name = "FILE|default")]
    pub against: Option<String>,
    /// One JSON object: the inputs, and per policy its figures and every build.
    #[arg(long)]
    pub json: bool,
    /// Options file whose policy limits and cache-dir apply, as in the hook.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub const EXIT_NOT_ALL_BUILT: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

pub fn main(args: &Args) -> i32 {
    // Thousands of decisions in one process: instances from a pool.
    crate::core::policy::engine::pool_instances();
    crate::tools::main("simulate", EXIT_ERROR, |out| run(args, out))
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let opts = Options::load(args.config.as_deref())?;
    let (limits, cache) = (Limits::from(&opts), Cache::from(&opts));
    let cluster = cluster(args)?;
    let workload = match (&args.workload, args.generate) {
        (Some(path), _) => Workload::from_file(path, &args.system)?,
        (None, Some(n)) => Workload::generate(n, args.seed, &args.system),
        (None, None) => bail!("give --workload FILE or --generate N"),
    };
    let mut sides = vec![Policies::load_strict(args.policy.as_deref(), limits, &cache)?];
    match args.against.as_deref() {
        None => {}
        Some("default") => sides.push(Policies::load_strict(None, limits, &cache)?),
        Some(p) => sides.push(Policies::load_strict(Some(Path::new(p)), limits, &cache)?),
    }
    let mut reports = Vec::with_capacity(sides.len());
    for p in &sides {
        reports
            .push(engine::run(&workload, &cluster, p).with_context(|| format!("simulating {}", p.label()))?);
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &to_json(&workload, &cluster, &sides, &reports))?;
        writeln!(out)?;
    } else {
        print_text(out, args, &workload, &cluster, &sides, &reports)?;
    }
    let all_built = reports.iter().all(|r| r.built() == workload.derivations.len());
    Ok(if all_built { 0 } else { EXIT_NOT_ALL_BUILT })
}

/// The machines file read as the hook reads it (errors are fatal here: a simulation of a
/// different cluster than the one written down would mislead), with the true speeds laid on.
fn cluster(args: &Args) -> Result<Cluster> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let ctx = nwh_machines::ParseContext { local_system: args.system.clone(), cwd };
    let parsed = nwh_machines::parse_file(&args.machines, &ctx);
    let mut errors = 0;
    for d in &parsed.diagnostics {
        eprintln!("{d}");
        errors += usize::from(d.severity == nwh_machines::Severity::Error);
    }
    if errors > 0 {
        bail!("{}: {errors} line(s) could not be read (see above); fix them first", args.machines.display());
    }
    if parsed.machines.is_empty() {
        bail!("{}: no machines: write one builder per line", args.machines.display());
    }
    let mut builders: Vec<Builder> =
        parsed.machines.into_iter().map(|m| Builder { true_speed: m.speed_factor, machine: m }).collect();
    for spec in &args.true_speed {
        let Some((uri, speed)) = spec.rsplit_once('=') else {
            bail!("--true-speed {spec}: expected URI=FACTOR, such as ssh://b1=2.5");
        };
        let speed: f64 = match speed.parse() {
            Ok(s) if s > 0.0 && f64::is_finite(s) => s,
            _ => bail!("--true-speed {spec}: `{speed}` is not a speed; expected a number > 0"),
        };
        let Some(b) = builders.iter_mut().find(|b| b.machine.uri == uri) else {
            let known: Vec<&str> = builders.iter().map(|b| b.machine.uri.as_str()).collect();
            bail!(
                "--true-speed {spec}: no machine `{uri}` in {}; it lists {}",
                args.machines.display(),
                known.join(", ")
            );
        };
        b.true_speed = speed;
    }
    if !(args.bandwidth > 0.0 && args.local_speed > 0.0) {
        bail!("--bandwidth and --local-speed must be greater than 0");
    }
    Ok(Cluster {
        builders,
        bandwidth: args.bandwidth * 1024.0 * 1024.0,
        local: LocalMachine {
            max_jobs: args.local_jobs,
            system: args.system.clone(),
            extra_platforms: Vec::new(),
            features: Default::default(),
        },
        local_speed: args.local_speed,
    })
}
