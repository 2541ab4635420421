//! What stops the configuration from loading ([`ConfError`]) and what Nix would let pass but
//! the caller may want to log ([`Warning`]).

use std::fmt;
use std::path::PathBuf;

use crate::origin::Origin;

/// Include nesting beyond this is taken for a loop (Nix itself would recurse until it crashes).
pub const MAX_INCLUDE_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// A line that is neither blank, a comment, an include nor `name = value`.
    #[error("{origin}: expected 'name = value'")]
    Syntax { origin: Origin, line: String },
    /// `include` / `!include` not followed by exactly one path.
    #[error("{origin}: expected exactly one path after '{keyword}'")]
    BadInclude { origin: Origin, keyword: String },
    /// `include` of a file that does not exist (`!include` skips it instead).
    #[error("{origin}: included file '{}' not found", path.display())]
    IncludeNotFound { origin: Origin, path: PathBuf },
    #[error("{origin}: includes nested more than {MAX_INCLUDE_DEPTH} deep at '{}' (include loop?)", path.display())]
    IncludeTooDeep { origin: Origin, path: PathBuf },
    /// A setting this crate interprets got a value of the wrong type; Nix refuses these too.
    #[error("{origin}: setting '{name}' has invalid value '{value}' (expected {expected})")]
    InvalidValue { origin: Origin, name: String, value: String, expected: &'static str },
}

/// Something Nix would tolerate but that likely means the configuration is not what the
/// administrator thinks. The caller decides whether to log it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A configuration file exists but could not be read; Nix skips such files silently.
    Unreadable {
        path: PathBuf,
        /// The include line, for included files.
        included_from: Option<Origin>,
        error: String,
    },
    /// `extra-<name>` where `<name>` is not a list setting. Nix treats the whole name as an
    /// unknown setting; so does this crate (it is kept under the `extra-` name).
    NotAppendable { origin: Origin, name: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Unreadable { path, included_from, error } => {
                if let Some(o) = included_from {
                    write!(f, "{o}: ")?;
                }
                write!(f, "cannot read '{}', ignoring it: {error}", path.display())
            }
            Warning::NotAppendable { origin, name } => {
                write!(f, "{origin}: '{name}' does not name a list setting; kept as an unknown setting")
            }
        }
    }
}

pub type Result<T, E = ConfError> = std::result::Result<T, E>;
