//! Outputs into the local store while Nix holds their path locks.
//!
//! Nix holds the lock file of every output while its hook runs, and `nix-store --import`
//! takes those locks again; it learned that its parent held them from `NIX_HELD_LOCKS` until
//! Nix 2.29 removed the variable, after which an import from a hook waits for ever. So the
//! work is done in two steps that take no path lock, on every version (docs/compatibility.md):
//! each NAR is unpacked at its path as `nix-store --restore PATH` would (in-process: a process
//! per output cost tens of milliseconds) and canonicalised as Nix canonicalises a store path
//! (read-only modes, time 1; [`canonicalise`]), and one `nix-store --load-db` makes all outputs
//! of the derivation valid at once, in one database transaction, with the hash of the bytes
//! that arrived. (`--register-validity --hash-given` reads the same text and canonicalises
//! itself, but up to Nix 2.26 at the path's name rather than where a chroot store keeps it,
//! so it fails for `--store /some/root`; `--load-db` leaves the files as they are.)
//!
//! Consistency: nothing is valid until every output is unpacked and its size and hash match
//! what the builder announced. A failure on the way removes what was unpacked; so does a hook
//! stopped by SIGTERM ([`stop`], from [`crate::core::stop`]), through a process-wide record of what is
//! unpacked and not registered; a hook killed (SIGKILL) on the way leaves an invalid path, which
//! the next attempt removes before unpacking (Nix's lock on the output means that nobody else
//! is writing it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{PipeWriter, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nwh_nar::NarSummary;
use nwh_serve::PathInfo;

use super::local_store::LocalStore;

/// One output as it will be registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrived {
    pub path: String,
    pub nar: NarSummary,
    pub references: BTreeSet<String>,
}

/// An output to bring back: its name and what the derivation says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub name: String,
    pub output: nwh_drv::Output,
}

/// Unpacks the outputs the builder announced (`infos`) and registers them together, with
/// `deriver` (the `.drv`) as their deriver. Each must be one of `expected` (the outputs this
/// machine lacks, by path, with what the derivation says of each: a fixed output's contents
/// are checked against its hash, a floating one's against the path the builder named for it,
/// before anything is valid). `fetch(path, announced size, sink)` streams one path's NAR into
/// `sink` and returns the size and hash of what it streamed; `fetched` is called once
/// everything has arrived, before the registration, which needs the builder no more.
pub fn outputs(
    infos: &[(String, PathInfo)],
    expected: &BTreeMap<String, Expected>,
    deriver: &str,
    mut fetch: impl FnMut(&str, u64, &mut PipeWriter) -> Result<NarSummary>,
    fetched: impl FnOnce(),
) -> Result<()> {
    let store = super::local_store::get()?;
    let result = (|| {
        let mut arrived = Vec::new();
        for (path, info) in infos {
            // Never anything else: not a path outside the store, not one valid here.
            let Expected { name, output } =
                expected.get(path).with_context(|| format!("{path} is not an output to bring back"))?;
            claim(store, path)?;
            let mut restore = Restore::start(&store.real(path))?;
            let fetched =
                fetch(path, info.nar_size, &mut restore.pipe).with_context(|| format!("receiving {path}"));
            let unpacked = restore.finish();
            let nar = match (fetched, unpacked) {
                (Ok(nar), Ok(restored)) => {
                    ensure!(nar == restored, "{path} was unpacked from other bytes than arrived");
                    nar
                }
                (Ok(_), Err(e)) | (Err(e), Ok(_)) => return Err(e),
                // Each side stops when the other does; which one began is not known here.
                (Err(fetching), Err(unpacking)) => anyhow::bail!("{fetching:#}; {unpacking:#}"),
            };
            agrees(path, &nar, info)?;
            if output.is_fixed() {
                super::content_address::check_fixed(path, output, &nar, &info.references)?;
            }
            if output.is_floating() {
                super::content_address::check_floating(
                    path,
                    &derivation_name(deriver)?,
                    name,
                    output,
                    &store.real(path),
                    &info.references,
                )?;
            }
            canonicalise(&store.real(path)).with_context(|| format!("canonicalising {path}"))?;
            arrived.push(Arrived { path: path.clone(), nar, references: info.references.clone() });
        }
        crate::core::timeline::mark("unpacked");
        fetched();
        register_validity(&arrived, deriver)?;
        crate::core::timeline::mark("registered");
        Ok(())
    })();
    if result.is_err() {
        remove_remains();
    }
    result
}

/// The name of the derivation at `drv_path` (`/nix/store/<hash>-<name>.drv`), after which
/// Nix names its outputs.
pub fn derivation_name(drv_path: &str) -> Result<String> {
    let base = drv_path.rsplit_once('/').map_or(drv_path, |(_, base)| base);
    base.split_once('-')
        .and_then(|(_, name)| name.strip_suffix(".drv"))
        .map(str::to_string)
        .with_context(|| format!("{drv_path} is not the store path of a derivation"))
}

/// Records `realisations` (floating content-addressed outputs, valid in the local store) in
/// the local store, as Nix's hook does with `registerDrvOutput`: through a `nix-daemon
/// --stdio` child on that store, which serves the connection in its own process and trusts it
/// (the hook runs as the store's owner), with `ca-derivations` added to its experimental
/// features, without which the store refuses. The same realisation again is accepted; another
/// path for an id the store already has is an error, in which Nix names both.
pub fn realisations(realisations: &[nwh_daemon::Realisation]) -> Result<()> {
    if realisations.is_empty() {
        return Ok(());
    }
    realisations_in(super::local_store::get()?, realisations)
}

fn realisations_in(store: &LocalStore, realisations: &[nwh_daemon::Realisation]) -> Result<()> {
    let mut child = store
        .nix_daemon_itself()
        .args(["--option", "extra-experimental-features", "ca-derivations", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nix-daemon --stdio on the local store")?;
    let mut stderr = child.stderr.take().expect("piped");
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let registered = (|| -> Result<()> {
        let (out, inp) = (child.stdout.take().expect("piped"), child.stdin.take().expect("piped"));
        let mut client = nwh_daemon::DaemonClient::handshake("the local nix-daemon --stdio", out, inp)?;
        for r in realisations {
            client
                .register_drv_output(r, &mut |_| {})
                .with_context(|| format!("registering {} as the realisation of {}", r.out_path, r.id))?;
        }
        Ok(())
    })();
    let status = child.wait();
    let said = said.join().unwrap_or_default();
    if let Err(e) = registered {
        // The store's own refusal says it all; anything else may be explained by what the
        // child wrote before it went (a store it could not open, say).
        let refused =
            e.chain().any(|c| matches!(c.downcast_ref(), Some(nwh_daemon::DaemonError::Remote { .. })));
        return Err(match said.trim() {
            said if refused || said.is_empty() => e,
            said => e.context(format!("the local nix-daemon --stdio said: {said}")),
        });
    }
    let status = status.context("waiting for nix-daemon --stdio")?;
    ensure!(status.success(), "nix-daemon --stdio on the local store failed ({status}): {}", said.trim());
    Ok(())
}

/// The bytes that arrived are what the builder said it would send.
fn agrees(path: &str, nar: &NarSummary, info: &PathInfo) -> Result<()> {
    ensure!(
        nar.size == info.nar_size,
        "the NAR of {path} from the builder is {} bytes, but the builder announced {}",
        nar.size,
        info.nar_size
    );
    // Builders older than serve protocol 2.4 announce no hash; the size check still applies.
    if !info.nar_hash.is_empty() {
        let announced = nwh_nar::hash::parse_sha256(&info.nar_hash).with_context(|| {
            format!("the builder announced an unreadable NAR hash for {path}: {:?}", info.nar_hash)
        })?;
        ensure!(
            announced == nar.sha256,
            "the NAR of {path} from the builder hashes to {}, but the builder announced {}",
            nar.nar_hash(),
            info.nar_hash
        );
    }
    Ok(())
}

/// The text `nix-store --load-db` (and `--register-validity --hash-given`) reads: per path its name, the NAR's
/// sha256 in base 16, the NAR size, the deriver, the number of references and the references,
/// each on its own line. Every line ends with a newline; without the last one Nix reports
/// "missing input".
pub fn registration(arrived: &[Arrived], deriver: &str) -> String {
    let mut text = String::new();
    for a in arrived {
        text.push_str(&format!(
            "{}\n{}\n{}\n{deriver}\n{}\n",
            a.path,
            a.nar.sha256_base16(),
            a.nar.size,
            a.references.len()
        ));
        for r in &a.references {
            text.push_str(r);
            text.push('\n');
        }
    }
    text
}

fn register_validity(arrived: &[Arrived], deriver: &str) -> Result<()> {
    let paths = arrived.iter().map(|a| a.path.clone()).collect();
    registering(&paths, || run_register_validity(arrived, deriver))
}

fn run_register_validity(arrived: &[Arrived], deriver: &str) -> Result<()> {
    let mut child = super::local_store::get()?
        .nix_store_itself()
        .arg("--load-db")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nix-store --load-db")?;
    let written = child.stdin.take().expect("piped").write_all(registration(arrived, deriver).as_bytes());
    super::local::finish(child, "nix-store --load-db")?;
    written.context("writing to nix-store --load-db")
}

/// What Nix makes of a path before it becomes valid: no write or set-id bits (files 0444, or
/// 0555 when executable; directories 0555) and every time 1 (1970-01-01 00:00:01). The owner
/// is already the store's: the hook unpacked the files itself. Symbolic links keep their mode
/// (Linux has none) and get the time too.
pub fn canonicalise(path: &Path) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    use std::os::unix::fs::PermissionsExt;
    let meta = path.symlink_metadata()?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            canonicalise(&entry?.path())?;
        }
    }
    if !meta.file_type().is_symlink() {
        let executable = meta.is_dir() || meta.permissions().mode() & 0o100 != 0;
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(if executable { 0o555 } else { 0o444 }),
        )?;
    }
    let one = Timespec { tv_sec: 1, tv_nsec: 0 };
    let times = Timestamps { last_access: one, last_modification: one };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// What this process has on disk of the outputs it brings back and does not know to be valid:
/// what [`stop`] removes. Whoever removes, unpacks at or registers one of these paths holds this
/// lock meanwhile, so that whenever [`stop`] holds it the record and the disk agree.
static UNREGISTERED: Mutex<Unregistered> =
    Mutex::new(Unregistered { store: None, invalid: BTreeSet::new(), unknown: BTreeSet::new() });

/// Held by the thread that unpacks an output while it writes to the disk, and given up while
/// it waits for bytes ([`Gated`]): once [`stop`] holds it, nothing more is written there.
static UNPACKING: Mutex<()> = Mutex::new(());

struct Unregistered {
    store: Option<&'static LocalStore>,
    /// Invalid for sure: unpacked (or being unpacked) where nothing valid was, and not offered
    /// to `--load-db` yet. Nothing else makes them valid while Nix holds their locks.
    invalid: BTreeSet<String>,
    /// Offered to a `--load-db` that did not succeed (it failed, or it was stopped
    /// with the hook): it may have committed before it ended, so only the database knows.
    unknown: BTreeSet<String>,
}

/// The record, locked. One that a panic left behind is believed only as far as it is safe:
/// what it says is invalid may have been in a registration, so the database is asked.
fn record() -> MutexGuard<'static, Unregistered> {
    UNREGISTERED.lock().unwrap_or_else(|poisoned| doubted(poisoned.into_inner()))
}

fn doubted(mut record: MutexGuard<'static, Unregistered>) -> MutexGuard<'static, Unregistered> {
    let invalid = std::mem::take(&mut record.invalid);
    record.unknown.extend(invalid);
    record
}

/// Records `path` as this process's, then removes its invalid remains: the caller knows it is
/// not valid and that Nix holds its lock, and unpacks there next.
fn claim(store: &'static LocalStore, path: &str) -> Result<()> {
    let mut record = record();
    record.store = Some(store);
    // Recorded first: remains that cannot all be removed are still this process's to remove.
    record.invalid.insert(path.to_string());
    remove_invalid(store, path)
}

/// Runs `register`, which may make `paths` valid, holding the record until it has ended: a
/// stop waits for it (Nix's SIGTERM ends its `nix-store` too) rather than remove a path that
/// is becoming valid. Afterwards the paths are valid and forgotten, or their validity unknown.
fn registering(paths: &BTreeSet<String>, register: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut record = record();
    let registered = register();
    for p in paths {
        record.invalid.remove(p);
        if registered.is_err() {
            record.unknown.insert(p.clone());
        }
    }
    registered
}

/// Removes the recorded paths that are not valid, after a failure on the way: the database is
/// asked about those whose registration may have succeeded, and what it cannot tell of is left
/// (the next attempt removes what is invalid).
fn remove_remains() {
    remove_recorded(&mut record(), None);
}

fn remove_recorded(record: &mut Unregistered, deadline: Option<Instant>) {
    let Some(store) = record.store else { return };
    let mut doomed = std::mem::take(&mut record.invalid);
    if !record.unknown.is_empty() {
        if let Ok(invalid) = super::local::invalid_by(&record.unknown, deadline) {
            doomed.extend(invalid);
            record.unknown.clear();
        }
    }
    for p in doomed {
        // Past the deadline the rest is left as a SIGKILL would leave it.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let _ = remove_invalid(store, &p);
    }
}

/// The locks a stopped process holds until it exits: no thread of it writes under an output or
/// registers one any more.
pub struct Stopped {
    _unpacking: MutexGuard<'static, ()>,
    _record: MutexGuard<'static, Unregistered>,
}

/// Stops unpacking and registering in this process for good and removes what it unpacked that
/// is not valid, all by `deadline`; the caller holds what this returns until it exits. None
/// when a lock was not had in time (a write or a registration did not end): then nothing is
/// removed, as after a SIGKILL, and the next attempt removes the invalid remains.
pub fn stop(deadline: Instant) -> Option<Stopped> {
    // The unpacking thread first: it is the only one that writes under an output while the
    // record's lock is free.
    let unpacking = lock_by(&UNPACKING, deadline)?.unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut record = match lock_by(&UNREGISTERED, deadline)? {
        Ok(record) => record,
        Err(poisoned) => doubted(poisoned.into_inner()),
    };
    remove_recorded(&mut record, Some(deadline));
    Some(Stopped { _unpacking: unpacking, _record: record })
}

type Locked<T> = std::sync::LockResult<MutexGuard<'static, T>>;

/// `mutex` locked, unless it is not free by `deadline`.
fn lock_by<T>(mutex: &'static Mutex<T>, deadline: Instant) -> Option<Locked<T>> {
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(Ok(guard)),
            Err(TryLockError::Poisoned(poisoned)) => return Some(Err(poisoned)),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// The bytes of a NAR for the thread that unpacks it, which holds [`UNPACKING`] but while it
/// waits for them: between two reads it writes to the disk.
struct Gated<R> {
    inner: R,
    held: Option<MutexGuard<'static, ()>>,
}

impl<R: Read> Read for Gated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.held = None;
        let read = self.inner.read(buf);
        self.held = Some(UNPACKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        read
    }
}

/// A NAR being unpacked at a path by a thread, as it is written into `pipe`: then `finish`.
struct Restore {
    pipe: PipeWriter,
    thread: std::thread::JoinHandle<Result<NarSummary>>,
}

impl Restore {
    /// Unpacks at `dest`, where the output is on disk.
    fn start(dest: &Path) -> Result<Restore> {
        let (reader, pipe) = std::io::pipe().context("making a pipe to unpack through")?;
        let dest = dest.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("restore".into())
            .spawn(move || {
                let gated = Gated { inner: reader, held: None };
                let mut reader = std::io::BufReader::with_capacity(nwh_nar::CHUNK_SIZE, gated);
                nwh_nar::restore(&mut reader, &dest).with_context(|| format!("unpacking {}", dest.display()))
            })
            .context("starting the thread that unpacks an output")?;
        Ok(Restore { pipe, thread })
    }

    /// Closes the pipe and waits: the size and hash of what was unpacked.
    fn finish(self) -> Result<NarSummary> {
        drop(self.pipe);
        self.thread.join().map_err(|_| anyhow::anyhow!("the thread unpacking an output panicked"))?
    }
}

/// Removes an output path that exists but is not valid: the remains of an unpacking that was
/// interrupted. The caller knows it is invalid and that Nix holds its lock; anything but a
/// store path of `store` is refused, whoever named it, and it is removed where the store is on
/// disk. Store paths are read-only once
/// canonicalised, and a non-root owner cannot delete inside a read-only directory, so
/// directories are made writable first.
pub fn remove_invalid(store: &LocalStore, path: &str) -> Result<()> {
    store.dir.check(path).with_context(|| format!("refusing to remove {path:?}"))?;
    let p = store.real(path);
    let Ok(meta) = p.symlink_metadata() else { return Ok(()) };
    if meta.is_dir() {
        make_writable(&p)?;
        std::fs::remove_dir_all(&p)
    } else {
        std::fs::remove_file(&p)
    }
    .with_context(|| format!("removing the invalid remains of {path} before unpacking it again"))
}

fn make_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = dir.symlink_metadata()?.permissions();
    perms.set_mode(perms.mode() | 0o700);
    std::fs::set_permissions(dir, perms)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrived(path: &str, refs: &[&str]) -> Arrived {
        Arrived {
            path: path.into(),
            nar: NarSummary { size: 120, sha256: [0xab; 32] },
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn the_registration_text_has_every_line_ended() {
        let text = registration(
            &[
                arrived("/nix/store/a-out", &["/nix/store/a-out", "/nix/store/b-dep"]),
                arrived("/nix/store/a-doc", &[]),
            ],
            "/nix/store/x.drv",
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            text,
            format!(
                "/nix/store/a-out\n{hex}\n120\n/nix/store/x.drv\n2\n/nix/store/a-out\n/nix/store/b-dep\n\
                 /nix/store/a-doc\n{hex}\n120\n/nix/store/x.drv\n0\n"
            )
        );
    }

    /// Against the host's Nix (root, a chroot store): registered, read back by Nix under the id
    /// it computes itself, the same again accepted, another path for the id refused with both
    /// paths named. Skipped without root or Nix.
    #[test]
    fn realisations_are_registered_through_a_local_daemon_child() {
        use std::process::Command;
        let root = rustix::process::geteuid().is_root();
        let nix = Command::new("nix-daemon").arg("--version").output().is_ok_and(|o| o.status.success());
        if !root || !nix {
            eprintln!("SKIPPED: needs root and Nix");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let chroot = dir.path().join("root");
        let store = LocalStore::parse(chroot.to_str().unwrap()).unwrap();
        let nix_cmd = |program: &str, args: &[&str]| {
            let out = Command::new(program)
                .args(["--store", chroot.to_str().unwrap()])
                .args(["--option", "extra-experimental-features", "nix-command ca-derivations"])
                .args(args)
                .env_remove("NIX_REMOTE")
                .output()
                .unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
            assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
            text(&out.stdout)
        };
        let expr = dir.path().join("ca.nix");
        std::fs::write(
            &expr,
            r#"builtins.derivation { name = "nwh-hook-realisation"; system = "x86_64-linux"; builder = "/bin/sh";
                 args = [ "-c" "echo hi > $out" ]; __contentAddressed = true;
                 outputHashMode = "recursive"; outputHashAlgo = "sha256"; }"#,
        )
        .unwrap();
        let drv_path = nix_cmd("nix-instantiate", &[expr.to_str().unwrap()]);
        let drv = nwh_drv::Derivation::read(store.real(&drv_path)).unwrap();
        let id = drv.drv_output_ids().unwrap()["out"].clone();
        let mut paths = Vec::new();
        for name in ["one", "two"] {
            let file = dir.path().join(name);
            std::fs::write(&file, name).unwrap();
            paths.push(nix_cmd("nix-store", &["--add", file.to_str().unwrap()]));
        }
        let r = |path: &str| nwh_daemon::Realisation { id: id.clone(), out_path: path.to_string() };
        realisations_in(&store, &[r(&paths[0])]).unwrap();
        realisations_in(&store, &[r(&paths[0])]).unwrap();
        assert_eq!(nix_cmd("nix", &["realisation", "info", &drv_path]), format!("{id} {}", paths[0]));
        let err = format!("{:#}", realisations_in(&store, &[r(&paths[1])]).unwrap_err());
        assert!(err.contains(&paths[0]) && err.contains(&paths[1]), "{err}");
        eprintln!("{err}");
    }

    #[test]
    fn outputs_are_named_after_the_derivation() {
        let name =
            derivation_name("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-nwh-floating-1.0.drv").unwrap();
        assert_eq!(name, "nwh-floating-1.0");
        assert!(derivation_name("/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-x").is_err());
    }

    #[test]
    fn a_nar_that_differs_from_the_announcement_is_refused() {
        let info = PathInfo {
            nar_size: 120,
            nar_hash: format!("sha256:{}", "ab".repeat(32)),
            ..PathInfo::default()
        };
        let good = NarSummary { size: 120, sha256: [0xab; 32] };
        assert!(agrees("/nix/store/a", &good, &info).is_ok());
        let short = NarSummary { size: 119, ..good };
        assert!(agrees("/nix/store/a", &short, &info).unwrap_err().to_string().contains("119 bytes"));
        let other = NarSummary { sha256: [0xcd; 32], ..good };
        assert!(agrees("/nix/store/a", &other, &info).unwrap_err().to_string().contains("hashes to"));
        let unannounced = PathInfo { nar_hash: String::new(), ..info };
        assert!(agrees("/nix/store/a", &other, &unannounced).is_ok());
    }

    /// A store whose directory is `dir` itself, as the tests' temporary stores are named.
    fn store_at(dir: &Path) -> &'static LocalStore {
        let dir = dir.to_str().unwrap();
        Box::leak(Box::new(LocalStore {
            uri: Some(dir.into()),
            dir: nwh_store_path::StoreDir::new(dir).unwrap(),
            real_dir: dir.into(),
            state_dir: dir.into(),
        }))
    }

    #[test]
    fn unpacked_files_are_canonicalised_as_nix_makes_them() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("bin")).unwrap();
        std::fs::write(out.join("bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(out.join("bin/run"), std::fs::Permissions::from_mode(0o4775)).unwrap();
        std::fs::write(out.join("data"), "x").unwrap();
        std::os::unix::fs::symlink("data", out.join("link")).unwrap();
        canonicalise(&out).unwrap();
        for (p, mode) in [("", 0o555), ("bin", 0o555), ("bin/run", 0o555), ("data", 0o444)] {
            let meta = out.join(p).symlink_metadata().unwrap();
            assert_eq!(meta.mode() & 0o7777, mode, "{p}");
            assert_eq!((meta.mtime(), meta.atime()), (1, 1), "{p}");
        }
        assert_eq!(out.join("link").symlink_metadata().unwrap().mtime(), 1);
        make_writable(&out).unwrap();
    }

    #[test]
    fn remains_are_removed_where_a_chroot_store_is_on_disk() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalStore::parse(root.path().to_str().unwrap()).unwrap();
        let path = "/nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out";
        let real = root.path().join("nix/store/0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        remove_invalid(&store, path).unwrap();
        assert!(!real.exists(), "removed under the root");
        assert!(root.path().join("nix/store").exists());
    }

    /// The record is the process's: the tests that use it take turns.
    static RECORD_TESTS: Mutex<()> = Mutex::new(());

    /// An output claimed in a store of its own and unpacked there (read-only, as canonical).
    fn unpacked_output() -> (tempfile::TempDir, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let out = dir.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        let path = out.to_str().unwrap().to_string();
        claim(store, &path).unwrap();
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
        (dir, path)
    }

    /// A registration of `path` that succeeds after `taking`, already under way on return.
    fn registration_running(path: &str, taking: Duration) -> std::thread::JoinHandle<Result<()>> {
        let (started, running) = std::sync::mpsc::channel();
        let paths = BTreeSet::from([path.to_string()]);
        let registration = std::thread::spawn(move || {
            registering(&paths, || {
                started.send(()).unwrap();
                std::thread::sleep(taking);
                Ok(())
            })
        });
        running.recv().unwrap();
        registration
    }

    fn soon() -> Instant {
        Instant::now() + crate::core::stop::BUDGET
    }

    #[test]
    fn a_stop_removes_what_was_unpacked_and_not_registered() {
        let _turn = RECORD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_dir, path) = unpacked_output();
        let stopped = stop(soon());
        assert!(stopped.is_some());
        assert!(!Path::new(&path).exists(), "the unregistered output is gone");
    }

    #[test]
    fn a_stop_mid_unpacking_removes_the_output_and_nothing_is_written_after() {
        let _turn = RECORD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let source = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(source.path().join(name), name.repeat(100_000)).unwrap();
        }
        let mut nar = Vec::new();
        nwh_nar::dump::dump(source.path(), &mut nar).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let out = dir.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        let path = out.to_str().unwrap();
        claim(store, path).unwrap();
        let Restore { mut pipe, thread } = Restore::start(&out).unwrap();
        let rest = nar.split_off(nar.len() / 2);
        pipe.write_all(&nar).unwrap();
        while !out.join("b").exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stopped = stop(soon());
        assert!(stopped.is_some());
        assert!(!out.exists(), "the output being unpacked is gone");
        // The rest arrives (more than the pipe holds, so from a thread of its own); the
        // unpacking thread, parked, writes none of it.
        let sender = std::thread::spawn(move || drop(pipe.write_all(&rest)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!out.exists(), "nothing is written after the stop");
        assert!(!thread.is_finished(), "the unpacking thread is held, not failing on a missing directory");
        drop(stopped);
        let unpacked = thread.join().unwrap();
        assert!(unpacked.is_err(), "once let go, it finds its output gone");
        sender.join().unwrap();
        assert!(!out.exists());
    }

    #[test]
    fn a_stop_waits_for_the_registration_and_spares_what_it_made_valid() {
        let _turn = RECORD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_dir, path) = unpacked_output();
        let registration = registration_running(&path, Duration::from_millis(100));
        let asked = Instant::now();
        let stopped = stop(soon());
        assert!(asked.elapsed() >= Duration::from_millis(50), "the stop waited for the registration");
        assert!(stopped.is_some());
        assert!(Path::new(&path).exists(), "a registered output is the store's");
        drop(stopped);
        registration.join().unwrap().unwrap();
    }

    #[test]
    fn a_stop_that_cannot_wait_long_enough_removes_nothing() {
        let _turn = RECORD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_dir, path) = unpacked_output();
        let registration = registration_running(&path, Duration::from_millis(700));
        let asked = Instant::now();
        assert!(stop(Instant::now() + Duration::from_millis(100)).is_none());
        assert!(asked.elapsed() < Duration::from_millis(400), "{:?}", asked.elapsed());
        assert!(Path::new(&path).exists(), "it might have become valid");
        registration.join().unwrap().unwrap();
    }

    #[test]
    fn a_path_whose_registration_failed_is_removed_only_once_known_invalid() {
        let _turn = RECORD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_dir, path) = unpacked_output();
        let paths = BTreeSet::from([path.clone()]);
        assert!(registering(&paths, || anyhow::bail!("stopped")).is_err());
        // The database of this machine cannot tell about a path outside its store: the path
        // may have been made valid, so it stays.
        let stopped = stop(soon());
        assert!(stopped.is_some());
        assert!(Path::new(&path).exists());
        drop(stopped);
        record().unknown.clear();
    }

    #[test]
    fn remains_are_removed_even_when_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let out = dir.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/f"), "x").unwrap();
        for d in [out.join("sub"), out.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_invalid(store, out.to_str().unwrap()).unwrap();
        assert!(!out.exists());
        // Absent is fine: nothing to remove.
        remove_invalid(store, out.to_str().unwrap()).unwrap();
        // Nothing outside the store, whatever names it.
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        std::fs::create_dir(&victim).unwrap();
        for bad in ["/", "relative/x", victim.to_str().unwrap(), &format!("{}/../x", dir.path().display())] {
            assert!(remove_invalid(store, bad).is_err(), "{bad}");
        }
        assert!(victim.exists());
    }
}
