//! Hook mode: what runs when Nix starts the binary as its `build-hook`. Wires the protocol
//! front-end to the core (machines, slots, policy) and reports through Nix's log.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Options;
use crate::log::{Level, Logger};
use crate::nix_release::NixRelease;
use crate::policy::Policies;
use crate::protocol::{Message, Session};
use crate::schedule::{self, Reply, Scheduler};
use crate::trace;
use crate::transfer;

/// Runs one hook session on stdin/stderr. Returns the process exit code.
pub fn run(opts: &Options, logger: &Logger) -> Result<i32> {
    let stdin = std::io::stdin().lock();
    // stdout and stderr are the same pipe to Nix; replies go to stderr as Nix's own hook does.
    let stderr = std::io::stderr();
    let mut session = Session::new(stdin, stderr);

    let block = session.read_settings().context("reading the settings block that Nix sends first")?;
    let settings = crate::settings::load(&block).context("reading Nix's settings")?;
    for w in settings.warnings() {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }

    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let parsed = crate::settings::machines(&settings, &cwd);
    for d in &parsed.diagnostics {
        logger.warn(&format!("nix-wasm-hook: {d}"));
    }
    if parsed.machines.is_empty() {
        // Nix asks nothing more of a hook that declines permanently, so this is the only
        // moment to say why the list is empty when that was not intended.
        session.decline_permanently()?;
        return Ok(0);
    }

    let (policies, load_warning) = Policies::load(opts.policy.as_ref(), opts.limits(), &opts.cache())?;
    if let Some(w) = load_warning {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }
    let mut tracer = opts.trace.as_ref().map(|p| {
        let configured = policies.chosen.as_ref().unwrap_or(&policies.default);
        trace::Writer::new(p.clone(), opts.trace_max_bytes(), trace::PolicyId::of(configured))
            .with_secrets(&parsed.machines)
    });
    let mut record = |time, o: &schedule::Outcome, what| {
        let Some(w) = tracer.as_mut() else { return };
        if let Some(warning) = w.record(time, &o.request, &o.machines, &o.decided, what) {
            logger.warn(&format!("nix-wasm-hook: {warning}"));
        }
    };
    let load = nwh_slots::LoadDir::open(opts.current_load_dir());
    let local = crate::settings::local(&settings, Some(NixRelease::from_block(&block)));
    let mut scheduler = Scheduler::new(parsed.machines, load, policies, local);

    let ssh = opts.ssh_options();
    let health = opts.health();
    // Reasons found by this process; other hooks' findings come from `health`.
    let mut failed_here: Vec<Option<String>> = vec![None; scheduler.machines.len()];
    // Machines this hook cannot build on at all; it does not change while it runs.
    let unsupported: Vec<Option<String>> =
        scheduler.machines.iter().map(|m| transfer::ssh::unsupported(&m.uri)).collect();
    loop {
        let t = match session.next_message()? {
            Message::End => return Ok(0),
            Message::Try(t) => t,
        };
        if let Some(why) = transfer::cannot_finish(&t.drv_path) {
            logger.warn(&format!("nix-wasm-hook: declines {}: {why}", t.drv_path));
            session.decline()?;
            continue;
        }
        // Decided again after a machine turns out to be unreachable, as Nix's hook does.
        let waited = std::time::Instant::now();
        // A wait polls every 40 ms; a trace line per poll would say the same thing 75 times.
        let mut last_waited: Option<Vec<crate::decision::MachineView>> = None;
        let (machine, slot, master) = loop {
            for (i, m) in scheduler.machines.iter().enumerate() {
                scheduler.disabled[i] = unsupported[i]
                    .clone()
                    .or_else(|| failed_here[i].clone())
                    .or_else(|| health.disabled_reason(&m.uri));
            }
            let time = std::time::SystemTime::now();
            let mut outcome = scheduler.decide(&t)?;
            if let Some(w) = &outcome.decided.warning {
                logger.warn(&format!("nix-wasm-hook: {w}"));
            }
            // Taken out so that the outcome stays whole for the trace.
            let reply = std::mem::replace(&mut outcome.reply, Reply::Decline);
            match reply {
                Reply::Decline => {
                    record(time, &outcome, trace::Outcome::Declined);
                    if let Some((level, text)) = &outcome.explanation {
                        let level = match level {
                            schedule::Level::Warn => Level::Warn,
                            schedule::Level::Chatty => Level::Chatty,
                        };
                        logger.msg(level, text);
                    }
                    session.decline()?;
                    break (None, None, None);
                }
                Reply::Postpone if waited.elapsed() < opts.postpone_wait() && a_slot_may_free(&outcome) => {
                    // Nix waits `build-poll-interval` (5 s) after a postpone, even when a slot
                    // frees sooner; waiting here a little, with the scheduler on hold (it has
                    // nothing to build locally, or we would have declined), starts the build
                    // as soon as a slot frees.
                    if last_waited.as_ref() != Some(&outcome.machines) {
                        record(time, &outcome, trace::Outcome::Waited);
                        last_waited = Some(outcome.machines);
                    }
                    std::thread::sleep(POSTPONE_POLL);
                }
                Reply::Postpone => {
                    record(time, &outcome, trace::Outcome::Postponed);
                    if let Some((_, text)) = &outcome.explanation {
                        logger.warn(text);
                    }
                    session.postpone()?;
                    break (None, None, None);
                }
                Reply::Accept { machine, slot } if opts.connect_before_accept() => {
                    let uri = &scheduler.machines[machine].uri;
                    match connect(&scheduler.machines[machine], &ssh, logger) {
                        Ok(m) => {
                            record(time, &outcome, trace::Outcome::Accepted { uri: uri.clone() });
                            health.mark_up(uri);
                            break (Some(machine), Some(slot), Some(m));
                        }
                        Err(e) => {
                            // Said once, here; later hooks skip the builder until its backoff ends.
                            record(time, &outcome, trace::Outcome::ConnectionFailed { uri: uri.clone() });
                            let reason = format!("{e:#}");
                            logger.error(&format!("cannot build on '{uri}': {reason}"));
                            health.mark_down(uri, &reason);
                            failed_here[machine] = Some(format!("unreachable ({reason})"));
                        }
                    }
                }
                Reply::Accept { machine, slot } => {
                    let uri = scheduler.machines[machine].uri.clone();
                    record(time, &outcome, trace::Outcome::Accepted { uri });
                    break (Some(machine), Some(slot), None);
                }
            }
        };
        let (Some(machine), Some(_slot)) = (machine, slot) else { continue };
        // The slot stays held until this process exits, as Nix's own hook does.
        let uri = scheduler.machines[machine].uri.clone();
        session.accept(&uri)?;
        let accepted = session.read_accepted()?;
        let master = match master {
            Some(m) => m,
            None => connect(&scheduler.machines[machine], &ssh, logger)
                .with_context(|| format!("cannot build on '{uri}'"))?,
        };
        let job = transfer::Job {
            uri: &uri,
            drv_path: &t.drv_path,
            accepted: &accepted,
            settings: &settings,
            upload_lock: &scheduler.load.upload_lock_path(&uri),
        };
        return match transfer::build(&master, &job, logger)? {
            transfer::Outcome::Built => Ok(0),
            transfer::Outcome::Failed { message, timed_out } => {
                logger.error(&message);
                Ok(if timed_out { 101 } else { 100 })
            }
        };
    }
}

fn connect(
    m: &nwh_machines::Machine,
    ssh: &transfer::ssh::SshOptions,
    logger: &Logger,
) -> Result<transfer::ssh::Master> {
    let _a =
        logger.start(Level::Talkative, crate::log::Activity::Unknown, &format!("connecting to '{}'", m.uri));
    let target = transfer::ssh::Target::from_machine(m)?;
    transfer::ssh::master(&target, ssh)
}

/// Where the options file is read from when `--config` is not given.
pub fn default_config() -> &'static Path {
    Path::new(crate::config::DEFAULT_CONFIG)
}

const POSTPONE_POLL: std::time::Duration = std::time::Duration::from_millis(40);

/// Some machine the request fits is busy but takes builds at all, so waiting can help.
fn a_slot_may_free(outcome: &schedule::Outcome) -> bool {
    outcome
        .machines
        .iter()
        .any(|m| m.max_jobs > 0 && crate::decision::eligibility(&outcome.request, m).is_ok())
}
