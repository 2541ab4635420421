//! The explaining: what each chooser on a derivation's way sees and decides, the row of every
//! machine with why it was not chosen, and what happens to the build in the end.

use anyhow::Result;
use serde_json::json;

use nwh_decision::{self as decision, Decision, LocalMachine, MachineView, Misfit, Request};
use nwh_machines::{Machine, Machines};

use crate::core::nix_release::NixRelease;
use crate::core::policy::{Decided, Policies};
use crate::core::schedule::Scheduler;
use crate::core::settings::AsTheHook;
use crate::transfer::health::Health;
use crate::transfer::target::unsupported;

/// The hops a derivation takes: in hook mode one, the hook's choice among `builders`; in
/// builder mode Nix's own hook's choice among `builders` (by Nix's rules) and, behind the
/// builder-mode line, nix-wasm-hook's among the real builders. Problems that do not stop the
/// explanation go to `notes`.
pub fn hops(
    inputs: AsTheHook,
    policies: Policies,
    nix: Option<NixRelease>,
    request: Request,
    notes: &mut Vec<String>,
) -> Result<(Hop, Option<Hop>)> {
    let AsTheHook { opts, settings, machines: parsed, .. } = inputs;
    let local = crate::core::settings::local(&settings);
    let store = crate::core::settings::local_store(&settings, None)?;
    let load_dir = opts.current_load_dir(&store.state_dir);
    let load = || nwh_slots::LoadDir::open(&load_dir);
    let builder_mode = parsed.machines.iter().any(|m| m.builder_mode_program().is_some());
    let health = Health::from(&opts);
    let hook_disables = |m: &Machine| unsupported(m, &store).or_else(|| health.down_reason_of(&m.uri));
    if !builder_mode {
        let scheduler = Scheduler::new(parsed.machines, load(), policies, local, nix);
        return Ok((Hop::decide(scheduler, request, hook_disables, notes)?, None));
    }
    // Nix's own hook chooses the line; nix-wasm-hook behind it, the real builder.
    let (nix_rules, _) = Policies::configured(None, &opts)?;
    let scheduler = Scheduler::new(parsed.machines, load(), nix_rules, local.clone(), nix.clone());
    let first = Hop::decide(scheduler, request.clone(), |_| None, notes)?;
    let real = crate::core::settings::builder_machines(&opts, &settings).unwrap_or_else(|| {
        notes.push(format!(
            "builder mode needs the real builders, and {} is not set in the options file",
            nwh_options::MACHINES_OPTION
        ));
        Machines::default()
    });
    notes.extend(real.diagnostics.iter().map(|d| d.to_string()));
    // As the builder front-end asks: it never builds on this machine itself.
    let local = LocalMachine { max_jobs: 0, ..local };
    let request = Request { could_build_locally: false, am_willing: true, ..request };
    let scheduler = Scheduler::new(real.machines, load(), policies, local, nix);
    Ok((first, Some(Hop::decide(scheduler, request, hook_disables, notes)?)))
}

/// One machine's row.
pub struct Row {
    pub view: MachineView,
    pub location: String,
    /// Why it cannot take the build now, when it cannot.
    pub misfit: Option<Misfit>,
    /// Its place in the policy's ranking (1 = chosen).
    pub rank: Option<usize>,
    /// The reason the policy gave, or the host's own words.
    pub why: Option<String>,
}

/// One choice among a list of machines: in hook mode the only one; in builder mode Nix's own
/// hook chooses among `builders` first (by Nix's rules, which the default policy encodes),
/// and nix-wasm-hook then chooses among the real builders behind the builder-mode line.
pub struct Hop {
    pub scheduler: Scheduler,
    pub request: Request,
    pub views: Vec<MachineView>,
    pub decided: Decided,
    pub rows: Vec<Row>,
    pub verdict: Verdict,
}

impl Hop {
    /// Measures the slots of `machines` and asks `policies`; `disabled` says which machines
    /// the chooser will not use and why.
    fn decide(
        mut scheduler: Scheduler,
        request: Request,
        down: impl Fn(&Machine) -> Option<String>,
        notes: &mut Vec<String>,
    ) -> Result<Hop> {
        scheduler.down = scheduler.machines.iter().map(down).collect();
        let views = match scheduler.measure() {
            Ok(v) => v,
            Err(e) => {
                // Reading the slots needs write access to the load directory (root under the
                // daemon); without it, explain with every slot free and say so.
                notes.push(format!("{e:#}; slots in use are shown as 0"));
                let down = scheduler.down.iter().cloned();
                scheduler
                    .machines
                    .iter()
                    .zip(down)
                    .map(|(m, d)| crate::core::schedule::view(m, 0, d))
                    .collect()
            }
        };
        let decided = scheduler.policies.decide(&request, &views);
        notes.extend(decided.warning.clone());
        let rows = rows(&scheduler, &request, &views, &decided);
        let verdict = verdict(&request, &views, &decided);
        Ok(Hop { scheduler, request, views, decided, rows, verdict })
    }

    /// Whether this hop chose a builder-mode line.
    pub fn chose_builder_mode(&self) -> bool {
        matches!(self.verdict, Verdict::Remote(i) if self.scheduler.machines[i].builder_mode_program().is_some())
    }

    pub fn json(&self) -> serde_json::Value {
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

/// When Nix's own hook finds no line for the build but the real builders behind the
/// builder-mode line could take it, the line does not offer Nix what they can do.
pub fn line_hides(first: &Hop, behind: &Hop) -> Option<String> {
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
pub struct So {
    pub text: String,
    pub buildable: bool,
}

pub fn so(first: &Hop, behind: Option<&Hop>) -> So {
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
pub fn score(v: &MachineView) -> f64 {
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

pub enum Verdict {
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
                let next = crate::core::nix_release::nix_fails_with(s.nix.as_ref(), req, l);
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
