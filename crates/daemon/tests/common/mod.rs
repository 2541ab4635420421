//! Helpers shared by the tests: a writer that keeps what the client sent, a reader that
//! counts what the client consumed, and a decoder of the requests in a recorded client
//! stream (the client side's bytes, as Nix's own client sent them).

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nwh_daemon::{BuildMode, PathInfo};
use nwh_drv::BasicDerivation;
use nwh_nar::copy_nar;
use nwh_wire::Reader;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the client wrote, shared with the test.
#[derive(Clone, Default)]
pub struct Sent(Arc<Mutex<Vec<u8>>>);

impl Sent {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for Sent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands out one byte per read and counts them, so that what the client's buffer took is
/// what it consumed, give or take the one byte of the last read.
pub struct Drip {
    data: Vec<u8>,
    pos: Arc<AtomicUsize>,
}

impl Drip {
    pub fn new(data: Vec<u8>) -> (Drip, Arc<AtomicUsize>) {
        let pos = Arc::new(AtomicUsize::new(0));
        (Drip { data, pos: pos.clone() }, pos)
    }
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos.load(Ordering::SeqCst);
        if pos >= self.data.len() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[pos];
        self.pos.store(pos + 1, Ordering::SeqCst);
        Ok(1)
    }
}

/// Builds wire bytes.
#[derive(Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    pub fn str(mut self, s: &str) -> Self {
        self = self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self.0.resize(self.0.len() + (8 - s.len() % 8) % 8, 0);
        self
    }
    pub fn strs(mut self, items: &[&str]) -> Self {
        self = self.u64(items.len() as u64);
        for s in items {
            self = self.str(s);
        }
        self
    }
    pub fn raw(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self
    }
}

/// One path of an `AddMultipleToStore` stream.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub path: String,
    pub info: PathInfo,
    pub nar: Vec<u8>,
}

/// A request as Nix's client sent it.
#[derive(Debug, Clone)]
pub enum Request {
    QueryValidPaths { paths: Vec<String>, substitute: Option<bool> },
    AddMultipleToStore { repair: bool, dont_check_sigs: bool, uploads: Vec<Uploaded>, frames: Vec<u64> },
    AddToStoreNar { path: String, info: PathInfo, repair: bool, dont_check_sigs: bool, nar: Vec<u8> },
    BuildDerivation { drv_path: String, drv: BasicDerivation, mode: BuildMode },
    QueryPathInfo { path: String },
    NarFromPath { path: String },
    BuildPathsWithResults { paths: Vec<String>, mode: BuildMode },
}

/// The greeting a client sent: its version and, from 1.38 on, its features.
#[derive(Debug)]
pub struct Greeting {
    pub version: u64,
    pub features: Vec<String>,
    pub cpu_affinity: u64,
    pub reserve_space: u64,
}

fn read_framed(r: &mut Reader<&[u8]>) -> (Vec<u8>, Vec<u64>) {
    let mut data = Vec::new();
    let mut frames = Vec::new();
    loop {
        let n = r.read_u64().unwrap();
        if n == 0 {
            return (data, frames);
        }
        frames.push(n);
        let start = data.len();
        data.resize(start + n as usize, 0);
        r.read_exact(&mut data[start..]).unwrap();
    }
}

/// Decodes a whole client stream. `server_version` is the daemon's, to find the negotiated
/// version.
pub fn decode_client(bytes: &[u8], server_version: u64) -> (Greeting, Vec<Request>) {
    let mut r = Reader::new(bytes);
    assert_eq!(r.read_u64().unwrap(), nwh_daemon::WORKER_MAGIC_1);
    let client_version = r.read_u64().unwrap();
    let v = client_version.min(server_version) & 0xff;
    let features = if v >= 38 { r.read_string_list().unwrap() } else { Vec::new() };
    let cpu_affinity = r.read_u64().unwrap();
    let reserve_space = r.read_u64().unwrap();
    let greeting = Greeting { version: client_version, features, cpu_affinity, reserve_space };
    let mut requests = Vec::new();
    while (r.position() as usize) < bytes.len() {
        let op = r.read_u64().unwrap();
        let request = match op {
            31 => {
                let paths = r.read_string_list().unwrap();
                let substitute = (v >= 27).then(|| r.read_bool().unwrap());
                Request::QueryValidPaths { paths, substitute }
            }
            44 => {
                let repair = r.read_bool().unwrap();
                let dont_check_sigs = r.read_bool().unwrap();
                let (data, frames) = read_framed(&mut r);
                let mut inner = Reader::new(&data[..]);
                let count = inner.read_u64().unwrap();
                let mut uploads = Vec::new();
                for _ in 0..count {
                    let path = inner.read_string().unwrap();
                    let info = PathInfo::read_from(&mut inner, 0x110).unwrap();
                    let mut nar = Vec::new();
                    copy_nar(&mut inner, &mut nar).unwrap();
                    uploads.push(Uploaded { path, info, nar });
                }
                assert_eq!(inner.position() as usize, data.len(), "trailing data in AddMultipleToStore");
                Request::AddMultipleToStore { repair, dont_check_sigs, uploads, frames }
            }
            39 => {
                let path = r.read_string().unwrap();
                let info = PathInfo::read_from(&mut r, client_version.min(server_version)).unwrap();
                let repair = r.read_bool().unwrap();
                let dont_check_sigs = r.read_bool().unwrap();
                let (nar, _) = read_framed(&mut r);
                Request::AddToStoreNar { path, info, repair, dont_check_sigs, nar }
            }
            36 => {
                let drv_path = r.read_string().unwrap();
                let drv = BasicDerivation::read_from(&mut r).unwrap();
                let mode = BuildMode::from_code(r.read_u64().unwrap()).unwrap();
                Request::BuildDerivation { drv_path, drv, mode }
            }
            26 => Request::QueryPathInfo { path: r.read_string().unwrap() },
            38 => Request::NarFromPath { path: r.read_string().unwrap() },
            46 => {
                let paths = r.read_string_list().unwrap();
                let mode = BuildMode::from_code(r.read_u64().unwrap()).unwrap();
                Request::BuildPathsWithResults { paths, mode }
            }
            op => panic!("unexpected op {op} at byte {}", r.position() - 8),
        };
        requests.push(request);
    }
    (greeting, requests)
}

/// The version a daemon announced: the second word of its stream.
pub fn server_version(server: &[u8]) -> u64 {
    u64::from_le_bytes(server[8..16].try_into().unwrap())
}
