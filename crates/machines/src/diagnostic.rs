//! Diagnostics: one problem, where it is, and what to do about it.
//!
//! Nix reports machines-file problems as one cryptic line without a position (or not at all), and
//! a single bad line kills every build. Here each problem carries file, line, column, what was
//! expected and a concrete fix, so a user can repair the file without reading Nix's source.

use std::fmt;

/// Whether the problem cost a machine (or an included file) or is only worth knowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The entry is still used as written.
    Warning,
    /// The entry (machine line or include) was skipped; the other entries still serve.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem found while reading the machine list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A file path, or the name of where the value came from (`setting 'builders'`,
    /// `NIX_REMOTE_SYSTEMS`), because the `builders` value often never was in a file.
    pub location: String,
    /// 1-based, relative to `location`; 0 when the problem concerns the whole file.
    pub line: u32,
    /// 1-based, in characters, pointing at the offending token; 0 with `line` 0.
    pub column: u32,
    /// How many characters the offending token spans (for the `^^^` underline).
    pub width: u32,
    pub message: String,
    /// What the reader wanted to find there; empty when there is nothing to say.
    pub expected: String,
    /// A concrete way out; empty when there is nothing to say.
    pub fix: String,
    /// The offending line as written (without its line end), empty with `line` 0.
    pub source_line: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Whether this is the warning that the file `path`, included with `@`, does not exist.
    /// Nix says nothing of it; a caller that knows the user never named the file (Nix's own
    /// default, `@/etc/nix/machines`) can be as quiet.
    pub fn is_missing_file(&self, path: &str) -> bool {
        let start = crate::expand::missing_file_message(path);
        self.severity == Severity::Warning
            && self.message.strip_prefix(&start).is_some_and(|rest| rest.starts_with(';'))
    }

    /// A problem with a file as a whole (it cannot be read), not with one of its lines.
    pub(crate) fn whole_file(severity: Severity, location: &str, message: String) -> Self {
        Diagnostic {
            severity,
            location: location.to_owned(),
            line: 0,
            column: 0,
            width: 0,
            message,
            expected: String::new(),
            fix: String::new(),
            source_line: String::new(),
        }
    }

    pub(crate) fn expected(mut self, text: impl Into<String>) -> Self {
        self.expected = text.into();
        self
    }

    pub(crate) fn fix(mut self, text: impl Into<String>) -> Self {
        self.fix = text.into();
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.location)?;
        } else {
            write!(f, "{}:{}:{}: ", self.location, self.line, self.column)?;
        }
        write!(f, "{}: {}", self.severity, self.message)?;
        if !self.expected.is_empty() {
            write!(f, "\n  expected: {}", self.expected)?;
        }
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        if self.line != 0 {
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            // Copy tabs into the padding so the carets line up under tab-separated columns.
            let pad: String = self
                .source_line
                .chars()
                .take((self.column as usize).saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(self.width.max(1) as usize);
            write!(f, "\n  {number} | {}", self.source_line)?;
            write!(f, "\n  {gutter} | {pad}{carets}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// One line of input being read, so that each check can point into it by byte offset.
pub(crate) struct Site<'a> {
    pub location: &'a str,
    pub line_no: u32,
    /// The line without its `\n`.
    pub text: &'a str,
}

impl Site<'_> {
    /// A diagnostic for `len` bytes at byte offset `at` of this line.
    pub(crate) fn at(&self, severity: Severity, at: usize, len: usize, message: String) -> Diagnostic {
        let before = &self.text[..at];
        let token = &self.text[at..(at + len).min(self.text.len())];
        Diagnostic {
            severity,
            location: self.location.to_owned(),
            line: self.line_no,
            column: before.chars().count() as u32 + 1,
            width: token.chars().count().max(1) as u32,
            message,
            expected: String::new(),
            fix: String::new(),
            source_line: self.text.trim_end_matches('\r').to_owned(),
        }
    }

    pub(crate) fn error(&self, at: usize, len: usize, message: String) -> Diagnostic {
        self.at(Severity::Error, at, len, message)
    }

    pub(crate) fn warning(&self, at: usize, len: usize, message: String) -> Diagnostic {
        self.at(Severity::Warning, at, len, message)
    }
}

/// A word of a [`Site`]'s line.
#[derive(Clone, Copy)]
pub(crate) struct Token<'a> {
    /// Byte offset in the line.
    pub at: usize,
    pub text: &'a str,
}
