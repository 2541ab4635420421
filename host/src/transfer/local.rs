//! The local store, through Nix's own `nix-store` (the hook is not libstore): which paths are
//! valid, their sizes and references, and their export stream. Outputs come back through
//! [`super::register`]. Which store that is, and where it is on disk: [`super::local_store`].

use std::collections::BTreeSet;
use std::io::{BufWriter, PipeReader, PipeWriter, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The directory of the local store: where outputs are unpacked, and the only one any path a
/// builder names may be in.
pub fn store_dir() -> Result<nwh_store_path::StoreDir> {
    Ok(super::local_store::get()?.dir.clone())
}

/// The subset of `paths` that is not valid in the local store. A valid path is on disk, so
/// one that is not there is invalid without asking: most outputs of a build that is about to
/// run are, and a `nix-store` process costs some 20 ms of CPU (mostly its dynamic linking),
/// which on a busy machine is what bounds how many builds per second it dispatches.
pub fn invalid(paths: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    invalid_by(paths, None)
}

/// [`invalid`], by `deadline` when there is one: the `nix-store` asked is killed then, and
/// that is an error. For a hook being stopped, which must not wait on a database that is busy.
pub fn invalid_by(paths: &BTreeSet<String>, deadline: Option<Instant>) -> Result<BTreeSet<String>> {
    let (mut invalid, present) = on_disk(paths)?;
    if present.is_empty() {
        return Ok(invalid);
    }
    let args = ["--check-validity", "--print-invalid"];
    invalid.extend(match deadline {
        None => store_paths(&args, &present)?,
        Some(deadline) => store_paths_by(&args, &present, deadline)?,
    });
    Ok(invalid)
}

/// [`store_paths`] for an answer of a few paths (it fits in the pipe, so it is read after the
/// exit), given up at `deadline`.
fn store_paths_by(args: &[&str], paths: &BTreeSet<String>, deadline: Instant) -> Result<BTreeSet<String>> {
    let what = format!("nix-store {}", args.join(" "));
    let mut child = super::local_store::get()?
        .nix_store()
        .args(args)
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not answer in time");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    let mut out = String::new();
    child.stdout.take().context("no stdout")?.read_to_string(&mut out)?;
    Ok(out.lines().map(str::to_string).collect())
}

/// `paths` split into those not on disk and those on disk.
pub fn on_disk(paths: &BTreeSet<String>) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let store = super::local_store::get()?;
    Ok(paths.iter().cloned().partition(
        |p| matches!(store.real(p).symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound),
    ))
}

/// `paths` and everything they refer to, directly or not.
pub fn requisites(paths: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    store_paths(&["--query", "--requisites"], paths)
}

/// The store paths `nix-store ARGS PATHS` prints, one a line.
fn store_paths(args: &[&str], paths: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    let what = format!("nix-store {}", args.join(" "));
    let out = super::local_store::get()?
        .nix_store()
        .args(args)
        .args(paths)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// What the upload needs to know of a local path.
#[derive(Clone, Debug, PartialEq)]
pub struct PathInfo {
    /// As `--dump-db` spells it: base 16, no prefix.
    pub nar_hash: String,
    pub nar_size: u64,
    pub deriver: Option<String>,
    pub references: BTreeSet<String>,
}

/// Sizes and references of valid local paths, in one `nix-store --dump-db` (its registration
/// format: path, hash, NAR size, deriver, count of references, references).
pub fn path_infos(paths: &BTreeSet<String>) -> Result<std::collections::BTreeMap<String, PathInfo>> {
    let out = super::local_store::get()?
        .nix_store()
        .arg("--dump-db")
        .args(paths)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running nix-store --dump-db")?;
    if !out.status.success() {
        bail!("nix-store --dump-db failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_registrations(&String::from_utf8_lossy(&out.stdout))
}

fn parse_registrations(text: &str) -> Result<std::collections::BTreeMap<String, PathInfo>> {
    let mut lines = text.lines();
    let mut infos = std::collections::BTreeMap::new();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let mut next =
            |what: &str| lines.next().with_context(|| format!("nix-store --dump-db: no {what} for {path}"));
        let nar_hash = next("hash")?.to_string();
        let nar_size =
            next("size")?.parse().with_context(|| format!("nix-store --dump-db: size of {path}"))?;
        let deriver = Some(next("deriver")?).filter(|d| !d.is_empty()).map(str::to_string);
        let count: usize = next("reference count")?.parse()?;
        let references = (0..count).map(|_| next("reference").map(str::to_string)).collect::<Result<_>>()?;
        infos.insert(path.to_string(), PathInfo { nar_hash, nar_size, deriver, references });
    }
    Ok(infos)
}

/// Path infos of valid local paths as the serve protocol carries them (no content address or
/// signatures: `--dump-db` has neither).
pub fn serve_path_infos(paths: &BTreeSet<String>) -> Result<Vec<(String, nwh_serve::PathInfo)>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    path_infos(paths)?
        .into_iter()
        .map(|(path, info)| Ok((path.clone(), serve_path_info(&path, &info)?)))
        .collect()
}

/// One path's info as the serve protocol carries it.
pub fn serve_path_info(path: &str, info: &PathInfo) -> Result<nwh_serve::PathInfo> {
    let sha256 = nwh_nar::hash::parse_sha256(&info.nar_hash)
        .with_context(|| format!("nix-store --dump-db: unreadable hash {:?} of {path}", info.nar_hash))?;
    Ok(nwh_serve::PathInfo {
        deriver: info.deriver.clone(),
        references: info.references.clone(),
        download_size: info.nar_size,
        nar_size: info.nar_size,
        nar_hash: format!("sha256:{}", nwh_nar::hash::nix32_encode(&sha256)),
        ca: None,
        sigs: BTreeSet::new(),
    })
}

/// Dependencies first, so that the builder can register each path as it arrives.
pub fn topo_order(infos: &std::collections::BTreeMap<String, PathInfo>) -> Vec<String> {
    fn visit(
        p: &str,
        infos: &std::collections::BTreeMap<String, PathInfo>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(p.to_string()) {
            return;
        }
        for r in &infos[p].references {
            if r != p && infos.contains_key(r) {
                visit(r, infos, seen, out);
            }
        }
        out.push(p.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in infos.keys() {
        visit(p, infos, &mut seen, &mut out);
    }
    out
}

/// A local store path's NAR (or its export-stream entry), written by a thread into a pipe as
/// the files are read, so that it is sent while it is made and never held whole. In-process:
/// a `nix-store --dump` per path cost a process start each, and hashed what the receiver
/// hashes anyway.
pub struct Nar {
    path: String,
    pub reader: PipeReader,
    writer: std::thread::JoinHandle<std::io::Result<()>>,
}

/// The NAR of `path`, as `nix-store --dump` writes it.
pub fn nar(path: &str) -> Result<Nar> {
    let real = super::local_store::get()?.real(path);
    stream(path, move |out| nwh_nar::dump::dump(&real, out).map(drop))
}

/// `path` as one entry of an export stream (NAR, then its registration), ended as a stream of
/// that one path: what `nix-store --export PATH` writes, for builders older than `AddToStoreNar`.
pub fn export(path: &str, info: &PathInfo) -> Result<Nar> {
    let (references, deriver) = (info.references.clone(), info.deriver.clone());
    let owned = path.to_string();
    let real = super::local_store::get()?.real(path);
    stream(path, move |out| {
        nwh_nar::write_export_entry_header(out)?;
        nwh_nar::dump::dump(&real, out)?;
        nwh_nar::write_export_entry_trailer(out, &owned, &references, deriver.as_deref())?;
        nwh_nar::write_export_end(out)
    })
}

fn stream(
    path: &str,
    write: impl FnOnce(&mut BufWriter<PipeWriter>) -> std::io::Result<()> + Send + 'static,
) -> Result<Nar> {
    let (reader, pipe) = std::io::pipe().context("making a pipe for a NAR")?;
    let writer = std::thread::Builder::new()
        .name("nar".into())
        .spawn(move || {
            let mut out = BufWriter::with_capacity(nwh_nar::CHUNK_SIZE, pipe);
            write(&mut out)?;
            out.flush()
        })
        .context("starting the thread that writes a NAR")?;
    Ok(Nar { path: path.to_string(), reader, writer })
}

impl Nar {
    /// Waits for the writer; its error (a file that vanished or changed) explains a NAR the
    /// receiver found short, so it comes first.
    pub fn finish(self) -> Result<()> {
        drop(self.reader);
        match self.writer.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e).with_context(|| format!("reading {} from the local store", self.path)),
            Err(_) => bail!("the thread writing the NAR of {} panicked", self.path),
        }
    }

    /// `result` of sending this NAR, with the writer's error in front when there was one.
    pub fn finish_after<T>(self, result: Result<T>) -> Result<T> {
        match (result, self.finish()) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            (Err(sent), Ok(())) => Err(sent),
            (Err(sent), Err(read)) => Err(read.context(format!("{sent:#}"))),
        }
    }
}

/// Waits for a `nix-store` child and turns a failure into an error with its own words.
pub(super) fn finish(mut child: Child, what: &str) -> Result<()> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed ({status}): {}", err.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn registrations_and_order() {
        let text = "/nix/store/b-top\nabc\n392\n/nix/store/x.drv\n1\n/nix/store/a-dep\n/nix/store/a-dep\ndef\n120\n\n0\n";
        let infos = super::parse_registrations(text).unwrap();
        assert_eq!(infos["/nix/store/b-top"].nar_size, 392);
        assert_eq!(infos["/nix/store/a-dep"].references.len(), 0);
        // `b-top` sorts first by name but depends on `a-dep`... and `z` depends on `b-top`.
        let mut infos = infos;
        infos.insert(
            "/nix/store/0-z".into(),
            super::PathInfo {
                nar_hash: String::new(),
                nar_size: 1,
                deriver: None,
                references: ["/nix/store/b-top".to_string()].into(),
            },
        );
        assert_eq!(super::topo_order(&infos), ["/nix/store/a-dep", "/nix/store/b-top", "/nix/store/0-z"]);
    }
}
