//! What can be wrong with the options, each in words that name the option and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("reading the configuration {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Any other error, in the file at `path`.
    #[error("in the configuration {}: {error}", path.display())]
    In { path: PathBuf, error: Box<OptionsError> },
    /// Not TOML, an unknown key, or a value of the wrong type: toml's words, with the line.
    #[error("{0}")]
    Syntax(String),
    #[error(
        "{given} is a relative path; the hook runs with its working directory at `/`, so it would \
         mean {}: write an absolute path",
        means.display()
    )]
    Relative { given: String, means: PathBuf },
    #[error("{given} is out of range: it must be from {min} to {max} ({why}; the default is {default})")]
    OutOfRange { given: String, min: u64, max: u64, why: &'static str, default: u64 },
    #[error(
        "{given} is not a speed factor: it must be a number above 0, on the scale of the machines \
         file's fifth column (the default is 1)"
    )]
    NotASpeed { given: String },
}
