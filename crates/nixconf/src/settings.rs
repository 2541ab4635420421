//! The effective settings and Nix's rules for setting one: aliases, `extra-` appends, unknown
//! names kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, Warning};
use crate::host::HostDefaults;
use crate::origin::Origin;
use crate::values::validate;

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

fn canonical(name: &str) -> &str {
    ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, real)| real)
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    origin: Origin,
}

/// Effective settings: defaults, then nix.conf, then `NIX_CONFIG`, then the parent's block.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) conf_dir: PathBuf,
    pub(crate) default_builders: Option<String>,
    pub(crate) host: HostDefaults,
    values: BTreeMap<String, Entry>,
    pub(crate) warnings: Vec<Warning>,
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
}
