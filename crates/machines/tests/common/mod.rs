//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};

use nwh_machines::{parse_builders, Diagnostic, Machines, ParseContext, Severity, BUILDERS_SETTING};

pub const LOCAL: &str = "x86_64-linux";

pub fn ctx() -> ParseContext {
    ParseContext::new(LOCAL)
}

/// Parse a `builders` setting value with the hook's context.
pub fn parse(value: &str) -> Machines {
    parse_builders(value, BUILDERS_SETTING, &ctx())
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The one diagnostic of `m`, failing with all of them shown otherwise.
pub fn single(m: &Machines) -> &Diagnostic {
    assert_eq!(m.diagnostics.len(), 1, "expected exactly one diagnostic, got:\n{}", render(m));
    &m.diagnostics[0]
}

pub fn render(m: &Machines) -> String {
    m.diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// What a diagnostic must say; empty word lists are not checked.
pub struct Want<'a> {
    pub severity: Severity,
    pub location: &'a str,
    pub line: u32,
    pub column: u32,
    pub message: &'a [&'a str],
    pub expected: &'a [&'a str],
    pub fix: &'a [&'a str],
}

impl Want<'_> {
    pub fn check(&self, d: &Diagnostic) {
        let shown = d.to_string();
        assert_eq!(d.severity, self.severity, "severity of:\n{shown}");
        assert_eq!(d.location, self.location, "location of:\n{shown}");
        assert_eq!((d.line, d.column), (self.line, self.column), "line:column of:\n{shown}");
        for (field, text, words) in [
            ("message", &d.message, self.message),
            ("expected", &d.expected, self.expected),
            ("fix", &d.fix, self.fix),
        ] {
            for w in words {
                assert!(text.contains(w), "{field} lacks {w:?}:\n{shown}");
            }
        }
        assert!(!d.expected.is_empty() && !d.fix.is_empty(), "expected and fix must be said:\n{shown}");
        assert!(shown.contains(&format!("  expected: {}", d.expected)), "{shown}");
        assert!(shown.contains(&format!("  fix: {}", d.fix)), "{shown}");
    }
}

pub fn error<'a>(line: u32, column: u32, message: &'a [&'a str]) -> Want<'a> {
    Want {
        severity: Severity::Error,
        location: BUILDERS_SETTING,
        line,
        column,
        message,
        expected: &[],
        fix: &[],
    }
}

pub fn warning<'a>(line: u32, column: u32, message: &'a [&'a str]) -> Want<'a> {
    Want { severity: Severity::Warning, ..error(line, column, message) }
}
