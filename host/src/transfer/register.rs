//! Outputs into the local store while Nix holds their path locks.
//!
//! Nix holds the lock file of every output while its hook runs, and `nix-store --import`
//! takes those locks again; it learned that its parent held them from `NIX_HELD_LOCKS` until
//! Nix 2.29 removed the variable, after which an import from a hook waits for ever. So the
//! work is done in two steps that take no path lock, on every version (docs/compatibility.md):
//! each NAR is unpacked at its path as `nix-store --restore PATH` would (in-process: a process
//! per output cost tens of milliseconds), and one `nix-store --register-validity --hash-given`
//! makes all outputs of the derivation valid at once, in one database transaction, with the
//! hash of the bytes that arrived; it also canonicalises them (modes, times, owner).
//!
//! Consistency: nothing is valid until every output is unpacked and its size and hash match
//! what the builder announced. A failure on the way removes what was unpacked; a hook killed
//! on the way leaves an invalid path, which the next attempt removes before unpacking (Nix's
//! lock on the output means that nobody else is writing it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{PipeWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use nwh_nar::NarSummary;
use nwh_serve::PathInfo;
use nwh_store_path::StoreDir;

/// One output as it will be registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrived {
    pub path: String,
    pub nar: NarSummary,
    pub references: BTreeSet<String>,
}

/// Unpacks the outputs the builder announced (`infos`) and registers them together, with
/// `deriver` (the `.drv`) as their deriver. Each must be one of `expected` (the outputs this
/// machine lacks, with what the derivation says of each: a fixed output's contents are
/// checked against its hash). `fetch(path, announced size, sink)` streams one path's NAR into
/// `sink` and returns the size and hash of what it streamed; `fetched` is called once
/// everything has arrived, before the registration, which needs the builder no more.
pub fn outputs(
    infos: &[(String, PathInfo)],
    expected: &BTreeMap<String, nwh_drv::Output>,
    deriver: &str,
    mut fetch: impl FnMut(&str, u64, &mut PipeWriter) -> Result<NarSummary>,
    fetched: impl FnOnce(),
) -> Result<()> {
    let store = super::local::store_dir()?;
    let mut unpacked: Vec<String> = Vec::new();
    let result = (|| {
        let mut arrived = Vec::new();
        for (path, info) in infos {
            // Never anything else: not a path outside the store, not one valid here.
            let output =
                expected.get(path).with_context(|| format!("{path} is not an output to bring back"))?;
            remove_invalid(&store, path)?;
            unpacked.push(path.clone());
            let mut restore = Restore::start(path)?;
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
            arrived.push(Arrived { path: path.clone(), nar, references: info.references.clone() });
        }
        crate::timeline::mark("unpacked");
        fetched();
        register_validity(&arrived, deriver)?;
        crate::timeline::mark("registered");
        Ok(())
    })();
    if result.is_err() {
        // Only what is still invalid is ours to remove; a valid path is the store's.
        let left: BTreeSet<String> = unpacked.into_iter().collect();
        if let Ok(invalid) = super::local::invalid(&left) {
            for p in invalid {
                let _ = remove_invalid(&store, &p);
            }
        }
    }
    result
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

/// The text `nix-store --register-validity --hash-given` reads: per path its name, the NAR's
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
    let mut child = local_store_command()
        .args(["--register-validity", "--hash-given"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nix-store --register-validity")?;
    let written = child.stdin.take().expect("piped").write_all(registration(arrived, deriver).as_bytes());
    super::local::finish(child, "nix-store --register-validity")?;
    written.context("writing to nix-store --register-validity")
}

/// `nix-store` on the local store itself: registering validity is an operation of the local
/// store, which a daemon connection does not offer. The hook runs as the store's owner (root
/// under the daemon), so it may.
fn local_store_command() -> Command {
    let mut c = Command::new("nix-store");
    c.env_remove("NIX_REMOTE");
    c
}

/// A NAR being unpacked at a path by a thread, as it is written into `pipe`: then `finish`.
struct Restore {
    pipe: PipeWriter,
    thread: std::thread::JoinHandle<Result<NarSummary>>,
}

impl Restore {
    fn start(path: &str) -> Result<Restore> {
        let (reader, pipe) = std::io::pipe().context("making a pipe to unpack through")?;
        let dest = path.to_string();
        let thread = std::thread::Builder::new()
            .name("restore".into())
            .spawn(move || {
                let mut reader = std::io::BufReader::with_capacity(nwh_nar::CHUNK_SIZE, reader);
                nwh_nar::restore(&mut reader, Path::new(&dest)).with_context(|| format!("unpacking {dest}"))
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
/// store path of `store` is refused, whoever named it. Store paths are read-only once
/// canonicalised, and a non-root owner cannot delete inside a read-only directory, so
/// directories are made writable first.
pub fn remove_invalid(store: &StoreDir, path: &str) -> Result<()> {
    store.check(path).with_context(|| format!("refusing to remove {path:?}"))?;
    let p = Path::new(path);
    let Ok(meta) = p.symlink_metadata() else { return Ok(()) };
    if meta.is_dir() {
        make_writable(p)?;
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
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

    #[test]
    fn remains_are_removed_even_when_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = StoreDir::new(dir.path().to_str().unwrap()).unwrap();
        let out = dir.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/f"), "x").unwrap();
        for d in [out.join("sub"), out.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_invalid(&store, out.to_str().unwrap()).unwrap();
        assert!(!out.exists());
        // Absent is fine: nothing to remove.
        remove_invalid(&store, out.to_str().unwrap()).unwrap();
        // Nothing outside the store, whatever names it.
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("0c9g1b2l8nwn1wrmvfhh9hn9kqi1h3ff-out");
        std::fs::create_dir(&victim).unwrap();
        for bad in ["/", "relative/x", victim.to_str().unwrap(), &format!("{}/../x", dir.path().display())] {
            assert!(remove_invalid(&store, bad).is_err(), "{bad}");
        }
        assert!(victim.exists());
    }
}
