//! Reading the files a hook is told to read (machines files, nix.conf, its own options,
//! policies, derivations): only regular files, and only up to a stated size. A device, a FIFO
//! or `/dev/stdin` named by mistake would otherwise block for ever or be read without end;
//! here it is an error that says what the file is and what to name instead.
//!
//! The errors are [`std::io::Error`]s (kind `IsADirectory`, `InvalidInput` or `FileTooLarge`),
//! so that callers
//! keep their own handling of a missing file and put the file's name in front, as they do for
//! any other error of reading it.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let file = dir.path().join("machines");
//! std::fs::write(&file, "ssh://a x86_64-linux\n").unwrap();
//! let bytes = nwh_files::read(&file, nwh_files::MACHINES_FILE).unwrap();
//! assert_eq!(bytes, b"ssh://a x86_64-linux\n");
//! let e = nwh_files::read("/dev/null".as_ref(), nwh_files::MACHINES_FILE).unwrap_err();
//! assert_eq!(e.to_string(), "it is a character device, not a regular file (a machines file must be one)");
//! ```

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub mod private;

/// What a file is for and the most of it that is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What the file is, as an error names it: "a machines file".
    pub what: &'static str,
    pub max_bytes: u64,
}

/// A machines file (`builders = @file`, `NIX_REMOTE_SYSTEMS`): ten thousand machines of
/// long lines fit many times over.
pub const MACHINES_FILE: Limit = Limit { what: "a machines file", max_bytes: 16 << 20 };
/// `nix.conf` and each file it includes.
pub const NIX_CONF: Limit = Limit { what: "a Nix configuration file", max_bytes: 4 << 20 };
/// nix-wasm-hook's own options (TOML).
pub const OPTIONS_FILE: Limit = Limit { what: "an options file", max_bytes: 1 << 20 };
/// A policy component: a Python one is ~17 MiB, a JavaScript one more.
pub const POLICY: Limit = Limit { what: "a policy component", max_bytes: 256 << 20 };
/// A `.drv` file: its environment may carry whole files (`passAsFile`, large `env`).
pub const DERIVATION: Limit = Limit { what: "a derivation", max_bytes: 64 << 20 };
/// A workload for `simulate`.
pub const WORKLOAD: Limit = Limit { what: "a workload file", max_bytes: 256 << 20 };

/// Reads all of `path`, which must be a regular file (a symlink to one is fine) of at most
/// `limit.max_bytes`.
pub fn read(path: &Path, limit: Limit) -> io::Result<Vec<u8>> {
    // Opening a FIFO for reading waits for a writer; non-blocking, it does not, and the check
    // below refuses it before anything is read. For a regular file the flag changes nothing.
    let file =
        OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let is = match () {
            _ if kind.is_dir() => "a directory",
            _ if kind.is_fifo() => "a FIFO (named pipe)",
            _ if kind.is_char_device() => "a character device",
            _ if kind.is_block_device() => "a block device",
            _ if kind.is_socket() => "a socket",
            _ => "not a file",
        };
        let message = format!("it is {is}, not a regular file ({} must be one)", limit.what);
        let kind = if kind.is_dir() { io::ErrorKind::IsADirectory } else { io::ErrorKind::InvalidInput };
        return Err(io::Error::new(kind, message));
    }
    if meta.len() > limit.max_bytes {
        return Err(too_large(meta.len(), limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the bound all the same.
    (&file).take(limit.max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.max_bytes {
        return Err(too_large(bytes.len() as u64, limit));
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: Limit) -> io::Result<String> {
    String::from_utf8(read(path, limit)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn too_large(len: u64, limit: Limit) -> io::Error {
    let message = format!(
        "it is {}, more than the {} this hook reads of {}: is it the right file?",
        size(len),
        size(limit.max_bytes),
        limit.what
    );
    io::Error::new(io::ErrorKind::FileTooLarge, message)
}

/// Sizes as people say them: `16 MiB`, `2.5 GiB`, `300 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, n) in UNITS {
        if bytes >= n {
            let value = bytes as f64 / n as f64;
            return if bytes.is_multiple_of(n) {
                format!("{} {unit}", bytes / n)
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: Limit = Limit { what: "a test file", max_bytes: 8 };

    #[test]
    fn a_regular_file_within_its_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345678").unwrap();
        assert_eq!(read(&file, TINY).unwrap(), b"12345678");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link, TINY).unwrap(), b"12345678", "a symlink to a regular file");
    }

    #[test]
    fn a_larger_file_is_refused_with_both_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"123456789").unwrap();
        let e = read(&file, TINY).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            e.to_string(),
            "it is 9 bytes, more than the 8 bytes this hook reads of a test file: is it the right file?"
        );
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o600),
            0,
        )
        .unwrap();
        // No writer: a blocking open would wait for ever.
        let e = read(&fifo, TINY).unwrap_err();
        assert_eq!(e.to_string(), "it is a FIFO (named pipe), not a regular file (a test file must be one)");
        for (path, is) in [("/dev/zero", "a character device"), ("/", "a directory")] {
            let e = read(Path::new(path), TINY).unwrap_err();
            assert!(e.to_string().starts_with(&format!("it is {is}, ")), "{path}: {e}");
        }
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(size(300), "300 bytes");
        assert_eq!(size(16 << 20), "16 MiB");
        assert_eq!(size((5 << 30) / 2), "2.5 GiB");
    }
}
