//! `nix-wasm-hook explain`: where would the hook send this derivation, and why not elsewhere?
//! It reads nix.conf, the machines and the options exactly as the hook does (paths as seen
//! from `/`), measures the slots in use, asks the active policy, and prints every machine with
//! the rule that rejected it in plain words.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use nwh_machines::{Machine, Machines};

use crate::nix_release::NixRelease;
use crate::policy::{cache::Cache, Decided, Limits, Policies};
use crate::schedule::Scheduler;
use crate::settings::AsTheHook;
use crate::transfer::health::Health;
use crate::transfer::target::unsupported;
use nwh_decision::Local;
use nwh_decision::{self as decision, Decision, MachineView, Misfit, Request};

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
    pub inputs: crate::settings::HookInputs,
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
    crate::tool::main("explain", EXIT_ERROR, |out| run(args, out))
}

/// One machine's row.
struct Row {
    view: MachineView,
    location: String,
    /// Why it cannot take the build now, when it cannot.
    misfit: Option<Misfit>,
    /// Its place in the policy's ranking (1 = chosen).
    rank: Option<usize>,
    /// The reason the policy gave, or the host's own words.
    why: Option<String>,
}

/// One choice among a list of machines: in hook mode the only one; in builder mode Nix's own
/// hook chooses among `builders` first (by Nix's rules, which the default policy encodes),
/// and nix-wasm-hook then chooses among the real builders behind the builder-mode line.
struct Hop {
    scheduler: Scheduler,
    request: Request,
    views: Vec<MachineView>,
    decided: Decided,
    rows: Vec<Row>,
    verdict: Verdict,
}

impl Hop {
    /// Measures the slots of `machines` and asks `policies`; `disabled` says which machines
    /// the chooser will not use and why.
    fn decide(
        mut scheduler: Scheduler,
        request: Request,
        disabled: impl Fn(&Machine) -> Option<String>,
        notes: &mut Vec<String>,
    ) -> Result<Hop> {
        scheduler.disabled = scheduler.machines.iter().map(disabled).collect();
        let views = match scheduler.measure() {
            Ok(v) => v,
            Err(e) => {
                // Reading the slots needs write access to the load directory (root under the
                // daemon); without it, explain with every slot free and say so.
                notes.push(format!("{e:#}; slots in use are shown as 0"));
                let disabled = scheduler.disabled.iter().cloned();
                scheduler.machines.iter().zip(disabled).map(|(m, d)| crate::schedule::view(m, 0, d)).collect()
            }
        };
        let decided = scheduler.policies.decide(&request, &views);
        notes.extend(decided.warning.clone());
        let rows = rows(&scheduler, &request, &views, &decided);
        let verdict = verdict(&request, &views, &decided);
        Ok(Hop { scheduler, request, views, decided, rows, verdict })
    }

    /// Whether this hop chose a builder-mode line.
    fn chose_builder_mode(&self) -> bool {
        matches!(self.verdict, Verdict::Remote(i) if self.scheduler.machines[i].builder_mode_program().is_some())
    }

    fn json(&self) -> serde_json::Value {
        let (req, s) = (&self.request, &self.scheduler);
        let machines: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "uri": r.view.uri, "location": r.location, "slots_in_use": r.view.slots_in_use,
                    "max_jobs": r.view.max_jobs, "speed_factor": r.view.speed_factor,
                    "fits": r.misfit.is_none(), "eligible": decision::eligibility(req, &r.view).is_ok(),
                    "score": score(&r.view), "rank": r.rank, "why_not": r.why,
                })
            })
            .collect();
        json!({
            "policy": {"label": s.policies.label(), "sha256": s.policies.active().sha256()},
            "decided_by": format!("{:?}", self.decided.by).to_lowercase(),
            "answer": self.decided.answer.decision.describe(&self.views),
            "machines": machines,
            "verdict": self.verdict.text(s, req),
        })
    }
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let AsTheHook { opts, settings, machines: parsed, warnings: mut notes } =
        crate::settings::as_the_hook(&args.inputs)?;
    notes.extend(parsed.diagnostics.iter().map(|d| d.to_string()));

    let policy_path = args.policy.clone().or(opts.policy.clone());
    let (policies, load_warning) =
        Policies::load(policy_path.as_ref(), Limits::from(&opts), &Cache::from(&opts))?;
    notes.extend(load_warning);
    let nix = args.nix_version.clone().or_else(NixRelease::installed);
    let local = crate::settings::local(&settings);
    let request = request(args, &local)?;
    let load = || nwh_slots::LoadDir::open(opts.current_load_dir());
    let builder_mode = parsed.machines.iter().any(|m| m.builder_mode_program().is_some());

    let health = Health::from(&opts);
    let hook_disables = |m: &Machine| unsupported(m).or_else(|| health.disabled_reason(&m.uri));

    let (first, behind) = if builder_mode {
        // Nix's own hook chooses the line; nix-wasm-hook behind it, the real builder.
        let (nix_rules, _) = Policies::load(None, Limits::from(&opts), &Cache::from(&opts))?;
        let scheduler = Scheduler::new(parsed.machines, load(), nix_rules, local.clone(), nix.clone());
        let first = Hop::decide(scheduler, request.clone(), |_| None, &mut notes)?;
        let real = crate::settings::builder_machines(&opts, &settings).unwrap_or_else(|| {
            notes.push(format!(
                "builder mode needs the real builders, and {} is not set in the options file",
                nwh_options::MACHINES_OPTION
            ));
            Machines::default()
        });
        notes.extend(real.diagnostics.iter().map(|d| d.to_string()));
        // As the builder front-end asks: it never builds on this machine itself.
        let local = Local { max_jobs: 0, ..local };
        let request = Request { could_build_locally: false, am_willing: true, ..request };
        let scheduler = Scheduler::new(real.machines, load(), policies, local, nix);
        (first, Some(Hop::decide(scheduler, request, hook_disables, &mut notes)?))
    } else {
        let scheduler = Scheduler::new(parsed.machines, load(), policies, local, nix);
        (Hop::decide(scheduler, request, hook_disables, &mut notes)?, None)
    };
    let mut hints = crate::hints::unknown_words(&first.request, &first.views, &first.scheduler.local);
    hints.extend(behind.as_ref().and_then(|behind| line_hides(&first, behind)));
    let so = so(&first, behind.as_ref());
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
fn request(args: &Args, local: &Local) -> Result<Request> {
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
    })
}

/// When Nix's own hook finds no line for the build but the real builders behind the
/// builder-mode line could take it, the line does not offer Nix what they can do.
fn line_hides(first: &Hop, behind: &Hop) -> Option<String> {
    let line = first.scheduler.machines.iter().find(|m| m.builder_mode_program().is_some())?;
    let offered =
        first.views.iter().zip(&first.scheduler.machines).any(|(v, m)| {
            m.builder_mode_program().is_some() && decision::eligibility(&first.request, v).is_ok()
        });
    let could = behind.views.iter().any(|v| decision::eligibility(&behind.request, v).is_ok());
    (!offered && could).then(|| {
        format!(
            "the real builders behind the builder-mode line ({}:{}) could build it, but the line does \
             not declare its system or features, so Nix never sends it there: declare them in columns \
             2 and 6 of that line",
            line.origin.location, line.origin.line
        )
    })
}

/// What happens to the build, in the end.
struct So {
    text: String,
    buildable: bool,
}

fn so(first: &Hop, behind: Option<&Hop>) -> So {
    let text = first.verdict.text(&first.scheduler, &first.request);
    let buildable = |v: &Verdict| !matches!(v, Verdict::Nowhere | Verdict::Forever);
    match behind {
        Some(behind) if first.chose_builder_mode() => {
            let then = match behind.verdict {
                Verdict::Remote(i) => format!("which sends it to {}", behind.scheduler.machines[i].uri),
                Verdict::Later => "where it waits for the first free slot of a real builder that fits \
                                   (first come, first served)"
                    .to_string(),
                _ => "where it fails at once: no real builder can take it (the rows behind say why)"
                    .to_string(),
            };
            So {
                text: format!("Nix's own hook sends it to nix-wasm-hook (builder mode), {then}"),
                buildable: buildable(&behind.verdict),
            }
        }
        Some(_) if let Verdict::Remote(i) = first.verdict => So {
            text: format!(
                "Nix's own hook sends it to {} directly: nix-wasm-hook is not involved",
                first.scheduler.machines[i].uri
            ),
            buildable: true,
        },
        _ => So { text, buildable: buildable(&first.verdict) },
    }
}

/// Nix's score of a machine: lower is better (`load / speed-factor`).
fn score(v: &MachineView) -> f64 {
    f64::from(v.slots_in_use) / v.speed_factor
}

fn rows(s: &Scheduler, req: &Request, views: &[MachineView], decided: &Decided) -> Vec<Row> {
    let ranking: &[u32] = match &decided.answer.decision {
        Decision::Try(r) => r,
        _ => &[],
    };
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let m = &s.machines[i];
            let misfit = decision::fits_now(req, v).err();
            let rank = ranking.iter().position(|&r| r as usize == i).map(|p| p + 1);
            let why = match rank {
                Some(_) => None,
                None => Some(decision::why_not(req, v, decided.answer.reason_for(i as u32))),
            };
            Row {
                view: v.clone(),
                location: format!("{}:{}", m.origin.location, m.origin.line),
                misfit,
                rank,
                why,
            }
        })
        .collect()
}

enum Verdict {
    Remote(usize),
    /// Every machine that fits is busy: Nix asks again later.
    Later,
    Local,
    /// The policy postponed, but no machine that fits ever takes a build: Nix asks again,
    /// for ever.
    Forever,
    Nowhere,
}

impl Verdict {
    fn text(&self, s: &Scheduler, req: &Request) -> String {
        let l = &s.local;
        let this_machine = format!(
            "this machine cannot either (max-jobs {}, system {}{})",
            l.max_jobs,
            l.system,
            if l.extra_platforms.is_empty() {
                String::new()
            } else {
                format!(", extra-platforms {}", l.extra_platforms.join(" "))
            }
        );
        match self {
            Verdict::Remote(i) => format!("the hook would send it to {}", s.machines[*i].uri),
            Verdict::Later => "every machine that fits is busy now: Nix waits and asks again".into(),
            Verdict::Local => {
                format!("Nix builds it on this machine (max-jobs {}, system {})", l.max_jobs, l.system)
            }
            Verdict::Forever => format!(
                "it waits for ever: no machine that fits ever takes a build (max-jobs 0), and \
                 {this_machine}; Nix shows \"waiting for a machine to build '…'\" and asks again, \
                 every build-poll-interval"
            ),
            Verdict::Nowhere => {
                let next = crate::nix_release::nix_fails_with(s.nix.as_ref(), req, l);
                format!(
                    "nothing can build it: no machine fits, and {this_machine}{}",
                    next.map(|n| format!("; {n}")).unwrap_or_default()
                )
            }
        }
    }
}

fn verdict(req: &Request, views: &[MachineView], decided: &Decided) -> Verdict {
    match &decided.answer.decision {
        Decision::Try(r) => Verdict::Remote(r[0] as usize),
        Decision::Postpone
            if views.iter().any(|v| decision::eligibility(req, v).is_ok() && v.max_jobs > 0) =>
        {
            Verdict::Later
        }
        _ if req.could_build_locally => Verdict::Local,
        Decision::Postpone => Verdict::Forever,
        Decision::Decline => Verdict::Nowhere,
    }
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
