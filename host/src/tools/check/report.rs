//! What `check` finds about one builder: its facts and its problems, each with the fix.

use nwh_machines::Machine;
use serde::Serialize;

/// How usable a builder is; a report takes the worst of its problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Unusable,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub severity: Status,
    pub problem: String,
    pub fix: String,
}

/// What the builder's Nix says about itself.
#[derive(Debug, Default, Serialize)]
pub struct Facts {
    pub host_key: String,
    pub nix_version: Option<String>,
    pub protocol: Option<String>,
    pub system: Option<String>,
    pub extra_platforms: Vec<String>,
    pub system_features: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub uri: String,
    pub line: String,
    pub status: Status,
    pub problems: Vec<Problem>,
    pub facts: Facts,
}

impl Report {
    pub(super) fn new(m: &Machine) -> Report {
        Report {
            uri: m.uri.clone(),
            line: format!("{}:{}", m.origin.location, m.origin.line),
            status: Status::Ok,
            problems: Vec::new(),
            facts: Facts::default(),
        }
    }

    pub(super) fn add(&mut self, severity: Status, problem: impl Into<String>, fix: impl Into<String>) {
        self.status = self.status.max(severity);
        self.problems.push(Problem { severity, problem: problem.into(), fix: fix.into() });
    }
}
