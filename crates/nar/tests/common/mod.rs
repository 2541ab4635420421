//! A tiny NAR writer for making malformed NARs in tests (the crate itself only copies).
#![allow(dead_code)]

use nwh_wire::Writer;

pub struct Nar(pub Writer<Vec<u8>>);

impl Nar {
    pub fn new() -> Self {
        let mut n = Nar(Writer::new(Vec::new()));
        n.s("nix-archive-1");
        n
    }

    /// Appends one string (length, bytes, padding).
    pub fn s(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        self.0.write_bytes(s.as_ref()).unwrap();
        self
    }

    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.0.write_u64(n).unwrap();
        self
    }

    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.get_mut().extend_from_slice(b);
        self
    }

    pub fn file(&mut self, contents: &[u8], executable: bool) -> &mut Self {
        self.s("(").s("type").s("regular");
        if executable {
            self.s("executable").s("");
        }
        self.s("contents").s(contents).s(")")
    }

    pub fn symlink(&mut self, target: &[u8]) -> &mut Self {
        self.s("(").s("type").s("symlink").s("target").s(target).s(")")
    }

    pub fn dir_start(&mut self) -> &mut Self {
        self.s("(").s("type").s("directory")
    }

    pub fn entry_start(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.s("entry").s("(").s("name").s(name).s("node")
    }

    pub fn close(&mut self) -> &mut Self {
        self.s(")")
    }

    pub fn len(&self) -> u64 {
        self.0.position()
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.get_ref().clone()
    }
}
