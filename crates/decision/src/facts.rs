//! What the host knows of a machine beyond its line in the machines file (contract 0.3's
//! `facts`): measured on the machine, or learned from this host's own past builds. Every fact
//! is optional, and absent means not known, never zero; each carries its age in milliseconds
//! at the time of the decision, so that a trace replays the decision as it was made.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// WIT `facts`. A trace leaves out the facts that are absent.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Facts {
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub load: Option<Load>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub pressure: Option<Pressure>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub free_store_bytes: Option<Amount>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub builds_running: Option<Count>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub recent_failures: Option<Count>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub missing_input_bytes: Option<Amount>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub transfer_rate: Option<Rate>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub relative_speed: Option<Rate>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub past_builds: Option<History>,
}

impl Facts {
    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }
}

/// Load averages and cores (`/proc/loadavg` and the online CPUs).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Load {
    pub avg1: f64,
    pub avg5: f64,
    pub avg15: f64,
    pub cores: u32,
    pub age_ms: u64,
}

/// Shares of the last ten seconds, in per cent, in which some task waited for CPU, memory and
/// IO (`/proc/pressure/*`, "some avg10").
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Pressure {
    pub cpu: f64,
    pub memory: f64,
    pub io: f64,
    pub age_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Amount {
    pub bytes: u64,
    pub age_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Count {
    pub value: u32,
    pub age_ms: u64,
}

/// A rate learned from `samples` observations; `age_ms` since the newest.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Rate {
    pub value: f64,
    pub samples: u32,
    pub age_ms: u64,
}

/// Past builds of one derivation name and system on one machine: how many, their mean and
/// newest durations, and the time since the newest ended.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct History {
    pub builds: u32,
    pub mean_ms: u64,
    pub last_ms: u64,
    pub age_ms: u64,
}

/// The machine Nix runs on, as the policy sees it: a candidate (WIT `local-machine`), where
/// [`super::LocalMachine`] is what it can build.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct LocalView {
    /// Nix's `max-jobs`.
    pub max_jobs: u32,
    /// The `local-speed-factor` option, on the machines file's scale.
    pub speed_factor: f64,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Facts::is_empty"))]
    pub facts: Facts,
}

impl Default for LocalView {
    /// Nothing known but the speed factor's default: a trace written before contract 0.3.
    fn default() -> Self {
        LocalView { max_jobs: 0, speed_factor: 1.0, facts: Facts::default() }
    }
}

impl LocalView {
    pub fn is_unknown(&self) -> bool {
        *self == LocalView::default()
    }
}
