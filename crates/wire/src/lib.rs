//! Nix's wire serialisation, as used on the build hook's stdin (docs/hook-protocol.md §3).
//!
//! Integers are u64 little-endian. A string is a u64 length, the raw bytes, then zero bytes up
//! to the next multiple of 8. A list or set is a u64 count followed by that many strings.
//! Booleans are integers.
//!
//! The reader is meant for input from another process: every length and count is checked
//! against [`Limits`] before anything is allocated for it, all errors name the byte offset at
//! which the offending item starts, and no input can make it panic.

pub mod greeting;
pub mod version;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};

/// Longest string accepted by default. The longest thing a hook receives is a settings value
/// (e.g. a long `builders` line or `nix-path`); a megabyte leaves ample room.
pub const DEFAULT_MAX_STRING_LEN: u64 = 1 << 20;

/// Most list elements accepted by default. The largest list is the input closure sent after
/// accept; a million store paths is beyond any real derivation.
pub const DEFAULT_MAX_LIST_LEN: u64 = 1 << 20;

/// Bounds the reader enforces before trusting a length or count from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum length of one string, in bytes (padding not counted).
    pub max_string_len: u64,
    /// Maximum number of elements in one list or set.
    pub max_list_len: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_string_len: DEFAULT_MAX_STRING_LEN, max_list_len: DEFAULT_MAX_LIST_LEN }
    }
}

impl Limits {
    /// For a path info from a store that is not trusted for it: every string in one (a store
    /// path, a hash, a content address, a signature) is far below `PATH_MAX` (4 KiB), and
    /// 65 536 references are more than any real path has. With the defaults, one info could
    /// claim a million strings of a megabyte each.
    pub const PATH_INFO: Limits = Limits { max_string_len: 4096, max_list_len: 1 << 16 };
}

/// The piece of the encoding being read when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// A plain integer or boolean.
    Int,
    /// The length prefix of a string.
    StringLength,
    /// The bytes of a string.
    StringData,
    /// The zero padding after a string.
    StringPadding,
    /// The element count of a list or set.
    ListCount,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Item::Int => "integer",
            Item::StringLength => "string length",
            Item::StringData => "string contents",
            Item::StringPadding => "string padding",
            Item::ListCount => "list count",
        })
    }
}

/// Why decoding failed. Offsets are counted from where the [`Reader`] started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside an item (or before it, see [`WireError::is_clean_eof`]).
    #[error(
        "truncated input: {what} at byte offset {offset} needs {needed} bytes, \
         but the input ended after {available}"
    )]
    Truncated {
        what: Item,
        /// Where the item starts.
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// A string length or list count above the reader's [`Limits`].
    #[error("{what} {len} at byte offset {offset} exceeds the limit of {max}")]
    TooLong {
        what: Item,
        /// Where the length/count field starts.
        offset: u64,
        len: u64,
        max: u64,
    },
    /// Padding after a string contained a non-zero byte; Nix rejects this too, and it
    /// usually means the reader is out of step with the writer.
    #[error("non-zero string padding at byte offset {offset}")]
    NonZeroPadding {
        /// Where the padding starts.
        offset: u64,
    },
    /// A string that must be text was not UTF-8. The raw bytes are kept in `source`.
    #[error("string at byte offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string (its length field) starts.
        offset: u64,
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// The underlying reader failed.
    #[error("I/O error reading {what} at byte offset {offset}")]
    Io {
        what: Item,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl WireError {
    /// Byte offset of the item that could not be decoded.
    pub fn offset(&self) -> u64 {
        match self {
            WireError::Truncated { offset, .. }
            | WireError::TooLong { offset, .. }
            | WireError::NonZeroPadding { offset }
            | WireError::InvalidUtf8 { offset, .. }
            | WireError::Io { offset, .. } => *offset,
        }
    }

    /// True when the input ended exactly where a new item would begin. The hook protocol
    /// treats that as the parent hanging up normally (exit 0), unlike a cut-off message.
    pub fn is_clean_eof(&self) -> bool {
        matches!(
            self,
            WireError::Truncated { available: 0, what: Item::Int | Item::StringLength | Item::ListCount, .. }
        )
    }
}

pub type Result<T, E = WireError> = std::result::Result<T, E>;

/// Number of zero bytes that follow a string of `len` bytes.
pub fn padding_len(len: u64) -> u64 {
    (8 - len % 8) % 8
}

/// Total encoded size of a string of `len` bytes: length field, data and padding.
pub fn encoded_string_len(len: u64) -> u64 {
    8 + len + padding_len(len)
}

/// Decodes Nix wire items from a byte stream.
///
/// It reads exactly the bytes of each item and never ahead, so the underlying stream can be
/// handed on (e.g. to read the post-accept data) at any item boundary. Wrap slow sources in a
/// `BufReader` yourself if many small reads matter.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    pos: u64,
    limits: Limits,
}

impl<R: Read> Reader<R> {
    /// A reader with [`Limits::default`].
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        Reader { inner, pos: 0, limits }
    }

    /// A reader whose [`Reader::position`] (and so every error offset) starts at `position`:
    /// for a decoder that keeps its place in a stream between calls but not the stream itself.
    pub fn resume(inner: R, limits: Limits, position: u64) -> Self {
        Reader { inner, pos: position, limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Runs `read` with `limits` in force (never looser than the reader's own), then the
    /// reader's own limits again.
    pub fn bounded<T>(&mut self, limits: Limits, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let own = self.limits;
        self.limits = Limits {
            max_string_len: own.max_string_len.min(limits.max_string_len),
            max_list_len: own.max_list_len.min(limits.max_list_len),
        };
        let result = read(self);
        self.limits = own;
        result
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reading from the inner stream directly desynchronises [`Reader::position`].
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fills `buf` completely; `what`/`offset` describe the item for error messages, and
    /// `already` is how much of that item was consumed before this call.
    fn fill(&mut self, buf: &mut [u8], what: Item, offset: u64, already: u64) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(WireError::Truncated {
                        what,
                        offset,
                        needed: already + buf.len() as u64,
                        available: already + filled as u64,
                    })
                }
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(WireError::Io { what, offset, source }),
            }
        }
        Ok(())
    }

    fn read_u64_as(&mut self, what: Item) -> Result<u64> {
        let mut buf = [0u8; 8];
        let offset = self.pos;
        self.fill(&mut buf, what, offset, 0)?;
        Ok(u64::from_le_bytes(buf))
    }

    pub fn read_u64(&mut self) -> Result<u64> {
        self.read_u64_as(Item::Int)
    }

    /// Any non-zero value is true, as in Nix's own `readBool`.
    pub fn read_bool(&mut self) -> Result<bool> {
        Ok(self.read_u64()? != 0)
    }

    /// Reads a string as raw bytes. Returns the bytes and the offset the string started at.
    fn read_bytes_at(&mut self) -> Result<(Vec<u8>, u64)> {
        let offset = self.pos;
        let len = self.read_u64_as(Item::StringLength)?;
        if len > self.limits.max_string_len {
            return Err(WireError::TooLong {
                what: Item::StringLength,
                offset,
                len,
                max: self.limits.max_string_len,
            });
        }

        let data_offset = self.pos;
        // Grow with the bytes that actually arrive instead of reserving `len` up front: the
        // limit may be set very high, and a lying length must not cost memory the input
        // never backs.
        let mut data = Vec::with_capacity(len.min(64 * 1024) as usize);
        let mut chunk = [0u8; 8192];
        while (data.len() as u64) < len {
            let want = (len - data.len() as u64).min(chunk.len() as u64) as usize;
            let already = data.len() as u64;
            // `fill` reports `needed` relative to this chunk; report it for the whole string.
            self.fill(&mut chunk[..want], Item::StringData, data_offset, already).map_err(|e| match e {
                WireError::Truncated { what, offset, available, .. } => {
                    WireError::Truncated { what, offset, needed: len, available }
                }
                other => other,
            })?;
            data.extend_from_slice(&chunk[..want]);
        }

        let pad = padding_len(len) as usize;
        if pad > 0 {
            let pad_offset = self.pos;
            let mut buf = [0u8; 8];
            self.fill(&mut buf[..pad], Item::StringPadding, pad_offset, 0)?;
            if buf[..pad].iter().any(|&b| b != 0) {
                return Err(WireError::NonZeroPadding { offset: pad_offset });
            }
        }
        Ok((data, offset))
    }

    /// Reads a string without interpreting its bytes (store paths and setting values are not
    /// guaranteed to be UTF-8 by Nix).
    pub fn read_bytes(&mut self) -> Result<Vec<u8>> {
        self.read_bytes_at().map(|(data, _)| data)
    }

    /// Reads a string that must be UTF-8 text.
    pub fn read_string(&mut self) -> Result<String> {
        let (data, offset) = self.read_bytes_at()?;
        String::from_utf8(data).map_err(|source| WireError::InvalidUtf8 { offset, source })
    }

    fn read_count(&mut self) -> Result<u64> {
        let offset = self.pos;
        let count = self.read_u64_as(Item::ListCount)?;
        if count > self.limits.max_list_len {
            return Err(WireError::TooLong {
                what: Item::ListCount,
                offset,
                len: count,
                max: self.limits.max_list_len,
            });
        }
        Ok(count)
    }

    fn read_list_with<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let count = self.read_count()?;
        // Same reasoning as for strings: the count is only a claim until the items arrive.
        let mut out = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    pub fn read_bytes_list(&mut self) -> Result<Vec<Vec<u8>>> {
        self.read_list_with(Self::read_bytes)
    }

    pub fn read_string_list(&mut self) -> Result<Vec<String>> {
        self.read_list_with(Self::read_string)
    }

    /// Reads a set. Nix sends sets sorted, but order and duplicates are not checked: the
    /// parent is trusted on that, and a `BTreeSet` normalises both anyway.
    pub fn read_string_set(&mut self) -> Result<BTreeSet<String>> {
        Ok(self.read_string_list()?.into_iter().collect())
    }
}

/// Raw bytes, counted in [`Reader::position`]: for payloads that sit between wire items and
/// must be streamed rather than held in memory (NAR contents, an export stream), so that
/// error offsets after them stay right.
impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Encodes Nix wire items onto a byte stream. No buffering of its own.
#[derive(Debug)]
pub struct Writer<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer { inner, pos: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writing to the inner stream directly desynchronises [`Writer::position`].
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    pub fn write_u64(&mut self, n: u64) -> io::Result<()> {
        self.put(&n.to_le_bytes())
    }

    pub fn write_bool(&mut self, b: bool) -> io::Result<()> {
        self.write_u64(u64::from(b))
    }

    pub fn write_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        let len = data.len() as u64;
        self.write_u64(len)?;
        self.put(data)?;
        self.put(&[0u8; 8][..padding_len(len) as usize])
    }

    pub fn write_str(&mut self, s: &str) -> io::Result<()> {
        self.write_bytes(s.as_bytes())
    }

    /// Writes a list or set. The count goes first, hence the exact-size requirement. For a
    /// set, pass the elements in sorted order (a `BTreeSet` iterates that way), as Nix does.
    pub fn write_list<I>(&mut self, items: I) -> io::Result<()>
    where
        I: IntoIterator,
        I::IntoIter: ExactSizeIterator,
        I::Item: AsRef<[u8]>,
    {
        let items = items.into_iter();
        self.write_u64(items.len() as u64)?;
        for item in items {
            self.write_bytes(item.as_ref())?;
        }
        Ok(())
    }
}

/// Raw bytes, counted in [`Writer::position`], for streamed payloads between wire items.
impl<W: Write> Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        assert_eq!(padding_len(0), 0);
        assert_eq!(padding_len(1), 7);
        assert_eq!(padding_len(7), 1);
        assert_eq!(padding_len(8), 0);
        assert_eq!(padding_len(9), 7);
        assert_eq!(encoded_string_len(3), 16);
        assert_eq!(encoded_string_len(0), 8);
    }

    #[test]
    fn resume_counts_from_the_given_position() {
        let mut r = Reader::resume(&[1u8, 0, 0, 0, 0, 0, 0, 0, 9][..], Limits::default(), 100);
        assert_eq!(r.read_u64().unwrap(), 1);
        assert_eq!(r.position(), 108);
        let err = r.read_u64().unwrap_err();
        assert_eq!(err.offset(), 108);
    }

    #[test]
    fn clean_eof_only_at_item_start() {
        let err = Reader::new(&[][..]).read_string().unwrap_err();
        assert!(err.is_clean_eof(), "{err}");
        let err = Reader::new(&[1u8, 0, 0][..]).read_string().unwrap_err();
        assert!(!err.is_clean_eof(), "{err}");
        let err = Reader::new(&[1u8, 0, 0, 0, 0, 0, 0, 0][..]).read_string().unwrap_err();
        assert!(!err.is_clean_eof(), "{err}");
    }
}
