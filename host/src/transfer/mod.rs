//! After `# accept`: the input closure goes up, the build runs on the builder, the outputs
//! come back into the local store. Only this module knows SSH and the serve protocol.

pub mod advice;
pub mod content_address;
pub mod from_builder;
pub mod health;
pub mod local;
pub mod local_store;
pub mod register;
pub mod ssh;
pub mod store;
pub mod target;
pub mod warm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use nwh_nixconf::Settings;
use nwh_serve::BuildOptions;

use crate::core::log::{Activity, Level, Logger};
use ssh::Connection;
use store::{Link, StoreConn};

/// How a remote build ended, as Nix must learn it (docs/hook-protocol.md §9).
#[derive(Debug)]
pub enum Finished {
    Built,
    /// The builder ran the build and it failed (timed out, too); `message` is the error Nix's
    /// own hook gives, `build of '…' on '…' failed: <the builder's words>`. `by_path`: it was
    /// asked for by path, as from a daemon that does not trust us, where Nix's hook (2.30 and
    /// later) says nothing of a kept build directory.
    Failed {
        message: String,
        by_path: bool,
    },
}

/// One build on one builder, as a front-end hands it over.
pub struct Job<'a> {
    pub uri: &'a str,
    pub drv_path: &'a str,
    /// The derivation, read once by the front-end from the local store.
    pub drv: &'a nwh_drv::Derivation,
    /// The input closure Nix named (after `# accept`, or in `BuildDerivation`).
    pub inputs: &'a [String],
    /// The outputs Nix wants back, by name (after `# accept`: those it lacks). Floating
    /// content-addressed ones are brought back and registered from these; outputs with known
    /// paths are all asked about (whichever Nix wants, those not valid here come back).
    pub wanted_outputs: &'a [String],
    pub settings: &'a Settings,
    pub upload_lock: &'a Path,
}

/// Why this hook could build `drv` remotely but not bring it back, if it knows so before
/// `# accept`; an accept would end in a failed build, where a decline lets Nix build the
/// derivation itself or say why it cannot.
///
/// Floating content-addressed outputs are brought back and their realisations registered
/// under the DrvOutput ids computed here ([`nwh_drv::Derivation::drv_output_ids`]), so a
/// derivation whose ids cannot be computed (one with input derivations, which Nix resolves
/// before it hands a floating derivation to a hook) is declined. So are outputs without a path
/// that are not floating (deferred, impure): nothing would say where they are.
pub fn cannot_finish(drv: &nwh_drv::Derivation) -> Option<String> {
    let pathless: Vec<String> = drv
        .outputs
        .iter()
        .filter(|(_, o)| o.path.is_empty() && !o.is_floating())
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !pathless.is_empty() {
        return Some(format!(
            "its outputs {} have no path and are not floating content-addressed (deferred or impure), \
             so this hook could not bring them back",
            pathless.join(", ")
        ));
    }
    if drv.has_floating_outputs() {
        if let Err(why) = drv.drv_output_ids() {
            return Some(format!(
                "it has floating content-addressed outputs (ca-derivations), whose realisations this \
                 hook could not register: their DrvOutput ids cannot be computed here, as {why}"
            ));
        }
    }
    // What comes back for a content-addressed output is checked (a fixed one against its
    // hash, a floating one against the path the builder names): one whose method this hook
    // does not know would have to be taken on the builder's word.
    drv.outputs
        .values()
        .filter(|o| o.is_fixed() || o.is_floating())
        .find_map(|o| content_address::Fixed::of(o).err())
}

/// The floating content-addressed outputs among `wanted` (output names), each with its
/// DrvOutput id.
pub fn floating_ids(drv: &nwh_drv::Derivation, wanted: &[String]) -> Result<BTreeMap<String, String>> {
    if !drv.has_floating_outputs() {
        return Ok(BTreeMap::new());
    }
    let ids = drv.drv_output_ids().map_err(|why| anyhow::anyhow!("the DrvOutput ids: {why}"))?;
    let mut floating = BTreeMap::new();
    for name in wanted {
        let output = drv
            .outputs
            .get(name)
            .with_context(|| format!("Nix wants the output `{name}`, which the derivation does not have"))?;
        if output.is_floating() {
            floating.insert(name.clone(), ids[name].clone());
        }
    }
    Ok(floating)
}

/// Where the builder put the floating outputs of a build, and which of those paths are not
/// valid here.
#[derive(Debug, Default)]
pub struct FloatingPaths {
    /// Output name → path.
    pub paths: BTreeMap<String, String>,
    /// The paths not valid here: they come here (hook mode) or to Nix's hook (builder mode),
    /// each checked against what arrives for it.
    pub missing: BTreeSet<String>,
}

impl FloatingPaths {
    /// Those valid here already (name → path): not fetched, but checked against what is here
    /// ([`check_valid_floating`]).
    pub fn valid(&self) -> BTreeMap<String, String> {
        self.paths
            .iter()
            .filter(|(_, path)| !self.missing.contains(*path))
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect()
    }
}

/// Where the builder's result says each of the `floating` outputs (name → id) is: every one
/// must be named, at a store path of this store; the path itself is checked against what
/// arrives ([`content_address::check_floating`]), or against what is here.
pub fn floating_paths(
    result: &nwh_serve::BuildResult,
    floating: &BTreeMap<String, String>,
    uri: &str,
) -> Result<FloatingPaths> {
    if floating.is_empty() {
        return Ok(FloatingPaths::default());
    }
    let store_dir = local::store_dir()?;
    let built = result
        .built_output_paths(store_dir.as_str())
        .with_context(|| format!("the build on '{uri}' succeeded, but its result is not understood"))?;
    let mut paths = BTreeMap::new();
    for name in floating.keys() {
        let path = built.get(name).with_context(|| {
            format!(
                "the build on '{uri}' succeeded, but the builder did not say where it put the floating \
                 content-addressed output `{name}`"
            )
        })?;
        store_dir.check(path).with_context(|| {
            format!("'{uri}' says the output `{name}` is {path:?}, not a path of this store")
        })?;
        paths.insert(name.clone(), path.clone());
    }
    let missing = local::invalid(&paths.values().cloned().collect())?;
    Ok(FloatingPaths { paths, missing })
}

/// The floating outputs (name → path) of `drv_path` that were valid here already: not fetched,
/// but the builder's word that they are this derivation's outputs is checked all the same,
/// against what is here.
pub fn check_valid_floating(
    drv_path: &str,
    drv: &nwh_drv::Derivation,
    valid: &BTreeMap<String, String>,
) -> Result<()> {
    if valid.is_empty() {
        return Ok(());
    }
    let infos = local::path_infos(&valid.values().cloned().collect())?;
    let drv_name = register::derivation_name(drv_path)?;
    let store = local_store::get()?;
    for (name, path) in valid {
        let references = &infos.get(path).with_context(|| format!("{path} is not valid here"))?.references;
        content_address::check_floating(
            path,
            &drv_name,
            name,
            &drv.outputs[name],
            &store.real(path),
            references,
        )
        .with_context(|| format!("{path}, valid here, as the output `{name}` of {drv_path}"))?;
    }
    Ok(())
}

/// Builder mode's side of floating outputs (`floating`: name → DrvOutput id): the builder's
/// `result` made into one Nix's hook can use. Each output is where the builder says it is,
/// checked as hook mode checks it (a path valid here already against what is here; one that
/// Nix's hook will fetch is checked on its way), and its realisation goes to Nix under the id
/// computed here, which is the one Nix's hook looks it up by.
pub fn realised_for_nix(
    drv_path: &str,
    drv: &nwh_drv::Derivation,
    floating: &BTreeMap<String, String>,
    result: &mut nwh_serve::BuildResult,
    uri: &str,
) -> Result<FloatingPaths> {
    let found = floating_paths(result, floating, uri)?;
    check_valid_floating(drv_path, drv, &found.valid())?;
    let paths = &found.paths;
    let mut built_outputs = BTreeMap::new();
    for (name, id) in floating {
        // The builder's realisation as it wrote it (its signatures, the fields of its
        // release), with the id and the path that were checked.
        let said = result
            .built_outputs
            .iter()
            .find(|(their_id, _)| their_id.rsplit_once('!').is_some_and(|(_, n)| n == name))
            .map(|(_, json)| json.as_str())
            .unwrap_or("{}");
        let mut realisation: serde_json::Value = serde_json::from_str(said)
            .with_context(|| format!("the realisation of `{name}` from '{uri}'"))?;
        let base = paths[name].rsplit_once('/').map_or(paths[name].as_str(), |(_, b)| b);
        realisation["id"] = id.clone().into();
        realisation["outPath"] = base.into();
        built_outputs.insert(id.clone(), realisation.to_string());
    }
    result.built_outputs = built_outputs;
    Ok(found)
}

/// The derivation `drv_path` of the local store, read where that store is on disk.
pub fn read_derivation(drv_path: &str) -> Result<nwh_drv::Derivation> {
    let real = local_store::get()?.real(drv_path);
    nwh_drv::Derivation::read(&real).with_context(|| format!("reading the derivation {drv_path}"))
}

/// Hook mode's whole transfer: inputs up, the build, outputs back into the local store.
/// `slot` is released as soon as the builder is done with this build, before the outputs are
/// registered here: the next build can start on it meanwhile.
/// The builder's stderr (build log and errors) goes to `build_log`: Nix's build log, as with
/// Nix's own hook.
pub fn build(
    conn: &Connection,
    job: &Job,
    slot: nwh_slots::SlotLock,
    build_log: std::os::fd::OwnedFd,
    logger: &Logger,
) -> Result<Finished> {
    let started = std::time::Instant::now();
    let drv = job.drv;
    let inputs: BTreeSet<String> = job.inputs.iter().cloned().collect();
    // Which outputs this machine lacks cannot change while the build runs (Nix holds their
    // locks), and asking may cost a nix-store process: ask now, while the build runs.
    let mut expected: BTreeMap<String, register::Expected> = drv
        .outputs
        .iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| (o.path.clone(), register::Expected { name: name.clone(), output: o.clone() }))
        .collect();
    let outputs: BTreeSet<String> = expected.keys().cloned().collect();
    let missing = std::thread::spawn(move || local::invalid(&outputs));
    let floating = floating_ids(drv, job.wanted_outputs)?;
    let basic = drv.to_basic(&inputs);
    let there = Builder { conn, uri: job.uri, upload_lock: job.upload_lock, settings: job.settings };
    let Ran { mut session, result, uploaded, by_path } =
        there.run(build_log, &inputs, job.drv_path, &basic, &build_options(job.settings), logger)?;
    let missing =
        missing.join().map_err(|_| anyhow::anyhow!("the validity check of the outputs panicked"))??;
    if !result.status.is_success() {
        return Ok(Finished::Failed {
            message: format!("build of '{}' on '{}' failed: {}", job.drv_path, job.uri, result.error_msg),
            by_path,
        });
    }
    // Registered: `nix-store --load-db` succeeded for every output that was missing.
    expected.retain(|path, _| missing.contains(path));
    // The floating outputs' paths are known now, from the builder: those not valid here come
    // back too, each checked against what arrives for it.
    let floating_paths = floating_paths(&result, &floating, job.uri)?;
    for (name, path) in &floating_paths.paths {
        if floating_paths.missing.contains(path) {
            let output = drv.outputs[name].clone();
            expected.insert(path.clone(), register::Expected { name: name.clone(), output });
        }
    }
    let fetched = session.bring_back(job.drv_path, &expected, logger, || drop(slot))?;
    session.finish()?;
    check_valid_floating(job.drv_path, drv, &floating_paths.valid())?;
    // Valid now, each of them: their realisations, under the ids computed here.
    let realisations: Vec<nwh_daemon::Realisation> = floating
        .iter()
        .map(|(name, id)| nwh_daemon::Realisation {
            id: id.clone(),
            out_path: floating_paths.paths[name].clone(),
        })
        .collect();
    register::realisations(&realisations)
        .with_context(|| format!("registering the realisations of the outputs of {}", job.drv_path))?;
    logger.msg(
        Level::Talkative,
        &format!(
            "nix-wasm-hook: built {} on '{}' in {:.2} s ({uploaded} paths uploaded, {fetched} outputs fetched); peak memory {} KiB",
            job.drv_path,
            job.uri,
            started.elapsed().as_secs_f64(),
            // Shows that closures are streamed rather than held.
            crate::core::timeline::peak_rss_kib().map_or("unknown".into(), |k| k.to_string()),
        ),
    );
    Ok(Finished::Built)
}

/// A builder as both front-ends build on it: its SSH master (or the store program run here),
/// its URI, its upload lock, and the parent's settings.
pub struct Builder<'a> {
    pub conn: &'a Connection,
    pub uri: &'a str,
    pub upload_lock: &'a Path,
    pub settings: &'a Settings,
}

/// A build that ran on a builder, its session still open: the hook brings the outputs back
/// through it, the builder front-end relays them to Nix's hook.
pub struct Ran {
    pub session: BuilderSession,
    pub result: nwh_serve::BuildResult,
    /// How many input paths were sent.
    pub uploaded: usize,
    /// Whether it was built by path (a daemon that does not trust us).
    pub by_path: bool,
}

impl Builder<'_> {
    /// What both front-ends do on a builder: a session to its store (a warm one when the
    /// keeper has it), what it lacks of `inputs` sent, `drv` built; the store's stderr (the
    /// build log) goes to `log`.
    pub fn run(
        &self,
        log: std::os::fd::OwnedFd,
        inputs: &BTreeSet<String>,
        drv_path: &str,
        drv: &nwh_drv::BasicDerivation,
        options: &BuildOptions,
        logger: &Logger,
    ) -> Result<Ran> {
        // A local store builds with the settings Nix sent, as in Nix's own hook.
        let conn = &self.conn.with_settings(self.settings);
        let mut session = BuilderSession::open(conn, self.uri, log)?;
        let uploaded =
            session.upload(inputs, self.settings.builders_use_substitutes(), self.upload_lock, logger)?;
        let by_path = session.store.builds_by_path(drv);
        let result = session.build(drv_path, drv, options, logger)?;
        Ok(Ran { session, result, uploaded, by_path })
    }
}

/// The settings that go with a build over the serve protocol, as Nix's hook sends them
/// (`putBuildSettings`, 2.8 as 2.34): `max-silent-time`, `timeout`, `max-build-log-size` and,
/// from protocol 2.7, `keep-failed` (the builder keeps a failed build's directory), all of
/// them the parent's, from the settings block.
pub fn build_options(settings: &Settings) -> BuildOptions {
    BuildOptions {
        max_silent_time: settings.max_silent_time(),
        build_timeout: settings.build_timeout(),
        max_log_size: settings.max_build_log_size(),
        keep_failed: settings.get("keep-failed") == Some("true"),
    }
}

/// One conversation with a builder's store (`nix-store --serve --write` or `nix-daemon
/// --stdio` through its SSH master), for one build: what the front-ends do with a builder
/// goes through here.
pub struct BuilderSession {
    uri: String,
    store: StoreConn,
    link: Link,
}

impl BuilderSession {
    /// Borrows a warm session of the builder's store program or starts one; its stderr (build
    /// logs, errors) goes to `log`.
    pub fn open(conn: &Connection, uri: &str, log: std::os::fd::OwnedFd) -> Result<BuilderSession> {
        let (store, link) = StoreConn::open(conn, log)?;
        crate::core::timeline::mark("session");
        Ok(BuilderSession { uri: uri.to_string(), store, link })
    }

    /// The builder's store URI, as messages name it.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The conversation itself, for a front-end that relays the builder's answers.
    pub fn store(&mut self) -> &mut StoreConn {
        &mut self.store
    }

    /// Uploads what the builder lacks of `inputs`; returns how many paths went up. The upload
    /// lock is taken only when something is missing (NixOS/nix#11083: Nix's hook queues every
    /// build behind it), and the question is asked again under the lock, since another hook
    /// may have uploaded the same paths meanwhile.
    pub fn upload(
        &mut self,
        inputs: &BTreeSet<String>,
        substitute: bool,
        upload_lock: &Path,
        logger: &Logger,
    ) -> Result<usize> {
        let store = &mut self.store;
        let valid = store.query_valid_paths(inputs, substitute)?;
        if inputs.is_subset(&valid) {
            return Ok(0);
        }
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(upload_lock)?;
        {
            let _a = logger.start(
                Level::Talkative,
                Activity::Unknown,
                &format!("waiting for the upload lock to '{}'", self.uri),
            );
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        }
        let valid = store.query_valid_paths(inputs, substitute)?;
        let missing: BTreeSet<String> = inputs.difference(&valid).cloned().collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let infos = local::path_infos(&missing)?;
        let total: u64 = infos.values().map(|i| i.nar_size).sum();
        let all = logger.start(
            Level::Info,
            Activity::CopyPaths,
            &format!("copying {} paths ({}) to '{}'", missing.len(), nwh_files::size(total), self.uri),
        );
        // One path at a time, dependencies first: `nix build` shows each with its size.
        let mut done = 0;
        for path in local::topo_order(&infos) {
            let nar_size = infos[&path].nar_size;
            let one = logger.start_with(
                Level::Talkative,
                Activity::CopyPath,
                &format!("copying path '{path}' ({}) to '{}'", nwh_files::size(nar_size), self.uri),
                &[path.clone().into(), "local".into(), self.uri.as_str().into()],
            );
            store.add(&path, &infos[&path])?;
            one.progress(nar_size, nar_size);
            done += nar_size;
            all.progress(done, total);
        }
        store.added()?;
        Ok(missing.len())
    }

    /// Builds on the builder and waits; a failed build is a result, not an error.
    pub fn build(
        &mut self,
        drv_path: &str,
        basic: &nwh_drv::BasicDerivation,
        options: &BuildOptions,
        logger: &Logger,
    ) -> Result<nwh_serve::BuildResult> {
        crate::core::timeline::mark("uploaded");
        let _a = logger.start(Level::Talkative, Activity::Unknown, &format!("building on '{}'", self.uri));
        let result = self.store.build(drv_path, basic, options, logger);
        crate::core::timeline::mark("built");
        result
    }

    /// Unpacks and registers in the local store the outputs it lacks, `missing` (their paths,
    /// with what the derivation says of each; see [`register`]); returns how many. Nothing else
    /// the builder may name is fetched. `builder_done` is called as soon as the builder is
    /// needed no more (before the local registration).
    pub fn bring_back(
        &mut self,
        drv_path: &str,
        missing: &BTreeMap<String, register::Expected>,
        logger: &Logger,
        builder_done: impl FnOnce(),
    ) -> Result<usize> {
        if missing.is_empty() {
            builder_done();
            return Ok(0);
        }
        let uri = self.uri.as_str();
        let store = &mut self.store;
        let asked: BTreeSet<String> = missing.keys().cloned().collect();
        let infos = store.query_path_infos(&asked)?;
        let total: u64 = infos.iter().map(|(_, i)| i.nar_size).sum();
        let all = logger.start(
            Level::Info,
            Activity::CopyPaths,
            &format!("copying {} paths ({}) from '{uri}'", missing.len(), nwh_files::size(total)),
        );
        let unannounced: Vec<&String> =
            missing.keys().filter(|p| !infos.iter().any(|(i, _)| i == *p)).collect();
        anyhow::ensure!(
            unannounced.is_empty(),
            "the build on '{uri}' succeeded, but the builder does not have the outputs {unannounced:?}"
        );
        let mut fetched = 0;
        let fetch = |path: &str, nar_size: u64, sink: &mut std::io::PipeWriter| {
            let one = logger.start_with(
                Level::Talkative,
                Activity::CopyPath,
                &format!("copying path '{path}' ({}) from '{uri}'", nwh_files::size(nar_size)),
                &[path.to_string().into(), uri.into(), "local".into()],
            );
            let what = format!("the NAR of {path} from '{uri}'");
            let nar = store.dump(path, &mut from_builder::Bounded::new(sink, nar_size, &what))?;
            one.progress(nar.size, nar.size);
            fetched += nar.size;
            all.progress(fetched, total);
            Ok(nar)
        };
        register::outputs(&infos, missing, drv_path, fetch, builder_done)
            .with_context(|| format!("bringing the outputs of {drv_path} back from '{uri}'"))?;
        Ok(missing.len())
    }

    /// Ends the conversation: waits for the builder's program to exit, or gives a lent
    /// session back for the next build when it is clean.
    pub fn finish(self) -> Result<()> {
        crate::core::timeline::mark("fetched");
        let clean = self.store.is_clean();
        drop(self.store);
        match self.link {
            Link::Spawned(remote) => {
                remote.finish()?;
            }
            // A stopping process vouches for nothing past the signal: the keeper ends the
            // session when the lease closes without it.
            Link::Lent(lease) if clean && !crate::core::stop::requested() => lease.give_back(),
            Link::Lent(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(aterm: &str) -> nwh_drv::Derivation {
        nwh_drv::Derivation::parse(aterm.as_bytes()).unwrap()
    }

    /// crates/drv/tests/fixtures/floating-ca-two.drv, whose ids Nix 2.8.0 recorded.
    const TWO: &str = r#"Derive([("dev","","sha256",""),("out","","sha256","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hello > $out; echo dev > $dev"],[("builder","/bin/sh"),("dev","/02qcpld1y6xhs5gz9bchpxaw0xdhmsp5dv88lh25r2ss44kh8dxz"),("name","nwh-drvtest-floating-two"),("note","a \"quoted\"\nline\twith tab \\ and backslash"),("out","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"),("outputHashAlgo","sha256"),("outputHashMode","flat"),("outputs","out dev"),("system","x86_64-linux")])"#;
    const TWO_HASH: &str = "c7877c208b02c894cc263adad0ea5bac7d9077a5b9f23211743f2e486e817a4d";

    #[test]
    fn floating_outputs_are_finished_when_their_ids_can_be_computed() {
        assert_eq!(cannot_finish(&drv(TWO)), None);
        // With an input derivation (Nix resolves those first): no id, so declined, saying so.
        let with_input = TWO.replace(
            "[],[],\"x86_64-linux\"",
            "[(\"/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-dep.drv\",[\"out\"])],[],\"x86_64-linux\"",
        );
        let why = cannot_finish(&drv(&with_input)).unwrap();
        assert!(
            why.contains("DrvOutput ids cannot be computed here") && why.contains("input derivations"),
            "{why}"
        );
        // A method whose contents this hook cannot check.
        let text = TWO.replace(r#"("out","","sha256","")"#, r#"("out","","text:sha256","")"#);
        let why = cannot_finish(&drv(&text)).unwrap();
        assert!(why.contains("text:sha256"), "{why}");
        // Impure and deferred outputs have no path either, and are not floating.
        let impure = r#"Derive([("out","","r:sha256","impure")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        let deferred = r#"Derive([("out","","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        for d in [impure, deferred] {
            let why = cannot_finish(&drv(d)).unwrap();
            assert!(why.contains("its outputs `out` have no path and are not floating"), "{why}");
        }
        // Input-addressed and fixed outputs: nothing to decline.
        let known = r#"Derive([("out","/nix/store/9ffff0jk7yp07fz3xhh7rzgqjj2ysq6x-x","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        assert_eq!(cannot_finish(&drv(known)), None);
    }

    #[test]
    fn the_wanted_floating_outputs_get_the_ids_computed_here() {
        let two = drv(TWO);
        let wanted = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let ids = floating_ids(&two, &wanted(&["out"])).unwrap();
        assert_eq!(ids, BTreeMap::from([("out".to_string(), format!("sha256:{TWO_HASH}!out"))]));
        assert_eq!(floating_ids(&two, &wanted(&["dev", "out"])).unwrap().len(), 2);
        assert!(floating_ids(&two, &wanted(&[])).unwrap().is_empty());
        let err = floating_ids(&two, &wanted(&["lib"])).unwrap_err();
        assert!(err.to_string().contains("`lib`"), "{err}");
        let known = drv(
            r#"Derive([("out","/nix/store/9ffff0jk7yp07fz3xhh7rzgqjj2ysq6x-x","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#,
        );
        assert!(floating_ids(&known, &wanted(&["out"])).unwrap().is_empty());
    }

    #[test]
    fn the_builder_must_name_every_wanted_floating_output_in_this_store() {
        let floating = BTreeMap::from([
            ("dev".to_string(), format!("sha256:{TWO_HASH}!dev")),
            ("out".to_string(), format!("sha256:{TWO_HASH}!out")),
        ]);
        // As a 2.35+ daemon sends them: a dummy hash in the ids, the output name after `!`.
        let realisation = |base: &str| {
            format!(r#"{{"id":"x","outPath":"{base}","signatures":[],"dependentRealisations":{{}}}}"#)
        };
        let out = "nc4fd5yqjb4lfijjwk1h45m53h4ia18b-nwh-drvtest-floating-two";
        let dev = "bl7fi9zncaj97npszi6iy2aciwg9x1yl-nwh-drvtest-floating-two-dev";
        let mut result = nwh_serve::BuildResult::new(nwh_serve::BuildStatus::Built, "");
        result.built_outputs.insert(format!("sha256:{}!out", "0".repeat(64)), realisation(out));
        let err = format!("{:#}", floating_paths(&result, &floating, "ssh://b").unwrap_err());
        assert!(
            err.contains("did not say where it put the floating content-addressed output `dev`"),
            "{err}"
        );
        result.built_outputs.insert(format!("sha256:{}!dev", "0".repeat(64)), realisation(dev));
        let found = floating_paths(&result, &floating, "ssh://b").unwrap();
        assert_eq!(found.paths["out"], format!("/nix/store/{out}"));
        assert_eq!(found.paths["dev"], format!("/nix/store/{dev}"));
        // Nothing wanted, nothing asked.
        assert!(floating_paths(&result, &BTreeMap::new(), "ssh://b").unwrap().paths.is_empty());
        // Not a store path of this store.
        result
            .built_outputs
            .insert(format!("sha256:{}!dev", "0".repeat(64)), realisation("../../etc/passwd"));
        let err = format!("{:#}", floating_paths(&result, &floating, "ssh://b").unwrap_err());
        assert!(err.contains("not a path of this store"), "{err}");
    }

    #[test]
    fn the_build_options_are_the_parent_s_settings() {
        let host = nwh_nixconf::HostDefaults {
            system: "x86_64-linux".into(),
            extra_platforms: Default::default(),
            system_features: Default::default(),
            cpus: 1,
        };
        let mut settings = Settings::new("/nonexistent", None, host);
        assert_eq!(build_options(&settings), BuildOptions::default(), "no limits, nothing kept");
        // As Nix sends them after `nix-build --keep-failed --timeout 7 --max-silent-time 3`.
        settings
            .apply_block([
                ("keep-failed", "true"),
                ("timeout", "7"),
                ("max-silent-time", "3"),
                ("max-build-log-size", "1000"),
            ])
            .unwrap();
        let want =
            BuildOptions { max_silent_time: 3, build_timeout: 7, max_log_size: 1000, keep_failed: true };
        assert_eq!(build_options(&settings), want);
        settings.apply_block([("keep-failed", "false")]).unwrap();
        assert!(!build_options(&settings).keep_failed);
    }
}
