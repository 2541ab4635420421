//! The decision for one request: measure each machine's load under Nix's main lock, ask the
//! policy with the lock released, check its answer, and take the slot under the lock again.
//! Knows nothing of stdin, stderr or fd 4, so another front-end (Lix's RPC, a builder store)
//! can reuse it unchanged.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use nwh_machines::Machine;
use nwh_slots::{LoadDir, SlotLock};

use crate::core::log::Level;
use crate::core::nix_release::NixRelease;
use crate::core::policy::{Decided, Policies};
use nwh_decision::{self as decision, Decision, LocalMachine, LocalView, MachineView, Request};

/// Where one derivation goes: the one result, from the policy's answer to the transfer.
pub enum Placement {
    /// No machine will build it. The explanation says why each machine was not chosen, at
    /// Nix's level for it: a warning when Nix is left with no way to build, chatty otherwise.
    Declined { explanation: Option<(Level, String)> },
    /// Machines fit but none is free (and waiting longer was not asked for); explained when
    /// the wait would be endless.
    Postponed { explanation: Option<(Level, String)> },
    /// Boxed: a held slot and an SSH master are much larger than an explanation.
    Placed(Box<Placed>),
}

/// A builder chosen for one build, its slot held until this is dropped.
pub struct Placed {
    pub machine: usize,
    pub uri: String,
    pub slot: SlotLock,
    /// The SSH master, when the connection was made before answering.
    pub conn: Option<crate::transfer::ssh::Connection>,
}

/// The scheduler's decision on one request: where it goes, what that was decided on, and the
/// policy's answer (what the trace records).
pub struct Scheduled {
    pub placement: Placement,
    pub request: Request,
    pub machines: Vec<MachineView>,
    pub decided: Decided,
}

pub struct Scheduler {
    pub machines: Vec<Machine>,
    /// Why a machine is not to be used now (this process or another hook failed to reach
    /// it); Nix's `enabled = false`, with the reason kept for the user.
    pub down: Vec<Option<String>>,
    pub load: LoadDir,
    pub policies: Policies,
    pub local: LocalMachine,
    /// The parent's release, for quoting its words; `None` when it cannot be told.
    pub nix: Option<NixRelease>,
    /// The local machine as a candidate: its speed factor, and the directory whose file
    /// system's free space it reports (the local store's, on this machine's disk).
    pub local_speed: f64,
    pub local_store_dir: std::path::PathBuf,
}

impl Scheduler {
    pub fn new(
        machines: Vec<Machine>,
        load: LoadDir,
        policies: Policies,
        local: LocalMachine,
        nix: Option<NixRelease>,
    ) -> Self {
        let down = vec![None; machines.len()];
        let (local_speed, local_store_dir) = (1.0, "/nix/store".into());
        Scheduler { machines, down, load, policies, local, nix, local_speed, local_store_dir }
    }

    /// `offer` (Nix's `try`, which does not say whether it could build locally) with what
    /// the parent's settings say of that, and the local machine as a candidate: measured now
    /// when the policy's contract has facts.
    pub fn request(&self, offer: &Request) -> Request {
        let facts = if self.policies.active().sees_facts() {
            crate::core::facts::local::measure(&self.local_store_dir)
        } else {
            Default::default()
        };
        Request {
            could_build_locally: self.local.could_build(&offer.system, &offer.required_features),
            local: LocalView { max_jobs: self.local.max_jobs, speed_factor: self.local_speed, facts },
            ..offer.clone()
        }
    }

    /// Every machine as the policy would see it now, without taking a slot (for `explain`).
    pub fn measure(&self) -> Result<Vec<MachineView>> {
        Ok(self.scan()?.0)
    }

    /// The machines' views and, per machine, a free slot's lock (held until dropped), measured
    /// under the main lock, which is returned held.
    fn scan(&self) -> Result<(Vec<MachineView>, Vec<Option<SlotLock>>, nwh_slots::MainLock)> {
        // Held while measuring and while claiming, as Nix holds it while it measures and
        // chooses, so that concurrent hooks (ours and Nix's own) never take the same last free
        // slot; not while the policy decides (`decide`).
        let main = self.load.lock_main().context("taking the main lock of the current-load directory")?;
        let mut free: Vec<Option<SlotLock>> = Vec::with_capacity(self.machines.len());
        let mut views = Vec::with_capacity(self.machines.len());
        for (i, m) in self.machines.iter().enumerate() {
            let scan = self
                .load
                .scan(&main, &m.uri, m.max_jobs)
                .with_context(|| format!("reading the build slots of {}", m.uri))?;
            views.push(view(m, scan.in_use, self.down[i].clone()));
            free.push(scan.free);
        }
        Ok((views, free, main))
    }

    /// The policy is asked without the main lock: the lock is shared with Nix's own hook, and
    /// a policy may take up to its deadline. The lock is taken again to claim a slot on the
    /// first machine of the answer's ranking that still has one; when other hooks took them
    /// all meanwhile, the policy is asked again on the new loads, [`MAX_ASKS`] times at most.
    pub fn decide(&mut self, offer: &Request) -> Result<Scheduled> {
        let request = self.request(offer);
        let mut views = self.measure()?;
        let mut asks = 1;
        loop {
            let decided = self.policies.decide(&request, &views);
            let (now, mut free, main) = self.scan()?;
            let placement = match &decided.answer.decision {
                Decision::Try(ranking) => match self.claim(ranking, &mut free) {
                    Some(placed) => Placement::Placed(Box::new(placed)),
                    None if asks < MAX_ASKS => {
                        drop(main);
                        views = now;
                        asks += 1;
                        continue;
                    }
                    // Machines fit but are busy, which is Nix's postpone; it asks again later.
                    None => self.postponed(&request, &views),
                },
                Decision::Decline => Placement::Declined {
                    explanation: Some(self.explain_decline(&request, &views, &decided)),
                },
                Decision::Postpone => self.postponed(&request, &views),
            };
            drop(free);
            drop(main);
            return Ok(Scheduled { placement, request, machines: views, decided });
        }
    }

    fn postponed(&self, request: &Request, views: &[MachineView]) -> Placement {
        Placement::Postponed { explanation: self.explain_endless_wait(request, views) }
    }

    /// The slot of the first ranked machine that has a free one now, touched as Nix does.
    /// Validation checked the ranking against the loads the policy saw; since then another
    /// hook may have taken those slots, never more than that (machines and their rules do not
    /// change while one request is decided).
    fn claim(&self, ranking: &[u32], free: &mut [Option<SlotLock>]) -> Option<Placed> {
        let (machine, slot) = ranking.iter().find_map(|&i| Some((i as usize, free[i as usize].take()?)))?;
        // The mtime only records when a machine was last chosen; a failure changes nothing.
        let _ = slot.touch();
        Some(Placed { machine, uri: self.machines[machine].uri.clone(), slot, conn: None })
    }

    fn explain_decline(&self, req: &Request, views: &[MachineView], decided: &Decided) -> (Level, String) {
        let level = if req.could_build_locally { Level::Chatty } else { Level::Warn };
        let mut s = String::new();
        let features = if req.required_features.is_empty() {
            "no required features".to_string()
        } else {
            format!("required features {}", req.required_features.join(", "))
        };
        let _ = write!(
            s,
            "nix-wasm-hook: no remote machine will build {} (system {}, {features})",
            req.drv_path, req.system
        );
        if views.is_empty() {
            s.push_str(": the machines list is empty");
        }
        for (i, (m, v)) in self.machines.iter().zip(views).enumerate() {
            let why = decision::why_not(req, v, decided.answer.reason_for(i as u32));
            let _ = write!(s, "\n  {} ({}:{}): {why}", m.uri, m.origin.location, m.origin.line);
        }
        for hint in crate::core::hints::unknown_words(req, views, &self.local) {
            let _ = write!(s, "\n  hint: {hint}");
        }
        if !req.could_build_locally {
            let _ = write!(
                s,
                "\n  and this machine cannot build it either (max-jobs {}, system {}{})",
                self.local.max_jobs,
                self.local.system,
                if self.local.extra_platforms.is_empty() {
                    String::new()
                } else {
                    format!(", extra-platforms {}", self.local.extra_platforms.join(" "))
                }
            );
            if let Some(next) = crate::core::nix_release::nix_fails_with(self.nix.as_ref(), req, &self.local)
            {
                let _ = write!(s, "\n  so {next}");
            }
        }
        (level, s)
    }
}

impl Scheduler {
    /// A postpone is an endless wait when every machine that fits has max-jobs 0 (Nix's own
    /// rule postpones then, and nothing ever frees): say so, with the lines to fix.
    fn explain_endless_wait(&self, req: &Request, views: &[MachineView]) -> Option<(Level, String)> {
        let fitting: Vec<usize> =
            (0..views.len()).filter(|&i| decision::eligibility(req, &views[i]).is_ok()).collect();
        if req.could_build_locally || fitting.is_empty() || fitting.iter().any(|&i| views[i].max_jobs > 0) {
            return None;
        }
        let mut s = format!(
            "nix-wasm-hook: {} waits and will wait forever: the only machines that can build it \
             (system {}) have max-jobs 0, so they never take a build",
            req.drv_path, req.system
        );
        for &i in &fitting {
            let m = &self.machines[i];
            let _ = write!(s, "\n  {} ({}:{}): max-jobs is 0", m.uri, m.origin.location, m.origin.line);
        }
        s.push_str("\n  fix: set column 4 (max-jobs) of those lines to 1 or more");
        Some((Level::Warn, s))
    }
}

/// How many times one request's policy may be asked when its ranked machines fill up before
/// their slot is claimed: each ask may take the policy's deadline.
pub const MAX_ASKS: usize = 3;

/// A machine as the policy sees it.
pub fn view(m: &Machine, in_use: u32, down_reason: Option<String>) -> MachineView {
    MachineView {
        uri: m.uri.clone(),
        systems: m.systems.clone(),
        max_jobs: m.max_jobs,
        speed_factor: m.speed_factor,
        supported_features: m.supported_features.iter().cloned().collect(),
        mandatory_features: m.mandatory_features.iter().cloned().collect(),
        slots_in_use: in_use,
        enabled: down_reason.is_none(),
        down_reason,
        facts: Default::default(),
    }
}
