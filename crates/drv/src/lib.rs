//! Nix derivation files (`.drv`, the ATerm form written by Nix) and the `BasicDerivation` that
//! a remote build sends over the serve protocol (docs/serve-protocol.md §5).
//!
//! ```text
//! Derive([outputs],[inputDrvs],[inputSrcs],"platform","builder",[args],[env])
//!   output   = ("name","path","hashAlgo","hash")
//!   inputDrv = ("/nix/store/…drv",["out",…])
//!   env      = ("key","value")
//! ```
//!
//! Nix writes every list of a `.drv` sorted and without duplicates, and [`Derivation::to_aterm`]
//! prints a parsed file back byte for byte. The parser is stricter than Nix's on two points that
//! only hand-made files hit: a repeated output, input or variable is an error (Nix silently keeps
//! one of them), and every string must be UTF-8.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nwh_wire::{Reader, WireError, Writer};

/// One output of a derivation, as written in the `.drv`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Full store path; empty for floating content-addressed, deferred and impure outputs.
    pub path: String,
    /// `""` for input-addressed outputs, else the method prefix and algorithm, e.g.
    /// `sha256`, `r:sha256`, `text:sha256`.
    pub hash_algo: String,
    /// Base-16 hash for fixed outputs, `impure` for impure ones, else empty.
    pub hash: String,
}

impl Output {
    /// True for a fixed-output derivation's output (its hash is known in advance).
    pub fn is_fixed(&self) -> bool {
        !self.hash_algo.is_empty() && !self.hash.is_empty() && self.hash != "impure"
    }
}

/// A parsed `.drv` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Output name → output.
    pub outputs: BTreeMap<String, Output>,
    /// Input derivation path → names of the outputs used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    /// Store paths used directly (sources, not built by a derivation).
    pub input_srcs: BTreeSet<String>,
    /// The `system` it builds for, e.g. `x86_64-linux`.
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// A derivation as a remote builder receives it: no input derivations, all inputs as store
/// paths (docs/serve-protocol.md §5). The name is not part of it; the server takes it from the
/// `.drv` path that accompanies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicDerivation {
    pub outputs: BTreeMap<String, Output>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

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

    /// The ATerm text Nix would write for this derivation (for a parsed file: the file itself).
    pub fn to_aterm(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("Derive(");
        aterm_outputs(&mut out, &self.outputs);
        out.push_str(",[");
        for (i, (path, names)) in self.input_drvs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('(');
            aterm_string(&mut out, path);
            out.push(',');
            aterm_string_list(&mut out, names);
            out.push(')');
        }
        out.push_str("],");
        aterm_string_list(&mut out, &self.input_srcs);
        aterm_rest(&mut out, &self.platform, &self.builder, &self.args, &self.env);
        out
    }

    /// The output paths by output name; floating outputs (no path yet) are left out.
    pub fn output_paths(&self) -> BTreeMap<String, String> {
        output_paths(&self.outputs)
    }

    /// The derivation to send with `BuildDerivation`. `inputs_closure` is the input closure
    /// Nix hands the hook after `# accept`. When the derivation has input derivations, their
    /// outputs are only named through `inputDrvs`, which the remote does not get, so the
    /// sources are replaced by the whole closure. Without input derivations the sources are
    /// kept as they are: changing them would change a content-addressed derivation's identity.
    pub fn to_basic(&self, inputs_closure: &BTreeSet<String>) -> BasicDerivation {
        let input_srcs =
            if self.input_drvs.is_empty() { self.input_srcs.clone() } else { inputs_closure.clone() };
        BasicDerivation {
            outputs: self.outputs.clone(),
            input_srcs,
            platform: self.platform.clone(),
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        }
    }
}

impl BasicDerivation {
    /// The output paths by output name; floating outputs (no path yet) are left out.
    pub fn output_paths(&self) -> BTreeMap<String, String> {
        output_paths(&self.outputs)
    }

    /// Writes the serve-protocol form (docs/serve-protocol.md §5). Maps iterate sorted, which is
    /// the order Nix sends and expects.
    pub fn write_to<W: Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        w.write_u64(self.outputs.len() as u64)?;
        for (name, out) in &self.outputs {
            w.write_str(name)?;
            w.write_str(&out.path)?;
            w.write_str(&out.hash_algo)?;
            w.write_str(&out.hash)?;
        }
        w.write_list(&self.input_srcs)?;
        w.write_str(&self.platform)?;
        w.write_str(&self.builder)?;
        w.write_list(&self.args)?;
        w.write_u64(self.env.len() as u64)?;
        for (key, value) in &self.env {
            w.write_str(key)?;
            w.write_str(value)?;
        }
        Ok(())
    }

    /// Reads the serve-protocol form, as a builder receives it with `BuildDerivation`. A name
    /// sent twice (Nix never does) keeps its last value.
    pub fn read_from<R: Read>(r: &mut Reader<R>) -> Result<BasicDerivation, WireError> {
        let mut drv = BasicDerivation::default();
        let outputs = r.read_u64()?;
        for _ in 0..outputs {
            let name = r.read_string()?;
            let path = r.read_string()?;
            let hash_algo = r.read_string()?;
            let hash = r.read_string()?;
            drv.outputs.insert(name, Output { path, hash_algo, hash });
        }
        drv.input_srcs = r.read_string_set()?;
        drv.platform = r.read_string()?;
        drv.builder = r.read_string()?;
        drv.args = r.read_string_list()?;
        let env = r.read_u64()?;
        for _ in 0..env {
            let key = r.read_string()?;
            let value = r.read_string()?;
            drv.env.insert(key, value);
        }
        Ok(drv)
    }

    /// ATerm form of this basic derivation (with an empty input-derivation list), for logs
    /// and tests.
    pub fn to_aterm(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("Derive(");
        aterm_outputs(&mut out, &self.outputs);
        out.push_str(",[],");
        aterm_string_list(&mut out, &self.input_srcs);
        aterm_rest(&mut out, &self.platform, &self.builder, &self.args, &self.env);
        out
    }
}

fn output_paths(outputs: &BTreeMap<String, Output>) -> BTreeMap<String, String> {
    outputs
        .iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| (name.clone(), o.path.clone()))
        .collect()
}

fn aterm_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn aterm_string_list<'a>(out: &mut String, items: impl IntoIterator<Item = &'a String>) {
    out.push('[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        aterm_string(out, s);
    }
    out.push(']');
}

fn aterm_outputs(out: &mut String, outputs: &BTreeMap<String, Output>) {
    out.push('[');
    for (i, (name, o)) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('(');
        aterm_string(out, name);
        for field in [&o.path, &o.hash_algo, &o.hash] {
            out.push(',');
            aterm_string(out, field);
        }
        out.push(')');
    }
    out.push(']');
}

fn aterm_rest(
    out: &mut String,
    platform: &str,
    builder: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) {
    out.push(',');
    aterm_string(out, platform);
    out.push(',');
    aterm_string(out, builder);
    out.push(',');
    aterm_string_list(out, args);
    out.push_str(",[");
    for (i, (k, v)) in env.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('(');
        aterm_string(out, k);
        out.push(',');
        aterm_string(out, v);
        out.push(')');
    }
    out.push_str("])");
}

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

/// [`Derivation::read`] failed.
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
        if self.s.starts_with(b"DrvWithVersion(") {
            let offset = "DrvWithVersion(".len();
            self.pos = offset;
            let format = self.string().map(|(s, _)| s).unwrap_or_default();
            return Err(ParseError::UnsupportedFormat { offset, format: format!("DrvWithVersion {format}") });
        }
        self.expect("Derive(")?;
        let mut drv = Derivation::default();

        self.expect("[")?;
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
            if drv.outputs.contains_key(&name) {
                return Err(ParseError::Duplicate { offset, what: "output", key: name });
            }
            drv.outputs.insert(name, Output { path, hash_algo, hash });
        }
        self.expect(",")?;

        self.expect("[")?;
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
            if drv.input_drvs.contains_key(&path) {
                return Err(ParseError::Duplicate { offset, what: "input derivation", key: path });
            }
            drv.input_drvs.insert(path, outputs);
        }
        self.expect(",")?;

        drv.input_srcs = self.string_set("input source", true)?;
        self.expect(",")?;
        drv.platform = self.string()?.0;
        self.expect(",")?;
        drv.builder = self.string()?.0;
        self.expect(",")?;
        drv.args = self.string_list()?;
        self.expect(",")?;

        self.expect("[")?;
        let mut first = true;
        while self.more(first, b']', "',' or ']' in the environment")? {
            first = false;
            self.expect("(")?;
            let (key, offset) = self.string()?;
            self.expect(",")?;
            let value = self.string()?.0;
            self.expect(")")?;
            if drv.env.contains_key(&key) {
                return Err(ParseError::Duplicate { offset, what: "environment variable", key });
            }
            drv.env.insert(key, value);
        }
        self.expect(")")?;

        // Nix writes no trailing newline; tolerate one from an editor, nothing else.
        let rest = &self.s[self.pos..];
        if !(rest.is_empty() || rest == b"\n") {
            return Err(ParseError::TrailingData { offset: self.pos });
        }
        Ok(drv)
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_aterm())
    }
}
