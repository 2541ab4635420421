//! The Nix machines file: the value of the `builders` setting, `@file` includes, and the legacy
//! `NIX_REMOTE_SYSTEMS` variable.
//!
//! The grammar is current Nix's (2.29+, 2.28.2+): lines, `#` comments to end of line, `;`
//! between entries, `@path` includes, eight whitespace-separated columns. Unlike Nix, nothing is
//! silently dropped and nothing aborts the whole list: every problem becomes a [`Diagnostic`]
//! with file, line and column, bad lines are skipped and good lines still serve. This exists
//! because Nix resolves relative paths against the hook's working directory `/` and skips
//! missing files without a word, which has cost users days.
//!
//! ```
//! use nwh_machines::{parse_builders, ParseContext, BUILDERS_SETTING};
//!
//! let ctx = ParseContext::new("x86_64-linux");
//! let parsed = parse_builders("ssh://b1 - - four ; nix@b2 aarch64-linux", BUILDERS_SETTING, &ctx);
//! assert_eq!(parsed.machines[0].uri, "ssh://nix@b2"); // the bad entry is skipped
//! let error = &parsed.diagnostics[0];
//! assert!(error.is_error());
//! assert_eq!((error.line, error.column), (1, 14));
//! assert!(error.to_string().starts_with("setting 'builders':1:14: error: max-jobs column is 'four'"));
//! ```

mod diagnostic;
mod expand;
mod host_key;
mod machine_line;
pub mod store_uri;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity};
pub use host_key::HostKey;

/// The `source` to pass to [`parse_builders`] for a value taken from the `builders` setting.
pub const BUILDERS_SETTING: &str = "setting 'builders'";

/// What Nix trims around entries.
pub(crate) const BLANK: &[char] = &[' ', '\t', '\r', '\n'];

/// For messages about relative paths: where they would have led matters to the user.
pub(crate) fn existence(path: &Path) -> &'static str {
    match std::fs::metadata(path) {
        Ok(_) => "which exists",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "which does not exist",
        Err(_) => "which cannot be checked",
    }
}

/// The most machines read; the ones after are refused with one error. Every decision looks at
/// every machine (and its slots), so a list without end would stall every build.
pub const MAX_MACHINES: usize = 10_000;

/// The most entries of one list column (systems, supported or mandatory features).
pub const MAX_LIST: usize = 256;

/// The longest store URI: slot lock files are named after it (`<uri>-<slot>`,
/// `<uri>.upload-lock`), and a file name holds at most 255 bytes.
pub const MAX_URI_LEN: usize = 240;

/// The most builds one machine takes at once (`max-jobs`, column 4): each is a lock file that
/// every decision looks at, so a slip of the keyboard (four billion) would stall every build.
pub const MAX_JOBS: u32 = 1024;

/// The `source` to pass to [`parse_builders`] for the output of
/// [`builders_from_remote_systems_env`]; it makes relative entries be reported against the
/// variable and enables the warning about multi-file values in old Nix.
pub const REMOTE_SYSTEMS_ENV: &str = "NIX_REMOTE_SYSTEMS";

/// One remote builder, as described by one machine line.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Normalised store URI: a bare `host` or `user@host` became `ssh://…`.
    pub uri: String,
    /// In the order written, without duplicates; the caller's local system when the column is
    /// unset (Nix uses `system` only, not `extra-platforms`).
    pub systems: Vec<String>,
    /// Always absolute: relative keys are rejected because ssh would resolve them against `/`.
    pub ssh_key: Option<PathBuf>,
    /// 0 is kept: it means "never has a free slot", which some users use to park a machine.
    pub max_jobs: u32,
    /// Never 0 (Nix turns 0 into 1) and never negative.
    pub speed_factor: f64,
    pub supported_features: BTreeSet<String>,
    /// Every one of these must be requested by a derivation for it to go here.
    pub mandatory_features: BTreeSet<String>,
    pub host_key: Option<HostKey>,
    /// Where the line was, so later messages (e.g. "declined: b1 …") can point back to it.
    pub origin: Origin,
}

/// Where a machine line was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// A file path, or the name of the source (see [`Diagnostic::location`]).
    pub location: String,
    /// 1-based, relative to `location`.
    pub line: u32,
}

/// The file name a line's `remote-program` has when it makes nix-wasm-hook a builder.
pub const BUILDER_PROGRAM: &str = "nix-wasm-hook";

impl Machine {
    /// The program Nix runs on this very machine, without ssh, for this line: Nix fakes ssh for
    /// an `ssh://` or `ssh-ng://` URI whose authority is exactly `localhost` (no user, no port)
    /// and starts its `remote-program` (default `nix-store`, or `nix-daemon` for `ssh-ng://`),
    /// percent-decoded, itself.
    pub fn runs_here(&self) -> Option<String> {
        runs_here(&self.uri)
    }

    /// The program of a line that makes nix-wasm-hook one builder of Nix's own hook (builder
    /// mode): it runs here and the file name of its `remote-program`'s first word is
    /// [`BUILDER_PROGRAM`].
    pub fn builder_mode_program(&self) -> Option<String> {
        builder_mode_program(&self.uri)
    }

    /// This machine as a machines-file line, unset trailing columns left out. For messages:
    /// it shows what the hook understood, defaults filled in, the URI normalised.
    pub fn line(&self) -> String {
        // A list column as it must be written to mean this list again: a lone `-` would read
        // as unset, so a list of the one item `-` keeps a comma.
        fn set<'a>(items: impl IntoIterator<Item = &'a String>, empty: &str) -> String {
            let joined = items.into_iter().map(String::as_str).collect::<Vec<_>>().join(",");
            match joined.as_str() {
                "" => empty.to_owned(),
                "-" => "-,".to_owned(),
                _ => joined,
            }
        }
        let mut columns = vec![
            self.uri.clone(),
            // No system at all (a column of commas) is not the local system that `-` means.
            set(&self.systems, ","),
            self.ssh_key.as_ref().map_or("-".to_owned(), |k| k.display().to_string()),
            self.max_jobs.to_string(),
            self.speed_factor.to_string(),
            set(&self.supported_features, "-"),
            set(&self.mandatory_features, "-"),
            self.host_key.as_ref().map_or("-".to_owned(), |k| k.base64.clone()),
        ];
        while columns.len() > 1 && columns.last().is_some_and(|c| c == "-") {
            columns.pop();
        }
        columns.join(" ")
    }
}

/// The machines that can be used, and everything worth telling the user about the input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machines {
    pub machines: Vec<Machine>,
    pub diagnostics: Vec<Diagnostic>,
}

/// What the parse needs from the caller's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseContext {
    /// The local `system` setting: the default of the systems column.
    pub local_system: String,
    /// What relative paths would be resolved against; `/` for a build hook, because Nix starts
    /// the hook there. Only used to show the user where a relative path would have led.
    pub cwd: PathBuf,
}

impl ParseContext {
    /// A context for the build hook: working directory `/`.
    pub fn new(local_system: impl Into<String>) -> Self {
        ParseContext { local_system: local_system.into(), cwd: PathBuf::from("/") }
    }
}

fn runs_here(uri: &str) -> Option<String> {
    let (rest, default) = match uri.split_once("://")? {
        ("ssh", rest) => (rest, "nix-store"),
        ("ssh-ng", rest) => (rest, "nix-daemon"),
        _ => return None,
    };
    let (authority, query) = store_uri::split_query(rest);
    if authority != "localhost" {
        return None;
    }
    let params = store_uri::query_params(query).ok()?;
    let program = params.into_iter().find(|(n, _)| n == "remote-program").map(|(_, v)| v);
    Some(program.unwrap_or_else(|| default.to_string()))
}

/// A `remote-program` that runs here as Nix runs it: words separated by spaces (Nix 2.8 hands
/// it to `bash -c`, Nix 2.34 takes the setting as a list of words), the first the program.
pub fn program_words(remote_program: &str) -> Vec<&str> {
    remote_program.split_whitespace().collect()
}

fn builder_mode_program(uri: &str) -> Option<String> {
    let program = runs_here(uri)?;
    let first = program_words(&program).first().map(|w| w.to_string())?;
    Path::new(&first).file_name().is_some_and(|n| n == BUILDER_PROGRAM).then_some(first)
}

/// Parse a `builders` value. `source` names where it came from for diagnostics:
/// [`BUILDERS_SETTING`], [`REMOTE_SYSTEMS_ENV`], or a file path.
pub fn parse_builders(value: &str, source: &str, ctx: &ParseContext) -> Machines {
    let mut reader = expand::Reader::new(ctx);
    reader.expand(value, source);
    if source == REMOTE_SYSTEMS_ENV {
        reader.warn_multi_file_env(value);
    }
    reader.finish()
}

/// Parse a machines file (e.g. `/etc/nix/machines`). A relative `path` is taken relative to
/// `ctx.cwd`, since the caller chose it; a missing file is an error here, because it was asked
/// for explicitly.
pub fn parse_file(path: &Path, ctx: &ParseContext) -> Machines {
    let mut reader = expand::Reader::new(ctx);
    reader.read_top_file(&ctx.cwd.join(path));
    reader.finish()
}

/// The `builders` value that the legacy `NIX_REMOTE_SYSTEMS` (colon-separated files) stands for,
/// with current Nix's semantics: one `@file` entry per file, newline-joined. Parse the result
/// with `source` [`REMOTE_SYSTEMS_ENV`].
pub fn builders_from_remote_systems_env(value: &str) -> String {
    value
        .split(':')
        .filter(|file| !file.is_empty())
        .map(|file| format!("@{file}"))
        .collect::<Vec<_>>()
        .join("\n")
}
