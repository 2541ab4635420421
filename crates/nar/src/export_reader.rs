//! An export stream (docs/nar.md §4) as a reader: [`ExportReader`] hands on exactly the
//! bytes of one stream and then reports the end, so a protocol that sends a stream without a
//! length in front (`ImportPaths`) can give it to a consumer that wants a [`Read`] (a child's
//! stdin via [`io::copy`], another connection) without reading past it.
//!
//! It is [`copy_export`](crate::copy_export) turned inside out: the same grammar, the same
//! limits, the same errors at the same offsets, but driven by the consumer's reads instead of
//! pushing into a writer. Items are decoded one at a time and passed on as soon as they are
//! whole; file contents pass through in the consumer's buffer, so memory use does not depend
//! on the stream.

use std::io::{self, Read};

use nwh_wire::{padding_len, Item, Limits, Reader, WireError, Writer};
use sha2::{Digest, Sha256};

use crate::export::{ExportError, ExportedPath, Trailer, MAX_PATH_LEN};
use crate::{printable, NarError, NarSummary, Problem, MAX_DEPTH, MAX_NAME_LEN, MAX_TAG_LEN, MAX_TARGET_LEN};

/// Where in the grammar the next item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `u64 1` (a path follows) or `u64 0` (the end).
    Marker,
    Magic,
    /// `(` opening a node.
    NodeOpen,
    Type,
    TypeValue,
    /// `executable` or `contents`.
    RegularTag,
    ExecutableMarker,
    ContentsTag,
    ContentsLen,
    /// File contents still to pass on, streamed.
    ContentsData {
        len: u64,
        left: u64,
    },
    ContentsPadding {
        len: u64,
    },
    /// `)` closing a regular file or symlink node.
    NodeClose,
    TargetTag,
    TargetValue,
    /// `entry` or `)` inside a directory.
    DirTag,
    EntryOpen,
    NameTag,
    NameValue,
    NodeTag,
    /// `)` closing a directory entry.
    EntryClose,
    /// Magic, path, references, deriver, signature flag (and signature): read as one step.
    Trailer,
    Done,
    /// An error was returned; the stream is out of step for good.
    Failed,
}

/// The state of one export stream being read, without the stream itself: [`ExportFramer::read`]
/// takes the source on each call, so the state can be kept across calls by an owner of the
/// source (a protocol server that lends its input out between commands). [`ExportReader`] is
/// the same with the source inside.
#[derive(Debug)]
pub struct ExportFramer {
    state: State,
    /// Bytes of the stream consumed so far.
    pos: u64,
    /// Encoded items decoded but not yet handed out.
    out: Vec<u8>,
    out_pos: usize,
    /// Per open directory, the name of its last entry.
    dirs: Vec<Option<Vec<u8>>>,
    nar_start: u64,
    hasher: Sha256,
    entries: Vec<ExportedPath>,
    /// Summary of the NAR just finished, until its trailer is read.
    nar: Option<NarSummary>,
}

impl Default for ExportFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl ExportFramer {
    pub fn new() -> Self {
        ExportFramer {
            state: State::Marker,
            pos: 0,
            out: Vec::with_capacity(256),
            out_pos: 0,
            dirs: Vec::new(),
            nar_start: 0,
            hasher: Sha256::new(),
            entries: Vec::new(),
            nar: None,
        }
    }

    /// True once the stream's final `u64 0` has been handed out.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.out_pos == self.out.len()
    }

    /// True after an error: further reads fail.
    pub fn has_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Bytes of the stream read from the source so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The paths whose entries have been read completely so far.
    pub fn entries(&self) -> &[ExportedPath] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<ExportedPath> {
        self.entries
    }

    /// Reads the next bytes of the stream from `src` into `buf`; 0 means the stream has ended
    /// (or `buf` is empty). Nothing after the stream's end is read from `src`. After an error
    /// every further call fails.
    pub fn read<R: Read + ?Sized>(&mut self, src: &mut R, buf: &mut [u8]) -> Result<usize, ExportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = (self.out.len() - self.out_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            self.out.clear();
            self.out_pos = 0;
            let result = match self.state {
                State::Done => return Ok(0),
                State::Failed => {
                    return Err(ExportError::Wire(WireError::Io {
                        what: Item::Int,
                        offset: self.pos,
                        source: io::Error::other("the export stream failed earlier"),
                    }))
                }
                State::ContentsData { len, left } => match self.contents(src, buf, len, left) {
                    Ok(n) if n > 0 => return Ok(n),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                _ => self.step(src),
            };
            if let Err(e) = result {
                self.state = State::Failed;
                self.out.clear();
                return Err(e);
            }
        }
    }

    fn in_nar(&self) -> bool {
        !matches!(self.state, State::Marker | State::Trailer | State::Done | State::Failed)
    }

    /// A wire reader over `src` that counts from where this stream is: offsets inside a NAR
    /// count from the NAR's start, as [`crate::copy_nar`] reports them.
    fn reader<'a, R: Read + ?Sized>(&self, src: &'a mut R, max_string_len: u64) -> Reader<&'a mut R> {
        let base = if self.in_nar() { self.pos - self.nar_start } else { self.pos };
        Reader::resume(src, Limits { max_string_len, ..Limits::default() }, base)
    }

    /// One wire item, read by `read` from where this reader stands: its offset, and the item.
    /// What was consumed counts whether it could be read or not.
    fn read_item<'a, R: Read + ?Sized, T, E>(
        &mut self,
        src: &'a mut R,
        max_string_len: u64,
        read: impl FnOnce(&mut Reader<&'a mut R>) -> Result<T, E>,
    ) -> (u64, Result<T, E>) {
        let mut r = self.reader(src, max_string_len);
        let offset = r.position();
        let result = read(&mut r);
        let consumed = r.position() - offset;
        self.advance(consumed);
        (offset, result)
    }

    fn advance(&mut self, consumed: u64) {
        self.pos += consumed;
    }

    /// Queues the encoding of a decoded item (identical to its bytes in the stream: the
    /// encoding is canonical and the padding was checked) and hashes it if it is NAR.
    fn emit_str(&mut self, s: &[u8]) {
        let start = self.out.len();
        Writer::new(&mut self.out).write_bytes(s).expect("writing to a Vec");
        if self.in_nar() {
            self.hasher.update(&self.out[start..]);
        }
    }

    fn nar_err(&self, source: NarError) -> ExportError {
        ExportError::Nar { offset: self.nar_start, source }
    }

    fn invalid(&self, offset: u64, problem: Problem) -> ExportError {
        self.nar_err(NarError::Invalid { offset, problem })
    }

    /// Reads a NAR string of at most `max` bytes; returns it and its NAR offset. `tag` makes an
    /// over-long string a wrong token rather than a too-long value, as in `copy_nar`.
    fn nar_string<R: Read + ?Sized>(
        &mut self,
        src: &mut R,
        max: u64,
        what: &'static str,
        tag: bool,
    ) -> Result<(Vec<u8>, u64), ExportError> {
        let (offset, result) = self.read_item(src, max, |r| r.read_bytes());
        match result {
            Ok(s) => {
                self.emit_str(&s);
                Ok((s, offset))
            }
            Err(WireError::TooLong { len, .. }) if tag => Err(self.invalid(
                offset,
                Problem::Expected { expected: what, found: format!("a string of {len} bytes") },
            )),
            Err(WireError::TooLong { len, max, .. }) => {
                Err(self.invalid(offset, Problem::TooLong { what, len, max }))
            }
            Err(e) => Err(self.nar_err(NarError::Wire(e))),
        }
    }

    fn tag<R: Read + ?Sized>(
        &mut self,
        src: &mut R,
        expected: &'static str,
    ) -> Result<(Vec<u8>, u64), ExportError> {
        self.nar_string(src, MAX_TAG_LEN, expected, true)
    }

    fn expect<R: Read + ?Sized>(
        &mut self,
        src: &mut R,
        token: &'static str,
        expected: &'static str,
        next: State,
    ) -> Result<(), ExportError> {
        let (s, offset) = self.tag(src, expected)?;
        if s != token.as_bytes() {
            return Err(self.unexpected(offset, expected, &s));
        }
        self.state = next;
        Ok(())
    }

    /// A node has closed: the NAR is complete, or its directory entry closes next.
    fn node_closed(&mut self) {
        if self.dirs.is_empty() {
            let size = self.pos - self.nar_start;
            let sha256 = std::mem::take(&mut self.hasher).finalize().into();
            self.nar = Some(NarSummary { size, sha256 });
            self.state = State::Trailer;
        } else {
            self.state = State::EntryClose;
        }
    }

    /// Reads and checks the item the state expects, queues its bytes and moves the state on.
    fn step<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        match self.state {
            State::Marker => self.marker(src)?,
            State::Magic => self.expect(src, crate::NAR_MAGIC, "'nix-archive-1'", State::NodeOpen)?,
            State::NodeOpen => self.node_open(src)?,
            State::Type => self.expect(src, "type", "'type'", State::TypeValue)?,
            State::TypeValue => self.type_value(src)?,
            State::RegularTag => self.regular_tag(src)?,
            State::ExecutableMarker => self.executable_marker(src)?,
            State::ContentsTag => self.expect(src, "contents", "'contents'", State::ContentsLen)?,
            State::ContentsLen => self.contents_len(src)?,
            State::ContentsData { .. } => unreachable!("streamed by read()"),
            State::ContentsPadding { len } => self.contents_padding(src, len)?,
            State::NodeClose => {
                self.expect(src, ")", "')'", State::NodeClose)?;
                self.node_closed();
            }
            State::TargetTag => self.expect(src, "target", "'target'", State::TargetValue)?,
            State::TargetValue => self.target_value(src)?,
            State::DirTag => self.dir_tag(src)?,
            State::EntryOpen => self.expect(src, "(", "'('", State::NameTag)?,
            State::NameTag => self.expect(src, "name", "'name'", State::NameValue)?,
            State::NameValue => self.name_value(src)?,
            State::NodeTag => self.expect(src, "node", "'node'", State::NodeOpen)?,
            State::EntryClose => self.expect(src, ")", "')'", State::DirTag)?,
            State::Trailer => self.trailer(src)?,
            State::Done | State::Failed => unreachable!("handled by read()"),
        }
        Ok(())
    }

    /// A token other than the ones the grammar allows here.
    fn unexpected(&self, offset: u64, expected: &'static str, token: &[u8]) -> ExportError {
        let found = format!("'{}'", printable(token));
        self.invalid(offset, Problem::Expected { expected, found })
    }

    fn marker<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (offset, marker) = self.read_item(src, MAX_PATH_LEN, |r| r.read_u64());
        let marker = marker.map_err(ExportError::Wire)?;
        match marker {
            0 => self.state = State::Done,
            1 => {
                self.state = State::Magic;
                self.nar_start = self.pos;
                self.hasher = Sha256::new();
            }
            value => return Err(ExportError::BadMarker { offset, value }),
        }
        Writer::new(&mut self.out).write_u64(marker).expect("writing to a Vec");
        Ok(())
    }

    fn node_open<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        if self.dirs.len() > MAX_DEPTH {
            return Err(self.invalid(self.pos - self.nar_start, Problem::TooDeep));
        }
        self.expect(src, "(", "'('", State::Type)
    }

    fn type_value<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        const TYPES: &str = "'regular', 'symlink' or 'directory'";
        let (ty, offset) = self.tag(src, TYPES)?;
        self.state = match &ty[..] {
            b"regular" => State::RegularTag,
            b"symlink" => State::TargetTag,
            b"directory" => {
                self.dirs.push(None);
                State::DirTag
            }
            other => return Err(self.unexpected(offset, TYPES, other)),
        };
        Ok(())
    }

    fn regular_tag<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        const NEXT: &str = "'executable' or 'contents'";
        let (tag, offset) = self.tag(src, NEXT)?;
        self.state = match &tag[..] {
            b"executable" => State::ExecutableMarker,
            b"contents" => State::ContentsLen,
            other => return Err(self.unexpected(offset, NEXT, other)),
        };
        Ok(())
    }

    fn executable_marker<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (marker, offset) = self.tag(src, "''")?;
        if !marker.is_empty() {
            return Err(self.invalid(offset, Problem::NonEmptyExecutableMarker));
        }
        self.state = State::ContentsTag;
        Ok(())
    }

    fn contents_len<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (_, len) = self.read_item(src, MAX_TAG_LEN, |r| r.read_u64());
        let len = len.map_err(|e| self.nar_err(NarError::Wire(e)))?;
        let start = self.out.len();
        Writer::new(&mut self.out).write_u64(len).expect("writing to a Vec");
        self.hasher.update(&self.out[start..]);
        self.state =
            if len == 0 { State::ContentsPadding { len } } else { State::ContentsData { len, left: len } };
        Ok(())
    }

    /// The zero bytes after file contents of `len` bytes.
    fn contents_padding<R: Read + ?Sized>(&mut self, src: &mut R, len: u64) -> Result<(), ExportError> {
        let pad = padding_len(len) as usize;
        let pad_offset = self.pos - self.nar_start;
        let buf = self.read_padding(src, pad, pad_offset)?;
        if buf[..pad].iter().any(|&b| b != 0) {
            return Err(self.nar_err(NarError::Wire(WireError::NonZeroPadding { offset: pad_offset })));
        }
        self.out.extend_from_slice(&buf[..pad]);
        self.hasher.update(&buf[..pad]);
        self.state = State::NodeClose;
        Ok(())
    }

    /// Reads `pad` (at most 8) bytes of padding, whatever they are.
    fn read_padding<R: Read + ?Sized>(
        &mut self,
        src: &mut R,
        pad: usize,
        pad_offset: u64,
    ) -> Result<[u8; 8], ExportError> {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < pad {
            match src.read(&mut buf[got..pad]) {
                Ok(0) => {
                    let e = WireError::Truncated {
                        what: Item::StringPadding,
                        offset: pad_offset,
                        needed: pad as u64,
                        available: got as u64,
                    };
                    return Err(self.nar_err(NarError::Wire(e)));
                }
                Ok(n) => {
                    got += n;
                    self.advance(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let e = WireError::Io { what: Item::StringPadding, offset: pad_offset, source };
                    return Err(self.nar_err(NarError::Wire(e)));
                }
            }
        }
        Ok(buf)
    }

    fn target_value<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (target, offset) = self.nar_string(src, MAX_TARGET_LEN, "symlink target", false)?;
        if target.is_empty() || target.contains(&0) {
            return Err(self.invalid(offset, Problem::BadSymlinkTarget { target: printable(&target) }));
        }
        self.state = State::NodeClose;
        Ok(())
    }

    fn dir_tag<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        const NEXT: &str = "'entry' or ')'";
        let (tag, offset) = self.tag(src, NEXT)?;
        match &tag[..] {
            b")" => {
                self.dirs.pop();
                self.node_closed();
            }
            b"entry" => self.state = State::EntryOpen,
            other => return Err(self.unexpected(offset, NEXT, other)),
        }
        Ok(())
    }

    /// An entry's name: a valid file name, after the directory's previous entry.
    fn name_value<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (name, offset) = self.nar_string(src, MAX_NAME_LEN, "entry name", false)?;
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
            return Err(self.invalid(offset, Problem::BadEntryName { name: printable(&name) }));
        }
        let previous = self.dirs.last_mut().expect("inside a directory");
        if let Some(prev) = previous {
            if name <= *prev {
                let problem = Problem::Unsorted { previous: printable(prev), name: printable(&name) };
                return Err(self.invalid(offset, problem));
            }
        }
        *previous = Some(name);
        self.state = State::NodeTag;
        Ok(())
    }

    /// Passes on up to `buf.len()` bytes of file contents; 0 when there are none left.
    fn contents<R: Read + ?Sized>(
        &mut self,
        src: &mut R,
        buf: &mut [u8],
        len: u64,
        left: u64,
    ) -> Result<usize, ExportError> {
        if left == 0 {
            self.state = State::ContentsPadding { len };
            return Ok(0);
        }
        let want = left.min(buf.len() as u64) as usize;
        let data_offset = self.pos - self.nar_start - (len - left);
        loop {
            match src.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = WireError::Truncated {
                        what: Item::StringData,
                        offset: data_offset,
                        needed: len,
                        available: len - left,
                    };
                    return Err(self.nar_err(NarError::Wire(e)));
                }
                Ok(n) => {
                    self.advance(n as u64);
                    self.hasher.update(&buf[..n]);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::ContentsPadding { len }
                    } else {
                        State::ContentsData { len, left }
                    };
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let e = WireError::Io { what: Item::StringData, offset: data_offset, source };
                    return Err(self.nar_err(NarError::Wire(e)));
                }
            }
        }
    }

    fn trailer<R: Read + ?Sized>(&mut self, src: &mut R) -> Result<(), ExportError> {
        let (_, trailer) = self.read_item(src, MAX_PATH_LEN, Trailer::read_from);
        let trailer = trailer?;
        trailer.write_to(&mut Writer::new(&mut self.out)).expect("writing to a Vec");
        self.entries.push(trailer.into_exported(self.nar.take().expect("a NAR precedes its trailer")));
        self.state = State::Marker;
        Ok(())
    }
}

/// Reads one export stream from `inner` and stops at its end: after the final `u64 0`, reads
/// return 0 and nothing more is taken from `inner`. The stream is checked as
/// [`copy_export`](crate::copy_export) checks it; a bad stream is an [`io::Error`] of kind
/// `InvalidData` (or `UnexpectedEof` when it is cut short) whose inner error is the
/// [`ExportError`]. Wrap an unbuffered `inner` in a `BufReader`: items are read in small pieces.
#[derive(Debug)]
pub struct ExportReader<R> {
    inner: R,
    framer: ExportFramer,
}

impl<R: Read> ExportReader<R> {
    pub fn new(inner: R) -> Self {
        ExportReader { inner, framer: ExportFramer::new() }
    }

    /// True once the whole stream has been read.
    pub fn is_done(&self) -> bool {
        self.framer.is_done()
    }

    /// The paths read completely so far, with their NARs' size and hash.
    pub fn entries(&self) -> &[ExportedPath] {
        self.framer.entries()
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The source and the paths read.
    pub fn into_parts(self) -> (R, Vec<ExportedPath>) {
        (self.inner, self.framer.into_entries())
    }
}

impl<R: Read> Read for ExportReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.framer.read(&mut self.inner, buf).map_err(export_io_error)
    }
}

/// An [`ExportError`] as the [`io::Error`] a reader returns; [`io::Error::into_inner`] gives
/// it back.
pub fn export_io_error(e: ExportError) -> io::Error {
    let kind = if e.is_truncated() { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::InvalidData };
    io::Error::new(kind, e)
}
