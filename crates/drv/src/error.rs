//! Why a `.drv` could not be read or parsed.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What stood at the place where parsing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    EndOfInput,
    Byte(u8),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfInput => f.write_str("end of input"),
            Found::Byte(b) if b.is_ascii_graphic() || *b == b' ' => write!(f, "'{}'", *b as char),
            Found::Byte(b) => write!(f, "byte 0x{b:02x}"),
        }
    }
}

/// Why a `.drv` could not be parsed. Every variant names the byte offset in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("expected {expected} at byte offset {offset}, found {found}")]
    Expected { offset: usize, expected: &'static str, found: Found },
    /// `DrvWithVersion(…)` (dynamic derivations, an experimental feature of newer Nix).
    #[error("unsupported derivation format '{format}' at byte offset {offset}")]
    UnsupportedFormat { offset: usize, format: String },
    #[error("string at byte offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    /// Where Nix requires an absolute store path (inputs, and outputs unless empty).
    #[error("{what} '{path}' at byte offset {offset} is not an absolute path")]
    NotAPath { offset: usize, what: &'static str, path: String },
    #[error("duplicate {what} '{key}' at byte offset {offset}")]
    Duplicate { offset: usize, what: &'static str, key: String },
    #[error("unexpected data after the derivation at byte offset {offset}")]
    TrailingData { offset: usize },
}

impl ParseError {
    pub fn offset(&self) -> usize {
        match self {
            ParseError::Expected { offset, .. }
            | ParseError::UnsupportedFormat { offset, .. }
            | ParseError::InvalidUtf8 { offset }
            | ParseError::NotAPath { offset, .. }
            | ParseError::Duplicate { offset, .. }
            | ParseError::TrailingData { offset } => *offset,
        }
    }
}

/// [`Derivation::read`](crate::Derivation::read) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read derivation '{}'", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse derivation '{}'", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}
