//! The record: one decision, as one line of JSON.

use serde::{Deserialize, Serialize};

use nwh_decision::{Answer, DecidedBy, MachineView, Request};

use crate::TraceError;

/// The format of a line; the reader refuses others rather than guess at their meaning.
pub const VERSION: u32 = 1;

/// One decision. Field names are the JSON keys (snake_case, like `Request`'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// When the hook started deciding, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The hook process: lines with one pid belong to one `try` and its re-decisions.
    pub pid: u32,
    pub request: Request,
    /// The machines as the policy saw them (lines of the machines file and live slot counts).
    pub machines: Vec<MachineView>,
    /// The policy the hook was configured with (the embedded default when none was given).
    pub policy: PolicyId,
    /// The answer the hook acted on; the default's when the policy failed.
    pub answer: Answer,
    pub decided_by: DecidedBy,
    /// Why the default stood in for the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Fuel spent by the call whose answer was used.
    pub fuel: u64,
    /// Wall-clock time of the policy call(s), instantiation included.
    pub micros: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyId {
    pub name: String,
    pub sha256: String,
}

/// What the hook did with the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// `# accept` with this machine.
    Accepted {
        uri: String,
    },
    Declined,
    /// `# postpone` sent to Nix.
    Postponed,
    /// A postpone the hook kept to itself while it waited for a slot to free; it decided
    /// again. Only recorded when the machines changed since the last such line.
    Waited,
    /// The chosen machine could not be reached; the hook decided again without it. Why is in
    /// the next record, as that machine's `down_reason` (key material redacted).
    ConnectionFailed {
        uri: String,
    },
}

/// One line of a trace, which must be of this format's version.
pub fn parse_line(text: &str) -> Result<Record, TraceError> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    // Parsed once: at a thousand machines a line costs about as much to parse as to decide.
    match serde_json::from_str::<Record>(text) {
        Ok(record) if record.v == VERSION => Ok(record),
        Ok(record) => Err(TraceError::Version(record.v)),
        // A line from a newer hook may not fit this record: named as such, not as garbage.
        Err(e) => match serde_json::from_str::<Version>(text) {
            Ok(v) if v.v != VERSION => Err(TraceError::Version(v.v)),
            _ => Err(TraceError::Json(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The facts a decision saw come back from its line as they were, so that `replay` hands
    /// the policy what it was handed; a decision without facts writes none (the lines of
    /// hooks from before contract 0.3 are the same) and reads back as one without.
    #[test]
    fn facts_come_back_from_a_line_as_they_were() {
        use nwh_decision::facts::{Amount, Facts, History, Load};
        let machine = |facts: Facts| {
            serde_json::json!({
                "uri": "ssh://b", "systems": ["x86_64-linux"], "max_jobs": 2, "speed_factor": 1.5,
                "supported_features": [], "mandatory_features": [], "slots_in_use": 0, "enabled": true,
                "facts": facts,
            })
        };
        let some = Facts {
            load: Some(Load { avg1: 0.5, avg5: 0.25, avg15: 3.0, cores: 8, age_ms: 1200 }),
            missing_input_bytes: Some(Amount { bytes: 1 << 40, age_ms: 0 }),
            past_builds: Some(History { builds: 3, mean_ms: 900, last_ms: 1000, age_ms: 86_400_000 }),
            ..Facts::default()
        };
        let line = serde_json::json!({
            "v": VERSION, "time": "2026-12-08T00:00:00.000Z", "pid": 1,
            "request": {"drv_path": "/nix/store/x.drv", "system": "x86_64-linux", "required_features": [],
                        "am_willing": true, "could_build_locally": true,
                        "local": {"max_jobs": 4, "speed_factor": 2.0, "facts": some}},
            "machines": [machine(some.clone()), machine(Facts::default())],
            "policy": {"name": "p", "sha256": "0"},
            "answer": {"choice": {"kind": "decline"}, "rejected": []},
            "decided_by": "policy", "fuel": 1, "micros": 1, "outcome": {"kind": "declined"},
        })
        .to_string();
        let record = parse_line(&line).unwrap();
        assert_eq!(record.machines[0].facts, some);
        assert_eq!(record.machines[1].facts, Facts::default());
        assert_eq!((record.request.local.max_jobs, &record.request.local.facts), (4, &some));
        let written = serde_json::to_value(&record).unwrap();
        assert_eq!(parse_line(&written.to_string()).unwrap(), record);
        assert!(written["machines"][1].get("facts").is_none(), "{written}");
        let without: Value = serde_json::from_str(&line.replace(r#","local":"#, r#","unused":"#)).unwrap();
        assert!(parse_line(&without.to_string()).unwrap().request.local.is_unknown());
    }

    #[test]
    fn a_newer_format_is_named() {
        let e = parse_line(r#"{"v": 2, "whatever": true}"#).unwrap_err();
        assert!(format!("{e:#}").contains("format version 2"), "{e:#}");
    }
}
