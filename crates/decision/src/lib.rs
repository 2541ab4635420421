//! What a policy decides on and the answer it gives, in the project's own types, and Nix's rule
//! for which machine may take a build. The host converts these to and from the WIT bindings;
//! traces, `explain`, `replay` and `simulate` use them as they are.

use serde::{Deserialize, Serialize};

/// One derivation Nix would like built somewhere (the `try` message plus what the host knows
/// about the local machine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub drv_path: String,
    pub system: String,
    pub required_features: Vec<String>,
    pub am_willing: bool,
    pub could_build_locally: bool,
}

/// A machine as the policy sees it: its line in the machines file and live facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    pub uri: String,
    pub systems: Vec<String>,
    pub max_jobs: u32,
    pub speed_factor: f64,
    pub supported_features: Vec<String>,
    pub mandatory_features: Vec<String>,
    pub slots_in_use: u32,
    pub enabled: bool,
    /// Why it is not enabled (ssh's words for a failed connection), when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "machines")]
pub enum Choice {
    /// Indices into the machine list, best first.
    Try(Vec<u32>),
    Decline,
    Postpone,
}

impl Choice {
    /// `try ssh://b2, ssh://b1`, `decline` or `postpone`.
    pub fn describe(&self, machines: &[MachineView]) -> String {
        match self {
            Choice::Try(ranking) => {
                // Written in place: a ranking of a thousand machines is a thousand URIs per record.
                let mut line = String::from("try ");
                for (n, &i) in ranking.iter().enumerate() {
                    if n > 0 {
                        line.push_str(", ");
                    }
                    match machines.get(i as usize) {
                        Some(m) => line.push_str(&m.uri),
                        None => line.push_str(&format!("#{i}")),
                    }
                }
                line
            }
            Choice::Decline => "decline".into(),
            Choice::Postpone => "postpone".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub choice: Choice,
    /// `(machine index, reason)` for every machine the policy did not rank.
    pub rejected: Vec<(u32, String)>,
}

impl Answer {
    pub fn reason_for(&self, machine: u32) -> Option<&str> {
        self.rejected.iter().find(|(m, _)| *m == machine).map(|(_, r)| r.as_str())
    }
}

/// Why a machine cannot take a request at all. The host checks this itself, whatever the
/// policy says: a policy may rank, never stretch the rules.
#[derive(Clone, Debug, PartialEq)]
pub enum Misfit {
    Disabled,
    System { wanted: String, has: Vec<String> },
    MissingFeature(String),
    MandatoryNotRequested(String),
    NeverFree,
    Full { in_use: u32 },
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::Disabled => write!(f, "disabled: connecting to it failed earlier"),
            Misfit::System { wanted, has } => {
                write!(f, "system `{wanted}` is not among its systems ({})", has.join(", "))
            }
            Misfit::MissingFeature(x) => write!(f, "does not support the required feature `{x}`"),
            Misfit::MandatoryNotRequested(x) => {
                write!(f, "mandatory feature `{x}` is not among the derivation's required features")
            }
            Misfit::NeverFree => write!(f, "max-jobs is 0, so it never takes a build"),
            Misfit::Full { in_use } => write!(f, "all {in_use} build slots are in use"),
        }
    }
}

/// Nix's eligibility rule (system, supported ∪ mandatory ⊇ required, mandatory ⊆ required).
pub fn eligibility(req: &Request, m: &MachineView) -> Result<(), Misfit> {
    if !m.enabled {
        return Err(Misfit::Disabled);
    }
    if req.system != "builtin" && !m.systems.contains(&req.system) {
        return Err(Misfit::System { wanted: req.system.clone(), has: m.systems.clone() });
    }
    for f in &req.required_features {
        if !m.supported_features.contains(f) && !m.mandatory_features.contains(f) {
            return Err(Misfit::MissingFeature(f.clone()));
        }
    }
    for f in &m.mandatory_features {
        if !req.required_features.contains(f) {
            return Err(Misfit::MandatoryNotRequested(f.clone()));
        }
    }
    Ok(())
}

/// Eligible and with a free slot right now.
pub fn fits_now(req: &Request, m: &MachineView) -> Result<(), Misfit> {
    eligibility(req, m)?;
    if m.max_jobs == 0 {
        return Err(Misfit::NeverFree);
    }
    if m.slots_in_use >= m.max_jobs {
        return Err(Misfit::Full { in_use: m.slots_in_use });
    }
    Ok(())
}

/// Which policy's answer the hook acts on: the configured one, or the default standing in for
/// it (or being the configured one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    Policy,
    Default,
}
