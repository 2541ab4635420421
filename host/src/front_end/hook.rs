//! Hook mode: what runs when Nix starts the binary as its `build-hook`. A thin front-end: it
//! reads Nix's questions (`protocol`), asks the core where each derivation goes (`dispatch`),
//! answers, and runs the accepted build (`transfer`), reporting through Nix's log.

use anyhow::{Context, Result};

use crate::core::dispatch::{Dispatcher, Placement, Wait};
use crate::core::log::{Level, Logger};
use crate::core::nix_release::NixRelease;
use crate::core::policy::Policies;
use crate::core::timeline;
use crate::front_end::protocol::{Conversation, Message};
use crate::transfer;
use nwh_decision::Request;
use nwh_options::Options;

/// Nix's side of the conversation: its questions on stdin, the replies on stderr.
type WithParent = Conversation<std::io::StdinLock<'static>, std::io::Stderr>;

/// Runs one conversation with the parent on stdin/stderr. Returns the process exit code.
pub fn run(opts: &Options, logger: &Logger) -> Result<i32> {
    let stdin = std::io::stdin().lock();
    // stdout and stderr are the same pipe to Nix; replies go to stderr as Nix's own hook does.
    let stderr = std::io::stderr();
    let mut parent = Conversation::new(stdin, stderr);

    let block = parent.read_settings().context("reading the settings block that Nix sends first")?;
    let settings = crate::core::settings::load(&block).context("reading Nix's settings")?;
    timeline::mark("settings");
    for w in settings.warnings() {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }

    let store = match crate::core::settings::local_store(&settings, None) {
        Ok(store) => store,
        Err(e) => {
            // Nothing could be brought back: every build is Nix's to do or to refuse.
            logger.warn(&format!("nix-wasm-hook: builds nothing remotely: {e:#}"));
            parent.decline_permanently()?;
            return Ok(0);
        }
    };
    transfer::local_store::set(store.clone());
    let Some(mut dispatcher) = dispatcher(opts, &block, &settings, &store, logger)? else {
        // Nix asks nothing more of a hook that declines permanently, so this is the only
        // moment to say why the list is empty when that was not intended.
        parent.decline_permanently()?;
        return Ok(0);
    };
    loop {
        let t = match parent.next_message()? {
            Message::End => return Ok(0),
            Message::Try(t) => t,
        };
        // Read once, for what decides the answer and for the build.
        let drv = transfer::read_derivation(&t.drv_path);
        if let Some(placed) = answer(&mut parent, &mut dispatcher, &t, drv.as_ref().ok(), opts, logger)? {
            return build(&mut parent, &dispatcher, placed, &t, drv, &settings, logger);
        }
    }
}

/// The core over the machines Nix's settings name, once their problems are told; none when
/// there are no machines.
fn dispatcher(
    opts: &Options,
    block: &[(String, String)],
    settings: &nwh_nixconf::Settings,
    store: &transfer::local_store::LocalStore,
    logger: &Logger,
) -> Result<Option<Dispatcher>> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let parsed = crate::core::settings::machines(settings, &cwd);
    // Nix's default `@/etc/nix/machines` absent is how a machine without builders looks:
    // Nix says nothing of it, and neither does its hook.
    let unnamed = crate::core::settings::absent_default_machines_file(settings);
    for d in &parsed.diagnostics {
        if !unnamed.as_deref().is_some_and(|file| d.is_missing_file(file)) {
            logger.warn(&format!("nix-wasm-hook: {d}"));
        }
    }
    if parsed.machines.is_empty() {
        return Ok(None);
    }

    let (policies, load_warning) = Policies::configured(opts.policy.as_ref(), opts)?;
    if let Some(w) = load_warning {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }
    timeline::mark("policy");
    let local = crate::core::settings::local(settings);
    let nix = Some(NixRelease::from_block(block));
    Ok(Some(Dispatcher::new(opts, store, parsed.machines, policies, local, nix)))
}

/// Places `t` and tells Nix: the placement when the build goes to a builder, none when Nix
/// was told to decline or postpone it.
fn answer(
    parent: &mut WithParent,
    dispatcher: &mut Dispatcher,
    t: &Request,
    drv: Option<&nwh_drv::Derivation>,
    opts: &Options,
    logger: &Logger,
) -> Result<Option<Box<crate::core::dispatch::Placed>>> {
    timeline::derivation(&t.drv_path);
    // One that cannot be read is accepted, and its build says why.
    if let Some(why) = drv.and_then(transfer::cannot_finish) {
        logger.warn(&format!("nix-wasm-hook: declines {}: {why}", t.drv_path));
        parent.decline()?;
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
            parent.decline()?;
            Ok(None)
        }
        Placement::Postponed { explanation } => {
            if let Some((_, text)) = &explanation {
                logger.warn(text);
            }
            parent.postpone()?;
            Ok(None)
        }
        Placement::Placed(placed) => Ok(Some(placed)),
    }
}

/// Accepts the placed build, reads what Nix sends with it and builds it on the builder.
/// Returns the process exit code.
fn build(
    parent: &mut WithParent,
    dispatcher: &Dispatcher,
    mut placed: Box<crate::core::dispatch::Placed>,
    t: &Request,
    drv: Result<nwh_drv::Derivation>,
    settings: &nwh_nixconf::Settings,
    logger: &Logger,
) -> Result<i32> {
    let drv_path = t.drv_path.as_str();
    // The slot stays held until the builder is done with the build (Nix's own hook holds
    // it until it exits, also while it registers the outputs locally).
    parent.accept(&placed.uri)?;
    timeline::mark("accepted");
    let accepted = parent.read_accepted()?;
    timeline::mark("inputs");
    let conn = dispatcher
        .connection(&mut placed, logger)
        .with_context(|| format!("cannot build on '{}'", placed.uri))?;
    timeline::mark("connected");
    // Not readable (Nix had it valid a moment ago): the accepted build fails with why.
    let drv = drv?;
    let placed = *placed;
    let job = transfer::Job {
        uri: &placed.uri,
        drv_path,
        drv: &drv,
        inputs: &accepted.inputs,
        wanted_outputs: &accepted.wanted_outputs,
        settings,
        upload_lock: &dispatcher.upload_lock(&placed.uri),
    };
    let built = transfer::build(&conn, &job, placed.slot, crate::front_end::fds::build_log()?, logger);
    match built.map_err(|e| conn.with_loss(e))? {
        transfer::Finished::Built => Ok(0),
        transfer::Finished::Failed { message, by_path } => {
            let nix = dispatcher.nix();
            let tells = nix.is_some_and(|n| n.tells_of_kept_failed_builds());
            if settings.get("keep-failed") == Some("true") && tells && !by_path {
                logger.nix_warning(&kept_on_the_builder(settings, &t.system));
            }
            logger.failure(&message);
            Ok(FAILED)
        }
    }
}

/// The exit status of a failed remote build: Nix's own hook throws the builder's error and
/// exits 1, which every release counts a `MiscFailure` (nix-build then exits 1). Nix 2.8 to
/// 2.28 would count 100 a `PermanentFailure` and 101 `TimedOut` (exit 100 and 101), which
/// Nix's hook never leads to; from 2.29 on every non-zero status is a `MiscFailure`.
const FAILED: i32 = 1;

/// What Nix 2.30 and later's hook says when a remote build failed under `--keep-failed`, word
/// for word; the advice to build here is given only when this machine can build for `system`.
fn kept_on_the_builder(settings: &nwh_nixconf::Settings, system: &str) -> String {
    let here = system == settings.system() || settings.extra_platforms().iter().any(|p| p == system);
    format!(
        "The failed build directory was kept on the remote builder due to `--keep-failed`.{}",
        if here {
            " You can re-run the command with `--builders ''` to disable remote building for this invocation."
        } else {
            ""
        }
    )
}
