//! A side of a replay: a policy run as the hook runs it, or the answers the trace recorded.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::core::policy::{cache::Cache, Decided, Limits, Policies};
use nwh_trace::Record;

/// One side of the comparison.
pub enum Side {
    Run { label: String, sha256: String, policies: Box<Policies> },
    Recorded,
}

impl Side {
    pub fn load(which: Option<&Path>, limits: Limits, cache: &Cache) -> Result<Side> {
        let policies = Policies::load_strict(which, limits, cache)?;
        let (label, sha256) = (policies.label(), policies.active().sha256().to_string());
        Ok(Side::Run { label, sha256, policies: Box::new(policies) })
    }

    pub fn label(&self) -> String {
        match self {
            Side::Run { label, sha256, .. } => {
                format!("{label} (sha256 {})", &sha256[..12.min(sha256.len())])
            }
            Side::Recorded => "the answers recorded in the trace".to_string(),
        }
    }

    /// What this side answers for `rec`: a policy run on its input, or what was recorded.
    pub fn decide(&self, rec: &Record) -> Decided {
        match self {
            Side::Run { policies, .. } => policies.decide(&rec.request, &rec.machines),
            Side::Recorded => Decided {
                answer: rec.answer.clone(),
                by: rec.decided_by,
                fuel_used: rec.fuel,
                micros: rec.micros,
                warning: rec.warning.clone(),
            },
        }
    }

    pub fn json(&self, fell_back: usize) -> serde_json::Value {
        match self {
            Side::Run { label, sha256, .. } => {
                json!({"label": label, "sha256": sha256, "fell_back": fell_back})
            }
            Side::Recorded => json!({"label": "recorded", "fell_back": fell_back}),
        }
    }
}
