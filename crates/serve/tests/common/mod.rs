#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    if let Some(rest) = name.strip_prefix("upstream/") {
        let dir = upstream_dir().expect("callers check upstream_dir() first");
        return std::fs::read(dir.join(rest)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Nix's own serve-protocol test vectors, read from a Nix source tree named by
/// `NIX_UPSTREAM_SRC` (as harmonia does) rather than copied into this repository.
pub fn upstream_dir() -> Option<std::path::PathBuf> {
    let src = std::env::var_os("NIX_UPSTREAM_SRC")?;
    let dir = std::path::Path::new(&src).join("src/libstore-tests/data/serve-protocol");
    dir.is_dir().then_some(dir)
}

/// Skips a test of Nix's vectors when no Nix source tree is given.
#[macro_export]
macro_rules! needs_upstream {
    () => {
        if common::upstream_dir().is_none() {
            eprintln!("skipped: set NIX_UPSTREAM_SRC to a NixOS/nix checkout to check Nix's own vectors");
            return;
        }
    };
}

/// The client's end of a scripted conversation: records what the client sends. Clones
/// share the buffer, so the test keeps one to look at after handing the other over.
#[derive(Clone, Default)]
pub struct Sent(pub Rc<RefCell<Vec<u8>>>);

impl Sent {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }

    /// True once the client has dropped its copy.
    pub fn dropped_by_client(&self) -> bool {
        Rc::strong_count(&self.0) == 1
    }
}

impl Write for Sent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer whose peer has gone away.
pub struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
    }
}

/// Wire bytes built by hand.
#[derive(Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    pub fn s(mut self, s: impl AsRef<[u8]>) -> Self {
        let s = s.as_ref();
        self = self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self.0.resize(self.0.len().div_ceil(8) * 8, 0);
        self
    }
    pub fn list(mut self, items: &[&str]) -> Self {
        self = self.u64(items.len() as u64);
        for i in items {
            self = self.s(i);
        }
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// The server's greeting for protocol `version`.
    pub fn greeting(version: u64) -> Self {
        Bytes::default().u64(0x5452_eecb).u64(version)
    }
}
