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

use crate::log::{Activity, Level, Logger};
use ssh::Master;
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
    /// The input closure Nix named (after `# accept`, or in `BuildDerivation`).
    pub inputs: &'a [String],
    pub settings: &'a Settings,
    pub upload_lock: &'a Path,
}

/// Why this hook could build `drv_path` remotely but not bring it back, if it knows so before
/// `# accept`: outputs whose paths are only known after the build (floating content-addressed,
/// deferred and impure ones) would need their realisations registered too, which this hook
/// does not do. Nix is better served by a decline, after which it builds the derivation itself
/// or says why it cannot; an accept would end in a failed build. A derivation that cannot be
/// read here is left to [`build`], which reports why.
pub fn cannot_finish(drv_path: &str) -> Option<String> {
    let drv = read_derivation(drv_path).ok()?;
    let floating: Vec<&str> =
        drv.outputs.iter().filter(|(_, o)| o.path.is_empty()).map(|(name, _)| name.as_str()).collect();
    if !floating.is_empty() {
        return Some(format!(
            "its outputs {} are content-addressed without a fixed hash (ca-derivations), and this hook \
             cannot register their realisations yet",
            floating.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    // What comes back for a fixed output is checked against its hash: one this hook cannot
    // compute would have to be taken on the builder's word.
    drv.outputs.values().filter(|o| o.is_fixed()).find_map(|o| content_address::Fixed::of(o).err())
}

/// The derivation `drv_path` of the local store, read where that store is on disk.
fn read_derivation(drv_path: &str) -> Result<nwh_drv::Derivation> {
    let real = local_store::get()?.real(drv_path);
    nwh_drv::Derivation::read(&real).with_context(|| format!("reading the derivation {drv_path}"))
}

/// Hook mode's whole transfer: inputs up, the build, outputs back into the local store.
/// `slot` is released as soon as the builder is done with this build, before the outputs are
/// registered here: the next build can start on it meanwhile.
/// The builder's stderr (build log and errors) goes to `build_log`: Nix's build log, as with
/// Nix's own hook.
pub fn build(
    master: &Master,
    job: &Job,
    slot: nwh_slots::SlotLock,
    build_log: std::os::fd::OwnedFd,
    logger: &Logger,
) -> Result<Finished> {
    let started = std::time::Instant::now();
    let drv = read_derivation(job.drv_path)?;
    // A local store builds with the settings Nix sent, as in Nix's own hook.
    let master = &master.with_settings(job.settings);
    let mut session = BuilderSession::open(master, job.uri, build_log)?;
    let inputs: BTreeSet<String> = job.inputs.iter().cloned().collect();
    let uploaded =
        session.upload(&inputs, job.settings.builders_use_substitutes(), job.upload_lock, logger)?;
    let options = build_options(job.settings);
    // Which outputs this machine lacks cannot change while the build runs (Nix holds their
    // locks), and asking may cost a nix-store process: ask now, while the build runs.
    let mut expected: BTreeMap<String, nwh_drv::Output> =
        drv.outputs.values().filter(|o| !o.path.is_empty()).map(|o| (o.path.clone(), o.clone())).collect();
    let outputs: BTreeSet<String> = expected.keys().cloned().collect();
    let missing = std::thread::spawn(move || local::invalid(&outputs));
    let basic = drv.to_basic(&inputs);
    let by_path = session.store.builds_by_path(&basic);
    let result = session.build(job.drv_path, &basic, &options, logger)?;
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
    let fetched = session.bring_back(job.drv_path, &expected, logger, || drop(slot))?;
    session.finish()?;
    logger.msg(
        Level::Talkative,
        &format!(
            "nix-wasm-hook: built {} on '{}' in {:.2} s ({uploaded} paths uploaded, {fetched} outputs fetched); peak memory {} KiB",
            job.drv_path,
            job.uri,
            started.elapsed().as_secs_f64(),
            // Shows that closures are streamed rather than held.
            crate::timeline::peak_rss_kib().map_or("unknown".into(), |k| k.to_string()),
        ),
    );
    Ok(Finished::Built)
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
    pub fn open(master: &Master, uri: &str, log: std::os::fd::OwnedFd) -> Result<BuilderSession> {
        let (store, link) = StoreConn::open(master, log)?;
        crate::timeline::mark("session");
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
        crate::timeline::mark("uploaded");
        let _a = logger.start(Level::Talkative, Activity::Unknown, &format!("building on '{}'", self.uri));
        let result = self.store.build(drv_path, basic, options, logger);
        crate::timeline::mark("built");
        result
    }

    /// Unpacks and registers in the local store the outputs it lacks, `missing` (their paths,
    /// with what the derivation says of each; see [`register`]); returns how many. Nothing else
    /// the builder may name is fetched. `builder_done` is called as soon as the builder is
    /// needed no more (before the local registration).
    pub fn bring_back(
        &mut self,
        drv_path: &str,
        missing: &BTreeMap<String, nwh_drv::Output>,
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
        crate::timeline::mark("fetched");
        let clean = self.store.is_clean();
        drop(self.store);
        match self.link {
            Link::Spawned(remote) => {
                remote.finish()?;
            }
            // A stopping process vouches for nothing past the signal: the keeper ends the
            // session when the lease closes without it.
            Link::Lent(lease) if clean && !crate::stop::requested() => lease.give_back(),
            Link::Lent(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
