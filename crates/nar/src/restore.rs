//! A NAR unpacked into the file system, as `nix-store --restore` does, while it is checked and
//! hashed: the hook brings a build's outputs back this way instead of through a `nix-store
//! --restore` process per output. Registering the path afterwards (`nix-store
//! --load-db`, after the hook canonicalises it) registers it.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{parse, NarSummary, Result, Visit};

/// Unpacks the one NAR read from `r` at `dest`, which must not exist yet; returns the NAR's
/// size and sha256. Nothing after the NAR is read. On error, what was unpacked so far stays:
/// the caller removes it (it knows whether the path is its to remove).
pub fn restore<R: Read + ?Sized>(r: &mut R, dest: &Path) -> Result<NarSummary> {
    let mut unpack = Unpack { path: dest.to_path_buf(), file: None };
    parse(r, &mut io::sink(), &mut unpack)
}

struct Unpack {
    /// The node being unpacked.
    path: PathBuf,
    file: Option<File>,
}

impl Visit for Unpack {
    fn directory(&mut self) -> io::Result<()> {
        fs::create_dir(&self.path).map_err(|e| named(&self.path, e))
    }

    fn enter(&mut self, name: &[u8]) {
        self.path.push(OsStr::from_bytes(name));
    }

    fn leave(&mut self) {
        self.path.pop();
    }

    fn regular(&mut self, executable: bool) -> io::Result<()> {
        // `create_new`: an existing file (or a symlink planted there) is never written through.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o777 } else { 0o666 })
            .open(&self.path)
            .map_err(|e| named(&self.path, e))?;
        self.file = Some(file);
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().expect("contents come after the file is opened");
        file.write_all(bytes).map_err(|e| named(&self.path, e))
    }

    fn regular_end(&mut self) -> io::Result<()> {
        self.file = None;
        Ok(())
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &self.path).map_err(|e| named(&self.path, e))
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
