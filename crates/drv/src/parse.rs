//! The `.drv` reader: ATerm text to a [`Derivation`], every failure with its byte offset.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::derivation::{Derivation, Output};
use crate::error::{Found, ParseError, ReadError};

impl Derivation {
    /// Parses the bytes of a `.drv` file.
    pub fn parse(bytes: &[u8]) -> Result<Derivation, ParseError> {
        Parser { s: bytes, pos: 0 }.derivation()
    }

    /// Reads and parses a `.drv` file.
    pub fn read(path: impl AsRef<Path>) -> Result<Derivation, ReadError> {
        let path = path.as_ref();
        let bytes = nwh_files::read(path, nwh_files::DERIVATION)
            .map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
        Derivation::parse(&bytes).map_err(|source| ReadError::Parse { path: path.to_path_buf(), source })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn found(&self) -> Found {
        self.s.get(self.pos).map_or(Found::EndOfInput, |&b| Found::Byte(b))
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        ParseError::Expected { offset: self.pos, expected, found: self.found() }
    }

    fn expect(&mut self, token: &'static str) -> Result<(), ParseError> {
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(self.expected(token))
        }
    }

    fn peek_is(&self, b: u8) -> bool {
        self.s.get(self.pos) == Some(&b)
    }

    /// Consumes `,` and returns true, or returns false before `close`. Anything else is an
    /// error naming both.
    fn more(&mut self, first: bool, close: u8, expected: &'static str) -> Result<bool, ParseError> {
        if self.peek_is(close) {
            self.pos += 1;
            return Ok(false);
        }
        if !first {
            if !self.peek_is(b',') {
                return Err(self.expected(expected));
            }
            self.pos += 1;
        }
        Ok(true)
    }

    fn string(&mut self) -> Result<(String, usize), ParseError> {
        let start = self.pos;
        if !self.peek_is(b'"') {
            return Err(self.expected("'\"'"));
        }
        self.pos += 1;
        let mut buf = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err(self.expected("'\"' closing the string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let Some(&c) = self.s.get(self.pos + 1) else {
                        self.pos += 1;
                        return Err(self.expected("an escaped character"));
                    };
                    // Any other escaped byte stands for itself, as in Nix's reader.
                    buf.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        c => c,
                    });
                    self.pos += 2;
                }
                Some(&b) => {
                    buf.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(buf).map(|s| (s, start)).map_err(|_| ParseError::InvalidUtf8 { offset: start })
    }

    fn path(&mut self, what: &'static str) -> Result<(String, usize), ParseError> {
        let (s, offset) = self.string()?;
        if !s.starts_with('/') {
            return Err(ParseError::NotAPath { offset, what, path: s });
        }
        Ok((s, offset))
    }

    fn string_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect("[")?;
        let mut out = Vec::new();
        while self.more(out.is_empty(), b']', "',' or ']'")? {
            out.push(self.string()?.0);
        }
        Ok(out)
    }

    fn string_set(&mut self, what: &'static str, paths: bool) -> Result<BTreeSet<String>, ParseError> {
        self.expect("[")?;
        let mut out = BTreeSet::new();
        let mut first = true;
        while self.more(first, b']', "',' or ']'")? {
            first = false;
            let (s, offset) = if paths { self.path(what)? } else { self.string()? };
            if out.contains(&s) {
                return Err(ParseError::Duplicate { offset, what, key: s });
            }
            out.insert(s);
        }
        Ok(out)
    }

    fn derivation(mut self) -> Result<Derivation, ParseError> {
        self.refuse_versioned()?;
        self.expect("Derive(")?;
        let outputs = self.outputs()?;
        self.expect(",")?;
        let input_drvs = self.input_drvs()?;
        self.expect(",")?;
        let input_srcs = self.string_set("input source", true)?;
        self.expect(",")?;
        let platform = self.string()?.0;
        self.expect(",")?;
        let builder = self.string()?.0;
        self.expect(",")?;
        let args = self.string_list()?;
        self.expect(",")?;
        let env = self.env()?;
        self.expect(")")?;

        // Nix writes no trailing newline; tolerate one from an editor, nothing else.
        let rest = &self.s[self.pos..];
        if !(rest.is_empty() || rest == b"\n") {
            return Err(ParseError::TrailingData { offset: self.pos });
        }
        Ok(Derivation { outputs, input_drvs, input_srcs, platform, builder, args, env })
    }

    /// Newer Nix's `DrvWithVersion(…)` is refused by name, so the error says what the file is
    /// rather than that `Derive(` was expected.
    fn refuse_versioned(&mut self) -> Result<(), ParseError> {
        if !self.s.starts_with(b"DrvWithVersion(") {
            return Ok(());
        }
        let offset = "DrvWithVersion(".len();
        self.pos = offset;
        let format = self.string().map(|(s, _)| s).unwrap_or_default();
        Err(ParseError::UnsupportedFormat { offset, format: format!("DrvWithVersion {format}") })
    }

    fn outputs(&mut self) -> Result<BTreeMap<String, Output>, ParseError> {
        self.expect("[")?;
        let mut outputs = BTreeMap::new();
        let mut first = true;
        while self.more(first, b']', "',' or ']' in the output list")? {
            first = false;
            self.expect("(")?;
            let (name, offset) = self.string()?;
            self.expect(",")?;
            let (path, path_offset) = self.string()?;
            if !path.is_empty() && !path.starts_with('/') {
                return Err(ParseError::NotAPath { offset: path_offset, what: "output path", path });
            }
            self.expect(",")?;
            let hash_algo = self.string()?.0;
            self.expect(",")?;
            let hash = self.string()?.0;
            self.expect(")")?;
            if outputs.contains_key(&name) {
                return Err(ParseError::Duplicate { offset, what: "output", key: name });
            }
            outputs.insert(name, Output { path, hash_algo, hash });
        }
        Ok(outputs)
    }

    fn input_drvs(&mut self) -> Result<BTreeMap<String, BTreeSet<String>>, ParseError> {
        self.expect("[")?;
        let mut input_drvs = BTreeMap::new();
        let mut first = true;
        while self.more(first, b']', "',' or ']' in the input derivation list")? {
            first = false;
            self.expect("(")?;
            let (path, offset) = self.path("input derivation")?;
            self.expect(",")?;
            if self.peek_is(b'(') {
                // Newer Nix's dynamic-derivation form of an input: `(["out"],[…])`.
                return Err(ParseError::UnsupportedFormat {
                    offset: self.pos,
                    format: "dynamic derivation inputs".into(),
                });
            }
            let outputs = self.string_set("output name", false)?;
            self.expect(")")?;
            if input_drvs.contains_key(&path) {
                return Err(ParseError::Duplicate { offset, what: "input derivation", key: path });
            }
            input_drvs.insert(path, outputs);
        }
        Ok(input_drvs)
    }

    fn env(&mut self) -> Result<BTreeMap<String, String>, ParseError> {
        self.expect("[")?;
        let mut env = BTreeMap::new();
        let mut first = true;
        while self.more(first, b']', "',' or ']' in the environment")? {
            first = false;
            self.expect("(")?;
            let (key, offset) = self.string()?;
            self.expect(",")?;
            let value = self.string()?.0;
            self.expect(")")?;
            if env.contains_key(&key) {
                return Err(ParseError::Duplicate { offset, what: "environment variable", key });
            }
            env.insert(key, value);
        }
        Ok(env)
    }
}
