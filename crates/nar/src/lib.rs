//! Nix archives (NAR, docs/nar.md §1) as a stream: [`copy_nar`] reads exactly one NAR,
//! checks its grammar, writes the same bytes on and returns its size and sha256, holding no
//! file contents in memory. The serve protocol sends NARs without a length prefix
//! (`DumpStorePath`, export streams), so parsing is the only way to know where one ends.
//!
//! [`dump::dump`] writes the NAR of a file system tree, as Nix does.
//! [`export`] handles the `nix-store --export` stream (docs/nar.md §4) built from NARs, [`export_reader`]
//! the same stream as a reader that stops at its end, and [`hash`] the spellings of a NAR hash.

use std::fmt;
use std::io::{self, BufWriter, Read, Write};

use nwh_wire::{padding_len, Item, Limits, Reader, WireError};
use sha2::{Digest, Sha256};

pub mod dump;
pub mod export;
pub mod export_reader;
pub mod hash;
mod restore;

pub use export::{
    copy_export, write_export_end, write_export_entry_header, write_export_entry_trailer, ExportError,
    ExportedPath, EXPORT_MAGIC,
};
pub use export_reader::{ExportFramer, ExportReader};
pub use restore::restore;

/// The string every NAR starts with.
pub const NAR_MAGIC: &str = "nix-archive-1";

/// Deepest directory nesting accepted (the root node is depth 0). Real store paths are far
/// shallower; the bound keeps the recursive parser's stack small.
pub const MAX_DEPTH: usize = 256;

/// Longest grammar token (`"nix-archive-1"`, `"directory"`, …) read as such. Anything longer
/// cannot be a token, and the bound stops a garbled length from being believed.
pub const MAX_TAG_LEN: u64 = 32;

/// Longest entry name: `NAME_MAX` on Linux and macOS, so no real store path has a longer one.
pub const MAX_NAME_LEN: u64 = 255;

/// Longest symlink target: `PATH_MAX - 1` on Linux, the most a symlink can hold there.
pub const MAX_TARGET_LEN: u64 = 4095;

/// File contents are streamed through a buffer of this size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Size and hash of one NAR, over its exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarSummary {
    /// Bytes in the NAR (what Nix calls `narSize`).
    pub size: u64,
    /// SHA-256 of those bytes (Nix's `narHash`).
    pub sha256: [u8; 32],
}

impl NarSummary {
    /// The spelling of path infos and `nix-store -q --hash`: `sha256:<nix32>`.
    pub fn nar_hash(&self) -> String {
        format!("sha256:{}", hash::nix32_encode(&self.sha256))
    }

    /// Base 16 without prefix, the spelling `AddToStoreNar` sends.
    pub fn sha256_base16(&self) -> String {
        hash::base16_encode(&self.sha256)
    }
}

/// A grammar violation inside a NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A token other than the one the grammar allows here. `found` is printable: the token
    /// with unusual bytes escaped, or a description when it was too long to be a token.
    Expected { expected: &'static str, found: String },
    /// A string longer than its kind allows (see the `MAX_*` constants).
    TooLong { what: &'static str, len: u64, max: u64 },
    /// Entry name empty, `.`, `..`, or containing `/` or NUL.
    BadEntryName { name: String },
    /// Entry names must be strictly increasing (byte order): unsorted or duplicate.
    Unsorted { previous: String, name: String },
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Empty or containing NUL.
    BadSymlinkTarget { target: String },
    /// The value after `executable` must be the empty string.
    NonEmptyExecutableMarker,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Problem::TooLong { what, len, max } => {
                write!(f, "{what} of {len} bytes is longer than the limit of {max}")
            }
            Problem::BadEntryName { name } => write!(f, "invalid directory entry name '{name}'"),
            Problem::Unsorted { previous, name } => {
                write!(
                    f,
                    "directory entry '{name}' is not after '{previous}' (entries must be sorted and unique)"
                )
            }
            Problem::TooDeep => write!(f, "directories nested deeper than {MAX_DEPTH} levels"),
            Problem::BadSymlinkTarget { target } => write!(f, "invalid symlink target '{target}'"),
            Problem::NonEmptyExecutableMarker => f.write_str("non-empty value after 'executable'"),
        }
    }
}

/// Why [`copy_nar`] failed. Offsets count from the first byte of the NAR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarError {
    /// The source ended early, failed, or broke the string encoding (bad padding). A
    /// truncation is [`WireError::Truncated`]; the source's own I/O errors are
    /// [`WireError::Io`].
    #[error("reading NAR: {0}")]
    Wire(#[source] WireError),
    /// The bytes are not a NAR.
    #[error("invalid NAR at byte offset {offset}: {problem}")]
    Invalid { offset: u64, problem: Problem },
    /// Writing the copy failed. What was read so far is lost to the caller.
    #[error("writing the NAR copy failed")]
    Sink(#[source] io::Error),
    /// Unpacking it into the file system failed ([`restore`]).
    #[error("unpacking the NAR failed")]
    Restore(#[source] io::Error),
}

impl NarError {
    /// Where in the NAR the failing item starts (none for a failed write).
    pub fn offset(&self) -> Option<u64> {
        match self {
            NarError::Wire(e) => Some(e.offset()),
            NarError::Invalid { offset, .. } => Some(*offset),
            NarError::Sink(_) | NarError::Restore(_) => None,
        }
    }

    /// True when the source simply ended before the NAR did.
    pub fn is_truncated(&self) -> bool {
        matches!(self, NarError::Wire(WireError::Truncated { .. }))
    }
}

pub type Result<T, E = NarError> = std::result::Result<T, E>;

/// Copies exactly one NAR from `r` to `w` and returns its size and sha256.
///
/// Nothing after the NAR is read, so `r` can go on to the next item of a protocol stream.
/// Because of that `r` is read in small pieces: wrap an unbuffered source (a pipe, a file) in a
/// `BufReader`. Writes to `w` are buffered here and flushed before returning. Memory use does
/// not depend on the NAR: contents pass through a [`CHUNK_SIZE`] buffer and only names on the
/// current directory path are kept.
///
/// On error, some prefix of the NAR may already have been written to `w`.
pub fn copy_nar<R: Read + ?Sized, W: Write + ?Sized>(r: &mut R, w: &mut W) -> Result<NarSummary> {
    parse(r, w, &mut Ignore)
}

/// [`copy_nar`], also writing into `contents` the contents of the NAR's root when that is a
/// regular file (what a flat content hash covers); says whether it was one.
pub fn copy_nar_and_root_contents<R: Read + ?Sized, W: Write + ?Sized, C: Write>(
    r: &mut R,
    w: &mut W,
    contents: &mut C,
) -> Result<(NarSummary, bool)> {
    let mut root = RootContents { depth: 0, regular: false, contents };
    let summary = parse(r, w, &mut root)?;
    Ok((summary, root.regular))
}

/// [`copy_nar`], telling `visit` of every node on the way.
fn parse<R: Read + ?Sized, W: Write + ?Sized>(
    r: &mut R,
    w: &mut W,
    visit: &mut dyn Visit,
) -> Result<NarSummary> {
    let tee = Tee {
        src: r,
        sink: BufWriter::with_capacity(CHUNK_SIZE, w),
        hasher: Sha256::new(),
        sink_error: None,
    };
    let mut p = Parser { r: Reader::new(tee), buf: vec![0u8; CHUNK_SIZE], visit };
    p.nar()?;
    let size = p.r.position();
    let mut tee = p.r.into_inner();
    tee.sink.flush().map_err(NarError::Sink)?;
    Ok(NarSummary { size, sha256: tee.hasher.finalize().into() })
}

/// Reads from `src` and passes every byte read on to the sink and the hash, so that the
/// parser's reads define the copy exactly.
struct Tee<'a, R: ?Sized, W: Write + ?Sized> {
    src: &'a mut R,
    sink: BufWriter<&'a mut W>,
    hasher: Sha256,
    /// A failed write, kept so the caller can report it as the sink's fault rather than as
    /// a read error, which is how it travels up through the reader.
    sink_error: Option<io::Error>,
}

impl<R: Read + ?Sized, W: Write + ?Sized> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if let Err(e) = self.sink.write_all(&buf[..n]) {
            self.sink_error = Some(e);
            return Err(io::Error::other("the NAR copy could not be written"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct Parser<'a, R: ?Sized, W: Write + ?Sized> {
    r: Reader<Tee<'a, R, W>>,
    buf: Vec<u8>,
    /// Told of each node as soon as the grammar has accepted what it needs (see [`restore`]).
    visit: &'a mut dyn Visit,
}

/// What a NAR holds, node by node, in the order the parser accepts it. Entry names reach
/// `enter` only after they were checked (no `/`, `.`, `..` or NUL; sorted).
trait Visit {
    fn directory(&mut self) -> io::Result<()>;
    fn enter(&mut self, name: &[u8]);
    fn leave(&mut self);
    fn regular(&mut self, executable: bool) -> io::Result<()>;
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn regular_end(&mut self) -> io::Result<()>;
    fn symlink(&mut self, target: &[u8]) -> io::Result<()>;
}

/// Copying only: nothing to do per node.
struct Ignore;

impl Visit for Ignore {
    fn directory(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn enter(&mut self, _: &[u8]) {}
    fn leave(&mut self) {}
    fn regular(&mut self, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn data(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn regular_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// The contents of a root that is a regular file, passed on.
struct RootContents<'a, C> {
    depth: usize,
    regular: bool,
    contents: &'a mut C,
}

impl<C: Write> Visit for RootContents<'_, C> {
    fn directory(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn enter(&mut self, _: &[u8]) {
        self.depth += 1;
    }
    fn leave(&mut self) {
        self.depth -= 1;
    }
    fn regular(&mut self, _: bool) -> io::Result<()> {
        self.regular |= self.depth == 0;
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.depth == 0 {
            self.contents.write_all(bytes)?;
        }
        Ok(())
    }
    fn regular_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Printable form of a token or name for messages; long ones are cut.
fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(64)];
    let mut s: String = shown.escape_ascii().to_string();
    if shown.len() < bytes.len() {
        s.push('…');
    }
    s
}

impl<R: Read + ?Sized, W: Write + ?Sized> Parser<'_, R, W> {
    fn wire(&mut self, e: WireError) -> NarError {
        match self.r.get_mut().sink_error.take() {
            Some(sink) => NarError::Sink(sink),
            None => NarError::Wire(e),
        }
    }

    fn invalid(offset: u64, problem: Problem) -> NarError {
        NarError::Invalid { offset, problem }
    }

    /// Reads a string of at most `max` bytes; returns it and where it started.
    fn string(&mut self, what: &'static str, max: u64) -> Result<(Vec<u8>, u64)> {
        let offset = self.r.position();
        self.r.set_limits(Limits { max_string_len: max, ..Limits::default() });
        match self.r.read_bytes() {
            Ok(s) => Ok((s, offset)),
            Err(WireError::TooLong { len, max, .. }) => {
                Err(Self::invalid(offset, Problem::TooLong { what, len, max }))
            }
            Err(e) => Err(self.wire(e)),
        }
    }

    /// Reads a token; a string too long to be one is reported as the wrong token.
    fn tag(&mut self, expected: &'static str) -> Result<(Vec<u8>, u64)> {
        let offset = self.r.position();
        self.r.set_limits(Limits { max_string_len: MAX_TAG_LEN, ..Limits::default() });
        match self.r.read_bytes() {
            Ok(s) => Ok((s, offset)),
            Err(WireError::TooLong { len, .. }) => Err(Self::invalid(
                offset,
                Problem::Expected { expected, found: format!("a string of {len} bytes") },
            )),
            Err(e) => Err(self.wire(e)),
        }
    }

    fn expect(&mut self, token: &'static str, expected: &'static str) -> Result<()> {
        let (s, offset) = self.tag(expected)?;
        if s != token.as_bytes() {
            return Err(Self::invalid(
                offset,
                Problem::Expected { expected, found: format!("'{}'", printable(&s)) },
            ));
        }
        Ok(())
    }

    fn nar(&mut self) -> Result<()> {
        self.expect(NAR_MAGIC, "'nix-archive-1'")?;
        self.node(0)
    }

    fn node(&mut self, depth: usize) -> Result<()> {
        let offset = self.r.position();
        if depth > MAX_DEPTH {
            return Err(Self::invalid(offset, Problem::TooDeep));
        }
        self.expect("(", "'('")?;
        self.expect("type", "'type'")?;
        const TYPES: &str = "'regular', 'symlink' or 'directory'";
        let (ty, ty_offset) = self.tag(TYPES)?;
        match &ty[..] {
            b"regular" => self.regular(),
            b"symlink" => self.symlink(),
            b"directory" => self.directory(depth),
            other => Err(Self::invalid(
                ty_offset,
                Problem::Expected { expected: TYPES, found: format!("'{}'", printable(other)) },
            )),
        }
    }

    fn regular(&mut self) -> Result<()> {
        const NEXT: &str = "'executable' or 'contents'";
        let (mut tag, mut offset) = self.tag(NEXT)?;
        let executable = tag == b"executable";
        if executable {
            let (marker, marker_offset) = self.tag("''")?;
            if !marker.is_empty() {
                return Err(Self::invalid(marker_offset, Problem::NonEmptyExecutableMarker));
            }
            (tag, offset) = self.tag("'contents'")?;
            if tag != b"contents" {
                let found = format!("'{}'", printable(&tag));
                return Err(Self::invalid(offset, Problem::Expected { expected: "'contents'", found }));
            }
        } else if tag != b"contents" {
            let found = format!("'{}'", printable(&tag));
            return Err(Self::invalid(offset, Problem::Expected { expected: NEXT, found }));
        }
        self.visit.regular(executable).map_err(NarError::Restore)?;
        self.contents()?;
        self.visit.regular_end().map_err(NarError::Restore)?;
        self.expect(")", "')'")
    }

    /// Streams a file's contents: the length, the bytes in chunks, the padding.
    fn contents(&mut self) -> Result<()> {
        let len = self.r.read_u64().map_err(|e| self.wire(e))?;
        let data_offset = self.r.position();
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(self.buf.len() as u64) as usize;
            match self.r.read(&mut self.buf[..want]) {
                Ok(0) => {
                    let e = WireError::Truncated {
                        what: Item::StringData,
                        offset: data_offset,
                        needed: len,
                        available: done,
                    };
                    return Err(self.wire(e));
                }
                Ok(n) => {
                    self.visit.data(&self.buf[..n]).map_err(NarError::Restore)?;
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let e = WireError::Io { what: Item::StringData, offset: data_offset, source };
                    return Err(self.wire(e));
                }
            }
        }
        let pad = padding_len(len) as usize;
        if pad > 0 {
            let pad_offset = self.r.position();
            let mut buf = [0u8; 8];
            let mut got = 0;
            while got < pad {
                match self.r.read(&mut buf[got..pad]) {
                    Ok(0) => {
                        let e = WireError::Truncated {
                            what: Item::StringPadding,
                            offset: pad_offset,
                            needed: pad as u64,
                            available: got as u64,
                        };
                        return Err(self.wire(e));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        let e = WireError::Io { what: Item::StringPadding, offset: pad_offset, source };
                        return Err(self.wire(e));
                    }
                }
            }
            if buf[..pad].iter().any(|&b| b != 0) {
                return Err(NarError::Wire(WireError::NonZeroPadding { offset: pad_offset }));
            }
        }
        Ok(())
    }

    fn symlink(&mut self) -> Result<()> {
        self.expect("target", "'target'")?;
        let (target, offset) = self.string("symlink target", MAX_TARGET_LEN)?;
        if target.is_empty() || target.contains(&0) {
            return Err(Self::invalid(offset, Problem::BadSymlinkTarget { target: printable(&target) }));
        }
        self.visit.symlink(&target).map_err(NarError::Restore)?;
        self.expect(")", "')'")
    }

    fn directory(&mut self, depth: usize) -> Result<()> {
        const NEXT: &str = "'entry' or ')'";
        self.visit.directory().map_err(NarError::Restore)?;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let (tag, offset) = self.tag(NEXT)?;
            match &tag[..] {
                b")" => return Ok(()),
                b"entry" => {}
                other => {
                    let found = format!("'{}'", printable(other));
                    return Err(Self::invalid(offset, Problem::Expected { expected: NEXT, found }));
                }
            }
            self.expect("(", "'('")?;
            self.expect("name", "'name'")?;
            let (name, name_offset) = self.string("entry name", MAX_NAME_LEN)?;
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                return Err(Self::invalid(name_offset, Problem::BadEntryName { name: printable(&name) }));
            }
            if let Some(prev) = &previous {
                if name <= *prev {
                    let problem = Problem::Unsorted { previous: printable(prev), name: printable(&name) };
                    return Err(Self::invalid(name_offset, problem));
                }
            }
            self.expect("node", "'node'")?;
            self.visit.enter(&name);
            let node = self.node(depth + 1);
            self.visit.leave();
            node?;
            self.expect(")", "')'")?;
            previous = Some(name);
        }
    }
}
