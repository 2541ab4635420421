//! nix.conf as a build hook has to read it.
//!
//! Nix sends every setting in the settings block, but Lix ≤ 2.93 sends only the ones the client
//! overrode (docs/hook-protocol.md §4), so the hook must itself load what the parent loaded from
//! the global configuration: `$NIX_CONF_DIR/nix.conf` (default `/etc/nix/nix.conf`), then
//! `NIX_CONFIG`, and then lay the block over both.
//!
//! The syntax follows Nix: one `name = value` per line, `#` starts a comment anywhere, runs of
//! blanks collapse to one space, `include path` / `!include path` (relative to the including
//! file; `!include` tolerates a missing file), and `extra-<name>` appends to a list setting.
//! Unknown settings are kept, not rejected, as Nix only warns about them.
//!
//! ```
//! use nwh_nixconf::{HostDefaults, LoadOptions, Settings};
//! let mut opts = LoadOptions::new("/nonexistent/etc/nix", HostDefaults::detect());
//! opts.nix_config = Some("max-jobs = 4\nextra-system-features = gpu".into());
//! let mut settings = Settings::load(opts).unwrap();
//! settings.apply_block([("max-jobs", "0")]).unwrap();
//! assert_eq!(settings.max_jobs(), 0);
//! assert!(settings.system_features().contains("gpu"));
//! assert_eq!(settings.builders(), "@/nonexistent/etc/nix/machines");
//! ```

mod host;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use host::{compile_time_system, HostDefaults};

/// Nix's compiled-in configuration directory.
pub const DEFAULT_CONF_DIR: &str = "/etc/nix";

/// Include nesting beyond this is taken for a loop (Nix itself would recurse until it crashes).
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// `$NIX_CONF_DIR`, or `/etc/nix`. Empty counts as unset, as in current Nix.
pub fn conf_dir_from_env() -> PathBuf {
    match std::env::var_os("NIX_CONF_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CONF_DIR),
    }
}

/// The raw legacy `NIX_REMOTE_SYSTEMS` variable. Turning it into a `builders` value is the
/// machines crate's job; pass the result as [`LoadOptions::default_builders`].
pub fn nix_remote_systems_env() -> Option<OsString> {
    std::env::var_os("NIX_REMOTE_SYSTEMS")
}

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

/// Old names Nix still accepts for settings, mapped to the current name.
const ALIASES: &[(&str, &str)] = &[
    ("build-max-jobs", "max-jobs"),
    ("build-max-silent-time", "max-silent-time"),
    ("build-timeout", "timeout"),
    ("build-max-log-size", "max-build-log-size"),
    ("build-cores", "cores"),
    ("build-use-substitutes", "substitute"),
    ("build-fallback", "fallback"),
    ("binary-caches", "substituters"),
    ("trusted-binary-caches", "trusted-substituters"),
    ("binary-cache-public-keys", "trusted-public-keys"),
    ("substitution-max-jobs", "max-substitution-jobs"),
];

/// Settings whose names start with `extra-` but which are settings of their own, not appends.
const EXTRA_NAMED: &[&str] = &["extra-platforms"];

/// Known settings that are not lists, so `extra-<name>` does not append to them. Settings not
/// listed here and not known are treated as lists: appending is the useful reading of
/// `extra-foo` for any list setting this crate has not heard of.
const SCALARS: &[&str] = &[
    "builders",
    "builders-use-substitutes",
    "build-poll-interval",
    "connect-timeout",
    "cores",
    "fallback",
    "keep-failed",
    "keep-going",
    "log-lines",
    "max-build-log-size",
    "max-jobs",
    "max-silent-time",
    "max-substitution-jobs",
    "sandbox",
    "store",
    "substitute",
    "system",
    "timeout",
];

/// Experimental features that, when on, are also features of the local store (each is named
/// the same in both lists).
const STORE_FEATURES_FROM_EXPERIMENTS: &[&str] = &["ca-derivations", "recursive-nix"];

fn canonical(name: &str) -> &str {
    ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, real)| real)
}

/// Nix's tokenizer splits on exactly these.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_max_jobs(v: &str, cpus: u32) -> Option<u32> {
    if v == "auto" {
        Some(cpus.max(1))
    } else {
        v.parse().ok()
    }
}

/// Checks the settings this crate gives typed access to, so the accessors cannot fail later
/// and the error can still point at the offending line.
fn validate(name: &str, value: &str, origin: &Origin) -> Result<()> {
    let expected = match name {
        "max-jobs" if parse_max_jobs(value, 1).is_none() => "'auto' or a non-negative integer",
        "max-silent-time" | "timeout" if value.parse::<i64>().is_err() => "an integer (seconds)",
        "max-build-log-size" if value.parse::<u64>().is_err() => "a non-negative integer",
        "builders-use-substitutes" if parse_bool(value).is_none() => "'true' or 'false'",
        _ => return Ok(()),
    };
    Err(ConfError::InvalidValue {
        origin: origin.clone(),
        name: name.to_string(),
        value: value.to_string(),
        expected,
    })
}

/// Everything [`Settings::load`] needs from the environment, made explicit so tests and
/// callers with unusual setups need not touch process-wide variables.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory holding `nix.conf`; also determines the default `builders`.
    pub conf_dir: PathBuf,
    /// Contents of `NIX_CONFIG`, applied after `nix.conf`.
    pub nix_config: Option<String>,
    /// Replaces `@<conf dir>/machines` as the default of `builders`; this is how the legacy
    /// `NIX_REMOTE_SYSTEMS` acts (already converted to a `builders` value by the caller).
    pub default_builders: Option<String>,
    pub host: HostDefaults,
}

impl LoadOptions {
    pub fn new(conf_dir: impl Into<PathBuf>, host: HostDefaults) -> Self {
        LoadOptions { conf_dir: conf_dir.into(), nix_config: None, default_builders: None, host }
    }

    /// `NIX_CONF_DIR`, `NIX_CONFIG` and the detected host.
    pub fn from_env(default_builders: Option<String>) -> Self {
        LoadOptions {
            conf_dir: conf_dir_from_env(),
            nix_config: std::env::var_os("NIX_CONFIG").map(|v| v.to_string_lossy().into_owned()),
            default_builders,
            host: HostDefaults::detect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    origin: Origin,
}

/// Effective settings: defaults, then nix.conf, then `NIX_CONFIG`, then the parent's block.
#[derive(Debug, Clone)]
pub struct Settings {
    conf_dir: PathBuf,
    default_builders: Option<String>,
    host: HostDefaults,
    values: BTreeMap<String, Entry>,
    warnings: Vec<Warning>,
}

/// A parsed `name = value` line, before it is applied.
struct Assignment {
    name: String,
    value: String,
    origin: Origin,
}

impl Settings {
    /// Settings with nothing applied yet: every accessor returns its default.
    pub fn new(conf_dir: impl Into<PathBuf>, default_builders: Option<String>, host: HostDefaults) -> Self {
        Settings {
            conf_dir: conf_dir.into(),
            default_builders,
            host,
            values: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Applies `<conf dir>/nix.conf` (a missing file is fine) and then `NIX_CONFIG`.
    pub fn load(opts: LoadOptions) -> Result<Self> {
        let mut s = Settings::new(opts.conf_dir, opts.default_builders, opts.host);
        let main = s.conf_dir.join("nix.conf");
        s.apply_file(&main)?;
        if let Some(text) = &opts.nix_config {
            s.apply_nix_config(text)?;
        }
        Ok(s)
    }

    /// [`Settings::load`] with [`LoadOptions::from_env`].
    pub fn from_env(default_builders: Option<String>) -> Result<Self> {
        Self::load(LoadOptions::from_env(default_builders))
    }

    /// Applies one configuration file. Like Nix, a file that does not exist is skipped
    /// silently and one that cannot be read is skipped with a [`Warning`].
    ///
    /// On a syntax or include error nothing from the file is applied; on an invalid value,
    /// the lines before it have been.
    pub fn apply_file(&mut self, path: &Path) -> Result<()> {
        let Some(text) = self.read_conf(path, None) else {
            return Ok(());
        };
        let mut out = Vec::new();
        self.parse(&text, Some(path), 0, &mut out)?;
        self.apply_all(out)
    }

    /// Applies nix.conf-syntax text from `NIX_CONFIG`. Relative includes resolve against the
    /// current directory, as Nix resolves them.
    pub fn apply_nix_config(&mut self, text: &str) -> Result<()> {
        let mut out = Vec::new();
        self.parse(text, None, 0, &mut out)?;
        self.apply_all(out)
    }

    /// Lays the parent's settings block over the configuration: each pair is applied like a
    /// nix.conf line, i.e. it replaces the value (the block never uses `extra-` to append).
    pub fn apply_block<I, K, V>(&mut self, pairs: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in pairs {
            self.set(name.as_ref(), value.as_ref(), Origin::Block)?;
        }
        Ok(())
    }

    /// Applies one setting with Nix's rules: aliases map to the current name, `extra-<name>`
    /// appends to list settings, anything unknown is kept as is.
    pub fn set(&mut self, name: &str, value: &str, origin: Origin) -> Result<()> {
        let name = canonical(name);
        let base = name.strip_prefix("extra-").filter(|_| !EXTRA_NAMED.contains(&name));
        let Some(base) = base.map(canonical) else {
            validate(name, value, &origin)?;
            self.values.insert(name.to_string(), Entry { value: value.to_string(), origin });
            return Ok(());
        };

        if SCALARS.contains(&base) {
            self.warnings.push(Warning::NotAppendable { origin: origin.clone(), name: name.to_string() });
            self.values.insert(name.to_string(), Entry { value: value.to_string(), origin });
            return Ok(());
        }

        // Appending starts from the current value, which may still be the default: Nix's
        // `extra-system-features = gpu` means "the usual features plus gpu".
        let current = self.get(base).map(str::to_string).or_else(|| self.default_list(base));
        let joined = match current {
            Some(cur) if !cur.is_empty() && !value.is_empty() => format!("{cur} {value}"),
            Some(cur) if value.is_empty() => cur,
            _ => value.to_string(),
        };
        self.values.insert(base.to_string(), Entry { value: joined, origin });
        Ok(())
    }

    fn default_list(&self, name: &str) -> Option<String> {
        let set = match name {
            "system-features" => &self.host.system_features,
            "extra-platforms" => &self.host.extra_platforms,
            _ => return None,
        };
        Some(set.iter().cloned().collect::<Vec<_>>().join(" "))
    }

    fn apply_all(&mut self, assignments: Vec<Assignment>) -> Result<()> {
        for a in assignments {
            self.set(&a.name, &a.value, a.origin)?;
        }
        Ok(())
    }

    /// Reads a configuration file as text; `None` means skip it.
    fn read_conf(&mut self, path: &Path, included_from: Option<&Origin>) -> Option<String> {
        match nwh_files::read(path, nwh_files::NIX_CONF) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.warnings.push(Warning::Unreadable {
                    path: path.to_owned(),
                    included_from: included_from.cloned(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Parses `text` (from `file`, or `NIX_CONFIG` when `None`) into assignments, following
    /// includes.
    fn parse(
        &mut self,
        text: &str,
        file: Option<&Path>,
        depth: usize,
        out: &mut Vec<Assignment>,
    ) -> Result<()> {
        for (idx, raw) in text.split('\n').enumerate() {
            let origin = match file {
                Some(path) => Origin::File { path: path.to_owned(), line: idx + 1 },
                None => Origin::NixConfig { line: idx + 1 },
            };
            let line = raw.split_once('#').map_or(raw, |(before, _)| before);
            let tokens: Vec<&str> = line.split(is_blank).filter(|t| !t.is_empty()).collect();
            match tokens.as_slice() {
                [] => continue,
                [keyword @ ("include" | "!include"), rest @ ..] => {
                    let [target] = rest else {
                        return Err(ConfError::BadInclude { origin, keyword: keyword.to_string() });
                    };
                    let base = file.and_then(Path::parent).unwrap_or(Path::new("."));
                    let path = base.join(target);
                    // lstat, like Nix's pathExists: a dangling symlink counts as present and
                    // is then skipped as unreadable.
                    if std::fs::symlink_metadata(&path).is_err() {
                        if *keyword == "include" {
                            return Err(ConfError::IncludeNotFound { origin, path });
                        }
                        continue;
                    }
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(ConfError::IncludeTooDeep { origin, path });
                    }
                    if let Some(included) = self.read_conf(&path, Some(&origin)) {
                        self.parse(&included, Some(&path), depth + 1, out)?;
                    }
                }
                [name, "=", value @ ..] => {
                    out.push(Assignment { name: name.to_string(), value: value.join(" "), origin })
                }
                _ => return Err(ConfError::Syntax { origin, line: raw.trim_end_matches('\r').to_string() }),
            }
        }
        Ok(())
    }

    /// The value set for `name` (or its old alias) by any source, `None` if it is at its
    /// default. Unknown settings are available here too.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(canonical(name)).map(|e| e.value.as_str())
    }

    /// Where the current value of `name` was set; `None` if it is at its default.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.values.get(canonical(name)).map(|e| &e.origin)
    }

    /// All explicitly set settings, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, e)| (k.as_str(), e.value.as_str()))
    }

    /// Problems Nix would have ignored; see [`Warning`].
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    pub fn host(&self) -> &HostDefaults {
        &self.host
    }

    /// The machine list specification, default `@<conf dir>/machines` (or the caller's
    /// `NIX_REMOTE_SYSTEMS`-derived default). Empty means no remote builders.
    pub fn builders(&self) -> String {
        match self.get("builders") {
            Some(v) => v.to_string(),
            None => self
                .default_builders
                .clone()
                .unwrap_or_else(|| format!("@{}/machines", self.conf_dir.display())),
        }
    }

    /// The parent's local build slots. `auto` is the number of CPUs; 0 disables local builds.
    pub fn max_jobs(&self) -> u32 {
        self.get("max-jobs").and_then(|v| parse_max_jobs(v, self.host.cpus)).unwrap_or(1)
    }

    pub fn system(&self) -> &str {
        self.get("system").unwrap_or(&self.host.system)
    }

    /// Platforms the local machine can build for besides [`Settings::system`], sorted and
    /// without duplicates (Nix keeps it as a set).
    pub fn extra_platforms(&self) -> Vec<String> {
        match self.get("extra-platforms") {
            Some(v) => words(v).into_iter().collect(),
            None => self.host.extra_platforms.iter().cloned().collect(),
        }
    }

    pub fn system_features(&self) -> BTreeSet<String> {
        match self.get("system-features") {
            Some(v) => words(v),
            None => self.host.system_features.clone(),
        }
    }

    /// The experimental features turned on (`experimental-features`, plus any `extra-`).
    pub fn experimental_features(&self) -> BTreeSet<String> {
        self.get("experimental-features").map(words).unwrap_or_default()
    }

    /// The features of the local store, which Nix tests a derivation against to decide
    /// whether it could build it itself: [`Settings::system_features`] plus `ca-derivations`
    /// and `recursive-nix` when those experimental features are on. Nix adds them in the
    /// store's default of its own `system-features` (`getDefaultSystemFeatures`, the same in
    /// 2.8 and 2.34), so a derivation that needs them is never refused locally for lacking
    /// them while the experiment is on.
    pub fn local_store_features(&self) -> BTreeSet<String> {
        let mut features = self.system_features();
        let experimental = self.experimental_features();
        features.extend(
            STORE_FEATURES_FROM_EXPERIMENTS
                .iter()
                .filter(|f| experimental.contains(**f))
                .map(|f| f.to_string()),
        );
        features
    }

    /// Seconds without output before a build is killed; 0 means no limit. Nix accepts
    /// negative values; they are read as "no limit".
    pub fn max_silent_time(&self) -> u64 {
        self.seconds("max-silent-time")
    }

    /// The `timeout` setting: seconds a build may run; 0 means no limit.
    pub fn build_timeout(&self) -> u64 {
        self.seconds("timeout")
    }

    /// Bytes of build log before the build is killed; 0 means no limit.
    pub fn max_build_log_size(&self) -> u64 {
        self.get("max-build-log-size").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn builders_use_substitutes(&self) -> bool {
        self.get("builders-use-substitutes").and_then(parse_bool).unwrap_or(false)
    }

    fn seconds(&self, name: &str) -> u64 {
        self.get(name).and_then(|v| v.parse::<i64>().ok()).map_or(0, |s| u64::try_from(s).unwrap_or(0))
    }
}

fn words(v: &str) -> BTreeSet<String> {
    v.split(is_blank).filter(|w| !w.is_empty()).map(String::from).collect()
}
