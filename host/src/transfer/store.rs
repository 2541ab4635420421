//! The conversation with a builder's store, in the protocol its URI names: Nix's serve
//! protocol (`ssh://`, `nix-store --serve --write`) or its worker protocol (`ssh-ng://`,
//! `nix-daemon --stdio`). The rest of the transfer asks the same questions of either.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nwh_daemon::{DaemonClient, Field, LogMessage};
use nwh_nar::NarSummary;
use nwh_serve::{BuildOptions, BuildResult, PathInfo, ServeClient};

use super::ssh::{Connection, Remote};
use super::target::Protocol;
use super::{from_builder, local};
use crate::core::log::Logger;

/// Nix's result types a daemon sends during a build: a log line of the build, the start of a
/// build phase, a log line of the post-build hook.
const BUILD_LOG_LINE: u64 = 101;
const SET_PHASE: u64 = 104;
const POST_BUILD_LOG_LINE: u64 = 107;

/// How this process holds the builder's store program: started for this build, or lent by
/// the keeper of warm sessions ([`super::warm`]).
pub enum Link {
    Spawned(Box<Remote>),
    Lent(super::warm::Lease),
}

/// A builder's store, spoken to in its protocol.
pub enum StoreConn {
    Serve(ServeClient<PipeReader, PipeWriter>),
    Daemon {
        client: DaemonClient<PipeReader, PipeWriter>,
        /// The build log: where the daemon's messages and the build's lines go, as the serve
        /// protocol's builder writes them to its stderr.
        log: File,
    },
}

impl StoreConn {
    /// Borrows a warm session of the builder's store program (`ssh://` only) or starts it
    /// through `master`; its stderr (and, for a daemon, its messages and build log lines) go to
    /// `log`.
    pub fn open(conn: &Connection, log: OwnedFd) -> Result<(StoreConn, Link)> {
        let target = &conn.target;
        let args = target.store_args(true);
        if target.protocol == Protocol::Serve {
            if let Some(lent) = super::warm::borrow(conn, &target.remote_program, &args, &log) {
                let conn = ServeClient::resume(target.display(), lent.stdout, lent.stdin, lent.version);
                return Ok((StoreConn::Serve(conn), Link::Lent(lent.lease)));
            }
        }
        let log_file = File::from(log.try_clone()?);
        let remote = conn.spawn(&target.remote_program, &args, log)?;
        let (stdout, stdin) = (remote.stdout.try_clone()?, remote.stdin.try_clone()?);
        let conn = match target.protocol {
            Protocol::Serve => StoreConn::Serve(ServeClient::handshake(target.display(), stdout, stdin)?),
            Protocol::Daemon => {
                let mut log = log_file;
                let client = DaemonClient::handshake_logged(target.display(), stdout, stdin, &mut |m| {
                    text(&mut log, &m)
                })?;
                StoreConn::Daemon { client, log }
            }
        };
        Ok((conn, Link::Spawned(Box::new(remote))))
    }

    /// Every command ended where its protocol expects: the session could serve another build.
    pub fn is_clean(&self) -> bool {
        match self {
            StoreConn::Serve(c) => c.is_clean(),
            StoreConn::Daemon { .. } => false,
        }
    }

    pub fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        substitute: bool,
    ) -> Result<BTreeSet<String>> {
        let valid = match self {
            StoreConn::Serve(c) => c.query_valid_paths(paths, false, substitute)?,
            StoreConn::Daemon { client, log } => {
                client.query_valid_paths(paths, substitute, &mut |m| text(log, &m))?
            }
        };
        from_builder::valid_paths(self.builder(), paths, valid)
    }

    /// The builder's infos of those of `paths` it has, as the serve protocol carries them,
    /// each path in them checked ([`from_builder::path_infos`]).
    pub fn query_path_infos(&mut self, paths: &BTreeSet<String>) -> Result<Vec<(String, PathInfo)>> {
        let infos = self.unchecked_path_infos(paths)?;
        from_builder::path_infos(&local::store_dir()?, self.builder(), paths, infos)
    }

    /// The builder's name in messages: its store URI's host part, as each client knows it.
    fn builder(&self) -> &str {
        match self {
            StoreConn::Serve(c) => c.host(),
            StoreConn::Daemon { client, .. } => client.host(),
        }
    }

    fn unchecked_path_infos(&mut self, paths: &BTreeSet<String>) -> Result<Vec<(String, PathInfo)>> {
        match self {
            StoreConn::Serve(c) => Ok(c.query_path_infos(paths)?),
            StoreConn::Daemon { client, log } => {
                let mut infos = Vec::new();
                for path in paths {
                    let Some(info) = client.query_path_info(path, &mut |m| text(log, &m))? else { continue };
                    let sha256 = info.nar_sha256().with_context(|| {
                        format!("the daemon's NAR hash of {path} ({}) is no sha256", info.nar_hash)
                    })?;
                    infos.push((
                        path.clone(),
                        PathInfo {
                            deriver: info.deriver,
                            references: info.references,
                            download_size: info.nar_size,
                            nar_size: info.nar_size,
                            nar_hash: format!("sha256:{}", nwh_nar::hash::nix32_encode(&sha256)),
                            ca: info.ca,
                            sigs: info.sigs,
                        },
                    ));
                }
                Ok(infos)
            }
        }
    }

    /// Streams the NAR of `path` on the builder into `sink`.
    pub fn dump(&mut self, path: &str, sink: &mut dyn Write) -> Result<NarSummary> {
        Ok(match self {
            StoreConn::Serve(c) => c.dump_store_path(path, &mut &mut *sink)?,
            StoreConn::Daemon { client, log } => client.nar_from_path(path, sink, &mut |m| text(log, &m))?,
        })
    }

    /// Adds one local path, whose references the builder already has or was sent before; the
    /// builder may still be storing it when this returns ([`StoreConn::added`] waits).
    pub fn add(&mut self, path: &str, info: &local::PathInfo) -> Result<()> {
        match self {
            // `AddToStoreNar` (serve protocol 2.5 and later) streams into the store as it
            // arrives, and its reply is read later, so the builder stores one path while the
            // next is on its way; `ImportPaths` makes the server hold each NAR in memory first.
            StoreConn::Serve(c) if c.supports_add_to_store_nar() => {
                let info = local::serve_path_info(path, info)?;
                let real = super::local_store::get()?.real(path);
                Ok(c.send_nar_written(path, &info, |mut w| nwh_nar::dump::dump(&real, &mut w).map(drop))?)
            }
            StoreConn::Serve(c) => {
                let mut export = local::export(path, info)?;
                let sent = c.import_paths(&mut export.reader).map(drop).map_err(Into::into);
                export.finish_after(sent)
            }
            StoreConn::Daemon { client, log } => {
                let untrusted = client.trusted() == Some(false);
                add_to_daemon(client, path, info, untrusted, &mut |m| text(log, &m))
            }
        }
    }

    /// Waits until the builder has stored every path [`StoreConn::add`] sent.
    pub fn added(&mut self) -> Result<()> {
        match self {
            StoreConn::Serve(c) => Ok(c.wait_for_uploads()?),
            StoreConn::Daemon { .. } => Ok(()),
        }
    }

    /// Whether [`StoreConn::build`] asks for `basic` by path (`BuildPathsWithResults`), as a
    /// daemon that does not trust us builds an input-addressed derivation only so.
    pub fn builds_by_path(&self, basic: &nwh_drv::BasicDerivation) -> bool {
        matches!(self, StoreConn::Daemon { client, .. } if by_path(client, basic))
    }

    /// Builds on the builder and waits; the build's log goes to the build log, a daemon's
    /// activities to Nix through `logger`. `options` go with the build over the serve
    /// protocol, as Nix's hook sends them; a daemon gets none, as from Nix's hook.
    pub fn build(
        &mut self,
        drv_path: &str,
        basic: &nwh_drv::BasicDerivation,
        options: &BuildOptions,
        logger: &Logger,
    ) -> Result<BuildResult> {
        match self {
            StoreConn::Serve(c) => Ok(c.build_derivation(drv_path, basic, options)?),
            StoreConn::Daemon { client, log } => {
                let mut forward = |m: LogMessage| relay(log, logger, m);
                // No `SetOptions`, as from Nix's own hook (its `ssh-ng://` store's
                // `setOptions` is empty, in 2.8 as in 2.34): the daemon builds under its own
                // settings. Any `SetOptions` would replace the daemon's `cores`, `max-jobs`,
                // `keep-going`, … with ours, and a daemon that does not trust us warns of each
                // restricted setting in it (`max-build-log-size`, say), which Nix's hook
                // never makes it do. `options` (the serve protocol's) do not apply here.
                let result = if by_path(client, basic) {
                    // A daemon that does not trust us builds an input-addressed derivation
                    // only from its own copy of the `.drv`; current Nix's hook then sends
                    // the derivation's closure and asks for the build by path, and so do we.
                    let drvs = local::requisites(&BTreeSet::from([drv_path.to_string()]))?;
                    let valid = client.query_valid_paths(&drvs, false, &mut forward)?;
                    let infos = local::path_infos(&drvs.difference(&valid).cloned().collect())?;
                    for path in local::topo_order(&infos) {
                        add_to_daemon(client, &path, &infos[&path], true, &mut forward)?;
                    }
                    let built = format!("{drv_path}!*");
                    let mut results = client.build_paths_with_results(
                        std::slice::from_ref(&built),
                        nwh_daemon::BuildMode::Normal,
                        &mut forward,
                    )?;
                    results
                        .pop()
                        .map(|(_, r)| r)
                        .with_context(|| format!("the daemon said nothing of {built}"))?
                } else {
                    client.build_derivation(drv_path, basic, nwh_daemon::BuildMode::Normal, &mut forward)?
                };
                Ok(result.to_serve())
            }
        }
    }
}

/// A daemon that says it does not trust us builds an input-addressed derivation only from its
/// own copy of the `.drv`, asked for by path.
fn by_path(client: &DaemonClient<PipeReader, PipeWriter>, basic: &nwh_drv::BasicDerivation) -> bool {
    let input_addressed = basic.outputs.values().all(|o| !o.path.is_empty() && o.hash_algo.is_empty());
    client.trusted() == Some(false) && input_addressed
}

/// Adds one local path to a daemon; with `content_address`, says how the path was made, which
/// is what lets a daemon that does not trust us accept it without a signature.
fn add_to_daemon(
    client: &mut DaemonClient<PipeReader, PipeWriter>,
    path: &str,
    info: &local::PathInfo,
    content_address: bool,
    log: &mut dyn FnMut(LogMessage),
) -> Result<()> {
    let daemon_info = nwh_daemon::PathInfo {
        deriver: info.deriver.clone(),
        nar_hash: info.nar_hash.clone(),
        references: info.references.clone(),
        registration_time: 0,
        nar_size: info.nar_size,
        ultimate: false,
        sigs: BTreeSet::new(),
        ca: content_address.then(|| super::content_address::of(path, info)).flatten(),
    };
    let mut nar = local::nar(path)?;
    let sent = client.add_to_store_nar(path, &daemon_info, &mut nar.reader, log).map_err(Into::into);
    nar.finish_after(sent)
}

/// A daemon's log frame where only text can go: into the build log.
fn text(log: &mut File, m: &LogMessage) {
    let line = match m {
        LogMessage::Next(text) => text.clone(),
        LogMessage::Result { result_type: BUILD_LOG_LINE | POST_BUILD_LOG_LINE, fields, .. } => {
            match fields.first() {
                Some(Field::String(line)) => format!("{line}\n"),
                _ => return,
            }
        }
        _ => return,
    };
    // A build log that cannot be written loses nothing the build depends on.
    let _ = log.write_all(line.as_bytes());
}

/// A daemon's log frame during a build: text into the build log, activities to Nix as if
/// they were the hook's own (in hook mode; a builder front-end has no way to show them).
fn relay(log: &mut File, logger: &Logger, m: LogMessage) {
    let json = |fields: &[Field]| -> Vec<serde_json::Value> {
        fields
            .iter()
            .map(|f| match f {
                Field::Int(n) => (*n).into(),
                Field::String(s) => s.as_str().into(),
            })
            .collect()
    };
    match &m {
        // Until a hook writes its build log, Nix 2.26 reads the first field of every `@nix`
        // message whose type number is that of a phase result, activities included (type
        // 104 is also "builds"), and aborts when there is none.
        LogMessage::StartActivity { activity_type: SET_PHASE, fields, .. }
        | LogMessage::Result { result_type: SET_PHASE, fields, .. }
            if fields.is_empty() => {}
        LogMessage::StartActivity { id, level, activity_type, text, fields, parent } => {
            logger.relay(serde_json::json!({
                "action": "start", "id": id, "level": level, "type": activity_type, "text": text,
                "fields": json(fields), "parent": parent,
            }))
        }
        LogMessage::StopActivity { id } => logger.relay(serde_json::json!({"action": "stop", "id": id})),
        LogMessage::Result { id, result_type, fields }
            if !matches!(*result_type, BUILD_LOG_LINE | POST_BUILD_LOG_LINE) =>
        {
            logger.relay(serde_json::json!({
                "action": "result", "id": id, "type": result_type, "fields": json(fields),
            }))
        }
        _ => text(log, &m),
    }
}
