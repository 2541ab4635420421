//! The discrete-event simulation: derivations become ready as their dependencies finish, each
//! ready one is offered to the real policy component as Nix would offer it to the hook, and
//! the chosen machine builds it for its true duration, closure transfers included.
//!
//! Time is kept in whole microseconds so that event order, and therefore the whole run, is
//! exact and the same on every machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use anyhow::Result;
use nwh_machines::Machine;
use sha2::{Digest, Sha256};

use super::workload::Workload;
use crate::core::policy::Policies;
use nwh_decision::{self as decision, Decision, LocalMachine, MachineView, Request};

/// A remote builder: its line in the machines file, and how fast it really is.
#[derive(Clone, Debug)]
pub struct Builder {
    pub machine: Machine,
    /// Speed relative to the workload's durations; the declared speed factor is what the
    /// policy sees, this is what the clock obeys.
    pub true_speed: f64,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub builders: Vec<Builder>,
    /// Bytes per second between the local store and any builder.
    pub bandwidth: f64,
    /// The machine Nix runs on; its `max_jobs` of 0 means everything must go remote.
    pub local: LocalMachine,
    pub local_speed: f64,
}

/// Where a derivation was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Local,
    Remote(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    pub place: Place,
    pub ready_us: u64,
    pub start_us: u64,
    pub end_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub builds: usize,
    /// Slot time taken, transfers included.
    pub busy_us: u64,
    pub transfer_us: u64,
    pub transfer_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub makespan_us: u64,
    /// Per derivation: where and when it was built, or `None` when it was not.
    pub builds: Vec<Option<Build>>,
    /// Derivations that could not be built, with the reason (a dependency's failure counts).
    pub failed: Vec<(usize, String)>,
    /// Derivations still waiting when nothing was left running: nothing could ever take them.
    pub stuck: Vec<usize>,
    pub remote: Vec<Usage>,
    pub local: Usage,
    pub decisions: u64,
    pub postponed: u64,
    /// Decisions where the policy failed and the default decided; the first warning is kept.
    pub fell_back: u64,
    pub first_warning: Option<String>,
    pub fuel: u64,
}

impl Report {
    pub fn built(&self) -> usize {
        self.builds.iter().flatten().count()
    }

    /// Time from ready to started, summed and the largest, over built derivations.
    pub fn waiting_us(&self) -> (u64, u64) {
        self.builds
            .iter()
            .flatten()
            .map(|b| b.start_us - b.ready_us)
            .fold((0, 0), |(s, m), w| (s + w, m.max(w)))
    }

    /// Share of a builder's slot time that was taken, over the makespan.
    pub fn utilisation(&self, builder: usize, max_jobs: u32) -> f64 {
        let capacity = self.makespan_us as f64 * f64::from(max_jobs);
        if capacity == 0.0 {
            0.0
        } else {
            self.remote[builder].busy_us as f64 / capacity
        }
    }
}

pub fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).round() as u64
}

/// A store path for the derivation, so that policies see what the hook would show them.
pub fn drv_path(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    // Nix's base-32 alphabet, so that the path looks like one (and `drv_name` recognises it).
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let hash: String = digest.iter().take(32).map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
    format!("/nix/store/{hash}-{name}.drv")
}

struct Sim<'a> {
    w: &'a Workload,
    c: &'a Cluster,
    policies: &'a Policies,
    drv_paths: Vec<String>,
    now: u64,
    /// The builders as the policy sees them; a builder's `slots_in_use` is the number of
    /// builds running on it. Kept from one decision to the next (only the counts change):
    /// building a thousand views, strings and all, for every decision was a tenth of its cost.
    views: Vec<MachineView>,
    /// Free slots over all builders, so that "no slot free anywhere" is not a walk over them.
    free_slots: u64,
    local_running: u32,
    /// `present[b][d]`: the output of `d` is in builder `b`'s store.
    present: Vec<Vec<bool>>,
    events: BinaryHeap<Reverse<(u64, usize)>>,
    ready_at: Vec<u64>,
    report: Report,
}

/// Runs the workload to the end (or until nothing more can happen).
pub fn run(w: &Workload, c: &Cluster, policies: &Policies) -> Result<Report> {
    let n = w.derivations.len();
    let mut sim = Sim {
        w,
        c,
        policies,
        drv_paths: w.derivations.iter().map(|d| drv_path(&d.name)).collect(),
        now: 0,
        views: c.builders.iter().map(|b| crate::core::schedule::view(&b.machine, 0, None)).collect(),
        free_slots: c.builders.iter().map(|b| u64::from(b.machine.max_jobs)).sum(),
        local_running: 0,
        present: vec![vec![false; n]; c.builders.len()],
        events: BinaryHeap::new(),
        ready_at: vec![0; n],
        report: Report {
            makespan_us: 0,
            builds: vec![None; n],
            failed: Vec::new(),
            stuck: Vec::new(),
            remote: vec![Usage::default(); c.builders.len()],
            local: Usage::default(),
            decisions: 0,
            postponed: 0,
            fell_back: 0,
            first_warning: None,
            fuel: 0,
        },
    };
    let mut dependents = vec![Vec::new(); n];
    let mut missing: Vec<usize> = w.derivations.iter().map(|d| d.deps.len()).collect();
    for (i, d) in w.derivations.iter().enumerate() {
        for &j in &d.deps {
            dependents[j].push(i);
        }
    }
    let mut failed = vec![false; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    loop {
        ready = sim.dispatch(ready, &dependents, &mut failed)?;
        let Some(Reverse((t, _))) = sim.events.peek().copied() else { break };
        sim.now = t;
        while let Some(&Reverse((t, d))) = sim.events.peek() {
            if t != sim.now {
                break;
            }
            sim.events.pop();
            match sim.report.builds[d].as_ref().map(|b| b.place) {
                Some(Place::Remote(b)) => {
                    sim.views[b].slots_in_use -= 1;
                    sim.free_slots += 1;
                }
                _ => sim.local_running -= 1,
            }
            for &k in &dependents[d] {
                missing[k] -= 1;
                if missing[k] == 0 && !failed[k] {
                    sim.ready_at[k] = sim.now;
                    ready.push_back(k);
                }
            }
        }
    }
    sim.report.makespan_us = sim.now;
    sim.report.stuck = ready.into_iter().collect();
    Ok(sim.report)
}

impl Sim<'_> {
    /// Offers every ready derivation, in the order it became ready, and returns those that
    /// must wait. While no slot is free anywhere (remote or local) nothing is asked: a policy
    /// could then only postpone, or decline into a wait for a local slot.
    fn dispatch(
        &mut self,
        ready: VecDeque<usize>,
        dependents: &[Vec<usize>],
        failed: &mut [bool],
    ) -> Result<VecDeque<usize>> {
        let mut waiting = VecDeque::with_capacity(ready.len());
        for d in ready {
            let am_willing = self.local_running < self.c.local.max_jobs;
            if !am_willing && self.free_slots == 0 {
                waiting.push_back(d);
                continue;
            }
            let drv = &self.w.derivations[d];
            let request = Request {
                drv_path: self.drv_paths[d].clone(),
                system: drv.system.clone(),
                required_features: drv.features.clone(),
                am_willing,
                could_build_locally: self.c.local.could_build(&drv.system, &drv.features),
                local: Default::default(),
            };
            let decided = self.policies.decide(&request, &self.views);
            self.report.decisions += 1;
            self.report.fuel += decided.fuel_used;
            if let Some(w) = decided.warning {
                self.report.fell_back += 1;
                self.report.first_warning.get_or_insert(w);
            }
            match decided.answer.decision {
                Decision::Try(ranking) => self.start(d, Place::Remote(ranking[0] as usize)),
                Decision::Postpone => {
                    self.report.postponed += 1;
                    waiting.push_back(d);
                }
                // Nix builds it itself when it can, waiting for a local slot if need be.
                Decision::Decline if request.could_build_locally => {
                    if am_willing {
                        self.start(d, Place::Local);
                    } else {
                        waiting.push_back(d);
                    }
                }
                Decision::Decline => {
                    // The policy's reason for each machine, looked up once: `reason_for` per
                    // machine would cost n² for n machines, for every derivation declined.
                    let mut given: Vec<Option<&str>> = vec![None; self.views.len()];
                    for (m, reason) in &decided.answer.rejected {
                        if let Some(slot @ None) = given.get_mut(*m as usize) {
                            *slot = Some(reason);
                        }
                    }
                    let why: Vec<String> = self
                        .views
                        .iter()
                        .zip(given)
                        .map(|(v, given)| format!("{}: {}", v.uri, decision::why_not(&request, v, given)))
                        .collect();
                    let reason = if why.is_empty() {
                        "declined, and no machine is listed".to_string()
                    } else {
                        format!("declined, and this machine cannot build it either ({})", why.join("; "))
                    };
                    self.fail(d, reason, dependents, failed);
                }
            }
        }
        Ok(waiting)
    }

    fn start(&mut self, d: usize, place: Place) {
        let drv = &self.w.derivations[d];
        let end = match place {
            Place::Local => {
                self.local_running += 1;
                let took = micros(drv.seconds / self.c.local_speed);
                self.report.local.builds += 1;
                self.report.local.busy_us += took;
                self.now + took
            }
            Place::Remote(b) => {
                // The policy's answer was validated: the builder had a free slot.
                self.views[b].slots_in_use += 1;
                self.free_slots -= 1;
                // The inputs' closure goes out first (what the builder lacks), the output comes
                // back after: the local store always ends up with every output.
                let mut bytes_in = 0;
                let mut stack: Vec<usize> = drv.deps.clone();
                while let Some(j) = stack.pop() {
                    if !self.present[b][j] {
                        self.present[b][j] = true;
                        bytes_in += self.w.derivations[j].output_bytes;
                        stack.extend(&self.w.derivations[j].deps);
                    }
                }
                self.present[b][d] = true;
                let moved = bytes_in + drv.output_bytes;
                let transfer = micros(moved as f64 / self.c.bandwidth);
                let took = transfer + micros(drv.seconds / self.c.builders[b].true_speed);
                let u = &mut self.report.remote[b];
                u.builds += 1;
                u.busy_us += took;
                u.transfer_us += transfer;
                u.transfer_bytes += moved;
                self.now + took
            }
        };
        self.report.builds[d] =
            Some(Build { place, ready_us: self.ready_at[d], start_us: self.now, end_us: end });
        self.events.push(Reverse((end, d)));
    }

    fn fail(&mut self, d: usize, reason: String, dependents: &[Vec<usize>], failed: &mut [bool]) {
        failed[d] = true;
        self.report.failed.push((d, reason));
        let name = &self.w.derivations[d].name;
        let mut stack = dependents[d].clone();
        while let Some(k) = stack.pop() {
            if !failed[k] {
                failed[k] = true;
                self.report.failed.push((k, format!("its dependency `{name}` was not built")));
                stack.extend(&dependents[k]);
            }
        }
    }
}
