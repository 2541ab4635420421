//! A file system tree as a NAR, written as Nix's `dumpPath` writes it, so that the bytes (and
//! so the NAR hash) are the ones the store registered: directory entries in byte order of
//! their names, a regular file executable when its owner may execute it, a symlink's target as
//! it is. The hook uploads store paths this way instead of through a `nix-store --dump`
//! process per path; whoever sends the NAR still checks its size and hash against the
//! store's.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nwh_wire::Writer;

use crate::{MAX_DEPTH, NAR_MAGIC};

/// Writes the NAR of `path` (not following it if it is a symlink) to `out`; returns its size.
/// A file type a NAR cannot hold (a device, a FIFO, a socket) is an error, as in Nix.
pub fn dump(path: &Path, out: &mut impl Write) -> io::Result<u64> {
    let mut w = Writer::new(out);
    w.write_str(NAR_MAGIC)?;
    node(path, &mut w, 0)?;
    Ok(w.position())
}

fn node<W: Write>(path: &Path, w: &mut Writer<W>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{}: nested deeper than {MAX_DEPTH} directories",
            path.display()
        )));
    }
    let meta = fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    w.write_str("(")?;
    w.write_str("type")?;
    if kind.is_symlink() {
        w.write_str("symlink")?;
        w.write_str("target")?;
        w.write_bytes(fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if kind.is_dir() {
        w.write_str("directory")?;
        let mut names: Vec<OsString> =
            fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            w.write_str("entry")?;
            w.write_str("(")?;
            w.write_str("name")?;
            w.write_bytes(name.as_bytes())?;
            w.write_str("node")?;
            node(&path.join(&name), w, depth + 1)?;
            w.write_str(")")?;
        }
    } else if kind.is_file() {
        w.write_str("regular")?;
        if meta.permissions().mode() & 0o100 != 0 {
            w.write_str("executable")?;
            w.write_str("")?;
        }
        w.write_str("contents")?;
        contents(path, meta.len(), w)?;
    } else {
        return Err(io::Error::other(format!(
            "{}: not a regular file, directory or symlink, which is all a NAR can hold",
            path.display()
        )));
    }
    w.write_str(")")
}

/// The file's bytes as one wire string: length, contents, padding. A file that changes size
/// while it is read would make a NAR that lies about its length: an error instead.
fn contents<W: Write>(path: &Path, len: u64, w: &mut Writer<W>) -> io::Result<()> {
    w.write_u64(len)?;
    let file = File::open(path)?;
    // The writer counts raw bytes too, so its position stays the NAR's size.
    let copied = io::copy(&mut io::Read::take(file, len), w)?;
    if copied != len {
        return Err(io::Error::other(format!("{}: changed size while it was read", path.display())));
    }
    w.write_all(&[0u8; 8][..nwh_wire::padding_len(len) as usize])
}
