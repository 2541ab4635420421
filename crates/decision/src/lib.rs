//! What a policy decides on and the answer it gives, in the project's own types, Nix's rules
//! for which machine may take a build, and Nix's choice among those that may ([`choice`]):
//! one model for the host (which converts these to and from the WIT bindings; traces,
//! `explain`, `replay` and `simulate` use them as they are) and the default policy, which is
//! built from this crate for wasm32 (without the `serde` feature: only `std` there).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

pub mod choice;
pub mod facts;

pub use facts::{Facts, LocalView};

/// One derivation Nix would like built somewhere (the `try` message plus what the host knows
/// about the local machine).
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Request {
    pub drv_path: String,
    pub system: String,
    pub required_features: Vec<String>,
    pub am_willing: bool,
    pub could_build_locally: bool,
    /// The machine Nix runs on (contract 0.3); left out of a trace when nothing is known.
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "LocalView::is_unknown"))]
    pub local: LocalView,
}

/// A machine as the policy sees it: its line in the machines file and live facts.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
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
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Option::is_none"))]
    pub down_reason: Option<String>,
    /// What the host knows of it beyond its line (contract 0.3).
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Facts::is_empty"))]
    pub facts: Facts,
}

/// What a policy decides for a request (WIT `decision`): try these machines in this order,
/// decline (Nix builds it itself or fails), or postpone (Nix asks again later).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case", tag = "kind", content = "machines"))]
pub enum Decision {
    /// Indices into the machine list, best first.
    Try(Vec<u32>),
    Decline,
    Postpone,
}

impl Decision {
    /// `try ssh://b2, ssh://b1`, `decline` or `postpone`.
    pub fn describe(&self, machines: &[MachineView]) -> String {
        match self {
            Decision::Try(ranking) => {
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
            Decision::Decline => "decline".into(),
            Decision::Postpone => "postpone".into(),
        }
    }
}

/// A policy's answer: its decision and why it left each machine out.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Answer {
    /// `choice` in a trace record, the key of its format's version 1.
    #[cfg_attr(feature = "serde", serde(rename = "choice"))]
    pub decision: Decision,
    /// `(machine index, reason)` for every machine the policy did not rank.
    pub rejected: Vec<(u32, String)>,
}

impl Answer {
    pub fn reason_for(&self, machine: u32) -> Option<&str> {
        self.rejected.iter().find(|(m, _)| *m == machine).map(|(_, r)| r.as_str())
    }
}

/// Why a machine cannot take a request: a rule of Nix's it breaks, or no free slot. The host
/// checks these itself, whatever the policy says: a policy may rank, never stretch the rules.
/// The words are the default policy's (policies/default/src/logic.rs), so that the hook's
/// warning, `explain`, `simulate` and the default's rejections say the same thing.
#[derive(Clone, Debug, PartialEq)]
pub enum Misfit {
    /// Not to be used now, with the host's reason (ssh's words, or why the line cannot work).
    Down {
        down_reason: Option<String>,
    },
    System {
        wanted: String,
        has: Vec<String>,
    },
    MissingFeature(String),
    MandatoryNotRequested(String),
    NeverFree,
    Full {
        max_jobs: u32,
    },
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::Down { down_reason: Some(why) } => f.write_str(why),
            Misfit::Down { down_reason: None } => f.write_str("disabled: connection failed earlier"),
            Misfit::System { wanted, has } if has.is_empty() => {
                write!(f, "system `{wanted}` is not among its systems (none)")
            }
            Misfit::System { wanted, has } => {
                write!(f, "system `{wanted}` is not among its systems ({})", has.join(", "))
            }
            Misfit::MissingFeature(x) => write!(f, "does not support the required feature `{x}`"),
            Misfit::MandatoryNotRequested(x) => {
                write!(f, "mandatory feature `{x}` is not among the derivation's required features")
            }
            Misfit::NeverFree => f.write_str("max-jobs is 0: it never takes a build"),
            Misfit::Full { max_jobs: 1 } => f.write_str("its 1 slot is in use"),
            Misfit::Full { max_jobs } => write!(f, "all {max_jobs} slots in use"),
        }
    }
}

/// Hands `broken` each rule of Nix's that `m` breaks for `req`, in Nix's order of checks
/// (enabled, system, supported features, mandatory features), until it asks to stop: the
/// eligibility check on the hot path stops at the first, as Nix's does.
fn each_broken_rule(
    req: &Request,
    m: &MachineView,
    broken: &mut dyn FnMut(Misfit) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if !m.enabled {
        broken(Misfit::Down { down_reason: m.down_reason.clone() })?;
    }
    if req.system != "builtin" && !m.systems.iter().any(|s| same(s, &req.system)) {
        broken(Misfit::System { wanted: req.system.clone(), has: m.systems.clone() })?;
    }
    for f in &req.required_features {
        if !m.supported_features.iter().chain(&m.mandatory_features).any(|s| same(s, f)) {
            broken(Misfit::MissingFeature(f.clone()))?;
        }
    }
    for f in &m.mandatory_features {
        if !req.required_features.contains(f) {
            broken(Misfit::MandatoryNotRequested(f.clone()))?;
        }
    }
    ControlFlow::Continue(())
}

/// `a == b`, eight bytes at a time. In Wasm, `==` on strings calls a `memcmp` that goes byte
/// by byte, and comparing the request's system with every machine's was a twentieth of a
/// decision over a thousand machines.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or_default());
    let tail = words_a.remainder().iter().zip(words_b.remainder()).all(|(x, y)| x == y);
    tail && words_a.zip(words_b).all(|(x, y)| word(x) == word(y))
}

/// Why an eligible machine has no free slot now, if it has none.
fn busy(m: &MachineView) -> Option<Misfit> {
    if m.max_jobs == 0 {
        Some(Misfit::NeverFree)
    } else if m.slots_in_use >= m.max_jobs {
        Some(Misfit::Full { max_jobs: m.max_jobs })
    } else {
        None
    }
}

/// Every rule of Nix's that `m` breaks for `req`, in Nix's order of checks; when it breaks
/// none, why it has no free slot. Empty when it could take the build now.
pub fn misfits(req: &Request, m: &MachineView) -> Vec<Misfit> {
    let mut all = Vec::new();
    let _ = each_broken_rule(req, m, &mut |misfit| {
        all.push(misfit);
        ControlFlow::Continue(())
    });
    if all.is_empty() {
        all.extend(busy(m));
    }
    all
}

/// Nix's eligibility rule (enabled, system, supported ∪ mandatory ⊇ required, mandatory ⊆
/// required): the first rule broken.
pub fn eligibility(req: &Request, m: &MachineView) -> Result<(), Misfit> {
    let mut first = None;
    let _ = each_broken_rule(req, m, &mut |misfit| {
        first = Some(misfit);
        ControlFlow::Break(())
    });
    first.map_or(Ok(()), Err)
}

/// Eligible and with a free slot right now.
pub fn fits_now(req: &Request, m: &MachineView) -> Result<(), Misfit> {
    eligibility(req, m)?;
    busy(m).map_or(Ok(()), Err)
}

/// Why `m` was not chosen for `req`, in the words the hook's warning, `explain` and `simulate`
/// all use (and the default policy's): for a machine the host cannot use, its reason (ssh's
/// words) and every other rule it breaks, whatever the policy said; else the policy's reason;
/// else every rule the machine breaks; else that the policy did not rank it.
pub fn why_not(req: &Request, m: &MachineView, policy_reason: Option<&str>) -> String {
    match policy_reason {
        Some(reason) if m.enabled => reason.to_string(),
        _ => {
            let all = misfits(req, m);
            if all.is_empty() {
                return "the policy did not rank it".to_string();
            }
            all.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        }
    }
}

/// Which policy's answer the hook acts on: the configured one, or the default standing in for
/// it (or being the configured one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum DecidedBy {
    Policy,
    Default,
}

/// What the machine Nix runs on can build itself, from the parent's settings: what Nix's own
/// hook reckons "could build locally" with.
#[derive(Clone, Debug)]
pub struct LocalMachine {
    /// The parent's `max-jobs` (the hook's own is irrelevant).
    pub max_jobs: u32,
    pub system: String,
    pub extra_platforms: Vec<String>,
    /// The local store's features, which Nix tests "could build locally" against.
    pub features: BTreeSet<String>,
}

impl LocalMachine {
    /// Nix's `couldBuildLocally`: the parent could build it at all, now or later. `builtin`
    /// is deliberately not matched, as in Nix (its system is never the local one).
    pub fn could_build(&self, system: &str, features: &[String]) -> bool {
        self.max_jobs > 0
            && (system == self.system || self.extra_platforms.iter().any(|p| p == system))
            && features.iter().all(|f| self.features.contains(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(features: &[&str]) -> Request {
        Request {
            drv_path: "/nix/store/00000000000000000000000000000000-x.drv".into(),
            system: "x86_64-linux".into(),
            required_features: features.iter().map(|f| f.to_string()).collect(),
            am_willing: true,
            could_build_locally: false,
            local: Default::default(),
        }
    }

    fn machine(systems: &[&str], mandatory: &[&str], in_use: u32) -> MachineView {
        MachineView {
            uri: "ssh://b".into(),
            systems: systems.iter().map(|s| s.to_string()).collect(),
            max_jobs: 2,
            speed_factor: 1.0,
            supported_features: vec!["kvm".into()],
            mandatory_features: mandatory.iter().map(|s| s.to_string()).collect(),
            slots_in_use: in_use,
            enabled: true,
            down_reason: None,
            facts: Default::default(),
        }
    }

    #[test]
    fn every_broken_rule_is_named_in_nixs_order_and_busy_only_when_none_is() {
        let m = machine(&["aarch64-linux"], &["big"], 2);
        let all = misfits(&request(&["nope"]), &m);
        assert_eq!(
            all,
            [
                Misfit::System { wanted: "x86_64-linux".into(), has: vec!["aarch64-linux".into()] },
                Misfit::MissingFeature("nope".into()),
                Misfit::MandatoryNotRequested("big".into()),
            ]
        );
        let busy = machine(&["x86_64-linux"], &[], 2);
        assert_eq!(misfits(&request(&["kvm"]), &busy), [Misfit::Full { max_jobs: 2 }]);
        assert_eq!(eligibility(&request(&["kvm"]), &busy), Ok(()));
        assert_eq!(fits_now(&request(&["kvm"]), &busy), Err(Misfit::Full { max_jobs: 2 }));
    }

    #[test]
    fn why_not_prefers_the_hosts_reason_then_the_policys_then_the_rules() {
        let req = request(&[]);
        let down = MachineView {
            enabled: false,
            down_reason: Some("cannot connect to 'b': refused".into()),
            ..machine(&["aarch64-linux"], &[], 0)
        };
        assert_eq!(
            why_not(&req, &down, Some("slow")),
            "cannot connect to 'b': refused; system `x86_64-linux` is not among its systems (aarch64-linux)"
        );
        let fine = machine(&["x86_64-linux"], &[], 0);
        assert_eq!(why_not(&req, &fine, Some("slow")), "slow");
        assert_eq!(why_not(&req, &fine, None), "the policy did not rank it");
        let none = machine(&[], &[], 0);
        assert_eq!(why_not(&req, &none, None), "system `x86_64-linux` is not among its systems (none)");
    }
}
