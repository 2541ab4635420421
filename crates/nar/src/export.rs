//! The `nix-store --export` stream, as `ImportPaths` takes it and `ExportPaths` returns it
//! (docs/nar.md §4):
//!
//! ```text
//! per path:  u64 1 | NAR | u64 0x4558494e | path | set<path> references | deriver | u64 0
//! end:       u64 0
//! ```

use std::collections::BTreeSet;
use std::io::{self, BufWriter, Read, Write};

use nwh_wire::{Limits, Reader, WireError, Writer};

use crate::{copy_nar, NarError, NarSummary, CHUNK_SIZE};

/// Follows each NAR in an export stream (ASCII `NIXE`, little-endian).
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// Store paths are at most a few hundred bytes; 4 KiB leaves room for any store directory.
pub(crate) const MAX_PATH_LEN: u64 = 4096;

/// One path of an export stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedPath {
    pub path: String,
    pub references: BTreeSet<String>,
    pub deriver: Option<String>,
    /// Size and hash of the path's NAR, computed while copying.
    pub nar: NarSummary,
}

/// Why [`copy_export`] failed. Offsets count from the start of the export stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The source ended early, failed, or broke the encoding outside a NAR.
    #[error("reading export stream: {0}")]
    Wire(#[source] WireError),
    /// A NAR inside the stream is bad; `source` counts offsets from the NAR's start.
    #[error("export stream: bad NAR starting at byte offset {offset}")]
    Nar {
        offset: u64,
        #[source]
        source: NarError,
    },
    /// Neither 1 (another path follows) nor 0 (end of stream).
    #[error(
        "export stream: expected 1 (path follows) or 0 (end) at byte offset {offset}, got {value}; \
         this does not look like the output of 'nix-store --export'"
    )]
    BadMarker { offset: u64, value: u64 },
    #[error("export stream: expected the export magic 0x4558494e at byte offset {offset}, got {value:#x}")]
    BadMagic { offset: u64, value: u64 },
    /// The legacy signature flag after the deriver must be 0 or 1.
    #[error("export stream: expected 0 or 1 (signature flag) at byte offset {offset}, got {value}")]
    BadSignatureFlag { offset: u64, value: u64 },
    /// Writing the copy failed.
    #[error("writing the export stream copy failed")]
    Sink(#[source] io::Error),
}

impl ExportError {
    /// True when the source simply ended before the stream did (inside a NAR or not).
    pub fn is_truncated(&self) -> bool {
        match self {
            ExportError::Wire(e) => matches!(e, WireError::Truncated { .. }),
            ExportError::Nar { source, .. } => source.is_truncated(),
            _ => false,
        }
    }
}

/// Writes the `u64 1` that starts an entry; the NAR goes next.
pub fn write_export_entry_header(w: &mut impl Write) -> io::Result<()> {
    Writer::new(w).write_u64(1)
}

/// Writes what follows an entry's NAR: magic, path, references (sorted, as a set), deriver
/// (`""` for none), and `u64 0` for "no legacy signature".
pub fn write_export_entry_trailer<'a>(
    w: &mut impl Write,
    path: &str,
    references: impl IntoIterator<Item = &'a String>,
    deriver: Option<&str>,
) -> io::Result<()> {
    let refs: BTreeSet<&String> = references.into_iter().collect();
    let mut w = Writer::new(w);
    w.write_u64(EXPORT_MAGIC)?;
    w.write_str(path)?;
    w.write_list(refs.iter().map(|s| s.as_bytes()))?;
    w.write_str(deriver.unwrap_or(""))?;
    w.write_u64(0)
}

/// Writes the `u64 0` that ends the stream.
pub fn write_export_end(w: &mut impl Write) -> io::Result<()> {
    Writer::new(w).write_u64(0)
}

/// What follows a path's NAR in an export stream: magic, path, references, deriver and the
/// optional legacy signature. Read and written by [`copy_export`] and the export reader alike.
pub(crate) struct Trailer {
    path: String,
    /// In the order received, so a copy stays identical even if a writer did not sort.
    references: Vec<String>,
    deriver: String,
    has_signature: u64,
    signature: Option<Vec<u8>>,
}

impl Trailer {
    pub(crate) fn read_from<R: Read>(r: &mut Reader<R>) -> Result<Trailer, ExportError> {
        let offset = r.position();
        let magic = r.read_u64().map_err(ExportError::Wire)?;
        if magic != EXPORT_MAGIC {
            return Err(ExportError::BadMagic { offset, value: magic });
        }
        let path = r.read_string().map_err(ExportError::Wire)?;
        let references = r.read_string_list().map_err(ExportError::Wire)?;
        let deriver = r.read_string().map_err(ExportError::Wire)?;
        let offset = r.position();
        let has_signature = r.read_u64().map_err(ExportError::Wire)?;
        let signature = match has_signature {
            0 => None,
            1 => Some(r.read_bytes().map_err(ExportError::Wire)?),
            value => return Err(ExportError::BadSignatureFlag { offset, value }),
        };
        Ok(Trailer { path, references, deriver, has_signature, signature })
    }

    /// The same bytes as were read (the magic is the only one `read_from` accepts).
    pub(crate) fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.write_u64(EXPORT_MAGIC)?;
        w.write_str(&self.path)?;
        w.write_list(&self.references)?;
        w.write_str(&self.deriver)?;
        w.write_u64(self.has_signature)?;
        if let Some(sig) = &self.signature {
            w.write_bytes(sig)?;
        }
        Ok(())
    }

    pub(crate) fn into_exported(self, nar: NarSummary) -> ExportedPath {
        ExportedPath {
            path: self.path,
            references: self.references.into_iter().collect(),
            deriver: (!self.deriver.is_empty()).then_some(self.deriver),
            nar,
        }
    }
}

/// Copies one whole export stream from `r` to `w`, byte for byte, checking every NAR, and
/// returns what it contained. Nothing after the final `u64 0` is read. As with
/// [`copy_nar`], wrap an unbuffered `r` in a `BufReader`; writes are buffered and flushed here.
pub fn copy_export<R: Read + ?Sized, W: Write + ?Sized>(
    r: &mut R,
    w: &mut W,
) -> Result<Vec<ExportedPath>, ExportError> {
    let mut r = Reader::with_limits(r, Limits { max_string_len: MAX_PATH_LEN, ..Limits::default() });
    let mut w = Writer::new(BufWriter::with_capacity(CHUNK_SIZE, w));
    let mut entries = Vec::new();
    loop {
        let offset = r.position();
        let marker = r.read_u64().map_err(ExportError::Wire)?;
        w.write_u64(marker).map_err(ExportError::Sink)?;
        match marker {
            0 => break,
            1 => {}
            value => return Err(ExportError::BadMarker { offset, value }),
        }

        let nar_offset = r.position();
        let nar = copy_nar(&mut r, &mut w).map_err(|e| match e {
            NarError::Sink(e) => ExportError::Sink(e),
            source => ExportError::Nar { offset: nar_offset, source },
        })?;

        let trailer = Trailer::read_from(&mut r)?;
        trailer.write_to(&mut w).map_err(ExportError::Sink)?;
        entries.push(trailer.into_exported(nar));
    }
    w.flush().map_err(ExportError::Sink)?;
    Ok(entries)
}
