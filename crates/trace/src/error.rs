//! What can go wrong writing or reading a trace; `at` is `FILE:LINE`.

use std::path::PathBuf;

use crate::VERSION;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("encoding the record: {0}")]
    Encode(serde_json::Error),
    #[error("opening {}: {error}", path.display())]
    OpenToAppend { path: PathBuf, error: std::io::Error },
    #[error("appending to {}: {error}", path.display())]
    Append { path: PathBuf, error: std::io::Error },
    /// A retried write would not be atomic any more, so a short one is an error.
    #[error("short write to {} ({written} of {len} bytes)", path.display())]
    ShortWrite { path: PathBuf, written: usize, len: usize },
    #[error("opening the trace {}: {error}", path.display())]
    Open { path: PathBuf, error: std::io::Error },
    #[error("reading {at}: {error}")]
    Read { at: String, error: std::io::Error },
    #[error("{at}: the line is longer than {limit}, the most a trace record may be: is this a trace?")]
    TooLong { at: String, limit: String },
    #[error("{at}: not UTF-8 text: {error}")]
    NotUtf8 { at: String, error: std::string::FromUtf8Error },
    /// `why` is at most a few hundred characters: serde's words may quote a huge value.
    #[error("{at}: not a nix-wasm-hook trace record: {why}")]
    NotARecord { at: String, why: String },
    #[error("format version {0} (this nix-wasm-hook reads version {VERSION})")]
    Version(u32),
    #[error("{0}")]
    Json(serde_json::Error),
}
