//! Hook mode: what runs when Nix starts the binary as its `build-hook`. A thin front-end: it
//! reads Nix's questions (`protocol`), asks the core where each derivation goes (`dispatch`),
//! answers, and runs the accepted build (`transfer`), reporting through Nix's log.

use anyhow::{Context, Result};

use crate::dispatch::{Dispatcher, Placement, Wait};
use crate::log::{Level, Logger};
use crate::nix_release::NixRelease;
use crate::policy::Policies;
use crate::protocol::{Message, Session};
use crate::schedule;
use crate::timeline;
use crate::transfer;
use nwh_options::Options;

/// Nix's side of the conversation: its questions on stdin, the replies on stderr.
type HookSession = Session<std::io::StdinLock<'static>, std::io::Stderr>;

/// Runs one hook session on stdin/stderr. Returns the process exit code.
pub fn run(opts: &Options, logger: &Logger) -> Result<i32> {
    let stdin = std::io::stdin().lock();
    // stdout and stderr are the same pipe to Nix; replies go to stderr as Nix's own hook does.
    let stderr = std::io::stderr();
    let mut session = Session::new(stdin, stderr);

    let block = session.read_settings().context("reading the settings block that Nix sends first")?;
    let settings = crate::settings::load(&block).context("reading Nix's settings")?;
    timeline::mark("settings");
    for w in settings.warnings() {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }

    let Some(mut dispatcher) = dispatcher(opts, &block, &settings, logger)? else {
        // Nix asks nothing more of a hook that declines permanently, so this is the only
        // moment to say why the list is empty when that was not intended.
        session.decline_permanently()?;
        return Ok(0);
    };
    loop {
        let t = match session.next_message()? {
            Message::End => return Ok(0),
            Message::Try(t) => t,
        };
        if let Some(placed) = answer(&mut session, &mut dispatcher, &t, opts, logger)? {
            return build(&mut session, &dispatcher, placed, &t.drv_path, &settings, logger);
        }
    }
}

/// The core over the machines Nix's settings name, once their problems are told; none when
/// there are no machines.
fn dispatcher(
    opts: &Options,
    block: &[(String, String)],
    settings: &nwh_nixconf::Settings,
    logger: &Logger,
) -> Result<Option<Dispatcher>> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let parsed = crate::settings::machines(settings, &cwd);
    for d in &parsed.diagnostics {
        logger.warn(&format!("nix-wasm-hook: {d}"));
    }
    if parsed.machines.is_empty() {
        return Ok(None);
    }

    let (policies, load_warning) = Policies::configured(opts.policy.as_ref(), opts)?;
    if let Some(w) = load_warning {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }
    timeline::mark("policy");
    let local = crate::settings::local(settings);
    let nix = Some(NixRelease::from_block(block));
    let dispatcher = Dispatcher::new(opts, parsed.machines, policies, local, nix);
    Ok(Some(dispatcher.with_master_store(settings.get("store"))))
}

/// Places `t` and tells Nix: the placement when the build goes to a builder, none when Nix
/// was told to decline or postpone it.
fn answer(
    session: &mut HookSession,
    dispatcher: &mut Dispatcher,
    t: &schedule::Try,
    opts: &Options,
    logger: &Logger,
) -> Result<Option<Box<crate::dispatch::Placed>>> {
    timeline::derivation(&t.drv_path);
    if let Some(why) = transfer::cannot_finish(&t.drv_path) {
        logger.warn(&format!("nix-wasm-hook: declines {}: {why}", t.drv_path));
        session.decline()?;
        return Ok(None);
    }
    let placement = dispatcher.place(t, Wait::UpTo(opts.postpone_wait()), logger).unwrap_or_else(|e| {
        // Nix gets an answer whatever failed here (reading the slots, say): without one it
        // fails the build with "unexpected EOF" and nothing else.
        let why = format!("nix-wasm-hook: declines {}: {e:#}", t.drv_path);
        Placement::Declined { explanation: Some((Level::Warn, why)) }
    });
    match placement {
        Placement::Declined { explanation } => {
            if let Some((level, text)) = &explanation {
                logger.msg(*level, text);
            }
            session.decline()?;
            Ok(None)
        }
        Placement::Postponed { explanation } => {
            if let Some((_, text)) = &explanation {
                logger.warn(text);
            }
            session.postpone()?;
            Ok(None)
        }
        Placement::Placed(placed) => Ok(Some(placed)),
    }
}

/// Accepts the placed build, reads what Nix sends with it and builds it on the builder.
/// Returns the process exit code.
fn build(
    session: &mut HookSession,
    dispatcher: &Dispatcher,
    mut placed: Box<crate::dispatch::Placed>,
    drv_path: &str,
    settings: &nwh_nixconf::Settings,
    logger: &Logger,
) -> Result<i32> {
    // The slot stays held until the builder is done with the build (Nix's own hook holds
    // it until it exits, also while it registers the outputs locally).
    session.accept(&placed.uri)?;
    timeline::mark("accepted");
    let accepted = session.read_accepted()?;
    timeline::mark("inputs");
    let master = dispatcher
        .master(&mut placed, logger)
        .with_context(|| format!("cannot build on '{}'", placed.uri))?;
    timeline::mark("connected");
    let placed = *placed;
    let job = transfer::Job {
        uri: &placed.uri,
        drv_path,
        inputs: &accepted.inputs,
        settings,
        upload_lock: &dispatcher.scheduler.load.upload_lock_path(&placed.uri),
    };
    let built = transfer::build(&master, &job, placed.slot, crate::fds::build_log()?, logger);
    match built.map_err(|e| master.with_loss(e))? {
        transfer::Finished::Built => Ok(0),
        transfer::Finished::Failed { message, timed_out } => {
            logger.error(&message);
            Ok(if timed_out { 101 } else { 100 })
        }
    }
}
