//! Builder mode: nix-wasm-hook as one builder of Nix's own hook. A machines line such as
//! `ssh://localhost?remote-program=/usr/local/bin/nix-wasm-hook x86_64-linux - 8 1` makes Nix's
//! hook start this binary locally, without ssh, as `nix-wasm-hook --serve --write`, and speak
//! the serve protocol to it on stdin and stdout (docs/compatibility.md, "builder mode"). This
//! front-end answers as a builder would, and dispatches the build to the real builders named
//! by its own `machines` option, through the same core as hook mode.
//!
//! It shares the machine, and so the store, with Nix: every input Nix asks about is already
//! valid here, so Nix copies nothing to it, and the outputs stream from the real builder
//! through this process to Nix, which imports them itself, under its own locks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use nwh_serve::{BuildResult, BuildStatus, PathInfo, ServeRequest, ServeServer};

use crate::core::dispatch::{Dispatcher, Placement, Wait};
use crate::core::log::Logger;
use crate::core::policy::Policies;
use crate::transfer::content_address::{CheckedRelay, Fixed, FloatingClaim};
use crate::transfer::{from_builder, local, BuilderSession};
use nwh_decision::LocalMachine;
use nwh_options::Options;

/// Serves one connection from Nix's hook on stdin/stdout. Returns the process exit code.
pub fn run(opts: &Options, store: Option<&str>, logger: &Logger) -> Result<i32> {
    // Nix's own hook connects before it accepts a build, while Nix waits for its answer: greet
    // at once, and load the policy only when a build comes.
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let mut server = ServeServer::handshake(stdin, stdout).context("greeting Nix's hook")?;
    let settings = crate::core::settings::load(&[]).context("reading nix.conf")?;
    let store = crate::core::settings::local_store(&settings, store)?;
    crate::transfer::local_store::set(store.clone());
    let machines = builder_machines(opts, &settings)?;
    for d in &machines.diagnostics {
        logger.warn(&format!("nix-wasm-hook: {d}"));
    }
    let mut machines = Some(machines.machines);
    let mut running: Option<Built> = None;
    while let Some(request) = server.next_request().context("reading Nix's hook's request")? {
        match request {
            ServeRequest::QueryValidPaths { paths, .. } => {
                let valid = valid_paths(&paths, running.as_mut().and_then(Built::session))?;
                server.reply_valid_paths(&valid)?;
            }
            ServeRequest::QueryPathInfos { paths } => {
                let infos = path_infos(&paths, running.as_mut())?;
                server.reply_path_infos(&infos)?;
            }
            ServeRequest::DumpStorePath { path } => {
                dump(&path, running.as_mut(), &mut server)?;
                if let Some(built) = running.as_mut() {
                    built.fetched(&path)?;
                }
            }
            ServeRequest::BuildDerivation { drv_path, drv, options } => {
                crate::core::timeline::derivation(&drv_path);
                if running.is_some() {
                    bail!("Nix's hook asked for a second build on one connection, which it never does");
                }
                let machines = machines.take().unwrap_or_default();
                let mut dispatcher = dispatcher(opts, &store, machines, &settings, logger)?;
                let (result, session, floating) =
                    build(&mut dispatcher, &drv_path, &drv, &options, &settings, logger)?;
                server.reply_build_result(&result)?;
                if let Some(session) = session {
                    running = Some(Built::new(session, &drv, floating, result.status.is_success())?);
                }
            }
            other => bail!(
                "Nix's hook sent {}, which a builder that shares the store with it never gets",
                other.name()
            ),
        }
    }
    if let Some(mut built) = running {
        built.finish_session()?;
    }
    Ok(0)
}

/// The build of this connection, once built: its builder answers for the outputs until Nix
/// has fetched every one it lacks, and then its session ends (or goes back to the keeper of
/// warm sessions) at once. It cannot wait for the end of the connection: Nix's hook kills this
/// process as it closes it, and a lent session that is not given back is lost.
///
/// The builder is trusted for the outputs of this build and nothing else: Nix's hook is given
/// the info and the NAR of those alone, each NAR cut off at the size announced for it.
struct Built {
    session: Option<BuilderSession>,
    /// Outputs not valid here that Nix has not fetched yet.
    unfetched: BTreeSet<String>,
    /// The info the builder announced for each output whose info Nix's hook was given.
    announced: BTreeMap<String, PathInfo>,
    /// Fixed outputs, by path: their NARs are checked against their hashes on the way.
    fixed: BTreeMap<String, nwh_drv::Output>,
    floating: Floating,
}

/// The floating content-addressed outputs of a successful build that Nix's hook lacks, where
/// the builder put them: their NARs are checked on the way against the paths it named.
#[derive(Default)]
struct Floating {
    drv_name: String,
    /// Path → output name and output.
    outputs: BTreeMap<String, (String, nwh_drv::Output)>,
}

impl Built {
    fn new(
        session: BuilderSession,
        drv: &nwh_drv::BasicDerivation,
        floating: Floating,
        success: bool,
    ) -> Result<Built> {
        let outputs: BTreeSet<String> = drv
            .outputs
            .values()
            .filter(|o| !o.path.is_empty())
            .map(|o| o.path.clone())
            .chain(floating.outputs.keys().cloned())
            .collect();
        // Nix fetches nothing after a failed build; after a good one, what it lacks.
        let unfetched = if success { local::invalid(&outputs)? } else { BTreeSet::new() };
        let fixed =
            drv.outputs.values().filter(|o| o.is_fixed()).map(|o| (o.path.clone(), o.clone())).collect();
        let mut built =
            Built { session: Some(session), unfetched, announced: BTreeMap::new(), fixed, floating };
        built.end_when_fetched()?;
        Ok(built)
    }

    fn session(&mut self) -> Option<&mut BuilderSession> {
        self.session.as_mut()
    }

    /// The builder's infos of those of `paths` that are outputs Nix still lacks.
    fn path_infos(&mut self, paths: &BTreeSet<String>) -> Result<Vec<(String, PathInfo)>> {
        let outputs: BTreeSet<String> = paths.intersection(&self.unfetched).cloned().collect();
        let Some(session) = self.session.as_mut().filter(|_| !outputs.is_empty()) else {
            return Ok(Vec::new());
        };
        let infos = session.store().query_path_infos(&outputs)?;
        self.announced.extend(infos.iter().map(|(path, info)| (path.clone(), info.clone())));
        Ok(infos)
    }

    /// Relays the NAR of an output from the builder, no longer than announced.
    fn dump<R: Read, W: Write>(&mut self, path: &str, server: &mut ServeServer<R, W>) -> Result<()> {
        let (Some(info), Some(session)) = (self.announced.get(path), self.session.as_mut()) else {
            bail!("Nix's hook asked for the NAR of {path}, which is not in this store nor an output it was told of");
        };
        let announced = info.nar_size;
        let what = format!("the NAR of {path} from '{}'", session.uri());
        let mut sink = server.nar_sink();
        let relay = match (self.fixed.get(path), self.floating.outputs.get(path)) {
            (Some(output), _) => Some(CheckedRelay::fixed(&mut sink, output)?),
            (None, Some((name, output))) => {
                let claim =
                    FloatingClaim::new(path, &self.floating.drv_name, name, output, &info.references)?;
                Some(CheckedRelay::floating(&mut sink, claim)?)
            }
            (None, None) => None,
        };
        // Nix's hook ends this process once it has the last output, maybe before a word after
        // it: the session goes back to the keeper while the NAR's last bytes are still held
        // here, when nothing more will be asked of it.
        let last = self.unfetched.len() == 1 && self.unfetched.contains(path);
        match relay {
            Some(mut relay) => {
                session.store().dump(path, &mut from_builder::Bounded::new(&mut relay, announced, &what))?;
                if last {
                    self.finish_session()?;
                }
                relay.finish().with_context(|| what.clone())?;
            }
            None => {
                session.store().dump(path, &mut from_builder::Bounded::new(&mut sink, announced, &what))?;
                if last {
                    self.finish_session()?;
                }
            }
        }
        sink.finish()?;
        Ok(())
    }

    fn fetched(&mut self, path: &str) -> Result<()> {
        self.unfetched.remove(path);
        self.end_when_fetched()
    }

    fn end_when_fetched(&mut self) -> Result<()> {
        if self.unfetched.is_empty() {
            self.finish_session()?;
        }
        Ok(())
    }

    fn finish_session(&mut self) -> Result<()> {
        self.session.take().map_or(Ok(()), BuilderSession::finish)
    }
}

fn dispatcher(
    opts: &Options,
    store: &crate::transfer::local_store::LocalStore,
    machines: Vec<nwh_machines::Machine>,
    settings: &nwh_nixconf::Settings,
    logger: &Logger,
) -> Result<Dispatcher> {
    let (policies, load_warning) = Policies::configured(opts.policy.as_ref(), opts)?;
    if let Some(w) = load_warning {
        logger.warn(&format!("nix-wasm-hook: {w}"));
    }
    // This front-end never builds on its own machine: Nix has already decided that the
    // derivation goes to a builder, and we are that builder.
    let local = LocalMachine { max_jobs: 0, ..crate::core::settings::local(settings) };
    Ok(Dispatcher::new(opts, store, machines, policies, local, None))
}

/// The real builders: the `machines` option, in the syntax of Nix's `builders`.
fn builder_machines(opts: &Options, settings: &nwh_nixconf::Settings) -> Result<nwh_machines::Machines> {
    crate::core::settings::builder_machines(opts, settings).ok_or_else(|| {
        anyhow::anyhow!(
            "builder mode (--serve) needs the real builders: set `machines = \"@/etc/nix/nix-wasm-hook.machines\"` \
             (Nix's `builders` syntax) in {}",
            nwh_options::DEFAULT_CONFIG
        )
    })
}

/// Valid "on this builder": in the local store (which it shares with Nix), or an output of
/// the build it ran. Nix's hook asks this only of the closure of the build's inputs, which it
/// has just read from the database of that same store, and which it holds with temporary
/// roots: what of it is on disk is valid, and asking `nix-store` again (a process, some 20 ms
/// before every build that has inputs) would tell nothing new.
fn valid_paths(paths: &BTreeSet<String>, running: Option<&mut BuilderSession>) -> Result<BTreeSet<String>> {
    let (absent, mut valid) = local::on_disk(paths)?;
    if let Some(session) = running {
        if !absent.is_empty() {
            valid.extend(session.store().query_valid_paths(&absent, false)?);
        }
    }
    Ok(valid)
}

fn path_infos(paths: &BTreeSet<String>, running: Option<&mut Built>) -> Result<Vec<(String, PathInfo)>> {
    let invalid = local::invalid(paths)?;
    let here: BTreeSet<String> = paths.difference(&invalid).cloned().collect();
    let mut infos: Vec<(String, PathInfo)> = local::serve_path_infos(&here)?;
    if let Some(built) = running {
        infos.extend(built.path_infos(&invalid)?);
    }
    Ok(infos)
}

fn dump<R: Read, W: Write>(
    path: &str,
    running: Option<&mut Built>,
    server: &mut ServeServer<R, W>,
) -> Result<()> {
    let here = local::invalid(&BTreeSet::from([path.to_string()]))?.is_empty();
    match running {
        Some(built) if !here => built.dump(path, server)?,
        _ => {
            let mut nar = local::nar(path)?;
            let sent = server.reply_nar(&mut std::io::BufReader::new(&mut nar.reader)).map_err(Into::into);
            nar.finish_after(sent)?;
        }
    }
    Ok(())
}

/// Places the derivation and builds it on a real builder; a build that nothing can take is a
/// failed result that says why, per machine. With the builder's session, the floating outputs
/// it built, if any.
fn build(
    dispatcher: &mut Dispatcher,
    drv_path: &str,
    drv: &nwh_drv::BasicDerivation,
    options: &nwh_serve::BuildOptions,
    settings: &nwh_nixconf::Settings,
    logger: &Logger,
) -> Result<(BuildResult, Option<BuilderSession>, Floating)> {
    let cannot = |why: String| {
        let result = BuildResult::failure(
            BuildStatus::MiscFailure,
            format!("nix-wasm-hook cannot build {drv_path}: {why}"),
        );
        Ok((result, None, Floating::default()))
    };
    let required_features: Vec<String> = drv
        .env
        .get("requiredSystemFeatures")
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    // A fixed output is checked against its hash on its way to Nix: one this hook cannot
    // compute is not taken on the builder's word.
    if let Some(why) = drv.outputs.values().filter(|o| o.is_fixed()).find_map(|o| Fixed::of(o).err()) {
        return cannot(why);
    }
    let floating = match floating_ids(drv_path, drv) {
        Ok(floating) => floating,
        Err(why) => return cannot(format!("{why:#}")),
    };
    let t = nwh_decision::Request {
        drv_path: drv_path.to_string(),
        system: drv.platform.clone(),
        required_features,
        am_willing: true,
        could_build_locally: false,
        local: Default::default(),
    };
    let mut placed = match dispatcher.place(&t, Wait::Forever, logger)? {
        Placement::Placed(p) => p,
        Placement::Declined { explanation } | Placement::Postponed { explanation } => {
            let why = explanation.map(|(_, text)| text).unwrap_or_else(|| "no machine will build it".into());
            return Ok((BuildResult::failure(BuildStatus::MiscFailure, why), None, Floating::default()));
        }
    };
    let conn = dispatcher
        .connection(&mut placed, logger)
        .with_context(|| format!("cannot build on '{}'", placed.uri))?;
    crate::core::timeline::mark("connected");
    let upload_lock = dispatcher.upload_lock(&placed.uri);
    let there =
        crate::transfer::Builder { conn: &conn, uri: &placed.uri, upload_lock: &upload_lock, settings };
    let ran = there.run(crate::front_end::fds::stderr()?, &drv.input_srcs, drv_path, drv, options, logger);
    let crate::transfer::Ran { session, mut result, .. } = ran.map_err(|e| conn.with_loss(e))?;
    let floating = match floating {
        Some((full, ids)) if result.status.is_success() => {
            match crate::transfer::realised_for_nix(drv_path, &full, &ids, &mut result, &placed.uri) {
                Ok(found) => Floating {
                    drv_name: crate::transfer::register::derivation_name(drv_path)?,
                    outputs: found
                        .paths
                        .into_iter()
                        .filter(|(_, path)| found.missing.contains(path))
                        .map(|(name, path)| (path, (name.clone(), full.outputs[&name].clone())))
                        .collect(),
                },
                Err(why) => {
                    result = BuildResult::failure(BuildStatus::MiscFailure, format!("{why:#}"));
                    Floating::default()
                }
            }
        }
        _ => Floating::default(),
    };
    if !result.status.is_success() {
        result.error_msg = format!("on '{}': {}", placed.uri, result.error_msg);
    }
    // The builder is done with the build: its slot frees now, while it still answers Nix's
    // hook for the outputs.
    drop(placed);
    Ok((result, Some(session), floating))
}

/// For a derivation with floating content-addressed outputs, the whole derivation (read from
/// the store this front-end shares with Nix: Nix's hook sends only its basic form) and each
/// output's DrvOutput id, which Nix's hook looks the realisations up by; why not, when the
/// outputs could not be checked or the ids not computed. None for any other derivation.
fn floating_ids(
    drv_path: &str,
    drv: &nwh_drv::BasicDerivation,
) -> Result<Option<(nwh_drv::Derivation, BTreeMap<String, String>)>> {
    if !drv.outputs.values().any(|o| o.is_floating()) {
        return Ok(None);
    }
    let full = crate::transfer::read_derivation(drv_path)?;
    if let Some(why) = crate::transfer::cannot_finish(&full) {
        bail!("{why}");
    }
    let names: Vec<String> = full.outputs.keys().cloned().collect();
    let ids = crate::transfer::floating_ids(&full, &names)?;
    Ok(Some((full, ids)))
}
