//! The hook's end of a decision trace: it records each decision, with key material (key
//! paths, host keys, fingerprints that ssh quotes) kept out of the free text a record
//! carries. The format, the file and the reader are `nwh_trace`'s.

use std::path::PathBuf;
use std::time::SystemTime;

use nwh_decision::{MachineView, Request};
use nwh_trace::{Outcome, PolicyId, Record};

use crate::core::policy::Decided;

/// Appends records to a trace file, rotating it when it grows past its bound.
pub struct Writer {
    path: PathBuf,
    max_bytes: u64,
    policy: PolicyId,
    secrets: Vec<String>,
    warned: bool,
}

impl Writer {
    pub fn new(path: PathBuf, max_bytes: u64, policy: PolicyId) -> Writer {
        Writer { path, max_bytes, policy, secrets: Vec::new(), warned: false }
    }

    /// Key material from the machines file (key paths, host keys) to keep out of the free
    /// text a record carries: a down reason holds ssh's own words, which may name the key
    /// file or quote the host key.
    pub fn with_secrets(mut self, machines: &[nwh_machines::Machine]) -> Writer {
        for m in machines {
            if let Some(k) = &m.ssh_key {
                self.secrets.push(k.display().to_string());
            }
            if let Some(h) = &m.host_key {
                self.secrets.push(h.base64.clone());
                self.secrets.push(h.line.clone());
                // The key blob alone, as ssh quotes it without the type or comment.
                self.secrets.extend(h.line.split_whitespace().nth(1).map(str::to_string));
            }
        }
        self.secrets.retain(|s| !s.is_empty());
        // Longest first, so a line is redacted whole before its blob is looked for.
        self.secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
        self
    }

    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.secrets {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "[redacted]");
            }
        }
        redact_fingerprints(&t)
    }

    /// Records one decision. A trace is a diagnostic, so failing to write it must not fail a
    /// build: the first failure returns a warning to show, later ones nothing.
    pub fn record(
        &mut self,
        time: SystemTime,
        request: &Request,
        machines: &[MachineView],
        decided: &Decided,
        outcome: Outcome,
    ) -> Option<String> {
        let rec = Record {
            v: nwh_trace::VERSION,
            time: nwh_trace::rfc3339(time),
            pid: std::process::id(),
            request: request.clone(),
            machines: machines
                .iter()
                .map(|m| MachineView {
                    down_reason: m.down_reason.as_deref().map(|r| self.scrub(r)),
                    ..m.clone()
                })
                .collect(),
            policy: self.policy.clone(),
            answer: decided.answer.clone(),
            decided_by: decided.by,
            warning: decided.warning.as_deref().map(|w| self.scrub(w)),
            fuel: decided.fuel_used,
            micros: decided.micros,
            outcome,
        };
        match nwh_trace::append(&self.path, self.max_bytes, &rec) {
            Ok(()) => None,
            Err(_) if self.warned => None,
            Err(e) => {
                self.warned = true;
                Some(format!(
                    "cannot write the decision trace {}: {e:#}; decisions go unrecorded, builds go on",
                    self.path.display()
                ))
            }
        }
    }
}

/// `SHA256:<base64>` (an ssh key fingerprint, which ssh prints for a host key that does not
/// match) becomes `SHA256:[redacted]`.
fn redact_fingerprints(text: &str) -> String {
    const TAG: &str = "SHA256:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(TAG) {
        let after = &rest[at + TAG.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .unwrap_or(after.len());
        out.push_str(&rest[..at + TAG.len()]);
        if len > 0 {
            out.push_str("[redacted]");
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_redacted() {
        assert_eq!(
            redact_fingerprints(
                "offered SHA256:ZP9ekP0qMv2GCDfDy3e/MxuGDv2qMmThoqbT1xZ3oHA, expected SHA256:x+y="
            ),
            "offered SHA256:[redacted], expected SHA256:[redacted]"
        );
        assert_eq!(redact_fingerprints("no SHA256: here"), "no SHA256: here");
    }
}
