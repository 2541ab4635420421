//! The settings this crate interprets, typed and with Nix's defaults.

use std::collections::BTreeSet;

use crate::parse::is_blank;
use crate::settings::Settings;
use crate::values::{parse_bool, parse_max_jobs};

/// Experimental features that, when on, are also features of the local store (each is named
/// the same in both lists).
const STORE_FEATURES_FROM_EXPERIMENTS: &[&str] = &["ca-derivations", "recursive-nix"];

impl Settings {
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
