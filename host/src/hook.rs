//! Hook mode: what runs when Nix starts the binary as its `build-hook`. Wires the protocol
//! front-end to the core (machines, slots, policy) and reports through Nix's log.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Options;
use crate::log::{Level, Logger};
use crate::policy::Policies;
use crate::protocol::{Message, Session};
use crate::schedule::{self, Local, Reply, Scheduler};

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
    let load = nwh_slots::LoadDir::open(opts.current_load_dir());
    let local = Local {
        max_jobs: settings.max_jobs(),
        system: settings.system().to_string(),
        extra_platforms: settings.extra_platforms(),
        features: settings.system_features(),
    };
    let mut scheduler = Scheduler::new(parsed.machines, load, policies, local);

    loop {
        let t = match session.next_message()? {
            Message::End => return Ok(0),
            Message::Try(t) => t,
        };
        let outcome = scheduler.decide(&t)?;
        if let Some(w) = &outcome.decided.warning {
            logger.warn(&format!("nix-wasm-hook: {w}"));
        }
        match outcome.reply {
            Reply::Decline => {
                if let Some((level, text)) = &outcome.explanation {
                    let level = match level {
                        schedule::Level::Warn => Level::Warn,
                        schedule::Level::Chatty => Level::Chatty,
                    };
                    logger.msg(level, text);
                }
                session.decline()?
            }
            Reply::Postpone => session.postpone()?,
            Reply::Accept { machine, slot } => {
                let uri = scheduler.machines[machine].uri.clone();
                session.accept(&uri)?;
                let accepted = session.read_accepted()?;
                // The slot stays held until this process exits, as Nix's own hook does.
                let _slot = slot;
                return crate::remote::build(&uri, &t.drv_path, &accepted, logger);
            }
        }
    }
}

/// Where the options file is read from when `--config` is not given.
pub fn default_config() -> &'static Path {
    Path::new(crate::config::DEFAULT_CONFIG)
}
