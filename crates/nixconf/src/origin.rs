//! Where a setting's value came from, for messages that point at the line to fix.

use std::fmt;
use std::path::PathBuf;

/// Where a setting's current value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of a configuration file (1-based).
    File { path: PathBuf, line: usize },
    /// A line of the `NIX_CONFIG` environment variable (1-based).
    NixConfig { line: usize },
    /// The settings block the parent sent on stdin.
    Block,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::NixConfig { line } => write!(f, "NIX_CONFIG:{line}"),
            Origin::Block => f.write_str("settings block"),
        }
    }
}
