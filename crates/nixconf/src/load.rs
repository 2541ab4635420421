//! Where the settings come from and in which order they are laid over each other: nix.conf,
//! then `NIX_CONFIG`, then the parent's settings block.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::host::HostDefaults;
use crate::origin::Origin;
use crate::parse::Assignment;
use crate::settings::Settings;

/// Nix's compiled-in configuration directory.
pub const DEFAULT_CONF_DIR: &str = "/etc/nix";

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

impl Settings {
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
    /// silently and one that cannot be read is skipped with a [`Warning`](crate::Warning).
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

    fn apply_all(&mut self, assignments: Vec<Assignment>) -> Result<()> {
        for a in assignments {
            self.set(&a.name, &a.value, a.origin)?;
        }
        Ok(())
    }
}
