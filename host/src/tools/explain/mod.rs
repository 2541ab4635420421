//! `nix-wasm-hook explain`: where would the hook send this derivation, and why not elsewhere?
//! It reads nix.conf, the machines and the options exactly as the hook does (paths as seen
//! from `/`), measures the slots in use, asks the active policy, and prints every machine with
//! the rule that rejected it in plain words. This is the command (its arguments, the printing);
//! [`hops`] does the explaining.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use nwh_decision::{self as decision, LocalMachine, Misfit, Request};

use crate::core::nix_release::NixRelease;
use crate::core::policy::Policies;

mod hops;
use hops::{score, Hop};

/// Where would the hook send this derivation, and why not elsewhere?
///
/// Shows, for a derivation (or a system and features), every machine: whether it fits, its
/// slots in use and Nix's score, the rank the active policy gives it, and for each one
/// rejected the rule that rejected it. Exit status: 0 when the derivation can be built (on a
/// machine now or later, or locally), 1 when nothing can build it, 2 on bad input.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The derivation, `/nix/store/…-name.drv`.
    #[arg(value_name = "DRV", required_unless_present = "system")]
    pub drv: Option<PathBuf>,
    /// Instead of a derivation: its system …
    #[arg(long, conflicts_with = "drv")]
    pub system: Option<String>,
    /// … and required features (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "system")]
    pub features: Vec<String>,
    #[command(flatten)]
    pub inputs: crate::core::settings::HookInputs,
    /// Explain with this policy instead of the configured one.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The Nix whose words to quote for what it does next (`2.34.8`, `lix 2.93`); default:
    /// what `nix-store --version` says, or every wording when there is no Nix.
    #[arg(long, value_name = "VERSION", value_parser = parse_nix_version)]
    pub nix_version: Option<NixRelease>,
    /// One JSON object, for scripts.
    #[arg(long)]
    pub json: bool,
}

fn parse_nix_version(text: &str) -> Result<NixRelease, String> {
    NixRelease::from_version(text)
        .ok_or_else(|| format!("'{text}' is not a version such as 2.34.8 or 'lix 2.93'"))
}

pub const EXIT_UNBUILDABLE: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

pub fn main(args: &Args) -> i32 {
    crate::tools::main("explain", EXIT_ERROR, |out| run(args, out))
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let inputs = crate::core::settings::as_the_hook(&args.inputs)?;
    let mut notes = inputs.warnings.clone();
    notes.extend(inputs.machines.diagnostics.iter().map(|d| d.to_string()));
    let policy_path = args.policy.clone().or(inputs.opts.policy.clone());
    let (policies, load_warning) = Policies::configured(policy_path.as_ref(), &inputs.opts)?;
    notes.extend(load_warning);
    let nix = args.nix_version.clone().or_else(NixRelease::installed);
    let request = request(args, &crate::core::settings::local(&inputs.settings))?;

    let (first, behind) = hops::hops(inputs, policies, nix, request, &mut notes)?;
    let mut hints = crate::core::hints::unknown_words(&first.request, &first.views, &first.scheduler.local);
    hints.extend(behind.as_ref().and_then(|behind| hops::line_hides(&first, behind)));
    let so = hops::so(&first, behind.as_ref());
    if args.json {
        let mut report = first.json();
        report["request"] = json!(first.request);
        report["behind"] = json!(behind.as_ref().map(Hop::json));
        report["verdict"] = json!(so.text);
        report["hints"] = json!(hints);
        report["notes"] = json!(notes);
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print_text(out, &first, behind.as_ref(), &so.text, &hints, &notes)?;
    }
    Ok(if so.buildable { 0 } else { EXIT_UNBUILDABLE })
}

/// What explain is asked about: a derivation's system and features, or those given.
fn request(args: &Args, local: &LocalMachine) -> Result<Request> {
    let (drv_path, system, features) = match (&args.drv, &args.system) {
        (Some(p), _) => {
            let drv = nwh_drv::Derivation::read(p).with_context(|| format!("reading {}", p.display()))?;
            let features = drv
                .env
                .get("requiredSystemFeatures")
                .map(|f| f.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            (p.display().to_string(), drv.platform, features)
        }
        (None, Some(s)) => ("(no derivation)".to_string(), s.clone(), args.features.clone()),
        (None, None) => anyhow::bail!("give a .drv path, or --system (and --features)"),
    };
    Ok(Request {
        could_build_locally: local.could_build(&system, &features),
        drv_path,
        system,
        required_features: features,
        // As Nix asks when it has a free local slot.
        am_willing: local.max_jobs > 0,
        local: Default::default(),
    })
}

fn print_text(
    out: &mut dyn Write,
    first: &Hop,
    behind: Option<&Hop>,
    so: &str,
    hints: &[String],
    notes: &[String],
) -> Result<()> {
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    let req = &first.request;
    let features =
        if req.required_features.is_empty() { "none".into() } else { req.required_features.join(", ") };
    writeln!(out, "derivation: {}", req.drv_path)?;
    writeln!(out, "system: {}; required features: {features}", req.system)?;
    if let Some(behind) = behind {
        writeln!(out, "\nNix's own hook chooses among `builders`, by Nix's rules:")?;
        print_hop(out, first, BUILDERS)?;
        writeln!(
            out,
            "\nbehind the builder-mode line, nix-wasm-hook chooses among {}:",
            nwh_options::MACHINES_OPTION
        )?;
        print_hop(out, behind, nwh_options::MACHINES_OPTION)?;
    } else {
        print_hop(out, first, BUILDERS)?;
    }
    writeln!(out, "so: {so}")?;
    for h in hints {
        writeln!(out, "hint: {h}")?;
    }
    Ok(())
}

const BUILDERS: &str = "`builders`";

fn print_hop(out: &mut dyn Write, hop: &Hop, source: &str) -> Result<()> {
    let (req, s) = (&hop.request, &hop.scheduler);
    writeln!(out, "policy: {} (sha256 {})", s.policies.label(), &s.policies.active().sha256()[..12])?;
    writeln!(out)?;
    let header = ["machine", "line", "slots", "fits", "score", "rank", "why not"];
    let cells: Vec<[String; 7]> = hop
        .rows
        .iter()
        .map(|r| {
            let fits = match &r.misfit {
                None => "yes",
                Some(Misfit::Full { .. } | Misfit::NeverFree) => "busy",
                Some(_) => "no",
            };
            let eligible = decision::eligibility(req, &r.view).is_ok();
            [
                r.view.uri.clone(),
                r.location.clone(),
                format!("{}/{}", r.view.slots_in_use, r.view.max_jobs),
                fits.to_string(),
                if eligible { format!("{:.2}", score(&r.view)) } else { "-".into() },
                r.rank.map_or("-".into(), |k| k.to_string()),
                r.why.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..7)
        .map(|c| cells.iter().map(|row| row[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |row: &[&str]| {
        let mut l = String::new();
        for (c, cell) in row.iter().enumerate() {
            l += &format!("{cell:<w$}  ", w = widths[c]);
        }
        l.trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &cells {
        writeln!(out, "{}", line(&row.iter().map(String::as_str).collect::<Vec<_>>()))?;
    }
    if hop.rows.is_empty() {
        writeln!(out, "(no usable machine in {source})")?;
    }
    writeln!(out)?;
    writeln!(out, "answer: {}", hop.decided.answer.decision.describe(&hop.views))?;
    Ok(())
}
