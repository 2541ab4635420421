//! The core a front-end drives: for one derivation, choose a builder and hold its slot —
//! asking the policy, skipping builders that cannot be reached (and remembering them across
//! processes), waiting for a slot when one may free, recording each decision in the trace.
//! The hook front-end (`hook`) answers Nix with what it returns; the builder front-end runs
//! the build on it directly. Neither knows how a machine was chosen.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use nwh_machines::Machine;

use crate::core::log::{Activity, Level, Logger};
use crate::core::nix_release::NixRelease;
use crate::core::policy::Policies;
use crate::core::schedule::{self, Scheduler};
pub use crate::core::schedule::{Placed, Placement};
use crate::core::trace;
use crate::transfer;
use crate::transfer::health::Health;
use crate::transfer::ssh::{Connection, SshOptions};
use nwh_decision::{LocalMachine, MachineView, Request};
use nwh_options::Options;

/// How long a front-end lets a build wait for a slot before it gives up with `Postponed`.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    UpTo(Duration),
    Forever,
}

pub struct Dispatcher {
    scheduler: Scheduler,
    health: Health,
    ssh: SshOptions,
    connect_first: bool,
    tracer: Option<trace::Writer>,
    /// Reasons found by this process; other processes' findings come from `health`.
    down_here: Vec<Option<String>>,
    /// Machines this hook cannot build on at all; it does not change while it runs.
    unsupported: Vec<Option<String>>,
}

impl Dispatcher {
    pub fn new(
        opts: &Options,
        local_store: &transfer::local_store::LocalStore,
        machines: Vec<Machine>,
        policies: Policies,
        local: LocalMachine,
        nix: Option<NixRelease>,
    ) -> Dispatcher {
        let tracer = opts.trace.as_ref().map(|p| {
            let configured = policies.chosen.as_ref().unwrap_or(&policies.default);
            trace::Writer::new(p.clone(), opts.trace_max_bytes(), configured.id()).with_secrets(&machines)
        });
        let unsupported = machines.iter().map(|m| transfer::target::unsupported(m, local_store)).collect();
        let down_here = vec![None; machines.len()];
        let load = nwh_slots::LoadDir::open(opts.current_load_dir(&local_store.state_dir));
        let mut scheduler = Scheduler::new(machines, load, policies, local, nix);
        scheduler.local_speed = opts.local_speed_factor();
        scheduler.local_store_dir = local_store.real_dir.clone();
        Dispatcher {
            scheduler,
            health: Health::from(opts),
            ssh: SshOptions::from(opts),
            connect_first: opts.connect_before_accept(),
            tracer,
            down_here,
            unsupported,
        }
    }

    pub fn machines(&self) -> &[Machine] {
        &self.scheduler.machines
    }

    /// The lock Nix's hook takes around copying inputs to `uri`, shared with it.
    pub fn upload_lock(&self, uri: &str) -> std::path::PathBuf {
        self.scheduler.load.upload_lock_path(uri)
    }

    /// The parent's release, when it can be told.
    pub fn nix(&self) -> Option<&NixRelease> {
        self.scheduler.nix.as_ref()
    }

    /// Chooses a builder for `offer` (Nix's `try`). A builder that cannot be reached is
    /// skipped and the choice made again, as Nix's hook does; when every fitting builder is
    /// busy, waits as `wait` allows for one to free.
    pub fn place(&mut self, offer: &Request, wait: Wait, logger: &Logger) -> Result<Placement> {
        let mut waiting = Waiting { wait, since: Instant::now(), last_waited: None, turn: None };
        loop {
            self.disable_unusable();
            let time = SystemTime::now();
            let mut scheduled = self.scheduler.decide(offer)?;
            crate::core::timeline::mark("decided");
            if let Some(w) = &scheduled.decided.warning {
                logger.warn(&format!("nix-wasm-hook: {w}"));
            }
            // Taken out so that the decision stays whole for the trace.
            let placement =
                std::mem::replace(&mut scheduled.placement, Placement::Declined { explanation: None });
            match placement {
                Placement::Declined { .. } => {
                    self.record(time, &scheduled, nwh_trace::Outcome::Declined, logger);
                    return Ok(placement);
                }
                Placement::Postponed { .. } => {
                    if !self.wait_for_a_slot(&mut waiting, time, &scheduled, logger)? {
                        self.record(time, &scheduled, nwh_trace::Outcome::Postponed, logger);
                        return Ok(placement);
                    }
                }
                Placement::Placed(placed) => {
                    if let Some(placed) = self.accept(*placed, time, &scheduled, logger) {
                        return Ok(Placement::Placed(Box::new(placed)));
                    }
                }
            }
        }
    }

    /// Keeps out of the next choice the machines this hook cannot build on, those found
    /// unreachable here, and those other processes found unreachable.
    fn disable_unusable(&mut self) {
        for (i, m) in self.scheduler.machines.iter().enumerate() {
            self.scheduler.down[i] = self.unsupported[i]
                .clone()
                .or_else(|| self.down_here[i].clone())
                .or_else(|| self.health.down_reason_of(&m.uri));
        }
    }

    /// Waits, as `waiting` still allows, for a slot to free on a machine the postponed request
    /// fits; false when it may not wait (or no slot can free for it) and the postpone stands.
    fn wait_for_a_slot(
        &mut self,
        waiting: &mut Waiting,
        time: SystemTime,
        scheduled: &schedule::Scheduled,
        logger: &Logger,
    ) -> Result<bool> {
        let deadline = match waiting.wait {
            Wait::Forever => None,
            // Nix waits `build-poll-interval` (5 s) after a postpone, even when a slot
            // frees sooner; waiting here starts the build as soon as one frees.
            Wait::UpTo(limit) if waiting.since.elapsed() < limit => Some(waiting.since + limit),
            Wait::UpTo(_) => return Ok(false),
        };
        let fitting = fitting(scheduled);
        if fitting.is_empty() {
            return Ok(false);
        }
        if waiting.last_waited.as_ref() != Some(&scheduled.machines) {
            self.record(time, scheduled, nwh_trace::Outcome::Waited, logger);
            waiting.last_waited = Some(scheduled.machines.clone());
        }
        let load = &self.scheduler.load;
        match deadline {
            // In turn, without polling: first the waiters that came before, then a
            // build ending on one of the machines; then the policy chooses again.
            None => match &waiting.turn {
                None => waiting.turn = Some(load.wait_turn(&queue_name(&fitting))?),
                Some(_) => load.wait_for_a_free_slot(&fitting)?,
            },
            // Woken when a build ends; at the deadline the policy is asked once more,
            // and its postpone then goes to Nix.
            Some(deadline) => {
                load.wait_for_a_free_slot_until(&fitting, Some(deadline))?;
            }
        }
        Ok(true)
    }

    /// The build placed, connected first when so configured; none when the connection
    /// failed, and the builder is then skipped.
    fn accept(
        &mut self,
        mut placed: Placed,
        time: SystemTime,
        scheduled: &schedule::Scheduled,
        logger: &Logger,
    ) -> Option<Placed> {
        let (machine, uri) = (placed.machine, placed.uri.clone());
        if !self.connect_first {
            self.record(time, scheduled, nwh_trace::Outcome::Accepted { uri }, logger);
            return Some(placed);
        }
        match self.connect(machine, logger) {
            Ok(conn) => {
                self.record(time, scheduled, nwh_trace::Outcome::Accepted { uri: uri.clone() }, logger);
                self.health.mark_up(&uri);
                placed.conn = Some(conn);
                Some(placed)
            }
            Err(e) => {
                // Said once, here; later processes skip the builder until its
                // backoff ends.
                self.record(
                    time,
                    scheduled,
                    nwh_trace::Outcome::ConnectionFailed { uri: uri.clone() },
                    logger,
                );
                let reason = format!("{e:#}");
                logger.error(&format!("cannot build on '{uri}': {reason}"));
                self.health.mark_down(&uri, &reason);
                self.down_here[machine] = Some(format!("unreachable ({reason})"));
                None
            }
        }
    }

    /// The SSH master of a placed build: the one made before answering, or a new one.
    pub fn connection(&self, placed: &mut Placed, logger: &Logger) -> Result<Connection> {
        match placed.conn.take() {
            Some(m) => Ok(m),
            None => self.connect(placed.machine, logger),
        }
    }

    fn connect(&self, machine: usize, logger: &Logger) -> Result<Connection> {
        let m = &self.scheduler.machines[machine];
        let _a = logger.start(Level::Talkative, Activity::Unknown, &format!("connecting to '{}'", m.uri));
        let target = transfer::target::Target::from_machine(m)?;
        transfer::ssh::connect(&target, &self.ssh)
    }

    fn record(
        &mut self,
        time: SystemTime,
        o: &schedule::Scheduled,
        what: nwh_trace::Outcome,
        logger: &Logger,
    ) {
        let Some(w) = self.tracer.as_mut() else { return };
        if let Some(warning) = w.record(time, &o.request, &o.machines, &o.decided, what) {
            logger.warn(&format!("nix-wasm-hook: {warning}"));
        }
    }
}

/// Where a wait for a slot stands, across the choices made again while it lasts.
struct Waiting {
    wait: Wait,
    since: Instant,
    /// A wait looks again whenever a build ends; a trace line per look may say the same thing.
    last_waited: Option<Vec<MachineView>>,
    /// Builder mode's place in the queue for the machines that fit; the next waiter moves
    /// up when `place` returns, holding a slot or not.
    turn: Option<nwh_slots::Turn>,
}

/// The machines a waiting request fits that take builds at all, with their max-jobs: when
/// there are none, no slot can free for it and waiting is pointless.
fn fitting(scheduled: &schedule::Scheduled) -> Vec<(String, u32)> {
    scheduled
        .machines
        .iter()
        .filter(|m| m.max_jobs > 0 && nwh_decision::eligibility(&scheduled.request, m).is_ok())
        .map(|m| (m.uri.clone(), m.max_jobs))
        .collect()
}

/// One queue per set of machines: requests that wait for the same machines are served in
/// order of arrival, and one that waits for others is not held up behind them.
fn queue_name(fitting: &[(String, u32)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (uri, _) in fitting {
        h.update(uri.as_bytes());
        h.update([0]);
    }
    nwh_nar::hash::base16_encode(&h.finalize()[..8])
}
